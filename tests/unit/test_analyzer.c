/*
 * tests/unit/test_analyzer.c - the storage policy: holes for zero blocks,
 * raw for incompressible ones, the auto and forced codecs, the min_saving
 * threshold to the byte, and sq_an_is_zero() at every length and offset;
 * content classes of synthetic blocks, policies, priors that do not stick,
 * trials, counters and option parsing (issue 3).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "analyzer/analyzer.h"
#include "codec/codec.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

static uint64_t rnd_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned char *gen_random(size_t n, uint64_t seed)
{
	unsigned char *p = malloc(n);
	size_t i;

	assert_non_null(p);
	for (i = 0; i < n; i++)
		p[i] = (unsigned char)rnd_next(&seed);
	return p;
}

static unsigned char *gen_text(size_t n, uint64_t seed)
{
	static const char *const words[] = {
		"the", "of", "and", "to", "in", "a", "is", "that", "for",
		"it", "as", "was", "with", "be", "by", "on", "not", "he",
		"this", "are", "or", "his", "from", "at", "which", "but",
		"block", "compression", "filesystem", "kernel", "memory",
	};
	const size_t nwords = sizeof(words) / sizeof(words[0]);
	unsigned char *p = malloc(n);
	size_t i = 0;

	assert_non_null(p);
	while (i < n) {
		const char *w = words[rnd_next(&seed) % nwords];

		while (*w && i < n)
			p[i++] = (unsigned char)*w++;
		if (i < n)
			p[i++] = ' ';
	}
	return p;
}

struct fixture {
	struct sq_codec_ctx *cctx;
	unsigned char *scratch;
	size_t cap;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f || sq_codec_ctx_new(&f->cctx) < 0)
		return -1;
	f->cap = MIB;
	f->scratch = malloc(f->cap);
	if (!f->scratch)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	sq_codec_ctx_free(f->cctx);
	free(f->scratch);
	free(f);
	return 0;
}

/* Stores @src under @spec and checks the payload decodes back to it. */
static void store(struct fixture *f, const char *spec, double min_saving,
		  const unsigned char *src, size_t len,
		  struct sq_an_result *res)
{
	struct sq_an *an;
	unsigned char *back;

	assert_int_equal(sq_an_new(spec, SQ_AN_POLICY_BALANCED, min_saving,
				   &an), 0);
	memset(res, 0xff, sizeof(*res));
	assert_int_equal(sq_an_store(an, NULL, 0, f->cctx, src, len,
				     f->scratch, f->cap, res), 0);
	sq_an_free(an);
	if (res->zero)
		return;
	if (res->codec == SQ_CODEC_NONE) {
		assert_ptr_equal(res->payload, src);
		assert_int_equal(res->len, len);
		return;
	}
	assert_ptr_equal(res->payload, f->scratch);
	assert_true(res->len > 0 && res->len < len);
	back = malloc(len);
	assert_non_null(back);
	assert_int_equal(sq_codec_decompress(f->cctx, res->codec,
					     res->payload, res->len, back,
					     len), len);
	assert_memory_equal(back, src, len);
	free(back);
}

static void test_zero(void **state)
{
	static const size_t lens[] = { 1, 4 * KIB, 128 * KIB, MIB };
	struct fixture *f = *state;
	struct sq_an_result res;
	size_t i;

	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		unsigned char *z = calloc(1, lens[i]);

		assert_non_null(z);
		store(f, "auto", SQ_AN_MIN_SAVING_DEFAULT, z, lens[i], &res);
		assert_true(res.zero);
		/* Even a forced codec stores a hole. */
		store(f, "none", SQ_AN_MIN_SAVING_DEFAULT, z, lens[i], &res);
		assert_true(res.zero);
		/* One byte at the very end is data. */
		z[lens[i] - 1] = 1;
		store(f, "auto", SQ_AN_MIN_SAVING_DEFAULT, z, lens[i], &res);
		assert_false(res.zero);
		free(z);
	}
}

static void test_random_raw(void **state)
{
	struct fixture *f = *state;
	struct sq_an_result res;
	unsigned char *r = gen_random(128 * KIB, 1);

	store(f, "auto", SQ_AN_MIN_SAVING_DEFAULT, r, 128 * KIB, &res);
	assert_false(res.zero);
	assert_int_equal(res.codec, SQ_CODEC_NONE);
	assert_ptr_equal(res.payload, r);
	assert_int_equal(res.len, 128 * KIB);
	/* With no saving asked, equal size is still not worth it. */
	store(f, "zstd:19", 0.0, r, 128 * KIB, &res);
	assert_int_equal(res.codec, SQ_CODEC_NONE);
	free(r);
}

static void test_text_auto(void **state)
{
	struct fixture *f = *state;
	struct sq_an_result res;
	unsigned char *t = gen_text(128 * KIB, 2);

	/* auto is now the balanced table's choice for text. */
	store(f, "auto", SQ_AN_MIN_SAVING_DEFAULT, t, 128 * KIB, &res);
	assert_false(res.zero);
	assert_int_equal(res.cls, SQ_AN_CLASS_TEXT);
	assert_int_equal(res.how, SQ_AN_HOW_COMPRESSED);
	assert_int_equal(res.codec, SQ_CODEC_BROTLI);
	assert_int_equal(res.level, 5);
	assert_true(res.len < 128 * KIB / 8 * 7);
	free(t);
}

static void test_forced(void **state)
{
	static const struct {
		const char *spec;
		int codec, level;
	} cases[] = {
		{ "lz4:1", SQ_CODEC_LZ4, 1 },
		{ "lz4:9", SQ_CODEC_LZ4, 9 },
		{ "zstd:19", SQ_CODEC_ZSTD, 19 },
		{ "zlib", SQ_CODEC_ZLIB, 6 },
		{ "brotli:3", SQ_CODEC_BROTLI, 3 },
	};
	struct fixture *f = *state;
	struct sq_an_result res;
	unsigned char *t = gen_text(64 * KIB, 3);
	size_t i;

	store(f, "none", SQ_AN_MIN_SAVING_DEFAULT, t, 64 * KIB, &res);
	assert_false(res.zero);
	assert_int_equal(res.codec, SQ_CODEC_NONE);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		store(f, cases[i].spec, SQ_AN_MIN_SAVING_DEFAULT, t, 64 * KIB,
		      &res);
		assert_int_equal(res.codec, cases[i].codec);
		assert_int_equal(res.level, cases[i].level);
	}
	free(t);
}

/* Kept exactly when it saves ceil(len * min_saving) bytes or more. */
static void test_threshold(void **state)
{
	struct fixture *f = *state;
	struct sq_an_result res;
	const size_t len = 64 * KIB;
	unsigned char *t = gen_text(len, 4);
	double saved;

	store(f, "zstd:1", 0.0, t, len, &res);
	assert_int_equal(res.codec, SQ_CODEC_ZSTD);
	saved = (double)(len - res.len);

	/* Asking for half a byte less than it saves: kept. */
	store(f, "zstd:1", (saved - 0.5) / len, t, len, &res);
	assert_int_equal(res.codec, SQ_CODEC_ZSTD);
	assert_int_equal(res.len, len - (size_t)saved);
	/* Half a byte more: raw. */
	store(f, "zstd:1", (saved + 0.5) / len, t, len, &res);
	assert_int_equal(res.codec, SQ_CODEC_NONE);
	/* Everything: always raw. */
	store(f, "zstd:1", 1.0, t, len, &res);
	assert_int_equal(res.codec, SQ_CODEC_NONE);
	free(t);
}

static void test_bad_spec(void **state)
{
	static const char *const bad[] = { "", "bogus", "zstd:99", "zstd:",
					   "Auto", "auto:1", "lz4:0" };
	const enum sq_an_policy B = SQ_AN_POLICY_BALANCED;
	struct sq_an *an = NULL;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sq_an_new(bad[i], B, 0.125, &an), -EINVAL);
	assert_int_equal(sq_an_new(NULL, B, 0.125, &an), -EINVAL);
	assert_int_equal(sq_an_new("auto", B, -0.1, &an), -EINVAL);
	assert_int_equal(sq_an_new("auto", B, 1.5, &an), -EINVAL);
	assert_int_equal(sq_an_new("auto", B, NAN, &an), -EINVAL);
	assert_int_equal(sq_an_new("auto", SQ_AN_POLICY_COUNT, 0.1, &an),
			 -EINVAL);
	assert_null(an);
	assert_int_equal(sq_an_new("auto", B, 0.0, &an), 0);
	sq_an_free(an);
	sq_an_free(NULL);
}

static void test_is_zero(void **state)
{
	unsigned char buf[256 + 8];
	size_t off, len, i;

	(void)state;
	memset(buf, 0, sizeof(buf));
	assert_true(sq_an_is_zero(buf, 0));
	/* Every alignment, every length, a set byte at every position. */
	for (off = 0; off < 8; off++) {
		for (len = 1; len <= 200; len++) {
			assert_true(sq_an_is_zero(buf + off, len));
			for (i = 0; i < len; i++) {
				buf[off + i] = 0x80;
				assert_false(sq_an_is_zero(buf + off, len));
				buf[off + i] = 0;
			}
			/* Bytes just outside do not count. */
			buf[off + len] = 1;
			if (off)
				buf[off - 1] = 1;
			assert_true(sq_an_is_zero(buf + off, len));
			buf[off + len] = 0;
			if (off)
				buf[off - 1] = 0;
		}
	}
}

/* ---- classes, policies, priors, trials, counters ---- */

static unsigned char *gen_json(size_t n, uint64_t seed)
{
	unsigned char *p = malloc(n + 256);
	size_t i = 0;

	assert_non_null(p);
	while (i < n)
		i += (size_t)sprintf((char *)p + i,
				     "{\"id\": %llu, \"name\": \"user%llu\", "
				     "\"score\": %llu.%02llu, \"tags\": "
				     "[\"a\", \"b\"], \"ok\": true},\n",
				     (unsigned long long)(rnd_next(&seed) %
							  100000),
				     (unsigned long long)(rnd_next(&seed) %
							  1000),
				     (unsigned long long)(rnd_next(&seed) % 100),
				     (unsigned long long)(rnd_next(&seed) %
							  100));
	return p;
}

/* Deflates @n bytes of text in gzip format, as a .gz file's first block. */
static unsigned char *gen_gzip(size_t n, uint64_t seed)
{
	size_t tn = n * 4;
	unsigned char *t = malloc(tn), *out = malloc(n);
	z_stream zs;
	size_t i;

	assert_non_null(t);
	assert_non_null(out);
	/* Text with numbers, so that the deflate output fills @n bytes. */
	for (i = 0; i < tn; i++) {
		uint64_t r = rnd_next(&seed);

		t[i] = (unsigned char)(r % 5 ? 'a' + r % 26 : '0' + r % 10);
	}
	memset(&zs, 0, sizeof(zs));
	assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8,
				      Z_DEFAULT_STRATEGY), Z_OK);
	zs.next_in = t;
	zs.avail_in = (uInt)tn;
	zs.next_out = out;
	zs.avail_out = (uInt)n;
	deflate(&zs, Z_FINISH);
	assert_int_equal(zs.avail_out, 0);	/* @n bytes filled */
	deflateEnd(&zs);
	free(t);
	assert_int_equal(out[0], 0x1f);
	assert_int_equal(out[1], 0x8b);
	return out;
}

/* Random bytes behind the first bytes of a PNG or JPEG file. */
static unsigned char *gen_media(size_t n, const void *head, size_t hlen,
				uint64_t seed)
{
	unsigned char *p = gen_random(n, seed);

	memcpy(p, head, hlen);
	return p;
}

static const unsigned char png_head[] = {
	0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
	0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 0, 4, 0, 0, 0, 3, 0, 8, 6, 0, 0, 0,
	0x9a, 0x2b, 0x9c, 0x1e, 0, 0x1f, 0xff, 0xf0, 'I', 'D', 'A', 'T',
};

static const unsigned char jpeg_head[] = {
	0xff, 0xd8, 0xff, 0xe0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 72,
	0, 72, 0, 0, 0xff, 0xdb, 0, 0x43, 0,
};

/* A slice of a real executable. */
static unsigned char *read_exe(size_t n, off_t off)
{
	unsigned char *p = malloc(n);
	int fd = open("/bin/ls", O_RDONLY);

	assert_non_null(p);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, p, n, off), (ssize_t)n);
	close(fd);
	return p;
}

/* Stores block @idx of file @af under @an and checks it decodes back. */
static void store_an(struct fixture *f, const struct sq_an *an,
		     struct sq_an_file *af, uint64_t idx,
		     const unsigned char *src, size_t len,
		     struct sq_an_result *res)
{
	unsigned char *back;

	memset(res, 0xff, sizeof(*res));
	assert_int_equal(sq_an_store(an, af, idx, f->cctx, src, len,
				     f->scratch, f->cap, res), 0);
	if (res->zero || res->codec == SQ_CODEC_NONE) {
		if (!res->zero)
			assert_ptr_equal(res->payload, src);
		return;
	}
	back = malloc(len);
	assert_non_null(back);
	assert_int_equal(sq_codec_decompress(f->cctx, res->codec,
					     res->payload, res->len, back,
					     len), len);
	assert_memory_equal(back, src, len);
	free(back);
}

/*
 * Pay-off checks: on blocks that every codec squeezes alike (random runs
 * between zero runs, like fio's buffers) balanced's brotli stops paying
 * and the file goes on with lz4; on text brotli keeps its blocks.
 */
static void payoff_run(struct fixture *f, const struct sq_an *an, bool text,
		       uint64_t *checks, uint64_t *cheap, int *slow_codec)
{
	const size_t len = 128 * KIB;
	struct sq_an_file *af;
	struct sq_an_result res;
	uint64_t i;

	*checks = *cheap = 0;
	*slow_codec = -1;
	assert_int_equal(sq_an_file_new(&af), 0);
	for (i = 0; i < 64; i++) {
		unsigned char *b;

		if (text) {
			b = gen_text(len, 500 + i);
		} else {
			b = gen_random(len, 700 + i);
			for (size_t j = 0; j < len; j += 4 * KIB)
				memset(b + j + 1638, 0, 4 * KIB - 1638);
		}
		store_an(f, an, af, i, b, len, &res);
		assert_int_equal(res.how, SQ_AN_HOW_COMPRESSED);
		if (res.payoff)
			checks[0] |= 1ull << i;
		if (res.cheap) {
			assert_int_equal(res.codec, SQ_CODEC_LZ4);
			(*cheap)++;
		} else {
			if (*slow_codec < 0)
				*slow_codec = res.codec;
			assert_int_equal(res.codec, *slow_codec);
		}
		free(b);
	}
	sq_an_file_free(af);
}

static void test_payoff(void **state)
{
	struct fixture *f = *state;
	uint64_t checks, cheap;
	int slow;
	struct sq_an *an;

	assert_int_equal(sq_an_new("auto", SQ_AN_POLICY_BALANCED, 0.125, &an),
			 0);
	/* Blocks 0-2 brotli, 3 checks and falls to lz4 for 16 blocks,
	 * 20 checks again, then 32 cheap blocks, 53 checks. */
	payoff_run(f, an, false, &checks, &cheap, &slow);
	assert_int_equal(slow, SQ_CODEC_BROTLI);
	assert_int_equal(checks, (1ull << 3) | (1ull << 20) | (1ull << 53));
	assert_int_equal(cheap, 61);
	/* Text: each check pays, the gaps double, brotli throughout. */
	payoff_run(f, an, true, &checks, &cheap, &slow);
	assert_int_equal(slow, SQ_CODEC_BROTLI);
	assert_int_equal(checks, (1ull << 3) | (1ull << 11) | (1ull << 27) |
				 (1ull << 59));
	assert_int_equal(cheap, 0);
	sq_an_free(an);

	/* The fast policy has nothing cheaper to fall to: no checks. */
	assert_int_equal(sq_an_new("auto", SQ_AN_POLICY_FAST, 0.125, &an), 0);
	payoff_run(f, an, false, &checks, &cheap, &slow);
	assert_int_equal(checks, 0);
	assert_int_equal(cheap, 0);
	assert_int_equal(slow, SQ_CODEC_LZ4);
	sq_an_free(an);
}

/* Acceptance 1: each synthetic block lands in its class and policy. */
static void test_classes(void **state)
{
	const size_t len = 128 * KIB;
	struct fixture *f = *state;
	struct {
		const char *what;
		unsigned char *data;
		int cls, codec, level;
	} c[] = {
		{ "zeros", calloc(1, len), SQ_AN_CLASS_ZERO, SQ_CODEC_NONE,
		  0 },
		{ "random", gen_random(len, 10), SQ_AN_CLASS_RANDOM,
		  SQ_CODEC_NONE, 0 },
		{ "text", gen_text(len, 11), SQ_AN_CLASS_TEXT, SQ_CODEC_BROTLI,
		  5 },
		{ "json", gen_json(len, 12), SQ_AN_CLASS_STRUCTURED,
		  SQ_CODEC_BROTLI, 5 },
		{ "elf", read_exe(len, 0), SQ_AN_CLASS_BINARY,
		  SQ_CODEC_BROTLI, 5 },
		{ "gzip", gen_gzip(len, 13), SQ_AN_CLASS_COMPRESSED,
		  SQ_CODEC_NONE, 0 },
		{ "png", gen_media(len, png_head, sizeof(png_head), 14),
		  SQ_AN_CLASS_COMPRESSED, SQ_CODEC_NONE, 0 },
		{ "jpeg", gen_media(len, jpeg_head, sizeof(jpeg_head), 15),
		  SQ_AN_CLASS_COMPRESSED, SQ_CODEC_NONE, 0 },
		{ "pattern", gen_random(len, 16), SQ_AN_CLASS_BINARY,
		  SQ_CODEC_BROTLI, 5 },
	};
	struct sq_an *an;
	struct sq_an_result res;
	size_t i, j;

	/* A 100-byte random pattern repeated: high entropy, all repeats. */
	for (j = 100; j < len; j++)
		c[8].data[j] = c[8].data[j - 100];
	assert_int_equal(sq_an_new("auto", SQ_AN_POLICY_BALANCED,
				   SQ_AN_MIN_SAVING_DEFAULT, &an), 0);
	for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		struct sq_an_file *af;

		assert_non_null(c[i].data);
		assert_int_equal(sq_an_file_new(&af), 0);
		store_an(f, an, af, 0, c[i].data, len, &res);
		if (res.cls != c[i].cls)
			fail_msg("%s: class %s, wanted %s", c[i].what,
				 sq_an_class_name(res.cls),
				 sq_an_class_name(c[i].cls));
		assert_int_equal(res.zero, c[i].cls == SQ_AN_CLASS_ZERO);
		if (c[i].codec == SQ_CODEC_NONE) {
			/* Raw or a hole without running any codec. */
			assert_int_equal(res.codec, SQ_CODEC_NONE);
			assert_int_equal(res.ns_codec, 0);
			assert_false(res.trial);
		} else {
			assert_int_equal(res.how, SQ_AN_HOW_COMPRESSED);
			assert_int_equal(res.codec, c[i].codec);
			assert_int_equal(res.level, c[i].level);
			assert_true(res.len <= len - len / 8);
		}
		sq_an_file_free(af);
		free(c[i].data);
	}
	sq_an_free(an);
}

/* Each policy's row for text and binary; the table can be rewritten. */
static void test_policies(void **state)
{
	static const struct {
		enum sq_an_policy p;
		int text_codec, text_level, bin_codec;
	} want[] = {
		{ SQ_AN_POLICY_FAST, SQ_CODEC_ZSTD, 1, SQ_CODEC_LZ4 },
		{ SQ_AN_POLICY_BALANCED, SQ_CODEC_BROTLI, 5, SQ_CODEC_BROTLI },
		{ SQ_AN_POLICY_MAX, SQ_CODEC_BROTLI, 11, SQ_CODEC_BROTLI },
	};
	struct fixture *f = *state;
	unsigned char *t = gen_text(64 * KIB, 20);
	unsigned char *b = read_exe(64 * KIB, 0);
	struct sq_an_result res;
	struct sq_an *an;
	int codec, level;
	size_t i;

	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_int_equal(sq_an_new("auto", want[i].p, 0.125, &an), 0);
		store_an(f, an, NULL, 0, t, 64 * KIB, &res);
		assert_int_equal(res.cls, SQ_AN_CLASS_TEXT);
		assert_int_equal(res.codec, want[i].text_codec);
		assert_int_equal(res.level, want[i].text_level);
		store_an(f, an, NULL, 0, b, 64 * KIB, &res);
		assert_int_equal(res.cls, SQ_AN_CLASS_BINARY);
		assert_int_equal(res.codec, want[i].bin_codec);
		sq_an_free(an);
	}

	assert_int_equal(sq_an_new("auto", SQ_AN_POLICY_BALANCED, 0.125, &an),
			 0);
	assert_int_equal(sq_an_policy_set(an, SQ_AN_CLASS_TEXT, SQ_CODEC_LZ4,
					  3), 0);
	assert_int_equal(sq_an_policy_get(an, SQ_AN_CLASS_TEXT, &codec,
					  &level), 0);
	assert_int_equal(codec, SQ_CODEC_LZ4);
	assert_int_equal(level, 3);
	store_an(f, an, NULL, 0, t, 64 * KIB, &res);
	assert_int_equal(res.codec, SQ_CODEC_LZ4);
	assert_int_equal(res.level, 3);
	/* Text to raw: no codec runs at all. */
	assert_int_equal(sq_an_policy_set(an, SQ_AN_CLASS_TEXT, SQ_CODEC_NONE,
					  0), 0);
	store_an(f, an, NULL, 0, t, 64 * KIB, &res);
	assert_int_equal(res.how, SQ_AN_HOW_REJECTED);
	assert_int_equal(res.ns_codec, 0);
	/* Zero blocks are always holes; bad codecs and levels. */
	assert_int_equal(sq_an_policy_set(an, SQ_AN_CLASS_ZERO, SQ_CODEC_LZ4,
					  1), -EINVAL);
	assert_int_equal(sq_an_policy_set(an, SQ_AN_CLASS_UNKNOWN,
					  SQ_CODEC_LZ4, 1), -EINVAL);
	assert_int_equal(sq_an_policy_set(an, SQ_AN_CLASS_COUNT,
					  SQ_CODEC_LZ4, 1), -EINVAL);
	assert_int_equal(sq_an_policy_set(an, SQ_AN_CLASS_TEXT, SQ_CODEC_ZSTD,
					  99), -EINVAL);
	assert_int_equal(sq_an_policy_set(an, SQ_AN_CLASS_TEXT,
					  SQ_CODEC_COUNT, 1), -EINVAL);
	assert_int_equal(sq_an_policy_set(an, SQ_AN_CLASS_TEXT, SQ_CODEC_NONE,
					  1), -EINVAL);
	sq_an_free(an);
	free(t);
	free(b);
}

/* A gzip header does not make a text file's later blocks raw. */
static void test_prior_not_sticky(void **state)
{
	const size_t len = 64 * KIB;
	struct fixture *f = *state;
	unsigned char *gz = gen_gzip(len, 30), *t = gen_text(len, 31);
	struct sq_an_file *af;
	struct sq_an_result res;
	struct sq_an *an;

	assert_int_equal(sq_an_new("auto", SQ_AN_POLICY_BALANCED, 0.125, &an),
			 0);
	assert_int_equal(sq_an_file_new(&af), 0);
	assert_int_equal(sq_an_file_prior(af), SQ_AN_CLASS_UNKNOWN);
	store_an(f, an, af, 0, gz, len, &res);
	assert_int_equal(sq_an_file_prior(af), SQ_AN_CLASS_COMPRESSED);
	assert_int_equal(res.codec, SQ_CODEC_NONE);
	store_an(f, an, af, 1, t, len, &res);
	assert_int_equal(res.cls, SQ_AN_CLASS_TEXT);
	assert_int_equal(res.how, SQ_AN_HOW_COMPRESSED);
	/* Rewriting block 0 with text drops the prior. */
	store_an(f, an, af, 0, t, len, &res);
	assert_int_equal(sq_an_file_prior(af), SQ_AN_CLASS_UNKNOWN);
	sq_an_file_free(af);
	sq_an_free(an);
	free(gz);
	free(t);
}

/*
 * Blocks whose sample looks random but which repeat at a long distance
 * (a 40000-byte random run, three times per block): sampling misses the
 * repeats, a trial finds them, and the file recovers.
 */
static void test_trials_recover(void **state)
{
	const size_t len = 128 * KIB, period = 40000;
	struct fixture *f = *state;
	unsigned char *b = gen_random(len, 40);
	struct sq_an_file *af;
	struct sq_an_result res;
	struct sq_an_stats st;
	struct sq_an *an;
	uint64_t i, first_trial = 0, compressed = 0;
	size_t j;

	for (j = period; j < len; j++)
		b[j] = b[j - period];
	assert_int_equal(sq_an_new("auto", SQ_AN_POLICY_BALANCED, 0.125, &an),
			 0);
	assert_int_equal(sq_an_file_new(&af), 0);
	for (i = 0; i < 4 * SQ_AN_TRIAL_FIRST; i++) {
		store_an(f, an, af, i, b, len, &res);
		if (res.how == SQ_AN_HOW_COMPRESSED)
			compressed++;
		if (res.trial && !first_trial)
			first_trial = i + 1;
	}
	/* The sample alone sends the block raw ... */
	assert_int_equal(first_trial, SQ_AN_TRIAL_FIRST);
	/* ... and after a paying trial every SQ_AN_TRIAL_FIRST-th is tried. */
	assert_int_equal(compressed, 4);
	sq_an_file_stats_get(af, &st);
	assert_int_equal(st.cls[SQ_AN_CLASS_RANDOM].trials, 4);
	assert_int_equal(st.cls[SQ_AN_CLASS_RANDOM].trial_hits, 4);
	assert_int_equal(st.cls[SQ_AN_CLASS_RANDOM].rejected,
			 4 * SQ_AN_TRIAL_FIRST - 4);
	sq_an_file_free(af);

	/* Truly random blocks: trials back off. */
	assert_int_equal(sq_an_file_new(&af), 0);
	for (i = 0; i < 200; i++) {
		unsigned char *r = gen_random(16 * KIB, 100 + i);

		store_an(f, an, af, i, r, 16 * KIB, &res);
		assert_int_equal(res.codec, SQ_CODEC_NONE);
		free(r);
	}
	sq_an_file_stats_get(af, &st);
	/* Trials at skipped blocks 8, 16, 32, 64 and 128 after each. */
	assert_int_equal(st.cls[SQ_AN_CLASS_RANDOM].trials, 4);
	assert_int_equal(st.cls[SQ_AN_CLASS_RANDOM].trial_hits, 0);
	sq_an_file_free(af);
	sq_an_free(an);
	free(b);
}

struct trace_log {
	int calls;
	uint64_t last_idx;
	int last_cls;
};

static void trace_cb(void *arg, const struct sq_an_file *af,
		     uint64_t block_idx, const struct sq_an_result *res)
{
	struct trace_log *t = arg;

	(void)af;
	t->calls++;
	t->last_idx = block_idx;
	t->last_cls = res->cls;
}

/* Every decision is counted, per mount and per file, and traced. */
static void test_stats(void **state)
{
	const size_t len = 32 * KIB;
	struct fixture *f = *state;
	unsigned char *t = gen_text(len, 50), *r = gen_random(len, 51);
	unsigned char *z = calloc(1, len);
	struct trace_log tl = { 0, 0, -1 };
	struct sq_an_file *af;
	struct sq_an_result res, last;
	struct sq_an_stats st, fst;
	struct sq_an *an;
	uint64_t idx, text_out;

	assert_non_null(z);
	assert_int_equal(sq_an_new("auto", SQ_AN_POLICY_BALANCED, 0.125, &an),
			 0);
	sq_an_set_trace(an, trace_cb, &tl);
	assert_int_equal(sq_an_file_new(&af), 0);
	assert_false(sq_an_file_last(af, NULL, NULL));
	store_an(f, an, af, 0, t, len, &res);
	text_out = res.len;
	store_an(f, an, af, 1, r, len, &res);
	store_an(f, an, af, 2, z, len, &res);
	store_an(f, an, NULL, 7, t, len, &res);

	sq_an_stats_get(an, &st);
	assert_int_equal(st.cls[SQ_AN_CLASS_TEXT].blocks, 2);
	assert_int_equal(st.cls[SQ_AN_CLASS_TEXT].bytes_in, 2 * len);
	assert_int_equal(st.cls[SQ_AN_CLASS_TEXT].bytes_out, 2 * text_out);
	assert_int_equal(st.cls[SQ_AN_CLASS_TEXT].codec_runs, 2);
	assert_int_equal(st.cls[SQ_AN_CLASS_RANDOM].blocks, 1);
	assert_int_equal(st.cls[SQ_AN_CLASS_RANDOM].rejected, 1);
	assert_int_equal(st.cls[SQ_AN_CLASS_RANDOM].bytes_out, len);
	assert_int_equal(st.cls[SQ_AN_CLASS_RANDOM].codec_runs, 0);
	assert_int_equal(st.cls[SQ_AN_CLASS_ZERO].blocks, 1);
	assert_int_equal(st.cls[SQ_AN_CLASS_ZERO].bytes_out, 0);
	assert_int_equal(st.codec[SQ_CODEC_BROTLI].blocks, 2);
	assert_int_equal(st.codec[SQ_CODEC_NONE].blocks, 2);
	assert_true(st.cls[SQ_AN_CLASS_TEXT].ns_codec > 0);
	assert_true(st.cls[SQ_AN_CLASS_RANDOM].ns_analysis > 0);

	sq_an_file_stats_get(af, &fst);
	assert_int_equal(fst.cls[SQ_AN_CLASS_TEXT].blocks, 1);
	assert_int_equal(fst.cls[SQ_AN_CLASS_RANDOM].blocks, 1);
	assert_int_equal(fst.cls[SQ_AN_CLASS_ZERO].blocks, 1);
	assert_true(sq_an_file_last(af, &idx, &last));
	assert_int_equal(idx, 2);
	assert_true(last.zero);
	assert_int_equal(last.cls, SQ_AN_CLASS_ZERO);

	assert_int_equal(tl.calls, 4);
	assert_int_equal(tl.last_idx, 7);
	assert_int_equal(tl.last_cls, SQ_AN_CLASS_TEXT);
	sq_an_file_stats_get(NULL, &fst);
	assert_int_equal(fst.cls[SQ_AN_CLASS_TEXT].blocks, 0);
	sq_an_file_free(af);
	sq_an_file_free(NULL);
	sq_an_free(an);
	free(t);
	free(r);
	free(z);
}

static void test_features(void **state)
{
	const size_t len = 64 * KIB;
	unsigned char *r = gen_random(len, 60), *t = gen_text(len, 61);
	unsigned char *j = gen_json(len, 62);
	struct sq_an_features ft;

	(void)state;
	sq_an_features(r, len, &ft);
	assert_true(ft.sample_len > 0 && ft.sample_len <= len / 8);
	assert_true(ft.entropy > 7.8);
	assert_true(ft.repeat < 0.01);
	assert_true(ft.distinct > 200);
	assert_true(ft.text < 0.5);
	sq_an_features(t, len, &ft);
	assert_true(ft.entropy < 5.0);
	assert_true(ft.repeat > 0.3);
	assert_true(ft.text > 0.99);
	assert_int_equal(ft.hints & SQ_AN_HINT_JSON, 0);
	sq_an_features(j, len, &ft);
	assert_true(ft.hints & SQ_AN_HINT_JSON);
	/* Small blocks, down to one byte. */
	sq_an_features(t, 1, &ft);
	assert_int_equal(ft.sample_len, 1);
	sq_an_features(t, 0, &ft);
	assert_int_equal(ft.sample_len, 0);
	/* Magic bytes. */
	assert_int_equal(sq_an_magic_class("SQLite format 3", 16),
			 SQ_AN_CLASS_DATABASE);
	assert_int_equal(sq_an_magic_class("\x7f" "ELF", 4),
			 SQ_AN_CLASS_BINARY);
	assert_int_equal(sq_an_magic_class("\x28\xb5\x2f\xfd", 4),
			 SQ_AN_CLASS_COMPRESSED);
	assert_int_equal(sq_an_magic_class("\0\0\0\x20" "ftypisom", 12),
			 SQ_AN_CLASS_COMPRESSED);
	assert_int_equal(sq_an_magic_class("PK\x03", 3), SQ_AN_CLASS_UNKNOWN);
	assert_int_equal(sq_an_magic_class("hello", 5), SQ_AN_CLASS_UNKNOWN);
	free(r);
	free(t);
	free(j);
}

/* SQLite pages: the header sets the prior, page structure the class. */
static void test_database(void **state)
{
	const size_t len = 64 * KIB, page = 4096;
	struct fixture *f = *state;
	unsigned char *db = gen_text(len, 70);
	struct sq_an_file *af;
	struct sq_an_result res;
	struct sq_an *an;
	size_t off;

	/* Leaf table pages: type 13, a few cells, content near the end. */
	for (off = 0; off < len; off += page) {
		unsigned char *pg = db + off + (off ? 0 : 100);

		memset(pg, 0, 12);
		pg[0] = 13;
		pg[4] = 20;
		pg[5] = 0x08;
		memset(pg + 12, 0x0f, 40);
	}
	memcpy(db, "SQLite format 3\0\x10\x00\x01\x01", 20);
	assert_int_equal(sq_an_new("auto", SQ_AN_POLICY_BALANCED, 0.125, &an),
			 0);
	assert_int_equal(sq_an_file_new(&af), 0);
	store_an(f, an, af, 0, db, len, &res);
	assert_int_equal(sq_an_file_prior(af), SQ_AN_CLASS_DATABASE);
	/* Mostly text cells still count as text, but binary-looking pages
	 * of a database are database pages. */
	memset(db + 200, 0x81, len - 400);
	for (off = page; off < len; off += page) {
		memset(db + off, 0, 12);
		db[off] = 13;
	}
	store_an(f, an, af, 1, db, len, &res);
	assert_int_equal(res.cls, SQ_AN_CLASS_DATABASE);
	assert_int_equal(res.how, SQ_AN_HOW_COMPRESSED);
	/* Without the header, the page structure alone. */
	store_an(f, an, NULL, 1, db, len, &res);
	assert_int_equal(res.cls, SQ_AN_CLASS_DATABASE);
	sq_an_file_free(af);
	sq_an_free(an);
	free(db);
}

static void test_parse(void **state)
{
	static const char *const bad[] = { "", "x", "0.95", "91%", "-0.1",
					   "0.1x", "%", "nan", "inf", " 0.1",
					   "1" };
	enum sq_an_policy p;
	double v;
	size_t i;

	(void)state;
	assert_int_equal(sq_an_parse_saving("12.5%", &v), 0);
	assert_true(v > 0.1249 && v < 0.1251);
	assert_int_equal(sq_an_parse_saving("0.2", &v), 0);
	assert_true(v > 0.1999 && v < 0.2001);
	assert_int_equal(sq_an_parse_saving("0", &v), 0);
	assert_true(v == 0.0);
	assert_int_equal(sq_an_parse_saving("90%", &v), 0);
	assert_int_equal(sq_an_parse_saving("0.9", &v), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sq_an_parse_saving(bad[i], &v), -EINVAL);
	assert_int_equal(sq_an_parse_saving(NULL, &v), -EINVAL);
	assert_int_equal(sq_an_policy_parse("fast", &p), 0);
	assert_int_equal(p, SQ_AN_POLICY_FAST);
	assert_int_equal(sq_an_policy_parse("max", &p), 0);
	assert_int_equal(p, SQ_AN_POLICY_MAX);
	assert_int_equal(sq_an_policy_parse("balanced", &p), 0);
	assert_int_equal(p, SQ_AN_POLICY_BALANCED);
	assert_int_equal(sq_an_policy_parse("Fast", &p), -EINVAL);
	assert_int_equal(sq_an_policy_parse("", &p), -EINVAL);
	assert_int_equal(sq_an_policy_parse(NULL, &p), -EINVAL);
	assert_string_equal(sq_an_policy_name(SQ_AN_POLICY_MAX), "max");
	assert_string_equal(sq_an_class_name(SQ_AN_CLASS_RANDOM), "random");
	assert_string_equal(sq_an_class_name(-1), "?");
	assert_string_equal(sq_an_class_name(SQ_AN_CLASS_COUNT), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_zero, setup, teardown),
		cmocka_unit_test_setup_teardown(test_random_raw, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_text_auto, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_forced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threshold, setup,
						teardown),
		cmocka_unit_test(test_bad_spec),
		cmocka_unit_test(test_is_zero),
		cmocka_unit_test_setup_teardown(test_classes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_policies, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_prior_not_sticky, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_trials_recover, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
		cmocka_unit_test(test_features),
		cmocka_unit_test_setup_teardown(test_database, setup,
						teardown),
		cmocka_unit_test(test_parse),
		cmocka_unit_test_setup_teardown(test_payoff, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
