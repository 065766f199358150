/*
 * rds — parleyd's connections to a set of independent Redis servers
 * (shards), driven by hiredis's async API on one thread of its own.
 *
 * Why a thread of its own rather than hiredis on each I/O loop: every node
 * talks to each shard over two connections (commands; pub/sub), and the
 * order of commands on one connection is what makes "append, then read"
 * and "subscribe, then read the last seq" consistent. One thread owning
 * those few connections keeps that order without locks, keeps hiredis out
 * of the lws loops (which never wait on Redis), and costs one hand-off per
 * command, which the engine batches (hiredis pipelines whatever is queued
 * when the thread wakes).
 *
 * Shards: rooms (and any other key) are placed by a consistent hash of a
 * name over the shard list (rds_shard), the same on every node given the
 * same list in the same order, and moving about 1/N of the names when a
 * shard is added.
 *
 * Threads: rds_open/rds_close on the main thread; rds_cmd, rds_subscribe,
 * rds_unsubscribe, rds_stats, rds_up on any thread (they take a short
 * queue lock and wake the rds thread; never block on I/O). Every callback
 * (command replies, messages, state changes) runs on the rds thread and
 * must only hand work on (enqueue + wake) or do short in-memory work.
 */
#ifndef PARLEY_RDS_H
#define PARLEY_RDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct redisReply;
typedef struct rds rds_t;

#define RDS_SHARDS_MAX 64

struct rds_opts {
    const char *urls;     /* "redis://HOST:PORT[/DB]" or several, comma-separated */
    const char *password; /* AUTH after every connect; NULL or "": none */
    int connect_timeout_ms; /* default 2000 */
    int reconnect_base_ms;  /* backoff.h, equal jitter; default 100 */
    int reconnect_max_ms;   /* default 5000 */
    /* A shard that leaves a command (or the heartbeat PING rds sends on an
     * idle command connection every second) unanswered this long is taken
     * as lost: a stopped or wedged Redis keeps its TCP connections open, so
     * only a deadline notices it. Pending commands then fail (NULL), the
     * shard goes down and reconnects. Default 3000. */
    int reply_timeout_ms;
    /* Commands queued or awaiting a reply on one shard before rds_cmd and
     * rds_eval refuse more (-ENOBUFS): bounds memory while a Redis is
     * stalled. Default 65536. */
    size_t max_pending;
    /* A published message arrived on a channel this node subscribed to
     * (shard: where). Strings are valid during the call only. */
    void (*on_message)(void *arg, size_t shard, const char *channel, size_t chlen,
                       const char *payload, size_t len);
    /* A shard's state changed: up is true once both connections are
     * connected, authenticated, SELECTed and every subscription is
     * confirmed again (after a reconnect: resubscribed); false as soon as
     * either connection is lost. Not called for the initial connect. */
    void (*on_state)(void *arg, size_t shard, bool up);
    void *arg;
};

/* Parse the shard list and connect to every shard once, synchronously on
 * the calling thread (connect, AUTH, SELECT, PING within
 * connect_timeout_ms), then start the rds thread. NULL with a message in
 * err naming the unreachable shard on any failure (the caller exits). */
rds_t *rds_open(const struct rds_opts *o, char *err, size_t errsz);
/* Stop the thread; pending commands complete with reply NULL. NULL ok. */
void rds_close(rds_t *r);

size_t rds_nshards(const rds_t *r);
/* The shard of a name (a room name; what hashes is the whole string). */
size_t rds_shard(const rds_t *r, const char *name, size_t len);
/* rds_shard for a URL list without connecting (tests pin placements with
 * it; an operator tool can say where a room lives): the shard index, or
 * -EINVAL for a bad list. Thread: any. */
int rds_ring_lookup(const char *urls, const char *name, size_t len);
/* The shard's URL as given, for logs. */
const char *rds_shard_url(const rds_t *r, size_t shard);
/* Is the shard connected (both connections)? Thread: any. */
bool rds_up(rds_t *r, size_t shard);

/* A command's completion: reply is hiredis's (valid during the call
 * only), or NULL when the command failed without a reply (the shard is
 * down or went down before replying, or rds_close). A Redis error reply
 * is a reply of type REDIS_REPLY_ERROR. */
typedef void rds_cb(void *arg, const struct redisReply *reply);

/* Queue a command on the shard's command connection (argv copied).
 * Commands on one shard run in the order queued. A shard that is down
 * fails the command at once (cb with NULL, on the rds thread). Returns 0,
 * or -ESHUTDOWN after rds_close began, -EINVAL on bad arguments (cb not
 * called then), -ENOBUFS when max_pending commands of the shard are
 * already waiting (cb not called). Thread: any. */
int rds_cmd(rds_t *r, size_t shard, int argc, const char *const *argv, const size_t *lens,
            rds_cb *cb, void *arg);

/* Scripts: register the source at start (before any rds_eval, main
 * thread); rds_eval runs EVALSHA and, on NOSCRIPT (a restarted Redis),
 * loads the script and runs it again, transparently. argv holds the
 * keys (nkeys of them) then the arguments. */
int rds_script(rds_t *r, const char *lua); /* script id >= 0, or -errno */
/* Returns like rds_cmd (and -EINVAL for an unknown script). Thread: any. */
int rds_eval(rds_t *r, size_t shard, int script, int nkeys, int argc, const char *const *argv,
             const size_t *lens, rds_cb *cb, void *arg);

/* Subscribe to / unsubscribe from a channel on a shard's pub/sub
 * connection. Subscriptions are remembered and re-established after a
 * reconnect (before on_state(up)). cb (may be NULL) runs once the
 * subscription is confirmed (reply non-NULL) or failed (NULL); messages
 * published after a confirmed subscription reach on_message. Subscribing
 * twice to one channel or unsubscribing one that is not subscribed is the
 * caller's bug (-EALREADY / -ENOENT). On a shard that is down (or goes
 * down before the confirmation) cb gets NULL but the channel stays
 * remembered: it is subscribed again with the others before on_state(up).
 * Unsubscribing before the confirmation also gives cb NULL. A channel is
 * 1..RDS_CHANNEL_MAX bytes without NUL (-EINVAL otherwise). Thread: any. */
#define RDS_CHANNEL_MAX 1024
int rds_subscribe(rds_t *r, size_t shard, const char *channel, size_t len, rds_cb *cb,
                  void *arg);
int rds_unsubscribe(rds_t *r, size_t shard, const char *channel, size_t len);

struct rds_stats {
    size_t shards, shards_up;
    uint64_t commands;      /* completed with a reply */
    uint64_t failures;      /* completed with NULL */
    uint64_t reconnects;    /* successful reconnects, all shards */
    uint64_t messages;      /* pub/sub messages received */
    size_t subscriptions;   /* channels subscribed now */
    double rtt_seconds_sum; /* command round trips, queued to reply */
    uint64_t rtt_count;
    uint64_t timeouts;     /* shards dropped for an unanswered command */
    uint64_t script_loads; /* EVAL after NOSCRIPT */
};
/* Thread: any. */
void rds_stats(rds_t *r, struct rds_stats *out);

#endif
