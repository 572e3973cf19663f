/*
 * engine/dirty.c - the dirty-block table: a small fixed hash by block
 * index.  A file holds at most SQ_FILE_DIRTY_MAX bytes dirty (32 blocks
 * of 128 KiB), so chains stay short and a scan of all buckets is cheap.
 */
#include "engine/dirty.h"

#include <stdlib.h>

static struct sq_dirty_block **slot(const struct sq_dirty *t, uint64_t idx)
{
	struct sq_dirty_block **pp =
		(struct sq_dirty_block **)&t->tab[idx & (SQ_DIRTY_BUCKETS - 1)];

	while (*pp && (*pp)->idx != idx)
		pp = &(*pp)->next;
	return pp;
}

struct sq_dirty_block *sq_dirty_find(const struct sq_dirty *t, uint64_t idx)
{
	return *slot(t, idx);
}

void sq_dirty_add(struct sq_dirty *t, struct sq_dirty_block *b)
{
	struct sq_dirty_block **pp = slot(t, b->idx);

	b->next = NULL;
	*pp = b;
	t->n++;
}

struct sq_dirty_block *sq_dirty_remove(struct sq_dirty *t,
				       struct sq_dirty_block *b)
{
	struct sq_dirty_block **pp = slot(t, b->idx);

	if (*pp != b)
		return NULL;
	*pp = b->next;
	b->next = NULL;
	t->n--;
	return b;
}

size_t sq_dirty_count(const struct sq_dirty *t)
{
	return t->n;
}

uint64_t sq_dirty_next(const struct sq_dirty *t, uint64_t after)
{
	uint64_t best = UINT64_MAX;

	for (size_t i = 0; i < SQ_DIRTY_BUCKETS; i++)
		for (const struct sq_dirty_block *b = t->tab[i]; b; b = b->next)
			if (b->idx > after && b->idx < best)
				best = b->idx;
	return best;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

size_t sq_dirty_pending(const struct sq_dirty *t, uint64_t *idx)
{
	size_t n = 0;

	for (size_t i = 0; i < SQ_DIRTY_BUCKETS; i++)
		for (const struct sq_dirty_block *b = t->tab[i]; b; b = b->next)
			if (!b->queued)
				idx[n++] = b->idx;
	qsort(idx, n, sizeof(*idx), cmp_u64);
	return n;
}

void sq_dirty_cut(struct sq_dirty *t, uint64_t from,
		  void (*drop)(void *arg, struct sq_dirty_block *b),
		  void *arg)
{
	for (size_t i = 0; i < SQ_DIRTY_BUCKETS; i++) {
		struct sq_dirty_block **pp = &t->tab[i];

		while (*pp) {
			struct sq_dirty_block *b = *pp;

			if (b->idx < from) {
				pp = &b->next;
				continue;
			}
			*pp = b->next;
			b->next = NULL;
			t->n--;
			drop(arg, b);
		}
	}
}
