/*
 * Unit tests for ratelimit. The clock is passed in, so every expectation is
 * exact: burst size, refill over time, retry_after rounding, strikes, sweep
 * of idle full buckets; then threads racing on one bucket must take exactly
 * `burst` tokens between them (run under TSan by the threads suite).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit.h"

#define MS 1000000LL
#define S 1000000000LL

Test(ratelimit, new_rejects_out_of_range)
{
    cr_assert_null(ratelimit_new(0, 5));
    cr_assert_null(ratelimit_new(-1, 5));
    cr_assert_null(ratelimit_new(NAN, 5));
    cr_assert_null(ratelimit_new(INFINITY, 5));
    cr_assert_null(ratelimit_new(2e9, 5));
    cr_assert_null(ratelimit_new(10, 0.5));
    cr_assert_null(ratelimit_new(10, NAN));
    cr_assert_null(ratelimit_new(10, 2e6));
    ratelimit_t *rl = ratelimit_new(0.001, 1e6);
    cr_assert_not_null(rl);
    ratelimit_free(rl);
    ratelimit_free(NULL);
}

Test(ratelimit, burst_then_refuse_with_exact_retry)
{
    ratelimit_t *rl = ratelimit_new(10, 5); /* one token per 100 ms, 5 at most */
    int64_t retry = -1;
    unsigned strikes = 99;

    for (int i = 0; i < 5; i++) {
        cr_assert(ratelimit_take(rl, "alice", 0, &retry, &strikes), "take %d", i);
        cr_assert_eq(retry, 0);
        cr_assert_eq(strikes, 0);
    }
    cr_assert_not(ratelimit_take(rl, "alice", 0, &retry, &strikes));
    cr_assert_eq(retry, 100);
    cr_assert_eq(strikes, 1);
    cr_assert_not(ratelimit_take(rl, "alice", 0, &retry, &strikes));
    cr_assert_eq(retry, 100);
    cr_assert_eq(strikes, 2);
    /* a refusal takes nothing: the wait shrinks only with time */
    cr_assert_not(ratelimit_take(rl, "alice", 30 * MS, &retry, &strikes));
    cr_assert_eq(retry, 70);
    cr_assert_eq(strikes, 3);
    cr_assert_not(ratelimit_take(rl, "alice", 100 * MS - 1, &retry, &strikes));
    cr_assert_eq(retry, 1); /* 1 ns short rounds up to 1 ms, never 0 */
    cr_assert_eq(strikes, 4);
    /* on the dot: one token is back; success resets the strikes */
    cr_assert(ratelimit_take(rl, "alice", 100 * MS, &retry, &strikes));
    cr_assert_eq(strikes, 0);
    cr_assert_not(ratelimit_take(rl, "alice", 100 * MS, &retry, &strikes));
    cr_assert_eq(retry, 100);
    cr_assert_eq(strikes, 1);
    ratelimit_free(rl);
}

Test(ratelimit, refill_is_proportional_and_capped)
{
    ratelimit_t *rl = ratelimit_new(10, 5);

    cr_assert_float_eq(ratelimit_tokens(rl, "alice", 0), 5.0, 1e-9); /* unknown: full */
    for (int i = 0; i < 5; i++)
        cr_assert(ratelimit_take(rl, "alice", 0, NULL, NULL));
    cr_assert_float_eq(ratelimit_tokens(rl, "alice", 0), 0.0, 1e-9);
    cr_assert_float_eq(ratelimit_tokens(rl, "alice", 30 * MS), 0.3, 1e-9);
    cr_assert_float_eq(ratelimit_tokens(rl, "alice", 250 * MS), 2.5, 1e-9);
    cr_assert_float_eq(ratelimit_tokens(rl, "alice", 500 * MS), 5.0, 1e-9);
    cr_assert_float_eq(ratelimit_tokens(rl, "alice", 3600 * S), 5.0, 1e-9); /* capped */

    /* after 250 ms, exactly 2 tokens can be taken */
    cr_assert(ratelimit_take(rl, "alice", 250 * MS, NULL, NULL));
    cr_assert(ratelimit_take(rl, "alice", 250 * MS, NULL, NULL));
    int64_t retry;
    cr_assert_not(ratelimit_take(rl, "alice", 250 * MS, &retry, NULL));
    cr_assert_eq(retry, 50);

    /* a long idle refills to the burst, not beyond */
    int ok = 0;
    while (ratelimit_take(rl, "alice", 10 * S, NULL, NULL))
        ok++;
    cr_assert_eq(ok, 5);
    ratelimit_free(rl);
}

Test(ratelimit, retry_rounds_up_to_whole_ms)
{
    ratelimit_t *rl = ratelimit_new(3, 1); /* 333333333 ns per token */
    int64_t retry;

    cr_assert(ratelimit_take(rl, "u", 0, &retry, NULL));
    cr_assert_not(ratelimit_take(rl, "u", 0, &retry, NULL));
    cr_assert_eq(retry, 334);
    cr_assert_not(ratelimit_take(rl, "u", 333 * MS, &retry, NULL));
    cr_assert_eq(retry, 1);
    cr_assert(ratelimit_take(rl, "u", 333333333, &retry, NULL));
    ratelimit_free(rl);
}

Test(ratelimit, fractional_burst)
{
    ratelimit_t *rl = ratelimit_new(1, 2.5);
    int64_t retry;

    cr_assert(ratelimit_take(rl, "u", 0, NULL, NULL));
    cr_assert(ratelimit_take(rl, "u", 0, NULL, NULL));
    cr_assert_not(ratelimit_take(rl, "u", 0, &retry, NULL)); /* 0.5 left */
    cr_assert_eq(retry, 500);
    cr_assert(ratelimit_take(rl, "u", 500 * MS, NULL, NULL));
    ratelimit_free(rl);
}

Test(ratelimit, users_are_independent)
{
    ratelimit_t *rl = ratelimit_new(1, 2);
    unsigned strikes;

    cr_assert(ratelimit_take(rl, "alice", 0, NULL, NULL));
    cr_assert(ratelimit_take(rl, "alice", 0, NULL, NULL));
    cr_assert_not(ratelimit_take(rl, "alice", 0, NULL, &strikes));
    cr_assert_eq(strikes, 1);
    cr_assert(ratelimit_take(rl, "bob", 0, NULL, &strikes));
    cr_assert_eq(strikes, 0);
    cr_assert(ratelimit_take(rl, "bob", 0, NULL, NULL));
    cr_assert_not(ratelimit_take(rl, "alice", 0, NULL, &strikes));
    cr_assert_eq(strikes, 2);
    cr_assert_eq(ratelimit_count(rl), 2);
    ratelimit_free(rl);
}

Test(ratelimit, sweep_frees_only_idle_full_buckets)
{
    ratelimit_t *rl = ratelimit_new(1, 2); /* full again 2 s after emptying */

    cr_assert(ratelimit_take(rl, "idle-full", 0, NULL, NULL)); /* full again at 1 s */
    cr_assert(ratelimit_take(rl, "recent", 0, NULL, NULL));
    cr_assert(ratelimit_take(rl, "recent", 55 * S, NULL, NULL)); /* used lately */
    cr_assert(ratelimit_take(rl, "drained", 0, NULL, NULL));
    cr_assert(ratelimit_take(rl, "drained", 0, NULL, NULL));
    cr_assert_eq(ratelimit_count(rl), 3);

    /* at 1.5 s nothing is idle for 60 s, and "drained" is not full yet */
    cr_assert_eq(ratelimit_sweep(rl, 1500 * MS, 60 * S), 0);
    /* at 61 s: "idle-full" and "drained" are full and idle > 60 s; "recent" was
     * used 6 s ago (and is full too) */
    cr_assert_eq(ratelimit_sweep(rl, 61 * S, 60 * S), 2);
    cr_assert_eq(ratelimit_count(rl), 1);
    cr_assert_float_eq(ratelimit_tokens(rl, "recent", 61 * S), 2.0, 1e-9);
    /* a swept user starts over with a full bucket */
    cr_assert(ratelimit_take(rl, "drained", 61 * S, NULL, NULL));
    cr_assert(ratelimit_take(rl, "drained", 61 * S, NULL, NULL));
    cr_assert_not(ratelimit_take(rl, "drained", 61 * S, NULL, NULL));
    cr_assert_eq(ratelimit_sweep(rl, 200 * S, 60 * S), 2);
    cr_assert_eq(ratelimit_count(rl), 0);
    ratelimit_free(rl);
}

Test(ratelimit, sweep_keeps_idle_bucket_that_is_not_full)
{
    ratelimit_t *rl = ratelimit_new(0.001, 1); /* one token per 1000 s */

    cr_assert(ratelimit_take(rl, "slow", 0, NULL, NULL));
    cr_assert_not(ratelimit_take(rl, "slow", 10 * S, NULL, NULL));
    /* idle for 490 s but still owes 990 s: forgetting it would hand out a
     * fresh token early */
    cr_assert_eq(ratelimit_sweep(rl, 500 * S, 60 * S), 0);
    cr_assert_eq(ratelimit_count(rl), 1);
    cr_assert_eq(ratelimit_sweep(rl, 1000 * S, 60 * S), 1);
    ratelimit_free(rl);
}

Test(ratelimit, many_users_survive_growth)
{
    ratelimit_t *rl = ratelimit_new(1, 3);
    char name[32];

    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof(name), "user%d", i);
        for (int k = 0; k < 3; k++)
            cr_assert(ratelimit_take(rl, name, 0, NULL, NULL));
    }
    cr_assert_eq(ratelimit_count(rl), 3000);
    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof(name), "user%d", i);
        cr_assert_not(ratelimit_take(rl, name, 0, NULL, NULL), "%s", name);
    }
    ratelimit_free(rl);
}

/* ---- threads -------------------------------------------------------- */

#define NTHREADS 8
#define TRIES 100000
#define BURST 500000
#define OWN_TRIES 2000
#define OWN_BURST 1000

struct racer {
    ratelimit_t *rl, *own_rl;
    pthread_barrier_t *start;
    int id;
    int ok, refused, bad;
    atomic_bool *stop; /* sweeper only */
};

/* Every thread hammers the shared "hot" bucket at the same instant (all
 * released together by the barrier, so the takes really overlap), then its
 * own bucket, whose strikes must count up exactly. */
static void *racer_main(void *arg)
{
    struct racer *r = arg;
    char own[16];
    int64_t retry;
    unsigned strikes, last_strikes = 0;

    pthread_barrier_wait(r->start);
    for (int i = 0; i < TRIES; i++) {
        if (ratelimit_take(r->rl, "hot", 0, &retry, &strikes)) {
            r->ok++;
        } else {
            r->refused++;
            if (retry < 1 || strikes < 1)
                r->bad++;
        }
    }
    snprintf(own, sizeof(own), "own%d", r->id);
    for (int i = 0; i < OWN_TRIES; i++) {
        bool got = ratelimit_take(r->own_rl, own, 0, &retry, &strikes);
        if (got != (i < OWN_BURST) || strikes != (got ? 0 : last_strikes + 1))
            r->bad++;
        last_strikes = strikes;
    }
    return NULL;
}

Test(ratelimit, threads_share_one_bucket_exactly)
{
    /* rates so slow that nothing refills during the test's instant */
    ratelimit_t *rl = ratelimit_new(0.001, BURST), *own_rl = ratelimit_new(0.001, OWN_BURST);
    pthread_t th[NTHREADS];
    pthread_barrier_t start;
    struct racer r[NTHREADS];
    int ok = 0, refused = 0;

    cr_assert_eq(pthread_barrier_init(&start, NULL, NTHREADS), 0);
    for (int t = 0; t < NTHREADS; t++) {
        r[t] = (struct racer){.rl = rl, .own_rl = own_rl, .id = t, .start = &start};
        cr_assert_eq(pthread_create(&th[t], NULL, racer_main, &r[t]), 0);
    }
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(th[t], NULL);
        ok += r[t].ok;
        refused += r[t].refused;
        cr_assert_eq(r[t].bad, 0, "thread %d", t);
    }
    pthread_barrier_destroy(&start);
    cr_assert_eq(ok, BURST);
    cr_assert_eq(refused, NTHREADS * TRIES - BURST);
    cr_assert_eq(ratelimit_count(rl), 1);
    cr_assert_eq(ratelimit_count(own_rl), NTHREADS);
    ratelimit_free(rl);
    ratelimit_free(own_rl);
}

static void *churn_main(void *arg)
{
    struct racer *r = arg;
    char name[16];
    int64_t retry;
    unsigned strikes;

    for (int i = 0; i < TRIES * 4; i++) {
        snprintf(name, sizeof(name), "c%d", (i * 31 + r->id) % 97);
        if (!ratelimit_take(r->rl, name, (int64_t)i * MS, &retry, &strikes) &&
            (retry < 1 || strikes < 1))
            r->bad++;
    }
    return NULL;
}

static void *sweeper_main(void *arg)
{
    struct racer *r = arg;

    /* bounded, and yielding: under valgrind's one-thread-at-a-time
     * scheduler a sweeper that spins on the write lock can starve the
     * takers for minutes */
    for (int i = 0; i < 200000 && !atomic_load(r->stop); i++) {
        r->ok += (int)ratelimit_sweep(r->rl, 1000 * S, 0);
        (void)ratelimit_count(r->rl);
        (void)ratelimit_tokens(r->rl, "c1", 0);
        sched_yield();
    }
    return NULL;
}

/* Takes, creations and sweeps racing: TSan and ASan are the judges here,
 * plus the answers staying well-formed. */
Test(ratelimit, sweep_races_with_takes)
{
    ratelimit_t *rl = ratelimit_new(100, 3);
    pthread_t th[4], sw;
    struct racer r[4], s;
    atomic_bool stop = false;

    s = (struct racer){.rl = rl, .stop = &stop};
    cr_assert_eq(pthread_create(&sw, NULL, sweeper_main, &s), 0);
    for (int t = 0; t < 4; t++) {
        r[t] = (struct racer){.rl = rl, .id = t};
        cr_assert_eq(pthread_create(&th[t], NULL, churn_main, &r[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        cr_assert_eq(r[t].bad, 0);
    }
    atomic_store(&stop, true);
    pthread_join(sw, NULL);
    cr_assert_leq(ratelimit_count(rl), 97);
    ratelimit_free(rl);
}
