/*
 * http — see http.h. Every response body is ready in memory when the
 * request arrives (the web cache, a rendered metrics page, a fixed text), so
 * the loop never waits on the disk.
 */
#include "http.h"

#include <inttypes.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>

#include "accounts.h"
#include "auth.h"
#include "broker.h"
#include "counters.h"
#include "loop.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "pathres.h"
#include "server.h"
#include "util.h"
#include "webcache.h"

#define CHUNK (32 * 1024)
#define API_BODY_MAX 8192

static const char csp[] = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                          "style-src 'self'; script-src 'self'; frame-ancestors 'none'; "
                          "base-uri 'none'; form-action 'self'";

static int add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                      unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

/* Send the status line and headers; the body follows on writable. */
static int start_response(struct lws *wsi, struct http_state *st, unsigned status,
                          const char *mime, const char *etag, bool html)
{
    unsigned char buf[LWS_PRE + 2048], *start = buf + LWS_PRE, *p = start,
                                       *end = buf + sizeof(buf) - 1;
    char retry[24];

    snprintf(retry, sizeof(retry), "%" PRId64, st->retry_after_s);
    if (lws_add_http_common_headers(wsi, status, mime, st->len, &p, end) ||
        (st->retry_after_s > 0 && add_header(wsi, "retry-after:", retry, &p, end)) ||
        add_header(wsi, "x-content-type-options:", "nosniff", &p, end) ||
        add_header(wsi, "cache-control:", etag ? "no-cache" : "no-store", &p, end) ||
        (etag && add_header(wsi, "etag:", etag, &p, end)) ||
        (html && add_header(wsi, "content-security-policy:", csp, &p, end)) ||
        (html && add_header(wsi, "referrer-policy:", "no-referrer", &p, end)))
        return 1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return 1;
    if (st->headers_only || st->len == 0) {
        if (st->close_after) {
            /* hang up from the writable callback, once the headers are out */
            st->off = st->len;
            lws_callback_on_writable(wsi);
            return 0;
        }
        if (lws_http_transaction_completed(wsi))
            return -1;
        return 0;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

static int respond_owned(struct lws *wsi, struct http_state *st, unsigned status,
                         const char *mime, msg_t *body)
{
    msg_unref(&st->owned);
    st->owned = body;
    st->body = msg_payload(st->owned, &st->len);
    st->off = 0;
    st->answered = true;
    return start_response(wsi, st, status, mime, NULL, false);
}

static int respond_text(struct lws *wsi, struct http_state *st, unsigned status,
                        const char *text)
{
    return respond_owned(wsi, st, status, "text/plain; charset=utf-8",
                         msg_new_text(text, strlen(text)));
}

static int respond_json(struct lws *wsi, struct http_state *st, unsigned status,
                        const char *json)
{
    size_t n = strlen(json);
    struct msgbuf b;
    mb_init(&b, n + 1);
    mb_put(&b, json, n);
    mb_putc(&b, '\n');
    return respond_owned(wsi, st, status, "application/json", mb_finish(&b));
}

static int respond_error(struct lws *wsi, struct http_state *st, unsigned status,
                         const char *code, const char *message)
{
    char *body = codec_http_error(code, message);
    int rc = respond_json(wsi, st, status, body);
    free(body);
    return rc;
}

/* Metrics owned by other modules, read at scrape time. */
static void sample_metrics(struct server *srv, struct store_stats *ss)
{
    struct metrics *m = &srv->metrics;
    store_stats(srv->store, ss);
    /* the store keeps its own exact counts: read them, don't count twice */
    METRIC_SET(m, storage_queue_depth, (int64_t)ss->queued);
    METRIC_SET(m, storage_writes_total, (int64_t)ss->writes);
    METRIC_SET(m, storage_failures_total, (int64_t)ss->failures);
    struct broker_room_stats rs;
    broker_room_stats(srv->broker, &rs);
    METRIC_SET(m, rooms, (int64_t)rs.active);
    METRIC_SET(m, rooms_held, (int64_t)rs.held);
    METRIC_SET(m, rooms_reclaimed_total, (int64_t)rs.reclaimed);
    if (srv->accounts) {
        struct accounts_stats as;
        accounts_stats(srv->accounts, &as);
        METRIC_SET(m, login_queue_depth, (int64_t)as.queued);
        METRIC_SET(m, login_throttle_entries, (int64_t)as.throttle_entries);
    }
    if (srv->notify) {
        struct notify_stats ns;
        notify_stats(srv->notify, &ns);
        METRIC_SET(m, notify_queue_depth, (int64_t)ns.queue_depth);
        METRIC_SET(m, notify_sent_total, (int64_t)ns.sent);
        METRIC_SET(m, notify_emails_total, (int64_t)ns.emails);
        METRIC_SET(m, notify_failed_total, (int64_t)ns.failed);
        METRIC_SET(m, notify_dead_total, (int64_t)ns.dead);
        METRIC_SET(m, notify_rejected_total, (int64_t)ns.rejected);
        METRIC_SET(m, notify_breaker_state, ns.breaker_state);
    }
}

/* GET /api/stats/users: the live per-user request counters. It names every
 * user online or recently active, so it needs the admin token in every mode. */
static int stats_users(struct lws *wsi, struct server *srv, struct http_state *st)
{
    char auth[512];
    if (!srv->admin_token)
        return respond_error(wsi, st, 403, "forbidden",
                             "no admin token is configured: start parleyd with "
                             "--admin-token-file to use this endpoint");
    if (lws_hdr_copy(wsi, auth, sizeof(auth), WSI_TOKEN_HTTP_AUTHORIZATION) <= 0 ||
        !auth_bearer_ok(auth, srv->admin_token))
        return respond_error(wsi, st, 401, "auth_required",
                             "this endpoint needs the admin token (Authorization: Bearer)");
    char *json = counters_json(srv->counters, now_wall_ms());
    int rc = respond_json(wsi, st, 200, json);
    free(json);
    return rc;
}

unsigned http_version_status(struct lws *wsi, bool upgrade)
{
    char v[16];

    /* an h2 stream has no request line; its network wsi is another wsi */
    if (lws_get_network_wsi(wsi) != wsi)
        return 0;
    /* lws keeps what follows the request target verbatim in WSI_TOKEN_HTTP
     * (RFC 9112: HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive) */
    if (lws_hdr_copy(wsi, v, sizeof(v), WSI_TOKEN_HTTP) != 8 || memcmp(v, "HTTP/", 5) != 0 ||
        v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9')
        return 400;
    if (v[5] != '1')
        return 505;
    if (upgrade && v[7] == '0')
        return 400;
    return 0;
}

int http_request(struct lws *wsi, struct server *srv, struct http_state *st, const char *uri)
{
    char rel[1100], inm[128];
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
    bool head = lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0;

    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    char clen[32];

    http_release(st);
    memset(st, 0, sizeof(*st));
    st->wsi = wsi;
    st->headers_only = head;
    unsigned vs = http_version_status(wsi, false);
    if (vs) {
        /* lws would have answered it as HTTP/1.0; the response still goes
         * out with an HTTP/1.0 status line, then the connection closes */
        st->close_after = true;
        return respond_text(wsi, st, vs,
                            vs == 505 ? "HTTP version not supported\n"
                                      : "bad request: malformed HTTP version\n");
    }
    /* lws hands us the decoded path as a C string: a %00 in it would cut
     * the path short and answer for another file, so refuse it outright */
    int ulen = lws_hdr_total_length(wsi, post ? WSI_TOKEN_POST_URI
                                              : head ? WSI_TOKEN_HEAD_URI : WSI_TOKEN_GET_URI);
    if (ulen > 0 && (size_t)ulen != strlen(uri))
        return respond_text(wsi, st, 400, "bad request: NUL in path\n");
    if (post) {
        if (strcmp(uri, "/api/register") == 0)
            st->api = API_REGISTER;
        else if (strcmp(uri, "/api/login") == 0)
            st->api = API_LOGIN;
        else
            return respond_error(wsi, st, 404, "not_found", "no such endpoint");
        if (!srv->accounts)
            return respond_error(wsi, st, 404, "not_found",
                                 "accounts are disabled on this server (--auth open)");
        if (lws_hdr_copy(wsi, clen, sizeof(clen), WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
            return respond_error(wsi, st, 411, "length_required",
                                 "send the body with a Content-Length");
        if (strtoull(clen, NULL, 10) > API_BODY_MAX)
            return respond_error(wsi, st, 413, "too_large", "request body over 8 KiB");
        return 0; /* the body follows */
    }
    if (!get && !head)
        return respond_text(wsi, st, 405, "method not allowed\n");
    st->headers_only = head;

    if (strcmp(uri, "/healthz") == 0) {
        /* a cluster node without its shared log serves only what it has
         * locally: the load balancer should send new users elsewhere */
        if (!store_up(srv->store))
            return respond_text(wsi, st, 503, "degraded: the cluster engine (redis) is "
                                              "unreachable\n");
        return respond_text(wsi, st, 200, "ok\n");
    }
    if (strcmp(uri, "/metrics") == 0) {
        struct store_stats ss;
        sample_metrics(srv, &ss);
        st->owned = metrics_render(&srv->metrics, &ss);
        st->body = msg_payload(st->owned, &st->len);
        return start_response(wsi, st, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
                              false);
    }
    if (strcmp(uri, "/api/stats/users") == 0)
        return stats_users(wsi, srv, st);
    if (strncmp(uri, "/api/", 5) == 0)
        return respond_error(wsi, st, strcmp(uri, "/api/register") == 0 ||
                                              strcmp(uri, "/api/login") == 0
                                          ? 405
                                          : 404,
                             "not_found", "no such endpoint for this method");
    if (strcmp(uri, "/ws") == 0)
        return respond_text(wsi, st, 426, "this endpoint speaks WebSocket: upgrade required\n");

    const struct webfile *f = NULL;
    if (srv->web && pathres_resolve(uri, strlen(uri), rel, sizeof(rel)) == 0)
        f = webcache_get(srv->web, rel);
    if (!f)
        return respond_text(wsi, st, 404, "not found\n");

    if (lws_hdr_copy(wsi, inm, sizeof(inm), WSI_TOKEN_HTTP_IF_NONE_MATCH) > 0 &&
        strcmp(inm, f->etag) == 0) {
        /* no body, but the length is the representation's, as for HEAD */
        st->headers_only = 1;
        st->len = f->len;
        return start_response(wsi, st, 304, f->mime, f->etag, false);
    }
    st->body = f->data;
    st->len = f->len;
    return start_response(wsi, st, 200, f->mime, f->etag, strncmp(f->mime, "text/html", 9) == 0);
}

int http_writeable(struct lws *wsi, struct server *srv, struct http_state *st)
{
    unsigned char buf[LWS_PRE + CHUNK];
    (void)srv;

    if (!st->body || st->off >= st->len)
        return st->close_after ? -1 : 0;
    /* copy into headroomed scratch: lws (h2 in particular) writes framing
     * in front of the buffer, and the web cache is shared and read-only */
    size_t n = st->len - st->off;
    if (n > CHUNK)
        n = CHUNK;
    memcpy(buf + LWS_PRE, st->body + st->off, n);
    st->off += n;
    bool last = st->off >= st->len;
    if (lws_write(wsi, buf + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
        (int)n)
        return -1;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    msg_unref(&st->owned);
    st->body = NULL;
    if (st->close_after || lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

int http_body(struct lws *wsi, struct server *srv, struct http_state *st, const void *in,
              size_t len)
{
    (void)srv;
    if (st->answered || st->api == API_NONE || !len)
        return 0; /* refused already (the rest drains), or nothing to add */
    if (st->req_len + len > API_BODY_MAX) {
        free(st->req_body);
        st->req_body = NULL;
        return respond_error(wsi, st, 413, "too_large", "request body over 8 KiB");
    }
    st->req_body = xrealloc(st->req_body, st->req_len + len + 1);
    memcpy(st->req_body + st->req_len, in, len);
    st->req_len += len;
    return 0;
}

/* Answer with what the accounts module put in r; a 429 carries Retry-After
 * (whole seconds, rounded up, as HTTP wants them). */
static int respond_acct(struct lws *wsi, struct http_state *st, const struct acct_req *r)
{
    st->retry_after_s = r->retry_after_ms > 0 ? (r->retry_after_ms + 999) / 1000 : 0;
    return respond_json(wsi, st, (unsigned)r->http_status, r->body);
}

/* loop_post runs a void (*)(void *): calling r->done through that type would
 * be undefined behaviour, so the loop calls this, which calls done() with its
 * own type. Thread: the request's loop. */
static void run_done(void *arg)
{
    struct acct_req *r = arg;
    r->done(r);
}

/* Thread: an accounts worker. Back to the loop the request came from. */
static int api_hand_back(struct acct_req *r)
{
    return loop_post(r->home, run_done, r);
}

/* Thread: the loop, via api_hand_back from the accounts worker. */
static void api_done(struct acct_req *r)
{
    struct http_state *st = r->arg;
    if (!atomic_load(&r->cancelled)) {
        st->pending = NULL;
        if (respond_acct(st->wsi, st, r) != 0)
            lws_set_timeout(st->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    acct_req_free(r);
}

int http_body_complete(struct lws *wsi, struct server *srv, struct http_state *st)
{
    char msg[160];
    struct acct_req *r;

    if (st->answered || st->api == API_NONE)
        return 0;
    r = xcalloc(1, sizeof(*r));
    if (codec_decode_credentials(st->req_body ? st->req_body : "", st->req_len, &r->cred, msg,
                                 sizeof(msg)) != ERR_NONE) {
        acct_req_free(r);
        return respond_error(wsi, st, 400, "bad_request", msg);
    }
    if (st->api == API_REGISTER) {
        if (!auth_password_ok(r->cred.password)) {
            acct_req_free(r);
            return respond_error(wsi, st, 400, "bad_request",
                                 "password must be 8 to 1024 characters");
        }
        if (r->cred.email && !auth_email_ok(r->cred.email)) {
            acct_req_free(r);
            return respond_error(wsi, st, 400, "bad_request", "malformed email address");
        }
    }
    r->op = st->api == API_REGISTER ? ACCT_REGISTER : ACCT_LOGIN;
    r->home = lws_context_user(lws_get_context(wsi));
    r->hand_back = api_hand_back;
    r->done = api_done;
    r->arg = st;
    /* throttled per address: an unknown one ("") is one key of its own */
    if (!lws_get_peer_simple(wsi, r->addr, sizeof(r->addr)))
        r->addr[0] = '\0';
    if (accounts_submit(srv->accounts, r) != 0) {
        /* refused before any hashing: 429 with Retry-After, or 503 stopping */
        int rc = respond_acct(wsi, st, r);
        acct_req_free(r);
        return rc;
    }
    st->pending = r;
    return 0;
}

void http_release(struct http_state *st)
{
    msg_unref(&st->owned);
    st->body = NULL;
    free(st->req_body);
    st->req_body = NULL;
    st->req_len = 0;
    if (st->pending) {
        /* the worker still holds it: it will only be freed when it comes back */
        atomic_store(&st->pending->cancelled, true);
        st->pending = NULL;
    }
}
