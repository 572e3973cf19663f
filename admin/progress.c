/*
 * admin/progress.c - the progress line of the long commands (export,
 * import, settle, recompress; admin.h): bytes done of the total, rate and
 * ETA on stderr, redrawn in place on a terminal, a line every 5 s
 * otherwise (a log or a pipe is not flooded).
 */
#include "admin/admin.h"

#include <stdio.h>
#include <unistd.h>

static double since(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) +
	       (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

void sq_progress_start(struct sq_progress *p, const char *verb, bool on,
		       uint64_t total)
{
	p->verb = verb;
	p->on = on;
	p->tty = isatty(STDERR_FILENO);
	p->total = total;
	p->done = 0;
	clock_gettime(CLOCK_MONOTONIC, &p->start);
	p->last = p->start;
}

void sq_progress_show(struct sq_progress *p, bool final)
{
	struct timespec now;
	double t, rate;
	char eta[32] = "--:--:--";

	if (!p->on)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!final && since(&p->last, &now) < (p->tty ? 0.2 : 5.0))
		return;
	p->last = now;
	t = since(&p->start, &now);
	rate = t > 0 ? (double)p->done / t : 0;
	if (rate > 0 && p->total >= p->done) {
		unsigned long s = (unsigned long)((double)(p->total - p->done) /
						  rate);

		snprintf(eta, sizeof(eta), "%lu:%02lu:%02lu", s / 3600,
			 s / 60 % 60, s % 60);
	}
	fprintf(stderr, "%s%s: %.1f of %.1f MiB (%3.0f%%), %.1f MiB/s, "
		"ETA %s%s", p->tty ? "\r" : "", p->verb,
		(double)p->done / 1048576, (double)p->total / 1048576,
		p->total ? 100.0 * (double)p->done / (double)p->total : 100.0,
		rate / 1048576, eta, p->tty && !final ? " " : "\n");
}

void sq_progress_break(struct sq_progress *p)
{
	/* A message in the middle of a redrawn line starts on its own. */
	if (p->on && p->tty)
		fputc('\n', stderr);
}
