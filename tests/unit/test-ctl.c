/* SPDX-License-Identifier: MIT */
/* The .ctl command parser (fs/ctl.c) and td_parse_size (drivers/common/td-util.c). */
#include "unit.h"

#include "ctl.h"

#define KiB	1024ull
#define MiB	(1024 * KiB)
#define GiB	(1024 * MiB)
#define TiB	(1024 * GiB)

static struct ctl_command cmd;
static char err[512];

static int parse(const char *s)
{
	err[0] = '\0';
	return ctl_parse(s, strlen(s), &cmd, err, sizeof(err));
}

static void parse_ok(const char *s)
{
	if (parse(s))
		fail_msg("'%s' refused: %s", s, err);
}

/* Refused with -EINVAL and a message containing needle. */
static void parse_bad(const char *s, const char *needle)
{
	int rc = parse(s);

	if (rc != -EINVAL)
		fail_msg("'%s': got %d, want -EINVAL", s, rc);
	if (!strstr(err, needle))
		fail_msg("'%s': message \"%s\" does not say \"%s\"", s, err,
			 needle);
	assert_null(strchr(err, '\n'));	/* one line */
}

/* ---- verbs and argument forms --------------------------------------- */

static void test_create(void **state)
{
	(void)state;
	parse_ok("create disk0 raw 20G");
	assert_int_equal(cmd.verb, CTL_CREATE);
	assert_string_equal(cmd.name, "disk0");
	assert_string_equal(cmd.format, "raw");
	assert_int_equal(cmd.size, 20 * GiB);
	assert_false(cmd.readonly);
	assert_string_equal(cmd.path, "");

	parse_ok("create scratch ram 512M");
	assert_string_equal(cmd.format, "ram");
	assert_int_equal(cmd.size, 512 * MiB);

	/* Without a format: a dynamic VHD. */
	parse_ok("create vm 20G");
	assert_string_equal(cmd.name, "vm");
	assert_string_equal(cmd.format, "vhd");
	assert_int_equal(cmd.size, 20 * GiB);

	parse_ok("snapshot");
	assert_int_equal(cmd.verb, CTL_SNAPSHOT);
	assert_string_equal(cmd.name, "");
	parse_ok("snapshot xvda");
	assert_string_equal(cmd.name, "xvda");
}

static void test_create_sizes(void **state)
{
	static const struct {
		const char *s;
		uint64_t v;
	} ok[] = {
		{ "512M", 512 * MiB }, { "20G", 20 * GiB }, { "1T", TiB },
		{ "4096", 4096 }, { "1KiB", KiB }, { "512", 512 },
		{ "1k", KiB }, { "2KB", 2 * KiB }, { "3mib", 3 * MiB },
		{ "1g", GiB }, { "16777215T", 16777215ull * TiB },
	};
	char line[128];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(line, sizeof(line), "create d raw %s", ok[i].s);
		parse_ok(line);
		if (cmd.size != ok[i].v)
			fail_msg("'%s': size %llu, want %llu", ok[i].s,
				 (unsigned long long)cmd.size,
				 (unsigned long long)ok[i].v);
	}
}

static void test_create_bad_sizes(void **state)
{
	static const char *const bad[] = {
		"0", "1000", "12Q", "-1", "99999999999999999999999",
		"18446744073709551616", "16777216T", "511", "1.5G", "0x200",
		"1KiBB", "1Ki", "1P", "G", "0K", "513",
	};
	char line[128];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(line, sizeof(line), "create d raw %s", bad[i]);
		parse_bad(line, "bad size");
		parse_bad(line, "multiple of 512");
	}
	parse_bad("create d raw 12Q", "'12Q'");
}

static void test_open(void **state)
{
	(void)state;
	parse_ok("open disk0 aio:/var/lib/tapfs/g/disk0.raw");
	assert_int_equal(cmd.verb, CTL_OPEN);
	assert_string_equal(cmd.name, "disk0");
	assert_string_equal(cmd.format, "aio");
	assert_string_equal(cmd.path, "/var/lib/tapfs/g/disk0.raw");
	assert_false(cmd.readonly);
	assert_int_equal(cmd.size, 0);

	parse_ok("open d raw:/img ro");
	assert_string_equal(cmd.format, "raw");
	assert_string_equal(cmd.path, "/img");
	assert_true(cmd.readonly);

	parse_ok("open d sync:/img rw");
	assert_string_equal(cmd.format, "sync");
	assert_false(cmd.readonly);
	assert_false(cmd.standby);
	assert_false(cmd.steal);

	parse_ok("open d qcow2:/img standby");
	assert_false(cmd.readonly);
	assert_true(cmd.standby);

	parse_ok("release d");
	assert_int_equal(cmd.verb, CTL_RELEASE);
	assert_string_equal(cmd.name, "d");
	parse_bad("release", "usage: release NAME");

	parse_ok("open d rbd:rbd/img steal");
	assert_true(cmd.steal);
	assert_false(cmd.readonly);
	parse_ok("open d rbd:rbd/img rw steal");
	assert_true(cmd.steal);

	/* Only the first ':' separates. */
	parse_ok("open d aio:/a:b");
	assert_string_equal(cmd.format, "aio");
	assert_string_equal(cmd.path, "/a:b");

	/* Nothing left over from an earlier command. */
	parse_ok("close e");
	assert_string_equal(cmd.path, "");
	assert_string_equal(cmd.format, "");
	assert_false(cmd.readonly);
}

static void test_open_bad(void **state)
{
	char line[CTL_PATH_MAX + 64];
	size_t n;

	(void)state;
	parse_bad("open d /var/img", "not FORMAT:PATH");
	parse_bad("open d /var/img", "'/var/img'");
	parse_bad("open d aio:", "not FORMAT:PATH");
	parse_bad("open d :/var/img", "not FORMAT:PATH");
	parse_bad("open d aio:/x RO", "unknown open mode 'RO'");
	parse_bad("open d aio:/x wr", "(ro, rw or standby)");
	parse_bad("open d aio:/x readonly", "unknown open mode");
	parse_bad("open d rbd:p/i ro steal", "not with ro");
	parse_bad("open d rbd:p/i steal steal", "unknown open mode 'steal'");
	parse_bad("open d rbd:p/i steal ro", "unknown open mode 'ro'");
	parse_bad("open d rbd:p/i rw steal x", "usage: open");
	parse_bad("open d 0123456789012345678901234567890123:/x",
		  "format too long");
	parse_bad("create d 0123456789012345678901234567890123 1G",
		  "format too long");

	/* The longest path that fits, and one byte more. */
	n = (size_t)snprintf(line, sizeof(line), "open d aio:");
	memset(line + n, 'p', CTL_PATH_MAX - 1);
	line[n + CTL_PATH_MAX - 1] = '\0';
	parse_ok(line);
	assert_int_equal(strlen(cmd.path), CTL_PATH_MAX - 1);
	line[n + CTL_PATH_MAX - 1] = 'p';
	line[n + CTL_PATH_MAX] = '\0';
	parse_bad(line, "path too long");
}

static void test_other_verbs(void **state)
{
	static const struct {
		const char *word;
		enum ctl_verb verb;
	} v[] = {
		{ "pause", CTL_PAUSE }, { "resume", CTL_RESUME },
		{ "flush", CTL_FLUSH },
	};
	char line[64];
	size_t i;

	(void)state;
	parse_ok("close disk0");
	assert_int_equal(cmd.verb, CTL_CLOSE);
	assert_string_equal(cmd.name, "disk0");
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		/* Without a name: every VBD of the group. */
		parse_ok(v[i].word);
		assert_int_equal(cmd.verb, v[i].verb);
		assert_string_equal(cmd.name, "");
		snprintf(line, sizeof(line), "%s disk1", v[i].word);
		parse_ok(line);
		assert_int_equal(cmd.verb, v[i].verb);
		assert_string_equal(cmd.name, "disk1");
	}
}

static void test_verb_names(void **state)
{
	(void)state;
	assert_string_equal(ctl_verb_name(CTL_CREATE), "create");
	assert_string_equal(ctl_verb_name(CTL_OPEN), "open");
	assert_string_equal(ctl_verb_name(CTL_CLOSE), "close");
	assert_string_equal(ctl_verb_name(CTL_PAUSE), "pause");
	assert_string_equal(ctl_verb_name(CTL_RESUME), "resume");
	assert_string_equal(ctl_verb_name(CTL_FLUSH), "flush");
	assert_string_equal(ctl_verb_name((enum ctl_verb)77), "?");
}

/* ---- errors ---------------------------------------------------------- */

static void test_unknown_verb(void **state)
{
	(void)state;
	parse_bad("frobnicate d", "unknown command 'frobnicate'");
	parse_bad("frobnicate d", "create open close pause resume flush");
	/* Verbs are lower case. */
	parse_bad("CREATE d raw 1G", "unknown command 'CREATE'");
	parse_bad("", "empty command");
	parse_bad("   \t ", "empty command");
	parse_bad("\n", "empty command");
}

static void test_arg_counts(void **state)
{
	(void)state;
	parse_bad("create", "usage: create NAME [FORMAT] SIZE");
	parse_bad("create d", "usage: create NAME [FORMAT] SIZE");
	parse_bad("create d raw", "bad size 'raw'");
	parse_bad("create d raw 1G x", "usage: create NAME [FORMAT] SIZE");
	parse_bad("snapshot a b", "usage: snapshot [NAME]");
	parse_bad("open d", "usage: open NAME FORMAT:PATH [ro|rw|standby] [steal]");
	parse_bad("open d aio:/x rw steal x", "usage: open NAME FORMAT:PATH [ro|rw|standby] [steal]");
	parse_bad("open d aio:/x ro x", "unknown open mode 'x' (ro, rw or standby), or steal");
	parse_bad("open d rbd:rbd/img ro steal", "steal takes a writer's lock: not with ro");
	parse_bad("open d rbd:rbd/img standby steal", "steal takes a writer's lock: not with standby");
	parse_bad("close", "usage: close NAME");
	parse_bad("close a b", "usage: close NAME");
	parse_bad("pause a b", "usage: pause [NAME]");
	parse_bad("resume a b", "usage: resume [NAME]");
	parse_bad("flush a b", "usage: flush [NAME]");
	parse_bad("close a b c d e f g h", "too many words");
}

static void test_names(void **state)
{
	char line[CTL_NAME_MAX + 64];
	size_t n;

	(void)state;
	parse_bad("close .x", "starts with '.'");
	parse_bad("close .", "starts with '.'");
	parse_bad("close ..", "starts with '.'");
	parse_bad("pause .hidden", "starts with '.'");
	parse_bad("create a/b raw 1G", "contains '/'");
	parse_bad("close /", "contains '/'");
	parse_ok("close disk.0-a_b");
	parse_ok("close \xc3\xa9t\xc3\xa9");	/* UTF-8 is fine */

	/* 255 bytes is the limit. */
	n = (size_t)snprintf(line, sizeof(line), "close ");
	memset(line + n, 'n', CTL_NAME_MAX);
	line[n + CTL_NAME_MAX] = '\0';
	parse_ok(line);
	assert_int_equal(strlen(cmd.name), CTL_NAME_MAX);
	line[n + CTL_NAME_MAX] = 'n';
	line[n + CTL_NAME_MAX + 1] = '\0';
	parse_bad(line, "longer than 255");
}

static void test_check_name(void **state)
{
	char name[CTL_NAME_MAX + 2];

	(void)state;
	assert_int_equal(ctl_check_name("disk0", err, sizeof(err)), 0);
	assert_int_equal(ctl_check_name("", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "empty name"));
	assert_int_equal(ctl_check_name(".x", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'.'"));
	assert_int_equal(ctl_check_name("a/b", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'/'"));
	assert_int_equal(ctl_check_name("a\x01z", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "control character 0x01"));
	assert_int_equal(ctl_check_name("a\tz", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "control character 0x09"));
	assert_int_equal(ctl_check_name("a\x7f", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "0x7f"));
	memset(name, 'n', CTL_NAME_MAX + 1);
	name[CTL_NAME_MAX + 1] = '\0';
	assert_int_equal(ctl_check_name(name, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "longer than 255"));
	name[CTL_NAME_MAX] = '\0';
	assert_int_equal(ctl_check_name(name, err, sizeof(err)), 0);
}

static void test_line_endings(void **state)
{
	(void)state;
	parse_ok("close d\n");
	assert_string_equal(cmd.name, "d");
	parse_ok("close d\r\n");
	assert_string_equal(cmd.name, "d");
	parse_ok("close d\n\n");
	parse_ok("  close \t d  \n");
	assert_int_equal(cmd.verb, CTL_CLOSE);
	assert_string_equal(cmd.name, "d");
	parse_ok("\tcreate\td\traw\t1G\t");
	assert_int_equal(cmd.size, GiB);
}

static void test_one_command_per_write(void **state)
{
	(void)state;
	parse_bad("close a\nclose b\n", "one command per write");
	parse_bad("close a\nclose b", "one command per write");
	parse_bad("close a\n\nclose b", "one command per write");
	parse_bad("\nclose a", "one command per write");
}

static void test_control_chars(void **state)
{
	static const char with_nul[] = "close a\0b";

	(void)state;
	parse_bad("close a\x01", "control character 0x01");
	parse_bad("close a\x1b[1m", "control character 0x1b");
	parse_bad("close a\x7f", "control character 0x7f");
	parse_bad("close a\rb", "control character 0x0d");
	err[0] = '\0';
	assert_int_equal(ctl_parse(with_nul, sizeof(with_nul) - 1, &cmd, err,
				   sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "control character 0x00"));
}

static void test_long_line(void **state)
{
	char *line = malloc(CTL_LINE_MAX + 2);
	size_t n;

	(void)state;
	assert_non_null(line);
	n = (size_t)snprintf(line, CTL_LINE_MAX + 2, "close ");
	memset(line + n, ' ', CTL_LINE_MAX + 1 - n);
	line[CTL_LINE_MAX + 1] = '\0';
	parse_bad(line, "longer than");
	/* Trailing newlines do not count. */
	line[6] = 'd';
	line[CTL_LINE_MAX] = '\n';
	parse_ok(line);
	free(line);
}

/* ---- td_parse_size ---------------------------------------------------- */

static void test_parse_size(void **state)
{
	static const struct {
		const char *s;
		int rc;
		uint64_t v;
	} cases[] = {
		{ "0", 0, 0 }, { "1", 0, 1 }, { "512", 0, 512 },
		{ "4096", 0, 4096 },
		{ "1K", 0, KiB }, { "1k", 0, KiB }, { "1KB", 0, KiB },
		{ "1kb", 0, KiB }, { "1KiB", 0, KiB }, { "1kib", 0, KiB },
		{ "1M", 0, MiB }, { "512M", 0, 512 * MiB },
		{ "1MiB", 0, MiB }, { "20G", 0, 20 * GiB }, { "1GB", 0, GiB },
		{ "1T", 0, TiB }, { "1TiB", 0, TiB },
		{ "16777215T", 0, 16777215ull * TiB },
		{ "18446744073709551615", 0, UINT64_MAX },
		{ "18446744073709551616", -ERANGE, 0 },
		{ "99999999999999999999999", -ERANGE, 0 },
		{ "16777216T", -ERANGE, 0 },
		{ "17179869184G", -ERANGE, 0 },
		{ "", -EINVAL, 0 }, { "K", -EINVAL, 0 }, { "-1", -EINVAL, 0 },
		{ "+1", -EINVAL, 0 }, { " 1", -EINVAL, 0 },
		{ "1 ", -EINVAL, 0 }, { "12Q", -EINVAL, 0 },
		{ "1P", -EINVAL, 0 }, { "1KiBB", -EINVAL, 0 },
		{ "1Ki", -EINVAL, 0 }, { "1KK", -EINVAL, 0 },
		{ "1.5G", -EINVAL, 0 }, { "0x10", -EINVAL, 0 },
		{ "1 K", -EINVAL, 0 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 12345;
		int rc = td_parse_size(cases[i].s, &v);

		if (rc != cases[i].rc)
			fail_msg("td_parse_size(\"%s\") = %d, want %d",
				 cases[i].s, rc, cases[i].rc);
		if (!rc && v != cases[i].v)
			fail_msg("td_parse_size(\"%s\") gave %llu, want %llu",
				 cases[i].s, (unsigned long long)v,
				 (unsigned long long)cases[i].v);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create),
		cmocka_unit_test(test_create_sizes),
		cmocka_unit_test(test_create_bad_sizes),
		cmocka_unit_test(test_open),
		cmocka_unit_test(test_open_bad),
		cmocka_unit_test(test_other_verbs),
		cmocka_unit_test(test_verb_names),
		cmocka_unit_test(test_unknown_verb),
		cmocka_unit_test(test_arg_counts),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_check_name),
		cmocka_unit_test(test_line_endings),
		cmocka_unit_test(test_one_command_per_write),
		cmocka_unit_test(test_control_chars),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_parse_size),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
