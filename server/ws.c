/*
 * ws — see ws.h. Everything here runs on the loop thread that owns the wsi;
 * other threads reach a connection only through its client (client.h),
 * whose client_io (conn_io below) leads to the loop (loop_schedule,
 * loop_post, loop_rx_flow). The socket-side state is the struct conn.
 */
#include "ws.h"

#include <libwebsockets.h>
#include <arpa/inet.h>
#include <string.h>

#include "broker.h"
#include "client.h"
#include "http.h"
#include "iplimit.h"
#include "tls.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "server.h"
#include "util.h"

#define BATCH_MAX 256
/* A slow consumer asked to close gets this long to take its close frame. */
#define CLOSE_GRACE_S 5

/* Kept small: lws allocates it for every connection. HTTP state exists
 * only while a connection is doing HTTP. */
struct pss {
    struct conn *k;       /* WebSocket connections */
    struct http_state *h; /* plain HTTP, allocated on the first request */
};

static struct http_state *http_of(struct pss *pss)
{
    if (!pss->h)
        pss->h = xcalloc(1, sizeof(*pss->h));
    return pss->h;
}

static void close_with(struct lws *wsi, int code, const char *reason)
{
    lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
}

/* Copy query argument name ("user=") into out ("" if absent or too long).
 * lws copies each fragment into the buffer it is given and stops looking at
 * the first fragment that does not fit, so the scan buffer must hold the
 * longest fragment we accept (a token), whatever out's size. */
static void url_arg(struct lws *wsi, const char *name, char *out, size_t outsz)
{
    char buf[CODEC_TOKEN_MAX + 16];
    const char *v = lws_get_urlarg_by_name(wsi, name, buf, (int)sizeof(buf));
    out[0] = '\0';
    if (v && strlen(v) < outsz)
        memcpy(out, v, strlen(v) + 1);
}

/* The peer's address in 16 bytes (every connection keeps it until it
 * closes, for the per-address count), and back to text for that count. */
static void peer_addr(struct lws *wsi, uint8_t addr[16])
{
    char text[INET6_ADDRSTRLEN + 8];
    struct in_addr v4;

    memset(addr, 0, 16);
    if (!lws_get_peer_simple(wsi, text, sizeof(text)))
        return;
    if (inet_pton(AF_INET, text, &v4) == 1) {
        addr[10] = addr[11] = 0xff;
        memcpy(addr + 12, &v4, 4);
    } else if (inet_pton(AF_INET6, text, addr) != 1) {
        memset(addr, 0, 16);
    }
}

static const char *addr_text(const uint8_t addr[16], char out[INET6_ADDRSTRLEN])
{
    static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
    if (memcmp(addr, mapped, 12) == 0)
        return inet_ntop(AF_INET, addr + 12, out, INET6_ADDRSTRLEN);
    return inet_ntop(AF_INET6, addr, out, INET6_ADDRSTRLEN);
}

/* The client's way to its home loop (client_io): arg is the conn. */
static void conn_wake(void *arg, struct client *c)
{
    struct conn *k = arg;
    (void)c;
    loop_schedule(k->loop, k);
}

static int conn_post(void *arg, void (*fn)(void *fnarg), void *fnarg)
{
    struct conn *k = arg;
    return loop_post(k->loop, fn, fnarg);
}

static void conn_rx_flow(void *arg, struct client *c, bool on)
{
    struct conn *k = arg;
    (void)c;
    loop_rx_flow(k->loop, k, on);
}

static void conn_release(void *arg)
{
    struct conn *k = arg;
    free(k->rx);
    free(k);
}

static const struct client_io conn_io = {
    .wake = conn_wake, .post = conn_post, .rx_flow = conn_rx_flow, .release = conn_release,
};

static int on_established(struct lws *wsi, struct pss *pss, struct loop *l)
{
    struct server *srv = loop_server(l);
    const struct config *cfg = srv->cfg;
    char user[64], token[CODEC_TOKEN_MAX + 8], room[96], fmt[16];

    struct conn *k = xcalloc(1, sizeof(*k));
    struct client *c = client_new(srv, (size_t)cfg->client_queue_max,
                                  (size_t)cfg->client_queue_bytes, &conn_io, k);
    k->c = c;
    k->loop = l;
    k->wsi = wsi;
    const struct lws_protocols *p = lws_get_protocol(wsi);
    url_arg(wsi, "format=", fmt, sizeof(fmt));
    c->fmt = (p && strcmp(p->name, "parley.text") == 0) || strcmp(fmt, "text") == 0 ? FMT_TEXT
                                                                                    : FMT_JSON;
    peer_addr(wsi, k->addr);
    pss->k = k;
    k->seen_s = loop_tick(l);
    loop_attach(l, k);
    METRIC_INC(&srv->metrics, connections);

    /* Limits are checked once the upgrade is done so the client gets a
     * close code it can act on (1013: try again later) rather than a reset. */
    long n = atomic_fetch_add_explicit(&srv->ws_conns, 1, memory_order_relaxed) + 1;
    if (n > cfg->max_connections) {
        client_kill(c, 1013, "server overloaded: connection limit reached");
        c->discard = true;
        return 0;
    }
    char ip[INET6_ADDRSTRLEN];
    k->ip_counted = iplimit_acquire(srv->iplimit, addr_text(k->addr, ip));
    if (!k->ip_counted) {
        client_kill(c, 1013, "too many connections from your address");
        c->discard = true;
        return 0;
    }

    url_arg(wsi, "user=", user, sizeof(user));
    url_arg(wsi, "token=", token, sizeof(token));
    url_arg(wsi, "room=", room, sizeof(room));
    broker_connected(srv->broker, c, user, token, room);
    return 0;
}

/* Something came from the peer: it is alive (see ws_idle_check). */
static void mark_seen(struct conn *k)
{
    k->seen_s = loop_tick(k->loop);
    k->ping_out = false;
}

/* The message being reassembled is done with: idle connections keep no
 * reassembly buffer. */
static void rx_release(struct conn *k)
{
    free(k->rx);
    k->rx = NULL;
    k->rx_len = k->rx_cap = 0;
    k->rx_open = false;
}

static int on_receive(struct lws *wsi, struct conn *k, const unsigned char *in, size_t len)
{
    struct client *c = k->c;
    struct server *srv = c->srv;
    size_t max = (size_t)srv->cfg->max_frame;
    size_t remaining = lws_remaining_packet_payload(wsi);

    if (c->discard)
        return 0;
    mark_seen(k);
    loop_note_rx(k->loop, k);
    /* Bad input closes from the writable callback, which sends the close
     * frame and waits for the peer's; returning -1 here would drop the
     * socket with the rest of the frame unread, and the peer would see a
     * reset instead of the code. */
    if (lws_frame_is_binary(wsi)) {
        c->discard = true;
        client_kill(c, 1003, "binary frames are not accepted");
        return 0;
    }
    if (k->rx_len + len + remaining > max) {
        c->discard = true;
        client_kill(c, 1009, "message too big");
        return 0;
    }
    bool final = lws_is_final_fragment(wsi);
    if (final && k->rx_len == 0) {
        /* the common case: a whole message in one piece, no copy */
        k->rx_open = false;
        broker_frame(srv->broker, c, (const char *)in, len);
        return 0;
    }
    if (!k->rx_open) {
        /* a message arriving in pieces (fragments, or one frame bigger
         * than lws's read buffer): ws_idle_check bounds how long it takes */
        k->rx_open = true;
        k->rx_start_s = loop_tick(k->loop);
    }
    if (len == 0)
        return 0; /* an empty non-final piece: nothing to keep */
    if (k->rx_len + len > k->rx_cap) {
        size_t cap = k->rx_cap ? k->rx_cap : 1024;
        while (cap < k->rx_len + len + remaining)
            cap *= 2;
        k->rx = xrealloc(k->rx, cap > max ? max : cap);
        k->rx_cap = cap > max ? max : cap;
    }
    memcpy(k->rx + k->rx_len, in, len);
    k->rx_len += len;
    if (final) {
        broker_frame(srv->broker, c, (const char *)k->rx, k->rx_len);
        rx_release(k);
    }
    return 0;
}

/* Send up to one batch of k's queued frames in one write. Returns -1 if
 * the socket failed. */
static int send_queued(struct lws *wsi, struct conn *k, struct client_take *r)
{
    msg_t *batch[BATCH_MAX];
    size_t cap, n;
    unsigned char *scratch = loop_scratch(k->loop, &cap);

    n = client_take(k->c, batch, BATCH_MAX, cap, r);
    if (!n)
        return 0;
    /* Several ready frames go out in one write: each stays its own
     * WebSocket frame, already framed by msg.c, so lws sends the bytes as
     * they are. */
    const unsigned char *out;
    size_t total = 0, fl;
    if (n == 1) {
        out = msg_frame(msg_resolve(batch[0]), &total);
    } else {
        for (size_t i = 0; i < n; i++) {
            const unsigned char *f = msg_frame(msg_resolve(batch[i]), &fl);
            memcpy(scratch + total, f, fl);
            total += fl;
        }
        out = scratch;
    }
    int w = lws_write(wsi, (unsigned char *)out, total, LWS_WRITE_RAW);
    for (size_t i = 0; i < n; i++)
        msg_unref(&batch[i]);
    return w < 0 ? -1 : 0;
}

static int on_writeable(struct lws *wsi, struct conn *k)
{
    struct client_take r;

    if (send_queued(wsi, k, &r) < 0)
        return -1;
    if (r.close_now) {
        close_with(wsi, r.close_code, r.reason);
        return -1;
    }
    if (r.more)
        lws_callback_on_writable(wsi);
    return 0;
}

static void on_closed(struct pss *pss, struct loop *l)
{
    struct conn *k = pss->k;
    if (!k)
        return;
    pss->k = NULL;
    struct client *c = k->c;
    struct server *srv = c->srv;
    broker_disconnected(srv->broker, c);
    client_mark_dead(c);
    k->wsi = NULL;
    rx_release(k); /* the socket's buffer goes with the socket */
    loop_detach(l, k);
    METRIC_SUB(&srv->metrics, connections, 1);
    atomic_fetch_sub_explicit(&srv->ws_conns, 1, memory_order_relaxed);
    if (k->ip_counted) {
        char ip[INET6_ADDRSTRLEN];
        iplimit_release(srv->iplimit, addr_text(k->addr, ip));
    }
    client_unref(&c); /* frees k with the client once nobody holds it */
}

void ws_kick(struct conn *k)
{
    struct lws *wsi = k->wsi;
    struct client_take r;

    if (!wsi)
        return;
    /* Write now instead of asking for POLLOUT and writing on the next poll
     * round: the socket is almost always writable, and the round trip costs
     * two poll-set changes and a pass over every descriptor per kick. Only
     * a write lws still holds back (a partial send) waits its turn. */
    if (lws_partial_buffered(wsi)) {
        lws_callback_on_writable(wsi);
        return;
    }
    if (send_queued(wsi, k, &r) < 0) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    /* the close itself goes out from the writable callback, where returning
     * -1 is how lws is told to send the close frame */
    if (r.close_code)
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, CLOSE_GRACE_S);
    if (r.close_now || r.more || lws_partial_buffered(wsi))
        lws_callback_on_writable(wsi);
}


void ws_idle_check(struct conn *k, uint32_t now_s, uint32_t ping_s)
{
    struct client *c = k->c;
    /* a ping frame, sent as it is like every other frame; it carries one
     * byte because lws 4.1 does not report an empty pong */
    static const unsigned char ping[LWS_PRE + 3] = {[LWS_PRE] = 0x89, [LWS_PRE + 1] = 0x01,
                                                    [LWS_PRE + 2] = 'p'};
    struct lws *wsi = k->wsi;
    uint32_t quiet = now_s - k->seen_s;

    if (c->npres_due)
        broker_tick(c->srv->broker, c);
    if (!wsi || c->discard)
        return;
    /* A message may hold up to --max-frame bytes while it arrives; it gets
     * --fragment-timeout seconds to finish, so a peer cannot park that
     * memory by sending a first fragment and then only answering pings.
     * Ticks are whole seconds: "more than" gives it at least the full time. */
    if (k->rx_open && now_s - k->rx_start_s > (uint32_t)c->srv->cfg->fragment_timeout) {
        c->discard = true;
        rx_release(k);
        METRIC_INC(&c->srv->metrics, fragment_timeouts_total);
        client_kill(c, 1008, "message not finished in time");
        return;
    }
    if (quiet >= 2 * ping_s) {
        /* a peer that answers nothing would not read a close frame either:
         * hang up (the client, if it is still there, sees 1006) */
        c->discard = true;
        lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    /* a socket lws is still flushing is busy, not idle: ping it next time */
    if (quiet >= ping_s && !k->ping_out && !lws_partial_buffered(wsi)) {
        k->ping_out = true;
        if (lws_write(wsi, (unsigned char *)ping + LWS_PRE, 3, LWS_WRITE_RAW) < 0)
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
}

static int is_ws_path(struct lws *wsi)
{
    char uri[256];
    if (lws_hdr_copy(wsi, uri, sizeof(uri), WSI_TOKEN_GET_URI) <= 0)
        return 0;
    return strcmp(uri, "/ws") == 0;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct pss *pss = user;
    struct lws_context *ctx = lws_get_context(wsi);
    struct loop *l = ctx ? lws_context_user(ctx) : NULL;

    switch (reason) {
    case LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS:
        /* user is this vhost's server SSL_CTX: harden it, keep it for reloads */
        if (l && user) {
            tls_harden(user);
            loop_set_ssl_ctx(l, user);
        }
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        /* the wake-up is all it takes: after this pass the loop takes what
         * other threads handed over (take_handed_over in loop.c) */
        return 0;
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        /* draining: take no new connections; otherwise the listening loop
         * hands the socket to the least-loaded loop (refusing its copy) */
        if (!l || loop_stopping(l))
            return -1;
        return loop_dispatch_fd(l, (int)(intptr_t)in) ? -1 : 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        /* lws upgrades whatever version the request line names */
        unsigned vs = http_version_status(wsi, true);
        if (vs) {
            lws_return_http_status(wsi, vs, NULL);
            return -1;
        }
        if (!is_ws_path(wsi) || (l && loop_stopping(l)))
            return -1;
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        return on_established(wsi, pss, l);
    case LWS_CALLBACK_RECEIVE:
        if (!pss->k)
            return -1;
        return on_receive(wsi, pss->k, in, len);
    case LWS_CALLBACK_RECEIVE_PONG:
        if (pss->k)
            mark_seen(pss->k);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!pss->k)
            return -1;
        return on_writeable(wsi, pss->k);
    case LWS_CALLBACK_CLOSED:
        on_closed(pss, l);
        return 0;
    case LWS_CALLBACK_HTTP:
        return http_request(wsi, loop_server(l), http_of(pss), in ? (const char *)in : "/");
    case LWS_CALLBACK_HTTP_BODY:
        return http_body(wsi, loop_server(l), http_of(pss), in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return http_body_complete(wsi, loop_server(l), http_of(pss));
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return http_writeable(wsi, loop_server(l), http_of(pss));
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss && pss->h) {
            http_release(pss->h);
            free(pss->h);
            pss->h = NULL;
        }
        return 0;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

/* rx_buffer_size is small because lws allocates it per connection;
 * longer messages arrive in pieces and are reassembled in conn->rx.
 * tx_packet_size lets one write carry a whole batch (64 KiB). */
static const struct lws_protocols protocols[] = {
    {"parley", callback, sizeof(struct pss), 128, 0, NULL, 80 * 1024},
    {"parley.text", callback, sizeof(struct pss), 128, 0, NULL, 80 * 1024},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

const struct lws_protocols *ws_protocols(void)
{
    return protocols;
}
