/*
 * store_op — the link every queued storage request starts with.
 *
 * Each kind of request has its own type (store_append, store_barrier in
 * store.h; store_user_seen in store_accounts.h; store_outbox_add in
 * store_outbox.h) and embeds one of these, so an engine keeps all kinds in
 * one ordered queue (order is the guarantee a barrier rests on) and finds
 * the request again with container_of. Everything here belongs to the
 * engine from submit until the request's done() runs; submitters never
 * touch it.
 */
#ifndef PARLEY_STORE_OP_H
#define PARLEY_STORE_OP_H

#include <stddef.h>
#include <stdint.h>

/* An open store (any engine); store.h opens and closes one. Repeated here
 * so the account and outbox headers need not include the event-log seam. */
typedef struct store store_t;

enum store_op_kind {
    SOP_APPEND,         /* struct store_append */
    SOP_USER_SEEN,      /* struct store_user_seen */
    SOP_BARRIER,        /* struct store_barrier */
    SOP_ACCOUNT_ADD,    /* blocking account calls (store_accounts.h): */
    SOP_ACCOUNT_PASSWD, /*   the engine's own request types */
    SOP_ACCOUNT_DEL,
    SOP_OUTBOX_ADD,     /* struct store_outbox_add */
    SOP_OUTBOX_MARK,    /* store_outbox_mark: the engine's own request type */
};

struct store_op {
    enum store_op_kind kind;
    int status;            /* the outcome, copied into the request before done() */
    uint64_t dup_seq;      /* SOP_APPEND: the seq the (room, from, id) already had */
    struct store_op *next; /* the engine's queue */
};

#define STORE_CONTAINER(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#endif
