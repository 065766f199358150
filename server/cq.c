/* cq — see cq.h. A power-of-two ring of msg pointers. */
#include "cq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "util.h"

void cq_init(struct cq *q, size_t max_count, size_t max_bytes)
{
    q->ring = NULL;
    q->cap = q->head = q->count = q->bytes = 0;
    q->max_count = max_count ? (uint32_t)max_count : 1;
    q->max_bytes = max_bytes > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)max_bytes;
}

void cq_release(struct cq *q)
{
    while (q->count) {
        msg_t *m = q->ring[q->head];
        q->head = (q->head + 1) & (q->cap - 1);
        q->count--;
        msg_unref(&m);
    }
    free(q->ring);
    q->ring = NULL;
    q->cap = q->head = q->bytes = 0;
}

static void grow(struct cq *q)
{
    uint32_t ncap = q->cap ? q->cap * 2 : 4;
    msg_t **nr = xmalloc(ncap * sizeof(*nr));
    for (size_t i = 0; i < q->count; i++)
        nr[i] = q->ring[(q->head + i) & (q->cap - 1)];
    free(q->ring);
    q->ring = nr;
    q->cap = ncap;
    q->head = 0;
}

int cq_push(struct cq *q, msg_t *m)
{
    size_t sz = msg_size(m);
    if (q->count >= q->max_count || (size_t)q->bytes + sz > q->max_bytes)
        return -1;
    if (q->count == q->cap)
        grow(q);
    q->ring[(q->head + q->count) & (q->cap - 1)] = m;
    q->count++;
    q->bytes += (uint32_t)sz;
    return 0;
}

int cq_fill(struct cq *q, msg_t *p, msg_t *content)
{
    /* An empty placeholder was never popped (pops stop at it), so it is
     * queued here unless the queue was released since the push. The scan
     * is bounded by the count bound and short in practice: ahead of an
     * empty placeholder is only what the socket has not taken yet. */
    size_t i = 0;
    while (i < q->count && q->ring[(q->head + i) & (q->cap - 1)] != p)
        i++;
    if (i == q->count || msg_resolve(p))
        return -ENOENT;
    size_t sz;
    msg_frame(content, &sz);
    if (sz > q->max_bytes)
        return -EMSGSIZE;
    if ((size_t)q->bytes + sz > q->max_bytes)
        return -ENOBUFS;
    msg_fill_counted(p, content);
    q->bytes += (uint32_t)sz;
    return 0;
}

bool cq_blocked(const struct cq *q)
{
    return q->count && !msg_resolve(q->ring[q->head]);
}

size_t cq_pop_batch(struct cq *q, msg_t **out, size_t max, size_t max_bytes)
{
    size_t n = 0, batch = 0;
    while (n < max && q->count) {
        msg_t *m = q->ring[q->head];
        const msg_t *r = msg_resolve(m);
        if (!r)
            break;
        size_t fl;
        msg_frame(r, &fl);
        if (n && batch + fl > max_bytes)
            break;
        batch += fl;
        size_t sz = msg_size(m);
        if (sz > q->bytes) {
            /* a placeholder filled behind the queue's back: the charge is lost */
            fprintf(stderr, "parley: queue byte count underflow\n");
            abort();
        }
        q->bytes -= (uint32_t)sz;
        q->head = (q->head + 1) & (q->cap - 1);
        q->count--;
        out[n++] = m;
    }
    if (!q->count && q->cap > 64) {
        /* a burst is over: give the big ring back so idle clients stay small */
        free(q->ring);
        q->ring = NULL;
        q->cap = q->head = 0;
    }
    return n;
}
