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

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

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

/*
 * Format a message into buf (len bytes, NUL-terminated).  A message too
 * long for buf is cut and ends with "..." so that the cut shows: a
 * reason is never silently shortened.  Returns true if it fitted.
 */
bool td_msgf(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
bool td_vmsgf(char *buf, size_t len, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

#endif
