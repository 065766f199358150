/*
 * client — see client.h. Lock order: room lock -> client lock -> loop lock.
 * The client lock is held only for queue operations, never across I/O.
 */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "metrics.h"
#include "refcount.h"
#include "server.h"
#include "util.h"

struct client *client_new(struct server *srv, struct loop *loop, size_t qmax, size_t qbytes)
{
    struct client *c = xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    cq_init(&c->q, qmax, qbytes);
    ref_init(&c->refs, 1);
    c->loop = loop;
    c->srv = srv;
    return c;
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
    free(c->rx);
    free(c->joined);
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
        loop_schedule(c->loop, c);
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
        loop_schedule(c->loop, c);
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
        loop_schedule(c->loop, c);
}

void client_mark_dead(struct client *c)
{
    pthread_mutex_lock(&c->lock);
    c->dead = true;
    drop_queue_locked(c);
    pthread_mutex_unlock(&c->lock);
}
