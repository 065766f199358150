/*
 * backoff — see backoff.h for the schedule and the choice of jitter.
 */
#include "backoff.h"

static void normalise(const struct backoff *b, int64_t *base, int64_t *max)
{
    *base = b->base_ms < 1 ? 1 : b->base_ms;
    *max = b->max_ms < *base ? *base : b->max_ms;
}

int64_t backoff_cap_ms(const struct backoff *b, int attempt)
{
    int64_t base, max;
    normalise(b, &base, &max);
    int64_t cap = base;
    /* Double one step at a time and stop at the ceiling: no shift by a
     * large count, no overflow, and at most 63 steps. */
    for (int i = 1; i < attempt && cap < max; i++)
        cap = cap > max / 2 ? max : cap * 2;
    return cap < max ? cap : max;
}

int64_t backoff_delay_ms(const struct backoff *b, int attempt, uint64_t rnd)
{
    int64_t cap = backoff_cap_ms(b, attempt);
    /* The modulo's bias is below span / 2^64: far under a millisecond. */
    switch (b->jitter) {
    case BACKOFF_JITTER_FULL:
        return (int64_t)(rnd % ((uint64_t)cap + 1));
    case BACKOFF_JITTER_EQUAL: {
        int64_t half = cap / 2;
        return half + (int64_t)(rnd % ((uint64_t)(cap - half) + 1));
    }
    case BACKOFF_JITTER_NONE:
    default:
        return cap;
    }
}

uint64_t backoff_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
