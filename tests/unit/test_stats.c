/*
 * tests/unit/test_stats.c - the statistics store (meta/stats.h,
 * docs/STATS.md): creation in WAL mode, exact counters through batches,
 * renames, unlinks, the log, the policy tables across reopening, damaged
 * and newer databases, and a database locked by another connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "codec/codec.h"
#include "meta/stats.h"
#include "tests/unit/unit_util.h"

/* Short, so the lock tests fail fast; they never depend on it being
 * short, only on open and apply giving up at all. */
#define BUSY_MS 100

struct fx {
	char dir[PATH_MAX];
	char db[PATH_MAX + 32];	/* dir/.squeezefs/stats.db */
	int dfd;
	struct sq_stats *st;
	struct sq_stats_batch *b;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");

	assert_non_null(f);
	assert_true(snprintf(f->dir, sizeof(f->dir), "%s/sqstats-XXXXXX",
			     tmp ? tmp : "/tmp") < (int)sizeof(f->dir));
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->db, sizeof(f->db), "%s/%s", f->dir, SQ_STATS_DB);
	f->dfd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(f->dfd >= 0);
	assert_int_equal(sq_stats_batch_new(&f->b), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	sq_stats_close(f->st);
	sq_stats_batch_free(f->b);
	close(f->dfd);
	assert_int_equal(unit_rmtree(f->dir), 0);
	free(f);
	return 0;
}

static void open_ok(struct fx *f, struct sq_stats_open_report *rep)
{
	sq_stats_close(f->st);
	f->st = NULL;
	assert_int_equal(sq_stats_open(f->dfd, BUSY_MS, &f->st, rep), 0);
	assert_non_null(f->st);
}

/* A second connection, as `sqlite3 BACKING/.squeezefs/stats.db` makes. */
static sqlite3 *other(struct fx *f)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READWRITE |
					 SQLITE_OPEN_CREATE, NULL),
			 SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static void exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK)
		fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* The one integer @sql yields on @db. */
static int64_t query_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *s;
	int64_t v;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* The one text @sql yields on @db, copied into @buf. */
static const char *query_text(sqlite3 *db, const char *sql, char *buf,
			      size_t len)
{
	sqlite3_stmt *s;
	const unsigned char *t;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	t = sqlite3_column_text(s, 0);
	snprintf(buf, len, "%s", t ? (const char *)t : "(null)");
	sqlite3_finalize(s);
	return buf;
}

/* Same for the one integer @sql yields through a fresh connection. */
static int64_t count(struct fx *f, const char *sql)
{
	sqlite3 *db = other(f);
	int64_t v = query_int(db, sql);

	sqlite3_close(db);
	return v;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *fp = fopen(path, "wb");

	assert_non_null(fp);
	assert_int_equal(fwrite(data, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

/* Reads up to @cap bytes of @path into @buf; returns the length. */
static size_t read_file(const char *path, void *buf, size_t cap)
{
	FILE *fp = fopen(path, "rb");
	size_t n;

	assert_non_null(fp);
	n = fread(buf, 1, cap, fp);
	assert_int_equal(fclose(fp), 0);
	return n;
}

static bool exists(struct fx *f, const char *rel)
{
	struct stat sb;

	return !fstatat(f->dfd, rel, &sb, AT_SYMLINK_NOFOLLOW);
}

/* Entries of BACKING/.squeezefs whose name starts with @prefix, WALs
 * moved aside with their databases not counted. */
static int count_named(struct fx *f, const char *prefix)
{
	char cmd[PATH_MAX + 64];
	FILE *p;
	int n = 0;

	snprintf(cmd, sizeof(cmd), "ls -a '%s/.squeezefs'", f->dir);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(cmd, sizeof(cmd), p))
		n += !strncmp(cmd, prefix, strlen(prefix)) &&
			!strstr(cmd, "-wal\n");
	pclose(p);
	return n;
}

static void add_file(struct fx *f, const struct sq_stats_file_delta *d)
{
	assert_int_equal(sq_stats_batch_file(f->b, d), 0);
}

static void apply(struct fx *f)
{
	assert_int_equal(sq_stats_apply(f->st, f->b), 0);
	sq_stats_batch_clear(f->b);
	assert_int_equal(sq_stats_batch_count(f->b), 0);
}

static void get(struct fx *f, int64_t id, struct sq_stats_file *row)
{
	assert_int_equal(sq_stats_file_get(f->st, id, row), 0);
}

/* ---- creation ---- */

static void test_create(void **state)
{
	struct fx *f = *state;
	struct sq_stats_open_report rep;
	char buf[32];
	sqlite3 *db;

	open_ok(f, &rep);
	assert_true(rep.created);
	assert_false(rep.damaged);
	assert_int_equal(rep.from_version, 0);
	assert_true(exists(f, SQ_STATS_DB));

	/* Seen from another connection while ours is open. */
	db = other(f);
	assert_string_equal(query_text(db, "PRAGMA journal_mode", buf,
				       sizeof(buf)), "wal");
	assert_int_equal(query_int(db, "PRAGMA user_version"),
			 SQ_STATS_VERSION);
	assert_int_equal(query_int(db, "SELECT count(*) FROM sqlite_schema"
				   " WHERE type = 'table' AND name IN"
				   " ('files', 'file_blocks', 'codecs', 'log',"
				   " 'policy')"), 5);
	sqlite3_close(db);

	/* Reopening keeps it as it is. */
	open_ok(f, &rep);
	assert_false(rep.created);
	assert_false(rep.damaged);
	assert_int_equal(rep.from_version, SQ_STATS_VERSION);
	sq_stats_close(NULL);
}

static void test_migrate_empty_file(void **state)
{
	struct fx *f = *state;
	struct sq_stats_open_report rep;

	/* A 0-byte file is a database of version 0. */
	assert_int_equal(mkdirat(f->dfd, ".squeezefs", 0700), 0);
	write_file(f->db, "", 0);
	open_ok(f, &rep);
	assert_false(rep.created);
	assert_false(rep.damaged);
	assert_int_equal(rep.from_version, 0);
	assert_int_equal(count(f, "PRAGMA user_version"), SQ_STATS_VERSION);
	assert_int_equal(count(f, "SELECT count(*) FROM files"), 0);
}

/* ---- batches ---- */

static void test_counters_add(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = {
		.id = 42, .set = SQ_STATS_SET_PATH | SQ_STATS_SET_CLASS,
		.path = "docs/a.txt", .cls = "text",
		.reads = 3, .writes = 5, .bytes_read = 1000,
		.bytes_written = 70000, .rewrites = 2,
		.compress_ns = 123456789, .decompress_ns = 987654321,
		.blocks = {
			{ SQ_CODEC_ZSTD, 1, 4 },
			{ SQ_CODEC_LZ4, 1, 2 },
			{ -1, 0, 0 }, { -1, 0, 0 },
		},
	};
	struct sq_stats_file row;

	open_ok(f, NULL);
	/* Twice in one batch, then once more in a second batch. */
	add_file(f, &d);
	add_file(f, &d);
	assert_int_equal(sq_stats_batch_count(f->b), 2);
	apply(f);
	d.set = 0;
	d.blocks[0].delta = -8;		/* all zstd:1 blocks moved away */
	d.blocks[1].delta = 1;
	add_file(f, &d);
	apply(f);

	get(f, 42, &row);
	assert_int_equal(row.id, 42);
	assert_string_equal(row.path, "docs/a.txt");
	assert_string_equal(row.cls, "text");
	assert_int_equal(row.reads, 9);
	assert_int_equal(row.writes, 15);
	assert_int_equal(row.bytes_read, 3000);
	assert_int_equal(row.bytes_written, 210000);
	assert_int_equal(row.rewrites, 6);
	assert_int_equal(row.compress_ns, UINT64_C(370370367));
	assert_int_equal(row.decompress_ns, UINT64_C(2962962963));
	assert_int_equal(row.state, SQ_STATS_HOT);
	assert_int_equal(row.last_write, 0);
	sq_stats_file_release(&row);

	/* zstd:1 reached 0 and left no row; lz4:1 has 2 + 2 + 1. */
	assert_int_equal(count(f, "SELECT count(*) FROM file_blocks"), 1);
	assert_int_equal(count(f, "SELECT blocks FROM file_blocks WHERE"
			       " file_id = 42 AND codec = 'lz4' AND"
			       " level = 1"), 5);
	assert_int_equal(sq_stats_file_get(f->st, 43, &row), -ENOENT);
}

static void test_fields_set(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = {
		.id = 7, .set = SQ_STATS_SET_PATH | SQ_STATS_SET_LOGICAL |
			SQ_STATS_SET_STORED | SQ_STATS_SET_LAST_WRITE,
		.path = "x", .logical_bytes = 5000, .stored_bytes = 2000,
		.last_write = 1700000000,
	};
	struct sq_stats_file row;

	open_ok(f, NULL);
	add_file(f, &d);
	apply(f);
	/* Set fields replace, unflagged ones stay. */
	d.set = SQ_STATS_SET_STORED | SQ_STATS_SET_STATE |
		SQ_STATS_SET_LAST_SETTLED | SQ_STATS_SET_LAST_READ;
	d.path = "ignored";
	d.logical_bytes = 1;
	d.stored_bytes = 900;
	d.state = SQ_STATS_SETTLED;
	d.last_settled = 1700000100;
	d.last_read = 1700000050;
	d.last_write = 1;
	add_file(f, &d);
	apply(f);
	get(f, 7, &row);
	assert_string_equal(row.path, "x");
	assert_null(row.cls);
	assert_int_equal(row.logical_bytes, 5000);
	assert_int_equal(row.stored_bytes, 900);
	assert_int_equal(row.state, SQ_STATS_SETTLED);
	assert_int_equal(row.last_write, 1700000000);
	assert_int_equal(row.last_read, 1700000050);
	assert_int_equal(row.last_settled, 1700000100);
	sq_stats_file_release(&row);
	assert_int_equal(count(f, "SELECT state = 'settled' FROM files"), 1);
}

static int codec_sum(void *arg, const struct sq_stats_codec *c)
{
	struct sq_stats_codec *acc = arg;

	assert_int_equal(c->codec, SQ_CODEC_BROTLI);
	assert_int_equal(c->level, 5);
	*acc = *c;
	return 0;
}

static void test_codecs(void **state)
{
	struct fx *f = *state;
	struct sq_stats_codec_delta d = {
		.cls = "text", .codec = SQ_CODEC_BROTLI, .level = 5,
		.bytes_in = 65536, .bytes_out = 20000, .compress_ns = 1000,
		.decompress_ns = 300, .blocks = 1, .fallbacks = 0,
	};
	struct sq_stats_codec got;

	open_ok(f, NULL);
	for (int i = 0; i < 10; i++) {
		d.fallbacks = i & 1;
		assert_int_equal(sq_stats_batch_codec(f->b, &d), 0);
	}
	d.cls = "binary";
	assert_int_equal(sq_stats_batch_codec(f->b, &d), 0);
	apply(f);
	memset(&got, 0, sizeof(got));
	assert_int_equal(sq_stats_codecs_get(f->st, "text", codec_sum, &got),
			 0);
	assert_int_equal(got.bytes_in, 655360);
	assert_int_equal(got.bytes_out, 200000);
	assert_int_equal(got.compress_ns, 10000);
	assert_int_equal(got.decompress_ns, 3000);
	assert_int_equal(got.blocks, 10);
	assert_int_equal(got.fallbacks, 5);
	assert_int_equal(count(f, "SELECT count(*) FROM codecs"), 2);
	assert_int_equal(count(f, "SELECT blocks FROM codecs WHERE"
			       " class = 'binary' AND codec = 'brotli'"), 1);
}

/* A tally sums per class x codec x level, caps its rows, and empties
 * into a batch. */
static void test_tally(void **state)
{
	struct fx *f = *state;
	struct sq_stats_tally t;
	struct sq_stats_codec got;
	char cls[SQ_STATS_TALLY_MAX + 1][16];

	memset(&t, 0, sizeof(t));
	open_ok(f, NULL);
	for (int i = 0; i < 10; i++)
		sq_stats_tally_add(&t, "text", SQ_CODEC_BROTLI, 5, 65536,
				   20000, 1000, i & 1);
	/* Another level and another class are rows of their own. */
	sq_stats_tally_add(&t, "text", SQ_CODEC_BROTLI, 6, 1, 1, 1, false);
	sq_stats_tally_add(&t, "binary", SQ_CODEC_BROTLI, 5, 1, 1, 1, false);
	assert_int_equal(t.n, 3);
	/* Past the cap, new combinations are not counted; known ones are. */
	for (int i = 0; i <= SQ_STATS_TALLY_MAX; i++) {
		snprintf(cls[i], sizeof(cls[i]), "c%d", i);
		sq_stats_tally_add(&t, cls[i], SQ_CODEC_LZ4, 1, 1, 1, 1, false);
	}
	assert_int_equal(t.n, SQ_STATS_TALLY_MAX);
	sq_stats_tally_add(&t, "text", SQ_CODEC_BROTLI, 5, 65536, 20000, 1000,
			   false);
	assert_int_equal(sq_stats_tally_flush(&t, f->b), 0);
	assert_int_equal(t.n, 0);
	apply(f);
	memset(&got, 0, sizeof(got));
	assert_int_equal(sq_stats_codecs_get(f->st, "binary", codec_sum,
					     &got), 0);
	assert_int_equal(got.blocks, 1);
	assert_int_equal(count(f, "SELECT blocks FROM codecs WHERE class ="
			       " 'text' AND level = 5"), 11);
	assert_int_equal(count(f, "SELECT fallbacks FROM codecs WHERE class ="
			       " 'text' AND level = 5"), 5);
	assert_int_equal(count(f, "SELECT bytes_in FROM codecs WHERE class ="
			       " 'text' AND level = 5"), 11 * 65536);
	assert_int_equal(count(f, "SELECT count(*) FROM codecs"),
			 SQ_STATS_TALLY_MAX);
}

static void test_rename(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = {
		.id = 9, .set = SQ_STATS_SET_PATH, .path = "old/name",
		.writes = 1,
	};
	struct sq_stats_file row;

	open_ok(f, NULL);
	add_file(f, &d);
	apply(f);
	assert_int_equal(sq_stats_batch_rename(f->b, 9, "new/dir/name"), 0);
	/* A rename of a file without a row makes none. */
	assert_int_equal(sq_stats_batch_rename(f->b, 10, "ghost"), 0);
	apply(f);
	get(f, 9, &row);
	assert_string_equal(row.path, "new/dir/name");
	assert_int_equal(row.writes, 1);
	sq_stats_file_release(&row);
	assert_int_equal(sq_stats_file_get(f->st, 10, &row), -ENOENT);
	assert_int_equal(count(f, "SELECT count(*) FROM files WHERE"
			       " path = 'new/dir/name'"), 1);
}

static void test_rename_tree(void **state)
{
	struct fx *f = *state;
	static const char *const paths[] = { "a/x", "a/b/y", "ab/z", "a", "b/a/w" };
	struct sq_stats_file row;

	open_ok(f, NULL);
	for (int k = 0; k < 5; k++) {
		struct sq_stats_file_delta d = {
			.id = 20 + k, .set = SQ_STATS_SET_PATH,
			.path = paths[k], .writes = 1,
		};

		add_file(f, &d);
	}
	apply(f);
	/* Only what lies under "a/": not "ab/z", not "a" itself. */
	assert_int_equal(sq_stats_batch_rename_tree(f->b, "a", "c/d"), 0);
	apply(f);
	static const char *const want[] = { "c/d/x", "c/d/b/y", "ab/z", "a",
					    "b/a/w" };
	for (int k = 0; k < 5; k++) {
		get(f, 20 + k, &row);
		assert_string_equal(row.path, want[k]);
		sq_stats_file_release(&row);
	}
	assert_int_equal(sq_stats_batch_rename_tree(f->b, "", "x"), -EINVAL);
	assert_int_equal(sq_stats_batch_rename_tree(f->b, "a", NULL), -EINVAL);
}

static void test_forget_name(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = {
		.id = 30, .set = SQ_STATS_SET_PATH, .path = "one", .writes = 1,
	};
	struct sq_stats_file row;

	open_ok(f, NULL);
	add_file(f, &d);
	apply(f);
	/* Another name of the file went: the row keeps its path. */
	assert_int_equal(sq_stats_batch_forget_name(f->b, 30, "two"), 0);
	apply(f);
	get(f, 30, &row);
	assert_string_equal(row.path, "one");
	sq_stats_file_release(&row);
	/* Its own name went: the path is cleared, the row stays. */
	assert_int_equal(sq_stats_batch_forget_name(f->b, 30, "one"), 0);
	apply(f);
	get(f, 30, &row);
	assert_null(row.path);
	assert_int_equal(row.writes, 1);
	sq_stats_file_release(&row);
}

static void test_batch_append(void **state)
{
	struct fx *f = *state;
	struct sq_stats_batch *b2;
	struct sq_stats_file_delta d = { .id = 40, .writes = 2 };
	struct sq_stats_file row;

	open_ok(f, NULL);
	assert_int_equal(sq_stats_batch_new(&b2), 0);
	add_file(f, &d);
	assert_int_equal(sq_stats_batch_rename(b2, 40, "moved"), 0);
	assert_int_equal(sq_stats_batch_unlink(b2, 41), 0);
	assert_int_equal(sq_stats_batch_append(f->b, b2), 0);
	assert_int_equal(sq_stats_batch_count(b2), 0);
	assert_int_equal(sq_stats_batch_count(f->b), 3);
	sq_stats_batch_free(b2);	/* the moved strings are f->b's now */
	apply(f);
	get(f, 40, &row);
	assert_string_equal(row.path, "moved");
	assert_int_equal(row.writes, 2);
	sq_stats_file_release(&row);
}

static void test_unlink(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = {
		.id = 11, .writes = 1,
		.blocks = { { SQ_CODEC_ZSTD, 3, 7 }, { SQ_CODEC_NONE, 0, 1 },
			    { -1, 0, 0 }, { -1, 0, 0 } },
	};
	struct sq_stats_log_entry e = {
		.time = 5, .has_file = true, .file_id = 11,
		.action = "settle",
	};
	struct sq_stats_file row;

	open_ok(f, NULL);
	add_file(f, &d);
	d.id = 12;
	add_file(f, &d);
	assert_int_equal(sq_stats_batch_log(f->b, &e), 0);
	apply(f);
	assert_int_equal(count(f, "SELECT count(*) FROM file_blocks"), 4);

	assert_int_equal(sq_stats_batch_unlink(f->b, 11), 0);
	apply(f);
	assert_int_equal(sq_stats_file_get(f->st, 11, &row), -ENOENT);
	get(f, 12, &row);
	sq_stats_file_release(&row);
	assert_int_equal(count(f, "SELECT count(*) FROM file_blocks WHERE"
			       " file_id = 11"), 0);
	assert_int_equal(count(f, "SELECT count(*) FROM file_blocks WHERE"
			       " file_id = 12"), 2);
	/* The history stays. */
	assert_int_equal(count(f, "SELECT count(*) FROM log WHERE"
			       " file_id = 11"), 1);
}

static void test_order_in_batch(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = { .id = 5, .writes = 100 };
	struct sq_stats_file row;

	/* The inode is freed and reused within one batch: the new file
	 * starts from zero. */
	open_ok(f, NULL);
	add_file(f, &d);
	assert_int_equal(sq_stats_batch_unlink(f->b, 5), 0);
	d.writes = 1;
	add_file(f, &d);
	apply(f);
	get(f, 5, &row);
	assert_int_equal(row.writes, 1);
	sq_stats_file_release(&row);
}

static void test_batch_refuses(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = { .id = 1, .set = SQ_STATS_SET_PATH };
	struct sq_stats_codec_delta c = { .cls = "text", .codec = 99 };
	struct sq_stats_log_entry e = { .time = 1 };

	assert_int_equal(sq_stats_batch_file(f->b, &d), -EINVAL);
	d.set = SQ_STATS_SET_STATE;
	d.state = SQ_STATS_STATE_COUNT;
	assert_int_equal(sq_stats_batch_file(f->b, &d), -EINVAL);
	d.set = 0;
	d.blocks[0].codec = 77;
	d.blocks[0].delta = 1;
	assert_int_equal(sq_stats_batch_file(f->b, &d), -EINVAL);
	assert_int_equal(sq_stats_batch_codec(f->b, &c), -EINVAL);
	c.codec = SQ_CODEC_ZSTD;
	c.cls = NULL;
	assert_int_equal(sq_stats_batch_codec(f->b, &c), -EINVAL);
	assert_int_equal(sq_stats_batch_log(f->b, &e), -EINVAL);
	assert_int_equal(sq_stats_batch_rename(f->b, 1, NULL), -EINVAL);
	assert_int_equal(sq_stats_batch_count(f->b), 0);
	assert_string_equal(sq_stats_state_name(SQ_STATS_PINNED), "pinned");
	assert_string_equal(sq_stats_state_name(-1), "?");
	assert_int_equal(sq_stats_state_parse("settling"), SQ_STATS_SETTLING);
	assert_int_equal(sq_stats_state_parse("warm"), -EINVAL);
}

static void test_apply_all_or_nothing(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = { .id = 3, .writes = 1 };
	struct sq_stats_log_entry e = { .time = 1, .action = "boom" };
	struct sq_stats_file row;
	sqlite3 *db;

	open_ok(f, NULL);
	/* A hand-made trigger makes the batch's last operation fail. */
	db = other(f);
	exec(db, "CREATE TRIGGER boom BEFORE INSERT ON log"
	     " WHEN NEW.action = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END");
	add_file(f, &d);
	assert_int_equal(sq_stats_batch_log(f->b, &e), 0);
	assert_int_equal(sq_stats_apply(f->st, f->b), -EINVAL);
	assert_int_equal(sq_stats_file_get(f->st, 3, &row), -ENOENT);
	assert_int_equal(query_int(db, "SELECT count(*) FROM log"), 0);

	/* The batch is intact: the retry applies it once. */
	exec(db, "DROP TRIGGER boom");
	sqlite3_close(db);
	apply(f);
	get(f, 3, &row);
	assert_int_equal(row.writes, 1);
	sq_stats_file_release(&row);
	assert_int_equal(count(f, "SELECT count(*) FROM log"), 1);
}

static void test_log(void **state)
{
	struct fx *f = *state;
	struct sq_stats_log_entry e = {
		.time = 1700000000, .has_file = true, .file_id = 77,
		.action = "settle", .bytes_before = 10000, .bytes_after = 4000,
		.evidence = "{\"from\":\"lz4:1\",\"to\":\"zstd:9\","
			"\"ratio\":0.4}",
	};
	char buf[64];
	sqlite3 *db;

	open_ok(f, NULL);
	assert_int_equal(sq_stats_batch_log(f->b, &e), 0);
	e.has_file = false;
	e.action = "policy";
	e.evidence = NULL;
	e.time++;
	assert_int_equal(sq_stats_batch_log(f->b, &e), 0);
	apply(f);

	db = other(f);
	assert_int_equal(query_int(db, "SELECT count(*) FROM log"), 2);
	assert_string_equal(query_text(db, "SELECT json_extract(evidence,"
				       " '$.to') FROM log WHERE file_id = 77",
				       buf, sizeof(buf)), "zstd:9");
	assert_int_equal(query_int(db, "SELECT bytes_before - bytes_after"
				   " FROM log WHERE action = 'settle'"),
			 6000);
	assert_int_equal(query_int(db, "SELECT count(*) FROM log WHERE"
				   " file_id IS NULL AND evidence IS NULL"
				   " AND time = 1700000001"), 1);
	/* Rows come in the order they were added. */
	assert_string_equal(query_text(db, "SELECT action FROM log"
				       " ORDER BY id DESC LIMIT 1", buf,
				       sizeof(buf)), "policy");
	sqlite3_close(db);
}

/* ---- readers ---- */

struct seen {
	int64_t ids[8];
	int n;
	int stop_at;		/* return 99 on this call (1-based), or 0 */
};

static int collect(void *arg, const struct sq_stats_file *row)
{
	struct seen *s = arg;

	assert_true(s->n < 8);
	assert_true(row->state == SQ_STATS_HOT ||
		    row->state == SQ_STATS_SETTLING);
	s->ids[s->n++] = row->id;
	return s->n == s->stop_at ? 99 : 0;
}

static void test_files_cold(void **state)
{
	struct fx *f = *state;
	static const struct { int64_t id, last_write; int state; } rows[] = {
		{ 1, 500, SQ_STATS_HOT },
		{ 2, 100, SQ_STATS_HOT },
		{ 3, 100, SQ_STATS_PINNED },
		{ 4, 999, SQ_STATS_HOT },	/* too recent */
		{ 5, 300, SQ_STATS_SETTLED },
		{ 6, 200, SQ_STATS_HOT },
		{ 8, 400, SQ_STATS_SETTLING },	/* cut off by a crash */
	};
	struct sq_stats_file_delta d = { .reads = 1 };
	struct seen s = { .n = 0 };

	open_ok(f, NULL);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		d.id = rows[i].id;
		d.set = SQ_STATS_SET_LAST_WRITE | SQ_STATS_SET_STATE;
		d.last_write = rows[i].last_write;
		d.state = rows[i].state;
		add_file(f, &d);
	}
	d.id = 7;			/* never written */
	d.set = 0;
	add_file(f, &d);
	apply(f);

	assert_int_equal(sq_stats_files_cold(f->st, 999, collect, &s), 0);
	assert_int_equal(s.n, 4);
	assert_int_equal(s.ids[0], 2);
	assert_int_equal(s.ids[1], 6);
	assert_int_equal(s.ids[2], 8);
	assert_int_equal(s.ids[3], 1);
	/* A callback stops the walk with its value. */
	memset(&s, 0, sizeof(s));
	s.stop_at = 2;
	assert_int_equal(sq_stats_files_cold(f->st, 999, collect, &s), 99);
	assert_int_equal(s.n, 2);
	/* And the statement is reusable after the stop. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(sq_stats_files_cold(f->st, 150, collect, &s), 0);
	assert_int_equal(s.n, 1);
}

struct states {
	char cls[4][16];
	int state[4];
	uint64_t files[4], logical[4], stored[4];
	size_t n;
};

static int state_row(void *arg, const struct sq_stats_state_row *row)
{
	struct states *s = arg;

	assert_true(s->n < 4);
	snprintf(s->cls[s->n], sizeof(s->cls[0]), "%s", row->cls);
	s->state[s->n] = row->state;
	s->files[s->n] = row->files;
	s->logical[s->n] = row->logical_bytes;
	s->stored[s->n++] = row->stored_bytes;
	return 0;
}

/* sq_stats_states(): the files table summed per class and state, a file
 * of no known class under "". */
static void test_states(void **state)
{
	struct fx *f = *state;
	static const struct {
		int64_t id;
		const char *cls;
		int state;
		uint64_t logical, stored;
	} rows[] = {
		{ 1, "text", SQ_STATS_HOT, 100, 40 },
		{ 2, "text", SQ_STATS_HOT, 50, 10 },
		{ 3, "text", SQ_STATS_SETTLED, 1000, 200 },
		{ 4, NULL, SQ_STATS_HOT, 7, 7 },
	};
	struct states s = { .n = 0 };

	open_ok(f, NULL);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct sq_stats_file_delta d;

		sq_stats_file_delta_init(&d, rows[i].id);
		d.set = SQ_STATS_SET_STATE | SQ_STATS_SET_LOGICAL |
			SQ_STATS_SET_STORED |
			(rows[i].cls ? SQ_STATS_SET_CLASS : 0);
		d.cls = rows[i].cls;
		d.state = rows[i].state;
		d.logical_bytes = rows[i].logical;
		d.stored_bytes = rows[i].stored;
		add_file(f, &d);
	}
	apply(f);
	assert_int_equal(sq_stats_states(f->st, state_row, &s), 0);
	assert_int_equal(s.n, 3);
	assert_string_equal(s.cls[0], "");
	assert_int_equal(s.files[0], 1);
	assert_string_equal(s.cls[1], "text");
	assert_int_equal(s.state[1], SQ_STATS_HOT);
	assert_int_equal(s.files[1], 2);
	assert_int_equal(s.logical[1], 150);
	assert_int_equal(s.stored[1], 50);
	assert_int_equal(s.state[2], SQ_STATS_SETTLED);
	assert_int_equal(s.logical[2], 1000);
}

static int count_blocks(void *arg, int codec, int level, int64_t blocks)
{
	int64_t *acc = arg;

	acc[codec] += blocks * 100 + level;
	return 0;
}

static void test_file_blocks(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = {
		.id = 8,
		.blocks = { { SQ_CODEC_ZSTD, 3, 2 }, { SQ_CODEC_LZ4, 1, 5 },
			    { -1, 0, 0 }, { SQ_CODEC_ZSTD, 3, 1 } },
	};
	int64_t acc[SQ_CODEC_COUNT] = { 0 };

	open_ok(f, NULL);
	add_file(f, &d);
	apply(f);
	assert_int_equal(sq_stats_file_blocks(f->st, 8, count_blocks, acc), 0);
	assert_int_equal(acc[SQ_CODEC_ZSTD], 303);
	assert_int_equal(acc[SQ_CODEC_LZ4], 501);
	assert_int_equal(acc[SQ_CODEC_BROTLI], 0);
}

/* ---- policy ---- */

struct pol {
	char cls[8][16];
	int codec[8], level[8];
	int n;
};

static int pol_collect(void *arg, const struct sq_stats_policy *p)
{
	struct pol *s = arg;

	assert_true(s->n < 8);
	snprintf(s->cls[s->n], sizeof(s->cls[0]), "%s", p->cls);
	s->codec[s->n] = p->codec;
	s->level[s->n] = p->level;
	s->n++;
	return 0;
}

/* SQ_STATS_SET_BLOCKS replaces a file's counts; other files keep theirs. */
static void test_file_blocks_set(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = {
		.id = 8,
		.blocks = { { SQ_CODEC_ZSTD, 1, 2 }, { SQ_CODEC_LZ4, 1, 5 } },
	};
	int64_t acc[SQ_CODEC_COUNT] = { 0 };

	open_ok(f, NULL);
	add_file(f, &d);
	d.id = 9;
	add_file(f, &d);
	apply(f);
	memset(&d, 0, sizeof(d));
	for (int k = 0; k < SQ_STATS_DELTA_BLOCKS; k++)
		d.blocks[k].codec = -1;
	d.id = 8;
	d.set = SQ_STATS_SET_BLOCKS;
	d.blocks[0].codec = SQ_CODEC_BROTLI;
	d.blocks[0].level = 11;
	d.blocks[0].delta = 4;
	d.blocks[7].codec = SQ_CODEC_NONE;
	d.blocks[7].level = 0;
	d.blocks[7].delta = 1;
	add_file(f, &d);
	apply(f);
	assert_int_equal(sq_stats_file_blocks(f->st, 8, count_blocks, acc), 0);
	assert_int_equal(acc[SQ_CODEC_BROTLI], 411);
	assert_int_equal(acc[SQ_CODEC_NONE], 100);
	assert_int_equal(acc[SQ_CODEC_ZSTD], 0);
	assert_int_equal(acc[SQ_CODEC_LZ4], 0);
	memset(acc, 0, sizeof(acc));
	assert_int_equal(sq_stats_file_blocks(f->st, 9, count_blocks, acc), 0);
	assert_int_equal(acc[SQ_CODEC_ZSTD], 201);
	assert_int_equal(acc[SQ_CODEC_LZ4], 501);
	/* With nothing in blocks[], the file has no rows left. */
	d.blocks[0].codec = d.blocks[7].codec = -1;
	add_file(f, &d);
	apply(f);
	assert_int_equal(count(f, "SELECT count(*) FROM file_blocks WHERE"
			       " file_id = 8"), 0);
}

static void test_policy_roundtrip(void **state)
{
	struct fx *f = *state;
	static const struct sq_stats_policy fg[] = {
		{ "text", SQ_CODEC_ZSTD, 1 },
		{ "binary", SQ_CODEC_LZ4, 1 },
		{ "random", SQ_CODEC_NONE, 0 },
	};
	static const struct sq_stats_policy settle[] = {
		{ "text", SQ_CODEC_BROTLI, 9 },
	};
	static const struct sq_stats_policy bad[] = {
		{ "text", SQ_CODEC_ZSTD, 99 },
	};
	static const struct sq_stats_policy twice[] = {
		{ "text", SQ_CODEC_ZSTD, 2 },
		{ "text", SQ_CODEC_ZSTD, 3 },
	};
	struct pol p = { .n = 0 };
	size_t skipped = 7;
	sqlite3 *db;

	open_ok(f, NULL);
	assert_int_equal(sq_stats_policy_set(f->st, SQ_STATS_FOREGROUND, fg,
					     3), 0);
	assert_int_equal(sq_stats_policy_set(f->st, SQ_STATS_SETTLE, settle,
					     1), 0);
	assert_int_equal(sq_stats_policy_set(f->st, SQ_STATS_SETTLE, bad, 1),
			 -EINVAL);
	assert_int_equal(sq_stats_policy_set(f->st, SQ_STATS_SETTLE, twice,
					     2), -EINVAL);
	open_ok(f, NULL);

	assert_int_equal(sq_stats_policy_get(f->st, SQ_STATS_FOREGROUND,
					     pol_collect, &p, &skipped), 0);
	assert_int_equal(skipped, 0);
	assert_int_equal(p.n, 3);		/* by class name */
	assert_string_equal(p.cls[0], "binary");
	assert_int_equal(p.codec[0], SQ_CODEC_LZ4);
	assert_string_equal(p.cls[1], "random");
	assert_int_equal(p.codec[1], SQ_CODEC_NONE);
	assert_string_equal(p.cls[2], "text");
	assert_int_equal(p.codec[2], SQ_CODEC_ZSTD);
	assert_int_equal(p.level[2], 1);

	/* The failed sets changed nothing. */
	memset(&p, 0, sizeof(p));
	assert_int_equal(sq_stats_policy_get(f->st, SQ_STATS_SETTLE,
					     pol_collect, &p, NULL), 0);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.codec[0], SQ_CODEC_BROTLI);
	assert_int_equal(p.level[0], 9);

	/* A hand edit naming an unknown codec is skipped. */
	db = other(f);
	exec(db, "INSERT INTO policy VALUES ('settle', 'binary', 'xz', 6)");
	sqlite3_close(db);
	memset(&p, 0, sizeof(p));
	assert_int_equal(sq_stats_policy_get(f->st, SQ_STATS_SETTLE,
					     pol_collect, &p, &skipped), 0);
	assert_int_equal(skipped, 1);
	assert_int_equal(p.n, 1);
	assert_string_equal(p.cls[0], "text");

	/* A set replaces the whole table: classes it omits go. */
	assert_int_equal(sq_stats_policy_set(f->st, SQ_STATS_FOREGROUND,
					     fg + 2, 1), 0);
	memset(&p, 0, sizeof(p));
	assert_int_equal(sq_stats_policy_get(f->st, SQ_STATS_FOREGROUND,
					     pol_collect, &p, NULL), 0);
	assert_int_equal(p.n, 1);
	assert_string_equal(p.cls[0], "random");
	/* ... and leaves the other table alone. */
	assert_int_equal(count(f, "SELECT count(*) FROM policy WHERE"
			       " which = 'settle'"), 2);
}

/* ---- damage, versions, locks ---- */

/* Makes a real database with some rows, closed (its WAL checkpointed). */
static void make_real_db(struct fx *f)
{
	struct sq_stats_file_delta d = {
		.set = SQ_STATS_SET_PATH, .writes = 1,
		.blocks = { { SQ_CODEC_ZSTD, 3, 1 }, { -1, 0, 0 },
			    { -1, 0, 0 }, { -1, 0, 0 } },
	};
	char path[64];

	open_ok(f, NULL);
	for (int i = 1; i <= 2000; i++) {
		snprintf(path, sizeof(path), "some/longer/directory/file-%d",
			 i);
		d.id = i;
		d.path = path;
		add_file(f, &d);
	}
	apply(f);
	sq_stats_close(f->st);
	f->st = NULL;
	assert_false(exists(f, SQ_STATS_DB "-wal"));
}

/* A fresh database works: one batch in, one row out. */
static void works(struct fx *f)
{
	struct sq_stats_file_delta d = { .id = 1, .writes = 2 };
	struct sq_stats_file row;

	add_file(f, &d);
	apply(f);
	get(f, 1, &row);
	assert_int_equal(row.writes, 2);
	sq_stats_file_release(&row);
	assert_int_equal(count(f, "SELECT count(*) FROM files"), 1);
	assert_int_equal(count(f, "PRAGMA user_version"), SQ_STATS_VERSION);
}

static void check_moved(struct fx *f, const struct sq_stats_open_report *rep,
			const void *was, size_t len)
{
	static uint8_t buf[1 << 20];
	char path[PATH_MAX + 64];

	assert_true(rep->damaged);
	assert_false(rep->created);
	assert_true(rep->why[0] != '\0');
	assert_true(!strncmp(rep->moved_to, SQ_STATS_DB ".damaged-",
			     strlen(SQ_STATS_DB ".damaged-")));
	snprintf(path, sizeof(path), "%s/%s", f->dir, rep->moved_to);
	assert_true(len <= sizeof(buf));
	assert_int_equal(read_file(path, buf, sizeof(buf)), len);
	assert_memory_equal(buf, was, len);
	assert_int_equal(count_named(f, "stats.db.damaged-"), 1);
}

static void test_damaged_garbage(void **state)
{
	struct fx *f = *state;
	struct sq_stats_open_report rep;
	static uint8_t junk[8192];
	uint32_t x = 12345;
	char path[PATH_MAX + 128];

	for (size_t i = 0; i < sizeof(junk); i++) {
		x = x * 1103515245u + 12345u;
		junk[i] = (uint8_t)(x >> 24);
	}
	assert_int_equal(mkdirat(f->dfd, ".squeezefs", 0700), 0);
	write_file(f->db, junk, sizeof(junk));
	/* A WAL goes with its database, never into the fresh one. */
	snprintf(path, sizeof(path), "%s-wal", f->db);
	write_file(path, junk, 100);
	open_ok(f, &rep);
	check_moved(f, &rep, junk, sizeof(junk));
	snprintf(path, sizeof(path), "%s/%s-wal", f->dir, rep.moved_to);
	assert_int_equal(access(path, F_OK), 0);
	works(f);

	/* Text, and one short file. */
	sq_stats_close(f->st);
	f->st = NULL;
	write_file(f->db, "hello, world\n", 13);
	assert_int_equal(sq_stats_open(f->dfd, BUSY_MS, &f->st, &rep), 0);
	assert_true(rep.damaged);
	assert_int_equal(count_named(f, "stats.db.damaged-"), 2);
}

static void test_damaged_truncated(void **state)
{
	struct fx *f = *state;
	struct sq_stats_open_report rep;
	static uint8_t real[1 << 20];
	size_t len;

	make_real_db(f);
	len = read_file(f->db, real, sizeof(real));
	assert_true(len > 16 * 4096);
	/* Half of it, as a copy cut short would leave. */
	write_file(f->db, real, len / 2);
	open_ok(f, &rep);
	check_moved(f, &rep, real, len / 2);
	assert_int_equal(count(f, "SELECT count(*) FROM files"), 0);
	works(f);
}

static void test_damaged_truncated_header(void **state)
{
	struct fx *f = *state;
	struct sq_stats_open_report rep;
	static uint8_t real[1 << 20];
	size_t len;

	make_real_db(f);
	len = read_file(f->db, real, sizeof(real));
	assert_true(len > 4096);
	/* Cut inside the first page. */
	write_file(f->db, real, 1000);
	open_ok(f, &rep);
	check_moved(f, &rep, real, 1000);
	works(f);
}

static void test_damaged_page(void **state)
{
	struct fx *f = *state;
	struct sq_stats_open_report rep;
	static uint8_t real[1 << 20];
	size_t len;

	/* Header and schema intact, one page in the middle overwritten:
	 * only quick_check reads that far at open. */
	make_real_db(f);
	len = read_file(f->db, real, sizeof(real));
	assert_true(len > 16 * 4096);
	memset(real + 10 * 4096, 0x5a, 4096);
	write_file(f->db, real, len);
	open_ok(f, &rep);
	check_moved(f, &rep, real, len);
	assert_non_null(strstr(rep.why, "quick_check"));
	works(f);
}

static void test_newer_version_refused(void **state)
{
	struct fx *f = *state;
	struct sq_stats_open_report rep;
	char buf[32];
	sqlite3 *db;

	assert_int_equal(mkdirat(f->dfd, ".squeezefs", 0700), 0);
	db = other(f);
	exec(db, "CREATE TABLE files (future BLOB);"
	     " INSERT INTO files VALUES (x'00');");
	exec(db, "PRAGMA user_version = 2");
	sqlite3_close(db);

	assert_int_equal(sq_stats_open(f->dfd, BUSY_MS, &f->st, &rep),
			 -EPROTO);
	assert_null(f->st);
	assert_false(rep.damaged);
	assert_int_equal(rep.from_version, SQ_STATS_VERSION + 1);
	/* Left exactly as it was: not moved, not migrated, not WAL. */
	assert_int_equal(count_named(f, "stats.db.damaged-"), 0);
	db = other(f);
	assert_int_equal(query_int(db, "PRAGMA user_version"), 2);
	assert_int_equal(query_int(db, "SELECT count(*) FROM files"), 1);
	assert_string_equal(query_text(db, "PRAGMA journal_mode", buf,
				       sizeof(buf)), "delete");
	sqlite3_close(db);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void test_busy_apply(void **state)
{
	struct fx *f = *state;
	struct sq_stats_file_delta d = { .id = 1, .writes = 1 };
	struct sq_stats_file row;
	sqlite3 *db;
	double t0;

	open_ok(f, NULL);
	db = other(f);
	exec(db, "BEGIN EXCLUSIVE");
	exec(db, "INSERT INTO log (time, action) VALUES (1, 'theirs')");
	add_file(f, &d);
	t0 = now_s();
	assert_int_equal(sq_stats_apply(f->st, f->b), -EBUSY);
	/* Gave up after the timeout, not never (the bound is loose: the
	 * point is that it returns). */
	assert_true(now_s() - t0 < 30.0);
	/* Readers are not blocked by a writer in WAL mode. */
	assert_int_equal(sq_stats_file_get(f->st, 1, &row), -ENOENT);
	exec(db, "COMMIT");
	sqlite3_close(db);

	/* The batch is still there and applies once the lock is gone. */
	apply(f);
	get(f, 1, &row);
	assert_int_equal(row.writes, 1);
	sq_stats_file_release(&row);
	assert_int_equal(count(f, "SELECT count(*) FROM log"), 1);
}

static void test_busy_open(void **state)
{
	struct fx *f = *state;
	struct sq_stats_open_report rep;
	sqlite3 *db;
	double t0;

	/* A database in rollback mode, locked exclusively: not even its
	 * header can be read. */
	assert_int_equal(mkdirat(f->dfd, ".squeezefs", 0700), 0);
	db = other(f);
	exec(db, "CREATE TABLE theirs (x)");
	exec(db, "BEGIN EXCLUSIVE");
	exec(db, "INSERT INTO theirs VALUES (1)");
	t0 = now_s();
	assert_int_equal(sq_stats_open(f->dfd, BUSY_MS, &f->st, &rep),
			 -EBUSY);
	assert_true(now_s() - t0 < 30.0);
	assert_null(f->st);
	/* Busy is no damage: nothing moved. */
	assert_false(rep.damaged);
	assert_int_equal(count_named(f, "stats.db.damaged-"), 0);
	exec(db, "COMMIT");
	sqlite3_close(db);

	/* Free again: version 0 with a table of someone else's, migrated. */
	open_ok(f, &rep);
	assert_false(rep.damaged);
	assert_int_equal(rep.from_version, 0);
	works(f);
	assert_int_equal(count(f, "SELECT count(*) FROM theirs"), 1);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_create),
		T(test_migrate_empty_file),
		T(test_counters_add),
		T(test_fields_set),
		T(test_codecs),
		T(test_tally),
		T(test_rename),
		T(test_rename_tree),
		T(test_forget_name),
		T(test_batch_append),
		T(test_unlink),
		T(test_order_in_batch),
		T(test_batch_refuses),
		T(test_apply_all_or_nothing),
		T(test_log),
		T(test_states),
		T(test_files_cold),
		T(test_file_blocks),
		T(test_file_blocks_set),
		T(test_policy_roundtrip),
		T(test_damaged_garbage),
		T(test_damaged_truncated),
		T(test_damaged_truncated_header),
		T(test_damaged_page),
		T(test_newer_version_refused),
		T(test_busy_apply),
		T(test_busy_open),
	};
#undef T

	return cmocka_run_group_tests(tests, NULL, NULL);
}
