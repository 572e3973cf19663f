/*
 * codec/codec_zstd.c - one zstd frame per block, contexts reused from the
 * per-thread sq_codec_ctx.  The frame's own content size is never trusted:
 * the block header's raw length sizes the output and must match exactly.
 */
#include <errno.h>
#include <stdlib.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "codec/codec_i.h"

struct zstd_state {
	ZSTD_CCtx *cctx;	/* created on first compress */
	ZSTD_DCtx *dctx;	/* created on first decompress */
};

static struct zstd_state *zstd_get(void **state)
{
	if (!*state)
		*state = calloc(1, sizeof(struct zstd_state));
	return *state;
}

static size_t zstd_bound(size_t srclen)
{
	size_t b = ZSTD_compressBound(srclen);

	return ZSTD_isError(b) ? 0 : b;
}

static ssize_t zstd_error(size_t err)
{
	switch (ZSTD_getErrorCode(err)) {
	case ZSTD_error_dstSize_tooSmall:
		return -ENOSPC;
	case ZSTD_error_memory_allocation:
		return -ENOMEM;
	case ZSTD_error_parameter_outOfBound:
	case ZSTD_error_parameter_unsupported:
	case ZSTD_error_srcSize_wrong:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/*
 * Below the bound, the one-shot call needs some 8 bytes of headroom for
 * its bit writers: an output that would fit exactly fails with
 * dstSize_tooSmall.  The streaming call compresses such blocks into the
 * context's own buffer and copies out what fits, so "fits" means exactly
 * that, at the price of a copy.
 */
static ssize_t zstd_compress_tight(ZSTD_CCtx *cctx, int level,
				   const void *src, size_t srclen, void *dst,
				   size_t dstcap)
{
	ZSTD_inBuffer in = { src, srclen, 0 };
	ZSTD_outBuffer out = { dst, dstcap, 0 };
	size_t ret;

	ret = ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
	if (ZSTD_isError(ret))
		return zstd_error(ret);
	ret = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
	if (ZSTD_isError(ret))
		return zstd_error(ret);
	ret = ZSTD_compressStream2(cctx, &out, &in, ZSTD_e_end);
	if (ZSTD_isError(ret))
		return zstd_error(ret);
	/* Nonzero: bytes of the frame still waiting for room. */
	if (ret != 0)
		return -ENOSPC;
	return (ssize_t)out.pos;
}

static ssize_t zstd_compress(void **state, int level, const void *src,
			     size_t srclen, void *dst, size_t dstcap)
{
	struct zstd_state *st = zstd_get(state);
	size_t ret;

	if (!st)
		return -ENOMEM;
	if (!st->cctx) {
		st->cctx = ZSTD_createCCtx();
		if (!st->cctx)
			return -ENOMEM;
	}
	if (dstcap < ZSTD_compressBound(srclen))
		return zstd_compress_tight(st->cctx, level, src, srclen, dst,
					   dstcap);
	/* The simple API resets parameters itself: no state leaks between
	 * calls with different levels. */
	ret = ZSTD_compressCCtx(st->cctx, dst, dstcap, src, srclen, level);
	if (ZSTD_isError(ret))
		return zstd_error(ret);
	return (ssize_t)ret;
}

static ssize_t zstd_decompress(void **state, const void *src, size_t srclen,
			       void *dst, size_t rawlen)
{
	struct zstd_state *st = zstd_get(state);
	size_t ret;

	if (!st)
		return -ENOMEM;
	if (!st->dctx) {
		st->dctx = ZSTD_createDCtx();
		if (!st->dctx)
			return -ENOMEM;
	}
	/*
	 * Single-pass decoding writes straight into dst and fails with
	 * dstSize_tooSmall rather than overrun it, whatever the frame says.
	 */
	ret = ZSTD_decompressDCtx(st->dctx, dst, rawlen, src, srclen);
	if (ZSTD_isError(ret))
		return ZSTD_getErrorCode(ret) == ZSTD_error_memory_allocation
			       ? -ENOMEM
			       : -EBADMSG;
	if (ret != rawlen)
		return -EBADMSG;
	return (ssize_t)ret;
}

static void zstd_free_state(void *state)
{
	struct zstd_state *st = state;

	ZSTD_freeCCtx(st->cctx);
	ZSTD_freeDCtx(st->dctx);
	free(st);
}

const struct sq_codec_ops sq_codec_zstd_ops = {
	.info = {
		.id = SQ_CODEC_ZSTD,
		.name = "zstd",
		.min_level = -5,
		.max_level = 19,
		.default_level = 3,
	},
	.bound = zstd_bound,
	.compress = zstd_compress,
	.decompress = zstd_decompress,
	.free_state = zstd_free_state,
};
