/*
 * fs/log.c - the daemon's log: stderr in the foreground, syslog once
 * daemonized.  The only place messages leave the process.
 */
#include "fs/fs_i.h"

#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

/* Set once before the session starts; read-only afterwards. */
static bool log_syslog;
static bool log_debug;

void sq_log_init(bool to_syslog, bool debug)
{
	log_syslog = to_syslog;
	log_debug = debug;
	if (to_syslog)
		openlog("squeezefs", LOG_PID, LOG_DAEMON);
}

void sq_log(int level, const char *fmt, ...)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	va_list ap;

	if (level == SQ_LOG_DEBUG && !log_debug)
		return;
	va_start(ap, fmt);
	if (log_syslog) {
		vsyslog(prio[level], fmt, ap);
	} else {
		char line[1024];

		/* One write per message so lines of threads never interleave. */
		vsnprintf(line, sizeof(line), fmt, ap);
		fprintf(stderr, "squeezefs: %s\n", line);
	}
	va_end(ap);
}
