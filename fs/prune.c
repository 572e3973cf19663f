/*
 * fs/prune.c - keeps the inodes the kernel remembers within the daemon's
 * open-file limit.
 *
 * Every inode the kernel holds costs one O_PATH fd here (fs/ops.c), and
 * the kernel forgets inodes only under memory pressure: without help a
 * tree of more files than RLIMIT_NOFILE (20,000 in some containers, 1,024
 * in others) would make lookups fail with EMFILE once enough of it was
 * walked.  When the table passes its budget, a thread asks the kernel to
 * drop the dentries of the least recently looked-up inodes that nothing
 * has open; FUSE inodes are evicted with their last dentry, so the kernel
 * sends FORGET and their fds close.  The kernel looks them up again when
 * they are used.
 *
 * A work queue of its own (engine/workq.h), because the notification
 * must not be sent from a request on the same parent or inode (libfuse's
 * rule), no lock is held while sending it, and it may wait in the kernel
 * (it must not hold up the packer meanwhile).
 */
#include "fs/fs_i.h"

#include "engine/log.h"
#include "engine/workq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* fds kept for everything else: containers of open files, directory
 * streams, the backing root, libfuse, logs. */
#define PRUNE_RESERVE 256
#define PRUNE_MIN_BUDGET 64

#define PRUNE_EVERY_NS 1000000000ull

struct sq_prune {
	/* Immutable after sq_prune_start(). */
	struct sq_mount *m;
	struct sq_wq *wq;	/* one thread: its jobs never overlap */
	struct sq_wq_job tick;	/* every PRUNE_EVERY, re-armed by itself */
	struct sq_wq_job kick;	/* a pass now: the table is over budget */
	struct sq_wq_job send;	/* sends the invalidations queued */

	pthread_mutex_t lock;	/* a leaf */
	/* Guarded by lock. */
	bool kick_queued, send_queued;
	struct inval *inv;	/* page ranges to drop, in order */
	size_t ninv, capinv;
};

/* A range of a file's page cache for the kernel to drop. */
struct inval {
	fuse_ino_t ino;
	off_t off, len;
};

/* One name to drop: the names of one inode are consecutive. */
struct stale_name {
	fuse_ino_t parent;
	char *name;
};

/* Names kept per inode: the kernel holds a dentry for each name it
 * looked a file up by, and forgets the inode only once all are gone.  A
 * file with more links than this, all looked up, may stay until the
 * kernel drops the rest itself. */
#define PRUNE_NAMES_MAX 8

/* Inodes the table may hold: 3/4 of what the fd limit leaves. */
static size_t budget_now(void)
{
	struct rlimit rl;
	size_t n;

	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > (rlim_t)(SIZE_MAX / 4))
		return SIZE_MAX;
	n = rl.rlim_cur > PRUNE_RESERVE + PRUNE_MIN_BUDGET ?
		    (size_t)rl.rlim_cur - PRUNE_RESERVE : PRUNE_MIN_BUDGET;
	n = n / 4 * 3;
	return n > PRUNE_MIN_BUDGET ? n : PRUNE_MIN_BUDGET;
}

static fuse_ino_t node_id(struct sq_fs *fs, struct sq_inode *i)
{
	return i == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)i;
}

/* The link to (@parent, @name) in @i's list, or to its end.  itable_lock
 * held. */
static struct sq_iname **name_find(struct sq_inode *i, fuse_ino_t parent,
				   const char *name)
{
	struct sq_iname **pp = &i->names;

	while (*pp && ((*pp)->parent != parent || strcmp((*pp)->name, name)))
		pp = &(*pp)->next;
	return pp;
}

static struct sq_iname *name_new(fuse_ino_t parent, const char *name)
{
	size_t len = strlen(name) + 1;
	struct sq_iname *n = malloc(sizeof(*n) + len);

	if (n) {
		n->parent = parent;
		memcpy(n->name, name, len);
	}
	return n;
}

/* Puts (@parent, @name) first in @i's names.  itable_lock held. */
static void name_add(struct sq_inode *i, fuse_ino_t parent, const char *name)
{
	struct sq_iname **pp = name_find(i, parent, name), *n = *pp;

	if (n == i->names && n)
		return;		/* the usual case: looked up by it again */
	if (n) {
		*pp = n->next;
	} else {
		/* Without a name the inode is not pruned: no harm. */
		n = name_new(parent, name);
		if (!n)
			return;
		i->nnames++;
	}
	n->next = i->names;
	i->names = n;
	if (i->nnames > PRUNE_NAMES_MAX) {
		struct sq_iname **last = &i->names;

		while ((*last)->next)
			last = &(*last)->next;
		free(*last);
		*last = NULL;
		i->nnames--;
	}
}

void sq_prune_note(struct sq_mount *m, struct sq_inode *i,
		   struct sq_inode *parent, const char *name)
{
	struct sq_fs *fs = &m->fs;
	bool over;

	if (i == &fs->root)
		return;
	pthread_mutex_lock(&fs->itable_lock);
	i->used = ++fs->use_tick;
	name_add(i, node_id(fs, parent), name);
	over = fs->icount > atomic_load(&fs->inode_budget);
	pthread_mutex_unlock(&fs->itable_lock);
	if (over && m->prune) {
		struct sq_prune *p = m->prune;
		bool push;

		pthread_mutex_lock(&p->lock);
		push = !p->kick_queued;
		p->kick_queued = true;
		pthread_mutex_unlock(&p->lock);
		if (push)
			sq_wq_push(p->wq, &p->kick);
	}
}

void sq_prune_rename(struct sq_mount *m, struct sq_inode *i,
		     struct sq_inode *parent, const char *name,
		     struct sq_inode *nparent, const char *nname)
{
	struct sq_fs *fs = &m->fs;
	struct sq_iname **pp, *n;

	if (i == &fs->root)
		return;
	pthread_mutex_lock(&fs->itable_lock);
	pp = name_find(i, node_id(fs, parent), name);
	n = *pp;
	if (n) {
		*pp = n->next;
		i->nnames--;
		free(n);
	}
	/* The kernel moved its dentry along: the new name is the one to
	 * drop now (rsync and tar make files under a temporary name). */
	if (nname)
		name_add(i, node_id(fs, nparent), nname);
	pthread_mutex_unlock(&fs->itable_lock);
}

struct lru_entry {
	uint64_t used;
	struct sq_inode *ino;
};

static int cmp_used(const void *a, const void *b)
{
	const struct lru_entry *x = a, *y = b;

	return x->used < y->used ? -1 : x->used > y->used;
}

/* One pass: back down to 3/4 of the budget, oldest first. */
static void prune_pass(struct sq_prune *p, size_t budget)
{
	struct sq_fs *fs = &p->m->fs;
	struct lru_entry *c = NULL;
	struct stale_name *v = NULL;
	size_t n = 0, nv = 0, want, sent = 0, count;

	pthread_mutex_lock(&fs->itable_lock);
	count = fs->icount;
	if (fs->icount <= budget)
		goto unlock;
	want = fs->icount - budget / 4 * 3;
	c = malloc(fs->icount * sizeof(*c));
	if (!c)
		goto unlock;
	for (size_t b = 0; b < fs->itable_size; b++) {
		for (struct sq_inode *i = fs->itable[b]; i; i = i->hnext) {
			/* Open files stay; so do directories: dropping one
			 * would drop its whole subtree at once, and with it
			 * anything mounted below it. */
			if (i->nopen || !i->names || i->type == S_IFDIR)
				continue;
			c[n].used = i->used;
			c[n].ino = i;
			n++;
		}
	}
	qsort(c, n, sizeof(*c), cmp_used);
	if (n > want)
		n = want;
	v = malloc(n * PRUNE_NAMES_MAX * sizeof(*v) + 1);
	if (!v)
		n = 0;
	for (size_t k = 0; k < n; k++) {
		for (struct sq_iname *in = c[k].ino->names; in; in = in->next) {
			v[nv].parent = in->parent;
			v[nv].name = strdup(in->name);
			nv++;
		}
	}
unlock:
	pthread_mutex_unlock(&fs->itable_lock);
	free(c);
	for (size_t k = 0; k < nv; k++) {
		bool stop = sq_wq_stopping(p->wq);

		/* The names are hints: a stale one (renamed, unlinked, its
		 * parent forgotten) makes the kernel answer ENOENT. */
		if (!stop && v[k].name &&
		    fuse_lowlevel_notify_inval_entry(p->m->se, v[k].parent,
						     v[k].name,
						     strlen(v[k].name)) == 0)
			sent++;
		free(v[k].name);
	}
	free(v);
	if (n)
		sq_log(SQ_LOG_DEBUG, "prune: asked the kernel to forget %zu of "
		       "%zu inodes, %zu of %zu names (budget %zu)", n, count,
		       sent, nv, budget);
}

void sq_prune_inval_later(struct sq_mount *m, fuse_ino_t ino, off_t off,
			  off_t len)
{
	struct sq_prune *p = m->prune;
	bool push;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	if (p->ninv == p->capinv) {
		size_t cap = p->capinv ? 2 * p->capinv : 16;
		struct inval *n = realloc(p->inv, cap * sizeof(*n));

		if (!n) {
			/* The whole file, once the list has room again. */
			pthread_mutex_unlock(&p->lock);
			return;
		}
		p->inv = n;
		p->capinv = cap;
	}
	p->inv[p->ninv++] = (struct inval){ ino, off, len };
	push = !p->send_queued;
	p->send_queued = true;
	pthread_mutex_unlock(&p->lock);
	if (push)
		sq_wq_push(p->wq, &p->send);
}

/* Sends what sq_prune_inval_later() queued, with no lock held (the kernel
 * waits for pages a request may hold locked). */
static void send_run(struct sq_wq_job *job)
{
	struct sq_prune *p = sq_container_of(job, struct sq_prune, send);
	struct inval *v;
	size_t n;

	pthread_mutex_lock(&p->lock);
	p->send_queued = false;
	v = p->inv;
	n = p->ninv;
	p->inv = NULL;
	p->ninv = p->capinv = 0;
	pthread_mutex_unlock(&p->lock);
	for (size_t k = 0; k < n && !sq_wq_stopping(p->wq); k++)
		fuse_lowlevel_notify_inval_inode(p->m->se, v[k].ino, v[k].off,
						 v[k].len);
	free(v);
}

static void pass(struct sq_prune *p)
{
	/* The limit can change under us (prlimit): read it again. */
	size_t budget = budget_now();

	atomic_store(&p->m->fs.inode_budget, budget);
	prune_pass(p, budget);
}

static void kick_run(struct sq_wq_job *job)
{
	struct sq_prune *p = sq_container_of(job, struct sq_prune, kick);

	pthread_mutex_lock(&p->lock);
	p->kick_queued = false;
	pthread_mutex_unlock(&p->lock);
	if (!sq_wq_stopping(p->wq))
		pass(p);
}

static void tick_run(struct sq_wq_job *job)
{
	struct sq_prune *p = sq_container_of(job, struct sq_prune, tick);

	if (sq_wq_stopping(p->wq))
		return;
	pass(p);
	sq_wq_push_after(p->wq, &p->tick, PRUNE_EVERY_NS);
}

int sq_prune_start(struct sq_mount *m)
{
	struct sq_prune *p = calloc(1, sizeof(*p));
	int r;

	if (!p)
		return -ENOMEM;
	p->m = m;
	pthread_mutex_init(&p->lock, NULL);
	p->tick.run = tick_run;
	p->kick.run = kick_run;
	p->send.run = send_run;
	atomic_store(&m->fs.inode_budget, budget_now());
	r = sq_wq_new("sq-prune", 1, &p->wq);
	if (r) {
		pthread_mutex_destroy(&p->lock);
		free(p);
		return r;
	}
	sq_wq_push_after(p->wq, &p->tick, PRUNE_EVERY_NS);
	m->prune = p;
	return 0;
}

void sq_prune_stop(struct sq_mount *m)
{
	struct sq_prune *p = m->prune;

	if (!p)
		return;
	m->prune = NULL;
	/*
	 * A notification waits in the kernel for the parent directory's
	 * lock, which a request this daemon will no longer answer (the loop
	 * ended on a signal) may hold.  Do not hang the exit on it: leave
	 * the thread (and its state) to the end of the process.
	 */
	if (sq_wq_free(p->wq, 5000)) {
		sq_log(SQ_LOG_WARN, "prune: thread stuck in the kernel, "
		       "left behind");
		return;
	}
	pthread_mutex_destroy(&p->lock);
	free(p->inv);
	free(p);
}
