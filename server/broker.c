/*
 * broker — see broker.h.
 *
 * Locks, in the only order they may nest:
 *   room->lock -> b->users_lock -> client->lock -> loop->lock
 * b->idem_lock nests inside room->lock and is never held with users_lock.
 * None is ever held across I/O: pushes only append to queues.
 *
 * References: a room member holds a client reference (room.c); each entry of
 * c->joined holds a room reference; an in-flight storage write or read holds
 * a client reference and hist references, so completions may arrive after
 * the socket closed (the push is then a no-op). A parked connection's park
 * and each entry of c->pres_due hold a room reference; a room's waiters and
 * a posted resume hold client references; a load in flight holds the room.
 */
#include "broker.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accounts.h"
#include "cdir.h"
#include "client.h"
#include "counters.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "ratelimit.h"
#include "room.h"
#include "server.h"
#include "store.h"
#include "store_accounts.h"
#include "store_outbox.h"
#include "strmap.h"
#include "util.h"

#define HISTORY_WINDOW 256
#define MAX_LIST 1024
/* History reads one connection may have waiting for storage at once; a
 * join or history that needs one more is refused with rate_limited. The
 * replies count against the client's queue bytes when they arrive, so this
 * bounds what is held before that: a few slots keep a client paging
 * through history (one request at a time) and rejoining rooms busy, while
 * a flood cannot hide megabytes of replies in flight. */
#define HISTORY_READS_PER_CONN 4
/* The retry_after_ms of that refusal: about the time a read takes. */
#define HISTORY_RETRY_MS 100
/* How long a cluster's "that user is online" answer is taken as still
 * true for the same connection (client.h, peer_online): long enough for the
 * request that asked to run again through a room load, short enough that a
 * DM to someone who left is refused a moment later. */
#define PEER_ONLINE_MS 1000

struct joined {
    struct room *room; /* holds a room reference */
};

struct user {
    struct client **conns; /* {users_lock} each holds a client reference */
    int64_t *iat_ms;       /* {users_lock} conns[i] signed in with a token issued then
                              (ms; -1: unknown), to close it if that token is revoked */
    size_t n, cap;
    char *email;           /* {users_lock} account address for notifications, or NULL */
    int64_t tokens_after_ms; /* {users_lock} tokens issued at or before this are refused */
    bool account;          /* {users_lock} has an account (accounts mode) */
    bool deleted;          /* {users_lock} `parleyd user del`: no token is accepted */
};

/* Someone to e-mail about a message, found under the locks, notified after. */
struct note_target {
    char user[CODEC_USER_MAX + 1];
    char email[255];
};
#define MAX_MENTIONS 8

struct idem_entry {
    uint64_t seq;
    int64_t expires_ms;
};

struct broker {
    struct server *srv;
    rooms_t *rooms;
    struct codec_limits lim;

    pthread_mutex_t users_lock;
    /* {users_lock} name -> struct user: every name with a live connection, every
     * account, and in accounts mode every users row (names seen with a token,
     * deleted names). Open mode forgets a name with its last connection. */
    strmap_t *users;
    /* {users_lock} name -> (uintptr_t) hellos of that user parked here until
     * the user's channel is live (cluster): they hold the channel as a
     * connection does, so a leave meanwhile does not unsubscribe it */
    strmap_t *hellos;
    uint64_t users_gen;    /* main thread: the newest account generation applied */

    pthread_mutex_t idem_lock;
    strmap_t *idem;        /* {idem_lock} "room\x1fuser\x1fid" -> struct idem_entry */
    unsigned idem_puts;    /* {idem_lock} sweep every so many inserts */
    int64_t idem_ttl_ms;
    _Atomic unsigned takes; /* rate-limit checks, for the amortised bucket sweep */
    ratelimit_t *joins;     /* per user: joins and leaves (they make presence) */
    ratelimit_t *creates;   /* per user: rooms brought into memory (--max-new-rooms) */
    /* fixed: the engine is shared with other nodes (store.h): it assigns
     * seqs and every room event arrives through sink_event */
    bool shared;
    /* fixed: the cluster directory (shared engine): presence, who, rooms,
     * names and "is the user online" across nodes; NULL on one node */
    struct cdir *cdir;
};

/*
 * A connection waiting for a room to load (its seq read from storage). What
 * it sent from the request that needs the room on waits here, in order, and
 * its socket is not read meanwhile (client_rx_flow); once the room is loaded
 * the frames are handled as if they had just arrived.
 */
struct pframe {
    struct pframe *next;
    bool counted;  /* its first request was already counted and rate-checked */
    bool url_join; /* not a frame: the room= of the query string (data = room) */
    size_t len;
    char data[];
};

struct park {
    struct room *room;          /* the room being loaded (a reference); NULL: a hello
                                   waiting for the cluster to grant the name */
    struct pframe *head, **tail;
    size_t bytes;
    char ref[CODEC_REF_MAX + 1]; /* the waiting request's ref, for a failed load */
};

/* A room's last seq on its way from storage: a barrier (everything queued
 * before it, that room's messages included, is committed), then a read of
 * the room's latest message. */
struct room_load {
    struct store_sub sub; /* shared engine: the subscription gives the seq */
    struct store_barrier bar;
    struct store_read r;
    struct broker *b;
    struct room *rm; /* a reference */
};

/* A load finished: resume one waiting connection on its home loop. */
struct resume {
    struct broker *b;
    struct client *c;
    const struct room *rm; /* identity only: the park holds the reference */
    bool ok;
    bool answered; /* the waiting request was answered already: do not run it again */
};

/* A storage write in flight, owned by the store until done(). */
struct pending_write {
    union {
        struct store_append a;    /* a message */
        struct store_barrier bar; /* the ack of a duplicate */
    };
    struct broker *b;
    struct client *c;      /* sender, gets the ack */
    struct hist *h;        /* a message's content */
    msg_t *frame;          /* shared engine: the JSON frame around the seq (a.frame) */
    enum codec_fmt fmt;
    uint64_t seq;          /* the message's seq; a duplicate's: the original's */
    char room[CODEC_ROOMID_MAX + 1];
    char id[CODEC_ID_MAX + 1];
    char ref[CODEC_REF_MAX + 1];
};

/* A user name on its way to the users table. */
struct seen_write {
    struct store_user_seen u;
    char user[CODEC_USER_MAX + 1];
};

enum read_kind { READ_JOINED, READ_HISTORY };

/* A history read in flight: the DB part below the window, plus the window
 * part captured when the request was made. */
struct pending_read {
    struct store_read r;
    enum read_kind kind;
    struct client *c;
    msg_t *placeholder;    /* already queued to c, filled on completion */
    enum codec_fmt fmt;
    char ref[CODEC_REF_MAX + 1];
    uint64_t room_seq;
    bool more;
    bool direct;           /* shared engine: the whole reply from the log (history_direct) */
    bool slot;             /* holds one of c's history-read slots */
    _Atomic int waits;     /* answers still to come: the storage read, the directory's who */
    struct hist **win;
    size_t nwin;
    char **members;
    size_t nmembers;
};

/* ---------------------------------------------------------------- helpers */

static void reply(struct client *c, msg_t *m)
{
    client_push(c, m);
}

static void reply_error(struct client *c, enum err_code code, const char *message,
                        const char *ref)
{
    METRIC_INC(&c->srv->metrics, protocol_errors_total);
    reply(c, codec_error(c->fmt, code, message, ref, -1));
}

static struct room *joined_find(struct client *c, const char *room)
{
    for (unsigned i = 0; i < c->njoined; i++)
        if (strcmp(c->joined[i].room->name, room) == 0)
            return c->joined[i].room;
    return NULL;
}

static void joined_remove(struct client *c, struct room *rm)
{
    for (unsigned i = 0; i < c->njoined; i++) {
        if (c->joined[i].room == rm) {
            c->joined[i] = c->joined[--c->njoined];
            return;
        }
    }
}

static void idem_key(char *out, size_t sz, const char *room, const char *user, const char *id)
{
    snprintf(out, sz, "%s\x1f%s\x1f%s", room, user, id);
}

static bool idem_expired(const char *key, void *val, void *arg)
{
    (void)key;
    struct idem_entry *e = val;
    if (e->expires_ms > *(int64_t *)arg)
        return false;
    free(e);
    return true;
}

/* {room lock} -> idem_lock. */
static void idem_put(struct broker *b, const char *key, uint64_t seq, int64_t ts)
{
    struct idem_entry *e = xmalloc(sizeof(*e));
    e->seq = seq;
    e->expires_ms = ts + b->idem_ttl_ms;
    pthread_mutex_lock(&b->idem_lock);
    free(strmap_put(b->idem, key, e));
    /* amortised cleanup: one sweep per 1024 inserts keeps the map at about
     * one TTL's worth of ids without a timer thread */
    if (++b->idem_puts % 1024 == 0) {
        int64_t now = now_wall_ms();
        strmap_sweep(b->idem, idem_expired, &now);
    }
    pthread_mutex_unlock(&b->idem_lock);
}

static bool idem_get(struct broker *b, const char *key, uint64_t *seq)
{
    bool found = false;
    pthread_mutex_lock(&b->idem_lock);
    struct idem_entry *e = strmap_get(b->idem, key);
    if (e && e->expires_ms > now_wall_ms()) {
        *seq = e->seq;
        found = true;
    }
    pthread_mutex_unlock(&b->idem_lock);
    return found;
}

/* ------------------------------------------------------------ users map */

static struct user *user_get_locked(struct broker *b, const char *name, bool create)
{
    struct user *u = strmap_get(b->users, name);
    if (!u && create) {
        u = xcalloc(1, sizeof(*u));
        strmap_put(b->users, name, u);
    }
    return u;
}

static void user_free(void *p)
{
    struct user *u = p;
    for (size_t i = 0; i < u->n; i++)
        client_unref(&u->conns[i]);
    free(u->conns);
    free(u->iat_ms);
    free(u->email);
    free(u);
}

static void seen_done(struct store_user_seen *u)
{
    free(STORE_CONTAINER(u, struct seen_write, u));
}

static void remember_user(struct broker *b, const char *name)
{
    struct seen_write *sw = xcalloc(1, sizeof(*sw));
    str_lcpy(sw->user, name, sizeof(sw->user));
    sw->u.name = sw->user;
    sw->u.done = seen_done;
    if (store_user_seen(b->srv->store, &sw->u) != 0) {
        log_warn("broker", "cannot queue user '%s' for storage", name);
        free(sw);
    }
}

/* ------------------------------------------------------------- encoding */

/* Lazily encoded event in both formats: encode once per format, share. */
struct fanout {
    msg_t *json, *text;
};

static msg_t *fanout_get(struct fanout *f, enum codec_fmt fmt, msg_t *(*enc)(enum codec_fmt, void *),
                         void *arg)
{
    msg_t **slot = fmt == FMT_JSON ? &f->json : &f->text;
    if (!*slot)
        *slot = enc(fmt, arg);
    return msg_ref(*slot);
}

static void fanout_release(struct fanout *f)
{
    msg_unref(&f->json);
    msg_unref(&f->text);
}

struct presence_arg {
    const char *room, *user;
    bool join;
};

static msg_t *enc_presence(enum codec_fmt f, void *arg)
{
    struct presence_arg *a = arg;
    return codec_presence(f, a->room, a->user, a->join);
}

static msg_t *enc_message(enum codec_fmt f, void *arg)
{
    return codec_message(f, arg);
}

static msg_t *enc_typing(enum codec_fmt f, void *arg)
{
    struct presence_arg *a = arg;
    return codec_typing(f, a->room, a->user);
}

/* {room lock}. Send a presence event about user to every member but
 * user's own connections. */
static void announce_locked(struct room *rm, const char *user, bool join)
{
    struct fanout f = {0};
    struct presence_arg a = {rm->name, user, join};
    for (size_t i = 0; i < rm->nmembers; i++) {
        struct client *m = rm->members[i];
        if (strcmp(m->user, user) != 0)
            client_push(m, fanout_get(&f, m->fmt, enc_presence, &a));
    }
    fanout_release(&f);
}

/* {room lock}. user's connections in rm changed (or a deferred change is
 * due): announce what room_presence_locked decides. Returns true if the
 * change waits: the caller keeps the room on c->pres_due (broker_tick). */
static bool presence_locked(struct broker *b, struct room *rm, const char *user, bool force)
{
    bool present = false;
    switch (room_presence_locked(rm, user, now_mono_ms(), force, &present)) {
    case ROOM_PRES_ANNOUNCE:
        /* in a cluster the directory counts the nodes holding the user in
         * the room and tells every node (this one too) when that count
         * starts or ends: sink_ephemeral announces */
        if (b->cdir) {
            if (present)
                cdir_room_join(b->cdir, rm->name, user);
            else
                cdir_room_leave(b->cdir, rm->name, user);
        } else {
            announce_locked(rm, user, present);
        }
        return false;
    case ROOM_PRES_DEFERRED:
        METRIC_INC(&b->srv->metrics, presence_deferred_total);
        return true;
    case ROOM_PRES_NONE:
        break;
    }
    return false;
}

/* {home loop}. Remember that rm owes the others a presence change of c's
 * user; broker_tick (once a second) or the disconnect settles it. */
static void pres_due_add(struct client *c, struct room *rm)
{
    for (unsigned i = 0; i < c->npres_due; i++)
        if (c->pres_due[i] == rm)
            return;
    c->pres_due = xrealloc(c->pres_due, (c->npres_due + 1) * sizeof(*c->pres_due));
    c->pres_due[c->npres_due++] = rooms_ref(rm);
}

/* {home loop}. Settle what c's rooms owe (force: whatever the budget). */
static void pres_due_flush(struct broker *b, struct client *c, bool force)
{
    unsigned k = 0;
    for (unsigned i = 0; i < c->npres_due; i++) {
        struct room *rm = c->pres_due[i];
        pthread_mutex_lock(&rm->lock);
        bool still = presence_locked(b, rm, c->user, force);
        pthread_mutex_unlock(&rm->lock);
        if (still)
            c->pres_due[k++] = rm;
        else
            rooms_release(b->rooms, &rm);
    }
    c->npres_due = k;
    if (!k) {
        free(c->pres_due);
        c->pres_due = NULL;
    }
}

void broker_tick(struct broker *b, struct client *c)
{
    if (c->npres_due)
        pres_due_flush(b, c, false);
}

/* ------------------------------------------------------------ storage */

/* A message or a duplicate's barrier is durable (status 0; seq: what to
 * ack) or failed. */
static void write_finish(struct pending_write *pw, int status, uint64_t seq)
{
    struct metrics *mt = &pw->b->srv->metrics;

    if (pw->c) {
        if (status == 0) {
            client_push(pw->c, codec_ack(pw->fmt, pw->room, seq, pw->id, pw->ref));
        } else {
            METRIC_INC(mt, protocol_errors_total);
            client_push(pw->c, codec_error(pw->fmt, ERR_INTERNAL,
                                           "message not yet stored; it will be retried, resend "
                                           "with the same id to get its ack",
                                           pw->ref, -1));
        }
        client_unref(&pw->c);
    }
    hist_unref(&pw->h);
    msg_unref(&pw->frame);
    free(pw);
}

/* An ack held back until its event reached this node's members. */
struct ack_wait {
    struct ack_wait *next;
    uint64_t seq;
    struct client *c; /* a reference */
    msg_t *ack;
};

/* {rm->lock}. Push the held acks whose event the members here have had. */
static void acks_release_locked(struct room *rm, bool all)
{
    struct ack_wait **pp = &rm->acks;
    while (*pp) {
        struct ack_wait *w = *pp;
        if (all || w->seq <= rm->seq) {
            *pp = w->next;
            client_push(w->c, w->ack);
            client_unref(&w->c);
            free(w);
        } else {
            pp = &w->next;
        }
    }
}

/*
 * Thread: the engine's. A shared engine's send completed. The event comes
 * back through the room's subscription on its own connection, so the ack
 * may arrive first: hold it until the members here (the sender's
 * connection among them) have the event, so a client sees its message
 * before its ack and a `history` after the ack finds it, as on one node.
 */
static void shared_append_done(struct pending_write *pw, struct store_append *a)
{
    uint64_t seq = a->dup_seq ? a->dup_seq : a->seq;
    /* a DM room too, when loaded here: its window serves history */
    struct room *rm =
        a->status == 0 && pw->c ? rooms_acquire(pw->b->rooms, pw->room, false) : NULL;
    if (rm) {
        pthread_mutex_lock(&rm->lock);
        if (rm->state == ROOM_READY && rm->seq < seq) {
            struct ack_wait *w = xmalloc(sizeof(*w));
            w->seq = seq;
            w->c = pw->c;
            pw->c = NULL;
            w->ack = codec_ack(pw->fmt, pw->room, seq, pw->id, pw->ref);
            w->next = NULL;
            /* in the order the engine answered */
            struct ack_wait **pp = &rm->acks;
            while (*pp)
                pp = &(*pp)->next;
            *pp = w;
        }
        pthread_mutex_unlock(&rm->lock);
        rooms_release(pw->b->rooms, &rm);
    }
    write_finish(pw, a->status, seq); /* acks now unless held above */
}

static void append_done(struct store_append *a)
{
    struct pending_write *pw = STORE_CONTAINER(a, struct pending_write, a);
    if (pw->b->shared) {
        /* a shared engine assigned the seq itself */
        shared_append_done(pw, a);
        return;
    }
    write_finish(pw, a->status, a->dup_seq ? a->dup_seq : pw->seq);
}

static void barrier_done(struct store_barrier *bar)
{
    struct pending_write *pw = STORE_CONTAINER(bar, struct pending_write, bar);
    write_finish(pw, bar->status, pw->seq);
}

/* Ack a duplicate id once everything queued before it is durable (the
 * original included), without storing anything. */
static void ack_duplicate(struct broker *b, struct client *c, const char *room, uint64_t seq,
                          const char *id, const char *ref)
{
    struct pending_write *pw = xcalloc(1, sizeof(*pw));
    pw->b = b;
    pw->bar.done = barrier_done;
    pw->c = client_ref(c);
    pw->fmt = c->fmt;
    pw->seq = seq;
    str_lcpy(pw->room, room, sizeof(pw->room));
    str_lcpy(pw->id, id, sizeof(pw->id));
    str_lcpy(pw->ref, ref, sizeof(pw->ref));
    if (store_barrier(b->srv->store, &pw->bar) != 0) {
        client_unref(&pw->c);
        free(pw);
        reply_error(c, ERR_INTERNAL, "storage is overloaded, try again", ref);
    }
}

static void read_release(struct pending_read *pr)
{
    for (size_t i = 0; i < pr->nwin; i++)
        hist_unref(&pr->win[i]);
    free(pr->win);
    for (size_t i = 0; i < pr->nmembers; i++)
        free(pr->members[i]);
    free(pr->members);
    msg_unref(&pr->placeholder);
    if (pr->slot)
        client_read_end(pr->c);
    client_unref(&pr->c);
    store_read_release(&pr->r);
    free(pr);
}

/* Fill the read's placeholder with content (taken), charged to the
 * client's queue; a reply that could never fit there is replaced by an
 * error that says so. */
static void read_answer(struct pending_read *pr, msg_t *content)
{
    if (client_fill(pr->c, pr->placeholder, content) == -EMSGSIZE)
        client_fill(pr->c, pr->placeholder,
                    codec_error(pr->fmt, ERR_TOO_LARGE,
                                "the history asked for is larger than this connection may "
                                "queue: ask for fewer messages",
                                pr->ref, -1));
}

/* A stored message as the codec takes it. */
static struct chat_msg event_msg(const struct room_event *e)
{
    return (struct chat_msg){.room = e->room, .seq = e->seq, .from = e->from, .text = e->text,
                             .text_len = e->text_len, .ts = e->ts, .id = e->id};
}

static msg_t *encode_read(struct pending_read *pr, const struct chat_msg *msgs, size_t n)
{
    if (pr->kind == READ_JOINED)
        return codec_joined(pr->fmt, pr->r.room, pr->room_seq, (const char *const *)pr->members,
                            pr->nmembers, msgs, n, pr->ref);
    return codec_history(pr->fmt, pr->r.room, msgs, n, pr->more, pr->ref);
}

/* The last answer a pending read waited for came: encode and fill. */
static void pending_finish(struct pending_read *pr)
{
    struct store_read *r = &pr->r;
    msg_t *content;

    if (r->status != 0) {
        content = codec_error(pr->fmt, ERR_INTERNAL, "cannot read history, try again", pr->ref,
                              -1);
    } else {
        /* DB rows (below the window) then the window part, oldest first. */
        size_t n = 0;
        struct chat_msg *all = xmalloc((r->n + pr->nwin + 1) * sizeof(*all));
        for (size_t i = 0; i < r->n; i++)
            /* only messages are produced today: another kind is not one
             * (protocol v1.1 encodes its kinds here) */
            if (r->evs[i].kind == EV_MESSAGE)
                all[n++] = event_msg(&r->evs[i]);
        for (size_t i = 0; i < pr->nwin; i++)
            all[n++] = pr->win[i]->m;
        if (pr->direct)
            pr->more = r->more;
        content = encode_read(pr, all, n);
        free(all);
    }
    read_answer(pr, content);
    read_release(pr);
}

static void read_done(struct store_read *r)
{
    struct pending_read *pr = (struct pending_read *)r;
    if (atomic_fetch_sub(&pr->waits, 1) == 1)
        pending_finish(pr);
}

/* Thread: the engine's. A cluster join's member list (every node's). */
static void joined_who_done(void *arg, const char *const *users, size_t n, bool ok)
{
    struct pending_read *pr = arg;
    if (ok) {
        /* the directory's list replaces this node's own (kept if it failed) */
        for (size_t i = 0; i < pr->nmembers; i++)
            free(pr->members[i]);
        free(pr->members);
        pr->members = xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++)
            pr->members[i] = xstrdup(users[i]);
        pr->nmembers = n;
    }
    if (atomic_fetch_sub(&pr->waits, 1) == 1)
        pending_finish(pr);
}

/* {rm->lock} Whether the answer for seqs [a, z] needs a storage read: part
 * of the range is older than the window. */
static bool range_needs_read_locked(const struct room *rm, uint64_t a, uint64_t z)
{
    return a <= z && a < room_window_lo_locked(rm);
}

/* Take one of c's history-read slots for a request that needs a storage
 * read. False after answering rate_limited: the connection has
 * HISTORY_READS_PER_CONN reads in flight. */
static bool take_read_slot(struct broker *b, struct client *c, const char *ref)
{
    char msg[96];
    if (client_read_begin(c, HISTORY_READS_PER_CONN))
        return true;
    METRIC_INC(&b->srv->metrics, history_reads_refused_total);
    METRIC_INC(&b->srv->metrics, rate_limited_total);
    METRIC_INC(&b->srv->metrics, protocol_errors_total);
    snprintf(msg, sizeof(msg), "slow down: at most %d history reads at a time on one connection",
             HISTORY_READS_PER_CONN);
    reply(c, codec_error(c->fmt, ERR_RATE_LIMITED, msg, ref, HISTORY_RETRY_MS));
    return false;
}

/*
 * Answer a history-bearing request for seqs [a, z] (a > z: none). Must be
 * called with rm->lock held so the reply is queued before any later event
 * of the room. The window serves what it holds; anything older is read from
 * storage off the loop and the reply waits in the queue as a placeholder.
 * When range_needs_read_locked, the caller has taken a read slot of c
 * (take_read_slot), which the read gives back when it is answered.
 */
static void answer_range_locked(struct broker *b, struct client *c, struct room *rm,
                                enum read_kind kind, uint64_t a, uint64_t z, bool more,
                                const char *ref)
{
    uint64_t lo = room_window_lo_locked(rm);
    const char *names[MAX_LIST];
    size_t nn = kind == READ_JOINED ? room_member_names_locked(rm, names, MAX_LIST) : 0;
    size_t cap = a <= z ? (size_t)(z - a + 1) : 0;
    struct hist **win = xmalloc((cap + 1) * sizeof(*win));
    size_t nwin = a <= z ? room_window_copy_locked(rm, a, z, win) : 0;
    bool need_read = a <= z && a < lo;
    /* in a cluster, `joined` lists the members on every node: the reply
     * waits (queued in order, as a placeholder) for the directory */
    bool cluster_members = kind == READ_JOINED && b->cdir;

    if (!need_read && !cluster_members) {
        struct chat_msg *msgs = xmalloc((nwin + 1) * sizeof(*msgs));
        for (size_t i = 0; i < nwin; i++)
            msgs[i] = win[i]->m;
        msg_t *m = kind == READ_JOINED
                       ? codec_joined(c->fmt, rm->name, rm->seq, names, nn, msgs, nwin, ref)
                       : codec_history(c->fmt, rm->name, msgs, nwin, more, ref);
        reply(c, m);
        free(msgs);
        for (size_t i = 0; i < nwin; i++)
            hist_unref(&win[i]);
        free(win);
        return;
    }

    struct pending_read *pr = xcalloc(1, sizeof(*pr));
    str_lcpy(pr->r.room, rm->name, sizeof(pr->r.room));
    pr->r.mode = SR_SINCE;
    pr->r.key = a - 1;
    pr->r.limit = (int)((z < lo ? z : lo - 1) - a + 1);
    pr->r.done = read_done;
    /* reads are served in turn per user, so one user's flood cannot
     * starve the others' (store.h) */
    str_lcpy(pr->r.owner, c->user, sizeof(pr->r.owner));
    pr->kind = kind;
    pr->c = client_ref(c);
    pr->fmt = c->fmt;
    str_lcpy(pr->ref, ref, sizeof(pr->ref));
    pr->room_seq = rm->seq;
    pr->more = more;
    pr->win = win;
    pr->nwin = nwin;
    pr->members = xcalloc(nn + 1, sizeof(char *));
    for (size_t i = 0; i < nn; i++)
        pr->members[i] = xstrdup(names[i]);
    pr->nmembers = nn;
    pr->slot = need_read;
    pr->placeholder = msg_new_placeholder();
    if (client_push(c, msg_ref(pr->placeholder)) != 0) {
        read_release(pr); /* c is closed: nobody waits for the answer */
        return;
    }
    atomic_init(&pr->waits, (int)need_read + (int)cluster_members + 1);
    if (cluster_members && cdir_who(b->cdir, rm->name, joined_who_done, pr) != 0)
        atomic_fetch_sub(&pr->waits, 1); /* this node's members, then */
    if (need_read) {
        METRIC_INC(&b->srv->metrics, history_reads_total);
        if (store_read_submit(b->srv->store, &pr->r) != 0) {
            /* answer anyway so the client is not stuck behind an empty slot */
            pr->r.status = -EIO;
            atomic_fetch_sub(&pr->waits, 1);
        }
    }
    /* the guard: the last answer (maybe already in) finishes it */
    if (atomic_fetch_sub(&pr->waits, 1) == 1)
        pending_finish(pr);
}

/* ---------------------------------------------- rooms loaded from storage */

static void process_frame(struct broker *b, struct client *c, const char *buf, size_t len,
                          bool counted);
static void url_join(struct broker *b, struct client *c, const char *room, bool counted);

/* A parked connection may not have sent more than this meanwhile: its
 * socket is not read, so only what lws had already taken in arrives. */
static size_t park_max(const struct broker *b)
{
    return 4 * (size_t)b->srv->cfg->max_frame + 65536;
}

/* {home loop}. Keep len bytes of input of a parked connection for later. */
static void park_append(struct broker *b, struct client *c, const char *data, size_t len,
                        bool counted, bool is_url_join)
{
    struct park *pk = c->park;
    if (pk->bytes + len > park_max(b)) {
        c->discard = true;
        client_kill(c, 1008, "too much input while a room loads");
        return;
    }
    struct pframe *f = xmalloc(sizeof(*f) + len + 1);
    f->next = NULL;
    f->counted = counted;
    f->url_join = is_url_join;
    f->len = len;
    memcpy(f->data, data, len);
    f->data[len] = '\0';
    *pk->tail = f;
    pk->tail = &f->next;
    pk->bytes += len;
}

static void park_free(struct broker *b, struct park *pk)
{
    if (!pk)
        return;
    for (struct pframe *f = pk->head, *n; f; f = n) {
        n = f->next;
        free(f);
    }
    rooms_release(b->rooms, &pk->room);
    free(pk);
}

/* {home loop}. c's current request waits for rm to load; rm's reference
 * moves to the park. The caller (process_frame, url join) then keeps the
 * request itself and whatever follows it. */
static void park(struct client *c, struct room *rm, const char *ref)
{
    struct park *pk = xcalloc(1, sizeof(*pk));
    pk->room = rm;
    pk->tail = &pk->head;
    str_lcpy(pk->ref, ref, sizeof(pk->ref));
    c->park = pk;
    client_rx_flow(c, false);
}

/* {c's home loop}. rm's load finished: handle what c sent meanwhile. */
static void resume_job(void *arg)
{
    struct resume *rs = arg;
    struct broker *b = rs->b;
    struct client *c = rs->c;
    struct park *pk = c->park;

    /* gone (broker_disconnected freed the park) or not this room's */
    if (!pk || pk->room != rs->rm) {
        client_unref(&rs->c);
        free(rs);
        return;
    }
    c->park = NULL;
    struct pframe *f = pk->head;
    pk->head = NULL;
    if (f && (!rs->ok || rs->answered)) {
        /* the waiting request cannot be carried out (or was answered by
         * whoever resumed us): answer it, go on with the rest (a text
         * frame's following lines, later frames) */
        if (!rs->ok)
            reply_error(c, ERR_INTERNAL, "cannot load the room from storage, try again",
                        pk->ref);
        const char *nl = f->url_join || c->fmt == FMT_JSON ? NULL : memchr(f->data, '\n', f->len);
        struct pframe *next = f->next;
        if (nl) {
            size_t skip = (size_t)(nl + 1 - f->data);
            memmove(f->data, nl + 1, f->len - skip);
            f->len -= skip;
            f->counted = false;
        } else {
            free(f);
            f = next;
        }
    }
    while (f) {
        struct pframe *next = f->next;
        if (c->park) {
            /* parked again on another room: the rest waits behind what that
             * request left, in order */
            *c->park->tail = f;
            while (f->next)
                f = f->next;
            c->park->tail = &f->next;
            break;
        }
        if (!c->discard) {
            if (f->url_join)
                url_join(b, c, f->data, f->counted);
            else
                process_frame(b, c, f->data, f->len, f->counted);
        }
        free(f);
        f = next;
    }
    park_free(b, pk);
    if (!c->park)
        client_rx_flow(c, true);
    client_unref(&rs->c);
    free(rs);
}

/* Any thread. The load of ld->rm ended: set the room's state and wake every
 * connection that waits for it. */
static void load_finish(struct room_load *ld, bool ok, uint64_t seq)
{
    struct broker *b = ld->b;
    struct room *rm = ld->rm;
    size_t n;

    pthread_mutex_lock(&rm->lock);
    if (ok) {
        rm->seq = seq;
        rm->state = ROOM_READY;
    } else {
        rm->state = ROOM_COLD; /* the next request tries again */
    }
    struct client **w = room_take_waiters_locked(rm, &n);
    pthread_mutex_unlock(&rm->lock);
    if (!ok)
        log_warn("broker", "cannot load room '%s' from storage", rm->name);
    for (size_t i = 0; i < n; i++) {
        struct resume *rs = xmalloc(sizeof(*rs));
        *rs = (struct resume){.b = b, .c = w[i], .rm = rm, .ok = ok};
        if (client_post(w[i], resume_job, rs) != 0) {
            client_unref(&rs->c); /* the loop has stopped: nobody to resume */
            free(rs);
        }
    }
    free(w);
    rooms_release(b->rooms, &ld->rm);
    free(ld);
}

static void load_read_done(struct store_read *r)
{
    struct room_load *ld = (struct room_load *)((char *)r - offsetof(struct room_load, r));
    bool ok = r->status == 0;
    /* the room's last seq, whatever the kind of the event that took it */
    uint64_t seq = ok && r->n ? r->evs[r->n - 1].seq : 0;
    store_read_release(r);
    load_finish(ld, ok, seq);
}

static void load_barrier_done(struct store_barrier *bar)
{
    struct room_load *ld = STORE_CONTAINER(bar, struct room_load, bar);
    if (bar->status != 0) {
        load_finish(ld, false, 0);
        return;
    }
    /* everything written before the barrier is committed and readable */
    str_lcpy(ld->r.room, ld->rm->name, sizeof(ld->r.room));
    ld->r.mode = SR_LATEST;
    ld->r.limit = 1;
    ld->r.done = load_read_done;
    if (store_read_submit(ld->b->srv->store, &ld->r) != 0)
        load_finish(ld, false, 0);
}

static void load_sub_done(struct store_sub *sub)
{
    struct room_load *ld = STORE_CONTAINER(sub, struct room_load, sub);
    load_finish(ld, sub->status == 0, sub->seq);
}

/* Read rm's last seq from storage (takes its own reference). A shared
 * engine's room is subscribed to instead: its seq is where the events that
 * reach this node start. */
static void room_load(struct broker *b, struct room *rm)
{
    struct room_load *ld = xcalloc(1, sizeof(*ld));
    ld->b = b;
    ld->rm = rooms_ref(rm);
    ld->bar.done = load_barrier_done;
    METRIC_INC(&b->srv->metrics, room_loads_total);
    if (b->shared) {
        str_lcpy(ld->sub.room, rm->name, sizeof(ld->sub.room));
        ld->sub.done = load_sub_done;
        if (store_subscribe(b->srv->store, &ld->sub) != 0)
            load_finish(ld, false, 0);
        return;
    }
    if (store_barrier(b->srv->store, &ld->bar) != 0)
        load_finish(ld, false, 0);
}

/* Per user: may c bring another room into memory? Answers rate_limited if
 * not. */
static bool create_ok(struct broker *b, struct client *c, const char *ref)
{
    int64_t retry_ms;
    char msg[96];
    if (ratelimit_take(b->creates, c->user, now_mono_ns(), &retry_ms, NULL))
        return true;
    METRIC_INC(&b->srv->metrics, rooms_refused_total);
    METRIC_INC(&b->srv->metrics, rate_limited_total);
    METRIC_INC(&b->srv->metrics, protocol_errors_total);
    snprintf(msg, sizeof(msg), "too many new rooms: %.0f an hour at most",
             b->srv->cfg->max_new_rooms);
    reply(c, codec_error(c->fmt, ERR_RATE_LIMITED, msg, ref, retry_ms));
    return false;
}

/*
 * {home loop}. Room `name` with its seq known, with a reference, for a
 * request that needs the seq (join, dm, history). NULL when the request was
 * answered (over --max-new-rooms) or parked: the room is not in memory, or
 * not yet loaded, and the request runs again once it is.
 */
static struct room *room_for(struct broker *b, struct client *c, const char *name,
                             const char *ref)
{
    struct room *rm = rooms_acquire(b->rooms, name, false);
    if (!rm) {
        if (!create_ok(b, c, ref))
            return NULL;
        rm = rooms_acquire(b->rooms, name, true);
    }
    pthread_mutex_lock(&rm->lock);
    if (rm->state == ROOM_READY) {
        pthread_mutex_unlock(&rm->lock);
        return rm;
    }
    bool start = rm->state == ROOM_COLD;
    if (start)
        rm->state = ROOM_LOADING;
    room_add_waiter_locked(rm, c);
    pthread_mutex_unlock(&rm->lock);
    park(c, rm, ref);
    if (start)
        room_load(b, rm);
    return NULL;
}

/* ------------------------------------------------------------- requests */

static bool dm_participant(const char *room, const char *user)
{
    char a[CODEC_USER_MAX + 1], z[CODEC_USER_MAX + 1];
    return codec_parse_dm(room, a, z) && (strcmp(a, user) == 0 || strcmp(z, user) == 0);
}

/* Answer a failed sign-in: auth_failed, and close 1008 at connect. */
static void refuse_auth(struct broker *b, struct client *c, const char *why, const char *ref,
                        bool at_connect)
{
    METRIC_INC(&b->srv->metrics, auth_failures_total);
    reply_error(c, ERR_AUTH_FAILED, why, ref);
    if (at_connect)
        client_kill(c, 1008, "authentication failed");
}

/* Resolve who the hello speaks for: open mode takes the name, accounts
 * mode a valid token (and *iat_ms its issue time, -1 if unknown). Returns
 * false after answering with auth_failed. */
static bool hello_identity(struct broker *b, struct client *c, const struct req *r,
                           char user[CODEC_USER_MAX + 1], int64_t *iat_ms, bool at_connect)
{
    const char *why = NULL;
    char msg[160];

    *iat_ms = -1;
    if (b->srv->accounts) {
        if (!r->token) {
            why = "this server requires a token: log in with POST /api/login";
        } else {
            int rc = accounts_verify_token(b->srv->accounts, r->token, user, CODEC_USER_MAX + 1,
                                           iat_ms);
            if (rc != 0) {
                snprintf(msg, sizeof(msg), "invalid token: %s", accounts_token_error(rc));
                why = msg;
            }
        }
    } else if (r->token || !r->user[0]) {
        why = "this server runs in open mode: send hello with a user";
    } else {
        str_lcpy(user, r->user, CODEC_USER_MAX + 1);
    }
    if (!why)
        return true;
    refuse_auth(b, c, why, r->ref, at_connect);
    return false;
}

/* {users_lock}. Why a token of u issued at iat_ms is no longer accepted, or
 * NULL. Memory only: the poll on the main thread keeps u up to date. */
static const char *revoked_locked(const struct user *u, int64_t iat_ms)
{
    if (u->deleted)
        return "invalid token: this user was deleted";
    if (u->tokens_after_ms > 0 && iat_ms <= u->tokens_after_ms)
        return "invalid token: revoked (issued before the user's password changed)";
    return NULL;
}

static void hello_finish(struct broker *b, struct client *c, const char *user, int64_t iat_ms,
                         const char *ref, bool at_connect);
static void hello_wait(struct broker *b, struct client *c, const char *user, int64_t iat_ms,
                       const char *ref, bool at_connect);

static void publish_shared(struct broker *b, struct client *c, const char *room,
                           const struct req *r);
static void reply_no_such_user(struct broker *b, struct client *c, const char *ref);
static bool user_known(struct broker *b, const char *name);
static void notify_targets(struct broker *b, const struct note_target *t, size_t n,
                           const struct chat_msg *m, bool dm);

/* ------------------------------------------------------- cluster names */

/* A hello in a cluster waits (parked, like a room load) until the cluster
 * is ready for its user: in open mode the directory grants the name on
 * every node; in both modes the user's channel, which brings their DMs
 * from every node, is live (a DM sent right after the welcome must not
 * find this node not listening yet). */
struct hello_wait {
    struct broker *b;
    struct client *c; /* a reference */
    char user[CODEC_USER_MAX + 1];
    char ref[CODEC_REF_MAX + 1];
    int64_t iat_ms;
    bool at_connect, ok, taken;
    bool counted; /* in b->hellos (from the channel wait on) */
};

/* {users_lock}. Count a parked hello of name in (+1) or out (-1). */
static void hellos_add_locked(struct broker *b, const char *name, int d)
{
    uintptr_t n = (uintptr_t)strmap_get(b->hellos, name);
    n = d > 0 ? n + 1 : n ? n - 1 : 0;
    if (n)
        strmap_put(b->hellos, name, (void *)n);
    else
        strmap_del(b->hellos, name);
}

/* {users_lock}. Does this node hold name's channel (and, open mode, its
 * claim): a connection signed in as name (u, may be NULL), or a hello of
 * name waiting for the channel? */
static bool name_held_locked(struct broker *b, const char *name, const struct user *u)
{
    return (u && u->n) || strmap_get(b->hellos, name);
}

/* {any}. A hello of name is over (answered, refused or its connection
 * gone): if nobody here holds the name now, the claim (open mode) and the
 * channel go. */
static void name_unclaim(struct broker *b, const char *name)
{
    pthread_mutex_lock(&b->users_lock);
    struct user *u = user_get_locked(b, name, false);
    bool held = name_held_locked(b, name, u);
    if (!held)
        store_user_unsubscribe(b->srv->store, name);
    pthread_mutex_unlock(&b->users_lock);
    if (!held && b->cdir && !b->srv->accounts)
        cdir_user_del(b->cdir, name);
}

/* {home loop}. The hello is no longer parked for the channel. */
static void hello_done(struct broker *b, struct hello_wait *hw)
{
    if (!hw->counted)
        return;
    hw->counted = false;
    pthread_mutex_lock(&b->users_lock);
    hellos_add_locked(b, hw->user, -1);
    pthread_mutex_unlock(&b->users_lock);
}

static void hello_job(void *arg)
{
    struct hello_wait *hw = arg;
    struct broker *b = hw->b;
    struct client *c = hw->c;
    struct park *pk = c->park;

    if (!pk || pk->room) {
        /* the connection went meanwhile */
        hello_done(b, hw);
        if (hw->ok && !hw->taken)
            name_unclaim(b, hw->user);
        client_unref(&hw->c);
        free(hw);
        return;
    }
    if (!hw->ok) {
        reply_error(c, ERR_INTERNAL, "the cluster cannot be reached to check that name, try "
                                     "again", hw->ref);
    } else if (hw->taken) {
        METRIC_INC(&b->srv->metrics, protocol_errors_total);
        reply_error(c, ERR_NAME_TAKEN, "that name is in use by a live connection", hw->ref);
    } else {
        /* counted out once the connection holds the name (or was refused) */
        hello_finish(b, c, hw->user, hw->iat_ms, hw->ref, hw->at_connect);
        hello_done(b, hw);
        if (!c->authed)
            name_unclaim(b, hw->user);
    }
    /* what the client sent meanwhile runs now, in order */
    struct resume *rs = xmalloc(sizeof(*rs));
    /* the hello frame waits first in the park: it was answered here (a
     * hello from the query string is no frame) */
    *rs = (struct resume){.b = b, .c = hw->c, .rm = NULL, .ok = true,
                          .answered = !hw->at_connect};
    free(hw);
    resume_job(rs);
}

/* Thread: any (the engine may run it under users_lock, from an
 * unsubscribe). The wait is over: the rest runs on the client's loop. A
 * loop that takes no more jobs has stopped: the node is shutting down and
 * its goodbye removes the name and the channel, so nothing is undone here
 * (which would take users_lock again). */
static void hello_ready(void *arg)
{
    struct hello_wait *hw = arg;
    if (client_post(hw->c, hello_job, hw) != 0) {
        client_unref(&hw->c);
        free(hw);
    }
}

/* Thread: any. The name is this connection's to take: wait for its
 * channel. */
static void hello_channel(struct hello_wait *hw)
{
    struct broker *b = hw->b;
    pthread_mutex_lock(&b->users_lock);
    hellos_add_locked(b, hw->user, +1);
    hw->counted = true;
    pthread_mutex_unlock(&b->users_lock);
    if (store_user_subscribe(b->srv->store, hw->user, hello_ready, hw) != 0)
        hello_ready(hw);
}

/* Thread: the engine's. */
static void hello_claimed(void *arg, bool ok, bool taken)
{
    struct hello_wait *hw = arg;
    hw->ok = ok;
    hw->taken = taken;
    if (ok && !taken)
        hello_channel(hw);
    else
        hello_ready(hw);
}

/* {home loop}. A hello in a cluster: park c until the name is granted
 * (open mode) and its channel is live, then hello_job finishes it. */
static void hello_wait(struct broker *b, struct client *c, const char *user, int64_t iat_ms,
                       const char *ref, bool at_connect)
{
    bool open = !b->srv->accounts;
    if (open) {
        pthread_mutex_lock(&b->users_lock);
        struct user *u = user_get_locked(b, user, false);
        bool taken = u && u->n;
        pthread_mutex_unlock(&b->users_lock);
        if (taken) {
            reply_error(c, ERR_NAME_TAKEN, "that name is in use by a live connection", ref);
            return;
        }
    }
    struct hello_wait *hw = xcalloc(1, sizeof(*hw));
    hw->b = b;
    hw->c = client_ref(c);
    str_lcpy(hw->user, user, sizeof(hw->user));
    str_lcpy(hw->ref, ref, sizeof(hw->ref));
    hw->iat_ms = iat_ms;
    hw->at_connect = at_connect;
    park(c, NULL, ref);
    if (!open) {
        /* accounts: a user may hold many connections; no claim */
        hw->ok = true;
        hello_channel(hw);
    } else if (cdir_user_add(b->cdir, user, true, hello_claimed, hw) != 0) {
        hello_claimed(hw, false, false);
    }
}

/* ------------------------------------------------------- cluster lists */

/* A who or rooms reply on its way from the directory. */
struct list_wait {
    struct client *c; /* a reference */
    enum codec_fmt fmt;
    char room[CODEC_ROOMID_MAX + 1];
    char ref[CODEC_REF_MAX + 1];
};

static struct list_wait *list_wait_new(struct client *c, const char *room, const char *ref)
{
    struct list_wait *lw = xcalloc(1, sizeof(*lw));
    lw->c = client_ref(c);
    lw->fmt = c->fmt;
    str_lcpy(lw->room, room ? room : "", sizeof(lw->room));
    str_lcpy(lw->ref, ref, sizeof(lw->ref));
    return lw;
}

static void list_failed(struct list_wait *lw)
{
    client_push(lw->c, codec_error(lw->fmt, ERR_INTERNAL,
                                   "the cluster cannot be reached, try again", lw->ref, -1));
}

/* Thread: the engine's. */
static void who_done(void *arg, const char *const *users, size_t n, bool ok)
{
    struct list_wait *lw = arg;
    if (ok)
        client_push(lw->c, codec_members(lw->fmt, lw->room, users, n, lw->ref));
    else
        list_failed(lw);
    client_unref(&lw->c);
    free(lw);
}

/* Thread: the engine's. */
static void rooms_done(void *arg, const struct cdir_room *rooms, size_t n, bool ok)
{
    struct list_wait *lw = arg;
    if (ok) {
        struct room_info *info = xmalloc((n + 1) * sizeof(*info));
        for (size_t i = 0; i < n; i++)
            info[i] = (struct room_info){rooms[i].name, rooms[i].members, rooms[i].seq};
        client_push(lw->c, codec_rooms(lw->fmt, info, n, lw->ref));
        free(info);
    } else {
        list_failed(lw);
    }
    client_unref(&lw->c);
    free(lw);
}

/* ------------------------------------------------ cluster online checks */

/* A request that waits (parked) to learn whether a user is online on any
 * node (open mode: DMs and DM joins), or a notification that waits to
 * learn whether its recipient is offline everywhere. */
struct online_wait {
    struct broker *b;
    struct client *c;     /* request: its connection (a reference); NULL: a notification */
    char peer[CODEC_USER_MAX + 1];
    char ref[CODEC_REF_MAX + 1];
    bool online;
    struct hist *h;       /* notification: the message */
    struct note_target t; /* notification: whom */
    bool dm;
};

static void online_job(void *arg)
{
    struct online_wait *ow = arg;
    struct client *c = ow->c;
    struct park *pk = c->park;
    if (!pk || pk->room) {
        /* the connection went meanwhile */
        client_unref(&ow->c);
        free(ow);
        return;
    }
    /* the waiting frame is the request: run again, it finds the answer in
     * peer_online; or answered here */
    struct resume *rs = xmalloc(sizeof(*rs));
    *rs = (struct resume){.b = ow->b, .c = ow->c, .rm = NULL, .ok = true,
                          .answered = !ow->online};
    if (ow->online) {
        str_lcpy(c->peer_online, ow->peer, sizeof(c->peer_online));
        c->peer_online_ms = now_mono_ms();
    }
    else {
        c->peer_online[0] = '\0';
        reply_no_such_user(ow->b, c, ow->ref);
    }
    free(ow);
    resume_job(rs);
}

/* Thread: the engine's. */
static void online_done(void *arg, bool online, bool ok)
{
    struct online_wait *ow = arg;
    ow->online = ok && online;
    if (client_post(ow->c, online_job, ow) != 0) {
        client_unref(&ow->c);
        free(ow);
    }
}

/*
 * {home loop}. Open mode: may c address peer (a DM, a DM room's join or
 * send)? True if peer is online here. In a cluster, when not: false, and c
 * is parked while the directory is asked; the request then runs again
 * (peer_online tells it the answer) or is answered no_such_user. On one
 * node: false after answering no_such_user.
 */
static bool peer_reachable(struct broker *b, struct client *c, const char *peer,
                           const char *ref)
{
    if (user_known(b, peer))
        return true;
    if (!b->cdir) {
        reply_no_such_user(b, c, ref);
        return false;
    }
    if (strcmp(c->peer_online, peer) == 0 && now_mono_ms() - c->peer_online_ms < PEER_ONLINE_MS)
        return true;
    struct online_wait *ow = xcalloc(1, sizeof(*ow));
    ow->b = b;
    ow->c = client_ref(c);
    str_lcpy(ow->peer, peer, sizeof(ow->peer));
    str_lcpy(ow->ref, ref, sizeof(ow->ref));
    park(c, NULL, ref);
    if (cdir_user_online(b->cdir, peer, online_done, ow) != 0)
        online_done(ow, false, false);
    return false;
}

/* Thread: the engine's. */
static void note_online_done(void *arg, bool online, bool ok)
{
    struct online_wait *ow = arg;
    /* offline on every node (or the directory cannot say: better an
     * e-mail too many than a mention nobody hears of) */
    if (!online)
        notify_targets(ow->b, &ow->t, 1, &ow->h->m, ow->dm);
    hist_unref(&ow->h);
    free(ow);
}

/* Notify the targets that are offline on every node. */
static void notify_offline(struct broker *b, const struct note_target *t, size_t n,
                           struct hist *h, bool dm)
{
    for (size_t i = 0; i < n; i++) {
        struct online_wait *ow = xcalloc(1, sizeof(*ow));
        ow->b = b;
        ow->h = hist_ref(h);
        ow->t = t[i];
        ow->dm = dm;
        if (cdir_user_online(b->cdir, t[i].user, note_online_done, ow) != 0)
            note_online_done(ow, false, false);
    }
}

static void do_hello(struct broker *b, struct client *c, const struct req *r, bool at_connect)
{
    char user[CODEC_USER_MAX + 1];
    int64_t iat_ms;

    if (c->authed) {
        reply_error(c, ERR_BAD_REQUEST, "already signed in on this connection", r->ref);
        return;
    }
    if (!hello_identity(b, c, r, user, &iat_ms, at_connect))
        return;
    if (b->shared) {
        hello_wait(b, c, user, iat_ms, r->ref, at_connect);
        return;
    }
    hello_finish(b, c, user, iat_ms, r->ref, at_connect);
}

/* {home loop}. Sign c in as user (identity checked): the rest of hello. */
static void hello_finish(struct broker *b, struct client *c, const char *user, int64_t iat_ms,
                         const char *ref, bool at_connect)
{
    const struct config *cfg = b->srv->cfg;
    bool first_seen = false;

    pthread_mutex_lock(&b->users_lock);
    struct user *u = user_get_locked(b, user, false);
    /* checked under the same lock as the sign-in below, so a revocation
     * applied meanwhile either refuses this hello or finds its connection */
    const char *revoked = u && b->srv->accounts ? revoked_locked(u, iat_ms) : NULL;
    if (revoked) {
        pthread_mutex_unlock(&b->users_lock);
        refuse_auth(b, c, revoked, ref, at_connect);
        return;
    }
    /* open mode: a name belongs to one live connection; accounts mode: a
     * user may have many (tabs), presence counts users */
    if (u && u->n && !b->srv->accounts) {
        pthread_mutex_unlock(&b->users_lock);
        /* the connection stays open: the user can pick another name */
        reply_error(c, ERR_NAME_TAKEN, "that name is in use by a live connection", ref);
        return;
    }
    if (!u) {
        u = user_get_locked(b, user, true);
        first_seen = true;
    }
    if (u->n == u->cap) {
        u->cap = u->cap ? u->cap * 2 : 2;
        u->conns = xrealloc(u->conns, u->cap * sizeof(*u->conns));
        u->iat_ms = xrealloc(u->iat_ms, u->cap * sizeof(*u->iat_ms));
    }
    u->iat_ms[u->n] = iat_ms;
    u->conns[u->n++] = client_ref(c);
    /* the user's channel brings their DMs from every node; under the lock
     * so a subscribe and an unsubscribe of one name keep their order */
    if (b->shared && u->n == 1) {
        /* live already (hello_wait); again in case the user's last other
         * connection here unsubscribed it meanwhile */
        store_user_subscribe(b->srv->store, user, NULL, NULL);
        /* open mode claimed the name on every node before (hello_wait) */
        if (b->cdir && b->srv->accounts)
            cdir_user_add(b->cdir, user, false, NULL, NULL);
    }
    pthread_mutex_unlock(&b->users_lock);

    /* open mode keeps no row per name: a name there is nobody's, and a row
     * for every name ever tried would grow the database forever */
    if (first_seen && b->srv->accounts)
        remember_user(b, user);
    str_lcpy(c->user, user, sizeof(c->user));
    c->authed = true;
    counters_attach(b->srv->counters, c->user);
    util_random_hex(c->session, (sizeof(c->session) - 1) / 2);
    reply(c, codec_welcome(c->fmt, c->user, c->session, ref, (size_t)cfg->max_text,
                           (size_t)cfg->max_frame, cfg->rate, cfg->burst));
}

void broker_user_added(struct broker *b, const char *name, const char *email)
{
    pthread_mutex_lock(&b->users_lock);
    struct user *u = user_get_locked(b, name, true);
    free(u->email);
    u->email = email && email[0] ? xstrdup(email) : NULL;
    u->account = email != NULL;
    pthread_mutex_unlock(&b->users_lock);
}

/* Thread: main. Take a users row into the map; when it revokes tokens,
 * close the connections signed in with them (1008, from their home loops). */
static void apply_user(void *arg, const struct store_user *su)
{
    struct broker *b = arg;
    if (su->gen > b->users_gen)
        b->users_gen = su->gen;
    /* open mode: a row without an account (a name seen earlier) means
     * nothing now, since a name is known only while someone holds it */
    if (!su->email && !b->srv->accounts)
        return;
    pthread_mutex_lock(&b->users_lock);
    struct user *u = user_get_locked(b, su->name, true);
    free(u->email);
    u->email = su->email && su->email[0] ? xstrdup(su->email) : NULL;
    u->account = su->email != NULL;
    bool revoke = (su->deleted && !u->deleted) || su->tokens_after_ms > u->tokens_after_ms;
    u->deleted = su->deleted;
    u->tokens_after_ms = su->tokens_after_ms;
    for (size_t i = 0; revoke && b->srv->accounts && i < u->n; i++) {
        if (revoked_locked(u, u->iat_ms[i])) {
            METRIC_INC(&b->srv->metrics, auth_revoked_total);
            client_kill(u->conns[i], 4003, "credentials revoked");
        }
    }
    pthread_mutex_unlock(&b->users_lock);
}

int broker_reload_users(struct broker *b)
{
    return store_load_users(b->srv->store, 0, apply_user, b);
}

int broker_poll_users(struct broker *b)
{
    uint64_t gen;
    if (store_users_gen(b->srv->store, &gen) != 0)
        return -1;
    if (gen <= b->users_gen)
        return 0;
    if (store_load_users(b->srv->store, b->users_gen, apply_user, b) != 0)
        return -1;
    return 1;
}

/* ------------------------------------------------------- notifications */

/* An outbox row in flight to the storage writer. */
struct outbox_write {
    struct store_outbox_add w;
    char id[33], recipient[CODEC_USER_MAX + 1], email[255], from[CODEC_USER_MAX + 1];
    char room[CODEC_ROOMID_MAX + 1];
    char text[];
};

static void outbox_done(struct store_outbox_add *w)
{
    struct outbox_write *ow = STORE_CONTAINER(w, struct outbox_write, w);
    if (w->status != 0)
        log_warn("broker", "notification for '%s' not recorded in the outbox", ow->recipient);
    free(ow);
}

/* {users_lock}. Add user as a target if offline with an address. */
static size_t add_target_locked(struct broker *b, const char *name, struct note_target *t,
                                size_t n)
{
    struct user *u = user_get_locked(b, name, false);
    if (!u || u->n || !u->email || n >= MAX_MENTIONS + 1)
        return n;
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].user, name) == 0)
            return n;
    str_lcpy(t[n].user, name, sizeof(t[n].user));
    str_lcpy(t[n].email, u->email, sizeof(t[n].email));
    return n + 1;
}

/* {room lock}. Offline users @mentioned in text who have joined the room. */
static size_t mention_targets_locked(struct broker *b, struct room *rm, const char *self,
                                     const char *text, size_t len, struct note_target *t)
{
    size_t n = 0, found = 0;
    char name[CODEC_USER_MAX + 1];

    for (size_t i = 0; i + 1 < len && found < MAX_MENTIONS; i++) {
        if (text[i] != '@' || (i && (isalnum((unsigned char)text[i - 1]) || text[i - 1] == '_')))
            continue;
        size_t k = 0;
        while (i + 1 + k < len && k < CODEC_USER_MAX &&
               (isalnum((unsigned char)text[i + 1 + k]) || strchr("_.-", text[i + 1 + k])))
            k++;
        /* a trailing dot ends the sentence, not the name */
        while (k && text[i + k] == '.')
            k--;
        if (!k)
            continue;
        memcpy(name, text + i + 1, k);
        name[k] = '\0';
        found++;
        if (strcmp(name, self) != 0 && room_user_joined_ever_locked(rm, name)) {
            pthread_mutex_lock(&b->users_lock);
            n = add_target_locked(b, name, t, n);
            pthread_mutex_unlock(&b->users_lock);
        }
    }
    return n;
}

/* Record each notification in the outbox (the durable copy) and offer it
 * to the notifier's memory queue; neither step blocks the loop. */
static void notify_targets(struct broker *b, const struct note_target *t, size_t n,
                           const struct chat_msg *m, bool dm)
{
    for (size_t i = 0; i < n; i++) {
        struct outbox_write *ow = xcalloc(1, sizeof(*ow) + m->text_len + 1);
        util_random_hex(ow->id, (sizeof(ow->id) - 1) / 2);
        str_lcpy(ow->recipient, t[i].user, sizeof(ow->recipient));
        str_lcpy(ow->email, t[i].email, sizeof(ow->email));
        str_lcpy(ow->from, m->from, sizeof(ow->from));
        str_lcpy(ow->room, m->room, sizeof(ow->room));
        memcpy(ow->text, m->text, m->text_len);
        ow->w.id = ow->id;
        ow->w.recipient = ow->recipient;
        ow->w.email = ow->email;
        ow->w.note_kind = dm ? "dm" : "mention";
        ow->w.from = ow->from;
        ow->w.room = ow->room;
        ow->w.text = ow->text;
        ow->w.text_len = m->text_len;
        ow->w.ts = m->ts;
        ow->w.done = outbox_done;

        struct notification note = {.kind = dm ? NOTE_DM : NOTE_MENTION, .text = m->text,
                                    .ts = m->ts};
        str_lcpy(note.id, ow->id, sizeof(note.id));
        str_lcpy(note.recipient, t[i].user, sizeof(note.recipient));
        str_lcpy(note.email, t[i].email, sizeof(note.email));
        str_lcpy(note.from, m->from, sizeof(note.from));
        str_lcpy(note.room, m->room, sizeof(note.room));

        if (store_outbox_add(b->srv->store, &ow->w) != 0) {
            log_warn("broker", "outbox full: notification for '%s' kept in memory only",
                     t[i].user);
            free(ow);
        }
        /* false: the queue is full; the notifier picks the row up from the
         * outbox later, so nothing is lost */
        notify_enqueue(b->srv->notify, &note);
    }
}

static bool dm_join_ok(struct broker *b, struct client *c, const struct req *r);

static void join_room(struct broker *b, struct client *c, const struct req *r);

static void do_join(struct broker *b, struct client *c, const struct req *r)
{
    if (strncmp(r->room, "dm:", 3) == 0 && !dm_join_ok(b, c, r))
        return;
    join_room(b, c, r);
}

/* {home loop}. The join itself, its DM rules checked. */
static void join_room(struct broker *b, struct client *c, const struct req *r)
{
    const struct config *cfg = b->srv->cfg;
    if (!joined_find(c, r->room) && (long)c->njoined >= cfg->max_rooms_per_conn) {
        reply_error(c, ERR_BAD_REQUEST, "too many rooms joined on this connection", r->ref);
        return;
    }
    struct room *rm = room_for(b, c, r->room, r->ref);
    if (!rm)
        return;
    pthread_mutex_lock(&rm->lock);
    if (rm->state != ROOM_READY) {
        /* shared engine: forgotten since room_for looked (its last
         * reference went meanwhile); look again, which parks us */
        pthread_mutex_unlock(&rm->lock);
        rooms_release(b->rooms, &rm);
        join_room(b, c, r);
        return;
    }
    if ((long)rm->nmembers >= cfg->max_room_members && !room_has_member_locked(rm, c)) {
        pthread_mutex_unlock(&rm->lock);
        rooms_release(b->rooms, &rm);
        reply_error(c, ERR_FORBIDDEN, "the room is full", r->ref);
        return;
    }
    uint64_t hi = rm->seq, a, z;
    uint64_t limit = (uint64_t)r->limit;
    if (r->has_since) {
        a = r->since + 1;
        z = r->since >= hi ? r->since : (hi - r->since > limit ? r->since + limit : hi);
    } else {
        a = hi >= limit ? hi - limit + 1 : 1;
        z = hi;
    }
    if (rm->is_dm && !b->srv->accounts)
        a = z + 1; /* open mode serves no DM history (see do_history) */
    /* refused before anything changes: a join either happens with its
     * history or not at all, and the client simply retries it */
    if (range_needs_read_locked(rm, a, z) && !take_read_slot(b, c, r->ref)) {
        pthread_mutex_unlock(&rm->lock);
        rooms_release(b->rooms, &rm);
        return;
    }
    bool added = room_add_member_locked(rm, c), due = false;
    if (added) {
        due = presence_locked(b, rm, c->user, false);
        c->joined = xrealloc(c->joined, (c->njoined + 1) * sizeof(*c->joined));
        c->joined[c->njoined++].room = rm; /* the membership keeps our reference */
    }
    answer_range_locked(b, c, rm, READ_JOINED, a, z, false, r->ref);
    pthread_mutex_unlock(&rm->lock);
    if (due)
        pres_due_add(c, rm);
    c->current = joined_find(c, r->room);
    if (!added)
        rooms_release(b->rooms, &rm);
}

/* {home loop}. Leave one room: membership, presence, reference. */
static void leave_room(struct broker *b, struct client *c, struct room *rm)
{
    bool due = false;
    char **told = NULL;
    size_t ntold = 0;
    pthread_mutex_lock(&rm->lock);
    /* in a cluster, the last local member's leave takes back from the
     * directory everyone this node said is present here (their deferred
     * leaves included): an empty room owes its own members nothing, but
     * the other nodes are still owed those leaves */
    if (b->cdir && rm->nmembers == 1 && room_has_member_locked(rm, c))
        told = room_announced_locked(rm, &ntold);
    if (room_remove_member_locked(rm, c))
        due = presence_locked(b, rm, c->user, false);
    for (size_t i = 0; i < ntold; i++) {
        cdir_room_leave(b->cdir, rm->name, told[i]);
        free(told[i]);
    }
    free(told);
    pthread_mutex_unlock(&rm->lock);
    if (due)
        pres_due_add(c, rm);
    joined_remove(c, rm);
    if (c->current == rm)
        c->current = c->njoined ? c->joined[c->njoined - 1].room : NULL;
    rooms_release(b->rooms, &rm);
}

/* A cluster's `left`, held (as a placeholder, in order) until the
 * directory has taken the leave in: a `who` or `rooms` asked anywhere after
 * the reply then no longer lists the user. */
struct left_wait {
    struct client *c; /* a reference */
    msg_t *placeholder;
    msg_t *left;
};

/* Thread: the engine's. The directory answered a query queued after the
 * leave on the same Redis connection, so the leave is in. */
static void left_done(void *arg, const char *const *users, size_t n, bool ok)
{
    struct left_wait *lw = arg;
    client_fill(lw->c, lw->placeholder, lw->left);
    msg_unref(&lw->placeholder);
    client_unref(&lw->c);
    free(lw);
}

static void do_leave(struct broker *b, struct client *c, const struct req *r)
{
    struct room *rm = joined_find(c, r->room);
    if (!rm) {
        reply_error(c, ERR_NOT_JOINED, "you have not joined that room", r->ref);
        return;
    }
    leave_room(b, c, rm);
    msg_t *left = codec_left(c->fmt, r->room, r->ref);
    if (!b->cdir) {
        reply(c, left);
        return;
    }
    struct left_wait *lw = xcalloc(1, sizeof(*lw));
    lw->c = client_ref(c);
    lw->placeholder = msg_new_placeholder();
    lw->left = left;
    if (client_push(c, msg_ref(lw->placeholder)) != 0 ||
        cdir_who(b->cdir, r->room, left_done, lw) != 0)
        left_done(lw, NULL, 0, false);
}

/*
 * Publish text to room rm as c. For a DM, peer is the other participant and
 * the message goes to every connection of both users; otherwise to the
 * room's members.
 */
/*
 * A shared engine's send: the engine assigns the seq, stores, records the
 * id and publishes in one step; the event comes back to every node's
 * members (this one's too) through sink_event, and the ack follows the
 * engine's reply (append_done). The frame is encoded once here, around the
 * seq the engine fills in.
 */
static void publish_shared(struct broker *b, struct client *c, const char *room,
                           const struct req *r)
{
    struct pending_write *pw = xcalloc(1, sizeof(*pw));
    pw->b = b;
    pw->a.done = append_done;
    pw->c = client_ref(c);
    pw->fmt = c->fmt;
    str_lcpy(pw->room, room, sizeof(pw->room));
    str_lcpy(pw->id, r->id, sizeof(pw->id));
    str_lcpy(pw->ref, r->ref, sizeof(pw->ref));
    int64_t ts = now_wall_ms();
    pw->h = hist_new(room, 0, c->user, r->text, r->text_len, ts, r->id);
    const struct chat_msg *hm = &pw->h->m;
    size_t seq_at, len;
    pw->frame = codec_message_parts(hm, &seq_at);
    pw->a.frame = (const char *)msg_payload(pw->frame, &len);
    pw->a.frame_len = len;
    pw->a.frame_seq_at = seq_at;
    pw->a.ev = (struct room_event){.kind = EV_MESSAGE, .room = hm->room, .from = hm->from,
                                   .ts = hm->ts, .id = hm->id, .text = hm->text,
                                   .text_len = hm->text_len};
    /* pw is the engine's once queued: keep the message for the
     * notifications below */
    struct hist *keep = hist_ref(pw->h);
    hm = &keep->m;
    if (store_append(b->srv->store, &pw->a) != 0) {
        hist_unref(&keep);
        client_unref(&pw->c);
        hist_unref(&pw->h);
        msg_unref(&pw->frame);
        free(pw);
        reply_error(c, ERR_INTERNAL, "the cluster's storage is unreachable, try again", r->ref);
        return;
    }
    METRIC_INC(&b->srv->metrics, messages_received_total);
    if (!b->srv->notify) {
        hist_unref(&keep);
        return;
    }
    /* e-mail whoever it is for and is offline on every node */
    struct note_target targets[MAX_MENTIONS + 1];
    size_t ntargets = 0;
    char ua[CODEC_USER_MAX + 1], uz[CODEC_USER_MAX + 1];
    bool dm = codec_parse_dm(room, ua, uz);
    if (dm) {
        pthread_mutex_lock(&b->users_lock);
        ntargets = add_target_locked(b, strcmp(ua, c->user) == 0 ? uz : ua, targets, 0);
        pthread_mutex_unlock(&b->users_lock);
    } else if (memchr(r->text, '@', r->text_len)) {
        struct room *rm = rooms_acquire(b->rooms, room, false);
        if (rm) {
            pthread_mutex_lock(&rm->lock);
            ntargets = mention_targets_locked(b, rm, c->user, r->text, r->text_len, targets);
            pthread_mutex_unlock(&rm->lock);
            rooms_release(b->rooms, &rm);
        }
    }
    if (ntargets && b->cdir)
        notify_offline(b, targets, ntargets, keep, dm);
    else if (ntargets)
        notify_targets(b, targets, ntargets, hm, dm);
    hist_unref(&keep);
}

static void publish(struct broker *b, struct client *c, struct room *rm, const char *peer,
                    const struct req *r)
{
    char key[CODEC_ROOMID_MAX + CODEC_USER_MAX + CODEC_ID_MAX + 4];
    uint64_t seq;

    if (r->id[0]) {
        idem_key(key, sizeof(key), rm->name, c->user, r->id);
        if (idem_get(b, key, &seq)) {
            ack_duplicate(b, c, rm->name, seq, r->id, r->ref);
            return;
        }
    }

    struct pending_write *pw = xcalloc(1, sizeof(*pw));
    pw->b = b;
    pw->a.done = append_done;
    pw->c = client_ref(c);
    pw->fmt = c->fmt;
    str_lcpy(pw->room, rm->name, sizeof(pw->room));
    str_lcpy(pw->id, r->id, sizeof(pw->id));
    str_lcpy(pw->ref, r->ref, sizeof(pw->ref));

    pthread_mutex_lock(&rm->lock);
    /* a resend racing its original on another connection of the same user */
    if (r->id[0] && idem_get(b, key, &seq)) {
        pthread_mutex_unlock(&rm->lock);
        client_unref(&pw->c);
        free(pw);
        ack_duplicate(b, c, rm->name, seq, r->id, r->ref);
        return;
    }
    int64_t ts = now_wall_ms();
    pw->seq = rm->seq + 1;
    pw->h = hist_new(rm->name, pw->seq, c->user, r->text, r->text_len, ts, r->id);
    const struct chat_msg *hm = &pw->h->m;
    pw->a.ev = (struct room_event){.kind = EV_MESSAGE, .room = hm->room, .seq = hm->seq,
                                   .from = hm->from, .ts = hm->ts, .id = hm->id,
                                   .text = hm->text, .text_len = hm->text_len};
    struct hist *h = hist_ref(pw->h);
    /* Queue the write first: if storage refuses, nothing was announced and
     * the seq is not consumed. After this the store owns pw. */
    if (store_append(b->srv->store, &pw->a) != 0) {
        pthread_mutex_unlock(&rm->lock);
        hist_unref(&h);
        hist_unref(&pw->h);
        client_unref(&pw->c);
        free(pw);
        reply_error(c, ERR_INTERNAL, "storage is overloaded, try again", r->ref);
        return;
    }
    room_append_locked(rm, h);
    if (r->id[0])
        idem_put(b, key, h->m.seq, ts);

    struct fanout f = {0};
    struct note_target targets[MAX_MENTIONS + 1];
    size_t ntargets = 0;
    if (peer) {
        pthread_mutex_lock(&b->users_lock);
        const char *who[2] = {c->user, peer};
        for (int k = 0; k < 2; k++) {
            struct user *u = user_get_locked(b, who[k], false);
            for (size_t i = 0; u && i < u->n; i++)
                client_push(u->conns[i], fanout_get(&f, u->conns[i]->fmt, enc_message, &h->m));
        }
        if (b->srv->notify)
            ntargets = add_target_locked(b, peer, targets, 0);
        pthread_mutex_unlock(&b->users_lock);
    } else {
        for (size_t i = 0; i < rm->nmembers; i++) {
            struct client *m = rm->members[i];
            client_push(m, fanout_get(&f, m->fmt, enc_message, &h->m));
        }
        if (b->srv->notify && memchr(r->text, '@', r->text_len))
            ntargets = mention_targets_locked(b, rm, c->user, r->text, r->text_len, targets);
    }
    pthread_mutex_unlock(&rm->lock);
    fanout_release(&f);
    if (ntargets)
        notify_targets(b, targets, ntargets, &h->m, peer != NULL);
    hist_unref(&h);
    METRIC_INC(&b->srv->metrics, messages_received_total);
}

/* Who may get a DM. Open mode: a name held by a live connection now (a name
 * there is nobody's, and its DM history is not served, so a DM to a name
 * nobody holds would reach no one). Accounts mode: a name with an account,
 * or one signed in right now with a token minted by the operator's backend. */
static bool user_known(struct broker *b, const char *name)
{
    pthread_mutex_lock(&b->users_lock);
    struct user *u = user_get_locked(b, name, false);
    bool known = u && (u->n || (b->srv->accounts && u->account));
    pthread_mutex_unlock(&b->users_lock);
    return known;
}

/* Whose DM room may be joined. Open mode: as user_known. Accounts mode: any
 * name the server has a record of (an account, a live connection, a users
 * row from a token), so a conversation with a name nobody ever held is never
 * created. */
static bool user_exists(struct broker *b, const char *name)
{
    if (!b->srv->accounts)
        return user_known(b, name);
    pthread_mutex_lock(&b->users_lock);
    bool exists = user_get_locked(b, name, false) != NULL;
    pthread_mutex_unlock(&b->users_lock);
    return exists;
}

static void reply_no_such_user(struct broker *b, struct client *c, const char *ref)
{
    reply_error(c, ERR_NO_SUCH_USER,
                b->srv->accounts ? "no user by that name"
                                 : "no user by that name is online: in open mode DMs go only "
                                   "to users online now",
                ref);
}

/* A DM room may be joined by its two participants only, and only while the
 * other one exists (user_exists): a join must not make the server keep a
 * room for a conversation with a name nobody holds. Checked before the
 * room is looked up or created. False after answering. */
static bool dm_join_ok(struct broker *b, struct client *c, const struct req *r)
{
    char a[CODEC_USER_MAX + 1], z[CODEC_USER_MAX + 1];

    if (!codec_parse_dm(r->room, a, z) || (strcmp(a, c->user) != 0 && strcmp(z, c->user) != 0)) {
        reply_error(c, ERR_FORBIDDEN, "only its two participants may read a DM conversation",
                    r->ref);
        return false;
    }
    const char *peer = strcmp(a, c->user) == 0 ? z : a;
    if (b->srv->accounts ? !user_exists(b, peer) : !peer_reachable(b, c, peer, r->ref)) {
        if (b->srv->accounts)
            reply_no_such_user(b, c, r->ref);
        return false;
    }
    return true;
}

static void do_send(struct broker *b, struct client *c, const struct req *r)
{
    char a[CODEC_USER_MAX + 1], z[CODEC_USER_MAX + 1];
    struct room *rm = joined_find(c, r->room);
    if (!rm) {
        reply_error(c, ERR_NOT_JOINED, "join the room before sending to it", r->ref);
        return;
    }
    if (rm->is_dm && codec_parse_dm(rm->name, a, z)) {
        const char *peer = strcmp(a, c->user) == 0 ? z : a;
        /* open mode: as for dm, only to someone online now */
        if (!b->srv->accounts && !peer_reachable(b, c, peer, r->ref))
            return;
        if (b->shared)
            publish_shared(b, c, rm->name, r);
        else
            publish(b, c, rm, peer, r);
    } else if (b->shared) {
        publish_shared(b, c, rm->name, r);
    } else {
        publish(b, c, rm, NULL, r);
    }
}

static void do_dm(struct broker *b, struct client *c, const struct req *r)
{
    char room[CODEC_ROOMID_MAX + 1];
    if (strcmp(r->to, c->user) == 0) {
        reply_error(c, ERR_BAD_REQUEST, "cannot send a DM to yourself", r->ref);
        return;
    }
    codec_dm_room(c->user, r->to, room);
    if (!user_known(b, r->to) &&
        (b->srv->accounts || !peer_reachable(b, c, r->to, r->ref))) {
        if (b->srv->accounts)
            reply_no_such_user(b, c, r->ref);
        return;
    }
    if (b->shared) {
        publish_shared(b, c, room, r);
        return;
    }
    struct room *rm = room_for(b, c, room, r->ref);
    if (!rm)
        return;
    publish(b, c, rm, r->to, r);
    rooms_release(b->rooms, &rm);
}

/* Shared engine: `history` straight from the log, for a connection that is
 * not in the room (the room may have no members on this node). */
static void history_direct(struct broker *b, struct client *c, const struct req *r)
{
    if (!take_read_slot(b, c, r->ref))
        return;
    struct pending_read *pr = xcalloc(1, sizeof(*pr));
    str_lcpy(pr->r.room, r->room, sizeof(pr->r.room));
    pr->r.mode = r->has_before ? SR_BEFORE : SR_LATEST;
    pr->r.key = r->has_before ? r->before : 0;
    pr->r.limit = r->limit;
    pr->r.done = read_done;
    str_lcpy(pr->r.owner, c->user, sizeof(pr->r.owner));
    pr->kind = READ_HISTORY;
    pr->direct = true;
    pr->slot = true;
    atomic_init(&pr->waits, 1);
    pr->c = client_ref(c);
    pr->fmt = c->fmt;
    str_lcpy(pr->ref, r->ref, sizeof(pr->ref));
    pr->placeholder = msg_new_placeholder();
    if (client_push(c, msg_ref(pr->placeholder)) != 0) {
        read_release(pr);
        return;
    }
    METRIC_INC(&b->srv->metrics, history_reads_total);
    if (store_read_submit(b->srv->store, &pr->r) != 0) {
        read_answer(pr, codec_error(c->fmt, ERR_INTERNAL, "cannot read history, try again",
                                    r->ref, -1));
        read_release(pr);
    }
}

static void do_history(struct broker *b, struct client *c, const struct req *r)
{
    if (strncmp(r->room, "dm:", 3) == 0 && !dm_participant(r->room, c->user)) {
        reply_error(c, ERR_FORBIDDEN, "only its two participants may read a DM conversation",
                    r->ref);
        return;
    }
    if (strncmp(r->room, "dm:", 3) == 0 && !b->srv->accounts) {
        /* whoever holds a name now may not be who held it when the DMs
         * were sent: open mode never serves them back */
        reply_error(c, ERR_FORBIDDEN,
                    "open mode keeps no readable DM history: anyone may take a name nobody "
                    "holds, so DMs are only delivered live",
                    r->ref);
        return;
    }
    if (b->shared && !joined_find(c, r->room)) {
        /* not a member here: read the shared log (no subscription for a
         * room without local members) */
        history_direct(b, c, r);
        return;
    }
    /* a room not in memory may still have history in storage */
    struct room *rm = room_for(b, c, r->room, r->ref);
    if (!rm)
        return;
    uint64_t limit = (uint64_t)r->limit;
    pthread_mutex_lock(&rm->lock);
    uint64_t hi = rm->seq;
    uint64_t end = r->has_before ? (r->before == 0 ? 0 : r->before - 1) : hi;
    if (end > hi)
        end = hi;
    uint64_t a = end >= limit ? end - limit + 1 : 1;
    if (!range_needs_read_locked(rm, a, end) || take_read_slot(b, c, r->ref))
        answer_range_locked(b, c, rm, READ_HISTORY, a, end, end > 0 && a > 1, r->ref);
    pthread_mutex_unlock(&rm->lock);
    rooms_release(b->rooms, &rm);
}

static void do_who(struct broker *b, struct client *c, const struct req *r)
{
    const char *names[MAX_LIST];
    size_t n = 0;

    if (strncmp(r->room, "dm:", 3) == 0 && !dm_participant(r->room, c->user)) {
        reply_error(c, ERR_FORBIDDEN, "only its two participants may see a DM conversation",
                    r->ref);
        return;
    }
    if (b->cdir) {
        struct list_wait *lw = list_wait_new(c, r->room, r->ref);
        if (cdir_who(b->cdir, r->room, who_done, lw) != 0)
            who_done(lw, NULL, 0, false);
        return;
    }
    struct room *rm = rooms_acquire(b->rooms, r->room, false);
    if (rm) {
        pthread_mutex_lock(&rm->lock);
        n = room_member_names_locked(rm, names, MAX_LIST);
        reply(c, codec_members(c->fmt, r->room, names, n, r->ref));
        pthread_mutex_unlock(&rm->lock);
        rooms_release(b->rooms, &rm);
    } else {
        reply(c, codec_members(c->fmt, r->room, names, 0, r->ref));
    }
}

static void do_rooms(struct broker *b, struct client *c, const struct req *r)
{
    if (b->cdir) {
        struct list_wait *lw = list_wait_new(c, NULL, r->ref);
        if (cdir_rooms(b->cdir, rooms_done, lw) != 0)
            rooms_done(lw, NULL, 0, false);
        return;
    }
    struct room_snapshot *snap = xmalloc(MAX_LIST * sizeof(*snap));
    struct room_info *info = xmalloc(MAX_LIST * sizeof(*info));
    size_t n = rooms_list(b->rooms, snap, MAX_LIST);
    for (size_t i = 0; i < n; i++) {
        info[i].name = snap[i].name;
        info[i].members = snap[i].members;
        info[i].seq = snap[i].seq;
    }
    reply(c, codec_rooms(c->fmt, info, n, r->ref));
    free(info);
    free(snap);
}

/* Tell rm's members but user's own connections that user types. */
static void typing_local(struct room *rm, const char *user)
{
    struct fanout f = {0};
    struct presence_arg a = {rm->name, user, true};
    pthread_mutex_lock(&rm->lock);
    for (size_t i = 0; i < rm->nmembers; i++) {
        struct client *m = rm->members[i];
        if (strcmp(m->user, user) != 0)
            client_push(m, fanout_get(&f, m->fmt, enc_typing, &a));
    }
    pthread_mutex_unlock(&rm->lock);
    fanout_release(&f);
}

static void do_typing(struct broker *b, struct client *c, const struct req *r)
{
    struct room *rm = joined_find(c, r->room);
    if (!rm) {
        reply_error(c, ERR_NOT_JOINED, "join the room first", r->ref);
        return;
    }
    if (b->shared) {
        /* to every node holding the room; this one too (sink_ephemeral) */
        store_ephemeral(b->srv->store, rm->name, 't', c->user);
        return;
    }
    typing_local(rm, c->user);
}

/* Token bucket per user: rl is the messages bucket (send, dm, typing) or
 * the joins bucket (join, leave). False after answering rate_limited (or
 * closing 4029 for sustained abuse). */
static bool rate_ok(struct broker *b, struct client *c, const struct req *r, ratelimit_t *rl)
{
    int64_t retry_ms;
    unsigned strikes;
    char msg[96];

    int64_t now = now_mono_ns();
    /* reclaim buckets idle for 10 minutes (an hour for new rooms: their
     * bucket takes that long to refill), a sweep every 64k checks: no
     * timer thread, and the sweep is memory-only */
    if ((atomic_fetch_add_explicit(&b->takes, 1, memory_order_relaxed) & 0xffff) == 0xffff) {
        ratelimit_sweep(b->srv->ratelimit, now, (int64_t)600 * 1000000000);
        ratelimit_sweep(b->joins, now, (int64_t)600 * 1000000000);
        ratelimit_sweep(b->creates, now, (int64_t)3600 * 1000000000);
    }
    if (ratelimit_take(rl, c->user, now, &retry_ms, &strikes))
        return true;
    METRIC_INC(&b->srv->metrics, rate_limited_total);
    if ((long)strikes >= b->srv->cfg->abuse_strikes) {
        /* ignore what the flood still sends while the close goes out */
        c->discard = true;
        client_kill(c, 4029, "rate limit abuse");
        return false;
    }
    if (rl == b->joins)
        snprintf(msg, sizeof(msg), "slow down: %g joins and leaves per second at most",
                 b->srv->cfg->join_rate);
    else
        snprintf(msg, sizeof(msg), "slow down: %.0f messages per second at most",
                 b->srv->cfg->rate);
    METRIC_INC(&b->srv->metrics, protocol_errors_total);
    reply(c, codec_error(c->fmt, ERR_RATE_LIMITED, msg, r->ref, retry_ms));
    return false;
}

/* counted: a request replayed after its room loaded, already rate-checked */
static void handle(struct broker *b, struct client *c, const struct req *r, bool counted)
{
    if (!c->authed && r->type != REQ_HELLO && r->type != REQ_PING && r->type != REQ_HELP &&
        r->type != REQ_QUIT) {
        reply_error(c, ERR_AUTH_REQUIRED, "say hello first", r->ref);
        return;
    }
    if (!counted && (r->type == REQ_SEND || r->type == REQ_DM || r->type == REQ_TYPING) &&
        !rate_ok(b, c, r, b->srv->ratelimit))
        return;
    /* joins and leaves make presence events for everyone in the room */
    if (!counted && (r->type == REQ_JOIN || r->type == REQ_LEAVE) && !rate_ok(b, c, r, b->joins))
        return;
    switch (r->type) {
    case REQ_HELLO:
        do_hello(b, c, r, false);
        break;
    case REQ_JOIN:
        do_join(b, c, r);
        break;
    case REQ_LEAVE:
        do_leave(b, c, r);
        break;
    case REQ_SEND:
        do_send(b, c, r);
        break;
    case REQ_DM:
        do_dm(b, c, r);
        break;
    case REQ_HISTORY:
        do_history(b, c, r);
        break;
    case REQ_WHO:
        do_who(b, c, r);
        break;
    case REQ_ROOMS:
        do_rooms(b, c, r);
        break;
    case REQ_TYPING:
        do_typing(b, c, r);
        break;
    case REQ_PING:
        reply(c, codec_pong(c->fmt, r->ref));
        break;
    case REQ_HELP:
        reply(c, codec_help());
        break;
    case REQ_QUIT:
        client_kill(c, 1000, "bye");
        break;
    }
}

/* ------------------------------------------------------------- entry points */

static void handle_one(struct broker *b, struct client *c, const char *buf, size_t len,
                       bool counted)
{
    struct req r;
    char msg[160];
    enum err_code e;

    memset(&r, 0, sizeof(r));
    /* every request frame of a signed-in user counts, malformed or not
     * (once: not again when it is replayed after a room loaded) */
    if (c->authed && !counted)
        counters_inc(b->srv->counters, c->user);
    if (c->fmt == FMT_TEXT)
        e = codec_decode_text(buf, len, c->current ? c->current->name : "", &b->lim, &r, msg,
                              sizeof(msg));
    else
        e = codec_decode_json(buf, len, &b->lim, &r, msg, sizeof(msg));
    if (!counted)
        METRIC_INC(&b->srv->metrics, requests_total);
    if (e != ERR_NONE)
        reply_error(c, e, msg, r.ref);
    else
        handle(b, c, &r, counted);
    req_release(&r);
}

/* {home loop}, c not parked. counted: the first request was handled before
 * (it parked), do not count or rate-check it again. A request that parks c
 * keeps itself and the rest of the frame in the park. */
static void process_frame(struct broker *b, struct client *c, const char *buf, size_t len,
                          bool counted)
{
    if (c->fmt == FMT_JSON) {
        handle_one(b, c, buf, len, counted);
        if (c->park)
            park_append(b, c, buf, len, true, false);
        return;
    }
    /* text mode: one command per line; a frame may carry several */
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        if (n && p[n - 1] == '\r')
            n--;
        if (n) {
            handle_one(b, c, p, n, counted);
            counted = false;
            if (c->park) {
                park_append(b, c, p, (size_t)(end - p), true, false);
                return;
            }
        }
        p = nl ? nl + 1 : end;
    }
}

void broker_frame(struct broker *b, struct client *c, const char *buf, size_t len)
{
    if (c->park) {
        /* waiting for a room: keep it, in order (the socket is not read
         * meanwhile, so this is only what lws had already taken in) */
        park_append(b, c, buf, len, false, false);
        return;
    }
    process_frame(b, c, buf, len, false);
}

/* {home loop}. The room= of the query string: a join. */
static void url_join(struct broker *b, struct client *c, const char *room, bool counted)
{
    struct req r;
    memset(&r, 0, sizeof(r));
    r.type = REQ_JOIN;
    str_lcpy(r.room, room, sizeof(r.room));
    r.limit = CODEC_LIMIT_DEFAULT;
    if (!codec_valid_room(room)) {
        /* (checked here for a join that waited behind a cluster's hello) */
        reply_error(c, ERR_BAD_REQUEST, "invalid room name in the query string", "");
        return;
    }
    if (!c->authed) {
        /* its hello was refused while it waited (a cluster's name check) */
        reply_error(c, ERR_AUTH_REQUIRED, "say hello first (room= needs user=)", "");
        return;
    }
    if (!counted && !rate_ok(b, c, &r, b->joins))
        return;
    do_join(b, c, &r);
    if (c->park)
        park_append(b, c, room, strlen(room), true, true);
}

void broker_connected(struct broker *b, struct client *c, const char *user, const char *token,
                      const char *room)
{
    struct req r;
    char msg[160];

    if (!user[0] && !token[0] && !room[0])
        return;
    if (user[0] || token[0]) {
        memset(&r, 0, sizeof(r));
        r.type = REQ_HELLO;
        if (user[0] && !codec_valid_user(user)) {
            reply_error(c, ERR_BAD_REQUEST, "invalid user name in the query string", "");
            return;
        }
        str_lcpy(r.user, user, sizeof(r.user));
        if (token[0])
            r.token = (char *)token;
        do_hello(b, c, &r, true);
        if (c->park && room[0] && strlen(room) <= CODEC_ROOMID_MAX) {
            /* the hello waits for the cluster: so does the join */
            park_append(b, c, room, strlen(room), false, true);
            return;
        }
        if (!c->authed)
            return;
    }
    if (room[0]) {
        memset(&r, 0, sizeof(r));
        if (!codec_valid_room(room)) {
            snprintf(msg, sizeof(msg), "invalid room name in the query string");
            reply_error(c, ERR_BAD_REQUEST, msg, "");
            return;
        }
        if (!c->authed) {
            reply_error(c, ERR_AUTH_REQUIRED, "say hello first (room= needs user=)", "");
            return;
        }
        url_join(b, c, room, false);
    }
}

void broker_disconnected(struct broker *b, struct client *c)
{
    park_free(b, c->park);
    c->park = NULL;
    while (c->njoined)
        leave_room(b, c, c->joined[c->njoined - 1].room);
    /* nobody will tick for this connection again: what its rooms owe the
     * others is announced now */
    pres_due_flush(b, c, true);
    if (c->authed) {
        char name[CODEC_USER_MAX + 1];
        str_lcpy(name, c->user, sizeof(name));
        counters_detach(b->srv->counters, name);
        pthread_mutex_lock(&b->users_lock);
        struct user *u = user_get_locked(b, name, false);
        for (size_t i = 0; u && i < u->n; i++) {
            if (u->conns[i] == c) {
                u->n--;
                u->conns[i] = u->conns[u->n];
                u->iat_ms[i] = u->iat_ms[u->n];
                client_unref(&c);
                if (b->shared && !name_held_locked(b, name, u)) {
                    store_user_unsubscribe(b->srv->store, name);
                    if (b->cdir)
                        cdir_user_del(b->cdir, name);
                }
                break;
            }
        }
        /* open mode: a name nobody holds is nobody's, forget it */
        if (u && !u->n && !u->account && !b->srv->accounts)
            user_free(strmap_del(b->users, name));
        pthread_mutex_unlock(&b->users_lock);
    }
}

size_t broker_active_rooms(struct broker *b)
{
    return rooms_active(b->rooms);
}

void broker_room_stats(struct broker *b, struct broker_room_stats *out)
{
    struct rooms_stats st;
    rooms_stats(b->rooms, &st);
    out->active = st.active;
    out->held = st.held;
    out->idle = st.idle;
    out->reclaimed = st.reclaimed;
}

/* ------------------------------------------------------------- lifecycle */

static void load_id(void *arg, const char *room, const char *from, const char *id, uint64_t seq,
                    int64_t ts)
{
    struct broker *b = arg;
    char key[CODEC_ROOMID_MAX + CODEC_USER_MAX + CODEC_ID_MAX + 4];
    idem_key(key, sizeof(key), room, from, id);
    idem_put(b, key, seq, ts);
}

/* ------------------------------------------------------- shared engine */

/*
 * Thread: the engine's. The next event of a room this node subscribed to
 * (user NULL), in seq order and once (the engine sees to that), or a DM on
 * the channel of a user with connections here. The JSON frame is the one
 * the publishing node encoded; the text one is encoded here once.
 */
static void sink_event(void *arg, const char *user, const struct room_event *ev, msg_t *json)
{
    struct broker *b = arg;
    /* nothing produces another kind yet, and it is not a message (its json
     * may be NULL): protocol v1.1 fans out and windows its kinds here.
     * Until then the next message looks like a jump and the window starts
     * again there (room_append_locked); replays read the store below it. */
    if (ev->kind != EV_MESSAGE)
        return;
    struct fanout f = {.json = msg_ref(json)};
    struct hist *h =
        hist_new(ev->room, ev->seq, ev->from, ev->text, ev->text_len, ev->ts, ev->id);

    if (user) {
        pthread_mutex_lock(&b->users_lock);
        struct user *u = user_get_locked(b, user, false);
        for (size_t i = 0; u && i < u->n; i++)
            client_push(u->conns[i], fanout_get(&f, u->conns[i]->fmt, enc_message, &h->m));
        pthread_mutex_unlock(&b->users_lock);
    } else {
        struct room *rm = rooms_acquire(b->rooms, ev->room, false);
        if (rm) {
            pthread_mutex_lock(&rm->lock);
            /* not ready: forgotten, or a subscription that has not told its
             * seq yet (the engine tells it first, so: a stale event). A jump
             * is seqs the log lost (trimmed while this node was cut off):
             * the engine has counted them; the room goes on from here. */
            if (rm->state == ROOM_READY && ev->seq > rm->seq) {
                room_append_locked(rm, h);
                /* a DM room's members are its two users' connections, which
                 * their user channels reach */
                for (size_t i = 0; !rm->is_dm && i < rm->nmembers; i++) {
                    struct client *m = rm->members[i];
                    client_push(m, fanout_get(&f, m->fmt, enc_message, &h->m));
                }
                if (rm->acks)
                    acks_release_locked(rm, false);
            }
            pthread_mutex_unlock(&rm->lock);
            rooms_release(b->rooms, &rm);
        }
    }
    hist_unref(&h);
    fanout_release(&f);
}

/* Thread: the engine's. Typing ('t') or cluster-wide presence ('p') in a
 * room, from any node; told to this node's members but user's own. */
static void sink_ephemeral(void *arg, const char *room, char kind, const char *user, bool join)
{
    struct broker *b = arg;
    struct room *rm = rooms_acquire(b->rooms, room, false);
    if (!rm)
        return;
    if (kind == 't') {
        typing_local(rm, user);
    } else if (kind == 'p') {
        pthread_mutex_lock(&rm->lock);
        announce_locked(rm, user, join);
        pthread_mutex_unlock(&rm->lock);
    }
    rooms_release(b->rooms, &rm);
}

/* The registry drops a shared room nobody here references: stop its
 * events (rooms_forget_idle's rules: no calls back into the registry). */
static void forget_room(void *arg, struct room *rm)
{
    struct broker *b = arg;
    store_unsubscribe(b->srv->store, rm->name);
    acks_release_locked(rm, true); /* their senders left: nobody waits to see */
}

struct broker *broker_new(struct server *srv, char *err, size_t errsz)
{
    struct broker *b = xcalloc(1, sizeof(*b));
    b->srv = srv;
    b->rooms = rooms_new(HISTORY_WINDOW, (size_t)srv->cfg->room_cache);
    b->joins = ratelimit_new(srv->cfg->join_rate, srv->cfg->join_burst);
    b->creates = ratelimit_new(srv->cfg->max_new_rooms / 3600.0, srv->cfg->max_new_rooms);
    b->lim.max_text = (size_t)srv->cfg->max_text;
    b->idem_ttl_ms = srv->cfg->idempotency_ttl * 1000;
    pthread_mutex_init(&b->users_lock, NULL);
    pthread_mutex_init(&b->idem_lock, NULL);
    b->users = strmap_new();
    b->hellos = strmap_new();
    b->idem = strmap_new();

    /* single-threaded here: the I/O threads have not started. Rooms are
     * not loaded: each is read from storage when first needed (room_for). */
    if (!b->joins || !b->creates) {
        snprintf(err, errsz, "invalid --join-rate, --join-burst or --max-new-rooms");
        broker_free(b);
        return NULL;
    }
    if (store_shared(srv->store)) {
        b->shared = true;
        b->cdir = srv->cdir;
        struct store_sink sk = {
            .event = sink_event, .ephemeral = sink_ephemeral, .arg = b};
        store_set_sink(srv->store, &sk);
        rooms_forget_idle(b->rooms, forget_room, b);
    }
    if (store_load_users(srv->store, 0, apply_user, b) != 0 ||
        store_load_ids(srv->store, now_wall_ms() - b->idem_ttl_ms, load_id, b) != 0) {
        snprintf(err, errsz, "cannot load users and recent ids from storage");
        broker_free(b);
        return NULL;
    }
    return b;
}

static void free_ptr(void *p)
{
    free(p);
}

void broker_free(struct broker *b)
{
    if (!b)
        return;
    rooms_free(b->rooms);
    ratelimit_free(b->joins);
    ratelimit_free(b->creates);
    strmap_free(b->users, user_free);
    strmap_free(b->hellos, NULL);
    strmap_free(b->idem, free_ptr);
    pthread_mutex_destroy(&b->users_lock);
    pthread_mutex_destroy(&b->idem_lock);
    free(b);
}
