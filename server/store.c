/*
 * store — dispatch from the storage seam's functions (store.h,
 * store_accounts.h, store_outbox.h) to an engine's ops tables
 * (store_engine.h), and what every engine shares.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "store_engine.h"

#define LOG(s) (STORE_BASE(s)->log)
#define ACCTS(s) (STORE_BASE(s)->accounts)
#define OUTBOX(s) (STORE_BASE(s)->outbox)

void store_close(store_t *s)
{
    if (s)
        LOG(s)->close(s);
}

void store_stats(store_t *s, struct store_stats *out)
{
    LOG(s)->stats(s, out);
}

int store_append(store_t *s, struct store_append *a)
{
    /* a kind other than a message may have no text: every engine stores "" */
    if (a && a->ev.kind != EV_MESSAGE && !a->ev.text && !a->ev.text_len)
        a->ev.text = "";
    return LOG(s)->append(s, a);
}

bool store_event_valid(const struct room_event *e)
{
    if (!e || !e->room || !e->from || (unsigned)e->kind > STORE_KIND_MAX)
        return false;
    if (e->kind == EV_MESSAGE ? !e->text : !e->text && e->text_len)
        return false;
    if (e->text_len > INT32_MAX || e->body_len > STORE_BODY_MAX || (!e->body && e->body_len))
        return false;
    return true;
}

int store_barrier(store_t *s, struct store_barrier *b)
{
    return LOG(s)->barrier(s, b);
}

int store_read_submit(store_t *s, struct store_read *r)
{
    return LOG(s)->read_submit(s, r);
}

void store_read_release(struct store_read *r)
{
    if (!r)
        return;
    free(r->evs);
    free(r->priv);
    r->evs = NULL;
    r->priv = NULL;
    r->n = 0;
}

int store_load_rooms(store_t *s, void (*cb)(void *arg, const char *room, uint64_t last_seq),
                     void *arg)
{
    return LOG(s)->load_rooms(s, cb, arg);
}

int store_load_ids(store_t *s, int64_t since_ms,
                   void (*cb)(void *arg, const char *room, const char *from, const char *id,
                              uint64_t seq, int64_t ts),
                   void *arg)
{
    return LOG(s)->load_ids(s, since_ms, cb, arg);
}

void store_op_complete(struct store_op *op)
{
    switch (op->kind) {
    case SOP_APPEND: {
        struct store_append *a = STORE_CONTAINER(op, struct store_append, op);
        a->status = op->status;
        a->dup_seq = op->status == 0 ? op->dup_seq : 0;
        a->done(a); /* may free a */
        break;
    }
    case SOP_BARRIER: {
        struct store_barrier *b = STORE_CONTAINER(op, struct store_barrier, op);
        b->status = op->status;
        b->done(b);
        break;
    }
    case SOP_USER_SEEN: {
        struct store_user_seen *u = STORE_CONTAINER(op, struct store_user_seen, op);
        u->status = op->status;
        u->done(u);
        break;
    }
    case SOP_OUTBOX_ADD: {
        struct store_outbox_add *o = STORE_CONTAINER(op, struct store_outbox_add, op);
        o->status = op->status;
        o->done(o);
        break;
    }
    default:
        abort(); /* an engine's private kind: the engine completes it itself */
    }
}

/* ---- accounts (store_accounts.h) */

int store_load_users(store_t *s, uint64_t since_gen,
                     void (*cb)(void *arg, const struct store_user *u), void *arg)
{
    return ACCTS(s) ? ACCTS(s)->load_users(s, since_gen, cb, arg) : -1;
}

int store_users_gen(store_t *s, uint64_t *gen)
{
    return ACCTS(s) ? ACCTS(s)->users_gen(s, gen) : -ENOTSUP;
}

int store_user_seen(store_t *s, struct store_user_seen *u)
{
    return ACCTS(s) ? ACCTS(s)->user_seen(s, u) : -ENOTSUP;
}

int store_account_add(store_t *s, const struct store_account_add *a)
{
    return ACCTS(s) ? ACCTS(s)->account_add(s, a) : -ENOTSUP;
}

int store_account_passwd(store_t *s, const char *name, const char *password_hash)
{
    return ACCTS(s) ? ACCTS(s)->account_passwd(s, name, password_hash) : -ENOTSUP;
}

int store_account_del(store_t *s, const char *name)
{
    return ACCTS(s) ? ACCTS(s)->account_del(s, name) : -ENOTSUP;
}

int store_account_get(store_t *s, const char *name, char *hash, size_t hashsz, char *email,
                      size_t emailsz, int64_t *tokens_after_ms)
{
    return ACCTS(s) ? ACCTS(s)->account_get(s, name, hash, hashsz, email, emailsz,
                                            tokens_after_ms)
                    : -ENOTSUP;
}

/* ---- outbox (store_outbox.h) */

int store_outbox_add(store_t *s, struct store_outbox_add *o)
{
    return STORE_BASE(s)->outbox ? STORE_BASE(s)->outbox->add(s, o) : -ENOTSUP;
}

int store_outbox_pending(store_t *s, int64_t now_ms, size_t max, struct store_outbox_row **rows,
                         size_t *n)
{
    return STORE_BASE(s)->outbox ? STORE_BASE(s)->outbox->pending(s, now_ms, max, rows, n)
                                 : -ENOTSUP;
}

void store_outbox_rows_free(struct store_outbox_row *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++)
        free(rows[i].text);
    free(rows);
}

int store_outbox_mark(store_t *s, const char *const *ids, size_t n, const char *state,
                      int attempts, int64_t next_at_ms)
{
    return STORE_BASE(s)->outbox
               ? STORE_BASE(s)->outbox->mark(s, ids, n, state, attempts, next_at_ms)
               : -ENOTSUP;
}

bool store_shared(store_t *s)
{
    return LOG(s)->subscribe != NULL;
}

void store_set_sink(store_t *s, const struct store_sink *sink)
{
    if (LOG(s)->set_sink)
        LOG(s)->set_sink(s, sink);
}

int store_subscribe(store_t *s, struct store_sub *sub)
{
    return LOG(s)->subscribe ? LOG(s)->subscribe(s, sub) : -ENOTSUP;
}

int store_unsubscribe(store_t *s, const char *room)
{
    return LOG(s)->unsubscribe ? LOG(s)->unsubscribe(s, room) : -ENOTSUP;
}

int store_user_subscribe(store_t *s, const char *user, void (*live)(void *arg), void *arg)
{
    return LOG(s)->user_subscribe ? LOG(s)->user_subscribe(s, user, live, arg) : -ENOTSUP;
}

int store_user_unsubscribe(store_t *s, const char *user)
{
    return LOG(s)->user_unsubscribe ? LOG(s)->user_unsubscribe(s, user) : -ENOTSUP;
}

int store_ephemeral(store_t *s, const char *room, char kind, const char *user)
{
    return LOG(s)->ephemeral ? LOG(s)->ephemeral(s, room, kind, user) : -ENOTSUP;
}

bool store_up(store_t *s)
{
    return LOG(s)->up ? LOG(s)->up(s) : true;
}
