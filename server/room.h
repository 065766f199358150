/*
 * room — a chat room (or a DM conversation "dm:a:b") and the registry that
 * maps names to rooms.
 *
 * The registry is read-mostly: lookups take the read lock; creation takes
 * the write lock and looks again before creating, so racing joiners create a
 * room exactly once. A room is reference counted (lookups, memberships and
 * in-flight loads each hold one). What a client can make the registry
 * remember is bounded:
 *   - a room nobody references goes on the idle list (its member array and
 *     history window released), most recently used last; the oldest idle
 *     rooms are reclaimed as soon as there are more than `idle_max` of them
 *     or their remembered former members exceed ROOM_IDLE_NAMES per idle
 *     room. A room that was never used (no messages, nobody ever joined) is
 *     reclaimed at once.
 *   - a room's seq is not kept after it is reclaimed: a room the registry
 *     creates starts ROOM_COLD, and the broker reads its last seq from
 *     storage (off the loop) before anything that needs the seq runs, so
 *     seqs stay gapless across reclaim and restart.
 *   - each room remembers its members and at most ROOM_FORMER_MAX former
 *     members (for @mention notifications), the most recent ones.
 * Rooms with members are also on an active list, so listing them and
 * counting them costs what is active, never what is idle.
 *
 * Inside a room, one mutex guards members, seq, the window and the per-user
 * records. The broker holds it while it assigns a seq and pushes the encoded
 * frame to every member's queue (client locks nest inside); it is never held
 * across I/O.
 */
#ifndef PARLEY_ROOM_H
#define PARLEY_ROOM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec.h"
#include "htable.h"

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

/* Former members a room remembers (for @mentions), the most recent kept. */
#define ROOM_FORMER_MAX 256
/* Idle rooms together may remember this many former members per idle room
 * allowed (idle_max): past that the oldest idle rooms are reclaimed. */
#define ROOM_IDLE_NAMES 8
/* Presence per (room, user): a burst of this many events, then one per
 * interval; changes beyond that wait (see room_presence_locked). */
#define ROOM_PRESENCE_BURST 4
#define ROOM_PRESENCE_INTERVAL_MS 1000

enum room_state {
    ROOM_COLD,    /* last seq unknown: to be read from storage */
    ROOM_LOADING, /* that read is in flight; requests needing the seq wait */
    ROOM_READY,   /* seq is the room's last seq */
};

struct room_user;
struct ack_wait;

struct room {
    char name[CODEC_ROOMID_MAX + 1];
    bool is_dm;
    bool on_idle;               /* {registry idle lock} on the idle list */
    _Atomic unsigned refs;
    struct hnode hnode;         /* {registry lock} in the registry, keyed by name */
    struct room *idle_prev, *idle_next; /* {registry idle lock} while refs == 0 */
    struct room *act_prev, *act_next;   /* {registry active lock} while nmembers > 0 */
    struct rooms *reg;          /* fixed */
    size_t idle_names;          /* {registry idle lock} nformer when it went idle */

    pthread_mutex_t lock;
    struct client **members; /* {lock} each holds a client reference */
    size_t nmembers, mcap;   /* {lock} */
    uint64_t seq;            /* {lock} last assigned seq (valid when ROOM_READY), 0 = none */
    enum room_state state;   /* {lock} */
    struct client **waiters; /* {lock} clients waiting for the load, each a reference */
    size_t nwaiters, waitcap; /* {lock} */
    struct hist **win;       /* {lock} ring of the latest messages, seqs lo..seq */
    size_t wcap, whead, wcount; /* {lock} */
    struct strmap *users;    /* {lock} name -> struct room_user: members and former members */
    struct room_user *former, *former_tail; /* {lock} former members, oldest first */
    size_t nformer;          /* {lock} */
    /* {lock} the broker's, shared engine only: acks of this node's sends
     * waiting until their event reached the members here */
    struct ack_wait *acks;
};

typedef struct rooms rooms_t;

/* Thread: main. window = messages kept in memory per room; idle_max =
 * rooms nobody references kept in memory (0: reclaim at once). */
rooms_t *rooms_new(size_t window, size_t idle_max);
void rooms_free(rooms_t *r);
/* Thread: main, at start (and tests): a room known with its last seq
 * (ROOM_READY); it goes on the idle list like any unreferenced room. */
void rooms_preload(rooms_t *r, const char *name, uint64_t seq);

/* Thread: main, before use. A shared engine's rooms (store.h): a ready room
 * nobody references any more is handed to fn (with the registry's write
 * lock and the room's lock held: fn must only unsubscribe, never call back
 * into the registry) and removed at once instead of going idle, since its
 * seq is only current while the node is subscribed to it. */
void rooms_forget_idle(rooms_t *r, void (*fn)(void *arg, struct room *rm), void *arg);
/* Thread: any. Look a room up (NULL if absent and !create), with a
 * reference. A room created here is ROOM_COLD. */
struct room *rooms_acquire(rooms_t *r, const char *name, bool create);
/* Thread: any. One more reference to a room the caller holds one of. */
struct room *rooms_ref(struct room *rm);
/* Thread: any. Drop a reference from rooms_acquire; the last one puts the
 * room on the idle list (or reclaims it) and may reclaim the oldest idle. */
void rooms_release(rooms_t *r, struct room **rp);
/* Thread: any. Rooms with members (not DMs), for the `rooms` reply: fills up
 * to max entries (names copied into out's storage) and returns the count.
 * Walks the active list only. */
struct room_snapshot {
    char name[CODEC_ROOM_MAX + 1];
    unsigned members; /* distinct users */
    uint64_t seq;
};
size_t rooms_list(rooms_t *r, struct room_snapshot *out, size_t max);
/* Thread: any. Number of rooms that currently have members (O(1)). */
size_t rooms_active(rooms_t *r);
/* Thread: any. The registry's size, for metrics and tests (O(1)). */
struct rooms_stats {
    size_t held;       /* rooms in memory */
    size_t active;     /* of which with members */
    size_t idle;       /* of which on the idle list */
    uint64_t reclaimed; /* rooms removed from memory since start */
};
void rooms_stats(rooms_t *r, struct rooms_stats *out);

/* ---- with room->lock held ---- */
/* Add c (takes a client reference) unless present; returns true if added. */
bool room_add_member_locked(struct room *rm, struct client *c);
/* Remove c (drops the reference) if present; returns true if removed. */
bool room_remove_member_locked(struct room *rm, struct client *c);
bool room_has_member_locked(const struct room *rm, const struct client *c);
/* True if user is a member or one of the ROOM_FORMER_MAX latest former
 * members of this room while it has been in memory. */
bool room_user_joined_ever_locked(const struct room *rm, const char *user);
/* Connections of user in the room. */
unsigned room_user_conns_locked(const struct room *rm, const char *user);
/* Distinct member names (pointers into the clients, valid while locked);
 * with out == NULL, just their number. */
size_t room_member_names_locked(const struct room *rm, const char **out, size_t max);

/*
 * Presence coalescing, per (room, user). Call after user's connection count
 * in the room changed (or later, to flush a deferred change) at now_ms.
 * Returns ROOM_PRES_ANNOUNCE with *present set: tell the members user is now
 * present / absent. ROOM_PRES_NONE: nothing to tell (the members were
 * already told this state, e.g. a leave that waited and a re-join cancel
 * out). ROOM_PRES_DEFERRED: the change is over the (room, user) budget of
 * ROOM_PRESENCE_BURST events then one per ROOM_PRESENCE_INTERVAL_MS; call
 * again later (force: announce regardless of the budget). Once the room has
 * no members, nothing is owed to anyone and every record starts over.
 */
enum room_presence { ROOM_PRES_NONE, ROOM_PRES_ANNOUNCE, ROOM_PRES_DEFERRED };
enum room_presence room_presence_locked(struct room *rm, const char *user, int64_t now_ms,
                                        bool force, bool *present);

/* The users the members were last told are present (a cluster node whose
 * room is about to empty takes them back from the directory): a malloc'd
 * array of malloc'd names, *n of them. */
char **room_announced_locked(struct room *rm, size_t *n);

/* Park c until the room's load finishes (takes a client reference). */
void room_add_waiter_locked(struct room *rm, struct client *c);
/* Hand the waiters over (the caller owns the array and its references). */
struct client **room_take_waiters_locked(struct room *rm, size_t *n);

/* Append the next message (h->m.seq > seq: seq + 1, or a jump past seqs a
 * shared engine's log no longer has, which empties the window first; the
 * window takes a reference), evicting the oldest beyond the window size. */
void room_append_locked(struct room *rm, struct hist *h);
/* Lowest seq held in the window (seq + 1 when empty). */
uint64_t room_window_lo_locked(const struct room *rm);
/* References to window messages with seq in [a, b] (both in the window). */
size_t room_window_copy_locked(const struct room *rm, uint64_t a, uint64_t b, struct hist **out);

#endif
