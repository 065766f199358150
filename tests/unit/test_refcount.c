/*
 * Unit tests for refcount.h, the one reference count: get/put and the last
 * drop, put-unless-last, and the always-on underflow abort, which must
 * name the type on stderr.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "refcount.h"

Test(refcount, get_put_last)
{
    _Atomic unsigned r;
    ref_init(&r, 1);
    cr_assert_eq(ref_get(&r), 1, "ref_get returns the count before");
    cr_assert_eq(ref_get(&r), 2);
    cr_assert_not(ref_put(&r, "t"), "3 -> 2 is not the last");
    cr_assert_not(ref_put(&r, "t"));
    cr_assert(ref_put(&r, "t"), "1 -> 0 is the last");
    cr_assert_eq(atomic_load(&r), 0);
}

Test(refcount, first_reference_from_zero)
{
    _Atomic unsigned r;
    ref_init(&r, 0);
    cr_assert_eq(ref_get(&r), 0, "the first reference sees 0");
    cr_assert(ref_put(&r, "t"));
}

Test(refcount, put_unless_last)
{
    _Atomic unsigned r;
    ref_init(&r, 2);
    cr_assert(ref_put_unless_last(&r), "2 -> 1 drops");
    cr_assert_eq(atomic_load(&r), 1);
    cr_assert_not(ref_put_unless_last(&r), "the last one is left to ref_put");
    cr_assert_eq(atomic_load(&r), 1);
    ref_init(&r, 0);
    cr_assert_not(ref_put_unless_last(&r), "nothing to drop at 0");
    cr_assert_eq(atomic_load(&r), 0);
}

Test(refcount, underflow_aborts, .signal = SIGABRT)
{
    _Atomic unsigned r;
    ref_init(&r, 1);
    cr_assert(ref_put(&r, "widget"));
    ref_put(&r, "widget"); /* dropped twice */
}

/* The abort says what underflowed: run it in a child with stderr on a pipe. */
Test(refcount, underflow_message_names_the_type)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        _Atomic unsigned r;
        ref_init(&r, 0);
        ref_put(&r, "widget");
        _exit(0); /* not reached */
    }
    close(p[1]);
    char buf[256];
    size_t n = 0;
    ssize_t k;
    while (n < sizeof(buf) - 1 && (k = read(p[0], buf + n, sizeof(buf) - 1 - n)) > 0)
        n += (size_t)k;
    buf[n] = '\0';
    close(p[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "status %#x", st);
    cr_assert_not_null(strstr(buf, "widget refcount underflow"), "stderr: %s", buf);
}
