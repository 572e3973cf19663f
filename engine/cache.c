/*
 * engine/cache.c - the block cache (cache.h): a hash of entries on one
 * LRU list, shared by all files of a mount.  Dirty blocks never live here
 * (they belong to their file, see file.c), so eviction never has to write
 * anything back and never needs another lock.  They count against the same budget,
 * though: cache_size is the memory a mount spends on blocks, so the clean
 * blocks make room for the dirty ones.
 */
#include "engine/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/*
 * Block buffers come from a pool, not straight from malloc: blocks of
 * 64 KiB and more are mapped, so memory the cache lets go goes back to the
 * kernel instead of fragmenting malloc's arenas (peak RSS of a 256 MiB fio
 * run: 130 -> 80 MiB with a 64 MiB cache), and up to POOL_IDLE_MAX bytes
 * of free buffers wait for reuse, so steady state costs no system call.
 */
#define POOL_IDLE_MAX (8u << 20)
#define POOL_MAP_MIN (64u << 10)
#define POOL_SHIFTS 32

struct centry {
	uint64_t serial, idx;
	void *buf;
	size_t bsize;
	size_t valid;			/* bytes past it read as zeros */
	struct centry *hnext;		/* hash chain */
	struct centry *prev, *next;	/* LRU list, head = most recent */
};

struct sq_cache {
	pthread_mutex_t lock;
	/* Guarded by lock. */
	struct centry **tab;
	size_t nbuckets;		/* power of two */
	struct centry lru;		/* list head (sentinel) */
	size_t bytes, capacity;
	const atomic_size_t *reserved;	/* dirty bytes, counted elsewhere */
	uint64_t hits, misses;		/* sq_cache_read()'s answers */

	pthread_mutex_t pool_lock;	/* a leaf, like lock */
	/* Guarded by pool_lock: idle buffers by log2 of their size, linked
	 * through their first bytes. */
	void *idle[POOL_SHIFTS];
	size_t idle_bytes;
};

/* log2(@bsize) when it is a power of two the pool keeps, else -1. */
static int pool_shift(size_t bsize)
{
	if (bsize < sizeof(void *) || (bsize & (bsize - 1)))
		return -1;
	return __builtin_ctzl(bsize) < POOL_SHIFTS ? __builtin_ctzl(bsize) : -1;
}

static void pool_release(void *buf, size_t bsize)
{
	if (bsize >= POOL_MAP_MIN)
		munmap(buf, bsize);
	else
		free(buf);
}

void *sq_cache_buf_get(struct sq_cache *c, size_t bsize)
{
	int s = pool_shift(bsize);
	void *p = NULL;

	if (s >= 0) {
		pthread_mutex_lock(&c->pool_lock);
		p = c->idle[s];
		if (p) {
			c->idle[s] = *(void **)p;
			c->idle_bytes -= bsize;
		}
		pthread_mutex_unlock(&c->pool_lock);
		if (p)
			return p;
	}
	if (bsize < POOL_MAP_MIN)
		return malloc(bsize);
	p = mmap(NULL, bsize, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

void sq_cache_buf_put(struct sq_cache *c, void *buf, size_t bsize)
{
	int s = pool_shift(bsize);

	if (!buf)
		return;
	if (s >= 0) {
		pthread_mutex_lock(&c->pool_lock);
		if (c->idle_bytes + bsize <= POOL_IDLE_MAX) {
			*(void **)buf = c->idle[s];
			c->idle[s] = buf;
			c->idle_bytes += bsize;
			buf = NULL;
		}
		pthread_mutex_unlock(&c->pool_lock);
	}
	if (buf)
		pool_release(buf, bsize);
}

static size_t hash(const struct sq_cache *c, uint64_t serial, uint64_t idx)
{
	uint64_t h = serial * 0x9E3779B97F4A7C15ull ^ idx * 0xC2B2AE3D27D4EB4Full;

	return (size_t)(h ^ (h >> 29)) & (c->nbuckets - 1);
}

int sq_cache_new(size_t capacity, const atomic_size_t *reserved,
		 struct sq_cache **out)
{
	struct sq_cache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->nbuckets = 4096;
	c->tab = calloc(c->nbuckets, sizeof(*c->tab));
	if (!c->tab) {
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->pool_lock, NULL);
	c->lru.prev = c->lru.next = &c->lru;
	c->capacity = capacity;
	c->reserved = reserved;
	*out = c;
	return 0;
}

static void lru_unlink(struct centry *e)
{
	e->prev->next = e->next;
	e->next->prev = e->prev;
}

static void lru_push(struct sq_cache *c, struct centry *e)
{
	e->next = c->lru.next;
	e->prev = &c->lru;
	c->lru.next->prev = e;
	c->lru.next = e;
}

static struct centry **find(struct sq_cache *c, uint64_t serial, uint64_t idx)
{
	struct centry **pp = &c->tab[hash(c, serial, idx)];

	while (*pp && ((*pp)->serial != serial || (*pp)->idx != idx))
		pp = &(*pp)->hnext;
	return pp;
}

/* Unlinks @e everywhere; caller owns it afterwards. */
static void detach(struct sq_cache *c, struct centry **pp)
{
	struct centry *e = *pp;

	*pp = e->hnext;
	lru_unlink(e);
	c->bytes -= e->bsize;
}

void sq_cache_free(struct sq_cache *c)
{
	if (!c)
		return;
	while (c->lru.next != &c->lru) {
		struct centry *e = c->lru.next;

		detach(c, find(c, e->serial, e->idx));
		pool_release(e->buf, e->bsize);
		free(e);
	}
	for (int s = 0; s < POOL_SHIFTS; s++) {
		while (c->idle[s]) {
			void *p = c->idle[s];

			c->idle[s] = *(void **)p;
			pool_release(p, (size_t)1 << s);
		}
	}
	pthread_mutex_destroy(&c->pool_lock);
	pthread_mutex_destroy(&c->lock);
	free(c->tab);
	free(c);
}

bool sq_cache_read(struct sq_cache *c, uint64_t serial, uint64_t idx,
		   size_t off, size_t len, void *dst)
{
	struct centry *e;

	pthread_mutex_lock(&c->lock);
	e = *find(c, serial, idx);
	if (e) {
		size_t have = off < e->valid ? e->valid - off : 0;

		if (have > len)
			have = len;
		memcpy(dst, (char *)e->buf + off, have);
		memset((char *)dst + have, 0, len - have);
		lru_unlink(e);
		lru_push(c, e);
		c->hits++;
	} else {
		c->misses++;
	}
	pthread_mutex_unlock(&c->lock);
	return e != NULL;
}

void sq_cache_put(struct sq_cache *c, uint64_t serial, uint64_t idx,
		  void *buf, size_t bsize, size_t valid)
{
	struct centry *e, **pp, *victims = NULL;
	size_t res, limit;

	e = bsize > c->capacity ? NULL : malloc(sizeof(*e));
	if (!e) {
		/* A cache may always forget, but never keep an older copy. */
		sq_cache_buf_put(c, buf, bsize);
		sq_cache_buf_put(c, sq_cache_take(c, serial, idx), bsize);
		return;
	}
	e->serial = serial;
	e->idx = idx;
	e->buf = buf;
	e->bsize = bsize;
	e->valid = valid < bsize ? valid : bsize;

	pthread_mutex_lock(&c->lock);
	pp = find(c, serial, idx);
	if (*pp) {
		struct centry *old = *pp;

		detach(c, pp);
		old->hnext = victims;
		victims = old;
		pp = find(c, serial, idx);
	}
	e->hnext = NULL;
	*pp = e;
	lru_push(c, e);
	c->bytes += bsize;
	res = c->reserved ? atomic_load(c->reserved) : 0;
	limit = res < c->capacity ? c->capacity - res : 0;
	while (c->bytes > limit) {
		struct centry *v = c->lru.prev;

		detach(c, find(c, v->serial, v->idx));
		v->hnext = victims;
		victims = v;
	}
	pthread_mutex_unlock(&c->lock);

	/* Freed outside the lock: munmap() takes a while. */
	while (victims) {
		struct centry *n = victims->hnext;

		sq_cache_buf_put(c, victims->buf, victims->bsize);
		free(victims);
		victims = n;
	}
}

void *sq_cache_take(struct sq_cache *c, uint64_t serial, uint64_t idx)
{
	struct centry **pp, *e;
	void *buf = NULL;

	pthread_mutex_lock(&c->lock);
	pp = find(c, serial, idx);
	e = *pp;
	if (e)
		detach(c, pp);
	pthread_mutex_unlock(&c->lock);
	if (e) {
		/* The taker gets the whole block. */
		buf = e->buf;
		memset((char *)buf + e->valid, 0, e->bsize - e->valid);
	}
	free(e);
	return buf;
}

void sq_cache_drop(struct sq_cache *c, uint64_t serial, uint64_t from)
{
	struct centry *e, *n, *victims = NULL;

	pthread_mutex_lock(&c->lock);
	for (e = c->lru.next; e != &c->lru; e = n) {
		n = e->next;
		if (e->serial != serial || e->idx < from)
			continue;
		detach(c, find(c, e->serial, e->idx));
		e->hnext = victims;
		victims = e;
	}
	pthread_mutex_unlock(&c->lock);
	while (victims) {
		n = victims->hnext;
		sq_cache_buf_put(c, victims->buf, victims->bsize);
		free(victims);
		victims = n;
	}
}

void sq_cache_counters(struct sq_cache *c, struct sq_cache_counters *out)
{
	pthread_mutex_lock(&c->lock);
	out->bytes = c->bytes;
	out->capacity = c->capacity;
	out->hits = c->hits;
	out->misses = c->misses;
	pthread_mutex_unlock(&c->lock);
}
