/*
 * engine/attr.c - the attribute cache of closed files (attr.h): a closed
 * regular file's logical size without reading its container again.
 */
#include "engine/attr.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

/* Valid while the container keeps the size and times in @st: any change
 * to it, through this mount or not, invalidates the entry. */
void sq_attr_cache_size(struct sq_inode *i, struct stat *st, uint64_t size,
			 blkcnt_t blocks)
{
	i->size_cached = true;
	i->cached_size = size;
	i->cached_bsize = st->st_size;
	i->cached_blocks = blocks;
	i->cached_mtim = st->st_mtim;
	i->cached_ctim = st->st_ctim;
	st->st_size = (off_t)size;
	if (blocks >= 0)
		st->st_blocks = blocks;
}

bool sq_attr_same(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	       a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

bool sq_attr_cached(const struct sq_inode *i, const struct stat *st)
{
	return i->size_cached && i->cached_bsize == st->st_size &&
	       i->cached_mtim.tv_sec == st->st_mtim.tv_sec &&
	       i->cached_mtim.tv_nsec == st->st_mtim.tv_nsec &&
	       i->cached_ctim.tv_sec == st->st_ctim.tv_sec &&
	       i->cached_ctim.tv_nsec == st->st_ctim.tv_nsec;
}

int sq_attr_cached_ref(struct sq_inode *i, struct stat *st,
			struct sq_pack_ref *ref)
{
	if (fstatat(i->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW))
		return -errno;
	if (!S_ISREG(st->st_mode) || st->st_size > SQ_PACK_STUB_LEN ||
	    !sq_attr_cached(i, st) || i->cached_blocks < 0)
		return -ENODATA;
	*ref = i->cached_ref;
	return 0;
}

