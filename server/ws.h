/*
 * ws — the libwebsockets glue: one protocol callback serves HTTP requests
 * (handed to http.c) and the /ws WebSocket (JSON as protocol "parley" or the
 * default, text mode as "parley.text" or ?format=text), turning lws events
 * into broker calls and draining client queues on writable.
 * Thread: the loop thread that owns the connection.
 */
#ifndef PARLEY_WS_H
#define PARLEY_WS_H

struct lws_protocols;

/* Thread: c's home loop. Ask lws for a writable callback on c (arming the
 * close grace timer if c is being closed). */
struct client;
void ws_kick(struct client *c);

/* The protocol table every loop's context is created with. */
const struct lws_protocols *ws_protocols(void);

#endif
