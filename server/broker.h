/*
 * broker — protocol v1 semantics: identities, rooms, DMs, presence,
 * publishing with per-room seq, idempotency, history, and the hand-off of
 * durable acks from the storage thread back to the sender.
 *
 * The broker has no thread of its own: its entry points run on the home loop
 * of the client they are given; storage completions run on the store's
 * threads and only encode a frame and push it to the client's queue.
 *
 * Flow of one `send`: decode (codec) -> assign seq under the room lock ->
 * queue the write (store) -> encode the message once -> push a reference to
 * every member's queue (client) -> their loops write it. Later the store
 * commits and the completion pushes `ack` to the sender.
 */
#ifndef PARLEY_BROKER_H
#define PARLEY_BROKER_H

#include <stddef.h>

struct server;
struct client;
struct broker;

/* Thread: main. Builds the in-memory state from storage (users seen,
 * recent client ids; rooms are read when first needed). NULL with err on
 * failure. */
struct broker *broker_new(struct server *srv, char *err, size_t errsz);
void broker_free(struct broker *b);

/* Thread: home loop of c. A connection was upgraded; user/room come from the
 * query string ("" if absent) and are handled like hello and join. */
void broker_connected(struct broker *b, struct client *c, const char *user, const char *token,
                      const char *room);
/* Thread: home loop of c. One complete text message from the client. */
void broker_frame(struct broker *b, struct client *c, const char *buf, size_t len);
/* Thread: home loop of c. The connection is gone: leave every room, drop
 * the user's claim, announce presence. */
void broker_disconnected(struct broker *b, struct client *c);

/* Thread: home loop of c, about once a second: announce the presence
 * changes of c's user that waited for their budget (see room.h). */
void broker_tick(struct broker *b, struct client *c);

/* Thread: any. A new account exists (for no_such_user). */
void broker_user_added(struct broker *b, const char *name, const char *email);

/* Thread: main (it reads the database). Reload every user's account state
 * (SIGHUP): e-mail addresses, deletions and revoked tokens; connections
 * signed in with a token that is no longer accepted are closed with 1008.
 * 0 or -1. */
int broker_reload_users(struct broker *b);
/* Thread: main (it reads the database; never an I/O loop). Take in the
 * accounts changed since the last call, by this process or another
 * (`parleyd user ...`), as broker_reload_users does. Cheap when nothing
 * changed; main calls it every second. 1 if something changed, 0 if not,
 * -1 on a read error. */
int broker_poll_users(struct broker *b);

/* Thread: any. Rooms that currently have members. */
size_t broker_active_rooms(struct broker *b);
/* Thread: any. The room registry's size (O(1)), for /metrics. */
struct broker_room_stats {
    size_t active;      /* rooms with members */
    size_t held;        /* rooms in memory: with members, idle or loading */
    size_t idle;        /* rooms in memory that nobody is in */
    unsigned long long reclaimed; /* rooms removed from memory since start */
};
void broker_room_stats(struct broker *b, struct broker_room_stats *out);

#endif
