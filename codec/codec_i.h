/*
 * codec/codec_i.h - private to codec/: the table entry each codec file
 * provides, and the per-thread context that keeps their library state.
 */
#ifndef SQ_CODEC_I_H
#define SQ_CODEC_I_H

#include <stddef.h>
#include <sys/types.h>

#include "codec/codec.h"

/*
 * One codec.  codec.c has already checked the id and the level against
 * @info and answered empty input itself, so srclen and rawlen are > 0 here.
 * @state points at the codec's slot in struct sq_codec_ctx: NULL until the
 * codec first allocates something there, released with free_state().
 * Errors: -ENOSPC (compress output does not fit), -EBADMSG (corrupt input
 * or wrong length), -ENOMEM, -EINVAL (size beyond what the library takes).
 */
struct sq_codec_ops {
	struct sq_codec_info info;
	size_t (*bound)(size_t srclen);	/* 0: too large for the codec */
	ssize_t (*compress)(void **state, int level, const void *src,
			    size_t srclen, void *dst, size_t dstcap);
	ssize_t (*decompress)(void **state, const void *src, size_t srclen,
			      void *dst, size_t rawlen);
	void (*free_state)(void *state);	/* NULL: keeps no state */
};

extern const struct sq_codec_ops sq_codec_none_ops;
extern const struct sq_codec_ops sq_codec_lz4_ops;
extern const struct sq_codec_ops sq_codec_zstd_ops;
extern const struct sq_codec_ops sq_codec_zlib_ops;
extern const struct sq_codec_ops sq_codec_brotli_ops;

/* Library contexts are created on first use, so an unused codec is free. */
struct sq_codec_ctx {
	void *state[SQ_CODEC_COUNT];	/* indexed by codec id */
};

#endif /* SQ_CODEC_I_H */
