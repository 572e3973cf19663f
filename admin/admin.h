/*
 * admin/admin.h - the commands that work on an unmounted BACKING, run as
 * `squeezefs COMMAND ...` (the mount program hands them to
 * squeezefs-admin, which links the engine without libfuse).  Each takes
 * BACKING's lock (engine/lock.h) while it runs.
 */
#ifndef SQ_ADMIN_H
#define SQ_ADMIN_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Each gets argv from its command's name on (argv[0] "fsck", ...) and
 * returns the process's exit status, documented at its file's top. */
int sq_admin_fsck(int argc, char **argv);
int sq_admin_export(int argc, char **argv);
int sq_admin_import(int argc, char **argv);
/* These talk to a mounted squeezefs (admin/mounted.c). */
int sq_admin_stats(int argc, char **argv);
int sq_admin_settle(int argc, char **argv);
int sq_admin_recompress(int argc, char **argv);

/* The progress line of the long commands (admin/progress.c). */
struct sq_progress {
	const char *verb;
	bool on, tty;
	uint64_t total, done;	/* bytes */
	struct timespec start, last;
};
void sq_progress_start(struct sq_progress *p, const char *verb, bool on,
		       uint64_t total);
/* Draws it (at most every 0.2 s on a terminal, 5 s otherwise; @final:
 * now, and ends the line). */
void sq_progress_show(struct sq_progress *p, bool final);
/* Ends a line being redrawn before a message is printed. */
void sq_progress_break(struct sq_progress *p);

#endif /* SQ_ADMIN_H */
