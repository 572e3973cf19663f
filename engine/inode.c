/*
 * engine/inode.c - the inode table: a hash of live inodes by (device,
 * inode number) under one leaf lock, and the three kinds of references
 * that keep an inode alive (inode.h).
 */
#include "engine/inode.h"

#include "engine/cache.h"
#include "engine/engine.h"
#include "engine/file.h"
#include "engine/log.h"
#include "engine/pack_store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static size_t ihash(const struct sq_fs *fs, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev;

	return (size_t)(h ^ (h >> 31)) & (fs->itable_size - 1);
}

static int itable_grow(struct sq_fs *fs)
{
	size_t nsize = fs->itable_size * 2, i;
	struct sq_inode **nt = calloc(nsize, sizeof(*nt));
	struct sq_inode **old = fs->itable;
	size_t osize = fs->itable_size;

	if (!nt)
		return -ENOMEM;
	fs->itable = nt;
	fs->itable_size = nsize;
	for (i = 0; i < osize; i++) {
		while (old[i]) {
			struct sq_inode *n = old[i];
			size_t h = ihash(fs, n->src_dev, n->src_ino);

			old[i] = n->hnext;
			n->hnext = nt[h];
			nt[h] = n;
		}
	}
	free(old);
	return 0;
}

static struct sq_inode **ifind(struct sq_fs *fs, dev_t dev, ino_t ino)
{
	struct sq_inode **pp = &fs->itable[ihash(fs, dev, ino)];

	while (*pp && ((*pp)->src_ino != ino || (*pp)->src_dev != dev))
		pp = &(*pp)->hnext;
	return pp;
}

/* Frees what outlives a dying inode (a doomed packed image), then it. */
static void inode_free(struct sq_fs *fs, struct sq_inode *i)
{
	struct stat st;

	/* Still unlinked (nothing can link an unlinked file again), and
	 * still packed: an open for writing since would have unpacked it and
	 * freed the image itself (the checksum keeps a second punch off). */
	if (i->doomed && fstatat(i->fd, "", &st, AT_EMPTY_PATH) == 0 &&
	    st.st_nlink == 0)
		sq_pack_free_later(fs->pack, fs->bg, &i->doomed_ref);
	close(i->fd);
	pthread_mutex_destroy(&i->lock);
	while (i->names) {
		struct sq_iname *n = i->names;

		i->names = n->next;
		free(n);
	}
	free(i);
}

static void take(struct sq_inode *i, enum sq_iref kind)
{
	if (kind == SQ_IREF_LOOKUP)
		i->nlookup++;
	else if (kind == SQ_IREF_OPEN)
		i->nopen++;
	else
		i->npin++;
}

/* Drops @n references of kind lookup (@lookups) or open (@opens) and frees
 * the inode when none remain.  The root lives as long as the mount. */
static void iput_refs(struct sq_fs *fs, struct sq_inode *i, uint64_t lookups,
		      unsigned opens, unsigned pins)
{
	bool dead;

	if (i == &fs->root)
		return;
	pthread_mutex_lock(&fs->itable_lock);
	i->nlookup -= lookups;
	i->nopen -= opens;
	i->npin -= pins;
	dead = i->nlookup == 0 && i->nopen == 0 && i->npin == 0;
	if (dead) {
		*ifind(fs, i->src_dev, i->src_ino) = i->hnext;
		fs->icount--;
	}
	pthread_mutex_unlock(&fs->itable_lock);
	if (dead) {
		/* No request can reach it any more: the kernel forgot it and
		 * nothing is open. */
		if (i->file) {
			pthread_mutex_lock(&i->lock);
			sq_file_close(fs, i);
			pthread_mutex_unlock(&i->lock);
		}
		/* Only a regular file has blocks, and finding them walks
		 * the whole cache. */
		if (i->type == S_IFREG)
			sq_cache_drop(fs->cache, i->serial, 0);
		inode_free(fs, i);
	}
}

void sq_inode_put(struct sq_fs *fs, struct sq_inode *i, enum sq_iref kind,
		  uint64_t n)
{
	iput_refs(fs, i, kind == SQ_IREF_LOOKUP ? n : 0,
		  kind == SQ_IREF_OPEN ? (unsigned)n : 0,
		  kind == SQ_IREF_PIN ? (unsigned)n : 0);
}

void sq_inode_hold(struct sq_fs *fs, struct sq_inode *i, enum sq_iref kind)
{
	if (i == &fs->root)
		return;
	pthread_mutex_lock(&fs->itable_lock);
	take(i, kind);
	pthread_mutex_unlock(&fs->itable_lock);
}

unsigned sq_inode_opens(struct sq_fs *fs, struct sq_inode *i)
{
	unsigned n;

	pthread_mutex_lock(&fs->itable_lock);
	n = i->nopen;
	pthread_mutex_unlock(&fs->itable_lock);
	return n;
}

int sq_inode_get(struct sq_fs *fs, int fd, const struct stat *st,
		 enum sq_iref kind, struct sq_inode **out)
{
	struct sq_inode **pp, *i;

	if (st->st_ino == fs->root.src_ino && st->st_dev == fs->root.src_dev) {
		close(fd);
		*out = &fs->root;
		return 0;
	}
	pthread_mutex_lock(&fs->itable_lock);
	pp = ifind(fs, st->st_dev, st->st_ino);
	if (*pp) {
		i = *pp;
		take(i, kind);
		pthread_mutex_unlock(&fs->itable_lock);
		close(fd);
		*out = i;
		return 0;
	}
	/* A lookup may have opened a plain file's name just before the
	 * settle loop put the container there: the unlinked plain file
	 * must not become an inode (writes to it would be lost).  Asked only
	 * once a conversion happened: it costs a stat. */
	if (S_ISREG(st->st_mode) && atomic_load(&fs->conversions)) {
		struct stat now;

		if (fstat(fd, &now) == 0 && now.st_nlink == 0) {
			pthread_mutex_unlock(&fs->itable_lock);
			close(fd);
			return -ESTALE;
		}
	}
	i = calloc(1, sizeof(*i));
	if (!i) {
		pthread_mutex_unlock(&fs->itable_lock);
		close(fd);
		return -ENOMEM;
	}
	i->fd = fd;
	i->src_dev = st->st_dev;
	i->src_ino = st->st_ino;
	i->type = st->st_mode & S_IFMT;
	i->serial = ++fs->next_serial;
	take(i, kind);
	pthread_mutex_init(&i->lock, NULL);
	i->hnext = *pp;
	*pp = i;
	fs->icount++;
	if (fs->icount > fs->itable_size * 2 && itable_grow(fs))
		sq_log(SQ_LOG_WARN, "inode table: cannot grow");
	pthread_mutex_unlock(&fs->itable_lock);
	*out = i;
	return 0;
}


struct sq_inode *sq_inode_find(struct sq_fs *fs, dev_t dev, ino_t ino,
			       enum sq_iref kind)
{
	struct sq_inode *i;

	if (ino == fs->root.src_ino && dev == fs->root.src_dev)
		return &fs->root;
	pthread_mutex_lock(&fs->itable_lock);
	i = *ifind(fs, dev, ino);
	if (i)
		take(i, kind);
	pthread_mutex_unlock(&fs->itable_lock);
	return i;
}

bool sq_inode_live(struct sq_fs *fs, dev_t dev, ino_t ino)
{
	bool r;

	pthread_mutex_lock(&fs->itable_lock);
	r = *ifind(fs, dev, ino) != NULL;
	pthread_mutex_unlock(&fs->itable_lock);
	return r;
}

int sq_itable_init(struct sq_fs *fs)
{
	struct stat st;

	if (fstat(fs->root_fd, &st))
		return -errno;
	fs->root.fd = fs->root_fd;
	fs->root.src_dev = st.st_dev;
	fs->root.src_ino = st.st_ino;
	fs->root.type = S_IFDIR;
	fs->root.nlookup = 1;
	pthread_mutex_init(&fs->root.lock, NULL);
	pthread_mutex_init(&fs->itable_lock, NULL);
	fs->itable_size = 1024;
	fs->itable = calloc(fs->itable_size, sizeof(*fs->itable));
	if (!fs->itable)
		return -ENOMEM;
	fs->next_serial = 1;
	fs->root.serial = 1;
	return 0;
}

bool sq_itable_release(struct sq_fs *fs)
{
	bool ok = true;

	/* Inodes the kernel never forgot (it skips FORGET on unmount). */
	for (size_t b = 0; fs->itable && b < fs->itable_size; b++) {
		while (fs->itable[b]) {
			struct sq_inode *i = fs->itable[b];

			fs->itable[b] = i->hnext;
			/* The workers still run and take the inode lock:
			 * closing waits for them under it. */
			pthread_mutex_lock(&i->lock);
			if (i->file) {
				int r = sq_file_close(fs, i);

				if (r) {
					ok = false;
					sq_file_report(i, -1, "storing data at "
						       "unmount failed", r);
				}
			}
			pthread_mutex_unlock(&i->lock);
			inode_free(fs, i);
		}
	}
	free(fs->itable);
	fs->itable = NULL;
	return ok;
}
