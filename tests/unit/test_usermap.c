/*
 * Unit tests for usermap: create-or-get, zeroed and aligned values, growth,
 * iteration and removal; then threads: 8 threads creating-or-getting the same
 * 300 names at once create each entry exactly once (checked by a per-name
 * creation count) with exact hit counts, and lookups racing a remover never
 * see a freed or half-made entry (run under TSan by the threads suite, and
 * under ASan, which would catch a use after free).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "usermap.h"

struct val {
    uint64_t a, b;
};

/* Records what usermap_with passed to the callback. */
struct seen {
    int calls;
    bool created;
    struct val *v;
    struct val was; /* the value on entry */
};

static void note(void *value, bool created, void *arg)
{
    struct seen *s = arg;

    s->calls++;
    s->created = created;
    s->v = value;
    s->was = *s->v;
    s->v->a++;
}

Test(usermap, create_then_get)
{
    usermap_t *m = usermap_new(sizeof(struct val));
    struct seen s = {0};

    cr_assert_not(usermap_with(m, "alice", false, note, &s));
    cr_assert_eq(s.calls, 0);
    cr_assert_eq(usermap_count(m), 0);

    cr_assert(usermap_with(m, "alice", true, note, &s));
    cr_assert_eq(s.calls, 1);
    cr_assert(s.created);
    cr_assert_eq(s.was.a, 0); /* zeroed */
    cr_assert_eq(s.was.b, 0);
    cr_assert_eq((uintptr_t)s.v % alignof(max_align_t), 0);

    cr_assert(usermap_with(m, "alice", true, note, &s));
    cr_assert_eq(s.calls, 2);
    cr_assert_not(s.created);
    cr_assert_eq(s.was.a, 1);

    cr_assert(usermap_with(m, "alice", false, note, &s));
    cr_assert_eq(s.calls, 3);
    cr_assert_not(s.created);
    cr_assert_eq(s.was.a, 2);

    cr_assert_not(usermap_with(m, "alicE", false, note, &s));
    cr_assert(usermap_with(m, "", true, note, &s)); /* the empty name is a name */
    cr_assert(s.created);
    cr_assert_eq(usermap_count(m), 2);
    usermap_free(m);
    usermap_free(NULL);
}

static void collect(const char *name, void *value, void *arg)
{
    uint64_t *sum = arg;
    unsigned idx;

    cr_assert_eq(sscanf(name, "user%u", &idx), 1, "%s", name);
    cr_assert_eq(((struct val *)value)->a, (uint64_t)idx % 7 + 1, "%s", name);
    *sum += idx;
}

static void bump(void *value, bool created, void *arg)
{
    (void)created;
    (void)arg;
    ((struct val *)value)->a++;
}

Test(usermap, many_names_survive_growth)
{
    usermap_t *m = usermap_new(sizeof(struct val));
    char name[32];
    uint64_t sum = 0;

    for (unsigned i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "user%u", i);
        for (unsigned k = 0; k <= i % 7; k++)
            usermap_with(m, name, true, bump, NULL);
    }
    cr_assert_eq(usermap_count(m), 5000);
    cr_assert_eq(usermap_each(m, collect, &sum), 5000);
    cr_assert_eq(sum, 4999ull * 5000 / 2);
    usermap_free(m);
}

static void count_only(const char *name, void *value, void *arg)
{
    (void)name;
    (void)value;
    ++*(int *)arg;
}

static void touch(void *value, bool created, void *arg)
{
    (void)value;
    if (created)
        ++*(int *)arg;
}

Test(usermap, zero_size_values)
{
    usermap_t *m = usermap_new(0);
    int n = 0, made = 0;

    cr_assert_eq(usermap_each(m, count_only, &n), 0);
    cr_assert_eq(n, 0);
    for (int i = 0; i < 3; i++) {
        usermap_with(m, "x", true, touch, &made);
        usermap_with(m, "y", true, touch, &made);
    }
    cr_assert_eq(made, 2);
    cr_assert_eq(usermap_each(m, count_only, &n), 2);
    cr_assert_eq(n, 2);
    usermap_free(m);
}

/* Remove the names whose number is even. */
static bool even(const char *name, void *value, void *arg)
{
    unsigned idx;

    (void)value;
    ++*(int *)arg;
    cr_assert_eq(sscanf(name, "n%u", &idx), 1);
    return idx % 2 == 0;
}

Test(usermap, remove_if_frees_exactly_the_chosen)
{
    usermap_t *m = usermap_new(sizeof(struct val));
    char name[32];
    int asked = 0;

    for (unsigned i = 0; i < 200; i++) {
        snprintf(name, sizeof(name), "n%u", i);
        usermap_with(m, name, true, bump, NULL);
    }
    cr_assert_eq(usermap_remove_if(m, even, &asked), 100);
    cr_assert_eq(asked, 200);
    cr_assert_eq(usermap_count(m), 100);
    for (unsigned i = 0; i < 200; i++) {
        struct seen s = {0};
        snprintf(name, sizeof(name), "n%u", i);
        bool found = usermap_with(m, name, false, note, &s);
        cr_assert_eq(found, i % 2 == 1, "%s", name);
        if (found)
            cr_assert_eq(s.was.a, 1, "%s", name);
    }
    /* a removed name comes back as new: created, zeroed */
    struct seen s = {0};
    cr_assert(usermap_with(m, "n4", true, note, &s));
    cr_assert(s.created);
    cr_assert_eq(s.was.a, 0);
    asked = 0;
    cr_assert_eq(usermap_remove_if(m, even, &asked), 1);
    cr_assert_eq(usermap_count(m), 100);
    usermap_free(m);
}

/* A pruning pass in the style of counters' dump: remove the entries whose
 * b did not move since the last pass, and note a in b for those kept. */
static bool prune_unchanged(const char *name, void *value, void *arg)
{
    struct val *v = value;

    (void)name;
    (void)arg;
    if (v->a == v->b)
        return true;
    v->b = v->a;
    return false;
}

static void bump_a(void *value, bool created, void *arg)
{
    (void)created;
    (void)arg;
    ((struct val *)value)->a++;
}

Test(usermap, remove_if_may_update_the_entries_it_keeps)
{
    usermap_t *m = usermap_new(sizeof(struct val));
    char name[32];

    for (unsigned i = 0; i < 100; i++) {
        snprintf(name, sizeof(name), "p%u", i);
        usermap_with(m, name, true, bump_a, NULL);
    }
    cr_assert_eq(usermap_remove_if(m, prune_unchanged, NULL), 0);
    /* a third of them stay active */
    for (unsigned i = 0; i < 100; i += 3) {
        snprintf(name, sizeof(name), "p%u", i);
        usermap_with(m, name, false, bump_a, NULL);
    }
    cr_assert_eq(usermap_remove_if(m, prune_unchanged, NULL), 66);
    cr_assert_eq(usermap_count(m), 34);
    for (unsigned i = 0; i < 100; i++) {
        struct seen s = {0};
        snprintf(name, sizeof(name), "p%u", i);
        bool found = usermap_with(m, name, false, note, &s);
        cr_assert_eq(found, i % 3 == 0, "%s", name);
        if (found)
            cr_assert_eq(s.was.b, 2, "%s: the kept value was updated", name);
    }
    /* every kept one was just touched (note bumps a): nothing goes */
    cr_assert_eq(usermap_remove_if(m, prune_unchanged, NULL), 0);
    cr_assert_eq(usermap_remove_if(m, prune_unchanged, NULL), 34);
    cr_assert_eq(usermap_count(m), 0);
    usermap_free(m);
}

/* ---- threads -------------------------------------------------------- */

#define NTHREADS 8
#define NNAMES 300
#define ROUNDS 200

struct cval {
    _Atomic uint64_t hits;
    unsigned idx; /* set once, by the creating call */
};

static _Atomic unsigned creations[NNAMES];

struct call {
    unsigned idx;
};

static void create_or_hit(void *value, bool created, void *arg)
{
    struct cval *v = value;
    const struct call *c = arg;

    if (created) {
        atomic_init(&v->hits, 0);
        v->idx = c->idx;
        atomic_fetch_add_explicit(&creations[c->idx], 1, memory_order_relaxed);
    }
    /* a plain read of idx: written under the write lock before the entry was
     * visible, so TSan flags it if the map ever publishes an entry early */
    cr_assert_eq(v->idx, c->idx);
    atomic_fetch_add_explicit(&v->hits, 1, memory_order_relaxed);
}

struct worker {
    usermap_t *m;
    pthread_barrier_t *start;
    unsigned offset;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[32];

    pthread_barrier_wait(w->start);
    /* every thread walks all the names from its own starting point, so on
     * the first round several threads miss on the same name at once */
    for (unsigned r = 0; r < ROUNDS; r++) {
        for (unsigned k = 0; k < NNAMES; k++) {
            struct call c = {.idx = (k + w->offset) % NNAMES};
            snprintf(name, sizeof(name), "u%u", c.idx);
            usermap_with(w->m, name, true, create_or_hit, &c);
        }
    }
    return NULL;
}

static void check_hits(const char *name, void *value, void *arg)
{
    struct cval *v = value;
    unsigned idx;

    (void)arg;
    cr_assert_eq(sscanf(name, "u%u", &idx), 1);
    cr_assert_eq(v->idx, idx);
    cr_assert_eq(atomic_load(&v->hits), (uint64_t)NTHREADS * ROUNDS, "%s", name);
}

Test(usermap, concurrent_create_or_get_creates_each_once)
{
    usermap_t *m = usermap_new(sizeof(struct cval));
    pthread_t th[NTHREADS];
    struct worker w[NTHREADS];
    pthread_barrier_t start;

    for (unsigned i = 0; i < NNAMES; i++)
        atomic_store(&creations[i], 0);
    cr_assert_eq(pthread_barrier_init(&start, NULL, NTHREADS), 0);
    for (unsigned t = 0; t < NTHREADS; t++) {
        /* pairs of threads share a starting point: guaranteed collisions */
        w[t] = (struct worker){.m = m, .start = &start, .offset = (t / 2) * 37};
        cr_assert_eq(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    }
    for (unsigned t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);

    for (unsigned i = 0; i < NNAMES; i++)
        cr_assert_eq(atomic_load(&creations[i]), 1, "u%u created %u times", i,
                     atomic_load(&creations[i]));
    cr_assert_eq(usermap_count(m), NNAMES);
    cr_assert_eq(usermap_each(m, check_hits, NULL), NNAMES);
    usermap_free(m);
}

/* Lookups racing a remover: a callback always sees a whole, live entry. */

#define MAGIC 0x5eed5eed5eed5eedull

struct rval {
    uint64_t magic; /* {lock}: set at creation, checked on every use */
    _Atomic uint64_t uses;
};

static void use_entry(void *value, bool created, void *arg)
{
    struct rval *v = value;

    (void)arg;
    if (created) {
        v->magic = MAGIC;
        atomic_init(&v->uses, 0);
    }
    cr_assert_eq(v->magic, MAGIC);
    atomic_fetch_add_explicit(&v->uses, 1, memory_order_relaxed);
}

static bool remove_all(const char *name, void *value, void *arg)
{
    struct rval *v = value;

    (void)name;
    (void)arg;
    cr_assert_eq(v->magic, MAGIC);
    return true;
}

struct racer {
    usermap_t *m;
    pthread_barrier_t *start;
    _Atomic bool *stop;
    unsigned id;
};

static void *taker_main(void *arg)
{
    struct racer *r = arg;
    char name[32];

    pthread_barrier_wait(r->start);
    for (unsigned i = 0; i < 20000; i++) {
        snprintf(name, sizeof(name), "r%u", (i * 7 + r->id) % 16);
        usermap_with(r->m, name, i % 3 != 0, use_entry, NULL);
    }
    return NULL;
}

static void *remover_main(void *arg)
{
    struct racer *r = arg;
    size_t removed = 0;

    pthread_barrier_wait(r->start);
    while (!atomic_load(r->stop)) {
        removed += usermap_remove_if(r->m, remove_all, NULL);
        sched_yield(); /* valgrind runs one thread at a time: let the others in */
    }
    return (void *)removed;
}

Test(usermap, lookups_racing_removal_see_live_entries)
{
    usermap_t *m = usermap_new(sizeof(struct rval));
    pthread_t th[4], rm;
    struct racer r[5];
    pthread_barrier_t start;
    _Atomic bool stop = false;

    cr_assert_eq(pthread_barrier_init(&start, NULL, 5), 0);
    for (unsigned t = 0; t < 5; t++)
        r[t] = (struct racer){.m = m, .start = &start, .stop = &stop, .id = t};
    cr_assert_eq(pthread_create(&rm, NULL, remover_main, &r[4]), 0);
    for (unsigned t = 0; t < 4; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, taker_main, &r[t]), 0);
    for (unsigned t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    atomic_store(&stop, true);
    pthread_join(rm, NULL);
    pthread_barrier_destroy(&start);
    cr_assert_leq(usermap_count(m), 16);
    usermap_free(m);
}
