/*
 * meta/container.h - a squeezefs container: the backing file that holds one
 * regular file's blocks, compressed and checksummed (docs/FORMAT.md).
 * Knows nothing of FUSE; fs/, fsck and the tools share it.
 */
#ifndef SQ_CONTAINER_H
#define SQ_CONTAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct sq_codec_ctx;

/*
 * An open container.  Not thread-safe: the caller serializes every call on
 * one handle (fs/ holds the inode lock).
 */
struct sq_ctr;

/*
 * The BACKING a file lies in (docs/FORMAT.md 12.1): its volume id, which
 * every container made in it carries, and whether it is a legacy one
 * (made over a BACKING of format 4 or older: every file of 2 bytes or more
 * is a container, as then).  A file of a non-legacy volume that does not
 * carry the id is a plain file (kept as is, FORMAT.md 2.1).  NULL where a
 * volume is taken: a legacy one with no id.
 */
struct sq_vol {
	uint64_t id;		/* 0: not known (nothing matches it) */
	bool legacy;
};

/* What a regular backing file without a pack reference is (FORMAT.md
 * 2.1). */
enum sq_ctr_kind {
	SQ_KIND_CONTAINER = 0,	/* a container (or empty): read as one */
	SQ_KIND_PLAIN,		/* a plain file, kept as is */
	SQ_KIND_LOOKALIKE,	/* plain, but begins with the container magic */
	SQ_KIND_LOST_STUB,	/* 1 byte, 0: a stub that lost its reference */
};
/* Classifies the file open as @fd (readable) in @vol: a kind, or -errno. */
int sq_ctr_kind(int fd, const struct sq_vol *vol);

/* Reads BACKING/.squeezefs/volume of the BACKING open as @root_fd into
 * *@out; *@found says whether there is one.  Without, the volume has id 0
 * (nothing matches it) and is legacy when BACKING/.squeezefs/ exists (a
 * BACKING of a release before volumes).  Returns 0, -EBADMSG for a
 * damaged volume file, or -errno. */
int sq_vol_load(int root_fd, struct sq_vol *out, bool *found);
/* Makes the volume file (and .squeezefs/) with a new random id, synced;
 * when another process made one first, reads that.  0 or -errno. */
int sq_vol_create(int root_fd, bool legacy, struct sq_vol *out);
/*
 * What every program that takes BACKING's lock (which makes .squeezefs/)
 * calls first: sq_vol_load(), and when there is no volume file, one is
 * made, unless BACKING predates volumes (.squeezefs/ without one) and
 * !@write_legacy (fsck, export: they leave such a BACKING as it is).  A
 * BACKING that cannot be written gets id 0.  0 or -errno (-EBADMSG: a
 * damaged volume file).
 */
int sq_vol_setup(int root_fd, bool write_legacy, struct sq_vol *out);

/*
 * Opens the container in @fd (borrowed: it must stay open until
 * sq_ctr_close(); O_RDWR to write, O_RDONLY to read).  A 0-byte file is a
 * valid empty container; its header is written, with block size
 * 1 << @create_block_shift, by the first call that stores something.
 * Returns 0 and *@out (caller frees with sq_ctr_close()), -EBADMSG for a
 * file that is not a container of a version we read (bad magic, version,
 * block size or header checksum, no valid size record, or too short),
 * -errno on I/O failure.
 */
int sq_ctr_open(int fd, unsigned create_block_shift, struct sq_ctr **out);
/*
 * sq_ctr_open() in the volume @vol: a container made here carries its id,
 * and a plain file (sq_ctr_kind()) opens as a handle that reads and writes
 * it as it is: blocks of 1 << @create_block_shift bytes (128 KiB when 0),
 * stored only raw (codec none, written in place), the size its length.
 * A stub that lost its reference is -EBADMSG.
 */
int sq_ctr_open_vol(int fd, unsigned create_block_shift,
		    const struct sq_vol *vol, struct sq_ctr **out);
/* Whether the handle is a plain file's. */
bool sq_ctr_is_plain(const struct sq_ctr *ctr);
/* Whether it is a plain file that begins with the container magic (a
 * container of another BACKING, or one of this whose id is damaged). */
bool sq_ctr_is_lookalike(const struct sq_ctr *ctr);

/*
 * Opens a container held in memory: @image, @len bytes (malloc'd; the
 * handle owns it from here on, also on failure).  Read only: every call
 * that would write fails with -EBADF.  A packed file's image is read so.
 */
int sq_ctr_open_image(void *image, size_t len, struct sq_ctr **out);

/* Frees the handle.  Neither syncs nor closes the fd.  NULL is fine. */
void sq_ctr_close(struct sq_ctr *ctr);

uint64_t sq_ctr_size(const struct sq_ctr *ctr);		/* logical size */
uint32_t sq_ctr_block_size(const struct sq_ctr *ctr);
unsigned sq_ctr_block_shift(const struct sq_ctr *ctr);

/*
 * Reads the logical size of the container in @fd without keeping a handle
 * (for getattr of files that are not open).  0-byte file: 0.  Same errors
 * as sq_ctr_open().
 */
int sq_ctr_peek_size(int fd, const struct sq_vol *vol, uint64_t *size);
/* The same, and the block size's log2 in *@shift (0 for an empty file,
 * which has no block size yet, and for a plain one), and in *@plain
 * (NULL: not asked) whether the file is a plain one of @vol. */
int sq_ctr_peek(int fd, const struct sq_vol *vol, uint64_t *size,
		unsigned *shift, bool *plain);

/* The same for a container image in memory (@len bytes, not empty). */
int sq_ctr_image_size(const void *image, size_t len, uint64_t *size);

/*
 * Reads block @idx into @buf (block_size bytes): the stored bytes, then
 * zeros to the end of the block.  Returns the raw length stored for the
 * block (0 for a hole or zero record), -EBADMSG when the current record's
 * payload fails its checksum or does not decompress to its raw length
 * (the block is damaged; other blocks are unaffected), -errno on I/O.
 * Blocks at or past the end of the logical size read as holes.
 */
ssize_t sq_ctr_read_block(struct sq_ctr *ctr, struct sq_codec_ctx *cctx,
			  uint64_t idx, void *buf);

/*
 * Stores block @idx: @stored_len bytes of @payload, which codec @codec at
 * @level made from @raw_len (1..block_size) raw bytes.  The record goes to
 * the slot that does not hold the current version, payload first, header
 * last, so the current version survives any crash before the write
 * completes.  Does not change the logical size and does not sync.
 * Returns 0 or -errno (-ENOSPC, -EIO, ...); on error the previous version
 * of the block is still the current one.
 */
int sq_ctr_write_block(struct sq_ctr *ctr, uint64_t idx, int codec, int level,
		       uint32_t raw_len, const void *payload,
		       uint32_t stored_len);

/*
 * Makes block @idx read as zeros: nothing for a hole, a zero record
 * (crash-safe like a write) otherwise.  Returns 0 or -errno.
 */
int sq_ctr_zero_block(struct sq_ctr *ctr, uint64_t idx);

/*
 * Frees the slots of blocks [@first, @first + @count) at once, so they read
 * as holes.  For hole punching and truncation: not crash-atomic across
 * blocks.  Returns 0 or -errno.
 */
int sq_ctr_punch_blocks(struct sq_ctr *ctr, uint64_t first, uint64_t count);

/*
 * Sets the logical size.  Shrinking writes the size record at once, then
 * frees every block wholly past the new end.  Growing only changes the
 * size in memory (after freeing any leftover slots past the old end, so
 * they can never reappear): sq_ctr_write_size() records it once the data
 * is written, so a crash never leaves a size ahead of its blocks.  The
 * caller zeroes the tail of a partial last block.  Returns 0 or -errno.
 */
int sq_ctr_set_size(struct sq_ctr *ctr, uint64_t size);

/*
 * Writes the size record when the logical size changed since it was last
 * written (not synced).  Returns 0 or -errno.
 */
int sq_ctr_write_size(struct sq_ctr *ctr);
/* Whether sq_ctr_write_size() has a record to write. */
bool sq_ctr_size_pending(const struct sq_ctr *ctr);

/*
 * Makes everything written so far durable: writes the size record if it
 * changed, fdatasync()s, then frees the slots holding versions that the
 * sync made obsolete.  Returns 0 or -errno.
 */
int sq_ctr_sync(struct sq_ctr *ctr);

/* True when slots hold obsolete versions that sq_ctr_sync() would free. */
bool sq_ctr_has_stale(const struct sq_ctr *ctr);

/*
 * Parallel reads: sq_ctr_locate() notes where block @idx's current version
 * lies (under the caller's lock, like every call here), and
 * sq_ctr_read_loc() reads, checks and decodes it into @buf without that
 * lock, compressed bytes going through @scratch (block size bytes).  A
 * write, punch, resize or sync of the container may reuse that slot
 * meanwhile; each bumps sq_ctr_seq() first, so a reader whose result was
 * taken while the sequence moved throws it away (and its error: the slot
 * may have been freed under it).  The fd must stay open until then.
 */
struct sq_ctr_loc {
	int fd;
	const uint8_t *image;	/* with sq_ctr_open_image(), else NULL */
	uint64_t image_len;
	uint32_t bs;
	bool data;		/* false: reads as zeros */
	bool plain;		/* raw bytes of a plain file at off */
	off_t off;		/* of the payload */
	int codec;
	uint32_t raw_len, stored_len;
	uint64_t sum;
};
int sq_ctr_locate(struct sq_ctr *ctr, uint64_t idx, struct sq_ctr_loc *loc);
ssize_t sq_ctr_read_loc(const struct sq_ctr_loc *loc,
			struct sq_codec_ctx *cctx, void *scratch, void *buf,
			char *why, size_t whylen);
/*
 * sq_ctr_read_loc() without zeroing the block past the data: returns how
 * many leading bytes of @buf it filled (0 for a hole); the rest of @buf is
 * left as it was.  A small file's one block is mostly past its data, and
 * zeroing it on every read showed in profiles.
 */
ssize_t sq_ctr_read_loc_head(const struct sq_ctr_loc *loc,
			     struct sq_codec_ctx *cctx, void *scratch,
			     void *buf, char *why, size_t whylen);
uint64_t sq_ctr_seq(const struct sq_ctr *ctr);
/*
 * Starts reading, without waiting, what reading blocks [@first, @first +
 * @count) needs next: the payloads of blocks already located, the slot
 * headers of the others.  Readahead of containers is off (it would fill
 * holes with zeros), so sequential readers ask for exactly this.
 */
void sq_ctr_prefetch(struct sq_ctr *ctr, uint64_t first, uint64_t count);

struct sq_ctr_block_info {
	bool present;		/* a record (data or zero) is current */
	bool zero;		/* the current record is a zero record */
	int codec;		/* SQ_CODEC_* (valid when present && !zero) */
	int level;
	uint32_t raw_len;
	uint32_t stored_len;
	uint64_t gen;
	int slot;		/* 0 or 1, -1 when !present */
};

/*
 * Describes the current record of block @idx (reads slot headers only; the
 * payload is not verified).  Returns 0, -EBADMSG when neither slot holds a
 * valid header but one holds a damaged one, -errno on I/O.
 */
int sq_ctr_block_info(struct sq_ctr *ctr, uint64_t idx,
		      struct sq_ctr_block_info *info);

/*
 * First block >= @idx that holds data (a non-zero record), for SEEK_DATA;
 * returns its index, or the block count (size rounded up) when none.
 * Negative errno on I/O.
 */
int64_t sq_ctr_next_data(struct sq_ctr *ctr, uint64_t idx);

/*
 * For packing (docs/FORMAT.md section 13): writes to @buf the bytes of a
 * container that reads as the one in @fd (non-empty), with block 0's
 * current record in slot 0 and nothing else after the header, when the
 * file has at most one block and those bytes fit in @cap.  A small file
 * rewritten in place has its record in slot 1, past the first page.
 * Returns their length, 0 when the file does not qualify, -EBADMSG for a
 * damaged container, -errno.
 */
ssize_t sq_ctr_compact_image(int fd, const struct sq_vol *vol, void *buf,
			     size_t cap);

/* ---- checking (fsck) ---- */

struct sq_ctr_check {
	uint64_t blocks;	/* blocks below the logical size */
	uint64_t data_blocks;	/* with a data record */
	uint64_t zero_blocks;	/* holes and zero records */
	uint64_t stale_slots;	/* obsolete versions (not damage) */
	uint64_t damaged;	/* blocks that cannot be read */
	uint64_t raw_bytes;	/* sum of raw lengths of data records */
	uint64_t stored_bytes;	/* sum of stored lengths of data records */
	bool plain;		/* a plain file of the volume: not checked */
	bool lookalike;		/* ... that begins with the container magic */
};

/* Called once per problem found: @block is UINT64_MAX for the header. */
typedef void (*sq_ctr_problem_fn)(void *arg, uint64_t block, const char *msg);

/*
 * Verifies the container in @fd completely: header, size records, and
 * every block's current record (checksum and decompression).  Never
 * writes.  Returns 0 when the container is sound, -EBADMSG when damage
 * was found (each problem reported through @fn), -errno on I/O.
 */
int sq_ctr_check_fd(int fd, const struct sq_vol *vol,
		    struct sq_codec_ctx *cctx,
		    struct sq_ctr_check *report, sq_ctr_problem_fn fn,
		    void *arg);

#endif /* SQ_CONTAINER_H */
