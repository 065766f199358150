/*
 * store — the broker's seam to its room event log.
 *
 * Small on purpose, and the place a second engine plugs in: "append this
 * room event (its seq is already assigned), tell me when it is durable",
 * "tell me when everything before this is durable" (a barrier: the ack of
 * a duplicate), "read this seq range of a room", and the start-up loads
 * (each room's last seq, recent idempotency ids). An engine is a struct
 * store whose first member is the ops tables of store_engine.h; the
 * functions below dispatch through them. Engines: SQLite (store_sqlite.c,
 * opened by store_open below), the in-memory fake of the unit tests
 * (tests/fakes/fake_store.h); Redis is next (issue 17), where the seq is
 * assigned by the engine in the same atomic step as the append and the
 * idempotency record.
 *
 * The blocking account calls are in store_accounts.h, the notification
 * outbox in store_outbox.h: the same SQLite file implements both today, but
 * neither is part of this seam, and an engine may leave them out (-ENOTSUP).
 *
 * The SQLite engine: one writer thread owns the write connection and
 * commits queued writes in group transactions; reader threads with
 * read-only connections answer history reads.
 *
 * Threads: store_open/store_close/store_load_* on the main thread only;
 * store_append/store_barrier/store_read_submit on any thread (they never
 * block on I/O: they take a short queue lock and signal the worker).
 * Completion callbacks run on the store's own threads and must only hand
 * work back (enqueue + wake), never block.
 */
#ifndef PARLEY_STORE_H
#define PARLEY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "event.h"
#include "store_op.h"

typedef struct store store_t;

struct store_opts {
    const char *path;       /* SQLite file; created if missing */
    bool durability_full;   /* an ack waits for the WAL on disk (synchronous=FULL's promise):
                               done() runs after an fdatasync on the store's sync thread. A
                               row is readable from its commit on, before that sync; after a
                               failed sync every later write fails until a restart */
    bool sync_in_commit;    /* durability_full only: fsync inside each COMMIT on the writer
                               (SQLite's synchronous=FULL), for benchmark baselines */
    int batch_max;          /* most writes per transaction (default 512) */
    int batch_window_us;    /* wait this long for more writes after the first (default 1000;
                               negative: no wait) */
    int readers;            /* reader threads (default 1) */
    size_t queue_max;       /* bound on queued writes (default 65536); reads likewise */
    int close_timeout_ms;   /* how long store_close keeps retrying a failing commit before
                               giving the rest up as lost (default 5000; negative: no retry) */
};

/* The SQLite engine. Open (creating and migrating) the database and start
 * the threads.
 * Returns NULL with a message in err on failure, e.g. a database written by
 * a newer schema version. */
store_t *store_open(const struct store_opts *o, char *err, size_t errsz);
/* Commit everything queued (the shutdown flush), stop and join the threads,
 * close. Any engine. NULL is fine. */
void store_close(store_t *s);

/* Start-up loads, before any I/O thread runs. Return 0 or -1. */
int store_load_rooms(store_t *s, void (*cb)(void *arg, const char *room, uint64_t last_seq),
                     void *arg);

/* Client message ids used since since_ms (for the idempotency map). */
int store_load_ids(store_t *s, int64_t since_ms,
                   void (*cb)(void *arg, const char *room, const char *from, const char *id,
                              uint64_t seq, int64_t ts),
                   void *arg);

/* The largest event kind an engine stores (SQLite's column, Redis's `k`
 * field and published header carry any of 0..STORE_KIND_MAX). */
#define STORE_KIND_MAX 255
/* The largest event body, in bytes; a longer one is refused (-EINVAL). */
#define STORE_BODY_MAX 4096

/* Append one event to its room's log. Any kind 0..STORE_KIND_MAX: the
 * engine stores kind, from, ts, id, text and body and every read (and the
 * shared engines' deliveries) gives them back exactly; idempotent ids work
 * alike for every kind. */
struct store_append {
    /* Owned by the submitter; must stay valid until done() runs. ev.room
     * and ev.from are required, and ev.text for EV_MESSAGE (other kinds:
     * NULL stores ""); ev.body is optional (<= STORE_BODY_MAX bytes);
     * ev.seq is the broker's (next of the room). */
    struct room_event ev;
    /* set by the store before done(): 0 committed, negative errno on failure */
    int status;
    /* set when the log already held (room, from, id): its seq. The new
     * event is then stored without the id so seqs stay gapless. */
    uint64_t dup_seq;
    void (*done)(struct store_append *a); /* store thread; called exactly once */
    void *arg;
    /* Shared engines: the JSON frame of the event with its seq left out:
     * the seq goes at frame_seq_at (codec_message_parts). a->seq is set
     * before done(). Local engines ignore these. */
    const char *frame;
    size_t frame_len, frame_seq_at;
    uint64_t seq;
    struct store_op op; /* private to the store */
};

/* No event: completes once every earlier append (and every other request
 * queued before it) is durable. */
struct store_barrier {
    int status; /* set before done(): 0, or negative errno */
    void (*done)(struct store_barrier *b); /* store thread; exactly once */
    void *arg;
    struct store_op op; /* private */
};

/*
 * Queue an append or a barrier; the store owns the request until it calls
 * done. Returns 0, or -EAGAIN when the queue is at queue_max, or
 * -ESHUTDOWN after store_close began, or -EINVAL for a malformed request
 * (no done; an append without room/from, a message without text, a kind
 * above STORE_KIND_MAX or a body above STORE_BODY_MAX); done is not called
 * then. Requests complete in the order
 * they were queued. A failing commit reports status < 0 to every request
 * in the batch, logs, and keeps retrying those events (the store keeps its
 * own copy, so the submitter may free the request in done) with backoff so
 * nothing is lost and no seq is skipped; done is still called only once.
 * Requests queued while a retry is pending wait behind it. One still
 * uncommitted when store_close gives up gets done with status < 0.
 */
int store_append(store_t *s, struct store_append *a);
int store_barrier(store_t *s, struct store_barrier *b);

enum store_read_mode {
    SR_LATEST, /* the latest `limit` events */
    SR_SINCE,  /* events with seq > key, oldest first, at most limit */
    SR_BEFORE, /* the latest `limit` events with seq < key */
};

struct store_read {
    char room[CODEC_ROOMID_MAX + 1];
    /* Who asked (the user name; "" is one owner too). The engine takes
     * one owner's reads in order, and the owners with reads waiting in
     * turn, one read each, so a user who queues many reads delays another
     * user's by one of theirs per turn, not by all of them. */
    char owner[CODEC_USER_MAX + 1];
    enum store_read_mode mode;
    uint64_t key;
    int limit;
    /* results, set by the store before done(); freed by store_read_release.
     * Strings and bodies point into priv. Every kind comes back (a reader
     * that knows only messages skips the others); text is never NULL; body
     * is NULL exactly when body_len is 0. */
    struct room_event *evs; /* oldest first */
    size_t n;
    bool more; /* more events exist beyond the returned ones in the read's direction */
    int status;
    void (*done)(struct store_read *r); /* reader thread; exactly once */
    void *arg;
    struct store_read *next; /* private */
    void *priv;              /* private: result storage (one malloc'd block) */
};

/*
 * Shared engines (Redis, store_redis.h): the log is shared by every node of
 * a cluster, so the engine, not the broker, assigns a room's seq (in the
 * same atomic step as the append and the idempotency record), and the
 * events of a room reach the members on every node through a subscription:
 *
 *   - store_append with ev.seq == 0 and frame set: the engine assigns the
 *     seq (a->seq), publishes, and done() runs once the event is in the
 *     shared log (that is when the sender gets its ack); a known (room,
 *     from, id) completes with dup_seq and stores nothing.
 *   - store_subscribe(room): from the seq its done() reports on, every
 *     event of the room reaches the sink in seq order, each once, with
 *     no gap (the engine fills gaps from the log after a lost connection
 *     or a seq jump). The broker subscribes on a room's first local member
 *     and unsubscribes on the last.
 *   - a user's channel carries the DMs of every DM room the user is in and
 *     the user's own events, to the nodes holding one of the user's
 *     connections (store_user_subscribe).
 *
 * The local engines are not shared: these calls answer -ENOTSUP and the
 * broker assigns seqs and fans out itself.
 */
struct msg;

/* Thread: any. True for an engine whose log other nodes share. */
bool store_shared(store_t *s);

/* What a shared engine delivers; every callback runs on the engine's thread
 * and only pushes to queues (enqueue + wake). */
struct store_sink {
    /* An event of a subscribed room (user == NULL) or on a user's channel
     * (user: whose; a DM), any kind, with its body (ev's strings and body
     * live until the call returns). json is the JSON frame the publishing
     * node encoded (a reference the callee may take with msg_ref); NULL
     * when there is none: an event filled from the log (not published) of
     * a kind other than EV_MESSAGE, which the engine cannot encode (the
     * codec knows only messages), so the callee encodes it. */
    void (*event)(void *arg, const char *user, const struct room_event *ev, struct msg *json);
    /* Ephemeral room traffic: presence (kind 'p', join) and typing ('t'). */
    void (*ephemeral)(void *arg, const char *room, char kind, const char *user, bool join);
    /* The engine lost (up == false) or regained its connection to the
     * shared log. */
    void (*state)(void *arg, bool up);
    void *arg;
};
/* Thread: main, before any I/O thread runs. */
void store_set_sink(store_t *s, const struct store_sink *sink);

struct store_sub {
    char room[CODEC_ROOMID_MAX + 1];
    int status;   /* set before done(): 0, or negative errno */
    uint64_t seq; /* set before done(): the room's last seq when the subscription began */
    void (*done)(struct store_sub *sub); /* engine thread; exactly once */
    void *arg;
};
/* Thread: any. Returns 0 (done will run), -ENOTSUP (not shared) or another
 * negative errno (done will not run). A room is subscribed at most once at
 * a time; unsubscribe may come before the subscribe's done. */
int store_subscribe(store_t *s, struct store_sub *sub);
int store_unsubscribe(store_t *s, const char *room);
/* A user's channel, subscribed once however often this is called. Returns
 * 1 if it is live now (live will not run); 0 if live(arg) (may be NULL)
 * will run once, on the engine's thread, when it is: confirmed on every
 * shard, or a shard was down (the channel is subscribed again when the
 * shard is back), or it was unsubscribed before; or -ENOTSUP (not shared).
 * Events published before the channel is live may not reach this node, so
 * a connection is signed in only once its user's channel is live. */
int store_user_subscribe(store_t *s, const char *user, void (*live)(void *arg), void *arg);
int store_user_unsubscribe(store_t *s, const char *user);
/* Publish ephemeral room traffic to every node holding the room ('t'). */
int store_ephemeral(store_t *s, const char *room, char kind, const char *user);
/* Thread: any. Is the shared log reachable now? (Always true when local.) */
bool store_up(store_t *s);

/* Number of commit-duration buckets in struct store_stats. */
#define STORE_COMMIT_BUCKETS 14

/* Counters since store_open, for /metrics. A commit's duration is the whole
 * transaction, BEGIN to COMMIT, as the writer thread measured it; with
 * durability_full the fdatasync that follows is counted in syncs. */
struct store_stats {
    uint64_t commits;        /* transactions committed */
    uint64_t writes;         /* rows committed (messages and users; not barriers) */
    uint64_t failures;       /* writes whose done() got status < 0 */
    uint64_t failed_commits; /* transactions rolled back on an error (every retry counts) */
    uint64_t lost;           /* rows never stored: given up at close, or refused by
                                the database itself (a constraint), logged each */
    size_t queued;           /* writes waiting in the queue now */
    size_t retrying;         /* failed writes being retried now */
    double commit_seconds_sum;
    uint64_t syncs;          /* WAL fdatasyncs by the sync thread (durability_full) */
    double sync_seconds_sum;
    /* Prometheus-style cumulative histogram: commit_le_count[i] commits took at most
     * commit_le[i] seconds; the +Inf bucket is `commits`. */
    double commit_le[STORE_COMMIT_BUCKETS];
    uint64_t commit_le_count[STORE_COMMIT_BUCKETS];
    /* shared engines only (shared == true) */
    bool shared;
    bool engine_up;          /* every shard reachable now */
    uint64_t engine_reconnects;
    uint64_t engine_gap_fills; /* log ranges read to close a delivery gap */
    uint64_t engine_filled;  /* events delivered by those */
    uint64_t engine_lost;    /* seqs a fill found missing from a log (trimmed) */
    uint64_t engine_reseeded; /* rooms whose seq Redis had lost, raised again */
    double engine_rtt_seconds_sum; /* command round trips */
    uint64_t engine_rtt_count;
    uint64_t engine_subscriptions;
};

/* Thread: any. A consistent-enough snapshot (each field read atomically). */
void store_stats(store_t *s, struct store_stats *out);

/* Queue a read; same ownership and error rules as store_append (-EINVAL:
 * no done, limit < 0, or an unknown mode). Reads queued when store_close
 * begins are still answered. */
int store_read_submit(store_t *s, struct store_read *r);
/* Free a read's results (not r itself): evs and priv, for every engine. */
void store_read_release(struct store_read *r);

#endif
