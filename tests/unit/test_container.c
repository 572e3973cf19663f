/*
 * tests/unit/test_container.c - the container format (meta/container.h) on
 * temporary files: block round trips, slot alternation, sync freeing,
 * size records, truncation, files past 4 GiB, and damaged input.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>
#include <xxhash.h>

#include "codec/codec.h"
#include "meta/container.h"
#include "meta/container_i.h"
#include "meta/format.h"

struct fx {
	int fd;
	struct sq_codec_ctx *cctx;
	struct sq_ctr *ctr;
};

static int tmp_fd(void)
{
	const char *dir = getenv("TMPDIR");
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/sqctr-XXXXXX", dir ? dir : "/tmp");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	return fd;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->fd = tmp_fd();
	assert_int_equal(sq_codec_ctx_new(&f->cctx), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	sq_ctr_close(f->ctr);
	sq_codec_ctx_free(f->cctx);
	close(f->fd);
	free(f);
	return 0;
}

static void ctr_open(struct fx *f, unsigned shift)
{
	sq_ctr_close(f->ctr);
	f->ctr = NULL;
	assert_int_equal(sq_ctr_open(f->fd, shift, &f->ctr), 0);
}

static off_t slot_off(unsigned shift, uint64_t idx, int k)
{
	return (off_t)(SQ_FMT_HDR_SIZE + (2 * idx + (uint64_t)k) *
		       ((UINT64_C(1) << shift) + SQ_FMT_SLOT_PAD));
}

static off_t file_size(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_size;
}

static void fill_text(uint8_t *p, size_t n, unsigned seed)
{
	static const char *words[] = { "squeeze ", "block ", "slot ",
				       "record ", "the ", "of ", "zstd ",
				       "header ", "crash ", "sync\n" };
	size_t i = 0;

	while (i < n) {
		const char *w = words[(seed = seed * 1103515245 + 12345) >> 16
				      & 7];
		size_t l = strlen(w);

		if (l > n - i)
			l = n - i;
		memcpy(p + i, w, l);
		i += l;
	}
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		p[i] = (uint8_t)seed;
	}
}

static void write_raw(struct fx *f, uint64_t idx, const void *p, uint32_t n)
{
	assert_int_equal(sq_ctr_write_block(f->ctr, idx, SQ_CODEC_NONE, 0, n,
					    p, n), 0);
}

static void write_zstd(struct fx *f, uint64_t idx, const void *p, uint32_t n)
{
	uint32_t bs = sq_ctr_block_size(f->ctr);
	uint8_t *z = malloc(bs);
	ssize_t zl;

	assert_non_null(z);
	zl = sq_codec_compress(f->cctx, SQ_CODEC_ZSTD, 3, p, n, z, bs);
	assert_true(zl > 0);
	assert_int_equal(sq_ctr_write_block(f->ctr, idx, SQ_CODEC_ZSTD, 3, n,
					    z, (uint32_t)zl), 0);
	free(z);
}

/* Sets the size and records it, as fs/ does at flush. */
static int set_size_rec(struct sq_ctr *ctr, uint64_t size)
{
	int r = sq_ctr_set_size(ctr, size);

	return r ? r : sq_ctr_write_size(ctr);
}

/* Reads block @idx and compares it with @want (n bytes) + zero tail. */
static void expect_block(struct fx *f, uint64_t idx, const void *want,
			 uint32_t n)
{
	uint32_t bs = sq_ctr_block_size(f->ctr);
	uint8_t *buf = malloc(bs);
	uint8_t *exp = calloc(1, bs);

	assert_non_null(buf);
	assert_non_null(exp);
	memset(buf, 0xa5, bs);
	if (n)
		memcpy(exp, want, n);
	assert_int_equal(sq_ctr_read_block(f->ctr, f->cctx, idx, buf), n);
	assert_memory_equal(buf, exp, bs);
	free(buf);
	free(exp);
}

static void expect_hole(struct fx *f, uint64_t idx)
{
	expect_block(f, idx, NULL, 0);
}

static void expect_bad(struct fx *f, uint64_t idx)
{
	uint8_t *buf = malloc(sq_ctr_block_size(f->ctr));

	assert_non_null(buf);
	assert_int_equal(sq_ctr_read_block(f->ctr, f->cctx, idx, buf),
			 -EBADMSG);
	free(buf);
}

static void flip_byte(int fd, off_t off)
{
	uint8_t b;

	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
}

static void put_raw(int fd, const void *p, size_t n, off_t off)
{
	assert_int_equal(pwrite(fd, p, n, off), (ssize_t)n);
}

struct problems {
	int count;
	char last[512];
	char all[4096];
};

static void on_problem(void *arg, uint64_t block, const char *msg)
{
	struct problems *p = arg;
	size_t l = strlen(p->all);

	(void)block;
	p->count++;
	snprintf(p->last, sizeof(p->last), "%s", msg);
	snprintf(p->all + l, sizeof(p->all) - l, "%s\n", msg);
}

/* ---- tests ---- */

static void test_empty(void **state)
{
	struct fx *f = *state;
	struct sq_ctr_check rep;
	struct sq_ctr_block_info info;
	struct problems pr = { 0 };
	uint64_t size = 99;

	assert_int_equal(sq_ctr_open(f->fd, 11, &f->ctr), -EINVAL);
	assert_null(f->ctr);
	ctr_open(f, 12);
	assert_int_equal(sq_ctr_size(f->ctr), 0);
	assert_int_equal(sq_ctr_block_size(f->ctr), 4096);
	assert_int_equal(sq_ctr_block_shift(f->ctr), 12);
	expect_hole(f, 0);
	expect_hole(f, 12345);
	assert_int_equal(sq_ctr_block_info(f->ctr, 0, &info), 0);
	assert_false(info.present);
	assert_int_equal(info.slot, -1);
	assert_int_equal(sq_ctr_next_data(f->ctr, 0), 0);
	/* Nothing stored: nothing written. */
	assert_int_equal(set_size_rec(f->ctr, 0), 0);
	assert_int_equal(sq_ctr_zero_block(f->ctr, 3), 0);
	assert_int_equal(sq_ctr_punch_blocks(f->ctr, 0, 10), 0);
	assert_int_equal(sq_ctr_sync(f->ctr), 0);
	assert_int_equal(file_size(f->fd), 0);
	assert_false(sq_ctr_has_stale(f->ctr));
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), 0);
	assert_int_equal(size, 0);
	assert_int_equal(sq_ctr_check_fd(f->fd, NULL, f->cctx, &rep, on_problem, &pr),
			 0);
	assert_int_equal(pr.count, 0);

	/* Growing an empty container writes just the header. */
	assert_int_equal(set_size_rec(f->ctr, 10000), 0);
	assert_int_equal(file_size(f->fd), SQ_FMT_HDR_SIZE);
	ctr_open(f, 16);	/* the file's shift wins over the argument */
	assert_int_equal(sq_ctr_block_shift(f->ctr), 12);
	assert_int_equal(sq_ctr_size(f->ctr), 10000);
	expect_hole(f, 2);
	assert_int_equal(sq_ctr_next_data(f->ctr, 0), 3);
}

static void test_roundtrip(void **state)
{
	struct fx *f = *state;
	struct sq_ctr_block_info info;
	uint8_t raw[4096], text[4096];

	ctr_open(f, 12);
	fill_random(raw, sizeof(raw), 1);
	fill_text(text, sizeof(text), 2);
	write_raw(f, 0, raw, sizeof(raw));
	write_zstd(f, 1, text, sizeof(text));
	write_zstd(f, 3, text, 1000);		/* short last block */
	write_raw(f, 4, raw, 17);
	assert_int_equal(set_size_rec(f->ctr, 4 * 4096 + 17), 0);

	for (int pass = 0; pass < 2; pass++) {
		expect_block(f, 0, raw, sizeof(raw));
		expect_block(f, 1, text, sizeof(text));
		expect_hole(f, 2);
		expect_block(f, 3, text, 1000);
		expect_block(f, 4, raw, 17);
		expect_hole(f, 5);		/* past the end */
		assert_int_equal(sq_ctr_block_info(f->ctr, 1, &info), 0);
		assert_true(info.present);
		assert_false(info.zero);
		assert_int_equal(info.codec, SQ_CODEC_ZSTD);
		assert_int_equal(info.level, 3);
		assert_int_equal(info.raw_len, 4096);
		assert_true(info.stored_len < 4096);
		assert_int_equal(info.gen, 1);
		assert_int_equal(info.slot, 0);
		ctr_open(f, 12);		/* everything again from disk */
	}

	/* Bad arguments change nothing. */
	assert_int_equal(sq_ctr_write_block(f->ctr, 0, SQ_CODEC_NONE, 0, 10,
					    raw, 9), -EINVAL);
	assert_int_equal(sq_ctr_write_block(f->ctr, 0, 77, 0, 10, raw, 9),
			 -EINVAL);
	assert_int_equal(sq_ctr_write_block(f->ctr, 0, SQ_CODEC_NONE, 0, 4097,
					    raw, 4097), -EINVAL);
	assert_int_equal(sq_ctr_write_block(f->ctr, 0, SQ_CODEC_NONE, 0, 0,
					    raw, 0), -EINVAL);
	expect_block(f, 0, raw, sizeof(raw));
}

static void test_rewrite_alternates(void **state)
{
	struct fx *f = *state;
	struct sq_ctr_block_info info;
	uint8_t v[5][4096];

	ctr_open(f, 12);
	for (int i = 0; i < 5; i++) {
		fill_text(v[i], sizeof(v[i]), 10 + (unsigned)i);
		if (i & 1)
			write_raw(f, 7, v[i], sizeof(v[i]));
		else
			write_zstd(f, 7, v[i], sizeof(v[i]));
		assert_int_equal(sq_ctr_block_info(f->ctr, 7, &info), 0);
		assert_int_equal(info.gen, i + 1);
		assert_int_equal(info.slot, i & 1);
		expect_block(f, 7, v[i], sizeof(v[i]));
		assert_int_equal(sq_ctr_has_stale(f->ctr), i > 0);
	}
	assert_int_equal(set_size_rec(f->ctr, 8 * 4096), 0);
	/* Both slots valid on disk: reopen picks the higher generation. */
	ctr_open(f, 12);
	expect_block(f, 7, v[4], sizeof(v[4]));
	assert_int_equal(sq_ctr_block_info(f->ctr, 7, &info), 0);
	assert_int_equal(info.gen, 5);
	assert_int_equal(info.slot, 0);
	assert_true(sq_ctr_has_stale(f->ctr));
	assert_int_equal(sq_ctr_sync(f->ctr), 0);
	assert_false(sq_ctr_has_stale(f->ctr));
	ctr_open(f, 12);
	expect_block(f, 7, v[4], sizeof(v[4]));
	assert_false(sq_ctr_has_stale(f->ctr));
	/* The write after a sync lands in the freed slot. */
	write_raw(f, 7, v[1], sizeof(v[1]));
	assert_int_equal(sq_ctr_block_info(f->ctr, 7, &info), 0);
	assert_int_equal(info.gen, 6);
	assert_int_equal(info.slot, 1);
}

static void test_sync_frees_stale(void **state)
{
	struct fx *f = *state;
	const unsigned sh = 16;
	uint8_t *a = malloc(1 << sh), *b = malloc(1 << sh), pre[16];
	static const uint8_t zeros[16];
	struct stat st1, st2;
	off_t s0 = slot_off(sh, 3, 0), s1 = slot_off(sh, 3, 1);

	assert_non_null(a);
	assert_non_null(b);
	fill_random(a, 1 << sh, 3);
	fill_random(b, 1 << sh, 4);
	ctr_open(f, sh);
	write_raw(f, 3, a, 1 << sh);
	write_raw(f, 4, a, 1 << sh);
	assert_int_equal(set_size_rec(f->ctr, 5 << sh), 0);
	assert_int_equal(sq_ctr_sync(f->ctr), 0);
	assert_int_equal(fstat(f->fd, &st1), 0);

	write_raw(f, 3, b, 1 << sh);		/* goes to slot 1 */
	assert_true(sq_ctr_has_stale(f->ctr));
	assert_int_equal(pread(f->fd, pre, 16, s0), 16);
	assert_memory_not_equal(pre, zeros, 16);	/* not before sync */
	assert_int_equal(sq_ctr_sync(f->ctr), 0);
	assert_false(sq_ctr_has_stale(f->ctr));

	assert_int_equal(pread(f->fd, pre, 16, s0), 16);
	assert_memory_equal(pre, zeros, 16);
	/* Slot 0 is unallocated now: the next data is slot 1. */
	assert_true(lseek(f->fd, s0 + 4096, SEEK_DATA) >= s1 - 4096);
	assert_int_equal(fstat(f->fd, &st2), 0);
	/* One slot of 64 KiB was written and one freed: no growth. */
	assert_true(st2.st_blocks <= st1.st_blocks + 16);
	assert_int_equal(st2.st_size, st1.st_size);
	ctr_open(f, sh);
	expect_block(f, 3, b, 1 << sh);
	expect_block(f, 4, a, 1 << sh);
	free(a);
	free(b);
}

static uint64_t rec_seq(int fd, int k)
{
	uint8_t r[24];

	assert_int_equal(pread(fd, r, 24, SQ_FMT_OFF_SIZE_REC0 + 24 * k), 24);
	return sq_get_le64(r);
}

static void put_size_record(int fd, int k, uint64_t seq, uint64_t size)
{
	uint8_t r[24];

	sq_put_le64(r, seq);
	sq_put_le64(r + 8, size);
	sq_put_le64(r + 16, XXH3_64bits(r, 16));
	put_raw(fd, r, 24, SQ_FMT_OFF_SIZE_REC0 + 24 * k);
}

/* Growing is recorded only by sq_ctr_write_size(), after the data: a
 * crash before it shows the old size, never a size without its data. */
static void test_grow_recorded_after_data(void **state)
{
	struct fx *f = *state;
	uint8_t blk[4096];
	uint64_t size;

	fill_text(blk, sizeof(blk), 7);
	ctr_open(f, 12);
	assert_int_equal(sq_ctr_set_size(f->ctr, 4096), 0);
	assert_int_equal(file_size(f->fd), 0);	/* nothing on disk yet */
	write_raw(f, 0, blk, sizeof(blk));
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), 0);
	assert_int_equal(size, 0);
	ctr_open(f, 12);			/* "crash": size not recorded */
	assert_int_equal(sq_ctr_size(f->ctr), 0);
	assert_int_equal(sq_ctr_set_size(f->ctr, 2 * 4096), 0);
	write_raw(f, 0, blk, sizeof(blk));
	write_raw(f, 1, blk, sizeof(blk));
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), 0);
	assert_int_equal(size, 0);
	assert_int_equal(sq_ctr_write_size(f->ctr), 0);
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), 0);
	assert_int_equal(size, 2 * 4096);
	ctr_open(f, 12);
	expect_block(f, 1, blk, sizeof(blk));
	/* Shrinking is recorded at once. */
	assert_int_equal(sq_ctr_set_size(f->ctr, 100), 0);
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), 0);
	assert_int_equal(size, 100);
}

static void test_size_records(void **state)
{
	struct fx *f = *state;
	uint64_t size;
	uint8_t x = 'x';

	ctr_open(f, 12);
	write_raw(f, 0, &x, 1);
	assert_int_equal(rec_seq(f->fd, 0), 1);	/* header's record */
	assert_int_equal(rec_seq(f->fd, 1), 0);
	assert_int_equal(set_size_rec(f->ctr, 1), 0);
	assert_int_equal(rec_seq(f->fd, 1), 2);
	assert_int_equal(set_size_rec(f->ctr, 100), 0);
	assert_int_equal(rec_seq(f->fd, 0), 3);
	assert_int_equal(set_size_rec(f->ctr, 100), 0);	/* no change */
	assert_int_equal(rec_seq(f->fd, 0), 3);
	assert_int_equal(set_size_rec(f->ctr, 50), 0);
	assert_int_equal(rec_seq(f->fd, 1), 4);
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), 0);
	assert_int_equal(size, 50);
	ctr_open(f, 12);
	assert_int_equal(sq_ctr_size(f->ctr), 50);

	/* A torn size write leaves the other record in force. */
	flip_byte(f->fd, SQ_FMT_OFF_SIZE_REC1 + 9);
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), 0);
	assert_int_equal(size, 100);
	ctr_open(f, 12);
	assert_int_equal(sq_ctr_size(f->ctr), 100);
	/* The next size goes over the torn record. */
	assert_int_equal(set_size_rec(f->ctr, 70), 0);
	assert_int_equal(rec_seq(f->fd, 1), 4);
	ctr_open(f, 12);
	assert_int_equal(sq_ctr_size(f->ctr), 70);

	/* Both records bad: damaged. */
	flip_byte(f->fd, SQ_FMT_OFF_SIZE_REC0 + 20);
	flip_byte(f->fd, SQ_FMT_OFF_SIZE_REC1 + 20);
	sq_ctr_close(f->ctr);
	f->ctr = NULL;
	assert_int_equal(sq_ctr_open(f->fd, 12, &f->ctr), -EBADMSG);
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), -EBADMSG);
	/* Equal sequence numbers: damaged. */
	put_size_record(f->fd, 0, 9, 1);
	put_size_record(f->fd, 1, 9, 2);
	assert_int_equal(sq_ctr_open(f->fd, 12, &f->ctr), -EBADMSG);
	put_size_record(f->fd, 1, 10, 2);
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), 0);
	assert_int_equal(size, 2);
}

static void test_shrink_grow(void **state)
{
	struct fx *f = *state;
	uint8_t blk[4][4096];

	ctr_open(f, 12);
	for (int i = 0; i < 4; i++) {
		fill_random(blk[i], 4096, 20 + (uint64_t)i);
		write_raw(f, (uint64_t)i, blk[i], 4096);
	}
	assert_int_equal(set_size_rec(f->ctr, 4 * 4096), 0);
	/* Shrink into block 1: blocks 2 and 3 are cut off. */
	assert_int_equal(set_size_rec(f->ctr, 4096 + 10), 0);
	assert_int_equal(file_size(f->fd), slot_off(12, 2, 0));
	expect_block(f, 1, blk[1], 4096);	/* caller zeroes the tail */
	expect_hole(f, 2);
	assert_int_equal(set_size_rec(f->ctr, 4 * 4096), 0);
	expect_hole(f, 2);
	expect_hole(f, 3);
	ctr_open(f, 12);
	expect_block(f, 0, blk[0], 4096);
	expect_hole(f, 2);
	expect_hole(f, 3);

	/* Shrink to 0 keeps the header. */
	assert_int_equal(set_size_rec(f->ctr, 0), 0);
	assert_int_equal(file_size(f->fd), SQ_FMT_HDR_SIZE);
	ctr_open(f, 12);
	assert_int_equal(sq_ctr_size(f->ctr), 0);
	expect_hole(f, 0);
}

static void test_interrupted_shrink(void **state)
{
	struct fx *f = *state;
	uint8_t blk[4][4096];
	uint64_t seq;

	ctr_open(f, 12);
	for (int i = 0; i < 4; i++) {
		fill_random(blk[i], 4096, 30 + (uint64_t)i);
		write_raw(f, (uint64_t)i, blk[i], 4096);
	}
	assert_int_equal(set_size_rec(f->ctr, 4 * 4096), 0);
	sq_ctr_close(f->ctr);
	f->ctr = NULL;
	/* A shrink to 1 block that died after its size record. */
	seq = rec_seq(f->fd, 1);
	put_size_record(f->fd, 0, seq + 1, 4096);

	ctr_open(f, 12);
	assert_int_equal(sq_ctr_size(f->ctr), 4096);
	expect_block(f, 0, blk[0], 4096);
	expect_hole(f, 1);
	assert_int_equal(sq_ctr_next_data(f->ctr, 1), 1);
	/* Writing past the end frees the leftovers first. */
	write_raw(f, 3, blk[0], 4096);
	expect_block(f, 3, blk[0], 4096);	/* this handle's own write */
	assert_int_equal(set_size_rec(f->ctr, 4 * 4096), 0);
	expect_hole(f, 1);
	expect_hole(f, 2);
	expect_block(f, 3, blk[0], 4096);
	ctr_open(f, 12);
	expect_block(f, 0, blk[0], 4096);
	expect_hole(f, 1);
	expect_hole(f, 2);
	expect_block(f, 3, blk[0], 4096);

	/* Same, with a plain grow afterwards. */
	seq = rec_seq(f->fd, 0) > rec_seq(f->fd, 1) ? rec_seq(f->fd, 0)
						     : rec_seq(f->fd, 1);
	put_size_record(f->fd, 0, seq + 1, 100);
	put_size_record(f->fd, 1, seq, 4 * 4096);
	ctr_open(f, 12);
	assert_int_equal(sq_ctr_size(f->ctr), 100);
	assert_int_equal(set_size_rec(f->ctr, 5 * 4096), 0);
	for (uint64_t i = 1; i < 5; i++)
		expect_hole(f, i);
	ctr_open(f, 12);
	for (uint64_t i = 1; i < 5; i++)
		expect_hole(f, i);
}

static void test_past_4gib(void **state)
{
	struct fx *f = *state;
	/* Logical offset 5 GiB; its slots sit at about 20 GiB. */
	const uint64_t idx = (UINT64_C(5) << 30) / 4096;
	struct sq_ctr_check rep;
	struct problems pr = { 0 };
	uint8_t text[4096];

	fill_text(text, sizeof(text), 5);
	ctr_open(f, 12);
	write_zstd(f, idx, text, sizeof(text));
	write_raw(f, 2, text, 100);
	assert_int_equal(set_size_rec(f->ctr, (idx + 1) * 4096), 0);
	assert_int_equal(sq_ctr_sync(f->ctr), 0);
	assert_true(file_size(f->fd) > (off_t)(UINT64_C(16) << 30));
	ctr_open(f, 12);
	expect_block(f, idx, text, sizeof(text));
	expect_hole(f, idx - 1);
	expect_hole(f, idx / 2);
	assert_int_equal(sq_ctr_next_data(f->ctr, 0), 2);
	assert_int_equal(sq_ctr_next_data(f->ctr, 3), idx);
	assert_int_equal(sq_ctr_next_data(f->ctr, idx + 1), idx + 1);
	assert_int_equal(sq_ctr_check_fd(f->fd, NULL, f->cctx, &rep, on_problem, &pr),
			 0);
	assert_int_equal(rep.blocks, idx + 1);
	assert_int_equal(rep.data_blocks, 2);
	assert_int_equal(rep.zero_blocks, idx - 1);
	/* Rewrite and punch far out. */
	write_raw(f, idx, text, 10);
	expect_block(f, idx, text, 10);
	assert_int_equal(sq_ctr_punch_blocks(f->ctr, idx - 5, 10), 0);
	expect_hole(f, idx);
	ctr_open(f, 12);
	expect_hole(f, idx);
	expect_block(f, 2, text, 100);
}

static void test_payload_damage(void **state)
{
	struct fx *f = *state;
	struct sq_ctr_check rep;
	struct problems pr = { 0 };
	struct sq_ctr_block_info info;
	uint8_t text[4096], raw[4096];

	fill_text(text, sizeof(text), 6);
	fill_random(raw, sizeof(raw), 7);
	ctr_open(f, 12);
	write_zstd(f, 0, text, sizeof(text));
	write_zstd(f, 1, text, sizeof(text));
	write_raw(f, 2, raw, sizeof(raw));
	assert_int_equal(set_size_rec(f->ctr, 3 * 4096), 0);
	assert_int_equal(sq_ctr_check_fd(f->fd, NULL, f->cctx, &rep, on_problem, &pr),
			 0);
	assert_int_equal(pr.count, 0);
	assert_int_equal(rep.data_blocks, 3);
	assert_int_equal(rep.damaged, 0);

	/* The last payload byte of block 1, and a byte of block 2. */
	assert_int_equal(sq_ctr_block_info(f->ctr, 1, &info), 0);
	/* The header of these records is 34 bytes: 60 is in the payload. */
	assert_true(info.stored_len > 20);
	flip_byte(f->fd, slot_off(12, 1, 0) + 60);
	flip_byte(f->fd, slot_off(12, 2, 0) + 2000);
	ctr_open(f, 12);
	expect_block(f, 0, text, sizeof(text));
	expect_bad(f, 1);
	expect_bad(f, 2);
	assert_int_equal(sq_ctr_block_info(f->ctr, 1, &info), 0);
	assert_int_equal(sq_ctr_check_fd(f->fd, NULL, f->cctx, &rep, on_problem, &pr),
			 -EBADMSG);
	assert_int_equal(pr.count, 2);
	assert_int_equal(rep.damaged, 2);
	assert_int_equal(rep.data_blocks, 1);
	assert_non_null(strstr(pr.all, "block 1 "));
	assert_non_null(strstr(pr.all, "block 2 "));
	assert_non_null(strstr(pr.last, "payload checksum 0x"));
	assert_non_null(strstr(pr.last, "expected 0x"));

	/* Rewriting a damaged block heals it. */
	write_raw(f, 2, raw, sizeof(raw));
	expect_block(f, 2, raw, sizeof(raw));
}

static void test_torn_header(void **state)
{
	struct fx *f = *state;
	struct sq_ctr_block_info info;
	uint8_t a[4096], b[4096];

	fill_random(a, sizeof(a), 8);
	fill_random(b, sizeof(b), 9);
	ctr_open(f, 12);
	write_raw(f, 0, a, sizeof(a));
	write_raw(f, 0, b, sizeof(b));
	assert_int_equal(set_size_rec(f->ctr, 4096), 0);
	/* Damage the newest header (slot 1): the older one is current. */
	flip_byte(f->fd, slot_off(12, 0, 1) + 16 + 3);
	ctr_open(f, 12);
	expect_block(f, 0, a, sizeof(a));
	assert_int_equal(sq_ctr_block_info(f->ctr, 0, &info), 0);
	assert_int_equal(info.gen, 1);
	assert_int_equal(info.slot, 0);
	/* The next write replaces the torn slot. */
	write_raw(f, 0, b, sizeof(b));
	assert_int_equal(sq_ctr_block_info(f->ctr, 0, &info), 0);
	assert_int_equal(info.gen, 2);
	assert_int_equal(info.slot, 1);
	ctr_open(f, 12);
	expect_block(f, 0, b, sizeof(b));

	/* Newest header fine but its payload bad: no fallback. */
	flip_byte(f->fd, slot_off(12, 0, 1) + 100);
	ctr_open(f, 12);
	expect_bad(f, 0);

	/* Only a torn header, nothing older: damaged, not a hole. */
	write_raw(f, 1, a, sizeof(a));
	assert_int_equal(set_size_rec(f->ctr, 2 * 4096), 0);
	flip_byte(f->fd, slot_off(12, 1, 0) + 8);
	ctr_open(f, 12);
	expect_bad(f, 1);
	assert_int_equal(sq_ctr_block_info(f->ctr, 1, &info), -EBADMSG);
	assert_int_equal(sq_ctr_next_data(f->ctr, 1), 1);
}

static void test_crash_before_header(void **state)
{
	struct fx *f = *state;
	struct sq_rec_hdr h = { 0 };
	uint8_t head[SQ_REC_HEAD_MAX];
	uint8_t a[4096], b[4096];
	ssize_t hl;

	fill_random(a, sizeof(a), 10);
	fill_random(b, sizeof(b), 11);
	ctr_open(f, 12);
	write_raw(f, 0, a, sizeof(a));
	assert_int_equal(set_size_rec(f->ctr, 2 * 4096), 0);
	sq_ctr_close(f->ctr);
	f->ctr = NULL;
	/* Block 1: a first write died after its payload. */
	put_raw(f->fd, b, sizeof(b), slot_off(12, 1, 0) + 16 + 30);
	/* Block 0: a rewrite died after half its header. */
	h.block = 0;
	h.gen = 2;
	h.codec = SQ_CODEC_NONE;
	h.raw_len = 4096;
	h.stored_len = 4096;
	h.sum = XXH3_64bits(b, sizeof(b));
	hl = sq_rec_encode(&h, head);
	assert_true(hl > 0);
	put_raw(f->fd, b, sizeof(b), slot_off(12, 0, 1) + hl);
	put_raw(f->fd, head, (size_t)hl / 2, slot_off(12, 0, 1));
	ctr_open(f, 12);
	expect_block(f, 0, a, sizeof(a));
	expect_hole(f, 1);
	/* The complete header makes it current. */
	put_raw(f->fd, head, (size_t)hl, slot_off(12, 0, 1));
	ctr_open(f, 12);
	expect_block(f, 0, b, sizeof(b));
}

static void test_equal_generations(void **state)
{
	struct fx *f = *state;
	struct sq_ctr_check rep;
	struct problems pr = { 0 };
	uint8_t a[4096], slot[16 + 256 + 4096];
	ssize_t n;

	fill_random(a, sizeof(a), 12);
	ctr_open(f, 12);
	write_raw(f, 0, a, sizeof(a));
	assert_int_equal(set_size_rec(f->ctr, 4096), 0);
	/* Copy slot 0 into slot 1: two valid records of generation 1. */
	n = pread(f->fd, slot, sizeof(slot), slot_off(12, 0, 0));
	assert_true(n > 16 + 4096);
	put_raw(f->fd, slot, (size_t)n, slot_off(12, 0, 1));
	ctr_open(f, 12);
	expect_bad(f, 0);
	assert_int_equal(sq_ctr_check_fd(f->fd, NULL, f->cctx, &rep, on_problem, &pr),
			 -EBADMSG);
	assert_int_equal(pr.count, 1);
	assert_non_null(strstr(pr.last, "block 0: both slots hold generation 1"));
	/* A write outranks both. */
	write_raw(f, 0, a, 100);
	expect_block(f, 0, a, 100);
	ctr_open(f, 12);
	expect_block(f, 0, a, 100);
}

static void test_bad_files(void **state)
{
	struct fx *f = *state;
	struct sq_ctr_check rep;
	struct problems pr = { 0 };
	uint8_t buf[4096], good[SQ_FMT_HDR_SIZE], hdr[SQ_FMT_HDR_SIZE];
	uint64_t size;
	uint8_t x = 1;

	/* Garbage. */
	fill_random(buf, sizeof(buf), 13);
	put_raw(f->fd, buf, sizeof(buf), 0);
	assert_int_equal(sq_ctr_open(f->fd, 12, &f->ctr), -EBADMSG);
	assert_null(f->ctr);
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), -EBADMSG);
	assert_int_equal(sq_ctr_check_fd(f->fd, NULL, f->cctx, &rep, on_problem, &pr),
			 -EBADMSG);
	assert_int_equal(pr.count, 1);
	assert_non_null(strstr(pr.last, "magic"));
	/* 50 bytes. */
	assert_int_equal(ftruncate(f->fd, 50), 0);
	assert_int_equal(sq_ctr_open(f->fd, 12, &f->ctr), -EBADMSG);
	assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), -EBADMSG);
	assert_int_equal(sq_ctr_check_fd(f->fd, NULL, f->cctx, &rep, on_problem, &pr),
			 -EBADMSG);
	assert_non_null(strstr(pr.last, "50 bytes"));

	/* A good header, then one field at a time broken. */
	assert_int_equal(ftruncate(f->fd, 0), 0);
	ctr_open(f, 13);
	write_raw(f, 0, &x, 1);
	sq_ctr_close(f->ctr);
	f->ctr = NULL;
	assert_int_equal(pread(f->fd, good, sizeof(good), 0), sizeof(good));
	assert_memory_equal(good, "\x89SQZ\r\n\x1a\n", 8);
	assert_int_equal(good[12], 13);

	static const struct {
		int off;
		uint8_t val;
		bool resum;
		const char *msg;
	} cases[] = {
		{ 0, 'x', true, "magic" },
		{ 5, '\r', true, "magic" },	/* LF -> CR mangling */
		{ 8, SQ_FMT_VERSION + 1, true, "format version" },
		{ 8, 0, true, "version 0" },
		{ 10, 64, true, "header size" },
		{ 12, 11, true, "block shift 11" },
		{ 12, 21, true, "block shift 21" },
		{ 13, 1, true, "flags" },
		{ 20, 1, false, "header checksum" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(hdr, good, sizeof(hdr));
		hdr[cases[i].off] = cases[i].val;
		if (cases[i].resum)
			sq_put_le64(hdr + 48, XXH3_64bits(hdr, 48));
		put_raw(f->fd, hdr, sizeof(hdr), 0);
		assert_int_equal(sq_ctr_open(f->fd, 12, &f->ctr), -EBADMSG);
		assert_int_equal(sq_ctr_peek_size(f->fd, NULL, &size), -EBADMSG);
		pr.count = 0;
		assert_int_equal(sq_ctr_check_fd(f->fd, NULL, f->cctx, &rep,
						 on_problem, &pr), -EBADMSG);
		assert_int_equal(pr.count, 1);
		if (!strstr(pr.last, cases[i].msg))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, pr.last,
				 cases[i].msg);
	}
	/* Reserved bytes are covered by the checksum but not interpreted. */
	memcpy(hdr, good, sizeof(hdr));
	hdr[30] = 7;
	sq_put_le64(hdr + 48, XXH3_64bits(hdr, 48));
	put_raw(f->fd, hdr, sizeof(hdr), 0);
	ctr_open(f, 12);
	assert_int_equal(sq_ctr_block_shift(f->ctr), 13);
}

static void test_zero_and_punch(void **state)
{
	struct fx *f = *state;
	struct sq_ctr_block_info info;
	uint8_t a[4096];
	off_t end;

	fill_text(a, sizeof(a), 14);
	ctr_open(f, 12);
	write_raw(f, 0, a, sizeof(a));
	end = file_size(f->fd);
	assert_int_equal(sq_ctr_zero_block(f->ctr, 5), 0);	/* hole */
	assert_int_equal(file_size(f->fd), end);
	write_zstd(f, 1, a, sizeof(a));
	assert_int_equal(sq_ctr_zero_block(f->ctr, 1), 0);
	assert_int_equal(sq_ctr_block_info(f->ctr, 1, &info), 0);
	assert_true(info.present);
	assert_true(info.zero);
	assert_int_equal(info.gen, 2);
	assert_int_equal(info.slot, 1);
	expect_hole(f, 1);
	for (uint64_t i = 2; i < 6; i++)
		write_raw(f, i, a, sizeof(a));
	assert_int_equal(set_size_rec(f->ctr, 6 * 4096), 0);
	assert_int_equal(sq_ctr_next_data(f->ctr, 1), 2);
	assert_int_equal(sq_ctr_punch_blocks(f->ctr, 2, 3), 0);
	for (uint64_t i = 2; i < 5; i++)
		expect_hole(f, i);
	expect_block(f, 5, a, sizeof(a));
	assert_int_equal(sq_ctr_next_data(f->ctr, 1), 5);
	assert_int_equal(sq_ctr_next_data(f->ctr, 6), 6);
	assert_int_equal(sq_ctr_sync(f->ctr), 0);
	ctr_open(f, 12);
	expect_block(f, 0, a, sizeof(a));
	expect_hole(f, 1);
	assert_int_equal(sq_ctr_block_info(f->ctr, 1, &info), 0);
	assert_true(info.zero);
	for (uint64_t i = 2; i < 5; i++)
		expect_hole(f, i);
	expect_block(f, 5, a, sizeof(a));
	assert_int_equal(sq_ctr_next_data(f->ctr, 1), 5);
	/* Zeroing twice stores nothing new. */
	assert_int_equal(sq_ctr_zero_block(f->ctr, 1), 0);
	assert_int_equal(sq_ctr_block_info(f->ctr, 1, &info), 0);
	assert_int_equal(info.gen, 2);
}

/* The record header is standard msgpack, and hostile bytes are safe. */
static void test_record_codec(void **state)
{
	struct sq_rec_hdr h = {
		.block = 123456789012ULL, .gen = 77, .codec = SQ_CODEC_ZSTD,
		.level = -5, .raw_len = 1 << 20, .stored_len = 1000,
		.sum = 0xfedcba9876543210ULL,
	}, d;
	uint8_t buf[SQ_REC_HEAD_MAX], fuzz[SQ_REC_HEAD_MAX];
	msgpack_unpacked up;
	size_t off = 0;
	ssize_t n;
	char why[128];

	(void)state;
	n = sq_rec_encode(&h, buf);
	assert_true(n > 16);
	assert_int_equal(n, 16 + h.hdr_len);
	assert_int_equal(sq_rec_decode(buf, (size_t)n, h.block, 1 << 20, &d,
				       why, sizeof(why)), SQ_SLOT_VALID);
	assert_int_equal(d.block, h.block);
	assert_int_equal(d.gen, 77);
	assert_int_equal(d.level, -5);
	assert_int_equal(d.raw_len, 1 << 20);
	assert_int_equal(d.stored_len, 1000);
	assert_int_equal(d.sum, h.sum);
	assert_int_equal(sq_rec_decode(buf, (size_t)n, h.block + 1, 1 << 20,
				       &d, why, sizeof(why)), SQ_SLOT_INVALID);
	assert_non_null(strstr(why, "record is for block 123456789012"));
	assert_int_equal(sq_rec_decode(buf, (size_t)n, h.block, 1 << 19, &d,
				       why, sizeof(why)), SQ_SLOT_INVALID);

	/* msgpack-c reads what we wrote. */
	msgpack_unpacked_init(&up);
	assert_int_equal(msgpack_unpack_next(&up, (const char *)buf + 16,
					     h.hdr_len, &off),
			 MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, h.hdr_len);
	assert_int_equal(up.data.type, MSGPACK_OBJECT_MAP);
	assert_int_equal(up.data.via.map.size, 7);
	assert_int_equal(up.data.via.map.ptr[3].val.via.i64, -5);
	msgpack_unpacked_destroy(&up);

	/* Unknown keys of any type are skipped; nesting too. */
	{
		msgpack_sbuffer sb;
		msgpack_packer pk;
		const char *keys = "bgclrsx";
		uint64_t vals[] = { 5, 2, 0, 0, 10, 10, 99 };

		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 9);
		msgpack_pack_str(&pk, 4);
		msgpack_pack_str_body(&pk, "zzzz", 4);
		msgpack_pack_array(&pk, 2);
		msgpack_pack_map(&pk, 1);
		msgpack_pack_nil(&pk);
		msgpack_pack_double(&pk, 1.5);
		msgpack_pack_bin(&pk, 3);
		msgpack_pack_bin_body(&pk, "abc", 3);
		for (int i = 0; i < 7; i++) {
			msgpack_pack_str(&pk, 1);
			msgpack_pack_str_body(&pk, keys + i, 1);
			msgpack_pack_uint64(&pk, vals[i]);
		}
		msgpack_pack_int(&pk, 42);	/* non-string key */
		msgpack_pack_true(&pk);
		assert_true(sb.size <= 256);
		memcpy(buf, "SQBK", 4);
		sq_put_le16(buf + 4, (uint16_t)sb.size);
		sq_put_le16(buf + 6, 0);
		sq_put_le64(buf + 8, XXH3_64bits(sb.data, sb.size));
		memcpy(buf + 16, sb.data, sb.size);
		assert_int_equal(sq_rec_decode(buf, 16 + sb.size, 5, 4096, &d,
					       why, sizeof(why)),
				 SQ_SLOT_VALID);
		assert_int_equal(d.gen, 2);
		assert_int_equal(d.sum, 99);
		/* Every truncation of a valid slot is invalid, not a crash. */
		for (size_t l = 1; l < 16 + sb.size; l++)
			assert_int_equal(sq_rec_decode(buf, l, 5, 4096, &d,
						       NULL, 0),
					 SQ_SLOT_INVALID);
		msgpack_sbuffer_destroy(&sb);
	}

	/* Random msgpack-ish bodies with a correct checksum. */
	for (uint64_t seed = 1; seed < 20000; seed++) {
		size_t len = 1 + seed % 40;

		fill_random(fuzz + 16, len, seed);
		fuzz[16] = (uint8_t)(0x80 | (seed % 16));	/* a fixmap */
		if (seed & 1)
			fuzz[16] = (uint8_t)(0xdc + seed % 4);
		memcpy(fuzz, "SQBK", 4);
		sq_put_le16(fuzz + 4, (uint16_t)len);
		sq_put_le16(fuzz + 6, 0);
		sq_put_le64(fuzz + 8, XXH3_64bits(fuzz + 16, len));
		(void)sq_rec_decode(fuzz, 16 + len, 0, 4096, &d, why,
				    sizeof(why));
	}
}

/* A failing write (here EFBIG from RLIMIT_FSIZE) surfaces, and the
 * previous version stays current. */
static void test_write_error(void **state)
{
	struct fx *f = *state;
	struct rlimit old, lim;
	uint8_t a[4096], b[4096];
	void (*oldsig)(int);
	int r;

	fill_random(a, sizeof(a), 16);
	fill_random(b, sizeof(b), 17);
	ctr_open(f, 12);
	write_raw(f, 0, a, sizeof(a));
	assert_int_equal(set_size_rec(f->ctr, 4096), 0);
	assert_int_equal(sq_ctr_sync(f->ctr), 0);

	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	oldsig = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = (rlim_t)file_size(f->fd);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	r = sq_ctr_write_block(f->ctr, 0, SQ_CODEC_NONE, 0, sizeof(b), b,
			       sizeof(b));
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, oldsig);
	assert_int_equal(r, -EFBIG);
	expect_block(f, 0, a, sizeof(a));
	ctr_open(f, 12);
	expect_block(f, 0, a, sizeof(a));
	write_raw(f, 0, b, sizeof(b));
	expect_block(f, 0, b, sizeof(b));
}

/*
 * Flips random bytes in the records of a container whose blocks were each
 * written once: every read returns the right bytes or -EBADMSG, never
 * other data, and check_fd() agrees.
 */
static void test_flip_fuzz(void **state)
{
	struct fx *f = *state;
	enum { NB = 6 };
	uint8_t data[NB][4096], buf[4096];
	struct sq_ctr_check rep;
	off_t end;
	uint64_t rnd = 88172645463325252ULL;

	ctr_open(f, 12);
	for (int i = 0; i < NB; i++) {
		fill_text(data[i], 4096, 40 + (unsigned)i);
		if (i == 2)
			continue;		/* a hole */
		if (i & 1)
			write_raw(f, (uint64_t)i, data[i], 4096);
		else
			write_zstd(f, (uint64_t)i, data[i], 4096);
	}
	assert_int_equal(set_size_rec(f->ctr, NB * 4096), 0);
	sq_ctr_close(f->ctr);
	f->ctr = NULL;
	end = file_size(f->fd);

	for (int iter = 0; iter < 3000; iter++) {
		off_t off;
		uint8_t orig, bad;
		int damaged = 0;

		rnd ^= rnd << 13;
		rnd ^= rnd >> 7;
		rnd ^= rnd << 17;
		/* Mostly prefix and header bytes, sometimes the payload. */
		off = slot_off(12, rnd % NB, 0) +
		      (off_t)((rnd >> 8) % (iter & 1 ? 64 : 4200));
		if (off >= end)
			continue;
		assert_int_equal(pread(f->fd, &orig, 1, off), 1);
		bad = orig ^ (uint8_t)(1u << ((rnd >> 20) % 8));
		put_raw(f->fd, &bad, 1, off);

		ctr_open(f, 12);
		for (int i = 0; i < NB; i++) {
			ssize_t n = sq_ctr_read_block(f->ctr, f->cctx,
						      (uint64_t)i, buf);

			if (n == -EBADMSG) {
				damaged++;
				continue;
			}
			if (i == 2) {
				assert_int_equal(n, 0);
				continue;
			}
			assert_int_equal(n, 4096);
			assert_memory_equal(buf, data[i], 4096);
		}
		assert_int_equal(damaged <= 1, 1);
		assert_int_equal(sq_ctr_check_fd(f->fd, NULL, f->cctx, &rep, NULL,
						 NULL), damaged ? -EBADMSG : 0);
		assert_int_equal(rep.damaged, damaged);
		sq_ctr_close(f->ctr);
		f->ctr = NULL;
		put_raw(f->fd, &orig, 1, off);
	}
}

/* The worked examples of docs/FORMAT.md. */
static void test_worked_examples(void **state)
{
	struct fx *f = *state;
	struct sq_ctr_block_info info;
	uint8_t *text = malloc(100 * 1024);
	struct stat st;
	uint8_t one = 'a';

	assert_non_null(text);
	ctr_open(f, 12);
	write_raw(f, 0, &one, 1);
	assert_int_equal(set_size_rec(f->ctr, 1), 0);
	assert_int_equal(fstat(f->fd, &st), 0);
	print_message("1-byte file: %lld bytes, %lld allocated\n",
		      (long long)st.st_size, (long long)st.st_blocks * 512);
	assert_int_equal(st.st_size, 128 + 16 + 30 + 1);

	assert_int_equal(ftruncate(f->fd, 0), 0);
	ctr_open(f, 17);
	fill_text(text, 100 * 1024, 15);
	write_zstd(f, 0, text, 100 * 1024);
	assert_int_equal(set_size_rec(f->ctr, 100 * 1024), 0);
	assert_int_equal(sq_ctr_block_info(f->ctr, 0, &info), 0);
	assert_int_equal(fstat(f->fd, &st), 0);
	print_message("100 KiB text, bs 128 KiB, zstd:3: stored %u, "
		      "file %lld bytes\n", info.stored_len,
		      (long long)st.st_size);
	expect_block(f, 0, text, 100 * 1024);
	free(text);
}

/* A packed file's image read from memory: the same blocks as from its
 * file, damage confined to its block, and nothing written. */
static void test_image_in_memory(void **state)
{
	struct fx *f = *state;
	uint8_t text[3000], *img, *copy, *buf, *zbuf;
	struct sq_ctr *ctr;
	struct sq_ctr_loc loc;
	char why[160];
	ssize_t len;

	fill_text(text, sizeof(text), 7);
	ctr_open(f, SQ_FMT_MIN_BLOCK_SHIFT + 5);
	write_zstd(f, 0, text, sizeof(text));
	assert_int_equal(set_size_rec(f->ctr, sizeof(text)), 0);
	assert_int_equal(sq_ctr_sync(f->ctr), 0);
	img = malloc(8192);
	assert_non_null(img);
	len = sq_ctr_compact_image(f->fd, NULL, img, 8192);
	assert_true(len > SQ_FMT_HDR_SIZE && len < (ssize_t)sizeof(text));

	/* Read from memory, with the lock-free way too. */
	copy = malloc((size_t)len);
	assert_non_null(copy);
	memcpy(copy, img, (size_t)len);
	assert_int_equal(sq_ctr_open_image(copy, (size_t)len, &ctr), 0);
	sq_ctr_close(f->ctr);
	f->ctr = ctr;
	assert_int_equal(sq_ctr_size(ctr), sizeof(text));
	expect_block(f, 0, text, sizeof(text));
	expect_hole(f, 1);
	buf = malloc(sq_ctr_block_size(ctr));
	zbuf = malloc(sq_ctr_block_size(ctr));
	assert_non_null(buf);
	assert_non_null(zbuf);
	assert_int_equal(sq_ctr_locate(ctr, 0, &loc), 0);
	assert_true(loc.data);
	/* The whole block: zero past the data, whatever @buf held. */
	memset(buf, 0xa5, sq_ctr_block_size(ctr));
	assert_int_equal(sq_ctr_read_loc(&loc, f->cctx, zbuf, buf, why,
					 sizeof(why)), sizeof(text));
	assert_memory_equal(buf, text, sizeof(text));
	for (size_t k = sizeof(text); k < sq_ctr_block_size(ctr); k++)
		assert_int_equal(buf[k], 0);
	/* Only the data: the rest of @buf is left as it was. */
	memset(buf, 0xa5, sq_ctr_block_size(ctr));
	assert_int_equal(sq_ctr_read_loc_head(&loc, f->cctx, zbuf, buf, why,
					      sizeof(why)), sizeof(text));
	assert_memory_equal(buf, text, sizeof(text));
	for (size_t k = sizeof(text); k < sq_ctr_block_size(ctr); k++)
		assert_int_equal(buf[k], 0xa5);
	/* A hole: nothing to fill, or all zeros. */
	assert_int_equal(sq_ctr_locate(ctr, 1, &loc), 0);
	assert_false(loc.data);
	memset(buf, 0xa5, sq_ctr_block_size(ctr));
	assert_int_equal(sq_ctr_read_loc_head(&loc, f->cctx, zbuf, buf, why,
					      sizeof(why)), 0);
	assert_int_equal(buf[0], 0xa5);
	assert_int_equal(sq_ctr_read_loc(&loc, f->cctx, zbuf, buf, why,
					 sizeof(why)), 0);
	for (size_t k = 0; k < sq_ctr_block_size(ctr); k++)
		assert_int_equal(buf[k], 0);
	assert_int_equal(sq_ctr_next_data(ctr, 0), 0);

	/* Nothing is written: there is no file behind it. */
	assert_int_equal(sq_ctr_write_block(ctr, 1, SQ_CODEC_NONE, 0, 10,
					    text, 10), -EBADF);
	assert_int_equal(sq_ctr_sync(ctr), -EBADF);
	sq_ctr_close(f->ctr);
	f->ctr = NULL;

	/* A flipped payload byte fails that block's check, not the open. */
	copy = malloc((size_t)len);
	assert_non_null(copy);
	memcpy(copy, img, (size_t)len);
	copy[len - 5] ^= 0x40;
	assert_int_equal(sq_ctr_open_image(copy, (size_t)len, &f->ctr), 0);
	expect_bad(f, 0);
	sq_ctr_close(f->ctr);
	f->ctr = NULL;

	/* An image cut short: the payload reads short, never past it. */
	copy = malloc((size_t)len - 10);
	assert_non_null(copy);
	memcpy(copy, img, (size_t)len - 10);
	assert_int_equal(sq_ctr_open_image(copy, (size_t)len - 10, &f->ctr),
			 0);
	expect_bad(f, 0);
	sq_ctr_close(f->ctr);
	f->ctr = NULL;

	/* Not a container, or nothing at all. */
	copy = calloc(1, SQ_FMT_HDR_SIZE);
	assert_non_null(copy);
	assert_int_equal(sq_ctr_open_image(copy, SQ_FMT_HDR_SIZE, &f->ctr),
			 -EBADMSG);
	assert_null(f->ctr);
	copy = malloc(1);
	assert_non_null(copy);
	assert_int_equal(sq_ctr_open_image(copy, 0, &f->ctr), -EBADMSG);
	copy = malloc(16);
	assert_non_null(copy);
	memcpy(copy, img, 16);
	assert_int_equal(sq_ctr_open_image(copy, 16, &f->ctr), -EBADMSG);
	free(buf);
	free(zbuf);
	free(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_empty),
		T(test_roundtrip),
		T(test_rewrite_alternates),
		T(test_sync_frees_stale),
		T(test_size_records),
		T(test_grow_recorded_after_data),
		T(test_shrink_grow),
		T(test_interrupted_shrink),
		T(test_past_4gib),
		T(test_payload_damage),
		T(test_torn_header),
		T(test_crash_before_header),
		T(test_equal_generations),
		T(test_bad_files),
		T(test_zero_and_punch),
		T(test_write_error),
		T(test_flip_fuzz),
		cmocka_unit_test(test_record_codec),
		T(test_worked_examples),
		T(test_image_in_memory),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
