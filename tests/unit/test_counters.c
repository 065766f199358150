/*
 * Unit tests for counters: counts, sorted snapshots, the JSON form (parsed
 * back with jansson, escaping included), the dump (only users active since
 * the previous dump; idle users without a connection forgotten), 8 threads
 * incrementing 50 users, half of them created while the others count, with
 * exact totals, and users coming and going while another thread dumps (run
 * under TSan by the threads suite).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counters.h"

Test(counters, counts_and_sorted_snapshot)
{
    counters_t *c = counters_new();
    struct counter_entry *e;

    counters_inc(c, "carol");
    counters_inc(c, "alice");
    counters_inc(c, "bob");
    counters_inc(c, "alice");
    counters_inc(c, "Zed"); /* byte order: upper case first */
    counters_inc(c, "alice");

    size_t n = counters_snapshot(c, &e);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(e[0].name, "Zed");
    cr_assert_eq(e[0].value, 1);
    cr_assert_str_eq(e[1].name, "alice");
    cr_assert_eq(e[1].value, 3);
    cr_assert_str_eq(e[2].name, "bob");
    cr_assert_eq(e[2].value, 1);
    cr_assert_str_eq(e[3].name, "carol");
    cr_assert_eq(e[3].value, 1);
    cr_assert_eq(counters_total(c), 6);
    counters_snapshot_free(e, n);
    counters_free(c);
}

Test(counters, empty)
{
    counters_t *c = counters_new();
    struct counter_entry *e = (void *)1;

    cr_assert_eq(counters_snapshot(c, &e), 0);
    cr_assert_null(e);
    cr_assert_eq(counters_total(c), 0);
    char *j = counters_json(c, 5);
    cr_assert_str_eq(j, "{\"ts\":5,\"users\":{}}");
    free(j);
    counters_snapshot_free(NULL, 0);
    counters_free(c);
    counters_free(NULL);
}

Test(counters, many_users_survive_growth)
{
    counters_t *c = counters_new();
    char name[32];

    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5000; i++) {
            snprintf(name, sizeof(name), "user%05d", i);
            for (int k = 0; k <= i % 3; k++)
                counters_inc(c, name);
        }
    }
    struct counter_entry *e;
    size_t n = counters_snapshot(c, &e);
    cr_assert_eq(n, 5000);
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof(name), "user%05zu", i);
        cr_assert_str_eq(e[i].name, name);
        cr_assert_eq(e[i].value, 3 * (i % 3 + 1), "%s", name);
        sum += e[i].value;
    }
    cr_assert_eq(counters_total(c), sum);
    counters_snapshot_free(e, n);
    counters_free(c);
}

Test(counters, json_round_trips_through_a_parser)
{
    counters_t *c = counters_new();

    for (int i = 0; i < 12; i++)
        counters_inc(c, "alice");
    counters_inc(c, "bob.b-2_x");
    char *s = counters_json(c, 1700000000123);
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    cr_assert_not_null(j, "%s: %s", s, err.text);
    cr_assert_eq(json_integer_value(json_object_get(j, "ts")), 1700000000123);
    json_t *users = json_object_get(j, "users");
    cr_assert_eq(json_object_size(users), 2);
    cr_assert_eq(json_integer_value(json_object_get(users, "alice")), 12);
    cr_assert_eq(json_integer_value(json_object_get(users, "bob.b-2_x")), 1);
    json_decref(j);
    free(s);
    counters_free(c);
}

Test(counters, json_escapes_whatever_the_name_holds)
{
    counters_t *c = counters_new();
    /* names are validated upstream; this proves the output stays JSON anyway */
    const char *names[] = {"q\"uote", "back\\slash", "new\nline", "tab\t", "del\x7f",
                           "caf\xc3\xa9", "bad\xff" "byte", "cut\xc3"};
    const char *decoded[] = {"q\"uote", "back\\slash", "new\nline", "tab\t", "del\x7f",
                             "caf\xc3\xa9", "bad\xc3\xbf" "byte", "cut\xc3\x83"};

    for (size_t i = 0; i < 8; i++)
        for (size_t k = 0; k <= i; k++)
            counters_inc(c, names[i]);
    char *s = counters_json(c, 1);
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    cr_assert_not_null(j, "%s: %s", s, err.text);
    json_t *users = json_object_get(j, "users");
    cr_assert_eq(json_object_size(users), 8, "%s", s);
    for (size_t i = 0; i < 8; i++) {
        json_t *v = json_object_get(users, decoded[i]);
        cr_assert(json_is_integer(v), "%s missing in %s", decoded[i], s);
        cr_assert_eq(json_integer_value(v), (json_int_t)i + 1);
    }
    json_decref(j);
    free(s);
    counters_free(c);
}

/* Parse a dump line into its users object (caller decrefs the result). */
static json_t *dump_users(counters_t *c, json_t **root)
{
    char *s = counters_dump(c, 7);
    json_error_t err;
    *root = json_loads(s, 0, &err);
    cr_assert_not_null(*root, "%s: %s", s, err.text);
    cr_assert_eq(json_integer_value(json_object_get(*root, "ts")), 7);
    free(s);
    return json_object_get(*root, "users");
}

static json_int_t users_get(json_t *users, const char *name)
{
    json_t *v = json_object_get(users, name);
    return v ? json_integer_value(v) : -1;
}

Test(counters, dump_lists_changes_and_forgets_idle_offline_users)
{
    counters_t *c = counters_new();
    json_t *root, *u;

    counters_attach(c, "online");  /* connected, sends nothing yet */
    counters_attach(c, "busy");
    counters_inc(c, "busy");
    counters_inc(c, "busy");
    counters_attach(c, "left");    /* sent one request, then went away */
    counters_inc(c, "left");
    counters_detach(c, "left");
    counters_attach(c, "silent");  /* came and went without a request */
    counters_detach(c, "silent");
    cr_assert_eq(counters_count(c), 4);

    u = dump_users(c, &root);
    cr_assert_eq(json_object_size(u), 2); /* only users with requests */
    cr_assert_eq(users_get(u, "busy"), 2);
    cr_assert_eq(users_get(u, "left"), 1);
    json_decref(root);
    cr_assert_eq(counters_count(c), 3, "a user never active and gone is forgotten at once");

    counters_inc(c, "busy");
    u = dump_users(c, &root);
    cr_assert_eq(json_object_size(u), 1);
    cr_assert_eq(users_get(u, "busy"), 3, "the whole count, not the change");
    json_decref(root);
    /* "left" was idle for a whole interval without a connection: gone; the
     * connected ones stay, active or not */
    cr_assert_eq(counters_count(c), 2);
    struct counter_entry *e;
    size_t n = counters_snapshot(c, &e);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(e[0].name, "busy");
    cr_assert_str_eq(e[1].name, "online");
    counters_snapshot_free(e, n);

    /* a forgotten user who comes back starts again from 0 */
    counters_attach(c, "left");
    counters_inc(c, "left");
    counters_detach(c, "left");
    u = dump_users(c, &root);
    cr_assert_eq(json_object_size(u), 1);
    cr_assert_eq(users_get(u, "left"), 1);
    json_decref(root);

    /* everyone leaves: two dumps later nothing is held */
    counters_detach(c, "busy");
    counters_detach(c, "online");
    u = dump_users(c, &root);
    cr_assert_eq(json_object_size(u), 0);
    json_decref(root);
    cr_assert_eq(counters_count(c), 0);
    counters_free(c);
}

Test(counters, live_connections_pin_an_entry_and_detach_never_underflows)
{
    counters_t *c = counters_new();

    counters_attach(c, "two");
    counters_attach(c, "two");
    counters_inc(c, "two");
    counters_detach(c, "two");
    free(counters_dump(c, 0));
    free(counters_dump(c, 0));
    cr_assert_eq(counters_count(c), 1, "one connection of two is still live");
    counters_detach(c, "two");
    counters_detach(c, "two");   /* unpaired: ignored */
    counters_detach(c, "nobody"); /* unknown: ignored, not created */
    cr_assert_eq(counters_count(c), 1);
    free(counters_dump(c, 0));
    cr_assert_eq(counters_count(c), 0);

    /* an unpaired detach did not leave a debt: one attach pins again */
    counters_inc(c, "two");
    counters_attach(c, "two");
    free(counters_dump(c, 0));
    free(counters_dump(c, 0));
    cr_assert_eq(counters_count(c), 1);
    counters_free(c);
}

/* ---- threads -------------------------------------------------------- */

#define NTHREADS 8
#define PER_THREAD 100000
#define NUSERS 50
#define PRESEEDED 25

struct run {
    counters_t *c;
    pthread_barrier_t *start;
    int id;
    atomic_bool *done;
    uint64_t last_total; /* reader only */
    int bad;             /* reader only: a total that went backwards */
};

/* Which user a thread counts on its i-th increment. Every thread starts by
 * walking the users in the same order, so the 25 not seeded beforehand are
 * first used by all threads at about the same moment (the double-checked
 * creation is what is under test); then each thread mixes differently. */
static int user_of(int thread, int i)
{
    if (i < NUSERS)
        return i;
    return (int)(((unsigned)i * 7u + (unsigned)thread * 13u) % NUSERS);
}

static void *incr_main(void *arg)
{
    struct run *r = arg;
    char name[16];

    /* released together, so first uses of a new user really race */
    pthread_barrier_wait(r->start);
    for (int i = 0; i < PER_THREAD; i++) {
        snprintf(name, sizeof(name), "u%02d", user_of(r->id, i));
        counters_inc(r->c, name);
    }
    return NULL;
}

/* Reads snapshots, totals and JSON while the writers run. */
static void *reader_main(void *arg)
{
    struct run *r = arg;

    while (!atomic_load(r->done)) {
        uint64_t t = counters_total(r->c);
        if (t < r->last_total)
            r->bad++;
        r->last_total = t;
        struct counter_entry *e;
        size_t n = counters_snapshot(r->c, &e);
        for (size_t i = 1; i < n; i++)
            if (strcmp(e[i - 1].name, e[i].name) >= 0)
                r->bad++;
        counters_snapshot_free(e, n);
        free(counters_json(r->c, 0));
        sched_yield(); /* valgrind runs one thread at a time: let the writers in */
    }
    return NULL;
}

Test(counters, eight_threads_exact_counts)
{
    counters_t *c = counters_new();
    pthread_t th[NTHREADS], rd;
    struct run runs[NTHREADS], rrun;
    pthread_barrier_t start;
    atomic_bool done = false;
    uint64_t expect[NUSERS] = {0};
    char name[16];

    for (int u = 0; u < PRESEEDED; u++) {
        snprintf(name, sizeof(name), "u%02d", u);
        counters_inc(c, name);
        expect[u]++;
    }
    for (int t = 0; t < NTHREADS; t++)
        for (int i = 0; i < PER_THREAD; i++)
            expect[user_of(t, i)]++;

    cr_assert_eq(pthread_barrier_init(&start, NULL, NTHREADS), 0);
    rrun = (struct run){.c = c, .done = &done};
    cr_assert_eq(pthread_create(&rd, NULL, reader_main, &rrun), 0);
    for (int t = 0; t < NTHREADS; t++) {
        runs[t] = (struct run){.c = c, .start = &start, .id = t, .done = &done};
        cr_assert_eq(pthread_create(&th[t], NULL, incr_main, &runs[t]), 0);
    }
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    atomic_store(&done, true);
    pthread_join(rd, NULL);
    pthread_barrier_destroy(&start);
    cr_assert_eq(rrun.bad, 0);

    cr_assert_eq(counters_total(c), (uint64_t)NTHREADS * PER_THREAD + PRESEEDED);
    struct counter_entry *e;
    size_t n = counters_snapshot(c, &e);
    cr_assert_eq(n, NUSERS);
    for (int u = 0; u < NUSERS; u++) {
        snprintf(name, sizeof(name), "u%02d", u);
        cr_assert_str_eq(e[u].name, name);
        cr_assert_eq(e[u].value, expect[u], "%s: %lu != %lu", name, (unsigned long)e[u].value,
                     (unsigned long)expect[u]);
    }
    counters_snapshot_free(e, n);
    counters_free(c);
}

/* Users that stay connected count while other users come and go and a
 * dumper thread dumps (and so prunes) all the time: a connected user is
 * never forgotten, so its count ends exact; the others are all forgotten
 * once they are gone and idle. */
#define STAYERS 4
#define CHURN_ROUNDS 2000

struct churn {
    counters_t *c;
    int id;
    atomic_bool *done;
    unsigned dumps; /* dumper only */
};

static void *stayer_main(void *arg)
{
    struct churn *w = arg;
    char name[16], other[16];

    snprintf(name, sizeof(name), "stay%d", w->id);
    counters_attach(w->c, name);
    for (int i = 0; i < CHURN_ROUNDS; i++) {
        counters_inc(w->c, name);
        /* a visitor: a fresh name, one request, gone */
        snprintf(other, sizeof(other), "v%d_%d", w->id, i);
        counters_attach(w->c, other);
        counters_inc(w->c, other);
        counters_detach(w->c, other);
    }
    return NULL;
}

static void *dumper_main(void *arg)
{
    struct churn *w = arg;

    while (!atomic_load(w->done)) {
        free(counters_dump(w->c, 0));
        w->dumps++;
        sched_yield();
    }
    return NULL;
}

Test(counters, churn_while_dumping)
{
    counters_t *c = counters_new();
    pthread_t th[STAYERS], dt;
    struct churn w[STAYERS], dw;
    atomic_bool done = false;
    char name[16];

    dw = (struct churn){.c = c, .done = &done};
    cr_assert_eq(pthread_create(&dt, NULL, dumper_main, &dw), 0);
    for (int t = 0; t < STAYERS; t++) {
        w[t] = (struct churn){.c = c, .id = t, .done = &done};
        cr_assert_eq(pthread_create(&th[t], NULL, stayer_main, &w[t]), 0);
    }
    for (int t = 0; t < STAYERS; t++)
        pthread_join(th[t], NULL);
    atomic_store(&done, true);
    pthread_join(dt, NULL);
    cr_assert_gt(dw.dumps, 0);

    free(counters_dump(c, 0));
    free(counters_dump(c, 0));
    struct counter_entry *e;
    size_t n = counters_snapshot(c, &e);
    cr_assert_eq(n, STAYERS, "only the connected users are left");
    for (int t = 0; t < STAYERS; t++) {
        snprintf(name, sizeof(name), "stay%d", t);
        cr_assert_str_eq(e[t].name, name);
        cr_assert_eq(e[t].value, CHURN_ROUNDS, "%s lost counts while connected", name);
    }
    counters_snapshot_free(e, n);
    counters_free(c);
}
