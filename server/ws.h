/*
 * ws — the libwebsockets glue: one protocol callback serves HTTP requests
 * (handed to http.c) and the /ws WebSocket (JSON as protocol "parley" or the
 * default, text mode as "parley.text" or ?format=text), turning lws events
 * into broker calls and draining client queues on writable.
 * Thread: the loop thread that owns the connection.
 */
#ifndef PARLEY_WS_H
#define PARLEY_WS_H

#include <stdint.h>

struct lws_protocols;

struct conn;

/* The three are the loop's struct loop_ops (main.c wires them). */

/* Thread: k's home loop, between service passes (not in a callback). Send
 * what k's client has queued now (one write), or ask lws for a writable
 * callback when the socket is backed up or the client is being closed
 * (arming the close grace timer). */
void ws_kick(struct conn *k);

/* Thread: k's home loop, once a second. Ping when nothing came from the
 * peer for ping_s seconds (now_s and k->seen_s are loop ticks), hang up
 * when nothing came for twice that; close with 1008 when a message begun
 * more than --fragment-timeout seconds ago is still unfinished. */
void ws_idle_check(struct conn *k, uint32_t now_s, uint32_t ping_s);

/* The protocol table every loop's context is created with. */
const struct lws_protocols *ws_protocols(void);

#endif
