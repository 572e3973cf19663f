/*
 * engine/log.c - the daemon's log: stderr in the foreground, syslog once
 * daemonized.  The only place messages leave the process.
 */
#include "engine/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
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

void sq_vlog(int level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

	if (level < SQ_LOG_ERR || level > SQ_LOG_DEBUG)
		level = SQ_LOG_ERR;
	if (level == SQ_LOG_DEBUG && !log_debug)
		return;
	if (log_syslog) {
		vsyslog(prio[level], fmt, ap);
	} else {
		char line[1024];
		size_t n;

		/* One write per message so lines of threads never interleave;
		 * libfuse's messages end in a newline of their own. */
		vsnprintf(line, sizeof(line), fmt, ap);
		n = strlen(line);
		while (n && line[n - 1] == '\n')
			line[--n] = '\0';
		fprintf(stderr, "squeezefs: %s\n", line);
	}
}

void sq_log(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sq_vlog(level, fmt, ap);
	va_end(ap);
}
