/*
 * client — see client.h. Lock order: room lock -> client lock -> loop lock
 * (the wake may take the loop's). The client lock is held only for queue
 * operations, never across I/O. This file alone locks and pops the queue
 * and keeps its share of the queue_bytes gauge: charged on push and fill,
 * uncharged on take and when the queue is dropped.
 */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "refcount.h"
#include "server.h"
#include "util.h"

struct client *client_new(struct server *srv, size_t qmax, size_t qbytes,
                          const struct client_io *io, void *io_arg)
{
    struct client *c = xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    cq_init(&c->q, qmax, qbytes);
    ref_init(&c->refs, 1);
    c->io = io;
    c->io_arg = io_arg;
    c->srv = srv;
    return c;
}

/* The fan-out path's one indirect call. */
static inline void wake_home(struct client *c)
{
    c->io->wake(c->io_arg, c);
}

struct client *client_ref(struct client *c)
{
    ref_get(&c->refs);
    return c;
}

static void client_free(struct client *c)
{
    METRIC_SUB(&c->srv->metrics, queue_bytes, (int64_t)cq_bytes(&c->q));
    cq_release(&c->q);
    pthread_mutex_destroy(&c->lock);
    free(c->joined);
    if (c->io && c->io->release)
        c->io->release(c->io_arg);
    free(c);
}

void client_unref(struct client **cp)
{
    struct client *c = *cp;
    if (!c)
        return;
    *cp = NULL;
    if (ref_put(&c->refs, "client"))
        client_free(c);
}

/* {lock} held. Free the queue of a client that will never send again. */
static void drop_queue_locked(struct client *c)
{
    METRIC_SUB(&c->srv->metrics, queue_bytes, (int64_t)cq_bytes(&c->q));
    cq_release(&c->q);
}

/* {lock} held. The queue overflowed: close 4008 and free the queue. */
static void overflow_locked(struct client *c)
{
    struct metrics *mt = &c->srv->metrics;
    if (!c->close_code) {
        c->close_code = 4008;
        c->close_reason = "slow consumer: queue overflow";
    }
    drop_queue_locked(c);
    METRIC_INC(mt, deliveries_dropped_total);
    METRIC_INC(mt, slow_consumer_disconnects_total);
}

int client_push(struct client *c, msg_t *m)
{
    struct metrics *mt = &c->srv->metrics;
    bool wake = false;
    int rc = 0;

    pthread_mutex_lock(&c->lock);
    if (c->dead || c->close_code) {
        rc = 1;
    } else {
        size_t sz = msg_size(m);
        bool was_empty = cq_count(&c->q) == 0;
        if (cq_push(&c->q, m) == 0) {
            m = NULL;
            METRIC_ADD(mt, queue_bytes, (int64_t)sz);
            METRIC_INC(mt, deliveries_total);
            wake = was_empty;
        } else {
            rc = -1;
            overflow_locked(c);
            wake = true;
        }
    }
    pthread_mutex_unlock(&c->lock);
    msg_unref(&m);
    if (wake)
        wake_home(c);
    return rc;
}

int client_fill(struct client *c, msg_t *p, msg_t *content)
{
    int rc = 1;
    size_t sz;

    msg_frame(content, &sz);
    pthread_mutex_lock(&c->lock);
    /* a client being closed (not dropped) still drains what it has, so a
     * queued reply is filled even then */
    if (!c->dead) {
        rc = cq_fill(&c->q, p, content);
        if (rc == 0) {
            content = NULL;
            METRIC_ADD(&c->srv->metrics, queue_bytes, (int64_t)sz);
        } else if (rc == -ENOBUFS) {
            rc = -1;
            overflow_locked(c);
        } else if (rc == -ENOENT) {
            rc = 1;
        }
    }
    pthread_mutex_unlock(&c->lock);
    msg_unref(&content);
    if (rc == 0 || rc == -1)
        wake_home(c);
    return rc;
}

bool client_read_begin(struct client *c, unsigned max)
{
    bool ok;
    pthread_mutex_lock(&c->lock);
    ok = c->reads < max && c->reads < UINT8_MAX;
    if (ok)
        c->reads++;
    pthread_mutex_unlock(&c->lock);
    if (ok)
        METRIC_INC(&c->srv->metrics, history_reads_in_flight);
    return ok;
}

void client_read_end(struct client *c)
{
    pthread_mutex_lock(&c->lock);
    if (c->reads == 0) {
        fprintf(stderr, "parley: client read count underflow\n");
        abort();
    }
    c->reads--;
    pthread_mutex_unlock(&c->lock);
    METRIC_SUB(&c->srv->metrics, history_reads_in_flight, 1);
}

void client_kill(struct client *c, int code, const char *reason)
{
    bool wake = false;
    pthread_mutex_lock(&c->lock);
    if (!c->dead && !c->close_code) {
        c->close_code = code;
        c->close_reason = reason;
        wake = true;
    }
    pthread_mutex_unlock(&c->lock);
    if (wake)
        wake_home(c);
}

void client_mark_dead(struct client *c)
{
    pthread_mutex_lock(&c->lock);
    c->dead = true;
    drop_queue_locked(c);
    pthread_mutex_unlock(&c->lock);
}

size_t client_take(struct client *c, msg_t **out, size_t max, size_t max_bytes,
                   struct client_take *r)
{
    size_t n, bytes = 0;

    pthread_mutex_lock(&c->lock);
    r->close_code = c->close_code;
    r->reason = c->close_reason;
    n = cq_pop_batch(&c->q, out, max, max_bytes);
    r->more = cq_count(&c->q) && !cq_blocked(&c->q);
    r->close_now = r->close_code && cq_count(&c->q) == 0;
    pthread_mutex_unlock(&c->lock);

    if (!n)
        return 0;
    /* a frame's size is fixed once it is queued (a placeholder's once it is
     * filled, and an unfilled one is never popped): what push or fill
     * charged comes back here */
    for (size_t i = 0; i < n; i++)
        bytes += msg_size(out[i]);
    METRIC_SUB(&c->srv->metrics, queue_bytes, (int64_t)bytes);
    /* a close still waiting behind this batch needs one more round */
    if (r->close_code && !r->close_now)
        r->more = true;
    return n;
}

int client_post(struct client *c, void (*fn)(void *arg), void *arg)
{
    return c->io->post(c->io_arg, fn, arg);
}

void client_rx_flow(struct client *c, bool on)
{
    c->io->rx_flow(c->io_arg, c, on);
}
