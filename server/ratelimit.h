/*
 * ratelimit — per-user token buckets for send, dm and typing.
 *
 * Each user gets a bucket of `burst` tokens refilled at `rate_per_s`; a
 * request takes one token or is refused with the time until one is back
 * (`retry_after_ms` on the wire) and counts a strike; repeated strikes let
 * the caller close the connection with 4029. Every I/O loop thread takes
 * tokens; a periodic sweep (any thread) reclaims buckets of users that have
 * gone quiet. The clock is passed in by the caller (monotonic nanoseconds),
 * which keeps this module free of time and its tests exact.
 */
#ifndef PARLEY_RATELIMIT_H
#define PARLEY_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ratelimit ratelimit_t;

/* rate_per_s in [0.001, 1e9] tokens per second, burst in [1, 1e6] tokens
 * (the bucket's size; fractions allowed). Returns NULL if out of range.
 * Thread: any. */
ratelimit_t *ratelimit_new(double rate_per_s, double burst);
/* Thread: any, once no other thread uses rl. NULL is fine. */
void ratelimit_free(ratelimit_t *rl);

/*
 * Take one token from user's bucket at time now_ns (a monotonic clock in
 * ns; a new user starts with a full bucket). Returns true if taken: then
 * *retry_after_ms = 0 and *strikes = 0 (the strike count resets). Returns
 * false if the bucket holds less than one token: then *retry_after_ms is
 * the whole milliseconds (rounded up, >= 1) until it will, and *strikes the
 * number of refusals in a row for this user, this one included. Either
 * output pointer may be NULL. Thread: any.
 */
bool ratelimit_take(ratelimit_t *rl, const char *user, int64_t now_ns, int64_t *retry_after_ms,
                    unsigned *strikes);

/* Free the buckets that are full at now_ns and have not been used for more
 * than idle_ns (forgetting such a bucket loses nothing: a new one starts
 * full). Returns how many were freed. Thread: any; takes the write lock. */
size_t ratelimit_sweep(ratelimit_t *rl, int64_t now_ns, int64_t idle_ns);

/* Thread: any. Number of buckets held (for metrics and tests). */
size_t ratelimit_count(ratelimit_t *rl);

/* Thread: any. Tokens in user's bucket at now_ns (burst for an unknown user);
 * for metrics and tests. */
double ratelimit_tokens(ratelimit_t *rl, const char *user, int64_t now_ns);

#endif
