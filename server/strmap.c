/* strmap — see strmap.h. */
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "util.h"

struct entry {
    struct entry *next;
    void *val;
    char key[];
};

struct strmap {
    struct entry **b;
    size_t nb, count;
    struct hash_key key; /* this map's own: keys are names clients chose */
};

static size_t hash(const strmap_t *m, const char *s)
{
    return (size_t)hash_str(&m->key, s);
}

strmap_t *strmap_new(void)
{
    strmap_t *m = xcalloc(1, sizeof(*m));
    hash_key_random(&m->key);
    m->nb = 16;
    m->b = xcalloc(m->nb, sizeof(*m->b));
    return m;
}

void strmap_free(strmap_t *m, void (*free_val)(void *))
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nb; i++) {
        for (struct entry *e = m->b[i], *n; e; e = n) {
            n = e->next;
            if (free_val)
                free_val(e->val);
            free(e);
        }
    }
    free(m->b);
    free(m);
}

static struct entry **find(const strmap_t *m, const char *key)
{
    struct entry **pp = &m->b[hash(m, key) & (m->nb - 1)];
    while (*pp && strcmp((*pp)->key, key) != 0)
        pp = &(*pp)->next;
    return pp;
}

void *strmap_get(const strmap_t *m, const char *key)
{
    struct entry *e = *find(m, key);
    return e ? e->val : NULL;
}

static void grow(strmap_t *m)
{
    size_t nb = m->nb * 2;
    struct entry **b = xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < m->nb; i++) {
        for (struct entry *e = m->b[i], *n; e; e = n) {
            n = e->next;
            size_t k = hash(m, e->key) & (nb - 1);
            e->next = b[k];
            b[k] = e;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

void *strmap_put(strmap_t *m, const char *key, void *val)
{
    struct entry **pp = find(m, key);
    if (*pp) {
        void *old = (*pp)->val;
        (*pp)->val = val;
        return old;
    }
    size_t kl = strlen(key) + 1;
    struct entry *e = xmalloc(sizeof(*e) + kl);
    memcpy(e->key, key, kl);
    e->val = val;
    e->next = NULL;
    *pp = e;
    if (++m->count > m->nb)
        grow(m);
    return NULL;
}

void *strmap_del(strmap_t *m, const char *key)
{
    struct entry **pp = find(m, key), *e = *pp;
    if (!e)
        return NULL;
    void *v = e->val;
    *pp = e->next;
    free(e);
    m->count--;
    return v;
}

size_t strmap_count(const strmap_t *m)
{
    return m->count;
}

void strmap_sweep(strmap_t *m, bool (*fn)(const char *key, void *val, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nb; i++) {
        struct entry **pp = &m->b[i];
        while (*pp) {
            struct entry *e = *pp;
            if (fn(e->key, e->val, arg)) {
                *pp = e->next;
                free(e);
                m->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}
