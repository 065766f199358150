/*
 * throttle — back off a key (a user name, a client address) after failed
 * logins, and count the requests of each key that are in flight.
 *
 * A key may fail `limit - 1` times without consequence; the failure that
 * reaches limit, and every one after it, blocks the key for
 * backoff_cap_ms(base_ms, max_ms, k) with k = 1, 2, ... (1 s, 2 s, 4 s, ...
 * up to the ceiling). While blocked, throttle_enter refuses the key with the
 * time left, so a refused attempt costs nothing and is not a failure. A
 * success forgets the key's failures when reset_on_success is set (a user
 * who got the password right); without it (a client address, where one good
 * login must not wash away a spray of guesses at other names) failures are
 * only forgotten once the key has been quiet for forget_ms after its block.
 *
 * In flight: enter takes a slot, leave gives it back with the outcome. With
 * max_inflight, a key already holding that many slots is refused (BUSY): one
 * login per user name at a time means a failure is recorded before the next
 * guess at that name is even looked at, so parallel guesses cannot slip
 * through the window before the first result.
 *
 * Memory: an entry exists only while its key has a slot in flight or a
 * failure on record, and at most max_keys of them. Entries expire (see
 * above) and throttle_sweep removes them; when the table is full enter
 * sweeps (at most once per second) and then refuses new keys (FULL) — fail
 * closed, so filling the table never turns throttling off. Every failure
 * that creates an entry costs the caller a password hash, which bounds how
 * fast anybody can fill it.
 *
 * Times are monotonic milliseconds passed in by the caller (tests pin them).
 * Thread: any; one mutex per table, held for a map lookup or a sweep.
 */
#ifndef PARLEY_THROTTLE_H
#define PARLEY_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct throttle throttle_t;

struct throttle_opts {
    unsigned limit;        /* failures on record before the key backs off (>= 1) */
    int64_t base_ms;       /* the first block */
    int64_t max_ms;        /* the ceiling blocks double up to */
    int64_t forget_ms;     /* quiet time after the last failure or block before forgetting */
    unsigned max_inflight; /* slots per key; 0: no limit */
    bool reset_on_success; /* a success forgets the key's failures */
    size_t max_keys;       /* entries held at most (>= 1) */
};

enum throttle_verdict {
    THROTTLE_OK,      /* admitted: one slot taken, give it back with throttle_leave */
    THROTTLE_BLOCKED, /* the key is backing off; *retry_ms is the time left */
    THROTTLE_BUSY,    /* the key holds max_inflight slots already */
    THROTTLE_FULL,    /* a new key, and max_keys are held */
};

enum throttle_outcome {
    THROTTLE_NONE, /* neither (an internal error, a request not carried out) */
    THROTTLE_SUCCESS,
    THROTTLE_FAILURE,
};

/* Thread: any. Never NULL (allocation failure aborts). */
throttle_t *throttle_new(const struct throttle_opts *o);
/* Thread: any, once no other thread uses t. NULL is fine. */
void throttle_free(throttle_t *t);

/* Thread: any. Admit key at now_ms or say why not; *retry_ms (may be NULL)
 * is set for BLOCKED (>= 1) and 0 otherwise. Only OK takes a slot. */
enum throttle_verdict throttle_enter(throttle_t *t, const char *key, int64_t now_ms,
                                     int64_t *retry_ms);
/* Thread: any. Give back a slot taken by enter, with what came of it. */
void throttle_leave(throttle_t *t, const char *key, enum throttle_outcome o, int64_t now_ms);

/* Thread: any. Remove the entries that have expired at now_ms; returns how
 * many were removed. */
size_t throttle_sweep(throttle_t *t, int64_t now_ms);
/* Thread: any. Entries held (for metrics and tests). */
size_t throttle_count(throttle_t *t);
/* Thread: any. Failures on record for key (0 for an unknown key); for tests. */
unsigned throttle_failures(throttle_t *t, const char *key);

/* Thread: any. The key under which a client address is throttled: an IPv4
 * address (also when written IPv4-mapped, "::ffff:a.b.c.d") as itself, an
 * IPv6 address as its /64 ("2001:db8:1:2::/64"), since one host is commonly
 * given a whole /64; anything unparsable as "unknown". out needs 64 bytes. */
void throttle_addr_key(const char *peer, char *out, size_t outsz);

#endif
