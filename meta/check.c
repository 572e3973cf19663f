/*
 * meta/check.c - full verification of one container for fsck: the header,
 * the size records, and every block inside the logical size down to its
 * decompressed payload.  Read-only; reports each problem with what was
 * expected and what was found.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "meta/container_i.h"

struct checker {
	sq_ctr_problem_fn fn;
	void *arg;
	uint64_t problems;
};

static void problem(struct checker *c, uint64_t block, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void problem(struct checker *c, uint64_t block, const char *fmt, ...)
{
	char msg[384];
	va_list ap;

	c->problems++;
	if (!c->fn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->fn(c->arg, block, msg);
}

/* Checks one block inside the size; returns 0 or -errno (I/O only). */
static int check_block(struct sq_ctr *ctr, struct sq_codec_ctx *cctx,
		       uint64_t idx, void *buf, struct sq_ctr_check *rep,
		       struct checker *c)
{
	unsigned long long bi = (unsigned long long)idx;
	struct sq_rec_hdr h[2];
	char why[2][192];
	char pwhy[192];
	int st[2], cur;
	ssize_t n;

	for (int k = 0; k < 2; k++) {
		why[k][0] = '\0';
		st[k] = sq_ctr_read_slot(ctr, idx, k, &h[k], why[k],
					 sizeof(why[k]));
		if (st[k] < 0)
			return st[k];
	}
	if (st[0] == SQ_SLOT_VALID && st[1] == SQ_SLOT_VALID) {
		if (h[0].gen == h[1].gen) {
			problem(c, idx, "block %llu: both slots hold "
				"generation %llu", bi,
				(unsigned long long)h[0].gen);
			rep->damaged++;
			return 0;
		}
		cur = h[1].gen > h[0].gen;
		rep->stale_slots++;
	} else if (st[0] == SQ_SLOT_VALID || st[1] == SQ_SLOT_VALID) {
		cur = st[1] == SQ_SLOT_VALID;
		/* A torn newer header or a damaged older one: outranked,
		 * so nothing is lost; the next write of the block reuses it. */
		if (st[1 - cur] == SQ_SLOT_INVALID)
			rep->stale_slots++;
	} else if (st[0] == SQ_SLOT_EMPTY && st[1] == SQ_SLOT_EMPTY) {
		rep->zero_blocks++;
		return 0;
	} else {
		for (int k = 0; k < 2; k++) {
			if (st[k] == SQ_SLOT_INVALID)
				problem(c, idx, "block %llu: slot %d: %s", bi,
					k, why[k]);
		}
		rep->damaged++;
		return 0;
	}

	if (h[cur].codec == SQ_FMT_CODEC_ZERO) {
		rep->zero_blocks++;
		return 0;
	}
	pwhy[0] = '\0';
	n = sq_ctr_read_payload(ctr, cctx, idx, cur, &h[cur], buf, pwhy,
				sizeof(pwhy));
	if (n == -EBADMSG) {
		problem(c, idx, "block %llu (slot %d, generation %llu): %s",
			bi, cur, (unsigned long long)h[cur].gen, pwhy);
		rep->damaged++;
		return 0;
	}
	if (n < 0)
		return (int)n;
	rep->data_blocks++;
	rep->raw_bytes += h[cur].raw_len;
	rep->stored_bytes += h[cur].stored_len;
	return 0;
}

int sq_ctr_check_fd(int fd, const struct sq_vol *vol,
		    struct sq_codec_ctx *cctx,
		    struct sq_ctr_check *report, sq_ctr_problem_fn fn,
		    void *arg)
{
	struct checker c = { .fn = fn, .arg = arg };
	uint8_t hdr[SQ_FMT_HDR_SIZE];
	struct sq_ctr *ctr = NULL;
	struct stat st;
	char why[160];
	unsigned shift;
	uint64_t size, seq, idx, end;
	void *buf = NULL;
	int slot, ret;
	ssize_t n;

	memset(report, 0, sizeof(*report));
	if (fstat(fd, &st) < 0)
		return -errno;
	ret = sq_ctr_kind(fd, vol);
	if (ret < 0)
		return ret;
	if (ret == SQ_KIND_LOST_STUB) {
		problem(&c, UINT64_MAX, "a 1-byte stub without its pack "
			"reference (copied without xattrs?)");
		return -EBADMSG;
	}
	if (ret != SQ_KIND_CONTAINER) {
		/* Kept as is: nothing of ours to check. */
		report->plain = true;
		report->lookalike = ret == SQ_KIND_LOOKALIKE;
		return 0;
	}
	sq_ctr_no_readahead(fd);
	if (st.st_size == 0)
		return 0;	/* an empty container */
	if (st.st_size < SQ_FMT_HDR_SIZE) {
		problem(&c, UINT64_MAX, "container is %lld bytes, shorter "
			"than its %d-byte header", (long long)st.st_size,
			SQ_FMT_HDR_SIZE);
		return -EBADMSG;
	}
	n = sq_pread_full(fd, hdr, sizeof(hdr), 0);
	if (n < 0)
		return (int)n;
	if (n < SQ_FMT_HDR_SIZE) {
		problem(&c, UINT64_MAX, "header cut short (%zd bytes)", n);
		return -EBADMSG;
	}
	if (sq_ctr_parse_header(hdr, &shift, &size, &seq, &slot, why,
				sizeof(why))) {
		problem(&c, UINT64_MAX, "header: %s", why);
		return -EBADMSG;
	}

	ret = sq_ctr_open_vol(fd, shift, vol, &ctr);
	if (ret)
		goto out;
	buf = malloc(sq_ctr_block_size(ctr));
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	end = sq_ctr_nblocks(ctr);
	report->blocks = end;
	/* Records past the logical size are left over and never read. */
	for (idx = 0; idx < end; idx++) {
		int64_t next = sq_ctr_skip_holes(ctr, idx, end);

		if (next < 0) {
			ret = (int)next;
			goto out;
		}
		report->zero_blocks += (uint64_t)next - idx;
		idx = (uint64_t)next;
		if (idx >= end)
			break;
		ret = check_block(ctr, cctx, idx, buf, report, &c);
		if (ret)
			goto out;
	}
	ret = c.problems ? -EBADMSG : 0;
out:
	free(buf);
	sq_ctr_close(ctr);
	return ret;
}
