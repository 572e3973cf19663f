/*
 * engine/inode.h - the inode table: one sq_inode per backing object that
 * someone holds, found by the object's (device, inode number), and the
 * references that keep it alive.
 *
 * References (all guarded by sq_fs.itable_lock, counted separately so
 * each holder drops only its own):
 *	lookup	the front end's: the kernel knows the inode (FUSE lookups
 *		minus forgets);
 *	open	open handles of the file;
 *	pin	background jobs (the packer, the settle loop) that hold an
 *		inode the kernel may forget meanwhile.
 * The inode is freed when all three reach zero, by whoever dropped the
 * last one: its open data state is closed (stored), its cached blocks
 * dropped, a doomed packed image freed, its O_PATH fd closed.  The root
 * lives as long as the mount.
 *
 * An inode's fields say who guards them.  Its lock serializes everything
 * done to the one file's data (engine.h's lock order).
 */
#ifndef SQ_INODE_H
#define SQ_INODE_H

#include "engine/pin.h"
#include "meta/pack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

struct sq_fs;
struct sq_file;

/* One name of an inode, as the kernel knows it (the front end's hints). */
struct sq_iname {
	struct sq_iname *next;
	uint64_t parent;	/* the front end's id of the directory */
	char name[];
};

struct sq_inode {
	/* Immutable after creation. */
	int fd;			/* O_PATH fd of the backing object */
	dev_t src_dev;
	ino_t src_ino;
	mode_t type;		/* S_IFMT bits: a file never changes type */
	uint64_t serial;	/* unique for the mount's lifetime: cache key */

	/* Guarded by sq_fs.itable_lock. */
	uint64_t nlookup;	/* kernel references (lookup - forget) */
	unsigned nopen;		/* open handles */
	unsigned npin;		/* background jobs' pins */
	bool pack_queued;	/* waiting in the packer's queue */
	struct sq_inode *hnext;	/* hash chain */
	/* The names the kernel last looked it up by (a hard-linked file has
	 * a dentry per name: all must go for the kernel to forget it), most
	 * recent first, and when (sq_fs.use_tick): the front end's hints for
	 * asking the kernel to forget it.  Freed with the inode. */
	struct sq_iname *names;
	unsigned nnames;
	uint64_t used;

	/* The kernel asks for security.capability before every write():
	 * once it is known absent, we answer without the backing.  xgen
	 * moves before and after every setxattr; nocaps_gen is xgen + 1 as
	 * it was when the absence was seen (0: not known). */
	atomic_uint_fast64_t xgen, nocaps_gen;

	pthread_mutex_t lock;
	/* Guarded by lock. */
	struct sq_file *file;	/* data state while open (file.h), else NULL */
	/* A packed file whose last name went while the kernel still knew
	 * it: its image goes with the inode (it can be opened until then,
	 * through /proc/PID/fd or a handle). */
	bool doomed;
	struct sq_pack_ref doomed_ref;
	bool settling;		/* the settle loop is at it: the packer
				 * leaves it alone */
	/* Its backing file was replaced (a plain file converted, settle.h):
	 * the front end answers ESTALE to opens and changes, and the kernel
	 * looks the name up again.  Set under lock, read anywhere. */
	atomic_bool stale;
	atomic_bool lookalike_said;	/* logged: a plain file that begins
					 * like a container */
	uint64_t wgen;		/* moves at every open for writing: the
				 * packer's proof that content it read is
				 * still the file's (ctime ticks coarsely) */
	/* Logical size of a closed file, valid while the container's
	 * size/mtime/ctime still equal the cached ones. */
	bool size_cached;
	uint64_t cached_size;
	off_t cached_bsize;
	blkcnt_t cached_blocks;	/* a packed file's, else -1 */
	struct sq_pack_ref cached_ref; /* a packed file's reference */
	struct timespec cached_mtim, cached_ctim;
	/* log2 of the st_blksize shown for a regular file, fixed at its
	 * first getattr (0 before): its block size where known, else the
	 * mount's.  SEEK_DATA/SEEK_HOLE answer at least this coarsely, so
	 * the two always agree. */
	unsigned shown_bshift;
	/* The copy of its codec pin (pin.h): a directory's, which files
	 * made in it inherit, and a file's, which its data state stores
	 * with; set when made, read once otherwise, changed with the xattr
	 * through the mount.  0 not read yet, 1 none, 2 in pin[]. */
	int pin_state;
	char pin[SQ_PIN_MAX];
};

/* The kinds of references (see above). */
enum sq_iref { SQ_IREF_LOOKUP, SQ_IREF_OPEN, SQ_IREF_PIN };

/* Sets up the table and the root inode from fs->root_fd.  Returns 0 or
 * -errno. */
int sq_itable_init(struct sq_fs *fs);
/* At unmount, once no request or job can reach an inode any more: closes
 * (stores) every file still open and frees every inode.  Returns false
 * when some file's data could not be stored (each is logged). */
bool sq_itable_release(struct sq_fs *fs);

/*
 * Finds or creates the inode of the backing object opened as @fd (O_PATH;
 * consumed) and described by @st, and takes one reference of @kind.
 * Returns 0 or -ENOMEM.  References on the root are not counted.
 */
int sq_inode_get(struct sq_fs *fs, int fd, const struct stat *st,
		 enum sq_iref kind, struct sq_inode **out);
/*
 * The live inode of (@dev, @ino) with a reference of @kind taken, or NULL.
 * Its fd pins the backing object, so a match is the same object, not a
 * reused inode number.  A background job pins files the kernel never
 * looked up this way.
 */
struct sq_inode *sq_inode_find(struct sq_fs *fs, dev_t dev, ino_t ino,
			       enum sq_iref kind);
/* Whether an inode of (@dev, @ino) is live now: a hint, it may change at
 * once. */
bool sq_inode_live(struct sq_fs *fs, dev_t dev, ino_t ino);
/* Takes one more reference of @kind (the caller holds one already). */
void sq_inode_hold(struct sq_fs *fs, struct sq_inode *i, enum sq_iref kind);
/* Drops @n references of @kind; frees @i when none of any kind remain.
 * Never with @i->lock held (freeing takes it). */
void sq_inode_put(struct sq_fs *fs, struct sq_inode *i, enum sq_iref kind,
		  uint64_t n);
/* How many open references @i has now. */
unsigned sq_inode_opens(struct sq_fs *fs, struct sq_inode *i);

/* Opens @i's backing file anew (i->fd is O_PATH) with @flags | O_CLOEXEC;
 * O_NOATIME is dropped where the kernel refuses it (a file the daemon
 * does not own).  Returns the fd or -1 with errno set.  Any thread. */
static inline int sq_inode_open(const struct sq_inode *i, int flags)
{
	char path[32];
	int fd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", i->fd);
	fd = open(path, flags | O_CLOEXEC);
	if (fd < 0 && errno == EPERM && (flags & O_NOATIME))
		fd = open(path, (flags & ~O_NOATIME) | O_CLOEXEC);
	return fd;
}

#endif /* SQ_INODE_H */
