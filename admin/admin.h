/*
 * admin/admin.h - the commands that work on an unmounted BACKING, run as
 * `squeezefs COMMAND ...` (the mount program hands them to
 * squeezefs-admin, which links the engine without libfuse).  Each takes
 * BACKING's lock (engine/lock.h) while it runs.
 */
#ifndef SQ_ADMIN_H
#define SQ_ADMIN_H

/* Each gets argv from its command's name on (argv[0] "fsck", ...) and
 * returns the process's exit status, documented at its file's top. */
int sq_admin_fsck(int argc, char **argv);
int sq_admin_export(int argc, char **argv);
/* These talk to a mounted squeezefs (admin/mounted.c). */
int sq_admin_stats(int argc, char **argv);
int sq_admin_settle(int argc, char **argv);
int sq_admin_recompress(int argc, char **argv);

#endif /* SQ_ADMIN_H */
