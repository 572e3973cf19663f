/*
 * tests/unit/test_cache.c - the block cache (engine/cache.h): LRU eviction
 * order, the reserved budget, take, drop, replacing an entry, the valid
 * bytes of a block, and the buffer pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/cache.h"

#define BS 4096u		/* a malloc'd block size */
#define BIG (128u << 10)	/* a mapped one */

/* The byte block (@serial, @idx) is filled with. */
static uint8_t pat(uint64_t serial, uint64_t idx)
{
	return (uint8_t)(0x11 * serial + 7 * idx + 1);
}

/* Puts block (@serial, @idx), @bsize bytes filled with its pattern, all
 * of them valid. */
static void put_block(struct sq_cache *c, uint64_t serial, uint64_t idx,
		      size_t bsize)
{
	uint8_t *b = sq_cache_buf_get(c, bsize);

	assert_non_null(b);
	memset(b, pat(serial, idx), bsize);
	sq_cache_put(c, serial, idx, b, bsize, bsize);
}

/* Whether block (@serial, @idx) is cached; when it is, checks its first
 * and last bytes.  Makes it the most recently used, like any read. */
static bool has(struct sq_cache *c, uint64_t serial, uint64_t idx,
		size_t bsize)
{
	uint8_t got[2] = { 0xee, 0xee };

	if (!sq_cache_read(c, serial, idx, 0, 1, &got[0])) {
		assert_int_equal(got[0], 0xee);	/* a miss copies nothing */
		return false;
	}
	assert_true(sq_cache_read(c, serial, idx, bsize - 1, 1, &got[1]));
	assert_int_equal(got[0], pat(serial, idx));
	assert_int_equal(got[1], pat(serial, idx));
	return true;
}

static void test_lru_evicts_oldest(void **state)
{
	struct sq_cache *c;

	(void)state;
	assert_int_equal(sq_cache_new(4 * BS, NULL, &c), 0);
	for (uint64_t i = 0; i < 4; i++)
		put_block(c, 1, i, BS);
	/* Room for 4: the fifth evicts block 0, put first, never read. */
	put_block(c, 1, 4, BS);
	assert_false(has(c, 1, 0, BS));
	/* Reads in order 1..4 leave 1 the least recently used. */
	for (uint64_t i = 1; i <= 4; i++)
		assert_true(has(c, 1, i, BS));
	put_block(c, 1, 5, BS);
	assert_false(has(c, 1, 1, BS));
	for (uint64_t i = 2; i <= 5; i++)
		assert_true(has(c, 1, i, BS));
	sq_cache_free(c);
}

static void test_read_makes_recent(void **state)
{
	struct sq_cache *c;
	uint8_t b;

	(void)state;
	assert_int_equal(sq_cache_new(4 * BS, NULL, &c), 0);
	for (uint64_t i = 0; i < 4; i++)
		put_block(c, 7, i, BS);
	/* Block 0 is the oldest, but a hit makes it the most recent: block
	 * 1 goes instead. */
	assert_true(sq_cache_read(c, 7, 0, 10, 1, &b));
	assert_int_equal(b, pat(7, 0));
	put_block(c, 7, 4, BS);
	assert_false(has(c, 7, 1, BS));
	/* Now 2 is the oldest; a miss on 1 changes nothing. */
	assert_false(sq_cache_read(c, 7, 1, 0, 1, &b));
	put_block(c, 7, 5, BS);
	assert_false(has(c, 7, 2, BS));
	assert_true(has(c, 7, 0, BS));
	assert_true(has(c, 7, 3, BS));
	assert_true(has(c, 7, 4, BS));
	assert_true(has(c, 7, 5, BS));
	sq_cache_free(c);
}

static void test_reserved(void **state)
{
	atomic_size_t reserved = 0;
	struct sq_cache *c;

	(void)state;
	assert_int_equal(sq_cache_new(4 * BS, &reserved, &c), 0);
	for (uint64_t i = 0; i < 4; i++)
		put_block(c, 2, i, BS);
	for (uint64_t i = 0; i < 4; i++)
		assert_true(has(c, 2, i, BS));	/* LRU order 0..3 again */
	/* Dirty blocks take half the budget: the next put leaves room for
	 * two clean blocks only, the newest. */
	atomic_store(&reserved, 2 * BS);
	put_block(c, 2, 4, BS);
	assert_false(has(c, 2, 0, BS));
	assert_false(has(c, 2, 1, BS));
	assert_false(has(c, 2, 2, BS));
	assert_true(has(c, 2, 3, BS));
	assert_true(has(c, 2, 4, BS));
	/* Nothing is evicted but at an insertion. */
	atomic_store(&reserved, 4 * BS);
	assert_true(has(c, 2, 3, BS));
	assert_true(has(c, 2, 4, BS));
	/* No room at all: the block put goes too. */
	put_block(c, 2, 5, BS);
	assert_false(has(c, 2, 3, BS));
	assert_false(has(c, 2, 4, BS));
	assert_false(has(c, 2, 5, BS));
	/* More reserved than the capacity is no room either. */
	atomic_store(&reserved, 100 * BS);
	put_block(c, 2, 6, BS);
	assert_false(has(c, 2, 6, BS));
	/* And the budget comes back with the reserve gone. */
	atomic_store(&reserved, 0);
	for (uint64_t i = 10; i < 14; i++)
		put_block(c, 2, i, BS);
	for (uint64_t i = 10; i < 14; i++)
		assert_true(has(c, 2, i, BS));
	sq_cache_free(c);
}

static void test_take(void **state)
{
	struct sq_cache *c;
	uint8_t *b, *t, want[BS];

	(void)state;
	assert_int_equal(sq_cache_new(2 * BS, NULL, &c), 0);
	b = sq_cache_buf_get(c, BS);
	assert_non_null(b);
	memset(b, 0x5a, BS);
	/* Only 1000 bytes valid: the taker gets zeros past them. */
	sq_cache_put(c, 3, 9, b, BS, 1000);
	put_block(c, 3, 10, BS);
	t = sq_cache_take(c, 3, 9);
	assert_ptr_equal(t, b);
	memset(want, 0x5a, 1000);
	memset(want + 1000, 0, BS - 1000);
	assert_memory_equal(t, want, BS);
	/* Gone from the cache. */
	assert_null(sq_cache_take(c, 3, 9));
	assert_false(sq_cache_read(c, 3, 9, 0, 1, want));
	assert_null(sq_cache_take(c, 3, 11));
	/* And from its budget: 10 and 12 make two blocks, which fit, so
	 * 10 (the least recent) survives the put of 12. */
	put_block(c, 3, 12, BS);
	assert_true(has(c, 3, 10, BS));
	assert_true(has(c, 3, 12, BS));
	sq_cache_buf_put(c, t, BS);
	sq_cache_free(c);
}

static void test_drop(void **state)
{
	struct sq_cache *c;

	(void)state;
	assert_int_equal(sq_cache_new(16 * BS, NULL, &c), 0);
	for (uint64_t i = 0; i < 6; i++) {
		put_block(c, 1, i, BS);
		put_block(c, 2, i, BS);
	}
	sq_cache_drop(c, 1, 3);
	for (uint64_t i = 0; i < 6; i++) {
		assert_true(has(c, 1, i, BS) == (i < 3));
		assert_true(has(c, 2, i, BS));
	}
	/* The dropped blocks left the budget: 16 - 9 = 7 more fit without
	 * evicting anything. */
	for (uint64_t i = 0; i < 7; i++)
		put_block(c, 3, i, BS);
	for (uint64_t i = 0; i < 3; i++)
		assert_true(has(c, 1, i, BS));
	for (uint64_t i = 0; i < 6; i++)
		assert_true(has(c, 2, i, BS));
	/* From 0: every block of the serial; of an unknown serial: none. */
	sq_cache_drop(c, 2, 0);
	sq_cache_drop(c, 99, 0);
	for (uint64_t i = 0; i < 6; i++)
		assert_false(has(c, 2, i, BS));
	for (uint64_t i = 0; i < 3; i++)
		assert_true(has(c, 1, i, BS));
	for (uint64_t i = 0; i < 7; i++)
		assert_true(has(c, 3, i, BS));
	sq_cache_free(c);
}

static void test_replace(void **state)
{
	struct sq_cache *c;
	uint8_t *b, got[BS];

	(void)state;
	assert_int_equal(sq_cache_new(2 * BS, NULL, &c), 0);
	put_block(c, 4, 0, BS);
	b = sq_cache_buf_get(c, BS);
	assert_non_null(b);
	memset(b, 0xc3, BS);
	sq_cache_put(c, 4, 0, b, BS, BS);
	assert_true(sq_cache_read(c, 4, 0, 0, BS, got));
	for (size_t k = 0; k < BS; k++)
		assert_int_equal(got[k], 0xc3);
	/* The old entry left the budget: one more block fits beside it. */
	put_block(c, 4, 1, BS);
	assert_true(sq_cache_read(c, 4, 0, BS - 1, 1, got));
	assert_int_equal(got[0], 0xc3);
	assert_true(has(c, 4, 1, BS));
	/* And only one entry is there to take. */
	assert_ptr_equal(sq_cache_take(c, 4, 0), b);
	assert_null(sq_cache_take(c, 4, 0));
	sq_cache_buf_put(c, b, BS);
	sq_cache_free(c);
}

static void test_valid(void **state)
{
	struct sq_cache *c;
	uint8_t *b, got[BS], zeros[BS];

	(void)state;
	memset(zeros, 0, sizeof(zeros));
	assert_int_equal(sq_cache_new(4 * BS, NULL, &c), 0);
	b = sq_cache_buf_get(c, BS);
	assert_non_null(b);
	memset(b, 0xaa, BS);		/* garbage past valid */
	sq_cache_put(c, 5, 0, b, BS, 100);

	memset(got, 0x77, sizeof(got));
	assert_true(sq_cache_read(c, 5, 0, 0, BS, got));
	for (size_t k = 0; k < 100; k++)
		assert_int_equal(got[k], 0xaa);
	assert_memory_equal(got + 100, zeros, BS - 100);

	/* Straddling the end of the valid bytes. */
	memset(got, 0x77, sizeof(got));
	assert_true(sq_cache_read(c, 5, 0, 50, 100, got));
	for (size_t k = 0; k < 50; k++)
		assert_int_equal(got[k], 0xaa);
	assert_memory_equal(got + 50, zeros, 50);
	assert_int_equal(got[100], 0x77);	/* no more than len */

	/* Wholly past them. */
	memset(got, 0x77, sizeof(got));
	assert_true(sq_cache_read(c, 5, 0, 2000, 300, got));
	assert_memory_equal(got, zeros, 300);
	assert_int_equal(got[300], 0x77);

	/* valid 0: all zeros; valid past the block: the whole block. */
	b = sq_cache_buf_get(c, BS);
	assert_non_null(b);
	memset(b, 0xbb, BS);
	sq_cache_put(c, 5, 1, b, BS, 0);
	memset(got, 0x77, sizeof(got));
	assert_true(sq_cache_read(c, 5, 1, 0, BS, got));
	assert_memory_equal(got, zeros, BS);
	b = sq_cache_buf_get(c, BS);
	assert_non_null(b);
	memset(b, 0xcc, BS);
	sq_cache_put(c, 5, 2, b, BS, 10 * BS);
	assert_true(sq_cache_read(c, 5, 2, 0, BS, got));
	for (size_t k = 0; k < BS; k++)
		assert_int_equal(got[k], 0xcc);
	/* ...and taken, too: nothing past the block is touched. */
	assert_ptr_equal(sq_cache_take(c, 5, 2), b);
	for (size_t k = 0; k < BS; k++)
		assert_int_equal(b[k], 0xcc);
	sq_cache_buf_put(c, b, BS);
	sq_cache_free(c);
}

static void test_big_blocks(void **state)
{
	struct sq_cache *c;
	uint8_t *b;

	(void)state;
	/* Mapped buffers, and a block bigger than the whole cache. */
	assert_int_equal(sq_cache_new(2 * BIG, NULL, &c), 0);
	put_block(c, 6, 0, BIG);
	put_block(c, 6, 1, BIG);
	put_block(c, 6, 2, BIG);
	assert_false(has(c, 6, 0, BIG));
	assert_true(has(c, 6, 1, BIG));
	assert_true(has(c, 6, 2, BIG));
	b = sq_cache_buf_get(c, 4 * BIG);
	assert_non_null(b);
	memset(b, 1, 4 * BIG);
	sq_cache_put(c, 6, 3, b, 4 * BIG, 4 * BIG);
	assert_false(has(c, 6, 3, 4 * BIG));
	/* ...which evicted nothing. */
	assert_true(has(c, 6, 1, BIG));
	assert_true(has(c, 6, 2, BIG));
	/* Blocks of several sizes share the budget by bytes. */
	put_block(c, 6, 4, BS);
	assert_false(has(c, 6, 1, BIG));
	assert_true(has(c, 6, 2, BIG));
	assert_true(has(c, 6, 4, BS));
	sq_cache_free(c);
}

static void test_pool(void **state)
{
	struct sq_cache *c;
	void *a, *b, *d, *e;

	(void)state;
	assert_int_equal(sq_cache_new(4 * BS, NULL, &c), 0);
	/* An idle buffer is handed out again, per size. */
	a = sq_cache_buf_get(c, BS);
	b = sq_cache_buf_get(c, BIG);
	assert_non_null(a);
	assert_non_null(b);
	memset(a, 1, BS);
	memset(b, 2, BIG);
	sq_cache_buf_put(c, a, BS);
	sq_cache_buf_put(c, b, BIG);
	assert_ptr_equal(sq_cache_buf_get(c, BIG), b);
	assert_ptr_equal(sq_cache_buf_get(c, BS), a);
	/* Last in, first out within a size. */
	d = sq_cache_buf_get(c, BS);
	assert_non_null(d);
	assert_ptr_not_equal(d, a);
	sq_cache_buf_put(c, a, BS);
	sq_cache_buf_put(c, d, BS);
	assert_ptr_equal(sq_cache_buf_get(c, BS), d);
	/* A size the pool does not keep still works, and is freed on put. */
	e = sq_cache_buf_get(c, 5000);
	assert_non_null(e);
	memset(e, 3, 5000);
	sq_cache_buf_put(c, e, 5000);
	sq_cache_buf_put(c, NULL, BS);
	/* An evicted block's buffer goes back to the pool. */
	sq_cache_put(c, 8, 0, d, BS, BS);
	sq_cache_drop(c, 8, 0);
	assert_ptr_equal(sq_cache_buf_get(c, BS), d);
	sq_cache_buf_put(c, d, BS);
	/* Idle buffers (of both sizes) and a cached block are all freed
	 * with the cache (ASan's leak check makes sure). */
	put_block(c, 8, 1, BS);
	sq_cache_buf_put(c, b, BIG);
	sq_cache_free(c);
	sq_cache_free(NULL);
}

/* sq_cache_counters(): what a read found, and what is held. */
static void test_counters(void **state)
{
	struct sq_cache_counters k;
	struct sq_cache *c;
	static atomic_size_t none;
	uint8_t out[16];

	(void)state;
	assert_int_equal(sq_cache_new(4 * BS, &none, &c), 0);
	sq_cache_counters(c, &k);
	assert_int_equal(k.hits + k.misses + k.bytes, 0);
	assert_int_equal(k.capacity, 4 * BS);
	put_block(c, 1, 0, BS);
	assert_true(sq_cache_read(c, 1, 0, 0, sizeof(out), out));
	assert_true(sq_cache_read(c, 1, 0, 8, sizeof(out), out));
	assert_false(sq_cache_read(c, 1, 1, 0, sizeof(out), out));
	sq_cache_counters(c, &k);
	assert_int_equal(k.hits, 2);
	assert_int_equal(k.misses, 1);
	assert_int_equal(k.bytes, BS);
	sq_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counters),
		cmocka_unit_test(test_lru_evicts_oldest),
		cmocka_unit_test(test_read_makes_recent),
		cmocka_unit_test(test_reserved),
		cmocka_unit_test(test_take),
		cmocka_unit_test(test_drop),
		cmocka_unit_test(test_replace),
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_big_blocks),
		cmocka_unit_test(test_pool),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
