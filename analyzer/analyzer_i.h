/*
 * analyzer/analyzer_i.h - shared between analyzer.c (policy, decisions,
 * counters) and an_sample.c (features, magic bytes, classes).
 */
#ifndef SQ_ANALYZER_I_H
#define SQ_ANALYZER_I_H

#include "analyzer/analyzer.h"

/* What classifying one block needs besides its features. */
struct sq_an_input {
	const unsigned char *src;
	size_t len;
	uint64_t block_idx;
	int prior;		/* the file's class from its magic bytes */
	uint32_t db_page;	/* SQLite page size, 0 when unknown */
	double reject_bits;	/* entropy from which a sample is hopeless */
};

int sq_an_classify(const struct sq_an_input *in, const struct sq_an_features *ft);

/* SQLite page size from a database header at @head, or 0. */
uint32_t sq_an_sqlite_page(const void *head, size_t len);

#endif /* SQ_ANALYZER_I_H */
