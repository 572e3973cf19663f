/*
 * codec/codec_zlib.c - zlib format (RFC 1950: deflate plus Adler-32), with
 * both streams kept in the per-thread context and reset between blocks, so
 * a block costs no allocation.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>

#define ZLIB_CONST
#include <zlib.h>

#include "codec/codec_i.h"

struct zlib_state {
	z_stream def;
	z_stream inf;
	int def_level;		/* level def was set up with; 0: no stream */
	bool inf_ready;
};

static struct zlib_state *zlib_get(void **state)
{
	if (!*state)
		*state = calloc(1, sizeof(struct zlib_state));
	return *state;
}

static size_t zlib_bound(size_t srclen)
{
	if (srclen > UINT_MAX)
		return 0;
	return compressBound((uLong)srclen);
}

/*
 * A new level means a new stream: deflateParams() on a reset stream flushes
 * into whatever output buffer is left, and zlib versions disagree on when.
 */
static int zlib_deflate_setup(struct zlib_state *st, int level)
{
	int ret;

	if (st->def_level == level)
		return deflateReset(&st->def) == Z_OK ? 0 : -EIO;
	if (st->def_level) {
		deflateEnd(&st->def);
		st->def_level = 0;
	}
	ret = deflateInit(&st->def, level);
	if (ret != Z_OK)
		return ret == Z_MEM_ERROR ? -ENOMEM : -EINVAL;
	st->def_level = level;
	return 0;
}

static ssize_t zlib_compress(void **state, int level, const void *src,
			     size_t srclen, void *dst, size_t dstcap)
{
	struct zlib_state *st = zlib_get(state);
	int ret;

	if (!st)
		return -ENOMEM;
	if (srclen > UINT_MAX)
		return -EINVAL;
	ret = zlib_deflate_setup(st, level);
	if (ret < 0)
		return ret;
	st->def.next_in = src;
	st->def.avail_in = (uInt)srclen;
	st->def.next_out = dst;
	st->def.avail_out = dstcap > UINT_MAX ? UINT_MAX : (uInt)dstcap;
	ret = deflate(&st->def, Z_FINISH);
	switch (ret) {
	case Z_STREAM_END:
		return (ssize_t)st->def.total_out;
	case Z_OK:		/* ran out of output space */
	case Z_BUF_ERROR:
		return -ENOSPC;
	default:
		return -EIO;
	}
}

static ssize_t zlib_decompress(void **state, const void *src, size_t srclen,
			       void *dst, size_t rawlen)
{
	struct zlib_state *st = zlib_get(state);
	int ret;

	if (!st)
		return -ENOMEM;
	if (srclen > UINT_MAX || rawlen > UINT_MAX)
		return -EBADMSG;
	if (!st->inf_ready) {
		ret = inflateInit(&st->inf);
		if (ret != Z_OK)
			return ret == Z_MEM_ERROR ? -ENOMEM : -EIO;
		st->inf_ready = true;
	} else if (inflateReset(&st->inf) != Z_OK) {
		return -EIO;
	}
	st->inf.next_in = src;
	st->inf.avail_in = (uInt)srclen;
	st->inf.next_out = dst;
	st->inf.avail_out = (uInt)rawlen;
	/*
	 * One call: inflate stops at avail_out, so a stream longer than rawlen
	 * ends in Z_BUF_ERROR, a shorter one in Z_STREAM_END with less output,
	 * a truncated one in Z_BUF_ERROR with input exhausted.
	 */
	ret = inflate(&st->inf, Z_FINISH);
	if (ret == Z_MEM_ERROR)
		return -ENOMEM;
	if (ret != Z_STREAM_END || st->inf.avail_in != 0 ||
	    st->inf.total_out != rawlen)
		return -EBADMSG;
	return (ssize_t)rawlen;
}

static void zlib_free_state(void *state)
{
	struct zlib_state *st = state;

	if (st->def_level)
		deflateEnd(&st->def);
	if (st->inf_ready)
		inflateEnd(&st->inf);
	free(st);
}

const struct sq_codec_ops sq_codec_zlib_ops = {
	.info = {
		.id = SQ_CODEC_ZLIB,
		.name = "zlib",
		.min_level = 1,
		.max_level = 9,
		.default_level = 6,
	},
	.bound = zlib_bound,
	.compress = zlib_compress,
	.decompress = zlib_decompress,
	.free_state = zlib_free_state,
};
