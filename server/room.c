/*
 * room — see room.h. The registry is a chained hash table under a rwlock;
 * each room has its own mutex. Lock order: registry -> room -> client.
 */
#include "room.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "hash.h"
#include "strmap.h"
#include "util.h"

struct rooms {
    pthread_rwlock_t lock;
    struct room **buckets; /* {lock} */
    size_t nbuckets, count; /* {lock} */
    size_t window;
    struct hash_key key; /* drawn at creation: any client may create rooms */
};

struct hist *hist_new(const char *room, uint64_t seq, const char *from, const char *text,
                      size_t text_len, int64_t ts, const char *id)
{
    size_t rl = strlen(room) + 1, fl = strlen(from) + 1, il = id ? strlen(id) + 1 : 1;
    struct hist *h = xmalloc(sizeof(*h) + rl + fl + il + text_len + 1);
    char *p = h->buf;

    atomic_init(&h->refs, 1);
    memcpy(p, room, rl);
    h->m.room = p;
    p += rl;
    memcpy(p, from, fl);
    h->m.from = p;
    p += fl;
    memcpy(p, id ? id : "", il);
    h->m.id = p;
    p += il;
    memcpy(p, text, text_len);
    p[text_len] = '\0';
    h->m.text = p;
    h->m.text_len = text_len;
    h->m.seq = seq;
    h->m.ts = ts;
    return h;
}

struct hist *hist_ref(struct hist *h)
{
    atomic_fetch_add_explicit(&h->refs, 1, memory_order_relaxed);
    return h;
}

void hist_unref(struct hist **hp)
{
    struct hist *h = *hp;
    if (!h)
        return;
    *hp = NULL;
    unsigned old = atomic_fetch_sub_explicit(&h->refs, 1, memory_order_acq_rel);
    if (old == 0)
        abort();
    if (old == 1)
        free(h);
}

/* Keyed: room names are chosen by clients, and with an unkeyed hash they
 * could pick names that all share one chain. */
static size_t hash_name(const rooms_t *r, const char *s)
{
    return (size_t)hash_str(&r->key, s);
}

rooms_t *rooms_new(size_t window)
{
    rooms_t *r = xcalloc(1, sizeof(*r));
    pthread_rwlock_init(&r->lock, NULL);
    hash_key_random(&r->key);
    r->nbuckets = 64;
    r->buckets = xcalloc(r->nbuckets, sizeof(*r->buckets));
    r->window = window ? window : 1;
    return r;
}

static void window_release(struct room *rm)
{
    for (size_t i = 0; i < rm->wcount; i++)
        hist_unref(&rm->win[(rm->whead + i) % rm->wcap]);
    free(rm->win);
    rm->win = NULL;
    rm->whead = rm->wcount = 0;
}

static void room_free(struct room *rm)
{
    for (size_t i = 0; i < rm->nmembers; i++)
        client_unref(&rm->members[i]);
    free(rm->members);
    window_release(rm);
    strmap_free(rm->joined_ever, NULL);
    pthread_mutex_destroy(&rm->lock);
    free(rm);
}

void rooms_free(rooms_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nbuckets; i++) {
        for (struct room *rm = r->buckets[i], *n; rm; rm = n) {
            n = rm->hnext;
            room_free(rm);
        }
    }
    free(r->buckets);
    pthread_rwlock_destroy(&r->lock);
    free(r);
}

static struct room *find_locked(rooms_t *r, const char *name)
{
    for (struct room *rm = r->buckets[hash_name(r, name) & (r->nbuckets - 1)]; rm; rm = rm->hnext)
        if (strcmp(rm->name, name) == 0)
            return rm;
    return NULL;
}

static void grow_locked(rooms_t *r)
{
    size_t nb = r->nbuckets * 2;
    struct room **b = xcalloc(nb, sizeof(*b));
    for (size_t i = 0; i < r->nbuckets; i++) {
        for (struct room *rm = r->buckets[i], *n; rm; rm = n) {
            n = rm->hnext;
            size_t k = hash_name(r, rm->name) & (nb - 1);
            rm->hnext = b[k];
            b[k] = rm;
        }
    }
    free(r->buckets);
    r->buckets = b;
    r->nbuckets = nb;
}

static struct room *create_locked(rooms_t *r, const char *name)
{
    struct room *rm = xcalloc(1, sizeof(*rm));
    str_lcpy(rm->name, name, sizeof(rm->name));
    rm->is_dm = strncmp(name, "dm:", 3) == 0;
    atomic_init(&rm->refs, 0);
    pthread_mutex_init(&rm->lock, NULL);
    rm->wcap = r->window;
    if (r->count + 1 > r->nbuckets)
        grow_locked(r);
    size_t k = hash_name(r, name) & (r->nbuckets - 1);
    rm->hnext = r->buckets[k];
    r->buckets[k] = rm;
    r->count++;
    return rm;
}

void rooms_preload(rooms_t *r, const char *name, uint64_t seq)
{
    pthread_rwlock_wrlock(&r->lock);
    struct room *rm = find_locked(r, name);
    if (!rm)
        rm = create_locked(r, name);
    rm->seq = seq;
    pthread_rwlock_unlock(&r->lock);
}

struct room *rooms_acquire(rooms_t *r, const char *name, bool create)
{
    struct room *rm;

    pthread_rwlock_rdlock(&r->lock);
    rm = find_locked(r, name);
    if (rm)
        atomic_fetch_add_explicit(&rm->refs, 1, memory_order_relaxed);
    pthread_rwlock_unlock(&r->lock);
    if (rm || !create)
        return rm;

    pthread_rwlock_wrlock(&r->lock);
    rm = find_locked(r, name); /* another thread may have created it meanwhile */
    if (!rm)
        rm = create_locked(r, name);
    atomic_fetch_add_explicit(&rm->refs, 1, memory_order_relaxed);
    pthread_rwlock_unlock(&r->lock);
    return rm;
}

static void unlink_locked(rooms_t *r, struct room *rm)
{
    struct room **pp = &r->buckets[hash_name(r, rm->name) & (r->nbuckets - 1)];
    while (*pp != rm)
        pp = &(*pp)->hnext;
    *pp = rm->hnext;
    r->count--;
}

void rooms_release(rooms_t *r, struct room **rp)
{
    struct room *rm = *rp;
    if (!rm)
        return;
    *rp = NULL;
    /* Not the last reference: drop it without the lock. The last one is
     * dropped under the write lock, where no lookup can take a new one, so
     * exactly one releaser sees the count reach zero and may reclaim. */
    unsigned old = atomic_load_explicit(&rm->refs, memory_order_relaxed);
    while (old > 1)
        if (atomic_compare_exchange_weak_explicit(&rm->refs, &old, old - 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return;
    pthread_rwlock_wrlock(&r->lock);
    if (atomic_fetch_sub_explicit(&rm->refs, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_lock(&rm->lock);
        bool empty = rm->nmembers == 0;
        /* a room nobody ever joined and nobody wrote to leaves no trace;
         * one that was joined keeps who joined, for @mentions */
        bool unused = empty && rm->seq == 0 && !rm->joined_ever;
        if (empty && !unused) {
            window_release(rm);
            free(rm->members);
            rm->members = NULL;
            rm->mcap = 0;
        }
        pthread_mutex_unlock(&rm->lock);
        if (unused) {
            unlink_locked(r, rm);
            room_free(rm);
        }
    }
    pthread_rwlock_unlock(&r->lock);
}

size_t rooms_list(rooms_t *r, struct room_snapshot *out, size_t max)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->nbuckets && n < max; i++) {
        for (struct room *rm = r->buckets[i]; rm && n < max; rm = rm->hnext) {
            if (rm->is_dm)
                continue;
            pthread_mutex_lock(&rm->lock);
            if (rm->nmembers) {
                str_lcpy(out[n].name, rm->name, sizeof(out[n].name));
                out[n].members = (unsigned)room_member_names_locked(rm, NULL, SIZE_MAX);
                out[n].seq = rm->seq;
                n++;
            }
            pthread_mutex_unlock(&rm->lock);
        }
    }
    pthread_rwlock_unlock(&r->lock);
    return n;
}

size_t rooms_active(rooms_t *r)
{
    size_t n = 0;
    pthread_rwlock_rdlock(&r->lock);
    for (size_t i = 0; i < r->nbuckets; i++) {
        for (struct room *rm = r->buckets[i]; rm; rm = rm->hnext) {
            pthread_mutex_lock(&rm->lock);
            n += rm->nmembers > 0;
            pthread_mutex_unlock(&rm->lock);
        }
    }
    pthread_rwlock_unlock(&r->lock);
    return n;
}

bool room_has_member_locked(const struct room *rm, const struct client *c)
{
    for (size_t i = 0; i < rm->nmembers; i++)
        if (rm->members[i] == c)
            return true;
    return false;
}

bool room_add_member_locked(struct room *rm, struct client *c)
{
    if (room_has_member_locked(rm, c))
        return false;
    if (rm->nmembers == rm->mcap) {
        rm->mcap = rm->mcap ? rm->mcap * 2 : 4;
        rm->members = xrealloc(rm->members, rm->mcap * sizeof(*rm->members));
    }
    rm->members[rm->nmembers++] = client_ref(c);
    if (!rm->joined_ever)
        rm->joined_ever = strmap_new();
    strmap_put(rm->joined_ever, c->user, rm);
    return true;
}

bool room_remove_member_locked(struct room *rm, struct client *c)
{
    for (size_t i = 0; i < rm->nmembers; i++) {
        if (rm->members[i] == c) {
            /* swap-remove: member order carries no meaning */
            rm->members[i] = rm->members[--rm->nmembers];
            client_unref(&c);
            return true;
        }
    }
    return false;
}

bool room_user_joined_ever_locked(const struct room *rm, const char *user)
{
    return rm->joined_ever && strmap_get(rm->joined_ever, user) != NULL;
}

unsigned room_user_conns_locked(const struct room *rm, const char *user)
{
    unsigned n = 0;
    for (size_t i = 0; i < rm->nmembers; i++)
        n += strcmp(rm->members[i]->user, user) == 0;
    return n;
}

size_t room_member_names_locked(const struct room *rm, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < rm->nmembers && n < max; i++) {
        const char *u = rm->members[i]->user;
        size_t j;
        /* count a user at their first connection in the member array */
        for (j = 0; j < i; j++)
            if (strcmp(rm->members[j]->user, u) == 0)
                break;
        if (j < i)
            continue;
        if (out)
            out[n] = u;
        n++;
    }
    return n;
}

void room_append_locked(struct room *rm, struct hist *h)
{
    if (!rm->win)
        rm->win = xcalloc(rm->wcap, sizeof(*rm->win));
    if (rm->wcount == rm->wcap) {
        hist_unref(&rm->win[rm->whead]);
        rm->whead = (rm->whead + 1) % rm->wcap;
        rm->wcount--;
    }
    rm->win[(rm->whead + rm->wcount) % rm->wcap] = hist_ref(h);
    rm->wcount++;
    rm->seq = h->m.seq;
}

uint64_t room_window_lo_locked(const struct room *rm)
{
    return rm->seq + 1 - rm->wcount;
}

size_t room_window_copy_locked(const struct room *rm, uint64_t a, uint64_t b, struct hist **out)
{
    uint64_t lo = room_window_lo_locked(rm);
    size_t n = 0;
    if (a < lo)
        a = lo;
    for (uint64_t s = a; s <= b && s <= rm->seq; s++)
        out[n++] = hist_ref(rm->win[(rm->whead + (s - lo)) % rm->wcap]);
    return n;
}
