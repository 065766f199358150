/*
 * client — one WebSocket connection's state that other threads may touch:
 * its bounded outgoing queue, its close request and its reference count.
 *
 * A client is created and its socket side driven by exactly one I/O loop
 * (its "home"), which it reaches only through the struct client_io it was
 * created with. Publishers on any thread push frames with client_push,
 * which never blocks on I/O (it takes the client's short lock) and wakes
 * the home loop to drain the queue (client_take). Rooms, the user map and in-flight storage writes
 * each hold a reference, so a client outlives its socket until the last of
 * them lets go; client_push on a closed client is a quiet no-op.
 */
#ifndef PARLEY_CLIENT_H
#define PARLEY_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "cq.h"

struct server;
struct joined;
struct park;
struct room;
struct client;

/*
 * What the I/O side (the connection's home loop) does for a client, given
 * to client_new with the argument every call gets (ws.c: the connection's
 * socket-side state, whose lifetime is the client's). The client and the
 * broker reach the loop only through these, so they never name it.
 */
struct client_io {
    /* Thread: any. Make the home loop drain c's queue (or close it) soon;
     * called when the queue goes from empty to non-empty, and for a close. */
    void (*wake)(void *arg, struct client *c);
    /* Thread: any. Run fn(fnarg) on the home loop soon (FIFO). 0, or -1 if
     * the loop has stopped (fn not called; the caller still owns fnarg). */
    int (*post)(void *arg, void (*fn)(void *fnarg), void *fnarg);
    /* Thread: home loop. Stop (false) or restart (true) reading the socket. */
    void (*rx_flow)(void *arg, struct client *c, bool on);
    /* Thread: any (the last client_unref). The client is freed: free arg. */
    void (*release)(void *arg);
};

/* Fields are grouped by who may touch them and ordered to pack: every
 * connection has one, so its size is part of the per-connection budget.
 * What only lives as long as the socket (the wsi, rx reassembly, idle
 * timing, the loop's lists, the peer address) is the I/O side's, behind
 * io_arg (struct conn in loop.h), not here. */
struct client {
    pthread_mutex_t lock;
    struct cq q;          /* {lock} */
    const char *close_reason; /* {lock} a string literal */
    int close_code;       /* {lock} nonzero: close with this code when next writable */
    _Atomic unsigned refs;

    const struct client_io *io; /* fixed */
    void *io_arg;         /* fixed; opaque to everyone but the I/O side */
    struct server *srv;   /* fixed */

    /* ---- home-loop thread only ---- */
    struct room *current;          /* text mode: the room joined last (one of joined) */
    struct joined *joined;         /* rooms this connection has joined */
    struct park *park;             /* waiting for a room to load (broker.c), or NULL */
    /* a peer the cluster directory said is online (open mode), and when
     * (monotonic ms): the request that asked, run again (maybe after a room
     * load too), does not ask again for a few seconds (broker.c) */
    char peer_online[CODEC_USER_MAX + 1];
    int64_t peer_online_ms;
    struct room **pres_due;        /* rooms owing others a presence change of ours */
    unsigned njoined;
    unsigned npres_due;
    enum codec_fmt fmt;
    char user[CODEC_USER_MAX + 1];
    char session[17];

    uint8_t reads;        /* {lock} history reads in flight (client_read_begin) */
    bool dead;            /* {lock} socket gone: pushes are dropped */
    bool authed;                   /* home loop */
    bool discard;                  /* home loop: closing for bad input (set by the broker
                                    * or the I/O side), ignore what arrives */
};

/* What client_take handed out besides frames. */
struct client_take {
    int close_code;       /* nonzero: c is to be closed with it */
    const char *reason;   /* with close_code */
    bool close_now;       /* ... and nothing is left to send first */
    bool more;            /* frames (or the close) remain for another round */
};

/* Thread: home loop. Refcount 1 (the socket's). io (with io_arg) is how the
 * client reaches its home loop; NULL for a client that is never pushed to,
 * woken or parked (tests). */
struct client *client_new(struct server *srv, size_t qmax, size_t qbytes,
                          const struct client_io *io, void *io_arg);
/* Thread: any. */
struct client *client_ref(struct client *c);
void client_unref(struct client **cp);

/*
 * Queue one reference to m (taken from the caller in every case) and make
 * sure the home loop will drain it. Returns 0, 1 if the client is already
 * closed (m dropped), or -1 if the queue overflowed: the client is then
 * marked for close 4008 and its queue freed (slow consumer).
 * Thread: any; never blocks on I/O.
 */
int client_push(struct client *c, msg_t *m);
/*
 * Give p, an empty placeholder queued to c by client_push, its content
 * (the reference is taken in every case) and charge content's frame to c's
 * queue like a push, then make sure the home loop will drain it. Returns
 * 0; 1 if c is gone or p no longer queued (its queue was dropped; content
 * dropped); -EMSGSIZE if content alone is larger than c's byte bound (it
 * can never fit: content dropped, p stays empty, fill it with something
 * smaller); -1 if the queue overflowed: c is marked for close 4008 and its
 * queue freed (slow consumer), as client_push.
 * Thread: any; never blocks on I/O.
 */
int client_fill(struct client *c, msg_t *p, msg_t *content);
/* Take one of c's history-read slots: false if max reads are in flight
 * already. Every true is paired with one client_read_end. Thread: any. */
bool client_read_begin(struct client *c, unsigned max);
void client_read_end(struct client *c);
/* Ask the home loop to close the connection with code and reason (a
 * string literal: it is kept, not copied). Thread: any. */
void client_kill(struct client *c, int code, const char *reason);
/* The socket is gone: drop the queue and refuse further pushes. Thread: home loop. */
void client_mark_dead(struct client *c);

/*
 * Take up to max frames / max_bytes bytes from the head of c's queue into
 * out (the references move to the caller), uncharging them from the queue
 * and the queue_bytes gauge, and report the close request in *r. A client
 * being closed still hands out what was queued before its close (the
 * shutdown drain); a slow consumer's queue was already dropped. The queue
 * stops at a placeholder not yet filled. Returns the number of frames.
 * Thread: home loop (the only taker).
 */
size_t client_take(struct client *c, msg_t **out, size_t max, size_t max_bytes,
                   struct client_take *r);

/* Thread: home loop. Run fn(arg) on c's home loop later (FIFO), via
 * c->io->post: 0, or -1 if the loop has stopped (the caller keeps arg). */
int client_post(struct client *c, void (*fn)(void *arg), void *arg);
/* Thread: home loop. Stop (false) or restart (true) reading c's socket. */
void client_rx_flow(struct client *c, bool on);

#endif
