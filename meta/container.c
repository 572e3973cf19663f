/*
 * meta/container.c - one container file: the 128-byte header with its two
 * size records, and two crash-safe slots per block (docs/FORMAT.md).
 * Caches what it learns of each block in a sparse paged table.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "codec/codec.h"
#include "meta/container_i.h"

enum blk_state {
	BLK_UNKNOWN = 0,	/* not read yet (calloc'd pages start here) */
	BLK_HOLE,
	BLK_DATA,
	BLK_ZERO,		/* a zero record is current */
	BLK_DAMAGED,		/* no usable header: reads fail */
};

/* What the handle knows of one block. */
struct sq_blk {
	uint64_t gen;		/* current; DAMAGED: highest valid seen */
	uint64_t sum;
	uint32_t raw_len;
	uint32_t stored_len;
	int32_t level;
	uint16_t hdr_len;
	uint8_t state;		/* enum blk_state */
	uint8_t codec;
	int8_t slot;		/* current slot, -1 for none */
	uint8_t stale;		/* bit k: slot k is obsolete, free at sync */
};

#define BLK_PAGE_SHIFT	10
#define BLK_PAGE_LEN	(1u << BLK_PAGE_SHIFT)

struct blk_page {
	uint64_t pgno;		/* block index >> BLK_PAGE_SHIFT */
	struct sq_blk *ents;	/* BLK_PAGE_LEN entries */
};

struct stale_ref {
	uint64_t idx;
	int slot;
};

struct sq_ctr {
	int fd;			/* borrowed; -1 with an image */
	uint8_t *image;		/* owned: a container read from memory */
	unsigned shift;
	uint32_t bs;
	uint64_t slot_size;	/* bs + SQ_FMT_SLOT_PAD */
	uint64_t max_blocks;	/* every slot offset fits in off_t below */

	bool hdr_on_disk;	/* false only for a still 0-byte container */
	uint64_t size;		/* logical size */
	uint64_t size_seq;	/* seq of the current size record on disk */
	int size_slot;		/* 0 or 1: which size record is current */
	bool size_dirty;	/* size differs from the on-disk record */
	uint64_t seq;		/* bumped before any slot may change */

	uint64_t phys_end;	/* container length: fstat, then our writes */
	/*
	 * True when no record past the slots of the last block inside the
	 * logical size exists except those this handle wrote.  False after
	 * an interrupted shrink left blocks behind: they are freed before
	 * the size grows or a block past the end is written, so they can
	 * never reappear.
	 */
	bool tail_clean;

	struct blk_page *pages;	/* sorted by pgno */
	size_t npages, cap_pages;
	size_t last_page;	/* lookup hint */

	struct stale_ref *stale;	/* candidates; sq_blk.stale decides */
	size_t nstale, cap_stale;
	uint64_t stale_count;		/* stale bits set */

	uint8_t *scratch;	/* bs bytes: compressed payloads */

	bool plain;		/* a plain file of the volume (FORMAT.md 2.1):
				 * blocks are its bytes, size its length */
	bool lookalike;		/* ... that begins with the magic */
	uint64_t vol_id;	/* written into a header we create */
};

static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* A plain file's blocks, when the caller names no block size. */
#define PLAIN_DEFAULT_SHIFT 17

/* ---- I/O helpers ---- */

/*
 * Containers are sparse (two slots per block, one mostly a hole) and read
 * at exact ranges: the backing's readahead would zero-fill the holes (two
 * thirds of the time of a sequential read went there).  Every fd that
 * reads one says so, since readahead started by one fd (a stat's peek at
 * the header) goes on through the others' reads.
 */
void sq_ctr_no_readahead(int fd)
{
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
}

ssize_t sq_pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done,
				  off + (off_t)done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

/*
 * pread of a container: from its file, or from its @image (@len bytes)
 * when it is read from memory.  Short at the end, like a file.
 */
static ssize_t src_pread(int fd, const uint8_t *image, uint64_t len,
			 void *buf, size_t n, off_t off)
{
	if (!image)
		return sq_pread_full(fd, buf, n, off);
	if ((uint64_t)off >= len)
		return 0;
	if (n > len - (uint64_t)off)
		n = (size_t)(len - (uint64_t)off);
	memcpy(buf, image + off, n);
	return (ssize_t)n;
}

int sq_pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done,
				   off + (off_t)done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

static int punch(int fd, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) < 0)
		return -errno;
	return 0;
}

/* ---- geometry ---- */

off_t sq_ctr_slot_off(const struct sq_ctr *ctr, uint64_t idx, int k)
{
	return (off_t)(SQ_FMT_HDR_SIZE + (2 * idx + (uint64_t)k) *
		       ctr->slot_size);
}

uint64_t sq_ctr_phys_end(const struct sq_ctr *ctr)
{
	return ctr->phys_end;
}

static void set_geometry(struct sq_ctr *ctr, unsigned shift)
{
	ctr->shift = shift;
	ctr->bs = UINT32_C(1) << shift;
	ctr->slot_size = ctr->bs + SQ_FMT_SLOT_PAD;
	/* Both slots of every block below max_blocks end inside off_t. */
	ctr->max_blocks = ((uint64_t)INT64_MAX - SQ_FMT_HDR_SIZE) /
			  (2 * ctr->slot_size);
}

static uint64_t nblocks(const struct sq_ctr *ctr, uint64_t size)
{
	return (size >> ctr->shift) + !!(size & (ctr->bs - 1));
}

uint64_t sq_ctr_nblocks(const struct sq_ctr *ctr)
{
	return nblocks(ctr, ctr->size);
}

/* Start of block @idx's slots, saturating past the addressable range. */
static uint64_t blocks_off(const struct sq_ctr *ctr, uint64_t idx)
{
	if (idx >= ctr->max_blocks)
		return (uint64_t)INT64_MAX;
	return (uint64_t)sq_ctr_slot_off(ctr, idx, 0);
}

/* ---- file header ---- */

int sq_ctr_parse_header(const uint8_t *b, unsigned *shift, uint64_t *size,
			uint64_t *seq, int *size_slot, char *why,
			size_t whylen)
{
	uint16_t version = sq_get_le16(b + SQ_FMT_OFF_VERSION);
	uint16_t hsize = sq_get_le16(b + SQ_FMT_OFF_HDR_SIZE);
	unsigned sh = b[SQ_FMT_OFF_BLOCK_SHIFT];
	uint64_t sum, best_seq = 0, best_size = 0;
	int best = -1;

	if (memcmp(b, SQ_FMT_MAGIC, SQ_FMT_MAGIC_LEN)) {
		snprintf(why, whylen, "not a squeezefs container (bad magic)");
		return -EBADMSG;
	}
	sum = XXH3_64bits(b, SQ_FMT_OFF_HDR_SUM);
	if (sum != sq_get_le64(b + SQ_FMT_OFF_HDR_SUM)) {
		snprintf(why, whylen, "header checksum 0x%016llx, "
			 "expected 0x%016llx",
			 (unsigned long long)sum,
			 (unsigned long long)sq_get_le64(b + SQ_FMT_OFF_HDR_SUM));
		return -EBADMSG;
	}
	if (version < SQ_FMT_VERSION_MIN || version > SQ_FMT_VERSION) {
		snprintf(why, whylen, "format version %u, this build reads "
			 "%u..%u", version, SQ_FMT_VERSION_MIN, SQ_FMT_VERSION);
		return -EBADMSG;
	}
	if (hsize != SQ_FMT_HDR_SIZE) {
		snprintf(why, whylen, "header size %u != %u", hsize,
			 SQ_FMT_HDR_SIZE);
		return -EBADMSG;
	}
	if (sh < SQ_FMT_MIN_BLOCK_SHIFT || sh > SQ_FMT_MAX_BLOCK_SHIFT) {
		snprintf(why, whylen, "block shift %u not in %u..%u", sh,
			 SQ_FMT_MIN_BLOCK_SHIFT, SQ_FMT_MAX_BLOCK_SHIFT);
		return -EBADMSG;
	}
	if (b[SQ_FMT_OFF_FLAGS]) {
		snprintf(why, whylen, "unknown header flags 0x%02x",
			 b[SQ_FMT_OFF_FLAGS]);
		return -EBADMSG;
	}
	for (int k = 0; k < 2; k++) {
		const uint8_t *r = b + SQ_FMT_OFF_SIZE_REC0 +
				   k * SQ_FMT_SIZE_REC_LEN;
		uint64_t s = sq_get_le64(r), z = sq_get_le64(r + 8);

		if (s < 1 || XXH3_64bits(r, 16) != sq_get_le64(r + 16))
			continue;
		if (best >= 0 && s == best_seq) {
			snprintf(why, whylen, "both size records have "
				 "sequence %llu", (unsigned long long)s);
			return -EBADMSG;
		}
		if (best < 0 || s > best_seq) {
			best = k;
			best_seq = s;
			best_size = z;
		}
	}
	if (best < 0) {
		snprintf(why, whylen, "no valid size record");
		return -EBADMSG;
	}
	/* Every block inside the size must be addressable. */
	{
		uint64_t slot = (UINT64_C(1) << sh) + SQ_FMT_SLOT_PAD;
		uint64_t maxb = ((uint64_t)INT64_MAX - SQ_FMT_HDR_SIZE) /
				(2 * slot);

		if ((best_size >> sh) >= maxb) {
			snprintf(why, whylen, "logical size %llu too large",
				 (unsigned long long)best_size);
			return -EBADMSG;
		}
	}
	*shift = sh;
	*size = best_size;
	*seq = best_seq;
	*size_slot = best;
	return 0;
}

static void build_header(const struct sq_ctr *ctr, uint8_t *b, uint64_t size)
{
	uint8_t *r = b + SQ_FMT_OFF_SIZE_REC0;

	memset(b, 0, SQ_FMT_HDR_SIZE);
	memcpy(b, SQ_FMT_MAGIC, SQ_FMT_MAGIC_LEN);
	sq_put_le16(b + SQ_FMT_OFF_VERSION, SQ_FMT_VERSION);
	sq_put_le16(b + SQ_FMT_OFF_HDR_SIZE, SQ_FMT_HDR_SIZE);
	b[SQ_FMT_OFF_BLOCK_SHIFT] = (uint8_t)ctr->shift;
	sq_put_le64(b + SQ_FMT_OFF_HDR_SUM, XXH3_64bits(b, SQ_FMT_OFF_HDR_SUM));
	/* What tells this BACKING's containers from plain files (2.1). */
	sq_put_le64(b + SQ_FMT_OFF_VOLUME_ID, ctr->vol_id);
	sq_put_le64(b + SQ_FMT_OFF_VOLUME_ID2, ctr->vol_id);
	/* Size record A, seq 1; record B stays zero (invalid). */
	sq_put_le64(r, 1);
	sq_put_le64(r + 8, size);
	sq_put_le64(r + 16, XXH3_64bits(r, 16));
}

/*
 * Writes the header of a still empty container.  Its size record says 0:
 * the size on disk never runs ahead of the blocks written for it, so the
 * real size follows in sq_ctr_write_size(), after the data.
 */
static int ensure_header(struct sq_ctr *ctr)
{
	uint8_t b[SQ_FMT_HDR_SIZE];
	int ret;

	if (ctr->hdr_on_disk)
		return 0;
	build_header(ctr, b, 0);
	ret = sq_pwrite_full(ctr->fd, b, sizeof(b), 0);
	if (ret)
		return ret;
	ctr->hdr_on_disk = true;
	ctr->size_seq = 1;
	ctr->size_slot = 0;
	ctr->size_dirty = ctr->size != 0;
	if (ctr->phys_end < SQ_FMT_HDR_SIZE)
		ctr->phys_end = SQ_FMT_HDR_SIZE;
	return 0;
}

/* Writes the size into the record that is not current, seq + 1. */
static int write_size(struct sq_ctr *ctr)
{
	uint8_t r[SQ_FMT_SIZE_REC_LEN];
	int slot = 1 - ctr->size_slot;
	int ret;

	sq_put_le64(r, ctr->size_seq + 1);
	sq_put_le64(r + 8, ctr->size);
	sq_put_le64(r + 16, XXH3_64bits(r, 16));
	ret = sq_pwrite_full(ctr->fd, r, sizeof(r), SQ_FMT_OFF_SIZE_REC0 +
			     slot * SQ_FMT_SIZE_REC_LEN);
	if (ret)
		return ret;
	ctr->size_seq++;
	ctr->size_slot = slot;
	ctr->size_dirty = false;
	return 0;
}

/* ---- the block table ---- */

/* Index of the first page with pgno >= @pgno. */
static size_t page_lower_bound(const struct sq_ctr *ctr, uint64_t pgno)
{
	size_t lo = 0, hi = ctr->npages;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ctr->pages[mid].pgno < pgno)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The entry of block @idx; with @create, allocates its page (NULL: ENOMEM). */
static struct sq_blk *blk_get(struct sq_ctr *ctr, uint64_t idx, bool create)
{
	uint64_t pgno = idx >> BLK_PAGE_SHIFT;
	size_t i = ctr->last_page;
	struct sq_blk *ents;

	if (i >= ctr->npages || ctr->pages[i].pgno != pgno) {
		i = page_lower_bound(ctr, pgno);
		if (i >= ctr->npages || ctr->pages[i].pgno != pgno) {
			if (!create)
				return NULL;
			if (ctr->npages == ctr->cap_pages) {
				size_t cap = ctr->cap_pages ? 2 * ctr->cap_pages
							    : 16;
				struct blk_page *p = realloc(ctr->pages,
							     cap * sizeof(*p));

				if (!p)
					return NULL;
				ctr->pages = p;
				ctr->cap_pages = cap;
			}
			ents = calloc(BLK_PAGE_LEN, sizeof(*ents));
			if (!ents)
				return NULL;
			memmove(ctr->pages + i + 1, ctr->pages + i,
				(ctr->npages - i) * sizeof(*ctr->pages));
			ctr->pages[i].pgno = pgno;
			ctr->pages[i].ents = ents;
			ctr->npages++;
		}
		ctr->last_page = i;
	}
	return &ctr->pages[i].ents[idx & (BLK_PAGE_LEN - 1)];
}

static void set_stale(struct sq_ctr *ctr, uint64_t idx, struct sq_blk *b,
		      int slot)
{
	struct stale_ref *v;

	if (b->stale & (1u << slot))
		return;
	if (ctr->nstale == ctr->cap_stale) {
		size_t cap = ctr->cap_stale ? 2 * ctr->cap_stale : 64;

		v = realloc(ctr->stale, cap * sizeof(*v));
		if (!v)
			return;	/* only space is lost: the slot is outranked */
		ctr->stale = v;
		ctr->cap_stale = cap;
	}
	ctr->stale[ctr->nstale].idx = idx;
	ctr->stale[ctr->nstale].slot = slot;
	ctr->nstale++;
	b->stale |= (uint8_t)(1u << slot);
	ctr->stale_count++;
}

static void clear_stale(struct sq_ctr *ctr, struct sq_blk *b, int slot)
{
	if (b->stale & (1u << slot)) {
		b->stale &= (uint8_t)~(1u << slot);
		ctr->stale_count--;
	}
}

/*
 * Forgets blocks [@first, @end) after their slots were freed: they read as
 * holes from now on, and their stale slots are gone.  Whole pages are
 * released; costs O(pages), not O(blocks).
 */
static void forget_blocks(struct sq_ctr *ctr, uint64_t first, uint64_t end)
{
	size_t i = page_lower_bound(ctr, first >> BLK_PAGE_SHIFT), out = i;

	for (; i < ctr->npages; i++) {
		struct blk_page *pg = &ctr->pages[i];
		uint64_t base = pg->pgno << BLK_PAGE_SHIFT;
		uint64_t lo = first > base ? first - base : 0;
		uint64_t hi = BLK_PAGE_LEN;

		if (base >= end) {
			ctr->pages[out++] = *pg;
			continue;
		}
		if (end - base < hi)
			hi = end - base;
		for (uint64_t j = lo; j < hi; j++) {
			struct sq_blk *b = &pg->ents[j];

			clear_stale(ctr, b, 0);
			clear_stale(ctr, b, 1);
			memset(b, 0, sizeof(*b));
			b->state = BLK_HOLE;
			b->slot = -1;
		}
		if (lo == 0 && hi == BLK_PAGE_LEN) {
			free(pg->ents);	/* unknown now reads as a hole too */
			continue;
		}
		ctr->pages[out++] = *pg;
	}
	ctr->npages = out;
	ctr->last_page = 0;
}

/* ---- reading slot headers ---- */

int sq_ctr_read_slot(struct sq_ctr *ctr, uint64_t idx, int k,
		     struct sq_rec_hdr *h, char *why, size_t whylen)
{
	uint8_t buf[SQ_REC_HEAD_MAX];
	off_t off = sq_ctr_slot_off(ctr, idx, k);
	ssize_t n;

	if ((uint64_t)off >= ctr->phys_end)
		return SQ_SLOT_EMPTY;
	n = src_pread(ctr->fd, ctr->image, ctr->phys_end, buf, sizeof(buf),
		      off);
	if (n < 0)
		return (int)n;
	return sq_rec_decode(buf, (size_t)n, idx, ctr->bs, h, why, whylen);
}

/* True when block @idx cannot hold anything we should show. */
static bool past_tail(const struct sq_ctr *ctr, uint64_t idx)
{
	return idx >= ctr->max_blocks ||
	       (!ctr->tail_clean && idx >= nblocks(ctr, ctr->size));
}

/*
 * Fills in the entry of block @idx from its slot headers, if not known.
 * Returns the entry (via @out) or -errno.  Blocks past the end that an
 * interrupted shrink left behind read as holes and are not cached.
 */
static int load_block(struct sq_ctr *ctr, uint64_t idx, struct sq_blk **out)
{
	static struct sq_blk hole = { .state = BLK_HOLE, .slot = -1 };
	struct sq_rec_hdr h[2];
	int st[2];
	struct sq_blk *b;
	int cur = -1;

	if (past_tail(ctr, idx)) {
		*out = &hole;
		return 0;
	}
	b = blk_get(ctr, idx, true);
	if (!b)
		return -ENOMEM;
	*out = b;
	if (b->state != BLK_UNKNOWN)
		return 0;

	for (int k = 0; k < 2; k++) {
		st[k] = sq_ctr_read_slot(ctr, idx, k, &h[k], NULL, 0);
		if (st[k] < 0)
			return st[k];
	}
	b->slot = -1;
	b->gen = 0;
	if (st[0] == SQ_SLOT_VALID && st[1] == SQ_SLOT_VALID) {
		if (h[0].gen == h[1].gen) {
			b->state = BLK_DAMAGED;
			b->gen = h[0].gen;
			return 0;
		}
		cur = h[1].gen > h[0].gen;
		/* An older version left by a sync that never came. */
		set_stale(ctr, idx, b, 1 - cur);
	} else if (st[0] == SQ_SLOT_VALID) {
		cur = 0;
	} else if (st[1] == SQ_SLOT_VALID) {
		cur = 1;
	} else if (st[0] == SQ_SLOT_EMPTY && st[1] == SQ_SLOT_EMPTY) {
		b->state = BLK_HOLE;
		return 0;
	} else {
		b->state = BLK_DAMAGED;
		return 0;
	}
	b->slot = (int8_t)cur;
	b->gen = h[cur].gen;
	b->sum = h[cur].sum;
	b->raw_len = h[cur].raw_len;
	b->stored_len = h[cur].stored_len;
	b->level = h[cur].level;
	b->hdr_len = h[cur].hdr_len;
	b->codec = (uint8_t)h[cur].codec;
	b->state = h[cur].codec == SQ_FMT_CODEC_ZERO ? BLK_ZERO : BLK_DATA;
	return 0;
}

/* ---- open / close ---- */

/* sq_ctr_open() of a file (@fd) or of an @image of @len bytes. */
static int ctr_open(int fd, uint8_t *image, uint64_t len,
		    unsigned create_block_shift, const uint8_t *pre,
		    struct sq_ctr **out)
{
	uint8_t hdr[SQ_FMT_HDR_SIZE];
	char why[128];
	struct sq_ctr *ctr;
	unsigned shift;
	ssize_t n;
	int ret;

	*out = NULL;
	ctr = calloc(1, sizeof(*ctr));
	if (!ctr) {
		free(image);
		return -ENOMEM;
	}
	ctr->fd = fd;
	ctr->image = image;
	ctr->phys_end = len;
	ctr->tail_clean = true;

	if (len == 0) {
		ret = -EINVAL;
		if (create_block_shift < SQ_FMT_MIN_BLOCK_SHIFT ||
		    create_block_shift > SQ_FMT_MAX_BLOCK_SHIFT)
			goto err;
		shift = create_block_shift;
	} else {
		ret = -EBADMSG;
		if (len < SQ_FMT_HDR_SIZE)
			goto err;
		if (pre)
			memcpy(hdr, pre, sizeof(hdr));
		n = pre ? SQ_FMT_HDR_SIZE :
			  src_pread(fd, image, len, hdr, sizeof(hdr), 0);
		if (n < 0) {
			ret = (int)n;
			goto err;
		}
		if (n < SQ_FMT_HDR_SIZE)
			goto err;	/* shrank under us */
		ret = sq_ctr_parse_header(hdr, &shift, &ctr->size,
					  &ctr->size_seq, &ctr->size_slot,
					  why, sizeof(why));
		if (ret)
			goto err;
		ctr->hdr_on_disk = true;
	}
	set_geometry(ctr, shift);
	ctr->tail_clean = ctr->phys_end <=
			  blocks_off(ctr, nblocks(ctr, ctr->size));
	ctr->scratch = malloc(ctr->bs);
	if (!ctr->scratch) {
		ret = -ENOMEM;
		goto err;
	}
	*out = ctr;
	return 0;
err:
	sq_ctr_close(ctr);
	return ret;
}

/* What the @len-byte file in @fd is in @vol (FORMAT.md 2.1).  The
 * header it read, if it read one whole, is left in @hdr and *@got is
 * true, so that the caller need not read it again. */
static int kind_of(int fd, uint64_t len, const struct sq_vol *vol,
		   uint8_t *hdr, bool *got)
{
	ssize_t n;

	*got = false;
	/* A legacy volume's files are all containers, as before version 5;
	 * so is an empty file anywhere. */
	if (!vol || vol->legacy || len == 0)
		return SQ_KIND_CONTAINER;
	if (len < SQ_FMT_HDR_SIZE) {
		n = sq_pread_full(fd, hdr, 1, 0);
		if (n < 0)
			return (int)n;
		/* A stub is one zero byte (13); it lost its reference. */
		if (len == 1 && n == 1 && hdr[0] == 0)
			return SQ_KIND_LOST_STUB;
		return SQ_KIND_PLAIN;
	}
	n = sq_pread_full(fd, hdr, SQ_FMT_HDR_SIZE, 0);
	if (n < 0)
		return (int)n;
	if (n < SQ_FMT_HDR_SIZE)
		return SQ_KIND_PLAIN;	/* shrank under us */
	*got = true;
	/* Either copy of the id will do: damage must hit both to make a
	 * container look plain. */
	if (vol->id && (sq_get_le64(hdr + SQ_FMT_OFF_VOLUME_ID) == vol->id ||
			sq_get_le64(hdr + SQ_FMT_OFF_VOLUME_ID2) == vol->id))
		return SQ_KIND_CONTAINER;
	if (!memcmp(hdr, SQ_FMT_MAGIC, SQ_FMT_MAGIC_LEN))
		return SQ_KIND_LOOKALIKE;
	return SQ_KIND_PLAIN;
}

/* kind_of() of the file in @fd, its stat in *@st; a stub that lost its
 * reference is -EBADMSG (a handle or a size must not come of it). */
static int classify(int fd, const struct sq_vol *vol, struct stat *st,
		    uint8_t *hdr, bool *got)
{
	int k;

	if (fstat(fd, st) < 0)
		return -errno;
	k = kind_of(fd, (uint64_t)st->st_size, vol, hdr, got);
	return k == SQ_KIND_LOST_STUB ? -EBADMSG : k;
}

int sq_ctr_kind(int fd, const struct sq_vol *vol)
{
	uint8_t hdr[SQ_FMT_HDR_SIZE];
	struct stat st;
	bool got;

	if (fstat(fd, &st) < 0)
		return -errno;
	return kind_of(fd, (uint64_t)st.st_size, vol, hdr, &got);
}

/* A handle on the plain file in @fd, @len bytes. */
static int plain_open(int fd, uint64_t len, unsigned shift,
		      struct sq_ctr **out)
{
	struct sq_ctr *ctr = calloc(1, sizeof(*ctr));

	if (!ctr)
		return -ENOMEM;
	ctr->fd = fd;
	ctr->plain = true;
	ctr->hdr_on_disk = true;	/* nothing to create */
	ctr->tail_clean = true;
	ctr->size = ctr->phys_end = len;
	set_geometry(ctr, shift ? shift : PLAIN_DEFAULT_SHIFT);
	*out = ctr;
	return 0;
}

int sq_ctr_open_vol(int fd, unsigned create_block_shift,
		    const struct sq_vol *vol, struct sq_ctr **out)
{
	uint8_t hdr[SQ_FMT_HDR_SIZE];
	struct stat st;
	bool got;
	int k, ret;

	*out = NULL;
	k = classify(fd, vol, &st, hdr, &got);
	if (k < 0)
		return k;
	if (k != SQ_KIND_CONTAINER) {
		ret = plain_open(fd, (uint64_t)st.st_size, create_block_shift,
				 out);
		if (!ret) {
			(*out)->lookalike = k == SQ_KIND_LOOKALIKE;
			(*out)->vol_id = vol->id;
		}
		return ret;
	}
	/* Readahead stays on for plain files: they have no holes to fill. */
	sq_ctr_no_readahead(fd);
	ret = ctr_open(fd, NULL, (uint64_t)st.st_size, create_block_shift,
		       got ? hdr : NULL, out);
	if (!ret && vol)
		(*out)->vol_id = vol->id;
	return ret;
}

int sq_ctr_open(int fd, unsigned create_block_shift, struct sq_ctr **out)
{
	return sq_ctr_open_vol(fd, create_block_shift, NULL, out);
}

bool sq_ctr_is_plain(const struct sq_ctr *ctr)
{
	return ctr->plain;
}

bool sq_ctr_is_lookalike(const struct sq_ctr *ctr)
{
	return ctr->lookalike;
}

int sq_ctr_open_image(void *image, size_t len, struct sq_ctr **out)
{
	*out = NULL;
	if (len == 0) {
		/* An empty image would be a container to create. */
		free(image);
		return -EBADMSG;
	}
	return ctr_open(-1, image, len, SQ_FMT_MIN_BLOCK_SHIFT, NULL, out);
}

void sq_ctr_close(struct sq_ctr *ctr)
{
	if (!ctr)
		return;
	for (size_t i = 0; i < ctr->npages; i++)
		free(ctr->pages[i].ents);
	free(ctr->pages);
	free(ctr->stale);
	free(ctr->scratch);
	free(ctr->image);
	free(ctr);
}

uint64_t sq_ctr_size(const struct sq_ctr *ctr)
{
	return ctr->size;
}

uint32_t sq_ctr_block_size(const struct sq_ctr *ctr)
{
	return ctr->bs;
}

unsigned sq_ctr_block_shift(const struct sq_ctr *ctr)
{
	return ctr->shift;
}

int sq_ctr_peek(int fd, const struct sq_vol *vol, uint64_t *size,
		unsigned *shift, bool *plain)
{
	uint8_t hdr[SQ_FMT_HDR_SIZE];
	char why[128];
	struct stat st;
	uint64_t seq;
	bool got;
	int slot, k;
	ssize_t n;

	if (plain)
		*plain = false;
	k = classify(fd, vol, &st, hdr, &got);
	if (k < 0)
		return k;
	if (k != SQ_KIND_CONTAINER) {
		*size = (uint64_t)st.st_size;
		*shift = 0;
		if (plain)
			*plain = true;
		return 0;
	}
	sq_ctr_no_readahead(fd);
	if (st.st_size == 0) {
		*size = 0;
		*shift = 0;
		return 0;
	}
	if (st.st_size < SQ_FMT_HDR_SIZE)
		return -EBADMSG;
	n = got ? SQ_FMT_HDR_SIZE : sq_pread_full(fd, hdr, sizeof(hdr), 0);
	if (n < 0)
		return (int)n;
	if (n < SQ_FMT_HDR_SIZE)
		return -EBADMSG;
	return sq_ctr_parse_header(hdr, shift, size, &seq, &slot, why,
				   sizeof(why));
}

int sq_ctr_peek_size(int fd, const struct sq_vol *vol, uint64_t *size)
{
	unsigned shift;

	return sq_ctr_peek(fd, vol, size, &shift, NULL);
}

int sq_ctr_image_size(const void *image, size_t len, uint64_t *size)
{
	char why[128];
	unsigned shift;
	uint64_t seq;
	int slot;

	if (len < SQ_FMT_HDR_SIZE)
		return -EBADMSG;
	return sq_ctr_parse_header(image, &shift, size, &seq, &slot, why,
				   sizeof(why));
}

/* ---- reading blocks ---- */

/*
 * Reads, checks and decodes one payload of @stored_len bytes at @off into
 * the first raw_len bytes of @buf (bs bytes; the rest is the caller's to
 * zero); compressed payloads go through @scratch (bs bytes).
 */
static ssize_t payload_read(int fd, const uint8_t *image,
			    uint64_t image_len, uint32_t bs, off_t off,
			    int codec, uint32_t raw_len, uint32_t stored_len,
			    uint64_t want, struct sq_codec_ctx *cctx,
			    void *scratch, void *buf, char *why, size_t whylen)
{
	/* Raw payloads land in place; compressed ones go through scratch. */
	uint8_t *dst = codec == SQ_CODEC_NONE ? buf : scratch;
	uint64_t sum;
	ssize_t n;

	if (codec == SQ_FMT_CODEC_ZERO)
		return 0;
	/* sq_rec_decode() bounded stored_len and raw_len by bs. */
	n = src_pread(fd, image, image_len, dst, stored_len, off);
	if (n < 0)
		return n;
	if ((size_t)n < stored_len) {
		snprintf(why, whylen, "payload cut short by end of file "
			 "(%zd of %u bytes)", n, stored_len);
		return -EBADMSG;
	}
	sum = XXH3_64bits(dst, stored_len);
	if (sum != want) {
		snprintf(why, whylen, "payload checksum 0x%016llx, "
			 "expected 0x%016llx", (unsigned long long)sum,
			 (unsigned long long)want);
		return -EBADMSG;
	}
	if (codec != SQ_CODEC_NONE) {
		if (!sq_codec_info(codec)) {
			snprintf(why, whylen, "unknown codec %d", codec);
			return -EBADMSG;
		}
		n = sq_codec_decompress(cctx, codec, dst, stored_len, buf,
					raw_len);
		if (n == -ENOMEM)
			return n;
		if (n != (ssize_t)raw_len) {
			snprintf(why, whylen, "%s payload of %u bytes does "
				 "not decompress to %u bytes",
				 sq_codec_info(codec)->name, stored_len,
				 raw_len);
			return -EBADMSG;
		}
	}
	(void)bs;
	return raw_len;
}

ssize_t sq_ctr_read_payload(struct sq_ctr *ctr, struct sq_codec_ctx *cctx,
			    uint64_t idx, int k, const struct sq_rec_hdr *h,
			    void *buf, char *why, size_t whylen)
{
	off_t off = sq_ctr_slot_off(ctr, idx, k) + SQ_FMT_REC_PREFIX +
		    h->hdr_len;

	ssize_t n;

	n = payload_read(ctr->fd, ctr->image, ctr->phys_end, ctr->bs, off,
			 h->codec, h->raw_len, h->stored_len, h->sum, cctx,
			 ctr->scratch, buf, why, whylen);
	if (n >= 0)
		memset((uint8_t *)buf + n, 0, ctr->bs - (size_t)n);
	return n;
}

static void blk_to_hdr(uint64_t idx, const struct sq_blk *b,
		       struct sq_rec_hdr *h)
{
	h->block = idx;
	h->gen = b->gen;
	h->codec = b->codec;
	h->level = b->level;
	h->raw_len = b->raw_len;
	h->stored_len = b->stored_len;
	h->sum = b->sum;
	h->hdr_len = b->hdr_len;
}

ssize_t sq_ctr_read_block(struct sq_ctr *ctr, struct sq_codec_ctx *cctx,
			  uint64_t idx, void *buf)
{
	struct sq_rec_hdr h;
	struct sq_blk *b;
	char why[160];
	int ret;

	if (ctr->plain) {
		struct sq_ctr_loc loc;

		sq_ctr_locate(ctr, idx, &loc);
		return sq_ctr_read_loc(&loc, NULL, NULL, buf, why,
				       sizeof(why));
	}
	if (idx >= nblocks(ctr, ctr->size) && !ctr->tail_clean)
		goto hole;
	ret = load_block(ctr, idx, &b);
	if (ret)
		return ret;
	switch (b->state) {
	case BLK_DATA:
		blk_to_hdr(idx, b, &h);
		return sq_ctr_read_payload(ctr, cctx, idx, b->slot, &h, buf,
					   why, sizeof(why));
	case BLK_DAMAGED:
		return -EBADMSG;
	default:
		break;
	}
hole:
	memset(buf, 0, ctr->bs);
	return 0;
}

void sq_ctr_prefetch(struct sq_ctr *ctr, uint64_t first, uint64_t count)
{
	uint64_t end = nblocks(ctr, ctr->size);

	if (first >= end || ctr->image)
		return;
	if (ctr->plain) {
		/* The backing's own readahead does the rest. */
		if (count > end - first)
			count = end - first;
		(void)posix_fadvise(ctr->fd, (off_t)(first << ctr->shift),
				    (off_t)(count << ctr->shift),
				    POSIX_FADV_WILLNEED);
		return;
	}
	if (count > end - first)
		count = end - first;
	for (uint64_t idx = first; idx < first + count; idx++) {
		struct sq_blk *b = blk_get(ctr, idx, false);

		if (b && b->state == BLK_DATA) {
			off_t off = sq_ctr_slot_off(ctr, idx, b->slot);

			(void)posix_fadvise(ctr->fd, off, SQ_FMT_REC_PREFIX +
					    b->hdr_len + b->stored_len,
					    POSIX_FADV_WILLNEED);
			continue;
		}
		if (b && b->state != BLK_UNKNOWN)
			continue;	/* a hole, zeros or damaged */
		for (int k = 0; k < 2; k++) {
			off_t off = sq_ctr_slot_off(ctr, idx, k);

			if ((uint64_t)off < ctr->phys_end)
				(void)posix_fadvise(ctr->fd, off,
						    SQ_REC_HEAD_MAX,
						    POSIX_FADV_WILLNEED);
		}
	}
}

uint64_t sq_ctr_seq(const struct sq_ctr *ctr)
{
	return ctr->seq;
}

int sq_ctr_locate(struct sq_ctr *ctr, uint64_t idx, struct sq_ctr_loc *loc)
{
	struct sq_blk *b;
	int ret;

	memset(loc, 0, sizeof(*loc));
	loc->fd = ctr->fd;
	loc->image = ctr->image;
	loc->image_len = ctr->phys_end;
	loc->bs = ctr->bs;
	if (ctr->plain) {
		if (idx >= nblocks(ctr, ctr->size))
			return 0;
		loc->data = loc->plain = true;
		loc->off = (off_t)(idx << ctr->shift);
		loc->codec = SQ_CODEC_NONE;
		loc->raw_len = loc->stored_len =
			(uint32_t)min_u64(ctr->bs, ctr->size -
					  ((uint64_t)loc->off));
		return 0;
	}
	if (idx >= nblocks(ctr, ctr->size) && !ctr->tail_clean)
		return 0;
	ret = load_block(ctr, idx, &b);
	if (ret)
		return ret;
	if (b->state == BLK_DAMAGED)
		return -EBADMSG;
	if (b->state != BLK_DATA)
		return 0;
	loc->data = true;
	loc->off = sq_ctr_slot_off(ctr, idx, b->slot) + SQ_FMT_REC_PREFIX +
		   b->hdr_len;
	loc->codec = b->codec;
	loc->raw_len = b->raw_len;
	loc->stored_len = b->stored_len;
	loc->sum = b->sum;
	return 0;
}

ssize_t sq_ctr_read_loc_head(const struct sq_ctr_loc *loc,
			     struct sq_codec_ctx *cctx, void *scratch,
			     void *buf, char *why, size_t whylen)
{
	if (!loc->data)
		return 0;
	if (loc->plain) {
		ssize_t n = sq_pread_full(loc->fd, buf, loc->raw_len,
					  loc->off);

		/* Cut short by someone else: the rest reads as zeros. */
		if (n >= 0 && (uint32_t)n < loc->raw_len)
			memset((uint8_t *)buf + n, 0, loc->raw_len - (size_t)n);
		return n < 0 ? n : (ssize_t)loc->raw_len;
	}
	return payload_read(loc->fd, loc->image, loc->image_len, loc->bs,
			    loc->off, loc->codec,
			    loc->raw_len, loc->stored_len, loc->sum, cctx,
			    scratch, buf, why, whylen);
}

ssize_t sq_ctr_read_loc(const struct sq_ctr_loc *loc,
			struct sq_codec_ctx *cctx, void *scratch, void *buf,
			char *why, size_t whylen)
{
	ssize_t n = sq_ctr_read_loc_head(loc, cctx, scratch, buf, why, whylen);

	if (n >= 0)
		memset((uint8_t *)buf + n, 0, loc->bs - (size_t)n);
	return n;
}

ssize_t sq_ctr_compact_image(int fd, const struct sq_vol *vol, void *buf,
			     size_t cap)
{
	struct sq_ctr *ctr;
	struct sq_blk *b;
	size_t len = SQ_FMT_HDR_SIZE;
	ssize_t ret;

	ret = sq_ctr_open_vol(fd, SQ_FMT_MIN_BLOCK_SHIFT, vol, &ctr);
	if (ret)
		return ret;
	ret = 0;
	/* A plain file is converted before it is packed. */
	if (ctr->plain)
		goto out;
	/* One block at most, and no record left past it. */
	if (!ctr->hdr_on_disk || ctr->size > ctr->bs || !ctr->tail_clean ||
	    cap < SQ_FMT_HDR_SIZE)
		goto out;
	ret = load_block(ctr, 0, &b);
	if (ret)
		goto out;
	if (b->state == BLK_DAMAGED) {
		ret = -EBADMSG;
		goto out;
	}
	if (b->state == BLK_DATA || b->state == BLK_ZERO)
		len += SQ_FMT_REC_PREFIX + b->hdr_len +
		       (b->state == BLK_DATA ? b->stored_len : 0);
	ret = 0;
	if (len > cap)
		goto out;
	ret = sq_pread_full(fd, buf, SQ_FMT_HDR_SIZE, 0);
	if (ret >= 0 && ret != SQ_FMT_HDR_SIZE)
		ret = -EBADMSG;
	if (ret >= 0 && len > SQ_FMT_HDR_SIZE) {
		/* The record names its block, not its slot: in slot 0 it
		 * is the same record. */
		size_t rlen = len - SQ_FMT_HDR_SIZE;

		ret = sq_pread_full(fd, (uint8_t *)buf + SQ_FMT_HDR_SIZE,
				    rlen, sq_ctr_slot_off(ctr, 0, b->slot));
		if (ret >= 0 && (size_t)ret != rlen)
			ret = -EBADMSG;
	}
	if (ret >= 0)
		ret = (ssize_t)len;
out:
	sq_ctr_close(ctr);
	return ret;
}

int sq_ctr_block_info(struct sq_ctr *ctr, uint64_t idx,
		      struct sq_ctr_block_info *info)
{
	struct sq_blk *b;
	int ret;

	memset(info, 0, sizeof(*info));
	info->slot = -1;
	if (ctr->plain) {
		struct sq_ctr_loc loc;

		sq_ctr_locate(ctr, idx, &loc);
		if (loc.data) {
			info->present = true;
			info->codec = SQ_CODEC_NONE;
			info->raw_len = info->stored_len = loc.raw_len;
			info->slot = 0;
		}
		return 0;
	}
	ret = load_block(ctr, idx, &b);
	if (ret)
		return ret;
	if (b->state == BLK_DAMAGED)
		return -EBADMSG;
	if (b->state == BLK_HOLE)
		return 0;
	info->present = true;
	info->zero = b->state == BLK_ZERO;
	info->codec = b->codec;
	info->level = b->level;
	info->raw_len = b->raw_len;
	info->stored_len = b->stored_len;
	info->gen = b->gen;
	info->slot = b->slot;
	return 0;
}

int64_t sq_ctr_skip_holes(struct sq_ctr *ctr, uint64_t idx, uint64_t end)
{
	off_t off, d;
	uint64_t j;

	if (idx >= end)
		return (int64_t)end;
	off = ctr->plain ? (off_t)(idx << ctr->shift) :
			   sq_ctr_slot_off(ctr, idx, 0);
	if ((uint64_t)off >= ctr->phys_end)
		return (int64_t)end;
	if (ctr->image)
		return (int64_t)idx;	/* compact: no holes to skip */
	d = lseek(ctr->fd, off, SEEK_DATA);
	if (d < 0) {
		if (errno == ENXIO)
			return (int64_t)end;
		/* No SEEK_DATA here: every block may hold data. */
		if (errno == EINVAL || errno == EOPNOTSUPP)
			return (int64_t)idx;
		return -errno;
	}
	j = ctr->plain ? (uint64_t)d >> ctr->shift :
			 ((uint64_t)d - SQ_FMT_HDR_SIZE) / (2 * ctr->slot_size);
	if (j < idx)
		return (int64_t)idx;
	return (int64_t)(j < end ? j : end);
}

int64_t sq_ctr_next_data(struct sq_ctr *ctr, uint64_t idx)
{
	uint64_t end = nblocks(ctr, ctr->size);

	if (ctr->plain)
		return sq_ctr_skip_holes(ctr, idx, end);
	while (idx < end) {
		struct sq_blk *b = blk_get(ctr, idx, false);
		int ret;

		if (!b || b->state == BLK_UNKNOWN) {
			/* Let the backing filesystem skip unallocated
			 * ranges instead of probing each block. */
			int64_t j = sq_ctr_skip_holes(ctr, idx, end);

			if (j < 0)
				return j;
			if ((uint64_t)j > idx) {
				idx = (uint64_t)j;
				continue;
			}
		}
		ret = load_block(ctr, idx, &b);
		if (ret)
			return ret;
		/* Damaged blocks count as data: reading them reports it. */
		if (b->state == BLK_DATA || b->state == BLK_DAMAGED)
			return (int64_t)idx;
		idx++;
	}
	return (int64_t)end;
}

/* ---- writing ---- */

/*
 * Frees what an interrupted shrink left past the end, before anything can
 * make it visible again.  Synced, so a power loss cannot undo the free
 * while keeping a later size record.
 */
static int clean_tail(struct sq_ctr *ctr)
{
	uint64_t nb = nblocks(ctr, ctr->size);
	uint64_t start = blocks_off(ctr, nb);
	int ret;

	if (ctr->tail_clean)
		return 0;
	if (ctr->phys_end > start) {
		ret = punch(ctr->fd, start, ctr->phys_end - start);
		if (ret)
			return ret;
		if (fdatasync(ctr->fd) < 0)
			return -errno;
	}
	forget_blocks(ctr, nb, UINT64_MAX);
	ctr->tail_clean = true;
	return 0;
}

static int store_record(struct sq_ctr *ctr, uint64_t idx,
			struct sq_rec_hdr *h, const void *payload)
{
	uint8_t head[SQ_REC_HEAD_MAX];
	struct sq_blk *b;
	ssize_t hlen;
	uint64_t end;
	off_t off;
	int target, ret;
	bool had;

	if (idx >= ctr->max_blocks)
		return -EFBIG;
	ret = ensure_header(ctr);
	if (ret)
		return ret;
	if (idx >= nblocks(ctr, ctr->size)) {
		ret = clean_tail(ctr);
		if (ret)
			return ret;
	}
	ret = load_block(ctr, idx, &b);
	if (ret)
		return ret;

	had = b->state != BLK_HOLE;
	target = b->slot >= 0 ? 1 - b->slot : 0;
	h->block = idx;
	h->gen = b->gen + 1;
	hlen = sq_rec_encode(h, head);
	if (hlen < 0)
		return (int)hlen;
	off = sq_ctr_slot_off(ctr, idx, target);

	/*
	 * Payload first, header last: until the header is complete, the
	 * slot holds nothing that outranks the current version.
	 */
	if (h->stored_len) {
		ret = sq_pwrite_full(ctr->fd, payload, h->stored_len,
				     off + hlen);
		if (ret)
			goto fail;
	}
	ret = sq_pwrite_full(ctr->fd, head, (size_t)hlen, off);
	if (ret)
		goto fail;
	end = (uint64_t)off + (uint64_t)hlen + h->stored_len;
	if (end > ctr->phys_end)
		ctr->phys_end = end;

	b->gen = h->gen;
	b->sum = h->sum;
	b->raw_len = h->raw_len;
	b->stored_len = h->stored_len;
	b->level = h->level;
	b->hdr_len = h->hdr_len;
	b->codec = (uint8_t)h->codec;
	b->slot = (int8_t)target;
	b->state = h->codec == SQ_FMT_CODEC_ZERO ? BLK_ZERO : BLK_DATA;
	clear_stale(ctr, b, target);
	if (had)
		set_stale(ctr, idx, b, 1 - target);
	return 0;
fail:
	/* The slot may hold part of a record now: learn it again. */
	b->state = BLK_UNKNOWN;
	return ret;
}

static int plain_promote(struct sq_ctr *ctr);

int sq_ctr_write_block(struct sq_ctr *ctr, uint64_t idx, int codec, int level,
		       uint32_t raw_len, const void *payload,
		       uint32_t stored_len)
{
	struct sq_rec_hdr h = {
		.codec = codec,
		.level = level,
		.raw_len = raw_len,
		.stored_len = stored_len,
	};

	ctr->seq++;	/* see sq_ctr_locate() */
	if (raw_len < 1 || raw_len > ctr->bs || stored_len < 1 ||
	    stored_len > ctr->bs || !sq_codec_info(codec) ||
	    (codec == SQ_CODEC_NONE && stored_len != raw_len))
		return -EINVAL;
	if (ctr->plain) {
		uint64_t off = idx << ctr->shift;
		int ret;

		/* In place, raw: a plain file stays one until converted. */
		if (codec != SQ_CODEC_NONE)
			return -EINVAL;
		if (off >= ctr->size)
			return 0;
		if (raw_len > ctr->size - off)
			raw_len = (uint32_t)(ctr->size - off);
		ret = sq_pwrite_full(ctr->fd, payload, raw_len, (off_t)off);
		if (!ret && off + raw_len > ctr->phys_end)
			ctr->phys_end = off + raw_len;
		return ret ? ret : plain_promote(ctr);
	}
	h.sum = XXH3_64bits(payload, stored_len);
	return store_record(ctr, idx, &h, payload);
}

/*
 * A plain file left holding one zero byte would read as a packed file's
 * stub that lost its reference (FORMAT.md 2.1): it becomes a container of
 * that byte instead, in place.  Not crash-atomic: a crash in between
 * leaves it empty (its one byte was being written anyway).
 */
static int plain_promote(struct sq_ctr *ctr)
{
	uint8_t b = 1;
	ssize_t n;
	int ret;

	if (!ctr->plain || ctr->size != 1 || !ctr->vol_id)
		return 0;
	n = sq_pread_full(ctr->fd, &b, 1, 0);
	if (n < 0)
		return (int)n;
	if (n != 1 || b != 0)
		return 0;
	if (!ctr->scratch && !(ctr->scratch = malloc(ctr->bs)))
		return -ENOMEM;
	if (ftruncate(ctr->fd, 0) < 0)
		return -errno;
	ctr->seq++;
	ctr->plain = ctr->lookalike = false;
	ctr->hdr_on_disk = false;
	ctr->phys_end = 0;
	ctr->tail_clean = true;
	ctr->size_dirty = true;
	ret = sq_ctr_write_block(ctr, 0, SQ_CODEC_NONE, 0, 1, &b, 1);
	return ret ? ret : sq_ctr_write_size(ctr);
}

/* Blocks [@first, @first + @count) of a plain file read as zeros: a hole
 * where the backing can punch one, zeros written otherwise. */
static int plain_zero(struct sq_ctr *ctr, uint64_t first, uint64_t count)
{
	uint64_t off, end;
	int ret;

	if (first >= nblocks(ctr, ctr->size))
		return 0;
	off = first << ctr->shift;
	end = count >= nblocks(ctr, ctr->size) - first ? ctr->size :
	      (first + count) << ctr->shift;
	if (end > ctr->phys_end)
		end = ctr->phys_end;
	if (off >= end)
		return 0;
	ret = punch(ctr->fd, off, end - off);
	if (ret == -EOPNOTSUPP) {
		static const uint8_t zeros[4096];

		for (ret = 0; off < end && !ret; off += sizeof(zeros))
			ret = sq_pwrite_full(ctr->fd, zeros,
					     min_u64(sizeof(zeros), end - off),
					     (off_t)off);
	}
	return ret;
}

int sq_ctr_zero_block(struct sq_ctr *ctr, uint64_t idx)
{
	struct sq_rec_hdr h = {
		.codec = SQ_FMT_CODEC_ZERO,
		.raw_len = ctr->bs,
		.sum = XXH3_64bits(NULL, 0),
	};
	struct sq_blk *b;
	int ret;

	ctr->seq++;	/* see sq_ctr_locate() */
	if (ctr->plain) {
		ret = plain_zero(ctr, idx, 1);
		return ret ? ret : plain_promote(ctr);
	}
	ret = load_block(ctr, idx, &b);
	if (ret)
		return ret;
	if (b->state == BLK_HOLE || b->state == BLK_ZERO)
		return 0;
	return store_record(ctr, idx, &h, NULL);
}

int sq_ctr_punch_blocks(struct sq_ctr *ctr, uint64_t first, uint64_t count)
{
	uint64_t start, end;
	int ret;

	ctr->seq++;	/* see sq_ctr_locate() */
	if (!count)
		return 0;
	if (first > UINT64_MAX - count)
		count = UINT64_MAX - first;
	if (ctr->plain)
		return plain_zero(ctr, first, count);
	start = blocks_off(ctr, first);
	end = blocks_off(ctr, first + count);
	if (end > ctr->phys_end)
		end = ctr->phys_end;
	if (start < end) {
		ret = punch(ctr->fd, start, end - start);
		if (ret)
			return ret;
	}
	forget_blocks(ctr, first, first + count);
	return 0;
}

int sq_ctr_set_size(struct sq_ctr *ctr, uint64_t size)
{
	uint64_t old = ctr->size, nb, cut;
	int ret;

	ctr->seq++;	/* see sq_ctr_locate() */
	if ((size >> ctr->shift) >= ctr->max_blocks)
		return -EFBIG;
	if (ctr->plain) {
		/* As a container's: shrinking at once, growing once the
		 * data is written (sq_ctr_write_size()). */
		if (size < old) {
			if (ftruncate(ctr->fd, (off_t)size) < 0)
				return -errno;
			ctr->phys_end = size;
		}
		ctr->size = size;
		ctr->size_dirty = size > old || ctr->size_dirty;
		return size < old ? plain_promote(ctr) : 0;
	}
	if (!ctr->hdr_on_disk) {
		/* Nothing on disk yet: the header and size come with the
		 * first data or sq_ctr_write_size(). */
		ctr->size = size;
		ctr->size_dirty = size != 0;
		return 0;
	}
	if (size > old) {
		/* Growing is recorded by sq_ctr_write_size(), after the
		 * blocks written for it, so a crash never shows a size
		 * whose data is missing. */
		ret = clean_tail(ctr);
		if (ret)
			return ret;
		ctr->size = size;
		ctr->size_dirty = true;
		return 0;
	}
	if (size == old)
		return 0;
	/* Shrinking: the size record first, then the blocks go. */
	ctr->size = size;
	ret = write_size(ctr);
	if (ret) {
		ctr->size = old;
		return ret;
	}

	/* The new size is recorded: blocks past it may go. */
	nb = nblocks(ctr, size);
	cut = blocks_off(ctr, nb);
	if (ctr->phys_end > cut) {
		if (ftruncate(ctr->fd, (off_t)cut) < 0) {
			/* Left behind: freed before the size grows again.
			 * The new size is recorded, so the shrink succeeded. */
			ctr->tail_clean = false;
			return 0;
		}
		ctr->phys_end = cut;
	}
	forget_blocks(ctr, nb, UINT64_MAX);
	ctr->tail_clean = true;
	return 0;
}

bool sq_ctr_size_pending(const struct sq_ctr *ctr)
{
	return ctr->size_dirty;
}

int sq_ctr_write_size(struct sq_ctr *ctr)
{
	int ret;

	if (!ctr->size_dirty)
		return 0;
	if (ctr->plain) {
		if (ftruncate(ctr->fd, (off_t)ctr->size) < 0)
			return -errno;
		ctr->phys_end = ctr->size;
		ctr->size_dirty = false;
		return 0;
	}
	ret = ensure_header(ctr);
	if (ret)
		return ret;
	return ctr->size_dirty ? write_size(ctr) : 0;
}

int sq_ctr_sync(struct sq_ctr *ctr)
{
	size_t i;
	int ret;

	ctr->seq++;	/* see sq_ctr_locate() */
	ret = sq_ctr_write_size(ctr);
	if (ret)
		return ret;
	if (fdatasync(ctr->fd) < 0)
		return -errno;

	/* The new versions are durable now: the old ones may go. */
	for (i = 0; i < ctr->nstale; i++) {
		struct stale_ref *s = &ctr->stale[i];
		struct sq_blk *b = blk_get(ctr, s->idx, false);
		uint64_t off, len = ctr->slot_size;

		if (!b || !(b->stale & (1u << s->slot)))
			continue;
		off = (uint64_t)sq_ctr_slot_off(ctr, s->idx, s->slot);
		/* A slot starts 128 bytes into a page, after the end of the
		 * previous slot's padding, which no record reaches (the
		 * longest ends 4096 - 272 bytes before it): the punch takes
		 * those bytes too, so the slot's first page is freed, not
		 * only zeroed.  Not for the first slot: its page holds the
		 * header. */
		if (off > SQ_FMT_HDR_SIZE && off % 4096 <= SQ_FMT_HDR_SIZE) {
			len += off % 4096;
			off -= off % 4096;
		}
		if (off < ctr->phys_end) {
			if (len > ctr->phys_end - off)
				len = ctr->phys_end - off;
			ret = punch(ctr->fd, off, len);
			/* Without hole punching the old version just stays,
			 * outranked. */
			if (ret == -EOPNOTSUPP)
				ret = 0;
			if (ret)
				break;
		}
		clear_stale(ctr, b, s->slot);
	}
	/* Keep what is left (after an error) for the next sync. */
	if (i && i < ctr->nstale)
		memmove(ctr->stale, ctr->stale + i, (ctr->nstale - i) *
			sizeof(*ctr->stale));
	ctr->nstale -= i;
	if (ctr->stale_count == 0)
		ctr->nstale = 0;
	return ret;
}

bool sq_ctr_has_stale(const struct sq_ctr *ctr)
{
	return ctr->stale_count > 0;
}
