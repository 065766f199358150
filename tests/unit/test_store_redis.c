/*
 * test_store_redis — the Redis engine (store_redis) against real
 * redis-server processes (redis_proc), each on its own loopback port and
 * stopped by PID: seq assignment and idempotency in the append script, the
 * stream log and --history-max, subscriptions and delivery to a recording
 * sink (one per engine instance, a "node"), gap fills (a seq jump, a
 * reconnect), DMs on user channels, reads at their edges, and the engine's
 * up/down state. Every wait is a condition under a deadline; negative
 * checks listen for a bounded quiet time.
 */
#include <criterion/criterion.h>
#include "testutil.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "msg.h"
#include "redis_proc.h"
#include "store.h"
#include "srpayload.h"
#include "store_redis.h"

#define NODES 2
#define EVMAX 256
#define EPHMAX 16
#define STMAX 16
#define QUIET_MS 300
#define TS0 INT64_C(1700000000000)

/* One event as the sink saw it (copies: the engine's strings live for the
 * call only). */
struct rec_ev {
    bool has_user;
    char user[CODEC_USER_MAX + 1];
    char room[CODEC_ROOMID_MAX + 1];
    uint64_t seq;
    char from[CODEC_USER_MAX + 1];
    char id[CODEC_ID_MAX + 1];
    char text[128];
    int64_t ts;
    char json[512];
    size_t json_len;
    bool has_json;
    int kind;
    size_t body_len;
    char body[16];      /* its first bytes */
    uint64_t body_hash; /* of all of it */
};

/* What one node's sink saw. */
struct rec {
    int nev;
    struct rec_ev ev[EVMAX];
    int neph;
    struct {
        char room[CODEC_ROOMID_MAX + 1];
        char kind;
        char user[CODEC_USER_MAX + 1];
        bool join;
    } eph[EPHMAX];
    int nstate;
    bool state[STMAX];
    /* the room channel of room `track`, for runs longer than EVMAX: how
     * many events, the last seq, and how many did not follow the one before */
    char track[CODEC_ROOMID_MAX + 1];
    int track_n, track_bad;
    uint64_t track_last;
};

/* Everything the callbacks touch, under one lock; they run on the engines'
 * rds threads. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct rec rec[NODES];
} T;

static struct redis_proc R1;
static store_t *E[NODES + 1]; /* open engines, closed by teardown */
static char tmpdir[4096];
static int dbn;

#define mono_ms redis_proc_mono_ms

static void setup(void)
{
    memset(&T.rec, 0, sizeof(T.rec));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&T.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&T.mu, NULL);
    memset(&R1, 0, sizeof(R1));
    memset(E, 0, sizeof(E));
    dbn = 0;
    test_mkdtemp(tmpdir, sizeof(tmpdir), "srtest");
}

static void teardown(void)
{
    for (int i = 0; i <= NODES; i++) {
        store_close(E[i]);
        E[i] = NULL;
    }
    /* a stopped server cannot take SIGTERM */
    if (R1.pid)
        redis_proc_resume(&R1);
    redis_proc_stop(&R1);
    test_rmtree(tmpdir);
}

TestSuite(store_redis, .init = setup, .fini = teardown, .timeout = 120);

/* Wait (at most ms) until expr, evaluated under T.mu, holds; ok gets it. */
#define WAIT(ok, expr, ms) REDIS_PROC_WAIT(ok, expr, T.mu, T.cv, ms)

/* ------------------------------------------------------------ the sink */

static void copy_str(char *dst, size_t sz, const char *s)
{
    snprintf(dst, sz, "%s", s ? s : "");
}

/* FNV-1a, to compare bodies too long to keep. */
static uint64_t body_hash(const void *p, size_t n)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * UINT64_C(1099511628211);
    return h;
}

static void sink_event(void *arg, const char *user, const struct room_event *ev, struct msg *json)
{
    struct rec *r = arg;
    pthread_mutex_lock(&T.mu);
    if (!user && r->track[0] && strcmp(ev->room, r->track) == 0) {
        r->track_bad += ev->seq != r->track_last + 1;
        r->track_last = ev->seq;
        r->track_n++;
    }
    if (r->nev < EVMAX) {
        struct rec_ev *e = &r->ev[r->nev++];
        e->has_user = user != NULL;
        copy_str(e->user, sizeof(e->user), user);
        copy_str(e->room, sizeof(e->room), ev->room);
        e->seq = ev->seq;
        copy_str(e->from, sizeof(e->from), ev->from);
        copy_str(e->id, sizeof(e->id), ev->id);
        copy_str(e->text, sizeof(e->text), ev->text);
        e->ts = ev->ts;
        e->kind = (int)ev->kind;
        e->body_len = ev->body_len;
        cr_assert((ev->body == NULL) == (ev->body_len == 0), "body NULL exactly when empty");
        if (ev->body_len)
            memcpy(e->body, ev->body, ev->body_len < 16 ? ev->body_len : 16);
        e->body_hash = body_hash(ev->body, ev->body_len);
        e->has_json = json != NULL;
        size_t len = 0;
        const unsigned char *p = json ? msg_payload(json, &len) : NULL;
        if (len >= sizeof(e->json))
            len = sizeof(e->json) - 1;
        if (p)
            memcpy(e->json, p, len);
        e->json[len] = '\0';
        e->json_len = len;
    }
    pthread_cond_broadcast(&T.cv);
    pthread_mutex_unlock(&T.mu);
}

static void sink_ephemeral(void *arg, const char *room, char kind, const char *user, bool join)
{
    struct rec *r = arg;
    pthread_mutex_lock(&T.mu);
    if (r->neph < EPHMAX) {
        copy_str(r->eph[r->neph].room, sizeof(r->eph[0].room), room);
        r->eph[r->neph].kind = kind;
        copy_str(r->eph[r->neph].user, sizeof(r->eph[0].user), user);
        r->eph[r->neph].join = join;
        r->neph++;
    }
    pthread_cond_broadcast(&T.cv);
    pthread_mutex_unlock(&T.mu);
}

static void sink_state(void *arg, bool up)
{
    struct rec *r = arg;
    pthread_mutex_lock(&T.mu);
    if (r->nstate < STMAX)
        r->state[r->nstate++] = up;
    pthread_cond_broadcast(&T.cv);
    pthread_mutex_unlock(&T.mu);
}

/* Events node saw for (user, room); user NULL: the room's own channel. */
static bool ev_match(const struct rec_ev *e, const char *user, const char *room)
{
    if (strcmp(e->room, room) != 0)
        return false;
    return user ? e->has_user && strcmp(e->user, user) == 0 : !e->has_user;
}

/* {T.mu} */
static int count_locked(int node, const char *user, const char *room)
{
    int n = 0;
    for (int i = 0; i < T.rec[node].nev; i++)
        n += ev_match(&T.rec[node].ev[i], user, room);
    return n;
}

static int count(int node, const char *user, const char *room)
{
    pthread_mutex_lock(&T.mu);
    int n = count_locked(node, user, room);
    pthread_mutex_unlock(&T.mu);
    return n;
}

/* The text the tests give the event of seq k in a room they fill in
 * order. */
static void text_of(char *buf, size_t sz, uint64_t k)
{
    snprintf(buf, sz, "text %" PRIu64, k);
}

/* The JSON frame every node must deliver for these fields. */
static void expect_json(const struct rec_ev *e)
{
    struct chat_msg m = {.room = e->room,
                         .seq = e->seq,
                         .from = e->from,
                         .text = e->text,
                         .text_len = strlen(e->text),
                         .ts = e->ts,
                         .id = e->id};
    msg_t *want = codec_message(FMT_JSON, &m);
    size_t wl;
    const unsigned char *wp = msg_payload(want, &wl);
    cr_assert_eq(e->json_len, wl, "seq %" PRIu64 ": frame '%s' (want %zu bytes)", e->seq, e->json,
                 wl);
    cr_assert_eq(memcmp(e->json, wp, wl), 0, "seq %" PRIu64 ": frame '%s' vs '%.*s'", e->seq,
                 e->json, (int)wl, (const char *)wp);
    msg_unref(&want);
}

/* node saw exactly seqs first..last of (user, room), in order, once each,
 * with the texts text_of gives (when texts) and their JSON frames. */
static void check_seqs(int node, const char *user, const char *room, uint64_t first, uint64_t last,
                       bool texts)
{
    pthread_mutex_lock(&T.mu);
    struct rec_ev *got = calloc(EVMAX, sizeof(*got));
    int n = 0;
    for (int i = 0; i < T.rec[node].nev; i++)
        if (ev_match(&T.rec[node].ev[i], user, room))
            got[n++] = T.rec[node].ev[i];
    pthread_mutex_unlock(&T.mu);
    int want = last >= first ? (int)(last - first + 1) : 0;
    cr_assert_eq(n, want, "node %d %s/%s: %d events, want %" PRIu64 "..%" PRIu64, node,
                 user ? user : "-", room, n, first, last);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(got[i].seq, first + (uint64_t)i, "node %d %s: event %d has seq %" PRIu64, node,
                     room, i, got[i].seq);
        if (texts) {
            char t[64];
            text_of(t, sizeof(t), got[i].seq);
            cr_assert_str_eq(got[i].text, t);
        }
        expect_json(&got[i]);
    }
    free(got);
}

/* ------------------------------------------------------------ engines */

static store_t *engine_open_url(const char *url, long history_max, int node)
{
    char path[4200], err[512] = "";
    snprintf(path, sizeof(path), "%s/node%d-%d.db", tmpdir, node, dbn++);
    struct store_opts so = {.path = path, .readers = 1};
    store_t *local = store_open(&so, err, sizeof(err));
    cr_assert_not_null(local, "store_open: %s", err);
    struct store_redis_opts o = {
        .urls = url,
        .history_max = history_max,
        .idempotency_ttl_s = 3600,
        .local = local,
    };
    store_t *s = store_redis_open(&o, err, sizeof(err));
    cr_assert_not_null(s, "store_redis_open: %s", err);
    struct store_sink sink = {
        .event = sink_event,
        .ephemeral = sink_ephemeral,
        .state = sink_state,
        .arg = &T.rec[node],
    };
    store_set_sink(s, &sink);
    return s;
}

static store_t *engine_open(struct redis_proc *p, long history_max, int node)
{
    char url[64];
    return engine_open_url(redis_proc_url(p, 0, url, sizeof(url)), history_max, node);
}

/* ------------------------------------------------------------ appends */

struct app {
    struct store_append a;
    msg_t *frame;
    int ndone; /* {T.mu} */
    char room[CODEC_ROOMID_MAX + 1], from[CODEC_USER_MAX + 1], id[CODEC_ID_MAX + 1];
    char text[128];
};

static void app_done(struct store_append *a)
{
    struct app *x = a->arg;
    pthread_mutex_lock(&T.mu);
    x->ndone++;
    pthread_cond_broadcast(&T.cv);
    pthread_mutex_unlock(&T.mu);
}

/* An append as the broker of a shared engine makes it: seq 0, the frame
 * with its seq left out. ts is TS0 + tsk. */
static void app_init(struct app *x, const char *room, const char *from, const char *text,
                     const char *id, int64_t tsk)
{
    memset(x, 0, sizeof(*x));
    copy_str(x->room, sizeof(x->room), room);
    copy_str(x->from, sizeof(x->from), from);
    copy_str(x->text, sizeof(x->text), text);
    copy_str(x->id, sizeof(x->id), id);
    x->a.ev.kind = EV_MESSAGE;
    x->a.ev.room = x->room;
    x->a.ev.from = x->from;
    x->a.ev.text = x->text;
    x->a.ev.text_len = strlen(x->text);
    x->a.ev.id = x->id;
    x->a.ev.ts = TS0 + tsk;
    struct chat_msg m = {.room = x->room,
                         .from = x->from,
                         .text = x->text,
                         .text_len = x->a.ev.text_len,
                         .ts = x->a.ev.ts,
                         .id = x->id};
    size_t seq_at;
    x->frame = codec_message_parts(&m, &seq_at);
    x->a.frame = (const char *)msg_payload(x->frame, &x->a.frame_len);
    x->a.frame_seq_at = seq_at;
    x->a.done = app_done;
    x->a.arg = x;
}

/* Wait for x's done; it must come exactly once. */
static void app_wait(struct app *x, long long ms)
{
    bool ok;
    WAIT(ok, x->ndone >= 1, ms);
    cr_assert(ok, "append to %s: no done", x->room);
    pthread_mutex_lock(&T.mu);
    int n = x->ndone;
    pthread_mutex_unlock(&T.mu);
    cr_assert_eq(n, 1, "done called %d times", n);
    msg_unref(&x->frame);
}

/* Append and wait; returns the status, with seq and dup_seq. */
static int append_sync(store_t *s, const char *room, const char *from, const char *text,
                       const char *id, uint64_t *seq, uint64_t *dup)
{
    /* ts from the text's number, so every check knows an event's ts */
    uint64_t k = 0;
    sscanf(text, "text %" SCNu64, &k);
    struct app x;
    app_init(&x, room, from, text, id, (int64_t)k);
    int rc = store_append(s, &x.a);
    cr_assert_eq(rc, 0, "store_append: %d", rc);
    app_wait(&x, 10000);
    if (seq)
        *seq = x.a.seq;
    if (dup)
        *dup = x.a.dup_seq;
    return x.a.status;
}

/* Append "text <k>" for k = first..last to room, each getting seq k. */
static void append_run(store_t *s, const char *room, uint64_t first, uint64_t last)
{
    for (uint64_t k = first; k <= last; k++) {
        char t[64];
        text_of(t, sizeof(t), k);
        uint64_t seq = 0, dup = 99;
        cr_assert_eq(append_sync(s, room, "ann", t, "", &seq, &dup), 0);
        cr_assert_eq(seq, k, "%s: seq %" PRIu64 ", want %" PRIu64, room, seq, k);
        cr_assert_eq(dup, 0);
    }
}

/* ------------------------------------------------------------ subscriptions */

struct subw {
    struct store_sub sub;
    int ndone; /* {T.mu} */
};

static void sub_done(struct store_sub *sub)
{
    struct subw *w = sub->arg;
    pthread_mutex_lock(&T.mu);
    w->ndone++;
    pthread_cond_broadcast(&T.cv);
    pthread_mutex_unlock(&T.mu);
}

/* Subscribe and wait; returns the seq done reported. */
static uint64_t subscribe_sync(store_t *s, const char *room)
{
    struct subw w = {.sub.done = sub_done, .sub.arg = &w};
    copy_str(w.sub.room, sizeof(w.sub.room), room);
    w.sub.arg = &w;
    cr_assert_eq(store_subscribe(s, &w.sub), 0);
    bool ok;
    WAIT(ok, w.ndone >= 1, 10000);
    cr_assert(ok, "subscribe %s: no done", room);
    cr_assert_eq(w.sub.status, 0, "subscribe %s: %d", room, w.sub.status);
    return w.sub.seq;
}

/* ------------------------------------------------------------ Redis by hand */

static redisContext *rconn(struct redis_proc *p)
{
    redisContext *c = redis_proc_connect(p);
    cr_assert_not_null(c, "connect to redis on %d", p->port);
    return c;
}

static long long rint_cmd(struct redis_proc *p, const char *fmt, const char *arg)
{
    redisContext *c = rconn(p);
    redisReply *rep = redisCommand(c, fmt, arg);
    cr_assert_not_null(rep);
    long long v = -999;
    if (rep->type == REDIS_REPLY_INTEGER)
        v = rep->integer;
    else if (rep->type == REDIS_REPLY_STRING)
        v = atoll(rep->str);
    else if (rep->type == REDIS_REPLY_NIL)
        v = 0;
    freeReplyObject(rep);
    redisFree(c);
    return v;
}

static long long xlen(struct redis_proc *p, const char *room)
{
    char key[CODEC_ROOMID_MAX + 16];
    snprintf(key, sizeof(key), "r:{%s}:log", room);
    return rint_cmd(p, "XLEN %s", key);
}

static long long last_seq(struct redis_proc *p, const char *room)
{
    char key[CODEC_ROOMID_MAX + 16];
    snprintf(key, sizeof(key), "r:{%s}:seq", room);
    return rint_cmd(p, "GET %s", key);
}

/* Wait until the server counts n subscribers of channel. */
static long long numsub(redisContext *c, const char *channel)
{
    redisReply *rep = redisCommand(c, "PUBSUB NUMSUB %s", channel);
    cr_assert_not_null(rep);
    long long got = rep->element[1]->integer;
    freeReplyObject(rep);
    return got;
}

static void wait_numsub(struct redis_proc *p, const char *channel, long long n)
{
    redisContext *c = rconn(p);
    long long deadline = mono_ms() + 10000, got = -1;
    while (got != n && mono_ms() < deadline) {
        got = numsub(c, channel);
        if (got != n) {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    redisFree(c);
    cr_assert_eq(got, n, "%s: %lld subscribers, want %lld", channel, got, n);
}

/* Store event seq of room in the log by hand, as the script would (INCR +
 * XADD), without publishing it. */
static void hand_append(redisContext *c, const char *room, uint64_t seq)
{
    char kseq[CODEC_ROOMID_MAX + 16], klog[CODEC_ROOMID_MAX + 16], id[32], t[64], ts[32];
    snprintf(kseq, sizeof(kseq), "r:{%s}:seq", room);
    snprintf(klog, sizeof(klog), "r:{%s}:log", room);
    snprintf(id, sizeof(id), "%" PRIu64 "-0", seq);
    text_of(t, sizeof(t), seq);
    snprintf(ts, sizeof(ts), "%" PRId64, TS0 + (int64_t)seq);
    redisReply *rep = redisCommand(c, "INCR %s", kseq);
    cr_assert_not_null(rep);
    cr_assert_eq(rep->integer, (long long)seq);
    freeReplyObject(rep);
    rep = redisCommand(c, "XADD %s %s f %s t %s i %s x %s", klog, id, "ann", ts, "", t);
    cr_assert_not_null(rep);
    cr_assert_eq(rep->type, REDIS_REPLY_STRING, "XADD: %s", rep->str);
    freeReplyObject(rep);
}

/* Event seq of room (from ann, text t, or text_of(seq) if NULL) as the
 * append script publishes it; its length. */
static int hand_payload_text(char *payload, size_t size, const char *room, uint64_t seq,
                             const char *t)
{
    char tb[64];
    if (!t) {
        text_of(tb, sizeof(tb), seq);
        t = tb;
    }
    struct chat_msg m = {.room = room,
                         .seq = seq,
                         .from = "ann",
                         .text = t,
                         .text_len = strlen(t),
                         .ts = TS0 + (int64_t)seq,
                         .id = ""};
    msg_t *f = codec_message(FMT_JSON, &m);
    size_t fl;
    const unsigned char *fp = msg_payload(f, &fl);
    struct srpayload pl = {.ts = m.ts, .room = room, .room_len = strlen(room), .from = "ann",
                           .from_len = 3, .id = "", .text_len = m.text_len};
    int n = snprintf(payload, size, "m%" PRIu64 "\n", seq);
    cr_assert(n > 0 && (size_t)n < size);
    int hl = srpayload_header(payload + n, size - (size_t)n, &pl);
    cr_assert_gt(hl, 0);
    n += hl;
    int r = snprintf(payload + n, size - (size_t)n, "%s%.*s", t, (int)fl, (const char *)fp);
    msg_unref(&f);
    cr_assert(r > 0 && (size_t)r < size - (size_t)n);
    return n + r;
}

static int hand_payload(char *payload, size_t size, const char *room, uint64_t seq)
{
    return hand_payload_text(payload, size, room, seq, NULL);
}

/* Publish event seq of room on its channel by hand, as the script does. */
static void hand_publish(redisContext *c, const char *room, uint64_t seq)
{
    char ch[CODEC_ROOMID_MAX + 8], payload[700];
    snprintf(ch, sizeof(ch), "r:{%s}", room);
    int n = hand_payload(payload, sizeof(payload), room, seq);
    redisReply *rep = redisCommand(c, "PUBLISH %s %b", ch, payload, (size_t)n);
    cr_assert_not_null(rep);
    cr_assert_eq(rep->integer, 1, "one subscriber of %s", ch);
    freeReplyObject(rep);
}

/* One node on a fresh Redis (with an AOF or without) subscribed to room,
 * where events 1..n were appended and delivered. */
static void one_node_with(bool aof, const char *room, uint64_t n)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, aof), 0);
    E[0] = engine_open(&R1, 1000, 0);
    cr_assert_eq(subscribe_sync(E[0], room), 0);
    append_run(E[0], room, 1, n);
    bool ok;
    WAIT(ok, count_locked(0, NULL, room) == (int)n, 10000);
    cr_assert(ok, "%d of %" PRIu64 " delivered", count(0, NULL, room), n);
}

/* ------------------------------------------------------------ reads */

struct rdw {
    struct store_read r;
    int ndone; /* {T.mu} */
};

static void rd_done(struct store_read *r)
{
    struct rdw *w = r->arg;
    pthread_mutex_lock(&T.mu);
    w->ndone++;
    pthread_cond_broadcast(&T.cv);
    pthread_mutex_unlock(&T.mu);
}

/* Read room (mode, up to limit) into *w and wait until it is answered. */
static void read_wait(store_t *s, const char *room, enum store_read_mode mode, int limit,
                      struct rdw *w)
{
    copy_str(w->r.room, sizeof(w->r.room), room);
    w->r.mode = mode;
    w->r.limit = limit;
    w->r.done = rd_done;
    w->r.arg = w;
    cr_assert_eq(store_read_submit(s, &w->r), 0);
    bool ok;
    WAIT(ok, w->ndone >= 1, 10000);
    cr_assert(ok, "read of %s answered", room);
}

/* Read room and check that seqs first..last (none if last < first) came
 * back, oldest first, with `more`. */
static void check_read(store_t *s, const char *room, enum store_read_mode mode, uint64_t key,
                       int limit, uint64_t first, uint64_t last, bool more)
{
    struct rdw w = {0};
    copy_str(w.r.room, sizeof(w.r.room), room);
    w.r.mode = mode;
    w.r.key = key;
    w.r.limit = limit;
    w.r.done = rd_done;
    w.r.arg = &w;
    cr_assert_eq(store_read_submit(s, &w.r), 0);
    bool ok;
    WAIT(ok, w.ndone >= 1, 10000);
    cr_assert(ok, "read: no done");
    cr_assert_eq(w.r.status, 0);
    size_t want = last >= first ? (size_t)(last - first + 1) : 0;
    cr_assert_eq(w.r.n, want, "mode %d key %" PRIu64 " limit %d: n %zu want %zu", mode, key, limit,
                 w.r.n, want);
    for (size_t i = 0; i < w.r.n; i++) {
        const struct room_event *e = &w.r.evs[i];
        char text[64];
        text_of(text, sizeof(text), first + i);
        cr_assert_eq(e->seq, first + i, "mode %d key %" PRIu64 " limit %d: [%zu] seq %" PRIu64,
                     mode, key, limit, i, e->seq);
        cr_assert_eq(e->kind, EV_MESSAGE);
        cr_assert_str_eq(e->room, room);
        cr_assert_str_eq(e->from, "ann");
        cr_assert_str_eq(e->text, text);
        cr_assert_eq(e->text_len, strlen(text));
        cr_assert_eq(e->ts, TS0 + (int64_t)(first + i));
        cr_assert_str_eq(e->id, "");
    }
    cr_assert_eq(w.r.more, more, "mode %d key %" PRIu64 " limit %d: more", mode, key, limit);
    pthread_mutex_lock(&T.mu);
    int nd = w.ndone;
    pthread_mutex_unlock(&T.mu);
    cr_assert_eq(nd, 1);
    store_read_release(&w.r);
    cr_assert_null(w.r.evs);
}

/* ------------------------------------------------------------ tests */

Test(store_redis, append_assigns_seqs_and_dedups_ids)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 1000, 0);
    cr_assert(store_shared(E[0]));
    cr_assert(store_up(E[0]));

    /* seqs per room, the stream IDs are the seqs, the ack follows the script */
    for (uint64_t k = 1; k <= 3; k++) {
        char t[64];
        text_of(t, sizeof(t), k);
        uint64_t seq = 0, dup = 9;
        cr_assert_eq(append_sync(E[0], "a", "ann", t, k == 2 ? "x" : "", &seq, &dup), 0);
        cr_assert_eq(seq, k);
        cr_assert_eq(dup, 0);
        cr_assert_eq(xlen(&R1, "a"), (long long)k, "in the log when acked");
        cr_assert_eq(last_seq(&R1, "a"), (long long)k);
        if (k <= 2) {
            cr_assert_eq(append_sync(E[0], "b", "ann", t, "", &seq, &dup), 0);
            cr_assert_eq(seq, k, "room b counts apart");
        }
    }
    redisContext *c = rconn(&R1);
    redisReply *rep = redisCommand(c, "XRANGE r:{a}:log - +");
    cr_assert_eq(rep->type, REDIS_REPLY_ARRAY);
    cr_assert_eq(rep->elements, 3);
    for (size_t i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%zu-0", i + 1);
        cr_assert_str_eq(rep->element[i]->element[0]->str, id);
    }
    freeReplyObject(rep);
    rep = redisCommand(c, "TTL r:{a}:i:ann\x1fx");
    cr_assert(rep->integer > 0 && rep->integer <= 3600, "id record TTL %lld", rep->integer);
    freeReplyObject(rep);
    redisFree(c);

    /* a known (room, from, id): its seq, nothing new */
    uint64_t seq = 0, dup = 0;
    cr_assert_eq(append_sync(E[0], "a", "ann", "text again", "x", &seq, &dup), 0);
    cr_assert_eq(dup, 2);
    cr_assert_eq(seq, 2);
    cr_assert_eq(xlen(&R1, "a"), 3, "a duplicate stores nothing");
    cr_assert_eq(last_seq(&R1, "a"), 3, "nor takes a seq");
    /* the same id from someone else, or in another room, is new */
    cr_assert_eq(append_sync(E[0], "a", "bob", "text 4", "x", &seq, &dup), 0);
    cr_assert_eq(seq, 4);
    cr_assert_eq(dup, 0);
    cr_assert_eq(append_sync(E[0], "b", "ann", "text 3", "x", &seq, &dup), 0);
    cr_assert_eq(seq, 3);
    cr_assert_eq(dup, 0);
    cr_assert_eq(xlen(&R1, "a"), 4);

    /* malformed: refused, done never called */
    struct app x;
    app_init(&x, "a", "ann", "t", "", 0);
    x.a.frame = NULL;
    cr_assert_eq(store_append(E[0], &x.a), -EINVAL);
    x.a.frame = (const char *)msg_payload(x.frame, &x.a.frame_len);
    x.a.ev.text = NULL;
    cr_assert_eq(store_append(E[0], &x.a), -EINVAL);
    x.a.ev.text = x.text;
    x.a.done = NULL;
    cr_assert_eq(store_append(E[0], &x.a), -EINVAL);
    msg_unref(&x.frame);
    cr_assert_eq(x.ndone, 0);
}

Test(store_redis, history_max_trims_the_log)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 5, 0);
    append_run(E[0], "h", 1, 12);
    cr_assert_eq(xlen(&R1, "h"), 5);
    cr_assert_eq(last_seq(&R1, "h"), 12);
    check_read(E[0], "h", SR_LATEST, 0, 10, 8, 12, false);
    check_read(E[0], "h", SR_SINCE, 0, 3, 8, 10, true);
    check_read(E[0], "h", SR_BEFORE, 9, 10, 8, 8, false);
}

Test(store_redis, reads_at_their_edges)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 1000, 0);
    /* an empty room */
    check_read(E[0], "r", SR_LATEST, 0, 5, 1, 0, false);
    check_read(E[0], "r", SR_LATEST, 0, 0, 1, 0, false);
    check_read(E[0], "r", SR_SINCE, 0, 5, 1, 0, false);
    check_read(E[0], "r", SR_BEFORE, 0, 5, 1, 0, false);
    check_read(E[0], "r", SR_BEFORE, 1, 5, 1, 0, false);
    check_read(E[0], "r", SR_BEFORE, 5, 5, 1, 0, false);

    append_run(E[0], "r", 1, 6);
    check_read(E[0], "r", SR_LATEST, 0, 3, 4, 6, true);
    check_read(E[0], "r", SR_LATEST, 0, 6, 1, 6, false); /* exactly limit */
    check_read(E[0], "r", SR_LATEST, 0, 100, 1, 6, false);
    check_read(E[0], "r", SR_LATEST, 0, 0, 1, 0, true); /* limit 0: more exist */
    check_read(E[0], "r", SR_SINCE, 0, 100, 1, 6, false);
    check_read(E[0], "r", SR_SINCE, 0, 6, 1, 6, false);
    check_read(E[0], "r", SR_SINCE, 0, 5, 1, 5, true);
    check_read(E[0], "r", SR_SINCE, 1, 2, 2, 3, true);
    check_read(E[0], "r", SR_SINCE, 2, 2, 3, 4, true);
    check_read(E[0], "r", SR_SINCE, 4, 2, 5, 6, false); /* exactly limit */
    check_read(E[0], "r", SR_SINCE, 6, 10, 1, 0, false);
    check_read(E[0], "r", SR_SINCE, 600, 10, 1, 0, false);
    check_read(E[0], "r", SR_SINCE, UINT64_MAX - 1, 10, 1, 0, false);
    check_read(E[0], "r", SR_SINCE, UINT64_MAX, 10, 1, 0, false); /* nothing is newer */
    check_read(E[0], "r", SR_SINCE, 0, 0, 1, 0, true);
    check_read(E[0], "r", SR_SINCE, 6, 0, 1, 0, false);
    check_read(E[0], "r", SR_BEFORE, 3, 5, 1, 2, false);
    check_read(E[0], "r", SR_BEFORE, 5, 2, 3, 4, true);
    check_read(E[0], "r", SR_BEFORE, 4, 3, 1, 3, false); /* exactly limit */
    check_read(E[0], "r", SR_BEFORE, 7, 6, 1, 6, false);
    check_read(E[0], "r", SR_BEFORE, 100, 2, 5, 6, true);
    check_read(E[0], "r", SR_BEFORE, 2, 5, 1, 1, false);
    check_read(E[0], "r", SR_BEFORE, 1, 5, 1, 0, false);
    check_read(E[0], "r", SR_BEFORE, 0, 5, 1, 0, false);
    check_read(E[0], "r", SR_BEFORE, 3, 0, 1, 0, true);
    /* another room's events stay apart */
    check_read(E[0], "r2", SR_LATEST, 0, 5, 1, 0, false);

    /* ids and other fields read back */
    uint64_t seq, dup;
    cr_assert_eq(append_sync(E[0], "ids", "bob", "hi \"there\"\n", "abc", &seq, &dup), 0);
    struct rdw w = {0};
    read_wait(E[0], "ids", SR_LATEST, 5, &w);
    cr_assert_eq(w.r.n, 1);
    cr_assert_str_eq(w.r.evs[0].from, "bob");
    cr_assert_str_eq(w.r.evs[0].id, "abc");
    cr_assert_str_eq(w.r.evs[0].text, "hi \"there\"\n");
    cr_assert_eq(w.r.evs[0].ts, TS0);
    store_read_release(&w.r);

    /* malformed: refused, done never called */
    struct rdw bad = {0};
    copy_str(bad.r.room, sizeof(bad.r.room), "r");
    bad.r.limit = -1;
    bad.r.done = rd_done;
    bad.r.arg = &bad;
    cr_assert_eq(store_read_submit(E[0], &bad.r), -EINVAL);
    bad.r.limit = 1;
    bad.r.done = NULL;
    cr_assert_eq(store_read_submit(E[0], &bad.r), -EINVAL);
}

Test(store_redis, subscribe_delivers_in_order_to_every_node)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 1000, 0);
    E[1] = engine_open(&R1, 1000, 1);
    append_run(E[0], "lobby", 1, 2);
    /* done reports the last seq; only later events reach the sink */
    cr_assert_eq(subscribe_sync(E[0], "lobby"), 2);
    cr_assert_eq(subscribe_sync(E[1], "lobby"), 2);
    cr_assert_eq(subscribe_sync(E[1], "empty"), 0);
    struct subw again = {.sub.done = sub_done};
    again.sub.arg = &again;
    copy_str(again.sub.room, sizeof(again.sub.room), "lobby");
    cr_assert_eq(store_subscribe(E[0], &again.sub), -EALREADY);
    cr_assert_eq(store_unsubscribe(E[0], "nowhere"), -ENOENT);

    append_run(E[0], "lobby", 3, 10);
    append_run(E[1], "lobby", 11, 14);
    bool ok;
    WAIT(ok, count_locked(0, NULL, "lobby") >= 12 && count_locked(1, NULL, "lobby") >= 12, 10000);
    cr_assert(ok, "node 0: %d, node 1: %d", count(0, NULL, "lobby"), count(1, NULL, "lobby"));
    WAIT(ok, count_locked(0, NULL, "lobby") > 12 || count_locked(1, NULL, "lobby") > 12, QUIET_MS);
    cr_assert_not(ok, "no duplicates");
    check_seqs(0, NULL, "lobby", 3, 14, true);
    check_seqs(1, NULL, "lobby", 3, 14, true);
    /* the other room stayed quiet; no gap fills were needed */
    cr_assert_eq(count(1, NULL, "empty"), 0);
    struct store_redis_stats st;
    store_redis_stats(E[1], &st);
    cr_assert_eq(st.gap_fills, 0);
    cr_assert_eq(st.dropped_dups, 0);
    cr_assert_eq(st.rooms, 2);
    struct store_stats ss;
    store_stats(E[1], &ss);
    cr_assert(ss.shared);
    cr_assert(ss.engine_up);

    /* the receiving node passes on the publisher's frame as it is */
    struct app x;
    app_init(&x, "lobby", "ann", "text 15", "", 15);
    static const char odd[] = "{\"type\":\"message\",\"room\":\"lobby\",\"seq\":,\"from\":\"ann\","
                              "\"text\":\"text 15\",\"ts\":1700000000015,\"extra\":1}";
    x.a.frame = odd;
    x.a.frame_len = sizeof(odd) - 1;
    x.a.frame_seq_at = (size_t)(strstr(odd, "\"seq\":") - odd) + 6;
    cr_assert_eq(store_append(E[0], &x.a), 0);
    app_wait(&x, 10000);
    cr_assert_eq(x.a.status, 0);
    cr_assert_eq(x.a.seq, 15);
    WAIT(ok, count_locked(1, NULL, "lobby") == 13, 10000);
    cr_assert(ok);
    pthread_mutex_lock(&T.mu);
    struct rec_ev last = T.rec[1].ev[T.rec[1].nev - 1];
    pthread_mutex_unlock(&T.mu);
    cr_assert_eq(last.seq, 15);
    cr_assert_str_eq(last.text, "text 15");
    cr_assert_str_eq(last.json, "{\"type\":\"message\",\"room\":\"lobby\",\"seq\":15,\"from\":"
                                "\"ann\",\"text\":\"text 15\",\"ts\":1700000000015,\"extra\":1}");

    /* typing goes to the room's subscribers */
    cr_assert_eq(store_ephemeral(E[0], "lobby", 't', "ann"), 0);
    WAIT(ok, T.rec[1].neph == 1 && T.rec[0].neph == 1, 10000);
    cr_assert(ok);
    cr_assert_str_eq(T.rec[1].eph[0].room, "lobby");
    cr_assert_eq(T.rec[1].eph[0].kind, 't');
    cr_assert_str_eq(T.rec[1].eph[0].user, "ann");
}

/* ---- every event kind, with its body */

#define KT_N 5
static char kt_big[STORE_BODY_MAX + 1];
static const char kt_nul[] = {'a', '\0', 'b', '\0', '\0', 'c'};

/* What seq k (1..KT_N) of room "kr" holds. Seq 5 resends seq 1's id. */
static void kt_event(uint64_t k, int *kind, const char **text, const void **body, size_t *bl,
                     const char **id)
{
    static const int kinds[KT_N] = {7, STORE_KIND_MAX, 3, EV_MESSAGE, 7};
    static const char *const texts[KT_N] = {"", "", "t3", "m4", ""};
    static const char *const ids[KT_N] = {"e1", "", "", "", "e1"};
    *kind = kinds[k - 1];
    *text = texts[k - 1];
    *id = ids[k - 1];
    *body = k == 1 ? kt_nul : k == 3 ? kt_big : k == 5 ? "z" : NULL;
    *bl = k == 1 ? sizeof(kt_nul) : k == 3 ? STORE_BODY_MAX : k == 5 ? 1 : 0;
}

/* e (seq k) as kt_event says, from "kim" */
static void kt_check(uint64_t k, int kind, const char *text, const char *id, size_t bl,
                     const void *body_first, uint64_t hash)
{
    int wk;
    const char *wt, *wid;
    const void *wb;
    size_t wbl;
    kt_event(k, &wk, &wt, &wb, &wbl, &wid);
    cr_assert_eq(kind, wk, "seq %" PRIu64 ": kind %d", k, kind);
    cr_assert_str_eq(text, wt, "seq %" PRIu64, k);
    cr_assert_str_eq(id, wid, "seq %" PRIu64, k);
    cr_assert_eq(bl, wbl, "seq %" PRIu64 ": body_len %zu", k, bl);
    if (wbl)
        cr_assert_eq(memcmp(body_first, wb, wbl < 16 ? wbl : 16), 0, "seq %" PRIu64 ": body", k);
    cr_assert_eq(hash, body_hash(wb, wbl), "seq %" PRIu64 ": body", k);
}

Test(store_redis, kinds_and_bodies_round_trip)
{
    for (size_t i = 0; i < sizeof(kt_big); i++)
        kt_big[i] = (char)(i * 7 + 1);
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 1000, 0);
    E[1] = engine_open(&R1, 1000, 1);
    cr_assert_eq(subscribe_sync(E[1], "kr"), 0);

    /* appended on one node: published to the other, with kind and body */
    for (uint64_t k = 1; k <= KT_N; k++) {
        int kind;
        const char *text, *id;
        const void *body;
        size_t bl;
        kt_event(k, &kind, &text, &body, &bl, &id);
        struct app x;
        app_init(&x, "kr", "kim", text, id, (int64_t)k);
        x.a.ev.kind = (enum room_event_kind)kind;
        if (k == 1) {
            x.a.ev.text = NULL; /* none: stored as "" */
            x.a.ev.text_len = 0;
        }
        x.a.ev.body = body;
        x.a.ev.body_len = bl;
        cr_assert_eq(store_append(E[0], &x.a), 0, "seq %" PRIu64, k);
        app_wait(&x, 10000);
        cr_assert_eq(x.a.status, 0);
        if (k == KT_N) {
            cr_assert_eq(x.a.dup_seq, 1, "an id resend of another kind: the original seq");
        } else {
            cr_assert_eq(x.a.seq, k);
            cr_assert_eq(x.a.dup_seq, 0);
        }
    }
    bool ok;
    WAIT(ok, count_locked(1, NULL, "kr") >= KT_N - 1, 10000);
    cr_assert(ok, "%d events", count(1, NULL, "kr"));
    WAIT(ok, count_locked(1, NULL, "kr") > KT_N - 1, QUIET_MS);
    cr_assert_not(ok, "the resend published nothing");
    pthread_mutex_lock(&T.mu);
    struct rec_ev seen[KT_N - 1];
    for (int i = 0, n = 0; i < T.rec[1].nev; i++)
        if (ev_match(&T.rec[1].ev[i], NULL, "kr"))
            seen[n++] = T.rec[1].ev[i];
    pthread_mutex_unlock(&T.mu);
    for (uint64_t k = 1; k < KT_N; k++) {
        const struct rec_ev *e = &seen[k - 1];
        cr_assert_eq(e->seq, k);
        cr_assert_str_eq(e->from, "kim");
        cr_assert_eq(e->ts, TS0 + (int64_t)k);
        kt_check(k, e->kind, e->text, e->id, e->body_len, e->body, e->body_hash);
        cr_assert(e->has_json, "a published event carries its frame");
    }

    /* the stream entries: k and b only where they say something */
    redisContext *c = rconn(&R1);
    redisReply *rep = redisCommand(c, "XRANGE r:{kr}:log - +");
    cr_assert_eq(rep->type, REDIS_REPLY_ARRAY);
    cr_assert_eq(rep->elements, KT_N - 1);
    static const size_t nfields[KT_N - 1] = {12, 10, 12, 8};
    for (size_t i = 0; i < rep->elements; i++)
        cr_assert_eq(rep->element[i]->element[1]->elements, nfields[i], "entry %zu", i + 1);
    freeReplyObject(rep);

    /* history: read from the stream entries */
    struct rdw w = {0};
    read_wait(E[0], "kr", SR_SINCE, 10, &w);
    cr_assert_eq(w.r.status, 0);
    cr_assert_eq(w.r.n, KT_N - 1);
    for (size_t i = 0; i < w.r.n; i++) {
        const struct room_event *e = &w.r.evs[i];
        cr_assert_eq(e->seq, i + 1);
        cr_assert((e->body == NULL) == (e->body_len == 0));
        kt_check(i + 1, (int)e->kind, e->text, e->id, e->body_len, e->body,
                 body_hash(e->body, e->body_len));
    }
    store_read_release(&w.r);

    /* a fill: seqs 5..7 are in the log, only 7 is published; 5 (kind 7,
     * with a body) and 6 (a message) come from the log, 5 without a frame
     * (the engine encodes messages only) */
    rep = redisCommand(c, "XADD r:{kr}:log 5-0 f kim t %" PRId64 " i %s x %s k 7 b %b",
                       TS0 + 5, "", "", kt_nul, sizeof(kt_nul));
    cr_assert_eq(rep->type, REDIS_REPLY_STRING);
    freeReplyObject(rep);
    rep = redisCommand(c, "SET r:{kr}:seq 5");
    freeReplyObject(rep);
    hand_append(c, "kr", 6);
    hand_append(c, "kr", 7);
    hand_publish(c, "kr", 7);
    WAIT(ok, count_locked(1, NULL, "kr") >= KT_N + 2, 10000);
    cr_assert(ok, "%d events", count(1, NULL, "kr"));
    pthread_mutex_lock(&T.mu);
    struct rec_ev filled[3];
    for (int i = 0, n = 0; i < T.rec[1].nev; i++)
        if (ev_match(&T.rec[1].ev[i], NULL, "kr") && T.rec[1].ev[i].seq >= 5 && n < 3)
            filled[n++] = T.rec[1].ev[i];
    pthread_mutex_unlock(&T.mu);
    cr_assert_eq(filled[0].seq, 5);
    cr_assert_eq(filled[0].kind, 7);
    cr_assert_eq(filled[0].body_len, sizeof(kt_nul));
    cr_assert_eq(memcmp(filled[0].body, kt_nul, sizeof(kt_nul)), 0);
    cr_assert_not(filled[0].has_json, "no frame for a kind the codec does not know");
    for (int i = 1; i < 3; i++) {
        cr_assert_eq(filled[i].seq, 5 + (uint64_t)i);
        cr_assert_eq(filled[i].kind, EV_MESSAGE);
        cr_assert_eq(filled[i].body_len, 0);
        cr_assert(filled[i].has_json);
        expect_json(&filled[i]);
    }
    struct store_redis_stats st;
    store_redis_stats(E[1], &st);
    cr_assert_eq(st.filled, 2, "5 and 6 came from the log");
    cr_assert_eq(st.lost, 0);

    /* refused before anything is sent */
    struct app x;
    app_init(&x, "kr", "kim", "", "", 9);
    x.a.ev.kind = (enum room_event_kind)5;
    x.a.ev.body = kt_big;
    x.a.ev.body_len = STORE_BODY_MAX + 1;
    cr_assert_eq(store_append(E[0], &x.a), -EINVAL);
    x.a.ev.body_len = 1;
    x.a.ev.kind = (enum room_event_kind)(STORE_KIND_MAX + 1);
    cr_assert_eq(store_append(E[0], &x.a), -EINVAL);
    msg_unref(&x.frame);
    redisFree(c);
}

Test(store_redis, seq_jump_is_filled_from_the_log)
{
    one_node_with(false, "g", 1);
    bool ok;

    /* 2 and 3 are in the log; only 3 (and then 4) is published */
    redisContext *c = rconn(&R1);
    hand_append(c, "g", 2);
    hand_append(c, "g", 3);
    hand_append(c, "g", 4);
    hand_publish(c, "g", 3);
    hand_publish(c, "g", 4);
    WAIT(ok, count_locked(0, NULL, "g") >= 4, 10000);
    cr_assert(ok, "%d events", count(0, NULL, "g"));
    struct store_redis_stats st;
    store_redis_stats(E[0], &st);
    cr_assert_geq(st.gap_fills, 1);
    cr_assert_eq(st.filled, 1, "seq 2 came from the log");
    cr_assert_eq(st.lost, 0);

    /* old seqs published again are dropped */
    redisReply *rep;
    uint64_t dups = st.dropped_dups;
    hand_publish(c, "g", 2);
    hand_publish(c, "g", 4);
    long long deadline = mono_ms() + 10000;
    while (st.dropped_dups < dups + 2 && mono_ms() < deadline) {
        struct timespec ts = {0, 5 * 1000000L};
        nanosleep(&ts, NULL);
        store_redis_stats(E[0], &st);
    }
    cr_assert_eq(st.dropped_dups, dups + 2);
    /* malformed payloads (a new seq, but cut short or lying about their
     * lengths) are dropped whole */
    char good[700];
    int gl = hand_payload(good, sizeof(good), "g", 5);
    static const char *const bad[] = {
        "m5", "m5\n", "m\n1 0 1 3 0 2 0\ngannx5", "m5\n1 0 1 3 0 9 0\ngannx5{}",
        "m5\n1 0 0 3 0 2 0\nann5{}", "m5\n1 0 1 3 0 2 0\ngann",
        "m5\n1 0 1 3 99999999999999999999 2 0\ngann", "m5\n1 0 1 3 0 2 0\ngannx5",
        "m5\n-1 0 1 3 0 2 0\ngannx5{}", "x5\n1 0 1 3 0 2 0\ngannx5{}",
        /* the kind and body fields: missing, out of bounds, lying */
        "m5\n1 1 3 0 2\ngannx5{}", "m5\n1 0 1 3 0 2\ngannx5{}",
        "m5\n1 256 1 3 0 2 0\ngannx5{}", "m5\n1 x 1 3 0 2 0\ngannx5{}",
        "m5\n1 0 1 3 0 2 4097\ngannx5{}", "m5\n1 0 1 3 0 2 3\ngannx5{}",
        "m5\n1 0 1 3 0 2 99999999999999999999\ngannx5{}", "m5\n1 0 1 3 0 2 1\ngannx5{}",
        "m5\n1 0 1 3 0 2 0 \ngannx5{}", "m5\n1 7 1 3 0 2 2\ngannx5bb"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rep = redisCommand(c, "PUBLISH r:{g} %s", bad[i]);
        freeReplyObject(rep);
    }
    for (int cut = 1; cut < gl; cut += 7) {
        rep = redisCommand(c, "PUBLISH r:{g} %b", good, (size_t)cut);
        freeReplyObject(rep);
    }
    WAIT(ok, count_locked(0, NULL, "g") > 4, QUIET_MS);
    cr_assert_not(ok, "nothing more delivered");
    check_seqs(0, NULL, "g", 1, 4, true);

    /* a jump over seqs the log does not have (trimmed): counted lost, then
     * delivery goes on */
    hand_append(c, "g", 5);
    rep = redisCommand(c, "SET r:{g}:seq 9");
    freeReplyObject(rep);
    hand_append(c, "g", 10);
    hand_publish(c, "g", 10);
    WAIT(ok, count_locked(0, NULL, "g") >= 6, 10000);
    cr_assert(ok, "%d events", count(0, NULL, "g"));
    store_redis_stats(E[0], &st);
    cr_assert_eq(st.lost, 4, "6..9");
    append_run(E[0], "g", 11, 11);
    WAIT(ok, count_locked(0, NULL, "g") >= 7, 10000);
    cr_assert(ok);
    pthread_mutex_lock(&T.mu);
    uint64_t seqs[7];
    for (int i = 0, k = 0; i < T.rec[0].nev; i++)
        if (ev_match(&T.rec[0].ev[i], NULL, "g") && k < 7)
            seqs[k++] = T.rec[0].ev[i].seq;
    pthread_mutex_unlock(&T.mu);
    static const uint64_t want[7] = {1, 2, 3, 4, 5, 10, 11};
    for (int i = 0; i < 7; i++)
        cr_assert_eq(seqs[i], want[i], "[%d] %" PRIu64, i, seqs[i]);
    redisFree(c);
}

/* Redis dies and comes back from its AOF; meanwhile another node appended
 * (to the same data, on another port, so this node's subscriber cannot
 * have seen it). */
Test(store_redis, reconnect_fills_what_was_missed)
{
    one_node_with(true, "k", 3);
    bool ok;

    redis_proc_kill(&R1);
    WAIT(ok, T.rec[0].nstate >= 1, 10000);
    cr_assert(ok, "state change seen");
    cr_assert_not(T.rec[0].state[0]);
    cr_assert_not(store_up(E[0]));
    /* an append while down fails, once */
    struct app x;
    app_init(&x, "k", "ann", "lost", "", 0);
    cr_assert_eq(store_append(E[0], &x.a), 0);
    app_wait(&x, 10000);
    cr_assert_lt(x.a.status, 0);
    WAIT(ok, x.ndone > 1, QUIET_MS);
    cr_assert_not(ok, "done once");

    /* the same data on another port: a second node appends 4..6 */
    int port = R1.port;
    R1.port = redis_proc_free_port();
    cr_assert_eq(redis_proc_restart(&R1), 0);
    E[1] = engine_open(&R1, 1000, 1);
    append_run(E[1], "k", 4, 6);
    store_close(E[1]);
    E[1] = NULL;
    redis_proc_kill(&R1);
    R1.port = port;
    cr_assert_eq(redis_proc_restart(&R1), 0);

    WAIT(ok, T.rec[0].nstate >= 2, 20000);
    cr_assert(ok, "back up");
    cr_assert(T.rec[0].state[1]);
    cr_assert(store_up(E[0]));
    WAIT(ok, count_locked(0, NULL, "k") >= 6, 10000);
    cr_assert(ok, "%d events", count(0, NULL, "k"));
    append_run(E[0], "k", 7, 8);
    WAIT(ok, count_locked(0, NULL, "k") >= 8, 10000);
    cr_assert(ok, "%d events", count(0, NULL, "k"));
    WAIT(ok, count_locked(0, NULL, "k") > 8, QUIET_MS);
    cr_assert_not(ok, "no duplicates");
    check_seqs(0, NULL, "k", 1, 8, true);
    struct store_redis_stats st;
    store_redis_stats(E[0], &st);
    cr_assert_geq(st.gap_fills, 1);
    cr_assert_eq(st.filled, 3);
    cr_assert_eq(st.lost, 0);
    struct store_stats ss;
    store_stats(E[0], &ss);
    cr_assert_geq(ss.engine_reconnects, 1);
    WAIT(ok, T.rec[0].nstate > 2, QUIET_MS);
    cr_assert_not(ok, "down once, up once");
}

/* Redis comes back without its data (no AOF): the room's seq must not go
 * back, or every node would drop the new events as repeats. */
Test(store_redis, redis_losing_its_data_does_not_take_seqs_back)
{
    one_node_with(false, "z", 5);
    bool ok;

    redis_proc_kill(&R1);
    cr_assert_eq(redis_proc_restart(&R1), 0);
    WAIT(ok, T.rec[0].nstate >= 2, 20000);
    cr_assert(ok, "back up");
    /* the node raised the room's seq to what it delivered on its return */
    struct store_redis_stats st;
    long long deadline = mono_ms() + 10000;
    /* polls with a pause: a spinning poll starves the engine's thread under
     * valgrind, which runs one thread at a time */
    store_redis_stats(E[0], &st);
    while (st.reseeded < 1 && mono_ms() < deadline) {
        nanosleep(&(struct timespec){0, 5 * 1000000L}, NULL);
        store_redis_stats(E[0], &st);
    }
    cr_assert_eq(st.reseeded, 1);
    redisContext *c = rconn(&R1);
    redisReply *rep = redisCommand(c, "GET r:{z}:seq");
    cr_assert_str_eq(rep->str, "5");
    freeReplyObject(rep);

    /* a node that never saw the room sends: it goes on at 6 */
    E[1] = engine_open(&R1, 1000, 1);
    append_run(E[1], "z", 6, 6);
    /* Redis loses it again, under a running node: its send carries the
     * last seq it delivered, and the room goes on above it */
    WAIT(ok, count_locked(0, NULL, "z") == 6, 10000);
    cr_assert(ok);
    rep = redisCommand(c, "FLUSHALL");
    freeReplyObject(rep);
    append_run(E[0], "z", 7, 7);
    WAIT(ok, count_locked(0, NULL, "z") == 7, 10000);
    cr_assert(ok, "%d events", count(0, NULL, "z"));
    check_seqs(0, NULL, "z", 1, 7, true);
    store_redis_stats(E[0], &st);
    cr_assert_eq(st.dropped_dups, 0);
    redisFree(c);
}

static atomic_int live_calls;

static void on_live(void *arg)
{
    (void)arg;
    atomic_fetch_add(&live_calls, 1);
}

Test(store_redis, dm_reaches_user_channels)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 1000, 0);
    E[1] = engine_open(&R1, 1000, 1);
    const char *room = "dm:alice:bob";
    cr_assert_eq(store_user_subscribe(E[0], "alice", on_live, NULL), 0);
    cr_assert_eq(store_user_subscribe(E[1], "bob", on_live, NULL), 0);
    cr_assert_eq(store_user_subscribe(E[1], "alice", NULL, NULL), 0);
    bool ok;
    WAIT(ok, atomic_load(&live_calls) == 2, 10000);
    cr_assert(ok, "%d live calls", atomic_load(&live_calls));
    /* live means Redis has the subscription (it counted it before it
     * confirmed it), so whatever is published from now on reaches us */
    redisContext *rc = rconn(&R1);
    cr_assert_geq(numsub(rc, "u:{bob}"), 1);
    cr_assert_eq(store_user_subscribe(E[0], "alice", on_live, NULL), 1, "live already");
    cr_assert_eq(store_user_unsubscribe(E[0], "carol"), -ENOENT);
    /* whoever waits for a channel unsubscribed before it was live is told */
    cr_assert_eq(store_user_subscribe(E[0], "dave", on_live, NULL), 0);
    cr_assert_eq(store_user_unsubscribe(E[0], "dave"), 0);
    WAIT(ok, atomic_load(&live_calls) == 3, 10000);
    cr_assert(ok);
    WAIT(ok, atomic_load(&live_calls) > 3, QUIET_MS);
    cr_assert_not(ok, "each waiter once");
    wait_numsub(&R1, "u:{dave}", 0);
    redisFree(rc);
    cr_assert_eq(subscribe_sync(E[0], room), 0);
    wait_numsub(&R1, "u:{alice}", 2);
    wait_numsub(&R1, "u:{bob}", 1);

    append_run(E[0], room, 1, 2);
    WAIT(ok,
         count_locked(0, "alice", room) == 2 && count_locked(0, NULL, room) == 2 &&
             count_locked(1, "alice", room) == 2 && count_locked(1, "bob", room) == 2,
         10000);
    cr_assert(ok);
    WAIT(ok, T.rec[0].nev > 4 || T.rec[1].nev > 4, QUIET_MS);
    cr_assert_not(ok, "each once");
    check_seqs(0, "alice", room, 1, 2, true);
    check_seqs(0, NULL, room, 1, 2, true);
    check_seqs(0, "bob", room, 1, 0, true);
    check_seqs(1, "alice", room, 1, 2, true);
    check_seqs(1, "bob", room, 1, 2, true);
    check_seqs(1, NULL, room, 1, 0, true);

    /* a DM to oneself goes to that user's channel once */
    append_run(E[0], "dm:alice:alice", 1, 1);
    WAIT(ok, count_locked(0, "alice", "dm:alice:alice") == 1, 10000);
    cr_assert(ok);

    /* an unsubscribed user's channel no longer delivers */
    cr_assert_eq(store_user_unsubscribe(E[1], "bob"), 0);
    wait_numsub(&R1, "u:{bob}", 0);
    append_run(E[0], room, 3, 3);
    WAIT(ok, count_locked(1, "alice", room) == 3, 10000);
    cr_assert(ok);
    WAIT(ok, count_locked(1, "bob", room) > 2, QUIET_MS);
    cr_assert_not(ok);
    check_seqs(1, "alice", room, 1, 3, true);
}

/* A waiter on eve's channel that subscribes it again at once, as a hello
 * on another loop does while the user's last connection here leaves. */
static void resubscribe_eve(void *arg)
{
    store_user_subscribe(arg, "eve", NULL, NULL);
    atomic_fetch_add(&live_calls, 1);
}

/* An unsubscribe that a subscribe of the same user's channel follows at
 * once, on another thread, leaves the channel subscribed on the
 * connection whenever the engine counts it as live: never a channel the
 * engine thinks it has that Redis no longer sends. (The unsubscribe runs
 * the channel's waiters: one of them subscribes it again, so the second
 * call lands inside the first, deterministically.) */
Test(store_redis, user_channel_resubscribed_during_unsubscribe)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 1000, 0);
    atomic_store(&live_calls, 0);
    cr_assert_eq(store_user_subscribe(E[0], "eve", resubscribe_eve, E[0]), 0);
    cr_assert_eq(store_user_unsubscribe(E[0], "eve"), 0);
    cr_assert_eq(atomic_load(&live_calls), 1);
    bool ok;
    /* the engine has eve's channel (again): Redis must send it */
    WAIT(ok, store_user_subscribe(E[0], "eve", NULL, NULL) == 1, 10000);
    cr_assert(ok, "the channel never became live again");
    struct store_stats ss;
    store_stats(E[0], &ss);
    cr_assert_eq(ss.engine_subscriptions, 1, "the engine counts eve's channel live, but it is "
                                             "not subscribed");
    wait_numsub(&R1, "u:{eve}", 1);
}

Test(store_redis, unsubscribe_stops_and_resubscribe_starts_at_last)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 1000, 0);
    E[1] = engine_open(&R1, 1000, 1);
    cr_assert_eq(subscribe_sync(E[0], "u"), 0);
    append_run(E[1], "u", 1, 2);
    bool ok;
    WAIT(ok, count_locked(0, NULL, "u") == 2, 10000);
    cr_assert(ok);
    struct store_redis_stats st;
    store_redis_stats(E[0], &st);
    cr_assert_eq(st.rooms, 1);

    cr_assert_eq(store_unsubscribe(E[0], "u"), 0);
    store_redis_stats(E[0], &st);
    cr_assert_eq(st.rooms, 0);
    wait_numsub(&R1, "r:{u}", 0);
    append_run(E[1], "u", 3, 5);
    WAIT(ok, count_locked(0, NULL, "u") > 2, QUIET_MS);
    cr_assert_not(ok, "nothing after unsubscribe");
    cr_assert_eq(store_unsubscribe(E[0], "u"), -ENOENT);

    cr_assert_eq(subscribe_sync(E[0], "u"), 5);
    append_run(E[1], "u", 6, 7);
    WAIT(ok, count_locked(0, NULL, "u") >= 4, 10000);
    cr_assert(ok);
    WAIT(ok, count_locked(0, NULL, "u") > 4, QUIET_MS);
    cr_assert_not(ok);
    pthread_mutex_lock(&T.mu);
    uint64_t seqs[4];
    for (int i = 0; i < 4; i++)
        seqs[i] = T.rec[0].ev[i].seq;
    pthread_mutex_unlock(&T.mu);
    cr_assert(seqs[0] == 1 && seqs[1] == 2 && seqs[2] == 6 && seqs[3] == 7,
              "%" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64, seqs[0], seqs[1], seqs[2], seqs[3]);
    store_redis_stats(E[0], &st);
    cr_assert_eq(st.gap_fills, 0, "a new subscription does not fill from the old one");

    /* unsubscribe before the subscribe's done: done still runs once */
    struct subw w = {.sub.done = sub_done};
    w.sub.arg = &w;
    copy_str(w.sub.room, sizeof(w.sub.room), "v");
    cr_assert_eq(store_subscribe(E[0], &w.sub), 0);
    cr_assert_eq(store_unsubscribe(E[0], "v"), 0);
    WAIT(ok, w.ndone >= 1, 10000);
    cr_assert(ok);
    WAIT(ok, w.ndone > 1, QUIET_MS);
    cr_assert_not(ok, "done once");
    cr_assert_eq(subscribe_sync(E[0], "v"), 0);
}

Test(store_redis, up_follows_a_stopped_redis)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 1000, 0);
    cr_assert_eq(subscribe_sync(E[0], "s"), 0);
    cr_assert(store_up(E[0]));
    redis_proc_pause(&R1);
    bool ok;
    /* the heartbeat's reply deadline notices (3 s by default) */
    WAIT(ok, T.rec[0].nstate >= 1, 20000);
    cr_assert(ok, "down seen");
    cr_assert_not(T.rec[0].state[0]);
    cr_assert_not(store_up(E[0]));
    struct store_stats ss;
    store_stats(E[0], &ss);
    cr_assert_not(ss.engine_up);
    redis_proc_resume(&R1);
    WAIT(ok, T.rec[0].nstate >= 2, 30000);
    cr_assert(ok, "up again");
    cr_assert(T.rec[0].state[1]);
    cr_assert(store_up(E[0]));
    store_stats(E[0], &ss);
    cr_assert(ss.engine_up);
    cr_assert_geq(ss.engine_reconnects, 1);
    /* and the subscription works again */
    append_run(E[0], "s", 1, 2);
    WAIT(ok, count_locked(0, NULL, "s") >= 2, 10000);
    cr_assert(ok);
    check_seqs(0, NULL, "s", 1, 2, true);
}

/* A hello waits for its user's channel: with Redis stalled or gone, the
 * wait still ends (the channel comes back with Redis), bounded by the
 * reply timeout (3 s by default), never held until Redis returns. */
Test(store_redis, user_channel_wait_ends_while_redis_is_away)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 1000, 0);
    atomic_store(&live_calls, 0);
    bool ok;
    redis_proc_pause(&R1);
    cr_assert_eq(store_user_subscribe(E[0], "frank", on_live, NULL), 0);
    WAIT(ok, atomic_load(&live_calls) == 1, 15000);
    cr_assert(ok, "a stalled Redis held the wait");
    /* down now: told at once */
    cr_assert_eq(store_user_subscribe(E[0], "grace", on_live, NULL), 0);
    WAIT(ok, atomic_load(&live_calls) == 2, 5000);
    cr_assert(ok, "a Redis that is down held the wait");
    WAIT(ok, atomic_load(&live_calls) > 2, QUIET_MS);
    cr_assert_not(ok, "each waiter once");
    redis_proc_resume(&R1);
    /* and both channels are subscribed again once it is back */
    wait_numsub(&R1, "u:{frank}", 1);
    wait_numsub(&R1, "u:{grace}", 1);
}

/* More arrives while a gap is filled than the engine holds (HOLD_MAX,
 * 4096): what it drops must still come, from the log, without waiting for
 * a later message. The fill's reply is made large (1000 entries of 16 KB)
 * so that the 5000 messages published behind the jump arrive while it is
 * in flight. */
/* A fill is under way (seq 2..BIG+1 are in the log, the first published
 * is BIG+2) while `after` more arrive, each with a text of after_text
 * bytes (0: short): more than the hold takes, in count or in bytes. */
static void hold_overflow_case(int after, size_t after_text)
{
    enum { BIG = 1000, BIG_TEXT = 16 * 1024 };
    const uint64_t jump = 1 + BIG + 1, last = jump + (uint64_t)after - 1;
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    E[0] = engine_open(&R1, 100000, 0);
    pthread_mutex_lock(&T.mu);
    copy_str(T.rec[0].track, sizeof(T.rec[0].track), "o");
    pthread_mutex_unlock(&T.mu);
    cr_assert_eq(subscribe_sync(E[0], "o"), 0);
    append_run(E[0], "o", 1, 1);

    redisContext *c = rconn(&R1);
    size_t bl = BIG_TEXT > after_text ? BIG_TEXT : after_text;
    char *big = malloc(bl + 1), *late = malloc(after_text + 1);
    memset(big, 'b', BIG_TEXT);
    big[BIG_TEXT] = '\0';
    memset(late, 'l', after_text);
    late[after_text] = '\0';
    char id[32], ts[32], t[64];
    for (uint64_t k = 2; k <= last; k++) {
        snprintf(id, sizeof(id), "%" PRIu64 "-0", k);
        snprintf(ts, sizeof(ts), "%" PRId64, TS0 + (int64_t)k);
        text_of(t, sizeof(t), k);
        redisAppendCommand(c, "INCR r:{o}:seq");
        redisAppendCommand(c, "XADD r:{o}:log %s f ann t %s i %s x %s", id, ts, "",
                           k < jump ? big : after_text ? late : t);
    }
    for (uint64_t k = 2; k <= last; k++) {
        redisReply *rep = NULL;
        cr_assert_eq(redisGetReply(c, (void **)&rep), REDIS_OK);
        cr_assert_neq(rep->type, REDIS_REPLY_ERROR, "%s", rep->str);
        freeReplyObject(rep);
        cr_assert_eq(redisGetReply(c, (void **)&rep), REDIS_OK);
        cr_assert_neq(rep->type, REDIS_REPLY_ERROR, "%s", rep->str);
        freeReplyObject(rep);
    }
    free(big);
    /* published in one pipeline: the first is a jump that starts the fill */
    size_t psz = 2 * after_text + 700;
    char *payload = malloc(psz);
    for (uint64_t k = jump; k <= last; k++) {
        int n = hand_payload_text(payload, psz, "o", k, after_text ? late : NULL);
        redisAppendCommand(c, "PUBLISH r:{o} %b", payload, (size_t)n);
    }
    free(payload);
    free(late);
    for (uint64_t k = jump; k <= last; k++) {
        redisReply *rep = NULL;
        cr_assert_eq(redisGetReply(c, (void **)&rep), REDIS_OK);
        freeReplyObject(rep);
    }
    redisFree(c);

    bool ok;
    WAIT(ok, T.rec[0].track_n >= (int)last, 30000);
    pthread_mutex_lock(&T.mu);
    int n = T.rec[0].track_n, bad = T.rec[0].track_bad;
    uint64_t at = T.rec[0].track_last;
    pthread_mutex_unlock(&T.mu);
    cr_assert(ok, "%d of %" PRIu64 " events delivered (last seq %" PRIu64 ")", n, last, at);
    WAIT(ok, T.rec[0].track_n > (int)last, QUIET_MS);
    cr_assert_not(ok, "no duplicates");
    cr_assert_eq(bad, 0, "in order, no gap");
    struct store_redis_stats st;
    store_redis_stats(E[0], &st);
    cr_assert_eq(st.lost, 0);
    cr_assert_geq(st.filled, BIG);
    /* the jump's fill, then the one for what was dropped (without it this
     * test did not overflow the hold and proves nothing) */
    cr_assert_geq(st.gap_fills, 2, "gap fills: %" PRIu64, st.gap_fills);
    cr_assert_gt(st.filled, BIG, "filled: %" PRIu64, st.filled);
}

Test(store_redis, hold_overflow_is_read_back)
{
    hold_overflow_case(5000, 0); /* past HOLD_MAX messages */
}

Test(store_redis, hold_overflow_in_bytes_is_read_back)
{
    hold_overflow_case(400, 16 * 1024); /* 400 < HOLD_MAX, but 6.4 MB held */
}
