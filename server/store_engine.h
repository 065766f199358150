/*
 * store_engine — what an engine behind the storage seam implements.
 *
 * For engines only (store_sqlite.c, tests/fakes/fake_store.c, a future
 * Redis engine); everyone else includes store.h, store_accounts.h or
 * store_outbox.h, whose functions dispatch through these tables (store.c).
 * An engine's struct starts with a struct store_base. The event log is
 * required; accounts and outbox may be NULL (their calls answer -ENOTSUP),
 * so each can live in a different engine later without the broker knowing.
 * Every function here has the contract of its public namesake.
 */
#ifndef PARLEY_STORE_ENGINE_H
#define PARLEY_STORE_ENGINE_H

#include "store.h"
#include "store_accounts.h"
#include "store_outbox.h"

struct store_log_ops {
    void (*close)(store_t *s);
    void (*stats)(store_t *s, struct store_stats *out);
    int (*append)(store_t *s, struct store_append *a);
    int (*barrier)(store_t *s, struct store_barrier *b);
    int (*read_submit)(store_t *s, struct store_read *r);
    int (*load_rooms)(store_t *s, void (*cb)(void *arg, const char *room, uint64_t last_seq),
                      void *arg);
    int (*load_ids)(store_t *s, int64_t since_ms,
                    void (*cb)(void *arg, const char *room, const char *from, const char *id,
                               uint64_t seq, int64_t ts),
                    void *arg);
    /* Shared engines only (NULL for local ones: -ENOTSUP / false). */
    void (*set_sink)(store_t *s, const struct store_sink *sink);
    int (*subscribe)(store_t *s, struct store_sub *sub);
    int (*unsubscribe)(store_t *s, const char *room);
    int (*user_subscribe)(store_t *s, const char *user, void (*live)(void *arg), void *arg);
    int (*user_unsubscribe)(store_t *s, const char *user);
    int (*ephemeral)(store_t *s, const char *room, char kind, const char *user);
    bool (*up)(store_t *s);
};

struct store_accounts_ops {
    int (*load_users)(store_t *s, uint64_t since_gen,
                      void (*cb)(void *arg, const struct store_user *u), void *arg);
    int (*users_gen)(store_t *s, uint64_t *gen);
    int (*user_seen)(store_t *s, struct store_user_seen *u);
    int (*account_add)(store_t *s, const struct store_account_add *a);
    int (*account_passwd)(store_t *s, const char *name, const char *password_hash);
    int (*account_del)(store_t *s, const char *name);
    int (*account_get)(store_t *s, const char *name, char *hash, size_t hashsz, char *email,
                       size_t emailsz, int64_t *tokens_after_ms);
};

struct store_outbox_ops {
    int (*add)(store_t *s, struct store_outbox_add *o);
    int (*pending)(store_t *s, int64_t now_ms, size_t max, struct store_outbox_row **rows,
                   size_t *n);
    int (*mark)(store_t *s, const char *const *ids, size_t n, const char *state, int attempts,
                int64_t next_at_ms);
};

/* The first member of every engine's struct store. */
struct store_base {
    const struct store_log_ops *log;
    const struct store_accounts_ops *accounts; /* NULL: none */
    const struct store_outbox_ops *outbox;     /* NULL: none */
};

#define STORE_BASE(s) ((struct store_base *)(s))

/* Thread: any. Is e an event every engine stores (store.h's append rules:
 * room and from set, text for a message, kind and body within bounds)? */
bool store_event_valid(const struct room_event *e);

/* The typed completion of a request an engine finishes: copies op.status
 * (and op.dup_seq for an append) into the request and calls its done().
 * Not for the engine's private kinds (SOP_ACCOUNT_*, SOP_OUTBOX_MARK). */
void store_op_complete(struct store_op *op);

#endif
