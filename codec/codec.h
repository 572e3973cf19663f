/*
 * codec/codec.h - one interface over every compression library squeezefs
 * uses.  Depends on nothing else of ours.  The codec ids are part of the
 * on-disk format (docs/FORMAT.md): never renumber them.
 */
#ifndef SQ_CODEC_H
#define SQ_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* On-disk codec ids (the "c" key of a block header). */
enum sq_codec_id {
	SQ_CODEC_NONE = 0,	/* stored raw */
	SQ_CODEC_LZ4 = 1,	/* level 1: LZ4 fast; 2..12: LZ4 HC */
	SQ_CODEC_ZSTD = 2,	/* levels -5..19 */
	SQ_CODEC_ZLIB = 3,	/* raw zlib stream (RFC 1950), levels 1..9 */
	SQ_CODEC_BROTLI = 4,	/* quality 0..11 */
	SQ_CODEC_COUNT
};

struct sq_codec_info {
	int id;
	const char *name;	/* "none", "lz4", "zstd", "zlib", "brotli" */
	int min_level;
	int max_level;
	int default_level;
};

/* Static description of codec @id, or NULL when @id is unknown. */
const struct sq_codec_info *sq_codec_info(int id);

/* The name of codec @id ("zstd"), "?" when @id is unknown. */
const char *sq_codec_name(int id);

/* Codec id for @name ("zstd"), or -EINVAL. */
int sq_codec_by_name(const char *name);

/*
 * Parses "name" or "name:level" (e.g. "zstd:19", "lz4").  A missing level
 * means the codec's default level.  Returns 0, or -EINVAL for an unknown
 * name, a malformed or out-of-range level.
 */
int sq_codec_parse(const char *spec, int *id, int *level);

/*
 * Largest stored size compress() can produce for @srclen bytes: a @dstcap
 * of at least this never gives -ENOSPC.  0 for srclen 0, an unknown @id,
 * or a @srclen beyond what the codec's library accepts.
 */
size_t sq_codec_bound(int id, size_t srclen);

/*
 * Per-thread scratch state (library contexts reused between calls, so a
 * block costs no allocation).  Not thread-safe: one per thread.
 * sq_codec_ctx_free(NULL) does nothing.
 */
struct sq_codec_ctx;
int sq_codec_ctx_new(struct sq_codec_ctx **out);
void sq_codec_ctx_free(struct sq_codec_ctx *ctx);

/*
 * Compresses @srclen bytes of @src into @dst (capacity @dstcap) with codec
 * @id at @level.  Returns the stored length (> 0 unless srclen == 0), or
 * -ENOSPC when the output does not fit in @dstcap (callers that pass a
 * @dstcap below sq_codec_bound() use this as "not worth it"), -EINVAL for
 * a bad id or level, -ENOMEM.
 */
ssize_t sq_codec_compress(struct sq_codec_ctx *ctx, int id, int level,
			  const void *src, size_t srclen,
			  void *dst, size_t dstcap);

/*
 * Decompresses @srclen bytes of @src, which must expand to exactly @rawlen
 * bytes, into @dst (capacity at least @rawlen).  Returns @rawlen, or
 * -EBADMSG when the payload is corrupt, truncated or of another length
 * (never reads or writes out of bounds on any input), -EINVAL for a bad
 * id, -ENOMEM.
 */
ssize_t sq_codec_decompress(struct sq_codec_ctx *ctx, int id,
			    const void *src, size_t srclen,
			    void *dst, size_t rawlen);

#endif /* SQ_CODEC_H */
