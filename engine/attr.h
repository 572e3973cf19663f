/*
 * engine/attr.h - the attribute cache of closed files.  A closed regular
 * file's logical size is in its container's header (or a packed file's
 * reference); reading it for every stat() would cost a read per file of
 * an ls -l, so it is kept in the inode, valid while the container's size,
 * mtime and ctime are the ones seen then: any change to it, through this
 * mount or not, invalidates the entry.  Every function: i->lock held.
 */
#ifndef SQ_ATTR_H
#define SQ_ATTR_H

#include "engine/inode.h"

#include <stdbool.h>
#include <sys/stat.h>

/* Remembers @size (and a packed file's @blocks, else -1) as the logical
 * size of the closed file @i whose container @st describes; sets them in
 * @st. */
void sq_attr_cache_size(struct sq_inode *i, struct stat *st, uint64_t size,
			blkcnt_t blocks);
/* Whether @a and @b describe one backing file unchanged: the same device
 * and inode, size, mtime and ctime (no lock needed). */
bool sq_attr_same(const struct stat *a, const struct stat *b);
/* Whether the cache still describes the container that @st describes. */
bool sq_attr_cached(const struct sq_inode *i, const struct stat *st);
/*
 * A packed file's reference as the cache has it, if the container (its
 * attributes now read into *@st) is still the one the cache describes;
 * -ENODATA when the cache cannot tell, -errno when stat fails.
 */
int sq_attr_cached_ref(struct sq_inode *i, struct stat *st,
		       struct sq_pack_ref *ref);

#endif /* SQ_ATTR_H */
