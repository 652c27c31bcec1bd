#!/bin/bash
# test-crash-loop.sh - a short run of the crash loop (tests/soak/
# crash-loop.sh; "make soak" runs the long one): 3 cycles per format (raw,
# vhd, qcow2, qcow, vmdk; 2 to 4 s each) on a 32 MiB VBD, each killing
# the daemon with SIGKILL within 0.8 s of random writes, then checking the
# image and that every acknowledged write reads back.  CYCLES, FORMATS,
# SIZE, KILL_MAX_MS and SEED from the environment override these.
exec bash "$(dirname "$0")/../soak/crash-loop.sh" CYCLES="${CYCLES:-3}" \
	SIZE="${SIZE:-32M}" KILL_MAX_MS="${KILL_MAX_MS:-800}" \
	FORMATS="${FORMATS:-raw vhd qcow2 qcow vmdk}" ${SEED:+SEED="$SEED"}
