/*
 * tests/unit/test_analyzer.c - the storage policy: holes for zero blocks,
 * raw for incompressible ones, the auto and forced codecs, the min_saving
 * threshold to the byte, and sq_an_is_zero() at every length and offset.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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
	assert_int_equal(res.codec, SQ_CODEC_ZSTD);
	assert_int_equal(res.level, 6);
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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
