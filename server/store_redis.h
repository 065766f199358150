/*
 * store_redis — the shared engine: every node of a cluster keeps its rooms'
 * event logs in Redis (rds.h: one or more independent servers, rooms spread
 * by a consistent hash of their names), so any node can serve any room.
 *
 * Keys of a room all carry the hash tag {<room>} (so one room's keys stay
 * on one slot if the shards ever become a Redis Cluster):
 *   r:{<room>}:seq            the room's last seq (INCR)
 *   r:{<room>}:log            a stream whose entry IDs are <seq>-0, fields
 *                             f (from), t (ts ms), i (id), x (text); trimmed
 *                             to --history-max entries
 *   r:{<room>}:i:<from>\x1f<id>  an idempotency record: the seq, with a TTL
 * and the room's pub/sub channel is r:{<room>}. A user's channel u:{<user>}
 * (subscribed on every shard by the nodes holding one of the user's
 * connections) carries the user's DMs.
 *
 * A send is one Lua script on the room's shard: look the idempotency record
 * up (a duplicate returns the first seq and stores nothing), INCR the seq,
 * XADD, record the id, PUBLISH "m<seq>\n<frame>" where the frame is the
 * JSON the publishing node encoded around the seq. The ack follows the
 * script's reply, so what an ack survives is what Redis's persistence
 * gives (README, "Running a cluster").
 *
 * Delivery: per subscribed room the engine remembers the last seq it handed
 * to the sink; a newer message is delivered only if it is exactly the next
 * one; a jump, or a reconnect of the room's shard, makes the engine read the
 * missing range from the stream first (a gap fill), holding what arrives
 * meanwhile, so the sink sees every seq once and in order. DMs on a user's
 * channel get the same per (user, DM room), counted from the first one the
 * node sees while the channel is subscribed.
 *
 * Accounts live in Redis too (acctrds.h, on the first server of the list),
 * so a user registered on one node signs in on any; the notification outbox
 * stays in the node's own SQLite file given at open, durable where it is
 * produced: this engine forwards those calls to it.
 *
 * Threads: open/close on main; the rest as store.h says. Completions and
 * sink calls run on the rds thread.
 */
#ifndef PARLEY_STORE_REDIS_H
#define PARLEY_STORE_REDIS_H

#include <stddef.h>

#include "store.h"

struct rds;

struct store_redis_opts {
    const char *urls;       /* --engine: redis://H:P[/DB][,...] */
    const char *password;   /* NULL: none */
    long history_max;       /* events kept per room */
    long idempotency_ttl_s; /* how long an id is remembered */
    store_t *local;         /* the node's SQLite store: accounts and outbox; owned from here */
};

/* Connects to every shard (refusing to start when one is unreachable) and
 * registers the scripts. NULL with err on failure; local is closed then. */
store_t *store_redis_open(const struct store_redis_opts *o, char *err, size_t errsz);

/* The engine's connection, for modules that share it (the cluster
 * directory). Valid until store_close. */
struct rds *store_redis_rds(store_t *s);

struct store_redis_stats {
    uint64_t gap_fills;      /* ranges read from a log to close a gap */
    uint64_t filled;         /* events delivered by them */
    uint64_t dropped_dups;   /* pub/sub messages already delivered */
    uint64_t lost;           /* seqs no longer in a log when a fill needed them */
    uint64_t reseeded;       /* rooms whose seq Redis had lost, raised again */
    size_t rooms;            /* rooms subscribed now */
};
void store_redis_stats(store_t *s, struct store_redis_stats *out);

#endif
