/*
 * analyzer/analyzer.h - decides, block by block, how squeezefs stores data:
 * which codec and level, raw, or a hole.  Depends on codec/ only.
 */
#ifndef SQ_ANALYZER_H
#define SQ_ANALYZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sq_codec_ctx;

/* Default minimum saving: store raw unless compression saves 1/8. */
#define SQ_AN_MIN_SAVING_DEFAULT 0.125

/*
 * The mount-wide policy.  Immutable after creation, so every worker thread
 * may use it at once.
 */
struct sq_an;

/*
 * Creates a policy from the codec option: "auto" or a codec spec accepted
 * by sq_codec_parse() ("zstd:19") that forces one codec.  @min_saving is
 * the fraction (0..1) a codec must save before its output is kept.
 * Returns 0 and *@out (free with sq_an_free()), or -EINVAL.
 */
int sq_an_new(const char *codec_spec, double min_saving, struct sq_an **out);
void sq_an_free(struct sq_an *an);

struct sq_an_result {
	bool zero;		/* all bytes are zero: store a hole */
	int codec;		/* SQ_CODEC_*; SQ_CODEC_NONE: store raw */
	int level;
	const void *payload;	/* borrowed: src (raw) or the scratch buffer */
	size_t len;		/* stored length */
};

/*
 * Chooses how to store the @len (1..1 MiB) bytes at @src, compressing into
 * @scratch (capacity @cap, at least @len) when it pays.  Returns 0 with
 * *@res filled, or -errno from the codec (never for incompressible data).
 */
int sq_an_store(const struct sq_an *an, struct sq_codec_ctx *cctx,
		const void *src, size_t len, void *scratch, size_t cap,
		struct sq_an_result *res);

/* True when all @len bytes at @p are zero. */
bool sq_an_is_zero(const void *p, size_t len);

#endif /* SQ_ANALYZER_H */
