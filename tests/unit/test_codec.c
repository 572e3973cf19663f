/*
 * tests/unit/test_codec.c - codec/ through its public header: round trips
 * of every codec at its lowest, default and highest level, spec parsing,
 * and hostile payloads (truncated, flipped, wrong length, bombs, garbage)
 * decoded into guarded buffers that must come back intact.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "codec/codec.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

/*
 * A buffer that ends exactly at an inaccessible page, with another before
 * it: a stray access past the end faults even inside the (uninstrumented)
 * compression libraries, which ASan alone would miss.  Writes into the
 * slack between the leading page and the data are caught by its pattern.
 */
#define GUARD_BYTE 0xa5

struct gbuf {
	unsigned char *map;
	size_t maplen;
	unsigned char *p;
	size_t n;
};

static void gbuf_init(struct gbuf *g, size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t body = (n + pg - 1) / pg * pg;

	g->maplen = body + 2 * pg;
	g->map = mmap(NULL, g->maplen, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(g->map != MAP_FAILED);
	assert_int_equal(mprotect(g->map, pg, PROT_NONE), 0);
	assert_int_equal(mprotect(g->map + pg + body, pg, PROT_NONE), 0);
	g->p = g->map + pg + body - n;
	g->n = n;
	memset(g->map + pg, GUARD_BYTE, body - n);
}

/* A guarded copy of @len bytes at @src. */
static void gbuf_dup(struct gbuf *g, const void *src, size_t len)
{
	gbuf_init(g, len);
	if (len)
		memcpy(g->p, src, len);
}

static void gbuf_check(const struct gbuf *g)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char *q;

	for (q = g->map + pg; q < g->p; q++)
		assert_int_equal(*q, GUARD_BYTE);
}

static void gbuf_free(struct gbuf *g)
{
	gbuf_check(g);
	assert_int_equal(munmap(g->map, g->maplen), 0);
	g->map = g->p = NULL;
}

/* Deterministic data: splitmix64, so every run tests the same bytes. */
static uint64_t rnd_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void gen_random(unsigned char *p, size_t n, uint64_t seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)rnd_next(&seed);
}

/* English-ish prose: compresses about as well as real text does. */
static void gen_text(unsigned char *p, size_t n, uint64_t seed)
{
	static const char *const words[] = {
		"the", "of", "and", "to", "in", "a", "is", "that", "for",
		"it", "as", "was", "with", "be", "by", "on", "not", "he",
		"this", "are", "or", "his", "from", "at", "which", "but",
		"have", "an", "had", "they", "you", "were", "their", "one",
		"all", "we", "can", "her", "has", "there", "been", "if",
		"more", "when", "will", "would", "who", "so", "no", "file",
		"block", "compression", "filesystem", "kernel", "memory",
		"squeeze", "window", "entropy", "dictionary", "journal",
	};
	const size_t nwords = sizeof(words) / sizeof(words[0]);
	size_t i = 0;
	int col = 0;

	while (i < n) {
		uint64_t r = rnd_next(&seed);
		const char *w = words[r % nwords];
		size_t wl = strlen(w);

		while (*w && i < n)
			p[i++] = (unsigned char)*w++;
		col += (int)wl + 1;
		if (i >= n)
			break;
		if ((r >> 32) % 11 == 0)
			p[i++] = ((r >> 40) & 1) ? '.' : ',';
		if (i < n) {
			p[i++] = col > 72 ? '\n' : ' ';
			if (col > 72)
				col = 0;
		}
	}
}

enum kind { K_EMPTY, K_ONE, K_ZERO, K_RANDOM, K_TEXT, K_MIXED };

struct input {
	const char *name;
	enum kind kind;
	size_t len;
};

static const struct input inputs[] = {
	{ "empty", K_EMPTY, 0 },
	{ "1-byte", K_ONE, 1 },
	{ "zero-128K", K_ZERO, 128 * KIB },
	{ "random-128K", K_RANDOM, 128 * KIB },
	{ "text-128K", K_TEXT, 128 * KIB },
	{ "text-4K", K_TEXT, 4 * KIB },
	{ "mixed-1M", K_MIXED, MIB },
};

static unsigned char *make_input(const struct input *in)
{
	unsigned char *p = malloc(in->len ? in->len : 1);
	size_t q = in->len / 4;

	assert_non_null(p);
	switch (in->kind) {
	case K_EMPTY:
		break;
	case K_ONE:
		p[0] = 'A';
		break;
	case K_ZERO:
		memset(p, 0, in->len);
		break;
	case K_RANDOM:
		gen_random(p, in->len, 1);
		break;
	case K_TEXT:
		gen_text(p, in->len, 2);
		break;
	case K_MIXED:
		gen_text(p, q, 3);
		gen_random(p + q, q, 4);
		memset(p + 2 * q, 0, q);
		gen_text(p + 3 * q, in->len - 3 * q, 5);
		break;
	}
	return p;
}

static int codec_ids[SQ_CODEC_COUNT] = {
	SQ_CODEC_NONE, SQ_CODEC_LZ4, SQ_CODEC_ZSTD, SQ_CODEC_ZLIB,
	SQ_CODEC_BROTLI,
};

/* Compresses @len bytes at @src with a capacity of exactly the bound. */
static size_t compress_ok(struct sq_codec_ctx *ctx, int id, int level,
			  const unsigned char *src, size_t len,
			  unsigned char **out)
{
	size_t bound = sq_codec_bound(id, len);
	struct gbuf dst;
	ssize_t n;

	gbuf_init(&dst, bound);
	n = sq_codec_compress(ctx, id, level, src, len, dst.p, bound);
	assert_true(n >= 0);
	assert_true((size_t)n <= bound);
	assert_true(len == 0 || n > 0);
	gbuf_check(&dst);
	*out = malloc(n ? (size_t)n : 1);
	assert_non_null(*out);
	memcpy(*out, dst.p, (size_t)n);
	gbuf_free(&dst);
	return (size_t)n;
}

/* Decodes into a guarded buffer of exactly @rawlen; returns the result. */
static ssize_t decompress_guarded(struct sq_codec_ctx *ctx, int id,
				  const unsigned char *src, size_t srclen,
				  size_t rawlen, const unsigned char *expect)
{
	struct gbuf in, out;
	ssize_t n;

	gbuf_dup(&in, src, srclen);
	gbuf_init(&out, rawlen);
	n = sq_codec_decompress(ctx, id, in.p, srclen, out.p, rawlen);
	if (n >= 0) {
		assert_int_equal(n, rawlen);
		if (expect && rawlen)
			assert_memory_equal(out.p, expect, rawlen);
	}
	gbuf_free(&out);
	gbuf_free(&in);
	return n;
}

static void roundtrip(struct sq_codec_ctx *ctx, int id, int level,
		      const struct input *in)
{
	unsigned char *src = make_input(in);
	unsigned char *c;
	size_t clen = compress_ok(ctx, id, level, src, in->len, &c);
	ssize_t n;

	n = decompress_guarded(ctx, id, c, clen, in->len, src);
	assert_int_equal(n, in->len);
	/*
	 * Exactly the room the codec needed must do, one byte less must not
	 * overrun: -ENOSPC, or (zstd below the bound takes another path) a
	 * still smaller valid payload.  Skipped for 1 MiB to keep slow levels
	 * quick.
	 */
	if (clen > 0 && in->len <= 128 * KIB) {
		size_t cap;

		for (cap = clen; cap >= clen - 1 && cap > 0; cap--) {
			struct gbuf dst;

			gbuf_init(&dst, cap);
			n = sq_codec_compress(ctx, id, level, src, in->len,
					      dst.p, cap);
			gbuf_check(&dst);
			if (cap == clen)
				assert_true(n > 0);
			if (n != -ENOSPC) {
				assert_in_range(n, 1, cap);
				assert_int_equal(decompress_guarded(ctx, id,
						dst.p, (size_t)n, in->len,
						src), in->len);
			}
			gbuf_free(&dst);
		}
	}
	print_message("  %-6s %3d %-12s %8zu -> %8zu\n",
		      sq_codec_info(id)->name, level, in->name, in->len, clen);
	free(c);
	free(src);
}

static void test_roundtrip(void **state)
{
	int id = *(int *)*state;
	const struct sq_codec_info *info = sq_codec_info(id);
	int levels[3] = { info->min_level, info->default_level,
			  info->max_level };
	struct sq_codec_ctx *ctx;
	size_t i, l;

	assert_int_equal(sq_codec_ctx_new(&ctx), 0);
	for (l = 0; l < 3; l++) {
		if (l > 0 && levels[l] == levels[l - 1])
			continue;
		for (i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++)
			roundtrip(ctx, id, levels[l], &inputs[i]);
	}
	sq_codec_ctx_free(ctx);
}

/*
 * Hostile payloads.  Truncation and a wrong raw length must always be
 * caught.  A flipped byte need not be: only zlib carries a checksum, and
 * a flip inside an LZ4, zstd or brotli literal decodes to other bytes of
 * the right length (the container's checksum catches those), so there
 * the only demand is -EBADMSG or rawlen, and no stray access.
 */
static void test_corrupt(void **state)
{
	static const unsigned char masks[] = { 0x01, 0x80, 0xff };
	int id = *(int *)*state;
	const struct sq_codec_info *info = sq_codec_info(id);
	const struct input *in = &inputs[4];	/* text-128K */
	const struct input *small = &inputs[5];	/* text-4K */
	struct sq_codec_ctx *ctx;
	unsigned char *src, *c, *bad;
	size_t clen, i, m, pos[16], npos = 0, flips = 0, caught = 0;
	ssize_t n;

	assert_int_equal(sq_codec_ctx_new(&ctx), 0);

	/* Every truncation of a small payload. */
	src = make_input(small);
	clen = compress_ok(ctx, id, info->default_level, src, small->len, &c);
	for (i = 0; i < clen; i++) {
		n = decompress_guarded(ctx, id, c, i, small->len, NULL);
		assert_int_equal(n, -EBADMSG);
	}
	free(c);
	free(src);

	src = make_input(in);
	clen = compress_ok(ctx, id, info->default_level, src, in->len, &c);

	/* Truncated. */
	n = decompress_guarded(ctx, id, c, clen - 1, in->len, NULL);
	assert_int_equal(n, -EBADMSG);
	n = decompress_guarded(ctx, id, c, clen / 2, in->len, NULL);
	assert_int_equal(n, -EBADMSG);
	n = decompress_guarded(ctx, id, c, 1, in->len, NULL);
	assert_int_equal(n, -EBADMSG);

	/* Wrong raw length. */
	n = decompress_guarded(ctx, id, c, clen, in->len - 1, NULL);
	assert_int_equal(n, -EBADMSG);
	n = decompress_guarded(ctx, id, c, clen, in->len + 1, NULL);
	assert_int_equal(n, -EBADMSG);
	n = decompress_guarded(ctx, id, c, clen, 1, NULL);
	assert_int_equal(n, -EBADMSG);
	n = decompress_guarded(ctx, id, c, clen, 0, NULL);
	assert_int_equal(n, -EBADMSG);
	n = decompress_guarded(ctx, id, c, clen, 2 * in->len, NULL);
	assert_int_equal(n, -EBADMSG);

	/* Flipped bytes: the head, the middle and the tail. */
	for (i = 0; i < 6 && i < clen; i++)
		pos[npos++] = i;
	pos[npos++] = clen / 4;
	pos[npos++] = clen / 2;
	pos[npos++] = 3 * clen / 4;
	for (i = clen > 5 ? clen - 5 : 0; i < clen; i++)
		pos[npos++] = i;
	bad = malloc(clen);
	assert_non_null(bad);
	for (i = 0; i < npos; i++) {
		for (m = 0; m < sizeof(masks); m++) {
			memcpy(bad, c, clen);
			bad[pos[i]] ^= masks[m];
			n = decompress_guarded(ctx, id, bad, clen, in->len,
					       NULL);
			assert_true(n == -EBADMSG || n == (ssize_t)in->len);
			/*
			 * Adler-32 catches every flip in zlib, except in the
			 * last deflate byte, whose high bits are padding.
			 */
			if (id == SQ_CODEC_ZLIB && pos[i] != clen - 5)
				assert_int_equal(n, -EBADMSG);
			flips++;
			caught += n < 0;
		}
	}
	print_message("  %s: %zu of %zu flipped payloads rejected\n",
		      info->name, caught, flips);
	free(bad);
	free(c);
	free(src);
	sq_codec_ctx_free(ctx);
}

/* Random damage to a small payload, many times over. */
static void test_fuzz(void **state)
{
	int id = *(int *)*state;
	const struct sq_codec_info *info = sq_codec_info(id);
	const struct input *small = &inputs[5];	/* text-4K */
	struct sq_codec_ctx *ctx;
	unsigned char *src, *c, *bad;
	uint64_t seed = 42;
	size_t clen, it;

	assert_int_equal(sq_codec_ctx_new(&ctx), 0);
	src = make_input(small);
	clen = compress_ok(ctx, id, info->default_level, src, small->len, &c);
	bad = malloc(clen);
	assert_non_null(bad);
	for (it = 0; it < 2000; it++) {
		uint64_t r = rnd_next(&seed);
		size_t len = clen, rawlen = small->len, k, nflips = 1 + r % 4;
		ssize_t n;

		memcpy(bad, c, clen);
		for (k = 0; k < nflips; k++) {
			uint64_t rr = rnd_next(&seed);

			bad[rr % clen] ^= (unsigned char)(1 + (rr >> 32) % 255);
		}
		if ((r >> 8) % 4 == 0)
			len = 1 + (r >> 16) % clen;
		if ((r >> 24) % 4 == 0)
			rawlen = small->len - 8 + (r >> 32) % 17;
		n = decompress_guarded(ctx, id, bad, len, rawlen, NULL);
		assert_true(n == -EBADMSG || n == (ssize_t)rawlen);
	}

	/* Pure garbage of assorted lengths. */
	for (it = 1; it < 300; it++) {
		size_t len = it < 200 ? it : 64 * it;
		ssize_t n;
		unsigned char *g = malloc(len);

		assert_non_null(g);
		gen_random(g, len, it);
		n = decompress_guarded(ctx, id, g, len, small->len, NULL);
		assert_true(n == -EBADMSG || n == (ssize_t)small->len);
		free(g);
	}
	free(bad);
	free(c);
	free(src);
	sq_codec_ctx_free(ctx);
}

/*
 * A tiny payload that expands to 1 MiB must not get past a 4 KiB raw
 * length, whatever sizes the payload itself declares.
 */
static void test_bomb(void **state)
{
	int id = *(int *)*state;
	const struct sq_codec_info *info = sq_codec_info(id);
	struct sq_codec_ctx *ctx;
	unsigned char *zeros = calloc(1, MIB), *c;
	size_t clen;
	ssize_t n;

	assert_non_null(zeros);
	assert_int_equal(sq_codec_ctx_new(&ctx), 0);
	clen = compress_ok(ctx, id, info->default_level, zeros, MIB, &c);
	n = decompress_guarded(ctx, id, c, clen, 4 * KIB, NULL);
	assert_int_equal(n, -EBADMSG);
	n = decompress_guarded(ctx, id, c, clen, MIB - 1, NULL);
	assert_int_equal(n, -EBADMSG);
	n = decompress_guarded(ctx, id, c, clen, MIB, zeros);
	assert_int_equal(n, MIB);
	free(c);
	free(zeros);
	sq_codec_ctx_free(ctx);
}

/* Empty input is stored as an empty payload by every codec, and only so. */
static void test_empty(void **state)
{
	struct sq_codec_ctx *ctx;
	unsigned char buf[8] = { 0 };
	int id;

	(void)state;
	assert_int_equal(sq_codec_ctx_new(&ctx), 0);
	for (id = 0; id < SQ_CODEC_COUNT; id++) {
		const struct sq_codec_info *info = sq_codec_info(id);

		assert_int_equal(sq_codec_bound(id, 0), 0);
		assert_int_equal(sq_codec_compress(ctx, id,
						   info->default_level, buf,
						   0, buf, sizeof(buf)), 0);
		assert_int_equal(sq_codec_compress(ctx, id,
						   info->default_level, buf,
						   0, NULL, 0), 0);
		assert_int_equal(sq_codec_decompress(ctx, id, buf, 0, buf, 0),
				 0);
		assert_int_equal(sq_codec_decompress(ctx, id, buf, 0, buf, 1),
				 -EBADMSG);
		assert_int_equal(sq_codec_decompress(ctx, id, buf, 1, buf, 0),
				 -EBADMSG);
	}
	sq_codec_ctx_free(ctx);
}

static void test_info(void **state)
{
	static const char *const names[] = { "none", "lz4", "zstd", "zlib",
					     "brotli" };
	int id;

	(void)state;
	for (id = 0; id < SQ_CODEC_COUNT; id++) {
		const struct sq_codec_info *info = sq_codec_info(id);

		assert_non_null(info);
		assert_int_equal(info->id, id);
		assert_string_equal(info->name, names[id]);
		assert_true(info->min_level <= info->default_level);
		assert_true(info->default_level <= info->max_level);
		assert_int_equal(sq_codec_by_name(names[id]), id);
	}
	assert_null(sq_codec_info(-1));
	assert_null(sq_codec_info(SQ_CODEC_COUNT));
	assert_null(sq_codec_info(255));
	assert_int_equal(sq_codec_by_name("ZSTD"), -EINVAL);
	assert_int_equal(sq_codec_by_name(""), -EINVAL);
	assert_int_equal(sq_codec_by_name("zst"), -EINVAL);
	assert_int_equal(sq_codec_by_name("zstdx"), -EINVAL);
	assert_int_equal(sq_codec_by_name("zstd:3"), -EINVAL);
	assert_int_equal(sq_codec_by_name(NULL), -EINVAL);
	sq_codec_ctx_free(NULL);
}

static void test_parse(void **state)
{
	static const struct {
		const char *spec;
		int id, level;
	} good[] = {
		{ "zstd", SQ_CODEC_ZSTD, 3 },
		{ "zstd:19", SQ_CODEC_ZSTD, 19 },
		{ "zstd:-5", SQ_CODEC_ZSTD, -5 },
		{ "zstd:0", SQ_CODEC_ZSTD, 0 },
		{ "zstd:007", SQ_CODEC_ZSTD, 7 },
		{ "lz4", SQ_CODEC_LZ4, 1 },
		{ "lz4:12", SQ_CODEC_LZ4, 12 },
		{ "zlib", SQ_CODEC_ZLIB, 6 },
		{ "zlib:1", SQ_CODEC_ZLIB, 1 },
		{ "brotli", SQ_CODEC_BROTLI, 5 },
		{ "brotli:0", SQ_CODEC_BROTLI, 0 },
		{ "brotli:11", SQ_CODEC_BROTLI, 11 },
		{ "none", SQ_CODEC_NONE, 0 },
	};
	static const char *const bad[] = {
		"", "foo", "ZSTD", ":3", "zstd:", "zstd:3x", "zstd:99",
		"zstd:20", "zstd:-6", "zstd: 3", "zstd:+3", "zstd:3 ",
		"zstd:-", "zstd:3:4", "zstd:0x3", "zstd:99999999999999999999",
		"lz4:0", "lz4:13", "zlib:0", "zlib:10", "brotli:12",
		"brotli:-1", "none:1", "zstd :3",
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		int id = -1, level = -100;

		assert_int_equal(sq_codec_parse(good[i].spec, &id, &level), 0);
		assert_int_equal(id, good[i].id);
		assert_int_equal(level, good[i].level);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int id = -1, level = -100;

		assert_int_equal(sq_codec_parse(bad[i], &id, &level), -EINVAL);
		/* Outputs are only written on success. */
		assert_int_equal(id, -1);
		assert_int_equal(level, -100);
	}
	{
		int id, level;

		assert_int_equal(sq_codec_parse(NULL, &id, &level), -EINVAL);
	}
}

static void test_bound(void **state)
{
	static const size_t lens[] = { 1, 100, 4 * KIB, 128 * KIB, MIB };
	size_t i;
	int id;

	(void)state;
	for (id = 0; id < SQ_CODEC_COUNT; id++) {
		for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			size_t b = sq_codec_bound(id, lens[i]);

			assert_true(b >= lens[i]);
			/* A bound far above the input would waste memory. */
			assert_true(b <= lens[i] + lens[i] / 64 + 128);
		}
	}
	assert_int_equal(sq_codec_bound(SQ_CODEC_NONE, 4096), 4096);
	assert_int_equal(sq_codec_bound(-1, 4096), 0);
	assert_int_equal(sq_codec_bound(SQ_CODEC_COUNT, 4096), 0);
}

static void test_bad_args(void **state)
{
	struct sq_codec_ctx *ctx;
	unsigned char src[64] = "hello", dst[256];
	int id;

	(void)state;
	assert_int_equal(sq_codec_ctx_new(&ctx), 0);
	for (id = 0; id < SQ_CODEC_COUNT; id++) {
		const struct sq_codec_info *info = sq_codec_info(id);

		assert_int_equal(sq_codec_compress(ctx, id,
						   info->min_level - 1, src,
						   sizeof(src), dst,
						   sizeof(dst)), -EINVAL);
		assert_int_equal(sq_codec_compress(ctx, id,
						   info->max_level + 1, src,
						   sizeof(src), dst,
						   sizeof(dst)), -EINVAL);
		/* Nothing fits in no room at all. */
		assert_int_equal(sq_codec_compress(ctx, id,
						   info->default_level, src,
						   sizeof(src), dst, 0),
				 -ENOSPC);
	}
	assert_int_equal(sq_codec_compress(ctx, -1, 0, src, sizeof(src), dst,
					   sizeof(dst)), -EINVAL);
	assert_int_equal(sq_codec_compress(ctx, SQ_CODEC_COUNT, 0, src,
					   sizeof(src), dst, sizeof(dst)),
			 -EINVAL);
	assert_int_equal(sq_codec_decompress(ctx, -1, src, sizeof(src), dst,
					     sizeof(src)), -EINVAL);
	assert_int_equal(sq_codec_decompress(ctx, SQ_CODEC_COUNT, src,
					     sizeof(src), dst, sizeof(src)),
			 -EINVAL);
	/* Incompressible data cannot shrink to half. */
	{
		unsigned char *r = malloc(64 * KIB), *d = malloc(32 * KIB);

		assert_non_null(r);
		assert_non_null(d);
		gen_random(r, 64 * KIB, 9);
		for (id = 0; id < SQ_CODEC_COUNT; id++)
			assert_int_equal(sq_codec_compress(
				ctx, id, sq_codec_info(id)->default_level, r,
				64 * KIB, d, 32 * KIB), -ENOSPC);
		free(r);
		free(d);
	}
	sq_codec_ctx_free(ctx);
}

/*
 * Every level of every codec, at a capacity of exactly the bound: random
 * input checks the bound holds where codecs give up (brotli 0 and 1 can
 * exceed their stream bound), and brotli 10 takes its own code path.
 */
static void test_all_levels(void **state)
{
	static const struct input small[] = {
		{ "1-byte", K_ONE, 1 },
		{ "text-4K", K_TEXT, 4 * KIB },
		{ "random-4K", K_RANDOM, 4 * KIB },
		{ "random-70K", K_RANDOM, 70 * KIB },
	};
	struct sq_codec_ctx *ctx;
	size_t i;
	int id, level;

	(void)state;
	assert_int_equal(sq_codec_ctx_new(&ctx), 0);
	for (i = 0; i < sizeof(small) / sizeof(small[0]); i++) {
		unsigned char *src = make_input(&small[i]), *c;

		for (id = 0; id < SQ_CODEC_COUNT; id++) {
			const struct sq_codec_info *info = sq_codec_info(id);

			for (level = info->min_level;
			     level <= info->max_level; level++) {
				size_t clen = compress_ok(ctx, id, level, src,
							  small[i].len, &c);

				assert_int_equal(decompress_guarded(ctx, id, c,
						clen, small[i].len, src),
						small[i].len);
				free(c);
			}
		}
		free(src);
	}
	sq_codec_ctx_free(ctx);
}

/* Levels switching back and forth on one context (zlib re-creates). */
static void test_level_switch(void **state)
{
	static const int seq[] = { 1, 9, 9, 1, 6, 1 };
	const struct input *in = &inputs[5];	/* text-4K */
	struct sq_codec_ctx *ctx;
	unsigned char *src = make_input(in), *c;
	size_t i, clen;
	int id;

	(void)state;
	assert_int_equal(sq_codec_ctx_new(&ctx), 0);
	for (id = 0; id < SQ_CODEC_COUNT; id++) {
		const struct sq_codec_info *info = sq_codec_info(id);

		for (i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
			int level = seq[i];

			if (level < info->min_level)
				level = info->min_level;
			if (level > info->max_level)
				level = info->max_level;
			clen = compress_ok(ctx, id, level, src, in->len, &c);
			assert_int_equal(decompress_guarded(ctx, id, c, clen,
							    in->len, src),
					 in->len);
			free(c);
		}
	}
	free(src);
	sq_codec_ctx_free(ctx);
}

/* One entry per codec, named "test/codec" in cmocka's report. */
#define CODEC_TEST(f, id, name) \
	{ #f "/" name, f, NULL, NULL, &codec_ids[id] }
#define PER_CODEC(f)                                  \
	CODEC_TEST(f, SQ_CODEC_NONE, "none"),         \
	CODEC_TEST(f, SQ_CODEC_LZ4, "lz4"),           \
	CODEC_TEST(f, SQ_CODEC_ZSTD, "zstd"),         \
	CODEC_TEST(f, SQ_CODEC_ZLIB, "zlib"),         \
	CODEC_TEST(f, SQ_CODEC_BROTLI, "brotli")

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_info),
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_bound),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_level_switch),
		cmocka_unit_test(test_all_levels),
		PER_CODEC(test_roundtrip),
		PER_CODEC(test_corrupt),
		PER_CODEC(test_fuzz),
		PER_CODEC(test_bomb),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
