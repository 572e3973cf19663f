/*
 * fs/worker.c - the compression workers.  A FUSE thread that completes a
 * block hands it here and answers the application at once; a worker
 * compresses it (outside any lock) and stores it.  With one worker per
 * core, compression runs in parallel with the application's I/O and with
 * other files' requests.
 */
#include "fs/fs_i.h"

#include <errno.h>
#include <stdlib.h>

struct sq_wq {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* Guarded by lock. */
	struct sq_job *head, **tail;
	bool stop;
	/* Immutable after sq_wq_start(). */
	struct sq_fs *fs;
	pthread_t *threads;
	unsigned nthreads;
};

static void *worker_main(void *arg)
{
	struct sq_wq *q = arg;

	for (;;) {
		struct sq_job *j;

		pthread_mutex_lock(&q->lock);
		while (!q->head && !q->stop)
			pthread_cond_wait(&q->cond, &q->lock);
		j = q->head;
		if (j) {
			q->head = j->next;
			if (!q->head)
				q->tail = &q->head;
		}
		pthread_mutex_unlock(&q->lock);
		if (!j)
			return NULL;	/* stopping, queue empty */
		sq_file_run_job(q->fs, j);
	}
}

int sq_wq_start(struct sq_fs *fs, unsigned nthreads)
{
	struct sq_wq *q = calloc(1, sizeof(*q));
	unsigned i;

	if (!q)
		return -ENOMEM;
	q->threads = calloc(nthreads, sizeof(*q->threads));
	if (!q->threads) {
		free(q);
		return -ENOMEM;
	}
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	q->tail = &q->head;
	q->fs = fs;
	for (i = 0; i < nthreads; i++) {
		int r = pthread_create(&q->threads[i], NULL, worker_main, q);

		if (r) {
			q->nthreads = i;
			fs->wq = q;
			sq_wq_stop(fs);
			return -r;
		}
	}
	q->nthreads = nthreads;
	fs->wq = q;
	return 0;
}

void sq_wq_push(struct sq_fs *fs, struct sq_job *j)
{
	struct sq_wq *q = fs->wq;

	j->next = NULL;
	pthread_mutex_lock(&q->lock);
	*q->tail = j;
	q->tail = &j->next;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

void sq_wq_stop(struct sq_fs *fs)
{
	struct sq_wq *q = fs->wq;
	unsigned i;

	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	for (i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q->threads);
	free(q);
	fs->wq = NULL;
}
