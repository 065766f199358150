/*
 * breaker — a circuit breaker around one dependency (the SMTP relay), as a
 * pure state machine with the clock passed in.
 *
 *   closed    --threshold consecutive failures-->  open
 *   open      --cooldown elapsed, next acquire-->  half-open (that caller is the probe)
 *   half-open --probe succeeds-->                  closed
 *   half-open --probe fails-->                     open (the cooldown starts again)
 *
 * In half-open exactly one probe is out at a time; everyone else is denied
 * until it reports. A caller takes a permit before each call and hands it
 * back with the outcome, so a result that arrives from a call begun in an
 * earlier state (a slow call that was let through while closed, reporting
 * after the breaker opened) cannot close or reopen the breaker by mistake:
 * only the probe's result moves half-open.
 *
 * Not synchronised: the owner's lock guards it. No clock is read here.
 */
#ifndef PARLEY_BREAKER_H
#define PARLEY_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

/* The values are the ones /metrics shows (parley_notify_breaker_state). */
enum breaker_state {
    BREAKER_CLOSED = 0,
    BREAKER_OPEN = 1,
    BREAKER_HALF_OPEN = 2,
};

enum breaker_permit {
    BREAKER_DENY,  /* do not call now; see breaker_next_ms */
    BREAKER_CALL,  /* an ordinary call (closed) */
    BREAKER_PROBE, /* the one trial call of half-open */
};

struct breaker {
    int threshold;       /* consecutive failures that open it (>= 1) */
    int64_t cooldown_ms; /* time open before a probe is allowed (>= 0) */
    /* private */
    enum breaker_state state;
    int failures;         /* consecutive, while closed */
    int64_t opened_at_ms; /* when it last opened */
    bool probing;         /* half-open: the probe is out */
};

/* threshold < 1 is taken as 1, cooldown_ms < 0 as 0. Starts closed. */
void breaker_init(struct breaker *b, int threshold, int64_t cooldown_ms);

/* Ask to make a call now. Closed: BREAKER_CALL. Open: BREAKER_DENY until the
 * cooldown has elapsed, then the breaker goes half-open and this caller gets
 * BREAKER_PROBE. Half-open: BREAKER_DENY while the probe is out. */
enum breaker_permit breaker_acquire(struct breaker *b, int64_t now_ms);

/* Report the outcome of a call made under permit p (DENY is ignored).
 * Returns the state afterwards. */
enum breaker_state breaker_release(struct breaker *b, enum breaker_permit p, bool ok,
                                   int64_t now_ms);

/* Give a permit back without an outcome (the call was abandoned, e.g. at
 * shutdown): a probe frees the half-open slot, nothing else changes. */
void breaker_cancel(struct breaker *b, enum breaker_permit p);

/* The state as a caller would find it at now_ms: an open breaker whose
 * cooldown has elapsed reads as half-open (the next acquire probes). */
enum breaker_state breaker_state(const struct breaker *b, int64_t now_ms);

/* The earliest time an acquire might not be denied: now_ms when closed or
 * when a probe may go out, the end of the cooldown when open, and INT64_MAX
 * while a probe is out (its release is what changes things). */
int64_t breaker_next_ms(const struct breaker *b, int64_t now_ms);

#endif
