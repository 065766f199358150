/*
 * refcount — the one reference count, for every shared object (msg, client,
 * room, hist, tls creds). Header-only: each operation is one atomic.
 *
 * Taking a reference is relaxed: the taker already holds one (or the lock
 * that keeps the object alive), so there is nothing to order. Dropping is
 * acq_rel: the release publishes this thread's writes to the object, and
 * the acquire on the last drop makes every other thread's writes visible to
 * the one that frees it.
 *
 * Dropping a count that is already zero means a reference was dropped twice
 * or never taken: the object may already be freed or reused, so nothing
 * after this point can be trusted. It aborts, always (not only in debug
 * builds), naming the type, so the defect shows where it happens instead of
 * as a use after free somewhere else later.
 */
#ifndef PARLEY_REFCOUNT_H
#define PARLEY_REFCOUNT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* The count is a plain _Atomic unsigned field of the object. */

/* Thread: any, before the object is shared. */
static inline void ref_init(_Atomic unsigned *r, unsigned n)
{
    atomic_init(r, n);
}

static inline _Noreturn void ref_underflow(const char *what)
{
    fprintf(stderr, "parley: %s refcount underflow\n", what);
    abort();
}

/* Take a reference; returns the count before (0: the first reference, for
 * owners that track unreferenced objects, as the room registry does).
 * Thread: any. */
static inline unsigned ref_get(_Atomic unsigned *r)
{
    return atomic_fetch_add_explicit(r, 1, memory_order_relaxed);
}

/* Drop a reference; true if it was the last one (the caller frees). what
 * names the type for the underflow message. Thread: any. */
static inline bool ref_put(_Atomic unsigned *r, const char *what)
{
    unsigned old = atomic_fetch_sub_explicit(r, 1, memory_order_acq_rel);
    if (old == 0)
        ref_underflow(what);
    return old == 1;
}

/* Drop a reference unless it is the last one; true if dropped. For owners
 * that must drop the last reference under their lock (the room registry):
 * the others go without it. Thread: any. */
static inline bool ref_put_unless_last(_Atomic unsigned *r)
{
    unsigned old = atomic_load_explicit(r, memory_order_relaxed);
    while (old > 1)
        if (atomic_compare_exchange_weak_explicit(r, &old, old - 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return true;
    return false;
}

#endif
