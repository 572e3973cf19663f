/*
 * codec/codec_none.c - "none": the payload is the data itself.  Lets a
 * forced "none" policy and raw blocks go through the same table.
 */
#include <errno.h>
#include <string.h>

#include "codec/codec_i.h"

static size_t none_bound(size_t srclen)
{
	return srclen;
}

static ssize_t none_compress(void **state, int level, const void *src,
			     size_t srclen, void *dst, size_t dstcap)
{
	(void)state;
	(void)level;
	if (srclen > dstcap)
		return -ENOSPC;
	memcpy(dst, src, srclen);
	return (ssize_t)srclen;
}

static ssize_t none_decompress(void **state, const void *src, size_t srclen,
			       void *dst, size_t rawlen)
{
	(void)state;
	if (srclen != rawlen)
		return -EBADMSG;
	memcpy(dst, src, rawlen);
	return (ssize_t)rawlen;
}

const struct sq_codec_ops sq_codec_none_ops = {
	.info = {
		.id = SQ_CODEC_NONE,
		.name = "none",
		.min_level = 0,
		.max_level = 0,
		.default_level = 0,
	},
	.bound = none_bound,
	.compress = none_compress,
	.decompress = none_decompress,
};
