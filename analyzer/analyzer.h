/*
 * analyzer/analyzer.h - decides, block by block, how squeezefs stores data:
 * which codec and level, raw, or a hole.  It samples each block (entropy,
 * byte set, repetition, text share, structure), classifies it with the
 * file's magic bytes as a prior, and looks the class up in one policy
 * table.  Depends on codec/ only.
 */
#ifndef SQ_ANALYZER_H
#define SQ_ANALYZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

struct sq_codec_ctx;

/* Default minimum saving: store raw unless compression saves 1/8. */
#define SQ_AN_MIN_SAVING_DEFAULT 0.125

/*
 * Of the blocks a file's class or sample sends to raw without running a
 * codec, some are compressed anyway ("trials"), so that a file whose
 * sample or magic bytes fooled the classifier recovers: the
 * SQ_AN_TRIAL_FIRST-th such block of a file, then gaps that double after
 * every trial that did not pay, up to SQ_AN_TRIAL_MAX_GAP (a long video
 * costs about 1% of its blocks), back to SQ_AN_TRIAL_FIRST after one that
 * did.  Without an sq_an_file, one block index in SQ_AN_TRIAL_FIRST * 4.
 */
#define SQ_AN_TRIAL_FIRST 8
#define SQ_AN_TRIAL_MAX_GAP 256

/*
 * Pay-off checks.  Where the policy's codec for a class is slower than
 * the fast policy's (brotli:5 where fast says lz4), a file's blocks of
 * that class are compressed with both now and then: the
 * SQ_AN_PAYOFF_FIRST-th block, then gaps that double while the slow
 * codec keeps paying, up to SQ_AN_PAYOFF_MAX.  When it stores less than
 * SQ_AN_PAYOFF_PCT percent below the fast codec, the file's next blocks
 * of that class use the fast codec (SQ_AN_PAYOFF_FIRST * 4 of them, then
 * runs that double up to SQ_AN_PAYOFF_MAX) before the next check.  Data
 * that no codec squeezes better than another (half random, half zeros)
 * then costs lz4's CPU, not brotli's, to write and to read.
 */
#define SQ_AN_PAYOFF_FIRST 4
#define SQ_AN_PAYOFF_MAX 256
#define SQ_AN_PAYOFF_PCT 5

/* Content classes.  Reported in statistics: never renumber. */
enum sq_an_class {
	SQ_AN_CLASS_UNKNOWN = 0,	/* not analysed: a forced codec */
	SQ_AN_CLASS_ZERO,		/* all zero: a hole */
	SQ_AN_CLASS_TEXT,		/* prose, code, UTF-8 */
	SQ_AN_CLASS_STRUCTURED,		/* JSON, CSV, XML, log lines */
	SQ_AN_CLASS_BINARY,		/* executables, other binary data */
	SQ_AN_CLASS_DATABASE,		/* SQLite pages */
	SQ_AN_CLASS_COMPRESSED,		/* media and archives */
	SQ_AN_CLASS_RANDOM,		/* encrypted, random, unknown packed */
	SQ_AN_CLASS_COUNT
};

/* "text", "structured", ...; "?" for a bad value. */
const char *sq_an_class_name(int cls);

/* Policies: which codec each class gets. */
enum sq_an_policy {
	SQ_AN_POLICY_FAST = 0,		/* zstd:1 for text, lz4 for binaries
					 * and databases: CPU first */
	SQ_AN_POLICY_BALANCED,		/* brotli:5 for text and binaries,
					 * zstd:6 for databases (default) */
	SQ_AN_POLICY_MAX,		/* brotli:11 for text, brotli:10
					 * for binaries and databases */
	SQ_AN_POLICY_COUNT
};

/* "fast", "balanced", "max" -> policy; -EINVAL otherwise. */
int sq_an_policy_parse(const char *name, enum sq_an_policy *out);
const char *sq_an_policy_name(enum sq_an_policy p);

/*
 * Parses a min_saving option: a fraction "0.125" or a percentage "12.5%",
 * from 0 to 0.9 (90%).  Returns 0 and *@out, or -EINVAL.
 */
int sq_an_parse_saving(const char *s, double *out);

/*
 * The mount-wide analyzer: options, the policy table and the counters.
 * Every function taking a const struct sq_an * may run in any number of
 * threads at once; the table entries and counters are atomics.
 */
struct sq_an;

/*
 * Creates an analyzer from the codec option: "auto" (classify and use
 * @policy's table) or a codec spec accepted by sq_codec_parse() ("zstd:19")
 * that forces one codec for every block that is not all zero.
 * @min_saving is the fraction (0..1) a codec must save before its output is
 * kept.  Returns 0 and *@out (free with sq_an_free()), or -EINVAL.
 */
int sq_an_new(const char *codec_spec, enum sq_an_policy policy,
	      double min_saving, struct sq_an **out);
void sq_an_free(struct sq_an *an);

/*
 * The policy table: class -> codec and level (SQ_CODEC_NONE: store raw
 * without running any codec).  A re-adaptation loop may rewrite entries
 * while blocks are stored: each entry is one atomic word, so a block sees
 * either the old or the new entry, never a mix; there is no ordering
 * between entries of different classes.  SQ_AN_CLASS_ZERO always stores a
 * hole and SQ_AN_CLASS_UNKNOWN is unused outside a forced codec, so both
 * are refused.  Returns 0, or -EINVAL for a bad class, codec or level.
 */
int sq_an_policy_set(struct sq_an *an, int cls, int codec, int level);
int sq_an_policy_get(const struct sq_an *an, int cls, int *codec,
		     int *level);

/*
 * Per-file state: the class prior taken from the magic bytes of block 0,
 * the trial counter and the file's own counters.  Thread-safe: several
 * workers may store blocks of one file at once (a lock inside guards the
 * state; codecs run outside it).  sq_an_file_free(NULL) does nothing.
 */
struct sq_an_file;
int sq_an_file_new(struct sq_an_file **out);
void sq_an_file_free(struct sq_an_file *af);
/* The file's prior class (SQ_AN_CLASS_UNKNOWN until block 0 was seen). */
int sq_an_file_prior(const struct sq_an_file *af);

/* How a block was stored, and why. */
enum sq_an_how {
	SQ_AN_HOW_HOLE = 0,	/* all zero */
	SQ_AN_HOW_COMPRESSED,	/* codec output kept */
	SQ_AN_HOW_REJECTED,	/* raw: class or sample, no codec run */
	SQ_AN_HOW_FALLBACK,	/* raw: the codec saved too little */
	SQ_AN_HOW_COUNT
};

struct sq_an_result {
	bool zero;		/* all bytes are zero: store a hole */
	int codec;		/* SQ_CODEC_*; SQ_CODEC_NONE: store raw */
	int level;
	const void *payload;	/* borrowed: src (raw) or the scratch buffer */
	size_t len;		/* stored length */
	size_t in_len;		/* the block's length (@len of the store) */
	/* What the analyzer saw and did (statistics, tests, debug logs). */
	int cls;		/* enum sq_an_class */
	int how;		/* enum sq_an_how */
	bool trial;		/* a codec ran although the class said raw */
	bool payoff;		/* the policy's and the fast codec both ran */
	bool cheap;		/* the fast policy's codec, the policy's did not
				 * pay on this file lately */
	uint32_t ns_analysis;	/* sampling and classifying */
	uint32_t ns_codec;	/* running the codec, 0 when none ran */
};

/*
 * Chooses how to store the @len (1..1 MiB) bytes at @src, block @block_idx
 * of the file @af (NULL when there is no file, as in tools), compressing
 * into @scratch (capacity @cap, at least @len) when it pays.  Updates
 * @af's prior when @block_idx is 0, and the counters of @an and @af.
 * Returns 0 with *@res filled, or -errno from the codec (never for
 * incompressible data).
 */
int sq_an_store(const struct sq_an *an, struct sq_an_file *af,
		uint64_t block_idx, struct sq_codec_ctx *cctx,
		const void *src, size_t len, void *scratch, size_t cap,
		struct sq_an_result *res);

/*
 * Pay-off checks (SQ_AN_PAYOFF_FIRST) on or off (on by default).  Off for
 * the settle loop, which has the time to run the policy's codec on every
 * block.  Set before blocks are stored.
 */
void sq_an_set_payoff(struct sq_an *an, bool on);

/*
 * The class sq_an_store() would give the @len bytes at @src, block
 * @block_idx of @af (which takes its prior from block 0, as a store
 * does), without running a codec or counting anything.
 * SQ_AN_CLASS_UNKNOWN with a forced codec.
 */
int sq_an_classify_block(const struct sq_an *an, struct sq_an_file *af,
			 uint64_t block_idx, const void *src, size_t len);

/* The features of one block's sample; exposed for tests and tools. */
struct sq_an_features {
	uint32_t sample_len;	/* bytes sampled */
	uint32_t distinct;	/* distinct byte values in the sample */
	double entropy;		/* order-0 bits per byte, bias-corrected */
	double repeat;		/* share of 4-byte positions seen before */
	double text;		/* share of printable ASCII / UTF-8 bytes */
	double zeros;		/* share of zero bytes */
	uint32_t zero_chunks;	/* sample chunks that are all zero */
	uint32_t chunks;
	unsigned hints;		/* SQ_AN_HINT_* */
};

#define SQ_AN_HINT_JSON 0x1u
#define SQ_AN_HINT_CSV 0x2u
#define SQ_AN_HINT_XML 0x4u
#define SQ_AN_HINT_LOG 0x8u
#define SQ_AN_HINT_UTF8 0x10u

/* Samples @len bytes at @src (at most len / 8 of them for len >= 4 KiB). */
void sq_an_features(const void *src, size_t len, struct sq_an_features *ft);

/*
 * Class of the @len bytes at @head (the first bytes of a file) from their
 * magic bytes alone; SQ_AN_CLASS_UNKNOWN when none matches.
 */
int sq_an_magic_class(const void *head, size_t len);

/*
 * Counters: one row per class, one per codec.  sq_an_stats_get() reads the
 * mount's (atomics, so the rows are each a moment's snapshot, not one
 * consistent cut); sq_an_file_stats_get() the file's.
 */
struct sq_an_counters {
	uint64_t blocks;
	uint64_t bytes_in;
	uint64_t bytes_out;	/* stored bytes, 0 for a hole */
	uint64_t ns_analysis;
	uint64_t ns_codec;
	uint64_t codec_runs;	/* blocks on which a codec ran */
	uint64_t rejected;	/* raw without a codec run */
	uint64_t fallback;	/* raw after a codec run */
	uint64_t trials;	/* codec runs the class said to skip */
	uint64_t trial_hits;	/* ... that paid */
};

struct sq_an_stats {
	struct sq_an_counters cls[SQ_AN_CLASS_COUNT];
	struct sq_an_counters codec[SQ_CODEC_COUNT];	/* by stored codec */
};

void sq_an_stats_get(const struct sq_an *an, struct sq_an_stats *out);
void sq_an_file_stats_get(const struct sq_an_file *af,
			  struct sq_an_stats *out);

/* The last decision taken for @af (payload NULL); false when none. */
bool sq_an_file_last(const struct sq_an_file *af, uint64_t *block_idx,
		     struct sq_an_result *res);

/*
 * A hook called after every decision (debug logs, tests), in the storing
 * thread, with @af possibly NULL.  Set it before blocks are stored or
 * while none are: it is a plain pointer pair.  NULL turns it off.
 */
typedef void (*sq_an_trace_fn)(void *arg, const struct sq_an_file *af,
			       uint64_t block_idx,
			       const struct sq_an_result *res);
void sq_an_set_trace(struct sq_an *an, sq_an_trace_fn fn, void *arg);

/* True when all @len bytes at @p are zero. */
bool sq_an_is_zero(const void *p, size_t len);

#endif /* SQ_ANALYZER_H */
