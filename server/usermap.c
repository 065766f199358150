/*
 * usermap — see usermap.h. Used by every I/O loop thread (with), the dumper
 * and the HTTP API (each) and whichever thread sweeps rate-limit buckets
 * (remove_if).
 *
 * The map is an htable (htable.h) guarded by the rwlock. Callbacks run with
 * the lock still held, which is what keeps an entry from moving or vanishing
 * while its value is in use: the read lock excludes growth and removal,
 * which both need the write lock.
 *
 * An entry is one allocation: the node, the value area (aligned for any
 * type, since users keep atomics there) and then the NUL-terminated name.
 */
#include "usermap.h"

#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "htable.h"
#include "util.h"

struct uentry {
    struct hnode node; /* {lock} */
    alignas(max_align_t) unsigned char value[]; /* value_size bytes, then the name */
};

struct usermap {
    size_t value_size;
    pthread_rwlock_t lock;
    struct htable t; /* {lock} its own key, drawn at creation: clients choose names */
};

static const char *entry_name(const usermap_t *m, const struct uentry *e)
{
    return (const char *)e->value + m->value_size;
}

usermap_t *usermap_new(size_t value_size)
{
    usermap_t *m = xcalloc(1, sizeof(*m));

    m->value_size = value_size;
    if (pthread_rwlock_init(&m->lock, NULL) != 0)
        abort(); /* only fails for lack of memory, like xmalloc */
    htable_init(&m->t, 64);
    return m;
}

static bool free_entry(struct hnode *n, void *arg)
{
    (void)arg;
    free(htable_entry(n, struct uentry, node));
    return true;
}

void usermap_free(usermap_t *m)
{
    if (!m)
        return;
    htable_sweep(&m->t, free_entry, NULL);
    htable_fini(&m->t);
    pthread_rwlock_destroy(&m->lock);
    free(m);
}

/* Caller holds the lock (read or write); h is htable_hash of name. */
static struct uentry *find_locked(usermap_t *m, const char *name, uint64_t h)
{
    struct hnode *n = htable_find_hashed(&m->t, name, h);
    return n ? htable_entry(n, struct uentry, node) : NULL;
}

/* Caller holds the write lock and has looked for name first. */
static struct uentry *insert_locked(usermap_t *m, const char *name, uint64_t h)
{
    size_t len = strlen(name);
    struct uentry *e = xmalloc(sizeof(*e) + m->value_size + len + 1);

    memset(e->value, 0, m->value_size);
    memcpy(e->value + m->value_size, name, len + 1);
    htable_insert_hashed(&m->t, &e->node, entry_name(m, e), h);
    return e;
}

bool usermap_with(usermap_t *m, const char *name, bool create, usermap_fn fn, void *arg)
{
    struct uentry *e;
    bool created = false;
    /* hashed once, before any lock: readers hold the read lock only for the
     * bucket walk, and a miss does not hash again under the write lock */
    uint64_t h = htable_hash(&m->t, name);

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

    struct htable_iter it;

    pthread_rwlock_rdlock(&m->lock);
    for (struct hnode *h = htable_first(&m->t, &it); h; h = htable_next(&it), n++) {
        struct uentry *e = htable_entry(h, struct uentry, node);
        fn(entry_name(m, e), e->value, arg);
    }
    pthread_rwlock_unlock(&m->lock);
    return n;
}

struct remove_ctx {
    usermap_t *m;
    usermap_pred_fn pred;
    void *arg;
};

static bool remove_one(struct hnode *n, void *arg)
{
    struct remove_ctx *r = arg;
    struct uentry *e = htable_entry(n, struct uentry, node);
    if (!r->pred(entry_name(r->m, e), e->value, r->arg))
        return false;
    free(e);
    return true;
}

size_t usermap_remove_if(usermap_t *m, usermap_pred_fn pred, void *arg)
{
    struct remove_ctx r = {m, pred, arg};
    size_t removed;

    pthread_rwlock_wrlock(&m->lock);
    removed = htable_sweep(&m->t, remove_one, &r);
    pthread_rwlock_unlock(&m->lock);
    return removed;
}

size_t usermap_count(usermap_t *m)
{
    size_t n;

    pthread_rwlock_rdlock(&m->lock);
    n = htable_count(&m->t);
    pthread_rwlock_unlock(&m->lock);
    return n;
}
