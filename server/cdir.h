/*
 * cdir — the cluster directory: who is present in which room, which user
 * names are held, and which nodes are alive, kept in Redis (through rds) so
 * that `who`, `rooms`, presence events and open-mode `name_taken` are
 * cluster-wide.
 *
 * Data on each shard (a standalone Redis; every step is one Lua script, so
 * it is atomic on its shard):
 *   r:{<room>}:who      hash user -> number of nodes holding (room, user),
 *                       on the room's shard (rds_shard(room))
 *   r:{<room>}          the room's channel: `p+<user>` when the count goes
 *                       0 -> 1, `p-<user>` when it goes 1 -> 0 (once each,
 *                       whichever node caused it, a leave or a cleanup)
 *   cdir:rooms          set of the shard's rooms with members (no dm:*), so
 *                       `rooms` costs what is live, not what ever existed
 *   u:{<name>}          hash node id -> 1: the nodes holding the name, on
 *                       the name's shard
 *   node:<id>           the node's heartbeat (PX ttl), on every shard
 *   cdir:nodes          set of node ids that have records on the shard
 *   node:<id>:rp        the node's (room "\n" user) pairs on the shard,
 *   node:<id>:names     its names there (".old" twins: being cleaned up)
 *
 * Liveness: every node refreshes node:<id> on every shard each ttl/3 and
 * scans cdir:nodes on every shard about every 2 s. A node whose key has
 * expired is cleaned up inside the scan script (at most CDIR_CLEAN_BUDGET
 * entries per call; the scan repeats at once while there is more): its pairs
 * are removed with `p-` for each that became absent cluster-wide, its names
 * released. Each entry is taken off the dead node's record (SPOP) in the
 * same atomic step that removes it, so two survivors racing announce each
 * leave once. Bound: a dead node's leaves are announced within ttl + scan
 * interval + one round trip (10 s + 2.4 s with defaults, <= 15 s).
 *
 * A node that finds its own heartbeat key gone (it paused past the TTL and
 * may have been cleaned up, or Redis lost its data) re-announces what it
 * holds on that shard from its local mirror; joins are idempotent per node.
 *
 * Redis Cluster: the scripts touch the room's keys (one hash tag) plus the
 * shard-wide index and node records, which a Cluster would put in other
 * slots; there the index and records would move under per-room tags and the
 * cleanup would walk rooms instead (ARCHITECTURE.md).
 *
 * Threads: every call any thread, never blocking on I/O (a short lock and a
 * hand-off to rds); results come through callbacks on the rds thread, which
 * must only hand work on. The timers run on a small thread of cdir's own.
 */
#ifndef PARLEY_CDIR_H
#define PARLEY_CDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rds.h"

typedef struct cdir cdir_t;

#define CDIR_TTL_DEFAULT_MS 10000
#define CDIR_SCAN_MS 2000
#define CDIR_LIST_MAX 1024     /* who and rooms replies, like the local ones */
#define CDIR_NAME_MAX 80       /* room (dm:a:b included), user, node id */
#define CDIR_CLEAN_BUDGET 5000 /* entries one cleanup script call removes */

struct cdir_room {
    char name[CDIR_NAME_MAX + 1];
    unsigned members; /* distinct users cluster-wide */
    uint64_t seq;     /* GET r:{<room>}:seq, 0 if none */
};

typedef void cdir_list_cb(void *arg, const char *const *users, size_t n, bool ok);
typedef void cdir_rooms_cb(void *arg, const struct cdir_room *rooms, size_t n, bool ok);
typedef void cdir_add_cb(void *arg, bool ok, bool taken);
typedef void cdir_online_cb(void *arg, bool online, bool ok);

/* Thread: main, after rds_open. Registers the scripts; ttl_ms <= 0 means
 * CDIR_TTL_DEFAULT_MS (at least 300). NULL with a message in err on bad
 * arguments. */
cdir_t *cdir_new(rds_t *rds, const char *node_id, int ttl_ms, char *err, size_t errsz);
/* Thread: main, once, before any other call. Checks that no live node
 * lists other shards (or the same in another order: rooms would be placed
 * differently), waiting for every shard's answer; removes what a previous
 * run with this node id left (announcing its leaves), heartbeats (the key
 * holds the shard list), and starts the timer thread. Returns 0 or -errno
 * with a message in err: -EINVAL for another node's list, -ETIMEDOUT /
 * -EIO when a shard did not answer, or the thread could not start. */
int cdir_start(cdir_t *c, char *err, size_t errsz);
/* Thread: main, before rds_close. Goodbye: removes this node's entries on
 * every shard (announcing leaves), waiting at most about 2 s, then frees.
 * NULL ok. */
void cdir_free(cdir_t *c);

/* Thread: any. This node's first connection of user entered room / its
 * last one left. Returns 0, or -EINVAL (names too long or with '\n'). */
int cdir_room_join(cdir_t *c, const char *room, const char *user);
int cdir_room_leave(cdir_t *c, const char *room, const char *user);
/* Thread: any. Distinct users present in room cluster-wide (at most
 * CDIR_LIST_MAX); users valid during the call only. Returns 0 or -EINVAL
 * (cb not called then). */
int cdir_who(cdir_t *c, const char *room, cdir_list_cb *cb, void *arg);
/* Thread: any. Rooms with members on every shard, DMs excluded, at most
 * CDIR_LIST_MAX; ok=false (n=0) if a shard failed. */
int cdir_rooms(cdir_t *c, cdir_rooms_cb *cb, void *arg);

/* Thread: any. This node's first connection of name. exclusive: fails with
 * taken=true when another live node holds it (open mode). cb may be NULL. */
int cdir_user_add(cdir_t *c, const char *name, bool exclusive, cdir_add_cb *cb, void *arg);
/* Thread: any. This node's last connection of name went. */
int cdir_user_del(cdir_t *c, const char *name);
/* Thread: any. Is name held by any live node (this one included)? */
int cdir_user_online(cdir_t *c, const char *name, cdir_online_cb *cb, void *arg);

struct cdir_stats {
    size_t nodes_alive;        /* live nodes at the latest scan (most on any shard) */
    uint64_t cleanups;         /* dead nodes whose records this node finished removing */
    uint64_t leaves_announced; /* p- published by this node's cleanups */
    uint64_t replays;          /* this node re-announced its entries on a shard */
    uint64_t script_failures;  /* scripts that failed (no reply or an error reply) */
};
/* Thread: any. */
void cdir_stats(cdir_t *c, struct cdir_stats *out);

/* Tests only: stop the timers and free without goodbye, as if the process
 * died (the heartbeat key then expires). Thread: main. */
void cdir__abandon(cdir_t *c);

#endif
