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
/* A row of the users table: every name ever seen, with its account state. */
struct store_user {
    const char *name;
    const char *email;       /* the account's address, "" if none; NULL: no account */
    int64_t tokens_after_ms; /* tokens issued at or before this time are refused; 0: none */
    bool deleted;            /* `parleyd user del`: the name stays reserved */
    uint64_t gen;            /* account generation of its last change (0: never changed) */
};
/* Every user name seen (since_gen 0), or only the names whose account
 * changed after generation since_gen (see store_users_gen). Thread: main. */
int store_load_users(store_t *s, uint64_t since_gen,
                     void (*cb)(void *arg, const struct store_user *u), void *arg);
/* Thread: main. The newest account generation: it grows with every change to
 * an account (registered, password, e-mail, deleted) by any process using
 * the file (`parleyd user ...` too). Cheap: nothing but PRAGMA data_version
 * when no connection has committed since the last call. 0 or -EIO. */
int store_users_gen(store_t *s, uint64_t *gen);

/* How far past a password change or a deletion tokens_after is set: beyond
 * the commit, so a login that read the old password cannot date its token
 * after the change. A login dates its token after tokens_after instead. */
#define STORE_REVOKE_MARGIN_MS 1000

/* Client message ids used since since_ms (for the idempotency map). */
int store_load_ids(store_t *s, int64_t since_ms,
                   void (*cb)(void *arg, const char *room, const char *from, const char *id,
                              uint64_t seq, int64_t ts),
                   void *arg);

enum store_write_kind {
    SW_MESSAGE, /* insert msg */
    SW_USER,    /* remember that user name has been seen (insert or ignore) */
    SW_BARRIER, /* no row: completes once every earlier write is committed */
    SW_ACCOUNT_ADD,    /* a new name with a password (status -EEXIST if the name was
                          ever used; but see adopt) */
    SW_ACCOUNT_PASSWD, /* change the password and revoke older tokens (status -ENOENT
                          if no account) */
    SW_ACCOUNT_DEL,    /* delete: no password, no e-mail, every token revoked, the name
                          reserved for good (status -ENOENT if never seen) */
    SW_OUTBOX_ADD,     /* record a notification as pending */
    SW_OUTBOX_MARK,    /* set a notification's state, attempts and next try */
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
    /* SW_ACCOUNT_*: msg.from is the user. */
    const char *password_hash; /* ADD, PASSWD */
    const char *email;         /* ADD (NULL: none); OUTBOX_ADD: the address */
    bool adopt;                /* ADD: a name seen without an account (a token-only user)
                                  may get one too (the operator's `user add`); status
                                  -EEXIST if it has one, -EACCES if it was deleted */
    /* SW_OUTBOX_ADD: outbox_id, recipient, email, note_kind and msg.{room,
     * from, text, ts}; SW_OUTBOX_MARK: outbox_id, state, attempts, next_at_ms */
    const char *outbox_id;
    const char *recipient;
    const char *note_kind;     /* "dm" | "mention" */
    const char *state;         /* "pending" | "sent" | "dead" */
    int attempts;
    int64_t next_at_ms;
    void (*done)(struct store_write *w); /* store thread; called exactly once */
    void *arg;
    struct store_write *next; /* private to the store */
};

/*
 * Queue a write; the store owns w until it calls w->done. Returns 0, or
 * -EAGAIN when the queue is at queue_max, or -ESHUTDOWN after store_close
 * began, or -EINVAL for a malformed write (no done; SW_MESSAGE without
 * room/from/text; SW_USER without from); done is not called then. A failing
 * commit reports status < 0 to every write in the batch, logs, and keeps
 * retrying those rows (the store keeps its own copy, so the submitter may
 * free w in done) with backoff so nothing is lost and no seq is skipped;
 * done is still called only once. Writes submitted while a retry is pending
 * wait in the queue behind it. A write still uncommitted when store_close
 * gives up gets done with status < 0.
 */
int store_submit(store_t *s, struct store_write *w);

/* Thread: any but an I/O loop (it blocks until the write is committed).
 * Submit w and wait; returns w's final status (or the submit error). w may
 * live on the caller's stack; its done is replaced. */
int store_submit_wait(store_t *s, struct store_write *w);

/* Thread: any but an I/O loop (reads the disk on a connection of its own).
 * An account's password hash, email ("" if none) and tokens_after (ms, 0 if
 * none), from one snapshot; any out pointer may be NULL: 0, -ENOENT, or -EIO. */
int store_account_get(store_t *s, const char *name, char *hash, size_t hashsz, char *email,
                      size_t emailsz, int64_t *tokens_after_ms);

/* A pending notification, as the notifier reads it back. */
struct store_outbox_row {
    char id[33];
    char recipient[CODEC_USER_MAX + 1];
    char email[255];
    char kind[16];
    char from[CODEC_USER_MAX + 1];
    char room[CODEC_ROOMID_MAX + 1];
    char *text;
    int64_t ts;
    int attempts;
    int64_t next_at_ms;
};

/* Thread: any but an I/O loop. Pending rows due at or before now_ms, oldest
 * first, at most max; free with store_outbox_rows_free. 0 or -EIO. */
int store_outbox_pending(store_t *s, int64_t now_ms, size_t max, struct store_outbox_row **rows,
                         size_t *n);
void store_outbox_rows_free(struct store_outbox_row *rows, size_t n);
/* Thread: any but an I/O loop. Set the state of rows ids[0..n) and wait for
 * the commit. 0 or a negative errno. */
int store_outbox_mark(store_t *s, const char *const *ids, size_t n, const char *state,
                      int attempts, int64_t next_at_ms);

enum store_read_mode {
    SR_LATEST, /* the latest `limit` messages */
    SR_SINCE,  /* messages with seq > key, oldest first, at most limit */
    SR_BEFORE, /* the latest `limit` messages with seq < key */
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
};

/* Thread: any. A consistent-enough snapshot (each field read atomically). */
void store_stats(store_t *s, struct store_stats *out);

/* Queue a read; same ownership and error rules as store_submit (-EINVAL:
 * no done, limit < 0, or an unknown mode). Reads queued when store_close
 * begins are still answered. */
int store_read_submit(store_t *s, struct store_read *r);
/* Free a read's results (not r itself). */
void store_read_release(struct store_read *r);

#endif
