/*
 * testutil — helpers the unit tests share: a private temporary directory
 * under $PARLEY_TEST_TMP (meson points it at the build directory) or /tmp,
 * and removing such a directory with all it holds. Header-only, so every
 * test still links only the module it tests. Include after criterion.
 */
#ifndef PARLEY_TESTUTIL_H
#define PARLEY_TESTUTIL_H

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Make "<base>/<prefix>-XXXXXX" into buf; fails the test if it cannot. */
static inline void test_mkdtemp(char *buf, size_t sz, const char *prefix)
{
    const char *base = getenv("PARLEY_TEST_TMP");
    snprintf(buf, sz, "%s/%s-XXXXXX", base && *base ? base : "/tmp", prefix);
    cr_assert_not_null(mkdtemp(buf), "mkdtemp '%s': %s", buf, strerror(errno));
}

static inline int test__rm_one(const char *path, const struct stat *st, int flag,
                               struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove path and everything below it (symlinks themselves, not targets).
 * Returns 0 or -1. */
static inline int test_rmtree(const char *path)
{
    return nftw(path, test__rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
