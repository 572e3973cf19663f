/*
 * fs/cache.c - a bounded LRU cache of clean, decompressed blocks shared by
 * all files of a mount.  Dirty blocks never live here (they belong to
 * their file, see file.c), so eviction never has to write anything back
 * and never needs another lock.
 */
#include "fs/fs_i.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct centry {
	uint64_t serial, idx;
	void *buf;
	size_t bsize;
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
};

static size_t hash(const struct sq_cache *c, uint64_t serial, uint64_t idx)
{
	uint64_t h = serial * 0x9E3779B97F4A7C15ull ^ idx * 0xC2B2AE3D27D4EB4Full;

	return (size_t)(h ^ (h >> 29)) & (c->nbuckets - 1);
}

int sq_cache_new(size_t capacity, struct sq_cache **out)
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
	c->lru.prev = c->lru.next = &c->lru;
	c->capacity = capacity;
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
		free(e->buf);
		free(e);
	}
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
		memcpy(dst, (char *)e->buf + off, len);
		lru_unlink(e);
		lru_push(c, e);
	}
	pthread_mutex_unlock(&c->lock);
	return e != NULL;
}

void sq_cache_put(struct sq_cache *c, uint64_t serial, uint64_t idx,
		  void *buf, size_t bsize)
{
	struct centry *e, **pp, *victims = NULL;

	if (bsize > c->capacity) {
		free(buf);
		return;
	}
	e = malloc(sizeof(*e));
	if (!e) {
		free(buf);	/* a cache may always forget */
		return;
	}
	e->serial = serial;
	e->idx = idx;
	e->buf = buf;
	e->bsize = bsize;

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
	while (c->bytes > c->capacity) {
		struct centry *v = c->lru.prev;

		detach(c, find(c, v->serial, v->idx));
		v->hnext = victims;
		victims = v;
	}
	pthread_mutex_unlock(&c->lock);

	/* free() outside the lock: it can take a while for big buffers. */
	while (victims) {
		struct centry *n = victims->hnext;

		free(victims->buf);
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
	if (e) {
		detach(c, pp);
		buf = e->buf;
	}
	pthread_mutex_unlock(&c->lock);
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
		free(victims->buf);
		free(victims);
		victims = n;
	}
}
