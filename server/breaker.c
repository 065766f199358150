/*
 * breaker — the closed / open / half-open state machine (see breaker.h).
 */
#include <stdint.h>

#include "breaker.h"

void breaker_init(struct breaker *b, int threshold, int64_t cooldown_ms)
{
    b->threshold = threshold < 1 ? 1 : threshold;
    b->cooldown_ms = cooldown_ms < 0 ? 0 : cooldown_ms;
    b->state = BREAKER_CLOSED;
    b->failures = 0;
    b->opened_at_ms = 0;
    b->probing = false;
}

static bool cooled(const struct breaker *b, int64_t now_ms)
{
    return now_ms - b->opened_at_ms >= b->cooldown_ms;
}

static void trip(struct breaker *b, int64_t now_ms)
{
    b->state = BREAKER_OPEN;
    b->opened_at_ms = now_ms;
    b->probing = false;
    b->failures = 0;
}

enum breaker_permit breaker_acquire(struct breaker *b, int64_t now_ms)
{
    switch (b->state) {
    case BREAKER_CLOSED:
        return BREAKER_CALL;
    case BREAKER_OPEN:
        if (!cooled(b, now_ms))
            return BREAKER_DENY;
        b->state = BREAKER_HALF_OPEN;
        b->probing = true;
        return BREAKER_PROBE;
    case BREAKER_HALF_OPEN:
    default:
        if (b->probing)
            return BREAKER_DENY;
        b->probing = true;
        return BREAKER_PROBE;
    }
}

enum breaker_state breaker_release(struct breaker *b, enum breaker_permit p, bool ok,
                                   int64_t now_ms)
{
    if (p == BREAKER_PROBE) {
        /* Only the probe decides half-open; a probe permit outliving its
         * half-open state cannot happen, as nothing else leaves half-open. */
        if (b->state == BREAKER_HALF_OPEN && b->probing) {
            if (ok) {
                b->state = BREAKER_CLOSED;
                b->failures = 0;
                b->probing = false;
            } else {
                trip(b, now_ms);
            }
        }
    } else if (p == BREAKER_CALL && b->state == BREAKER_CLOSED) {
        /* An ordinary call that reports after the breaker left closed is
         * stale: the probe, not it, says whether the dependency is back. */
        if (ok)
            b->failures = 0;
        else if (++b->failures >= b->threshold)
            trip(b, now_ms);
    }
    return b->state;
}

void breaker_cancel(struct breaker *b, enum breaker_permit p)
{
    if (p == BREAKER_PROBE && b->state == BREAKER_HALF_OPEN)
        b->probing = false;
}

enum breaker_state breaker_state(const struct breaker *b, int64_t now_ms)
{
    if (b->state == BREAKER_OPEN && cooled(b, now_ms))
        return BREAKER_HALF_OPEN;
    return b->state;
}

int64_t breaker_next_ms(const struct breaker *b, int64_t now_ms)
{
    switch (b->state) {
    case BREAKER_OPEN:
        return cooled(b, now_ms) ? now_ms : b->opened_at_ms + b->cooldown_ms;
    case BREAKER_HALF_OPEN:
        return b->probing ? INT64_MAX : now_ms;
    case BREAKER_CLOSED:
    default:
        return now_ms;
    }
}
