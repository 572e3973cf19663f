/*
 * tests/unit/test_pack_store.c - the pack store (engine/pack_store.h) on a
 * temporary BACKING: where sq_pack_append() places images, loading them
 * back with every check, and what sq_pack_free() punches (or refuses to).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "codec/codec.h"
#include "engine/pack_store.h"
#include "engine/workq.h"
#include "meta/container.h"
#include "meta/pack.h"
#include "tests/unit/unit_util.h"

#define PAGE SQ_PACK_PAGE
#define HDR SQ_PACK_HDR_LEN

struct fx {
	char dir[1024];		/* BACKING */
	int dfd;
	struct sq_pack *p;
};

/* An image to append, with room for the largest. */
struct img {
	struct sq_pack_image pi;
	uint8_t data[SQ_PACK_IMAGE_MAX];
};

static void fill_random(uint8_t *p, size_t n, uint64_t seed)
{
	seed = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < n; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		p[i] = (uint8_t)(seed | 1);	/* never zero */
	}
}

/* @len random bytes (no zero byte: a freed image is told by its zeros),
 * with the reference's len and sum set. */
static void img_init(struct img *m, uint32_t len, uint64_t seed)
{
	memset(m, 0, sizeof(*m));
	fill_random(m->data, len, seed);
	m->pi.data = m->data;
	m->pi.ref.len = len;
	m->pi.ref.size = 1000 + len;
	m->pi.ref.sum = sq_pack_image_sum(m->data, len);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");
	char path[PATH_MAX];

	assert_non_null(f);
	assert_true(snprintf(f->dir, sizeof(f->dir), "%s/sqpack-XXXXXX",
			     tmp ? tmp : "/tmp") < (int)sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	snprintf(path, sizeof(path), "%s/.squeezefs", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	f->dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(f->dfd >= 0);
	assert_int_equal(sq_pack_open(f->dfd, f->dir, true, &f->p), 0);
	assert_non_null(f->p);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	sq_pack_close(f->p);
	close(f->dfd);
	assert_int_equal(unit_rmtree(f->dir), 0);
	free(f);
	return 0;
}

static void reopen(struct fx *f, bool write)
{
	sq_pack_close(f->p);
	f->p = NULL;
	assert_int_equal(sq_pack_open(f->dfd, f->dir, write, &f->p), 0);
	assert_non_null(f->p);
}

static void pack_path(struct fx *f, uint32_t id, char path[PATH_MAX])
{
	snprintf(path, PATH_MAX, "%s/.squeezefs/packs/%08x.sqp", f->dir, id);
}

/* Opens pack @id read-only, by path. */
static int pack_open(struct fx *f, uint32_t id)
{
	char path[PATH_MAX];
	int fd;

	pack_path(f, id, path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static struct stat pack_stat(struct fx *f, uint32_t id)
{
	struct stat st;
	int fd = pack_open(f, id);

	assert_int_equal(fstat(fd, &st), 0);
	close(fd);
	return st;
}

/* Appends @m (@n), which must all be placed in pack 1. */
static void append(struct fx *f, struct img *m, size_t n)
{
	struct sq_pack_image *v[16];

	assert_true(n <= 16);
	for (size_t k = 0; k < n; k++)
		v[k] = &m[k].pi;
	assert_int_equal(sq_pack_append(f->p, v, n), 0);
	for (size_t k = 0; k < n; k++) {
		assert_true(m[k].pi.placed);
		assert_int_equal(m[k].pi.ref.pack, 1);
	}
}

/* Whether the image of @m still lies where its reference says. */
static bool intact(struct fx *f, const struct img *m)
{
	uint8_t buf[SQ_PACK_IMAGE_MAX];
	int fd = pack_open(f, m->pi.ref.pack);
	ssize_t n = pread(fd, buf, m->pi.ref.len, (off_t)m->pi.ref.off);

	close(fd);
	return n == (ssize_t)m->pi.ref.len &&
	       !memcmp(buf, m->data, m->pi.ref.len);
}

/* Whether @len bytes at @off of pack 1 are all zero. */
static bool zeros(struct fx *f, uint64_t off, size_t len)
{
	uint8_t buf[PAGE];
	int fd = pack_open(f, 1);
	ssize_t n;
	bool z = true;

	assert_true(len <= sizeof(buf));
	n = pread(fd, buf, len, (off_t)off);
	close(fd);
	assert_int_equal(n, (ssize_t)len);
	for (size_t k = 0; k < len; k++)
		z = z && !buf[k];
	return z;
}

/*
 * The rules every placement keeps, over all images appended so far
 * (@m, @n): after the header, within one page, no two overlapping, and
 * the bytes in the pack.
 */
static void check_layout(struct fx *f, struct img **m, size_t n)
{
	for (size_t k = 0; k < n; k++) {
		const struct sq_pack_ref *r = &m[k]->pi.ref;

		assert_true(r->off >= HDR);
		assert_int_equal(r->off / PAGE, (r->off + r->len - 1) / PAGE);
		for (size_t i = 0; i < k; i++) {
			const struct sq_pack_ref *o = &m[i]->pi.ref;

			assert_true(r->off + r->len <= o->off ||
				    o->off + o->len <= r->off);
		}
		assert_true(intact(f, m[k]));
	}
}

static void test_append_layout(void **state)
{
	static const uint32_t lens[] = { 100, 3000, 1500, 2000, 700 };
	/*
	 * Largest first, each into the first page with room: 3000 at 16,
	 * 2000 does not fit beside it (a new page), 1500 neither (beside
	 * 2000), 700 and 100 do (after 3000).
	 */
	static const uint64_t offs[] = { 3716, 16, 6096, 4096, 3016 };
	struct fx *f = *state;
	struct img m[5], *all[5];
	uint8_t want[6096 + 1500], got[sizeof(want) + 1];
	int fd;
	ssize_t n;

	for (size_t k = 0; k < 5; k++) {
		img_init(&m[k], lens[k], k);
		all[k] = &m[k];
	}
	append(f, m, 5);
	for (size_t k = 0; k < 5; k++)
		assert_int_equal(m[k].pi.ref.off, offs[k]);
	check_layout(f, all, 5);

	/* The whole pack: header, images, zeros in between, nothing past
	 * the last image. */
	memset(want, 0, sizeof(want));
	sq_pack_hdr_encode(1, want);
	for (size_t k = 0; k < 5; k++)
		memcpy(want + offs[k], m[k].data, lens[k]);
	fd = pack_open(f, 1);
	n = pread(fd, got, sizeof(got), 0);
	close(fd);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(got, want, sizeof(want));
	/* The references are the ones the pack's bytes match. */
	for (size_t k = 0; k < 5; k++)
		assert_int_equal(m[k].pi.ref.sum,
				 sq_pack_image_sum(got + offs[k], lens[k]));
}

static void test_append_last_page(void **state)
{
	struct fx *f = *state;
	struct img m[9], *all[9];

	for (size_t k = 0; k < 9; k++)
		all[k] = &m[k];
	/* The pack ends at 2516. */
	img_init(&m[0], 2500, 10);
	append(f, m, 1);
	assert_int_equal(m[0].pi.ref.off, HDR);

	/* 3000 does not fit in what is left of page 0 (a new page), then
	 * 1000 and 500 do. */
	img_init(&m[1], 1000, 11);
	img_init(&m[2], 3000, 12);
	img_init(&m[3], 500, 13);
	append(f, m + 1, 3);
	assert_int_equal(m[2].pi.ref.off, PAGE);
	assert_int_equal(m[1].pi.ref.off, 2516);
	assert_int_equal(m[3].pi.ref.off, 3516);
	check_layout(f, all, 4);

	/* A store opened again goes on at the pack's end (7096), in its
	 * last page; not into the 80 bytes left in page 0. */
	reopen(f, true);
	img_init(&m[4], 50, 14);
	append(f, m + 4, 1);
	assert_int_equal(m[4].pi.ref.off, 7096);

	/* 1200 needs a new page; 60 fills page 1 further. */
	img_init(&m[5], 60, 15);
	img_init(&m[6], 1200, 16);
	append(f, m + 5, 2);
	assert_int_equal(m[6].pi.ref.off, 2 * PAGE);
	assert_int_equal(m[5].pi.ref.off, 7146);
	check_layout(f, all, 7);

	/* An image that ends exactly at the page boundary still fits
	 * (8192 + 1200 + 2896 = 12288); the next one does not. */
	img_init(&m[7], 2896, 17);
	img_init(&m[8], 1, 18);
	append(f, m + 7, 2);
	assert_int_equal(m[7].pi.ref.off, 2 * PAGE + 1200);
	assert_int_equal(m[8].pi.ref.off, 3 * PAGE);
	check_layout(f, all, 9);
	assert_int_equal(pack_stat(f, 1).st_size, 3 * PAGE + 1);
}

static void test_append_many(void **state)
{
	struct fx *f = *state;
	struct img *m = calloc(48, sizeof(*m));
	struct img *all[48];
	uint64_t used = 0, end;

	/* Three batches of assorted lengths: the rules hold across them,
	 * and first fit decreasing wastes little. */
	assert_non_null(m);
	for (size_t b = 0; b < 3; b++) {
		for (size_t k = 0; k < 16; k++) {
			size_t i = b * 16 + k;
			uint32_t len = (uint32_t)(1 + (i * 2654435761u) %
						  SQ_PACK_IMAGE_MAX);

			img_init(&m[i], len, 100 + i);
			all[i] = &m[i];
			used += len;
		}
		append(f, m + b * 16, 16);
		/* Within a batch, a larger image never lies in a later
		 * page than a smaller one placed after it. */
		for (size_t k = 0; k < 16; k++)
			for (size_t i = 0; i < 16; i++) {
				const struct sq_pack_ref *x =
					&m[b * 16 + k].pi.ref;
				const struct sq_pack_ref *y =
					&m[b * 16 + i].pi.ref;

				if (x->len > y->len && x->off / PAGE ==
						       y->off / PAGE)
					assert_true(x->off < y->off);
			}
	}
	check_layout(f, all, 48);
	end = (uint64_t)pack_stat(f, 1).st_size;
	assert_true(end >= HDR + used);
	/* Less than a third of the pages left over. */
	assert_true(end - HDR - used < end / 3);
	free(m);
}

static void test_append_null(void **state)
{
	struct fx *f = *state;
	struct img m[3];
	struct sq_pack_image *v[3];

	/* Entries without data are no images. */
	img_init(&m[0], 300, 1);
	img_init(&m[1], 900, 2);
	img_init(&m[2], 200, 3);
	m[1].pi.data = NULL;
	for (size_t k = 0; k < 3; k++)
		v[k] = &m[k].pi;
	assert_int_equal(sq_pack_append(f->p, v, 3), 0);
	assert_true(m[0].pi.placed);
	assert_false(m[1].pi.placed);
	assert_true(m[2].pi.placed);
	assert_int_equal(m[0].pi.ref.off, HDR);
	assert_int_equal(m[2].pi.ref.off, HDR + 300);
	assert_true(intact(f, &m[0]));
	assert_true(intact(f, &m[2]));
	/* Nothing at all to add: fine, and nothing placed. */
	m[0].pi.data = NULL;
	m[0].pi.placed = false;
	assert_int_equal(sq_pack_append(f->p, v, 2), 0);
	assert_false(m[0].pi.placed);
	assert_false(m[1].pi.placed);
	assert_int_equal(pack_stat(f, 1).st_size, HDR + 500);
}

/* A real container image of a @size-byte file (one raw block) into @out:
 * its length. */
static uint32_t make_image(struct fx *f, uint8_t *out, uint32_t size)
{
	char path[PATH_MAX];
	uint8_t raw[4096];
	struct sq_ctr *ctr;
	ssize_t n;
	int fd;

	assert_true(size <= sizeof(raw));
	snprintf(path, sizeof(path), "%s/ctr-XXXXXX", f->dir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	fill_random(raw, size, size);
	assert_int_equal(sq_ctr_open(fd, 12, &ctr), 0);
	assert_int_equal(sq_ctr_write_block(ctr, 0, SQ_CODEC_NONE, 0, size,
					    raw, size), 0);
	assert_int_equal(sq_ctr_set_size(ctr, size), 0);
	assert_int_equal(sq_ctr_sync(ctr), 0);
	sq_ctr_close(ctr);
	n = sq_ctr_compact_image(fd, NULL, out, SQ_PACK_IMAGE_MAX);
	close(fd);
	assert_true(n > (ssize_t)size);
	return (uint32_t)n;
}

static void test_load(void **state)
{
	struct fx *f = *state;
	struct img m[3];
	uint8_t got[SQ_PACK_IMAGE_MAX], raw[4096];
	struct sq_pack_ref r;
	struct sq_codec_ctx *cctx;
	struct sq_ctr *ctr;
	uint8_t *copy;

	/* Two real images and bytes that are none. */
	memset(m, 0, sizeof(m));
	m[0].pi.ref.len = make_image(f, m[0].data, 1000);
	m[0].pi.ref.size = 1000;
	m[1].pi.ref.len = make_image(f, m[1].data, 2000);
	m[1].pi.ref.size = 2000;
	img_init(&m[2], 700, 3);
	for (size_t k = 0; k < 2; k++) {
		m[k].pi.data = m[k].data;
		m[k].pi.ref.sum = sq_pack_image_sum(m[k].data,
						     m[k].pi.ref.len);
	}
	append(f, m, 3);

	for (size_t k = 0; k < 2; k++) {
		memset(got, 0, sizeof(got));
		assert_int_equal(sq_pack_load(f->p, &m[k].pi.ref, got), 0);
		assert_memory_equal(got, m[k].data, m[k].pi.ref.len);
	}
	/* What was loaded reads as the file. */
	assert_int_equal(sq_codec_ctx_new(&cctx), 0);
	copy = malloc(m[1].pi.ref.len);
	assert_non_null(copy);
	assert_int_equal(sq_pack_load(f->p, &m[1].pi.ref, copy), 0);
	/* (The handle owns the copy from here on.) */
	assert_int_equal(sq_ctr_open_image(copy, m[1].pi.ref.len, &ctr), 0);
	assert_int_equal(sq_ctr_size(ctr), 2000);
	assert_int_equal(sq_ctr_read_block(ctr, cctx, 0, raw), 2000);
	{
		uint8_t want[2000];

		fill_random(want, sizeof(want), 2000);
		assert_memory_equal(raw, want, sizeof(want));
	}
	sq_ctr_close(ctr);
	sq_codec_ctx_free(cctx);

	/* The right sum of bytes that are no container. */
	assert_int_equal(sq_pack_load(f->p, &m[2].pi.ref, got), -EBADMSG);
	/* Every field of the reference counts. */
	r = m[0].pi.ref;
	r.sum ^= 1;
	assert_int_equal(sq_pack_load(f->p, &r, got), -EBADMSG);
	r = m[0].pi.ref;
	r.size++;
	assert_int_equal(sq_pack_load(f->p, &r, got), -EBADMSG);
	r = m[0].pi.ref;
	r.off++;
	assert_int_equal(sq_pack_load(f->p, &r, got), -EBADMSG);
	r = m[0].pi.ref;
	r.len--;
	assert_int_equal(sq_pack_load(f->p, &r, got), -EBADMSG);
	r = m[0].pi.ref;
	r.pack = 2;		/* no such pack */
	assert_int_equal(sq_pack_load(f->p, &r, got), -EBADMSG);
	r.pack = 0;
	assert_int_equal(sq_pack_load(f->p, &r, got), -EBADMSG);
	/* Past the end of the pack. */
	r = m[1].pi.ref;
	r.off = (uint64_t)pack_stat(f, 1).st_size - r.len / 2;
	assert_int_equal(sq_pack_load(f->p, &r, got), -EBADMSG);

	/* A read-only store reads them too. */
	reopen(f, false);
	assert_int_equal(sq_pack_load(f->p, &m[1].pi.ref, got), 0);
	assert_memory_equal(got, m[1].data, m[1].pi.ref.len);
}

static void test_load_cut_short(void **state)
{
	struct fx *f = *state;
	struct img m;
	uint8_t got[SQ_PACK_IMAGE_MAX];
	char path[PATH_MAX];
	int fd;

	memset(&m, 0, sizeof(m));
	m.pi.ref.len = make_image(f, m.data, 500);
	m.pi.ref.size = 500;
	m.pi.ref.sum = sq_pack_image_sum(m.data, m.pi.ref.len);
	m.pi.data = m.data;
	append(f, &m, 1);
	assert_int_equal(sq_pack_load(f->p, &m.pi.ref, got), 0);
	/* The pack loses its last bytes: the image is damaged, even when
	 * the buffer already holds the bytes that are gone. */
	pack_path(f, 1, path);
	fd = open(path, O_RDWR | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)(m.pi.ref.off + m.pi.ref.len -
					       10)), 0);
	close(fd);
	assert_int_equal(sq_pack_load(f->p, &m.pi.ref, got), -EBADMSG);
	assert_memory_equal(got, m.data, m.pi.ref.len - 10);
}

static void test_load_no_packs(void **state)
{
	struct fx *f = *state;
	char dir[PATH_MAX];
	struct sq_pack *p;
	struct sq_pack_ref r = { .pack = 1, .len = 200, .off = HDR,
				 .size = 10, .sum = 1 };
	uint8_t got[200];
	int dfd;

	/* A BACKING without .squeezefs: opens, and no image reads. */
	snprintf(dir, sizeof(dir), "%s/empty", f->dir);
	assert_int_equal(mkdir(dir, 0700), 0);
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	assert_int_equal(sq_pack_open(dfd, dir, false, &p), 0);
	assert_int_equal(sq_pack_load(p, &r, got), -EBADMSG);
	sq_pack_free(p, &r);	/* nothing to do */
	sq_pack_close(p);
	/* Nor for writing: no packs directory is made. */
	assert_int_equal(sq_pack_open(dfd, dir, true, &p), 0);
	assert_int_equal(sq_pack_load(p, &r, got), -EBADMSG);
	assert_int_equal(faccessat(dfd, ".squeezefs", F_OK, 0), -1);
	sq_pack_close(p);
	sq_pack_close(NULL);
	close(dfd);
}

/* Whether BACKING's filesystem punches holes. */
static bool can_punch(struct fx *f)
{
	char path[PATH_MAX];
	bool ok;
	int fd;

	snprintf(path, sizeof(path), "%s/probe-XXXXXX", f->dir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(ftruncate(fd, 2 * PAGE), 0);
	ok = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
		       PAGE) == 0;
	close(fd);
	return ok;
}

static void test_free_punches(void **state)
{
	/* 3000 at 16; 2500 at 4096 and 1500 at 6596 share page 1; 2000 at
	 * 8192, alone in the pack's last page. */
	static const uint32_t lens[] = { 3000, 2500, 2000, 1500 };
	static const uint64_t offs[] = { HDR, PAGE, 2 * PAGE, 6596 };
	struct fx *f = *state;
	struct img m[4];
	struct stat st0, st1, st2;
	uint8_t hdr[HDR], want[HDR];
	int fd;

	if (!can_punch(f))
		skip();
	for (size_t k = 0; k < 4; k++)
		img_init(&m[k], lens[k], 40 + k);
	append(f, m, 4);
	for (size_t k = 0; k < 4; k++)
		assert_int_equal(m[k].pi.ref.off, offs[k]);
	st0 = pack_stat(f, 1);

	/* Half of page 1: those bytes only; the page stays. */
	sq_pack_free(f->p, &m[3].pi.ref);
	assert_true(zeros(f, 6596, 1500));
	assert_true(intact(f, &m[0]));
	assert_true(intact(f, &m[1]));
	assert_true(intact(f, &m[2]));
	st1 = pack_stat(f, 1);
	assert_int_equal(st1.st_blocks, st0.st_blocks);

	/* The rest of page 1: the whole page goes. */
	sq_pack_free(f->p, &m[1].pi.ref);
	assert_true(zeros(f, PAGE, PAGE));
	assert_true(intact(f, &m[0]));
	assert_true(intact(f, &m[2]));
	st2 = pack_stat(f, 1);
	assert_true(st2.st_blocks < st1.st_blocks);
	assert_true(st1.st_blocks - st2.st_blocks >= PAGE / 512);
	assert_int_equal(st2.st_size, st0.st_size);

	/* The last page, partly written: freed whole, size kept. */
	st1 = st2;
	sq_pack_free(f->p, &m[2].pi.ref);
	assert_true(zeros(f, 2 * PAGE, 2000));
	st2 = pack_stat(f, 1);
	assert_true(st2.st_blocks < st1.st_blocks);
	assert_int_equal(st2.st_size, st0.st_size);

	/* Page 0: the image goes, the pack header stays. */
	sq_pack_free(f->p, &m[0].pi.ref);
	assert_true(zeros(f, HDR, 3000));
	fd = pack_open(f, 1);
	assert_int_equal(pread(fd, hdr, HDR, 0), HDR);
	close(fd);
	sq_pack_hdr_encode(1, want);
	assert_memory_equal(hdr, want, HDR);

	/* The pack is still good for appending: at its end, in page 2. */
	reopen(f, true);
	img_init(&m[0], 100, 50);
	append(f, m, 1);
	assert_int_equal(m[0].pi.ref.off, 2 * PAGE + 2000);
	assert_true(intact(f, &m[0]));
}

/* The whole of pack 1 into @buf (@cap): its length. */
static size_t pack_bytes(struct fx *f, uint8_t *buf, size_t cap)
{
	int fd = pack_open(f, 1);
	ssize_t n = pread(fd, buf, cap, 0);

	close(fd);
	assert_true(n > 0 && (size_t)n < cap);
	return (size_t)n;
}

static void test_free_mismatch(void **state)
{
	struct fx *f = *state;
	struct img m[2];
	struct sq_pack_ref r;
	uint8_t before[3 * PAGE], after[3 * PAGE];
	size_t n;
	struct stat st0;
	struct sq_wq *wq;

	img_init(&m[0], 2000, 60);
	img_init(&m[1], 2500, 61);
	append(f, m, 2);
	/* 2500 at 16, 2000 alone in page 1. */
	assert_int_equal(m[0].pi.ref.off, PAGE);
	n = pack_bytes(f, before, sizeof(before));
	st0 = pack_stat(f, 1);

	/* Not the bytes there: nothing is freed. */
	r = m[0].pi.ref;
	r.sum ^= UINT64_C(1) << 63;
	sq_pack_free(f->p, &r);
	r = m[0].pi.ref;
	r.off++;
	sq_pack_free(f->p, &r);
	r = m[0].pi.ref;
	r.off--;
	sq_pack_free(f->p, &r);
	r = m[0].pi.ref;
	r.len++;
	sq_pack_free(f->p, &r);
	r = m[0].pi.ref;
	r.len--;
	sq_pack_free(f->p, &r);
	r = m[0].pi.ref;
	r.pack = 3;
	sq_pack_free(f->p, &r);
	/* Crossing a page: never an image of ours. */
	r = m[0].pi.ref;
	r.off = PAGE - 100;
	r.sum = sq_pack_image_sum(before + r.off, r.len);
	sq_pack_free(f->p, &r);
	sq_pack_free(NULL, &m[0].pi.ref);
	assert_int_equal(pack_bytes(f, after, sizeof(after)), n);
	assert_memory_equal(after, before, n);
	assert_int_equal(pack_stat(f, 1).st_blocks, st0.st_blocks);

	/* A read-only store frees nothing, even the right reference. */
	reopen(f, false);
	sq_pack_free(f->p, &m[0].pi.ref);
	sq_pack_free_later(f->p, NULL, &m[0].pi.ref);
	assert_int_equal(pack_bytes(f, after, sizeof(after)), n);
	assert_memory_equal(after, before, n);

	/* Freed later, without a queue: at once. */
	reopen(f, true);
	sq_pack_free_later(f->p, NULL, &m[0].pi.ref);
	assert_true(zeros(f, PAGE, 2000));
	assert_true(intact(f, &m[1]));
	/* Twice: the zeros are not the image any more. */
	sq_pack_free(f->p, &m[0].pi.ref);
	assert_true(intact(f, &m[1]));

	/* With a queue: done by the time it is freed. */
	assert_int_equal(sq_wq_new("sq-test", 1, &wq), 0);
	sq_pack_free_later(f->p, wq, &m[1].pi.ref);
	assert_int_equal(sq_wq_free(wq, -1), 0);
	assert_true(zeros(f, HDR, 2500));
	n = pack_bytes(f, after, sizeof(after));
	assert_memory_equal(after, before, HDR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_layout, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_append_last_page, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_append_many, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_append_null, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_cut_short, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_load_no_packs, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_free_punches, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_free_mismatch, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
