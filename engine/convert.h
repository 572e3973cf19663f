/*
 * engine/convert.h - turning a plain file of BACKING (moved in: one that
 * is not a container, docs/FORMAT.md 2.1) into a container, crash-safely:
 * the container is built beside it in BACKING/.squeezefs/tmp, given its
 * mode, owner, xattrs and times, synced, and exchanged with the plain file
 * in one rename.  A crash leaves the plain file or the container at the
 * name, never neither; what is left in .squeezefs/tmp is removed by the
 * next mount or import (sq_convert_clean()).
 *
 * Used by the settle loop (settle.h) for a mount and by `squeezefs import`
 * for an unmounted BACKING; neither knows FUSE.
 */
#ifndef SQ_CONVERT_H
#define SQ_CONVERT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

struct sq_an;
struct sq_codec_ctx;
struct sq_vol;

/* Relative to BACKING. */
#define SQ_CONVERT_TMP ".squeezefs/tmp"

struct sq_convert {
	const struct sq_vol *vol;
	unsigned block_shift;		/* of the containers made */
	const struct sq_an *an;		/* stores each block */
	struct sq_codec_ctx *cctx;
	int tmp_fd;			/* SQ_CONVERT_TMP, O_RDONLY|O_DIRECTORY */
	/*
	 * Right before the exchange: the caller takes whatever lock keeps
	 * the file from being opened through the mount and returns true
	 * while the file is still unchanged (NULL: always).  end() drops it;
	 * @swapped says whether the plain file is gone from its name.
	 */
	bool (*begin)(void *arg);
	void (*end)(void *arg, bool swapped);
	/* After each block: the caller's pacing, and whether to stop
	 * (true: give up, -EINTR). */
	bool (*pace)(void *arg, uint64_t bytes);
	void *arg;
};

/*
 * Opens @name in the directory @dirfd (@st: its stat) for reading when it
 * is a plain file of @vol that a conversion would take (not empty, not a
 * packed stub, not in a legacy volume): the fd, with *@lookalike saying
 * whether it begins like a container (sq_ctr_kind()).  -ENODATA when it is
 * not one, -errno when it cannot be opened.
 */
int sq_convert_open(int dirfd, const char *name, const struct stat *st,
		    const struct sq_vol *vol, bool *lookalike);

/* Opens (making it) BACKING's SQ_CONVERT_TMP and removes what an
 * interrupted conversion left in it.  Returns the directory's fd or
 * -errno. */
int sq_convert_tmp_open(int root_fd);

/*
 * Converts the plain file @name in the directory @dirfd (O_RDONLY), open
 * as @pfd (readable), described by @st.  Returns 0 with *@stored (the
 * container's allocated bytes) and *@new_ino set; -EMLINK for a
 * hard-linked file (left plain: a new container would split its names),
 * -EBUSY when the file changed or begin() refused (nothing changed),
 * -EINTR when pace() said stop, -EXDEV when .squeezefs/tmp lies on
 * another filesystem, or -errno.  On every error the plain file is left
 * as it was.
 */
int sq_convert_file(const struct sq_convert *cv, int dirfd, const char *name,
		    int pfd, const struct stat *st, uint64_t *stored,
		    ino_t *new_ino);

#endif /* SQ_CONVERT_H */
