/*
 * tests/unit/test_dirty.c - the dirty-block table (engine/dirty.h): add,
 * find, remove and count, with indexes that share a bucket; the order of
 * sq_dirty_next() and sq_dirty_pending(); and what sq_dirty_cut() drops.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/dirty.h"

#define NB SQ_DIRTY_BUCKETS

/* Fills @b (n) with the indexes @idx and adds them in that order. */
static void add_all(struct sq_dirty *t, struct sq_dirty_block *b,
		    const uint64_t *idx, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		memset(&b[k], 0, sizeof(b[k]));
		b[k].idx = idx[k];
		b[k].next = &b[k];	/* add must not trust it */
		sq_dirty_add(t, &b[k]);
	}
}

static void test_add_find_remove(void **state)
{
	/* 3, 3 + NB and 3 + 2 NB share a bucket; so do 0 and NB. */
	static const uint64_t idx[] = { 3, 3 + NB, 7, 3 + 2 * NB, 0, NB,
					UINT64_C(1) << 40 };
	struct sq_dirty t;
	struct sq_dirty_block b[7], stranger;

	(void)state;
	memset(&t, 0, sizeof(t));
	assert_int_equal(sq_dirty_count(&t), 0);
	assert_null(sq_dirty_find(&t, 3));
	add_all(&t, b, idx, 7);
	assert_int_equal(sq_dirty_count(&t), 7);
	for (size_t k = 0; k < 7; k++)
		assert_ptr_equal(sq_dirty_find(&t, idx[k]), &b[k]);
	assert_null(sq_dirty_find(&t, 4));
	assert_null(sq_dirty_find(&t, 3 + 3 * NB));
	assert_null(sq_dirty_find(&t, 2 * NB));

	/* From the middle of a chain. */
	assert_ptr_equal(sq_dirty_remove(&t, &b[1]), &b[1]);
	assert_null(b[1].next);
	assert_int_equal(sq_dirty_count(&t), 6);
	assert_null(sq_dirty_find(&t, 3 + NB));
	assert_ptr_equal(sq_dirty_find(&t, 3), &b[0]);
	assert_ptr_equal(sq_dirty_find(&t, 3 + 2 * NB), &b[3]);
	/* Twice: not held any more. */
	assert_null(sq_dirty_remove(&t, &b[1]));
	assert_int_equal(sq_dirty_count(&t), 6);
	/* A block the table does not hold, of an index it holds. */
	memset(&stranger, 0, sizeof(stranger));
	stranger.idx = 3;
	assert_null(sq_dirty_remove(&t, &stranger));
	assert_int_equal(sq_dirty_count(&t), 6);
	assert_ptr_equal(sq_dirty_find(&t, 3), &b[0]);
	/* ...and of an index it does not hold. */
	stranger.idx = 12345;
	assert_null(sq_dirty_remove(&t, &stranger));
	assert_int_equal(sq_dirty_count(&t), 6);

	/* From the head and the tail of a chain. */
	assert_ptr_equal(sq_dirty_remove(&t, &b[0]), &b[0]);
	assert_ptr_equal(sq_dirty_remove(&t, &b[5]), &b[5]);
	assert_int_equal(sq_dirty_count(&t), 4);
	assert_null(sq_dirty_find(&t, 3));
	assert_null(sq_dirty_find(&t, NB));
	assert_ptr_equal(sq_dirty_find(&t, 3 + 2 * NB), &b[3]);
	assert_ptr_equal(sq_dirty_find(&t, 0), &b[4]);
	assert_ptr_equal(sq_dirty_find(&t, 7), &b[2]);
	assert_ptr_equal(sq_dirty_find(&t, UINT64_C(1) << 40), &b[6]);

	/* Added again after its removal. */
	b[1].next = &b[2];
	sq_dirty_add(&t, &b[1]);
	assert_ptr_equal(sq_dirty_find(&t, 3 + NB), &b[1]);
	assert_int_equal(sq_dirty_count(&t), 5);

	assert_ptr_equal(sq_dirty_remove(&t, &b[1]), &b[1]);
	assert_ptr_equal(sq_dirty_remove(&t, &b[2]), &b[2]);
	assert_ptr_equal(sq_dirty_remove(&t, &b[3]), &b[3]);
	assert_ptr_equal(sq_dirty_remove(&t, &b[4]), &b[4]);
	assert_ptr_equal(sq_dirty_remove(&t, &b[6]), &b[6]);
	assert_int_equal(sq_dirty_count(&t), 0);
	for (size_t k = 0; k < NB; k++)
		assert_null(t.tab[k]);
}

static void test_next(void **state)
{
	/* Bucket order is not index order, and chains hold several. */
	static const uint64_t idx[] = { 2 * NB + 1, 1000, 5, NB + 5, 0, 1,
					NB, 3 * NB + 255, 254 };
	static const uint64_t sorted[] = { 0, 1, 5, 254, NB, NB + 5,
					   2 * NB + 1, 1000, 3 * NB + 255 };
	struct sq_dirty t;
	struct sq_dirty_block b[9];
	uint64_t at;
	size_t k;

	(void)state;
	memset(&t, 0, sizeof(t));
	assert_int_equal(sq_dirty_next(&t, 0), UINT64_MAX);
	add_all(&t, b, idx, 9);
	assert_int_equal(sq_dirty_find(&t, 0)->idx, 0);
	/* Walks the table in index order from 0. */
	for (k = 1, at = 0; k < 9; k++) {
		at = sq_dirty_next(&t, at);
		assert_int_equal(at, sorted[k]);
	}
	assert_int_equal(sq_dirty_next(&t, at), UINT64_MAX);
	/* From indexes that are not in the table. */
	assert_int_equal(sq_dirty_next(&t, 2), 5);
	assert_int_equal(sq_dirty_next(&t, 255), NB);
	assert_int_equal(sq_dirty_next(&t, NB + 6), 2 * NB + 1);
	assert_int_equal(sq_dirty_next(&t, 999), 1000);
	assert_int_equal(sq_dirty_next(&t, 3 * NB + 255), UINT64_MAX);
	assert_int_equal(sq_dirty_next(&t, UINT64_MAX - 1), UINT64_MAX);
}

static void test_pending(void **state)
{
	/* 258 goes into bucket 2 before 2, 300 (bucket 44) before 45: the
	 * buckets alone would give 258, 2, 300, 45, ... */
	static const uint64_t idx[] = { 258, 2, 300, 45, 9 * NB + 2, 44,
					1, 3 * NB + 1, 77 };
	static const bool queued[] = { false, false, false, true, false,
				       true, false, false, true };
	static const uint64_t want[] = { 1, 2, 258, 300, 3 * NB + 1,
					 9 * NB + 2 };
	struct sq_dirty t;
	struct sq_dirty_block b[9];
	uint64_t out[9];
	size_t n;

	(void)state;
	memset(&t, 0, sizeof(t));
	assert_int_equal(sq_dirty_pending(&t, out), 0);
	add_all(&t, b, idx, 9);
	for (size_t k = 0; k < 9; k++)
		b[k].queued = queued[k];
	memset(out, 0xff, sizeof(out));
	n = sq_dirty_pending(&t, out);
	assert_int_equal(n, 6);
	for (size_t k = 0; k < n; k++)
		assert_int_equal(out[k], want[k]);
	assert_int_equal(out[6], UINT64_MAX);	/* nothing past them */
	/* Nothing changed in the table. */
	assert_int_equal(sq_dirty_count(&t), 9);
	for (size_t k = 0; k < 9; k++)
		assert_ptr_equal(sq_dirty_find(&t, idx[k]), &b[k]);

	/* All queued: none pending; none queued: all, sorted. */
	for (size_t k = 0; k < 9; k++)
		b[k].queued = true;
	assert_int_equal(sq_dirty_pending(&t, out), 0);
	for (size_t k = 0; k < 9; k++)
		b[k].queued = false;
	assert_int_equal(sq_dirty_pending(&t, out), 9);
	for (size_t k = 1; k < 9; k++)
		assert_true(out[k - 1] < out[k]);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[8], 9 * NB + 2);
}

struct drops {
	uint64_t idx[16];
	struct sq_dirty_block *b[16];
	size_t n;
	int arg_ok;
};

static void drop(void *arg, struct sq_dirty_block *b)
{
	struct drops *d = arg;

	assert_true(d->n < 16);
	/* Unlinked before it is handed over. */
	assert_null(b->next);
	d->idx[d->n] = b->idx;
	d->b[d->n++] = b;
	d->arg_ok = 1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_cut(void **state)
{
	/* 10 and 10 + NB share a bucket with 10 + 2 NB; 1 with 1 + NB. */
	static const uint64_t idx[] = { 10 + NB, 1, 10, 11, 1 + NB, 9,
					10 + 2 * NB, 500 };
	static const uint64_t gone[] = { 10, 11, 10 + NB, 1 + NB,
					 10 + 2 * NB, 500 };
	struct sq_dirty t;
	struct sq_dirty_block b[8];
	struct drops d;

	(void)state;
	memset(&t, 0, sizeof(t));
	memset(&d, 0, sizeof(d));
	add_all(&t, b, idx, 8);

	/* Past the last: nothing. */
	sq_dirty_cut(&t, 10 + 2 * NB + 1, drop, &d);
	assert_int_equal(d.n, 0);
	assert_int_equal(sq_dirty_count(&t), 8);

	sq_dirty_cut(&t, 10, drop, &d);
	assert_int_equal(d.arg_ok, 1);
	assert_int_equal(d.n, 6);
	for (size_t k = 0; k < d.n; k++)
		assert_ptr_equal(sq_dirty_find(&t, d.idx[k]), NULL);
	qsort(d.idx, d.n, sizeof(d.idx[0]), cmp_u64);
	{
		uint64_t want[6];

		memcpy(want, gone, sizeof(want));
		qsort(want, 6, sizeof(want[0]), cmp_u64);
		for (size_t k = 0; k < 6; k++)
			assert_int_equal(d.idx[k], want[k]);
	}
	/* Each handed over is the caller's own block. */
	for (size_t k = 0; k < d.n; k++)
		assert_true(d.b[k] >= b && d.b[k] < b + 8);
	assert_int_equal(sq_dirty_count(&t), 2);
	assert_ptr_equal(sq_dirty_find(&t, 1), &b[1]);
	assert_ptr_equal(sq_dirty_find(&t, 9), &b[5]);
	assert_int_equal(sq_dirty_next(&t, 1), 9);
	assert_int_equal(sq_dirty_next(&t, 9), UINT64_MAX);

	/* From 0: the rest. */
	memset(&d, 0, sizeof(d));
	sq_dirty_cut(&t, 0, drop, &d);
	assert_int_equal(d.n, 2);
	assert_int_equal(sq_dirty_count(&t), 0);
	for (size_t k = 0; k < NB; k++)
		assert_null(t.tab[k]);
	/* An empty table: nothing to drop. */
	memset(&d, 0, sizeof(d));
	sq_dirty_cut(&t, 0, drop, &d);
	assert_int_equal(d.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_add_find_remove),
		cmocka_unit_test(test_next),
		cmocka_unit_test(test_pending),
		cmocka_unit_test(test_cut),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
