/*
 * fs/ops.c - the FUSE low-level operations.  Every backing access is
 * relative to an O_PATH fd held per inode (never a rebuilt path), so hard
 * links, files unlinked while open and trees deeper than PATH_MAX work.
 * Regular files go through the engine (engine/file.h); everything else
 * mirrors BACKING 1:1.  Each handler replies exactly once.
 */
#include "fs/fs_i.h"

#include "analyzer/analyzer.h"
#include "engine/attr.h"
#include "engine/cache.h"
#include "engine/file.h"
#include "engine/inode.h"
#include "engine/log.h"
#include "engine/pack_store.h"
#include "engine/packer.h"
#include "engine/track.h"
#include "engine/xattr.h"
#include "meta/container.h"
#include "meta/pack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static struct sq_mount *mnt_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct sq_fs *fs_of(fuse_req_t req)
{
	return &mnt_of(req)->fs;
}

static struct sq_inode *ino_of(fuse_req_t req, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &fs_of(req)->root;
	return (struct sq_inode *)(uintptr_t)ino;
}

static fuse_ino_t ino_id(struct sq_fs *fs, struct sq_inode *i)
{
	return i == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)i;
}

/*
 * The inode number the mount shows for the backing object (@dev, @ino):
 * BACKING's own, so that it is the same on every path (lookup, getattr,
 * readdir, readdirplus), after a remount, for every link of a file, and
 * never another live file's while this one exists.  tar, cp -a and
 * rsync -H find hard links by it; git, borg and restic spot unchanged
 * files by it.  (The FUSE node id, our inode's address, stays between us
 * and the kernel: it is reused once the kernel forgets an inode.)  An
 * object on another filesystem mounted inside BACKING gets its device
 * mixed into the high bits, which 32-bit inode numbers leave free.
 */
static ino_t show_ino(const struct sq_fs *fs, dev_t dev, ino_t ino)
{
	uint64_t d = (uint64_t)dev;

	if (dev == fs->root.src_dev)
		return ino;
	d *= 0x9E3779B97F4A7C15ull;
	return (ino_t)((uint64_t)ino ^ (d & 0xFFFFFFFF00000000ull));
}

static void show_attr(const struct sq_fs *fs, struct stat *st)
{
	st->st_ino = show_ino(fs, st->st_dev, st->st_ino);
}

/* Set once by op_init(), before any request. */
static bool as_root;
static uid_t daemon_uid;
static gid_t daemon_gid;

/* BACKING/.squeezefs belongs to squeezefs: invisible and unusable. */
static bool reserved(struct sq_fs *fs, struct sq_inode *parent,
		     const char *name)
{
	return parent == &fs->root && strcmp(name, SQ_RESERVED_NAME) == 0;
}

/* ---- attributes ---- */

static void emfile_warn(void);

/*
 * The attributes the mount shows: the backing object's, with a regular
 * file's logical size from its container (st_blocks stays the backing
 * file's, so du shows what is really stored).  With @fresh, @st already
 * holds the backing object's attributes, just read by the caller.
 */
static int do_getattr(struct sq_fs *fs, struct sq_inode *i, struct stat *st,
		      bool fresh)
{
	bool peek = false;
	int r;

	if (!fresh &&
	    fstatat(i->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
		return -errno;
	if (!S_ISREG(st->st_mode))
		return 0;
	pthread_mutex_lock(&i->lock);
	/* Packing and unpacking change a closed file's container under this
	 * lock: unless the cache answers, how to read the size must be
	 * decided on attributes taken under it too, or a container packed
	 * meanwhile would be read as an empty one. */
	if (!i->file && !sq_attr_cached(i, st) &&
	    fstatat(i->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)) {
		r = -errno;
		pthread_mutex_unlock(&i->lock);
		return r;
	}
	if (i->file) {
		sq_file_stat(i, st);
	} else if (sq_attr_cached(i, st)) {
		st->st_size = (off_t)i->cached_size;
		if (i->cached_blocks >= 0)
			st->st_blocks = i->cached_blocks;
	} else if (st->st_size <= SQ_PACK_STUB_LEN) {
		/* An empty backing file is an empty container, or a packed
		 * one (a stub, or empty from version 3): its reference has
		 * the logical size. */
		struct sq_pack_ref ref;
		char path[64];

		sq_proc_path(path, sizeof(path), i->fd);
		r = sq_pack_get_ref(-1, path, &ref);
		if (r == 0) {
			/* Version 3's: the packer gives it a stub. */
			if (st->st_size == 0)
				sq_packer_note(fs->packer, i);
			sq_attr_cache_size(i, st, ref.size,
					    (blkcnt_t)((ref.len + 511) / 512));
			i->cached_ref = ref;
		} else if (r == -ENODATA && st->st_size == 0) {
			sq_attr_cache_size(i, st, 0, -1);
		} else if (r == -ENODATA && !fs->vol.legacy) {
			/* One byte: a plain file's, or a stub's zero (which
			 * the peek below refuses). */
			peek = true;
		}
		/* A stub without its reference (BACKING copied without
		 * xattrs) is damaged: opening it says so. */
		/* A damaged reference or a failed read is not remembered:
		 * opening the file reports it. */
	} else {
		peek = true;
	}
	if (peek) {
		uint64_t size;
		unsigned shift;
		int fd;

		/* A stat is no access: leave the file's atime alone. */
		fd = sq_inode_open(i, O_RDONLY | O_NOATIME);
		/* Out of descriptors or memory for a moment: the size is
		 * not known, and the backing size would be a wrong one. */
		if (fd < 0 && (errno == EMFILE || errno == ENFILE ||
			       errno == ENOMEM)) {
			r = -errno;
			pthread_mutex_unlock(&i->lock);
			if (r != -ENOMEM)
				emfile_warn();
			return r;
		}
		/* An unreadable or damaged container keeps the backing size:
		 * opening it reports the problem, and getattr must not fail
		 * or the file could not even be removed. */
		if (fd >= 0) {
			if (sq_ctr_peek(fd, &fs->vol, &size, &shift,
					NULL) == 0) {
				sq_attr_cache_size(i, st, size, -1);
				if (!i->shown_bshift)
					i->shown_bshift = shift;
			}
			close(fd);
		}
	}
	/*
	 * st_blksize is the file's block size: the grain at which its holes
	 * are found (SEEK_HOLE), and a good size for I/O (whole blocks are
	 * read, compressed and cached).  A packed or empty file's is not
	 * known without reading more: the mount's (see shown_bshift).
	 */
	if (!i->shown_bshift)
		i->shown_bshift = i->file ? sq_file_bshift(i) : fs->block_shift;
	st->st_blksize = (blksize_t)1 << i->shown_bshift;
	pthread_mutex_unlock(&i->lock);
	return 0;
}

static void reply_entry(fuse_req_t req, struct sq_fs *fs, struct sq_inode *i,
			const struct stat *st)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = ino_id(fs, i);
	e.attr = *st;
	show_attr(fs, &e.attr);
	e.attr_timeout = sq_mount_of(fs)->timeout;
	e.entry_timeout = sq_mount_of(fs)->timeout;
	if (fuse_reply_entry(req, &e) == -ENOENT)
		sq_inode_put(fs, i, SQ_IREF_LOOKUP, 1);	/* the kernel dropped the request */
}

/* Each inode the kernel keeps holds one fd: say once what to do when that
 * runs out, instead of failing lookups silently. */
static void emfile_warn(void)
{
	static atomic_bool said;

	if (!atomic_exchange(&said, true))
		sq_log(SQ_LOG_ERR, "out of file descriptors (one per cached "
		       "inode): raise the hard limit (ulimit -Hn, LimitNOFILE)");
}

/*
 * Looks @name up in @parent, taking a lookup reference on success.  With
 * @probe the name is stat'ed first, and an inode the table already has
 * costs that one call instead of opening and closing an O_PATH fd; without
 * it (a name just created, or not known yet) it is opened at once.
 */
static int do_lookup(struct sq_fs *fs, struct sq_inode *parent,
		     const char *name, bool probe, struct sq_inode **out,
		     struct stat *st)
{
	struct sq_inode *i;
	int fd, r;

	if (reserved(fs, parent, name))
		return -ENOENT;
	if (probe) {
		if (fstatat(parent->fd, name, st, AT_SYMLINK_NOFOLLOW))
			return -errno;
		i = sq_inode_find(fs, st->st_dev, st->st_ino,
				   SQ_IREF_LOOKUP);
		if (i)
			goto found;
	}
	fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		if (r == -EMFILE || r == -ENFILE)
			emfile_warn();
		return r;
	}
	if (fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)) {
		r = -errno;
		close(fd);
		return r;
	}
	r = sq_inode_get(fs, fd, st, SQ_IREF_LOOKUP, &i);
	if (r)
		return r;
found:
	r = do_getattr(fs, i, st, true);
	if (r) {
		sq_inode_put(fs, i, SQ_IREF_LOOKUP, 1);
		return r;
	}
	sq_prune_note(sq_mount_of(fs), i, parent, name);
	*out = i;
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct sq_fs *fs = fs_of(req);
	struct sq_inode *i;
	struct stat st;
	int r = do_lookup(fs, ino_of(req, parent), name, true, &i, &st);

	if (r)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, fs, i, &st);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	sq_inode_put(fs_of(req), ino_of(req, ino), SQ_IREF_LOOKUP, nlookup);
	fuse_reply_none(req);
}

/*
 * Whether @i's backing file was replaced (a plain file converted into a
 * container, engine/settle.h): then the request gets ESTALE, and the
 * kernel looks the name up again and finds the container (the VFS retries
 * path lookups on ESTALE).  Nothing can have it open.
 */
static bool replaced(fuse_req_t req, struct sq_inode *i)
{
	if (!atomic_load(&i->stale))
		return false;
	fuse_reply_err(req, ESTALE);
	return true;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct sq_fs *fs = fs_of(req);
	struct stat st;
	int r;

	/* Its old attributes would be shown (and its old xattrs below). */
	if (!fi && replaced(req, ino_of(req, ino)))
		return;
	r = do_getattr(fs, ino_of(req, ino), &st, false);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	show_attr(fs, &st);
	fuse_reply_attr(req, &st, sq_mount_of(fs)->timeout);
}

/* Whether the caller of @req is in group @gid. */
static bool caller_in_group(fuse_req_t req, gid_t gid)
{
	gid_t groups[64];
	int n;

	if (fuse_req_ctx(req)->gid == gid)
		return true;
	n = fuse_req_getgroups(req, 64, groups);
	if (n > 64) {
		gid_t *all = malloc((size_t)n * sizeof(*all));
		bool in = false;

		if (!all)
			return true;	/* when unsure, keep the bit */
		int max = n;

		n = fuse_req_getgroups(req, max, all);
		for (int k = 0; k < n && k < max && !in; k++)
			in = all[k] == gid;
		free(all);
		return in;
	}
	for (int k = 0; k < n; k++)
		if (groups[k] == gid)
			return true;
	return n < 0;	/* unknown (no /proc): keep the bit */
}

/*
 * A change of a file's data by an unprivileged caller clears setuid, and
 * setgid where it grants the group's rights (group exec set) or the
 * caller is not in the group, as a local filesystem does.  The kernel
 * does it before write() and truncate() (it sends us the new mode), not
 * before fallocate() or a punched hole.  Only where the kernel checks
 * permissions: otherwise the caller is the daemon's own user, and BACKING
 * clears the bits itself when the daemon changes the container.  Root
 * stands in for CAP_FSETID, which a request does not carry.
 */
static void data_changed(fuse_req_t req, struct sq_inode *i)
{
	struct stat st;
	char path[64];
	mode_t mode;

	if (mnt_of(req)->own_checks || fuse_req_ctx(req)->uid == 0)
		return;
	if (fstatat(i->fd, "", &st, AT_EMPTY_PATH) ||
	    !(st.st_mode & (S_ISUID | S_ISGID)))
		return;
	mode = st.st_mode & 07777 & ~(mode_t)S_ISUID;
	if ((st.st_mode & S_ISGID) &&
	    ((st.st_mode & S_IXGRP) || !caller_in_group(req, st.st_gid)))
		mode &= ~(mode_t)S_ISGID;
	sq_proc_path(path, sizeof(path), i->fd);
	if (chmod(path, mode))
		sq_log(SQ_LOG_WARN, "clearing setuid/setgid of a changed file "
		       "failed: %s", strerror(errno));
}

static int set_times(struct sq_inode *i, const struct timespec ts[2])
{
	char path[64];

	if (utimensat(i->fd, "", ts, AT_EMPTY_PATH) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOENT)
		return -errno;
	if (i->type == S_IFLNK)
		return -EPERM;
	sq_proc_path(path, sizeof(path), i->fd);
	return utimensat(AT_FDCWD, path, ts, 0) ? -errno : 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int valid, struct fuse_file_info *fi)
{
	struct sq_fs *fs = fs_of(req);
	struct sq_inode *i = ino_of(req, ino);
	char path[64];
	struct stat st;
	int r = 0;

	(void)fi;
	sq_proc_path(path, sizeof(path), i->fd);
	if (valid & FUSE_SET_ATTR_MODE) {
		mode_t mode = attr->st_mode & 07777;

		/*
		 * A caller outside the file's group never leaves setgid set:
		 * the kernel strips it from a chmod, but not from the mode it
		 * sends to drop setuid before that caller writes or truncates
		 * (a forced change), where a local filesystem drops both.
		 */
		if ((mode & S_ISGID) && !sq_mount_of(fs)->own_checks &&
		    fuse_req_ctx(req)->uid != 0 &&
		    fstatat(i->fd, "", &st, AT_EMPTY_PATH) == 0 &&
		    !caller_in_group(req, (valid & FUSE_SET_ATTR_GID) ?
						  attr->st_gid : st.st_gid))
			mode &= ~(mode_t)S_ISGID;
		/* Under the lock, as a conversion's exchange (settle.h). */
		pthread_mutex_lock(&i->lock);
		r = atomic_load(&i->stale) ? -ESTALE :
		    chmod(path, mode) ? -errno : 0;
		pthread_mutex_unlock(&i->lock);
		if (r)
			goto out;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid
							: (uid_t)-1;
		gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid
							: (gid_t)-1;

		pthread_mutex_lock(&i->lock);
		r = atomic_load(&i->stale) ? -ESTALE :
		    fchownat(i->fd, "", uid, gid,
			     AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) ? -errno : 0;
		pthread_mutex_unlock(&i->lock);
		if (r)
			goto out;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		if (i->type != S_IFREG) {
			r = i->type == S_IFDIR ? -EISDIR : -EINVAL;
			goto out;
		}
		r = sq_fs_get_file(fs, i, attr->st_size == 0 ? SQ_OPEN_TRUNC :
			     SQ_OPEN_WRITE | SQ_OPEN_NOW, -1);
		if (r)
			goto out;
		r = sq_file_truncate(fs, i, (uint64_t)attr->st_size);
		if (!r)
			r = sq_file_flush(fs, i);
		{
			int e = sq_fs_put_file(fs, i);

			if (!r)
				r = e;
		}
		if (r)
			goto out;
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
					  { .tv_nsec = UTIME_OMIT } };

		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			ts[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			ts[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			ts[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			ts[1] = attr->st_mtim;
		/* Blocks of an open file stored later would move the
		 * container's mtime: sq_file_set_mtime() remembers this one
		 * for after them. */
		pthread_mutex_lock(&i->lock);
		r = atomic_load(&i->stale) ? -ESTALE : set_times(i, ts);
		if (!r && i->file && (valid & FUSE_SET_ATTR_MTIME) &&
		    fstatat(i->fd, "", &st, AT_EMPTY_PATH) == 0)
			sq_file_set_mtime(i, &st.st_mtim);
		pthread_mutex_unlock(&i->lock);
		if (r)
			goto out;
	}
out:
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	r = do_getattr(fs, i, &st, false);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	show_attr(fs, &st);
	fuse_reply_attr(req, &st, sq_mount_of(fs)->timeout);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct sq_inode *i = ino_of(req, ino);
	char buf[PATH_MAX + 1];
	ssize_t n = readlinkat(i->fd, "", buf, sizeof(buf));

	if (n < 0)
		fuse_reply_err(req, errno);
	else if (n >= (ssize_t)sizeof(buf))
		fuse_reply_err(req, ENAMETOOLONG);
	else {
		buf[n] = '\0';
		fuse_reply_readlink(req, buf);
	}
}

/* ---- creating names ---- */

static bool packed_ref(struct sq_inode *i, struct sq_pack_ref *ref);

/*
 * The mode to create an object with, the caller's umask applied as a
 * local filesystem applies it: only where the directory has no default
 * ACL (which then decides, umask or not).  With FUSE_CAP_DONT_MASK the
 * kernel leaves that to us and passes the umask; BACKING's filesystem
 * knows the directory's ACLs, so the request's thread takes the caller's
 * umask as its own (its own umask after unshare(CLONE_FS), which nothing
 * else here uses) and lets the backing create apply it.  Where a thread
 * cannot have its own, the umask is applied to the mode itself (default
 * ACLs then see the masked mode).
 */
static mode_t create_mode(fuse_req_t req, mode_t mode)
{
	static __thread int own_umask;	/* 0 unknown, 1 yes, -1 cannot */
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	if (!mnt_of(req)->dont_mask)
		return mode;	/* the kernel applied the umask */
	if (!own_umask)
		own_umask = unshare(CLONE_FS) == 0 ? 1 : -1;
	if (own_umask < 0)
		return mode & ~ctx->umask;
	umask(ctx->umask & 0777);
	return mode;
}

/*
 * New objects belong to the caller, as on a local filesystem, when the
 * daemon runs as root (otherwise they can only be the daemon's).  @name
 * "" means @dirfd itself.
 */
static int set_owner(fuse_req_t req, struct sq_inode *parent, int dirfd,
		     const char *name)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat pst;
	gid_t gid = ctx->gid;

	if (!as_root)
		return 0;
	/* Made with the caller's ids already (and the group of a setgid
	 * directory, which the backing filesystem applies itself). */
	if (ctx->uid == daemon_uid && ctx->gid == daemon_gid)
		return 0;
	if (fstatat(parent->fd, "", &pst, AT_EMPTY_PATH) == 0 &&
	    (pst.st_mode & S_ISGID))
		gid = pst.st_gid;	/* BSD group semantics of setgid dirs */
	if (fchownat(dirfd, name, ctx->uid, gid,
		     AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH)))
		return -errno;
	return 0;
}

static void finish_new(fuse_req_t req, struct sq_inode *parent,
		       const char *name, int r)
{
	struct sq_fs *fs = fs_of(req);
	struct sq_inode *i;
	struct stat st;

	if (!r)
		r = set_owner(req, parent, parent->fd, name);
	if (!r)
		r = do_lookup(fs, parent, name, false, &i, &st);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	if (i->type == S_IFREG || i->type == S_IFDIR)
		sq_ctl_inherit(sq_mount_of(fs), parent, -1, i, NULL);
	reply_entry(req, fs, i, &st);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	struct sq_inode *p = ino_of(req, parent);
	int r = 0;

	if (reserved(fs_of(req), p, name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (S_ISREG(mode)) {
		/* An empty file is a valid empty container. */
		int fd = openat(p->fd, name,
				O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC,
				create_mode(req, mode) & 07777);

		if (fd < 0) {
			r = -errno;
		} else {
			sq_track_created(fs_of(req)->track, fd, p->fd, name);
			close(fd);
		}
	} else if (mknodat(p->fd, name, (mode & S_IFMT) |
			   (create_mode(req, mode) & 07777), rdev)) {
		r = -errno;
	}
	finish_new(req, p, name, r);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	struct sq_inode *p = ino_of(req, parent);
	int r = 0;

	if (reserved(fs_of(req), p, name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (mkdirat(p->fd, name, create_mode(req, mode) & 07777))
		r = -errno;
	finish_new(req, p, name, r);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	struct sq_inode *p = ino_of(req, parent);
	int r = 0;

	if (reserved(fs_of(req), p, name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (symlinkat(link, p->fd, name))
		r = -errno;
	finish_new(req, p, name, r);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	struct sq_fs *fs = fs_of(req);
	struct sq_inode *i = ino_of(req, ino), *p = ino_of(req, newparent);
	struct stat st;
	char path[64];
	int r;

	if (reserved(fs, p, newname)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (atomic_load(&i->stale)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	r = linkat(i->fd, "", p->fd, newname, AT_EMPTY_PATH);
	if (r && (errno == ENOENT || errno == EINVAL || errno == EPERM)) {
		sq_proc_path(path, sizeof(path), i->fd);
		r = linkat(AT_FDCWD, path, p->fd, newname, AT_SYMLINK_FOLLOW);
	}
	if (r) {
		fuse_reply_err(req, errno);
		return;
	}
	sq_inode_hold(fs, i, SQ_IREF_LOOKUP);
	r = do_getattr(fs, i, &st, false);
	if (r) {
		sq_inode_put(fs, i, SQ_IREF_LOOKUP, 1);
		fuse_reply_err(req, -r);
		return;
	}
	/* The kernel now holds a dentry for this name too. */
	sq_prune_note(sq_mount_of(fs), i, p, newname);
	/* A packed file's new name: its image's too, for fsck --repair. */
	if (S_ISREG(st.st_mode) && sq_pack_indexing(fs->pack)) {
		struct sq_pack_ref ref;

		if (packed_ref(i, &ref))
			sq_pack_index_image(fs->pack, p->fd, newname, &ref,
					    &st.st_mtim);
	}
	reply_entry(req, fs, i, &st);
}

/*
 * Removing the name @name of @dir, by unlink or by a rename over it: a
 * packed file's image must be freed once its last link is gone.  Before,
 * replaced_get() notes whether it is packed; after, replaced_put() frees the
 * image when the object has no link left.  Under the inode lock (when the
 * table has it), so the packer cannot pack it in between.
 */
struct replaced {
	struct sq_inode *i;	/* from the table, locked; or NULL */
	int fd;			/* O_PATH of it when not in the table */
	bool packed;
	struct sq_pack_ref ref;
	ino_t ino;		/* a regular file's container, or 0 */
	nlink_t nlink;		/* its links before */
	char path[PATH_MAX];	/* its name relative to BACKING, or "" */
};

static void replaced_get(struct sq_fs *fs, struct sq_inode *dir,
		       const char *name, struct replaced *v)
{
	struct stat st;
	char path[64];

	memset(v, 0, sizeof(*v));
	v->fd = -1;
	if (fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW) ||
	    !S_ISREG(st.st_mode))
		return;
	if (fs->track) {
		v->ino = st.st_ino;
		v->nlink = st.st_nlink;
		if (sq_track_path(fs->track, dir->fd, name, v->path,
				  sizeof(v->path)))
			v->path[0] = '\0';
	}
	v->i = sq_inode_find(fs, st.st_dev, st.st_ino,
				   SQ_IREF_LOOKUP);
	if (v->i) {
		pthread_mutex_lock(&v->i->lock);
		if (fstatat(v->i->fd, "", &st, AT_EMPTY_PATH) ||
		    st.st_size > SQ_PACK_STUB_LEN)
			return;
		if (sq_attr_cached(v->i, &st)) {
			/* Known from a stat: no xattr to read. */
			v->packed = v->i->cached_blocks >= 0;
			v->ref = v->i->cached_ref;
			return;
		}
		sq_proc_path(path, sizeof(path), v->i->fd);
	} else {
		if (st.st_size > SQ_PACK_STUB_LEN)
			return;
		v->fd = openat(dir->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (v->fd < 0)
			return;
		sq_proc_path(path, sizeof(path), v->fd);
	}
	v->packed = st.st_size <= SQ_PACK_STUB_LEN &&
		    sq_pack_get_ref(-1, path, &v->ref) == 0;
}

static void replaced_put(struct sq_fs *fs, struct replaced *v, bool removed)
{
	struct stat st;
	int fd = v->i ? v->i->fd : v->fd;

	if (removed && v->ino) {
		bool last = v->nlink <= 1;

		if (fd >= 0 && fstatat(fd, "", &st, AT_EMPTY_PATH) == 0)
			last = st.st_nlink == 0;
		sq_track_unlinked(fs->track, v->ino, v->path, last);
	}

	if (removed && v->packed && fd >= 0 &&
	    fstatat(fd, "", &st, AT_EMPTY_PATH) == 0 && st.st_nlink == 0) {
		struct sq_inode *late = NULL;

		/* A lookup may have brought the inode in since replaced_get(). */
		if (!v->i)
			late = sq_inode_find(fs, st.st_dev, st.st_ino,
				   SQ_IREF_LOOKUP);
		if (v->i) {
			/* The kernel still knows the inode. */
			v->i->doomed = true;
			v->i->doomed_ref = v->ref;
		} else if (late) {
			pthread_mutex_lock(&late->lock);
			late->doomed = true;
			late->doomed_ref = v->ref;
			pthread_mutex_unlock(&late->lock);
			sq_inode_put(fs, late, SQ_IREF_LOOKUP, 1);
		} else {
			sq_pack_free_later(fs->pack, fs->bg, &v->ref);
		}
	}
	if (v->i) {
		pthread_mutex_unlock(&v->i->lock);
		sq_inode_put(fs, v->i, SQ_IREF_LOOKUP, 1);
	}
	if (v->fd >= 0)
		close(v->fd);
}

/* What a rename of @name in @dir means to the pack index: 'd' a
 * directory (packed files may lie below it), 'f' a regular file (it may be
 * packed by the time the rename is done), 0 nothing. */
static int index_kind(struct sq_inode *dir, const char *name)
{
	struct stat st;

	if (fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW))
		return 0;
	return S_ISDIR(st.st_mode) ? 'd' : S_ISREG(st.st_mode) ? 'f' : 0;
}

/* Whether @name in @dir is a packed file now. */
static bool packed_at(struct sq_inode *dir, const char *name)
{
	struct sq_pack_ref ref;
	struct stat st;
	char path[64 + NAME_MAX + 2];

	if (fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW) ||
	    !S_ISREG(st.st_mode) || st.st_size > SQ_PACK_STUB_LEN)
		return false;
	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dir->fd, name);
	return sq_pack_get_ref(-1, path, &ref) == 0;
}

/* The S_IFMT bits of @dirfd/@name, 0 when it cannot be seen. */
static mode_t stat_type(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) ? 0 :
	       st.st_mode & S_IFMT;
}

/* The inode number of @dirfd/@name, 0 when it cannot be seen. */
static ino_t stat_ino(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) ? 0 : st.st_ino;
}

/* The table's inode of @name in @dir, with a lookup reference, or NULL. */
static struct sq_inode *cached_at(struct sq_fs *fs, struct sq_inode *dir,
				  const char *name)
{
	struct stat st;

	if (fstatat(dir->fd, name, &st, AT_SYMLINK_NOFOLLOW))
		return NULL;
	return sq_inode_find(fs, st.st_dev, st.st_ino,
				   SQ_IREF_LOOKUP);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct sq_fs *fs = fs_of(req);
	struct sq_inode *p = ino_of(req, parent);
	struct replaced v;
	int r;

	if (reserved(fs, p, name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	replaced_get(fs, p, name, &v);
	r = unlinkat(p->fd, name, 0) ? errno : 0;
	if (r == 0 && v.i)
		sq_prune_rename(sq_mount_of(fs), v.i, p, name, NULL, NULL);
	replaced_put(fs, &v, r == 0);
	fuse_reply_err(req, r);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct sq_inode *p = ino_of(req, parent);

	if (reserved(fs_of(req), p, name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fuse_reply_err(req, unlinkat(p->fd, name, AT_REMOVEDIR) ? errno : 0);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct sq_fs *fs = fs_of(req);
	struct sq_inode *p = ino_of(req, parent), *np = ino_of(req, newparent);
	struct sq_inode *src = NULL, *dst = NULL;
	struct replaced v;
	char oldp[PATH_MAX] = "", oldnp[PATH_MAX] = "";
	bool track;
	int kind, r;

	if (reserved(fs, p, name) || reserved(fs, np, newname)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* An exchange removes nothing; otherwise an existing target goes. */
	if (!(flags & RENAME_EXCHANGE))
		replaced_get(fs, np, newname, &v);
	else
		memset(&v, 0, sizeof(v)), v.fd = -1;
	/* The objects whose names move, when the table has them: the
	 * pruner's names follow the kernel's dentries. */
	src = cached_at(fs, p, name);
	if (flags & RENAME_EXCHANGE)
		dst = cached_at(fs, np, newname);
	/* Under the index lock, so that the packer, which records where it
	 * packs a file under it too, sees the name before or after. */
	kind = sq_pack_indexing(fs->pack) ? index_kind(p, name) : 0;
	if ((flags & RENAME_EXCHANGE) && !kind && sq_pack_indexing(fs->pack))
		kind = index_kind(np, newname);
	track = kind != 0;
	if (fs->track) {
		if (sq_track_path(fs->track, p->fd, name, oldp, sizeof(oldp)))
			oldp[0] = '\0';
		if (!(flags & RENAME_EXCHANGE) ||
		    sq_track_path(fs->track, np->fd, newname, oldnp,
				  sizeof(oldnp)))
			oldnp[0] = '\0';
		if (stat_type(p->fd, name) == S_IFDIR &&
		    (flags & RENAME_EXCHANGE)) {
			/* Two trees swapping places: one prefix rename
			 * after the other would mix them.  Their rows keep
			 * the old paths; the settle loop drops a row whose
			 * path names another file, and the next close
			 * writes it anew. */
			oldp[0] = oldnp[0] = '\0';
		}
		/* Onto another link of the same file: nothing goes. */
		if (v.ino && stat_ino(p->fd, name) == v.ino)
			v.ino = 0;
	}
	if (track)
		sq_pack_index_lock(fs->pack);
	if (flags)
		r = renameat2(p->fd, name, np->fd, newname, flags) ? errno : 0;
	else
		r = renameat(p->fd, name, np->fd, newname) ? errno : 0;
	if (track && r == 0 && (flags & RENAME_EXCHANGE)) {
		/* Three moves, through a name no file has ("\1" is no
		 * name squeezefs or the kernel makes). */
		sq_pack_index_move(fs->pack, p->fd, name, fs->root.fd, "\1");
		sq_pack_index_move(fs->pack, np->fd, newname, p->fd, name);
		sq_pack_index_move(fs->pack, fs->root.fd, "\1", np->fd, newname);
	} else if (track && r == 0 &&
		   (kind == 'd' || packed_at(np, newname))) {
		sq_pack_index_move(fs->pack, p->fd, name, np->fd, newname);
	}
	if (track)
		sq_pack_index_unlock(fs->pack);
	if (r == 0 && fs->track) {
		/* A rename onto another link of the same file does nothing. */
		if (oldp[0])
			sq_track_renamed(fs->track, oldp, np->fd, newname);
		if (oldnp[0])
			sq_track_renamed(fs->track, oldnp, p->fd, name);
	}
	if (r == 0) {
		/* A rename onto another link of the same file does nothing. */
		if (v.i && v.i != src)
			sq_prune_rename(sq_mount_of(fs), v.i, np, newname, NULL, NULL);
		if (src && v.i != src)
			sq_prune_rename(sq_mount_of(fs), src, p, name, np, newname);
		if (dst)
			sq_prune_rename(sq_mount_of(fs), dst, np, newname, p, name);
	}
	if (src)
		sq_inode_put(fs, src, SQ_IREF_LOOKUP, 1);
	if (dst)
		sq_inode_put(fs, dst, SQ_IREF_LOOKUP, 1);
	replaced_put(fs, &v, r == 0);
	fuse_reply_err(req, r);
}

/* ---- regular files ---- */

static void finish_open(fuse_req_t req, struct sq_fs *fs, struct sq_inode *i,
			struct fuse_file_info *fi, bool created,
			const struct stat *st, int rwfd)
{
	bool write = (fi->flags & O_ACCMODE) != O_RDONLY;
	int r;

	r = sq_fs_get_file(fs, i, (fi->flags & O_TRUNC) ? SQ_OPEN_TRUNC :
		     write || created ? SQ_OPEN_WRITE : SQ_OPEN_READ, rwfd);
	if (!r && (fi->flags & O_TRUNC) && !created) {
		r = sq_file_truncate(fs, i, 0);
		if (r)
			sq_fs_put_file(fs, i);
		/* The kernel drops the mode change that should clear setuid
		 * and setgid when the open truncates (ATOMIC_O_TRUNC). */
		else
			data_changed(req, i);
	}
	if (r) {
		if (created)
			sq_inode_put(fs, i, SQ_IREF_LOOKUP, 1);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = 0;
	/* Every change goes through this mount, so the kernel's page cache
	 * of the file stays valid across opens. */
	fi->keep_cache = 1;
	fi->direct_io = 0;
	/* Closing a read-only handle has nothing to flush: spare close()
	 * the round trip (tar, cp and grep read thousands of files). */
	fi->noflush = !write && !created && !(fi->flags & O_TRUNC);
	if (created) {
		struct fuse_entry_param e;

		memset(&e, 0, sizeof(e));
		e.ino = ino_id(fs, i);
		e.attr = *st;
		show_attr(fs, &e.attr);
		e.attr_timeout = sq_mount_of(fs)->timeout;
		e.entry_timeout = sq_mount_of(fs)->timeout;
		if (fuse_reply_create(req, &e, fi) == -ENOENT) {
			sq_fs_put_file(fs, i);
			sq_inode_put(fs, i, SQ_IREF_LOOKUP, 1);
		}
	} else if (fuse_reply_open(req, fi) == -ENOENT) {
		sq_fs_put_file(fs, i);
	}
}

/* BACKING's answer to access(@mask) by the daemon for the object whose
 * O_PATH fd is @fd: 0 or errno. */
static int backing_access(int fd, int mask)
{
	char path[64];

	sq_proc_path(path, sizeof(path), fd);
	return faccessat(AT_FDCWD, path, mask, AT_EACCESS) ? errno : 0;
}

/*
 * Without the kernel's check (see main.c), BACKING's, for the file whose
 * O_PATH fd is @fd: an open that shares the file's container, or reads a
 * packed image, opens nothing there that could be refused.  0 or errno.
 */
static int open_allowed(struct sq_fs *fs, int fd, int flags)
{
	int acc = flags & O_ACCMODE, mask = 0;

	if (!sq_mount_of(fs)->own_checks)
		return 0;
	if (acc == O_RDONLY || acc == O_RDWR)
		mask |= R_OK;
	if (acc == O_WRONLY || acc == O_RDWR || (flags & O_TRUNC))
		mask |= W_OK;
	return backing_access(fd, mask);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct sq_fs *fs = fs_of(req);
	struct sq_inode *i = ino_of(req, ino);
	int r;

	if (i->type != S_IFREG) {
		fuse_reply_err(req, i->type == S_IFDIR ? EISDIR : EINVAL);
		return;
	}
	r = open_allowed(fs, i->fd, fi->flags);
	if (r) {
		fuse_reply_err(req, r);
		return;
	}
	finish_open(req, fs, i, fi, false, NULL, -1);
}

/*
 * Opens an O_PATH fd (*@pfd) of the file open as @fd, found as @name in
 * @parent, and stats it into @st.  By name, which the dentry cache answers
 * at once; should the name be another file by now, through /proc.
 */
static int opath_of(struct sq_inode *parent, const char *name, int fd,
		    int *pfd, struct stat *st)
{
	struct stat fst;
	char path[64];

	if (fstatat(fd, "", &fst, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
		return -errno;
	*pfd = openat(parent->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (*pfd >= 0) {
		int e = fstatat(*pfd, "", st,
				AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);

		if (e == 0 && st->st_ino == fst.st_ino &&
		    st->st_dev == fst.st_dev)
			return 0;
		close(*pfd);
	}
	sq_proc_path(path, sizeof(path), fd);
	*pfd = open(path, O_PATH | O_CLOEXEC);
	if (*pfd < 0)
		return -errno;
	*st = fst;
	return 0;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct sq_fs *fs = fs_of(req);
	struct sq_inode *p = ino_of(req, parent), *i;
	bool created = true;
	char pin[SQ_PIN_MAX];
	int pinned = 0;
	struct stat st;
	int fd, pfd, rwfd = -1, r;

	if (reserved(fs, p, name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	/*
	 * O_EXCL first, so that we know whether we made the file: only a new
	 * one gets the caller as owner.  The kernel sends CREATE for a name
	 * it found missing, so an existing one means a race we lost; it is
	 * opened as O_PATH, to identify it and nothing more.
	 */
	fd = openat(p->fd, name,
		    O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW,
		    create_mode(req, mode) & 07777);
	if (fd < 0 && errno == EEXIST && !(fi->flags & O_EXCL)) {
		created = false;
		fd = openat(p->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0) {
		r = -errno;
		if (r == -EMFILE || r == -ENFILE)
			emfile_warn();
		fuse_reply_err(req, -r);
		return;
	}
	if (!created && (r = -open_allowed(fs, fd, fi->flags)))
		goto fail;
	pfd = fd;
	if (created) {
		r = set_owner(req, p, fd, "");
		if (!r)
			pinned = sq_ctl_inherit(mnt_of(req), p, fd, NULL, pin);
		if (!r)
			r = opath_of(p, name, fd, &pfd, &st);
		if (r)
			goto fail;
		rwfd = fd;	/* the data state's container fd */
	} else if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)) {
		r = -errno;
		goto fail;
	}
	r = sq_inode_get(fs, pfd, &st, SQ_IREF_LOOKUP, &i);	/* consumes pfd */
	if (r)
		goto fail_rw;
	if (i->type != S_IFREG) {
		sq_inode_put(fs, i, SQ_IREF_LOOKUP, 1);
		r = -EISDIR;
		goto fail_rw;
	}
	sq_prune_note(sq_mount_of(fs), i, p, name);
	/* We made it: it has no capability (see op_getxattr), and the pin
	 * it was just given (the data state's open need not read it). */
	if (created) {
		atomic_store(&i->nocaps_gen, atomic_load(&i->xgen) + 1);
		pthread_mutex_lock(&i->lock);
		if (!i->pin_state) {
			i->pin_state = pinned ? 2 : 1;
			if (pinned)
				memcpy(i->pin, pin, SQ_PIN_MAX);
		}
		pthread_mutex_unlock(&i->lock);
		sq_track_closed(fs->track, i, true, 0,
				(uint64_t)st.st_blocks * 512);
	}
	/* O_CREAT without O_EXCL on an existing file still truncates. */
	if (!created && (fi->flags & O_TRUNC)) {
		r = sq_fs_get_file(fs, i, SQ_OPEN_TRUNC, -1);
		if (!r) {
			r = sq_file_truncate(fs, i, 0);
			sq_fs_put_file(fs, i);
		}
		if (!r)
			data_changed(req, i);
		if (r) {
			sq_inode_put(fs, i, SQ_IREF_LOOKUP, 1);
			fuse_reply_err(req, -r);
			return;
		}
		r = do_getattr(fs, i, &st, false);
	} else if (created) {
		/* Just made by us: an empty container, not packed, no xattr
		 * to read. */
		pthread_mutex_lock(&i->lock);
		sq_attr_cache_size(i, &st, 0, -1);
		if (!i->shown_bshift)
			i->shown_bshift = fs->block_shift;
		st.st_blksize = (blksize_t)1 << i->shown_bshift;
		pthread_mutex_unlock(&i->lock);
	} else {
		r = do_getattr(fs, i, &st, true);
	}
	if (r) {
		sq_inode_put(fs, i, SQ_IREF_LOOKUP, 1);
		goto fail_rw;
	}
	finish_open(req, fs, i, fi, true, &st, rwfd);
	return;
fail:
	close(fd);
	fuse_reply_err(req, -r);
	return;
fail_rw:
	if (rwfd >= 0)
		close(rwfd);
	fuse_reply_err(req, -r);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct sq_fs *fs = fs_of(req);
	void *buf;
	ssize_t n;

	(void)fi;
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = sq_file_read(fs, ino_of(req, ino), buf, size, off);
	if (n >= 0) {
		atomic_fetch_add(&mnt_of(req)->io_reads, 1);
		atomic_fetch_add(&mnt_of(req)->io_bytes_read, (uint64_t)n);
	}
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		     size_t size, off_t off, struct fuse_file_info *fi)
{
	struct sq_fs *fs = fs_of(req);
	ssize_t n;

	n = sq_file_write(fs, ino_of(req, ino), buf, size, off);
	if (n >= 0) {
		atomic_fetch_add(&mnt_of(req)->io_writes, 1);
		atomic_fetch_add(&mnt_of(req)->io_bytes_written, (uint64_t)n);
	}
	/*
	 * An O_DIRECT write bypasses the kernel's page cache of the file,
	 * which we keep across opens (keep_cache).  The kernel drops the
	 * pages it covers before sending it, but not after an asynchronous
	 * one completes: a buffered read meanwhile can bring the old bytes
	 * back into the cache, and every later read would return them.  So
	 * drop them here, after the data is ours and before the reply: a
	 * read still in flight holds its pages locked and the kernel waits
	 * for it, a later one reads the new bytes.  Another thread must be
	 * free to answer that read, or all would wait for each other: only
	 * a few writes (inval_max, under half the threads; none with -s)
	 * do so at once, the others leave it to the pruner's thread, which
	 * drops the pages a moment after the reply.
	 */
	if (n > 0 && (fi->flags & O_DIRECT) && sq_mount_of(fs)->se) {
		if (atomic_fetch_add(&sq_mount_of(fs)->inval_busy, 1) < sq_mount_of(fs)->inval_max)
			fuse_lowlevel_notify_inval_inode(sq_mount_of(fs)->se, ino, off,
							 (off_t)n);
		else
			sq_prune_inval_later(sq_mount_of(fs), ino, off, (off_t)n);
		atomic_fetch_sub(&sq_mount_of(fs)->inval_busy, 1);
	}
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	/* close() need not wait for compression: the last release stores
	 * and records everything, and fsync() waits for it. */
	fuse_reply_err(req, -sq_file_start_flush(fs_of(req), ino_of(req, ino)));
}

static void op_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct sq_inode *i = ino_of(req, ino);
	int r;

	(void)fi;
	r = sq_fs_put_file(fs_of(req), i);
	if (r)
		sq_file_report(i, -1, "storing data on close failed", r);
	fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	(void)fi;
	fuse_reply_err(req, -sq_file_fsync(fs_of(req), ino_of(req, ino),
					   datasync != 0));
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
			 off_t offset, off_t length, struct fuse_file_info *fi)
{
	struct sq_fs *fs = fs_of(req);
	struct sq_inode *i = ino_of(req, ino);
	int r;

	(void)fi;
	if (offset < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (mode == 0 || mode == FALLOC_FL_KEEP_SIZE)
		r = sq_file_allocate(fs, i, (uint64_t)offset, (uint64_t)length,
				     mode != 0);
	else if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))
		r = sq_file_punch(fs, i, (uint64_t)offset, (uint64_t)length);
	else
		r = -EOPNOTSUPP;
	if (!r)
		data_changed(req, i);
	fuse_reply_err(req, -r);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct sq_inode *i = ino_of(req, ino);
	off_t r;

	(void)fi;
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* With the writeback cache the kernel may hold data we have not
	 * seen yet and does not write it back before asking: a hole here
	 * could be fresh data (cp would copy zeros).  ENOSYS makes the
	 * kernel answer itself, with the whole file as data. */
	if (mnt_of(req)->writeback) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	r = sq_file_lseek(fs_of(req), i, off, whence);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_lseek(req, r);
}

/* ---- directories ---- */

struct dirh {
	DIR *dp;
	struct dirent *entry;	/* read but not yet returned */
	off_t offset;
};

/*
 * access(2) and chdir(2) reach us only without default_permissions, on an
 * unprivileged daemon's private mount: the answer is BACKING's to the
 * daemon, which does every operation of its one user.
 */
static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	fuse_reply_err(req, backing_access(ino_of(req, ino)->fd, mask));
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct sq_inode *i = ino_of(req, ino);
	struct dirh *d = calloc(1, sizeof(*d));
	int fd;

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fd = openat(i->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d->dp = fdopendir(fd))) {
		int e = errno;

		if (fd >= 0)
			close(fd);
		free(d);
		fuse_reply_err(req, e);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	fi->cache_readdir = 0;
	if (fuse_reply_open(req, fi) == -ENOENT) {
		closedir(d->dp);
		free(d);
	}
}

/* Whether the getattr just done on @i found it packed, and where. */
static bool packed_ref(struct sq_inode *i, struct sq_pack_ref *ref)
{
	bool packed;

	pthread_mutex_lock(&i->lock);
	packed = !i->file && i->size_cached &&
		 i->cached_bsize <= SQ_PACK_STUB_LEN && i->cached_blocks >= 0;
	if (packed)
		*ref = i->cached_ref;
	pthread_mutex_unlock(&i->lock);
	return packed;
}

/* Pack references a readdirplus gathers before asking for their pages. */
#define READDIR_PREFETCH 64

/*
 * readdir and readdirplus.  With @plus every entry but "." and ".." is
 * looked up (one reference each, as the kernel counts them), so `ls -l`
 * and tar need no LOOKUP per name.
 */
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct sq_pack_ref refs[READDIR_PREFETCH];
	size_t nrefs = 0;
	struct sq_fs *fs = fs_of(req);
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
	struct sq_inode *parent = ino_of(req, ino);
	bool root = parent == &fs->root;
	char *buf = malloc(size), *p = buf;
	size_t rem = size;
	int err = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off != d->offset) {
		seekdir(d->dp, off);
		d->entry = NULL;
		d->offset = off;
	}
	for (;;) {
		struct dirent *de;
		struct stat st;
		size_t n;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				err = errno;
				break;
			}
		}
		de = d->entry;
		if (root && strcmp(de->d_name, SQ_RESERVED_NAME) == 0) {
			d->offset = de->d_off;
			d->entry = NULL;
			continue;
		}
		memset(&st, 0, sizeof(st));
		/* ".." of the root leads out of BACKING: as on a local
		 * filesystem's root, it is the root itself. */
		if (root && strcmp(de->d_name, "..") == 0)
			st.st_ino = show_ino(fs, fs->root.src_dev,
					     fs->root.src_ino);
		else
			st.st_ino = show_ino(fs, parent->src_dev, de->d_ino);
		st.st_mode = (mode_t)de->d_type << 12;
		if (!plus) {
			n = fuse_add_direntry(req, p, rem, de->d_name, &st,
					      de->d_off);
		} else {
			struct fuse_entry_param e;
			struct sq_inode *ci = NULL;

			memset(&e, 0, sizeof(e));
			e.attr = st;
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
				bool probe = sq_inode_live(fs, parent->src_dev,
						     de->d_ino);
				int r = do_lookup(fs, parent, de->d_name, probe,
						  &ci, &e.attr);

				if (r == -ENOENT) {
					/* Gone since readdir: skip it. */
					d->offset = de->d_off;
					d->entry = NULL;
					continue;
				}
				if (r) {
					err = -r;
					break;
				}
				e.ino = ino_id(fs, ci);
				show_attr(fs, &e.attr);
				if (S_ISREG(e.attr.st_mode) &&
				    packed_ref(ci, &refs[nrefs]) &&
				    ++nrefs == READDIR_PREFETCH) {
					sq_pack_willneed(fs->pack, refs,
							 nrefs);
					nrefs = 0;
				}
				e.attr_timeout = sq_mount_of(fs)->timeout;
				e.entry_timeout = sq_mount_of(fs)->timeout;
			}
			n = fuse_add_direntry_plus(req, p, rem, de->d_name, &e,
						   de->d_off);
			if (n > rem && ci)
				sq_inode_put(fs, ci, SQ_IREF_LOOKUP, 1);	/* not sent */
		}
		if (n > rem)
			break;	/* keep the entry for the next call */
		p += n;
		rem -= n;
		d->offset = de->d_off;
		d->entry = NULL;
	}
	if (err && p == buf)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, (size_t)(p - buf));
	free(buf);
	/* After the reply: the reader goes on while the disk works. */
	sq_pack_willneed(fs->pack, refs, nrefs);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;

	(void)ino;
	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	struct dirh *d = (struct dirh *)(uintptr_t)fi->fh;
	int fd = dirfd(d->dp), r;

	(void)ino;
	r = datasync ? fdatasync(fd) : fsync(fd);
	fuse_reply_err(req, r ? errno : 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	if (fstatvfs(ino_of(req, ino)->fd, &sv))
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

/* ---- extended attributes (remapped: engine/xattr.h) ---- */

/*
 * The kernel asks for security.capability before every write(): once it
 * is known absent the answer needs no backing call.  xgen moves before
 * and after every change; an absence seen at xgen g holds while xgen is g.
 */
static void xattr_changing(struct sq_inode *i)
{
	atomic_fetch_add(&i->xgen, 1);
}

/* setxattr, or removexattr when @value is NULL. */
static void change_xattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 const char *value, size_t size, int flags)
{
	struct sq_inode *i = ino_of(req, ino);
	char path[64];
	int r;

	sq_proc_path(path, sizeof(path), i->fd);
	xattr_changing(i);
	/* Under the lock, as a conversion's exchange (settle.h). */
	pthread_mutex_lock(&i->lock);
	r = atomic_load(&i->stale) ? -ESTALE :
	    sq_xattr_set(path, name, value, size, flags);
	pthread_mutex_unlock(&i->lock);
	xattr_changing(i);
	fuse_reply_err(req, -r);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	/* A zero-length value comes with a valid pointer. */
	change_xattr(req, ino, name, value, size, flags);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct sq_inode *i = ino_of(req, ino);
	bool caps = !strcmp(name, SQ_XATTR_CAPS_SHOWN);
	uint64_t gen = atomic_load(&i->xgen);
	char path[64], *buf = NULL;
	ssize_t n;

	if (caps && atomic_load(&i->nocaps_gen) == gen + 1) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	sq_proc_path(path, sizeof(path), i->fd);
	if (size && !(buf = malloc(size))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = sq_xattr_get(path, name, buf, size);
	if (n == -ENODATA && caps)
		atomic_store(&i->nocaps_gen, gen + 1);	/* stale if xgen moved */
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		sq_fs_reply_xattr(req, buf, (size_t)n, size);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	char path[64], *list;
	ssize_t n;

	sq_proc_path(path, sizeof(path), ino_of(req, ino)->fd);
	n = sq_xattr_list(path, &list);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		sq_fs_reply_xattr(req, list, (size_t)n, size);
	free(list);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	change_xattr(req, ino, name, NULL, 0, 0);
}

/* ---- session ---- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct sq_fs *fs = &((struct sq_mount *)userdata)->fs;

	daemon_uid = geteuid();
	daemon_gid = getegid();
	as_root = daemon_uid == 0;
	/* By default every write() reaches us while it runs, so it can fail
	 * with ENOSPC or EIO, and SEEK_DATA sees all data.  The writeback
	 * cache trades that for the kernel gathering small writes into
	 * pages (a 4 KiB random write then costs no block rewrite of its
	 * own): only when asked for.  Suid clearing stays the kernel's. */
	conn->want &= ~(unsigned)(FUSE_CAP_WRITEBACK_CACHE |
				  FUSE_CAP_HANDLE_KILLPRIV);
	if (sq_mount_of(fs)->writeback) {
		if (conn->capable & FUSE_CAP_WRITEBACK_CACHE)
			conn->want |= FUSE_CAP_WRITEBACK_CACHE;
		else {
			sq_log(SQ_LOG_WARN, "this kernel has no FUSE writeback "
			       "cache: writeback_cache ignored");
			sq_mount_of(fs)->writeback = false;
		}
	}
	/*
	 * Default ACLs: the VFS strips the umask from a new object's mode
	 * before we see it unless the filesystem does ACLs, and BACKING then
	 * builds the new ACL from a masked mode (group rwx of a default ACL
	 * became r-x).  With POSIX_ACL the kernel enforces the ACLs it reads
	 * through us (only where it checks permissions: it implies
	 * default_permissions) and, with DONT_MASK, hands us the mode and
	 * the umask apart (create_mode()).
	 */
	if (!sq_mount_of(fs)->own_checks && (conn->capable & FUSE_CAP_POSIX_ACL))
		conn->want |= FUSE_CAP_POSIX_ACL;
	if (conn->capable & FUSE_CAP_DONT_MASK)
		conn->want |= FUSE_CAP_DONT_MASK;
	sq_mount_of(fs)->dont_mask = (conn->want & FUSE_CAP_DONT_MASK) != 0;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	/* The kernel asks for attributes with the names when they will be
	 * used (ls -l, tar), plain names otherwise. */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO)
		conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
	/* Large requests: fewer round trips, and a whole block per write. */
	conn->max_write = 1u << 20;
	conn->max_readahead = 1u << 20;
}

static void op_destroy(void *userdata)
{
	(void)userdata;
}

/* ---- the control directory (ctl.c) ----
 *
 * Requests on its nodes, and on its name in the root, go to ctl.c before
 * an op of the data path would take a node id for an inode's address.
 */
#define CTL(ino) sq_ctl_node(ino)
#define CTL_NAME(parent, name) \
	((parent) == FUSE_ROOT_ID && strcmp((name), SQ_RESERVED_NAME) == 0)

static void ctl_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (CTL(parent) || CTL_NAME(parent, name))
		sq_ctl_lookup(req, parent, name);
	else
		op_lookup(req, parent, name);
}

static void ctl_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	if (CTL(ino))
		fuse_reply_none(req);
	else
		op_forget(req, ino, nlookup);
}

static void ctl_forget_multi(fuse_req_t req, size_t count,
			     struct fuse_forget_data *forgets)
{
	struct sq_fs *fs = fs_of(req);

	for (size_t k = 0; k < count; k++)
		if (!CTL(forgets[k].ino))
			sq_inode_put(fs, ino_of(req, forgets[k].ino),
				     SQ_IREF_LOOKUP, forgets[k].nlookup);
	fuse_reply_none(req);
}

static void ctl_getattr(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	if (CTL(ino))
		sq_ctl_getattr(req, ino);
	else
		op_getattr(req, ino, fi);
}

static void ctl_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int to_set, struct fuse_file_info *fi)
{
	if (CTL(ino))
		sq_ctl_setattr(req, ino, attr, to_set);
	else
		op_setattr(req, ino, attr, to_set, fi);
}

static void ctl_readlink(fuse_req_t req, fuse_ino_t ino)
{
	if (CTL(ino))
		fuse_reply_err(req, EINVAL);
	else
		op_readlink(req, ino);
}

/* Nothing is made, linked or removed in the control directory, and its
 * name in the root is taken. */
static void ctl_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, dev_t rdev)
{
	if (CTL(parent) || CTL_NAME(parent, name))
		fuse_reply_err(req, CTL(parent) ? EACCES : EEXIST);
	else
		op_mknod(req, parent, name, mode, rdev);
}

static void ctl_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode)
{
	if (CTL(parent) || CTL_NAME(parent, name))
		fuse_reply_err(req, CTL(parent) ? EACCES : EEXIST);
	else
		op_mkdir(req, parent, name, mode);
}

static void ctl_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
			const char *name)
{
	if (CTL(parent) || CTL_NAME(parent, name))
		fuse_reply_err(req, CTL(parent) ? EACCES : EEXIST);
	else
		op_symlink(req, link, parent, name);
}

static void ctl_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		     const char *newname)
{
	if (CTL(ino) || CTL(newparent) || CTL_NAME(newparent, newname))
		fuse_reply_err(req, CTL_NAME(newparent, newname) ? EEXIST :
				    EPERM);
	else
		op_link(req, ino, newparent, newname);
}

static void ctl_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (CTL(parent) || CTL_NAME(parent, name))
		fuse_reply_err(req, CTL_NAME(parent, name) ? EISDIR : EACCES);
	else
		op_unlink(req, parent, name);
}

static void ctl_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (CTL(parent) || CTL_NAME(parent, name))
		fuse_reply_err(req, CTL(parent) ? ENOTDIR : EBUSY);
	else
		op_rmdir(req, parent, name);
}

static void ctl_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		       fuse_ino_t newparent, const char *newname,
		       unsigned int flags)
{
	if (CTL(parent) || CTL(newparent) || CTL_NAME(parent, name) ||
	    CTL_NAME(newparent, newname))
		fuse_reply_err(req, CTL(parent) || CTL(newparent) ? EACCES :
				    EBUSY);
	else
		op_rename(req, parent, name, newparent, newname, flags);
}

static void ctl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (CTL(ino))
		sq_ctl_open(req, ino, fi);
	else
		op_open(req, ino, fi);
}

static void ctl_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		       mode_t mode, struct fuse_file_info *fi)
{
	if (CTL(parent) || CTL_NAME(parent, name))
		fuse_reply_err(req, CTL(parent) ? EACCES : EISDIR);
	else
		op_create(req, parent, name, mode, fi);
}

static void ctl_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	if (CTL(ino))
		sq_ctl_read(req, ino, size, off, fi);
	else
		op_read(req, ino, size, off, fi);
}

static void ctl_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		      size_t size, off_t off, struct fuse_file_info *fi)
{
	if (CTL(ino))
		sq_ctl_write(req, ino, buf, size, off);
	else
		op_write(req, ino, buf, size, off, fi);
}

static void ctl_flush(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	if (CTL(ino))
		fuse_reply_err(req, 0);
	else
		op_flush(req, ino, fi);
}

static void ctl_release(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	if (CTL(ino))
		sq_ctl_release(req, ino, fi);
	else
		op_release(req, ino, fi);
}

static void ctl_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		      struct fuse_file_info *fi)
{
	if (CTL(ino))
		fuse_reply_err(req, 0);
	else
		op_fsync(req, ino, datasync, fi);
}

static void ctl_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
			  off_t offset, off_t length,
			  struct fuse_file_info *fi)
{
	if (CTL(ino))
		fuse_reply_err(req, EOPNOTSUPP);
	else
		op_fallocate(req, ino, mode, offset, length, fi);
}

static void ctl_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	if (CTL(ino))
		fuse_reply_err(req, ENXIO);
	else
		op_lseek(req, ino, off, whence, fi);
}

static void ctl_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	if (CTL(ino))
		sq_ctl_access(req, ino, mask);
	else
		op_access(req, ino, mask);
}

static void ctl_opendir(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	if (CTL(ino)) {
		fi->fh = 0;
		if (ino == SQ_CTL_FIRST)
			fuse_reply_open(req, fi);
		else
			fuse_reply_err(req, ENOTDIR);
	} else {
		op_opendir(req, ino, fi);
	}
}

static void ctl_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			off_t off, struct fuse_file_info *fi)
{
	if (CTL(ino))
		sq_ctl_readdir(req, ino, size, off, false);
	else
		op_readdir(req, ino, size, off, fi);
}

static void ctl_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			    off_t off, struct fuse_file_info *fi)
{
	if (CTL(ino))
		sq_ctl_readdir(req, ino, size, off, true);
	else
		op_readdirplus(req, ino, size, off, fi);
}

static void ctl_releasedir(fuse_req_t req, fuse_ino_t ino,
			   struct fuse_file_info *fi)
{
	if (CTL(ino))
		fuse_reply_err(req, 0);
	else
		op_releasedir(req, ino, fi);
}

static void ctl_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			 struct fuse_file_info *fi)
{
	if (CTL(ino))
		fuse_reply_err(req, 0);
	else
		op_fsyncdir(req, ino, datasync, fi);
}

static void ctl_statfs(fuse_req_t req, fuse_ino_t ino)
{
	op_statfs(req, CTL(ino) ? FUSE_ROOT_ID : ino);
}

static void ctl_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 const char *value, size_t size, int flags)
{
	if (CTL(ino))
		fuse_reply_err(req, EPERM);
	else if (replaced(req, ino_of(req, ino)))
		return;
	else if (sq_ctl_xattr(name))
		sq_ctl_setxattr(req, ino_of(req, ino), name, value, size,
				flags);
	else
		op_setxattr(req, ino, name, value, size, flags);
}

static void ctl_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 size_t size)
{
	if (CTL(ino))
		fuse_reply_err(req, ENODATA);
	else if (replaced(req, ino_of(req, ino)))
		return;
	else if (sq_ctl_xattr(name))
		sq_ctl_getxattr(req, ino_of(req, ino), name, size);
	else
		op_getxattr(req, ino, name, size);
}

static void ctl_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	if (!CTL(ino)) {
		if (!replaced(req, ino_of(req, ino)))
			op_listxattr(req, ino, size);
	} else if (size)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_xattr(req, 0);
}

static void ctl_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	if (CTL(ino))
		fuse_reply_err(req, EPERM);
	else if (replaced(req, ino_of(req, ino)))
		return;
	else if (sq_ctl_xattr(name))
		sq_ctl_setxattr(req, ino_of(req, ino), name, NULL, 0, 0);
	else
		op_removexattr(req, ino, name);
}

const struct fuse_lowlevel_ops sq_fs_ops = {
	.init = op_init,
	.destroy = op_destroy,
	.lookup = ctl_lookup,
	.forget = ctl_forget,
	.forget_multi = ctl_forget_multi,
	.getattr = ctl_getattr,
	.setattr = ctl_setattr,
	.readlink = ctl_readlink,
	.mknod = ctl_mknod,
	.mkdir = ctl_mkdir,
	.symlink = ctl_symlink,
	.link = ctl_link,
	.unlink = ctl_unlink,
	.rmdir = ctl_rmdir,
	.rename = ctl_rename,
	.open = ctl_open,
	.create = ctl_create,
	.read = ctl_read,
	.write = ctl_write,
	.flush = ctl_flush,
	.release = ctl_release,
	.fsync = ctl_fsync,
	.fallocate = ctl_fallocate,
	.lseek = ctl_lseek,
	.access = ctl_access,
	.opendir = ctl_opendir,
	.readdir = ctl_readdir,
	.readdirplus = ctl_readdirplus,
	.releasedir = ctl_releasedir,
	.fsyncdir = ctl_fsyncdir,
	.statfs = ctl_statfs,
	.setxattr = ctl_setxattr,
	.getxattr = ctl_getxattr,
	.listxattr = ctl_listxattr,
	.removexattr = ctl_removexattr,
};
