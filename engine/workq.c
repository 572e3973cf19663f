/*
 * engine/workq.c - the work queue: ready jobs in one FIFO, timed jobs in
 * another kept in due order, and threads that sleep on CLOCK_MONOTONIC
 * until either has work.
 */
#include "engine/workq.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sq_wq {
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* on CLOCK_MONOTONIC */
	/* Guarded by lock. */
	struct sq_wq_job *ready, **ready_tail;
	struct sq_wq_job *timed, *timed_last;	/* due order */
	unsigned running;	/* threads not yet returned */
	atomic_bool stop;
	/* Immutable after sq_wq_new(). */
	pthread_t *threads;
	unsigned nthreads;
	/* sq_wq_free()'s: threads signal it as they end. */
	pthread_cond_t done;
};

uint64_t sq_wq_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct timespec ts_of(uint64_t ns)
{
	return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000u),
				  .tv_nsec = (long)(ns % 1000000000u) };
}

/* The next job to run, or NULL (with *@wait_ns set to when a timed one
 * falls due, 0: none).  lock held. */
static struct sq_wq_job *next_job(struct sq_wq *q, uint64_t *wait_ns)
{
	struct sq_wq_job *j;

	*wait_ns = 0;
	if (q->timed && (atomic_load(&q->stop) ||
			 q->timed->due_ns <= sq_wq_now_ns())) {
		j = q->timed;
		q->timed = j->next;
		if (!q->timed)
			q->timed_last = NULL;
		return j;
	}
	if (q->ready) {
		j = q->ready;
		q->ready = j->next;
		if (!q->ready)
			q->ready_tail = &q->ready;
		return j;
	}
	if (q->timed)
		*wait_ns = q->timed->due_ns;
	return NULL;
}

static void *wq_main(void *arg)
{
	struct sq_wq *q = arg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		uint64_t wait_ns;
		struct sq_wq_job *j = next_job(q, &wait_ns);

		if (j) {
			pthread_mutex_unlock(&q->lock);
			j->run(j);
			pthread_mutex_lock(&q->lock);
			continue;
		}
		if (atomic_load(&q->stop))
			break;	/* and nothing is queued */
		if (wait_ns) {
			struct timespec ts = ts_of(wait_ns);

			pthread_cond_timedwait(&q->cond, &q->lock, &ts);
		} else {
			pthread_cond_wait(&q->cond, &q->lock);
		}
	}
	q->running--;
	pthread_cond_signal(&q->done);
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

int sq_wq_new(const char *name, unsigned nthreads, struct sq_wq **out)
{
	struct sq_wq *q = calloc(1, sizeof(*q));
	pthread_condattr_t ca;
	sigset_t block, old;
	int r = 0;

	*out = NULL;
	if (!q)
		return -ENOMEM;
	if (nthreads == 0)
		nthreads = 1;
	q->threads = calloc(nthreads, sizeof(*q->threads));
	if (!q->threads) {
		free(q);
		return -ENOMEM;
	}
	pthread_mutex_init(&q->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&q->cond, &ca);
	pthread_cond_init(&q->done, &ca);
	pthread_condattr_destroy(&ca);
	q->ready_tail = &q->ready;
	/*
	 * The signals that end a process go to the thread that waits for
	 * them (the front end's session loop), never to ours: a handler run
	 * here would mark the session exited while the loop sleeps on, and
	 * the daemon would hang until the next request.  The threads inherit
	 * the mask they are created with.
	 */
	sigemptyset(&block);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGHUP);
	sigaddset(&block, SIGQUIT);
	pthread_sigmask(SIG_BLOCK, &block, &old);
	for (unsigned i = 0; i < nthreads; i++) {
		r = pthread_create(&q->threads[i], NULL, wq_main, q);
		if (r)
			break;
		pthread_setname_np(q->threads[i], name);
		pthread_mutex_lock(&q->lock);
		q->running++;
		pthread_mutex_unlock(&q->lock);
		q->nthreads = i + 1;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		sq_wq_free(q, -1);
		return -r;
	}
	*out = q;
	return 0;
}

void sq_wq_push(struct sq_wq *q, struct sq_wq_job *job)
{
	job->next = NULL;
	job->due_ns = 0;
	pthread_mutex_lock(&q->lock);
	*q->ready_tail = job;
	q->ready_tail = &job->next;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

void sq_wq_push_after(struct sq_wq *q, struct sq_wq_job *job,
		      uint64_t delay_ns)
{
	struct sq_wq_job **pp;

	job->due_ns = sq_wq_now_ns() + delay_ns;
	pthread_mutex_lock(&q->lock);
	/* Most jobs of a queue wait equally long: they go last, in O(1). */
	if (!q->timed_last || q->timed_last->due_ns <= job->due_ns) {
		pp = q->timed_last ? &q->timed_last->next : &q->timed;
	} else {
		pp = &q->timed;
		while (*pp && (*pp)->due_ns <= job->due_ns)
			pp = &(*pp)->next;
	}
	job->next = *pp;
	*pp = job;
	if (!job->next)
		q->timed_last = job;
	/* Every thread may be asleep until a later due time. */
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

bool sq_wq_stopping(struct sq_wq *q)
{
	return atomic_load(&q->stop);
}

int sq_wq_free(struct sq_wq *q, int timeout_ms)
{
	if (!q)
		return 0;
	pthread_mutex_lock(&q->lock);
	atomic_store(&q->stop, true);
	pthread_cond_broadcast(&q->cond);
	if (timeout_ms >= 0) {
		uint64_t end = sq_wq_now_ns() + (uint64_t)timeout_ms * 1000000u;
		struct timespec ts = ts_of(end);

		while (q->running &&
		       pthread_cond_timedwait(&q->done, &q->lock, &ts) !=
			       ETIMEDOUT)
			;
		if (q->running) {
			/* Left behind on purpose, queue and all. */
			pthread_mutex_unlock(&q->lock);
			return -ETIMEDOUT;
		}
	}
	pthread_mutex_unlock(&q->lock);
	for (unsigned i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	pthread_cond_destroy(&q->done);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q->threads);
	free(q);
	return 0;
}
