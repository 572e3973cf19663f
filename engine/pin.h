/*
 * engine/pin.h - codec pins: a file or directory whose blocks are stored
 * with one codec or policy the user chose (the user.squeezefs.codec xattr
 * of the mount), instead of what the analyzer and the settle loop pick.
 *
 * A pin is kept in BACKING as the xattr SQ_XATTR_PREFIX "codec" (or
 * SQ_XATTR_PREFIX_USER "codec" on a mount without trusted.* xattrs), on
 * the file's container or on a directory, where files and directories
 * created below it inherit it.  Its value is a codec spec ("zstd:19",
 * "lz4", "none") or a policy name ("fast", "balanced", "max").
 */
#ifndef SQ_PIN_H
#define SQ_PIN_H

#include <stddef.h>

struct sq_an;
struct sq_fs;
struct sq_pins;

/* Longest pin value, NUL included. */
#define SQ_PIN_MAX 24
#define SQ_PIN_SUFFIX "codec"

int sq_pins_new(double min_saving, struct sq_pins **out);
void sq_pins_free(struct sq_pins *p);	/* NULL-safe */

/*
 * Checks the pin value @value (@len bytes, no NUL needed) and writes it
 * NUL-terminated to @spec (SQ_PIN_MAX bytes).  0 or -EINVAL.
 */
int sq_pin_parse(const char *value, size_t len, char *spec);

/*
 * The analyzer that stores blocks as @spec says (valid until
 * sq_pins_free()), or NULL when @spec is not a valid pin or memory runs
 * out.  Thread-safe.
 */
const struct sq_an *sq_pin_an(struct sq_pins *p, const char *spec);

/* The backing xattr name of pins on this mount. */
const char *sq_pin_xname(const struct sq_fs *fs);

/*
 * The pin of the backing object open as @fd (a real fd, not O_PATH) or,
 * when @fd < 0, at @path: 0 with @spec filled, -ENODATA when it has none
 * (or an invalid one), -errno.
 */
int sq_pin_get(const struct sq_fs *fs, int fd, const char *path,
	       char *spec);
/* Sets (@spec non-NULL) or removes the pin of the object open as @fd or
 * at @path: 0 or -errno (-ENODATA: none to remove). */
int sq_pin_set(const struct sq_fs *fs, int fd, const char *path,
	       const char *spec);

#endif /* SQ_PIN_H */
