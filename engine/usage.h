/*
 * engine/usage.h - what files take on BACKING, measured from BACKING
 * itself: the figures of MOUNT/.squeezefs/stats and of the
 * user.squeezefs.stats xattr.  compsize's walk, for containers: each
 * file's logical size, its allocated bytes and its blocks per codec and
 * level, read from the container's headers (a packed file's from its
 * image).  Files open for writing are counted as stored so far.
 */
#ifndef SQ_USAGE_H
#define SQ_USAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct sq_fs;

/* Distinct (codec, level) pairs kept; more are counted in "other". */
#define SQ_USAGE_CODECS 48

struct sq_usage_codec {
	int codec;		/* SQ_CODEC_* */
	int level;
	uint64_t blocks;
	uint64_t raw_bytes;	/* logical bytes of those blocks */
	uint64_t stored_bytes;	/* their records' payloads */
};

struct sq_usage {
	/* Regular files (a hard-linked one once). */
	uint64_t files;
	uint64_t packed_files;	/* stored in a pack (small files) */
	uint64_t damaged_files;	/* not readable as a container */
	uint64_t logical_bytes;	/* sizes as applications see them */
	uint64_t allocated_bytes; /* containers' st_blocks x 512, plus a
				   * packed file's image length */
	uint64_t packed_bytes;	/* of allocated_bytes: packed images */
	/* Plain files (moved in, not yet converted: FORMAT.md 2.1), and
	 * their logical bytes (also in logical_bytes). */
	uint64_t plain_files, plain_bytes;
	uint64_t blocks;	/* blocks holding data */
	/* What the tree takes besides its files' data. */
	uint64_t dirs, dir_bytes;	/* directories */
	uint64_t others, other_bytes;	/* symlinks, devices, fifos */
	/* Whole mount only: BACKING/.squeezefs (packs, index, stats.db)
	 * less the packed images counted with their files.  Signed: a
	 * file packed during the walk may be counted twice. */
	int64_t meta_bytes;
	size_t ncodecs;
	struct sq_usage_codec codecs[SQ_USAGE_CODECS];
	uint64_t other_codec_blocks;	/* pairs beyond SQ_USAGE_CODECS */
};

/*
 * Adds the regular file open as @fd (O_RDONLY, @st its attributes) to
 * @u.  Returns 0; a file that does not read as a container counts as
 * damaged and is still 0.  -errno only for a failed allocation.
 */
int sq_usage_file(struct sq_fs *fs, int fd, const struct stat *st,
		  struct sq_usage *u);

/*
 * Adds the tree below the directory open as @dirfd, itself included, to
 * @u.  With @whole (@dirfd is BACKING), BACKING/.squeezefs goes to
 * meta_bytes instead.  Does not cross into other filesystems, nor below
 * 256 levels.  Returns 0, or the first -errno it met (-ELOOP: too deep)
 * after walking everything else; what vanishes meanwhile is skipped.
 */
int sq_usage_tree(struct sq_fs *fs, int dirfd, bool whole,
		  struct sq_usage *u);

/* The total @u takes on BACKING: what `du -B1` counts. */
uint64_t sq_usage_backing_bytes(const struct sq_usage *u);

#endif /* SQ_USAGE_H */
