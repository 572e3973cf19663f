/*
 * codec/codec_brotli.c - one brotli stream (RFC 7932) per block.  Brotli
 * has no way to reset an encoder or decoder, so nothing is kept in the
 * context: each call builds its own state.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>

#include <brotli/decode.h>
#include <brotli/encode.h>

#include "codec/codec_i.h"

/* Window of 4 MiB, or the smallest that still covers the whole block. */
#define BROTLI_LGWIN 22

static size_t brotli_bound(size_t srclen)
{
	return BrotliEncoderMaxCompressedSize(srclen);
}

static int brotli_lgwin(size_t srclen)
{
	int lgwin = BROTLI_MIN_WINDOW_BITS;

	/* The usable window is (1 << lgwin) - 16 bytes (RFC 7932, 9.1). */
	while (lgwin < BROTLI_LGWIN && ((size_t)1 << lgwin) - 16 < srclen)
		lgwin++;
	return lgwin;
}

static ssize_t brotli_compress(void **state, int level, const void *src,
			       size_t srclen, void *dst, size_t dstcap)
{
	size_t outlen = dstcap;

	(void)state;
	if (dstcap == 0)
		return -ENOSPC;
	/*
	 * The one-shot call rather than the stream API: at quality 0 and 1
	 * the stream encoder can exceed BrotliEncoderMaxCompressedSize(), and
	 * only the one-shot call falls back to an uncompressed stream that
	 * keeps sq_codec_bound() true.  Its price: one BROTLI_FALSE for both
	 * "did not fit" and an allocation failure, so both read as -ENOSPC
	 * (the caller stores the block raw, which is safe either way).
	 */
	if (!BrotliEncoderCompress(level, brotli_lgwin(srclen),
				   BROTLI_MODE_GENERIC, srclen, src, &outlen,
				   dst))
		return -ENOSPC;
	if (outlen == 0 || outlen > dstcap || outlen > SSIZE_MAX)
		return -EIO;
	return (ssize_t)outlen;
}

static ssize_t brotli_dec_error(BrotliDecoderErrorCode code)
{
	switch (code) {
	case BROTLI_DECODER_ERROR_ALLOC_CONTEXT_MODES:
	case BROTLI_DECODER_ERROR_ALLOC_TREE_GROUPS:
	case BROTLI_DECODER_ERROR_ALLOC_CONTEXT_MAP:
	case BROTLI_DECODER_ERROR_ALLOC_RING_BUFFER_1:
	case BROTLI_DECODER_ERROR_ALLOC_RING_BUFFER_2:
	case BROTLI_DECODER_ERROR_ALLOC_BLOCK_TYPE_TREES:
		return -ENOMEM;
	default:
		return -EBADMSG;
	}
}

static ssize_t brotli_decompress(void **state, const void *src,
				 size_t srclen, void *dst, size_t rawlen)
{
	BrotliDecoderState *dec;
	BrotliDecoderResult res;
	const uint8_t *in = src;
	uint8_t *out = dst;
	size_t avail_in = srclen, avail_out = rawlen;
	ssize_t ret;

	(void)state;
	/*
	 * The stream API, not BrotliDecoderDecompress(): it tells allocation
	 * failures from corruption and reports trailing bytes after the end.
	 */
	dec = BrotliDecoderCreateInstance(NULL, NULL, NULL);
	if (!dec)
		return -ENOMEM;
	res = BrotliDecoderDecompressStream(dec, &avail_in, &in, &avail_out,
					    &out, NULL);
	switch (res) {
	case BROTLI_DECODER_RESULT_SUCCESS:
		ret = avail_in == 0 && avail_out == 0 ? (ssize_t)rawlen
						      : -EBADMSG;
		break;
	case BROTLI_DECODER_RESULT_ERROR:
		ret = brotli_dec_error(BrotliDecoderGetErrorCode(dec));
		break;
	default:	/* NEEDS_MORE_INPUT: truncated; _OUTPUT: too long */
		ret = -EBADMSG;
		break;
	}
	BrotliDecoderDestroyInstance(dec);
	return ret;
}

const struct sq_codec_ops sq_codec_brotli_ops = {
	.info = {
		.id = SQ_CODEC_BROTLI,
		.name = "brotli",
		.min_level = 0,
		.max_level = 11,
		.default_level = 5,
	},
	.bound = brotli_bound,
	.compress = brotli_compress,
	.decompress = brotli_decompress,
};
