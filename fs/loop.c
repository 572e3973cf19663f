/*
 * fs/loop.c - the request loop: a fixed pool of threads reads FUSE requests
 * from /dev/fuse and handles them.
 *
 * Why not libfuse's fuse_session_loop_mt(): a request that finds every
 * thread asleep costs a wake-up, and on a virtual machine that is the
 * dearest part of a small request (profiles of a cold tar and of creating
 * small files had a third of the daemon's samples in the scheduler's
 * switch path).  Programs that walk a tree (tar, find, rm -r, du) send the
 * next request a few microseconds after our reply.  So a thread waiting
 * for a request first polls the device without sleeping, for a little
 * longer than the recent gaps between a reply and the next request (at most
 * -o spin, 1 ms by default), and catches the next request on the spot.  It
 * does so only when the daemon has a CPU to spare (the program we serve
 * needs one, every request in hand and block being compressed another) and
 * when spinning has paid lately (those gaps are short): a program that
 * reads now and then, a compression-bound copy or an idle mount spins
 * little or not at all.  A spin that finds nothing ends in a sleep.
 *
 * At most a few threads (one per CPU, 2 to 4) wait on the device, asleep
 * in poll(2) or spinning; the others wait on a condition variable until
 * one of those takes a request, so a request wakes at most those few.
 */
#include "fs/fs_i.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_THREADS 1000
#define SPIN_MIN_NS 50000

struct sq_loop {
	/* Immutable while the threads run. */
	struct sq_fs *fs;
	struct fuse_session *se;
	int fd;			/* /dev/fuse, non-blocking */
	int stopfd;		/* eventfd: readable once the session ends */
	pthread_mutex_t lock;
	pthread_cond_t cond;	/* a thread may wait on the device */
	unsigned watchers;	/* threads waiting on the device; lock */
	unsigned max_watchers;
	int64_t spin_ns;	/* 0: never spin */
	unsigned ncpu;
	/* Shared, lock-free: heuristics, a stale value costs little. */
	atomic_uint busy;	/* threads handling a request */
	atomic_llong last_done;	/* when a request was last answered, ns */
	atomic_llong gap;	/* moving average of reply-to-request gaps */
	atomic_int err;		/* first read error but the unmount's */
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Whether a CPU is free for spinning: the caller's program needs one, and
 * every request in hand and block being compressed another. */
static bool spare_cpu(struct sq_loop *l)
{
	return atomic_load(&l->busy) + sq_wq_active(l->fs) + 1 < l->ncpu;
}

static bool spin_pays(struct sq_loop *l)
{
	return l->spin_ns > 0 && atomic_load(&l->gap) < l->spin_ns / 2 &&
	       spare_cpu(l);
}

/* A request came in: fold the time since the last reply into the average
 * (a request that overlapped another counts as no gap). */
static void note_request(struct sq_loop *l)
{
	int64_t last = atomic_load(&l->last_done), g = 0, avg;

	if (last && atomic_load(&l->busy) == 0) {
		g = now_ns() - last;
		if (g < 0)
			g = 0;
		if (g > 4 * l->spin_ns)
			g = 4 * l->spin_ns;	/* one long pause is forgiven */
	}
	avg = atomic_load(&l->gap);
	atomic_store(&l->gap, avg - avg / 8 + g / 8);
}

/* Waits for a request without sleeping until one is queued, spinning stops
 * paying, or the time is up. */
static void spin(struct sq_loop *l)
{
	struct pollfd pfd = { .fd = l->fd, .events = POLLIN };
	int64_t win = 4 * atomic_load(&l->gap), end;

	/* Long enough for the gaps seen lately, no longer: the end of a
	 * burst costs little. */
	if (win < SPIN_MIN_NS)
		win = SPIN_MIN_NS;
	if (win > l->spin_ns)
		win = l->spin_ns;
	end = now_ns() + win;

	do {
		if (poll(&pfd, 1, 0) != 0 || fuse_session_exited(l->se) ||
		    !spare_cpu(l))
			break;
		/* Anything else runnable on this CPU (the program we serve,
		 * say) goes first. */
		sched_yield();
	} while (now_ns() < end);
}

static void stop_all(struct sq_loop *l)
{
	uint64_t one = 1;

	fuse_session_exit(l->se);
	pthread_mutex_lock(&l->lock);
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	/* The counter only grows: it stays readable for every watcher. */
	if (write(l->stopfd, &one, sizeof(one)) < 0) {
		/* Full: readable already. */
	}
}

/*
 * A watcher's wait for the next request: spinning while that pays, then
 * asleep in poll().  Returns as fuse_session_receive_buf(), 0 once the
 * session ends.
 */
static int watch(struct sq_loop *l, struct fuse_buf *buf)
{
	struct pollfd pfd[2] = {
		{ .fd = l->fd, .events = POLLIN },
		{ .fd = l->stopfd, .events = POLLIN },
	};
	bool spun = false, aborted = false;
	int r;

	for (;;) {
		r = fuse_session_receive_buf(l->se, buf);
		/*
		 * A read racing the unmount can take a request the kernel
		 * is ending (ECONNABORTED, and libfuse logs it); the next
		 * read then says ENODEV.  Twice in a row is a connection
		 * aborted for real (/sys/fs/fuse/connections/N/abort).
		 */
		if (r == -ECONNABORTED && !aborted) {
			aborted = true;
			continue;
		}
		if (r != -EAGAIN && r != -EINTR)
			return r;
		aborted = false;
		if (fuse_session_exited(l->se))
			return 0;
		/* Once per wait: a spin that found nothing ends in poll(). */
		if (!spun && spin_pays(l)) {
			spun = true;
			spin(l);
			continue;
		}
		if (poll(pfd, 2, -1) > 0 && pfd[1].revents)
			return 0;
	}
}

static void *loop_main(void *arg)
{
	struct sq_loop *l = arg;
	struct fuse_buf buf;
	int r;

	memset(&buf, 0, sizeof(buf));
	pthread_mutex_lock(&l->lock);
	for (;;) {
		/* A few threads watch the device, the others wait here: a
		 * request wakes at most those few, and none while one of them
		 * spins. */
		while (l->watchers >= l->max_watchers &&
		       !fuse_session_exited(l->se))
			pthread_cond_wait(&l->cond, &l->lock);
		if (fuse_session_exited(l->se))
			break;
		l->watchers++;
		pthread_mutex_unlock(&l->lock);

		r = watch(l, &buf);

		pthread_mutex_lock(&l->lock);
		/* Keep a thread on the device while we handle this request:
		 * another one may come meanwhile. */
		if (--l->watchers == 0)
			pthread_cond_signal(&l->cond);
		if (r <= 0) {
			/* 0: the session ended; -ENODEV: unmounted. */
			if (r < 0 && r != -ENODEV)
				atomic_store(&l->err, r);
			break;
		}
		pthread_mutex_unlock(&l->lock);
		note_request(l);
		atomic_fetch_add(&l->busy, 1);
		fuse_session_process_buf(l->se, &buf);
		atomic_fetch_sub(&l->busy, 1);
		atomic_store(&l->last_done, now_ns());
		pthread_mutex_lock(&l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	free(buf.mem);
	stop_all(l);
	return NULL;
}

int sq_loop_run(struct sq_fs *fs, struct fuse_session *se, unsigned nthreads,
		unsigned spin_us)
{
	struct sq_loop l;
	pthread_t *th;
	sigset_t all, old, stop_sigs;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned n = 0;
	int fl, r = 0;

	memset(&l, 0, sizeof(l));
	l.fs = fs;
	l.se = se;
	l.fd = fuse_session_fd(se);
	l.spin_ns = (int64_t)spin_us * 1000;
	l.ncpu = ncpu > 0 ? (unsigned)ncpu : 1;
	l.max_watchers = l.ncpu < 2 ? 2 : l.ncpu > 4 ? 4 : l.ncpu;
	if (nthreads == 0)
		nthreads = 1;
	if (nthreads > LOOP_MAX_THREADS)
		nthreads = LOOP_MAX_THREADS;
	fl = fcntl(l.fd, F_GETFL);
	if (fl < 0 || fcntl(l.fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	th = calloc(nthreads, sizeof(*th));
	if (!th)
		return -ENOMEM;
	l.stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l.stopfd < 0) {
		r = -errno;
		free(th);
		(void)fcntl(l.fd, F_SETFL, fl);
		return r;
	}
	pthread_mutex_init(&l.lock, NULL);
	pthread_cond_init(&l.cond, NULL);
	/* Signals (libfuse's handlers end the session) go to this thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (; n < nthreads; n++)
		if (pthread_create(&th[n], NULL, loop_main, &l))
			break;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (n == 0) {
		r = -EAGAIN;
		goto out;
	}
	/* Until a thread sees the unmount or a signal ends the session
	 * (libfuse's handler); the signals are let in only while waiting,
	 * so that none is lost between the test and the wait. */
	sigemptyset(&stop_sigs);
	sigaddset(&stop_sigs, SIGHUP);
	sigaddset(&stop_sigs, SIGINT);
	sigaddset(&stop_sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &stop_sigs, &old);
	while (!fuse_session_exited(se)) {
		struct pollfd pfd = { .fd = l.stopfd, .events = POLLIN };
		/* A thread that does not block them (a compression worker)
		 * may take the signal instead: look again now and then. */
		struct timespec tick = { .tv_sec = 1 };

		(void)ppoll(&pfd, 1, &tick, &old);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	stop_all(&l);
	for (unsigned k = 0; k < n; k++)
		pthread_join(th[k], NULL);
	r = atomic_load(&l.err);
out:
	pthread_mutex_destroy(&l.lock);
	pthread_cond_destroy(&l.cond);
	close(l.stopfd);
	free(th);
	(void)fcntl(l.fd, F_SETFL, fl);
	fuse_session_reset(se);
	return r;
}
