/*
 * Unit tests for htable, the one intrusive hash table: insert / lookup /
 * remove, iteration, growth across several rehashes with every entry still
 * found, sweep while iterating (removing and freeing a subset), many keys,
 * and 100,000 names crafted to share one bucket of the old unkeyed hash
 * (tests/unit/fnvcollide.h) spread over short chains.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fnvcollide.h"
#include "htable.h"

struct ent {
    int v;
    struct hnode node;
    char name[24];
};

static struct ent *ent_new(int v)
{
    struct ent *e = calloc(1, sizeof(*e));
    cr_assert_not_null(e);
    e->v = v;
    snprintf(e->name, sizeof(e->name), "k%d", v);
    return e;
}

static struct ent *get(const struct htable *t, const char *key)
{
    struct hnode *n = htable_find(t, key);
    return n ? htable_entry(n, struct ent, node) : NULL;
}

static bool free_all(struct hnode *n, void *arg)
{
    (void)arg;
    free(htable_entry(n, struct ent, node));
    return true;
}

Test(htable, insert_lookup_remove)
{
    struct htable t;
    htable_init(&t, 0);
    cr_assert_eq(htable_count(&t), 0);
    cr_assert_null(htable_find(&t, "k1"));

    struct ent *a = ent_new(1), *b = ent_new(2), *c = ent_new(3);
    strcpy(c->name, ""); /* the empty string is a key like any other */
    htable_insert(&t, &a->node, a->name);
    htable_insert(&t, &b->node, b->name);
    htable_insert(&t, &c->node, c->name);
    cr_assert_eq(htable_count(&t), 3);
    cr_assert_eq(get(&t, "k1"), a);
    cr_assert_eq(get(&t, "k2"), b);
    cr_assert_eq(get(&t, ""), c);
    cr_assert_null(get(&t, "k"));
    cr_assert_null(get(&t, "k11"));

    cr_assert(htable_remove(&t, &a->node));
    cr_assert_eq(htable_count(&t), 2);
    cr_assert_not(htable_remove(&t, &a->node), "a node not in the table is not removed");
    cr_assert_eq(htable_count(&t), 2);
    cr_assert_null(get(&t, "k1"));
    cr_assert_eq(get(&t, "k2"), b, "removing one leaves the others");
    htable_insert(&t, &a->node, a->name);
    cr_assert_eq(get(&t, "k1"), a, "a removed node can be linked again");
    cr_assert_eq(htable_sweep(&t, free_all, NULL), 3);
    cr_assert_eq(htable_count(&t), 0);
    htable_fini(&t);
}

Test(htable, iterate_visits_each_once)
{
    enum { N = 500 };
    struct htable t;
    static unsigned char seen[N];
    htable_init(&t, 0);
    for (int i = 0; i < N; i++) {
        struct ent *e = ent_new(i);
        htable_insert(&t, &e->node, e->name);
    }
    struct htable_iter it;
    size_t n = 0;
    for (struct hnode *h = htable_first(&t, &it); h; h = htable_next(&it), n++)
        seen[htable_entry(h, struct ent, node)->v]++;
    cr_assert_eq(n, N);
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "entry %d visited %u times", i, seen[i]);
    htable_sweep(&t, free_all, NULL);
    htable_fini(&t);

    htable_init(&t, 0);
    cr_assert_null(htable_first(&t, &it), "an empty table has no first node");
    htable_fini(&t);
}

Test(htable, grows_across_rehash)
{
    enum { N = 20000 };
    struct htable t;
    htable_init(&t, 8);
    size_t nb0 = t.nb, grown = 0, last = t.nb;
    for (int i = 0; i < N; i++) {
        struct ent *e = ent_new(i);
        htable_insert(&t, &e->node, e->name);
        if (t.nb != last) {
            cr_assert_eq(t.nb, last * 2, "grows by doubling");
            last = t.nb;
            grown++;
        }
        cr_assert_leq(htable_count(&t), t.nb, "load factor at most 1 (%zu in %zu)",
                      htable_count(&t), t.nb);
    }
    cr_assert_geq(grown, 10, "grew %zu times from %zu buckets", grown, nb0);
    cr_assert_eq(htable_count(&t), N);
    char key[24];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        struct ent *e = get(&t, key);
        cr_assert_not_null(e, "%s lost across a rehash", key);
        cr_assert_eq(e->v, i);
    }
    cr_assert_null(get(&t, "k20000"));
    cr_assert_leq(htable_longest_chain(&t), 12);
    htable_sweep(&t, free_all, NULL);
    htable_fini(&t);
}

struct sweep_arg {
    int visited;
};

/* Remove (and free) the odd entries, keep the even ones. */
static bool drop_odd(struct hnode *n, void *arg)
{
    struct sweep_arg *s = arg;
    struct ent *e = htable_entry(n, struct ent, node);
    s->visited++;
    if (e->v % 2 == 0)
        return false;
    memset(e, 0xa5, sizeof(*e)); /* a use after this would read garbage */
    free(e);
    return true;
}

Test(htable, sweep_while_iterating)
{
    enum { N = 3000 };
    struct htable t;
    htable_init(&t, 0);
    for (int i = 0; i < N; i++) {
        struct ent *e = ent_new(i);
        htable_insert(&t, &e->node, e->name);
    }
    struct sweep_arg s = {0};
    cr_assert_eq(htable_sweep(&t, drop_odd, &s), N / 2);
    cr_assert_eq(s.visited, N);
    cr_assert_eq(htable_count(&t), N / 2);
    char key[24];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        if (i % 2)
            cr_assert_null(get(&t, key), "%s was swept", key);
        else
            cr_assert_not_null(get(&t, key), "%s was kept", key);
    }
    /* the table still takes inserts and finds them after a sweep */
    struct ent *e = ent_new(1);
    htable_insert(&t, &e->node, e->name);
    cr_assert_eq(get(&t, "k1"), e);
    s.visited = 0;
    cr_assert_eq(htable_sweep(&t, free_all, NULL), N / 2 + 1);
    cr_assert_eq(htable_count(&t), 0);
    htable_fini(&t);
}

Test(htable, tables_have_own_keys)
{
    struct htable a, b;
    htable_init(&a, 0);
    htable_init(&b, 0);
    cr_assert(a.key.k0 != b.key.k0 || a.key.k1 != b.key.k1, "two tables share a key");
    htable_fini(&a);
    htable_fini(&b);
}

/* 100,000 names whose old hash (FNV-1a) lands in one bucket at every table
 * size up to 2^17: in the table they fill 131,072 buckets at load 0.76, and
 * with a keyed hash the longest chain stays near that of random keys (see
 * test_hash.c for the bound's arithmetic). */
#define NAMES 100000
#define MAX_CHAIN 12

struct named {
    struct hnode node;
    char name[FNVC_LEN + 1];
};

Test(htable, crafted_fnv_collisions_spread, .timeout = 120)
{
    static char pairs[FNVC_STAGES][2][FNVC_BLOCK];
    struct named *v = calloc(NAMES, sizeof(*v));
    cr_assert_not_null(v);
    cr_assert_eq(fnvc_pairs(pairs), 0, "no colliding blocks found");

    struct htable t;
    htable_init(&t, 0);
    for (size_t i = 0; i < NAMES; i++) {
        fnvc_name(pairs, i, v[i].name);
        cr_assert_null(htable_find(&t, v[i].name), "names are distinct");
        htable_insert(&t, &v[i].node, v[i].name);
    }
    cr_assert_eq(fnvc_fnv1a64(v[0].name) & ((1u << 17) - 1),
                 fnvc_fnv1a64(v[NAMES - 1].name) & ((1u << 17) - 1),
                 "the names collide under FNV-1a");
    cr_assert_eq(htable_count(&t), NAMES);
    cr_assert_eq(t.nb, (size_t)1 << 17);
    size_t longest = htable_longest_chain(&t);
    cr_log_info("100,000 crafted names: longest chain %zu", longest);
    cr_assert_leq(longest, MAX_CHAIN, "longest chain %zu", longest);
    for (size_t i = 0; i < NAMES; i += 997)
        cr_assert_eq(htable_find(&t, v[i].name), &v[i].node);
    htable_fini(&t);
    free(v);
}
