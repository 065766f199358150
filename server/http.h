/*
 * http — plain HTTP on the chat port: /healthz, /metrics, and the web client
 * from the in-memory web cache. Responses are small and fully prepared when
 * the request arrives, so writing never waits on anything.
 * Thread: the loop thread that owns the connection.
 */
#ifndef PARLEY_HTTP_H
#define PARLEY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

struct lws;
struct server;
struct acct_req;

enum http_api { API_NONE, API_REGISTER, API_LOGIN };

/* Per-connection HTTP state (lives in lws's per-session data). */
struct http_state {
    msg_t *owned;               /* dynamic body, or NULL */
    const unsigned char *body;  /* into owned or the web cache */
    size_t len, off;
    int headers_only;           /* HEAD or 304 */
    enum http_api api;          /* a POST being received */
    char *req_body;             /* its body so far (bounded) */
    size_t req_len;
    bool answered;              /* a response was started for this request */
    struct acct_req *pending;   /* off-loop work in flight, answered via loop_post */
    bool close_after;           /* hang up once this response is out (bad request line) */
    int64_t retry_after_s;      /* > 0: send Retry-After with this response (a 429) */
    struct lws *wsi;
};

/* The request line's HTTP version, which lws 4.1 does not police (it takes
 * anything but "HTTP/1.1" for HTTP/1.0): 0 if it is HTTP/1.x (or the
 * request came over h2), 400 if it is malformed or missing, 505 if it names
 * another major version. With upgrade set, the WebSocket handshake's rule
 * applies on top (RFC 6455 4.2.1: HTTP/1.1 or higher), so HTTP/1.0 is 400. */
unsigned http_version_status(struct lws *wsi, bool upgrade);

/* LWS_CALLBACK_HTTP: answer the request for uri. Returns what the lws
 * callback should return. */
int http_request(struct lws *wsi, struct server *srv, struct http_state *st, const char *uri);
/* LWS_CALLBACK_HTTP_BODY / _BODY_COMPLETION: a POST body arrives. */
int http_body(struct lws *wsi, struct server *srv, struct http_state *st, const void *in,
              size_t len);
int http_body_complete(struct lws *wsi, struct server *srv, struct http_state *st);
/* LWS_CALLBACK_HTTP_WRITEABLE: send the next chunk of the body. */
int http_writeable(struct lws *wsi, struct server *srv, struct http_state *st);
/* The connection's HTTP transaction ended. */
void http_release(struct http_state *st);

#endif
