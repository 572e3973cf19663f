/*
 * tests/unit/test_pin.c - codec pins (engine/pin.h): which values are
 * pins, and the analyzers they map to (one per value, kept).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "analyzer/analyzer.h"
#include "codec/codec.h"
#include "engine/pin.h"

static int parse(const char *v, char *spec)
{
	return sq_pin_parse(v, strlen(v), spec);
}

static void test_parse(void **state)
{
	static const char *const good[] = {
		"zstd:19", "zstd", "lz4", "lz4:12", "none", "brotli:11",
		"zlib:1", "zstd:-5", "fast", "balanced", "max",
	};
	static const char *const bad[] = {
		"", "zstd:20", "zstd:", "gzip", "lz4:0", "brotli:12", "fast ",
		" zstd", "auto", "zstd:19x", "max\n\n",
		"zstdzstdzstdzstdzstdzstd:1",
	};
	char spec[SQ_PIN_MAX];

	(void)state;
	for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
		assert_int_equal(parse(good[k], spec), 0);
		assert_string_equal(spec, good[k]);
	}
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
		assert_int_equal(parse(bad[k], spec), -EINVAL);
	/* setfattr -v "$(echo ...)" and echo -n alike */
	assert_int_equal(parse("lz4\n", spec), 0);
	assert_string_equal(spec, "lz4");
	/* a NUL inside the value is no pin */
	assert_int_equal(sq_pin_parse("lz4\0x", 5, spec), -EINVAL);
}

static void test_analyzers(void **state)
{
	struct sq_pins *p;
	const struct sq_an *a, *b, *c;
	int codec, level;

	(void)state;
	assert_int_equal(sq_pins_new(0.125, &p), 0);
	a = sq_pin_an(p, "zstd:19");
	assert_non_null(a);
	/* the same value: the same analyzer */
	assert_ptr_equal(sq_pin_an(p, "zstd:19"), a);
	b = sq_pin_an(p, "max");
	assert_non_null(b);
	assert_ptr_not_equal(a, b);
	/* a policy pin has its policy's table */
	assert_int_equal(sq_an_policy_get(b, SQ_AN_CLASS_TEXT, &codec,
					  &level), 0);
	assert_int_equal(codec, SQ_CODEC_BROTLI);
	assert_int_equal(level, 11);
	c = sq_pin_an(p, "fast");
	assert_int_equal(sq_an_policy_get(c, SQ_AN_CLASS_TEXT, &codec,
					  &level), 0);
	assert_int_equal(codec, SQ_CODEC_ZSTD);
	assert_null(sq_pin_an(p, "bogus"));
	assert_null(sq_pin_an(NULL, "lz4"));
	sq_pins_free(p);
	sq_pins_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_analyzers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
