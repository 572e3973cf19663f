/*
 * tests/fuzz/fuzz_codec.c - libFuzzer target for sq_codec_decompress().
 * Byte 0 picks the codec (including ids that do not exist), bytes 1..3 the
 * raw length; the rest is the payload.  The output buffer is exactly the
 * raw length, so ASan sees any overrun.  Small inputs also round-trip
 * through compress at the codec's lowest level.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sq_codec_ctx *cctx;

static void try_decompress(int id, const uint8_t *src, size_t srclen,
			   size_t rawlen)
{
	uint8_t *dst = malloc(rawlen ? rawlen : 1);
	ssize_t r;

	if (!dst)
		abort();
	r = sq_codec_decompress(cctx, id, src, srclen, dst, rawlen);
	if (r >= 0 && (size_t)r != rawlen)
		abort();
	if (r < 0 && r != -EBADMSG && r != -EINVAL && r != -ENOMEM)
		abort();
	if (r >= 0 && !sq_codec_info(id))
		abort();
	free(dst);
}

static void round_trip(int id, const uint8_t *src, size_t srclen)
{
	const struct sq_codec_info *ci = sq_codec_info(id);
	size_t cap = sq_codec_bound(id, srclen);
	uint8_t *c, *d;
	ssize_t n, m;

	if (!ci || cap == 0)
		return;
	c = malloc(cap);
	d = malloc(srclen);
	if (!c || !d)
		abort();
	n = sq_codec_compress(cctx, id, ci->min_level, src, srclen, c, cap);
	if (n <= 0 || (size_t)n > cap)
		abort();
	m = sq_codec_decompress(cctx, id, c, (size_t)n, d, srclen);
	if (m != (ssize_t)srclen || memcmp(d, src, srclen) != 0)
		abort();
	/* One byte short of the raw length must fail, not overrun. */
	if (srclen > 1 &&
	    sq_codec_decompress(cctx, id, c, (size_t)n, d, srclen - 1) >= 0)
		abort();
	free(c);
	free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int ids[] = {
		SQ_CODEC_NONE, SQ_CODEC_LZ4, SQ_CODEC_ZSTD, SQ_CODEC_ZLIB,
		SQ_CODEC_BROTLI, SQ_CODEC_COUNT, 255, -1,
	};
	size_t rawlen, srclen;
	const uint8_t *src;
	int id;

	if (!cctx && sq_codec_ctx_new(&cctx) != 0)
		abort();
	if (size < 4)
		return 0;
	id = ids[data[0] % (sizeof(ids) / sizeof(ids[0]))];
	rawlen = ((size_t)data[1] | (size_t)data[2] << 8 |
		  (size_t)data[3] << 16) % ((1u << 20) + 1);
	src = data + 4;
	srclen = size - 4;

	try_decompress(id, src, srclen, rawlen);
	/* Lengths near the payload's own, where valid streams live. */
	try_decompress(id, src, srclen, srclen);
	if (srclen > 0)
		try_decompress(id, src, srclen, srclen * 4);
	if (srclen > 0 && srclen <= 4096 && (data[0] & 0x80))
		round_trip(id, src, srclen);
	return 0;
}
