/*
 * engine/pin.c - codec pins (pin.h).
 */
#include "engine/pin.h"

#include "analyzer/analyzer.h"
#include "codec/codec.h"
#include "engine/engine.h"
#include "engine/pack_store.h"
#include "engine/xattr.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

/* Every codec at every level, and the policies: well under this. */
#define PINS_MAX 96

struct sq_pins {
	double min_saving;
	pthread_mutex_t lock;	/* a leaf */
	size_t n;
	struct {
		char spec[SQ_PIN_MAX];
		struct sq_an *an;
	} e[PINS_MAX];
};

int sq_pins_new(double min_saving, struct sq_pins **out)
{
	struct sq_pins *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->min_saving = min_saving;
	pthread_mutex_init(&p->lock, NULL);
	*out = p;
	return 0;
}

void sq_pins_free(struct sq_pins *p)
{
	if (!p)
		return;
	for (size_t k = 0; k < p->n; k++)
		sq_an_free(p->e[k].an);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

int sq_pin_parse(const char *value, size_t len, char *spec)
{
	enum sq_an_policy pol;
	int codec, level;

	/* setfattr -v and echo -n alike: one trailing newline is allowed. */
	if (len && value[len - 1] == '\n')
		len--;
	if (!len || len >= SQ_PIN_MAX || memchr(value, '\0', len))
		return -EINVAL;
	memcpy(spec, value, len);
	spec[len] = '\0';
	if (sq_an_policy_parse(spec, &pol) == 0 ||
	    sq_codec_parse(spec, &codec, &level) == 0)
		return 0;
	return -EINVAL;
}

const struct sq_an *sq_pin_an(struct sq_pins *p, const char *spec)
{
	enum sq_an_policy pol;
	struct sq_an *an = NULL;
	int r;

	char key[SQ_PIN_MAX];
	int codec, level;

	if (!p)
		return NULL;
	/* One analyzer per meaning, not per spelling ("zstd:03", "zstd:3"
	 * and "zstd:+3" are one): the table stays bounded. */
	if (sq_an_policy_parse(spec, &pol) == 0)
		snprintf(key, sizeof(key), "%s", sq_an_policy_name(pol));
	else if (sq_codec_parse(spec, &codec, &level) == 0)
		snprintf(key, sizeof(key), "%s:%d",
			 sq_codec_name(codec), level);
	else
		return NULL;
	spec = key;
	pthread_mutex_lock(&p->lock);
	for (size_t k = 0; k < p->n; k++)
		if (!strcmp(p->e[k].spec, spec)) {
			an = p->e[k].an;
			goto out;
		}
	if (p->n == PINS_MAX || strlen(spec) >= SQ_PIN_MAX)
		goto out;
	/* A pinned codec is the user's choice: kept whenever it stores
	 * less than raw at all.  A pinned policy saves as the mount's. */
	if (sq_an_policy_parse(spec, &pol) == 0)
		r = sq_an_new("auto", pol, p->min_saving, &an);
	else
		r = sq_an_new(spec, SQ_AN_POLICY_BALANCED, 0.0, &an);
	if (r) {
		an = NULL;
		goto out;
	}
	strcpy(p->e[p->n].spec, spec);
	p->e[p->n++].an = an;
out:
	pthread_mutex_unlock(&p->lock);
	return an;
}

const char *sq_pin_xname(const struct sq_fs *fs)
{
	return fs->pack && !sq_pack_trusted(fs->pack) ?
		       SQ_XATTR_PREFIX_USER SQ_PIN_SUFFIX :
		       SQ_XATTR_PREFIX SQ_PIN_SUFFIX;
}

static ssize_t get_one(int fd, const char *path, const char *name,
		       char *buf, size_t n)
{
	return fd >= 0 ? fgetxattr(fd, name, buf, n) :
			 getxattr(path, name, buf, n);
}

int sq_pin_get(const struct sq_fs *fs, int fd, const char *path, char *spec)
{
	static const char *const names[] = {
		SQ_XATTR_PREFIX SQ_PIN_SUFFIX,
		SQ_XATTR_PREFIX_USER SQ_PIN_SUFFIX,
	};
	char buf[SQ_PIN_MAX];
	const char *first = sq_pin_xname(fs);
	ssize_t n;

	/* The mount's name first; the other one a copy may carry. */
	n = get_one(fd, path, first, buf, sizeof(buf));
	if (n < 0 && errno == ENODATA)
		n = get_one(fd, path, first == names[0] ? names[1] : names[0],
			    buf, sizeof(buf));
	if (n < 0)
		return errno == ERANGE || errno == ENOTSUP ||
		       errno == EPERM ? -ENODATA : -errno;
	return sq_pin_parse(buf, (size_t)n, spec) ? -ENODATA : 0;
}

int sq_pin_set(const struct sq_fs *fs, int fd, const char *path,
	       const char *spec)
{
	const char *name = sq_pin_xname(fs);
	const char *other = strcmp(name, SQ_XATTR_PREFIX SQ_PIN_SUFFIX) ?
				    SQ_XATTR_PREFIX SQ_PIN_SUFFIX :
				    SQ_XATTR_PREFIX_USER SQ_PIN_SUFFIX;
	int r, r2;

	if (spec) {
		r = fd >= 0 ? fsetxattr(fd, name, spec, strlen(spec), 0) :
			      setxattr(path, name, spec, strlen(spec), 0);
		return r ? -errno : 0;
	}
	/* Removed under both names: a copy may carry the other one. */
	r = (fd >= 0 ? fremovexattr(fd, name) : removexattr(path, name)) ?
		    errno : 0;
	r2 = (fd >= 0 ? fremovexattr(fd, other) : removexattr(path, other)) ?
		     errno : 0;
	if (r == ENODATA && r2 != ENODATA && r2 != ENOTSUP && r2 != EPERM)
		r = r2;
	return -r;
}
