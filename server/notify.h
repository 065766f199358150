/*
 * notify — e-mail notifications for users who were offline when a DM or an
 * @mention reached them.
 *
 * Pattern: a buffered-channel worker, made durable. The broker calls
 * notify_enqueue on an event-loop thread: a try-enqueue into a bounded
 * in-memory queue that never waits on I/O. The broker ALSO records every
 * notification in the store's outbox (same id), so a full queue or a
 * restart loses nothing: the worker picks up `pending` outbox rows it does
 * not hold, at start and every rescan period.
 *
 * One worker thread owns the sending:
 *   - coalescing: a recipient's notifications wait until coalesce_ms after
 *     the first of them, then go out as ONE e-mail listing them all, so a
 *     recipient gets at most one e-mail per window (0: as soon as possible);
 *   - delivery: SMTP through libcurl (smtp:// with optional STARTTLS, or
 *     smtps://), or, with no smtp_url, an append to an mboxrd file that
 *     `mutt -f` reads (one write under flock on an O_APPEND descriptor);
 *   - retries: capped exponential backoff with equal jitter (see backoff.h),
 *     a row's attempts counted across restarts through the outbox; after
 *     max_attempts the row is marked `dead`, logged and counted;
 *   - a circuit breaker around the relay (see breaker.h): while it is open
 *     nothing is sent and no attempt is used up.
 * Outcomes are written back with store_outbox_mark (sent / pending with the
 * next retry time / dead) from the worker, never from an event loop.
 *
 * Delivery is at-least-once: an e-mail whose "sent" mark did not reach the
 * disk before a crash is sent again after the restart.
 *
 * Shutdown (notify_stop): enqueue refuses at once; a send in progress gets
 * up to drain_timeout_ms to finish and is then aborted (the transfer is
 * interrupted, not waited out); no backoff is waited out. Whatever was not
 * sent stays `pending` in the outbox for the next start. Call it before
 * store_close: the worker marks the last outcome through the store.
 *
 * Threads: notify_new/notify_stop/notify_free on the main thread;
 * notify_enqueue, notify_flush and notify_stats on any thread (a short lock,
 * never held across I/O).
 */
#ifndef PARLEY_NOTIFY_H
#define PARLEY_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store_outbox.h"

typedef struct notify notify_t;

enum notification_kind {
    NOTE_DM,
    NOTE_MENTION,
};

struct notification {
    char id[33];        /* the outbox row's id (32 hex); the dedup key */
    char recipient[33]; /* user name: the coalescing key */
    char email[255];    /* the recipient's address */
    enum notification_kind kind;
    char from[33];    /* sender's user name */
    char room[70];    /* NOTE_MENTION: the room; NOTE_DM: ignored */
    const char *text; /* borrowed: notify_enqueue copies what it keeps */
    int64_t ts;       /* wall clock ms of the message */
};

struct notify_opts {
    const char *smtp_url;      /* "smtp://host:port" or "smtps://host:port"; NULL or "":
                                  append to mbox_path instead */
    bool starttls;             /* smtp:// only: upgrade with STARTTLS when the relay offers
                                  it (CURLUSESSL_TRY) */
    const char *smtp_user;     /* NULL: no AUTH */
    const char *smtp_password; /* with smtp_user */
    const char *smtp_from;     /* From: and envelope sender (default "parley@localhost") */
    const char *mbox_path;     /* default "data/mail.mbox" */
    size_t queue_max;          /* notifications held in memory (default 10000) */
    int coalesce_ms;           /* default 60000; 0: no window */
    int max_attempts;          /* sends before a notification is dead (default 8) */
    int backoff_base_ms;       /* first retry ceiling (default 1000) */
    int max_backoff_ms;        /* retry ceiling (default 300000) */
    int breaker_threshold;     /* consecutive failures that open the breaker (default 5) */
    int breaker_cooldown_ms;   /* open time before a probe (default 30000) */
    int connect_timeout_ms;    /* SMTP connect (default 10000) */
    int send_timeout_ms;       /* one whole SMTP transaction (default 60000) */
    int drain_timeout_ms;      /* how long notify_stop lets a send in progress run (default
                                  2000) */
    int rescan_ms;             /* outbox pickup period (default 30000) */
};

/* Counters since notify_new (for /metrics). */
struct notify_stats {
    size_t queue_depth; /* notifications held in memory, including the batch being sent */
    uint64_t enqueued;  /* accepted by notify_enqueue or picked up from the outbox */
    uint64_t rejected;  /* notify_enqueue refused: queue full, stopping, or malformed */
    uint64_t sent;      /* notifications delivered */
    uint64_t emails;    /* e-mails (or mbox entries) delivered: sent minus coalescing */
    uint64_t failed;    /* failed delivery attempts (one per e-mail tried) */
    uint64_t dead;      /* notifications given up on */
    int breaker_state;  /* enum breaker_state: 0 closed, 1 open, 2 half-open */
};

/* Fill o with the defaults above. Start from this: for some fields 0 is a
 * meaningful value (coalesce_ms), so a zeroed struct is not "defaults".
 * Thread: any. */
void notify_opts_default(struct notify_opts *o);

/*
 * Check the options, open (creating, mode 0600) the mbox file when there is
 * no relay, and start the worker. store may be NULL: then nothing is durable
 * and nothing is picked up (tests, or a deployment without an outbox); o's
 * strings are copied. Returns NULL with a message in err on failure.
 * Thread: main.
 */
notify_t *notify_new(const struct notify_opts *o, store_t *store, char *err, size_t errsz);

/* Try to queue a copy of *note. Returns false when the queue is full, the
 * notifier is stopping, or note is malformed (empty id or recipient); the
 * outbox row is then picked up later. An id already held or recently
 * finished is accepted and ignored. Thread: any; never blocks on I/O. */
bool notify_enqueue(notify_t *n, const struct notification *note);

/* Make every held batch due now, ignoring the rest of its coalescing window
 * (backoffs and the breaker still apply). Thread: any. */
void notify_flush(notify_t *n);

/* Thread: any. */
void notify_stats(notify_t *n, struct notify_stats *out);

/* Stop taking work, let a send in progress finish or abort it after
 * drain_timeout_ms, and join the worker. Idempotent; notify_stats still
 * works afterwards. Thread: main. */
void notify_stop(notify_t *n);

/* notify_stop, then free everything. NULL is fine. Thread: main. */
void notify_free(notify_t *n);

#endif
