/*
 * Unit tests for strmap: put/get/del/replace, key copying, growth to
 * thousands of keys, sweep removing a subset, and free with a value
 * destructor.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

/* Distinct non-NULL pointers standing for values, never dereferenced. */
#define VAL(i) ((void *)(uintptr_t)((i) + 1))

Test(strmap, empty_map)
{
    strmap_t *m = strmap_new();
    cr_assert_not_null(m);
    cr_assert_eq(strmap_count(m), 0);
    cr_assert_null(strmap_get(m, "x"));
    cr_assert_null(strmap_del(m, "x"));
    cr_assert_eq(strmap_count(m), 0);
    strmap_free(m, NULL);
    strmap_free(NULL, NULL);
    strmap_free(NULL, free);
}

Test(strmap, put_get_replace_del)
{
    strmap_t *m = strmap_new();
    cr_assert_null(strmap_put(m, "alice", VAL(1)), "a new key has no previous value");
    cr_assert_null(strmap_put(m, "bob", VAL(2)));
    cr_assert_null(strmap_put(m, "", VAL(3)), "the empty string is a key like any other");
    cr_assert_eq(strmap_count(m), 3);
    cr_assert_eq(strmap_get(m, "alice"), VAL(1));
    cr_assert_eq(strmap_get(m, "bob"), VAL(2));
    cr_assert_eq(strmap_get(m, ""), VAL(3));
    cr_assert_null(strmap_get(m, "alic"));
    cr_assert_null(strmap_get(m, "alicee"));

    cr_assert_eq(strmap_put(m, "alice", VAL(10)), VAL(1), "replace returns the old value");
    cr_assert_eq(strmap_count(m), 3, "replacing does not add an entry");
    cr_assert_eq(strmap_get(m, "alice"), VAL(10));

    cr_assert_eq(strmap_del(m, "alice"), VAL(10));
    cr_assert_eq(strmap_count(m), 2);
    cr_assert_null(strmap_get(m, "alice"));
    cr_assert_null(strmap_del(m, "alice"), "a second delete finds nothing");
    cr_assert_eq(strmap_count(m), 2);
    cr_assert_eq(strmap_get(m, "bob"), VAL(2));

    cr_assert_null(strmap_put(m, "alice", VAL(20)), "a deleted key can come back");
    cr_assert_eq(strmap_get(m, "alice"), VAL(20));
    strmap_free(m, NULL);
}

Test(strmap, keys_are_copied)
{
    strmap_t *m = strmap_new();
    char key[16];
    strcpy(key, "room-1");
    strmap_put(m, key, VAL(1));
    strcpy(key, "room-2");
    strmap_put(m, key, VAL(2));
    memset(key, 0, sizeof(key));
    cr_assert_eq(strmap_get(m, "room-1"), VAL(1));
    cr_assert_eq(strmap_get(m, "room-2"), VAL(2));
    cr_assert_eq(strmap_count(m), 2);
    strmap_free(m, NULL);
}

#define MANY 5000

static void key_of(char *buf, size_t n, int i)
{
    snprintf(buf, n, "user-%d", i);
}

Test(strmap, grows_to_thousands_of_keys)
{
    strmap_t *m = strmap_new();
    char k[32];
    for (int i = 0; i < MANY; i++) {
        key_of(k, sizeof(k), i);
        cr_assert_null(strmap_put(m, k, VAL(i)));
        cr_assert_eq(strmap_count(m), (size_t)i + 1);
        /* an early key must survive every rehash */
        cr_assert_eq(strmap_get(m, "user-0"), VAL(0), "lost after %d inserts", i + 1);
    }
    for (int i = 0; i < MANY; i++) {
        key_of(k, sizeof(k), i);
        cr_assert_eq(strmap_get(m, k), VAL(i), "%s", k);
    }
    cr_assert_null(strmap_get(m, "user-5000"));

    for (int i = 0; i < MANY; i += 2) {
        key_of(k, sizeof(k), i);
        cr_assert_eq(strmap_del(m, k), VAL(i));
    }
    cr_assert_eq(strmap_count(m), MANY / 2);
    for (int i = 0; i < MANY; i++) {
        key_of(k, sizeof(k), i);
        if (i % 2)
            cr_assert_eq(strmap_get(m, k), VAL(i), "%s", k);
        else
            cr_assert_null(strmap_get(m, k), "%s", k);
    }
    strmap_free(m, NULL);
}

struct sweep_state {
    unsigned visits, removed;
    int bad;
};

/* Remove every value divisible by 3, freeing it as the owner must. */
static bool sweep_thirds(const char *key, void *val, void *arg)
{
    struct sweep_state *st = arg;
    int *v = val;
    char k[32];
    st->visits++;
    key_of(k, sizeof(k), *v);
    if (strcmp(k, key) != 0)
        st->bad++;
    if (*v % 3 == 0) {
        free(v);
        st->removed++;
        return true;
    }
    return false;
}

static int *int_val(int i)
{
    int *v = malloc(sizeof(*v));
    cr_assert_not_null(v);
    *v = i;
    return v;
}

Test(strmap, sweep_removes_a_subset)
{
    strmap_t *m = strmap_new();
    char k[32];
    for (int i = 0; i < MANY; i++) {
        key_of(k, sizeof(k), i);
        strmap_put(m, k, int_val(i));
    }
    struct sweep_state st = {0};
    strmap_sweep(m, sweep_thirds, &st);
    cr_assert_eq(st.bad, 0, "sweep passed a value with another key");
    cr_assert_eq(st.visits, MANY, "every entry is visited exactly once");
    cr_assert_eq(st.removed, (MANY + 2) / 3);
    cr_assert_eq(strmap_count(m), MANY - st.removed);
    for (int i = 0; i < MANY; i++) {
        key_of(k, sizeof(k), i);
        int *v = strmap_get(m, k);
        if (i % 3 == 0) {
            cr_assert_null(v, "%s", k);
        } else {
            cr_assert_not_null(v, "%s", k);
            cr_assert_eq(*v, i);
        }
    }
    /* a second sweep finds nothing more to remove, and the map still works */
    st = (struct sweep_state){0};
    strmap_sweep(m, sweep_thirds, &st);
    cr_assert_eq(st.removed, 0);
    cr_assert_eq(st.visits, strmap_count(m));
    cr_assert_null(strmap_put(m, "user-0", int_val(0)));
    strmap_free(m, free);
}

static bool sweep_all(const char *key, void *val, void *arg)
{
    (void)key;
    free(val);
    ++*(unsigned *)arg;
    return true;
}

Test(strmap, sweep_everything)
{
    strmap_t *m = strmap_new();
    char k[32];
    for (int i = 0; i < 100; i++) {
        key_of(k, sizeof(k), i);
        strmap_put(m, k, int_val(i));
    }
    unsigned n = 0;
    strmap_sweep(m, sweep_all, &n);
    cr_assert_eq(n, 100);
    cr_assert_eq(strmap_count(m), 0);
    cr_assert_null(strmap_get(m, "user-7"));
    strmap_free(m, free);
}

static unsigned freed;

static void count_free(void *v)
{
    freed++;
    free(v);
}

Test(strmap, free_calls_the_destructor_on_each_value)
{
    strmap_t *m = strmap_new();
    char k[32];
    for (int i = 0; i < 1000; i++) {
        key_of(k, sizeof(k), i);
        strmap_put(m, k, int_val(i));
    }
    /* a replaced or deleted value is the caller's again, not the map's */
    free(strmap_put(m, "user-1", int_val(1)));
    free(strmap_del(m, "user-2"));
    freed = 0;
    strmap_free(m, count_free);
    cr_assert_eq(freed, 999);
}
