/*
 * meta/pack_format.c - encoding of pack references and pack headers
 * (docs/FORMAT.md section 13).  Little-endian throughout.
 */
#include "meta/pack.h"

#include <errno.h>
#include <string.h>

#include <xxhash.h>

static void put32(uint8_t *p, uint32_t v)
{
	for (int k = 0; k < 4; k++)
		p[k] = (uint8_t)(v >> (8 * k));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int k = 0; k < 8; k++)
		p[k] = (uint8_t)(v >> (8 * k));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int k = 3; k >= 0; k--)
		v = v << 8 | p[k];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int k = 7; k >= 0; k--)
		v = v << 8 | p[k];
	return v;
}

void sq_pack_ref_encode(const struct sq_pack_ref *ref,
			uint8_t out[SQ_PACK_REF_LEN])
{
	memcpy(out, SQ_PACK_REF_MAGIC, 4);
	put32(out + 4, SQ_PACK_REF_VERSION);
	put32(out + 8, ref->pack);
	put32(out + 12, ref->len);
	put64(out + 16, ref->off);
	put64(out + 24, ref->size);
	put64(out + 32, ref->sum);
}

int sq_pack_ref_decode(const void *buf, size_t n, struct sq_pack_ref *ref)
{
	const uint8_t *p = buf;

	if (n != SQ_PACK_REF_LEN || memcmp(p, SQ_PACK_REF_MAGIC, 4) ||
	    get32(p + 4) != SQ_PACK_REF_VERSION)
		return -EBADMSG;
	ref->pack = get32(p + 8);
	ref->len = get32(p + 12);
	ref->off = get64(p + 16);
	ref->size = get64(p + 24);
	ref->sum = get64(p + 32);
	/* An image never crosses a page (sq_pack_place()) and never
	 * overlaps the pack header. */
	if (ref->pack == 0 || ref->pack > SQ_PACK_ID_MAX || ref->len == 0 ||
	    ref->len > SQ_PACK_IMAGE_MAX ||
	    ref->off < SQ_PACK_HDR_LEN ||
	    ref->off / SQ_PACK_PAGE != (ref->off + ref->len - 1) / SQ_PACK_PAGE)
		return -EBADMSG;
	return 0;
}

void sq_pack_hdr_encode(uint32_t id, uint8_t out[SQ_PACK_HDR_LEN])
{
	memcpy(out, SQ_PACK_MAGIC, 8);
	put32(out + 8, SQ_PACK_VERSION);
	put32(out + 12, id);
}

int sq_pack_hdr_check(const void *buf, size_t n, uint32_t id)
{
	const uint8_t *p = buf;

	if (n < SQ_PACK_HDR_LEN || memcmp(p, SQ_PACK_MAGIC, 8) ||
	    get32(p + 8) != SQ_PACK_VERSION || get32(p + 12) != id)
		return -EBADMSG;
	return 0;
}

uint64_t sq_pack_image_sum(const void *image, size_t len)
{
	return XXH3_64bits(image, len);
}

uint64_t sq_pack_place(uint64_t end, uint32_t len)
{
	if (end / SQ_PACK_PAGE != (end + len - 1) / SQ_PACK_PAGE)
		return (end / SQ_PACK_PAGE + 1) * SQ_PACK_PAGE;
	return end;
}

/* A path below BACKING: not empty, no NUL, not absolute. */
static bool rel_path(const char *p, uint32_t len)
{
	return len && len <= SQ_PACK_IDX_PATH_MAX && !memchr(p, 0, len) &&
	       p[0] != '/';
}

int sq_pack_idx_encode(const struct sq_pack_idx *rec, uint8_t *out)
{
	uint32_t len;

	if (rec->path_len > SQ_PACK_IDX_PATH_MAX ||
	    (rec->move && rec->to_len > SQ_PACK_IDX_PATH_MAX))
		return -ENAMETOOLONG;
	if (rec->move) {
		len = SQ_PACK_MOVE_FIXED + rec->path_len + rec->to_len + 8;
		memcpy(out, SQ_PACK_MOVE_MAGIC, 4);
		put32(out + 4, len);
		put32(out + 8, rec->path_len);
		put32(out + 12, rec->to_len);
		memcpy(out + SQ_PACK_MOVE_FIXED, rec->path, rec->path_len);
		memcpy(out + SQ_PACK_MOVE_FIXED + rec->path_len, rec->to,
		       rec->to_len);
	} else {
		len = SQ_PACK_IDX_FIXED + rec->path_len + 8;
		memcpy(out, SQ_PACK_IDX_MAGIC, 4);
		put32(out + 4, len);
		sq_pack_ref_encode(&rec->ref, out + 8);
		put64(out + 48, (uint64_t)rec->mtime_sec);
		put32(out + 56, rec->mtime_nsec);
		put32(out + 60, rec->path_len);
		memcpy(out + SQ_PACK_IDX_FIXED, rec->path, rec->path_len);
	}
	put64(out + len - 8, XXH3_64bits(out, len - 8));
	return (int)len;
}

int sq_pack_idx_decode(const void *buf, size_t n, struct sq_pack_idx *rec)
{
	const uint8_t *p = buf;
	uint32_t len;

	if (n < SQ_PACK_MOVE_FIXED + 8)
		return -EBADMSG;
	len = get32(p + 4);
	if (len > n || len > SQ_PACK_IDX_MAX || len < SQ_PACK_MOVE_FIXED + 8)
		return -EBADMSG;
	memset(rec, 0, sizeof(*rec));
	if (!memcmp(p, SQ_PACK_MOVE_MAGIC, 4)) {
		rec->move = true;
		rec->path_len = get32(p + 8);
		rec->to_len = get32(p + 12);
		if ((uint64_t)rec->path_len + rec->to_len !=
		    len - SQ_PACK_MOVE_FIXED - 8)
			return -EBADMSG;
		rec->path = (const char *)p + SQ_PACK_MOVE_FIXED;
		rec->to = rec->path + rec->path_len;
	} else if (!memcmp(p, SQ_PACK_IDX_MAGIC, 4)) {
		if (len < SQ_PACK_IDX_FIXED + 8 ||
		    get32(p + 60) != len - SQ_PACK_IDX_FIXED - 8 ||
		    sq_pack_ref_decode(p + 8, SQ_PACK_REF_LEN, &rec->ref) ||
		    get32(p + 56) >= 1000000000u)
			return -EBADMSG;
		rec->mtime_sec = (int64_t)get64(p + 48);
		rec->mtime_nsec = get32(p + 56);
		rec->path_len = len - SQ_PACK_IDX_FIXED - 8;
		rec->path = (const char *)p + SQ_PACK_IDX_FIXED;
	} else {
		return -EBADMSG;
	}
	if (get64(p + len - 8) != XXH3_64bits(p, len - 8) ||
	    !rel_path(rec->path, rec->path_len) ||
	    (rec->move && !rel_path(rec->to, rec->to_len)))
		return -EBADMSG;
	return (int)len;
}
