/*
 * backoff — capped exponential backoff with jitter, as pure arithmetic.
 *
 * The delay before retry number `attempt` (1 after the first failure) is
 * drawn below a ceiling that doubles from base_ms up to max_ms:
 *
 *     cap(attempt) = min(max_ms, base_ms * 2^(attempt - 1))
 *
 * and the jitter picks where in [0, cap] the delay falls:
 *   - BACKOFF_JITTER_NONE:  cap exactly (for tests and for reading logs);
 *   - BACKOFF_JITTER_FULL:  uniform in [0, cap] — spreads a crowd of clients
 *     best, but a retry may come almost at once;
 *   - BACKOFF_JITTER_EQUAL: cap/2 plus uniform in [0, cap - cap/2] — still
 *     spread, and never less than half the cap, so a dependency that is down
 *     is not called again right away. The notifier uses this one: it has a
 *     single sender, so there is no crowd to spread, and a guaranteed
 *     minimum wait is what keeps a dead relay from being hammered.
 *
 * The randomness is passed in (one uniform 64-bit draw per delay), so a test
 * can pin it; backoff_rand is a small seeded generator for callers that do
 * not need cryptographic randomness — jitter does not.
 *
 * Thread: any; nothing here has state beyond what the caller passes.
 */
#ifndef PARLEY_BACKOFF_H
#define PARLEY_BACKOFF_H

#include <stdint.h>

enum backoff_jitter {
    BACKOFF_JITTER_NONE,
    BACKOFF_JITTER_FULL,
    BACKOFF_JITTER_EQUAL,
};

struct backoff {
    int64_t base_ms; /* first ceiling; values < 1 are taken as 1 */
    int64_t max_ms;  /* the ceiling stops doubling here; values < base_ms are taken as base_ms */
    enum backoff_jitter jitter;
};

/* The ceiling for retry number attempt (attempt < 1 is taken as 1). Never
 * overflows, however large attempt is. */
int64_t backoff_cap_ms(const struct backoff *b, int attempt);

/* The delay before retry number attempt, in [0, cap] (FULL), [cap/2, cap]
 * (EQUAL) or exactly cap (NONE); rnd is one uniformly random 64-bit value. */
int64_t backoff_delay_ms(const struct backoff *b, int attempt, uint64_t rnd);

/* splitmix64: the next value of a seeded sequence (*state advances). Any
 * seed, including 0, gives a full-period sequence. */
uint64_t backoff_rand(uint64_t *state);

#endif
