/*
 * ratelimit — see ratelimit.h. Used by every I/O loop thread (take) and by
 * whichever thread runs the periodic sweep.
 *
 * Each bucket is kept in the "theoretical arrival time" form of a token
 * bucket (GCRA): instead of a token count and a last-refill time, one
 * integer tat such that the bucket holds (tau - max(0, tat - now)) / T
 * tokens, where T is the time one token takes to refill and tau = burst * T
 * the time to refill an empty bucket. Taking a token is tat = max(tat, now)
 * + T, allowed when that leaves tat - now <= tau; a refusal's retry time is
 * exactly how far past tau it would land. This is the same bucket with the
 * same maths, but in integer nanoseconds (exact, no float drift) and with
 * the whole state in one 64-bit word, so a take is a lock-free
 * compare-and-swap loop instead of a per-bucket mutex (no mutex to create,
 * destroy or contend for when several connections of one user race).
 *
 * The strike count is a separate atomic: reset on success, incremented on
 * refusal. When two connections of the same user race, a reset and an
 * increment can land in either order — at worst one strike off, which a
 * threshold like "close after 20" does not notice.
 *
 * The map of buckets uses the read/write split of counters.c: the read lock
 * on the hot path (held across the take, so a sweep cannot free a bucket in
 * use), the write lock only to create a bucket (after looking again) or to
 * sweep.
 */
#include "ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct bucket {
    struct bucket *next;
    size_t hash;
    _Atomic int64_t tat;      /* theoretical arrival time, ns */
    _Atomic int64_t last_ns;  /* last take (allowed or refused), for the sweep */
    _Atomic unsigned strikes; /* refusals in a row */
    char name[];
};

struct ratelimit {
    int64_t t_ns;   /* refill time of one token */
    int64_t tau_ns; /* refill time of a whole bucket: burst * t_ns */
    double burst;
    pthread_rwlock_t lock;
    struct bucket **b; /* {lock} */
    size_t nb, count;  /* {lock} */
};

static size_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29));
}

ratelimit_t *ratelimit_new(double rate_per_s, double burst)
{
    ratelimit_t *rl;

    if (!isfinite(rate_per_s) || rate_per_s < 0.001 || rate_per_s > 1e9 || !isfinite(burst) ||
        burst < 1 || burst > 1e6)
        return NULL;
    rl = xcalloc(1, sizeof(*rl));
    /* round to the nearest ns (the ranges keep both well inside int64_t);
     * done by hand so the module needs no libm */
    rl->t_ns = (int64_t)(1e9 / rate_per_s + 0.5);
    rl->tau_ns = (int64_t)(burst * (double)rl->t_ns + 0.5);
    rl->burst = burst;
    if (pthread_rwlock_init(&rl->lock, NULL) != 0)
        abort(); /* only fails for lack of memory, like xmalloc */
    rl->nb = 64;
    rl->b = xcalloc(rl->nb, sizeof(*rl->b));
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (!rl)
        return;
    for (size_t i = 0; i < rl->nb; i++) {
        for (struct bucket *e = rl->b[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(rl->b);
    pthread_rwlock_destroy(&rl->lock);
    free(rl);
}

/* Caller holds the lock (read or write). */
static struct bucket *find_locked(ratelimit_t *rl, const char *user, size_t h)
{
    for (struct bucket *e = rl->b[h & (rl->nb - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->name, user) == 0)
            return e;
    return NULL;
}

/* Caller holds the write lock. */
static void grow_locked(ratelimit_t *rl)
{
    size_t nb = rl->nb * 2;
    struct bucket **b = xcalloc(nb, sizeof(*b));

    for (size_t i = 0; i < rl->nb; i++) {
        for (struct bucket *e = rl->b[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(rl->b);
    rl->b = b;
    rl->nb = nb;
}

/* Caller holds the write lock and has looked for user first. */
static struct bucket *insert_locked(ratelimit_t *rl, const char *user, size_t h, int64_t now_ns)
{
    size_t len = strlen(user);
    struct bucket *e = xmalloc(sizeof(*e) + len + 1);

    memcpy(e->name, user, len + 1);
    e->hash = h;
    atomic_init(&e->tat, INT64_MIN); /* full: max(tat, now) is now */
    atomic_init(&e->last_ns, now_ns);
    atomic_init(&e->strikes, 0);
    if (rl->count >= rl->nb)
        grow_locked(rl);
    e->next = rl->b[h & (rl->nb - 1)];
    rl->b[h & (rl->nb - 1)] = e;
    rl->count++;
    return e;
}

/* The take itself; the caller holds the map lock (read or write) so e stays. */
static bool take_locked(ratelimit_t *rl, struct bucket *e, int64_t now_ns, int64_t *retry_after_ms,
                        unsigned *strikes)
{
    int64_t tat = atomic_load_explicit(&e->tat, memory_order_relaxed);
    unsigned s = 0;
    int64_t retry_ns = 0;
    bool ok;

    /* relaxed is enough: tat is the whole state, nothing else is published
     * through it, and the CAS makes each update see the previous one */
    for (;;) {
        int64_t next = (tat > now_ns ? tat : now_ns) + rl->t_ns;
        if (next - now_ns > rl->tau_ns) {
            retry_ns = next - now_ns - rl->tau_ns;
            ok = false;
            break;
        }
        if (atomic_compare_exchange_weak_explicit(&e->tat, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            ok = true;
            break;
        }
    }
    atomic_store_explicit(&e->last_ns, now_ns, memory_order_relaxed);
    if (ok)
        atomic_store_explicit(&e->strikes, 0, memory_order_relaxed);
    else
        s = atomic_fetch_add_explicit(&e->strikes, 1, memory_order_relaxed) + 1;

    if (retry_after_ms)
        *retry_after_ms = (retry_ns + 999999) / 1000000;
    if (strikes)
        *strikes = s;
    return ok;
}

bool ratelimit_take(ratelimit_t *rl, const char *user, int64_t now_ns, int64_t *retry_after_ms,
                    unsigned *strikes)
{
    size_t h = hash_name(user);
    struct bucket *e;
    bool ok;

    pthread_rwlock_rdlock(&rl->lock);
    e = find_locked(rl, user, h);
    if (e) {
        ok = take_locked(rl, e, now_ns, retry_after_ms, strikes);
        pthread_rwlock_unlock(&rl->lock);
        return ok;
    }
    pthread_rwlock_unlock(&rl->lock);

    /* miss: look again under the write lock, another thread may have created it */
    pthread_rwlock_wrlock(&rl->lock);
    e = find_locked(rl, user, h);
    if (!e)
        e = insert_locked(rl, user, h, now_ns);
    ok = take_locked(rl, e, now_ns, retry_after_ms, strikes);
    pthread_rwlock_unlock(&rl->lock);
    return ok;
}

size_t ratelimit_sweep(ratelimit_t *rl, int64_t now_ns, int64_t idle_ns)
{
    size_t freed = 0;

    pthread_rwlock_wrlock(&rl->lock);
    for (size_t i = 0; i < rl->nb; i++) {
        struct bucket **pp = &rl->b[i];
        while (*pp) {
            struct bucket *e = *pp;
            /* the write lock excludes every take, so plain reads would do;
             * the atomics are read as such to keep the types honest */
            int64_t tat = atomic_load_explicit(&e->tat, memory_order_relaxed);
            int64_t last = atomic_load_explicit(&e->last_ns, memory_order_relaxed);
            if (tat <= now_ns && now_ns - last > idle_ns) {
                *pp = e->next;
                free(e);
                rl->count--;
                freed++;
            } else {
                pp = &e->next;
            }
        }
    }
    pthread_rwlock_unlock(&rl->lock);
    return freed;
}

size_t ratelimit_count(ratelimit_t *rl)
{
    size_t n;

    pthread_rwlock_rdlock(&rl->lock);
    n = rl->count;
    pthread_rwlock_unlock(&rl->lock);
    return n;
}

double ratelimit_tokens(ratelimit_t *rl, const char *user, int64_t now_ns)
{
    double tokens = rl->burst;

    pthread_rwlock_rdlock(&rl->lock);
    struct bucket *e = find_locked(rl, user, hash_name(user));
    if (e) {
        int64_t tat = atomic_load_explicit(&e->tat, memory_order_relaxed);
        int64_t debt = tat > now_ns ? tat - now_ns : 0;
        tokens = (double)(rl->tau_ns - debt) / (double)rl->t_ns;
    }
    pthread_rwlock_unlock(&rl->lock);
    return tokens;
}
