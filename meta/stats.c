/*
 * meta/stats.c - the statistics store (meta/stats.h): opening, repairing
 * by replacement, migrating, and the one-transaction batch apply of
 * BACKING/.squeezefs/stats.db.  The schema is docs/STATS.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "codec/codec.h"
#include "meta/stats.h"

static const char *const state_names[SQ_STATS_STATE_COUNT] = {
	[SQ_STATS_HOT] = "hot",
	[SQ_STATS_SETTLING] = "settling",
	[SQ_STATS_SETTLED] = "settled",
	[SQ_STATS_PINNED] = "pinned",
};

static const char *const which_names[SQ_STATS_WHICH_COUNT] = {
	[SQ_STATS_FOREGROUND] = "foreground",
	[SQ_STATS_SETTLE] = "settle",
};

const char *sq_stats_state_name(int state)
{
	if (state < 0 || state >= SQ_STATS_STATE_COUNT)
		return "?";
	return state_names[state];
}

int sq_stats_state_parse(const char *name)
{
	for (int i = 0; name && i < SQ_STATS_STATE_COUNT; i++)
		if (!strcmp(name, state_names[i]))
			return i;
	return -EINVAL;
}

int64_t sq_stats_file_id(uint64_t st_ino)
{
	/* SQLite's integers are signed; the bits are kept as they are. */
	return (int64_t)st_ino;
}

/* ---- the schema and its migrations ---- */

/*
 * Version 0 -> 1: the first schema.  Later steps are added as
 * migrate_1_to_2() and so on, never by editing this one: a database at
 * version 1 must reach the newest schema through the same steps as one
 * made today.
 */
static const char schema_v1[] =
	"CREATE TABLE files ("
	" id INTEGER PRIMARY KEY,"
	" path TEXT,"
	" class TEXT,"
	" logical_bytes INTEGER NOT NULL DEFAULT 0,"
	" stored_bytes INTEGER NOT NULL DEFAULT 0,"
	" reads INTEGER NOT NULL DEFAULT 0,"
	" writes INTEGER NOT NULL DEFAULT 0,"
	" bytes_read INTEGER NOT NULL DEFAULT 0,"
	" bytes_written INTEGER NOT NULL DEFAULT 0,"
	" rewrites INTEGER NOT NULL DEFAULT 0,"
	" compress_ns INTEGER NOT NULL DEFAULT 0,"
	" decompress_ns INTEGER NOT NULL DEFAULT 0,"
	" last_read INTEGER,"
	" last_write INTEGER,"
	" last_settled INTEGER,"
	" state TEXT NOT NULL DEFAULT 'hot'"
	"  CHECK (state IN ('hot', 'settling', 'settled', 'pinned')));"
	"CREATE INDEX files_path ON files (path);"
	/* The settle loop's scan: hot files by last write. */
	"CREATE INDEX files_cold ON files (state, last_write);"
	"CREATE TABLE file_blocks ("
	" file_id INTEGER NOT NULL,"
	" codec TEXT NOT NULL,"
	" level INTEGER NOT NULL,"
	" blocks INTEGER NOT NULL,"
	" PRIMARY KEY (file_id, codec, level)) WITHOUT ROWID;"
	"CREATE TABLE codecs ("
	" class TEXT NOT NULL,"
	" codec TEXT NOT NULL,"
	" level INTEGER NOT NULL,"
	" bytes_in INTEGER NOT NULL DEFAULT 0,"
	" bytes_out INTEGER NOT NULL DEFAULT 0,"
	" compress_ns INTEGER NOT NULL DEFAULT 0,"
	" decompress_ns INTEGER NOT NULL DEFAULT 0,"
	" blocks INTEGER NOT NULL DEFAULT 0,"
	" fallbacks INTEGER NOT NULL DEFAULT 0,"
	" PRIMARY KEY (class, codec, level)) WITHOUT ROWID;"
	"CREATE TABLE log ("
	" id INTEGER PRIMARY KEY,"
	" time INTEGER NOT NULL,"
	" file_id INTEGER,"
	" action TEXT NOT NULL,"
	" bytes_before INTEGER,"
	" bytes_after INTEGER,"
	" evidence TEXT);"
	"CREATE INDEX log_file ON log (file_id);"
	"CREATE TABLE policy ("
	" which TEXT NOT NULL CHECK (which IN ('foreground', 'settle')),"
	" class TEXT NOT NULL,"
	" codec TEXT NOT NULL,"
	" level INTEGER NOT NULL,"
	" PRIMARY KEY (which, class)) WITHOUT ROWID;";

static int migrate_0_to_1(sqlite3 *db)
{
	return sqlite3_exec(db, schema_v1, NULL, NULL, NULL);
}

/* migrations[v] takes a database from version v to v + 1. */
static int (*const migrations[SQ_STATS_VERSION])(sqlite3 *db) = {
	migrate_0_to_1,
};

/* ---- errors ---- */

/* Maps an SQLite result code to -errno. */
static int sq_err(sqlite3 *db, int rc)
{
	int sys;

	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return -EBADMSG;
	case SQLITE_CONSTRAINT:
	case SQLITE_MISMATCH:
	case SQLITE_RANGE:
		return -EINVAL;
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
		sys = db ? sqlite3_system_errno(db) : 0;
		return sys > 0 ? -sys : -EIO;
	default:
		return -EIO;
	}
}

/* True for the result codes that mean "this file is no sound database". */
static bool is_damage(int rc)
{
	return (rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT;
}

/* ---- the handle ---- */

enum stmt_id {
	S_BEGIN, S_COMMIT, S_ROLLBACK,
	S_FILE_UPSERT, S_BLOCKS_UPSERT, S_BLOCKS_PRUNE,
	S_RENAME, S_RENAME_TREE, S_FORGET_NAME, S_UNLINK_BLOCKS, S_UNLINK_FILE,
	S_CODEC_UPSERT, S_LOG_INSERT,
	S_FILE_GET, S_FILES_COLD, S_FILE_BLOCKS, S_CODECS_GET,
	S_POLICY_DEL, S_POLICY_INS, S_POLICY_GET, S_STATES,
	S_COUNT
};

#define FILE_COLS "id, path, class, logical_bytes, stored_bytes, reads," \
	" writes, bytes_read, bytes_written, rewrites, compress_ns," \
	" decompress_ns, last_read, last_write, last_settled, state"

static const char *const stmt_sql[S_COUNT] = {
	/* IMMEDIATE takes the write lock at once, so a busy database fails
	 * here, under the busy timeout, and never half way through. */
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	/* A NULL "set" parameter keeps the stored value. */
	[S_FILE_UPSERT] =
	"INSERT INTO files (id, path, class, logical_bytes, stored_bytes,"
	" last_read, last_write, last_settled, state, reads, writes,"
	" bytes_read, bytes_written, rewrites, compress_ns, decompress_ns)"
	" VALUES (?1, ?2, ?3, coalesce(?4, 0), coalesce(?5, 0), ?6, ?7, ?8,"
	" coalesce(?9, 'hot'), ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
	" ON CONFLICT (id) DO UPDATE SET"
	" path = coalesce(?2, path), class = coalesce(?3, class),"
	" logical_bytes = coalesce(?4, logical_bytes),"
	" stored_bytes = coalesce(?5, stored_bytes),"
	" last_read = coalesce(?6, last_read),"
	" last_write = coalesce(?7, last_write),"
	" last_settled = coalesce(?8, last_settled),"
	" state = coalesce(?9, state),"
	" reads = reads + excluded.reads,"
	" writes = writes + excluded.writes,"
	" bytes_read = bytes_read + excluded.bytes_read,"
	" bytes_written = bytes_written + excluded.bytes_written,"
	" rewrites = rewrites + excluded.rewrites,"
	" compress_ns = compress_ns + excluded.compress_ns,"
	" decompress_ns = decompress_ns + excluded.decompress_ns",
	[S_BLOCKS_UPSERT] =
	"INSERT INTO file_blocks (file_id, codec, level, blocks)"
	" VALUES (?1, ?2, ?3, ?4) ON CONFLICT (file_id, codec, level)"
	" DO UPDATE SET blocks = blocks + excluded.blocks",
	/* A codec a file no longer uses leaves no row behind. */
	[S_BLOCKS_PRUNE] =
	"DELETE FROM file_blocks WHERE file_id = ?1 AND blocks <= 0",
	[S_RENAME] = "UPDATE files SET path = ?2 WHERE id = ?1",
	/* Every path under directory ?1 moves under ?2 (substr() and
	 * length() both count characters). */
	[S_RENAME_TREE] = "UPDATE files SET path = ?2 || substr(path,"
	" length(?1) + 1) WHERE substr(path, 1, length(?1) + 1) = ?1 || '/'",
	[S_FORGET_NAME] =
	"UPDATE files SET path = NULL WHERE id = ?1 AND path = ?2",
	[S_UNLINK_BLOCKS] = "DELETE FROM file_blocks WHERE file_id = ?1",
	[S_UNLINK_FILE] = "DELETE FROM files WHERE id = ?1",
	[S_CODEC_UPSERT] =
	"INSERT INTO codecs (class, codec, level, bytes_in, bytes_out,"
	" compress_ns, decompress_ns, blocks, fallbacks)"
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
	" ON CONFLICT (class, codec, level) DO UPDATE SET"
	" bytes_in = bytes_in + excluded.bytes_in,"
	" bytes_out = bytes_out + excluded.bytes_out,"
	" compress_ns = compress_ns + excluded.compress_ns,"
	" decompress_ns = decompress_ns + excluded.decompress_ns,"
	" blocks = blocks + excluded.blocks,"
	" fallbacks = fallbacks + excluded.fallbacks",
	[S_LOG_INSERT] =
	"INSERT INTO log (time, file_id, action, bytes_before, bytes_after,"
	" evidence) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[S_FILE_GET] = "SELECT " FILE_COLS " FROM files WHERE id = ?1",
	[S_FILES_COLD] = "SELECT " FILE_COLS " FROM files"
	" WHERE state IN ('hot', 'settling') AND last_write < ?1"
	" ORDER BY last_write, id",
	[S_FILE_BLOCKS] = "SELECT codec, level, blocks FROM file_blocks"
	" WHERE file_id = ?1 ORDER BY codec, level",
	[S_CODECS_GET] = "SELECT codec, level, bytes_in, bytes_out,"
	" compress_ns, decompress_ns, blocks, fallbacks FROM codecs"
	" WHERE class = ?1 ORDER BY codec, level",
	[S_POLICY_DEL] = "DELETE FROM policy WHERE which = ?1",
	[S_POLICY_INS] = "INSERT INTO policy (which, class, codec, level)"
	" VALUES (?1, ?2, ?3, ?4)",
	[S_POLICY_GET] = "SELECT class, codec, level FROM policy"
	" WHERE which = ?1 ORDER BY class",
	[S_STATES] = "SELECT coalesce(class, ''), state, count(*),"
	" sum(logical_bytes), sum(stored_bytes) FROM files"
	" GROUP BY 1, 2 ORDER BY 1, 2",
};

struct sq_stats {
	sqlite3 *db;
	sqlite3_stmt *stmt[S_COUNT];
};

/* Steps @s to its end, then resets it and drops its bindings. */
static int run(struct sq_stats *st, enum stmt_id id)
{
	sqlite3_stmt *s = st->stmt[id];
	int rc;

	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		;
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc == SQLITE_DONE ? 0 : sq_err(st->db, rc);
}

static int begin(struct sq_stats *st)
{
	return run(st, S_BEGIN);
}

/* Commits, or rolls back when @err is set or the commit fails. */
static int finish(struct sq_stats *st, int err)
{
	if (!err)
		err = run(st, S_COMMIT);
	if (err && !sqlite3_get_autocommit(st->db))
		(void)run(st, S_ROLLBACK);
	return err;
}

void sq_stats_close(struct sq_stats *st)
{
	if (!st)
		return;
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(st->stmt[i]);
	/* The last connection to close checkpoints the WAL and deletes it. */
	sqlite3_close(st->db);
	free(st);
}

/* ---- opening ---- */

/* One integer from a pragma. */
static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
	sqlite3_stmt *s = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		goto out;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int(s, 0);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_CORRUPT;
	}
out:
	sqlite3_finalize(s);
	return rc;
}

/*
 * PRAGMA quick_check: SQLITE_OK when it says "ok", SQLITE_CORRUPT with
 * its first complaint in @why when not, another code when it cannot run.
 */
static int quick_check(sqlite3 *db, char *why, size_t whylen)
{
	sqlite3_stmt *s = NULL;
	const char *txt;
	int rc;

	rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(1)", -1, &s, NULL);
	if (rc != SQLITE_OK)
		goto out;
	rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		goto out;
	txt = (const char *)sqlite3_column_text(s, 0);
	if (txt && !strcmp(txt, "ok")) {
		rc = SQLITE_OK;
	} else {
		snprintf(why, whylen, "quick_check: %s", txt ? txt : "?");
		rc = SQLITE_CORRUPT;
	}
out:
	sqlite3_finalize(s);
	return rc;
}

/* Takes @db from version @from to SQ_STATS_VERSION, a step at a time. */
static int migrate(sqlite3 *db, int from)
{
	char sql[48];
	int v = from, rc = SQLITE_OK;

	while (v < SQ_STATS_VERSION) {
		rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			return rc;
		/* Another process may have migrated while we waited. */
		rc = pragma_int(db, "PRAGMA user_version", &v);
		if (rc != SQLITE_OK || v >= SQ_STATS_VERSION || v < 0)
			goto out;
		rc = migrations[v](db);
		if (rc != SQLITE_OK)
			goto out;
		/* In the same transaction: a crash leaves the old version
		 * with the old schema, never a mix. */
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto out;
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto out;
		v++;
	}
	return SQLITE_OK;
out:
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	if (rc == SQLITE_OK && v < 0)
		rc = SQLITE_CORRUPT;
	return rc;
}

/* try_open()'s answer for a database newer than we know (SQLite's
 * codes are all >= 0). */
#define TOO_NEW (-1)

/*
 * Opens the database at @path and brings it to our schema.  Returns an
 * SQLite code: SQLITE_OK with *@dbp, SQLITE_NOTADB / SQLITE_CORRUPT (with
 * @rep->why) for a damaged file, TOO_NEW for a newer version; *@sys gets
 * the errno behind an I/O error (0 when none).
 */
static int try_open(const char *path, unsigned busy_ms, sqlite3 **dbp,
		    struct sq_stats_open_report *rep, int *sys)
{
	sqlite3 *db = NULL;
	int rc, version = 0;

	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE |
			     SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
			     SQLITE_OPEN_EXRESCODE, NULL);
	if (rc != SQLITE_OK)
		goto out;
	sqlite3_busy_timeout(db, (int)busy_ms);

	/* The first read of the file: garbage gives SQLITE_NOTADB here. */
	rc = pragma_int(db, "PRAGMA user_version", &version);
	if (rc != SQLITE_OK)
		goto damaged;
	rep->from_version = version;
	/* Checked before anything is written, journal mode included: a
	 * newer squeezefs's database is left exactly as it was. */
	if (version > SQ_STATS_VERSION) {
		rc = TOO_NEW;
		goto out;
	}
	if (version < 0) {
		snprintf(rep->why, sizeof(rep->why), "user_version %d",
			 version);
		rc = SQLITE_CORRUPT;
		goto out;
	}
	/* WAL: readers (sqlite3 on the command line) never block the
	 * flusher, nor it them.  A file system without shared memory keeps
	 * the old mode; the store still works, with more locking. */
	rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto damaged;
	/* In WAL mode NORMAL cannot corrupt the database; a crash may lose
	 * the last transactions, which statistics can afford. */
	rc = sqlite3_exec(db, "PRAGMA synchronous = NORMAL", NULL, NULL,
			  NULL);
	if (rc != SQLITE_OK)
		goto damaged;
	rc = quick_check(db, rep->why, sizeof(rep->why));
	if (rc != SQLITE_OK)
		goto damaged;
	rc = migrate(db, version);
	if (rc != SQLITE_OK)
		goto damaged;
	*dbp = db;
	return SQLITE_OK;
damaged:
	if (is_damage(rc) && !rep->why[0])
		snprintf(rep->why, sizeof(rep->why), "%s", sqlite3_errmsg(db));
out:
	*sys = db ? sqlite3_system_errno(db) : 0;
	/* Closing would checkpoint a damaged file's WAL into it and delete
	 * the WAL: both go aside as they were found instead. */
	if (db && is_damage(rc))
		sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1,
				  NULL);
	/* sqlite3_close() of NULL is a no-op. */
	sqlite3_close(db);
	return rc;
}

/*
 * Renames the damaged database (and its WAL, which belongs to it) aside
 * and deletes its -shm, which SQLite rebuilds.  A WAL left behind would
 * be replayed into the fresh database.
 */
static int move_aside(int dfd, struct sq_stats_open_report *rep)
{
	char wal_from[sizeof(SQ_STATS_DB "-wal")];
	char wal_to[sizeof(rep->moved_to) + 4];
	long long now = (long long)time(NULL);
	int err = 0;

	for (int n = 0;; n++) {
		if (n)
			snprintf(rep->moved_to, sizeof(rep->moved_to),
				 "%s.damaged-%lld-%d", SQ_STATS_DB, now, n);
		else
			snprintf(rep->moved_to, sizeof(rep->moved_to),
				 "%s.damaged-%lld", SQ_STATS_DB, now);
		if (!renameat2(dfd, SQ_STATS_DB, dfd, rep->moved_to,
			       RENAME_NOREPLACE))
			break;
		err = -errno;
		if (err != -EEXIST || n >= 99)
			goto out;
		err = 0;
	}
	snprintf(wal_from, sizeof(wal_from), "%s-wal", SQ_STATS_DB);
	snprintf(wal_to, sizeof(wal_to), "%s-wal", rep->moved_to);
	if (renameat(dfd, wal_from, dfd, wal_to) && errno != ENOENT) {
		err = -errno;
		goto out;
	}
	if (unlinkat(dfd, SQ_STATS_DB "-shm", 0) && errno != ENOENT)
		err = -errno;
out:
	if (err)
		rep->moved_to[0] = '\0';
	else
		rep->damaged = true;
	return err;
}

static int prepare_all(struct sq_stats *st)
{
	for (int i = 0; i < S_COUNT; i++) {
		int rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1,
					    SQLITE_PREPARE_PERSISTENT,
					    &st->stmt[i], NULL);

		if (rc != SQLITE_OK)
			return sq_err(st->db, rc);
	}
	return 0;
}

int sq_stats_open(int backing_fd, unsigned busy_ms, struct sq_stats **out,
		  struct sq_stats_open_report *rep)
{
	struct sq_stats_open_report scratch;
	struct sq_stats *st = NULL;
	struct stat sb;
	char path[64];
	int rc, err, sys = 0;

	*out = NULL;
	if (!rep)
		rep = &scratch;
	memset(rep, 0, sizeof(*rep));
	if (!busy_ms)
		busy_ms = SQ_STATS_BUSY_MS_DEFAULT;
	if (mkdirat(backing_fd, ".squeezefs", 0700) && errno != EEXIST)
		return -errno;
	if (fstatat(backing_fd, SQ_STATS_DB, &sb, AT_SYMLINK_NOFOLLOW)) {
		if (errno != ENOENT)
			return -errno;
		rep->created = true;
	}
	/* SQLite opens files by name (the -wal and -shm next to the
	 * database too); /proc/self/fd names BACKING without a path. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", backing_fd,
		 SQ_STATS_DB);

	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	rc = try_open(path, busy_ms, &st->db, rep, &sys);
	if (is_damage(rc)) {
		err = move_aside(backing_fd, rep);
		if (err)
			goto out;
		rep->from_version = 0;
		rc = try_open(path, busy_ms, &st->db, rep, &sys);
		/* A fresh file that is damaged at once is no damage we can
		 * move aside again: something else is wrong. */
		if (is_damage(rc)) {
			err = -EIO;
			goto out;
		}
	}
	if (rc == TOO_NEW) {
		err = -EPROTO;
		goto out;
	}
	if (rc != SQLITE_OK) {
		err = sq_err(NULL, rc);
		if (sys > 0 && ((rc & 0xff) == SQLITE_IOERR ||
				(rc & 0xff) == SQLITE_CANTOPEN))
			err = -sys;
		goto out;
	}
	err = prepare_all(st);
out:
	if (err) {
		sq_stats_close(st);
		return err;
	}
	*out = st;
	return 0;
}

/* ---- the batch ---- */

enum op_kind { OP_FILE, OP_CODEC, OP_RENAME, OP_RENAME_TREE, OP_FORGET_NAME,
	       OP_UNLINK, OP_LOG };

struct op {
	enum op_kind kind;
	union {
		struct sq_stats_file_delta file;	/* strings owned */
		struct sq_stats_codec_delta codec;	/* cls owned */
		struct sq_stats_log_entry log;		/* strings owned */
		struct {
			int64_t id;
			char *path;			/* owned, or NULL */
			char *to;			/* owned, or NULL */
		} ren;
	} u;
};

struct sq_stats_batch {
	struct op *ops;
	size_t n, cap;
};

int sq_stats_batch_new(struct sq_stats_batch **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

/* Frees the strings @o owns.  The casts undo the const of the public
 * structs, whose copies here point at our own strdup()s. */
static void op_release(struct op *o)
{
	switch (o->kind) {
	case OP_FILE:
		free((char *)o->u.file.path);
		free((char *)o->u.file.cls);
		break;
	case OP_CODEC:
		free((char *)o->u.codec.cls);
		break;
	case OP_LOG:
		free((char *)o->u.log.action);
		free((char *)o->u.log.evidence);
		break;
	case OP_RENAME:
	case OP_RENAME_TREE:
	case OP_FORGET_NAME:
	case OP_UNLINK:
		free(o->u.ren.path);
		free(o->u.ren.to);
		break;
	}
}

void sq_stats_batch_clear(struct sq_stats_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		op_release(&b->ops[i]);
	b->n = 0;
}

void sq_stats_batch_free(struct sq_stats_batch *b)
{
	if (!b)
		return;
	sq_stats_batch_clear(b);
	free(b->ops);
	free(b);
}

size_t sq_stats_batch_count(const struct sq_stats_batch *b)
{
	return b->n;
}

/* A slot at the end of @b, or NULL when memory ran out. */
static struct op *op_slot(struct sq_stats_batch *b)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 64;
		struct op *ops = realloc(b->ops, cap * sizeof(*ops));

		if (!ops)
			return NULL;
		b->ops = ops;
		b->cap = cap;
	}
	return &b->ops[b->n];
}

/* strdup() of @s, NULL for NULL; *@fail set when memory ran out. */
static char *dup_or_null(const char *s, bool *fail)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*fail = true;
	return d;
}

int sq_stats_batch_file(struct sq_stats_batch *b,
			const struct sq_stats_file_delta *d)
{
	struct op *o;
	bool fail = false;

	if (((d->set & SQ_STATS_SET_PATH) && !d->path) ||
	    ((d->set & SQ_STATS_SET_CLASS) && !d->cls) ||
	    ((d->set & SQ_STATS_SET_STATE) &&
	     (d->state < 0 || d->state >= SQ_STATS_STATE_COUNT)))
		return -EINVAL;
	for (int i = 0; i < SQ_STATS_DELTA_BLOCKS; i++)
		if (d->blocks[i].codec >= 0 && d->blocks[i].delta &&
		    !sq_codec_info(d->blocks[i].codec))
			return -EINVAL;
	o = op_slot(b);
	if (!o)
		return -ENOMEM;
	o->kind = OP_FILE;
	o->u.file = *d;
	o->u.file.path = d->set & SQ_STATS_SET_PATH ?
		dup_or_null(d->path, &fail) : NULL;
	o->u.file.cls = d->set & SQ_STATS_SET_CLASS ?
		dup_or_null(d->cls, &fail) : NULL;
	if (fail) {
		op_release(o);
		return -ENOMEM;
	}
	b->n++;
	return 0;
}

void sq_stats_file_delta_init(struct sq_stats_file_delta *d, int64_t id)
{
	memset(d, 0, sizeof(*d));
	d->id = id;
	for (int k = 0; k < SQ_STATS_DELTA_BLOCKS; k++)
		d->blocks[k].codec = -1;
}

void sq_stats_tally_add(struct sq_stats_tally *t, const char *cls, int codec,
			int level, uint64_t bytes_in, uint64_t bytes_out,
			uint64_t compress_ns, bool fallback)
{
	struct sq_stats_codec_delta *r = NULL;

	for (size_t k = 0; k < t->n && !r; k++)
		if (t->row[k].codec == codec && t->row[k].level == level &&
		    !strcmp(t->row[k].cls, cls))
			r = &t->row[k];
	if (!r) {
		if (t->n == SQ_STATS_TALLY_MAX)
			return;
		r = &t->row[t->n++];
		memset(r, 0, sizeof(*r));
		r->cls = cls;
		r->codec = codec;
		r->level = level;
	}
	r->bytes_in += bytes_in;
	r->bytes_out += bytes_out;
	r->compress_ns += compress_ns;
	r->blocks++;
	if (fallback)
		r->fallbacks++;
}

int sq_stats_tally_flush(struct sq_stats_tally *t, struct sq_stats_batch *b)
{
	int ret = 0;

	for (size_t k = 0; k < t->n; k++) {
		int r = sq_stats_batch_codec(b, &t->row[k]);

		if (r && !ret)
			ret = r;
	}
	t->n = 0;
	return ret;
}

int sq_stats_batch_codec(struct sq_stats_batch *b,
			 const struct sq_stats_codec_delta *d)
{
	struct op *o;
	bool fail = false;

	if (!d->cls || !sq_codec_info(d->codec))
		return -EINVAL;
	o = op_slot(b);
	if (!o)
		return -ENOMEM;
	o->kind = OP_CODEC;
	o->u.codec = *d;
	o->u.codec.cls = dup_or_null(d->cls, &fail);
	if (fail)
		return -ENOMEM;
	b->n++;
	return 0;
}

/* Adds an operation on names: @path (and @to) are copied in. */
static int batch_name_op(struct sq_stats_batch *b, enum op_kind kind,
			 int64_t id, const char *path, const char *to)
{
	struct op *o = op_slot(b);
	bool fail = false;

	if (!o)
		return -ENOMEM;
	o->kind = kind;
	o->u.ren.id = id;
	o->u.ren.path = dup_or_null(path, &fail);
	o->u.ren.to = dup_or_null(to, &fail);
	if (fail) {
		free(o->u.ren.path);
		free(o->u.ren.to);
		return -ENOMEM;
	}
	b->n++;
	return 0;
}

int sq_stats_batch_rename(struct sq_stats_batch *b, int64_t id,
			  const char *path)
{
	if (!path)
		return -EINVAL;
	return batch_name_op(b, OP_RENAME, id, path, NULL);
}

int sq_stats_batch_append(struct sq_stats_batch *dst,
			  struct sq_stats_batch *src)
{
	if (dst->n + src->n > dst->cap) {
		size_t cap = dst->n + src->n;
		struct op *v = realloc(dst->ops, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		dst->ops = v;
		dst->cap = cap;
	}
	memcpy(dst->ops + dst->n, src->ops, src->n * sizeof(*src->ops));
	dst->n += src->n;
	src->n = 0;	/* the strings moved with the ops */
	return 0;
}

int sq_stats_batch_rename_tree(struct sq_stats_batch *b, const char *from,
			       const char *to)
{
	if (!from || !to || !from[0] || !to[0])
		return -EINVAL;
	return batch_name_op(b, OP_RENAME_TREE, 0, from, to);
}

int sq_stats_batch_forget_name(struct sq_stats_batch *b, int64_t id,
			       const char *path)
{
	if (!path)
		return -EINVAL;
	return batch_name_op(b, OP_FORGET_NAME, id, path, NULL);
}

int sq_stats_batch_unlink(struct sq_stats_batch *b, int64_t id)
{
	struct op *o = op_slot(b);

	if (!o)
		return -ENOMEM;
	o->kind = OP_UNLINK;
	o->u.ren.id = id;
	o->u.ren.path = NULL;
	o->u.ren.to = NULL;
	b->n++;
	return 0;
}

int sq_stats_batch_log(struct sq_stats_batch *b,
		       const struct sq_stats_log_entry *e)
{
	struct op *o;
	bool fail = false;

	if (!e->action)
		return -EINVAL;
	o = op_slot(b);
	if (!o)
		return -ENOMEM;
	o->kind = OP_LOG;
	o->u.log = *e;
	o->u.log.action = dup_or_null(e->action, &fail);
	o->u.log.evidence = dup_or_null(e->evidence, &fail);
	if (fail) {
		op_release(o);
		return -ENOMEM;
	}
	b->n++;
	return 0;
}

/* ---- applying ---- */

static const char *codec_name(int codec)
{
	return sq_codec_info(codec)->name;
}

static void bind_u64(sqlite3_stmt *s, int i, uint64_t v)
{
	/* Stored as SQLite's signed integers; 2^63 ns is 292 years. */
	sqlite3_bind_int64(s, i, (sqlite3_int64)v);
}

/* Binds @v when @flag is in @set, NULL (keep the stored value) if not. */
static void bind_set_i64(sqlite3_stmt *s, int i, unsigned set,
			 unsigned flag, int64_t v)
{
	if (set & flag)
		sqlite3_bind_int64(s, i, v);
	else
		sqlite3_bind_null(s, i);
}

static void bind_text(sqlite3_stmt *s, int i, const char *t)
{
	/* SQLITE_STATIC: the statement runs before the batch changes. */
	if (t)
		sqlite3_bind_text(s, i, t, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, i);
}

static int apply_file(struct sq_stats *st, const struct sq_stats_file_delta *d)
{
	sqlite3_stmt *s = st->stmt[S_FILE_UPSERT];
	bool pruned = false;
	int err;

	sqlite3_bind_int64(s, 1, d->id);
	bind_text(s, 2, d->path);
	bind_text(s, 3, d->cls);
	bind_set_i64(s, 4, d->set, SQ_STATS_SET_LOGICAL,
		     (int64_t)d->logical_bytes);
	bind_set_i64(s, 5, d->set, SQ_STATS_SET_STORED,
		     (int64_t)d->stored_bytes);
	bind_set_i64(s, 6, d->set, SQ_STATS_SET_LAST_READ, d->last_read);
	bind_set_i64(s, 7, d->set, SQ_STATS_SET_LAST_WRITE, d->last_write);
	bind_set_i64(s, 8, d->set, SQ_STATS_SET_LAST_SETTLED,
		     d->last_settled);
	bind_text(s, 9, d->set & SQ_STATS_SET_STATE ?
		  state_names[d->state] : NULL);
	bind_u64(s, 10, d->reads);
	bind_u64(s, 11, d->writes);
	bind_u64(s, 12, d->bytes_read);
	bind_u64(s, 13, d->bytes_written);
	bind_u64(s, 14, d->rewrites);
	bind_u64(s, 15, d->compress_ns);
	bind_u64(s, 16, d->decompress_ns);
	err = run(st, S_FILE_UPSERT);
	if (!err && (d->set & SQ_STATS_SET_BLOCKS)) {
		sqlite3_bind_int64(st->stmt[S_UNLINK_BLOCKS], 1, d->id);
		err = run(st, S_UNLINK_BLOCKS);
	}
	for (int i = 0; !err && i < SQ_STATS_DELTA_BLOCKS; i++) {
		if (d->blocks[i].codec < 0 || !d->blocks[i].delta)
			continue;
		s = st->stmt[S_BLOCKS_UPSERT];
		sqlite3_bind_int64(s, 1, d->id);
		bind_text(s, 2, codec_name(d->blocks[i].codec));
		sqlite3_bind_int(s, 3, d->blocks[i].level);
		sqlite3_bind_int64(s, 4, d->blocks[i].delta);
		err = run(st, S_BLOCKS_UPSERT);
		pruned |= d->blocks[i].delta < 0;
	}
	if (!err && pruned) {
		sqlite3_bind_int64(st->stmt[S_BLOCKS_PRUNE], 1, d->id);
		err = run(st, S_BLOCKS_PRUNE);
	}
	return err;
}

static int apply_codec(struct sq_stats *st,
		       const struct sq_stats_codec_delta *d)
{
	sqlite3_stmt *s = st->stmt[S_CODEC_UPSERT];

	bind_text(s, 1, d->cls);
	bind_text(s, 2, codec_name(d->codec));
	sqlite3_bind_int(s, 3, d->level);
	bind_u64(s, 4, d->bytes_in);
	bind_u64(s, 5, d->bytes_out);
	bind_u64(s, 6, d->compress_ns);
	bind_u64(s, 7, d->decompress_ns);
	bind_u64(s, 8, d->blocks);
	bind_u64(s, 9, d->fallbacks);
	return run(st, S_CODEC_UPSERT);
}

static int apply_log(struct sq_stats *st, const struct sq_stats_log_entry *e)
{
	sqlite3_stmt *s = st->stmt[S_LOG_INSERT];

	sqlite3_bind_int64(s, 1, e->time);
	if (e->has_file)
		sqlite3_bind_int64(s, 2, e->file_id);
	else
		sqlite3_bind_null(s, 2);
	bind_text(s, 3, e->action);
	sqlite3_bind_int64(s, 4, e->bytes_before);
	sqlite3_bind_int64(s, 5, e->bytes_after);
	bind_text(s, 6, e->evidence);
	return run(st, S_LOG_INSERT);
}

static int apply_op(struct sq_stats *st, const struct op *o)
{
	int err;

	switch (o->kind) {
	case OP_FILE:
		return apply_file(st, &o->u.file);
	case OP_CODEC:
		return apply_codec(st, &o->u.codec);
	case OP_LOG:
		return apply_log(st, &o->u.log);
	case OP_RENAME:
		sqlite3_bind_int64(st->stmt[S_RENAME], 1, o->u.ren.id);
		bind_text(st->stmt[S_RENAME], 2, o->u.ren.path);
		return run(st, S_RENAME);
	case OP_RENAME_TREE:
		bind_text(st->stmt[S_RENAME_TREE], 1, o->u.ren.path);
		bind_text(st->stmt[S_RENAME_TREE], 2, o->u.ren.to);
		return run(st, S_RENAME_TREE);
	case OP_FORGET_NAME:
		sqlite3_bind_int64(st->stmt[S_FORGET_NAME], 1, o->u.ren.id);
		bind_text(st->stmt[S_FORGET_NAME], 2, o->u.ren.path);
		return run(st, S_FORGET_NAME);
	case OP_UNLINK:
		sqlite3_bind_int64(st->stmt[S_UNLINK_BLOCKS], 1, o->u.ren.id);
		err = run(st, S_UNLINK_BLOCKS);
		if (err)
			return err;
		sqlite3_bind_int64(st->stmt[S_UNLINK_FILE], 1, o->u.ren.id);
		return run(st, S_UNLINK_FILE);
	}
	return -EINVAL;
}

int sq_stats_apply(struct sq_stats *st, const struct sq_stats_batch *b)
{
	int err;

	if (!b->n)
		return 0;
	err = begin(st);
	if (err)
		return err;
	for (size_t i = 0; !err && i < b->n; i++)
		err = apply_op(st, &b->ops[i]);
	return finish(st, err);
}

/* ---- readers ---- */

void sq_stats_file_release(struct sq_stats_file *f)
{
	free(f->path);
	free(f->cls);
	f->path = NULL;
	f->cls = NULL;
}

/* strdup() of column @i, NULL for NULL; -ENOMEM when memory ran out. */
static int col_dup(sqlite3_stmt *s, int i, char **out)
{
	const char *t = (const char *)sqlite3_column_text(s, i);

	*out = NULL;
	if (!t)
		return sqlite3_column_type(s, i) == SQLITE_NULL ? 0 : -ENOMEM;
	*out = strdup(t);
	return *out ? 0 : -ENOMEM;
}

/* Fills @f from the current row of a FILE_COLS statement. */
static int row_to_file(sqlite3_stmt *s, struct sq_stats_file *f)
{
	int err;

	memset(f, 0, sizeof(*f));
	f->id = sqlite3_column_int64(s, 0);
	err = col_dup(s, 1, &f->path);
	if (!err)
		err = col_dup(s, 2, &f->cls);
	if (err)
		goto out;
	f->logical_bytes = (uint64_t)sqlite3_column_int64(s, 3);
	f->stored_bytes = (uint64_t)sqlite3_column_int64(s, 4);
	f->reads = (uint64_t)sqlite3_column_int64(s, 5);
	f->writes = (uint64_t)sqlite3_column_int64(s, 6);
	f->bytes_read = (uint64_t)sqlite3_column_int64(s, 7);
	f->bytes_written = (uint64_t)sqlite3_column_int64(s, 8);
	f->rewrites = (uint64_t)sqlite3_column_int64(s, 9);
	f->compress_ns = (uint64_t)sqlite3_column_int64(s, 10);
	f->decompress_ns = (uint64_t)sqlite3_column_int64(s, 11);
	f->last_read = sqlite3_column_int64(s, 12);
	f->last_write = sqlite3_column_int64(s, 13);
	f->last_settled = sqlite3_column_int64(s, 14);
	f->state = sq_stats_state_parse((const char *)
					sqlite3_column_text(s, 15));
	if (f->state < 0)
		err = -EBADMSG;
out:
	if (err)
		sq_stats_file_release(f);
	return err;
}

/* Ends a read: resets @id and turns the last step's code into -errno. */
static int end_read(struct sq_stats *st, enum stmt_id id, int rc, int ret)
{
	sqlite3_reset(st->stmt[id]);
	sqlite3_clear_bindings(st->stmt[id]);
	if (ret)
		return ret;
	return rc == SQLITE_DONE ? 0 : sq_err(st->db, rc);
}

int sq_stats_file_get(struct sq_stats *st, int64_t id,
		      struct sq_stats_file *f)
{
	sqlite3_stmt *s = st->stmt[S_FILE_GET];
	int rc, ret;

	memset(f, 0, sizeof(*f));
	sqlite3_bind_int64(s, 1, id);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		ret = row_to_file(s, f);
		rc = SQLITE_DONE;
	} else {
		ret = rc == SQLITE_DONE ? -ENOENT : 0;
	}
	return end_read(st, S_FILE_GET, rc, ret);
}

int sq_stats_files_cold(struct sq_stats *st, int64_t before,
			sq_stats_file_fn fn, void *arg)
{
	sqlite3_stmt *s = st->stmt[S_FILES_COLD];
	struct sq_stats_file f;
	int rc = SQLITE_DONE, ret = 0;

	sqlite3_bind_int64(s, 1, before);
	while (!ret && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		ret = row_to_file(s, &f);
		if (!ret)
			ret = fn(arg, &f);
		sq_stats_file_release(&f);
	}
	return end_read(st, S_FILES_COLD, ret ? SQLITE_DONE : rc, ret);
}

int sq_stats_file_blocks(struct sq_stats *st, int64_t id,
			 sq_stats_blocks_fn fn, void *arg)
{
	sqlite3_stmt *s = st->stmt[S_FILE_BLOCKS];
	int rc = SQLITE_DONE, ret = 0;

	sqlite3_bind_int64(s, 1, id);
	while (!ret && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		int codec = sq_codec_by_name((const char *)
					     sqlite3_column_text(s, 0));

		if (codec < 0)
			continue;	/* a codec this build lacks */
		ret = fn(arg, codec, sqlite3_column_int(s, 1),
			 sqlite3_column_int64(s, 2));
	}
	return end_read(st, S_FILE_BLOCKS, ret ? SQLITE_DONE : rc, ret);
}

int sq_stats_codecs_get(struct sq_stats *st, const char *cls,
			sq_stats_codec_fn fn, void *arg)
{
	sqlite3_stmt *s = st->stmt[S_CODECS_GET];
	struct sq_stats_codec c;
	int rc = SQLITE_DONE, ret = 0;

	bind_text(s, 1, cls);
	while (!ret && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		c.codec = sq_codec_by_name((const char *)
					   sqlite3_column_text(s, 0));
		if (c.codec < 0)
			continue;
		c.level = sqlite3_column_int(s, 1);
		c.bytes_in = (uint64_t)sqlite3_column_int64(s, 2);
		c.bytes_out = (uint64_t)sqlite3_column_int64(s, 3);
		c.compress_ns = (uint64_t)sqlite3_column_int64(s, 4);
		c.decompress_ns = (uint64_t)sqlite3_column_int64(s, 5);
		c.blocks = (uint64_t)sqlite3_column_int64(s, 6);
		c.fallbacks = (uint64_t)sqlite3_column_int64(s, 7);
		ret = fn(arg, &c);
	}
	return end_read(st, S_CODECS_GET, ret ? SQLITE_DONE : rc, ret);
}

/* Whether @codec at @level is one this build can use. */
static bool level_ok(int codec, int level)
{
	const struct sq_codec_info *ci = sq_codec_info(codec);

	return ci && level >= ci->min_level && level <= ci->max_level;
}

int sq_stats_policy_set(struct sq_stats *st, enum sq_stats_which which,
			const struct sq_stats_policy *rows, size_t n)
{
	sqlite3_stmt *s = st->stmt[S_POLICY_INS];
	int err;

	if ((unsigned)which >= SQ_STATS_WHICH_COUNT)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!rows[i].cls || !rows[i].cls[0] ||
		    !level_ok(rows[i].codec, rows[i].level))
			return -EINVAL;
	err = begin(st);
	if (err)
		return err;
	bind_text(st->stmt[S_POLICY_DEL], 1, which_names[which]);
	err = run(st, S_POLICY_DEL);
	for (size_t i = 0; !err && i < n; i++) {
		bind_text(s, 1, which_names[which]);
		bind_text(s, 2, rows[i].cls);
		bind_text(s, 3, codec_name(rows[i].codec));
		sqlite3_bind_int(s, 4, rows[i].level);
		/* Two entries for one class: the primary key refuses the
		 * second, -EINVAL, and nothing changes. */
		err = run(st, S_POLICY_INS);
	}
	return finish(st, err);
}

int sq_stats_policy_get(struct sq_stats *st, enum sq_stats_which which,
			sq_stats_policy_fn fn, void *arg, size_t *skipped)
{
	sqlite3_stmt *s = st->stmt[S_POLICY_GET];
	struct sq_stats_policy p;
	size_t bad = 0;
	int rc = SQLITE_DONE, ret = 0;

	if ((unsigned)which >= SQ_STATS_WHICH_COUNT)
		return -EINVAL;
	bind_text(s, 1, which_names[which]);
	while (!ret && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		p.cls = (const char *)sqlite3_column_text(s, 0);
		p.codec = sq_codec_by_name((const char *)
					   sqlite3_column_text(s, 1));
		p.level = sqlite3_column_int(s, 2);
		if (!p.cls || sqlite3_column_type(s, 2) != SQLITE_INTEGER ||
		    !level_ok(p.codec, p.level)) {
			bad++;
			continue;
		}
		ret = fn(arg, &p);
	}
	if (skipped)
		*skipped = bad;
	return end_read(st, S_POLICY_GET, ret ? SQLITE_DONE : rc, ret);
}

int sq_stats_states(struct sq_stats *st, sq_stats_state_fn fn, void *arg)
{
	sqlite3_stmt *s = st->stmt[S_STATES];
	struct sq_stats_state_row row;
	int rc = SQLITE_DONE, ret = 0;

	while (!ret && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		row.cls = (const char *)sqlite3_column_text(s, 0);
		row.state = sq_stats_state_parse((const char *)
						 sqlite3_column_text(s, 1));
		row.files = (uint64_t)sqlite3_column_int64(s, 2);
		row.logical_bytes = (uint64_t)sqlite3_column_int64(s, 3);
		row.stored_bytes = (uint64_t)sqlite3_column_int64(s, 4);
		if (row.state >= 0)
			ret = fn(arg, &row);
	}
	return end_read(st, S_STATES, ret ? SQLITE_DONE : rc, ret);
}
