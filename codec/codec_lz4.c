/*
 * codec/codec_lz4.c - LZ4 block format (no frame): level 1 is LZ4 fast,
 * 2..12 LZ4 HC.  The block format carries neither length nor checksum, so
 * the exact raw length from the block header is what bounds decoding.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include <lz4.h>
#include <lz4hc.h>

#include "codec/codec_i.h"

/* Each state is allocated on first use: HC's is ~256 KiB, fast's 16 KiB. */
struct lz4_state {
	void *fast;
	void *hc;
};

static size_t lz4_bound(size_t srclen)
{
	if (srclen > LZ4_MAX_INPUT_SIZE)
		return 0;
	return (size_t)LZ4_compressBound((int)srclen);
}

static void *lz4_get(void **state, int hc)
{
	struct lz4_state *st = *state;
	void **slot;

	if (!st) {
		st = calloc(1, sizeof(*st));
		if (!st)
			return NULL;
		*state = st;
	}
	slot = hc ? &st->hc : &st->fast;
	if (!*slot)
		*slot = malloc(hc ? (size_t)LZ4_sizeofStateHC()
				  : (size_t)LZ4_sizeofState());
	return *slot;
}

static ssize_t lz4_compress(void **state, int level, const void *src,
			    size_t srclen, void *dst, size_t dstcap)
{
	int cap = dstcap > INT_MAX ? INT_MAX : (int)dstcap;
	void *ws;
	int ret;

	if (srclen > LZ4_MAX_INPUT_SIZE)
		return -EINVAL;
	ws = lz4_get(state, level > 1);
	if (!ws)
		return -ENOMEM;
	/* Both reinitialize @ws themselves; 0 can only mean "did not fit". */
	if (level == 1)
		ret = LZ4_compress_fast_extState(ws, src, dst, (int)srclen,
						 cap, 1);
	else
		ret = LZ4_compress_HC_extStateHC(ws, src, dst, (int)srclen,
						 cap, level);
	return ret > 0 ? ret : -ENOSPC;
}

static ssize_t lz4_decompress(void **state, const void *src, size_t srclen,
			      void *dst, size_t rawlen)
{
	int ret;

	(void)state;
	if (srclen > INT_MAX || rawlen > INT_MAX)
		return -EBADMSG;
	/*
	 * _safe never writes past rawlen or reads past srclen; a block that
	 * ends early decodes "successfully" to fewer bytes, hence the check.
	 */
	ret = LZ4_decompress_safe(src, dst, (int)srclen, (int)rawlen);
	if (ret < 0 || (size_t)ret != rawlen)
		return -EBADMSG;
	return ret;
}

static void lz4_free_state(void *state)
{
	struct lz4_state *st = state;

	free(st->fast);
	free(st->hc);
	free(st);
}

const struct sq_codec_ops sq_codec_lz4_ops = {
	.info = {
		.id = SQ_CODEC_LZ4,
		.name = "lz4",
		.min_level = 1,
		.max_level = 12,	/* LZ4HC_CLEVEL_MAX */
		.default_level = 1,
	},
	.bound = lz4_bound,
	.compress = lz4_compress,
	.decompress = lz4_decompress,
	.free_state = lz4_free_state,
};
