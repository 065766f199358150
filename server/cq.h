/*
 * cq — a client's bounded outgoing queue of msg references.
 *
 * Bounded by message count and by bytes; a push that would exceed either
 * fails at once (the caller treats that as a slow consumer). The ring grows
 * by doubling up to the count bound, so an idle connection holds no ring at
 * all. Not synchronised: the owning client's lock guards it.
 */
#ifndef PARLEY_CQ_H
#define PARLEY_CQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

/* 32-bit counts keep every connection's queue header at 32 bytes: the
 * limits are at most 1,000,000 frames and 1 GiB (config.c). */
struct cq {
    msg_t **ring; /* private */
    uint32_t cap, head, count;
    uint32_t bytes;
    uint32_t max_count, max_bytes;
};

void cq_init(struct cq *q, size_t max_count, size_t max_bytes);
/* Unref every queued msg and free the ring; the queue is empty afterwards. */
void cq_release(struct cq *q);

/* Append m, taking over the caller's reference. Returns 0, or -1 when the
 * queue is full by count or bytes (the caller keeps its reference). */
int cq_push(struct cq *q, msg_t *m);

/*
 * Give p, an empty placeholder this queue holds, its content, and charge
 * content's frame length to the queue's bytes from now until p is popped
 * (the reply is counted when its size is known, not at 0 as at the push).
 * Returns 0 (content's reference taken); on error nothing changes and the
 * caller keeps content: -ENOENT if p is not queued here or not an empty
 * placeholder, -EMSGSIZE if content alone is larger than the byte bound,
 * -ENOBUFS if it would take the queue past the byte bound (full).
 */
int cq_fill(struct cq *q, msg_t *p, msg_t *content);

/*
 * Pop up to max entries from the head, stopping early when the next frame
 * would take the batch past max_bytes (the first always fits, however big)
 * or at a placeholder that is still empty. Ownership of the popped
 * references moves to out[]. Returns the number popped.
 */
size_t cq_pop_batch(struct cq *q, msg_t **out, size_t max, size_t max_bytes);

static inline size_t cq_count(const struct cq *q) { return q->count; }
static inline size_t cq_bytes(const struct cq *q) { return q->bytes; }
/* True when the head is an empty placeholder (nothing can be sent yet). */
bool cq_blocked(const struct cq *q);

#endif
