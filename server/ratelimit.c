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
 * The map of buckets is a usermap (shared with counters.c): the read lock
 * on the hot path (held across the take, which runs as the map's callback,
 * so a sweep cannot free a bucket in use), the write lock only to create a
 * bucket (after looking again) or to sweep.
 */
#include "ratelimit.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "usermap.h"
#include "util.h"

struct bucket {
    _Atomic int64_t tat;      /* theoretical arrival time, ns */
    _Atomic int64_t last_ns;  /* last take (allowed or refused), for the sweep */
    _Atomic unsigned strikes; /* refusals in a row */
};

struct ratelimit {
    int64_t t_ns;   /* refill time of one token */
    int64_t tau_ns; /* refill time of a whole bucket: burst * t_ns */
    double burst;
    usermap_t *map; /* name -> struct bucket */
};

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
    rl->map = usermap_new(sizeof(struct bucket));
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (!rl)
        return;
    usermap_free(rl->map);
    free(rl);
}

/* One take's inputs and outputs, passed through usermap_with. */
struct take {
    ratelimit_t *rl;
    int64_t now_ns;
    int64_t retry_ns;
    unsigned strikes;
    bool ok;
};

/* The take itself; runs under the map lock (read or write) so the bucket
 * stays. */
static void take_locked(void *value, bool created, void *arg)
{
    struct bucket *e = value;
    struct take *t = arg;
    int64_t now_ns = t->now_ns;
    int64_t tat;

    /* a new bucket is set up under the write lock, before others can see it */
    if (created) {
        atomic_init(&e->tat, INT64_MIN); /* full: max(tat, now) is now */
        atomic_init(&e->last_ns, now_ns);
        atomic_init(&e->strikes, 0);
    }
    tat = atomic_load_explicit(&e->tat, memory_order_relaxed);
    /* relaxed is enough: tat is the whole state, nothing else is published
     * through it, and the CAS makes each update see the previous one */
    for (;;) {
        int64_t next = (tat > now_ns ? tat : now_ns) + t->rl->t_ns;
        if (next - now_ns > t->rl->tau_ns) {
            t->retry_ns = next - now_ns - t->rl->tau_ns;
            t->ok = false;
            break;
        }
        if (atomic_compare_exchange_weak_explicit(&e->tat, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            t->ok = true;
            break;
        }
    }
    atomic_store_explicit(&e->last_ns, now_ns, memory_order_relaxed);
    if (t->ok)
        atomic_store_explicit(&e->strikes, 0, memory_order_relaxed);
    else
        t->strikes = atomic_fetch_add_explicit(&e->strikes, 1, memory_order_relaxed) + 1;
}

bool ratelimit_take(ratelimit_t *rl, const char *user, int64_t now_ns, int64_t *retry_after_ms,
                    unsigned *strikes)
{
    struct take t = {.rl = rl, .now_ns = now_ns};

    usermap_with(rl->map, user, true, take_locked, &t);
    if (retry_after_ms)
        *retry_after_ms = (t.retry_ns + 999999) / 1000000;
    if (strikes)
        *strikes = t.strikes;
    return t.ok;
}

/* The sweep's test, under the write lock. */
struct sweep {
    int64_t now_ns, idle_ns;
};

static bool idle_and_full(const char *name, void *value, void *arg)
{
    struct bucket *e = value;
    const struct sweep *sw = arg;

    (void)name;
    /* the write lock excludes every take, so plain reads would do; the
     * atomics are read as such to keep the types honest */
    int64_t tat = atomic_load_explicit(&e->tat, memory_order_relaxed);
    int64_t last = atomic_load_explicit(&e->last_ns, memory_order_relaxed);
    return tat <= sw->now_ns && sw->now_ns - last > sw->idle_ns;
}

size_t ratelimit_sweep(ratelimit_t *rl, int64_t now_ns, int64_t idle_ns)
{
    struct sweep sw = {.now_ns = now_ns, .idle_ns = idle_ns};

    return usermap_remove_if(rl->map, idle_and_full, &sw);
}

size_t ratelimit_count(ratelimit_t *rl)
{
    return usermap_count(rl->map);
}

/* ratelimit_tokens' query: in, the time; out, the tokens. */
struct tokens {
    ratelimit_t *rl;
    int64_t now_ns;
    double tokens;
};

static void read_tokens(void *value, bool created, void *arg)
{
    struct bucket *e = value;
    struct tokens *q = arg;

    (void)created; /* never: looked up without create */
    int64_t tat = atomic_load_explicit(&e->tat, memory_order_relaxed);
    int64_t debt = tat > q->now_ns ? tat - q->now_ns : 0;
    q->tokens = (double)(q->rl->tau_ns - debt) / (double)q->rl->t_ns;
}

double ratelimit_tokens(ratelimit_t *rl, const char *user, int64_t now_ns)
{
    struct tokens q = {.rl = rl, .now_ns = now_ns, .tokens = rl->burst};

    usermap_with(rl->map, user, false, read_tokens, &q);
    return q.tokens;
}
