/*
 * tests/unit/unit_util.h - helpers shared by the unit tests (header-only:
 * each test is one program).
 */
#ifndef SQ_UNIT_UTIL_H
#define SQ_UNIT_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int unit_rm_one(const char *path, const struct stat *st, int flag,
		       struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* Removes the directory tree @dir (a test's mkdtemp()): 0 or -1. */
static inline int unit_rmtree(const char *dir)
{
	return nftw(dir, unit_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif /* SQ_UNIT_UTIL_H */
