/*
 * analyzer/analyzer.c - the minimal storage policy: holes for zero blocks,
 * then one codec (zstd:1 for "auto", or the forced one), kept only when it
 * saves at least min_saving of the block.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "analyzer/analyzer.h"
#include "codec/codec.h"

#define AN_AUTO_CODEC SQ_CODEC_ZSTD
#define AN_AUTO_LEVEL 1

/* Immutable after sq_an_new(), hence shared by all threads unlocked. */
struct sq_an {
	int codec;
	int level;
	double min_saving;
};

int sq_an_new(const char *codec_spec, double min_saving, struct sq_an **out)
{
	struct sq_an *an;
	int codec, level, ret;

	if (!codec_spec || !out)
		return -EINVAL;
	/* Written this way round so that NaN fails too. */
	if (!(min_saving >= 0.0 && min_saving <= 1.0))
		return -EINVAL;
	if (strcmp(codec_spec, "auto") == 0) {
		codec = AN_AUTO_CODEC;
		level = AN_AUTO_LEVEL;
	} else {
		ret = sq_codec_parse(codec_spec, &codec, &level);
		if (ret < 0)
			return ret;
	}
	an = calloc(1, sizeof(*an));
	if (!an)
		return -ENOMEM;
	an->codec = codec;
	an->level = level;
	an->min_saving = min_saving;
	*out = an;
	return 0;
}

void sq_an_free(struct sq_an *an)
{
	free(an);
}

/*
 * Largest compressed length worth keeping: len - ceil(len * min_saving),
 * and never len itself, since an equal-size payload only costs a
 * decompression on every read.
 */
static size_t an_max_stored(const struct sq_an *an, size_t len)
{
	double want = (double)len * an->min_saving;
	size_t save = (size_t)want;

	/* ceil() by hand: the core does not link libm. */
	if ((double)save < want)
		save++;
	if (save == 0)
		save = 1;
	return save >= len ? 0 : len - save;
}

static void an_raw(const void *src, size_t len, struct sq_an_result *res)
{
	res->codec = SQ_CODEC_NONE;
	res->level = 0;
	res->payload = src;
	res->len = len;
}

int sq_an_store(const struct sq_an *an, struct sq_codec_ctx *cctx,
		const void *src, size_t len, void *scratch, size_t cap,
		struct sq_an_result *res)
{
	size_t max;
	ssize_t n;

	memset(res, 0, sizeof(*res));
	if (sq_an_is_zero(src, len)) {
		res->zero = true;
		res->codec = SQ_CODEC_NONE;
		return 0;
	}
	max = an_max_stored(an, len);
	if (max > cap)
		max = cap;
	if (an->codec == SQ_CODEC_NONE || max == 0) {
		an_raw(src, len, res);
		return 0;
	}
	/* A dstcap of max turns "does not save enough" into -ENOSPC. */
	n = sq_codec_compress(cctx, an->codec, an->level, src, len, scratch,
			      max);
	if (n == -ENOSPC || (n >= 0 && (size_t)n > max)) {
		an_raw(src, len, res);
		return 0;
	}
	if (n < 0)
		return (int)n;
	res->codec = an->codec;
	res->level = an->level;
	res->payload = scratch;
	res->len = (size_t)n;
	return 0;
}

/*
 * Once the first 16 bytes are zero, p[i] == p[i + 16] for every i means
 * all are: one overlapping memcmp() runs at libc's vector speed.
 */
bool sq_an_is_zero(const void *p, size_t len)
{
	const unsigned char *b = p;
	size_t head = len < 16 ? len : 16;
	size_t i;

	for (i = 0; i < head; i++) {
		if (b[i])
			return false;
	}
	return len <= 16 || memcmp(b, b + 16, len - 16) == 0;
}
