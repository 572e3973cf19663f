/*
 * meta/pack.h - packed containers (docs/FORMAT.md section 13): a small
 * file's whole container image stored inside a shared pack file, so that
 * it does not take a filesystem block of its own.  The file's backing
 * object is then empty and carries SQ_PACK_XATTR, a fixed 40-byte
 * reference to where its image lies.  This header only encodes, decodes
 * and checks; engine/pack_store.c and engine/packer.c do the I/O and the
 * crash-safe ordering.
 */
#ifndef SQ_PACK_H
#define SQ_PACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The xattr of a backing file whose container is packed. */
#define SQ_PACK_XATTR		"trusted.squeezefs.packed"
/* The same where the writer may not set trusted.* (an unprivileged
 * user's mount): a name BACKING's owner may set.  Readers take
 * SQ_PACK_XATTR first, then this one. */
#define SQ_PACK_XATTR_USER	"user.squeezefs.packed"
#define SQ_PACK_REF_LEN		40
#define SQ_PACK_REF_MAGIC	"SQPK"
#define SQ_PACK_REF_VERSION	1
/* Pack ids are 1..SQ_PACK_ID_MAX (16 Mi packs of 1 GiB is plenty; a
 * reader must not size tables by an id it read from disk). */
#define SQ_PACK_ID_MAX		0xFFFFFFu

/* BACKING/.squeezefs/packs/<id as 8 lowercase hex digits>.sqp */
#define SQ_PACK_DIR		"packs"
#define SQ_PACK_SUFFIX		".sqp"

/* Pack file header: 16 bytes at offset 0; images follow. */
#define SQ_PACK_MAGIC		"SQZPACK\n"
#define SQ_PACK_HDR_LEN		16	/* magic[8] u32 version u32 id */
#define SQ_PACK_VERSION		1

/* No image crosses a multiple of SQ_PACK_PAGE, so that every page of a
 * pack is freed (hole-punched) once all images in it are dead. */
#define SQ_PACK_PAGE		4096
/* Largest image packed: bigger ones save too little of their page. */
#define SQ_PACK_IMAGE_MAX	3072

struct sq_pack_ref {
	uint32_t pack;		/* pack id, >= 1 */
	uint32_t len;		/* image length, 1..SQ_PACK_IMAGE_MAX */
	uint64_t off;		/* image offset in the pack */
	uint64_t size;		/* logical size of the file */
	uint64_t sum;		/* XXH3-64 of the image bytes */
};

/*
 * A packed file's backing file (format 4): SQ_PACK_STUB_LEN bytes that read
 * as zero (a hole: no block).  Version 3 left it empty; a copy of BACKING
 * that drops xattrs (rsync -a, tar, cp -r) then turns a packed file into an
 * empty one without a trace.  A stub without the xattr is a packed file
 * whose reference was lost: damaged, never empty (section 13.3).
 */
#define SQ_PACK_STUB_LEN	1

/*
 * The pack index (section 13.7): BACKING/.squeezefs/packs/index, one
 * record appended for every image packed (and every new link to a packed
 * file), and one for every rename of a directory or a packed file, so
 * that `fsck --repair` finds the image of a stub whose reference a copy
 * lost.  An image record:
 *
 *	magic[4] "SQPI", u32 rec_len (all of it, sum included),
 *	ref[40] (as the xattr), i64 mtime_sec, u32 mtime_nsec,
 *	u32 path_len, path[path_len] (relative to BACKING, no NUL),
 *	u64 XXH3-64 of every byte before it
 *
 * A move record (what was at path, or below it, is now at to):
 *
 *	magic[4] "SQPM", u32 rec_len, u32 path_len, u32 to_len,
 *	path[path_len], to[to_len], u64 XXH3-64 of every byte before it
 */
#define SQ_PACK_INDEX		"index"
#define SQ_PACK_IDX_MAGIC	"SQPI"
#define SQ_PACK_MOVE_MAGIC	"SQPM"
#define SQ_PACK_IDX_FIXED	64	/* bytes before an image record's path */
#define SQ_PACK_MOVE_FIXED	16	/* before a move record's paths */
#define SQ_PACK_IDX_PATH_MAX	4096
#define SQ_PACK_IDX_MAX		(SQ_PACK_MOVE_FIXED + \
				 2 * SQ_PACK_IDX_PATH_MAX + 8)

struct sq_pack_idx {
	bool move;		/* a move record: only path and to */
	struct sq_pack_ref ref;
	int64_t mtime_sec;	/* the file's mtime when packed */
	uint32_t mtime_nsec;
	uint32_t path_len;
	const char *path;	/* borrowed from the decoded buffer */
	uint32_t to_len;
	const char *to;		/* likewise */
};

/* Encodes @rec (an image or, with rec->move, a move record) into @out
 * (SQ_PACK_IDX_MAX bytes); returns its length, or -ENAMETOOLONG for a
 * path longer than SQ_PACK_IDX_PATH_MAX. */
int sq_pack_idx_encode(const struct sq_pack_idx *rec, uint8_t *out);
/*
 * Decodes the record at the start of @buf (@n bytes).  Returns its length,
 * or -EBADMSG when no valid record starts there (the caller moves on a
 * byte and looks for the next magic: a torn append is skipped, not the
 * records after it).  rec->path points into @buf.
 */
int sq_pack_idx_decode(const void *buf, size_t n, struct sq_pack_idx *rec);

void sq_pack_ref_encode(const struct sq_pack_ref *ref,
			uint8_t out[SQ_PACK_REF_LEN]);
/* Returns 0, or -EBADMSG when @buf (@n bytes) is no valid reference. */
int sq_pack_ref_decode(const void *buf, size_t n, struct sq_pack_ref *ref);

void sq_pack_hdr_encode(uint32_t id, uint8_t out[SQ_PACK_HDR_LEN]);
/* Returns 0, or -EBADMSG when @buf is not the header of pack @id. */
int sq_pack_hdr_check(const void *buf, size_t n, uint32_t id);

uint64_t sq_pack_image_sum(const void *image, size_t len);

/* Where an image of @len bytes goes when the pack ends at @end: at @end
 * unless that would cross a page boundary, else at the next page. */
uint64_t sq_pack_place(uint64_t end, uint32_t len);

#endif /* SQ_PACK_H */
