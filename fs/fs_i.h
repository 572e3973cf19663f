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
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>

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

	/* The control directory (ctl.c). */
	uid_t owner_uid;	/* who mounted: may write control */
	gid_t owner_gid;
	struct timespec mounted_at;
	ino_t ctl_dir_ino;	/* BACKING/.squeezefs's, shown for it */
	const char *codec_forced; /* -o codec=C other than auto, or NULL */
	atomic_int policy;	/* enum sq_an_policy of fs.an's table */
	atomic_uint_fast64_t io_reads, io_writes;
	atomic_uint_fast64_t io_bytes_read, io_bytes_written;
	pthread_mutex_t ctl_lock;
	char last_error[512];	/* guarded by ctl_lock */
};

/* The /proc/self/fd path of @fd: path-only calls (xattrs, linkat) on an
 * O_PATH descriptor. */
static inline void sq_proc_path(char *buf, size_t n, int fd)
{
	snprintf(buf, n, "/proc/self/fd/%d", fd);
}

static inline struct sq_mount *sq_mount_of(struct sq_fs *fs)
{
	return (struct sq_mount *)(void *)fs;	/* fs is its first member */
}

/* ---- ctl.c: MOUNT/.squeezefs, the control directory ----
 *
 * Its nodes have the node ids SQ_CTL_FIRST..SQ_CTL_LAST; ops.c hands every
 * request on them here (and the lookup of SQ_RESERVED_NAME in the root).
 */
#define SQ_CTL_FIRST 2
#define SQ_CTL_LAST 6
bool sq_ctl_node(fuse_ino_t ino);
void sq_ctl_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void sq_ctl_getattr(fuse_req_t req, fuse_ino_t ino);
void sq_ctl_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		    int to_set);
void sq_ctl_access(fuse_req_t req, fuse_ino_t ino, int mask);
void sq_ctl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void sq_ctl_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		 struct fuse_file_info *fi);
void sq_ctl_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		  size_t size, off_t off);
void sq_ctl_release(fuse_req_t req, fuse_ino_t ino,
		    struct fuse_file_info *fi);
void sq_ctl_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    bool plus);

/* The virtual xattrs of every file and directory: user.squeezefs.stats
 * (read only) and user.squeezefs.codec (the pin, pin.h). */
bool sq_ctl_xattr(const char *name);
void sq_ctl_getxattr(fuse_req_t req, struct sq_inode *i, const char *name,
		     size_t size);
/* @value NULL: remove. */
void sq_ctl_setxattr(fuse_req_t req, struct sq_inode *i, const char *name,
		     const char *value, size_t size, int flags);
/* A getxattr/listxattr reply of the @n bytes at @buf to a request for
 * @size bytes: the length when @size is 0, ERANGE when it is short. */
void sq_fs_reply_xattr(fuse_req_t req, const char *buf, size_t n,
		       size_t size);
/* A file or directory was just made in @parent: it inherits @parent's
 * pin.  The new object is open as @fd (a real fd), or is @child.
 * Returns 1 with the pin in @spec (SQ_PIN_MAX bytes; NULL: not wanted)
 * when it was given one, else 0. */
int sq_ctl_inherit(struct sq_mount *m, struct sq_inode *parent, int fd,
		   struct sq_inode *child, char *spec);

/* ops.c: the request handlers. */
extern const struct fuse_lowlevel_ops sq_fs_ops;

/* open.c: opens @i's data state as an open() would (an open reference, mode as
 * sq_file_open()'s), and closes it as the last release() would (stores,
 * statistics, packing).  0 or -errno. */
int sq_fs_get_file(struct sq_fs *fs, struct sq_inode *i, int mode, int rwfd);
int sq_fs_put_file(struct sq_fs *fs, struct sq_inode *i);

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
