/* SPDX-License-Identifier: MIT */
/*
 * The table of built-in drivers, looked up by name.  Adding a driver is
 * its file and one line here.  What a driver may call, and the defaults
 * of its optional callbacks, are in td-driver.c.
 */
#include <errno.h>
#include <string.h>

#include <tapfs/log.h>
#include <tapfs/tapdisk.h>

extern const struct tap_disk tapdisk_aio;
extern const struct tap_disk tapdisk_sync;
extern const struct tap_disk tapdisk_ram;
extern const struct tap_disk tapdisk_vhd;
extern const struct tap_disk tapdisk_qcow2;
extern const struct tap_disk tapdisk_qcow;
extern const struct tap_disk tapdisk_vmdk;
extern const struct tap_disk tapdisk_fault;
extern const struct tap_disk tapdisk_rbd;

/*
 * Every built-in driver, looked up by .name.  td_probe_driver asks their
 * td_probe in this order: a format known by a magic at the start of the
 * file (qcow2) before vhd, whose cookie may be a footer at its end.
 */
static const struct tap_disk *const td_drivers[] = {
	&tapdisk_aio,
	&tapdisk_sync,
	&tapdisk_ram,
	&tapdisk_qcow,		/* before qcow2, which claims any QFI magic */
	&tapdisk_qcow2,
	&tapdisk_vmdk,
	&tapdisk_vhd,
	&tapdisk_fault,
	&tapdisk_rbd,
	NULL,
};

/* Other names users may give a driver by. */
static const struct {
	const char *alias;
	const char *name;
} td_driver_aliases[] = {
	{ "raw", "aio" },
};

int td_drivers_init(void)
{
	char err[256];
	size_t i, j;

	for (i = 0; td_drivers[i]; i++) {
		if (td_driver_validate(td_drivers[i], err, sizeof(err))) {
			td_log(TD_LOG_ERR, "%s", err);
			return -EINVAL;
		}
		for (j = 0; j < i; j++) {
			if (!strcmp(td_drivers[i]->name, td_drivers[j]->name)) {
				td_log(TD_LOG_ERR, "driver name %s registered "
				       "twice", td_drivers[i]->name);
				return -EINVAL;
			}
		}
	}
	return 0;
}

const struct tap_disk *td_driver_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(td_driver_aliases) /
			sizeof(td_driver_aliases[0]); i++)
		if (!strcmp(name, td_driver_aliases[i].alias))
			name = td_driver_aliases[i].name;
	for (i = 0; td_drivers[i]; i++)
		if (!strcmp(name, td_drivers[i]->name))
			return td_drivers[i];
	return NULL;
}

const struct tap_disk *const *td_driver_list(void)
{
	return td_drivers;
}
