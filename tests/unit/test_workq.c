/*
 * tests/unit/test_workq.c - the work queue (engine/workq.h): FIFO order,
 * timed jobs (not before their delay, in due order, ahead of later ready
 * jobs), sq_wq_free() running everything left, timed or pushed meanwhile,
 * concurrent threads, and a free that times out on a stuck job.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/workq.h"

#define MS UINT64_C(1000000)
#define SEC (1000 * MS)
/* Waits that only a broken queue runs into (no timing is asserted near
 * them: a loaded machine is slow, not wrong). */
#define LONG_WAIT (30 * SEC)

/* What the jobs of one test share: the order they ran in. */
struct log {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int order[256];
	uint64_t when[256];
	bool stopping[256];
	size_t n;
	struct sq_wq *q;
	/* The gate: a job that blocks the queue's thread until opened. */
	bool gate_in, gate_open;
};

struct tjob {
	struct sq_wq_job job;
	struct log *log;
	int id;
	/* Pushed by this one when it runs (NULL: none), after @then_ns
	 * (0: a ready push). */
	struct tjob *then;
	uint64_t then_ns;
};

static void log_init(struct log *l, struct sq_wq *q)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	l->q = q;
}

static void log_fini(struct log *l)
{
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
}

static struct timespec deadline(uint64_t ns)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ns += (uint64_t)ts.tv_nsec;
	ts.tv_sec += (time_t)(ns / SEC);
	ts.tv_nsec = (long)(ns % SEC);
	return ts;
}

static void run_log(struct sq_wq_job *job)
{
	struct tjob *j = sq_container_of(job, struct tjob, job);
	struct log *l = j->log;

	pthread_mutex_lock(&l->lock);
	assert_true(l->n < 256);
	l->order[l->n] = j->id;
	l->when[l->n] = sq_wq_now_ns();
	l->stopping[l->n] = sq_wq_stopping(l->q);
	l->n++;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	if (j->then) {
		if (j->then_ns)
			sq_wq_push_after(l->q, &j->then->job, j->then_ns);
		else
			sq_wq_push(l->q, &j->then->job);
	}
}

/* Blocks its thread until the test opens the gate. */
static void run_gate(struct sq_wq_job *job)
{
	struct tjob *j = sq_container_of(job, struct tjob, job);
	struct log *l = j->log;
	struct timespec end = deadline(LONG_WAIT);

	pthread_mutex_lock(&l->lock);
	l->gate_in = true;
	pthread_cond_broadcast(&l->cond);
	while (!l->gate_open &&
	       pthread_cond_timedwait(&l->cond, &l->lock, &end) != ETIMEDOUT)
		;
	assert_true(l->gate_open);
	pthread_mutex_unlock(&l->lock);
}

static void tjob_init(struct tjob *j, struct log *l, int id)
{
	memset(j, 0, sizeof(*j));
	j->job.run = run_log;
	j->log = l;
	j->id = id;
}

/* Waits for the gate job to hold the queue's thread. */
static void gate_wait_in(struct log *l)
{
	struct timespec end = deadline(LONG_WAIT);

	pthread_mutex_lock(&l->lock);
	while (!l->gate_in &&
	       pthread_cond_timedwait(&l->cond, &l->lock, &end) != ETIMEDOUT)
		;
	assert_true(l->gate_in);
	pthread_mutex_unlock(&l->lock);
}

static void gate_open(struct log *l)
{
	pthread_mutex_lock(&l->lock);
	l->gate_open = true;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
}

/* Waits until @n jobs have run. */
static void wait_ran(struct log *l, size_t n)
{
	struct timespec end = deadline(LONG_WAIT);

	pthread_mutex_lock(&l->lock);
	while (l->n < n &&
	       pthread_cond_timedwait(&l->cond, &l->lock, &end) != ETIMEDOUT)
		;
	assert_int_equal(l->n, n);
	pthread_mutex_unlock(&l->lock);
}

static size_t ran(struct log *l)
{
	size_t n;

	pthread_mutex_lock(&l->lock);
	n = l->n;
	pthread_mutex_unlock(&l->lock);
	return n;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / SEC),
			       .tv_nsec = (long)(ns % SEC) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void test_fifo(void **state)
{
	struct sq_wq *q;
	struct log l;
	struct tjob gate, j[100];

	(void)state;
	assert_int_equal(sq_wq_new("sq-test", 1, &q), 0);
	log_init(&l, q);
	/* All 100 queued before any runs, so the order is the queue's. */
	tjob_init(&gate, &l, -1);
	gate.job.run = run_gate;
	sq_wq_push(q, &gate.job);
	gate_wait_in(&l);
	for (int k = 0; k < 100; k++) {
		tjob_init(&j[k], &l, k);
		sq_wq_push(q, &j[k].job);
	}
	assert_int_equal(ran(&l), 0);
	gate_open(&l);
	wait_ran(&l, 100);
	for (int k = 0; k < 100; k++) {
		assert_int_equal(l.order[k], k);
		assert_false(l.stopping[k]);
	}
	/* And one at a time, pushed while the thread is idle. */
	for (int k = 0; k < 20; k++) {
		tjob_init(&j[k], &l, 1000 + k);
		sq_wq_push(q, &j[k].job);
	}
	wait_ran(&l, 120);
	for (int k = 0; k < 20; k++)
		assert_int_equal(l.order[100 + k], 1000 + k);
	assert_int_equal(sq_wq_free(q, -1), 0);
	log_fini(&l);
}

static void test_timed(void **state)
{
	/* Pushed in this order; they must run by due time, equal delays
	 * in push order. */
	static const uint64_t delay[] = { 800 * MS, 200 * MS, 500 * MS,
					  200 * MS, 0, 500 * MS };
	static const int want[] = { 4, 1, 3, 2, 5, 0 };
	struct sq_wq *q;
	struct log l;
	struct tjob gate, j[6];
	uint64_t pushed[6];

	(void)state;
	assert_int_equal(sq_wq_new("sq-test", 1, &q), 0);
	log_init(&l, q);
	/* None runs before all are queued, however slow the pushes. */
	tjob_init(&gate, &l, -1);
	gate.job.run = run_gate;
	sq_wq_push(q, &gate.job);
	gate_wait_in(&l);
	for (int k = 0; k < 6; k++) {
		tjob_init(&j[k], &l, k);
		pushed[k] = sq_wq_now_ns();
		sq_wq_push_after(q, &j[k].job, delay[k]);
	}
	gate_open(&l);
	wait_ran(&l, 6);
	for (int k = 0; k < 6; k++) {
		int id = l.order[k];

		assert_int_equal(id, want[k]);
		/* Never before its delay. */
		assert_true(l.when[k] >= pushed[id] + delay[id]);
		assert_false(l.stopping[k]);
	}
	assert_int_equal(sq_wq_free(q, -1), 0);
	log_fini(&l);
}

static void test_timed_wakes(void **state)
{
	struct sq_wq *q;
	struct log l;
	struct tjob t, far, soon, r;
	uint64_t t0, t1;

	(void)state;
	assert_int_equal(sq_wq_new("sq-test", 2, &q), 0);
	log_init(&l, q);
	/* A timed job alone on an idle queue runs, not before its time. */
	tjob_init(&t, &l, 1);
	t0 = sq_wq_now_ns();
	sq_wq_push_after(q, &t.job, 300 * MS);
	wait_ran(&l, 1);
	assert_true(l.when[0] >= t0 + 300 * MS);

	/* With the threads asleep until a job a minute away, a sooner one
	 * still runs in its time (LONG_WAIT is half a minute). */
	tjob_init(&far, &l, 2);
	sq_wq_push_after(q, &far.job, 60 * SEC);
	tjob_init(&soon, &l, 3);
	t1 = sq_wq_now_ns();
	sq_wq_push_after(q, &soon.job, 300 * MS);
	wait_ran(&l, 2);
	assert_int_equal(l.order[1], 3);
	assert_true(l.when[1] >= t1 + 300 * MS);

	/* A timed job that is not due holds up no ready job. */
	tjob_init(&r, &l, 4);
	sq_wq_push(q, &r.job);
	wait_ran(&l, 3);
	assert_int_equal(l.order[2], 4);

	/* The free runs the one a minute away at once. */
	assert_int_equal(sq_wq_free(q, -1), 0);
	assert_int_equal(l.n, 4);
	assert_int_equal(l.order[3], 2);
	assert_true(l.stopping[3]);
	assert_true(l.when[3] < t1 + 60 * SEC);
	log_fini(&l);
}

static void test_due_before_ready(void **state)
{
	struct sq_wq *q;
	struct log l;
	struct tjob gate, t, t2, r[3];

	(void)state;
	assert_int_equal(sq_wq_new("sq-test", 1, &q), 0);
	log_init(&l, q);
	tjob_init(&gate, &l, -1);
	gate.job.run = run_gate;
	sq_wq_push(q, &gate.job);
	gate_wait_in(&l);
	/* t falls due while the thread is busy; t2 will not be due yet. */
	tjob_init(&t, &l, 100);
	sq_wq_push_after(q, &t.job, 20 * MS);
	tjob_init(&t2, &l, 200);
	sq_wq_push_after(q, &t2.job, 300 * SEC);
	sleep_ns(200 * MS);
	for (int k = 0; k < 3; k++) {
		tjob_init(&r[k], &l, k);
		sq_wq_push(q, &r[k].job);
	}
	gate_open(&l);
	wait_ran(&l, 4);
	assert_int_equal(l.order[0], 100);
	assert_int_equal(l.order[1], 0);
	assert_int_equal(l.order[2], 1);
	assert_int_equal(l.order[3], 2);
	/* t2 still waits; the free runs it at once (see test_free_runs). */
	assert_int_equal(ran(&l), 4);
	assert_int_equal(sq_wq_free(q, -1), 0);
	assert_int_equal(l.n, 5);
	assert_int_equal(l.order[4], 200);
	log_fini(&l);
}

/* Runs until the queue stops: a job that waits for more work. */
static void run_until_stop(struct sq_wq_job *job)
{
	struct tjob *j = sq_container_of(job, struct tjob, job);
	uint64_t end = sq_wq_now_ns() + LONG_WAIT;

	pthread_mutex_lock(&j->log->lock);
	j->log->gate_in = true;
	pthread_cond_broadcast(&j->log->cond);
	pthread_mutex_unlock(&j->log->lock);
	while (!sq_wq_stopping(j->log->q) && sq_wq_now_ns() < end)
		sleep_ns(1 * MS);
	run_log(job);
}

static void test_free_runs(void **state)
{
	struct sq_wq *q;
	struct log l;
	struct tjob first, r[5], hour, p, pq, pr, ps;
	bool seen[6] = { false };
	uint64_t t0;

	(void)state;
	assert_int_equal(sq_wq_free(NULL, -1), 0);
	assert_int_equal(sq_wq_free(NULL, 10), 0);
	assert_int_equal(sq_wq_new("sq-test", 1, &q), 0);
	log_init(&l, q);
	assert_false(sq_wq_stopping(q));
	/* The thread is busy until the free begins: everything after runs
	 * within the free. */
	tjob_init(&first, &l, 50);
	first.job.run = run_until_stop;
	sq_wq_push(q, &first.job);
	gate_wait_in(&l);
	for (int k = 0; k < 5; k++) {
		tjob_init(&r[k], &l, k);
		sq_wq_push(q, &r[k].job);
	}
	tjob_init(&hour, &l, 10);
	sq_wq_push_after(q, &hour.job, 3600 * SEC);
	/* p pushes pq, which pushes pr an hour off, which pushes ps. */
	tjob_init(&p, &l, 20);
	tjob_init(&pq, &l, 21);
	tjob_init(&pr, &l, 22);
	tjob_init(&ps, &l, 23);
	p.then = &pq;
	pq.then = &pr;
	pq.then_ns = 3600 * SEC;
	pr.then = &ps;
	sq_wq_push(q, &p.job);

	t0 = sq_wq_now_ns();
	assert_int_equal(sq_wq_free(q, -1), 0);
	/* Not an hour: at once (loosely: a loaded machine is slow). */
	assert_true(sq_wq_now_ns() - t0 < 60 * SEC);
	assert_int_equal(l.n, 1 + 5 + 1 + 4);
	assert_int_equal(l.order[0], 50);
	for (size_t k = 0; k < l.n; k++) {
		int id = l.order[k];

		/* Every job run within the free sees it stopping. */
		assert_true(l.stopping[k]);
		if (id < 5) {
			assert_false(seen[id]);
			seen[id] = true;
		}
	}
	for (int k = 0; k < 5; k++)
		assert_true(seen[k]);
	/* The ready ones kept their order; the chain ran in its order. */
	{
		int last_r = -1, last_p = 19;
		size_t nhour = 0;

		for (size_t k = 0; k < l.n; k++) {
			int id = l.order[k];

			if (id < 5) {
				assert_true(id > last_r);
				last_r = id;
			} else if (id >= 20 && id < 50) {
				assert_int_equal(id, last_p + 1);
				last_p = id;
			} else if (id == 10) {
				nhour++;
			}
		}
		assert_int_equal(last_p, 23);
		assert_int_equal(nhour, 1);
	}
	log_fini(&l);
}

/* A job that re-arms itself @left times, then frees itself. */
struct rearm {
	struct sq_wq_job job;
	struct log *log;
	int left;
};

static void run_rearm(struct sq_wq_job *job)
{
	struct rearm *a = sq_container_of(job, struct rearm, job);
	struct log *l = a->log;

	pthread_mutex_lock(&l->lock);
	l->order[l->n] = a->left;
	l->when[l->n++] = sq_wq_now_ns();
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	if (a->left-- > 0)
		sq_wq_push_after(l->q, &a->job, 20 * MS);
	else
		free(a);	/* the queue never touches it again */
}

static void test_rearm(void **state)
{
	struct sq_wq *q;
	struct log l;
	struct rearm *a = malloc(sizeof(*a));

	(void)state;
	assert_non_null(a);
	assert_int_equal(sq_wq_new("sq-test", 2, &q), 0);
	log_init(&l, q);
	a->job.run = run_rearm;
	a->log = &l;
	a->left = 3;
	sq_wq_push(q, &a->job);
	wait_ran(&l, 4);
	for (int k = 0; k < 4; k++)
		assert_int_equal(l.order[k], 3 - k);
	for (int k = 1; k < 4; k++)
		assert_true(l.when[k] >= l.when[k - 1] + 20 * MS);
	assert_int_equal(sq_wq_free(q, -1), 0);
	log_fini(&l);
}

/* Four jobs that each wait for all four: they only finish when four
 * threads run them at once. */
struct meet {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int arrived, left, ok;
	bool broken;
};

struct mjob {
	struct sq_wq_job job;
	struct meet *m;
};

static void run_meet(struct sq_wq_job *job)
{
	struct mjob *j = sq_container_of(job, struct mjob, job);
	struct meet *m = j->m;
	struct timespec end = deadline(10 * SEC);

	pthread_mutex_lock(&m->lock);
	m->arrived++;
	pthread_cond_broadcast(&m->cond);
	while (m->arrived < 4 && !m->broken &&
	       pthread_cond_timedwait(&m->cond, &m->lock, &end) != ETIMEDOUT)
		;
	if (m->arrived >= 4)
		m->ok++;
	else
		m->broken = true;	/* the others need not wait too */
	m->left++;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

static void test_threads(void **state)
{
	struct sq_wq *q;
	struct meet m;
	struct mjob j[4];
	struct timespec end;

	(void)state;
	memset(&m, 0, sizeof(m));
	pthread_mutex_init(&m.lock, NULL);
	pthread_cond_init(&m.cond, NULL);
	assert_int_equal(sq_wq_new("sq-test", 4, &q), 0);
	for (int k = 0; k < 4; k++) {
		j[k].job.run = run_meet;
		j[k].m = &m;
		sq_wq_push(q, &j[k].job);
	}
	end = deadline(LONG_WAIT);
	pthread_mutex_lock(&m.lock);
	while (m.left < 4 &&
	       pthread_cond_timedwait(&m.cond, &m.lock, &end) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&m.lock);
	assert_int_equal(m.left, 4);
	assert_int_equal(m.ok, 4);
	assert_int_equal(sq_wq_free(q, -1), 0);
	pthread_cond_destroy(&m.cond);
	pthread_mutex_destroy(&m.lock);
}

/* The stuck job of test_free_timeout, and the queue that free leaves
 * behind: kept here, so that the leak checker sees them reachable. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool in, release, out, stopping;
	struct sq_wq *q;
	struct sq_wq_job job;
} stuck = { .lock = PTHREAD_MUTEX_INITIALIZER,
	    .cond = PTHREAD_COND_INITIALIZER };

static void run_stuck(struct sq_wq_job *job)
{
	struct timespec end = deadline(LONG_WAIT);

	(void)job;
	pthread_mutex_lock(&stuck.lock);
	stuck.in = true;
	pthread_cond_broadcast(&stuck.cond);
	while (!stuck.release &&
	       pthread_cond_timedwait(&stuck.cond, &stuck.lock, &end) !=
		       ETIMEDOUT)
		;
	stuck.stopping = sq_wq_stopping(stuck.q);
	stuck.out = true;
	pthread_cond_broadcast(&stuck.cond);
	pthread_mutex_unlock(&stuck.lock);
}

static void test_free_timeout(void **state)
{
	struct sq_wq *q;
	struct log l;
	struct tjob j;
	struct timespec end;
	uint64_t t0;

	(void)state;
	/* A timeout that is not reached: 0, and every job ran. */
	assert_int_equal(sq_wq_new("sq-test", 1, &q), 0);
	log_init(&l, q);
	tjob_init(&j, &l, 1);
	sq_wq_push_after(q, &j.job, 3600 * SEC);
	assert_int_equal(sq_wq_free(q, 30000), 0);
	assert_int_equal(l.n, 1);
	log_fini(&l);

	/* A stuck job: the free gives up after its timeout. */
	assert_int_equal(sq_wq_new("sq-stuck", 1, &stuck.q), 0);
	stuck.job.run = run_stuck;
	sq_wq_push(stuck.q, &stuck.job);
	end = deadline(LONG_WAIT);
	pthread_mutex_lock(&stuck.lock);
	while (!stuck.in &&
	       pthread_cond_timedwait(&stuck.cond, &stuck.lock, &end) !=
		       ETIMEDOUT)
		;
	assert_true(stuck.in);
	pthread_mutex_unlock(&stuck.lock);
	t0 = sq_wq_now_ns();
	assert_int_equal(sq_wq_free(stuck.q, 200), -ETIMEDOUT);
	assert_true(sq_wq_now_ns() - t0 >= 200 * MS);
	assert_true(sq_wq_now_ns() - t0 < 60 * SEC);

	/* Let it go, so that its thread ends before the process does; the
	 * queue is left as it is, by design. */
	end = deadline(LONG_WAIT);
	pthread_mutex_lock(&stuck.lock);
	stuck.release = true;
	pthread_cond_broadcast(&stuck.cond);
	while (!stuck.out &&
	       pthread_cond_timedwait(&stuck.cond, &stuck.lock, &end) !=
		       ETIMEDOUT)
		;
	assert_true(stuck.out);
	assert_true(stuck.stopping);
	pthread_mutex_unlock(&stuck.lock);
	sleep_ns(100 * MS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fifo),
		cmocka_unit_test(test_timed),
		cmocka_unit_test(test_timed_wakes),
		cmocka_unit_test(test_due_before_ready),
		cmocka_unit_test(test_free_runs),
		cmocka_unit_test(test_rearm),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_free_timeout),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
