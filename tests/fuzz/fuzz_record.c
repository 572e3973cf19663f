/*
 * tests/fuzz/fuzz_record.c - libFuzzer target for the block record header
 * decoder (sq_rec_decode, meta/container_i.h).  The first two bytes pick
 * the block size and block index; the rest is the start of a slot.  A
 * header that decodes must re-encode to one that decodes to the same
 * fields.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "meta/container_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sq_rec_hdr h, h2;
	uint8_t *buf, enc[SQ_REC_HEAD_MAX];
	enum sq_slot_state st;
	char why[128];
	uint32_t bs;
	uint64_t idx;
	ssize_t n;

	if (size < 2)
		return 0;
	bs = (uint32_t)1 << (SQ_FMT_MIN_BLOCK_SHIFT + data[0] % 9);
	idx = data[1] % 4;
	data += 2;
	size -= 2;
	/* An exact-size copy, so ASan sees any read past the end. */
	buf = malloc(size ? size : 1);
	if (!buf)
		abort();
	memcpy(buf, data, size);

	memset(&h, 0, sizeof(h));
	st = sq_rec_decode(buf, size, idx, bs, &h, why, sizeof(why));
	if (st == SQ_SLOT_VALID) {
		if (h.block != idx || h.gen < 1 || h.raw_len < 1 ||
		    h.raw_len > bs || h.stored_len > bs ||
		    h.hdr_len < 1 || h.hdr_len > SQ_FMT_REC_HDR_MAX)
			abort();
		n = sq_rec_encode(&h, enc);
		if (n < SQ_FMT_REC_PREFIX || n > SQ_REC_HEAD_MAX)
			abort();
		memset(&h2, 0, sizeof(h2));
		if (sq_rec_decode(enc, (size_t)n, idx, bs, &h2, why,
				  sizeof(why)) != SQ_SLOT_VALID)
			abort();
		if (h2.block != h.block || h2.gen != h.gen ||
		    h2.codec != h.codec || h2.level != h.level ||
		    h2.raw_len != h.raw_len || h2.stored_len != h.stored_len ||
		    h2.sum != h.sum || h2.hdr_len != h.hdr_len)
			abort();
	} else if (st != SQ_SLOT_EMPTY && st != SQ_SLOT_INVALID) {
		abort();
	} else {
		why[sizeof(why) - 1] = '\0';
		(void)strlen(why);
	}
	free(buf);
	return 0;
}
