/*
 * engine/log.h - the daemon's log: stderr in the foreground, syslog once
 * daemonized.  Every message of the engine, the front end and libfuse
 * itself (fs/main.c routes libfuse's through sq_log) leaves here.
 */
#ifndef SQ_LOG_H
#define SQ_LOG_H

#include <stdarg.h>
#include <stdbool.h>

enum { SQ_LOG_ERR, SQ_LOG_WARN, SQ_LOG_INFO, SQ_LOG_DEBUG };

/* Called once, before any thread logs; @debug lets SQ_LOG_DEBUG through. */
void sq_log_init(bool to_syslog, bool debug);

/* Thread-safe: one line per call (threads' lines never interleave). */
void sq_log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void sq_vlog(int level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

#endif /* SQ_LOG_H */
