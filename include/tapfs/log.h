/* SPDX-License-Identifier: MIT */
/*
 * tapfs logging: one function, one printf-format attribute, a level.
 *
 * Messages go to stderr (foreground) or syslog (daemon), chosen once at
 * start-up with td_log_open().  Log once, where a failure is understood,
 * naming the file and the value.
 */
#ifndef TAPFS_LOG_H
#define TAPFS_LOG_H

#include <stdbool.h>

enum td_log_level {
	TD_LOG_ERR,
	TD_LOG_WARN,
	TD_LOG_INFO,
	TD_LOG_DEBUG,
};

/* Send messages to syslog (true) or stderr (false), filter below level. */
void td_log_open(const char *ident, bool use_syslog, enum td_log_level level);

void td_log(enum td_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif
