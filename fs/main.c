/*
 * fs/main.c - the squeezefs command: parses options, checks BACKING and
 * MOUNTPOINT, takes the mount lock and runs the FUSE session.  The
 * commands that need no mount (`squeezefs fsck`, `squeezefs export`) are
 * another program, squeezefs-admin, which does not link libfuse: they are
 * handed over to it.
 */
#include "fs/fs_i.h"

#include "analyzer/analyzer.h"
#include "engine/cache.h"
#include "engine/file.h"
#include "engine/inode.h"
#include "engine/lock.h"
#include "engine/log.h"
#include "engine/pack_store.h"
#include "engine/packer.h"
#include "engine/pin.h"
#include "engine/settle.h"
#include "engine/track.h"
#include "engine/workq.h"
#include "meta/format.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SQ_VERSION "0.1.0"

struct sq_opts {
	char *block_size;
	char *codec;
	char *cache_size;
	char *policy;
	char *min_saving;
	char *settle;
	char *settle_after;
	char *settle_cpu;
	char *settle_min_saving;
	char *stats_flush;
	int writeback_cache;
	int nopack;
	int shared;		/* allow_other or allow_root given */
	int ro;			/* a read-only mount: BACKING is not written */
	char *backing;
	char *mountpoint;
	int nonopts;
};

#define SQ_OPT(t, p) { t, offsetof(struct sq_opts, p), 1 }
enum { KEY_SHARED = 1, KEY_RO };
static const struct fuse_opt sq_opt_spec[] = {
	SQ_OPT("block_size=%s", block_size),
	SQ_OPT("codec=%s", codec),
	SQ_OPT("cache_size=%s", cache_size),
	SQ_OPT("policy=%s", policy),
	SQ_OPT("min_saving=%s", min_saving),
	SQ_OPT("settle=%s", settle),
	SQ_OPT("settle_after=%s", settle_after),
	SQ_OPT("settle_cpu=%s", settle_cpu),
	SQ_OPT("settle_min_saving=%s", settle_min_saving),
	SQ_OPT("stats_flush=%s", stats_flush),
	{ "writeback_cache", offsetof(struct sq_opts, writeback_cache), 1 },
	{ "nopack", offsetof(struct sq_opts, nopack), 1 },
	FUSE_OPT_KEY("allow_other", KEY_SHARED),
	FUSE_OPT_KEY("allow_root", KEY_SHARED),
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_END
};

static void usage(const char *prog)
{
	printf("usage: %s [options] BACKING MOUNTPOINT\n"
	       "       %s fsck [--repair] [--reclaim] BACKING\n"
	       "       %s export [--progress|--no-progress] BACKING DEST\n\n"
	       "Mounts BACKING at MOUNTPOINT; every file is stored compressed "
	       "in BACKING.\n\n"
	       "squeezefs options:\n"
	       "    -o block_size=N        4K..1M, power of two (default 128K);"
	       " fixed per file\n"
	       "    -o codec=C             auto|none|lz4[:L]|zstd[:L]|zlib[:L]|"
	       "brotli[:L] (default auto)\n"
	       "    -o cache_size=N        decompressed block cache "
	       "(default 64M)\n"
	       "    -o policy=P            fast|balanced|max: codecs the "
	       "writer waits for\n"
	       "                           (default fast; balanced with "
	       "settle=off)\n"
	       "    -o settle=S            max|balanced|off: recompress quiet "
	       "files in the\n"
	       "                           background with policy S "
	       "(default max)\n"
	       "    -o settle_after=N      seconds without writes before a "
	       "file settles (60)\n"
	       "    -o settle_cpu=P        settling's CPU budget, percent of "
	       "one core (50)\n"
	       "    -o settle_min_saving=F stop settling a kind of data that "
	       "saves less than F\n"
	       "                           over the writer's codecs "
	       "(default min_saving when\n"
	       "                           given, else 3%%)\n"
	       "    -o stats_flush=N       seconds between writes of the "
	       "statistics to\n"
	       "                           BACKING/.squeezefs/stats.db (5)\n"
	       "    -o min_saving=F        store raw unless compression saves "
	       "F (0..0.9 or 12.5%%; default 12.5%%)\n"
	       "    -o writeback_cache     let the kernel gather writes in its "
	       "page cache:\n"
	       "                           faster random writes; ENOSPC shows "
	       "at fsync/close,\n"
	       "                           SEEK_DATA/SEEK_HOLE see no holes "
	       "(see README)\n"
	       "    -o nopack              keep small files in containers of "
	       "their own\n"
	       "                           (default: packed together, see "
	       "docs/FORMAT.md)\n\n",
	       prog, prog, prog);
}

/* BACKING and MOUNTPOINT: kept from libfuse, which would check the mount
 * point with messages of its own. */
static int opt_proc(void *data, const char *arg, int key,
		    struct fuse_args *outargs)
{
	struct sq_opts *o = data;

	(void)outargs;
	if (key == KEY_SHARED)
		o->shared = 1;	/* and libfuse gets it too */
	if (key == KEY_RO)
		o->ro = 1;	/* likewise */
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	switch (o->nonopts++) {
	case 0:
		o->backing = strdup(arg);
		return 0;
	case 1:
		o->mountpoint = strdup(arg);
		return 0;
	default:
		fprintf(stderr, "squeezefs: unexpected argument '%s'\n", arg);
		return -1;
	}
}

/* "4096", "4K", "128k", "1M", "2G" -> bytes.  -EINVAL when malformed. */
static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	switch (*end) {
	case '\0':
		break;
	case 'k': case 'K':
		v <<= 10;
		end++;
		break;
	case 'm': case 'M':
		v <<= 20;
		end++;
		break;
	case 'g': case 'G':
		v <<= 30;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (*end == 'i' || *end == 'B')
		end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
	if (*end)
		return -EINVAL;
	*out = v;
	return 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl))
			fprintf(stderr, "squeezefs: cannot raise the open file "
				"limit: %s\n", strerror(errno));
	}
}

/*
 * With the writeback cache, dirty pages of the mount wait in the kernel
 * until it writes them back to us.  The kernel caps a FUSE mount's dirty
 * pages at 1% of the dirtyable memory (a strict limit that protects the
 * system from an unprivileged daemon), about 48 MiB here: random writes
 * into a file larger than that are throttled to the rate at which we
 * rewrite blocks, one 4 KiB page each, and the cache gathers nothing.  A
 * mount asked for the writeback cache by root gets an eighth of the RAM,
 * at most 1 GiB, or what the kernel accepts, still a strict limit (fio 4K
 * random writes into a 1 GiB file: 6,500 -> 22,000 IOPS).  Best effort:
 * without the knob (Linux < 6.2, no root) the kernel's limit stays.
 */
static void tune_writeback(const char *mnt)
{
	char line[4096], dev[32] = "", path[PATH_MAX + 40];
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	unsigned long long limit;
	FILE *f;
	int fd;

	if (pages <= 0 || psize <= 0)
		return;
	limit = (unsigned long long)pages * (unsigned long long)psize / 8;
	if (limit > (1ull << 30))
		limit = 1ull << 30;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return;
	/* "id parent major:minor root mountpoint ...": the last entry for
	 * the mount point is ours, just mounted over it. */
	while (fgets(line, sizeof(line), f)) {
		char majmin[32], mp[4096];

		if (sscanf(line, "%*s %*s %31s %*s %4095s", majmin, mp) != 2)
			continue;
		sq_lock_unescape(mp);
		if (strcmp(mp, mnt) == 0)
			snprintf(dev, sizeof(dev), "%s", majmin);
	}
	fclose(f);
	if (!dev[0])
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/max_bytes", dev);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	/* The kernel refuses (EINVAL) more than its global dirty limit
	 * allows (vm.dirty_ratio of the memory free now): halve until it
	 * takes one, down to 64 MiB, still above its 1%. */
	for (;;) {
		snprintf(line, sizeof(line), "%llu\n", limit);
		if (write(fd, line, strlen(line)) >= 0)
			break;
		if (errno != EINVAL || limit <= (64ull << 20)) {
			sq_log(SQ_LOG_INFO, "writeback_cache: cannot raise the "
			       "dirty page limit (%s): %s", path,
			       strerror(errno));
			break;
		}
		limit = limit / 2 > (64ull << 20) ? limit / 2 : 64ull << 20;
	}
	close(fd);
}

/*
 * Root, or any effective capability (a file capability on the binary):
 * such a daemon can do on BACKING what its callers may not.
 */
static bool privileged(void)
{
	char line[256];
	bool r = true;	/* cannot tell: keep the kernel's check */
	FILE *f;

	if (geteuid() == 0)
		return true;
	f = fopen("/proc/self/status", "re");
	if (!f)
		return true;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "CapEff:", 7)) {
			r = strtoull(line + 7, NULL, 16) != 0;
			break;
		}
	}
	fclose(f);
	return r;
}

/* One clear line on stderr; returns the exit code for startup errors. */
static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	char line[PATH_MAX * 2 + 256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "squeezefs: %s\n", line);
	return 1;
}

/*
 * An option that counts seconds or percent, @s (NULL: not given, *@out
 * unchanged): a plain decimal number from @min to @max, no size suffix.
 * Says what is wrong (@want) and returns -EINVAL otherwise.
 */
static int parse_count(const char *name, const char *s, unsigned min,
		       unsigned max, const char *want, unsigned *out)
{
	unsigned long v;
	char *end;

	if (!s)
		return 0;
	errno = 0;
	v = *s >= '0' && *s <= '9' ? strtoul(s, &end, 10) : 0;
	if (*s < '0' || *s > '9' || errno || *end || v < min || v > max) {
		fail("bad %s '%s': want %s", name, s, want);
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

/* True when @inner is @outer or below it (both canonical). */
static bool inside(const char *inner, const char *outer)
{
	size_t n = strlen(outer);

	if (n == 1)
		return true;	/* "/" */
	return strncmp(inner, outer, n) == 0 &&
	       (inner[n] == '\0' || inner[n] == '/');
}

static int fs_setup(struct sq_fs *fs, const char *backing)
{
	int r;

	fs->backing = strdup(backing);
	fs->root_fd = open(backing, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (!fs->backing || fs->root_fd < 0)
		return -errno;
	r = sq_itable_init(fs);
	if (!r)
		r = sq_cache_new(fs->cache_size, &fs->dirty_bytes, &fs->cache);
	return r;
}

/*
 * Once no request can come any more: stores and frees every inode, stops
 * the workers and background jobs.  Returns false when some file's data
 * could not be stored.
 */
static bool fs_teardown(struct sq_fs *fs)
{
	bool ok = true;

	/* Stops at its next block: a file half settled stays hot. */
	sq_settle_free(fs->settle);
	fs->settle = NULL;
	/* Packs what is waiting (the packer's pins go with it). */
	sq_wq_free(fs->bg, -1);
	fs->bg = NULL;
	if (fs->itable)
		ok = sq_itable_release(fs);
	/* After the files above: closing them may still queue blocks. */
	sq_wq_free(fs->wq, -1);
	fs->wq = NULL;
	/* The last flush of the statistics, once no block can be stored
	 * any more (each store counts in them). */
	sq_track_free(fs->track);
	fs->track = NULL;
	sq_packer_free(fs->packer);
	sq_pack_close(fs->pack);
	sq_cache_free(fs->cache);
	sq_an_free(fs->an);
	sq_pins_free(fs->pins);
	sq_an_free(fs->an_hot);
	sq_an_free(fs->an_tiny);
	sq_an_free(fs->an_raw);
	if (fs->root_fd >= 0)
		close(fs->root_fd);
	if (fs->lock_fd >= 0)
		close(fs->lock_fd);
	free(fs->backing);
	return ok;
}

/*
 * Opens the pack store and, with @enable, starts packing small files on
 * the background queue.  Returns 0 or why packing is off.
 */
static int pack_setup(struct sq_fs *fs, bool enable)
{
	bool writable = fs->lock_fd >= 0;
	int r;

	r = sq_pack_open(fs->root_fd, fs->backing, writable, &fs->pack);
	if (r)
		return r;
	if (!writable || fs->ro)
		return enable ? -EROFS : 0;
	/* Kept by every mount that writes BACKING, packing or not: a rename
	 * through a mount that does not pack moves packed files too.
	 * Without it packing goes on: only a repair of a copy that lost the
	 * xattrs would miss its records. */
	r = sq_pack_index_open(fs->pack);
	if (r == -EROFS)
		return enable ? r : 0;	/* no packs here */
	if (r)
		sq_log(SQ_LOG_WARN, "pack index: %s: packed files copied "
		       "without xattrs could not be repaired", strerror(-r));
	/* Unpacking and deleting packed files free their images here. */
	r = sq_wq_new("sq-background", 1, &fs->bg);
	if (r)
		return r;
	return enable ? sq_packer_start(fs, fs->bg, &fs->packer) : 0;
}

/* libfuse's own messages: to our log, so they reach syslog once
 * daemonized, with the same prefix as ours.  libfuse builds some lines
 * from several calls: the pieces gather per thread until the newline. */
static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt,
			     va_list ap)
	__attribute__((format(printf, 2, 0)));
static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt,
			     va_list ap)
{
	static _Thread_local char line[1024];
	static _Thread_local size_t len;
	int l = level <= FUSE_LOG_ERR ? SQ_LOG_ERR :
		level == FUSE_LOG_WARNING ? SQ_LOG_WARN :
		level == FUSE_LOG_DEBUG ? SQ_LOG_DEBUG : SQ_LOG_INFO;
	int n;

	n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	if (n > 0)
		len += (size_t)n < sizeof(line) - len ? (size_t)n :
							 sizeof(line) - len - 1;
	if (len && (line[len - 1] == '\n' || len == sizeof(line) - 1)) {
		sq_log(l, "%s", line);
		len = 0;
	}
}

/*
 * Runs `squeezefs-admin @argv` (argv[1] the command): the program next to
 * this one, else the one on PATH.  Returns only on failure.
 */
static int run_admin(char **argv)
{
	char self[PATH_MAX], path[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		char *slash;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			snprintf(path, sizeof(path), "%s/squeezefs-admin",
				 self);
			execv(path, argv);
		}
	}
	execvp("squeezefs-admin", argv);
	fprintf(stderr, "squeezefs: cannot run squeezefs-admin for '%s': "
		"%s\n", argv[1], strerror(errno));
	return 1;
}

/*
 * The exit status for what the session loop returned: an unmount, or
 * SIGTERM, SIGINT or SIGHUP (libfuse's handlers end the loop with the
 * signal's number; everything is then stored as at an unmount), is a
 * clean end; anything else an error.
 */
static int loop_result(int r)
{
	return r == 0 || r == SIGTERM || r == SIGINT || r == SIGHUP ? 0 : 1;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts copts;
	struct sq_opts o;
	struct sq_mount m;
	struct sq_fs *fs = &m.fs;
	struct fuse_session *se = NULL;
	struct fuse_loop_config *lcfg = NULL;
	char backing[PATH_MAX], mnt[PATH_MAX], fsname[PATH_MAX + 32];
	uint64_t v;
	struct stat st;
	enum sq_an_policy policy = SQ_AN_POLICY_FAST;
	struct sq_settle_opts sopts = { SQ_SETTLE_MAX,
					SQ_SETTLE_AFTER_DEFAULT,
					SQ_SETTLE_CPU_DEFAULT, 0,
					SQ_SETTLE_MIN_SAVING_DEFAULT };
	double min_saving = SQ_AN_MIN_SAVING_DEFAULT;
	unsigned stats_flush = 0;
	bool vol_found = false;
	int ret = 1, r;

	if (argc >= 2 && (strcmp(argv[1], "fsck") == 0 ||
			  strcmp(argv[1], "export") == 0 ||
			  strcmp(argv[1], "import") == 0 ||
			  strcmp(argv[1], "stats") == 0 ||
			  strcmp(argv[1], "settle") == 0 ||
			  strcmp(argv[1], "recompress") == 0))
		return run_admin(argv);

	fuse_set_log_func(fuse_log_to_ours);
	memset(&o, 0, sizeof(o));
	memset(&copts, 0, sizeof(copts));
	memset(&m, 0, sizeof(m));
	fs->root_fd = fs->lock_fd = -1;
	fs->block_shift = SQ_DEFAULT_BLOCK_SHIFT;
	fs->cache_size = SQ_DEFAULT_CACHE_SIZE;
	m.timeout = 1.0;

	if (fuse_opt_parse(&args, &o, sq_opt_spec, opt_proc) == -1)
		goto out;
	if (fuse_parse_cmdline(&args, &copts) != 0)
		goto out;
	if (copts.show_help) {
		usage(argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		ret = 0;
		goto out;
	}
	if (copts.show_version) {
		printf("squeezefs %s (container format %d, libfuse %s)\n",
		       SQ_VERSION, SQ_FMT_VERSION, fuse_pkgversion());
		ret = 0;
		goto out;
	}
	if (!o.backing || !o.mountpoint) {
		fprintf(stderr, "squeezefs: usage: %s [options] BACKING "
			"MOUNTPOINT (see --help)\n", argv[0]);
		goto out;
	}
	if (o.block_size) {
		if (parse_size(o.block_size, &v) || v < 4096 ||
		    v > (1u << 20) || (v & (v - 1))) {
			ret = fail("bad block_size '%s': want a power of two "
				   "from 4K to 1M", o.block_size);
			goto out;
		}
		fs->block_shift = (unsigned)__builtin_ctzll(v);
	}
	if (o.cache_size) {
		if (parse_size(o.cache_size, &v) || v > (64ull << 30)) {
			ret = fail("bad cache_size '%s': want a size such as "
				   "64M", o.cache_size);
			goto out;
		}
		fs->cache_size = (size_t)v;
	}
	if (o.settle && sq_settle_parse(o.settle, &sopts.mode)) {
		ret = fail("bad settle '%s': want max, balanced or off",
			   o.settle);
		goto out;
	}
	if (parse_count("settle_after", o.settle_after, 0, 365u * 86400,
			"seconds, up to a year", &sopts.after) ||
	    parse_count("settle_cpu", o.settle_cpu, 1, 100,
			"a percentage from 1 to 100", &sopts.cpu) ||
	    parse_count("stats_flush", o.stats_flush, 1, 3600,
			"seconds from 1 to 3600", &stats_flush))
		goto out;
	/* A forced codec is the user's choice for every block: nothing to
	 * settle.  Without settling, the writer pays for small files. */
	if (o.codec && strcmp(o.codec, "auto"))
		sopts.mode = SQ_SETTLE_OFF;
	if (sopts.mode == SQ_SETTLE_OFF)
		policy = SQ_AN_POLICY_BALANCED;
	if (o.policy && sq_an_policy_parse(o.policy, &policy)) {
		ret = fail("bad policy '%s': want fast, balanced or max",
			   o.policy);
		goto out;
	}
	if (o.min_saving && sq_an_parse_saving(o.min_saving, &min_saving)) {
		ret = fail("bad min_saving '%s': want a fraction from 0 to 0.9 "
			   "or a percentage such as 12.5%%", o.min_saving);
		goto out;
	}
	/* Settling is paid once and saves for as long as the data stays:
	 * its own, lower threshold, unless the user set one. */
	if (o.min_saving)
		sopts.rescore_saving = min_saving;
	if (o.settle_min_saving &&
	    sq_an_parse_saving(o.settle_min_saving, &sopts.rescore_saving)) {
		ret = fail("bad settle_min_saving '%s': want a fraction from 0 "
			   "to 0.9 or a percentage such as 3%%",
			   o.settle_min_saving);
		goto out;
	}
	r = sq_an_new(o.codec ? o.codec : "auto", policy, min_saving, &fs->an);
	if (!r)
		r = sq_an_new(o.codec ? o.codec : "auto", SQ_AN_POLICY_FAST,
			      min_saving, &fs->an_hot);
	if (!r && (!o.codec || !strcmp(o.codec, "auto")))
		r = sq_an_new("none", policy, min_saving, &fs->an_tiny);
	if (!r)
		r = sq_an_new("none", policy, min_saving, &fs->an_raw);
	if (!r)
		r = sq_pins_new(min_saving, &fs->pins);
	if (r) {
		ret = fail("bad codec '%s': want auto, none, lz4, zstd, zlib "
			   "or brotli, with an optional :level in range",
			   o.codec);
		goto out;
	}
	if (!realpath(o.backing, backing)) {
		ret = fail("BACKING %s: %s", o.backing, strerror(errno));
		goto out;
	}
	if (stat(backing, &st) || !S_ISDIR(st.st_mode)) {
		ret = fail("BACKING %s: not a directory", o.backing);
		goto out;
	}
	if (access(backing, R_OK | W_OK | X_OK) &&
	    access(backing, R_OK | X_OK)) {
		ret = fail("BACKING %s: %s", o.backing, strerror(errno));
		goto out;
	}
	if (!realpath(o.mountpoint, mnt)) {
		ret = fail("MOUNTPOINT %s: %s", o.mountpoint,
			   strerror(errno));
		goto out;
	}
	if (stat(mnt, &st) || !S_ISDIR(st.st_mode)) {
		ret = fail("MOUNTPOINT %s: not a directory", o.mountpoint);
		goto out;
	}
	if (inside(mnt, backing)) {
		ret = fail("MOUNTPOINT %s lies inside BACKING %s", mnt, backing);
		goto out;
	}
	if (inside(backing, mnt)) {
		ret = fail("BACKING %s lies inside MOUNTPOINT %s", backing, mnt);
		goto out;
	}
	r = fs_setup(fs, backing);
	if (r) {
		ret = fail("BACKING %s: %s", backing, strerror(-r));
		goto out;
	}
	/* Before the lock, which makes .squeezefs/: whether it was there
	 * says whether BACKING predates volumes (meta/volume.c). */
	{
		bool legacy_had;

		r = sq_vol_load(fs->root_fd, &fs->vol, &vol_found);
		legacy_had = !vol_found && fs->vol.legacy;
		if (!r && !vol_found)
			r = sq_vol_setup(fs->root_fd, !o.ro, &fs->vol);
		if (!r && !vol_found && fs->vol.id)
			sq_log(SQ_LOG_INFO, "BACKING %s: new volume %016llx%s",
			       backing, (unsigned long long)fs->vol.id,
			       legacy_had ? " (made by an older squeezefs: "
			       "every file is a container)" : " (plain files "
			       "in it are served as they are and converted in "
			       "the background)");
	}
	if (r == -EBADMSG) {
		ret = fail("BACKING %s: .squeezefs/volume is damaged; remove "
			   "it to mount as a BACKING of squeezefs before 0.5 "
			   "(every file a container, no plain files)", backing);
		goto out;
	}
	if (r) {
		ret = fail("BACKING %s: .squeezefs/volume: %s", backing,
			   strerror(-r));
		goto out;
	}
	fs->lock_fd = sq_lock_take(fs->root_fd, backing, "squeezefs");
	if (fs->lock_fd == -EWOULDBLOCK) {
		ret = fail("BACKING %s is already mounted by another "
			   "squeezefs", backing);
		goto out;
	}
	if (fs->lock_fd == -ETIMEDOUT) {
		ret = fail("BACKING %s is still held by a squeezefs that was "
			   "unmounted (or an fsck) after %d s: is it stuck?",
			   backing, SQ_LOCK_WAIT_SECS);
		goto out;
	}
	if (fs->lock_fd >= 0 && (r = sq_lock_serve(fs->lock_fd, true))) {
		ret = fail("cannot lock BACKING %s: %s", backing,
			   strerror(-r));
		goto out;
	}
	if (fs->lock_fd < 0 && fs->lock_fd != -EROFS) {
		ret = fail("cannot lock BACKING %s: %s", backing,
			   strerror(-fs->lock_fd));
		goto out;
	}
	m.writeback = o.writeback_cache;
	m.owner_uid = geteuid();
	m.owner_gid = getegid();
	clock_gettime(CLOCK_REALTIME, &m.mounted_at);
	m.codec_forced = o.codec && strcmp(o.codec, "auto") ? o.codec : NULL;
	atomic_store(&m.policy, (int)policy);
	pthread_mutex_init(&m.ctl_lock, NULL);
	/* The control directory shows BACKING/.squeezefs's inode number:
	 * no file of the mount has it. */
	if (fstatat(fs->root_fd, SQ_RESERVED_NAME, &st, AT_SYMLINK_NOFOLLOW) &&
	    (fs->ro || mkdirat(fs->root_fd, SQ_RESERVED_NAME, 0700) ||
	     fstatat(fs->root_fd, SQ_RESERVED_NAME, &st, AT_SYMLINK_NOFOLLOW)))
		st.st_ino = 0;
	m.ctl_dir_ino = st.st_ino ? st.st_ino : (ino_t)(UINT64_MAX - 16);

	/*
	 * Shared with other users, the kernel checks their permissions from
	 * the attributes we report, as a local filesystem would.  So it does
	 * for a privileged daemon: the kernel lets in every caller with the
	 * mounter's uids and gids, whatever its fsuid, groups or
	 * capabilities (knfsd serving NFS clients, a root service that
	 * dropped CAP_DAC_OVERRIDE), and our root would then act for them.
	 * Only an unprivileged daemon's private mount goes without: its
	 * callers are its own user, and BACKING checks what the daemon does
	 * for them (open() too, see op_open()).  The kernel's check costs a
	 * GETATTR of the directory after every create or unlink in it (the
	 * kernel drops its attributes), a quarter of those requests.
	 */
	m.own_checks = !o.shared && !privileged();
	snprintf(fsname, sizeof(fsname), "-ofsname=squeezefs:%s", backing);
	if ((!m.own_checks &&
	     fuse_opt_add_arg(&args, "-odefault_permissions")) ||
	    fuse_opt_add_arg(&args, "-osubtype=squeezefs") ||
	    fuse_opt_add_arg(&args, fsname)) {
		ret = fail("out of memory");
		goto out;
	}
	/* Modes arrive from the kernel with the caller's umask applied. */
	umask(0);
	/* glibc gives each thread that allocates its own arena, and codec
	 * contexts and block buffers freed in one thread and allocated in
	 * another leave them all at their peak: two arenas keep the daemon's
	 * peak RSS ~1/3 lower (151 -> 102 MiB on a 256 MiB fio write+read)
	 * at no measurable cost with a handful of worker threads. */
	mallopt(M_ARENA_MAX, 2);
	/* Every inode the kernel keeps costs one O_PATH fd: a tree of tens
	 * of thousands of files needs far more than the usual soft limit. */
	raise_nofile();

	se = fuse_session_new(&args, &sq_fs_ops, sizeof(sq_fs_ops), &m);
	if (!se)
		goto out;
	m.se = se;
	fs->ro = o.ro;
	if (fuse_set_signal_handlers(se))
		goto out;
	if (fuse_session_mount(se, mnt)) {
		fuse_remove_signal_handlers(se);
		goto out;
	}
	sq_log_init(!copts.foreground, copts.debug);
	if (m.writeback)
		tune_writeback(mnt);
	fuse_daemonize(copts.foreground);
	/* Threads do not survive the daemon's fork: start them after it.
	 * Without workers (-s, or none could start) blocks are stored by
	 * the thread that completes them. */
	r = sq_prune_start(&m);
	if (r)
		sq_log(SQ_LOG_WARN, "no inode pruning: %s", strerror(-r));
	/* Read-only: nothing is packed, and no stub of version 3 is
	 * upgraded (BACKING may be a snapshot). */
	r = pack_setup(fs, !o.nopack && !o.ro);
	if (r && fs->lock_fd >= 0)
		sq_log(SQ_LOG_WARN, "small files not packed: %s",
		       strerror(-r));
	if (fs->packer) {
		/* Every byte counts once files share pages: small files are
		 * compressed like any other. */
		sq_an_free(fs->an_tiny);
		fs->an_tiny = NULL;
	}
	if (!o.ro) {
		sopts.min_saving = min_saving;
		r = sq_track_start(fs, fs->bg, stats_flush, &fs->track);
		if (!r)
			r = sq_settle_start(fs, fs->track, &sopts,
					    &fs->settle);
		if (r)
			sq_log(SQ_LOG_WARN, "no settling: %s", strerror(-r));
	}
	if (!copts.singlethread) {
		long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

		r = sq_wq_new("sq-compress",
			      ncpu > 0 && ncpu < 64 ? (unsigned)ncpu : 2,
			      &fs->wq);
		if (r)
			sq_log(SQ_LOG_WARN, "no compression workers: %s",
			       strerror(-r));
	}
	if (copts.singlethread) {
		ret = loop_result(fuse_session_loop(se));
	} else {
		lcfg = fuse_loop_cfg_create();
		if (!lcfg) {
			ret = 1;
			goto unmount;
		}
		/* Each worker thread reads requests from /dev/fuse through a
		 * descriptor of its own: they no longer queue on one wait
		 * queue, and a tar of small files runs about 15% faster.
		 * libfuse's -o clone_fd, on by default here. */
		fuse_loop_cfg_set_clone_fd(lcfg, 1);
		/* Unset values come back as UINT_MAX: keep libfuse's defaults
		 * rather than have it log a warning about them. */
		if (copts.max_idle_threads != UINT_MAX)
			fuse_loop_cfg_set_idle_threads(lcfg,
						       copts.max_idle_threads);
		if (copts.max_threads > 0 && copts.max_threads <= 1000)
			fuse_loop_cfg_set_max_threads(lcfg, copts.max_threads);
		/* libfuse's default is 10 threads. */
		m.inval_max = (copts.max_threads > 0 &&
				copts.max_threads <= 1000 ?
					(int)copts.max_threads : 10) / 2 - 1;
		ret = loop_result(fuse_session_loop_mt(se, lcfg));
	}
unmount:
	/* No more requests: a new mount of BACKING may start now, and waits
	 * on the flock until everything below is stored. */
	if (fs->lock_fd >= 0)
		sq_lock_serve(fs->lock_fd, false);
	sq_prune_stop(&m);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
out:
	if (se)
		fuse_session_destroy(se);
	fuse_loop_cfg_destroy(lcfg);
	/* Stored everything, or say so: a service manager sees it. */
	if (!fs_teardown(fs) && ret == 0)
		ret = 1;
	free(o.backing);
	free(o.mountpoint);
	free(o.block_size);
	free(o.codec);
	free(o.cache_size);
	free(o.policy);
	free(o.settle);
	free(o.settle_after);
	free(o.settle_cpu);
	free(o.settle_min_saving);
	free(o.stats_flush);
	free(o.min_saving);
	fuse_opt_free_args(&args);
	return ret;
}
