/*
 * codec/codec.c - the one codec table, spec parsing and the dispatch that
 * every codec shares (level checks, empty input, context lifetime).
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec_i.h"

/* Indexed by on-disk id; a codec's slot must match its info.id. */
static const struct sq_codec_ops *const codecs[SQ_CODEC_COUNT] = {
	[SQ_CODEC_NONE] = &sq_codec_none_ops,
	[SQ_CODEC_LZ4] = &sq_codec_lz4_ops,
	[SQ_CODEC_ZSTD] = &sq_codec_zstd_ops,
	[SQ_CODEC_ZLIB] = &sq_codec_zlib_ops,
	[SQ_CODEC_BROTLI] = &sq_codec_brotli_ops,
};

static const struct sq_codec_ops *codec_ops(int id)
{
	const struct sq_codec_ops *ops;

	if (id < 0 || id >= SQ_CODEC_COUNT)
		return NULL;
	ops = codecs[id];
	assert(ops && ops->info.id == id);
	return ops;
}

const struct sq_codec_info *sq_codec_info(int id)
{
	const struct sq_codec_ops *ops = codec_ops(id);

	return ops ? &ops->info : NULL;
}

/* Matches the first @len bytes of @name (which need not be terminated). */
static int codec_by_name_len(const char *name, size_t len)
{
	int id;

	for (id = 0; id < SQ_CODEC_COUNT; id++) {
		const char *n = codecs[id]->info.name;

		if (strlen(n) == len && memcmp(n, name, len) == 0)
			return id;
	}
	return -EINVAL;
}

int sq_codec_by_name(const char *name)
{
	if (!name)
		return -EINVAL;
	return codec_by_name_len(name, strlen(name));
}

/*
 * Strict decimal: optional '-', then digits only.  strtol alone would
 * accept " 3", "+3" and "3x" (with endptr), which a mount option should not.
 */
static int parse_level(const char *s, int *out)
{
	const char *p = s;
	char *end;
	long v;

	if (*p == '-')
		p++;
	if (*p < '0' || *p > '9')
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end != '\0' || v < INT_MIN || v > INT_MAX)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

int sq_codec_parse(const char *spec, int *id, int *level)
{
	const struct sq_codec_info *info;
	const char *colon;
	int cid, lvl;

	if (!spec)
		return -EINVAL;
	colon = strchr(spec, ':');
	cid = codec_by_name_len(spec, colon ? (size_t)(colon - spec)
					     : strlen(spec));
	if (cid < 0)
		return cid;
	info = &codecs[cid]->info;
	if (!colon) {
		lvl = info->default_level;
	} else {
		if (parse_level(colon + 1, &lvl) < 0)
			return -EINVAL;
		if (lvl < info->min_level || lvl > info->max_level)
			return -EINVAL;
	}
	*id = cid;
	*level = lvl;
	return 0;
}

size_t sq_codec_bound(int id, size_t srclen)
{
	const struct sq_codec_ops *ops = codec_ops(id);

	if (!ops)
		return 0;
	if (srclen == 0)
		return 0;
	return ops->bound(srclen);
}

int sq_codec_ctx_new(struct sq_codec_ctx **out)
{
	struct sq_codec_ctx *ctx = calloc(1, sizeof(*ctx));

	if (!ctx)
		return -ENOMEM;
	*out = ctx;
	return 0;
}

void sq_codec_ctx_free(struct sq_codec_ctx *ctx)
{
	int id;

	if (!ctx)
		return;
	for (id = 0; id < SQ_CODEC_COUNT; id++) {
		if (ctx->state[id] && codecs[id]->free_state)
			codecs[id]->free_state(ctx->state[id]);
	}
	free(ctx);
}

ssize_t sq_codec_compress(struct sq_codec_ctx *ctx, int id, int level,
			  const void *src, size_t srclen,
			  void *dst, size_t dstcap)
{
	const struct sq_codec_ops *ops = codec_ops(id);
	ssize_t ret;

	if (!ops || level < ops->info.min_level || level > ops->info.max_level)
		return -EINVAL;
	/* Every decompressor then only ever sees non-empty payloads. */
	if (srclen == 0)
		return 0;
	if (srclen > SSIZE_MAX)
		return -EINVAL;
	ret = ops->compress(&ctx->state[id], level, src, srclen, dst, dstcap);
	assert(ret < 0 || (size_t)ret <= dstcap);
	assert(ret != 0);
	return ret;
}

ssize_t sq_codec_decompress(struct sq_codec_ctx *ctx, int id,
			    const void *src, size_t srclen,
			    void *dst, size_t rawlen)
{
	const struct sq_codec_ops *ops = codec_ops(id);
	ssize_t ret;

	if (!ops)
		return -EINVAL;
	/* compress() stores empty input as an empty payload, and only so. */
	if (srclen == 0 || rawlen == 0)
		return srclen == 0 && rawlen == 0 ? 0 : -EBADMSG;
	if (rawlen > SSIZE_MAX)
		return -EBADMSG;
	ret = ops->decompress(&ctx->state[id], src, srclen, dst, rawlen);
	assert(ret < 0 || (size_t)ret == rawlen);
	return ret;
}

const char *sq_codec_name(int id)
{
	const struct sq_codec_info *ci = sq_codec_info(id);

	return ci ? ci->name : "?";
}
