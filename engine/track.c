/*
 * engine/track.c - per-file statistics gathered in memory and flushed to
 * the statistics store on the background queue (see track.h).
 */
#include "engine/track.h"

#include "analyzer/analyzer.h"

#include "engine/engine.h"
#include "engine/log.h"
#include "engine/pack_store.h"
#include "engine/workq.h"
#include "meta/container.h"
#include "meta/pack.h"
#include "meta/stats.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS 1024		/* power of two */
#define SCAN_BATCH 1000		/* files per transaction of a scan */
#define CARRY_MAX 200000	/* operations kept while there is no db */

/* One file's counters since the last flush. */
struct entry {
	struct entry *next;
	ino_t ino;
	char *path;		/* relative to BACKING, or NULL */
	unsigned set;		/* SQ_STATS_SET_* */
	uint64_t logical, stored;
	int64_t last_read, last_write;
	uint64_t reads, writes, bytes_read, bytes_written;
	int cls;		/* enum sq_an_class, when SQ_STATS_SET_CLASS */
	uint64_t compress_ns, rewrites;
};

struct sq_track {
	/* Immutable after start. */
	struct sq_fs *fs;
	struct sq_wq *wq;
	uint64_t flush_ns;	/* between flushes */
	char *prefix;		/* BACKING's real path, for readlink() */
	size_t prefix_len;

	pthread_mutex_t lock;	/* a leaf */
	/* Guarded by lock. */
	struct entry *bucket[BUCKETS];
	size_t nentries;
	struct sq_stats_batch *ops;	/* renames, unlinks, in order */
	bool dropped_said;
	struct sq_stats_tally codecs;	/* the foreground's blocks */

	pthread_mutex_t db_lock;
	/* Guarded by db_lock. */
	struct sq_stats *db;
	ino_t db_ino;		/* of stats.db when opened */
	struct stat db_st;	/* stats.db as our last write left it */
	struct sq_stats_batch *carry;	/* the flush's batch */
	bool scan_needed;
	int64_t scan_hot_since;	/* files written since go hot */
	/* After a clean unmount, a walk for plain files put into BACKING
	 * since (ctime at or after discover_since): the settle loop converts
	 * them.  Non-legacy volumes only. */
	bool discover_needed;
	int64_t discover_since;
	bool clean;		/* last apply succeeded */
	int said;		/* the last problem logged (0: none) */
	struct sq_wq_job flush;
};

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

int sq_track_path(const struct sq_track *t, int dirfd, const char *name,
		  char *buf, size_t len)
{
	char link[64], path[PATH_MAX];
	const char *rel;
	ssize_t n;
	int w;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		return -ENOENT;
	path[n] = '\0';
	/* A deleted object's link ends in " (deleted)": not under BACKING
	 * any more, as far as rows are concerned. */
	if ((size_t)n < t->prefix_len ||
	    memcmp(path, t->prefix, t->prefix_len) ||
	    (path[t->prefix_len] && path[t->prefix_len] != '/'))
		return -ENOENT;
	rel = path + t->prefix_len;
	while (*rel == '/')
		rel++;
	if (name && name[0])
		w = snprintf(buf, len, "%s%s%s", rel, rel[0] ? "/" : "", name);
	else
		w = snprintf(buf, len, "%s", rel);
	if (w < 0 || (size_t)w >= len)
		return -ENAMETOOLONG;
	return buf[0] ? 0 : -ENOENT;
}

/* ---- the in-memory table ---- */

static size_t hash(ino_t ino)
{
	return ((uint64_t)ino * 0x9E3779B97F4A7C15ull >> 40) & (BUCKETS - 1);
}

/* The entry of @ino, or NULL.  lock held. */
static struct entry *entry_find(struct sq_track *t, ino_t ino)
{
	struct entry *e;

	for (e = t->bucket[hash(ino)]; e; e = e->next)
		if (e->ino == ino)
			return e;
	return NULL;
}

/* The entry of @ino, created when missing; NULL when full or out of
 * memory (counted as dropped).  lock held. */
static struct entry *entry_get(struct sq_track *t, ino_t ino)
{
	struct entry **pp = &t->bucket[hash(ino)], *e = entry_find(t, ino);

	if (e)
		return e;
	e = t->nentries < SQ_TRACK_MAX_PENDING ? calloc(1, sizeof(*e)) : NULL;
	if (!e) {
		if (!t->dropped_said)
			sq_log(SQ_LOG_WARN, "statistics: too many files "
			       "pending, some counters dropped");
		t->dropped_said = true;
		return NULL;
	}
	e->ino = ino;
	e->next = *pp;
	*pp = e;
	t->nentries++;
	return e;
}

static void entry_drop(struct sq_track *t, ino_t ino)
{
	struct entry **pp = &t->bucket[hash(ino)], *e;

	for (; (e = *pp); pp = &e->next)
		if (e->ino == ino) {
			*pp = e->next;
			free(e->path);
			free(e);
			t->nentries--;
			return;
		}
}

/* Gives *@p (malloc'd, or NULL) to @e as its path.  lock held. */
static void entry_set_path(struct entry *e, char **p)
{
	if (!*p)
		return;
	free(e->path);
	e->path = *p;
	*p = NULL;
	e->set |= SQ_STATS_SET_PATH;
}

void sq_track_io(struct sq_track *t, const struct sq_inode *i, bool write,
		 uint64_t bytes)
{
	struct entry *e;

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	e = entry_get(t, i->src_ino);
	if (e && write) {
		e->writes++;
		e->bytes_written += bytes;
		e->last_write = now_s();
		e->set |= SQ_STATS_SET_LAST_WRITE;
	} else if (e) {
		e->reads++;
		e->bytes_read += bytes;
		e->last_read = now_s();
		e->set |= SQ_STATS_SET_LAST_READ;
	}
	pthread_mutex_unlock(&t->lock);
}

void sq_track_coded(struct sq_track *t, const struct sq_inode *i, int cls,
		    uint64_t compress_ns, uint64_t rewrites)
{
	struct entry *e;

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	e = entry_get(t, i->src_ino);
	if (e) {
		e->compress_ns += compress_ns;
		e->rewrites += rewrites;
		if (cls > SQ_AN_CLASS_ZERO && cls < SQ_AN_CLASS_COUNT) {
			e->cls = cls;
			e->set |= SQ_STATS_SET_CLASS;
		}
	}
	pthread_mutex_unlock(&t->lock);
}

void sq_track_closed(struct sq_track *t, const struct sq_inode *i,
		     bool wrote, uint64_t logical, uint64_t stored)
{
	char path[PATH_MAX];
	char *p = NULL;
	struct entry *e;

	if (!t)
		return;
	if (sq_track_path(t, i->fd, NULL, path, sizeof(path)) == 0)
		p = strdup(path);
	pthread_mutex_lock(&t->lock);
	e = entry_get(t, i->src_ino);
	if (e) {
		e->logical = logical;
		e->stored = stored;
		e->set |= SQ_STATS_SET_LOGICAL | SQ_STATS_SET_STORED;
		if (wrote) {
			e->last_write = now_s();
			e->set |= SQ_STATS_SET_LAST_WRITE | SQ_STATS_SET_STATE;
		}
		entry_set_path(e, &p);
	}
	pthread_mutex_unlock(&t->lock);
	free(p);
}

void sq_track_created(struct sq_track *t, int fd, int dirfd,
		      const char *name)
{
	char path[PATH_MAX];
	struct entry *e;
	struct stat st;
	char *p;

	if (!t || fstat(fd, &st) ||
	    sq_track_path(t, dirfd, name, path, sizeof(path)))
		return;
	p = strdup(path);
	pthread_mutex_lock(&t->lock);
	e = entry_get(t, st.st_ino);
	if (e) {
		e->logical = 0;
		e->stored = (uint64_t)st.st_blocks * 512;
		e->last_write = now_s();
		e->set |= SQ_STATS_SET_LOGICAL | SQ_STATS_SET_STORED |
			  SQ_STATS_SET_LAST_WRITE | SQ_STATS_SET_STATE;
		entry_set_path(e, &p);
	}
	pthread_mutex_unlock(&t->lock);
	free(p);
}

/* @path (NUL-terminated) lies under directory @from: the same path under
 * @to, malloc'd; NULL otherwise. */
static char *moved(const char *path, const char *from, const char *to)
{
	size_t fl = strlen(from);
	char *r;

	if (strncmp(path, from, fl) || path[fl] != '/')
		return NULL;
	if (asprintf(&r, "%s%s", to, path + fl) < 0)
		return NULL;
	return r;
}

void sq_track_renamed(struct sq_track *t, const char *old_path, int dirfd,
		      const char *name)
{
	char path[PATH_MAX];
	struct entry *e;
	struct stat st;

	if (!t || !old_path[0] ||
	    fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) ||
	    sq_track_path(t, dirfd, name, path, sizeof(path)))
		return;
	pthread_mutex_lock(&t->lock);
	if (S_ISREG(st.st_mode)) {
		if (sq_stats_batch_rename(t->ops, sq_stats_file_id(st.st_ino),
					  path) == 0) {
			e = entry_find(t, st.st_ino);
			if (e && e->path) {
				char *p = strdup(path);

				if (p) {
					free(e->path);
					e->path = p;
				}
			}
		}
	} else if (S_ISDIR(st.st_mode)) {
		sq_stats_batch_rename_tree(t->ops, old_path, path);
		for (size_t b = 0; b < BUCKETS; b++)
			for (e = t->bucket[b]; e; e = e->next) {
				char *p = e->path ? moved(e->path, old_path,
							  path) : NULL;

				if (p) {
					free(e->path);
					e->path = p;
				}
			}
	}
	pthread_mutex_unlock(&t->lock);
}

void sq_track_unlinked(struct sq_track *t, ino_t ino, const char *path,
		       bool last)
{
	int64_t id = sq_stats_file_id(ino);

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	if (last) {
		entry_drop(t, ino);
		sq_stats_batch_unlink(t->ops, id);
	} else if (path[0]) {
		struct entry *e;

		sq_stats_batch_forget_name(t->ops, id, path);
		e = entry_find(t, ino);
		if (e && e->path && !strcmp(e->path, path)) {
			free(e->path);
			e->path = NULL;
			e->set &= ~SQ_STATS_SET_PATH;
		}
	}
	pthread_mutex_unlock(&t->lock);
}

/* The analyzer's hook: counts each block the foreground stores. */
static void trace(void *arg, const struct sq_an_file *af, uint64_t idx,
		  const struct sq_an_result *res)
{
	struct sq_track *t = arg;

	(void)af;
	(void)idx;
	if (res->zero)
		return;
	pthread_mutex_lock(&t->lock);
	sq_stats_tally_add(&t->codecs, sq_an_class_name(res->cls), res->codec,
			   res->level, res->in_len, res->len, res->ns_codec,
			   res->how == SQ_AN_HOW_FALLBACK);
	pthread_mutex_unlock(&t->lock);
}

/* ---- the database ---- */

/* Logs @what once until the state changes. */
static void say(struct sq_track *t, int code, int level, const char *what,
		int err)
{
	if (t->said == code)
		return;
	t->said = code;
	sq_log(level, "statistics: %s%s%s", what, err ? ": " : "",
	       err ? strerror(-err) : "");
}

static void db_close(struct sq_track *t)
{
	sq_stats_close(t->db);
	t->db = NULL;
}

/* Opens the database when there is none.  db_lock held. */
static void db_open(struct sq_track *t)
{
	struct sq_stats_open_report rep;
	struct stat st;
	int r;

	if (t->db)
		return;
	memset(&rep, 0, sizeof(rep));
	r = sq_stats_open(t->fs->root_fd, 0, &t->db, &rep);
	if (r == -EBUSY) {
		say(t, 1, SQ_LOG_WARN, "stats.db is locked by another "
		    "process; running without statistics until it is free", 0);
		return;
	}
	if (r) {
		say(t, 2, SQ_LOG_WARN, "cannot open stats.db, running without "
		    "statistics", r);
		return;
	}
	if (fstatat(t->fs->root_fd, SQ_STATS_DB, &st, 0) == 0) {
		t->db_ino = st.st_ino;
		t->db_st = st;
	}
	if (rep.damaged) {
		char msg[320];

		/* One line: quick_check's findings come one per line. */
		for (char *c = rep.why; *c; c++)
			if (*c == '\n' || *c == '\r')
				*c = ' ';
		snprintf(msg, sizeof(msg), "stats.db was damaged (%s), moved "
			 "to %s; rebuilding it from BACKING", rep.why,
			 rep.moved_to);
		t->said = 0;
		say(t, 3, SQ_LOG_WARN, msg, 0);
		t->scan_needed = true;
		t->scan_hot_since = 0;
	} else if (rep.created || rep.from_version == 0) {
		/* None, or an empty file (emptied by hand, or a crash while
		 * it was first made): whatever it held is gone. */
		t->said = 0;
		say(t, 4, SQ_LOG_INFO, rep.created ?
		    "new stats.db; filling it from BACKING" :
		    "stats.db was empty; filling it from BACKING", 0);
		t->scan_needed = true;
		t->scan_hot_since = 0;
	} else if (t->said) {
		t->said = 0;
		sq_log(SQ_LOG_INFO, "statistics: stats.db open again");
	}
}

/* Whether the open database is still BACKING's stats.db (not deleted or
 * replaced under us).  db_lock held. */
static bool db_same(struct sq_track *t)
{
	struct stat st;

	return fstatat(t->fs->root_fd, SQ_STATS_DB, &st, 0) == 0 &&
	       st.st_ino == t->db_ino;
}

/*
 * Whether someone else wrote stats.db itself since our last write.  In
 * WAL mode, SQLite writes the main file only when it checkpoints (ours
 * run within our own transactions); another writer, a checkpoint by a
 * `sqlite3` session, or damage changes it behind our page cache, which
 * would then hide the damage until it was written back over.  The
 * handle is made anew then, and sq_stats_open() checks the file.
 */
static bool db_touched(struct sq_track *t)
{
	struct stat st;

	if (fstatat(t->fs->root_fd, SQ_STATS_DB, &st, 0))
		return true;
	return st.st_size != t->db_st.st_size ||
	       st.st_mtim.tv_sec != t->db_st.st_mtim.tv_sec ||
	       st.st_mtim.tv_nsec != t->db_st.st_mtim.tv_nsec ||
	       st.st_ctim.tv_sec != t->db_st.st_ctim.tv_sec ||
	       st.st_ctim.tv_nsec != t->db_st.st_ctim.tv_nsec;
}

/* Applies @b, reopening a database that went bad once.  Returns 0 or
 * -errno; @b is cleared unless the database was busy. */
static int db_apply(struct sq_track *t, struct sq_stats_batch *b)
{
	int r = -ENODEV;

	if (t->db && !db_same(t)) {
		say(t, 5, SQ_LOG_WARN, "stats.db was removed or replaced "
		    "while mounted; making it anew", 0);
		db_close(t);
	} else if (t->db && db_touched(t)) {
		/* Reopened quietly: sq_stats_open() says what it finds. */
		db_close(t);
	}
	db_open(t);
	if (t->db)
		r = sq_stats_apply(t->db, b);
	if (r && r != -EBUSY && r != -ENODEV && t->db) {
		/* Damaged under us, most likely: sq_stats_open() moves it
		 * aside and starts a fresh one. */
		say(t, 6, SQ_LOG_WARN, "cannot write stats.db, reopening it",
		    r);
		db_close(t);
		db_open(t);
		r = t->db ? sq_stats_apply(t->db, b) : -ENODEV;
	}
	if (r == -EBUSY)
		say(t, 1, SQ_LOG_WARN, "stats.db is locked by another "
		    "process; keeping the statistics until it is free", 0);
	else if (r == 0 && t->said == 1) {
		t->said = 0;
		sq_log(SQ_LOG_INFO, "statistics: stats.db is free again");
	}
	if (t->db) {
		struct stat st;

		if (fstatat(t->fs->root_fd, SQ_STATS_DB, &st, 0) == 0)
			t->db_st = st;
	}
	t->clean = r == 0;
	if (r == 0 || (r != -EBUSY && r != -ENODEV) ||
	    sq_stats_batch_count(b) > CARRY_MAX)
		sq_stats_batch_clear(b);
	return r;
}

/* Moves what is pending into t->carry.  db_lock held. */
static void take_pending(struct sq_track *t)
{
	struct sq_stats_file_delta d;
	struct entry *e, *next;

	pthread_mutex_lock(&t->lock);
	/* Renames and unlinks first: the counters below belong to files
	 * that exist under the names they carry now. */
	if (sq_stats_batch_count(t->ops)) {
		struct sq_stats_batch *tmp = t->ops;

		/* The carry keeps order: a fresh batch takes new ops, and
		 * the old one is appended whole. */
		if (!sq_stats_batch_count(t->carry)) {
			t->ops = t->carry;
			t->carry = tmp;
		} else {
			sq_stats_batch_append(t->carry, tmp);
		}
	}
	sq_stats_tally_flush(&t->codecs, t->carry);
	for (size_t b = 0; b < BUCKETS; b++) {
		for (e = t->bucket[b]; e; e = next) {
			next = e->next;
			sq_stats_file_delta_init(&d, sq_stats_file_id(e->ino));
			d.set = e->set;
			if (!e->path)
				d.set &= ~SQ_STATS_SET_PATH;
			d.path = e->path;
			d.logical_bytes = e->logical;
			d.stored_bytes = e->stored;
			d.last_read = e->last_read;
			d.last_write = e->last_write;
			d.state = SQ_STATS_HOT;
			d.reads = e->reads;
			d.writes = e->writes;
			d.bytes_read = e->bytes_read;
			d.bytes_written = e->bytes_written;
			d.compress_ns = e->compress_ns;
			d.rewrites = e->rewrites;
			d.cls = e->set & SQ_STATS_SET_CLASS ?
					sq_an_class_name(e->cls) : NULL;
			sq_stats_batch_file(t->carry, &d);
			free(e->path);
			free(e);
		}
		t->bucket[b] = NULL;
	}
	t->nentries = 0;
	pthread_mutex_unlock(&t->lock);
}

/* ---- the scan ---- */

struct scan {
	struct sq_track *t;
	struct sq_stats_batch *b;
	char path[PATH_MAX];
	uint64_t files;
	bool plain_only;	/* discovery: plain files changed since */
	int64_t since;
};

static void scan_file(struct scan *s, int dirfd, const char *name,
		      const struct stat *st)
{
	struct sq_stats_file_delta d;
	struct sq_pack_ref ref;
	uint64_t size = 0;
	unsigned shift;
	bool plain = false;
	int fd;

	/* Discovery reads only what changed while unmounted, and keeps
	 * only plain files: the rows of the others are known. */
	if (s->plain_only && (st->st_size <= SQ_PACK_STUB_LEN ||
			      st->st_ctim.tv_sec < s->since))
		return;

	sq_stats_file_delta_init(&d, sq_stats_file_id(st->st_ino));
	d.path = s->path;
	d.set = SQ_STATS_SET_PATH | SQ_STATS_SET_LOGICAL |
		SQ_STATS_SET_STORED;
	d.stored_bytes = (uint64_t)st->st_blocks * 512;
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOATIME |
		    O_CLOEXEC);
	if (fd < 0)
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	if (st->st_size <= SQ_PACK_STUB_LEN &&
	    sq_pack_get_ref(fd, NULL, &ref) == 0) {
		size = ref.size;
		d.stored_bytes = ref.len;
	} else if (sq_ctr_peek(fd, &s->t->fs->vol, &size, &shift, &plain)) {
		close(fd);
		return;		/* not a container: fsck's business */
	}
	close(fd);
	if (s->plain_only && !plain)
		return;
	d.logical_bytes = size;
	/* Written since the last flush we know of, or a plain file moved in
	 * (converted by the settle loop): a settle candidate. */
	if (plain || st->st_mtim.tv_sec >= s->t->scan_hot_since) {
		d.set |= SQ_STATS_SET_LAST_WRITE | SQ_STATS_SET_STATE;
		d.last_write = st->st_mtim.tv_sec;
		d.state = SQ_STATS_HOT;
	}
	if (sq_stats_batch_file(s->b, &d) == 0)
		s->files++;
	if (sq_stats_batch_count(s->b) >= SCAN_BATCH)
		db_apply(s->t, s->b);
}

/* Walks the directory @dirfd (consumed) whose path is s->path. */
static void scan_dir(struct scan *s, int dirfd, int depth)
{
	size_t len = strlen(s->path);
	struct dirent *de;
	DIR *d;

	if (depth > 256 || !(d = fdopendir(dirfd))) {
		close(dirfd);
		return;
	}
	while ((de = readdir(d)) && !sq_wq_stopping(s->t->wq)) {
		struct stat st;
		int w;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (depth == 0 && !strcmp(de->d_name, SQ_RESERVED_NAME)))
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		w = snprintf(s->path + len, sizeof(s->path) - len, "%s%s",
			     len ? "/" : "", de->d_name);
		if (w < 0 || (size_t)w >= sizeof(s->path) - len)
			continue;
		if (S_ISREG(st.st_mode)) {
			scan_file(s, dirfd, de->d_name, &st);
		} else if (S_ISDIR(st.st_mode)) {
			int fd = openat(dirfd, de->d_name, O_RDONLY |
					O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (fd >= 0)
				scan_dir(s, fd, depth + 1);
		}
		s->path[len] = '\0';
	}
	closedir(d);
}

/* Fills the database from BACKING.  db_lock held. */
static void scan(struct sq_track *t)
{
	struct scan s = { .t = t };
	struct timespec t0, t1;
	int fd;

	if (sq_stats_batch_new(&s.b))
		return;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	fd = openat(t->fs->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		scan_dir(&s, fd, 0);
	db_apply(t, s.b);
	sq_stats_batch_free(s.b);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	sq_log(SQ_LOG_INFO, "statistics: scanned BACKING: %llu files in "
	       "%.1f s", (unsigned long long)s.files,
	       (double)(t1.tv_sec - t0.tv_sec) +
		       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	/* Cut short by an unmount: the next mount scans again (no clean
	 * mark is left while one is needed). */
	if (!sq_wq_stopping(t->wq))
		t->scan_needed = false;
}

/* Finds the plain files put into BACKING while it was unmounted (a full
 * scan finds them anyway).  db_lock held. */
static void discover(struct sq_track *t)
{
	struct scan s = { .t = t, .plain_only = true,
			  .since = t->discover_since };
	int fd;

	if (sq_stats_batch_new(&s.b))
		return;
	fd = openat(t->fs->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		scan_dir(&s, fd, 0);
	db_apply(t, s.b);
	sq_stats_batch_free(s.b);
	/* Cut short: no clean mark, so the next mount scans it all. */
	if (!sq_wq_stopping(t->wq))
		t->discover_needed = false;
	if (s.files)
		sq_log(SQ_LOG_INFO, "statistics: %llu plain files put into "
		       "BACKING while unmounted; they will be converted",
		       (unsigned long long)s.files);
}

/* db_lock held. */
static void flush_locked(struct sq_track *t)
{
	take_pending(t);
	db_apply(t, t->carry);
	if (t->scan_needed && t->db && !sq_wq_stopping(t->wq))
		scan(t);
	else if (t->discover_needed && t->db && !sq_wq_stopping(t->wq))
		discover(t);
}

static void flush_job(struct sq_wq_job *job)
{
	struct sq_track *t = sq_container_of(job, struct sq_track, flush);

	pthread_mutex_lock(&t->db_lock);
	flush_locked(t);
	pthread_mutex_unlock(&t->db_lock);
	if (!sq_wq_stopping(t->wq))
		sq_wq_push_after(t->wq, &t->flush, t->flush_ns);
}

int sq_track_with_db(struct sq_track *t, sq_track_db_fn fn, void *arg)
{
	int r;

	pthread_mutex_lock(&t->db_lock);
	take_pending(t);
	db_apply(t, t->carry);
	r = fn(arg, t->db, t->carry);
	if (t->db) {
		struct stat st;

		/* @fn's own writes (a policy table) are not someone else's. */
		if (fstatat(t->fs->root_fd, SQ_STATS_DB, &st, 0) == 0)
			t->db_st = st;
	}
	db_apply(t, t->carry);
	pthread_mutex_unlock(&t->db_lock);
	return r;
}

/* ---- start and stop ---- */

int sq_track_start(struct sq_fs *fs, struct sq_wq *wq, unsigned flush_secs,
		   struct sq_track **out)
{
	struct sq_track *t;
	char real[PATH_MAX], link[64];
	struct stat st;
	ssize_t n;

	*out = NULL;
	if (fs->ro || fs->lock_fd < 0 || !wq)
		return 0;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->fs = fs;
	t->wq = wq;
	t->flush_ns = (uint64_t)(flush_secs ? flush_secs : SQ_TRACK_FLUSH_SECS) *
		      1000000000ull;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fs->root_fd);
	n = readlink(link, real, sizeof(real) - 1);
	if (n <= 0 || !(t->prefix = strndup(real, (size_t)n)) ||
	    sq_stats_batch_new(&t->ops) || sq_stats_batch_new(&t->carry)) {
		sq_stats_batch_free(t->ops);
		free(t->prefix);
		free(t);
		return -ENOMEM;
	}
	/* "/" as BACKING: every path starts after it. */
	t->prefix_len = (size_t)n == 1 ? 0 : (size_t)n;
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->db_lock, NULL);
	/* The mark goes while we may write: a crash leaves it absent, and
	 * the next mount then looks for files written after the last
	 * flush that reached the database. */
	if (!fs->vol.legacy &&
	    fstatat(fs->root_fd, SQ_TRACK_CLEAN, &st, 0) == 0) {
		/* Written at the last clean unmount: anything changed in
		 * BACKING since was changed beside the mount. */
		t->discover_needed = true;
		t->discover_since = st.st_ctim.tv_sec - 2;
	}
	if (unlinkat(fs->root_fd, SQ_TRACK_CLEAN, 0) && errno == ENOENT &&
	    fstatat(fs->root_fd, SQ_STATS_DB, &st, 0) == 0) {
		struct stat wal;

		if (fstatat(fs->root_fd, SQ_STATS_DB "-wal", &wal, 0) == 0 &&
		    wal.st_mtim.tv_sec > st.st_mtim.tv_sec)
			st.st_mtim = wal.st_mtim;
		t->scan_needed = true;
		t->scan_hot_since = st.st_mtim.tv_sec - 2 *
				    (int64_t)(t->flush_ns / 1000000000ull);
		sq_log(SQ_LOG_INFO, "statistics: the last mount did not end "
		       "cleanly; looking for files written since its last "
		       "flush");
	}
	pthread_mutex_lock(&t->db_lock);
	db_open(t);
	pthread_mutex_unlock(&t->db_lock);
	/* The foreground's choices, for the codecs table. */
	sq_an_set_trace(fs->an, trace, t);
	if (fs->an_hot != fs->an)
		sq_an_set_trace(fs->an_hot, trace, t);
	t->flush.run = flush_job;
	/* The first flush at once: it runs a scan that is due. */
	sq_wq_push(wq, &t->flush);
	*out = t;
	return 0;
}

void sq_track_free(struct sq_track *t)
{
	struct entry *e, *next;
	int fd;

	if (!t)
		return;
	sq_an_set_trace(t->fs->an, NULL, NULL);
	if (t->fs->an_hot != t->fs->an)
		sq_an_set_trace(t->fs->an_hot, NULL, NULL);
	pthread_mutex_lock(&t->db_lock);
	take_pending(t);
	db_apply(t, t->carry);
	if (t->db && t->clean && !t->scan_needed && !t->discover_needed) {
		fd = openat(t->fs->root_fd, SQ_TRACK_CLEAN,
			    O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
	}
	db_close(t);
	pthread_mutex_unlock(&t->db_lock);
	for (size_t b = 0; b < BUCKETS; b++)
		for (e = t->bucket[b]; e; e = next) {
			next = e->next;
			free(e->path);
			free(e);
		}
	sq_stats_batch_free(t->ops);
	sq_stats_batch_free(t->carry);
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->db_lock);
	free(t->prefix);
	free(t);
}
