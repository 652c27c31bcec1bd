# tapfs - a FUSE filesystem of live virtual disks.
#
#   make            build everything into build/
#   make run        install what is missing, build, mount the demo (MNT=)
#   make check      install what is missing, build, run every test
#   make asan       the same tests with ASan + UBSan (build-asan/)
#   make fuzz       libFuzzer on the parsers (clang); make fuzz-replay runs
#                   the fuzz targets once over their seed corpora (in check)
#   make valgrind   the unit tests under valgrind memcheck
#   make bench      fio: raw file vs tapfs vs qemu-storage-daemon, loop table
#   make bench-img  tapfs-img convert vs qemu-img convert
#   make fuse-null  the reply-only FUSE daemon of the bench (build/fuse-null)
#   make fuse-uring-null  the same over FUSE-over-io_uring (liburing-dev)
#   make bench-transport  fuse-null vs fuse-uring-null (the FUSE round trip)
#   make install    PREFIX=/usr/local, DESTDIR=, MANDIR=
#   make clean

PREFIX	?= /usr/local
SBINDIR	?= $(PREFIX)/sbin
MOUNTHELPERDIR ?= /sbin
MANDIR	?= $(PREFIX)/share/man
DESTDIR	?=
BUILD	?= build
MNT	?= /srv/vbds
STORE	?= /var/lib/tapfs

CC	?= gcc
PKG_CONFIG ?= pkg-config
OPT	?= -O2
SANITIZE ?=
CFLAGS	?= $(OPT) -g
# assert() guards the engine's invariants (pool ownership, sector
# accounting, one reply per request) in every build.
ifneq ($(filter -DNDEBUG%,$(CFLAGS) $(OPT) $(SANITIZE)),)
$(error NDEBUG would turn off the engine's asserts)
endif
WARN	:= -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wmissing-prototypes \
	   -Wstrict-prototypes -Wno-format-nonliteral
ALL_CFLAGS := -std=gnu11 $(WARN) -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
	   -Iinclude -Idrivers $(CFLAGS) $(SANITIZE) -MMD -MP
FUSE_CFLAGS = $(shell $(PKG_CONFIG) --cflags fuse3 2>/dev/null)
FUSE_LIBS   = $(shell $(PKG_CONFIG) --libs fuse3 2>/dev/null || echo -lfuse3)
LDLIBS	:= -lrbd -lrados -laio -luuid -lz -lpthread
LDFLAGS	?=
ALL_LDFLAGS := $(LDFLAGS) $(SANITIZE)

# drivers/: engine/, common/ (helpers of drivers), one folder per driver.
ENGINE_SRCS := $(wildcard drivers/*/*.c)
# The FUSE edge (fs/fuse-*.c) and fs/main.c need libfuse; the rest of fs/
# is pure and goes into libtapfs.a with the engine.
DAEMON_SRCS := $(wildcard fs/fuse-*.c) fs/main.c
FS_CORE_SRCS := $(filter-out $(DAEMON_SRCS),$(wildcard fs/*.c))
UNIT_SRCS := $(wildcard tests/unit/test-*.c)

ENGINE_OBJS := $(ENGINE_SRCS:%.c=$(BUILD)/%.o)
FS_CORE_OBJS := $(FS_CORE_SRCS:%.c=$(BUILD)/%.o)
DAEMON_OBJS := $(DAEMON_SRCS:%.c=$(BUILD)/%.o)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

LIBTAPFS := $(BUILD)/libtapfs.a

# The manual pages (roff), by section.
MAN1	:= docs/man/tapfs-img.1
MAN7	:= docs/man/tapfs-ctl.7
MAN8	:= docs/man/tapfs.8 docs/man/mount.tapfs.8 docs/man/block-tapfs.8

.PHONY: all deps deps-build deps-fuzz fuzz-run fuzz-replay run check test \
	unit functional asan bench soak install uninstall clean fuzz xen-e2e
all: $(BUILD)/tapfs $(BUILD)/tapfs-img $(UNIT_BINS)

deps:
	@scripts/install-deps.sh all

deps-build:
	@scripts/install-deps.sh build

deps-fuzz:
	@scripts/install-deps.sh fuzz

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(FUSE_CFLAGS) -c -o $@ $<

$(LIBTAPFS): $(ENGINE_OBJS) $(FS_CORE_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BUILD)/tapfs: $(DAEMON_OBJS) $(LIBTAPFS)
	$(CC) $(ALL_LDFLAGS) -o $@ $(DAEMON_OBJS) $(LIBTAPFS) $(FUSE_LIBS) \
		-luring $(LDLIBS)

# tapfs-img: one file per verb, on the engine (tools/tapfs-img/tapfs-img.h).
IMG_SRCS := $(wildcard tools/tapfs-img/*.c)
IMG_OBJS := $(IMG_SRCS:%.c=$(BUILD)/%.o)
$(BUILD)/tools/%.o: ALL_CFLAGS += -Idrivers
$(BUILD)/tapfs-img: $(IMG_OBJS) $(LIBTAPFS)
	$(CC) $(ALL_LDFLAGS) -o $@ $(IMG_OBJS) $(LIBTAPFS) $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIBTAPFS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit -Ifs -Idrivers $(ALL_LDFLAGS) -o $@ \
		$< $(LIBTAPFS) -lcmocka $(LDLIBS)

run: deps
	$(MAKE) all
	scripts/run-demo.sh "$(MNT)" "$(STORE)"

# Unit tests (cmocka), then functional tests on real mounts.
unit: $(UNIT_BINS)
	@scripts/run-unit.sh $(UNIT_BINS)

functional: $(BUILD)/tapfs $(BUILD)/tapfs-img $(BUILD)/fuse-null
	TAPFS=$(abspath $(BUILD)/tapfs) TAPFS_IMG=$(abspath $(BUILD)/tapfs-img) \
		FUSE_NULL=$(abspath $(BUILD)/fuse-null) \
		TEST_CFLAGS="$(SANITIZE)" tests/functional/run.sh

# block-tapfs end to end on a real Xen stack booted under QEMU emulation
# (docs/xen.md); installs the emulator if missing, fails if it cannot.
xen-e2e: $(BUILD)/tapfs $(BUILD)/tapfs-img
	BUILD=$(BUILD) tests/xen/run.sh

test: unit fuzz-replay functional xen-e2e

# The functional tests again with every daemon on FUSE over io_uring
# (-o uring; Linux 6.14+, sets fuse.enable_uring=Y for the run and puts it
# back), or on two loops (-o workers=2).  Not in make check: their 11
# minutes each would take CI past its budget; test-uring.sh and
# test-workers.sh cover each option there.
.PHONY: check-uring check-workers
check-uring: deps
	$(MAKE) all
	BUILD=$(abspath $(BUILD)) tests/functional/run-with.sh uring

check-workers: deps
	$(MAKE) all
	BUILD=$(abspath $(BUILD)) tests/functional/run-with.sh workers

check: deps
	$(MAKE) all
	$(MAKE) test

asan: deps
	$(MAKE) BUILD=build-asan OPT=-O1 \
		SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		test

# The unit tests under valgrind (memcheck: errors and definite/indirect
# leaks fail a binary).
.PHONY: valgrind
VALGRIND ?= valgrind -q --error-exitcode=99 --leak-check=full \
	--errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect
valgrind: deps-build $(UNIT_BINS)
	@scripts/install-deps.sh valgrind
	UNIT_WRAPPER="$(VALGRIND)" UNIT_TIMEOUT=900 scripts/run-unit.sh $(UNIT_BINS)

bench: deps
	$(MAKE) all $(BUILD)/fuse-null
	TAPFS=$(abspath $(BUILD)/tapfs) \
		FUSE_NULL=$(abspath $(BUILD)/fuse-null) bench/bench.sh

# The reply-only FUSE daemon of the bench's loop table (the ceiling).
.PHONY: fuse-null
fuse-null: $(BUILD)/fuse-null
$(BUILD)/fuse-null: bench/fuse-null.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(FUSE_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(FUSE_LIBS) -laio

# The same daemon without libfuse, over FUSE-over-io_uring or /dev/fuse
# (bench/bench-transport.sh); liburing-dev, for the bench only.
.PHONY: fuse-uring-null
fuse-uring-null: $(BUILD)/fuse-uring-null
$(BUILD)/fuse-uring-null: bench/fuse-uring-null.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) -luring -lpthread

# fio on fuse-null vs fuse-uring-null, file and loop device (root).
.PHONY: bench-transport
bench-transport: deps
	$(MAKE) $(BUILD)/fuse-null $(BUILD)/fuse-uring-null
	FUSE_NULL=$(abspath $(BUILD)/fuse-null) \
		FUSE_URING_NULL=$(abspath $(BUILD)/fuse-uring-null) \
		bench/bench-transport.sh

# tapfs-img convert against qemu-img convert, 2 GiB per format pair.
.PHONY: bench-img
bench-img: deps
	$(MAKE) $(BUILD)/tapfs-img
	TAPFS_IMG=$(abspath $(BUILD)/tapfs-img) bench/img-convert.sh

# The crash loop, not part of check (tests/soak/crash-loop.sh): CYCLES
# kill -9 cycles (default 50) for each of FORMATS (default raw vhd qcow2
# qcow vmdk);
# SEED= replays a run; SIZE=, KILL_MAX_MS=, THREADS= as in the script.
SOAK_VARS := CYCLES FORMATS SIZE SEED KILL_MAX_MS THREADS OPTS
SOAK_ARGS = $(foreach v,$(SOAK_VARS),$(if $($(v)),$(v)="$($(v))"))
soak: deps
	$(MAKE) $(BUILD)/tapfs $(BUILD)/tapfs-img
	TAPFS=$(abspath $(BUILD)/tapfs) TAPFS_IMG=$(abspath $(BUILD)/tapfs-img) \
		tests/soak/crash-loop.sh $(SOAK_ARGS)

install: $(BUILD)/tapfs $(BUILD)/tapfs-img
	install -D -m 0755 $(BUILD)/tapfs $(DESTDIR)$(SBINDIR)/tapfs
	install -D -m 0755 $(BUILD)/tapfs-img $(DESTDIR)$(PREFIX)/bin/tapfs-img
	install -D -m 0755 mount-helpers/mount.tapfs \
		$(DESTDIR)$(MOUNTHELPERDIR)/mount.tapfs
	install -D -m 0755 xen/block-tapfs $(DESTDIR)/etc/xen/scripts/block-tapfs
	install -D -m 0644 -t $(DESTDIR)$(MANDIR)/man1 $(MAN1)
	install -D -m 0644 -t $(DESTDIR)$(MANDIR)/man7 $(MAN7)
	install -D -m 0644 -t $(DESTDIR)$(MANDIR)/man8 $(MAN8)

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/tapfs $(DESTDIR)$(MOUNTHELPERDIR)/mount.tapfs \
		$(DESTDIR)$(PREFIX)/bin/tapfs-img \
		$(DESTDIR)/etc/xen/scripts/block-tapfs \
		$(addprefix $(DESTDIR)$(MANDIR)/man1/,$(notdir $(MAN1))) \
		$(addprefix $(DESTDIR)$(MANDIR)/man7/,$(notdir $(MAN7))) \
		$(addprefix $(DESTDIR)$(MANDIR)/man8/,$(notdir $(MAN8)))

# make fuzz: libFuzzer (clang, ASan+UBSan) on the .ctl parser and the VHD
# and qcow2 parsers and image helpers; seeds from tests/fuzz/make-seeds.sh.
# libFuzzer on the VHD parsers:
FUZZ_CC   ?= clang
FUZZ_TIME ?= 60
FUZZ_CFLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined \
	-D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -Iinclude -Idrivers
VHD_SEEDS := $(BUILD)/fuzz/corpus-vhd
# (every file of drivers/vhd/ but the driver, vhd.c, which needs the engine)
VHD_IMAGE_SRCS := $(filter-out drivers/vhd/vhd.c,$(wildcard drivers/vhd/*.c))
$(BUILD)/fuzz/fuzz-vhd: tests/fuzz/fuzz-vhd.c $(VHD_IMAGE_SRCS) \
		drivers/common/td-check.c drivers/common/td-fileio.c \
		drivers/common/td-util.c drivers/engine/td-log.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $^ -luuid

# ... and on the qcow2 parsers and image helpers.
Q2_SEEDS := $(BUILD)/fuzz/corpus-qcow2
# (it reads images through the qcow2 driver: the whole engine)
$(BUILD)/fuzz/fuzz-qcow2: tests/fuzz/fuzz-qcow2.c tests/fuzz/fuzz-engine.c \
		$(ENGINE_SRCS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $^ $(LDLIBS)

# ... and on VMDK images, read through the vmdk driver.
VMDK_SEEDS := $(BUILD)/fuzz/corpus-vmdk
$(BUILD)/fuzz/fuzz-vmdk: tests/fuzz/fuzz-vmdk.c tests/fuzz/fuzz-engine.c \
		$(ENGINE_SRCS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $^ $(LDLIBS)

# ... and on qcow (version 1) images, read through the qcow driver.
QCOW_SEEDS := $(BUILD)/fuzz/corpus-qcow
$(BUILD)/fuzz/fuzz-qcow: tests/fuzz/fuzz-qcow.c tests/fuzz/fuzz-engine.c \
		$(ENGINE_SRCS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $^ $(LDLIBS)

fuzz: deps-fuzz
	$(MAKE) fuzz-run

$(BUILD)/fuzz/fuzz-ctl: tests/fuzz/fuzz-ctl.c fs/ctl.c drivers/common/td-util.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Ifs -o $@ $^

# Each target runs FUZZ_TIME seconds, or FUZZ_RUNS executions when set
# (make fuzz FUZZ_RUNS=10000000); the corpora grow in $(BUILD)/fuzz/.
# "FUZZ_SEEDS=$PWD/build/fuzz make functional" adds the damaged images
# of test-vhd-bad and test-qcow2-bad to them.
FUZZ_RUNS ?=
FUZZ_LIMIT = $(if $(FUZZ_RUNS),-runs=$(FUZZ_RUNS),-max_total_time=$(FUZZ_TIME))
FUZZ_FLAGS = $(FUZZ_LIMIT) -print_final_stats=1
fuzz-run: $(BUILD)/fuzz/fuzz-ctl $(BUILD)/fuzz/fuzz-vhd \
		$(BUILD)/fuzz/fuzz-qcow2 $(BUILD)/fuzz/fuzz-qcow \
		$(BUILD)/fuzz/fuzz-vmdk $(BUILD)/tapfs-img
	tests/fuzz/make-seeds.sh $(BUILD)/tapfs-img $(BUILD)/fuzz
	$(BUILD)/fuzz/fuzz-ctl $(FUZZ_FLAGS) -max_len=8192 $(BUILD)/fuzz/corpus-ctl
	$(BUILD)/fuzz/fuzz-vhd $(FUZZ_FLAGS) -max_len=65536 $(VHD_SEEDS)
	$(BUILD)/fuzz/fuzz-qcow2 $(FUZZ_FLAGS) -max_len=65536 $(Q2_SEEDS)
	$(BUILD)/fuzz/fuzz-qcow $(FUZZ_FLAGS) -max_len=65536 $(QCOW_SEEDS)
	$(BUILD)/fuzz/fuzz-vmdk $(FUZZ_FLAGS) -max_len=262144 $(VMDK_SEEDS)

# make fuzz-replay: the same targets built by $(CC) without libFuzzer
# (with SANITIZE under make asan) on the shared driver
# tests/fuzz/fuzz-main.c, run once over every input of the seed corpora
# (and of what earlier fuzzing or FUZZ_SEEDS added): a crash fails.
FUZZ_TARGETS := ctl vhd qcow2 qcow vmdk
FUZZ_REPLAY_BINS := $(FUZZ_TARGETS:%=$(BUILD)/fuzz/replay-%)
$(BUILD)/fuzz/replay-%: tests/fuzz/fuzz-%.c tests/fuzz/fuzz-main.c \
		tests/fuzz/fuzz-engine.c $(LIBTAPFS)
	@mkdir -p $(dir $@)
	$(CC) $(filter-out -MMD -MP,$(ALL_CFLAGS)) -Ifs -Idrivers \
		$(ALL_LDFLAGS) -o $@ $< tests/fuzz/fuzz-main.c \
		tests/fuzz/fuzz-engine.c $(LIBTAPFS) $(LDLIBS)

fuzz-replay: $(FUZZ_REPLAY_BINS) $(BUILD)/tapfs-img
	tests/fuzz/make-seeds.sh $(BUILD)/tapfs-img $(BUILD)/fuzz
	set -e; for t in $(FUZZ_TARGETS); do \
		$(BUILD)/fuzz/replay-$$t $(BUILD)/fuzz/corpus-$$t; \
	done

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
