/*
 * loop — one I/O thread running one libwebsockets context.
 *
 * Debian's libwebsockets is built with LWS_MAX_SMP=1, so parleyd runs N
 * independent contexts, one per thread. lws 4.1 does not set SO_REUSEPORT
 * on Linux (its LWS_SERVER_OPTION_ALLOW_LISTEN_SHARE only affects Windows),
 * so loop 0 alone listens; in LWS_CALLBACK_FILTER_NETWORK_CONNECTION it
 * hands each new socket to the least-loaded loop: a dup of the fd goes to
 * that loop's hand-off list and the original is refused (lws closes its
 * copy), and the target loop adopts the dup with lws_adopt_socket_vhost.
 * A connection then lives on that loop for life.
 *
 * Any thread hands a loop work by putting a client on the loop's pending
 * list (loop_schedule) and waking it with lws_cancel_service (the loop's own
 * thread needs no wake). After each service pass the loop takes the whole
 * list and writes each client's queued frames straight to its socket (at
 * most once per --flush-interval-us), falling back to a writable callback
 * when the socket is backed up or the client is to be closed.
 */
#ifndef PARLEY_LOOP_H
#define PARLEY_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;
struct client;
struct loop;
struct tls_creds;
struct lws_protocols;

/*
 * A connection's socket-side state: what lives only as long as the socket
 * (plus the loop's list links), kept out of the shared struct client. One
 * per WebSocket client, made by ws.c and hung off the client as its
 * io_arg; freed with the client (client_io.release), so the loop's lists,
 * which hold client references, never point at a freed conn.
 */
struct conn {
    struct client *c;              /* fixed; not a counted reference */
    struct loop *loop;             /* home loop, fixed */
    struct conn *pending_next;     /* {loop->lock} */
    bool scheduled;                /* {loop->lock} on the loop's pending list */

    /* ---- home-loop thread only ---- */
    bool rx_hot;                   /* on the loop's read-again list */
    bool rx_open;                  /* a message has begun and not yet ended */
    bool ping_out;                 /* pinged since the last frame from the peer */
    bool ip_counted;               /* holds a slot in srv->iplimit */
    uint32_t rx_len, rx_cap;
    uint32_t rx_start_s;           /* loop tick of the first piece of that message */
    uint32_t seen_s;               /* loop tick of the last frame from the peer */
    void *wsi;                     /* struct lws *, NULL once closed */
    struct conn *loop_prev, *loop_next; /* the loop's list of live connections */
    unsigned char *rx;             /* reassembly of a fragmented message */
    uint8_t addr[16];              /* peer address, IPv4 in its IPv6-mapped form */
};

/* What the loop calls in the layer above it (ws.c), wired by main.c. */
struct loop_ops {
    /* between passes: send what k's client has queued, or arm a writable
     * callback (ws_kick) */
    void (*kick)(struct conn *k);
    /* once a second per live connection (ws_idle_check) */
    void (*idle_check)(struct conn *k, uint32_t now_s, uint32_t ping_s);
    /* the protocol table the context is created with (ws_protocols) */
    const struct lws_protocols *(*protocols)(void);
};

/* Thread: main. Creates the lws context (binding the port); NULL on error.
 * ops must outlive the loop. */
struct loop *loop_new(struct server *srv, int index, const struct loop_ops *ops, char *err,
                      size_t errsz);
/* Thread: main. Start / join the thread. */
int loop_start(struct loop *l);
void loop_join(struct loop *l);
/* Thread: main, after join. */
void loop_free(struct loop *l);

/* Thread: any. Make the loop drain k's client's queue (or close it) soon
 * (ops->kick); holds a client reference until then. Wakes the loop only
 * when the pending list goes from empty to non-empty. */
void loop_schedule(struct loop *l, struct conn *k);
/* Thread: any. Run fn(arg) on the loop's thread soon (FIFO). Returns 0, or
 * -1 if the loop has stopped (fn is then not called; the caller still owns
 * arg). Used to hand results of off-loop work (password hashing, account
 * lookups) back to the connection that asked. */
int loop_post(struct loop *l, void (*fn)(void *arg), void *arg);

/* Thread: loop 0 (the listener), in FILTER_NETWORK_CONNECTION. Returns
 * true if fd was handed to another loop (the caller refuses the original),
 * false if it should stay on loop 0. */
bool loop_dispatch_fd(struct loop *l0, int fd);

/* Thread: k's home loop. Stop (false) or restart (true) reading from k's
 * socket: the broker stops a connection while a room it needs is read from
 * storage, so what the peer sends meanwhile waits in the socket buffer.
 * Restarting (outside any lws callback) takes in at once what lws had
 * already read. */
void loop_rx_flow(struct loop *l, struct conn *k, bool on);

/* Thread: any. Ask the loop to close every connection with 1001 and exit
 * within the drain timeout. */
void loop_stop(struct loop *l);

/* ---- for the lws glue (ws.c), home-loop thread only ---- */
struct server *loop_server(struct loop *l);
/* 64 KiB + headroom scratch for batching several frames into one write. */
unsigned char *loop_scratch(struct loop *l, size_t *cap);
void loop_attach(struct loop *l, struct conn *k);
void loop_detach(struct loop *l, struct conn *k);
/* The loop's server SSL_CTX (NULL without TLS), for certificate reloads. */
void loop_set_ssl_ctx(struct loop *l, void *ssl_ctx);
/* Thread: any. Swap in new certificates for handshakes from now on. */
void loop_reload_tls(struct loop *l, struct tls_creds *c);

/* k received data in this service pass: read from it again before the
 * next poll (see read_more in loop.c). */
void loop_note_rx(struct loop *l, struct conn *k);
/* Seconds since the loop started, advanced once a second (coarse, cheap). */
uint32_t loop_tick(struct loop *l);
bool loop_stopping(struct loop *l);

#endif
