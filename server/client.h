/*
 * client — one WebSocket connection's state that other threads may touch:
 * its bounded outgoing queue, its close request and its reference count.
 *
 * A client is created and its lws side driven by exactly one I/O loop (its
 * "home"). Publishers on any thread push frames with client_push, which
 * never blocks on I/O (it takes the client's short lock) and asks the home
 * loop to drain the queue. Rooms, the user map and in-flight storage writes
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

struct loop;
struct server;
struct joined;
struct park;
struct room;

/* Fields are grouped by who may touch them and ordered to pack: every
 * connection has one, so its size is part of the per-connection budget. */
struct client {
    pthread_mutex_t lock;
    struct cq q;          /* {lock} */
    const char *close_reason; /* {lock} a string literal */
    int close_code;       /* {lock} nonzero: close with this code when next writable */
    _Atomic unsigned refs;

    struct loop *loop;    /* home loop, fixed */
    struct server *srv;   /* fixed */
    struct client *pending_next; /* {loop->lock} */

    /* ---- home-loop thread only ---- */
    void *wsi;                     /* struct lws *, NULL once closed */
    struct client *loop_prev, *loop_next; /* the loop's list of live clients */
    struct room *current;          /* text mode: the room joined last (one of joined) */
    struct joined *joined;         /* rooms this connection has joined */
    struct park *park;             /* waiting for a room to load (broker.c), or NULL */
    struct room **pres_due;        /* rooms owing others a presence change of ours */
    unsigned char *rx;             /* reassembly of a fragmented message */
    uint32_t rx_len, rx_cap;
    uint32_t rx_start_s;           /* loop tick of the first piece of that message */
    unsigned njoined;
    unsigned npres_due;
    uint32_t seen_s;               /* loop tick of the last frame from the peer */
    enum codec_fmt fmt;
    char user[CODEC_USER_MAX + 1];
    char session[17];
    uint8_t addr[16];              /* peer address, IPv4 in its IPv6-mapped form */

    uint8_t reads;        /* {lock} history reads in flight (client_read_begin) */
    bool dead;            /* {lock} socket gone: pushes are dropped */
    bool scheduled;       /* {loop->lock} on the loop's pending list */
    bool authed;                   /* home loop */
    bool discard;                  /* home loop: closing for bad input, ignore what arrives */
    bool rx_hot;                   /* home loop: on the loop's read-again list */
    bool rx_open;                  /* home loop: a message has begun and not yet ended */
    bool ping_out;                 /* home loop: pinged since the last frame from the peer */
    bool ip_counted;               /* home loop: holds a slot in srv->iplimit */
};

/* Thread: home loop. Refcount 1 (the socket's). */
struct client *client_new(struct server *srv, struct loop *loop, size_t qmax, size_t qbytes);
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

#endif
