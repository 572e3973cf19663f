/*
 * tests/unit/test_pack.c - pack references and pack headers (meta/pack.h,
 * docs/FORMAT.md section 13): byte layout, round trips, every rejection
 * of a reference read from disk, where sq_pack_place() puts images, and
 * the pack index's records (13.7).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "meta/pack.h"

/* A valid reference: image of 900 bytes in the first page after the pack
 * header. */
static const struct sq_pack_ref good = {
	.pack = 1, .len = 900, .off = 16, .size = 4321,
	.sum = UINT64_C(0x0123456789abcdef),
};

static void put32(uint8_t *p, uint32_t v)
{
	for (int k = 0; k < 4; k++)
		p[k] = (uint8_t)(v >> (8 * k));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int k = 0; k < 8; k++)
		p[k] = (uint8_t)(v >> (8 * k));
}

static void assert_ref_equal(const struct sq_pack_ref *a,
			     const struct sq_pack_ref *b)
{
	assert_int_equal(a->pack, b->pack);
	assert_int_equal(a->len, b->len);
	assert_int_equal(a->off, b->off);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->sum, b->sum);
}

/* Encodes @r and decodes it again; returns what decode returned. */
static int reencode(const struct sq_pack_ref *r)
{
	uint8_t buf[SQ_PACK_REF_LEN];
	struct sq_pack_ref out;

	sq_pack_ref_encode(r, buf);
	return sq_pack_ref_decode(buf, sizeof(buf), &out);
}

static void test_ref_layout(void **state)
{
	/* The 40 bytes of section 13.1, written out by hand. */
	static const uint8_t want[SQ_PACK_REF_LEN] = {
		'S', 'Q', 'P', 'K',			/* magic */
		0x01, 0x00, 0x00, 0x00,			/* version 1 */
		0x01, 0x00, 0x00, 0x00,			/* pack 1 */
		0x84, 0x03, 0x00, 0x00,			/* len 900 */
		0x10, 0, 0, 0, 0, 0, 0, 0,		/* off 16 */
		0xe1, 0x10, 0, 0, 0, 0, 0, 0,		/* size 4321 */
		0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, /* sum */
	};
	uint8_t buf[SQ_PACK_REF_LEN];

	(void)state;
	memset(buf, 0xa5, sizeof(buf));
	sq_pack_ref_encode(&good, buf);
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(SQ_PACK_REF_LEN, 40);
	assert_string_equal(SQ_PACK_XATTR, "trusted.squeezefs.packed");
}

static void test_ref_roundtrip(void **state)
{
	/* Extremes of every field that a valid reference can hold. */
	static const struct sq_pack_ref refs[] = {
		{ 1, 900, 16, 4321, UINT64_C(0x0123456789abcdef) },
		{ 1, 1, 16, 0, 0 },
		{ SQ_PACK_ID_MAX, 3072, 4096, UINT64_MAX, UINT64_MAX },
		{ 7, 3072, 1024, 1, 1 },	/* ends at 4095 exactly */
		{ 2, 1, 4095, 5, 6 },		/* last byte of page 0 */
		{ 3, 1, UINT64_MAX, 7, 8 },	/* last byte of all */
	};
	uint8_t buf[SQ_PACK_REF_LEN];
	struct sq_pack_ref out;

	(void)state;
	for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
		sq_pack_ref_encode(&refs[i], buf);
		memset(&out, 0, sizeof(out));
		assert_int_equal(sq_pack_ref_decode(buf, sizeof(buf), &out), 0);
		assert_ref_equal(&out, &refs[i]);
	}
}

static void test_ref_bad_bytes(void **state)
{
	static const uint32_t versions[] = { 0, 2, 0x01000001 };
	uint8_t buf[SQ_PACK_REF_LEN + 1];
	struct sq_pack_ref out;

	(void)state;
	sq_pack_ref_encode(&good, buf);
	assert_int_equal(sq_pack_ref_decode(buf, SQ_PACK_REF_LEN, &out), 0);

	/* Any length but 40, shorter or longer. */
	assert_int_equal(sq_pack_ref_decode(buf, 0, &out), -EBADMSG);
	assert_int_equal(sq_pack_ref_decode(buf, SQ_PACK_REF_LEN - 1, &out),
			 -EBADMSG);
	buf[SQ_PACK_REF_LEN] = 0;
	assert_int_equal(sq_pack_ref_decode(buf, SQ_PACK_REF_LEN + 1, &out),
			 -EBADMSG);

	/* Each byte of the magic. */
	for (int k = 0; k < 4; k++) {
		sq_pack_ref_encode(&good, buf);
		buf[k] ^= 0x20;
		assert_int_equal(sq_pack_ref_decode(buf, SQ_PACK_REF_LEN,
						    &out), -EBADMSG);
	}

	/* Versions 0, 2 and 1 with a high byte set. */
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		sq_pack_ref_encode(&good, buf);
		put32(buf + 4, versions[i]);
		assert_int_equal(sq_pack_ref_decode(buf, SQ_PACK_REF_LEN,
						    &out), -EBADMSG);
	}
}

static void test_ref_bad_fields(void **state)
{
	struct sq_pack_ref r;

	(void)state;
	r = good;
	r.pack = 0;
	assert_int_equal(reencode(&r), -EBADMSG);
	/* Ids a reader would size its tables by are bounded. */
	r.pack = SQ_PACK_ID_MAX + 1;
	assert_int_equal(reencode(&r), -EBADMSG);
	r.pack = UINT32_MAX;
	assert_int_equal(reencode(&r), -EBADMSG);

	r = good;
	r.len = 0;
	assert_int_equal(reencode(&r), -EBADMSG);
	r.len = SQ_PACK_IMAGE_MAX + 1;		/* 3073 */
	assert_int_equal(reencode(&r), -EBADMSG);
	r.len = UINT32_MAX;
	assert_int_equal(reencode(&r), -EBADMSG);
	r.len = SQ_PACK_IMAGE_MAX;		/* 3072 is still fine */
	assert_int_equal(reencode(&r), 0);

	/* Overlapping the 16-byte pack header. */
	r = good;
	for (r.off = 0; r.off < SQ_PACK_HDR_LEN; r.off++)
		assert_int_equal(reencode(&r), -EBADMSG);
	assert_int_equal(reencode(&r), 0);	/* off 16 */

	/* Crossing a page boundary by one byte, at several pages. */
	r = good;
	r.len = 2;
	r.off = 4095;
	assert_int_equal(reencode(&r), -EBADMSG);
	r.off = 4094;
	assert_int_equal(reencode(&r), 0);
	r.len = SQ_PACK_IMAGE_MAX;
	r.off = 4096 - SQ_PACK_IMAGE_MAX + 1;	/* 1025: ends at 4096 */
	assert_int_equal(reencode(&r), -EBADMSG);
	r.off = 4096 - SQ_PACK_IMAGE_MAX;	/* 1024: ends at 4095 */
	assert_int_equal(reencode(&r), 0);
	r.off = UINT64_C(5) * 4096 + 2000;	/* 2000 + 3072 > 4096 */
	assert_int_equal(reencode(&r), -EBADMSG);
	r.off = UINT64_C(5) * 4096;
	assert_int_equal(reencode(&r), 0);

	/* An image past the end of the offset space wraps around; it is no
	 * valid reference either. */
	r.len = 3;
	r.off = UINT64_MAX - 1;
	assert_int_equal(reencode(&r), -EBADMSG);
}

static void test_hdr(void **state)
{
	static const uint8_t want[SQ_PACK_HDR_LEN] = {
		'S', 'Q', 'Z', 'P', 'A', 'C', 'K', '\n',
		0x01, 0x00, 0x00, 0x00,			/* version 1 */
		0x2a, 0x01, 0x00, 0x00,			/* id 0x12a */
	};
	uint8_t buf[SQ_PACK_HDR_LEN + 8];

	(void)state;
	memset(buf, 0xa5, sizeof(buf));
	sq_pack_hdr_encode(0x12a, buf);
	assert_memory_equal(buf, want, SQ_PACK_HDR_LEN);
	assert_int_equal(buf[SQ_PACK_HDR_LEN], 0xa5);	/* nothing more */

	assert_int_equal(sq_pack_hdr_check(buf, SQ_PACK_HDR_LEN, 0x12a), 0);
	/* Longer buffers are fine: the first page of a pack, say. */
	assert_int_equal(sq_pack_hdr_check(buf, sizeof(buf), 0x12a), 0);

	/* Another pack's header (a pack file renamed or copied). */
	assert_int_equal(sq_pack_hdr_check(buf, SQ_PACK_HDR_LEN, 0x12b),
			 -EBADMSG);
	assert_int_equal(sq_pack_hdr_check(buf, SQ_PACK_HDR_LEN, 0),
			 -EBADMSG);

	/* Short: a pack cut inside its header, or empty. */
	assert_int_equal(sq_pack_hdr_check(buf, SQ_PACK_HDR_LEN - 1, 0x12a),
			 -EBADMSG);
	assert_int_equal(sq_pack_hdr_check(buf, 0, 0x12a), -EBADMSG);

	/* Each byte of the magic, and the version. */
	for (int k = 0; k < 8; k++) {
		sq_pack_hdr_encode(0x12a, buf);
		buf[k] ^= 0x01;
		assert_int_equal(sq_pack_hdr_check(buf, SQ_PACK_HDR_LEN,
						   0x12a), -EBADMSG);
	}
	sq_pack_hdr_encode(0x12a, buf);
	put32(buf + 8, 2);
	assert_int_equal(sq_pack_hdr_check(buf, SQ_PACK_HDR_LEN, 0x12a),
			 -EBADMSG);
	put32(buf + 8, 0);
	assert_int_equal(sq_pack_hdr_check(buf, SQ_PACK_HDR_LEN, 0x12a),
			 -EBADMSG);

	/* A zeroed (hole-punched) header page. */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(sq_pack_hdr_check(buf, SQ_PACK_HDR_LEN, 0x12a),
			 -EBADMSG);

	/* The largest id, all four bytes in little-endian order. */
	sq_pack_hdr_encode(UINT32_MAX - 1, buf);
	assert_int_equal(buf[12], 0xfe);
	assert_int_equal(buf[15], 0xff);
	assert_int_equal(sq_pack_hdr_check(buf, SQ_PACK_HDR_LEN,
					   UINT32_MAX - 1), 0);
}

static void test_image_sum(void **state)
{
	static const char text[] = "squeezefs";
	uint8_t buf[SQ_PACK_REF_LEN];
	struct sq_pack_ref out;

	(void)state;
	/* Section 1: XXH3-64 of nothing. */
	assert_int_equal(sq_pack_image_sum("", 0),
			 UINT64_C(0x2d06800538d394c2));
	assert_int_equal(sq_pack_image_sum(text, sizeof(text) - 1),
			 XXH3_64bits(text, sizeof(text) - 1));
	/* The sum is stored as is, not checked by decode. */
	sq_pack_ref_encode(&good, buf);
	put64(buf + 32, 0);
	assert_int_equal(sq_pack_ref_decode(buf, sizeof(buf), &out), 0);
	assert_int_equal(out.sum, 0);
}

static void test_place(void **state)
{
	(void)state;
	/* Fits: the image goes right at the end. */
	assert_int_equal(sq_pack_place(SQ_PACK_HDR_LEN, 900), 16);
	assert_int_equal(sq_pack_place(916, 3072), 916);
	assert_int_equal(sq_pack_place(8192 + 5, 1), 8192 + 5);

	/* Ends exactly on the last byte of the page: still fits. */
	assert_int_equal(sq_pack_place(4096 - 100, 100), 4096 - 100);
	assert_int_equal(sq_pack_place(4095, 1), 4095);
	assert_int_equal(sq_pack_place(1024, 3072), 1024);

	/* One byte more would cross: the next page. */
	assert_int_equal(sq_pack_place(4096 - 99, 100), 4096);
	assert_int_equal(sq_pack_place(4095, 2), 4096);
	assert_int_equal(sq_pack_place(1025, 3072), 4096);
	assert_int_equal(sq_pack_place(3 * 4096 + 4000, 200), 4 * 4096);

	/* Starting on a page boundary. */
	assert_int_equal(sq_pack_place(4096, 3072), 4096);
	assert_int_equal(sq_pack_place(4096, 1), 4096);
}

/* Every place() answer is a reference that decode accepts, never before
 * the end, and never skips a page it did not have to. */
static void test_place_decodes(void **state)
{
	static const uint32_t lens[] = { 1, 2, 100, 175, 1000, 2048, 3071,
					 3072 };
	struct sq_pack_ref r = good;

	(void)state;
	for (uint64_t end = SQ_PACK_HDR_LEN; end < 3 * 4096; end += 7) {
		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			uint64_t off = sq_pack_place(end, lens[i]);

			assert_true(off >= end);
			assert_true(off - end < lens[i]);
			r.len = lens[i];
			r.off = off;
			assert_int_equal(reencode(&r), 0);
		}
	}
}

/* docs/FORMAT.md 13.6: the reference and pack header, byte for byte. */
static void test_worked_example(void **state)
{
	static const uint8_t xattr[SQ_PACK_REF_LEN] = {
		0x53, 0x51, 0x50, 0x4b, 0x01, 0x00, 0x00, 0x00,
		0x01, 0x00, 0x00, 0x00, 0xaf, 0x00, 0x00, 0x00,
		0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x43, 0x9c, 0x58, 0x3d, 0x52, 0xb6, 0x1b,
	};
	static const uint8_t hdr[SQ_PACK_HDR_LEN] = {
		0x53, 0x51, 0x5a, 0x50, 0x41, 0x43, 0x4b, 0x0a,
		0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
	};
	const struct sq_pack_ref ref = {
		.pack = 1, .len = 175, .off = 16, .size = 1,
		.sum = UINT64_C(0x1bb6523d589c4300),
	};
	uint8_t buf[SQ_PACK_REF_LEN];
	struct sq_pack_ref out;

	(void)state;
	assert_int_equal(sq_pack_place(SQ_PACK_HDR_LEN, 175), 16);
	sq_pack_ref_encode(&ref, buf);
	assert_memory_equal(buf, xattr, sizeof(xattr));
	assert_int_equal(sq_pack_ref_decode(xattr, sizeof(xattr), &out), 0);
	assert_ref_equal(&out, &ref);
	sq_pack_hdr_encode(1, buf);
	assert_memory_equal(buf, hdr, sizeof(hdr));
}

static void make_idx(struct sq_pack_idx *x, const char *path)
{
	memset(x, 0, sizeof(*x));
	x->ref = good;
	x->mtime_sec = 1700000000;
	x->mtime_nsec = 123456789;
	x->path = path;
	x->path_len = (uint32_t)strlen(path);
}

static void test_idx_roundtrip(void **state)
{
	static uint8_t buf[SQ_PACK_IDX_MAX + 16];
	struct sq_pack_idx x, y;
	int n;

	(void)state;
	make_idx(&x, "photos/2024/a b.txt");
	n = sq_pack_idx_encode(&x, buf);
	assert_int_equal(n, SQ_PACK_IDX_FIXED + 19 + 8);
	assert_memory_equal(buf, SQ_PACK_IDX_MAGIC, 4);
	assert_int_equal(buf[4], n);
	/* Trailing bytes (the next record) do not matter. */
	assert_int_equal(sq_pack_idx_decode(buf, sizeof(buf), &y), n);
	assert_ref_equal(&y.ref, &x.ref);
	assert_int_equal(y.mtime_sec, x.mtime_sec);
	assert_int_equal(y.mtime_nsec, x.mtime_nsec);
	assert_int_equal(y.path_len, x.path_len);
	assert_memory_equal(y.path, x.path, x.path_len);
	assert_ptr_equal(y.path, (const char *)buf + SQ_PACK_IDX_FIXED);
}

static void test_idx_rejects(void **state)
{
	static uint8_t buf[SQ_PACK_IDX_MAX], bad[SQ_PACK_IDX_MAX];
	static char longp[SQ_PACK_IDX_PATH_MAX + 2];
	struct sq_pack_idx x, y;
	int n;

	(void)state;
	make_idx(&x, "dir/file");
	n = sq_pack_idx_encode(&x, buf);
	assert_true(n > 0);
	/* Cut anywhere: a torn append. */
	for (int k = 0; k < n; k++)
		assert_int_equal(sq_pack_idx_decode(buf, (size_t)k, &y),
				 -EBADMSG);
	/* Any byte flipped: the sum or a field check catches it. */
	for (int k = 0; k < n; k++) {
		memcpy(bad, buf, (size_t)n);
		bad[k] ^= 0x40;
		assert_int_equal(sq_pack_idx_decode(bad, (size_t)n, &y),
				 -EBADMSG);
	}
	/* Paths that cannot name a file below BACKING. */
	make_idx(&x, "/etc/passwd");
	n = sq_pack_idx_encode(&x, buf);
	assert_int_equal(sq_pack_idx_decode(buf, (size_t)n, &y), -EBADMSG);
	make_idx(&x, "a\0b");
	x.path_len = 3;
	n = sq_pack_idx_encode(&x, buf);
	assert_int_equal(sq_pack_idx_decode(buf, (size_t)n, &y), -EBADMSG);
	make_idx(&x, "");
	n = sq_pack_idx_encode(&x, buf);
	assert_int_equal(sq_pack_idx_decode(buf, (size_t)n, &y), -EBADMSG);
	/* A reference that is not valid makes the record invalid. */
	make_idx(&x, "f");
	x.ref.len = 0;
	n = sq_pack_idx_encode(&x, buf);
	assert_int_equal(sq_pack_idx_decode(buf, (size_t)n, &y), -EBADMSG);
	memset(longp, 'a', sizeof(longp) - 1);
	make_idx(&x, longp);
	assert_int_equal(sq_pack_idx_encode(&x, buf), -ENAMETOOLONG);
}

static void test_idx_move(void **state)
{
	static uint8_t buf[SQ_PACK_IDX_MAX], bad[SQ_PACK_IDX_MAX];
	struct sq_pack_idx x = { .move = true }, y;
	int n;

	(void)state;
	x.path = "src/lib";
	x.path_len = 7;
	x.to = "src/library";
	x.to_len = 11;
	n = sq_pack_idx_encode(&x, buf);
	assert_int_equal(n, SQ_PACK_MOVE_FIXED + 7 + 11 + 8);
	assert_memory_equal(buf, SQ_PACK_MOVE_MAGIC, 4);
	assert_int_equal(sq_pack_idx_decode(buf, (size_t)n, &y), n);
	assert_true(y.move);
	assert_int_equal(y.path_len, 7);
	assert_memory_equal(y.path, "src/lib", 7);
	assert_int_equal(y.to_len, 11);
	assert_memory_equal(y.to, "src/library", 11);
	for (int k = 0; k < n; k++) {
		memcpy(bad, buf, (size_t)n);
		bad[k] ^= 0x21;
		assert_int_equal(sq_pack_idx_decode(bad, (size_t)n, &y),
				 -EBADMSG);
	}
	x.to = "/abs";
	x.to_len = 4;
	n = sq_pack_idx_encode(&x, buf);
	assert_int_equal(sq_pack_idx_decode(buf, (size_t)n, &y), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ref_layout),
		cmocka_unit_test(test_ref_roundtrip),
		cmocka_unit_test(test_ref_bad_bytes),
		cmocka_unit_test(test_ref_bad_fields),
		cmocka_unit_test(test_hdr),
		cmocka_unit_test(test_image_sum),
		cmocka_unit_test(test_place),
		cmocka_unit_test(test_place_decodes),
		cmocka_unit_test(test_worked_example),
		cmocka_unit_test(test_idx_roundtrip),
		cmocka_unit_test(test_idx_rejects),
		cmocka_unit_test(test_idx_move),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
