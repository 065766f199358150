/*
 * store_redis — see store_redis.h.
 *
 * State: `rooms` maps a subscribed room's name to its delivery state. It is
 * created and removed by store_subscribe/store_unsubscribe (any thread) and
 * read and advanced by the rds thread, all under `lock`, which is never held
 * across a call out (sink, rds, done): the rds thread collects what to
 * deliver under the lock and delivers after. Only the rds thread delivers,
 * so a room's events reach the sink in the order it decided them. Replies
 * and confirmations find their room by name and generation, so one that
 * arrives after an unsubscribe (and maybe a new subscribe) is ignored.
 */
#include "store_redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acctrds.h"
#include "codec.h"
#include "log.h"
#include "msg.h"
#include "rds.h"
#include "srpayload.h"
#include "store_engine.h"
#include "strmap.h"
#include "util.h"

/* Messages held for a room while its gap is filled; beyond this the held
 * ones are dropped and read back from the log instead (they are there).
 * Bounded in count and in bytes, per room and over all rooms: after a
 * reconnect every room of a shard fills at once. */
#define HOLD_MAX 4096
#define HOLD_ROOM_BYTES (4u << 20)
#define HOLD_TOTAL_BYTES (64u << 20)
/* DM rooms whose last seq the node tracks (per user channel): past this the
 * idle ones are forgotten (each starts counting again from its next DM), so
 * names that DM a user here cannot grow the table without bound. */
#define DMS_MAX 65536
/* Entries per XRANGE of a fill that runs to the end of the log. */
#define FILL_BATCH 1000

/* KEYS: seq, log[, id record]. ARGV: from, ts, id, text, frame before the
 * seq, frame after it, history max, id ttl, the event's header (below),
 * the floor, kind, body, then the channels to publish on. Returns {1, seq}
 * for a new event, {0, seq} for a known id.
 *
 * The stream entry has fields f (from), t (ts), i (id), x (text), and k
 * (kind) only when the kind is not 0 (a message), b (body) only when there
 * is one: a message's entry is what it was before kinds existed.
 *
 * The floor is the last seq this node delivered in the room: a seq key
 * below it means Redis lost the room's data (restarted without its AOF),
 * and the room goes on above it rather than reuse seqs that clients and
 * nodes already have (each node would drop the new events as repeats).
 *
 * What is published is "m<seq>\n<header><text><body><frame>": the header is
 * "<ts> <kind> <room len> <from len> <id len> <text len> <body len>\n<room>
 * <from><id>" (no line break after <room>), so a receiving node takes the
 * event's fields by length and the frame as it is, without parsing JSON
 * (that parse was most of a node's engine thread). */
static const char APPEND_LUA[] =
    "if #KEYS == 3 then\n"
    "  local dup = redis.call('GET', KEYS[3])\n"
    "  if dup then return {0, tonumber(dup)} end\n"
    "end\n"
    "local seq = redis.call('INCR', KEYS[1])\n"
    "local floor = tonumber(ARGV[10])\n"
    "if seq <= floor then seq = floor + 1; redis.call('SET', KEYS[1], seq) end\n"
    "if ARGV[11] == '0' and ARGV[12] == '' then\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[7], seq .. '-0', 'f', ARGV[1], 't', ARGV[2],\n"
    "             'i', ARGV[3], 'x', ARGV[4])\n"
    "else\n"
    "  local e = {'f', ARGV[1], 't', ARGV[2], 'i', ARGV[3], 'x', ARGV[4]}\n"
    "  if ARGV[11] ~= '0' then e[#e + 1] = 'k'; e[#e + 1] = ARGV[11] end\n"
    "  if ARGV[12] ~= '' then e[#e + 1] = 'b'; e[#e + 1] = ARGV[12] end\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[7], seq .. '-0', unpack(e))\n"
    "end\n"
    "if #KEYS == 3 then redis.call('SET', KEYS[3], seq, 'EX', ARGV[8]) end\n"
    "local m = 'm' .. seq .. '\\n' .. ARGV[9] .. ARGV[4] .. ARGV[12] .. ARGV[5] .. seq ..\n"
    "  ARGV[6]\n"
    "for i = 13, #ARGV do redis.call('PUBLISH', ARGV[i], m) end\n"
    "return {1, seq}\n";

/* KEYS: seq. ARGV: a floor, as in APPEND_LUA. Raises the seq to the floor;
 * returns 1 if it was below (the room's data was lost), else 0. Sent for
 * every room of a shard when the node connects to it again, so rooms that
 * nobody here sends to do not go back either. */
static const char SEED_LUA[] =
    "local c = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if c < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]); return 1 end\n"
    "return 0\n";

/* One event on its way to the sink: the event (strings in buf) and its
 * JSON frame. */
struct item {
    struct item *next;
    struct room_event ev;
    msg_t *json;
    char *user;   /* a user channel's user, or NULL */
    size_t bytes; /* what it holds, counted while it is held */
    char buf[];
};

enum sroom_state { SR_OPENING, SR_READY };

struct sroom {
    char name[CODEC_ROOMID_MAX + 1];
    /* a DM room as one user's channel brings it (in `dms`, keyed
     * "<user>\x1f<room>"), or "" for a subscribed room (in `rooms`) */
    char user[CODEC_USER_MAX + 1];
    uint64_t gen;
    size_t shard;
    enum sroom_state st;
    uint64_t last;             /* last seq handed to the sink */
    bool filling;              /* a gap fill is in flight */
    struct item *held, **held_tail; /* arrived while opening or filling, in arrival order */
    size_t nheld, held_bytes;
    bool dropped;              /* some arrived beyond HOLD_MAX: read to the end of the log
                                  once what is held is delivered */
    struct store_sub *sub;     /* until its done() */
};

struct sr {
    struct store_base base;
    store_t *local;
    acctrds_t *acct; /* accounts, on the first Redis of the list */
    rds_t *rds;
    int script, seed_script;
    char history_max[24];
    char id_ttl[24];
    struct store_sink sink;

    pthread_mutex_t lock;
    strmap_t *rooms;    /* {lock} name -> struct sroom */
    uint64_t gen;       /* {lock} */
    strmap_t *users;    /* {lock} user -> (void *)1: user channels subscribed */
    /* {lock} "<user>\x1f<room>" -> struct sroom: the last seq of each DM room
     * delivered on a subscribed user's channel, so DMs get the same
     * once-in-order-no-gap treatment as rooms; dropped with the channel */
    strmap_t *dms;
    size_t held_bytes;  /* {lock} over every room's held items */

    _Atomic uint64_t gap_fills, filled, dropped_dups, lost, reseeded;
};

#define SR(s) ((struct sr *)(s))

/* ------------------------------------------------------------ items */

/* An item with copies of the fields; body_len 0: none (ev.body NULL). */
static struct item *item_new(const char *room, uint64_t seq, const char *from, size_t from_len,
                             const char *id, size_t id_len, const char *text, size_t text_len,
                             int64_t ts, int kind, const char *body, size_t body_len)
{
    size_t rl = strlen(room);
    size_t sz = sizeof(struct item) + rl + from_len + id_len + text_len + body_len + 5;
    struct item *it = xcalloc(1, sz);
    it->bytes = sz;
    char *p = it->buf;
    memcpy(p, room, rl);
    it->ev.room = p;
    p += rl + 1;
    memcpy(p, from, from_len);
    it->ev.from = p;
    p += from_len + 1;
    memcpy(p, id, id_len);
    it->ev.id = p;
    p += id_len + 1;
    memcpy(p, text, text_len);
    it->ev.text = p;
    it->ev.text_len = text_len;
    p += text_len + 1;
    if (body_len)
        it->ev.body = memcpy(p, body, body_len);
    it->ev.body_len = body_len;
    it->ev.kind = (enum room_event_kind)kind;
    it->ev.seq = seq;
    it->ev.ts = ts;
    return it;
}

static void item_free(struct item *it)
{
    if (!it)
        return;
    msg_unref(&it->json);
    free(it->user);
    free(it);
}

static void items_free(struct item *it)
{
    while (it) {
        struct item *n = it->next;
        item_free(it);
        it = n;
    }
}

/* An event from a pub/sub payload (see APPEND_LUA and srpayload.h): its
 * fields are taken by length for the room's window and the frame is used
 * as it is (the publisher encoded it once). NULL if malformed. */
static struct item *item_from_payload(const char *payload, size_t len)
{
    struct srpayload pl;
    if (!srpayload_parse(payload, len, &pl))
        return NULL;
    char rb[CODEC_ROOMID_MAX + 1];
    memcpy(rb, pl.room, pl.room_len);
    rb[pl.room_len] = '\0';
    struct item *it = item_new(rb, pl.seq, pl.from, pl.from_len, pl.id, pl.id_len, pl.text,
                               pl.text_len, pl.ts, pl.kind, pl.body, pl.body_len);
    it->json = msg_new_text(pl.frame, pl.frame_len);
    it->bytes += pl.frame_len;
    return it;
}

static const char *field(const redisReply *kv, const char *name, size_t *len)
{
    for (size_t i = 0; i + 1 < kv->elements; i += 2) {
        const redisReply *k = kv->element[i], *v = kv->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && k->len == 1 && k->str[0] == name[0] &&
            v->type == REDIS_REPLY_STRING) {
            *len = (size_t)v->len;
            return v->str;
        }
    }
    *len = 0;
    return "";
}

/* The seq of a stream entry ID "<seq>-0"; 0 if malformed. */
static uint64_t entry_seq(const redisReply *id)
{
    if (id->type != REDIS_REPLY_STRING)
        return 0;
    return strtoull(id->str, NULL, 10);
}

/* A stream entry's kind field ("" when missing: a message); -1 if not a
 * number in 0..STORE_KIND_MAX. */
static int entry_kind(const char *k, size_t kl)
{
    int v = 0;
    if (kl > 3)
        return -1;
    for (size_t i = 0; i < kl; i++) {
        if (k[i] < '0' || k[i] > '9')
            return -1;
        v = v * 10 + (k[i] - '0');
    }
    return v <= STORE_KIND_MAX ? v : -1;
}

/* An event from a stream entry [id, [f, v, ...]] (only fills and history
 * take this path). frame: encode its JSON frame here, which the codec can
 * only for a message; another kind's json stays NULL. NULL if malformed. */
static struct item *item_from_entry(const char *room, const redisReply *e, bool frame)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
        e->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    uint64_t seq = entry_seq(e->element[0]);
    if (!seq)
        return NULL;
    const redisReply *kv = e->element[1];
    size_t fl, il, xl, tl;
    const char *f = field(kv, "f", &fl), *i = field(kv, "i", &il), *x = field(kv, "x", &xl);
    const char *t = field(kv, "t", &tl);
    size_t kl, bl;
    const char *k = field(kv, "k", &kl), *b = field(kv, "b", &bl);
    int kind = entry_kind(k, kl);
    if (kind < 0 || bl > STORE_BODY_MAX)
        return NULL;
    char tsb[24];
    snprintf(tsb, sizeof(tsb), "%.*s", (int)(tl < 23 ? tl : 23), t);
    struct item *it = item_new(room, seq, f, fl, i, il, x, xl, strtoll(tsb, NULL, 10), kind,
                               b, bl);
    if (frame && kind == EV_MESSAGE) {
        struct chat_msg m = {.room = it->ev.room, .seq = seq, .from = it->ev.from,
                             .text = it->ev.text, .text_len = it->ev.text_len, .ts = it->ev.ts,
                             .id = it->ev.id};
        it->json = codec_message(FMT_JSON, &m);
    }
    return it;
}

/* ------------------------------------------------------------ delivery */

static void deliver(struct sr *s, struct item *it)
{
    while (it) {
        struct item *n = it->next;
        if (s->sink.event)
            s->sink.event(s->sink.arg, it->user, &it->ev, it->json);
        item_free(it);
        it = n;
    }
}

static void fill_start_locked(struct sr *s, struct sroom *r, uint64_t to);

/* {lock}. Hold it at the end of r's held items, if the bounds allow:
 * false (and it is freed) if not. */
static bool hold_locked(struct sr *s, struct sroom *r, struct item *it)
{
    if (r->nheld >= HOLD_MAX || r->held_bytes + it->bytes > HOLD_ROOM_BYTES ||
        s->held_bytes + it->bytes > HOLD_TOTAL_BYTES) {
        item_free(it);
        return false;
    }
    it->next = NULL;
    *r->held_tail = it;
    r->held_tail = &it->next;
    r->nheld++;
    r->held_bytes += it->bytes;
    s->held_bytes += it->bytes;
    return true;
}

/* {lock}. The first held item, taken off the list. */
static struct item *unhold_locked(struct sr *s, struct sroom *r)
{
    struct item *it = r->held;
    r->held = it->next;
    if (!r->held)
        r->held_tail = &r->held;
    r->nheld--;
    r->held_bytes -= it->bytes;
    s->held_bytes -= it->bytes;
    return it;
}

/* {lock}. Free everything r holds. */
static void drop_held_locked(struct sr *s, struct sroom *r)
{
    items_free(r->held);
    r->held = NULL;
    r->held_tail = &r->held;
    r->nheld = 0;
    s->held_bytes -= r->held_bytes;
    r->held_bytes = 0;
}

/* {lock}. Take it in order: append what is next to *out, drop what was
 * delivered, hold what is early (and start a fill for the gap). */
static void offer_locked(struct sr *s, struct sroom *r, struct item *it, struct item ***out)
{
    if (r->st != SR_READY || r->filling) {
        /* beyond the bounds the log has them: drop and read back later */
        if (!hold_locked(s, r, it))
            r->dropped = true;
        return;
    }
    if (it->ev.seq <= r->last) {
        atomic_fetch_add(&s->dropped_dups, 1);
        item_free(it);
        return;
    }
    if (it->ev.seq == r->last + 1) {
        r->last = it->ev.seq;
        it->next = NULL;
        **out = it;
        *out = &it->next;
        return;
    }
    /* a jump: read what is missing first, hold this (or read it back too) */
    uint64_t to = it->ev.seq - 1;
    if (!hold_locked(s, r, it))
        r->dropped = true;
    fill_start_locked(s, r, to);
}

/* {lock}. Offer what was held, in arrival order, until a fill starts. */
static void release_held_locked(struct sr *s, struct sroom *r, struct item ***out)
{
    while (r->held && r->st == SR_READY && !r->filling) {
        struct item *it = unhold_locked(s, r);
        offer_locked(s, r, it, out);
    }
    /* nothing newer may arrive to reveal the gap the drops left */
    if (!r->held && r->dropped && r->st == SR_READY && !r->filling)
        fill_start_locked(s, r, UINT64_MAX);
}

struct fill {
    struct sr *s;
    char room[CODEC_ROOMID_MAX + 1];
    char key[CODEC_USER_MAX + CODEC_ROOMID_MAX + 2]; /* its state's key in rooms or dms */
    bool dm;
    uint64_t gen;
    uint64_t to; /* last seq wanted; UINT64_MAX: to the end */
};

static void fill_done(void *arg, const redisReply *rep)
{
    struct fill *f = arg;
    struct sr *s = f->s;
    struct item *head = NULL, **out = &head;

    pthread_mutex_lock(&s->lock);
    struct sroom *r = strmap_get(f->dm ? s->dms : s->rooms, f->key);
    if (!r || r->gen != f->gen)
        goto out;
    r->filling = false;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        /* the shard went away: its reconnect starts a new fill */
        goto out;
    }
    for (size_t i = 0; i < rep->elements; i++) {
        struct item *it = item_from_entry(r->name, rep->element[i], true);
        if (!it || it->ev.seq <= r->last) {
            item_free(it);
            continue;
        }
        if (it->ev.seq > r->last + 1) {
            /* trimmed past --history-max (or lost by Redis): nobody can
             * have them; say so once and go on from what exists */
            atomic_fetch_add(&s->lost, it->ev.seq - r->last - 1);
            log_warn("engine", "room '%s': seqs %" PRIu64 "..%" PRIu64 " are not in the log",
                     r->name, r->last + 1, it->ev.seq - 1);
        }
        r->last = it->ev.seq;
        atomic_fetch_add(&s->filled, 1);
        if (r->user[0])
            it->user = xstrdup(r->user);
        *out = it;
        out = &it->next;
    }
    if (f->to == UINT64_MAX && rep->elements >= FILL_BATCH)
        fill_start_locked(s, r, UINT64_MAX);
    else if (f->to != UINT64_MAX && r->last < f->to && rep->elements >= FILL_BATCH)
        fill_start_locked(s, r, f->to);
    else if (f->to != UINT64_MAX && r->last < f->to) {
        /* the script appends before it publishes, so what the log lacks
         * now it will never have: go on past it rather than ask again */
        atomic_fetch_add(&s->lost, f->to - r->last);
        log_warn("engine", "room '%s': seqs %" PRIu64 "..%" PRIu64 " are not in the log",
                 r->name, r->last + 1, f->to);
        r->last = f->to;
    }
    release_held_locked(s, r, &out);
out:
    pthread_mutex_unlock(&s->lock);
    free(f);
    deliver(s, head);
}

static void fill_start_locked(struct sr *s, struct sroom *r, uint64_t to)
{
    char key[CODEC_ROOMID_MAX + 16], from[24], end[24];
    snprintf(key, sizeof(key), "r:{%s}:log", r->name);
    snprintf(from, sizeof(from), "%" PRIu64 "-0", r->last + 1);
    if (to == UINT64_MAX)
        snprintf(end, sizeof(end), "+");
    else
        snprintf(end, sizeof(end), "%" PRIu64 "-0", to);
    const char *argv[] = {"XRANGE", key, from, end, "COUNT", "1000"};
    struct fill *f = xcalloc(1, sizeof(*f));
    f->s = s;
    str_lcpy(f->room, r->name, sizeof(f->room));
    f->dm = r->user[0] != '\0';
    if (f->dm)
        snprintf(f->key, sizeof(f->key), "%s\x1f%s", r->user, r->name);
    else
        str_lcpy(f->key, r->name, sizeof(f->key));
    f->gen = r->gen;
    f->to = to;
    r->filling = true;
    if (to == UINT64_MAX)
        r->dropped = false;
    atomic_fetch_add(&s->gap_fills, 1);
    if (rds_cmd(s->rds, r->shard, 6, argv, NULL, fill_done, f) != 0) {
        r->filling = false;
        free(f);
    }
}

/* The room of a channel "r:{<room>}", copied to out; false if not one. */
static bool channel_room(const char *ch, size_t len, char *out, size_t outsz)
{
    if (len < 5 || memcmp(ch, "r:{", 3) != 0 || ch[len - 1] != '}' || len - 4 >= outsz)
        return false;
    memcpy(out, ch + 3, len - 4);
    out[len - 4] = '\0';
    return true;
}

static bool drop_idle_dm(const char *key, void *val, void *arg)
{
    struct sroom *r = val;
    if (r->filling || r->held)
        return false;
    free(r);
    return true;
}

static bool channel_user(const char *ch, size_t len, char *out, size_t outsz)
{
    if (len < 5 || memcmp(ch, "u:{", 3) != 0 || ch[len - 1] != '}' || len - 4 >= outsz)
        return false;
    memcpy(out, ch + 3, len - 4);
    out[len - 4] = '\0';
    return true;
}

static void on_message(void *arg, size_t shard, const char *ch, size_t chlen, const char *p,
                       size_t len)
{
    struct sr *s = arg;
    char name[CODEC_ROOMID_MAX + 1];

    if (channel_user(ch, chlen, name, sizeof(name))) {
        struct item *it = item_from_payload(p, len);
        if (!it)
            return;
        it->user = xstrdup(name);
        char key[CODEC_USER_MAX + CODEC_ROOMID_MAX + 2];
        snprintf(key, sizeof(key), "%s\x1f%s", name, it->ev.room);
        struct item *head = NULL, **out = &head;
        pthread_mutex_lock(&s->lock);
        struct sroom *r = NULL;
        if (strmap_get(s->users, name)) {
            r = strmap_get(s->dms, key);
            if (!r && strmap_count(s->dms) >= DMS_MAX)
                strmap_sweep(s->dms, drop_idle_dm, NULL);
            if (!r) {
                /* the first DM of this room seen here: it starts the count */
                r = xcalloc(1, sizeof(*r));
                str_lcpy(r->name, it->ev.room, sizeof(r->name));
                str_lcpy(r->user, name, sizeof(r->user));
                r->shard = rds_shard(s->rds, r->name, strlen(r->name));
                r->held_tail = &r->held;
                r->st = SR_READY;
                r->last = it->ev.seq - 1;
                r->gen = ++s->gen;
                strmap_put(s->dms, key, r);
            }
            offer_locked(s, r, it, &out);
        } else {
            item_free(it);
        }
        pthread_mutex_unlock(&s->lock);
        deliver(s, head);
        return;
    }
    if (!channel_room(ch, chlen, name, sizeof(name)) || len < 2)
        return;
    if (p[0] == 't' || p[0] == 'p') {
        char user[CODEC_USER_MAX + 1];
        size_t off = p[0] == 'p' ? 2 : 1;
        if (len <= off || len - off >= sizeof(user) || !s->sink.ephemeral)
            return;
        memcpy(user, p + off, len - off);
        user[len - off] = '\0';
        s->sink.ephemeral(s->sink.arg, name, p[0], user, p[0] == 'p' && p[1] == '+');
        return;
    }
    struct item *it = item_from_payload(p, len);
    if (!it)
        return;
    struct item *head = NULL, **out = &head;
    pthread_mutex_lock(&s->lock);
    struct sroom *r = strmap_get(s->rooms, name);
    if (r)
        offer_locked(s, r, it, &out);
    else
        item_free(it);
    pthread_mutex_unlock(&s->lock);
    deliver(s, head);
}

struct resync {
    struct sr *s;
    size_t shard;
};

struct seed {
    struct sr *s;
    char room[CODEC_ROOMID_MAX + 1];
    uint64_t floor;
};

static void seed_done(void *arg, const redisReply *rep)
{
    struct seed *sd = arg;
    if (rep && rep->type == REDIS_REPLY_INTEGER && rep->integer == 1) {
        atomic_fetch_add(&sd->s->reseeded, 1);
        log_error("engine", "room '%s': its seq in Redis was below %" PRIu64 " (Redis lost its "
                  "data?): it goes on from there", sd->room, sd->floor);
    }
    free(sd);
}

/* {lock}. Before the fill (commands on a shard keep their order): a room
 * whose seq Redis lost goes on above what this node delivered. */
static void seed_locked(struct sr *s, struct sroom *r)
{
    if (!r->last)
        return;
    char key[CODEC_ROOMID_MAX + 16], floor[24];
    snprintf(key, sizeof(key), "r:{%s}:seq", r->name);
    snprintf(floor, sizeof(floor), "%" PRIu64, r->last);
    const char *argv[] = {key, floor};
    struct seed *sd = xmalloc(sizeof(*sd));
    sd->s = s;
    str_lcpy(sd->room, r->name, sizeof(sd->room));
    sd->floor = r->last;
    if (rds_eval(s->rds, r->shard, s->seed_script, 1, 2, argv, NULL, seed_done, sd) != 0)
        free(sd);
}

static bool resync_room(const char *key, void *val, void *arg)
{
    struct resync *rs = arg;
    struct sroom *r = val;
    if (r->shard == rs->shard && r->st == SR_READY && !r->filling) {
        seed_locked(rs->s, r);
        fill_start_locked(rs->s, r, UINT64_MAX);
    }
    return false;
}

static void on_state(void *arg, size_t shard, bool up)
{
    struct sr *s = arg;
    log_warn("engine", "redis %s: %s", rds_shard_url(s->rds, shard),
             up ? "connected again; filling gaps" : "connection lost");
    if (up) {
        /* what was published while the subscription was down is in the
         * logs: read every room of the shard from its last delivered seq */
        struct resync rs = {s, shard};
        pthread_mutex_lock(&s->lock);
        strmap_sweep(s->rooms, resync_room, &rs);
        strmap_sweep(s->dms, resync_room, &rs);
        pthread_mutex_unlock(&s->lock);
    }
    if (s->sink.state)
        s->sink.state(s->sink.arg, up);
}

/* ------------------------------------------------------------ subscribe */

struct subop {
    struct sr *s;
    char room[CODEC_ROOMID_MAX + 1];
    uint64_t gen;
};

static void sub_finish(struct sr *s, struct store_sub *sub, int status, uint64_t seq)
{
    sub->status = status;
    sub->seq = seq;
    sub->done(sub);
}

static void seq_done(void *arg, const redisReply *rep)
{
    struct subop *op = arg;
    struct sr *s = op->s;
    struct item *head = NULL, **out = &head;
    struct store_sub *sub = NULL;
    int status = -EIO;
    uint64_t seq = 0;

    pthread_mutex_lock(&s->lock);
    struct sroom *r = strmap_get(s->rooms, op->room);
    if (r && r->gen == op->gen) {
        sub = r->sub;
        r->sub = NULL;
        if (rep && (rep->type == REDIS_REPLY_NIL || rep->type == REDIS_REPLY_STRING)) {
            seq = rep->type == REDIS_REPLY_STRING ? strtoull(rep->str, NULL, 10) : 0;
            r->st = SR_READY;
            r->last = seq;
            status = 0;
        } else {
            /* failed: forget the room; the broker's load fails and a later
             * join subscribes again */
            char ch[CODEC_ROOMID_MAX + 8];
            int n = snprintf(ch, sizeof(ch), "r:{%s}", r->name);
            strmap_del(s->rooms, r->name);
            drop_held_locked(s, r);
            rds_unsubscribe(s->rds, r->shard, ch, (size_t)n);
            free(r);
            r = NULL;
        }
    }
    pthread_mutex_unlock(&s->lock);
    /* done() first: the broker takes the seq, then the events after it */
    if (sub)
        sub_finish(s, sub, status, seq);
    pthread_mutex_lock(&s->lock);
    r = strmap_get(s->rooms, op->room);
    if (r && r->gen == op->gen)
        release_held_locked(s, r, &out);
    pthread_mutex_unlock(&s->lock);
    deliver(s, head);
    free(op);
}

static void subscribed(void *arg, const redisReply *rep)
{
    struct subop *op = arg;
    struct sr *s = op->s;
    char key[CODEC_ROOMID_MAX + 16];

    pthread_mutex_lock(&s->lock);
    struct sroom *r = strmap_get(s->rooms, op->room);
    bool live = r && r->gen == op->gen;
    size_t shard = live ? r->shard : 0;
    pthread_mutex_unlock(&s->lock);
    if (!live) {
        free(op);
        return;
    }
    if (!rep) {
        seq_done(op, NULL);
        return;
    }
    /* subscribed first, then the last seq: whatever is published after the
     * GET arrives on the subscription and is held until the seq is known */
    snprintf(key, sizeof(key), "r:{%s}:seq", op->room);
    const char *argv[] = {"GET", key};
    if (rds_cmd(s->rds, shard, 2, argv, NULL, seq_done, op) != 0)
        seq_done(op, NULL);
}

static int sr_subscribe(store_t *st, struct store_sub *sub)
{
    struct sr *s = SR(st);
    char ch[CODEC_ROOMID_MAX + 8];

    if (!sub->done || !sub->room[0])
        return -EINVAL;
    int n = snprintf(ch, sizeof(ch), "r:{%s}", sub->room);
    struct subop *op = xcalloc(1, sizeof(*op));
    struct sroom *r = xcalloc(1, sizeof(*r));
    str_lcpy(r->name, sub->room, sizeof(r->name));
    r->shard = rds_shard(s->rds, sub->room, strlen(sub->room));
    r->held_tail = &r->held;
    r->sub = sub;
    op->s = s;
    str_lcpy(op->room, sub->room, sizeof(op->room));

    pthread_mutex_lock(&s->lock);
    if (strmap_get(s->rooms, sub->room)) {
        pthread_mutex_unlock(&s->lock);
        free(r);
        free(op);
        return -EALREADY;
    }
    r->gen = op->gen = ++s->gen;
    strmap_put(s->rooms, r->name, r);
    pthread_mutex_unlock(&s->lock);
    int rc = rds_subscribe(s->rds, r->shard, ch, (size_t)n, subscribed, op);
    if (rc != 0) {
        pthread_mutex_lock(&s->lock);
        strmap_del(s->rooms, sub->room);
        pthread_mutex_unlock(&s->lock);
        free(r);
        free(op);
        return rc;
    }
    return 0;
}

static int sr_unsubscribe(store_t *st, const char *room)
{
    struct sr *s = SR(st);
    char ch[CODEC_ROOMID_MAX + 8];
    int n = snprintf(ch, sizeof(ch), "r:{%s}", room);

    pthread_mutex_lock(&s->lock);
    struct sroom *r = strmap_del(s->rooms, room);
    if (r)
        drop_held_locked(s, r);
    pthread_mutex_unlock(&s->lock);
    if (!r)
        return -ENOENT;
    rds_unsubscribe(s->rds, r->shard, ch, (size_t)n);
    if (r->sub)
        sub_finish(s, r->sub, -ECANCELED, 0);
    free(r);
    return 0;
}

struct dm_drop {
    struct sr *s;
    const char *user;
};

/* {lock} (a sweep of dms). */
static bool drop_user_dm(const char *key, void *val, void *arg)
{
    struct dm_drop *d = arg;
    struct sroom *r = val;
    if (strcmp(r->user, d->user) != 0)
        return false;
    drop_held_locked(d->s, r);
    free(r);
    return true;
}

/* Waiting for a user's channel to be live. */
struct uwait {
    struct uwait *next;
    void (*live)(void *arg);
    void *arg;
};

/* A subscribed user's channel (in `users`): live once every shard
 * confirmed it; who waits until then. */
struct usub {
    uint64_t gen;
    size_t pending; /* shards yet to confirm */
    struct uwait *waiters;
};

/* A shard's answer to one user channel's SUBSCRIBE. */
struct uconfirm {
    struct uconfirm *next; /* while failed subscribes are collected */
    struct sr *s;
    uint64_t gen;
    char user[CODEC_USER_MAX + 1];
};

static void uwaiters_run(struct uwait *w)
{
    while (w) {
        struct uwait *n = w->next;
        w->live(w->arg);
        free(w);
        w = n;
    }
}

static void usub_free(void *v)
{
    struct usub *u = v;
    if (!u)
        return;
    /* only at close: nobody is left to tell */
    while (u->waiters) {
        struct uwait *n = u->waiters->next;
        free(u->waiters);
        u->waiters = n;
    }
    free(u);
}

/* Thread: rds. Confirmed (rep) or failed (NULL: the shard is down, and the
 * channel comes back with it): either way that shard is no longer waited
 * for, so a hello is not held while Redis is away. */
static void user_confirmed(void *arg, const redisReply *rep)
{
    struct uconfirm *uc = arg;
    struct sr *s = uc->s;
    struct uwait *run = NULL;
    (void)rep;
    pthread_mutex_lock(&s->lock);
    struct usub *u = strmap_get(s->users, uc->user);
    if (u && u->gen == uc->gen && u->pending && --u->pending == 0) {
        run = u->waiters;
        u->waiters = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    uwaiters_run(run);
    free(uc);
}

/* A user's channel is subscribed on every shard: a DM is published by the
 * script on the DM room's shard, whichever that is. */
static int sr_user_subscribe(store_t *st, const char *user, void (*live)(void *arg), void *arg)
{
    struct sr *s = SR(st);
    char ch[CODEC_USER_MAX + 8];
    int n = snprintf(ch, sizeof(ch), "u:{%s}", user);
    size_t nshards = rds_nshards(s->rds);
    struct uconfirm *failed = NULL;

    pthread_mutex_lock(&s->lock);
    struct usub *u = strmap_get(s->users, user);
    bool fresh = !u;
    if (fresh) {
        u = xcalloc(1, sizeof(*u));
        u->gen = ++s->gen;
        u->pending = nshards;
        strmap_put(s->users, user, u);
    }
    bool now = u->pending == 0;
    if (!now && live) {
        struct uwait *w = xmalloc(sizeof(*w));
        *w = (struct uwait){.next = u->waiters, .live = live, .arg = arg};
        u->waiters = w;
    }
    /* under the lock, like the map: an unsubscribe of the same channel on
     * another thread reaches the connection in the same order (else this
     * subscribe could find the old channel still there, and be undone) */
    for (size_t i = 0; fresh && i < nshards; i++) {
        struct uconfirm *uc = xmalloc(sizeof(*uc));
        uc->s = s;
        uc->gen = u->gen;
        str_lcpy(uc->user, user, sizeof(uc->user));
        if (rds_subscribe(s->rds, i, ch, (size_t)n, user_confirmed, uc) != 0) {
            uc->next = failed;
            failed = uc;
        }
    }
    pthread_mutex_unlock(&s->lock);
    while (failed) {
        struct uconfirm *next = failed->next;
        user_confirmed(failed, NULL);
        failed = next;
    }
    return now ? 1 : 0;
}

static int sr_user_unsubscribe(store_t *st, const char *user)
{
    struct sr *s = SR(st);
    char ch[CODEC_USER_MAX + 8];
    int n = snprintf(ch, sizeof(ch), "u:{%s}", user);

    pthread_mutex_lock(&s->lock);
    struct usub *u = strmap_del(s->users, user);
    struct uwait *run = NULL;
    if (u) {
        run = u->waiters;
        u->waiters = NULL;
        struct dm_drop d = {s, user};
        strmap_sweep(s->dms, drop_user_dm, &d);
        /* under the lock: see sr_user_subscribe */
        for (size_t i = 0; i < rds_nshards(s->rds); i++)
            rds_unsubscribe(s->rds, i, ch, (size_t)n);
    }
    pthread_mutex_unlock(&s->lock);
    if (!u)
        return -ENOENT;
    free(u);
    /* whoever waited is not kept waiting for a channel that is gone */
    uwaiters_run(run);
    return 0;
}

static int sr_ephemeral(store_t *st, const char *room, char kind, const char *user)
{
    struct sr *s = SR(st);
    char ch[CODEC_ROOMID_MAX + 8], p[CODEC_USER_MAX + 4];
    int cn = snprintf(ch, sizeof(ch), "r:{%s}", room);
    int pn = snprintf(p, sizeof(p), "%c%s", kind, user);
    const char *argv[] = {"PUBLISH", ch, p};
    const size_t lens[] = {7, (size_t)cn, (size_t)pn};
    return rds_cmd(s->rds, rds_shard(s->rds, room, strlen(room)), 3, argv, lens, NULL, NULL);
}

static bool sr_up(store_t *st)
{
    struct sr *s = SR(st);
    for (size_t i = 0; i < rds_nshards(s->rds); i++)
        if (!rds_up(s->rds, i))
            return false;
    return true;
}

static void sr_set_sink(store_t *st, const struct store_sink *sink)
{
    SR(st)->sink = *sink;
}

/* ------------------------------------------------------------ append */

static void append_done(void *arg, const redisReply *rep)
{
    struct store_append *a = arg;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER &&
        rep->element[1]->type == REDIS_REPLY_INTEGER) {
        a->status = 0;
        a->seq = (uint64_t)rep->element[1]->integer;
        a->dup_seq = rep->element[0]->integer ? 0 : a->seq;
    } else {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            log_error("engine", "append to '%s': %s", a->ev.room, rep->str);
        a->status = -EIO;
    }
    a->done(a);
}

/* "dm:a:b" -> the two participants; false if not a DM room. */
static bool dm_peers(const char *room, char *a, char *b, size_t sz)
{
    if (strncmp(room, "dm:", 3) != 0)
        return false;
    const char *p = room + 3, *c = strchr(p, ':');
    if (!c || (size_t)(c - p) >= sz || strlen(c + 1) >= sz)
        return false;
    memcpy(a, p, (size_t)(c - p));
    a[c - p] = '\0';
    strcpy(b, c + 1);
    return true;
}

/* The last seq this node delivered in room (as a subscribed room, or as a
 * DM room on the sender's channel); 0 if it knows none. */
static uint64_t append_floor(struct sr *s, const char *room, const char *from)
{
    char key[CODEC_USER_MAX + CODEC_ROOMID_MAX + 2];
    snprintf(key, sizeof(key), "%s\x1f%s", from, room);
    pthread_mutex_lock(&s->lock);
    const struct sroom *r = strmap_get(s->rooms, room), *d = strmap_get(s->dms, key);
    uint64_t floor = r ? r->last : 0;
    if (d && d->last > floor)
        floor = d->last;
    pthread_mutex_unlock(&s->lock);
    return floor;
}

static int sr_append(store_t *st, struct store_append *a)
{
    struct sr *s = SR(st);
    const struct room_event *e = &a->ev;

    if (!a->done || !store_event_valid(e) || !a->frame)
        return -EINVAL;
    char kseq[CODEC_ROOMID_MAX + 16], klog[CODEC_ROOMID_MAX + 16];
    char kid[CODEC_ROOMID_MAX + CODEC_USER_MAX + CODEC_ID_MAX + 16];
    char ts[24], ch[CODEC_ROOMID_MAX + 8], u1[CODEC_USER_MAX + 8], u2[CODEC_USER_MAX + 8];
    char pa[CODEC_USER_MAX + 1], pb[CODEC_USER_MAX + 1];
    const char *argv[20];
    size_t lens[20];
    int n = 0;
    bool has_id = e->id && e->id[0];

#define ARG(p, l) (argv[n] = (p), lens[n] = (l), n++)
#define SARG(p) ARG(p, strlen(p))
    snprintf(kseq, sizeof(kseq), "r:{%s}:seq", e->room);
    snprintf(klog, sizeof(klog), "r:{%s}:log", e->room);
    SARG(kseq);
    SARG(klog);
    if (has_id) {
        snprintf(kid, sizeof(kid), "r:{%s}:i:%s\x1f%s", e->room, e->from, e->id);
        SARG(kid);
    }
    int nkeys = n;
    snprintf(ts, sizeof(ts), "%" PRId64, e->ts);
    SARG(e->from);
    SARG(ts);
    SARG(has_id ? e->id : "");
    ARG(e->text, e->text_len);
    ARG(a->frame, a->frame_seq_at);
    ARG(a->frame + a->frame_seq_at, a->frame_len - a->frame_seq_at);
    SARG(s->history_max);
    SARG(s->id_ttl);
    struct srpayload pl = {.ts = e->ts, .kind = (int)e->kind, .room = e->room,
                           .room_len = strlen(e->room), .from = e->from,
                           .from_len = strlen(e->from), .id = has_id ? e->id : "",
                           .id_len = has_id ? strlen(e->id) : 0, .text_len = e->text_len,
                           .body_len = e->body_len};
    char hdr[96 + CODEC_ROOMID_MAX + CODEC_USER_MAX + CODEC_ID_MAX];
    int hl = srpayload_header(hdr, sizeof(hdr), &pl);
    if (hl < 0)
        return -EINVAL;
    ARG(hdr, (size_t)hl);
    char floor[24];
    snprintf(floor, sizeof(floor), "%" PRIu64, append_floor(s, e->room, e->from));
    SARG(floor);
    char kind[8];
    snprintf(kind, sizeof(kind), "%d", (int)e->kind);
    SARG(kind);
    ARG(e->body_len ? (const char *)e->body : "", e->body_len);
    /* a DM goes to both users' channels, which reach their connections
     * wherever they are; the room's channel keeps the room's subscribers
     * (its window and seq) current. Users first: a node gets both on one
     * connection, in this order, and the room's event releases the
     * sender's held ack, so the sender sees the DM before its ack */
    if (dm_peers(e->room, pa, pb, sizeof(pa))) {
        snprintf(u1, sizeof(u1), "u:{%s}", pa);
        snprintf(u2, sizeof(u2), "u:{%s}", pb);
        SARG(u1);
        if (strcmp(pa, pb) != 0)
            SARG(u2);
    }
    snprintf(ch, sizeof(ch), "r:{%s}", e->room);
    SARG(ch);
#undef ARG
#undef SARG
    return rds_eval(s->rds, rds_shard(s->rds, e->room, strlen(e->room)), s->script, nkeys, n,
                    argv, lens, append_done, a);
}

static int sr_barrier(store_t *st, struct store_barrier *b)
{
    /* every append is acked only once Redis has it: nothing to wait for */
    (void)st;
    if (!b->done)
        return -EINVAL;
    b->status = 0;
    b->done(b);
    return 0;
}

/* ------------------------------------------------------------ reads */

static void read_done(void *arg, const redisReply *rep)
{
    struct store_read *r = arg;
    r->status = -EIO;
    if (rep && rep->type == REDIS_REPLY_ARRAY) {
        size_t n = rep->elements;
        r->more = n > (size_t)r->limit;
        if (r->more)
            n = (size_t)r->limit;
        struct item **its = xcalloc(n ? n : 1, sizeof(*its));
        size_t k = 0, bytes = 0;
        for (size_t i = 0; i < n; i++) {
            struct item *it = item_from_entry(r->room, rep->element[i], false);
            if (it) {
                its[k++] = it;
                bytes += strlen(it->ev.from) + strlen(it->ev.id) + it->ev.text_len +
                         it->ev.body_len + 3;
            }
        }
        /* one block for every string, as store_read_release frees it */
        char *blk = xmalloc(bytes ? bytes : 1), *p = blk;
        r->evs = xcalloc(k ? k : 1, sizeof(*r->evs));
        for (size_t i = 0; i < k; i++) {
            /* XREVRANGE answers newest first; the seam wants oldest first */
            const struct item *it = its[r->mode == SR_SINCE ? i : k - 1 - i];
            struct room_event *e = &r->evs[i];
            *e = it->ev;
            e->room = r->room;
            size_t fl = strlen(it->ev.from) + 1, il = strlen(it->ev.id) + 1;
            e->from = memcpy(p, it->ev.from, fl);
            p += fl;
            e->id = memcpy(p, it->ev.id, il);
            p += il;
            e->text = memcpy(p, it->ev.text, it->ev.text_len + 1);
            p += it->ev.text_len + 1;
            if (it->ev.body_len) {
                e->body = memcpy(p, it->ev.body, it->ev.body_len);
                p += it->ev.body_len;
            }
        }
        for (size_t i = 0; i < k; i++)
            item_free(its[i]);
        free(its);
        r->n = k;
        r->priv = blk;
        r->status = 0;
    }
    r->done(r);
}

static int sr_read_submit(store_t *st, struct store_read *r)
{
    struct sr *s = SR(st);
    char key[CODEC_ROOMID_MAX + 16], a[24], b[24], cnt[24];

    if (!r->done || r->limit < 0 || r->mode > SR_BEFORE)
        return -EINVAL;
    snprintf(key, sizeof(key), "r:{%s}:log", r->room);
    snprintf(cnt, sizeof(cnt), "%d", r->limit + 1);
    const char *argv[6] = {NULL, key, a, b, "COUNT", cnt};
    switch (r->mode) {
    case SR_LATEST:
        argv[0] = "XREVRANGE";
        strcpy(a, "+");
        strcpy(b, "-");
        break;
    case SR_SINCE:
        argv[0] = "XRANGE";
        if (r->key == UINT64_MAX) {
            /* nothing is newer (and key + 1 would wrap to the start) */
            r->evs = NULL;
            r->n = 0;
            r->more = false;
            r->status = 0;
            r->done(r);
            return 0;
        }
        snprintf(a, sizeof(a), "%" PRIu64 "-0", r->key + 1);
        strcpy(b, "+");
        break;
    case SR_BEFORE:
        argv[0] = "XREVRANGE";
        if (r->key <= 1) {
            /* nothing before seq 1: answer without asking */
            r->evs = NULL;
            r->n = 0;
            r->more = false;
            r->status = 0;
            r->done(r);
            return 0;
        }
        snprintf(a, sizeof(a), "%" PRIu64 "-0", r->key - 1);
        strcpy(b, "-");
        break;
    }
    return rds_cmd(s->rds, rds_shard(s->rds, r->room, strlen(r->room)), 6, argv, NULL, read_done,
                   r);
}

/* ------------------------------------------------------------ the rest */

static int sr_load_rooms(store_t *st, void (*cb)(void *, const char *, uint64_t), void *arg)
{
    /* rooms are read when first needed (store_subscribe) */
    return 0;
}

static int sr_load_ids(store_t *st, int64_t since_ms,
                       void (*cb)(void *, const char *, const char *, const char *, uint64_t,
                                  int64_t),
                       void *arg)
{
    /* ids live in Redis, checked by the append script */
    return 0;
}

static void sr_stats(store_t *st, struct store_stats *out)
{
    struct sr *s = SR(st);
    struct rds_stats rs;
    memset(out, 0, sizeof(*out));
    rds_stats(s->rds, &rs);
    out->commits = rs.commands;
    out->writes = rs.commands;
    out->failures = rs.failures;
    out->shared = true;
    out->engine_up = rs.shards_up == rs.shards;
    out->engine_reconnects = rs.reconnects;
    out->engine_gap_fills = atomic_load(&s->gap_fills);
    out->engine_filled = atomic_load(&s->filled);
    out->engine_lost = atomic_load(&s->lost);
    out->engine_reseeded = atomic_load(&s->reseeded);
    out->engine_rtt_seconds_sum = rs.rtt_seconds_sum;
    out->engine_rtt_count = rs.rtt_count;
    out->engine_subscriptions = rs.subscriptions;
}

static bool free_room(const char *key, void *val, void *arg)
{
    struct sroom *r = val;
    items_free(r->held);
    free(r);
    return true;
}

static void sr_close(store_t *st)
{
    struct sr *s = SR(st);
    rds_close(s->rds);
    pthread_mutex_lock(&s->lock);
    strmap_sweep(s->rooms, free_room, NULL);
    strmap_sweep(s->dms, free_room, NULL);
    pthread_mutex_unlock(&s->lock);
    strmap_free(s->rooms, NULL);
    strmap_free(s->dms, NULL);
    strmap_free(s->users, usub_free);
    pthread_mutex_destroy(&s->lock);
    acctrds_close(s->acct);
    store_close(s->local);
    free(s);
}

/* accounts: the cluster's, in Redis (acctrds); outbox: the node's SQLite */
static int fw_load_users(store_t *st, uint64_t g, void (*cb)(void *, const struct store_user *),
                         void *arg)
{
    return acctrds_load_users(SR(st)->acct, g, cb, arg);
}
static int fw_users_gen(store_t *st, uint64_t *g)
{
    return acctrds_users_gen(SR(st)->acct, g);
}
static int fw_user_seen(store_t *st, struct store_user_seen *u)
{
    return acctrds_user_seen(SR(st)->acct, u);
}
static int fw_account_add(store_t *st, const struct store_account_add *a)
{
    return acctrds_account_add(SR(st)->acct, a);
}
static int fw_account_passwd(store_t *st, const char *name, const char *hash)
{
    return acctrds_account_passwd(SR(st)->acct, name, hash);
}
static int fw_account_del(store_t *st, const char *name)
{
    return acctrds_account_del(SR(st)->acct, name);
}
static int fw_account_get(store_t *st, const char *name, char *hash, size_t hashsz, char *email,
                          size_t emailsz, int64_t *after)
{
    return acctrds_account_get(SR(st)->acct, name, hash, hashsz, email, emailsz, after);
}
static int fw_outbox_add(store_t *st, struct store_outbox_add *o)
{
    return store_outbox_add(SR(st)->local, o);
}
static int fw_outbox_pending(store_t *st, int64_t now, size_t max, struct store_outbox_row **rows,
                             size_t *n)
{
    return store_outbox_pending(SR(st)->local, now, max, rows, n);
}
static int fw_outbox_mark(store_t *st, const char *const *ids, size_t n, const char *state,
                          int attempts, int64_t next_at)
{
    return store_outbox_mark(SR(st)->local, ids, n, state, attempts, next_at);
}

static const struct store_log_ops sr_log_ops = {
    .close = sr_close,
    .stats = sr_stats,
    .append = sr_append,
    .barrier = sr_barrier,
    .read_submit = sr_read_submit,
    .load_rooms = sr_load_rooms,
    .load_ids = sr_load_ids,
    .set_sink = sr_set_sink,
    .subscribe = sr_subscribe,
    .unsubscribe = sr_unsubscribe,
    .user_subscribe = sr_user_subscribe,
    .user_unsubscribe = sr_user_unsubscribe,
    .ephemeral = sr_ephemeral,
    .up = sr_up,
};

static const struct store_accounts_ops sr_accounts_ops = {
    .load_users = fw_load_users,
    .users_gen = fw_users_gen,
    .user_seen = fw_user_seen,
    .account_add = fw_account_add,
    .account_passwd = fw_account_passwd,
    .account_del = fw_account_del,
    .account_get = fw_account_get,
};

static const struct store_outbox_ops sr_outbox_ops = {
    .add = fw_outbox_add,
    .pending = fw_outbox_pending,
    .mark = fw_outbox_mark,
};

store_t *store_redis_open(const struct store_redis_opts *o, char *err, size_t errsz)
{
    struct sr *s = xcalloc(1, sizeof(*s));
    s->base.log = &sr_log_ops;
    s->base.accounts = &sr_accounts_ops;
    s->base.outbox = &sr_outbox_ops;
    s->local = o->local;
    snprintf(s->history_max, sizeof(s->history_max), "%ld", o->history_max);
    snprintf(s->id_ttl, sizeof(s->id_ttl), "%ld", o->idempotency_ttl_s);
    pthread_mutex_init(&s->lock, NULL);
    s->rooms = strmap_new();
    s->users = strmap_new();
    s->dms = strmap_new();
    struct rds_opts ro = {
        .urls = o->urls,
        .password = o->password,
        .on_message = on_message,
        .on_state = on_state,
        .arg = s,
    };
    s->rds = rds_open(&ro, err, errsz);
    if (!s->rds)
        goto fail;
    /* the first URL of the list (every node's list starts the same) */
    char first[512];
    snprintf(first, sizeof(first), "%.*s", (int)strcspn(o->urls, ","), o->urls);
    s->acct = acctrds_open(first, o->password, 3000, err, errsz);
    if (!s->acct)
        goto fail;
    s->script = rds_script(s->rds, APPEND_LUA);
    s->seed_script = rds_script(s->rds, SEED_LUA);
    if (s->script < 0 || s->seed_script < 0) {
        snprintf(err, errsz, "cannot register the engine's scripts");
        goto fail;
    }
    return (store_t *)s;
fail:
    acctrds_close(s->acct);
    rds_close(s->rds);
    strmap_free(s->rooms, NULL);
    strmap_free(s->users, usub_free);
    strmap_free(s->dms, NULL);
    pthread_mutex_destroy(&s->lock);
    store_close(s->local);
    free(s);
    return NULL;
}

struct rds *store_redis_rds(store_t *st)
{
    return SR(st)->rds;
}

void store_redis_stats(store_t *st, struct store_redis_stats *out)
{
    struct sr *s = SR(st);
    out->gap_fills = atomic_load(&s->gap_fills);
    out->filled = atomic_load(&s->filled);
    out->dropped_dups = atomic_load(&s->dropped_dups);
    out->lost = atomic_load(&s->lost);
    out->reseeded = atomic_load(&s->reseeded);
    pthread_mutex_lock(&s->lock);
    out->rooms = strmap_count(s->rooms);
    pthread_mutex_unlock(&s->lock);
}
