/*
 * fs/fs_i.h - private to fs/, the FUSE front end: the mount (the engine's
 * state plus what only FUSE needs), the pruner, and the request table.
 * Everything below FUSE is in engine/ (engine/engine.h).
 */
#ifndef SQ_FS_I_H
#define SQ_FS_I_H

#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 12)
#include <fuse_lowlevel.h>

#include "engine/engine.h"

#include <stdatomic.h>
#include <stdbool.h>

struct sq_prune;

/* The FUSE session's userdata. */
struct sq_mount {
	struct sq_fs fs;	/* the engine's state */

	/* Immutable after mount. */
	double timeout;		/* entry/attr timeout, seconds */
	bool writeback;		/* -o writeback_cache asked for */
	bool own_checks;	/* no default_permissions: open() checks
				 * the mode against BACKING itself */
	struct fuse_session *se; /* for notifications; set before mount */
	int inval_max;		/* O_DIRECT writes that may drop pages
				 * before their reply at once (op_write) */
	struct sq_prune *prune;	/* NULL: no pruning */

	atomic_int inval_busy;	/* how many do now */
	bool dont_mask;		/* set by op_init(): modes come unmasked,
				 * with the caller's umask beside them */
};

static inline struct sq_mount *sq_mount_of(struct sq_fs *fs)
{
	return (struct sq_mount *)(void *)fs;	/* fs is its first member */
}

/* ops.c: the request handlers. */
extern const struct fuse_lowlevel_ops sq_fs_ops;

/* ---- prune.c: keeps the inode table within the fd limit ----
 *
 * Every inode the kernel knows holds an O_PATH fd: a tree walk (tar,
 * rsync, find) would run out of descriptors.  The pruner's job (on a work
 * queue of its own, every second) asks the kernel to forget the least
 * recently used inodes by their names, and sends the page-cache
 * invalidations a request could not wait for.
 */
int sq_prune_start(struct sq_mount *m);
/* Stops the pruner; a notification stuck in the kernel is left behind
 * after a few seconds (the session loop may not answer any more). */
void sq_prune_stop(struct sq_mount *m);
/* Inode @i was just looked up as @name in @parent (fuse replies an entry). */
void sq_prune_note(struct sq_mount *m, struct sq_inode *i,
		   struct sq_inode *parent, const char *name);
/* The name @name of @parent is gone (unlinked, or renamed to @nparent's
 * @nname when that is not NULL): @i, found under it, forgets or moves it. */
void sq_prune_rename(struct sq_mount *m, struct sq_inode *i,
		     struct sq_inode *parent, const char *name,
		     struct sq_inode *nparent, const char *nname);
/* Has the pruner's thread ask the kernel to drop the cached pages of
 * [@off, @off + @len) of @ino soon (a request must not wait for that
 * itself beyond a few at once: see op_write()). */
void sq_prune_inval_later(struct sq_mount *m, fuse_ino_t ino, off_t off,
			  off_t len);

#endif /* SQ_FS_I_H */
