/*
 * fake_store — the in-memory engine of the unit tests (fake_store.h).
 *
 * One worker thread completes requests in queue order, like the SQLite
 * writer; reads are answered by the same thread, ahead of queued writes,
 * from committed events only (as a reader connection sees them).
 */
#include "fake_store.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store_engine.h"
#include "util.h"

/* A committed event and the strings it owns. */
struct fev {
    struct room_event ev;
    char *room, *from, *id, *text;
    void *body; /* NULL: none */
};

struct store {
    struct store_base base;

    pthread_mutex_t lock;
    pthread_cond_t cond;               /* worker: work; waiters: progress */
    struct store_op *qhead, *qtail;    /* {lock} */
    size_t qn;                         /* {lock} */
    struct store_read *rhead, *rtail;  /* {lock} */
    bool held;                         /* {lock} */
    size_t allowance;                  /* {lock} held: requests released, not yet taken */
    uint64_t completed;                /* {lock} requests whose done() has returned */
    size_t busy;                       /* {lock} requests taken, done() not yet returned */
    size_t rbusy;                      /* {lock} reads taken, done() not yet returned */
    bool stop;                         /* {lock} */
    int fail_submit, fail_commit;      /* {lock} */
    struct fev *evs;                   /* {lock} committed, in order */
    size_t nevs, cap;                  /* {lock} */
    size_t outbox_adds;                /* {lock} */
    uint64_t commits, writes, failures; /* {lock} */
    pthread_t tid;
};

/* ------------------------------------------------------------- commits */

/* {lock} The seq of (room, from, id) if committed with its id, else 0. */
static uint64_t find_id_locked(store_t *s, const struct room_event *e)
{
    if (!e->id || !e->id[0])
        return 0;
    for (size_t i = 0; i < s->nevs; i++) {
        const struct room_event *x = &s->evs[i].ev;
        if (x->id[0] && strcmp(x->room, e->room) == 0 && strcmp(x->from, e->from) == 0 &&
            strcmp(x->id, e->id) == 0)
            return x->seq;
    }
    return 0;
}

/* {lock} Commit op: set its status (and an append's dup_seq), store an
 * append's event. */
static void commit_locked(store_t *s, struct store_op *op)
{
    op->status = s->fail_commit;
    op->dup_seq = 0;
    s->commits++;
    if (op->status)
        s->failures++;
    if (op->kind == SOP_OUTBOX_ADD)
        s->outbox_adds++;
    if (op->kind != SOP_APPEND) {
        if (op->kind != SOP_BARRIER)
            s->writes++;
        return;
    }
    const struct room_event *e = &STORE_CONTAINER(op, struct store_append, op)->ev;
    uint64_t dup = find_id_locked(s, e);
    if (op->status == 0)
        op->dup_seq = dup;
    if (s->nevs == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->evs = xrealloc(s->evs, s->cap * sizeof(*s->evs));
    }
    struct fev *f = &s->evs[s->nevs++];
    f->room = xstrdup(e->room);
    f->from = xstrdup(e->from);
    f->id = xstrdup(dup || !e->id ? "" : e->id); /* a duplicate is stored without its id */
    size_t tl = e->text_len;
    f->text = xmalloc(tl + 1);
    memcpy(f->text, e->text, tl);
    f->text[tl] = '\0';
    f->body = e->body_len ? memcpy(xmalloc(e->body_len), e->body, e->body_len) : NULL;
    f->ev = (struct room_event){.kind = e->kind, .room = f->room, .seq = e->seq,
                                .from = f->from, .ts = e->ts, .id = f->id, .text = f->text,
                                .text_len = tl, .body = f->body, .body_len = e->body_len};
    s->writes++;
}

/* ---------------------------------------------------------------- reads */

static int cmp_seq(const void *a, const void *b)
{
    uint64_t x = (*(const struct fev *const *)a)->ev.seq;
    uint64_t y = (*(const struct fev *const *)b)->ev.seq;
    return x < y ? -1 : x > y;
}

/* {lock} Answer r from the committed events (copies in r->priv). */
static void answer_read_locked(store_t *s, struct store_read *r)
{
    struct fev **m = xmalloc((s->nevs + 1) * sizeof(*m));
    size_t n = 0;
    for (size_t i = 0; i < s->nevs; i++) {
        const struct room_event *e = &s->evs[i].ev;
        if (strcmp(e->room, r->room) != 0)
            continue;
        if ((r->mode == SR_SINCE && e->seq <= r->key) || (r->mode == SR_BEFORE && e->seq >= r->key))
            continue;
        m[n++] = &s->evs[i];
    }
    qsort(m, n, sizeof(*m), cmp_seq);
    size_t lim = (size_t)r->limit, from = 0, k = n < lim ? n : lim;
    if (r->mode != SR_SINCE)
        from = n - k; /* the newest k, still oldest first */
    r->more = n > lim;
    r->n = k;
    r->evs = k ? xmalloc(k * sizeof(*r->evs)) : NULL;
    /* one block for the strings, as store_read_release frees priv */
    size_t bytes = 1;
    for (size_t i = 0; i < k; i++) {
        const struct fev *f = m[from + i];
        bytes += strlen(f->from) + strlen(f->id) + f->ev.text_len + f->ev.body_len + 3;
    }
    char *block = xmalloc(bytes), *p = block;
    for (size_t i = 0; i < k; i++) {
        const struct fev *f = m[from + i];
        struct room_event *e = &r->evs[i];
        *e = f->ev;
        e->room = r->room;
        e->from = memcpy(p, f->from, strlen(f->from) + 1);
        p += strlen(f->from) + 1;
        e->id = memcpy(p, f->id, strlen(f->id) + 1);
        p += strlen(f->id) + 1;
        memcpy(p, f->text, f->ev.text_len + 1);
        e->text = p;
        p += f->ev.text_len + 1;
        if (f->ev.body_len) {
            e->body = memcpy(p, f->body, f->ev.body_len);
            p += f->ev.body_len;
        }
    }
    r->priv = block;
    r->status = 0;
    free(m);
}

/* --------------------------------------------------------------- worker */

static void *worker(void *arg)
{
    store_t *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        if (s->rhead) {
            struct store_read *r = s->rhead;
            s->rhead = r->next;
            if (!s->rhead)
                s->rtail = NULL;
            answer_read_locked(s, r);
            s->rbusy++;
            pthread_mutex_unlock(&s->lock);
            r->done(r);
            pthread_mutex_lock(&s->lock);
            s->rbusy--;
            pthread_cond_broadcast(&s->cond);
            continue;
        }
        if (s->qhead && (!s->held || s->allowance || s->stop)) {
            struct store_op *op = s->qhead;
            s->qhead = op->next;
            if (!s->qhead)
                s->qtail = NULL;
            s->qn--;
            if (s->held && s->allowance)
                s->allowance--;
            commit_locked(s, op);
            s->busy++;
            pthread_mutex_unlock(&s->lock);
            store_op_complete(op); /* may free op */
            pthread_mutex_lock(&s->lock);
            s->busy--;
            s->completed++;
            pthread_cond_broadcast(&s->cond);
            continue;
        }
        if (s->stop)
            break;
        pthread_cond_wait(&s->cond, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ------------------------------------------------------------ the seam */

static int submit(store_t *s, struct store_op *op, enum store_op_kind kind)
{
    op->kind = kind;
    op->next = NULL;
    op->status = 0;
    op->dup_seq = 0;
    pthread_mutex_lock(&s->lock);
    int rc = s->stop ? -ESHUTDOWN : s->fail_submit;
    if (rc == 0) {
        if (s->qtail)
            s->qtail->next = op;
        else
            s->qhead = op;
        s->qtail = op;
        s->qn++;
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int fk_append(store_t *s, struct store_append *a)
{
    const struct room_event *e = a ? &a->ev : NULL;
    if (!a || !a->done || !store_event_valid(e))
        return -EINVAL;
    return submit(s, &a->op, SOP_APPEND);
}

static int fk_barrier(store_t *s, struct store_barrier *b)
{
    if (!b || !b->done)
        return -EINVAL;
    return submit(s, &b->op, SOP_BARRIER);
}

static int fk_read_submit(store_t *s, struct store_read *r)
{
    if (!r || !r->done || r->limit < 0 ||
        (r->mode != SR_LATEST && r->mode != SR_SINCE && r->mode != SR_BEFORE))
        return -EINVAL;
    r->next = NULL;
    r->evs = NULL;
    r->priv = NULL;
    r->n = 0;
    r->more = false;
    pthread_mutex_lock(&s->lock);
    if (s->stop) {
        pthread_mutex_unlock(&s->lock);
        return -ESHUTDOWN;
    }
    if (s->rtail)
        s->rtail->next = r;
    else
        s->rhead = r;
    s->rtail = r;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int fk_load_rooms(store_t *s, void (*cb)(void *arg, const char *room, uint64_t last_seq),
                         void *arg)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nevs; i++) {
        const struct room_event *e = &s->evs[i].ev;
        bool last = true; /* the room's highest seq, reported once */
        for (size_t j = 0; j < s->nevs && last; j++) {
            const struct room_event *x = &s->evs[j].ev;
            if (j != i && strcmp(x->room, e->room) == 0)
                last = x->seq < e->seq || (x->seq == e->seq && j > i);
        }
        if (last)
            cb(arg, e->room, e->seq);
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int fk_load_ids(store_t *s, int64_t since_ms,
                       void (*cb)(void *arg, const char *room, const char *from, const char *id,
                                  uint64_t seq, int64_t ts),
                       void *arg)
{
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nevs; i++) {
        const struct room_event *e = &s->evs[i].ev;
        if (e->id[0] && e->ts >= since_ms)
            cb(arg, e->room, e->from, e->id, e->seq, e->ts);
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static void fk_stats(store_t *s, struct store_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&s->lock);
    out->commits = s->commits;
    out->writes = s->writes;
    out->failures = s->failures;
    out->queued = s->qn;
    pthread_mutex_unlock(&s->lock);
}

static void fk_close(store_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->stop = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->tid, NULL);
    for (size_t i = 0; i < s->nevs; i++) {
        free(s->evs[i].room);
        free(s->evs[i].from);
        free(s->evs[i].id);
        free(s->evs[i].text);
        free(s->evs[i].body);
    }
    free(s->evs);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* accounts: no users; the user-seen write is a queued no-op */
static int fk_load_users(store_t *s, uint64_t since_gen,
                         void (*cb)(void *arg, const struct store_user *u), void *arg)
{
    return 0;
}

static int fk_users_gen(store_t *s, uint64_t *gen)
{
    *gen = 0;
    return 0;
}

static int fk_user_seen(store_t *s, struct store_user_seen *u)
{
    if (!u || !u->done || !u->name)
        return -EINVAL;
    return submit(s, &u->op, SOP_USER_SEEN);
}

static int fk_account_add(store_t *s, const struct store_account_add *a)
{
    return -ENOTSUP;
}

static int fk_account_passwd(store_t *s, const char *name, const char *password_hash)
{
    return -ENOTSUP;
}

static int fk_account_del(store_t *s, const char *name)
{
    return -ENOTSUP;
}

static int fk_account_get(store_t *s, const char *name, char *hash, size_t hashsz, char *email,
                          size_t emailsz, int64_t *tokens_after_ms)
{
    return -ENOENT;
}

/* outbox: adds are queued and counted, nothing is ever pending */
static int fk_outbox_add(store_t *s, struct store_outbox_add *o)
{
    if (!o || !o->done || !o->id || !o->recipient || !o->email || !o->note_kind || !o->from ||
        !o->room || !o->text)
        return -EINVAL;
    return submit(s, &o->op, SOP_OUTBOX_ADD);
}

static int fk_outbox_pending(store_t *s, int64_t now_ms, size_t max,
                             struct store_outbox_row **rows, size_t *n)
{
    *rows = NULL;
    *n = 0;
    return 0;
}

static int fk_outbox_mark(store_t *s, const char *const *ids, size_t n, const char *state,
                          int attempts, int64_t next_at_ms)
{
    return 0;
}

static const struct store_log_ops fk_log = {
    .close = fk_close,
    .stats = fk_stats,
    .append = fk_append,
    .barrier = fk_barrier,
    .read_submit = fk_read_submit,
    .load_rooms = fk_load_rooms,
    .load_ids = fk_load_ids,
};

static const struct store_accounts_ops fk_accounts = {
    .load_users = fk_load_users,
    .users_gen = fk_users_gen,
    .user_seen = fk_user_seen,
    .account_add = fk_account_add,
    .account_passwd = fk_account_passwd,
    .account_del = fk_account_del,
    .account_get = fk_account_get,
};

static const struct store_outbox_ops fk_outbox = {
    .add = fk_outbox_add,
    .pending = fk_outbox_pending,
    .mark = fk_outbox_mark,
};

store_t *fake_store_new(void)
{
    store_t *s = xcalloc(1, sizeof(*s));
    s->base = (struct store_base){&fk_log, &fk_accounts, &fk_outbox};
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->tid, NULL, worker, s) != 0)
        abort();
    return s;
}

/* ---------------------------------------------------------------- knobs */

void fake_store_fail_submit(store_t *s, int err)
{
    pthread_mutex_lock(&s->lock);
    s->fail_submit = err;
    pthread_mutex_unlock(&s->lock);
}

void fake_store_fail_commit(store_t *s, int status)
{
    pthread_mutex_lock(&s->lock);
    s->fail_commit = status;
    pthread_mutex_unlock(&s->lock);
}

void fake_store_hold(store_t *s, bool hold)
{
    pthread_mutex_lock(&s->lock);
    s->held = hold;
    s->allowance = 0;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

size_t fake_store_release(store_t *s, size_t n)
{
    pthread_mutex_lock(&s->lock);
    size_t k = 0;
    if (s->held) {
        k = s->qn - s->allowance < n ? s->qn - s->allowance : n;
        s->allowance += k;
        uint64_t target = s->completed + s->busy + k;
        pthread_cond_broadcast(&s->cond);
        while (s->completed < target)
            pthread_cond_wait(&s->cond, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return k;
}

size_t fake_store_queued(store_t *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->qn + s->busy;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void fake_store_drain(store_t *s)
{
    pthread_mutex_lock(&s->lock);
    while (s->rhead || s->rbusy || s->busy || (s->qn && (!s->held || s->allowance)))
        pthread_cond_wait(&s->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
}

bool fake_store_event(store_t *s, size_t i, struct room_event *out)
{
    pthread_mutex_lock(&s->lock);
    bool ok = i < s->nevs;
    if (ok)
        *out = s->evs[i].ev;
    pthread_mutex_unlock(&s->lock);
    return ok;
}

size_t fake_store_nevents(store_t *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->nevs;
    pthread_mutex_unlock(&s->lock);
    return n;
}

size_t fake_store_outbox_adds(store_t *s)
{
    pthread_mutex_lock(&s->lock);
    size_t n = s->outbox_adds;
    pthread_mutex_unlock(&s->lock);
    return n;
}
