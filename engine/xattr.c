/*
 * engine/xattr.c - the xattrs a mount shows (xattr.h): the backing's,
 * with the capability moved to a name of our own and our names hidden.
 */
#include "engine/xattr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

static const char caps_name[] = SQ_XATTR_CAPS_SHOWN;

bool sq_xattr_private(const char *name)
{
	return !strncmp(name, SQ_XATTR_PREFIX, sizeof(SQ_XATTR_PREFIX) - 1) ||
	       !strncmp(name, SQ_XATTR_PREFIX_USER,
			sizeof(SQ_XATTR_PREFIX_USER) - 1);
}

const char *sq_xattr_shown(const char *name)
{
	if (!strcmp(name, SQ_XATTR_CAPS))
		return caps_name;
	return sq_xattr_private(name) ? NULL : name;
}

static bool has_xattr(const char *path, const char *name)
{
	return getxattr(path, name, NULL, 0) >= 0;
}

/* 0 or an errno value: security.capability, set as SQ_XATTR_CAPS. */
static int set_caps(const char *path, const void *value, size_t size,
		    int flags)
{
	bool there = has_xattr(path, SQ_XATTR_CAPS) ||
		     has_xattr(path, caps_name);

	if ((flags & XATTR_CREATE) && there)
		return EEXIST;
	if ((flags & XATTR_REPLACE) && !there)
		return ENODATA;
	if (setxattr(path, SQ_XATTR_CAPS, value, size, 0))
		return errno;
	if (removexattr(path, caps_name) && errno != ENODATA)
		return errno;
	return 0;
}

static int remove_caps(const char *path)
{
	int r1 = removexattr(path, SQ_XATTR_CAPS) ? errno : 0;
	int r2 = removexattr(path, caps_name) ? errno : 0;

	if (r1 && r1 != ENODATA)
		return r1;
	if (r2 && r2 != ENODATA)
		return r2;
	return r1 && r2 ? ENODATA : 0;
}

int sq_xattr_set(const char *path, const char *name, const void *value,
		 size_t size, int flags)
{
	int r;

	if (sq_xattr_private(name))
		return -EPERM;
	if (!strcmp(name, caps_name))
		r = value ? set_caps(path, value, size, flags) :
			    remove_caps(path);
	else if (value)
		r = setxattr(path, name, value, size, flags) ? errno : 0;
	else
		r = removexattr(path, name) ? errno : 0;
	return -r;
}

ssize_t sq_xattr_get(const char *path, const char *name, void *buf,
		     size_t size)
{
	bool caps = !strcmp(name, caps_name);
	ssize_t n;

	if (sq_xattr_private(name))
		return -ENODATA;
	n = getxattr(path, caps ? SQ_XATTR_CAPS : name, buf, size);
	if (n < 0 && caps && errno == ENODATA)
		n = getxattr(path, caps_name, buf, size);	/* version 1 */
	return n < 0 ? -errno : n;
}

ssize_t sq_xattr_list(const char *path, char **out)
{
	char *raw = NULL, *list = NULL;
	ssize_t n = 0;
	size_t len = 0;
	bool caps = false;
	int r = 0;

	*out = NULL;
	for (;;) {	/* the list may grow between the two calls */
		n = listxattr(path, NULL, 0);
		if (n <= 0)
			break;
		free(raw);
		raw = malloc((size_t)n);
		if (!raw) {
			r = -ENOMEM;
			goto out;
		}
		n = listxattr(path, raw, (size_t)n);
		if (n >= 0 || errno != ERANGE)
			break;
	}
	if (n < 0) {
		r = -errno;
		goto out;
	}
	list = malloc((size_t)n + sizeof(caps_name));
	if (!list) {
		r = -ENOMEM;
		goto out;
	}
	for (char *p = raw; p < raw + n; p += strlen(p) + 1) {
		const char *shown = sq_xattr_shown(p);

		if (shown == caps_name || !strcmp(p, caps_name)) {
			caps = true;	/* once, whichever names it has */
			continue;
		}
		if (!shown)
			continue;
		memcpy(list + len, p, strlen(p) + 1);
		len += strlen(p) + 1;
	}
	if (caps) {
		memcpy(list + len, caps_name, sizeof(caps_name));
		len += sizeof(caps_name);
	}
	*out = list;
	list = NULL;
out:
	free(raw);
	free(list);
	return r ? r : (ssize_t)len;
}
