/*
 * admin/mounted.c - the commands that talk to a mounted squeezefs through
 * its control directory (MOUNT/.squeezefs, fs/ctl.c):
 *
 *	squeezefs stats [--json] [--bytes] PATH...
 *	squeezefs settle PATH...
 *	squeezefs recompress --codec CODEC[:LEVEL] PATH...
 *
 * stats reads each PATH's user.squeezefs.stats xattr (a file's figures,
 * or a directory's tree's) and prints them as compsize does: one row per
 * codec and level, and TOTAL.  settle and recompress send one command
 * per regular file to MOUNT/.squeezefs/control, which answers once that
 * file is done, and show progress (bytes, rate, ETA) on stderr: a bar on
 * a terminal, a line every few seconds otherwise.
 *
 * Exit status: 0 done; 1 some file was refused or failed (each said on
 * stderr, the daemon's reason from .squeezefs/last_error); 2 usage, or
 * a PATH that is not in a squeezefs mount.
 */
#include "admin/admin.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define CTL_DIR ".squeezefs"
#define XATTR_STATS "user.squeezefs.stats"

/* ---- reading our own JSON ----
 *
 * The xattr's JSON is squeezefs's own, flat but for the "codecs" array of
 * flat objects: finding a key's number within an object is enough.
 */

/* The number after "@key": within [@p, @end), or false. */
static bool json_u64(const char *p, const char *end, const char *key,
		     uint64_t *out)
{
	char pat[64];
	size_t n = (size_t)snprintf(pat, sizeof(pat), "\"%s\": ", key);

	for (const char *q = p; q + n <= end; q++)
		if (!memcmp(q, pat, n)) {
			char *e;

			errno = 0;
			*out = strtoull(q + n, &e, 10);
			return e != q + n && errno == 0;
		}
	return false;
}

static bool json_str(const char *p, const char *end, const char *key,
		     char *buf, size_t cap)
{
	char pat[64];
	size_t n = (size_t)snprintf(pat, sizeof(pat), "\"%s\": \"", key);

	for (const char *q = p; q + n <= end; q++)
		if (!memcmp(q, pat, n)) {
			const char *s = q + n, *e = memchr(s, '"', (size_t)(end - s));

			if (!e || (size_t)(e - s) >= cap)
				return false;
			memcpy(buf, s, (size_t)(e - s));
			buf[e - s] = '\0';
			return true;
		}
	return false;
}

/* ---- stats ---- */

struct row {
	char name[32];		/* "zstd:3" */
	uint64_t blocks, logical, stored;
};

struct sums {
	uint64_t logical, allocated, files, packed, plain, damaged;
	struct row rows[64];
	size_t nrows;
};

static int add_stats(struct sums *s, const char *path, const char *json,
		     size_t len)
{
	const char *end = json + len, *arr, *p;
	uint64_t v;

	/* The top level's figures come before the codecs array. */
	arr = strstr(json, "\"codecs\": [");
	if (!arr)
		return -EBADMSG;
	if (!json_u64(json, arr, "logical_bytes", &v))
		return -EBADMSG;
	s->logical += v;
	if (!json_u64(json, arr, "allocated_bytes", &v))
		return -EBADMSG;
	s->allocated += v;
	if (strstr(json, "\"type\": \"directory\"")) {
		if (json_u64(json, arr, "files", &v))
			s->files += v;
		if (json_u64(json, arr, "packed_files", &v))
			s->packed += v;
		if (json_u64(json, arr, "plain_files", &v))
			s->plain += v;
		if (json_u64(json, arr, "damaged_files", &v))
			s->damaged += v;
	} else {
		s->files++;
		if (strstr(json, "\"packed\": true"))
			s->packed++;
		if (strstr(json, "\"state\": \"plain\""))
			s->plain++;
		if (strstr(json, "\"damaged\": true"))
			s->damaged++;
	}
	for (p = strchr(arr, '{'); p && p < end; p = strchr(p + 1, '{')) {
		const char *e = strchr(p, '}');
		char codec[16], name[32];
		uint64_t level, blocks, logical, stored;
		size_t k;

		if (!e)
			return -EBADMSG;
		if (!json_str(p, e, "codec", codec, sizeof(codec)) ||
		    !json_u64(p, e, "blocks", &blocks) ||
		    !json_u64(p, e, "logical_bytes", &logical) ||
		    !json_u64(p, e, "stored_bytes", &stored))
			return -EBADMSG;
		/* Levels may be negative (zstd): read as text. */
		{
			const char *l = strstr(p, "\"level\": ");
			long lv = l && l < e ? strtol(l + 9, NULL, 10) : 0;

			level = (uint64_t)lv;
			snprintf(name, sizeof(name), "%s:%ld", codec, lv);
		}
		(void)level;
		for (k = 0; k < s->nrows; k++)
			if (!strcmp(s->rows[k].name, name))
				break;
		if (k == s->nrows) {
			if (s->nrows == sizeof(s->rows) / sizeof(s->rows[0]))
				continue;
			snprintf(s->rows[s->nrows++].name, sizeof(name), "%s",
				 name);
		}
		s->rows[k].blocks += blocks;
		s->rows[k].logical += logical;
		s->rows[k].stored += stored;
	}
	(void)path;
	return 0;
}

static void human(char *buf, size_t n, uint64_t v, bool bytes)
{
	static const char units[] = "BKMGTPE";
	double d = (double)v;
	int u = 0;

	if (bytes) {
		snprintf(buf, n, "%llu", (unsigned long long)v);
		return;
	}
	while (d >= 1024 && u < 6) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%lluB", (unsigned long long)v);
	else
		snprintf(buf, n, d < 10 ? "%.1f%c" : "%.0f%c", d, units[u]);
}

static void print_row(const char *name, uint64_t disk, uint64_t unc,
		      uint64_t ref, bool bytes)
{
	char a[32], b[32], c[32];

	human(a, sizeof(a), disk, bytes);
	human(b, sizeof(b), unc, bytes);
	human(c, sizeof(c), ref, bytes);
	printf("%-12s %4.0f%% %14s %14s %14s\n", name,
	       unc ? 100.0 * (double)disk / (double)unc : 0.0, a, b, c);
}

/* The xattr's value: a directory's is a walk, so asking its size first
 * would walk twice; a buffer of 64 KiB holds any answer of today. */
static ssize_t read_xattr(const char *path, char **out)
{
	size_t cap = 64 << 10;

	for (;;) {
		char *buf = malloc(cap + 1);
		ssize_t n;

		if (!buf)
			return -ENOMEM;
		n = lgetxattr(path, XATTR_STATS, buf, cap);
		if (n >= 0) {
			buf[n] = '\0';
			*out = buf;
			return n;
		}
		free(buf);
		if (errno != ERANGE || cap >= (64u << 20))
			return -errno;
		cap *= 8;
	}
}

int sq_admin_stats(int argc, char **argv)
{
	struct sums s;
	bool json = false, bytes = false;
	int k, npaths = 0, ret = 0;

	memset(&s, 0, sizeof(s));
	for (k = 1; k < argc && argv[k][0] == '-'; k++) {
		if (!strcmp(argv[k], "--json"))
			json = true;
		else if (!strcmp(argv[k], "--bytes"))
			bytes = true;
		else if (!strcmp(argv[k], "--"))
			{ k++; break; }
		else
			goto usage;
	}
	if (k == argc)
		goto usage;
	for (; k < argc; k++) {
		char *buf = NULL;
		ssize_t n = read_xattr(argv[k], &buf);

		if (n == -ENODATA || n == -ENOTSUP || n == -EOPNOTSUPP) {
			fprintf(stderr, "squeezefs stats: %s: not in a "
				"squeezefs mount (or a symlink or special "
				"file)\n", argv[k]);
			return 2;
		}
		if (n < 0) {
			fprintf(stderr, "squeezefs stats: %s: %s\n", argv[k],
				strerror((int)-n));
			ret = 1;
			continue;
		}
		if (add_stats(&s, argv[k], buf, (size_t)n)) {
			fprintf(stderr, "squeezefs stats: %s: cannot read its "
				"figures\n", argv[k]);
			ret = 1;
		}
		npaths++;
		free(buf);
	}
	if (json) {
		printf("{\"files\": %llu, \"packed_files\": %llu, "
		       "\"plain_files\": %llu, "
		       "\"damaged_files\": %llu, \"logical_bytes\": %llu, "
		       "\"allocated_bytes\": %llu, \"ratio\": %.4f, "
		       "\"codecs\": [",
		       (unsigned long long)s.files,
		       (unsigned long long)s.packed,
		       (unsigned long long)s.plain,
		       (unsigned long long)s.damaged,
		       (unsigned long long)s.logical,
		       (unsigned long long)s.allocated,
		       s.logical ? (double)s.allocated / (double)s.logical : 0);
		for (size_t r = 0; r < s.nrows; r++) {
			char codec[32], *colon;

			snprintf(codec, sizeof(codec), "%s", s.rows[r].name);
			colon = strchr(codec, ':');
			if (colon)
				*colon = '\0';
			printf("%s{\"codec\": \"%s\", \"level\": %s, "
			       "\"blocks\": %llu, \"logical_bytes\": %llu, "
			       "\"stored_bytes\": %llu}", r ? ", " : "",
			       codec, colon ? colon + 1 : "0",
			       (unsigned long long)s.rows[r].blocks,
			       (unsigned long long)s.rows[r].logical,
			       (unsigned long long)s.rows[r].stored);
		}
		printf("]}\n");
		return ret;
	}
	printf("Processed %llu files (%llu packed", (unsigned long long)s.files,
	       (unsigned long long)s.packed);
	/* Moved in and not converted yet: in TOTAL, in no codec's row. */
	if (s.plain)
		printf(", %llu plain", (unsigned long long)s.plain);
	printf("%s), %d path%s.\n",
	       s.damaged ? ", some damaged: run squeezefs fsck" : "",
	       npaths, npaths == 1 ? "" : "s");
	printf("%-12s %5s %14s %14s %14s\n", "Type", "Perc", "Disk Usage",
	       "Uncompressed", "Referenced");
	print_row("TOTAL", s.allocated, s.logical, s.logical, bytes);
	for (size_t r = 0; r < s.nrows; r++)
		print_row(s.rows[r].name, s.rows[r].stored, s.rows[r].logical,
			  s.rows[r].logical, bytes);
	return ret;
usage:
	fprintf(stderr, "usage: squeezefs stats [--json] [--bytes] PATH...\n");
	return 2;
}

/* ---- settle and recompress ---- */

struct job {
	const char *verb;	/* "settle", "recompress" */
	const char *codec;	/* recompress's, else NULL */
	char root[PATH_MAX];	/* the mount's root */
	int ctl;		/* its control file, open for writing */
	/* The files to do, paths relative to root. */
	char **files;
	uint64_t *sizes;
	size_t n, cap;
	struct sq_progress p;	/* bytes of the files done */
	unsigned failed, busy;
};

/* Finds the root of the mount @path (real) is in: the highest directory
 * on its device; it must have the control directory. */
static int find_root(const char *path, char *root)
{
	struct stat st, up;
	char cur[PATH_MAX], probe[PATH_MAX + 32];

	if (stat(path, &st))
		return -errno;
	snprintf(cur, sizeof(cur), "%s", path);
	if (!S_ISDIR(st.st_mode)) {
		char *slash = strrchr(cur, '/');

		if (slash == cur)
			cur[1] = '\0';
		else if (slash)
			*slash = '\0';
	}
	for (;;) {
		char *slash = strrchr(cur, '/');
		char parent[PATH_MAX];

		if (!slash || !strcmp(cur, "/"))
			break;
		snprintf(parent, sizeof(parent), "%.*s",
			 slash == cur ? 1 : (int)(slash - cur), cur);
		if (stat(parent, &up) || up.st_dev != st.st_dev)
			break;
		snprintf(cur, sizeof(cur), "%s", parent);
	}
	snprintf(probe, sizeof(probe), "%s/" CTL_DIR "/control", cur);
	if (access(probe, F_OK))
		return -ENOTSUP;
	snprintf(root, PATH_MAX, "%s", cur);
	return 0;
}

static int add_file(struct job *j, const char *rel, uint64_t size)
{
	if (j->n == j->cap) {
		size_t ncap = j->cap ? 2 * j->cap : 256;
		char **f = realloc(j->files, ncap * sizeof(*f));
		uint64_t *s;

		if (!f)
			return -ENOMEM;
		j->files = f;
		s = realloc(j->sizes, ncap * sizeof(*s));
		if (!s)
			return -ENOMEM;
		j->sizes = s;
		j->cap = ncap;
	}
	j->files[j->n] = strdup(rel);
	if (!j->files[j->n])
		return -ENOMEM;
	j->sizes[j->n++] = size;
	j->p.total += size;
	return 0;
}

/* Gathers the regular files at or below @full (@rel in the mount). */
static int gather(struct job *j, const char *full, const char *rel,
		  dev_t dev)
{
	struct stat st;
	struct dirent *de;
	DIR *dp;
	int r = 0;

	if (lstat(full, &st))
		return -errno;
	if (st.st_dev != dev)
		return 0;
	if (S_ISREG(st.st_mode))
		return add_file(j, rel, (uint64_t)st.st_size);
	if (!S_ISDIR(st.st_mode))
		return 0;
	dp = opendir(full);
	if (!dp)
		return -errno;
	while (r == 0 && (de = readdir(dp))) {
		char f[PATH_MAX], r2[PATH_MAX];

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (snprintf(f, sizeof(f), "%s/%s", full, de->d_name) >=
			    (int)sizeof(f) ||
		    snprintf(r2, sizeof(r2), "%s%s%s", rel, *rel ? "/" : "",
			     de->d_name) >= (int)sizeof(r2))
			continue;
		r = gather(j, f, r2, dev);
	}
	closedir(dp);
	return r;
}

static void last_error(struct job *j, char *buf, size_t n)
{
	char path[PATH_MAX + 32];
	ssize_t got;
	int fd;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "%s/" CTL_DIR "/last_error", j->root);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	got = read(fd, buf, n - 1);
	close(fd);
	buf[got > 0 ? got : 0] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

/* Sends @j's command for file @k; false when the command itself was
 * refused (a bad codec, settling off): no other file would fare better. */
static bool run_one(struct job *j, size_t k)
{
	char cmd[PATH_MAX + 64], why[600];
	int n;

	n = j->codec ? snprintf(cmd, sizeof(cmd), "%s %s %s", j->verb,
				j->files[k], j->codec)
		     : snprintf(cmd, sizeof(cmd), "%s %s", j->verb,
				j->files[k]);
	if (n < 0 || (size_t)n >= sizeof(cmd) || strchr(j->files[k], '\n')) {
		sq_progress_break(&j->p);
		fprintf(stderr, "squeezefs %s: %s: name cannot be sent\n",
			j->verb, j->files[k]);
		j->failed++;
		return true;
	}
	if (write(j->ctl, cmd, (size_t)n) == n)
		return true;
	if (errno == EBUSY) {
		j->busy++;
		return true;
	}
	j->failed++;
	if (errno == EINVAL) {
		last_error(j, why, sizeof(why));
		sq_progress_break(&j->p);
		fprintf(stderr, "squeezefs %s: refused: %s\n", j->verb,
			why[0] ? why : strerror(EINVAL));
		return false;
	}
	sq_progress_break(&j->p);
	fprintf(stderr, "squeezefs %s: %s: %s\n", j->verb, j->files[k],
		strerror(errno));
	return true;
}

static int run_job(struct job *j, int argc, char **argv)
{
	char ctl[PATH_MAX + 32];
	int ret = 0;

	for (int k = 0; k < argc; k++) {
		char real[PATH_MAX], root[PATH_MAX];
		struct stat st;
		size_t rl;
		int r;

		if (!realpath(argv[k], real)) {
			fprintf(stderr, "squeezefs %s: %s: %s\n", j->verb,
				argv[k], strerror(errno));
			return 2;
		}
		r = find_root(real, root);
		if (r) {
			fprintf(stderr, "squeezefs %s: %s: %s\n", j->verb,
				argv[k], r == -ENOTSUP ?
				"not in a squeezefs mount" : strerror(-r));
			return 2;
		}
		if (!j->root[0])
			snprintf(j->root, sizeof(j->root), "%s", root);
		else if (strcmp(j->root, root)) {
			fprintf(stderr, "squeezefs %s: %s: another mount than "
				"%s: one mount per run\n", j->verb, argv[k],
				j->root);
			return 2;
		}
		rl = strlen(root);
		if (stat(root, &st))
			return 2;
		r = gather(j, real, real[rl] == '/' ? real + rl + 1 :
					real + rl + (rl > 1 ? 0 : 1), st.st_dev);
		if (r) {
			fprintf(stderr, "squeezefs %s: %s: %s\n", j->verb,
				argv[k], strerror(-r));
			return 1;
		}
	}
	snprintf(ctl, sizeof(ctl), "%s/" CTL_DIR "/control", j->root);
	j->ctl = open(ctl, O_WRONLY | O_CLOEXEC);
	if (j->ctl < 0) {
		fprintf(stderr, "squeezefs %s: %s: %s (only the mount's owner "
			"and root may)\n", j->verb, ctl, strerror(errno));
		return 1;
	}
	/* Started with the total counted (sizes are added up above). */
	sq_progress_start(&j->p, j->verb, true, j->p.total);
	for (size_t k = 0; k < j->n; k++) {
		if (!run_one(j, k)) {
			close(j->ctl);
			return 1;
		}
		j->p.done += j->sizes[k];
		sq_progress_show(&j->p, false);
	}
	sq_progress_show(&j->p, true);
	close(j->ctl);
	if (j->busy) {
		fprintf(stderr, "squeezefs %s: %u files were open and were "
			"left for later\n", j->verb, j->busy);
		ret = 1;
	}
	if (j->failed) {
		fprintf(stderr, "squeezefs %s: %u files failed\n", j->verb,
			j->failed);
		ret = 1;
	}
	return ret;
}

static void job_free(struct job *j)
{
	for (size_t k = 0; k < j->n; k++)
		free(j->files[k]);
	free(j->files);
	free(j->sizes);
}

int sq_admin_settle(int argc, char **argv)
{
	struct job j = { .verb = "settle", .ctl = -1 };
	int k = 1, r;

	if (k < argc && !strcmp(argv[k], "--"))
		k++;
	if (k == argc || (argv[k][0] == '-' && strcmp(argv[k], "-"))) {
		fprintf(stderr, "usage: squeezefs settle PATH...\n");
		return 2;
	}
	r = run_job(&j, argc - k, argv + k);
	job_free(&j);
	return r;
}

int sq_admin_recompress(int argc, char **argv)
{
	struct job j = { .verb = "recompress", .ctl = -1 };
	int k = 1, r;

	for (; k < argc && argv[k][0] == '-'; k++) {
		if (!strcmp(argv[k], "--codec") && k + 1 < argc)
			j.codec = argv[++k];
		else if (!strncmp(argv[k], "--codec=", 8))
			j.codec = argv[k] + 8;
		else if (!strcmp(argv[k], "--")) {
			k++;
			break;
		} else {
			j.codec = NULL;
			break;
		}
	}
	if (!j.codec || k == argc || strchr(j.codec, ' ')) {
		fprintf(stderr, "usage: squeezefs recompress --codec "
			"CODEC[:LEVEL] PATH...\n");
		return 2;
	}
	r = run_job(&j, argc - k, argv + k);
	job_free(&j);
	return r;
}
