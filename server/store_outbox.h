/*
 * store_outbox — the durable queue of e-mail notifications.
 *
 * Not part of the event-log seam (store.h): the broker records a
 * notification here (queued in order with its writes, never blocking the
 * loop) and the notifier reads pending rows back and marks outcomes with
 * blocking calls. A node's outbox stays in its own SQLite file even when
 * the event log lives elsewhere (issue 17). An engine without an outbox
 * answers -ENOTSUP.
 */
#ifndef PARLEY_STORE_OUTBOX_H
#define PARLEY_STORE_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "store_op.h"

/* Record a notification as pending. Thread: any (never blocks); same rules
 * as store_append. Strings are owned by the submitter until done(). */
struct store_outbox_add {
    const char *id;        /* 32 hex digits */
    const char *recipient;
    const char *email;
    const char *note_kind; /* "dm" | "mention" */
    const char *from;
    const char *room;
    const char *text;
    size_t text_len;
    int64_t ts;
    int status;            /* set before done() */
    void (*done)(struct store_outbox_add *o); /* store thread; exactly once */
    void *arg;
    struct store_op op;    /* private */
};
int store_outbox_add(store_t *s, struct store_outbox_add *o);

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
/* Thread: any but an I/O loop. Set the state ("pending" | "sent" | "dead"),
 * attempts and next try of rows ids[0..n) and wait for the commit. 0 or a
 * negative errno (-ENOENT: an id not in the outbox). */
int store_outbox_mark(store_t *s, const char *const *ids, size_t n, const char *state,
                      int attempts, int64_t next_at_ms);

#endif
