/*
 * analyzer/analyzer.c - the storage decision for one block: a hole, raw
 * without running a codec, or the codec the policy table names for the
 * block's class (raw again when it saves less than min_saving); and the
 * counters of every decision.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analyzer/analyzer_i.h"
#include "codec/codec.h"

#define AN_NCTR (sizeof(struct sq_an_counters) / sizeof(uint64_t))

/* A table entry: codec in bits 8..15, level + 128 in bits 0..7, so one
 * atomic word holds both and a reader never sees half an update. */
#define AN_ENTRY(c, l) ((uint32_t)(c) << 8 | (uint32_t)((l) + 128))
#define AN_CODEC(e) ((int)((e) >> 8))
#define AN_LEVEL(e) ((int)((e) & 0xff) - 128)

struct an_row {
	int cls, codec, level;
};

/*
 * The default policies.  Raw for media and random data, whatever the
 * policy: no codec pays there, and trying one costs more than sampling.
 * BINARY doubles as the codec of trials.
 */
static const struct an_row an_defaults[SQ_AN_POLICY_COUNT][6] = {
	[SQ_AN_POLICY_FAST] = {
		{ SQ_AN_CLASS_TEXT, SQ_CODEC_ZSTD, 1 },
		{ SQ_AN_CLASS_STRUCTURED, SQ_CODEC_ZSTD, 1 },
		{ SQ_AN_CLASS_BINARY, SQ_CODEC_LZ4, 1 },
		{ SQ_AN_CLASS_DATABASE, SQ_CODEC_LZ4, 1 },
		{ SQ_AN_CLASS_COMPRESSED, SQ_CODEC_NONE, 0 },
		{ SQ_AN_CLASS_RANDOM, SQ_CODEC_NONE, 0 },
	},
	/* Binaries: brotli:5 stores them 6% smaller than zstd:6 at half
	 * its speed (analyzer-eval on the make-corpus mix). */
	[SQ_AN_POLICY_BALANCED] = {
		{ SQ_AN_CLASS_TEXT, SQ_CODEC_BROTLI, 5 },
		{ SQ_AN_CLASS_STRUCTURED, SQ_CODEC_BROTLI, 5 },
		{ SQ_AN_CLASS_BINARY, SQ_CODEC_BROTLI, 5 },
		{ SQ_AN_CLASS_DATABASE, SQ_CODEC_ZSTD, 6 },
		{ SQ_AN_CLASS_COMPRESSED, SQ_CODEC_NONE, 0 },
		{ SQ_AN_CLASS_RANDOM, SQ_CODEC_NONE, 0 },
	},
	/* What settling stores with.  brotli 10 and 11 search for the
	 * optimal parse: per 128 KiB block of the make-corpus mix, brotli:11
	 * stores text 9% and logs 10% smaller than brotli:9 does, and
	 * brotli:10 stores binaries 4% smaller than zstd:15 and databases 9%
	 * smaller than zstd:15.  brotli:9 is slower than brotli:10 here
	 * (Debian's brotli 1.0.9), and zstd:19 no better than zstd:15.
	 * Files read often get zstd:19 instead (settle.c). */
	[SQ_AN_POLICY_MAX] = {
		{ SQ_AN_CLASS_TEXT, SQ_CODEC_BROTLI, 11 },
		{ SQ_AN_CLASS_STRUCTURED, SQ_CODEC_BROTLI, 11 },
		{ SQ_AN_CLASS_BINARY, SQ_CODEC_BROTLI, 10 },
		{ SQ_AN_CLASS_DATABASE, SQ_CODEC_BROTLI, 10 },
		{ SQ_AN_CLASS_COMPRESSED, SQ_CODEC_NONE, 0 },
		{ SQ_AN_CLASS_RANDOM, SQ_CODEC_NONE, 0 },
	},
};

struct sq_an {
	/* Fixed after sq_an_new(). */
	int forced_codec;	/* -1: classify ("auto") */
	int forced_level;
	double min_saving;
	double reject_bits;	/* sample entropy from which it is hopeless */
	sq_an_trace_fn trace;	/* see sq_an_set_trace() */
	void *trace_arg;
	bool no_payoff;		/* see sq_an_set_payoff() */
	/* Rewritten at run time by sq_an_policy_set(). */
	_Atomic uint32_t table[SQ_AN_CLASS_COUNT];
	/* Counters, relaxed atomics: each is exact, rows are not a cut. */
	_Atomic uint64_t cls_ctr[SQ_AN_CLASS_COUNT][AN_NCTR];
	_Atomic uint64_t codec_ctr[SQ_CODEC_COUNT][AN_NCTR];
};

/* Pay-off checks of one class in one file (see SQ_AN_PAYOFF_FIRST). */
struct an_pay {
	uint32_t gap;		/* slow blocks between checks */
	uint32_t count;		/* slow blocks since the last one */
	uint32_t cheap_left;	/* blocks left to store cheaply */
	uint32_t cheap_run;	/* length of the next cheap run */
};

struct sq_an_file {
	/* Guards every field below: blocks of one file are analysed by
	 * several workers at once; the codec runs without it. */
	pthread_mutex_t lock;
	int prior;		/* class from block 0's magic bytes */
	uint32_t db_page;	/* SQLite page size, 0 when unknown */
	uint64_t skipped;	/* blocks sent raw since the last trial */
	uint64_t trial_gap;	/* skipped blocks before the next trial */
	/* Pay-off checks of the policy's codec, per class. */
	struct an_pay pay[SQ_AN_CLASS_COUNT];
	bool have_last;
	uint64_t last_idx;
	struct sq_an_result last;
	struct sq_an_stats stats;
};

static const char *const an_class_names[SQ_AN_CLASS_COUNT] = {
	[SQ_AN_CLASS_UNKNOWN] = "unknown",
	[SQ_AN_CLASS_ZERO] = "zero",
	[SQ_AN_CLASS_TEXT] = "text",
	[SQ_AN_CLASS_STRUCTURED] = "structured",
	[SQ_AN_CLASS_BINARY] = "binary",
	[SQ_AN_CLASS_DATABASE] = "database",
	[SQ_AN_CLASS_COMPRESSED] = "compressed",
	[SQ_AN_CLASS_RANDOM] = "random",
};

static const char *const an_policy_names[SQ_AN_POLICY_COUNT] = {
	[SQ_AN_POLICY_FAST] = "fast",
	[SQ_AN_POLICY_BALANCED] = "balanced",
	[SQ_AN_POLICY_MAX] = "max",
};

const char *sq_an_class_name(int cls)
{
	if (cls < 0 || cls >= SQ_AN_CLASS_COUNT)
		return "?";
	return an_class_names[cls];
}

const char *sq_an_policy_name(enum sq_an_policy p)
{
	if ((int)p < 0 || p >= SQ_AN_POLICY_COUNT)
		return "?";
	return an_policy_names[p];
}

int sq_an_policy_parse(const char *name, enum sq_an_policy *out)
{
	int i;

	if (!name)
		return -EINVAL;
	for (i = 0; i < SQ_AN_POLICY_COUNT; i++) {
		if (strcmp(name, an_policy_names[i]) == 0) {
			*out = (enum sq_an_policy)i;
			return 0;
		}
	}
	return -EINVAL;
}

int sq_an_parse_saving(const char *s, double *out)
{
	char *end;
	double v;

	if (!s || !*s || *s == ' ' || *s == '+' || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s)
		return -EINVAL;
	if (*end == '%') {
		v /= 100.0;
		end++;
	}
	/* Written this way round so that NaN fails too. */
	if (*end || !(v >= 0.0 && v <= 0.9))
		return -EINVAL;
	*out = v;
	return 0;
}

static bool an_entry_ok(int cls, int codec, int level)
{
	const struct sq_codec_info *ci = sq_codec_info(codec);

	if (cls <= SQ_AN_CLASS_ZERO || cls >= SQ_AN_CLASS_COUNT || !ci)
		return false;
	if (codec == SQ_CODEC_NONE)
		return level == 0;
	return level >= ci->min_level && level <= ci->max_level;
}

int sq_an_new(const char *codec_spec, enum sq_an_policy policy,
	      double min_saving, struct sq_an **out)
{
	struct sq_an *an;
	int codec = -1, level = 0, ret, i;

	if (!codec_spec || !out)
		return -EINVAL;
	if ((int)policy < 0 || policy >= SQ_AN_POLICY_COUNT)
		return -EINVAL;
	/* Written this way round so that NaN fails too. */
	if (!(min_saving >= 0.0 && min_saving <= 1.0))
		return -EINVAL;
	if (strcmp(codec_spec, "auto") != 0) {
		ret = sq_codec_parse(codec_spec, &codec, &level);
		if (ret < 0)
			return ret;
	}
	an = calloc(1, sizeof(*an));
	if (!an)
		return -ENOMEM;
	an->forced_codec = codec;
	an->forced_level = level;
	an->min_saving = min_saving;
	/*
	 * An order-0 coder needs about entropy / 8 of the input, so a sample
	 * above 8 * (1 - min_saving) bits cannot save enough unless it also
	 * repeats; the margin keeps borderline blocks on the codec side.
	 * Capped so that random data is refused even with min_saving 0.
	 */
	an->reject_bits = 8.0 * (1.0 - min_saving) + 0.3;
	if (an->reject_bits > 7.85)
		an->reject_bits = 7.85;
	atomic_init(&an->table[SQ_AN_CLASS_UNKNOWN],
		    AN_ENTRY(SQ_CODEC_ZSTD, 1));
	atomic_init(&an->table[SQ_AN_CLASS_ZERO], AN_ENTRY(SQ_CODEC_NONE, 0));
	for (i = 0; i < 6; i++) {
		const struct an_row *r = &an_defaults[policy][i];

		atomic_init(&an->table[r->cls], AN_ENTRY(r->codec, r->level));
	}
	*out = an;
	return 0;
}

void sq_an_free(struct sq_an *an)
{
	free(an);
}

int sq_an_policy_set(struct sq_an *an, int cls, int codec, int level)
{
	if (!an || !an_entry_ok(cls, codec, level))
		return -EINVAL;
	atomic_store_explicit(&an->table[cls], AN_ENTRY(codec, level),
			      memory_order_relaxed);
	return 0;
}

int sq_an_policy_get(const struct sq_an *an, int cls, int *codec,
		     int *level)
{
	uint32_t e;

	if (!an || cls < 0 || cls >= SQ_AN_CLASS_COUNT)
		return -EINVAL;
	/* The table is atomic; loading from a const object is fine. */
	e = atomic_load_explicit((_Atomic uint32_t *)&an->table[cls],
				 memory_order_relaxed);
	*codec = AN_CODEC(e);
	*level = AN_LEVEL(e);
	return 0;
}

void sq_an_set_trace(struct sq_an *an, sq_an_trace_fn fn, void *arg)
{
	an->trace = fn;
	an->trace_arg = arg;
}

int sq_an_file_new(struct sq_an_file **out)
{
	struct sq_an_file *af = calloc(1, sizeof(*af));

	if (!af)
		return -ENOMEM;
	af->prior = SQ_AN_CLASS_UNKNOWN;
	af->trial_gap = SQ_AN_TRIAL_FIRST;
	for (int c = 0; c < SQ_AN_CLASS_COUNT; c++) {
		af->pay[c].gap = SQ_AN_PAYOFF_FIRST;
		af->pay[c].cheap_run = SQ_AN_PAYOFF_FIRST * 4;
	}
	pthread_mutex_init(&af->lock, NULL);
	*out = af;
	return 0;
}

void sq_an_file_free(struct sq_an_file *af)
{
	if (!af)
		return;
	pthread_mutex_destroy(&af->lock);
	free(af);
}

/* The getters take a const handle; the lock inside is still ours to take. */
static void af_lock(const struct sq_an_file *af)
{
	pthread_mutex_lock((pthread_mutex_t *)&af->lock);
}

static void af_unlock(const struct sq_an_file *af)
{
	pthread_mutex_unlock((pthread_mutex_t *)&af->lock);
}

int sq_an_file_prior(const struct sq_an_file *af)
{
	int p;

	if (!af)
		return SQ_AN_CLASS_UNKNOWN;
	af_lock(af);
	p = af->prior;
	af_unlock(af);
	return p;
}

bool sq_an_file_last(const struct sq_an_file *af, uint64_t *block_idx,
		     struct sq_an_result *res)
{
	bool have;

	if (!af)
		return false;
	af_lock(af);
	have = af->have_last;
	if (have && block_idx)
		*block_idx = af->last_idx;
	if (have && res)
		*res = af->last;
	af_unlock(af);
	return have;
}

void sq_an_stats_get(const struct sq_an *an, struct sq_an_stats *out)
{
	uint64_t *c;
	size_t i, j;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < SQ_AN_CLASS_COUNT; i++) {
		c = (uint64_t *)&out->cls[i];
		for (j = 0; j < AN_NCTR; j++)
			c[j] = atomic_load_explicit(
				(_Atomic uint64_t *)&an->cls_ctr[i][j],
				memory_order_relaxed);
	}
	for (i = 0; i < SQ_CODEC_COUNT; i++) {
		c = (uint64_t *)&out->codec[i];
		for (j = 0; j < AN_NCTR; j++)
			c[j] = atomic_load_explicit(
				(_Atomic uint64_t *)&an->codec_ctr[i][j],
				memory_order_relaxed);
	}
}

void sq_an_file_stats_get(const struct sq_an_file *af,
			  struct sq_an_stats *out)
{
	if (af) {
		af_lock(af);
		*out = af->stats;
		af_unlock(af);
	} else {
		memset(out, 0, sizeof(*out));
	}
}

static uint64_t an_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Counts one decision in the mount's and the file's counters. */
static void an_count(const struct sq_an *an, struct sq_an_file *af,
		     size_t len, const struct sq_an_result *res)
{
	struct sq_an_counters d = {
		.blocks = 1,
		.bytes_in = len,
		.bytes_out = res->zero ? 0 : res->len,
		.ns_analysis = res->ns_analysis,
		.ns_codec = res->ns_codec,
		.codec_runs = res->ns_codec || res->how == SQ_AN_HOW_FALLBACK ||
			      res->how == SQ_AN_HOW_COMPRESSED,
		.rejected = res->how == SQ_AN_HOW_REJECTED,
		.fallback = res->how == SQ_AN_HOW_FALLBACK,
		.trials = res->trial,
		.trial_hits = res->trial && res->how == SQ_AN_HOW_COMPRESSED,
	};
	const uint64_t *v = (const uint64_t *)&d;
	/* Counters are atomic, so const only guards the options. */
	struct sq_an *mut = (struct sq_an *)an;
	size_t j;

	for (j = 0; j < AN_NCTR; j++) {
		atomic_fetch_add_explicit(&mut->cls_ctr[res->cls][j], v[j],
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&mut->codec_ctr[res->codec][j], v[j],
					  memory_order_relaxed);
	}
	if (af) {
		uint64_t *fc = (uint64_t *)&af->stats.cls[res->cls];
		uint64_t *fk = (uint64_t *)&af->stats.codec[res->codec];

		for (j = 0; j < AN_NCTR; j++) {
			fc[j] += v[j];
			fk[j] += v[j];
		}
	}
}

/*
 * Largest compressed length worth keeping: len - ceil(len * min_saving),
 * and never len itself, since an equal-size payload only costs a
 * decompression on every read.
 */
static size_t an_max_stored(const struct sq_an *an, size_t len)
{
	double want = (double)len * an->min_saving;
	size_t save = (size_t)want;

	/* ceil() by hand: the core does not link libm. */
	if ((double)save < want)
		save++;
	if (save == 0)
		save = 1;
	return save >= len ? 0 : len - save;
}

static void an_raw(const void *src, size_t len, struct sq_an_result *res)
{
	res->codec = SQ_CODEC_NONE;
	res->level = 0;
	res->payload = src;
	res->len = len;
}

/* Runs @codec, keeping its output only when it saves enough. */
static int an_compress(const struct sq_an *an, struct sq_codec_ctx *cctx,
		       int codec, int level, const void *src, size_t len,
		       void *scratch, size_t cap, struct sq_an_result *res)
{
	size_t max = an_max_stored(an, len);
	uint64_t t0;
	ssize_t n;

	if (max > cap)
		max = cap;
	if (max == 0) {
		an_raw(src, len, res);
		res->how = SQ_AN_HOW_FALLBACK;
		return 0;
	}
	t0 = an_now();
	/* A dstcap of max turns "does not save enough" into -ENOSPC. */
	n = sq_codec_compress(cctx, codec, level, src, len, scratch, max);
	res->ns_codec = (uint32_t)(an_now() - t0);
	if (res->ns_codec == 0)
		res->ns_codec = 1;	/* "a codec ran" */
	if (n == -ENOSPC || (n >= 0 && (size_t)n > max)) {
		an_raw(src, len, res);
		res->how = SQ_AN_HOW_FALLBACK;
		return 0;
	}
	if (n < 0)
		return (int)n;
	res->codec = codec;
	res->level = level;
	res->payload = scratch;
	res->len = (size_t)n;
	res->how = SQ_AN_HOW_COMPRESSED;
	return 0;
}

/* Whether a block the class sends raw gets a codec run anyway. */
static bool an_trial_due(struct sq_an_file *af, uint64_t block_idx)
{
	const uint64_t every = SQ_AN_TRIAL_FIRST * 4;

	if (!af)
		return block_idx % every == every - 1;
	if (++af->skipped < af->trial_gap)
		return false;
	af->skipped = 0;
	return true;
}

/* Backs off after a trial that did not pay, resets after one that did. */
static void an_trial_done(struct sq_an_file *af, bool paid)
{
	if (!af)
		return;
	if (paid) {
		/* The prior was wrong: forget it. */
		af->prior = SQ_AN_CLASS_UNKNOWN;
		af->trial_gap = SQ_AN_TRIAL_FIRST;
	} else if (af->trial_gap < SQ_AN_TRIAL_MAX_GAP) {
		af->trial_gap *= 2;
	}
}

enum { AN_SLOW, AN_CHEAP, AN_CHECK };

/* The fast policy's codec for @cls, when it differs from @codec:@level. */
static bool an_cheaper(int cls, int codec, int level, int *ccodec,
		       int *clevel)
{
	for (size_t i = 0; i < sizeof(an_defaults[0]) / sizeof(an_defaults[0][0]); i++) {
		const struct an_row *row = &an_defaults[SQ_AN_POLICY_FAST][i];

		if (row->cls != cls)
			continue;
		if (row->codec == SQ_CODEC_NONE ||
		    (row->codec == codec && row->level == level))
			return false;
		*ccodec = row->codec;
		*clevel = row->level;
		return true;
	}
	return false;
}

/* Whether the next block of class @cls is slow, cheap or a check.  Locked. */
static int an_payoff_mode(struct sq_an_file *af, int cls)
{
	struct an_pay *p = &af->pay[cls];

	if (p->cheap_left) {
		if (--p->cheap_left == 0)
			p->count = p->gap;	/* check next */
		return AN_CHEAP;
	}
	if (++p->count < p->gap)
		return AN_SLOW;
	p->count = 0;
	return AN_CHECK;
}

/* Backs off checks while the slow codec pays, cheap runs while not. */
static void an_payoff_done(struct sq_an_file *af, int cls, bool pays)
{
	struct an_pay *p = &af->pay[cls];

	if (pays) {
		if (p->gap < SQ_AN_PAYOFF_MAX)
			p->gap *= 2;
		p->cheap_run = SQ_AN_PAYOFF_FIRST * 4;
		return;
	}
	p->gap = SQ_AN_PAYOFF_FIRST;
	p->cheap_left = p->cheap_run;
	if (p->cheap_run < SQ_AN_PAYOFF_MAX)
		p->cheap_run *= 2;
}

/*
 * Compresses with the cheap codec and the policy's; keeps the policy's
 * output when it stores SQ_AN_PAYOFF_PCT percent less, else recompresses
 * cheaply (the scratch holds one output; the cheap codec costs little).
 */
static int an_payoff_check(const struct sq_an *an, struct sq_an_file *af,
			   struct sq_codec_ctx *cctx, int codec, int level,
			   int ccodec, int clevel, const void *src, size_t len,
			   void *scratch, size_t cap, struct sq_an_result *res)
{
	struct sq_an_result alt = *res;
	uint32_t ns;
	bool pays;
	int r;

	r = an_compress(an, cctx, ccodec, clevel, src, len, scratch, cap,
			&alt);
	if (r)
		return r;
	r = an_compress(an, cctx, codec, level, src, len, scratch, cap, res);
	if (r)
		return r;
	ns = alt.ns_codec + res->ns_codec;
	pays = res->len * 100 <= alt.len * (100 - SQ_AN_PAYOFF_PCT);
	af_lock(af);
	an_payoff_done(af, res->cls, pays);
	af_unlock(af);
	res->payoff = true;
	if (!pays) {
		r = an_compress(an, cctx, ccodec, clevel, src, len, scratch,
				cap, res);
		if (r)
			return r;
		res->cheap = true;
		ns += res->ns_codec;
	}
	res->ns_codec = ns;
	return 0;
}

/* The file's prior (its magic bytes, taken from block 0) into @in. */
static void an_prior(struct sq_an_file *af, uint64_t block_idx,
		     const void *src, size_t len, struct sq_an_input *in)
{
	in->prior = SQ_AN_CLASS_UNKNOWN;
	in->db_page = 0;
	if (!af)
		return;
	af_lock(af);
	if (block_idx == 0) {
		af->prior = sq_an_magic_class(src, len);
		af->db_page = sq_an_sqlite_page(src, len);
	}
	in->prior = af->prior;
	in->db_page = af->db_page;
	af_unlock(af);
}

void sq_an_set_payoff(struct sq_an *an, bool on)
{
	an->no_payoff = !on;
}

int sq_an_classify_block(const struct sq_an *an, struct sq_an_file *af,
			 uint64_t block_idx, const void *src, size_t len)
{
	struct sq_an_features ft;
	struct sq_an_input in;

	if (an->forced_codec >= 0)
		return SQ_AN_CLASS_UNKNOWN;
	if (sq_an_is_zero(src, len))
		return SQ_AN_CLASS_ZERO;
	an_prior(af, block_idx, src, len, &in);
	sq_an_features(src, len, &ft);
	in.src = src;
	in.len = len;
	in.block_idx = block_idx;
	in.reject_bits = an->reject_bits;
	return sq_an_classify(&in, &ft);
}

int sq_an_store(const struct sq_an *an, struct sq_an_file *af,
		uint64_t block_idx, struct sq_codec_ctx *cctx,
		const void *src, size_t len, void *scratch, size_t cap,
		struct sq_an_result *res)
{
	struct sq_an_features ft;
	struct sq_an_input in;
	uint64_t t0 = an_now();
	int codec = SQ_CODEC_NONE, level = 0, r = 0;
	int ccodec = SQ_CODEC_NONE, clevel = 0, mode = AN_SLOW;

	memset(res, 0, sizeof(*res));
	res->in_len = len;
	an_prior(af, block_idx, src, len, &in);
	if (sq_an_is_zero(src, len)) {
		res->zero = true;
		res->codec = SQ_CODEC_NONE;
		res->cls = SQ_AN_CLASS_ZERO;
		res->how = SQ_AN_HOW_HOLE;
		res->ns_analysis = (uint32_t)(an_now() - t0);
		goto out;
	}
	if (an->forced_codec >= 0) {
		res->cls = SQ_AN_CLASS_UNKNOWN;
		res->ns_analysis = (uint32_t)(an_now() - t0);
		if (an->forced_codec == SQ_CODEC_NONE) {
			an_raw(src, len, res);
			res->how = SQ_AN_HOW_REJECTED;
			goto out;
		}
		r = an_compress(an, cctx, an->forced_codec, an->forced_level,
				src, len, scratch, cap, res);
		goto out;
	}

	sq_an_features(src, len, &ft);
	in.src = src;
	in.len = len;
	in.block_idx = block_idx;
	in.reject_bits = an->reject_bits;
	res->cls = sq_an_classify(&in, &ft);
	sq_an_policy_get(an, res->cls, &codec, &level);
	if (codec == SQ_CODEC_NONE) {
		bool due;

		if (af)
			af_lock(af);
		due = an_trial_due(af, block_idx);
		if (af)
			af_unlock(af);
		if (!due) {
			res->ns_analysis = (uint32_t)(an_now() - t0);
			an_raw(src, len, res);
			res->how = SQ_AN_HOW_REJECTED;
			goto out;
		}
		res->trial = true;
		sq_an_policy_get(an, SQ_AN_CLASS_BINARY, &codec, &level);
		if (codec == SQ_CODEC_NONE) {
			codec = SQ_CODEC_LZ4;
			level = 1;
		}
	}
	if (!res->trial && af && !an->no_payoff &&
	    an_cheaper(res->cls, codec, level, &ccodec, &clevel)) {
		af_lock(af);
		mode = an_payoff_mode(af, res->cls);
		af_unlock(af);
	}
	res->ns_analysis = (uint32_t)(an_now() - t0);
	if (mode == AN_CHECK) {
		r = an_payoff_check(an, af, cctx, codec, level, ccodec, clevel,
				    src, len, scratch, cap, res);
		goto out;
	}
	if (mode == AN_CHEAP) {
		codec = ccodec;
		level = clevel;
		res->cheap = true;
	}
	r = an_compress(an, cctx, codec, level, src, len, scratch, cap, res);
	if (!r && res->trial && af) {
		af_lock(af);
		an_trial_done(af, res->how == SQ_AN_HOW_COMPRESSED);
		af_unlock(af);
	}
out:
	if (r)
		return r;
	if (af)
		af_lock(af);
	an_count(an, af, len, res);
	if (af) {
		af->have_last = true;
		af->last_idx = block_idx;
		af->last = *res;
		af->last.payload = NULL;	/* borrowed, gone by now */
		af_unlock(af);
	}
	if (an->trace)
		an->trace(an->trace_arg, af, block_idx, res);
	return 0;
}

/*
 * Once the first 16 bytes are zero, p[i] == p[i + 16] for every i means
 * all are: one overlapping memcmp() runs at libc's vector speed.
 */
bool sq_an_is_zero(const void *p, size_t len)
{
	const unsigned char *b = p;
	size_t head = len < 16 ? len : 16;
	size_t i;

	for (i = 0; i < head; i++) {
		if (b[i])
			return false;
	}
	return len <= 16 || memcmp(b, b + 16, len - 16) == 0;
}
