/*
 * fs/ctl.c - MOUNT/.squeezefs: the control directory.
 *
 * A directory that exists only in the mount, reachable by its name and
 * never listed by readdir of the root, so find, du, rsync, tar and
 * backups of the mount never walk into it (as /proc's files, its files
 * are made when opened and read with direct I/O):
 *
 *	stats		JSON, made anew at every open
 *	metrics		the same figures, Prometheus text format
 *	control		commands, one per write (owner and root only)
 *	last_error	why the last refused command was refused
 *
 * BACKING/.squeezefs, the real directory of the same name, stays hidden
 * behind it.  Its nodes have small fixed node ids (an inode's node id is
 * its address, never below a page).
 */
#include "fs/fs_i.h"

#include "analyzer/analyzer.h"
#include "codec/codec.h"
#include "engine/cache.h"
#include "engine/file.h"
#include "engine/inode.h"
#include "engine/log.h"
#include "engine/pin.h"
#include "engine/settle.h"
#include "engine/track.h"
#include "engine/usage.h"
#include "meta/stats.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

enum {
	CTL_DIR = SQ_CTL_FIRST,
	CTL_STATS,
	CTL_METRICS,
	CTL_CONTROL,
	CTL_LAST_ERROR,
};

static const struct ctl_node {
	fuse_ino_t id;
	const char *name;
	mode_t mode;
} nodes[] = {
	{ CTL_DIR, SQ_RESERVED_NAME, S_IFDIR | 0555 },
	{ CTL_STATS, "stats", S_IFREG | 0444 },
	{ CTL_METRICS, "metrics", S_IFREG | 0444 },
	{ CTL_CONTROL, "control", S_IFREG | 0200 },
	{ CTL_LAST_ERROR, "last_error", S_IFREG | 0444 },
};

/* Longest command accepted: a path and a few words. */
#define CTL_CMD_MAX (PATH_MAX + 64)

bool sq_ctl_node(fuse_ino_t ino)
{
	return ino >= SQ_CTL_FIRST && ino <= SQ_CTL_LAST;
}

static const struct ctl_node *node_of(fuse_ino_t ino)
{
	return &nodes[ino - SQ_CTL_FIRST];
}

static struct sq_mount *mnt_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static void ctl_attr(struct sq_mount *m, fuse_ino_t ino, struct stat *st)
{
	const struct ctl_node *n = node_of(ino);

	memset(st, 0, sizeof(*st));
	st->st_mode = n->mode;
	st->st_nlink = S_ISDIR(n->mode) ? 2 : 1;
	st->st_uid = m->owner_uid;
	st->st_gid = m->owner_gid;
	/* The directory shows BACKING/.squeezefs's inode number, which no
	 * file of the mount has; its files numbers from the top of the
	 * range, which BACKING's filesystems do not hand out. */
	st->st_ino = ino == CTL_DIR ? m->ctl_dir_ino :
		     (ino_t)(UINT64_MAX - 16 + ino);
	st->st_blksize = 4096;
	st->st_atim = st->st_mtim = st->st_ctim = m->mounted_at;
}

static void reply_ctl_entry(fuse_req_t req, fuse_ino_t ino)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = ino;
	ctl_attr(mnt_of(req), ino, &e.attr);
	e.attr_timeout = 1.0;
	e.entry_timeout = 1.0;
	fuse_reply_entry(req, &e);
}

void sq_ctl_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	if (parent == FUSE_ROOT_ID) {
		reply_ctl_entry(req, CTL_DIR);
		return;
	}
	if (parent == CTL_DIR)
		for (size_t k = 1; k < sizeof(nodes) / sizeof(nodes[0]); k++)
			if (!strcmp(name, nodes[k].name)) {
				reply_ctl_entry(req, nodes[k].id);
				return;
			}
	fuse_reply_err(req, parent == CTL_DIR ? ENOENT : ENOTDIR);
}

void sq_ctl_getattr(fuse_req_t req, fuse_ino_t ino)
{
	struct stat st;

	ctl_attr(mnt_of(req), ino, &st);
	fuse_reply_attr(req, &st, 1.0);
}

void sq_ctl_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		    int to_set)
{
	struct stat st;

	/* `echo cmd > control` truncates first (without atomic_o_trunc):
	 * a size of 0 is what the file already has. */
	if ((ino != CTL_CONTROL) || (to_set & ~FUSE_SET_ATTR_SIZE) ||
	    attr->st_size != 0) {
		fuse_reply_err(req, EPERM);
		return;
	}
	ctl_attr(mnt_of(req), ino, &st);
	fuse_reply_attr(req, &st, 1.0);
}

/* Only the mount's owner and root steer it. */
static bool may_control(fuse_req_t req)
{
	const struct fuse_ctx *c = fuse_req_ctx(req);

	return c->uid == 0 || c->uid == mnt_of(req)->owner_uid;
}

void sq_ctl_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	if ((mask & W_OK) && !(ino == CTL_CONTROL && may_control(req)))
		fuse_reply_err(req, EACCES);
	else if ((mask & X_OK) && ino != CTL_DIR)
		fuse_reply_err(req, EACCES);
	else
		fuse_reply_err(req, 0);
}

/* ---- building the files ---- */

struct ctl_buf {
	size_t len;
	char data[];
};

/* Length of the valid UTF-8 sequence at @p (@n bytes left), 0 if none. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
	size_t len = *p >= 0xF0 && *p <= 0xF4 ? 4 : *p >= 0xE0 ? 3 :
		     *p >= 0xC2 && *p <= 0xDF ? 2 : 0;

	if (!len || len > n)
		return 0;
	for (size_t k = 1; k < len; k++)
		if ((p[k] & 0xC0) != 0x80)
			return 0;
	/* Overlong three-byte forms, surrogates, and beyond U+10FFFF. */
	if ((len == 3 && ((*p == 0xE0 && p[1] < 0xA0) ||
			  (*p == 0xED && p[1] >= 0xA0))) ||
	    (len == 4 && ((*p == 0xF0 && p[1] < 0x90) ||
			  (*p == 0xF4 && p[1] >= 0x90))))
		return 0;
	return len;
}

/* Writes @s as a JSON string: a byte that is not UTF-8 (a name in
 * another encoding) becomes U+FFFD, so the document stays valid. */
static void json_str(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);

	fputc('"', f);
	while (n) {
		size_t len;

		if (*p == '"' || *p == '\\') {
			fprintf(f, "\\%c", *p);
			len = 1;
		} else if (*p < 0x20 || *p == 0x7f) {
			fprintf(f, "\\u%04x", *p);
			len = 1;
		} else if (*p < 0x80) {
			fputc(*p, f);
			len = 1;
		} else if ((len = utf8_len(p, n))) {
			fwrite(p, 1, len, f);
		} else {
			fputs("\\ufffd", f);
			len = 1;
		}
		p += len;
		n -= len;
	}
	fputc('"', f);
}

static double ratio(uint64_t stored, uint64_t logical)
{
	return logical ? (double)stored / (double)logical : 0.0;
}

/* What the stats file shows, gathered once per open. */
struct snap {
	struct sq_usage u;
	uint64_t backing_bytes;
	int walk_err;
	struct sq_cache_counters cache;
	struct sq_settle_info settle;
	bool have_db;
	struct state_sum {
		char cls[32];
		uint64_t files[SQ_STATS_STATE_COUNT], logical, stored;
	} cls[SQ_AN_CLASS_COUNT + 1];
	size_t ncls;
	uint64_t queued_files, queued_bytes;
};

static int state_row(void *arg, const struct sq_stats_state_row *row)
{
	struct snap *s = arg;
	const char *name = row->cls && row->cls[0] ? row->cls : "unknown";
	struct state_sum *c = NULL;

	for (size_t k = 0; k < s->ncls; k++)
		if (!strcmp(s->cls[k].cls, name))
			c = &s->cls[k];
	if (!c) {
		if (s->ncls == sizeof(s->cls) / sizeof(s->cls[0]))
			return 0;
		c = &s->cls[s->ncls++];
		snprintf(c->cls, sizeof(c->cls), "%s", name);
	}
	if (row->state >= 0 && row->state < SQ_STATS_STATE_COUNT)
		c->files[row->state] += row->files;
	c->logical += row->logical_bytes;
	c->stored += row->stored_bytes;
	if (row->state == SQ_STATS_HOT || row->state == SQ_STATS_SETTLING) {
		s->queued_files += row->files;
		s->queued_bytes += row->logical_bytes;
	}
	return 0;
}

static int read_states(void *arg, struct sq_stats *db,
		       struct sq_stats_batch *b)
{
	struct snap *s = arg;

	(void)b;
	if (!db)
		return -ENODEV;
	s->have_db = true;
	return sq_stats_states(db, state_row, s);
}

static void take_snap(struct sq_mount *m, struct snap *s)
{
	struct sq_fs *fs = &m->fs;
	int fd;

	memset(s, 0, sizeof(*s));
	fd = openat(fs->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	s->walk_err = fd < 0 ? -errno : sq_usage_tree(fs, fd, true, &s->u);
	if (fd >= 0)
		close(fd);
	s->backing_bytes = sq_usage_backing_bytes(&s->u);
	sq_cache_counters(fs->cache, &s->cache);
	sq_settle_info(fs->settle, &s->settle);
	if (fs->track)
		sq_track_with_db(fs->track, read_states, s);
}

static void json_policy(FILE *f, const struct sq_an *an)
{
	bool first = true;

	fputc('{', f);
	for (int c = SQ_AN_CLASS_TEXT; an && c < SQ_AN_CLASS_COUNT; c++) {
		int codec, level;

		if (sq_an_policy_get(an, c, &codec, &level))
			continue;
		fprintf(f, "%s\"%s\": \"%s:%d\"", first ? "" : ", ",
			sq_an_class_name(c), sq_codec_name(codec), level);
		first = false;
	}
	fputc('}', f);
}

static void write_stats(struct sq_mount *m, const struct snap *s, FILE *f)
{
	const struct sq_usage *u = &s->u;
	struct sq_fs *fs = &m->fs;

	fprintf(f, "{\n  \"version\": 1,\n  \"backing\": ");
	json_str(f, fs->backing);
	fprintf(f, ",\n  \"time\": %lld,\n", (long long)time(NULL));
	if (s->walk_err)
		fprintf(f, "  \"error\": \"walking BACKING: %s\",\n",
			strerror(-s->walk_err));
	fprintf(f, "  \"totals\": {\"logical_bytes\": %llu, "
		"\"allocated_bytes\": %llu, \"ratio\": %.4f, \"files\": %llu, "
		"\"blocks\": %llu, "
		"\"packed_files\": %llu, \"damaged_files\": %llu, "
		"\"plain_files\": %llu, \"plain_bytes\": %llu},\n",
		(unsigned long long)u->logical_bytes,
		(unsigned long long)u->allocated_bytes,
		ratio(u->allocated_bytes, u->logical_bytes),
		(unsigned long long)u->files, (unsigned long long)u->blocks,
		(unsigned long long)u->packed_files,
		(unsigned long long)u->damaged_files,
		(unsigned long long)u->plain_files,
		(unsigned long long)u->plain_bytes);
	fprintf(f, "  \"overhead\": {\"directories\": %llu, "
		"\"directory_bytes\": %llu, \"others\": %llu, "
		"\"other_bytes\": %llu, \"squeezefs_bytes\": %lld},\n",
		(unsigned long long)u->dirs, (unsigned long long)u->dir_bytes,
		(unsigned long long)u->others,
		(unsigned long long)u->other_bytes, (long long)u->meta_bytes);
	fprintf(f, "  \"backing_bytes\": %llu,\n",
		(unsigned long long)s->backing_bytes);
	fprintf(f, "  \"codecs\": [");
	for (size_t k = 0; k < u->ncodecs; k++) {
		const struct sq_usage_codec *c = &u->codecs[k];

		fprintf(f, "%s\n    {\"codec\": \"%s\", \"level\": %d, "
			"\"blocks\": %llu, \"logical_bytes\": %llu, "
			"\"stored_bytes\": %llu, \"ratio\": %.4f}",
			k ? "," : "", sq_codec_name(c->codec), c->level,
			(unsigned long long)c->blocks,
			(unsigned long long)c->raw_bytes,
			(unsigned long long)c->stored_bytes,
			ratio(c->stored_bytes, c->raw_bytes));
	}
	fprintf(f, "%s],\n", u->ncodecs ? "\n  " : "");
	fprintf(f, "  \"classes\": %s", s->have_db ? "[" : "null");
	for (size_t k = 0; s->have_db && k < s->ncls; k++) {
		const struct state_sum *c = &s->cls[k];

		fprintf(f, "%s\n    {\"class\": ", k ? "," : "");
		json_str(f, c->cls);
		fprintf(f, ", \"logical_bytes\": %llu, \"stored_bytes\": %llu, "
			"\"files\": {", (unsigned long long)c->logical,
			(unsigned long long)c->stored);
		for (int st = 0; st < SQ_STATS_STATE_COUNT; st++)
			fprintf(f, "%s\"%s\": %llu", st ? ", " : "",
				sq_stats_state_name(st),
				(unsigned long long)c->files[st]);
		fprintf(f, "}}");
	}
	if (s->have_db)
		fprintf(f, "%s]", s->ncls ? "\n  " : "");
	fprintf(f, ",\n  \"cache\": {\"bytes\": %zu, \"capacity_bytes\": %zu, "
		"\"hits\": %llu, \"misses\": %llu},\n", s->cache.bytes,
		s->cache.capacity, (unsigned long long)s->cache.hits,
		(unsigned long long)s->cache.misses);
	fprintf(f, "  \"io\": {\"reads\": %llu, \"writes\": %llu, "
		"\"bytes_read\": %llu, \"bytes_written\": %llu},\n",
		(unsigned long long)atomic_load(&m->io_reads),
		(unsigned long long)atomic_load(&m->io_writes),
		(unsigned long long)atomic_load(&m->io_bytes_read),
		(unsigned long long)atomic_load(&m->io_bytes_written));
	fprintf(f, "  \"write_queue\": {\"dirty_bytes\": %zu},\n",
		atomic_load(&fs->dirty_bytes));
	fprintf(f, "  \"policy\": {\"name\": \"%s\", \"codec\": ",
		m->codec_forced ? "forced" :
		sq_an_policy_name((enum sq_an_policy)atomic_load(&m->policy)));
	if (m->codec_forced)
		json_str(f, m->codec_forced);
	else
		fputs("null", f);
	fprintf(f, ", \"foreground\": ");
	json_policy(f, m->codec_forced ? NULL : fs->an);
	fprintf(f, ", \"settle\": ");
	json_policy(f, sq_settle_an(fs->settle));
	fprintf(f, "},\n");
	fprintf(f, "  \"settle\": {\"mode\": \"%s\", \"state\": \"%s\", "
		"\"after_seconds\": %u, \"queued_files\": ",
		sq_settle_mode_name(s->settle.mode),
		!fs->settle ? "off" : s->settle.busy ? "settling" : "idle",
		s->settle.after);
	if (s->have_db)
		fprintf(f, "%llu, \"queued_bytes\": %llu",
			(unsigned long long)s->queued_files,
			(unsigned long long)s->queued_bytes);
	else
		fprintf(f, "null, \"queued_bytes\": null");
	fprintf(f, ", \"settled_files\": %llu, \"bytes_before\": %llu, "
		"\"bytes_after\": %llu, \"saved_bytes\": %lld, "
		"\"last_run\": ",
		(unsigned long long)s->settle.files,
		(unsigned long long)s->settle.bytes_before,
		(unsigned long long)s->settle.bytes_after,
		(long long)(s->settle.bytes_before - s->settle.bytes_after));
	if (s->settle.last_round)
		fprintf(f, "%lld", (long long)s->settle.last_round);
	else
		fputs("null", f);
	fprintf(f, "}\n}\n");
}

/* One metric: its HELP and TYPE lines, then @n samples from @fn. */
static void metric_head(FILE *f, const char *name, const char *type,
			const char *help)
{
	fprintf(f, "# HELP squeezefs_%s %s\n# TYPE squeezefs_%s %s\n", name,
		help, name, type);
}

static void metric(FILE *f, const char *name, const char *type,
		   const char *help, double v)
{
	metric_head(f, name, type, help);
	fprintf(f, "squeezefs_%s %.17g\n", name, v);
}

/* A family with one sample per codec and level: the uint64_t at @field
 * of each struct sq_usage_codec. */
static void codec_metric(FILE *f, const struct sq_usage *u, const char *name,
			 const char *help, size_t field)
{
	metric_head(f, name, "gauge", help);
	for (size_t k = 0; k < u->ncodecs; k++) {
		const struct sq_usage_codec *c = &u->codecs[k];
		uint64_t v;

		memcpy(&v, (const char *)c + field, sizeof(v));
		fprintf(f, "squeezefs_%s{codec=\"%s\",level=\"%d\"} %llu\n",
			name, sq_codec_name(c->codec), c->level,
			(unsigned long long)v);
	}
}

static void write_metrics(struct sq_mount *m, const struct snap *s, FILE *f)
{
	const struct sq_usage *u = &s->u;

	metric(f, "logical_bytes", "gauge",
	       "Bytes of file data as applications see them.",
	       (double)u->logical_bytes);
	metric(f, "allocated_bytes", "gauge",
	       "Bytes the files take on BACKING (containers and packed "
	       "images).", (double)u->allocated_bytes);
	metric(f, "backing_bytes", "gauge",
	       "Bytes BACKING takes in all (du -B1).",
	       (double)s->backing_bytes);
	metric(f, "compression_ratio", "gauge",
	       "Allocated bytes over logical bytes.",
	       ratio(u->allocated_bytes, u->logical_bytes));
	metric(f, "files", "gauge", "Regular files.", (double)u->files);
	metric(f, "packed_files", "gauge", "Files stored in a pack.",
	       (double)u->packed_files);
	metric(f, "damaged_files", "gauge",
	       "Files that do not read as containers.",
	       (double)u->damaged_files);
	metric(f, "plain_files", "gauge",
	       "Plain files moved in, not converted into containers yet.",
	       (double)u->plain_files);
	metric(f, "plain_bytes", "gauge",
	       "Logical bytes of the plain files.", (double)u->plain_bytes);
	codec_metric(f, u, "codec_blocks", "Blocks stored per codec and level.",
		     offsetof(struct sq_usage_codec, blocks));
	codec_metric(f, u, "codec_stored_bytes",
		     "Payload bytes of the blocks per codec and level.",
		     offsetof(struct sq_usage_codec, stored_bytes));
	codec_metric(f, u, "codec_logical_bytes",
		     "Logical bytes of the blocks per codec and level.",
		     offsetof(struct sq_usage_codec, raw_bytes));
	metric(f, "cache_bytes", "gauge", "Decompressed blocks cached.",
	       (double)s->cache.bytes);
	metric(f, "cache_capacity_bytes", "gauge", "Block cache size.",
	       (double)s->cache.capacity);
	metric(f, "cache_hits_total", "counter", "Block cache hits.",
	       (double)s->cache.hits);
	metric(f, "cache_misses_total", "counter", "Block cache misses.",
	       (double)s->cache.misses);
	metric(f, "read_bytes_total", "counter",
	       "Bytes read by applications.",
	       (double)atomic_load(&m->io_bytes_read));
	metric(f, "written_bytes_total", "counter",
	       "Bytes written by applications.",
	       (double)atomic_load(&m->io_bytes_written));
	metric(f, "dirty_bytes", "gauge",
	       "Written bytes waiting to be compressed.",
	       (double)atomic_load(&m->fs.dirty_bytes));
	metric(f, "settle_queued_files", "gauge",
	       "Files waiting for the settle loop.",
	       (double)s->queued_files);
	metric(f, "settle_queued_bytes", "gauge",
	       "Logical bytes of the files waiting for the settle loop.",
	       (double)s->queued_bytes);
	metric(f, "settle_files_total", "counter",
	       "Files recompressed by the settle loop since mount.",
	       (double)s->settle.files);
	metric(f, "settle_saved_bytes", "gauge",
	       "Allocated bytes the settle loop saved since mount.",
	       (double)(int64_t)(s->settle.bytes_before -
				 s->settle.bytes_after));
}

/* Makes the contents of @ino for an open. */
static struct ctl_buf *make_file(struct sq_mount *m, fuse_ino_t ino)
{
	struct ctl_buf *b = NULL;
	struct snap *s = NULL;
	char *data = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&data, &len);

	if (!f)
		return NULL;
	if (ino == CTL_LAST_ERROR) {
		pthread_mutex_lock(&m->ctl_lock);
		fputs(m->last_error, f);
		pthread_mutex_unlock(&m->ctl_lock);
	} else if (ino == CTL_STATS || ino == CTL_METRICS) {
		s = malloc(sizeof(*s));
		if (!s)
			goto out;
		take_snap(m, s);
		if (ino == CTL_STATS)
			write_stats(m, s, f);
		else
			write_metrics(m, s, f);
	}
	if (fflush(f))
		goto out;
	b = malloc(sizeof(*b) + len);
	if (b) {
		b->len = len;
		memcpy(b->data, data, len);
	}
out:
	fclose(f);
	free(data);
	free(s);
	return b;
}

void sq_ctl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct sq_mount *m = mnt_of(req);
	int acc = fi->flags & O_ACCMODE;
	struct ctl_buf *b = NULL;

	if (ino == CTL_DIR) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (ino == CTL_CONTROL) {
		if (acc == O_RDONLY || !may_control(req)) {
			fuse_reply_err(req, EACCES);
			return;
		}
	} else if (acc != O_RDONLY) {
		fuse_reply_err(req, EACCES);
		return;
	} else if (!(b = make_file(m, ino))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)b;
	/* Sizes are not known before the open: read to the end. */
	fi->direct_io = 1;
	fi->keep_cache = 0;
	fi->nonseekable = 0;
	if (fuse_reply_open(req, fi) == -ENOENT)
		free(b);
}

void sq_ctl_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		 struct fuse_file_info *fi)
{
	struct ctl_buf *b = (struct ctl_buf *)(uintptr_t)fi->fh;
	char *copy;

	(void)ino;
	if (!b || off < 0 || (uint64_t)off >= b->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > b->len - (size_t)off)
		size = b->len - (size_t)off;
	/*
	 * Replied from a copy: with asynchronous direct I/O the kernel may
	 * have other reads of this open in flight, and once our reply
	 * completes the last of them its release can free @b while the
	 * reply's writev() is still returning (where sanitizers look at the
	 * buffer again).
	 */
	copy = malloc(size ? size : 1);
	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, b->data + off, size);
	fuse_reply_buf(req, copy, size);
	free(copy);
}

void sq_ctl_release(fuse_req_t req, fuse_ino_t ino,
		    struct fuse_file_info *fi)
{
	(void)ino;
	free((struct ctl_buf *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- commands ---- */

/* Remembers why @cmd was refused (for last_error) and logs it. */
static void refuse(struct sq_mount *m, const char *cmd, size_t n,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void refuse(struct sq_mount *m, const char *cmd, size_t n,
		   const char *fmt, ...)
{
	char why[256], shown[81], stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	size_t k;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* The command as it came, printable and short. */
	for (k = 0; k < n && k < sizeof(shown) - 1 && cmd[k] != '\n'; k++)
		shown[k] = isprint((unsigned char)cmd[k]) ? cmd[k] : '?';
	shown[k] = '\0';
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	pthread_mutex_lock(&m->ctl_lock);
	snprintf(m->last_error, sizeof(m->last_error), "%s %s%s: %s\n", stamp,
		 shown, n > k && cmd[k] != '\n' ? "..." : "", why);
	pthread_mutex_unlock(&m->ctl_lock);
	sq_log(SQ_LOG_INFO, "control: refused '%s': %s", shown, why);
}

static long sys_openat2(int dirfd, const char *path, struct open_how *how)
{
	return syscall(SYS_openat2, dirfd, path, how, sizeof(*how));
}

/*
 * Opens @path, relative to the mount, as an O_PATH fd of the backing
 * object, and its path relative to BACKING in @rel.  Refuses what leads
 * out of the mount: absolute paths, "..", symlinks out, and the control
 * directory.  Returns the fd or -errno with @why set.
 */
static int resolve(struct sq_mount *m, const char *path, char *rel,
		   size_t rlen, const char **why)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
			   RESOLVE_NO_XDEV,
	};
	char link[64], full[PATH_MAX], root[PATH_MAX];
	ssize_t n, rn;
	int fd;

	if (!*path) {
		*why = "no path given";
		return -EINVAL;
	}
	if (path[0] == '/') {
		*why = "absolute path: give it relative to the mount's root";
		return -EINVAL;
	}
	/* The control directory is the mount's, not BACKING's. */
	{
		const char *p = path;
		size_t len = sizeof(SQ_RESERVED_NAME) - 1;

		while (p[0] == '.' && p[1] == '/')
			p += 2 + strspn(p + 2, "/");
		if (!strncmp(p, SQ_RESERVED_NAME, len) &&
		    (p[len] == '\0' || p[len] == '/')) {
			*why = "the control directory is not data";
			return -EINVAL;
		}
	}
	fd = (int)sys_openat2(m->fs.root_fd, path, &how);
	if (fd < 0) {
		int e = errno;

		*why = e == EXDEV ? "the path leads out of the mount" :
		       e == ENOENT ? "no such file or directory" :
		       e == ENOTDIR ? "a component is not a directory" :
		       e == ELOOP ? "too many symlinks" :
		       e == EACCES ? "permission denied" :
		       e == ENAMETOOLONG ? "path too long" :
		       "cannot open the path";
		return e == EXDEV ? -EINVAL : -e;
	}
	/* Where it is, relative to where BACKING is now (it may have been
	 * moved since the mount). */
	snprintf(link, sizeof(link), "/proc/self/fd/%d", m->fs.root_fd);
	rn = readlink(link, root, sizeof(root) - 1);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, full, sizeof(full) - 1);
	if (rn <= 0 || n <= 0 || (size_t)rn >= sizeof(root) - 1 ||
	    (size_t)n >= sizeof(full) - 1) {
		close(fd);
		*why = "path too long";
		return -ENAMETOOLONG;
	}
	root[rn] = '\0';
	full[n] = '\0';
	if (rn == 1)		/* BACKING is "/" */
		rn = 0;
	if (n < rn || memcmp(full, root, (size_t)rn) ||
	    (full[rn] != '/' && full[rn] != '\0')) {
		close(fd);
		*why = "the path leads out of the mount";
		return -EINVAL;
	}
	snprintf(rel, rlen, "%s", full[rn] ? full + rn + 1 : "");
	if (!strcmp(rel, SQ_RESERVED_NAME) ||
	    !strncmp(rel, SQ_RESERVED_NAME "/", sizeof(SQ_RESERVED_NAME))) {
		close(fd);
		*why = "the control directory is not data";
		return -EINVAL;
	}
	return fd;
}

/* settle PATH: every regular file below (or at) PATH is due now.  The
 * tree is walked into a batch of our own first, without the statistics'
 * lock (their flusher and the settle loop keep going meanwhile); nothing
 * is applied when the walk fails. */
struct settle_req {
	struct sq_stats_batch *b;
	uint64_t files;
};

static int mark_due(struct settle_req *q, ino_t ino, const char *path)
{
	struct sq_stats_file_delta d;

	sq_stats_file_delta_init(&d, sq_stats_file_id(ino));
	d.set = SQ_STATS_SET_PATH | SQ_STATS_SET_LAST_WRITE |
		SQ_STATS_SET_STATE;
	d.path = path;
	d.last_write = 1;	/* long ago: cold */
	d.state = SQ_STATS_HOT;
	q->files++;
	return sq_stats_batch_file(q->b, &d);
}

/* Trees deeper than this are not walked by a command (a request's
 * stack); the usage walk stops there too. */
#define CMD_DEPTH_MAX 256

/* Marks the tree below the directory open as @fd (consumed), at @path
 * (@plen bytes of a @cap buffer, changed and restored). */
static int due_tree(struct settle_req *q, int fd, char *path, size_t plen,
		    size_t cap, unsigned depth)
{
	struct dirent *de;
	DIR *dp;
	int r = 0;

	dp = fdopendir(fd);
	if (!dp) {
		close(fd);
		return -errno;
	}
	while (r == 0 && (de = readdir(dp))) {
		size_t n = strlen(de->d_name);
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (plen + 1 + n + 1 > cap)
			continue;	/* beyond PATH_MAX: not reachable */
		if (fstatat(dirfd(dp), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		if (plen)
			path[plen] = '/';
		memcpy(path + plen + (plen ? 1 : 0), de->d_name, n + 1);
		if (S_ISREG(st.st_mode)) {
			r = mark_due(q, st.st_ino, path);
		} else if (S_ISDIR(st.st_mode) && depth < CMD_DEPTH_MAX &&
			   !(plen == 0 && !strcmp(de->d_name,
						  SQ_RESERVED_NAME))) {
			int sub = openat(dirfd(dp), de->d_name, O_RDONLY |
					 O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub >= 0)
				r = due_tree(q, sub, path,
					     plen + (plen ? 1 : 0) + n, cap,
					     depth + 1);
		}
		path[plen] = '\0';
	}
	closedir(dp);
	return r;
}

static int settle_fn(void *arg, struct sq_stats *db, struct sq_stats_batch *b)
{
	struct settle_req *q = arg;

	if (!db)
		return -ENODEV;
	return sq_stats_batch_append(b, q->b);
}

static int cmd_settle(struct sq_mount *m, const char *arg, const char **why)
{
	uint64_t files = 0;
	int fd;
	struct sq_settle_now now;
	char rel[PATH_MAX];
	struct stat st;
	int r;

	if (!m->fs.settle) {
		*why = "the settle loop is off (-o settle=off, or a forced "
		       "codec)";
		return -EINVAL;
	}
	if (!m->fs.track) {
		*why = "no statistics store on this mount";
		return -EINVAL;
	}
	fd = resolve(m, arg, rel, sizeof(rel), why);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st)) {
		r = -errno;
		close(fd);
		*why = strerror(-r);
		return r;
	}
	/* A file is settled before the write returns; a tree is due now,
	 * and the loop takes it up at its next round. */
	if (S_ISREG(st.st_mode)) {
		close(fd);
		r = sq_settle_now(m->fs.settle, sq_stats_file_id(st.st_ino),
				  rel, &now);
		if (r == -EBUSY)
			*why = "the file is open: it settles once closed";
		else if (r == -ENOENT)
			*why = "the file went away meanwhile";
		else if (r)
			*why = "the file is damaged (see the log)";
		else
			sq_log(SQ_LOG_INFO, "control: settle %s: %llu -> %llu "
			       "bytes%s%s", rel,
			       (unsigned long long)now.before,
			       (unsigned long long)now.after,
			       now.why[0] ? ", " : "", now.why);
		return r;
	}
	if (!S_ISDIR(st.st_mode)) {
		close(fd);
		*why = "not a regular file or a directory";
		return -EINVAL;
	}
	{
		struct settle_req sr = { NULL, 0 };
		char path[PATH_MAX];
		int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		close(fd);
		r = dfd < 0 ? -errno : sq_stats_batch_new(&sr.b);
		if (r && dfd >= 0)
			close(dfd);
		if (!r) {
			snprintf(path, sizeof(path), "%s", rel);
			r = due_tree(&sr, dfd, path, strlen(path),
				     sizeof(path), 0);
		}
		if (!r)
			r = sq_track_with_db(m->fs.track, settle_fn, &sr);
		sq_stats_batch_free(sr.b);
		files = sr.files;
	}
	if (r == -ENODEV) {
		*why = "the statistics store is not available now";
		return -EINVAL;
	}
	if (r) {
		*why = strerror(-r);
		return r;
	}
	sq_log(SQ_LOG_INFO, "control: settle %s: %llu files due now",
	       *rel ? rel : ".", (unsigned long long)files);
	return 0;
}

static int cmd_policy(struct sq_mount *m, const char *arg, const char **why)
{
	enum sq_an_policy p;
	struct sq_an *tmp;

	if (sq_an_policy_parse(arg, &p)) {
		*why = "unknown policy: want fast, balanced or max";
		return -EINVAL;
	}
	if (m->codec_forced) {
		*why = "this mount stores every block with one codec (-o codec)";
		return -EINVAL;
	}
	if (sq_an_new("auto", p, 0, &tmp)) {
		*why = "out of memory";
		return -ENOMEM;
	}
	/* Entry by entry: a block being stored sees the old or the new
	 * codec of its class (sq_an_policy_set()). */
	for (int c = SQ_AN_CLASS_TEXT; c < SQ_AN_CLASS_COUNT; c++) {
		int codec, level;

		if (!sq_an_policy_get(tmp, c, &codec, &level))
			sq_an_policy_set(m->fs.an, c, codec, level);
	}
	sq_an_free(tmp);
	atomic_store(&m->policy, (int)p);
	sq_log(SQ_LOG_INFO, "control: foreground policy now %s", arg);
	return 0;
}

static int flush_fn(void *arg, struct sq_stats *db, struct sq_stats_batch *b)
{
	(void)arg;
	(void)db;
	(void)b;
	return 0;
}

static int cmd_flush(struct sq_mount *m, const char **why)
{
	int fd, r = 0;

	/* What is pending goes to stats.db, then BACKING to its disk:
	 * everything closed is durable once this returns. */
	if (m->fs.track)
		sq_track_with_db(m->fs.track, flush_fn, NULL);
	/* syncfs() wants a real descriptor, not root_fd's O_PATH one. */
	fd = openat(m->fs.root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || syncfs(fd))
		r = -errno;
	if (fd >= 0)
		close(fd);
	if (r)
		*why = strerror(-r);
	return r;
}

static int cmd_recompress(struct sq_mount *m, fuse_req_t req, char *arg,
			  const char **why);

void sq_ctl_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		  size_t size, off_t off)
{
	struct sq_mount *m = mnt_of(req);
	char cmd[CTL_CMD_MAX + 1], *verb, *arg;
	const char *why = NULL;
	size_t n = size;
	int r;

	(void)off;
	if (ino != CTL_CONTROL) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (n && buf[n - 1] == '\n')
		n--;
	if (n > CTL_CMD_MAX) {
		refuse(m, buf, size, "command too long (%zu bytes, at most %d)",
		       size, CTL_CMD_MAX);
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (memchr(buf, '\0', n)) {
		refuse(m, buf, n, "NUL byte in the command");
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (memchr(buf, '\n', n)) {
		refuse(m, buf, n, "one command per write");
		fuse_reply_err(req, EINVAL);
		return;
	}
	memcpy(cmd, buf, n);
	cmd[n] = '\0';
	/* VERB, one space, then the argument exactly as it is: a name may
	 * begin or end with blanks. */
	verb = cmd + strspn(cmd, " \t");
	arg = verb + strcspn(verb, " \t");
	if (*arg)
		*arg++ = '\0';
	if (!*verb) {
		why = "empty command: want settle, recompress, policy or flush";
		r = -EINVAL;
	} else if (!strcmp(verb, "settle")) {
		r = cmd_settle(m, arg, &why);
	} else if (!strcmp(verb, "policy")) {
		r = cmd_policy(m, arg, &why);
	} else if (!strcmp(verb, "recompress")) {
		r = cmd_recompress(m, req, arg, &why);
	} else if (!strcmp(verb, "flush")) {
		if (*arg) {
			why = "flush takes no argument";
			r = -EINVAL;
		} else {
			r = cmd_flush(m, &why);
		}
	} else {
		why = "unknown command: want settle, recompress, policy or flush";
		r = -EINVAL;
	}
	if (r) {
		refuse(m, buf, n, "%s", why ? why : strerror(-r));
		fuse_reply_err(req, -r);
		return;
	}
	fuse_reply_write(req, size);
}

/* ---- the directory ---- */

void sq_ctl_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    bool plus)
{
	struct sq_mount *m = mnt_of(req);
	char *buf, *p;
	size_t rem = size;

	if (ino != CTL_DIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	p = buf;
	/* Entries: ".", "..", then the files; the offset is the index of
	 * the next one. */
	for (off_t k = off; k < (off_t)(sizeof(nodes) / sizeof(nodes[0])) + 1;
	     k++) {
		struct fuse_entry_param e;
		const char *name;
		size_t len;

		memset(&e, 0, sizeof(e));
		if (k == 0) {
			name = ".";
			ctl_attr(m, CTL_DIR, &e.attr);
		} else if (k == 1) {
			name = "..";
			e.attr.st_mode = S_IFDIR;
			e.attr.st_ino = 1;
		} else {
			name = nodes[k - 1].name;
			e.ino = nodes[k - 1].id;
			ctl_attr(m, e.ino, &e.attr);
			e.attr_timeout = e.entry_timeout = 1.0;
		}
		/* "." and ".." have node id 0: the kernel makes no
		 * entry of them (no lookup to forget). */
		if (plus)
			len = fuse_add_direntry_plus(req, p, rem, name, &e,
						     k + 1);
		else
			len = fuse_add_direntry(req, p, rem, name, &e.attr,
						k + 1);
		if (len > rem)
			break;
		p += len;
		rem -= len;
	}
	fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

/* ---- recompress PATH CODEC[:LEVEL] ---- */

struct recomp {
	struct sq_mount *m;
	fuse_req_t req;		/* for fuse_req_interrupted() */
	int err_stop;		/* -EINTR: stopped early */
	const struct sq_an *an;
	uint64_t files, blocks, failed;
	int err;		/* the first failure */
	int64_t *ids;		/* the files done: settled now */
	size_t nids, capids;
};

/* Recompresses the file open as @fd (O_PATH; consumed). */
static void recompress_fd(struct recomp *q, int fd)
{
	struct sq_fs *fs = &q->m->fs;
	struct sq_inode *i;
	uint64_t blocks = 0;
	struct stat st;
	int r;

	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return;
	}
	r = sq_inode_get(fs, fd, &st, SQ_IREF_PIN, &i);	/* consumes fd */
	if (r)
		goto out;
	r = sq_fs_get_file(fs, i, SQ_OPEN_WRITE | SQ_OPEN_NOW, -1);
	if (!r) {
		r = sq_file_recompress(fs, i, q->an, &blocks);
		if (!r)
			r = sq_fs_put_file(fs, i);
		else
			sq_fs_put_file(fs, i);
	}
	sq_inode_put(fs, i, SQ_IREF_PIN, 1);
out:
	if (r) {
		q->failed++;
		if (!q->err)
			q->err = r;
		return;
	}
	q->files++;
	q->blocks += blocks;
	if (q->nids == q->capids) {
		size_t ncap = q->capids ? 2 * q->capids : 64;
		int64_t *n = realloc(q->ids, ncap * sizeof(*n));

		if (!n)
			return;
		q->ids = n;
		q->capids = ncap;
	}
	q->ids[q->nids++] = sq_stats_file_id(st.st_ino);
}

static void recompress_one(struct recomp *q, int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);

	if (fd >= 0)	/* else gone meanwhile */
		recompress_fd(q, fd);
}

/* Recompresses the tree below the directory open as @fd (consumed).
 * Stops when the writer is interrupted (a signal: the command can take
 * long on a big tree). */
static void recompress_tree(struct recomp *q, int fd, bool top,
			    unsigned depth)
{
	struct dirent *de;
	DIR *dp = fdopendir(fd);

	if (!dp) {
		close(fd);
		return;
	}
	while ((de = readdir(dp)) && !q->err_stop) {
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
		    (top && !strcmp(de->d_name, SQ_RESERVED_NAME)))
			continue;
		if (q->req && fuse_req_interrupted(q->req)) {
			q->err_stop = -EINTR;
			break;
		}
		if (fstatat(dirfd(dp), de->d_name, &st, AT_SYMLINK_NOFOLLOW))
			continue;
		if (S_ISREG(st.st_mode)) {
			recompress_one(q, dirfd(dp), de->d_name);
		} else if (S_ISDIR(st.st_mode) && depth < CMD_DEPTH_MAX) {
			int sub = openat(dirfd(dp), de->d_name, O_RDONLY |
					 O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub >= 0)
				recompress_tree(q, sub, false, depth + 1);
		}
	}
	closedir(dp);
}

/* The files just recompressed are settled: the loop leaves them so until
 * they are written again. */
static int mark_settled(void *arg, struct sq_stats *db,
			struct sq_stats_batch *b)
{
	struct recomp *q = arg;
	int64_t now = (int64_t)time(NULL);

	(void)db;
	for (size_t k = 0; k < q->nids; k++) {
		struct sq_stats_file_delta d;

		sq_stats_file_delta_init(&d, q->ids[k]);
		d.set = SQ_STATS_SET_STATE | SQ_STATS_SET_LAST_SETTLED;
		d.state = SQ_STATS_SETTLED;
		d.last_settled = now;
		if (sq_stats_batch_file(b, &d))
			break;
	}
	return 0;
}

static int cmd_recompress(struct sq_mount *m, fuse_req_t req, char *arg,
			  const char **why)
{
	struct recomp q = { .m = m, .req = req };
	char rel[PATH_MAX], spec[SQ_PIN_MAX], *codec;
	struct stat st;
	int fd;

	if (m->fs.ro) {
		*why = "the mount is read-only";
		return -EINVAL;
	}
	/* The codec is the last word: the path may have spaces. */
	codec = strrchr(arg, ' ');
	if (!codec || codec == arg) {
		*why = "want: recompress PATH CODEC[:LEVEL]";
		return -EINVAL;
	}
	*codec++ = '\0';
	if (sq_pin_parse(codec, strlen(codec), spec) ||
	    !(q.an = sq_pin_an(m->fs.pins, spec))) {
		*why = "unknown codec or level (want lz4, zstd:19, brotli:11, "
		       "none, or fast, balanced, max)";
		return -EINVAL;
	}
	fd = resolve(m, arg, rel, sizeof(rel), why);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st)) {
		close(fd);
		*why = strerror(errno);
		return -EINVAL;
	}
	if (S_ISREG(st.st_mode)) {
		recompress_fd(&q, fd);
		fd = -1;
	} else if (S_ISDIR(st.st_mode)) {
		int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (dfd >= 0)
			recompress_tree(&q, dfd, *rel == '\0', 0);
	} else {
		close(fd);
		*why = "not a regular file or a directory";
		return -EINVAL;
	}
	if (fd >= 0)
		close(fd);
	if (m->fs.track && q.nids)
		sq_track_with_db(m->fs.track, mark_settled, &q);
	free(q.ids);
	sq_log(SQ_LOG_INFO, "control: recompress %s %s: %llu files, %llu "
	       "blocks%s", *rel ? rel : ".", spec,
	       (unsigned long long)q.files, (unsigned long long)q.blocks,
	       q.failed ? " (some failed)" : "");
	if (q.err_stop) {
		*why = "interrupted";
		return q.err_stop;
	}
	if (q.failed) {
		*why = q.err == -EIO ? "a file is damaged (see the log)" :
		       strerror(-q.err);
		return q.err == -ENOSPC ? -ENOSPC : -EIO;
	}
	return 0;
}

/* ---- virtual xattrs ---- */

#define XATTR_STATS "user.squeezefs.stats"
#define XATTR_CODEC "user.squeezefs.codec"

bool sq_ctl_xattr(const char *name)
{
	return !strcmp(name, XATTR_STATS) || !strcmp(name, XATTR_CODEC);
}

/* What @i's cache says of its pin (lock held): 0 and @spec, -ENODATA,
 * or -EAGAIN when it has not been read yet. */
static int pin_cached(const struct sq_inode *i, char *spec)
{
	if (!i->pin_state)
		return -EAGAIN;
	if (i->pin_state == 1)
		return -ENODATA;
	memcpy(spec, i->pin, SQ_PIN_MAX);
	return 0;
}

/* @i's pin (cached for directories): 0 and @spec, or -ENODATA. */
static int pin_of(struct sq_mount *m, struct sq_inode *i, char *spec)
{
	char path[64];
	int r;

	pthread_mutex_lock(&i->lock);
	r = pin_cached(i, spec);
	pthread_mutex_unlock(&i->lock);
	if (r != -EAGAIN)
		return r;
	sq_proc_path(path, sizeof(path), i->fd);
	r = sq_pin_get(&m->fs, -1, path, spec);
	if (r && r != -ENODATA)
		return r;
	pthread_mutex_lock(&i->lock);
	/* A setxattr meanwhile filled it: its answer is the newer one. */
	if (i->pin_state) {
		r = pin_cached(i, spec);
	} else {
		i->pin_state = r ? 1 : 2;
		if (!r)
			memcpy(i->pin, spec, SQ_PIN_MAX);
	}
	pthread_mutex_unlock(&i->lock);
	return r;
}

int sq_ctl_inherit(struct sq_mount *m, struct sq_inode *parent, int fd,
		   struct sq_inode *child, char *out)
{
	char spec[SQ_PIN_MAX], path[64];
	int r;

	if (m->fs.ro || pin_of(m, parent, spec))
		return 0;
	if (fd >= 0) {
		r = sq_pin_set(&m->fs, fd, NULL, spec);
	} else {
		sq_proc_path(path, sizeof(path), child->fd);
		r = sq_pin_set(&m->fs, -1, path, spec);
		if (!r) {
			pthread_mutex_lock(&child->lock);
			child->pin_state = 2;
			memcpy(child->pin, spec, SQ_PIN_MAX);
			pthread_mutex_unlock(&child->lock);
		}
	}
	if (r) {
		sq_log(SQ_LOG_WARN, "cannot give a new file its directory's "
		       "codec pin %s: %s", spec, strerror(-r));
		return 0;
	}
	if (out)
		memcpy(out, spec, SQ_PIN_MAX);
	return 1;
}

void sq_fs_reply_xattr(fuse_req_t req, const char *buf, size_t n,
		       size_t size)
{
	if (size == 0)
		fuse_reply_xattr(req, n);
	else if (n > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, n);
}

struct file_row {
	int64_t id;
	bool found;
	char cls[32];
	int state;
};

static int file_row_fn(void *arg, struct sq_stats *db,
		       struct sq_stats_batch *b)
{
	struct file_row *fr = arg;
	struct sq_stats_file f;

	(void)b;
	if (!db || sq_stats_file_get(db, fr->id, &f))
		return 0;
	if (f.id == fr->id) {
		fr->found = true;
		snprintf(fr->cls, sizeof(fr->cls), "%s", f.cls ? f.cls : "");
		fr->state = f.state;
	}
	sq_stats_file_release(&f);
	return 0;
}

static void json_blocks(FILE *f, const struct sq_usage *u)
{
	fputc('{', f);
	for (size_t k = 0; k < u->ncodecs; k++)
		fprintf(f, "%s\"%s:%d\": %llu", k ? ", " : "",
			sq_codec_name(u->codecs[k].codec), u->codecs[k].level,
			(unsigned long long)u->codecs[k].blocks);
	fputc('}', f);
}

/* user.squeezefs.stats of @i into @f: 0 or -errno. */
static int write_xstats(struct sq_mount *m, struct sq_inode *i, FILE *f)
{
	struct sq_fs *fs = &m->fs;
	struct sq_usage *u = calloc(1, sizeof(*u));
	char spec[SQ_PIN_MAX];
	bool pinned;
	struct stat st;
	int fd, r;

	if (!u)
		return -ENOMEM;
	pinned = pin_of(m, i, spec) == 0;
	if (i->type == S_IFDIR) {
		fd = sq_inode_open(i, O_RDONLY | O_DIRECTORY);
		r = fd < 0 ? -errno :
		    sq_usage_tree(fs, fd, i == &fs->root, u);
		if (fd < 0)
			goto out;
		close(fd);
		/* What could not be walked is said; the rest still counts. */
		fputc('{', f);
		if (r)
			fprintf(f, "\"error\": \"%s\", ", strerror(-r));
		fprintf(f, "\"type\": \"directory\", \"logical_bytes\": %llu, "
			"\"allocated_bytes\": %llu, \"ratio\": %.4f, "
			"\"files\": %llu, \"packed_files\": %llu, "
			"\"plain_files\": %llu, "
			"\"damaged_files\": %llu, \"directories\": %llu, "
			"\"blocks\": ",
			(unsigned long long)u->logical_bytes,
			(unsigned long long)u->allocated_bytes,
			ratio(u->allocated_bytes, u->logical_bytes),
			(unsigned long long)u->files,
			(unsigned long long)u->packed_files,
			(unsigned long long)u->plain_files,
			(unsigned long long)u->damaged_files,
			(unsigned long long)u->dirs);
	} else {
		struct file_row fr = { .state = -1 };
		bool open;

		/* What is written but not stored yet counts once stored:
		 * an open reference of our own keeps the data state alive
		 * while its flush waits (a release may come meanwhile), and
		 * its put stores what the file holds. */
		pthread_mutex_lock(&i->lock);
		open = i->file != NULL;
		pthread_mutex_unlock(&i->lock);
		if (open && sq_fs_get_file(fs, i, SQ_OPEN_READ, -1) == 0)
			sq_fs_put_file(fs, i);
		fd = sq_inode_open(i, O_RDONLY | O_NOATIME);
		if (fd < 0 && errno == EPERM)
			fd = sq_inode_open(i, O_RDONLY);
		if (fd < 0) {
			r = -errno;
			goto out;
		}
		r = fstat(fd, &st) ? -errno : sq_usage_file(fs, fd, &st, u);
		close(fd);
		if (r)
			goto out;
		fr.id = sq_stats_file_id(st.st_ino);
		if (fs->track)
			sq_track_with_db(fs->track, file_row_fn, &fr);
		fprintf(f, "{\"type\": \"file\", \"logical_bytes\": %llu, "
			"\"allocated_bytes\": %llu, \"ratio\": %.4f, "
			"\"class\": ", (unsigned long long)u->logical_bytes,
			(unsigned long long)u->allocated_bytes,
			ratio(u->allocated_bytes, u->logical_bytes));
		if (fr.found && fr.cls[0])
			json_str(f, fr.cls);
		else
			fputs("null", f);
		fprintf(f, ", \"state\": \"%s\", \"packed\": %s, "
			"\"damaged\": %s, \"blocks\": ",
			u->packed_files ? "packed" :
			u->plain_files ? "plain" :
			fr.found && fr.state >= 0 ?
				sq_stats_state_name(fr.state) : "hot",
			u->packed_files ? "true" : "false",
			u->damaged_files ? "true" : "false");
	}
	json_blocks(f, u);
	fprintf(f, ", \"codecs\": [");
	for (size_t k = 0; k < u->ncodecs; k++)
		fprintf(f, "%s{\"codec\": \"%s\", \"level\": %d, "
			"\"blocks\": %llu, \"logical_bytes\": %llu, "
			"\"stored_bytes\": %llu}", k ? ", " : "",
			sq_codec_name(u->codecs[k].codec), u->codecs[k].level,
			(unsigned long long)u->codecs[k].blocks,
			(unsigned long long)u->codecs[k].raw_bytes,
			(unsigned long long)u->codecs[k].stored_bytes);
	fprintf(f, "], \"pin\": ");
	if (pinned)
		fprintf(f, "\"%s\"", spec);
	else
		fputs("null", f);
	fputs("}\n", f);
	r = 0;
out:
	free(u);
	return r;
}

void sq_ctl_getxattr(fuse_req_t req, struct sq_inode *i, const char *name,
		     size_t size)
{
	struct sq_mount *m = mnt_of(req);
	char spec[SQ_PIN_MAX], *data = NULL;
	size_t len = 0;
	FILE *f;
	int r;

	if (i->type != S_IFREG && i->type != S_IFDIR) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	if (!strcmp(name, XATTR_CODEC)) {
		r = pin_of(m, i, spec);
		if (r)
			fuse_reply_err(req, -r);
		else
			sq_fs_reply_xattr(req, spec, strlen(spec), size);
		return;
	}
	f = open_memstream(&data, &len);
	if (!f) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	r = write_xstats(m, i, f);
	if (fclose(f) && !r)
		r = -ENOMEM;
	if (r)
		fuse_reply_err(req, -r);
	else
		sq_fs_reply_xattr(req, data, len, size);
	free(data);
}

void sq_ctl_setxattr(fuse_req_t req, struct sq_inode *i, const char *name,
		     const char *value, size_t size, int flags)
{
	struct sq_mount *m = mnt_of(req);
	char spec[SQ_PIN_MAX], old[SQ_PIN_MAX], path[64];
	int r;

	if (strcmp(name, XATTR_CODEC)) {
		fuse_reply_err(req, EPERM);	/* stats: answered, not kept */
		return;
	}
	if (i->type != S_IFREG && i->type != S_IFDIR) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (m->fs.ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (value && sq_pin_parse(value, size, spec)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = pin_of(m, i, old);
	if (r && r != -ENODATA) {
		fuse_reply_err(req, -r);
		return;
	}
	if (value && (((flags & XATTR_CREATE) && r == 0) ||
		      ((flags & XATTR_REPLACE) && r == -ENODATA))) {
		fuse_reply_err(req, r == 0 ? EEXIST : ENODATA);
		return;
	}
	if (!value && r == -ENODATA) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	sq_proc_path(path, sizeof(path), i->fd);
	pthread_mutex_lock(&i->lock);
	r = sq_pin_set(&m->fs, -1, path, value ? spec : NULL);
	if (!r) {
		i->pin_state = value ? 2 : 1;
		if (value)
			memcpy(i->pin, spec, SQ_PIN_MAX);
		/* An open file stores with it from its next opening for
		 * writing; one open now takes it at once. */
		if (i->file)
			sq_file_set_pin(i, value ? sq_pin_an(m->fs.pins, spec)
						 : NULL);
	}
	pthread_mutex_unlock(&i->lock);
	fuse_reply_err(req, -r);
}
