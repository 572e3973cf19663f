/*
 * engine/pack_store.h - the pack store (docs/FORMAT.md section 13): the
 * pack files under BACKING/.squeezefs/packs that hold small files'
 * container images, and the pack index that follows their names.  It
 * reads, adds and frees images; it does not decide what gets packed (the
 * packer does, packer.h), and needs no mount: fsck and export use it too.
 *
 * Thread-safety: every function may be called from any number of threads.
 * The store's two locks are leaves, but for the index lock, which a rename
 * holds across the rename (sq_pack_index_lock()).
 */
#ifndef SQ_PACK_STORE_H
#define SQ_PACK_STORE_H

#include "meta/pack.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct sq_pack;
struct sq_wq;

/*
 * Opens the packs of BACKING (@backing_fd, borrowed; @backing its path
 * for index records, or NULL when no index is written) for reading, and
 * with @write for freeing and adding images (creating
 * BACKING/.squeezefs/packs).  A BACKING without packs opens fine: reading
 * a packed file then fails with -EBADMSG.  Returns 0 or -ENOMEM.
 */
int sq_pack_open(int backing_fd, const char *backing, bool write,
		 struct sq_pack **out);
/* NULL-safe. */
void sq_pack_close(struct sq_pack *p);

/* ---- references: the xattr of a packed file ---- */

/*
 * The packed reference of the empty container open as @fd (or, @path
 * non-NULL, at @path), under either name (FORMAT.md 13.1).  Returns 0,
 * -ENODATA when it is not packed, -EBADMSG for a damaged reference, -errno.
 */
int sq_pack_get_ref(int fd, const char *path, struct sq_pack_ref *ref);
/* Removes the reference from the file open as @fd, under either name:
 * 0 or -errno. */
int sq_pack_drop_ref(int fd);

/* ---- reading ---- */

/* Reads and checks an image into @image (ref->len bytes): 0, -EBADMSG
 * (the image is damaged or missing), -errno. */
int sq_pack_load(struct sq_pack *p, const struct sq_pack_ref *ref,
		 void *image);
/*
 * Starts reading the images of @refs (@n; sorted here) into the page cache
 * without waiting: a directory listing announces the files that a tar, cp
 * or rsync reads next, and a pack holds them scattered (largest first), so
 * one request for all beats a disk seek per file.  A stale reference only
 * costs a useless read.  NULL-safe.
 */
void sq_pack_willneed(struct sq_pack *p, struct sq_pack_ref *refs, size_t n);
/* A memfd holding @image (fsck checks a packed file through it): the fd,
 * or -errno. */
int sq_pack_memfd(const void *image, uint32_t len);

/* ---- adding ---- */

/* One image to add; the caller's, borrowed by sq_pack_append(). */
struct sq_pack_image {
	const uint8_t *data;	/* NULL: nothing to add for this entry */
	struct sq_pack_ref ref;	/* in: len, sum, size; out: pack, off */
	bool placed;		/* out: written, and durable */
};

/*
 * Appends the images of @imgs (@n) to the current pack (a new one past
 * 1 GiB) and fdatasyncs it: largest first, each into the first page with
 * room (the pack's last, partly used page included), none crossing a page
 * boundary, so that little of a page is left over.  Sets each image's
 * ref.pack and ref.off, and placed once it is durable.  Returns 0 or
 * -errno (-ENOSPC: nothing placed); the store must be open for writing.
 */
int sq_pack_append(struct sq_pack *p, struct sq_pack_image **imgs, size_t n);

/* ---- freeing ---- */

/* The file of @ref is gone or unpacked: punch its image out (and its page
 * when nothing else lives there).  A reference that does not match the
 * pack's bytes frees nothing.  NULL-safe; does nothing read-only. */
void sq_pack_free(struct sq_pack *p, const struct sq_pack_ref *ref);
/* The same, done by a job on @wq (a request must not wait for it); at
 * once when @wq is NULL or out of memory. */
void sq_pack_free_later(struct sq_pack *p, struct sq_wq *wq,
			const struct sq_pack_ref *ref);

/* ---- packing: what a packer needs ---- */

/*
 * Checks that BACKING can hold packed files (an xattr name this process
 * may set on @probe_fd, a file in BACKING, and hole punching) and picks
 * the name: 0, -EROFS (read-only), -EIO (no usable pack), -EPERM,
 * -EOPNOTSUPP.
 */
int sq_pack_enable(struct sq_pack *p, int probe_fd);
/* The reference's xattr name chosen by sq_pack_enable() (NULL before). */
const char *sq_pack_xname(const struct sq_pack *p);
/* Whether that is trusted.* (root's): truncating keeps setuid/setgid. */
bool sq_pack_trusted(const struct sq_pack *p);

/* ---- the index (FORMAT.md 13.7) ----
 *
 * The pack index follows names through renames and links, so that `fsck
 * --repair` finds a lost stub's image by its path.  Every writable mount
 * keeps it, packing or not: a rename through a mount that does not pack
 * moves packed files too.  Records are best effort (a repair of a copy
 * that lost the xattrs would miss them); they are synced per batch. */

/* Opens the index for appending: 0 or -errno. */
int sq_pack_index_open(struct sq_pack *p);
/* Whether records are written (the index is open).  NULL-safe. */
bool sq_pack_indexing(const struct sq_pack *p);
/* fdatasync of the index: 0 or -errno. */
int sq_pack_index_sync(struct sq_pack *p);
/* Held across a rename of a directory or of a (maybe) packed file and its
 * sq_pack_index_move(): records keep the order of the names they follow. */
void sq_pack_index_lock(struct sq_pack *p);
void sq_pack_index_unlock(struct sq_pack *p);
/* What was @from in the directory open as @from_dir (O_PATH), or below it,
 * is now @to in @to_dir.  Index lock held. */
void sq_pack_index_move(struct sq_pack *p, int from_dir, const char *from,
			int to_dir, const char *to);
/* @ref's image belongs to @name in the directory open as @fd (or, @name
 * NULL, to the file open as @fd), whose mtime is @mtime: a record of
 * where that lies in BACKING now.  Takes the index lock.  Returns whether
 * a record was written. */
bool sq_pack_index_image(struct sq_pack *p, int fd, const char *name,
			 const struct sq_pack_ref *ref,
			 const struct timespec *mtime);

#endif /* SQ_PACK_STORE_H */
