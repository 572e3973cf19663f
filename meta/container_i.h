/*
 * meta/container_i.h - internals shared by meta/container.c, meta/record.c
 * and meta/check.c: the block record header codec, slot classification and
 * the handle layout.  Not for use outside meta/.
 */
#ifndef SQ_CONTAINER_I_H
#define SQ_CONTAINER_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "meta/container.h"
#include "meta/format.h"

/* The decoded msgpack header of a block record (docs/FORMAT.md). */
struct sq_rec_hdr {
	uint64_t block;		/* "b" */
	uint64_t gen;		/* "g" */
	int codec;		/* "c": SQ_CODEC_* or SQ_FMT_CODEC_ZERO */
	int level;		/* "l" */
	uint32_t raw_len;	/* "r" */
	uint32_t stored_len;	/* "s" */
	uint64_t sum;		/* "x": XXH3-64 of the payload */
	uint16_t hdr_len;	/* msgpack bytes after the prefix */
};

/* Prefix plus the longest header: what one slot-header read fetches. */
#define SQ_REC_HEAD_MAX (SQ_FMT_REC_PREFIX + SQ_FMT_REC_HDR_MAX)

/*
 * Encodes prefix + msgpack header of @h into @out (SQ_REC_HEAD_MAX bytes).
 * Sets h->hdr_len.  Returns the total length (16 + hdr_len), or -EINVAL
 * when the header would not fit (cannot happen for in-range values).
 */
ssize_t sq_rec_encode(struct sq_rec_hdr *h, uint8_t *out);

enum sq_slot_state {
	SQ_SLOT_EMPTY = 0,	/* never written, punched, or past EOF */
	SQ_SLOT_VALID = 1,
	SQ_SLOT_INVALID = 2,	/* torn or damaged */
};

/*
 * Classifies the @n bytes read from the start of a slot of block @idx in a
 * container of block size @bs (n < SQ_REC_HEAD_MAX only at EOF).  Fills @h
 * for a valid slot; for an invalid one writes the reason to @why (@whylen
 * bytes; @why may be NULL).  Never reads outside buf[0..n).
 */
enum sq_slot_state sq_rec_decode(const uint8_t *buf, size_t n, uint64_t idx,
				 uint32_t bs, struct sq_rec_hdr *h, char *why,
				 size_t whylen);

/* Reads up to @len bytes at @off, retrying short reads and EINTR; returns
 * the byte count (short only at EOF) or -errno. */
ssize_t sq_pread_full(int fd, void *buf, size_t len, off_t off);
/* Turns off the backing's readahead on @fd (see container.c). */
void sq_ctr_no_readahead(int fd);
/* Writes all @len bytes at @off or returns -errno. */
int sq_pwrite_full(int fd, const void *buf, size_t len, off_t off);

/*
 * Parses and validates the 128-byte file header in @b: block shift, the
 * current size record.  Returns 0, or -EBADMSG with the reason in @why.
 */
int sq_ctr_parse_header(const uint8_t *b, unsigned *shift, uint64_t *size,
			uint64_t *seq, int *size_slot, char *why,
			size_t whylen);

/*
 * Reads and classifies slot @k of block @idx of @ctr.  Returns the state,
 * or -errno on I/O error.  @why as for sq_rec_decode().
 */
int sq_ctr_read_slot(struct sq_ctr *ctr, uint64_t idx, int k,
		     struct sq_rec_hdr *h, char *why, size_t whylen);

/* Byte offset of slot @k of block @idx (idx below the handle's limit). */
off_t sq_ctr_slot_off(const struct sq_ctr *ctr, uint64_t idx, int k);

/* Physical end of the container as the handle knows it. */
uint64_t sq_ctr_phys_end(const struct sq_ctr *ctr);

/*
 * Verifies the payload of the record @h in slot @k of block @idx, leaving
 * the raw bytes in @buf (block size bytes, zero tail).  Returns the raw
 * length, -EBADMSG with the reason in @why, or -errno.
 */
ssize_t sq_ctr_read_payload(struct sq_ctr *ctr, struct sq_codec_ctx *cctx,
			    uint64_t idx, int k, const struct sq_rec_hdr *h,
			    void *buf, char *why, size_t whylen);

/*
 * First block in [@idx, @end) whose slots may hold data, by SEEK_DATA on
 * the container (@idx itself when the filesystem cannot tell); @end when
 * none.  Negative errno on I/O error.
 */
int64_t sq_ctr_skip_holes(struct sq_ctr *ctr, uint64_t idx, uint64_t end);

/* Blocks covering the logical size. */
uint64_t sq_ctr_nblocks(const struct sq_ctr *ctr);

/* Little-endian accessors. */
static inline uint16_t sq_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint64_t sq_get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline void sq_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void sq_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

#endif /* SQ_CONTAINER_I_H */
