/*
 * tests/fuzz/fuzz_container.c - libFuzzer target: the input is a whole
 * container file.  Opens it, reads every block it can reach, asks for block
 * info and the next data block, then runs the fsck check; the block reads
 * and the check must agree on which blocks are damaged.  The same bytes
 * opened as an image in memory (how a packed file is read) must read
 * exactly as the file does.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "codec/codec.h"
#include "meta/container.h"
#include "meta/format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads of more blocks than this add nothing but time. */
#define MAX_READ_BLOCKS 256

static struct sq_codec_ctx *cctx;
static void *blockbuf, *imagebuf;

static void ignore_problem(void *arg, uint64_t block, const char *msg)
{
	(void)arg;
	(void)block;
	(void)msg;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sq_ctr *ctr = NULL, *img = NULL;
	struct sq_ctr_check rep;
	bool read_damage = false;
	uint64_t nblocks, reach, i;
	int fd, r;

	if (!cctx) {
		if (sq_codec_ctx_new(&cctx) != 0)
			abort();
		blockbuf = malloc((size_t)1 << SQ_FMT_MAX_BLOCK_SHIFT);
		imagebuf = malloc((size_t)1 << SQ_FMT_MAX_BLOCK_SHIFT);
		if (!blockbuf || !imagebuf)
			abort();
	}
	fd = memfd_create("fuzz_container", MFD_CLOEXEC);
	if (fd < 0 || write_all(fd, data, size) != 0)
		abort();

	r = sq_ctr_open(fd, SQ_FMT_MIN_BLOCK_SHIFT, &ctr);
	if (size) {
		uint8_t *copy = malloc(size);
		int ri;

		if (!copy)
			abort();
		memcpy(copy, data, size);
		ri = sq_ctr_open_image(copy, size, &img);
		if (ri != r)
			abort();
	}
	if (r == 0) {
		uint32_t bs = sq_ctr_block_size(ctr);
		uint64_t slot = (uint64_t)bs + SQ_FMT_SLOT_PAD;

		nblocks = (sq_ctr_size(ctr) + bs - 1) / bs;
		/* Blocks whose slots lie (partly) inside the file. */
		reach = size > SQ_FMT_HDR_SIZE ?
			(size - SQ_FMT_HDR_SIZE) / (2 * slot) + 1 : 0;
		if (reach > nblocks)
			reach = nblocks;
		if (reach > MAX_READ_BLOCKS)
			reach = MAX_READ_BLOCKS;
		for (i = 0; i < reach; i++) {
			struct sq_ctr_block_info bi;
			ssize_t n;

			n = sq_ctr_read_block(ctr, cctx, i, blockbuf);
			if (n == -EBADMSG)
				read_damage = true;
			else if (n < 0 || n > (ssize_t)bs)
				abort();
			if (img) {
				ssize_t m = sq_ctr_read_block(img, cctx, i,
							      imagebuf);

				if (m != n || (n >= 0 &&
					       memcmp(blockbuf, imagebuf, bs)))
					abort();
			}
			r = sq_ctr_block_info(ctr, i, &bi);
			if (r != 0 && r != -EBADMSG)
				abort();
			if (r == 0 && bi.present && (bi.slot < 0 ||
						     bi.slot > 1))
				abort();
		}
		/* Past the reachable blocks everything is a hole. */
		if (nblocks > reach &&
		    sq_ctr_read_block(ctr, cctx, nblocks - 1, blockbuf) != 0)
			abort();
		if (sq_ctr_next_data(ctr, 0) < 0)
			abort();
		if (img && sq_ctr_next_data(img, 0) < 0)
			abort();
		sq_ctr_close(ctr);
		sq_ctr_close(img);
	} else if (r != -EBADMSG) {
		abort();
	}

	r = sq_ctr_check_fd(fd, NULL, cctx, &rep, ignore_problem, NULL);
	if (r != 0 && r != -EBADMSG)
		abort();
	/* fsck must flag what reading found damaged, and a file it calls
	 * sound must open. */
	if (read_damage && r == 0)
		abort();
	if (r == 0 && ctr == NULL && size != 0 &&
	    sq_ctr_open(fd, SQ_FMT_MIN_BLOCK_SHIFT, &ctr) != 0)
		abort();
	close(fd);
	return 0;
}
