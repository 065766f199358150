/*
 * room — a chat room (or a DM conversation "dm:a:b") and the registry that
 * maps names to rooms.
 *
 * The registry is read-mostly: lookups take the read lock; creation takes
 * the write lock and looks again before creating, so racing joiners create a
 * room exactly once. A room is reference counted (lookups and memberships
 * each hold one); a room that has no references, no members and no messages
 * is reclaimed. A room that has messages keeps a small record (name, seq) so
 * its seq stays gapless without a disk read on the event loop; its member
 * array and history window are released when it empties.
 *
 * Inside a room, one mutex guards members, seq and the window. The broker
 * holds it while it assigns a seq and pushes the encoded frame to every
 * member's queue (client locks nest inside); it is never held across I/O.
 */
#ifndef PARLEY_ROOM_H
#define PARLEY_ROOM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec.h"

struct client;

/* One stored chat message, shared by the window, history replies and
 * in-flight storage writes. Immutable after creation. */
struct hist {
    _Atomic unsigned refs;
    struct chat_msg m; /* strings point into buf */
    char buf[];
};

struct hist *hist_new(const char *room, uint64_t seq, const char *from, const char *text,
                      size_t text_len, int64_t ts, const char *id);
struct hist *hist_ref(struct hist *h);
void hist_unref(struct hist **hp);

struct room {
    char name[CODEC_ROOMID_MAX + 1];
    bool is_dm;
    _Atomic unsigned refs;
    struct room *hnext; /* {registry lock} */

    pthread_mutex_t lock;
    struct client **members; /* {lock} each holds a client reference */
    size_t nmembers, mcap;   /* {lock} */
    uint64_t seq;            /* {lock} last assigned seq, 0 = none yet */
    struct hist **win;       /* {lock} ring of the latest messages, seqs lo..seq */
    struct strmap *joined_ever; /* {lock} users who have joined (for @mentions), or NULL */
    size_t wcap, whead, wcount; /* {lock} */
};

typedef struct rooms rooms_t;

/* Thread: main. window = messages kept in memory per room. */
rooms_t *rooms_new(size_t window);
void rooms_free(rooms_t *r);
/* Thread: main, at start: a room known from storage with its last seq. */
void rooms_preload(rooms_t *r, const char *name, uint64_t seq);

/* Thread: any. Look a room up (NULL if absent and !create), with a reference. */
struct room *rooms_acquire(rooms_t *r, const char *name, bool create);
/* Thread: any. Drop a reference from rooms_acquire; may reclaim the room. */
void rooms_release(rooms_t *r, struct room **rp);
/* Thread: any. Rooms with members (not DMs), for the `rooms` reply: fills up
 * to max entries (names copied into out's storage) and returns the count. */
struct room_snapshot {
    char name[CODEC_ROOM_MAX + 1];
    unsigned members; /* distinct users */
    uint64_t seq;
};
size_t rooms_list(rooms_t *r, struct room_snapshot *out, size_t max);
/* Thread: any. Number of rooms that currently have members. */
size_t rooms_active(rooms_t *r);

/* ---- with room->lock held ---- */
/* Add c (takes a client reference) unless present; returns true if added. */
bool room_add_member_locked(struct room *rm, struct client *c);
/* Remove c (drops the reference) if present; returns true if removed. */
bool room_remove_member_locked(struct room *rm, struct client *c);
bool room_has_member_locked(const struct room *rm, const struct client *c);
/* True if user has joined this room since the server started. */
bool room_user_joined_ever_locked(const struct room *rm, const char *user);
/* Connections of user in the room. */
unsigned room_user_conns_locked(const struct room *rm, const char *user);
/* Distinct member names (pointers into the clients, valid while locked);
 * with out == NULL, just their number. */
size_t room_member_names_locked(const struct room *rm, const char **out, size_t max);
/* Append the next message (h->m.seq must be seq + 1; the window takes a
 * reference), evicting the oldest beyond the window size. */
void room_append_locked(struct room *rm, struct hist *h);
/* Lowest seq held in the window (seq + 1 when empty). */
uint64_t room_window_lo_locked(const struct room *rm);
/* References to window messages with seq in [a, b] (both in the window). */
size_t room_window_copy_locked(const struct room *rm, uint64_t a, uint64_t b, struct hist **out);

#endif
