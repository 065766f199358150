/*
 * http — see http.h. Every response body is ready in memory when the
 * request arrives (the web cache, a rendered metrics page, a fixed text), so
 * the loop never waits on the disk.
 */
#include "http.h"

#include <libwebsockets.h>
#include <string.h>

#include "broker.h"
#include "log.h"
#include "metrics.h"
#include "pathres.h"
#include "server.h"
#include "util.h"
#include "webcache.h"

#define CHUNK (32 * 1024)

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

    if (lws_add_http_common_headers(wsi, status, mime, st->headers_only ? 0 : st->len, &p, end) ||
        add_header(wsi, "x-content-type-options:", "nosniff", &p, end) ||
        add_header(wsi, "cache-control:", etag ? "no-cache" : "no-store", &p, end) ||
        (etag && add_header(wsi, "etag:", etag, &p, end)) ||
        (html && add_header(wsi, "content-security-policy:", csp, &p, end)) ||
        (html && add_header(wsi, "referrer-policy:", "no-referrer", &p, end)))
        return 1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return 1;
    if (st->headers_only || st->len == 0) {
        if (lws_http_transaction_completed(wsi))
            return -1;
        return 0;
    }
    lws_callback_on_writable(wsi);
    return 0;
}

static int respond_text(struct lws *wsi, struct http_state *st, unsigned status,
                        const char *text)
{
    st->owned = msg_new_text(text, strlen(text));
    st->body = msg_payload(st->owned, &st->len);
    st->off = 0;
    return start_response(wsi, st, status, "text/plain; charset=utf-8", NULL, false);
}

int http_request(struct lws *wsi, struct server *srv, struct http_state *st, const char *uri)
{
    char rel[1100], inm[128];
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
    bool head = lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI) > 0;

    memset(st, 0, sizeof(*st));
    if (!get && !head) {
        st->headers_only = 0;
        return respond_text(wsi, st, 405, "method not allowed\n");
    }
    st->headers_only = head;

    if (strcmp(uri, "/healthz") == 0)
        return respond_text(wsi, st, 200, "ok\n");
    if (strcmp(uri, "/metrics") == 0) {
        /* a sampled gauge: computed at scrape time */
        atomic_store_explicit(&srv->metrics.rooms, (int64_t)broker_active_rooms(srv->broker),
                              memory_order_relaxed);
        st->owned = metrics_render(&srv->metrics);
        st->body = msg_payload(st->owned, &st->len);
        return start_response(wsi, st, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
                              false);
    }
    if (strcmp(uri, "/ws") == 0)
        return respond_text(wsi, st, 426, "this endpoint speaks WebSocket: upgrade required\n");

    const struct webfile *f = NULL;
    if (srv->web && pathres_resolve(uri, strlen(uri), rel, sizeof(rel)) == 0)
        f = webcache_get(srv->web, rel);
    if (!f)
        return respond_text(wsi, st, 404, "not found\n");

    if (lws_hdr_copy(wsi, inm, sizeof(inm), WSI_TOKEN_HTTP_IF_NONE_MATCH) > 0 &&
        strcmp(inm, f->etag) == 0) {
        st->headers_only = 1;
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
        return 0;
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
    if (lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

void http_release(struct http_state *st)
{
    msg_unref(&st->owned);
    st->body = NULL;
}
