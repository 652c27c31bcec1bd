/* SPDX-License-Identifier: MIT */
/* tapfs logging: stderr in the foreground, syslog when daemonised. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>

#include <tapfs/log.h>

/* Written once by td_log_open() before any other thread exists. */
static struct {
	bool use_syslog;
	enum td_log_level level;
	const char *ident;
} td_log_cfg = { false, TD_LOG_INFO, "tapfs" };

void td_log_open(const char *ident, bool use_syslog, enum td_log_level level)
{
	td_log_cfg.ident = ident;
	td_log_cfg.use_syslog = use_syslog;
	td_log_cfg.level = level;
	if (use_syslog)
		openlog(ident, LOG_PID, LOG_DAEMON);
}

void td_log(enum td_log_level level, const char *fmt, ...)
{
	static const int prio[] = {
		[TD_LOG_ERR] = LOG_ERR,
		[TD_LOG_WARN] = LOG_WARNING,
		[TD_LOG_INFO] = LOG_INFO,
		[TD_LOG_DEBUG] = LOG_DEBUG,
	};
	static const char *const tag[] = {
		[TD_LOG_ERR] = "error: ",
		[TD_LOG_WARN] = "warning: ",
		[TD_LOG_INFO] = "",
		[TD_LOG_DEBUG] = "debug: ",
	};
	va_list ap;

	if (level > td_log_cfg.level)
		return;
	va_start(ap, fmt);
	if (td_log_cfg.use_syslog) {
		vsyslog(prio[level], fmt, ap);
	} else {
		fprintf(stderr, "%s: %s", td_log_cfg.ident, tag[level]);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}

bool td_vmsgf(char *buf, size_t len, const char *fmt, va_list ap)
{
	int n;

	if (!buf || !len)
		return false;
	n = vsnprintf(buf, len, fmt, ap);
	if (n >= 0 && (size_t)n < len)
		return true;
	if (len > 3)
		memcpy(buf + len - 4, "...", 4);
	return false;
}

bool td_msgf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	bool fit;

	va_start(ap, fmt);
	fit = td_vmsgf(buf, len, fmt, ap);
	va_end(ap);
	return fit;
}
