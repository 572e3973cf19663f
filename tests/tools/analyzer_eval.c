/*
 * tests/tools/analyzer_eval.c - judges the analyzer: cuts every regular
 * file under the given directories into blocks and stores each block with
 * the analyzer (every policy) and with every fixed codec/level, exactly as
 * squeezefs would (holes for zero blocks, raw below min_saving), and an
 * oracle that keeps the smallest of those.  Prints sizes and speeds per
 * content class and in total, and the acceptance figures of issue 3.
 *
 *   analyzer_eval [-b BS] [-m MIN_SAVING] [-c SPEC,SPEC...] DIR|FILE...
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "analyzer/analyzer.h"
#include "codec/codec.h"

#define MAX_COLS 24
#define DEFAULT_FIXED "lz4:1,lz4:9,zstd:1,zstd:3,zstd:6,zstd:12,zstd:19," \
		      "zlib:6,brotli:5,brotli:9"

/* A way of storing blocks: an analyzer policy or one fixed codec. */
struct col {
	char name[24];
	struct sq_an *an;
	bool is_auto;
	struct sq_an_file *af;	/* per file, auto columns only */
	/* Its own codec state, as a squeezefs worker thread that only ever
	 * runs one codec and level would have. */
	struct sq_codec_ctx *cctx;
	uint64_t out[SQ_AN_CLASS_COUNT];
	uint64_t ns[SQ_AN_CLASS_COUNT];	/* thread CPU time in sq_an_store */
};

struct eval {
	size_t bs;
	double min_saving;
	struct col cols[MAX_COLS];
	int ncols;
	int ref;		/* column whose class labels the rows */
	bool verbose;		/* -v: list the misjudged blocks */
	const char *path;	/* the file being read */
	unsigned char *buf, *scratch;
	/* Per class (of the reference analyzer). */
	uint64_t in[SQ_AN_CLASS_COUNT];
	uint64_t blocks[SQ_AN_CLASS_COUNT];
	uint64_t oracle[SQ_AN_CLASS_COUNT];
	uint64_t ns_analysis[SQ_AN_CLASS_COUNT];
	uint64_t ns_codec[SQ_AN_CLASS_COUNT];
	/* Acceptance counts, for the reference analyzer. */
	uint64_t incompressible, rejected;	/* oracle found no saving */
	uint64_t inc_trials, inc_fallback;	/* ... and why a codec ran */
	uint64_t cpu_analysis;	/* CPU time of the analysis alone */
	uint64_t cpu_overhead;	/* of one pair of cpu_ns() calls */
	uint64_t compressible, wrong_raw;	/* oracle saves >= 12.5% */
	uint64_t files, errors;
};

static struct eval ev;

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void print_block(const char *what, uint64_t idx, size_t len,
			const struct sq_an_result *res)
{
	struct sq_an_features ft;

	sq_an_features(ev.buf, len, &ft);
	printf("%s: %s block %llu len %zu class %s how %d trial %d: "
	       "H %.2f rep %.3f text %.2f distinct %u zchunks %u\n", what,
	       ev.path, (unsigned long long)idx, len,
	       sq_an_class_name(res->cls), res->how, res->trial, ft.entropy,
	       ft.repeat, ft.text, ft.distinct, ft.zero_chunks);
}

static int eval_block(uint64_t idx, size_t len)
{
	struct sq_an_result res, ref_res;
	uint64_t best = len, t0;
	int i, cls = 0, r;

	memset(&ref_res, 0, sizeof(ref_res));
	/* The reference analyzer first: its class labels the row. */
	for (i = 0; i < ev.ncols; i++) {
		struct col *c = &ev.cols[(ev.ref + i) % ev.ncols];
		uint64_t out;

		t0 = cpu_ns();
		r = sq_an_store(c->an, c->af, idx, c->cctx, ev.buf, len,
				ev.scratch, ev.bs, &res);
		t0 = cpu_ns() - t0;
		if (r)
			return r;
		if (i == 0) {
			ref_res = res;
			cls = res.cls;
		}
		out = res.zero ? 0 : res.len;
		c->out[cls] += out;
		c->ns[cls] += t0;
		if (!c->is_auto && out < best)
			best = out;
	}
	ev.in[cls] += len;
	ev.blocks[cls]++;
	ev.oracle[cls] += best;
	ev.ns_analysis[cls] += ref_res.ns_analysis;
	ev.ns_codec[cls] += ref_res.ns_codec;
	/* The analyzer's own clock is wall time, which a loaded machine
	 * inflates: time the same analysis again in CPU time. */
	{
		struct sq_an_features ft;
		uint64_t t;

		t = cpu_ns();
		if (!sq_an_is_zero(ev.buf, len)) {
			sq_an_features(ev.buf, len, &ft);
			if (idx == 0)
				(void)sq_an_magic_class(ev.buf, len);
		}
		t = cpu_ns() - t;
		ev.cpu_analysis += t > ev.cpu_overhead ? t - ev.cpu_overhead :
							 0;
	}
	if (ref_res.zero)
		return 0;
	if (best == len) {
		ev.incompressible++;
		ev.rejected += ref_res.how == SQ_AN_HOW_REJECTED;
		ev.inc_trials += ref_res.trial;
		ev.inc_fallback += !ref_res.trial &&
				   ref_res.how == SQ_AN_HOW_FALLBACK;
		if (ev.verbose && ref_res.how != SQ_AN_HOW_REJECTED)
			print_block("codec ran in vain", idx, len, &ref_res);
	} else if ((double)(len - best) >= 0.125 * (double)len) {
		ev.compressible++;
		ev.wrong_raw += ref_res.codec == SQ_CODEC_NONE;
		if (ev.verbose && ref_res.codec == SQ_CODEC_NONE)
			print_block("wrongly raw", idx, len, &ref_res);
	}
	return 0;
}

static int eval_file(const char *path, const struct stat *st, int type,
		     struct FTW *ftw)
{
	uint64_t idx;
	int fd, i, r = 0;

	(void)ftw;
	if (type != FTW_F || !S_ISREG(st->st_mode) || st->st_size == 0)
		return 0;
	ev.path = path;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ev.errors++;
		return 0;
	}
	for (i = 0; i < ev.ncols; i++) {
		if (ev.cols[i].is_auto && sq_an_file_new(&ev.cols[i].af)) {
			r = -ENOMEM;
			goto out;
		}
	}
	for (idx = 0;; idx++) {
		ssize_t n = pread(fd, ev.buf, ev.bs, (off_t)(idx * ev.bs));

		if (n < 0) {
			ev.errors++;
			break;
		}
		if (n == 0)
			break;
		r = eval_block(idx, (size_t)n);
		if (r) {
			fprintf(stderr, "analyzer_eval: %s: block %llu: %s\n",
				path, (unsigned long long)idx, strerror(-r));
			goto out;
		}
		if ((size_t)n < ev.bs)
			break;
	}
	ev.files++;
out:
	for (i = 0; i < ev.ncols; i++) {
		sq_an_file_free(ev.cols[i].af);
		ev.cols[i].af = NULL;
	}
	close(fd);
	return r ? 1 : 0;
}

static int add_col(const char *spec, int policy)
{
	struct col *c;
	int r;

	if (ev.ncols == MAX_COLS)
		return -E2BIG;
	c = &ev.cols[ev.ncols];
	if (policy >= 0) {
		snprintf(c->name, sizeof(c->name), "an:%s",
			 sq_an_policy_name((enum sq_an_policy)policy));
		c->is_auto = true;
		r = sq_an_new("auto", (enum sq_an_policy)policy,
			      ev.min_saving, &c->an);
	} else {
		snprintf(c->name, sizeof(c->name), "%s", spec);
		r = sq_an_new(spec, SQ_AN_POLICY_BALANCED, ev.min_saving,
			      &c->an);
	}
	if (!r)
		r = sq_codec_ctx_new(&c->cctx);
	if (r) {
		sq_an_free(c->an);
		return r;
	}
	ev.ncols++;
	return 0;
}

static double mib(uint64_t b)
{
	return (double)b / (1024.0 * 1024.0);
}

static double mbps(uint64_t bytes, uint64_t ns)
{
	return ns ? (double)bytes * 1000.0 / (double)ns : 0.0;
}

static void print_row(const char *label, uint64_t in, const uint64_t *outs,
		      uint64_t oracle, bool speed, const uint64_t *nss)
{
	int i;

	printf("%-11s %9.1f", label, mib(in));
	for (i = 0; i < ev.ncols; i++) {
		if (speed)
			printf(" %9.0f", mbps(in, nss[i]));
		else
			printf(" %9.1f", mib(outs[i]));
	}
	if (!speed)
		printf(" %9.1f", mib(oracle));
	printf("\n");
}

static void print_table(bool speed)
{
	uint64_t outs[MAX_COLS], nss[MAX_COLS], tin = 0, tor = 0;
	uint64_t tout[MAX_COLS] = { 0 }, tns[MAX_COLS] = { 0 };
	int cls, i;

	printf("%-11s %9s", speed ? "MB/s" : "MiB", "in");
	for (i = 0; i < ev.ncols; i++)
		printf(" %9s", ev.cols[i].name);
	if (!speed)
		printf(" %9s", "oracle");
	printf("\n");
	for (cls = 0; cls < SQ_AN_CLASS_COUNT; cls++) {
		if (!ev.blocks[cls])
			continue;
		for (i = 0; i < ev.ncols; i++) {
			outs[i] = ev.cols[i].out[cls];
			nss[i] = ev.cols[i].ns[cls];
			tout[i] += outs[i];
			tns[i] += nss[i];
		}
		tin += ev.in[cls];
		tor += ev.oracle[cls];
		print_row(sq_an_class_name(cls), ev.in[cls], outs,
			  ev.oracle[cls], speed, nss);
	}
	print_row("TOTAL", tin, tout, tor, speed, tns);
}

static void print_report(void)
{
	uint64_t tin = 0, tan = 0, tcodec = 0, tz1 = 0, tref = 0;
	uint64_t tblocks = 0;
	int cls, i, z1 = -1;

	for (i = 0; i < ev.ncols; i++)
		if (strcmp(ev.cols[i].name, "zstd:1") == 0)
			z1 = i;
	for (cls = 0; cls < SQ_AN_CLASS_COUNT; cls++) {
		tin += ev.in[cls];
		tan += ev.ns_analysis[cls];
		tcodec += ev.ns_codec[cls];
		tblocks += ev.blocks[cls];
		tref += ev.cols[ev.ref].out[cls];
		if (z1 >= 0)
			tz1 += ev.cols[z1].out[cls];
	}
	printf("files %llu, blocks %llu of %zu KiB, min_saving %.3f, "
	       "reference %s, unreadable %llu\n\n",
	       (unsigned long long)ev.files, (unsigned long long)tblocks,
	       ev.bs / 1024, ev.min_saving, ev.cols[ev.ref].name,
	       (unsigned long long)ev.errors);
	printf("stored size per class (rows: the reference's class)\n");
	print_table(false);
	printf("\ncompression speed per class (MB/s of input, CPU time of "
	       "the store call)\n");
	print_table(true);
	printf("\nanalysis per class (reference): ns/KiB, share of its "
	       "store CPU\n");
	for (cls = 0; cls < SQ_AN_CLASS_COUNT; cls++) {
		uint64_t an = ev.ns_analysis[cls], co = ev.ns_codec[cls];

		if (!ev.blocks[cls])
			continue;
		printf("%-11s %8.1f ns/KiB %6.2f%%  blocks %llu\n",
		       sq_an_class_name(cls),
		       (double)an * 1024.0 / (double)ev.in[cls],
		       an + co ? 100.0 * (double)an / (double)(an + co) : 0.0,
		       (unsigned long long)ev.blocks[cls]);
	}
	printf("\nacceptance (reference %s):\n", ev.cols[ev.ref].name);
	printf("  analysis wall time     %.1f ns/KiB, %.2f%% of "
	       "analysis+codec wall time (the analyzer's counters)\n",
	       tin ? (double)tan * 1024.0 / (double)tin : 0.0,
	       tan + tcodec ? 100.0 * (double)tan / (double)(tan + tcodec) :
			      0.0);
	{
		uint64_t rns = 0;

		for (cls = 0; cls < SQ_AN_CLASS_COUNT; cls++)
			rns += ev.cols[ev.ref].ns[cls];
		printf("  analysis CPU time      %.1f ns/KiB, %.2f%% of the "
		       "reference's store CPU time (target < 3%%)\n",
		       tin ? (double)ev.cpu_analysis * 1024.0 / (double)tin :
			     0.0,
		       rns ? 100.0 * (double)ev.cpu_analysis / (double)rns :
			     0.0);
	}
	printf("  incompressible blocks  %llu, rejected without a codec "
	       "%.2f%% (target >= 95%%); codec ran: %llu trials, %llu "
	       "misjudged\n",
	       (unsigned long long)ev.incompressible,
	       ev.incompressible ?
	       100.0 * (double)ev.rejected / (double)ev.incompressible : 0.0,
	       (unsigned long long)ev.inc_trials,
	       (unsigned long long)ev.inc_fallback);
	printf("  compressible blocks    %llu (oracle saves >= 12.5%%), "
	       "wrongly raw %.3f%% (target < 1%%)\n",
	       (unsigned long long)ev.compressible,
	       ev.compressible ?
	       100.0 * (double)ev.wrong_raw / (double)ev.compressible : 0.0);
	if (z1 >= 0 && tz1)
		printf("  vs zstd:1+raw          %.1f MiB vs %.1f MiB: %.2f%% "
		       "smaller (target >= 5%%)\n", mib(tref), mib(tz1),
		       100.0 * (1.0 - (double)tref / (double)tz1));
	printf("  fixed codecs at least as fast as %s:\n",
	       ev.cols[ev.ref].name);
	{
		uint64_t rns = 0, rin = tin;

		for (cls = 0; cls < SQ_AN_CLASS_COUNT; cls++)
			rns += ev.cols[ev.ref].ns[cls];
		for (i = 0; i < ev.ncols; i++) {
			uint64_t ns = 0, out = 0;

			if (ev.cols[i].is_auto)
				continue;
			for (cls = 0; cls < SQ_AN_CLASS_COUNT; cls++) {
				ns += ev.cols[i].ns[cls];
				out += ev.cols[i].out[cls];
			}
			if (mbps(rin, ns) < mbps(rin, rns))
				continue;
			printf("    %-10s %8.0f MB/s %9.1f MiB: %s\n",
			       ev.cols[i].name, mbps(rin, ns), mib(out),
			       out >= tref ? "analyzer not larger (ok)" :
					     "SMALLER than the analyzer");
		}
		printf("    (analyzer %.0f MB/s, %.1f MiB)\n", mbps(rin, rns),
		       mib(tref));
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: analyzer_eval [-b BLOCK_SIZE] [-m MIN_SAVING] "
		"[-r fast|balanced|max] [-c SPEC,...] [-v] DIR|FILE...\n"
		"  -b  block size, 4K..1M (default 128K)\n"
		"  -m  min_saving as 0.125 or 12.5%% (default 12.5%%)\n"
		"  -r  the analyzer policy the acceptance figures judge "
		"(default balanced)\n"
		"  -c  fixed codecs to compare (default " DEFAULT_FIXED ")\n"
		"  -v  list the blocks the reference misjudged\n");
}

static int parse_bs(const char *s, size_t *out)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (end == s)
		return -EINVAL;
	if (*end == 'k' || *end == 'K')
		v <<= 10, end++;
	else if (*end == 'm' || *end == 'M')
		v <<= 20, end++;
	if (*end || v < 4096 || v > (1u << 20) || (v & (v - 1)))
		return -EINVAL;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	const char *fixed = DEFAULT_FIXED;
	enum sq_an_policy ref = SQ_AN_POLICY_BALANCED;
	char *list = NULL, *tok, *save;
	int opt, i, p, ret = 2;

	ev.bs = 128 * 1024;
	ev.min_saving = SQ_AN_MIN_SAVING_DEFAULT;
	while ((opt = getopt(argc, argv, "b:m:r:c:vh")) != -1) {
		switch (opt) {
		case 'v':
			ev.verbose = true;
			break;
		case 'b':
			if (parse_bs(optarg, &ev.bs))
				goto bad;
			break;
		case 'm':
			if (sq_an_parse_saving(optarg, &ev.min_saving))
				goto bad;
			break;
		case 'r':
			if (sq_an_policy_parse(optarg, &ref))
				goto bad;
			break;
		case 'c':
			fixed = optarg;
			break;
		default:
			goto bad;
		}
	}
	if (optind >= argc)
		goto bad;
	for (p = 0; p < SQ_AN_POLICY_COUNT; p++) {
		if (p == (int)ref)
			ev.ref = ev.ncols;
		if (add_col(NULL, p))
			goto bad;
	}
	list = strdup(fixed);
	if (!list)
		goto out;
	for (tok = strtok_r(list, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		if (add_col(tok, -1)) {
			fprintf(stderr, "analyzer_eval: bad codec '%s'\n", tok);
			goto bad;
		}
	}
	{
		uint64_t t = cpu_ns();

		for (i = 0; i < 1000; i++)
			(void)cpu_ns();
		ev.cpu_overhead = (cpu_ns() - t) / 1000;
	}
	ev.buf = malloc(ev.bs);
	ev.scratch = malloc(ev.bs);
	if (!ev.buf || !ev.scratch)
		goto out;
	for (i = optind; i < argc; i++) {
		if (nftw(argv[i], eval_file, 32, FTW_PHYS) != 0) {
			fprintf(stderr, "analyzer_eval: %s: walk failed\n",
				argv[i]);
			ret = 1;
			goto out;
		}
	}
	print_report();
	ret = 0;
	goto out;
bad:
	usage();
out:
	for (i = 0; i < ev.ncols; i++) {
		sq_an_free(ev.cols[i].an);
		sq_codec_ctx_free(ev.cols[i].cctx);
	}
	free(ev.buf);
	free(ev.scratch);
	free(list);
	return ret;
}
