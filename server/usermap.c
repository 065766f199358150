/*
 * usermap — see usermap.h. Used by every I/O loop thread (with), the dumper
 * and the HTTP API (each) and whichever thread sweeps rate-limit buckets
 * (remove_if).
 *
 * The map is chained with a power-of-two bucket array that doubles under the
 * write lock. Callbacks run with the lock still held, which is what keeps an
 * entry from moving or vanishing while its value is in use: the read lock
 * excludes growth and removal, which both need the write lock.
 *
 * An entry is one allocation: the header, the value area (aligned for any
 * type, since users keep atomics there) and then the NUL-terminated name.
 */
#include "usermap.h"

#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "util.h"

struct uentry {
    struct uentry *next; /* {lock} */
    size_t hash;
    alignas(max_align_t) unsigned char value[]; /* value_size bytes, then the name */
};

struct usermap {
    size_t value_size;
    struct hash_key key; /* this map's own, drawn at creation: names are chosen by clients */
    pthread_rwlock_t lock;
    struct uentry **b; /* {lock} */
    size_t nb, count;  /* {lock} */
};

static size_t hash_name(const usermap_t *m, const char *s)
{
    return (size_t)hash_str(&m->key, s);
}

static const char *entry_name(const usermap_t *m, const struct uentry *e)
{
    return (const char *)e->value + m->value_size;
}

usermap_t *usermap_new(size_t value_size)
{
    usermap_t *m = xcalloc(1, sizeof(*m));

    m->value_size = value_size;
    hash_key_random(&m->key);
    if (pthread_rwlock_init(&m->lock, NULL) != 0)
        abort(); /* only fails for lack of memory, like xmalloc */
    m->nb = 64;
    m->b = xcalloc(m->nb, sizeof(*m->b));
    return m;
}

void usermap_free(usermap_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nb; i++) {
        for (struct uentry *e = m->b[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(m->b);
    pthread_rwlock_destroy(&m->lock);
    free(m);
}

/* Caller holds the lock (read or write). */
static struct uentry *find_locked(usermap_t *m, const char *name, size_t h)
{
    for (struct uentry *e = m->b[h & (m->nb - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(entry_name(m, e), name) == 0)
            return e;
    return NULL;
}

/* Caller holds the write lock. */
static void grow_locked(usermap_t *m)
{
    size_t nb = m->nb * 2;
    struct uentry **b = xcalloc(nb, sizeof(*b));

    for (size_t i = 0; i < m->nb; i++) {
        for (struct uentry *e = m->b[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

/* Caller holds the write lock and has looked for name first. */
static struct uentry *insert_locked(usermap_t *m, const char *name, size_t h)
{
    size_t len = strlen(name);
    struct uentry *e = xmalloc(sizeof(*e) + m->value_size + len + 1);

    memset(e->value, 0, m->value_size);
    memcpy(e->value + m->value_size, name, len + 1);
    e->hash = h;
    if (m->count >= m->nb)
        grow_locked(m);
    e->next = m->b[h & (m->nb - 1)];
    m->b[h & (m->nb - 1)] = e;
    m->count++;
    return e;
}

bool usermap_with(usermap_t *m, const char *name, bool create, usermap_fn fn, void *arg)
{
    size_t h = hash_name(m, name);
    struct uentry *e;
    bool created = false;

    pthread_rwlock_rdlock(&m->lock);
    e = find_locked(m, name, h);
    if (e) {
        fn(e->value, false, arg);
        pthread_rwlock_unlock(&m->lock);
        return true;
    }
    pthread_rwlock_unlock(&m->lock);
    if (!create)
        return false;

    /* miss: look again under the write lock, since another thread may have
     * created the entry between our unlock and this lock */
    pthread_rwlock_wrlock(&m->lock);
    e = find_locked(m, name, h);
    if (!e) {
        e = insert_locked(m, name, h);
        created = true;
    }
    fn(e->value, created, arg);
    pthread_rwlock_unlock(&m->lock);
    return true;
}

size_t usermap_each(usermap_t *m, usermap_each_fn fn, void *arg)
{
    size_t n = 0;

    pthread_rwlock_rdlock(&m->lock);
    for (size_t i = 0; i < m->nb; i++) {
        for (struct uentry *e = m->b[i]; e; e = e->next) {
            fn(entry_name(m, e), e->value, arg);
            n++;
        }
    }
    pthread_rwlock_unlock(&m->lock);
    return n;
}

size_t usermap_remove_if(usermap_t *m, usermap_pred_fn pred, void *arg)
{
    size_t removed = 0;

    pthread_rwlock_wrlock(&m->lock);
    for (size_t i = 0; i < m->nb; i++) {
        struct uentry **pp = &m->b[i];
        while (*pp) {
            struct uentry *e = *pp;
            if (pred(entry_name(m, e), e->value, arg)) {
                *pp = e->next;
                free(e);
                m->count--;
                removed++;
            } else {
                pp = &e->next;
            }
        }
    }
    pthread_rwlock_unlock(&m->lock);
    return removed;
}

size_t usermap_count(usermap_t *m)
{
    size_t n;

    pthread_rwlock_rdlock(&m->lock);
    n = m->count;
    pthread_rwlock_unlock(&m->lock);
    return n;
}
