/* htable — see htable.h. */
#include "htable.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void htable_init(struct htable *t, size_t min_buckets)
{
    size_t nb = 8;
    while (nb < min_buckets)
        nb *= 2;
    hash_key_random(&t->key);
    t->b = xcalloc(nb, sizeof(*t->b));
    t->nb = nb;
    t->count = 0;
}

void htable_fini(struct htable *t)
{
    free(t->b);
    t->b = NULL;
    t->nb = t->count = 0;
}

uint64_t htable_hash(const struct htable *t, const char *key)
{
    return hash_str(&t->key, key);
}

struct hnode *htable_find(const struct htable *t, const char *key)
{
    return htable_find_hashed(t, key, htable_hash(t, key));
}

struct hnode *htable_find_hashed(const struct htable *t, const char *key, uint64_t h)
{
    for (struct hnode *n = t->b[h & (t->nb - 1)]; n; n = n->next)
        if (n->hash == h && strcmp(n->key, key) == 0)
            return n;
    return NULL;
}

static void grow(struct htable *t)
{
    size_t nb = t->nb * 2;
    struct hnode **b = xcalloc(nb, sizeof(*b));

    for (size_t i = 0; i < t->nb; i++) {
        for (struct hnode *n = t->b[i], *next; n; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    }
    free(t->b);
    t->b = b;
    t->nb = nb;
}

void htable_insert(struct htable *t, struct hnode *n, const char *key)
{
    htable_insert_hashed(t, n, key, htable_hash(t, key));
}

void htable_insert_hashed(struct htable *t, struct hnode *n, const char *key, uint64_t h)
{
    if (t->count >= t->nb)
        grow(t);
    n->key = key;
    n->hash = h;
    n->next = t->b[n->hash & (t->nb - 1)];
    t->b[n->hash & (t->nb - 1)] = n;
    t->count++;
}

bool htable_remove(struct htable *t, struct hnode *n)
{
    for (struct hnode **pp = &t->b[n->hash & (t->nb - 1)]; *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            n->next = NULL;
            t->count--;
            return true;
        }
    }
    return false;
}

size_t htable_count(const struct htable *t)
{
    return t->count;
}

static struct hnode *scan(struct htable_iter *it)
{
    while (!it->n && ++it->i < it->t->nb)
        it->n = it->t->b[it->i];
    return it->n;
}

struct hnode *htable_first(const struct htable *t, struct htable_iter *it)
{
    it->t = t;
    it->i = 0;
    it->n = t->b[0];
    return scan(it);
}

struct hnode *htable_next(struct htable_iter *it)
{
    if (!it->n)
        return NULL;
    it->n = it->n->next;
    return scan(it);
}

size_t htable_sweep(struct htable *t, bool (*fn)(struct hnode *n, void *arg), void *arg)
{
    size_t removed = 0;

    for (size_t i = 0; i < t->nb; i++) {
        struct hnode **pp = &t->b[i];
        while (*pp) {
            struct hnode *n = *pp, *next = n->next; /* fn may free n */
            if (fn(n, arg)) {
                *pp = next;
                t->count--;
                removed++;
            } else {
                pp = &n->next;
            }
        }
    }
    return removed;
}

size_t htable_longest_chain(const struct htable *t)
{
    size_t max = 0;

    for (size_t i = 0; i < t->nb; i++) {
        size_t len = 0;
        for (const struct hnode *n = t->b[i]; n; n = n->next)
            len++;
        if (len > max)
            max = len;
    }
    return max;
}
