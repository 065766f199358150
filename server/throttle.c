/*
 * throttle — see throttle.h. Run by the event loops (enter, on every login
 * or register request, before any hashing) and by the accounts workers
 * (leave, with the result; the periodic sweep).
 */
#include "throttle.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "strmap.h"
#include "util.h"

/* A full table is swept on a new key at most this often: the sweep walks
 * every entry, and a flood of new keys must not make each of them pay. */
#define FULL_SWEEP_MS 1000

struct entry {
    unsigned failures;     /* on record (since the last success, or forgotten) */
    unsigned inflight;     /* slots taken and not yet given back */
    int64_t blocked_until; /* refused before this time; 0: not blocked */
    int64_t last_ms;       /* last failure */
};

struct throttle {
    struct throttle_opts o;
    struct backoff bo;
    pthread_mutex_t lock;
    strmap_t *map;           /* {lock} key -> struct entry */
    int64_t last_full_sweep; /* {lock} */
};

throttle_t *throttle_new(const struct throttle_opts *o)
{
    throttle_t *t = xcalloc(1, sizeof(*t));
    t->o = *o;
    if (t->o.limit < 1)
        t->o.limit = 1;
    if (t->o.max_keys < 1)
        t->o.max_keys = 1;
    t->bo =
        (struct backoff){.base_ms = o->base_ms, .max_ms = o->max_ms, .jitter = BACKOFF_JITTER_NONE};
    pthread_mutex_init(&t->lock, NULL);
    t->map = strmap_new();
    t->last_full_sweep = INT64_MIN / 2;
    return t;
}

void throttle_free(throttle_t *t)
{
    if (!t)
        return;
    strmap_free(t->map, free);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static bool expired(const struct throttle *t, const struct entry *e, int64_t now_ms)
{
    if (e->inflight)
        return false;
    if (!e->failures)
        return true;
    int64_t quiet_since = e->blocked_until > e->last_ms ? e->blocked_until : e->last_ms;
    return now_ms - quiet_since >= t->o.forget_ms;
}

struct sweep_arg {
    const struct throttle *t;
    int64_t now_ms;
    size_t removed;
};

static bool sweep_one(const char *key, void *val, void *arg)
{
    struct sweep_arg *sa = arg;
    (void)key;
    if (!expired(sa->t, val, sa->now_ms))
        return false;
    free(val);
    sa->removed++;
    return true;
}

static size_t sweep_locked(throttle_t *t, int64_t now_ms)
{
    struct sweep_arg sa = {.t = t, .now_ms = now_ms};
    strmap_sweep(t->map, sweep_one, &sa);
    return sa.removed;
}

enum throttle_verdict throttle_enter(throttle_t *t, const char *key, int64_t now_ms,
                                     int64_t *retry_ms)
{
    enum throttle_verdict v = THROTTLE_OK;
    int64_t retry = 0;

    pthread_mutex_lock(&t->lock);
    struct entry *e = strmap_get(t->map, key);
    if (e && expired(t, e, now_ms)) {
        /* what it remembers is over: start again as a new key */
        e->failures = 0;
        e->blocked_until = 0;
    }
    if (!e) {
        if (strmap_count(t->map) >= t->o.max_keys && now_ms - t->last_full_sweep >= FULL_SWEEP_MS) {
            t->last_full_sweep = now_ms;
            sweep_locked(t, now_ms);
        }
        if (strmap_count(t->map) >= t->o.max_keys) {
            v = THROTTLE_FULL;
            goto out;
        }
        e = xcalloc(1, sizeof(*e));
        strmap_put(t->map, key, e);
    } else if (now_ms < e->blocked_until) {
        v = THROTTLE_BLOCKED;
        retry = e->blocked_until - now_ms;
        goto out;
    } else if (t->o.max_inflight && e->inflight >= t->o.max_inflight) {
        v = THROTTLE_BUSY;
        goto out;
    }
    e->inflight++;
out:
    pthread_mutex_unlock(&t->lock);
    if (retry_ms)
        *retry_ms = retry;
    return v;
}

void throttle_leave(throttle_t *t, const char *key, enum throttle_outcome o, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    struct entry *e = strmap_get(t->map, key);
    if (!e || !e->inflight)
        goto out; /* not entered: nothing to give back */
    e->inflight--;
    if (o == THROTTLE_FAILURE) {
        if (e->failures < UINT32_MAX)
            e->failures++;
        e->last_ms = now_ms;
        if (e->failures >= t->o.limit) {
            /* the failure that reaches the limit blocks for base, the next
             * for twice that, ... (backoff_cap_ms never overflows) */
            int k =
                (int)(e->failures - t->o.limit + 1 < 1000 ? e->failures - t->o.limit + 1 : 1000);
            e->blocked_until = now_ms + backoff_cap_ms(&t->bo, k);
        }
    } else if (o == THROTTLE_SUCCESS && t->o.reset_on_success) {
        e->failures = 0;
        e->blocked_until = 0;
    }
    if (!e->inflight && !e->failures)
        free(strmap_del(t->map, key));
out:
    pthread_mutex_unlock(&t->lock);
}

size_t throttle_sweep(throttle_t *t, int64_t now_ms)
{
    pthread_mutex_lock(&t->lock);
    size_t n = sweep_locked(t, now_ms);
    pthread_mutex_unlock(&t->lock);
    return n;
}

size_t throttle_count(throttle_t *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = strmap_count(t->map);
    pthread_mutex_unlock(&t->lock);
    return n;
}

unsigned throttle_failures(throttle_t *t, const char *key)
{
    pthread_mutex_lock(&t->lock);
    struct entry *e = strmap_get(t->map, key);
    unsigned n = e ? e->failures : 0;
    pthread_mutex_unlock(&t->lock);
    return n;
}

void throttle_addr_key(const char *peer, char *out, size_t outsz)
{
    struct in_addr v4;
    struct in6_addr v6;
    char text[INET6_ADDRSTRLEN];

    if (peer && inet_pton(AF_INET, peer, &v4) == 1 && inet_ntop(AF_INET, &v4, text, sizeof(text))) {
        str_lcpy(out, text, outsz);
        return;
    }
    if (!peer || inet_pton(AF_INET6, peer, &v6) != 1) {
        str_lcpy(out, "unknown", outsz);
        return;
    }
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
        memcpy(&v4, v6.s6_addr + 12, 4);
        inet_ntop(AF_INET, &v4, text, sizeof(text));
        str_lcpy(out, text, outsz);
        return;
    }
    memset(v6.s6_addr + 8, 0, 8);
    inet_ntop(AF_INET6, &v6, text, sizeof(text));
    snprintf(out, outsz, "%s/64", text);
}
