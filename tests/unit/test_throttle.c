/*
 * Unit tests for throttle: the backoff schedule after the limit (doubling,
 * capped, refused attempts not counted), reset on success or not, one slot
 * in flight per key, entries kept only while they matter and forgotten
 * after the quiet time, the table bound (fail closed, then a sweep makes
 * room), exact failure counts with many threads, and the address keys.
 * Times are pinned: every call gets its "now" from the test.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>

#include "throttle.h"

static const struct throttle_opts name_opts = {
    .limit = 3,
    .base_ms = 1000,
    .max_ms = 8000,
    .forget_ms = 60000,
    .max_inflight = 1,
    .reset_on_success = true,
    .max_keys = 1000,
};

/* One attempt at now that fails; cr_asserts it was admitted. */
static void fail_at(throttle_t *t, const char *key, int64_t now)
{
    int64_t retry = -1;
    cr_assert_eq(throttle_enter(t, key, now, &retry), THROTTLE_OK, "%s at %lld", key,
                 (long long)now);
    cr_assert_eq(retry, 0);
    throttle_leave(t, key, THROTTLE_FAILURE, now);
}

Test(throttle, backoff_doubles_after_the_limit_up_to_the_cap)
{
    throttle_t *t = throttle_new(&name_opts);
    int64_t now = 1000000, retry;

    /* below the limit: no consequence */
    fail_at(t, "alice", now);
    fail_at(t, "alice", now);
    cr_assert_eq(throttle_enter(t, "alice", now, &retry), THROTTLE_OK);
    /* the failure that reaches the limit blocks for base */
    throttle_leave(t, "alice", THROTTLE_FAILURE, now);
    const int64_t want[] = {1000, 2000, 4000, 8000, 8000, 8000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        cr_assert_eq(throttle_enter(t, "alice", now, &retry), THROTTLE_BLOCKED, "step %zu", i);
        cr_assert_eq(retry, want[i], "step %zu: %lld", i, (long long)retry);
        /* refused attempts cost nothing and count nothing */
        cr_assert_eq(throttle_enter(t, "alice", now + want[i] - 1, &retry), THROTTLE_BLOCKED);
        cr_assert_eq(retry, 1);
        cr_assert_eq(throttle_failures(t, "alice"), 3 + i);
        now += want[i];
        fail_at(t, "alice", now);
    }
    /* another name is not affected */
    cr_assert_eq(throttle_enter(t, "bob", now, &retry), THROTTLE_OK);
    cr_assert_eq(retry, 0);
    throttle_leave(t, "bob", THROTTLE_NONE, now);
    throttle_free(t);
}

Test(throttle, success_resets_a_name)
{
    throttle_t *t = throttle_new(&name_opts);
    int64_t now = 5000, retry;

    for (int i = 0; i < 3; i++)
        fail_at(t, "alice", now);
    cr_assert_eq(throttle_enter(t, "alice", now + 500, &retry), THROTTLE_BLOCKED);
    /* the right password is refused too until the block is over */
    now += 1000;
    cr_assert_eq(throttle_enter(t, "alice", now, &retry), THROTTLE_OK);
    throttle_leave(t, "alice", THROTTLE_SUCCESS, now);
    cr_assert_eq(throttle_failures(t, "alice"), 0);
    cr_assert_eq(throttle_count(t), 0, "a name with nothing on record is not kept");
    /* the schedule starts again from the beginning */
    fail_at(t, "alice", now);
    fail_at(t, "alice", now);
    cr_assert_eq(throttle_enter(t, "alice", now, &retry), THROTTLE_OK);
    throttle_leave(t, "alice", THROTTLE_NONE, now);
    throttle_free(t);
}

Test(throttle, address_failures_survive_a_success)
{
    struct throttle_opts o = name_opts;
    o.reset_on_success = false;
    o.max_inflight = 0;
    throttle_t *t = throttle_new(&o);
    int64_t now = 0, retry;

    fail_at(t, "10.0.0.1", now);
    fail_at(t, "10.0.0.1", now);
    cr_assert_eq(throttle_enter(t, "10.0.0.1", now, &retry), THROTTLE_OK);
    throttle_leave(t, "10.0.0.1", THROTTLE_SUCCESS, now);
    cr_assert_eq(throttle_failures(t, "10.0.0.1"), 2);
    fail_at(t, "10.0.0.1", now);
    cr_assert_eq(throttle_enter(t, "10.0.0.1", now, &retry), THROTTLE_BLOCKED);
    cr_assert_eq(retry, 1000);
    throttle_free(t);
}

Test(throttle, one_slot_in_flight_per_key)
{
    throttle_t *t = throttle_new(&name_opts);
    int64_t retry = -1;

    cr_assert_eq(throttle_enter(t, "alice", 0, &retry), THROTTLE_OK);
    cr_assert_eq(throttle_enter(t, "alice", 0, &retry), THROTTLE_BUSY);
    cr_assert_eq(retry, 0);
    cr_assert_eq(throttle_enter(t, "bob", 0, &retry), THROTTLE_OK);
    cr_assert_eq(throttle_count(t), 2, "entries are held while in flight");
    throttle_leave(t, "alice", THROTTLE_NONE, 0);
    cr_assert_eq(throttle_enter(t, "alice", 0, &retry), THROTTLE_OK);
    throttle_leave(t, "alice", THROTTLE_NONE, 0);
    throttle_leave(t, "bob", THROTTLE_NONE, 0);
    cr_assert_eq(throttle_count(t), 0);
    /* a leave without an enter gives nothing back and creates nothing */
    throttle_leave(t, "carol", THROTTLE_FAILURE, 0);
    cr_assert_eq(throttle_count(t), 0);
    cr_assert_eq(throttle_failures(t, "carol"), 0);

    struct throttle_opts o = name_opts;
    o.max_inflight = 0;
    throttle_t *u = throttle_new(&o);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(throttle_enter(u, "x", 0, NULL), THROTTLE_OK);
    for (int i = 0; i < 100; i++)
        throttle_leave(u, "x", THROTTLE_NONE, 0);
    cr_assert_eq(throttle_count(u), 0);
    throttle_free(u);
    throttle_free(t);
}

Test(throttle, failures_are_forgotten_after_the_quiet_time)
{
    throttle_t *t = throttle_new(&name_opts);
    int64_t now = 0, retry;

    fail_at(t, "a", now);
    fail_at(t, "a", now);
    fail_at(t, "a", now); /* blocked until 1000 */
    fail_at(t, "b", now); /* not blocked: quiet from 0 */
    cr_assert_eq(throttle_count(t), 2);
    cr_assert_eq(throttle_sweep(t, 59999), 0);
    cr_assert_eq(throttle_sweep(t, 60000), 1, "b: 60 s after its failure");
    cr_assert_eq(throttle_failures(t, "b"), 0);
    cr_assert_eq(throttle_sweep(t, 60999), 0, "a: the quiet time counts from the block's end");
    /* an expired entry is also started afresh on its next enter */
    cr_assert_eq(throttle_enter(t, "a", 61000, &retry), THROTTLE_OK);
    cr_assert_eq(throttle_failures(t, "a"), 0);
    throttle_leave(t, "a", THROTTLE_FAILURE, 61000);
    cr_assert_eq(throttle_failures(t, "a"), 1);
    /* an entry in flight is never swept */
    cr_assert_eq(throttle_enter(t, "c", 61000, &retry), THROTTLE_OK);
    cr_assert_eq(throttle_sweep(t, 1000000), 1);
    cr_assert_eq(throttle_count(t), 1);
    throttle_leave(t, "c", THROTTLE_NONE, 1000000);
    cr_assert_eq(throttle_count(t), 0);
    throttle_free(t);
}

Test(throttle, the_table_is_bounded_and_fails_closed)
{
    struct throttle_opts o = name_opts;
    o.max_keys = 4;
    throttle_t *t = throttle_new(&o);
    char key[16];
    int64_t retry;

    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        fail_at(t, key, 0);
    }
    cr_assert_eq(throttle_count(t), 4);
    cr_assert_eq(throttle_enter(t, "new", 10, &retry), THROTTLE_FULL);
    cr_assert_eq(retry, 0);
    /* a key already held still gets in */
    cr_assert_eq(throttle_enter(t, "k0", 10, &retry), THROTTLE_OK);
    throttle_leave(t, "k0", THROTTLE_SUCCESS, 10); /* k0 goes: room for one */
    cr_assert_eq(throttle_enter(t, "new", 20, &retry), THROTTLE_OK);
    cr_assert_eq(throttle_enter(t, "newer", 20, &retry), THROTTLE_FULL);
    /* once the others are forgotten, a full table makes room by sweeping */
    cr_assert_eq(throttle_enter(t, "newer", 60000, &retry), THROTTLE_OK);
    cr_assert_eq(throttle_count(t), 2, "k1..k3 were swept; 'new' and 'newer' are in flight");
    /* a flood of new keys does not sweep on every call: at most once a second */
    throttle_leave(t, "new", THROTTLE_FAILURE, 60000);
    throttle_leave(t, "newer", THROTTLE_FAILURE, 60000);
    fail_at(t, "x1", 60000);
    fail_at(t, "x2", 60000);
    cr_assert_eq(throttle_count(t), 4);
    cr_assert_eq(throttle_enter(t, "x3", 130000, &retry), THROTTLE_OK, "swept, all expired");
    cr_assert_eq(throttle_count(t), 1);
    throttle_leave(t, "x3", THROTTLE_NONE, 130000);
    throttle_free(t);
}

#define NTHREADS 8
#define ROUNDS 2000

struct worker {
    throttle_t *t;
    int id;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    char key[16];
    for (int i = 0; i < ROUNDS; i++) {
        snprintf(key, sizeof(key), "k%d", i % 4);
        if (throttle_enter(w->t, key, i, NULL) != THROTTLE_OK)
            continue;
        throttle_leave(w->t, key, (i + w->id) % 2 ? THROTTLE_FAILURE : THROTTLE_NONE, i);
        if (i % 97 == 0)
            throttle_sweep(w->t, i);
    }
    return NULL;
}

Test(throttle, exact_counts_under_threads)
{
    struct throttle_opts o = name_opts;
    o.limit = 1000000; /* never blocks */
    o.max_inflight = 0;
    o.forget_ms = INT64_MAX / 4;
    throttle_t *t = throttle_new(&o);
    pthread_t th[NTHREADS];
    struct worker w[NTHREADS];

    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){.t = t, .id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    unsigned total = 0;
    for (int k = 0; k < 4; k++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", k);
        total += throttle_failures(t, key);
    }
    cr_assert_eq(total, NTHREADS * ROUNDS / 2, "%u failures recorded", total);
    cr_assert_eq(throttle_count(t), 4);
    throttle_free(t);
}

Test(throttle, address_keys)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"127.0.0.1", "127.0.0.1"},
        {"192.0.2.77", "192.0.2.77"},
        {"::ffff:192.0.2.77", "192.0.2.77"},
        {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
        {"2001:db8:1:2::9", "2001:db8:1:2::/64"},
        {"::1", "::/64"},
        {"", "unknown"},
        {"not an address", "unknown"},
        {"1.2.3.4.5", "unknown"},
        {NULL, "unknown"},
    };
    char out[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        throttle_addr_key(cases[i].in, out, sizeof(out));
        cr_expect_str_eq(out, cases[i].want, "'%s'", cases[i].in ? cases[i].in : "(null)");
    }
}
