/*
 * store — the broker's one seam to persistence.
 *
 * Small on purpose: "append this message (its seq is already assigned), tell
 * me when it is durable", "read this range of history", and start-up loads.
 * The embedded engine is SQLite (store_sqlite.c): one writer thread owns the
 * write connection and commits queued writes in group transactions; reader
 * threads with read-only connections answer history reads. A future engine
 * (Redis, spreading rooms over nodes) implements this same header.
 *
 * Threads: store_open/store_close/store_load_* on the main thread only;
 * store_submit/store_read_submit on any thread (they never block on I/O:
 * they take a short queue lock and signal the worker). Completion callbacks
 * run on the store's own threads and must only hand work back (enqueue +
 * wake), never block.
 */
#ifndef PARLEY_STORE_H
#define PARLEY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

typedef struct store store_t;

struct store_opts {
    const char *path;       /* SQLite file; created if missing */
    bool durability_full;   /* synchronous=FULL instead of NORMAL */
    int batch_max;          /* most writes per transaction (default 512) */
    int batch_window_us;    /* wait this long for more writes after the first (default 1000) */
    int readers;            /* reader threads (default 1) */
    size_t queue_max;       /* bound on queued writes (default 65536) */
};

/* Open (creating and migrating) the database and start the threads.
 * Returns NULL with a message in err on failure, e.g. a database written by
 * a newer schema version. */
store_t *store_open(const struct store_opts *o, char *err, size_t errsz);
/* Commit everything queued (the shutdown flush), stop and join the threads,
 * close. NULL is fine. */
void store_close(store_t *s);

/* Start-up loads, before any I/O thread runs. Return 0 or -1. */
int store_load_rooms(store_t *s, void (*cb)(void *arg, const char *room, uint64_t last_seq),
                     void *arg);
int store_load_users(store_t *s, void (*cb)(void *arg, const char *user), void *arg);
/* Client message ids used since since_ms (for the idempotency map). */
int store_load_ids(store_t *s, int64_t since_ms,
                   void (*cb)(void *arg, const char *room, const char *from, const char *id,
                              uint64_t seq, int64_t ts),
                   void *arg);

enum store_write_kind {
    SW_MESSAGE, /* insert msg */
    SW_USER,    /* remember that user name has been seen (insert or ignore) */
    SW_BARRIER, /* no row: completes once every earlier write is committed */
};

struct store_write {
    enum store_write_kind kind;
    /* SW_MESSAGE: all fields; SW_USER: from = the user name. Owned by the
     * submitter; must stay valid until done() runs. */
    struct chat_msg msg;
    /* set by the store before done(): 0 committed, negative errno on failure */
    int status;
    /* set when the database already held (room, from, id): its seq. The new
     * row is then stored without the id so seqs stay gapless. */
    uint64_t dup_seq;
    void (*done)(struct store_write *w); /* store thread; called exactly once */
    void *arg;
    struct store_write *next; /* private to the store */
};

/*
 * Queue a write; the store owns w until it calls w->done. Returns 0, or
 * -EAGAIN when the queue is at queue_max, or -ESHUTDOWN after store_close
 * began (done is not called then). A failing commit reports status < 0 to
 * every write in the batch, logs, and keeps retrying those rows with backoff
 * so nothing is lost and no seq is skipped; done is still called only once.
 */
int store_submit(store_t *s, struct store_write *w);

enum store_read_mode {
    SR_LATEST, /* the latest `limit` messages */
    SR_SINCE,  /* messages with seq > key, oldest first, at most limit */
    SR_BEFORE, /* the latest `limit` messages with seq < key */
};

struct store_read {
    char room[CODEC_ROOMID_MAX + 1];
    enum store_read_mode mode;
    uint64_t key;
    int limit;
    /* results, set by the store before done(); freed by store_read_release */
    struct chat_msg *msgs; /* oldest first */
    size_t n;
    bool more; /* more messages exist beyond the returned ones in the read's direction */
    int status;
    void (*done)(struct store_read *r); /* reader thread; exactly once */
    void *arg;
    struct store_read *next; /* private */
    void *priv;              /* private: result storage */
};

/* Queue a read; same ownership and error rules as store_submit. */
int store_read_submit(store_t *s, struct store_read *r);
/* Free a read's results (not r itself). */
void store_read_release(struct store_read *r);

#endif
