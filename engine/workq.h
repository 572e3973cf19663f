/*
 * engine/workq.h - the engine's one work queue: a few threads running jobs
 * that carry their own run function.  The compression workers, the packer
 * and the pruner are each an instance of it; anything new that runs in the
 * background (the settle loop, the statistics flusher) is a job on one.
 *
 * Ordering: jobs pushed with sq_wq_push() run in the order they were
 * pushed (with one thread, one after another; with several, they start in
 * that order).  A job pushed with sq_wq_push_after() runs no earlier than
 * its delay (CLOCK_MONOTONIC: a clock change moves nothing), timed jobs in
 * the order they fall due (equal times: in push order), and a due timed
 * job goes before ready jobs pushed after it fell due.
 *
 * Ownership: a job is the caller's memory, usually embedded in a bigger
 * struct (container_of() gets that back); the queue only links it through
 * job->next from the push until run() is called, and never touches it
 * after.  run() may free it, push it again, or push others.
 *
 * Locking: the queue's lock is a leaf (nothing blocks under it, no job
 * runs under it): push from anywhere, with any lock held.
 */
#ifndef SQ_WORKQ_H
#define SQ_WORKQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sq_wq;

struct sq_wq_job {
	void (*run)(struct sq_wq_job *job);	/* set by the caller */
	/* The queue's, from push until run(). */
	struct sq_wq_job *next;
	uint64_t due_ns;
};

#define sq_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/*
 * Starts @nthreads threads named @name (for top -H and gdb; at most 15
 * characters).  Returns 0 or -errno.
 */
int sq_wq_new(const char *name, unsigned nthreads, struct sq_wq **out);

/* Queues @job to run as soon as a thread is free. */
void sq_wq_push(struct sq_wq *q, struct sq_wq_job *job);
/* Queues @job to run @delay_ns nanoseconds from now, or later. */
void sq_wq_push_after(struct sq_wq *q, struct sq_wq_job *job,
		      uint64_t delay_ns);

/*
 * Whether sq_wq_free() has begun: jobs that re-arm themselves or wait for
 * more work should finish now instead.  Thread-safe.
 */
bool sq_wq_stopping(struct sq_wq *q);

/*
 * Stops the queue: every job queued, timed ones at once whatever their
 * delay, runs (and so does every job they push meanwhile), then the
 * threads are joined and the queue freed.  @timeout_ms < 0 waits as long
 * as that takes.  Otherwise, when the threads have not finished within
 * @timeout_ms (a job stuck in the kernel), they and the queue are left to
 * the end of the process and -ETIMEDOUT is returned.  No push may come
 * from outside the queue's own jobs once this is called.  NULL-safe.
 */
int sq_wq_free(struct sq_wq *q, int timeout_ms);

/* Nanoseconds of CLOCK_MONOTONIC: the clock sq_wq_push_after() counts on. */
uint64_t sq_wq_now_ns(void);

#endif /* SQ_WORKQ_H */
