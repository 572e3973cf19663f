/*
 * tests/unit/test_plain.c - container format 5 and plain files in BACKING
 * (FORMAT.md 2.1, 12.1): what a backing file is in a volume
 * (sq_ctr_kind()), handles on plain files (sq_ctr_open_vol()), sq_ctr_peek()
 * with a volume, and the volume file (sq_vol_load(), sq_vol_create()).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/codec.h"
#include "meta/container.h"
#include "meta/format.h"
#include "tests/unit/unit_util.h"

#define VOL_A UINT64_C(0x1122334455667788)
#define VOL_B UINT64_C(0x99aabbccddeeff01)

struct fx {
	char dir[4096];
	int dfd;
	struct sq_codec_ctx *cctx;
	struct sq_vol a, b;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(f);
	assert_true(snprintf(f->dir, sizeof(f->dir), "%s/sqplain-XXXXXX",
			     tmp ? tmp : "/tmp") < (int)sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	f->dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(f->dfd >= 0);
	assert_int_equal(sq_codec_ctx_new(&f->cctx), 0);
	f->a.id = VOL_A;
	f->a.legacy = false;
	f->b.id = VOL_B;
	f->b.legacy = false;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	sq_codec_ctx_free(f->cctx);
	close(f->dfd);
	assert_int_equal(unit_rmtree(f->dir), 0);
	free(f);
	return 0;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		p[i] = (uint8_t)(seed >> 24);
	}
}

/* A new file @name in the test directory holding @len bytes of @data,
 * open read-write. */
static int mkfile(struct fx *f, const char *name, const void *data,
		  size_t len)
{
	int fd = openat(f->dfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
			0644);

	assert_true(fd >= 0);
	if (len)
		assert_int_equal(pwrite(fd, data, len, 0), (ssize_t)len);
	return fd;
}

static off_t file_size(int fd)
{
	struct stat st;

	assert_int_equal(fstat(fd, &st), 0);
	return st.st_size;
}

static void put_le64_at(int fd, off_t off, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	assert_int_equal(pwrite(fd, b, 8, off), 8);
}

/*
 * A container of @size bytes made through sq_ctr_open_vol() in @vol on the
 * empty file @name: block 0 raw (codec none) from @data, synced.
 */
static int mkcontainer(struct fx *f, const char *name,
		       const struct sq_vol *vol, const uint8_t *data,
		       uint32_t size)
{
	struct sq_ctr *ctr = NULL;
	int fd = mkfile(f, name, NULL, 0);

	assert_int_equal(sq_ctr_open_vol(fd, 12, vol, &ctr), 0);
	assert_false(sq_ctr_is_plain(ctr));
	assert_int_equal(sq_ctr_block_size(ctr), 4096);
	assert_true(size >= 1 && size <= 4096);
	assert_int_equal(sq_ctr_set_size(ctr, size), 0);
	assert_int_equal(sq_ctr_write_block(ctr, 0, SQ_CODEC_NONE, 0, size,
					    data, size), 0);
	assert_int_equal(sq_ctr_sync(ctr), 0);
	sq_ctr_close(ctr);
	return fd;
}

/* ---- 1. classification ---- */

static void test_kind_small_files(void **state)
{
	struct fx *f = *state;
	uint8_t rnd[100], zero2[2] = { 0, 0 };
	int fd;

	fd = mkfile(f, "empty", NULL, 0);
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_CONTAINER);
	close(fd);

	fd = mkfile(f, "stub", "\0", 1);
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_LOST_STUB);
	close(fd);

	fd = mkfile(f, "x", "x", 1);
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_PLAIN);
	close(fd);

	/* Two zero bytes: not a stub, plain (2..127 bytes). */
	fd = mkfile(f, "zero2", zero2, sizeof(zero2));
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_PLAIN);
	close(fd);

	fill_random(rnd, sizeof(rnd), 42);
	fd = mkfile(f, "rnd100", rnd, sizeof(rnd));
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_PLAIN);
	/* In a legacy volume (or none) every file is a container. */
	assert_int_equal(sq_ctr_kind(fd, NULL), SQ_KIND_CONTAINER);
	close(fd);
}

static void test_kind_magic_junk(void **state)
{
	struct fx *f = *state;
	uint8_t b[256];
	int fd;

	fill_random(b, sizeof(b), 7);
	memcpy(b, SQ_FMT_MAGIC, SQ_FMT_MAGIC_LEN);
	fd = mkfile(f, "lookalike", b, sizeof(b));
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_LOOKALIKE);
	assert_int_equal(sq_ctr_kind(fd, &f->b), SQ_KIND_LOOKALIKE);
	close(fd);

	/* Exactly 128 bytes: the threshold at which a header is looked at. */
	fd = mkfile(f, "lookalike128", b, 128);
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_LOOKALIKE);
	close(fd);
}

static void test_kind_container_by_volume(void **state)
{
	struct fx *f = *state;
	struct sq_vol legacy_b = { .id = VOL_B, .legacy = true };
	struct sq_vol legacy0 = { .id = 0, .legacy = true };
	uint8_t data[3000], hdr[SQ_FMT_HDR_SIZE], zero8[8] = { 0 };
	int fd;

	fill_random(data, sizeof(data), 99);
	fd = mkcontainer(f, "ctr", &f->a, data, sizeof(data));

	/* The header: format 5, the volume id twice (LE), then zeros. */
	assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), sizeof(hdr));
	assert_memory_equal(hdr, SQ_FMT_MAGIC, SQ_FMT_MAGIC_LEN);
	assert_int_equal(hdr[8] | hdr[9] << 8, 5);
	assert_int_equal(le64(hdr + 104), VOL_A);
	assert_int_equal(le64(hdr + 112), VOL_A);
	assert_int_equal(hdr[104], 0x88);	/* little-endian */
	assert_int_equal(hdr[111], 0x11);
	for (int i = 120; i < 128; i++)
		assert_int_equal(hdr[i], 0);

	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_CONTAINER);
	assert_int_equal(sq_ctr_kind(fd, &f->b), SQ_KIND_LOOKALIKE);
	assert_int_equal(sq_ctr_kind(fd, NULL), SQ_KIND_CONTAINER);
	assert_int_equal(sq_ctr_kind(fd, &legacy_b), SQ_KIND_CONTAINER);
	assert_int_equal(sq_ctr_kind(fd, &legacy0), SQ_KIND_CONTAINER);

	/* The first copy damaged: the second one still says so. */
	assert_int_equal(pwrite(fd, zero8, 8, 104), 8);
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_CONTAINER);
	/* Only the second copy damaged. */
	put_le64_at(fd, 104, VOL_A);
	assert_int_equal(pwrite(fd, zero8, 8, 112), 8);
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_CONTAINER);
	/* Both: it looks plain. */
	assert_int_equal(pwrite(fd, zero8, 8, 104), 8);
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_LOOKALIKE);
	assert_int_equal(sq_ctr_kind(fd, NULL), SQ_KIND_CONTAINER);
	close(fd);
}

/* A volume with no id (no volume file, not legacy) matches nothing, not
 * even a container whose id bytes are zero. */
static void test_kind_id_zero_matches_nothing(void **state)
{
	struct fx *f = *state;
	struct sq_vol none = { .id = 0, .legacy = false };
	uint8_t data[100];
	int fd;

	fill_random(data, sizeof(data), 5);
	fd = mkcontainer(f, "ctr0", NULL, data, sizeof(data));
	{
		uint8_t hdr[SQ_FMT_HDR_SIZE];

		assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), sizeof(hdr));
		assert_int_equal(le64(hdr + 104), 0);
		assert_int_equal(le64(hdr + 112), 0);
	}
	assert_int_equal(sq_ctr_kind(fd, &none), SQ_KIND_LOOKALIKE);
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_LOOKALIKE);
	assert_int_equal(sq_ctr_kind(fd, NULL), SQ_KIND_CONTAINER);
	close(fd);
}

/* The container of volume A opens as a container there, as a plain file
 * (its bytes as they are) in volume B. */
static void test_open_container_vs_lookalike(void **state)
{
	struct fx *f = *state;
	uint8_t data[3000], *buf = malloc(4096);
	struct sq_ctr *ctr = NULL;
	int fd;

	assert_non_null(buf);
	fill_random(data, sizeof(data), 123);
	fd = mkcontainer(f, "ctr", &f->a, data, sizeof(data));

	assert_int_equal(sq_ctr_open_vol(fd, 12, &f->a, &ctr), 0);
	assert_false(sq_ctr_is_plain(ctr));
	assert_int_equal(sq_ctr_size(ctr), sizeof(data));
	assert_int_equal(sq_ctr_read_block(ctr, f->cctx, 0, buf),
			 sizeof(data));
	assert_memory_equal(buf, data, sizeof(data));
	sq_ctr_close(ctr);
	ctr = NULL;

	assert_int_equal(sq_ctr_open_vol(fd, 12, &f->b, &ctr), 0);
	assert_true(sq_ctr_is_plain(ctr));
	assert_int_equal(sq_ctr_size(ctr), (uint64_t)file_size(fd));
	{
		off_t len = file_size(fd);
		uint8_t *raw = malloc(4096);

		assert_non_null(raw);
		assert_true(len > 128 && len < 4096);
		memset(raw, 0, 4096);
		assert_int_equal(pread(fd, raw, 4096, 0), len);
		assert_int_equal(sq_ctr_read_block(ctr, f->cctx, 0, buf), len);
		assert_memory_equal(buf, raw, 4096);	/* + zero tail */
		assert_memory_equal(buf, SQ_FMT_MAGIC, SQ_FMT_MAGIC_LEN);
		free(raw);
	}
	sq_ctr_close(ctr);
	close(fd);
	free(buf);
}

/* ---- 2. plain handles ---- */

#define PLAIN_LEN 300000u
#define BS 4096u

static void expect_plain_block(struct fx *f, struct sq_ctr *ctr,
			       const uint8_t *want, uint64_t idx)
{
	uint8_t *buf = malloc(BS);
	uint64_t size = sq_ctr_size(ctr), off = idx * BS;
	uint32_t n = off >= size ? 0 :
		     (uint32_t)(size - off < BS ? size - off : BS);

	assert_non_null(buf);
	memset(buf, 0xa5, BS);
	assert_int_equal(sq_ctr_read_block(ctr, f->cctx, idx, buf), n);
	if (n)
		assert_memory_equal(buf, want + off, n);
	for (uint32_t i = n; i < BS; i++)
		assert_int_equal(buf[i], 0);
	free(buf);
}

static void test_plain_read_write(void **state)
{
	struct fx *f = *state;
	uint8_t *data = malloc(PLAIN_LEN), *nb = malloc(BS), *chk = malloc(BS);
	uint64_t last = PLAIN_LEN / BS;	/* 73: 992 bytes */
	struct sq_ctr *ctr = NULL;
	int fd;

	assert_non_null(data);
	assert_non_null(nb);
	assert_non_null(chk);
	fill_random(data, PLAIN_LEN, 0x5eed);
	fd = mkfile(f, "plain", data, PLAIN_LEN);
	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_PLAIN);

	assert_int_equal(sq_ctr_open_vol(fd, 12, &f->a, &ctr), 0);
	assert_true(sq_ctr_is_plain(ctr));
	assert_int_equal(sq_ctr_size(ctr), PLAIN_LEN);
	assert_int_equal(sq_ctr_block_size(ctr), BS);
	assert_int_equal(sq_ctr_block_shift(ctr), 12);
	assert_false(sq_ctr_size_pending(ctr));

	assert_int_equal(last, 73);
	assert_int_equal(PLAIN_LEN % BS, 992);
	expect_plain_block(f, ctr, data, 0);
	expect_plain_block(f, ctr, data, 37);
	expect_plain_block(f, ctr, data, last);
	expect_plain_block(f, ctr, data, last + 1);	/* past the end */

	/* Writes go in place, raw. */
	fill_random(nb, BS, 0xbeef);
	assert_int_equal(sq_ctr_write_block(ctr, 37, SQ_CODEC_NONE, 0, BS,
					    nb, BS), 0);
	assert_int_equal(pread(fd, chk, BS, 37 * BS), BS);
	assert_memory_equal(chk, nb, BS);
	memcpy(data + 37 * BS, nb, BS);
	expect_plain_block(f, ctr, data, 37);
	expect_plain_block(f, ctr, data, 36);
	expect_plain_block(f, ctr, data, 38);

	fill_random(nb, 992, 0xcafe);
	assert_int_equal(sq_ctr_write_block(ctr, last, SQ_CODEC_NONE, 0, 992,
					    nb, 992), 0);
	assert_int_equal(pread(fd, chk, 992, last * BS), 992);
	assert_memory_equal(chk, nb, 992);
	memcpy(data + last * BS, nb, 992);
	expect_plain_block(f, ctr, data, last);
	/* A write does not change the size. */
	assert_int_equal(file_size(fd), PLAIN_LEN);
	assert_int_equal(sq_ctr_size(ctr), PLAIN_LEN);

	/* Any other codec: refused, nothing written. */
	fill_random(nb, BS, 0xdead);
	assert_int_equal(sq_ctr_write_block(ctr, 2, SQ_CODEC_ZSTD, 3, BS,
					    nb, 100), -EINVAL);
	assert_int_equal(sq_ctr_write_block(ctr, 2, SQ_CODEC_ZSTD, 3, BS,
					    nb, BS), -EINVAL);
	assert_int_equal(pread(fd, chk, BS, 2 * BS), BS);
	assert_memory_equal(chk, data + 2 * BS, BS);

	assert_int_equal(sq_ctr_sync(ctr), 0);
	sq_ctr_close(ctr);

	/* Reopened: what was written is there. */
	ctr = NULL;
	assert_int_equal(sq_ctr_open_vol(fd, 12, &f->a, &ctr), 0);
	assert_true(sq_ctr_is_plain(ctr));
	expect_plain_block(f, ctr, data, 37);
	expect_plain_block(f, ctr, data, last);
	sq_ctr_close(ctr);
	close(fd);
	free(data);
	free(nb);
	free(chk);
}

static void test_plain_resize(void **state)
{
	struct fx *f = *state;
	uint8_t *data = malloc(PLAIN_LEN), *nb = malloc(BS);
	struct sq_ctr *ctr = NULL;
	int fd;

	assert_non_null(data);
	assert_non_null(nb);
	fill_random(data, PLAIN_LEN, 0x1234);
	fd = mkfile(f, "plain", data, PLAIN_LEN);
	assert_int_equal(sq_ctr_open_vol(fd, 12, &f->a, &ctr), 0);
	assert_true(sq_ctr_is_plain(ctr));

	/* Shrinking: at once. */
	assert_int_equal(sq_ctr_set_size(ctr, 250000), 0);
	assert_int_equal(file_size(fd), 250000);
	assert_int_equal(sq_ctr_size(ctr), 250000);
	assert_false(sq_ctr_size_pending(ctr));
	expect_plain_block(f, ctr, data, 250000 / BS);	/* partial now */

	/* Growing: once recorded. */
	assert_int_equal(sq_ctr_set_size(ctr, 260000), 0);
	assert_int_equal(sq_ctr_size(ctr), 260000);
	assert_true(sq_ctr_size_pending(ctr));
	assert_int_equal(file_size(fd), 250000);
	/* The grown range reads as zeros (was cut by the shrink). */
	memset(data + 250000, 0, PLAIN_LEN - 250000);
	expect_plain_block(f, ctr, data, 250000 / BS);
	expect_plain_block(f, ctr, data, 259999 / BS);

	assert_int_equal(sq_ctr_write_size(ctr), 0);
	assert_int_equal(file_size(fd), 260000);
	assert_false(sq_ctr_size_pending(ctr));
	expect_plain_block(f, ctr, data, 250000 / BS);

	/* Grow, write data into the new range, then record. */
	assert_int_equal(sq_ctr_set_size(ctr, PLAIN_LEN), 0);
	assert_true(sq_ctr_size_pending(ctr));
	fill_random(nb, BS, 77);
	assert_int_equal(sq_ctr_write_block(ctr, 70, SQ_CODEC_NONE, 0, BS, nb,
					    BS), 0);
	memcpy(data + 70 * BS, nb, BS);
	expect_plain_block(f, ctr, data, 70);
	/* sq_ctr_sync() records the size too. */
	assert_int_equal(sq_ctr_sync(ctr), 0);
	assert_false(sq_ctr_size_pending(ctr));
	assert_int_equal(file_size(fd), PLAIN_LEN);
	sq_ctr_close(ctr);

	ctr = NULL;
	assert_int_equal(sq_ctr_open_vol(fd, 12, &f->a, &ctr), 0);
	assert_int_equal(sq_ctr_size(ctr), PLAIN_LEN);
	for (uint64_t i = 60; i <= PLAIN_LEN / BS; i++)
		expect_plain_block(f, ctr, data, i);
	sq_ctr_close(ctr);
	close(fd);
	free(data);
	free(nb);
}

/* Whether the filesystem of the test directory punches holes that
 * SEEK_DATA then skips (ext4, xfs, tmpfs do). */
static bool can_punch(struct fx *f)
{
	uint8_t b[3 * BS];
	bool ok;
	int fd;

	memset(b, 'p', sizeof(b));
	fd = mkfile(f, "punchprobe", b, sizeof(b));
	ok = fsync(fd) == 0 &&
	     fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, BS,
		       BS) == 0 &&
	     lseek(fd, BS, SEEK_DATA) == 2 * BS;
	close(fd);
	unlinkat(f->dfd, "punchprobe", 0);
	return ok;
}

static void test_plain_zero_block(void **state)
{
	struct fx *f = *state;
	uint8_t *data = malloc(PLAIN_LEN);
	struct sq_ctr *ctr = NULL;
	bool punches = can_punch(f);
	int fd;

	assert_non_null(data);
	fill_random(data, PLAIN_LEN, 0x777);
	fd = mkfile(f, "plain", data, PLAIN_LEN);
	assert_int_equal(fsync(fd), 0);
	assert_int_equal(sq_ctr_open_vol(fd, 12, &f->a, &ctr), 0);
	assert_true(sq_ctr_is_plain(ctr));

	assert_int_equal(sq_ctr_zero_block(ctr, 10), 0);
	memset(data + 10 * BS, 0, BS);
	expect_plain_block(f, ctr, data, 9);
	expect_plain_block(f, ctr, data, 10);
	expect_plain_block(f, ctr, data, 11);
	assert_int_equal(file_size(fd), PLAIN_LEN);
	if (punches) {
		assert_int_equal(lseek(fd, 10 * BS, SEEK_DATA), 11 * BS);
		assert_int_equal(sq_ctr_next_data(ctr, 10), 11);
	} else {
		print_message("note: no hole punching here; SEEK_DATA "
			      "not checked\n");
	}
	assert_int_equal(sq_ctr_next_data(ctr, 9), 9);

	/* The last, partial block: zeros, the length kept. */
	assert_int_equal(sq_ctr_zero_block(ctr, PLAIN_LEN / BS), 0);
	memset(data + (PLAIN_LEN / BS) * BS, 0, PLAIN_LEN % BS);
	expect_plain_block(f, ctr, data, PLAIN_LEN / BS);
	assert_int_equal(file_size(fd), PLAIN_LEN);
	/* Past the end: nothing to do, nothing grows. */
	assert_int_equal(sq_ctr_zero_block(ctr, 1000), 0);
	assert_int_equal(file_size(fd), PLAIN_LEN);

	assert_int_equal(sq_ctr_sync(ctr), 0);
	sq_ctr_close(ctr);
	close(fd);
	free(data);
}

static void test_plain_next_data_sparse(void **state)
{
	struct fx *f = *state;
	uint8_t nb[BS], *want = calloc(256, BS);
	struct sq_ctr *ctr = NULL;
	bool holes;
	int fd;

	assert_non_null(want);
	fd = mkfile(f, "sparse", NULL, 0);
	assert_int_equal(ftruncate(fd, 256 * BS), 0);
	fill_random(nb, BS, 31337);
	assert_int_equal(pwrite(fd, nb, BS, 200 * BS), BS);
	memcpy(want + 200 * BS, nb, BS);
	assert_int_equal(fsync(fd), 0);
	holes = lseek(fd, 0, SEEK_DATA) == 200 * BS;

	assert_int_equal(sq_ctr_kind(fd, &f->a), SQ_KIND_PLAIN);
	assert_int_equal(sq_ctr_open_vol(fd, 12, &f->a, &ctr), 0);
	assert_true(sq_ctr_is_plain(ctr));
	assert_int_equal(sq_ctr_size(ctr), 256 * BS);
	if (holes) {
		assert_int_equal(sq_ctr_next_data(ctr, 0), 200);
		assert_int_equal(sq_ctr_next_data(ctr, 150), 200);
		assert_int_equal(sq_ctr_next_data(ctr, 201), 256);
	} else {
		int64_t j = sq_ctr_next_data(ctr, 0);

		print_message("note: no SEEK_DATA holes here\n");
		assert_true(j >= 0 && j <= 200);
	}
	assert_int_equal(sq_ctr_next_data(ctr, 200), 200);
	assert_int_equal(sq_ctr_next_data(ctr, 256), 256);
	assert_int_equal(sq_ctr_next_data(ctr, 1000), 256);
	expect_plain_block(f, ctr, want, 0);
	expect_plain_block(f, ctr, want, 200);
	expect_plain_block(f, ctr, want, 255);
	assert_int_equal(sq_ctr_sync(ctr), 0);
	sq_ctr_close(ctr);
	close(fd);
	free(want);
}

static void test_plain_default_shift(void **state)
{
	struct fx *f = *state;
	struct sq_ctr *ctr = NULL;
	int fd = mkfile(f, "x", "hello", 5);

	assert_int_equal(sq_ctr_open_vol(fd, 0, &f->a, &ctr), 0);
	assert_true(sq_ctr_is_plain(ctr));
	assert_int_equal(sq_ctr_block_size(ctr), 128 * 1024);
	assert_int_equal(sq_ctr_size(ctr), 5);
	sq_ctr_close(ctr);
	close(fd);
}

static void test_open_lost_stub(void **state)
{
	struct fx *f = *state;
	struct sq_ctr *ctr = (struct sq_ctr *)&ctr;	/* not NULL */
	uint64_t size = 77;
	unsigned shift = 77;
	int fd = mkfile(f, "stub", "\0", 1);

	assert_int_equal(sq_ctr_open_vol(fd, 12, &f->a, &ctr), -EBADMSG);
	assert_null(ctr);
	assert_int_equal(sq_ctr_peek(fd, &f->a, &size, &shift, NULL),
			 -EBADMSG);
	/* Legacy: a 1-byte file is a (too short) container. */
	assert_int_equal(sq_ctr_open_vol(fd, 12, NULL, &ctr), -EBADMSG);
	close(fd);
}

/* ---- 3. sq_ctr_peek() with a volume ---- */

static void test_peek(void **state)
{
	struct fx *f = *state;
	uint8_t data[4096];
	uint64_t size;
	unsigned shift;
	bool plain;
	int fd;

	fill_random(data, sizeof(data), 9);
	fd = mkfile(f, "plain", data, 1234);
	size = 0;
	plain = false;
	shift = 99;
	assert_int_equal(sq_ctr_peek(fd, &f->a, &size, &shift, &plain), 0);
	assert_int_equal(size, 1234);
	assert_true(plain);
	assert_int_equal(shift, 0);
	size = 0;
	assert_int_equal(sq_ctr_peek_size(fd, &f->a, &size), 0);
	assert_int_equal(size, 1234);
	close(fd);

	fd = mkfile(f, "x", "x", 1);
	assert_int_equal(sq_ctr_peek(fd, &f->a, &size, &shift, &plain), 0);
	assert_int_equal(size, 1);
	assert_true(plain);
	close(fd);

	fd = mkcontainer(f, "ctr", &f->a, data, 3000);
	assert_true(file_size(fd) > 3000);
	plain = true;
	assert_int_equal(sq_ctr_peek(fd, &f->a, &size, &shift, &plain), 0);
	assert_int_equal(size, 3000);
	assert_false(plain);
	assert_int_equal(shift, 12);
	/* In another volume: plain, its length. */
	assert_int_equal(sq_ctr_peek(fd, &f->b, &size, &shift, &plain), 0);
	assert_int_equal(size, (uint64_t)file_size(fd));
	assert_true(plain);
	/* With no volume (legacy): a container. */
	assert_int_equal(sq_ctr_peek(fd, NULL, &size, &shift, &plain), 0);
	assert_int_equal(size, 3000);
	assert_false(plain);
	close(fd);

	fd = mkfile(f, "empty", NULL, 0);
	plain = true;
	assert_int_equal(sq_ctr_peek(fd, &f->a, &size, &shift, &plain), 0);
	assert_int_equal(size, 0);
	assert_false(plain);
	close(fd);
}

/* ---- 4. volumes ---- */

static void read_vol_file(struct fx *f, uint8_t *b, size_t cap, ssize_t *n)
{
	int fd = openat(f->dfd, ".squeezefs/volume", O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	*n = pread(fd, b, cap, 0);
	close(fd);
}

static void test_vol_none_and_legacy_dir(void **state)
{
	struct fx *f = *state;
	struct sq_vol v = { .id = 5, .legacy = true };
	bool found = true;

	assert_int_equal(sq_vol_load(f->dfd, &v, &found), 0);
	assert_false(found);
	assert_false(v.legacy);
	assert_int_equal(v.id, 0);

	assert_int_equal(mkdirat(f->dfd, ".squeezefs", 0700), 0);
	v.id = 5;
	found = true;
	assert_int_equal(sq_vol_load(f->dfd, &v, &found), 0);
	assert_false(found);
	assert_true(v.legacy);
	assert_int_equal(v.id, 0);
}

static void test_vol_create_load(void **state)
{
	struct fx *f = *state;
	struct sq_vol v, w, x;
	uint8_t b[64];
	ssize_t n;
	bool found;

	assert_int_equal(sq_vol_create(f->dfd, false, &v), 0);
	assert_false(v.legacy);
	assert_true(v.id != 0);

	read_vol_file(f, b, sizeof(b), &n);
	assert_int_equal(n, 32);
	assert_memory_equal(b, "\x89SQV\r\n\x1a\n", 8);
	assert_int_equal(b[8] | b[9] << 8, 1);		/* version */
	assert_int_equal(b[10] | b[11] << 8, 0);	/* flags */
	assert_int_equal(le64(b + 16), v.id);

	found = false;
	assert_int_equal(sq_vol_load(f->dfd, &w, &found), 0);
	assert_true(found);
	assert_int_equal(w.id, v.id);
	assert_false(w.legacy);

	/* Made once: a second create reads the first one's id. */
	assert_int_equal(sq_vol_create(f->dfd, false, &x), 0);
	assert_int_equal(x.id, v.id);
	assert_false(x.legacy);
	/* ... even when asked for a legacy one. */
	assert_int_equal(sq_vol_create(f->dfd, true, &x), 0);
	assert_int_equal(x.id, v.id);
	assert_false(x.legacy);
	read_vol_file(f, b, sizeof(b), &n);
	assert_int_equal(n, 32);
	assert_int_equal(le64(b + 16), v.id);

	/* No temporary files left in .squeezefs/. */
	{
		struct stat st;
		char p[8192];

		snprintf(p, sizeof(p), "%s/.squeezefs/volume.%ld", f->dir,
			 (long)getpid());
		assert_int_equal(stat(p, &st), -1);
	}
}

static void test_vol_damage(void **state)
{
	struct fx *f = *state;
	static const int offs[] = { 0, 7, 8, 10, 11, 12, 16, 23, 24, 31 };
	struct sq_vol v, w;
	uint8_t orig[32], b[32];
	ssize_t n;
	bool found;
	int fd;

	assert_int_equal(sq_vol_create(f->dfd, false, &v), 0);
	read_vol_file(f, orig, sizeof(orig), &n);
	assert_int_equal(n, 32);
	fd = openat(f->dfd, ".squeezefs/volume", O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);

	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		memcpy(b, orig, sizeof(b));
		b[offs[i]] ^= 0x01;
		assert_int_equal(pwrite(fd, b, sizeof(b), 0), 32);
		found = true;
		assert_int_equal(sq_vol_load(f->dfd, &w, &found), -EBADMSG);
		assert_false(found);
	}
	/* Too long, too short. */
	assert_int_equal(pwrite(fd, orig, sizeof(orig), 0), 32);
	assert_int_equal(pwrite(fd, "", 1, 32), 1);
	assert_int_equal(sq_vol_load(f->dfd, &w, &found), -EBADMSG);
	assert_int_equal(ftruncate(fd, 31), 0);
	assert_int_equal(sq_vol_load(f->dfd, &w, &found), -EBADMSG);
	/* Restored: fine again. */
	assert_int_equal(pwrite(fd, orig, sizeof(orig), 0), 32);
	assert_int_equal(sq_vol_load(f->dfd, &w, &found), 0);
	assert_true(found);
	assert_int_equal(w.id, v.id);
	close(fd);
}

static void test_vol_legacy(void **state)
{
	struct fx *f = *state;
	struct sq_vol v, w;
	uint8_t b[64];
	ssize_t n;
	bool found = false;

	assert_int_equal(mkdirat(f->dfd, ".squeezefs", 0700), 0);
	assert_int_equal(sq_vol_create(f->dfd, true, &v), 0);
	assert_true(v.legacy);
	assert_true(v.id != 0);
	read_vol_file(f, b, sizeof(b), &n);
	assert_int_equal(n, 32);
	assert_int_equal(b[10] | b[11] << 8, 1);	/* LEGACY */

	assert_int_equal(sq_vol_load(f->dfd, &w, &found), 0);
	assert_true(found);
	assert_true(w.legacy);
	assert_int_equal(w.id, v.id);

	/* Two BACKINGs get different ids. */
	{
		struct sq_vol u;
		int dfd2;

		assert_int_equal(mkdirat(f->dfd, "other", 0700), 0);
		dfd2 = openat(f->dfd, "other", O_RDONLY | O_DIRECTORY |
			      O_CLOEXEC);
		assert_true(dfd2 >= 0);
		assert_int_equal(sq_vol_create(dfd2, false, &u), 0);
		assert_true(u.id != 0);
		assert_true(u.id != v.id);
		close(dfd2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
		T(test_kind_small_files),
		T(test_kind_magic_junk),
		T(test_kind_container_by_volume),
		T(test_kind_id_zero_matches_nothing),
		T(test_open_container_vs_lookalike),
		T(test_plain_read_write),
		T(test_plain_resize),
		T(test_plain_zero_block),
		T(test_plain_next_data_sparse),
		T(test_plain_default_shift),
		T(test_open_lost_stub),
		T(test_peek),
		T(test_vol_none_and_legacy_dir),
		T(test_vol_create_load),
		T(test_vol_damage),
		T(test_vol_legacy),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
