/*
 * engine/xattr.h - the extended attributes a mount shows for a backing
 * object, and their remapping (docs/FORMAT.md section 12).
 *
 * A file's security.capability is kept in BACKING as SQ_XATTR_CAPS
 * (format version 2): the backing kernel drops security.capability on
 * every write to a file, and squeezefs's own writes to a container
 * (stores, the sync at the last close, later recompression) are not
 * writes to the file.  Version 1 kept it under its own name, which is
 * still read; setting or removing it clears that one too.  Names under
 * squeezefs's own prefixes (trusted.squeezefs., user.squeezefs.) are
 * hidden and refused.
 *
 * Every function works on a path (a /proc/self/fd link of an O_PATH fd
 * works) and may run in any thread; the caller serializes nothing.
 */
#ifndef SQ_XATTR_H
#define SQ_XATTR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define SQ_XATTR_PREFIX "trusted.squeezefs."
#define SQ_XATTR_PREFIX_USER "user.squeezefs."	/* an unprivileged mount's */
#define SQ_XATTR_CAPS SQ_XATTR_PREFIX "capability"
#define SQ_XATTR_CAPS_SHOWN "security.capability"

/* Whether @name is one of squeezefs's own (hidden, refused). */
bool sq_xattr_private(const char *name);
/* The name a backing xattr @name is shown under (its own, or
 * security.capability for SQ_XATTR_CAPS), or NULL when it is hidden. */
const char *sq_xattr_shown(const char *name);

/*
 * Sets (@value non-NULL) or removes the shown xattr @name of the object at
 * @path, with setxattr's @flags.  Returns 0 or -errno (-EPERM for a
 * private name).
 */
int sq_xattr_set(const char *path, const char *name, const void *value,
		 size_t size, int flags);
/* getxattr() of the shown name @name: its length, or -errno. */
ssize_t sq_xattr_get(const char *path, const char *name, void *buf,
		     size_t size);
/* The shown names of the object at @path, NUL-separated, in *@out
 * (malloc'ed; the caller frees).  Returns its length or -errno. */
ssize_t sq_xattr_list(const char *path, char **out);

#endif /* SQ_XATTR_H */
