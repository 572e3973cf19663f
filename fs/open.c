/*
 * fs/open.c - opening and closing a file's data state for the front end:
 * what open() and the last release() do, and what a control command
 * that changes a file (ctl.c) does in their place.
 */
#include "fs/fs_i.h"

#include "analyzer/analyzer.h"
#include "engine/attr.h"
#include "engine/file.h"
#include "engine/inode.h"
#include "engine/packer.h"
#include "engine/track.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

/* Opens the data state for an open() or a request that has no open
 * handle (truncate by path, a control command); paired with
 * sq_fs_put_file().  @rwfd: as sq_file_open()'s, consumed. */
int sq_fs_get_file(struct sq_fs *fs, struct sq_inode *i, int mode, int rwfd)
{
	int r;

	sq_inode_hold(fs, i, SQ_IREF_OPEN);
	pthread_mutex_lock(&i->lock);
	r = sq_file_open(fs, i, mode, rwfd);
	pthread_mutex_unlock(&i->lock);
	if (r)
		sq_inode_put(fs, i, SQ_IREF_OPEN, 1);
	return r;
}

/* The class, the codec time and the rewrites in place of the blocks @i's
 * last opening stored, for its statistics.  Lock held. */
static void track_coded(struct sq_fs *fs, struct sq_inode *i)
{
	struct sq_an_stats as;
	uint64_t ns = 0, most = 0;
	int cls = -1;

	sq_file_an_stats(i, &as);
	for (int c = 0; c < SQ_AN_CLASS_COUNT; c++) {
		ns += as.cls[c].ns_codec;
		if (c > SQ_AN_CLASS_ZERO && as.cls[c].bytes_in > most) {
			most = as.cls[c].bytes_in;
			cls = c;
		}
	}
	sq_track_coded(fs->track, i, cls, ns, sq_file_rewrites(i));
}

int sq_fs_put_file(struct sq_fs *fs, struct sq_inode *i)
{
	bool last, wrote = false;
	int r = 0;

	pthread_mutex_lock(&i->lock);
	/*
	 * Store everything first: waiting for the workers drops the lock, and
	 * an open() that slips in meanwhile must find the file still open.
	 * Past the check below nothing waits, so "last" stays true.
	 */
	if (i->file)
		r = sq_file_flush_locked(fs, i);
	last = sq_inode_opens(fs, i) == 1;
	if (last) {
		struct stat st = { .st_size = 0 };
		bool known = i->file != NULL;
		uint64_t size;
		int e;

		if (known) {
			sq_file_stat(i, &st);
			wrote = sq_file_modified(i);
		}
		if (known && wrote && fs->track)
			track_coded(fs, i);
		size = (uint64_t)st.st_size;
		e = sq_file_close(fs, i);
		if (!r)
			r = e;
		/* The container now holds that size: remember it, so that
		 * the stat that usually follows need not read the header.
		 * One only read is as it was: what the cache says holds. */
		if (known && wrote && !r &&
		    fstatat(i->fd, "", &st,
			    AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0)
			sq_track_closed(fs->track, i, true, size,
					(uint64_t)st.st_blocks * 512);
		else
			st.st_size = 0;
		if (known && wrote && !r && st.st_size > 0) {
			/* A small container may go into a pack now. */
			wrote = wrote && st.st_blocks <= SQ_PACK_SMALL_BLOCKS;
			sq_attr_cache_size(i, &st, size, -1);
		} else {
			/* An empty container is empty or packed: a stat reads
			 * which from its xattr. */
			wrote = false;
		}
	}
	pthread_mutex_unlock(&i->lock);
	if (wrote)
		sq_packer_note(fs->packer, i);
	sq_inode_put(fs, i, SQ_IREF_OPEN, 1);
	return r;
}
