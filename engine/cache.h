/*
 * engine/cache.h - a bounded LRU cache of clean, decompressed blocks,
 * shared by every file of a mount, and the pool of block buffers that go
 * in and out of it.
 *
 * Blocks are keyed by (serial, idx): the serial of their inode (unique
 * for the mount's lifetime, so a dead file's blocks can never be read as a
 * new one's) and the block index.  Dirty blocks never live here: they
 * belong to their file (engine/dirty.h), so eviction never writes
 * anything back.  They count against the same budget, though (@reserved):
 * the clean blocks make room for the dirty ones.
 *
 * Every function is thread-safe; the cache's locks are leaves (taken
 * under an inode's lock, never the reverse, and nothing blocks under them).
 */
#ifndef SQ_CACHE_H
#define SQ_CACHE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sq_cache;

/*
 * Holds at most @capacity minus *@reserved bytes (@reserved is read at
 * every insertion; it may change at any time, and is borrowed for the
 * cache's life).  Returns 0 or -ENOMEM.
 */
int sq_cache_new(size_t capacity, const atomic_size_t *reserved,
		 struct sq_cache **out);
/* Frees every block and idle buffer.  NULL-safe. */
void sq_cache_free(struct sq_cache *c);

/*
 * Copies @len bytes at @off of block (@serial, @idx) into @dst when cached
 * and makes it the most recently used.  Returns true on a hit.
 */
bool sq_cache_read(struct sq_cache *c, uint64_t serial, uint64_t idx,
		   size_t off, size_t len, void *dst);

/* Block buffers of @bsize bytes: every buffer that goes into the cache, or
 * comes out of it, is one of these.  get: NULL when out of memory. */
void *sq_cache_buf_get(struct sq_cache *c, size_t bsize);
void sq_cache_buf_put(struct sq_cache *c, void *buf, size_t bsize);

/*
 * Hands @buf (from sq_cache_buf_get(), @bsize bytes; owned by the cache
 * from now on) over as the clean content of block (@serial, @idx),
 * replacing any older entry, and evicts least recently used blocks until
 * the cache is within its budget again (possibly this one).  Only the first
 * @valid bytes are meaningful: the block reads as zeros past them (a small
 * file's block need not be zeroed to its end first).
 */
void sq_cache_put(struct sq_cache *c, uint64_t serial, uint64_t idx,
		  void *buf, size_t bsize, size_t valid);
/*
 * Removes block (@serial, @idx) and returns its buffer, all @bsize bytes
 * of the block in it (the caller owns it and puts it back with
 * sq_cache_buf_put()), or NULL when not cached.
 */
void *sq_cache_take(struct sq_cache *c, uint64_t serial, uint64_t idx);
/* Drops every block of @serial with index >= @from. */
void sq_cache_drop(struct sq_cache *c, uint64_t serial, uint64_t from);

/* What the cache holds and how often it answered (for the stats file). */
struct sq_cache_counters {
	size_t bytes;		/* decompressed blocks held */
	size_t capacity;
	uint64_t hits, misses;	/* sq_cache_read() calls */
};
void sq_cache_counters(struct sq_cache *c, struct sq_cache_counters *out);

#endif /* SQ_CACHE_H */
