/*
 * engine/settle.c - recompresses quiet files with the settle policy (see
 * settle.h).
 */
#include "engine/settle.h"

#include "analyzer/analyzer.h"
#include "codec/codec.h"
#include "engine/convert.h"
#include "engine/engine.h"
#include "engine/log.h"
#include "engine/packer.h"
#include "engine/pack_store.h"
#include "engine/pin.h"
#include "engine/track.h"
#include "engine/workq.h"
#include "meta/container.h"
#include "meta/format.h"
#include "meta/pack.h"
#include "meta/stats.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define ROUND_FILES 32		/* candidates taken per round */
#define SYNC_EVERY 64		/* blocks between syncs of a file */
#define IDLE_GAP_NS 50000000ull	/* quiet time the foreground needs */

struct sq_settle {
	/* Immutable after start. */
	struct sq_fs *fs;
	struct sq_track *track;
	struct sq_settle_opts o;
	struct sq_an *an;	/* the settle policy */
	struct sq_an *an_read;	/* the same, no slow decoders */
	struct sq_an *an_probe;	/* the settle policy as configured: probes
				 * of classes that do not pay */
	struct sq_wq *wq;	/* one thread */
	int tmp_fd;		/* SQ_CONVERT_TMP (convert.h), or -1 */

	/* The thread's (one job runs at a time). */
	struct sq_wq_job round;
	bool prio_set;
	bool nodb_said;
	struct sq_codec_ctx *cctx;
	uint8_t *buf, *scratch;
	struct cand {
		int64_t id;
		char *path;
		uint64_t reads_bytes, logical;
		bool asked;	/* by a settle command (sq_settle_now()) */
	} cand[ROUND_FILES];
	size_t ncand;
	/* Re-scoring (see choose()): per class, whether settling it pays,
	 * and the measurements of the current window. */
	bool paused[SQ_AN_CLASS_COUNT];
	struct window {
		uint64_t blocks, raw, fg, settled, ns, seen;
	} win[SQ_AN_CLASS_COUNT];
	bool policy_dirty;	/* the settle table changed: persist it */
	char *decisions[SQ_AN_CLASS_COUNT];	/* log evidence to write */
	/* Codec counters since the last record(), for the codecs table. */
	struct sq_stats_tally codecs;
	/* This round's totals, for the log. */
	uint64_t files, before, after, blocks;
	double secs;
	/* Since mount, for sq_settle_info(): read by any thread. */
	atomic_bool busy;
	atomic_uint_fast64_t all_files, all_before, all_after;
	_Atomic int64_t last_round;	/* unix s of the last round with work */
};

int sq_settle_parse(const char *s, enum sq_settle_mode *out)
{
	if (!strcmp(s, "off"))
		*out = SQ_SETTLE_OFF;
	else if (!strcmp(s, "balanced"))
		*out = SQ_SETTLE_BALANCED;
	else if (!strcmp(s, "max"))
		*out = SQ_SETTLE_MAX;
	else
		return -EINVAL;
	return 0;
}

static uint64_t mono_ns(void)
{
	return sq_wq_now_ns();
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };

	nanosleep(&ts, NULL);
}

/*
 * The lowest CPU and I/O priority that still runs: nice 19 and the
 * best-effort I/O class's lowest level.  Not SCHED_IDLE nor the idle I/O
 * class: this thread holds an inode's lock while it reads a block, and a
 * machine busy with other work would starve it there, and the user's
 * open() of that file with it (and an unmount for as long).  Yielding to
 * our own foreground is yield_to_foreground()'s job.
 */
static void set_prio(struct sq_settle *s)
{
	if (s->prio_set)
		return;
	s->prio_set = true;
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
	/* IOPRIO_WHO_PROCESS = 1; IOPRIO_CLASS_BE = 2 << 13, level 7 */
	syscall(SYS_ioprio_set, 1, (int)syscall(SYS_gettid), (2 << 13) | 7);
}

/* Waits while foreground requests are in flight or were a moment ago. */
static void yield_to_foreground(struct sq_settle *s)
{
	struct sq_fs *fs = s->fs;

	while (!sq_wq_stopping(s->wq)) {
		uint64_t last = atomic_load(&fs->fg_last_ns);

		if (!atomic_load(&fs->fg_active) &&
		    mono_ns() - last >= IDLE_GAP_NS)
			return;
		sleep_ns(IDLE_GAP_NS / 2);
	}
}

/* Whether someone has @i open (or a job of the packer holds it). */
static bool busy(struct sq_fs *fs, struct sq_inode *i)
{
	bool r;

	if (i->file)
		return true;
	pthread_mutex_lock(&fs->itable_lock);
	r = i->nopen > 0;
	pthread_mutex_unlock(&fs->itable_lock);
	return r;
}

/* Whether a block stored as @codec:@level needs no other try. */
static bool settled_codec(const struct sq_an *an, int codec, int level)
{
	for (int c = SQ_AN_CLASS_TEXT; c < SQ_AN_CLASS_COUNT; c++) {
		int pc, pl;

		if (sq_an_policy_get(an, c, &pc, &pl) == 0 &&
		    pc != SQ_CODEC_NONE && pc == codec && pl == level)
			return true;
	}
	return false;
}

/*
 * Pages of BACKING a record of @len payload bytes takes in slot @slot of
 * block @idx (docs/FORMAT.md: every slot starts 128 bytes into a page; a
 * record header is well under 64 bytes).  Block 0's slot 0 shares its
 * first page with the header, which stays in any case.  A block is
 * settled only when it then takes fewer pages: a few bytes saved inside
 * a page save nothing.
 */
static uint64_t rec_pages(uint64_t idx, int slot, uint32_t len)
{
	uint64_t p = (SQ_FMT_HDR_SIZE + SQ_FMT_REC_PREFIX + 64 + (uint64_t)len +
		      4095) / 4096;

	return idx == 0 && slot == 0 ? p - 1 : p;
}

/* ---- re-scoring ---- */

/*
 * Per class, the loop measures what settling saves over the foreground's
 * stored bytes and what it costs, over windows of RESCORE_BLOCKS blocks.
 * A class whose settling saves less than rescore_saving (the option
 * settle_min_saving) stops being settled (its blocks are classified,
 * then left alone); one block in PROBE_EVERY of it is still tried with
 * the settle policy's codec, and when those probes save RESUME_FACTOR
 * times that, it is settled again.  The
 * two thresholds keep it from flapping.  Each change goes to the log
 * table with its evidence and to the policy table ("settle"), which the
 * next mount starts from.
 */
#define RESCORE_BLOCKS 64
#define PROBE_EVERY 16
#define RESUME_FACTOR 1.5

/* The analyzer to settle a block of class @cls with, NULL to leave it. */
static const struct sq_an *choose(struct sq_settle *s, int cls,
				  const struct sq_an *an)
{
	if (cls <= SQ_AN_CLASS_ZERO || cls >= SQ_AN_CLASS_COUNT)
		return an;
	if (!s->paused[cls])
		return an;
	return s->win[cls].seen++ % PROBE_EVERY == PROBE_EVERY - 1 ?
		       s->an_probe : NULL;
}

/* Notes what settling block did: @raw bytes, stored in @fg bytes by the
 * foreground, @ar->len by the settle analyzer. */
static void score(struct sq_settle *s, const struct sq_an_result *ar,
		  uint32_t raw, uint32_t fg)
{
	int cls = ar->cls;
	struct window *w;
	double saving, need = s->o.rescore_saving;
	char *ev;
	int codec, level;

	sq_stats_tally_add(&s->codecs, sq_an_class_name(ar->cls), ar->codec,
			   ar->level, raw, ar->len, ar->ns_codec,
			   ar->how == SQ_AN_HOW_FALLBACK);
	if (cls <= SQ_AN_CLASS_ZERO || cls >= SQ_AN_CLASS_COUNT)
		return;
	w = &s->win[cls];
	w->blocks++;
	w->raw += raw;
	w->fg += fg;
	w->settled += ar->len < fg ? ar->len : fg;
	w->ns += ar->ns_codec;
	if (w->blocks < RESCORE_BLOCKS)
		return;
	saving = w->fg ? 1.0 - (double)w->settled / (double)w->fg : 0.0;
	sq_an_policy_get(s->an_probe, cls, &codec, &level);
	if (!s->paused[cls] && saving < need)
		s->paused[cls] = true;
	else if (s->paused[cls] && saving >= need * RESUME_FACTOR)
		s->paused[cls] = false;
	else
		goto reset;
	s->policy_dirty = true;
	if (asprintf(&ev, "{\"class\":\"%s\",\"decision\":\"%s\","
		     "\"codec\":\"%s:%d\",\"blocks\":%llu,"
		     "\"raw_bytes\":%llu,\"foreground_bytes\":%llu,"
		     "\"settled_bytes\":%llu,\"saving\":%.4f,"
		     "\"min_saving\":%.4f,\"cpu_seconds\":%.3f}",
		     sq_an_class_name(cls),
		     s->paused[cls] ? "stop settling" : "settle again",
		     sq_codec_name(codec), level,
		     (unsigned long long)w->blocks,
		     (unsigned long long)w->raw, (unsigned long long)w->fg,
		     (unsigned long long)w->settled, saving,
		     s->paused[cls] ? need : need * RESUME_FACTOR,
		     (double)w->ns / 1e9) >= 0) {
		free(s->decisions[cls]);
		s->decisions[cls] = ev;
	}
	sq_log(SQ_LOG_INFO, "settle: %s data: %s %s:%d saves %.1f%% over "
	       "the foreground's codecs on %llu blocks (threshold %.1f%%)",
	       sq_an_class_name(cls),
	       s->paused[cls] ? "no longer settled," : "settled again,",
	       sq_codec_name(codec), level, 100.0 * saving,
	       (unsigned long long)w->blocks,
	       100.0 * (s->paused[cls] ? need : need * RESUME_FACTOR));
reset:
	memset(w, 0, sizeof(*w));
}

/* The settle table as it is to be persisted: a paused class maps to the
 * foreground's codec (settling with it changes nothing). */
static size_t policy_rows(struct sq_settle *s, struct sq_stats_policy *rows)
{
	size_t n = 0;

	for (int c = SQ_AN_CLASS_TEXT; c < SQ_AN_CLASS_COUNT; c++) {
		int codec, level;

		if (s->paused[c])
			sq_an_policy_get(s->fs->an, c, &codec, &level);
		else
			sq_an_policy_get(s->an_probe, c, &codec, &level);
		rows[n].cls = sq_an_class_name(c);
		rows[n].codec = codec;
		rows[n].level = level;
		n++;
	}
	return n;
}

struct loaded {
	struct sq_settle *s;
	size_t paused;
};

static int load_row(void *arg, const struct sq_stats_policy *row)
{
	struct loaded *l = arg;
	struct sq_settle *s = l->s;
	int fc, fl, pc, pl;

	for (int c = SQ_AN_CLASS_TEXT; c < SQ_AN_CLASS_COUNT; c++) {
		if (strcmp(row->cls, sq_an_class_name(c)))
			continue;
		sq_an_policy_get(s->fs->an, c, &fc, &fl);
		sq_an_policy_get(s->an_probe, c, &pc, &pl);
		/* The foreground's codec, and not what the settle policy
		 * would pick anyway: a class that did not pay. */
		if (row->codec == fc && row->level == fl &&
		    !(fc == pc && fl == pl)) {
			s->paused[c] = true;
			l->paused++;
		}
	}
	return 0;
}

static int load_policy(void *arg, struct sq_stats *db,
		       struct sq_stats_batch *b)
{
	struct loaded *l = arg;

	(void)b;
	if (!db)
		return 0;
	return sq_stats_policy_get(db, SQ_STATS_SETTLE, load_row, l, NULL);
}

/* Puts back the mtime @before had: our writes and punches are not
 * changes of the file's content. */
static void keep_mtime(int fd, const struct stat *before)
{
	struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
				  before->st_mtim };

	if (futimens(fd, ts))
		sq_log(SQ_LOG_WARN, "settle: cannot put the mtime back: %s",
		       strerror(errno));
}

enum outcome { DONE, GONE, BUSY, SKIP, FAILED };

struct result {
	uint64_t before, after;		/* allocated bytes */
	uint64_t blocks, changed;
	double secs;
	const char *why;
	/* The file's blocks per codec and level once done, for file_blocks
	 * (dist_ok: every block was counted). */
	struct { int codec, level; int64_t n; } dist[SQ_STATS_DELTA_BLOCKS];
	size_t ndist;
	bool dist_ok;
	/* A plain file made a container (convert.h): a new inode, so a
	 * new row. */
	bool converted;
	int64_t new_id;
	uint64_t logical;
};

/* Counts one stored block of @res's file as @codec:@level.  A file of
 * more kinds than a delta holds keeps its old rows. */
static void note_block(struct result *res, int codec, int level)
{
	for (size_t k = 0; k < res->ndist; k++)
		if (res->dist[k].codec == codec && res->dist[k].level == level) {
			res->dist[k].n++;
			return;
		}
	if (res->ndist == SQ_STATS_DELTA_BLOCKS) {
		res->dist_ok = false;
		return;
	}
	res->dist[res->ndist].codec = codec;
	res->dist[res->ndist].level = level;
	res->dist[res->ndist++].n = 1;
}

/* Counts every block of the container @ctr into @res (a file left as it
 * is still gets its file_blocks rows). */
static void note_blocks(struct sq_ctr *ctr, struct result *res)
{
	uint64_t n = (sq_ctr_size(ctr) + sq_ctr_block_size(ctr) - 1) >>
		     sq_ctr_block_shift(ctr);

	res->dist_ok = true;
	for (uint64_t idx = 0; idx < n && res->dist_ok; idx++) {
		struct sq_ctr_block_info info;

		if (sq_ctr_block_info(ctr, idx, &info))
			res->dist_ok = false;
		else if (info.present && !info.zero)
			note_block(res, info.codec, info.level);
	}
}

/* note_blocks() of the file at @path that is not settled: a small
 * container, or a packed file's image.  Best effort. */
static void note_blocks_at(struct sq_settle *s, const char *path,
			   struct result *res)
{
	struct sq_ctr *ctr = NULL;
	struct sq_pack_ref ref;
	struct stat st;
	uint8_t *image = NULL;
	int fd = openat(s->fs->root_fd, path,
			O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);

	if (fd < 0)
		return;
	if (fstat(fd, &st))
		goto out;
	if (st.st_size > SQ_PACK_STUB_LEN) {
		if (sq_ctr_open(fd, 0, &ctr) == 0)
			note_blocks(ctr, res);
	} else if (s->fs->pack && sq_pack_get_ref(fd, NULL, &ref) == 0 &&
		   (image = malloc(ref.len)) &&
		   sq_pack_load(s->fs->pack, &ref, image) == 0 &&
		   sq_ctr_open_image(image, ref.len, &ctr) == 0) {
		image = NULL;	/* the handle's now */
		note_blocks(ctr, res);
	} else if (st.st_size == 0) {
		res->dist_ok = true;	/* empty: no blocks */
	}
out:
	sq_ctr_close(ctr);
	free(image);
	close(fd);
}

/* Marks the file @arg (an int64_t id) as being settled: a crash leaves
 * it so, and the next mount takes it up again (sq_stats_files_cold()). */
static int mark_settling(void *arg, struct sq_stats *db,
			 struct sq_stats_batch *b)
{
	struct sq_stats_file_delta d;

	(void)db;
	sq_stats_file_delta_init(&d, *(const int64_t *)arg);
	d.set = SQ_STATS_SET_STATE;
	d.state = SQ_STATS_SETTLING;
	return sq_stats_batch_file(b, &d);
}

/* ---- plain files (moved in) ---- */

struct conv {
	struct sq_settle *s;
	struct sq_inode *i;
	uint64_t wgen;
	uint64_t cpu0;
};

static bool conv_begin(void *arg)
{
	struct conv *cv = arg;

	pthread_mutex_lock(&cv->i->lock);
	if (!busy(cv->s->fs, cv->i) && cv->i->wgen == cv->wgen)
		return true;
	pthread_mutex_unlock(&cv->i->lock);
	return false;
}

static void conv_end(void *arg, bool swapped)
{
	struct conv *cv = arg;

	if (swapped) {
		/* Its backing file is gone: whoever still holds the inode
		 * is sent to look the name up again (ESTALE). */
		atomic_store(&cv->i->stale, true);
		atomic_fetch_add(&cv->s->fs->conversions, 1);
		cv->i->size_cached = false;
	}
	pthread_mutex_unlock(&cv->i->lock);
}

/* After each block: the CPU budget, and giving up to a user who opened
 * the file meanwhile (a write wins). */
static bool conv_pace(void *arg, uint64_t bytes)
{
	struct conv *cv = arg;
	struct sq_settle *s = cv->s;
	bool stop;

	(void)bytes;
	if (s->o.cpu < 100) {
		uint64_t used = cpu_ns() - cv->cpu0;

		sleep_ns(used * (100 - s->o.cpu) / s->o.cpu);
	}
	yield_to_foreground(s);
	cv->cpu0 = cpu_ns();
	pthread_mutex_lock(&cv->i->lock);
	stop = busy(s->fs, cv->i) || cv->i->wgen != cv->wgen;
	pthread_mutex_unlock(&cv->i->lock);
	return stop || sq_wq_stopping(s->wq);
}

/* Converts the plain file @c (@opath: O_PATH, consumed; @pfd: readable,
 * consumed; @st its stat). */
static enum outcome convert_file(struct sq_settle *s, const struct cand *c,
				 int opath, int pfd, const struct stat *st,
				 struct result *res)
{
	struct sq_fs *fs = s->fs;
	struct conv arg = { .s = s };
	struct sq_convert cv = {
		.vol = &fs->vol, .block_shift = fs->block_shift,
		.an = s->an, .cctx = s->cctx, .tmp_fd = s->tmp_fd,
		.begin = conv_begin, .end = conv_end, .pace = conv_pace,
		.arg = &arg,
	};
	const char *slash = strrchr(c->path, '/');
	char *dir = NULL;
	uint64_t stored = 0;
	ino_t new_ino = 0;
	enum outcome out = FAILED;
	int dirfd = -1, r;

	if (st->st_nlink > 1) {
		close(opath);
		close(pfd);
		res->why = "hard-linked plain file: left as it is";
		return SKIP;
	}
	if (s->tmp_fd < 0) {
		close(opath);
		close(pfd);
		res->why = "no .squeezefs/tmp";
		return FAILED;
	}
	/* A plain file with a codec pin is converted with that codec: the
	 * pin says how to store it (pin.h), and the copy keeps the pin. */
	{
		char spec[SQ_PIN_MAX];
		const struct sq_an *pinned;

		if (sq_pin_get(fs, pfd, NULL, spec) == 0 &&
		    (pinned = sq_pin_an(fs->pins, spec)))
			cv.an = pinned;
	}
	if (sq_inode_get(fs, opath, st, SQ_IREF_PIN, &arg.i)) {
		close(pfd);
		return FAILED;
	}
	pthread_mutex_lock(&arg.i->lock);
	if (busy(fs, arg.i) || arg.i->settling) {
		pthread_mutex_unlock(&arg.i->lock);
		out = BUSY;
		goto out;
	}
	arg.wgen = arg.i->wgen;
	arg.i->settling = true;	/* the packer leaves it alone */
	pthread_mutex_unlock(&arg.i->lock);

	dir = slash ? strndup(c->path, (size_t)(slash - c->path)) : NULL;
	dirfd = openat(fs->root_fd, dir ? dir : ".", O_RDONLY | O_DIRECTORY |
		       O_NOFOLLOW | O_CLOEXEC);
	if (dirfd < 0) {
		r = -errno;
	} else {
		arg.cpu0 = cpu_ns();
		r = sq_convert_file(&cv, dirfd, slash ? slash + 1 : c->path,
				    pfd, st, &stored, &new_ino);
	}
	pthread_mutex_lock(&arg.i->lock);
	arg.i->settling = false;
	pthread_mutex_unlock(&arg.i->lock);
	if (!r) {
		res->converted = true;
		res->new_id = sq_stats_file_id(new_ino);
		res->logical = (uint64_t)st->st_size;
		res->after = stored;
		out = DONE;
		sq_log(SQ_LOG_INFO, "settle: converted plain file %s into a "
		       "container: %llu bytes stored as %llu", c->path,
		       (unsigned long long)st->st_size,
		       (unsigned long long)stored);
	} else {
		/* In use, or short of something for now (a full disk):
		 * tried again later; anything else is logged and left. */
		bool later = r == -EBUSY || r == -EINTR || r == -ENOSPC ||
			     r == -EDQUOT || r == -EMFILE || r == -ENFILE ||
			     r == -ENOMEM;

		out = later ? BUSY : FAILED;
		res->why = r == -EBUSY || r == -EINTR ? "in use" :
			   strerror(-r);
		if (later && r != -EBUSY && r != -EINTR)
			sq_log(SQ_LOG_INFO, "settle: plain file %s not converted "
			       "yet: %s; tried again later", c->path,
			       strerror(-r));
		if (out == FAILED)
			sq_log(SQ_LOG_WARN, "settle: cannot convert plain file "
			       "%s: %s", c->path, strerror(-r));
	}
out:
	free(dir);
	if (dirfd >= 0)
		close(dirfd);
	close(pfd);
	sq_inode_put(fs, arg.i, SQ_IREF_PIN, 1);
	/* A small container goes into a pack like any other. */
	if (out == DONE && fs->packer) {
		struct sq_inode *ni = NULL;
		struct stat nst;
		int nfd = openat(fs->root_fd, c->path, O_PATH | O_NOFOLLOW |
				 O_CLOEXEC);

		if (nfd >= 0 && !fstat(nfd, &nst) && S_ISREG(nst.st_mode) &&
		    !sq_inode_get(fs, nfd, &nst, SQ_IREF_PIN, &ni)) {
			sq_packer_note(fs->packer, ni);
			sq_inode_put(fs, ni, SQ_IREF_PIN, 1);
		} else if (nfd >= 0) {
			close(nfd);
		}
	}
	return out;
}

/* Whether @c (@st, regular) is a plain file of the volume: *@pfd then
 * holds it open for reading, and *@lookalike says whether it begins like
 * a container. */
static bool plain_file(struct sq_settle *s, const struct cand *c,
		       const struct stat *st, int *pfd, bool *lookalike)
{
	int fd = sq_convert_open(s->fs->root_fd, c->path, st, &s->fs->vol,
				 lookalike);

	if (fd < 0)
		return false;
	*pfd = fd;
	return true;
}

/* Settles the file @c.  No lock held. */
static enum outcome settle_file(struct sq_settle *s, const struct cand *c,
				struct result *res)
{
	struct sq_fs *fs = s->fs;
	const struct sq_an *an = s->an;
	struct sq_an_file *af = NULL;
	struct sq_inode *i = NULL;
	struct sq_ctr *ctr = NULL;
	struct stat st, st0;
	uint64_t t0 = mono_ns(), wgen, nblocks, since_sync = 0;
	char pin[SQ_PIN_MAX];
	enum outcome out = FAILED;
	int fd, rwfd = -1, r;

	memset(res, 0, sizeof(*res));
	res->why = "";
	if (!c->path) {
		res->why = "no known name";
		return SKIP;
	}
	fd = openat(fs->root_fd, c->path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return GONE;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    sq_stats_file_id(st.st_ino) != c->id) {
		close(fd);
		return GONE;
	}
	res->before = res->after = (uint64_t)st.st_blocks * 512;
	{
		bool lookalike;
		int pfd;

		if (plain_file(s, c, &st, &pfd, &lookalike)) {
			/*
			 * One that begins like a container is most likely one
			 * (of another BACKING, or of this one copied without
			 * .squeezefs/volume): compressed already, and left as
			 * it is, its bytes are still a container if the right
			 * volume file comes back.  Converted only when asked.
			 */
			if (lookalike && !c->asked) {
				close(pfd);
				close(fd);
				sq_log(SQ_LOG_INFO, "settle: %s looks like a "
				       "squeezefs container of another backing "
				       "directory (or of this one, copied "
				       "without .squeezefs/volume): left plain; "
				       "settle PATH converts it", c->path);
				res->why = "begins like a container: left plain "
					   "(settle PATH converts it)";
				return SKIP;
			}
			return convert_file(s, c, fd, pfd, &st, res);
		}
	}
	if (st.st_size <= SQ_PACK_STUB_LEN) {
		close(fd);
		res->why = "packed or empty";
		note_blocks_at(s, c->path, res);
		return SKIP;
	}
	if ((uint64_t)st.st_blocks * 512 <= 4096) {
		close(fd);
		res->why = "one page";
		note_blocks_at(s, c->path, res);
		return SKIP;
	}
	if (sq_inode_get(fs, fd, &st, SQ_IREF_PIN, &i))
		return FAILED;	/* the fd is gone with it */
	/* A file read through at least once since its last write is read
	 * often: it keeps a fast decoder. */
	if (c->logical && c->reads_bytes >= c->logical)
		an = s->an_read;
	if (sq_an_file_new(&af))
		goto out;

	pthread_mutex_lock(&i->lock);
	if (busy(fs, i) || i->settling) {
		pthread_mutex_unlock(&i->lock);
		out = BUSY;
		goto out;
	}
	wgen = i->wgen;
	rwfd = sq_inode_open(i, O_RDWR | O_NOATIME);
	r = rwfd < 0 ? -errno : fstat(rwfd, &st0) ? -errno : 0;
	if (!r && st0.st_size <= SQ_PACK_STUB_LEN)
		r = -ENODATA;
	/* The user chose its codec (pin.h): not ours to change. */
	if (!r && sq_pin_get(fs, rwfd, NULL, pin) == 0)
		r = -EPERM;
	if (!r)
		r = sq_ctr_open_vol(rwfd, 0, &fs->vol, &ctr);
	/* Became plain since (a hard-linked one): nothing to settle. */
	if (!r && sq_ctr_is_plain(ctr))
		r = -ENODATA;
	if (r) {
		pthread_mutex_unlock(&i->lock);
		res->why = r == -ENODATA ? "packed" :
			   r == -EPERM ? "codec pinned" :
			   "not a readable container";
		out = r == -ENODATA || r == -EPERM ? SKIP : FAILED;
		goto out;
	}
	/* The packer leaves it alone meanwhile. */
	i->settling = true;
	res->dist_ok = true;
	nblocks = (sq_ctr_size(ctr) + sq_ctr_block_size(ctr) - 1) >>
		  sq_ctr_block_shift(ctr);
	pthread_mutex_unlock(&i->lock);
	sq_track_with_db(s->track, mark_settling, (void *)&c->id);

	for (uint64_t idx = 0; idx < nblocks; idx++) {
		struct sq_ctr_block_info info, now;
		const struct sq_an *use;
		struct sq_an_result ar;
		int cls, codec, level;
		uint64_t cpu0;
		ssize_t n;

		if (sq_wq_stopping(s->wq)) {
			out = BUSY;
			goto unmark;
		}
		yield_to_foreground(s);
		cpu0 = cpu_ns();
		pthread_mutex_lock(&i->lock);
		if (busy(fs, i) || i->wgen != wgen) {
			pthread_mutex_unlock(&i->lock);
			out = BUSY;
			goto unmark;
		}
		r = sq_ctr_block_info(ctr, idx, &info);
		if (r)
			res->dist_ok = false;
		if (r || !info.present || info.zero ||
		    settled_codec(an, info.codec, info.level)) {
			pthread_mutex_unlock(&i->lock);
			if (!r && info.present && !info.zero)
				note_block(res, info.codec, info.level);
			continue;
		}
		n = sq_ctr_read_block(ctr, s->cctx, idx, s->buf);
		pthread_mutex_unlock(&i->lock);
		res->blocks++;
		codec = info.codec;
		level = info.level;
		if (n <= 0)
			goto pace;	/* damaged: fsck's, never ours */
		cls = sq_an_classify_block(s->an, af, idx, s->buf, (size_t)n);
		use = choose(s, cls, an);
		if (!use)
			goto pace;	/* settling this class does not pay */
		if (sq_an_store(use, af, idx, s->cctx, s->buf, (size_t)n,
				s->scratch, (size_t)1 << SQ_FMT_MAX_BLOCK_SHIFT,
				&ar))
			goto pace;
		if (!ar.zero)
			score(s, &ar, (uint32_t)n, info.stored_len);
		if (ar.zero ||
		    rec_pages(idx, 1 - info.slot, ar.len) >=
			    rec_pages(idx, info.slot, info.stored_len) ||
		    (ar.codec == info.codec && ar.level == info.level))
			goto pace;
		pthread_mutex_lock(&i->lock);
		/* Opened, or the block changed, meanwhile: the user's
		 * version stays, ours is dropped. */
		if (busy(fs, i) || i->wgen != wgen ||
		    sq_ctr_block_info(ctr, idx, &now) || now.gen != info.gen) {
			pthread_mutex_unlock(&i->lock);
			out = BUSY;
			goto unmark;
		}
		/* The mtime the file has now (a touch may have set it since:
		 * a setattr takes this lock too) goes back after our write. */
		r = fstat(rwfd, &st) ? -errno : 0;
		if (!r)
			r = sq_ctr_write_block(ctr, idx, ar.codec, ar.level,
					       (uint32_t)n, ar.payload,
					       (uint32_t)ar.len);
		if (!r) {
			res->changed++;
			since_sync++;
			codec = ar.codec;
			level = ar.level;
		}
		if (!r && since_sync >= SYNC_EVERY) {
			r = sq_ctr_sync(ctr);
			since_sync = 0;
		}
		keep_mtime(rwfd, &st);
		pthread_mutex_unlock(&i->lock);
		if (r) {
			res->why = strerror(-r);
			goto unmark;
		}
pace:
		note_block(res, codec, level);
		/* The CPU budget: sleep so that this thread's CPU time stays
		 * within o.cpu percent of the time that passes. */
		if (s->o.cpu < 100) {
			uint64_t used = cpu_ns() - cpu0;

			sleep_ns(used * (100 - s->o.cpu) / s->o.cpu);
		}
	}
	out = DONE;
unmark:
	pthread_mutex_lock(&i->lock);
	/* Free the old slots and put the mtime back while the file is
	 * still ours; once opened, its new handle owns the container. */
	if (!busy(fs, i) && i->wgen == wgen) {
		r = 0;
		if (res->changed && fstat(rwfd, &st) == 0) {
			r = sq_ctr_sync(ctr);
			keep_mtime(rwfd, &st);
		}
		if (r && out == DONE) {
			out = FAILED;
			res->why = strerror(-r);
		}
		if (fstat(rwfd, &st) == 0)
			res->after = (uint64_t)st.st_blocks * 512;
		/* The container changed: the next stat reads it anew. */
		i->size_cached = false;
	}
	i->settling = false;
	pthread_mutex_unlock(&i->lock);
out:
	sq_ctr_close(ctr);
	if (rwfd >= 0)
		close(rwfd);
	sq_an_file_free(af);
	if (i)
		sq_inode_put(fs, i, SQ_IREF_PIN, 1);
	res->secs = (double)(mono_ns() - t0) / 1e9;
	return out;
}

/* ---- rounds ---- */

static int collect_row(void *arg, const struct sq_stats_file *row)
{
	struct sq_settle *s = arg;
	struct cand *c = &s->cand[s->ncand];

	c->id = row->id;
	c->asked = false;
	c->path = row->path ? strdup(row->path) : NULL;
	c->logical = row->logical_bytes;
	c->reads_bytes = row->bytes_read;
	return ++s->ncand == ROUND_FILES ? 1 : 0;
}

static int collect(void *arg, struct sq_stats *db, struct sq_stats_batch *b)
{
	struct sq_settle *s = arg;

	(void)b;
	s->ncand = 0;
	if (!db)
		return -ENODEV;
	return sq_stats_files_cold(db, (int64_t)time(NULL) -
				   (int64_t)s->o.after, collect_row, s);
}

struct record {
	struct sq_settle *s;
	const struct cand *c;
	enum outcome out;
	const struct result *res;
};

/* Writes the codec counters and the re-scoring decisions gathered since
 * the last call. */
static void save_scores(struct sq_settle *s, struct sq_stats *db,
			struct sq_stats_batch *b, int64_t now)
{
	sq_stats_tally_flush(&s->codecs, b);
	if (!db || !s->policy_dirty)
		return;
	for (int c = 0; c < SQ_AN_CLASS_COUNT; c++) {
		struct sq_stats_log_entry e = { .time = now,
						.action = "policy" };

		if (!s->decisions[c])
			continue;
		e.evidence = s->decisions[c];
		sq_stats_batch_log(b, &e);
		free(s->decisions[c]);
		s->decisions[c] = NULL;
	}
	{
		struct sq_stats_policy rows[SQ_AN_CLASS_COUNT];
		size_t n = policy_rows(s, rows);

		if (sq_stats_policy_set(db, SQ_STATS_SETTLE, rows, n) == 0)
			s->policy_dirty = false;
	}
}

static int record(void *arg, struct sq_stats *db, struct sq_stats_batch *b)
{
	struct record *rc = arg;
	struct sq_stats_file_delta d;
	struct sq_stats_log_entry e;
	char ev[256];
	int64_t now = (int64_t)time(NULL);

	save_scores(rc->s, db, b, now);
	if (rc->out == GONE)
		return sq_stats_batch_unlink(b, rc->c->id);
	if (rc->res->converted) {
		/* A new inode: its row replaces the plain file's. */
		int r = sq_stats_batch_unlink(b, rc->c->id);

		if (r)
			return r;
		sq_stats_file_delta_init(&d, rc->res->new_id);
		d.path = rc->c->path;
		d.set = SQ_STATS_SET_PATH | SQ_STATS_SET_LOGICAL |
			SQ_STATS_SET_STORED | SQ_STATS_SET_STATE |
			SQ_STATS_SET_LAST_SETTLED;
		d.logical_bytes = rc->res->logical;
		d.stored_bytes = rc->res->after;
		d.state = SQ_STATS_SETTLED;
		d.last_settled = now;
		r = sq_stats_batch_file(b, &d);
		if (r)
			return r;
		memset(&e, 0, sizeof(e));
		e.time = now;
		e.has_file = true;
		e.file_id = rc->res->new_id;
		e.action = "convert";
		e.bytes_before = (int64_t)rc->res->before;
		e.bytes_after = (int64_t)rc->res->after;
		snprintf(ev, sizeof(ev), "{\"policy\":\"%s\",\"plain\":true,"
			 "\"seconds\":%.3f}",
			 rc->s->o.mode == SQ_SETTLE_MAX ? "max" : "balanced",
			 rc->res->secs);
		e.evidence = ev;
		return sq_stats_batch_log(b, &e);
	}
	sq_stats_file_delta_init(&d, rc->c->id);
	if (rc->out == BUSY) {
		/* In use: hot again, at the back of the queue. */
		d.set = SQ_STATS_SET_LAST_WRITE | SQ_STATS_SET_STATE;
		d.last_write = now;
		d.state = SQ_STATS_HOT;
		return sq_stats_batch_file(b, &d);
	}
	d.set = SQ_STATS_SET_STATE | SQ_STATS_SET_LAST_SETTLED |
		SQ_STATS_SET_STORED;
	if (rc->out != FAILED && rc->res->dist_ok) {
		d.set |= SQ_STATS_SET_BLOCKS;
		for (size_t k = 0; k < rc->res->ndist; k++) {
			d.blocks[k].codec = rc->res->dist[k].codec;
			d.blocks[k].level = rc->res->dist[k].level;
			d.blocks[k].delta = rc->res->dist[k].n;
		}
	}
	d.state = rc->out == FAILED ? SQ_STATS_PINNED : SQ_STATS_SETTLED;
	d.last_settled = now;
	d.stored_bytes = rc->res->after;
	if (sq_stats_batch_file(b, &d))
		return -ENOMEM;
	snprintf(ev, sizeof(ev),
		 "{\"policy\":\"%s\",\"blocks\":%llu,\"recompressed\":%llu,"
		 "\"seconds\":%.3f,\"read_often\":%s%s%s%s}",
		 rc->s->o.mode == SQ_SETTLE_MAX ? "max" : "balanced",
		 (unsigned long long)rc->res->blocks,
		 (unsigned long long)rc->res->changed, rc->res->secs,
		 rc->c->logical && rc->c->reads_bytes >= rc->c->logical ?
			 "true" : "false",
		 rc->res->why[0] ? ",\"why\":\"" : "", rc->res->why,
		 rc->res->why[0] ? "\"" : "");
	memset(&e, 0, sizeof(e));
	e.time = now;
	e.has_file = true;
	e.file_id = rc->c->id;
	e.action = rc->out == FAILED ? "pin" :
		   rc->out == SKIP ? "skip" : "settle";
	e.bytes_before = (int64_t)rc->res->before;
	e.bytes_after = (int64_t)rc->res->after;
	e.evidence = ev;
	return sq_stats_batch_log(b, &e);
}

static void round_job(struct sq_wq_job *job)
{
	struct sq_settle *s = sq_container_of(job, struct sq_settle, round);
	uint64_t next = (uint64_t)(s->o.after < 5 ? s->o.after : 5) *
			1000000000ull;
	size_t n;
	int r;

	if (sq_wq_stopping(s->wq))
		return;
	set_prio(s);
	r = sq_track_with_db(s->track, collect, s);
	if (r == -ENODEV && !s->nodb_said) {
		s->nodb_said = true;
		sq_log(SQ_LOG_WARN, "settle: no statistics store, nothing "
		       "settles until it is back");
	} else if (r != -ENODEV) {
		s->nodb_said = false;
	}
	n = s->ncand;
	if (n) {
		atomic_store(&s->busy, true);
		atomic_store(&s->last_round, (int64_t)time(NULL));
	}
	for (size_t k = 0; k < n; k++) {
		struct cand *c = &s->cand[k];
		struct result res;
		struct record rc = { s, c, DONE, &res };

		if (sq_wq_stopping(s->wq)) {
			free(c->path);
			continue;
		}
		rc.out = settle_file(s, c, &res);
		sq_track_with_db(s->track, record, &rc);
		if (rc.out == DONE && (res.changed || res.converted)) {
			s->files++;
			s->before += res.before;
			s->after += res.after;
			s->blocks += res.changed;
			s->secs += res.secs;
			atomic_fetch_add(&s->all_files, 1);
			atomic_fetch_add(&s->all_before, res.before);
			atomic_fetch_add(&s->all_after, res.after);
			sq_log(SQ_LOG_DEBUG, "settle: %s: %llu -> %llu bytes, "
			       "%llu of %llu blocks, %.2f s", c->path,
			       (unsigned long long)res.before,
			       (unsigned long long)res.after,
			       (unsigned long long)res.changed,
			       (unsigned long long)res.blocks, res.secs);
		} else if (rc.out == FAILED) {
			sq_log(SQ_LOG_WARN, "settle: %s left as it is: %s",
			       c->path ? c->path : "?", res.why);
		}
		free(c->path);
	}
	atomic_store(&s->busy, false);
	/* Said when a run of work is over, not per file. */
	if (n < ROUND_FILES && s->files) {
		sq_log(SQ_LOG_INFO, "settle: %llu files settled, %llu blocks "
		       "recompressed: %.1f -> %.1f MiB allocated (saved "
		       "%.1f%%) in %.1f s",
		       (unsigned long long)s->files,
		       (unsigned long long)s->blocks,
		       (double)s->before / 1048576.0,
		       (double)s->after / 1048576.0,
		       s->before ? 100.0 * (double)(s->before - s->after) /
					   (double)s->before : 0.0,
		       s->secs);
		s->files = s->before = s->after = s->blocks = 0;
		s->secs = 0;
	}
	if (sq_wq_stopping(s->wq))
		return;
	sq_wq_push_after(s->wq, &s->round, n == ROUND_FILES ? 0 : next);
}

/* The analyzer of @mode, with slow decoders replaced by zstd:19 when
 * @fast_decode. */
static int settle_an(const struct sq_settle_opts *o, bool fast_decode,
		     struct sq_an **out)
{
	enum sq_an_policy p = o->mode == SQ_SETTLE_MAX ? SQ_AN_POLICY_MAX :
			      SQ_AN_POLICY_BALANCED;
	int r = sq_an_new("auto", p, o->min_saving, out);

	if (r)
		return r;
	/* Every block gets the policy's codec: there is time for it. */
	sq_an_set_payoff(*out, false);
	if (!fast_decode)
		return 0;
	for (int c = SQ_AN_CLASS_TEXT; c < SQ_AN_CLASS_COUNT; c++) {
		int codec, level;

		if (sq_an_policy_get(*out, c, &codec, &level) == 0 &&
		    (codec == SQ_CODEC_BROTLI || codec == SQ_CODEC_ZLIB))
			sq_an_policy_set(*out, c, SQ_CODEC_ZSTD, 19);
	}
	return 0;
}

int sq_settle_start(struct sq_fs *fs, struct sq_track *t,
		    const struct sq_settle_opts *o, struct sq_settle **out)
{
	struct sq_settle *s;
	int r = -ENOMEM;

	*out = NULL;
	if (!t || o->mode == SQ_SETTLE_OFF)
		return 0;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->fs = fs;
	s->track = t;
	s->o = *o;
	/* Where plain files become containers; what a conversion cut short
	 * left there goes now. */
	s->tmp_fd = fs->vol.legacy ? -1 : sq_convert_tmp_open(fs->root_fd);
	if (s->tmp_fd < 0 && !fs->vol.legacy)
		sq_log(SQ_LOG_WARN, "settle: %s: %s: plain files are not "
		       "converted", SQ_CONVERT_TMP, strerror(-s->tmp_fd));
	if (s->tmp_fd < 0)
		s->tmp_fd = -1;
	if (s->o.cpu == 0 || s->o.cpu > 100)
		s->o.cpu = SQ_SETTLE_CPU_DEFAULT;
	s->buf = malloc((size_t)1 << SQ_FMT_MAX_BLOCK_SHIFT);
	s->scratch = malloc((size_t)1 << SQ_FMT_MAX_BLOCK_SHIFT);
	if (!s->buf || !s->scratch || sq_codec_ctx_new(&s->cctx))
		goto fail;
	r = settle_an(&s->o, false, &s->an);
	if (!r)
		r = settle_an(&s->o, true, &s->an_read);
	if (!r)
		r = settle_an(&s->o, false, &s->an_probe);
	if (!r)
		r = sq_wq_new("sq-settle", 1, &s->wq);
	if (r)
		goto fail;
	{
		struct loaded l = { s, 0 };

		sq_track_with_db(t, load_policy, &l);
		if (l.paused)
			sq_log(SQ_LOG_INFO, "settle: %zu classes not settled: "
			       "it did not pay on this mount (stats.db's "
			       "policy table)", l.paused);
	}
	s->round.run = round_job;
	sq_wq_push_after(s->wq, &s->round,
			 (uint64_t)(s->o.after < 5 ? s->o.after : 5) *
				 1000000000ull);
	*out = s;
	return 0;
fail:
	sq_an_free(s->an);
	sq_an_free(s->an_read);
	sq_an_free(s->an_probe);
	sq_codec_ctx_free(s->cctx);
	free(s->buf);
	free(s->scratch);
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	free(s);
	return r;
}

void sq_settle_free(struct sq_settle *s)
{
	if (!s)
		return;
	/* The round at hand stops at its next block (sq_wq_stopping()). */
	sq_wq_free(s->wq, -1);
	sq_an_free(s->an);
	sq_an_free(s->an_read);
	sq_an_free(s->an_probe);
	for (int c = 0; c < SQ_AN_CLASS_COUNT; c++)
		free(s->decisions[c]);
	sq_codec_ctx_free(s->cctx);
	free(s->buf);
	free(s->scratch);
	if (s->tmp_fd >= 0)
		close(s->tmp_fd);
	free(s);
}

void sq_settle_info(struct sq_settle *s, struct sq_settle_info *out)
{
	memset(out, 0, sizeof(*out));
	if (!s)
		return;
	out->mode = s->o.mode;
	out->after = s->o.after;
	out->busy = atomic_load(&s->busy);
	out->files = atomic_load(&s->all_files);
	out->bytes_before = atomic_load(&s->all_before);
	out->bytes_after = atomic_load(&s->all_after);
	out->last_round = atomic_load(&s->last_round);
}

const char *sq_settle_mode_name(enum sq_settle_mode m)
{
	return m == SQ_SETTLE_MAX ? "max" :
	       m == SQ_SETTLE_BALANCED ? "balanced" : "off";
}

const struct sq_an *sq_settle_an(const struct sq_settle *s)
{
	return s ? s->an : NULL;
}

/* ---- settling one file now (sq_settle_now()) ---- */

struct now_job {
	struct sq_wq_job job;
	struct sq_settle *s;
	struct cand c;
	struct result res;
	enum outcome out;
	bool done;
	pthread_mutex_t lock;
	pthread_cond_t cond;
};

static void now_run(struct sq_wq_job *job)
{
	struct now_job *n = sq_container_of(job, struct now_job, job);
	struct sq_settle *s = n->s;
	struct record rc = { s, &n->c, DONE, &n->res };

	set_prio(s);
	n->out = settle_file(s, &n->c, &n->res);
	rc.out = n->out;
	sq_track_with_db(s->track, record, &rc);
	if (n->out == DONE && (n->res.changed || n->res.converted)) {
		atomic_fetch_add(&s->all_files, 1);
		atomic_fetch_add(&s->all_before, n->res.before);
		atomic_fetch_add(&s->all_after, n->res.after);
		atomic_store(&s->last_round, (int64_t)time(NULL));
	}
	pthread_mutex_lock(&n->lock);
	n->done = true;
	pthread_cond_signal(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

int sq_settle_now(struct sq_settle *s, int64_t id, const char *path,
		  struct sq_settle_now *out)
{
	struct now_job n;

	memset(out, 0, sizeof(*out));
	memset(&n, 0, sizeof(n));
	n.s = s;
	n.c.id = id;
	n.c.asked = true;
	n.c.path = strdup(path);
	if (!n.c.path)
		return -ENOMEM;
	pthread_mutex_init(&n.lock, NULL);
	pthread_cond_init(&n.cond, NULL);
	n.job.run = now_run;
	/* The loop's own thread: its buffers, its pacing, one file at a
	 * time with the rounds. */
	sq_wq_push(s->wq, &n.job);
	pthread_mutex_lock(&n.lock);
	while (!n.done)
		pthread_cond_wait(&n.cond, &n.lock);
	pthread_mutex_unlock(&n.lock);
	pthread_cond_destroy(&n.cond);
	pthread_mutex_destroy(&n.lock);
	free(n.c.path);
	out->before = n.res.before;
	out->after = n.res.after;
	out->blocks = n.res.changed;
	out->why = n.res.why ? n.res.why : "";
	switch (n.out) {
	case DONE:
	case SKIP:
		return 0;
	case GONE:
		return -ENOENT;
	case BUSY:
		return -EBUSY;
	default:
		return -EIO;
	}
}
