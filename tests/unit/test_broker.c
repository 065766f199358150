/*
 * Unit tests for broker: the real broker, rooms, clients, queues, messages
 * and codec over the in-memory store (tests/fakes/fake_store), driven the
 * way an I/O loop drives them (broker_connected/frame/disconnected) but
 * with the test as every client's home loop:
 *
 *   - publish and fan-out: every member's queue gets the messages in seq
 *     order, one encoding shared by all members, and the sender's ack comes
 *     only once the store has committed the write;
 *   - idempotent resend: same id -> same seq, no second fan-out, the ack
 *     after a barrier, also while the original is still uncommitted;
 *   - join {since} and history {before, limit} ranges at every edge, from
 *     the in-memory window and, below it, from the store;
 *   - DM permissions; slow consumers (4008 on count and on bytes);
 *   - a disconnect while writes are in flight or while others publish;
 *   - a store that refuses a submit (the seq is not used) or fails a
 *     commit: `error internal` to the sender.
 *
 * The I/O side is a recording client_io (rec_io below): posted jobs wait in
 * a list until the test runs them (settle), as a home loop would run them
 * later. Nothing here links the loop or libwebsockets.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "client.h"
#include "config.h"
#include "counters.h"
#include "fake_store.h"
#include "ratelimit.h"
#include "server.h"
#include "store.h"

#define QMAX 1024
#define QBYTES (1u << 22)

/* ------------------------------------------------------- recording I/O */

struct job {
    struct job *next;
    void (*fn)(void *);
    void *arg;
};

static struct fx {
    struct config cfg;
    struct server srv;
    store_t *st;
    struct broker *b;
    pthread_mutex_t jobs_lock;
    struct job *jobs, **jobs_tail; /* {jobs_lock} posted, not yet run */
    _Atomic int wakes, releases, flows_off, flows_on;
    struct client *conns[16];      /* connected, not yet disconnected */
    int nconns;
} F;

static void rec_wake(void *arg, struct client *c)
{
    (void)arg;
    (void)c;
    atomic_fetch_add(&F.wakes, 1);
}

/* Any thread (room loads finish on the store's thread). */
static int rec_post(void *arg, void (*fn)(void *fnarg), void *fnarg)
{
    (void)arg;
    struct job *j = calloc(1, sizeof(*j));
    j->fn = fn;
    j->arg = fnarg;
    pthread_mutex_lock(&F.jobs_lock);
    *F.jobs_tail = j;
    F.jobs_tail = &j->next;
    pthread_mutex_unlock(&F.jobs_lock);
    return 0;
}

static void rec_rx_flow(void *arg, struct client *c, bool on)
{
    (void)arg;
    (void)c;
    atomic_fetch_add(on ? &F.flows_on : &F.flows_off, 1);
}

static void rec_release(void *arg)
{
    (void)arg;
    atomic_fetch_add(&F.releases, 1);
}

static const struct client_io rec_io = {
    .wake = rec_wake, .post = rec_post, .rx_flow = rec_rx_flow, .release = rec_release,
};

/* Run the posted jobs, in order; false if there were none. */
static bool run_posted(void)
{
    pthread_mutex_lock(&F.jobs_lock);
    struct job *j = F.jobs;
    F.jobs = NULL;
    F.jobs_tail = &F.jobs;
    pthread_mutex_unlock(&F.jobs_lock);
    bool any = j != NULL;
    while (j) {
        struct job *n = j->next;
        j->fn(j->arg);
        free(j);
        j = n;
    }
    return any;
}

/* Let the store finish what it may (not what is held) and the home loop
 * run what that posted, until both are quiet. */
static void settle(void)
{
    for (int i = 0; i < 1000; i++) {
        fake_store_drain(F.st);
        if (!run_posted())
            return;
    }
    cr_assert_fail("settle: the store and the posted jobs never went quiet");
}

/* ------------------------------------------------------------- fixture */

static void setup(void)
{
    char err[256];
    char *argv[] = {"parleyd", NULL};
    memset(&F, 0, sizeof(F));
    pthread_mutex_init(&F.jobs_lock, NULL);
    F.jobs_tail = &F.jobs;
    cr_assert_eq(cfg_parse(&F.cfg, 1, argv, stdout, err, sizeof(err)), CFG_OK, "%s", err);
    /* rate limits out of the way: these tests are about semantics */
    F.cfg.rate = F.cfg.burst = 1e6;
    F.cfg.join_rate = F.cfg.join_burst = 1e6;
    F.cfg.max_new_rooms = 1e6;
    F.srv.cfg = &F.cfg;
    F.st = fake_store_new();
    F.srv.store = F.st;
    F.srv.counters = counters_new();
    F.srv.ratelimit = ratelimit_new(F.cfg.rate, F.cfg.burst);
    F.b = broker_new(&F.srv, err, sizeof(err));
    cr_assert_not_null(F.b, "broker_new: %s", err);
    F.srv.broker = F.b;
}

/* As ws.c does when a socket closes. */
static void disconnect(struct client *c)
{
    for (int i = 0; i < F.nconns; i++) {
        if (F.conns[i] == c) {
            F.conns[i] = F.conns[--F.nconns];
            break;
        }
    }
    broker_disconnected(F.b, c);
    client_mark_dead(c);
    client_unref(&c);
}

static void teardown(void)
{
    fake_store_fail_submit(F.st, 0);
    fake_store_fail_commit(F.st, 0);
    fake_store_hold(F.st, false);
    settle();
    while (F.nconns)
        disconnect(F.conns[F.nconns - 1]);
    settle();
    broker_free(F.b);
    store_close(F.st);
    run_posted();
    counters_free(F.srv.counters);
    ratelimit_free(F.srv.ratelimit);
    cfg_release(&F.cfg);
    pthread_mutex_destroy(&F.jobs_lock);
}

TestSuite(broker, .init = setup, .fini = teardown);

/* ------------------------------------------------------------- frames */

static void sendf(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sendf(struct client *c, const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    cr_assert(n > 0 && (size_t)n < sizeof(buf));
    broker_frame(F.b, c, buf, (size_t)n);
}

/* The next frame of c's queue (the reference moves to the caller), or
 * NULL; *r gets the close request. */
static msg_t *take_raw(struct client *c, struct client_take *r)
{
    msg_t *m = NULL;
    struct client_take tmp;
    return client_take(c, &m, 1, SIZE_MAX, r ? r : &tmp) ? m : NULL;
}

static json_t *decode(const msg_t *m)
{
    size_t len;
    const unsigned char *p = msg_payload(msg_resolve(m), &len);
    json_error_t je;
    json_t *j = json_loadb((const char *)p, len, 0, &je);
    cr_assert_not_null(j, "not JSON: %.*s", (int)len, (const char *)p);
    return j;
}

/* The next frame of c decoded, or NULL if its queue is empty. */
static json_t *next(struct client *c)
{
    msg_t *m = take_raw(c, NULL);
    if (!m)
        return NULL;
    json_t *j = decode(m);
    msg_unref(&m);
    return j;
}

static const char *jstr(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

static long long jint(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    cr_assert(json_is_integer(v), "field '%s' is not an integer", key);
    return json_integer_value(v);
}

/* The next frame of c, which must be of this type (the caller decrefs). */
static json_t *expect(struct client *c, const char *type)
{
    json_t *j = next(c);
    cr_assert_not_null(j, "%s: expected a '%s' frame, the queue is empty", c->user, type);
    if (strcmp(jstr(j, "type"), type) != 0) {
        char *s = json_dumps(j, JSON_COMPACT);
        cr_assert_fail("%s: expected a '%s' frame, got %s", c->user, type, s);
    }
    return j;
}

static void expect_drop(struct client *c, const char *type)
{
    json_decref(expect(c, type));
}

/* An error frame with this code. */
static void expect_error(struct client *c, const char *code)
{
    json_t *j = expect(c, "error");
    cr_assert_str_eq(jstr(j, "code"), code, "message: %s", jstr(j, "message"));
    json_decref(j);
}

static void expect_empty(struct client *c)
{
    json_t *j = next(c);
    if (j) {
        char *s = json_dumps(j, JSON_COMPACT);
        cr_assert_fail("%s: expected nothing queued, got %s", c->user, s);
    }
}

/* Drop whatever c has queued (presence of others joining, and so on). */
static void drain_q(struct client *c)
{
    msg_t *m;
    while ((m = take_raw(c, NULL)))
        msg_unref(&m);
}

static struct client *connect_q(const char *user, size_t qmax, size_t qbytes)
{
    struct client *c = client_new(&F.srv, qmax, qbytes, &rec_io, NULL);
    cr_assert_lt(F.nconns, 16);
    F.conns[F.nconns++] = c;
    sendf(c, "{\"type\":\"hello\",\"user\":\"%s\"}", user);
    settle();
    expect_drop(c, "welcome");
    return c;
}

static struct client *connect_as(const char *user)
{
    return connect_q(user, QMAX, QBYTES);
}

/* Join and take the joined reply (returned). */
static json_t *join(struct client *c, const char *room)
{
    sendf(c, "{\"type\":\"join\",\"room\":\"%s\"}", room);
    settle();
    return expect(c, "joined");
}

static void join_drop(struct client *c, const char *room)
{
    json_decref(join(c, room));
}

/* Each of cs joins room, then each queue is emptied of what the joins
 * brought (joined replies, presence). */
static void join_all(const char *room, struct client *const *cs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        join_drop(cs[i], room);
    for (size_t i = 0; i < n; i++)
        drain_q(cs[i]);
}

static void send_text(struct client *c, const char *room, const char *text, const char *id)
{
    if (id)
        sendf(c, "{\"type\":\"send\",\"room\":\"%s\",\"text\":\"%s\",\"id\":\"%s\"}", room,
              text, id);
    else
        sendf(c, "{\"type\":\"send\",\"room\":\"%s\",\"text\":\"%s\"}", room, text);
}

/* A message frame for room with this seq. */
static void expect_message(struct client *c, const char *room, long long seq)
{
    json_t *j = expect(c, "message");
    cr_assert_str_eq(jstr(j, "room"), room);
    cr_assert_eq(jint(j, "seq"), seq, "%s: message seq", c->user);
    json_decref(j);
}

static void expect_ack(struct client *c, const char *room, long long seq)
{
    json_t *j = expect(c, "ack");
    cr_assert_str_eq(jstr(j, "room"), room);
    cr_assert_eq(jint(j, "seq"), seq, "%s: ack seq", c->user);
    json_decref(j);
}

/* The sender's own message and its ack, in either order: the ack is pushed
 * from the store's thread and may overtake the echo (the protocol does not
 * order them). */
static void expect_msg_ack(struct client *c, const char *room, long long seq)
{
    bool msg = false, ack = false;
    for (int i = 0; i < 2; i++) {
        json_t *j = next(c);
        cr_assert_not_null(j, "%s: message and ack %lld expected", c->user, seq);
        const char *t = jstr(j, "type");
        cr_assert_str_eq(jstr(j, "room"), room);
        cr_assert_eq(jint(j, "seq"), seq, "%s: %s seq", c->user, t);
        if (strcmp(t, "message") == 0 && !msg)
            msg = true;
        else if (strcmp(t, "ack") == 0 && !ack)
            ack = true;
        else
            cr_assert_fail("%s: unexpected '%s' frame", c->user, t);
        json_decref(j);
    }
}

/* Fill room with n messages from c (seqs 1..n when it was empty), settled,
 * and c's queue emptied. */
static void fill_room(struct client *c, const char *room, int n)
{
    for (int i = 1; i <= n; i++) {
        char text[32];
        snprintf(text, sizeof(text), "m%d", i);
        send_text(c, room, text, NULL);
    }
    settle();
    drain_q(c);
}

/* The seqs of a joined reply's "history" or a history reply's "messages",
 * checked to be consecutive from first to last; returns the count. */
static size_t seqs_of(json_t *j, const char *key, long long *first, long long *last)
{
    json_t *arr = json_object_get(j, key);
    cr_assert(json_is_array(arr), "no array '%s'", key);
    size_t n = json_array_size(arr);
    *first = *last = 0;
    for (size_t i = 0; i < n; i++) {
        long long s = jint(json_array_get(arr, i), "seq");
        if (i == 0)
            *first = s;
        else
            cr_assert_eq(s, *last + 1, "seqs not consecutive: %lld after %lld", s, *last);
        *last = s;
    }
    return n;
}

/* ---------------------------------------------------- publish, fan-out */

Test(broker, fanout_in_seq_order_encoded_once_ack_after_commit)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob"), *c = connect_as("carol");
    join_all("lobby", (struct client *[]){a, b, c}, 3);

    fake_store_hold(F.st, true);
    for (int i = 0; i < 5; i++)
        send_text(b, "lobby", "hi", NULL);
    /* fanned out at once, before anything is durable */
    struct client *m[3] = {a, b, c};
    msg_t *first[3];
    for (int k = 0; k < 3; k++) {
        for (int s = 1; s <= 5; s++) {
            msg_t *raw = take_raw(m[k], NULL);
            cr_assert_not_null(raw, "%s: message %d missing", m[k]->user, s);
            json_t *j = decode(raw);
            cr_assert_str_eq(jstr(j, "type"), "message", "%s: no ack before commit",
                             m[k]->user);
            cr_assert_eq(jint(j, "seq"), s, "%s: seq order", m[k]->user);
            cr_assert_str_eq(jstr(j, "from"), "bob");
            json_decref(j);
            if (s == 1)
                first[k] = raw;
            else
                msg_unref(&raw);
        }
        expect_empty(m[k]);
    }
    cr_assert(first[0] == first[1] && first[1] == first[2],
              "one encoding of a message is shared by every member");
    for (int k = 0; k < 3; k++)
        msg_unref(&first[k]);
    cr_assert_eq(fake_store_nevents(F.st), 0);

    /* each ack once its write is committed, in order */
    for (int s = 1; s <= 5; s++) {
        cr_assert_eq(fake_store_release(F.st, 1), 1);
        expect_ack(b, "lobby", s);
        expect_empty(b);
        cr_assert_eq(fake_store_nevents(F.st), (size_t)s);
    }
    expect_empty(a);
    expect_empty(c);
    struct room_event ev;
    cr_assert(fake_store_event(F.st, 4, &ev));
    cr_assert_eq(ev.seq, 5);
    cr_assert_str_eq(ev.from, "bob");
}

Test(broker, text_and_json_members_each_get_their_format)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob"), *t = connect_as("tess");
    t->fmt = FMT_TEXT; /* as ws.c sets it for the text subprotocol */
    join_drop(a, "lobby");
    join_drop(b, "lobby");
    sendf(t, "/join lobby");
    settle();
    drain_q(a);
    drain_q(b);
    drain_q(t);
    fake_store_hold(F.st, true); /* no ack in a's queue yet */
    send_text(a, "lobby", "hello", NULL);
    msg_t *ma = take_raw(a, NULL), *mb = take_raw(b, NULL), *mt = take_raw(t, NULL);
    cr_assert(ma && mb && mt);
    cr_assert_eq(ma, mb, "JSON members share one encoding");
    cr_assert_neq(ma, mt, "the text member gets the text encoding");
    size_t len;
    const char *p = (const char *)msg_payload(mt, &len);
    cr_assert(len > 0 && p[0] != '{', "text mode frame: %.*s", (int)len, p);
    msg_unref(&ma);
    msg_unref(&mb);
    msg_unref(&mt);
}

/* ------------------------------------------------------ idempotency */

Test(broker, resend_same_id_same_seq_no_second_fanout)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob");
    join_drop(a, "lobby");
    join_drop(b, "lobby");
    drain_q(a);
    fill_room(a, "lobby", 2);
    drain_q(b);

    send_text(a, "lobby", "once", "k1");
    settle();
    expect_msg_ack(a, "lobby", 3);
    expect_message(b, "lobby", 3);
    size_t stored = fake_store_nevents(F.st);

    send_text(a, "lobby", "once", "k1");
    settle();
    expect_ack(a, "lobby", 3);
    expect_empty(a);
    expect_empty(b);
    cr_assert_eq(fake_store_nevents(F.st), stored, "a resend stores nothing");

    /* the seq was not used: the next message gets 4 */
    send_text(a, "lobby", "next", "k2");
    settle();
    expect_msg_ack(a, "lobby", 4);
}

Test(broker, resend_while_original_uncommitted_acks_after_it)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob");
    join_all("lobby", (struct client *[]){a, b}, 2);

    fake_store_hold(F.st, true);
    send_text(a, "lobby", "x", "dup1");
    expect_message(a, "lobby", 1);
    expect_message(b, "lobby", 1);
    send_text(a, "lobby", "x", "dup1");
    expect_empty(a); /* neither ack: the original is not durable */
    expect_empty(b); /* and no second fan-out */
    cr_assert_eq(fake_store_queued(F.st), 2, "the original's append and the resend's barrier");

    cr_assert_eq(fake_store_release(F.st, 1), 1);
    expect_ack(a, "lobby", 1);
    expect_empty(a);
    cr_assert_eq(fake_store_release(F.st, 1), 1);
    expect_ack(a, "lobby", 1);
    expect_empty(a);
    expect_empty(b);
    cr_assert_eq(fake_store_nevents(F.st), 1, "stored once");
}

Test(broker, same_id_from_another_user_is_another_message)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob");
    join_drop(a, "lobby");
    join_drop(b, "lobby");
    drain_q(a);
    send_text(a, "lobby", "x", "same");
    send_text(b, "lobby", "y", "same");
    settle();
    drain_q(a);
    expect_message(b, "lobby", 1);
    expect_msg_ack(b, "lobby", 2);
}

/* ------------------------------------------------- join {since} ranges */

/* Join room as a fresh user with the given JSON extra fields; returns the
 * joined reply. */
static json_t *join_with(struct client *c, const char *room, const char *extra)
{
    sendf(c, "{\"type\":\"join\",\"room\":\"%s\"%s}", room, extra);
    settle();
    return expect(c, "joined");
}

static void check_join(struct client *c, const char *extra, long long want_first,
                       long long want_last, size_t want_n)
{
    json_t *j = join_with(c, "lobby", extra);
    long long first, last;
    size_t n = seqs_of(j, "history", &first, &last);
    cr_assert_eq(jint(j, "seq"), 10, "joined carries the room's seq (%s)", extra);
    cr_assert_eq(n, want_n, "join%s: %zu messages", extra, n);
    if (want_n) {
        cr_assert_eq(first, want_first, "join%s: first %lld", extra, first);
        cr_assert_eq(last, want_last, "join%s: last %lld", extra, last);
    }
    json_decref(j);
    /* leave again so the next join is a join */
    sendf(c, "{\"type\":\"leave\",\"room\":\"lobby\"}");
    settle();
    drain_q(c);
}

Test(broker, join_since_edges)
{
    struct client *a = connect_as("alice"), *z = connect_as("zed");
    join_drop(a, "lobby");
    fill_room(a, "lobby", 10);

    check_join(z, "", 1, 10, 10);
    check_join(z, ",\"limit\":3", 8, 10, 3);
    check_join(z, ",\"since\":0", 1, 10, 10);
    check_join(z, ",\"since\":0,\"limit\":4", 1, 4, 4);
    check_join(z, ",\"since\":0,\"limit\":10", 1, 10, 10);
    check_join(z, ",\"since\":0,\"limit\":9", 1, 9, 9);
    check_join(z, ",\"since\":9", 10, 10, 1);
    check_join(z, ",\"since\":10", 0, 0, 0);
    check_join(z, ",\"since\":11", 0, 0, 0);
    check_join(z, ",\"since\":1000000", 0, 0, 0);
    check_join(z, ",\"since\":5,\"limit\":2", 6, 7, 2);
    check_join(z, ",\"since\":5,\"limit\":5", 6, 10, 5);
    check_join(z, ",\"since\":5,\"limit\":6", 6, 10, 5);
    cr_assert_eq(atomic_load(&F.srv.metrics.history_reads_total), 0,
                 "a room inside its window needs no store read");
}

Test(broker, join_empty_room)
{
    struct client *a = connect_as("alice");
    json_t *j = join_with(a, "fresh", ",\"since\":0");
    long long f, l;
    cr_assert_eq(seqs_of(j, "history", &f, &l), 0);
    cr_assert_eq(jint(j, "seq"), 0);
    json_decref(j);
}

/* --------------------------------------------- history {before} ranges */

static void check_history(struct client *c, const char *room, const char *extra,
                          long long want_first, long long want_last, size_t want_n,
                          bool want_more)
{
    sendf(c, "{\"type\":\"history\",\"room\":\"%s\"%s}", room, extra);
    settle();
    json_t *j = expect(c, "history");
    long long first, last;
    size_t n = seqs_of(j, "messages", &first, &last);
    cr_assert_eq(n, want_n, "history%s: %zu messages, want %zu", extra, n, want_n);
    if (want_n) {
        cr_assert_eq(first, want_first, "history%s: first %lld", extra, first);
        cr_assert_eq(last, want_last, "history%s: last %lld", extra, last);
    }
    cr_assert_eq(json_is_true(json_object_get(j, "more")), want_more, "history%s: more",
                 extra);
    json_decref(j);
    expect_empty(c);
}

Test(broker, history_before_edges)
{
    struct client *a = connect_as("alice");
    join_drop(a, "lobby");
    fill_room(a, "lobby", 10);

    check_history(a, "lobby", "", 1, 10, 10, false);
    check_history(a, "lobby", ",\"before\":1", 0, 0, 0, false);
    check_history(a, "lobby", ",\"before\":0", 0, 0, 0, false);
    check_history(a, "lobby", ",\"before\":2", 1, 1, 1, false);
    check_history(a, "lobby", ",\"before\":11", 1, 10, 10, false);
    check_history(a, "lobby", ",\"before\":12", 1, 10, 10, false);
    check_history(a, "lobby", ",\"before\":1000000", 1, 10, 10, false);
    check_history(a, "lobby", ",\"before\":11,\"limit\":1", 10, 10, 1, true);
    check_history(a, "lobby", ",\"before\":8,\"limit\":3", 5, 7, 3, true);
    check_history(a, "lobby", ",\"before\":4,\"limit\":3", 1, 3, 3, false);
    check_history(a, "lobby", ",\"before\":4,\"limit\":2", 2, 3, 2, true);
    check_history(a, "lobby", ",\"limit\":9", 2, 10, 9, true);
    check_history(a, "lobby", ",\"limit\":10", 1, 10, 10, false);
    check_history(a, "empty", "", 0, 0, 0, false);
    cr_assert_eq(atomic_load(&F.srv.metrics.history_reads_total), 0);
}

/* 300 messages: the window holds 45..300; older ones come from the store,
 * and a range across the edge is spliced from both. */
Test(broker, history_below_the_window_reads_the_store)
{
    struct client *a = connect_as("alice");
    join_drop(a, "deep");
    fill_room(a, "deep", 300);
    cr_assert_eq(fake_store_nevents(F.st), 300);

    check_history(a, "deep", ",\"before\":300,\"limit\":200", 100, 299, 200, true);
    cr_assert_eq(atomic_load(&F.srv.metrics.history_reads_total), 0, "all in the window");

    check_history(a, "deep", ",\"before\":11,\"limit\":5", 6, 10, 5, true);
    cr_assert_eq(atomic_load(&F.srv.metrics.history_reads_total), 1, "read from the store");
    check_history(a, "deep", ",\"before\":61,\"limit\":30", 31, 60, 30, true);
    check_history(a, "deep", ",\"before\":46,\"limit\":2", 44, 45, 2, true);
    check_history(a, "deep", ",\"before\":45,\"limit\":2", 43, 44, 2, true);
    check_history(a, "deep", ",\"before\":6,\"limit\":200", 1, 5, 5, false);
    check_history(a, "deep", ",\"before\":2", 1, 1, 1, false);
    cr_assert_eq(atomic_load(&F.srv.metrics.history_reads_total), 6);

    /* join since below the window: store part then window part */
    struct client *z = connect_as("zed");
    json_t *j = join_with(z, "deep", ",\"since\":40,\"limit\":10");
    long long f, l;
    cr_assert_eq(seqs_of(j, "history", &f, &l), 10);
    cr_assert_eq(f, 41);
    cr_assert_eq(l, 50);
    cr_assert_eq(jint(j, "seq"), 300);
    json_decref(j);
    cr_assert_eq(atomic_load(&F.srv.metrics.history_reads_total), 7);
}

static void direct_done(struct store_append *a)
{
    (void)a;
}

/* An event the broker did not write: straight into the fake's log. */
static void direct_append(const char *room, uint64_t seq, int kind, const char *text,
                          const void *body, size_t body_len)
{
    struct store_append a = {.done = direct_done};
    a.ev = (struct room_event){.kind = (enum room_event_kind)kind, .room = room, .seq = seq,
                               .from = "ann", .ts = 1700000000000 + (int64_t)seq, .id = "",
                               .text = text, .text_len = text ? strlen(text) : 0,
                               .body = body, .body_len = body_len};
    cr_assert_eq(store_append(F.st, &a), 0);
    fake_store_drain(F.st);
}

/* A stored event of another kind (none is produced yet) is not a message:
 * replays skip it, but its seq is the room's. */
Test(broker, replay_skips_kinds_other_than_messages)
{
    direct_append("kinds", 1, EV_MESSAGE, "m1", NULL, 0);
    direct_append("kinds", 2, 7, NULL, "\0x", 2);
    direct_append("kinds", 3, EV_MESSAGE, "m3", NULL, 0);
    struct client *a = connect_as("alice");
    json_t *j = join_with(a, "kinds", ",\"since\":0");
    cr_assert_eq(jint(j, "seq"), 3, "the room's seq counts every kind");
    json_t *h = json_object_get(j, "history");
    cr_assert_eq(json_array_size(h), 2);
    cr_assert_eq(jint(json_array_get(h, 0), "seq"), 1);
    cr_assert_str_eq(jstr(json_array_get(h, 0), "text"), "m1");
    cr_assert_eq(jint(json_array_get(h, 1), "seq"), 3);
    json_decref(j);
    drain_q(a);
    send_text(a, "kinds", "m4", NULL);
    settle();
    expect_msg_ack(a, "kinds", 4);
    sendf(a, "{\"type\":\"history\",\"room\":\"kinds\"}");
    settle();
    j = expect(a, "history");
    h = json_object_get(j, "messages");
    cr_assert_eq(json_array_size(h), 3);
    static const long long want[] = {1, 3, 4};
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(jint(json_array_get(h, i), "seq"), want[i]);
    json_decref(j);
}

/* A held store: the history reply waits as a placeholder, and what is
 * published meanwhile is queued behind it. */
Test(broker, history_reply_keeps_its_place_in_the_queue)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob");
    join_drop(a, "deep");
    join_drop(b, "deep");
    fill_room(a, "deep", 260);
    drain_q(b);

    fake_store_hold(F.st, true); /* reads still go; the message's append waits */
    sendf(b, "{\"type\":\"history\",\"room\":\"deep\",\"before\":3}");
    send_text(a, "deep", "late", NULL);
    fake_store_drain(F.st);
    json_t *j = expect(b, "history");
    long long f, l;
    cr_assert_eq(seqs_of(j, "messages", &f, &l), 2);
    json_decref(j);
    expect_message(b, "deep", 261);
}

/* --------------------------------------------------------------- DMs */

Test(broker, dm_room_is_for_its_two_participants)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob"), *c = connect_as("carol");

    sendf(c, "{\"type\":\"join\",\"room\":\"dm:alice:bob\"}");
    settle();
    expect_error(c, "forbidden");
    sendf(c, "{\"type\":\"history\",\"room\":\"dm:alice:bob\"}");
    settle();
    expect_error(c, "forbidden");
    sendf(c, "{\"type\":\"who\",\"room\":\"dm:alice:bob\"}");
    settle();
    expect_error(c, "forbidden");
    sendf(c, "{\"type\":\"send\",\"room\":\"dm:alice:bob\",\"text\":\"psst\"}");
    settle();
    expect_error(c, "not_joined");
    expect_empty(c);

    sendf(a, "{\"type\":\"dm\",\"to\":\"alice\",\"text\":\"me\"}");
    settle();
    expect_error(a, "bad_request");

    /* the participants may */
    sendf(a, "{\"type\":\"dm\",\"to\":\"bob\",\"text\":\"hi bob\"}");
    settle();
    expect_msg_ack(a, "dm:alice:bob", 1);
    expect_message(b, "dm:alice:bob", 1);
    expect_empty(c);
    join_drop(b, "dm:alice:bob");
    sendf(b, "{\"type\":\"who\",\"room\":\"dm:alice:bob\"}");
    settle();
    expect_drop(b, "members");
}

/* ------------------------------------------------------ slow consumers */

static void expect_closed_4008(struct client *c)
{
    struct client_take r;
    msg_t *m = take_raw(c, &r);
    cr_assert_null(m, "a slow consumer's queue is dropped");
    cr_assert_eq(r.close_code, 4008);
    cr_assert(r.close_now);
}

Test(broker, slow_consumer_on_count)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob");
    struct client *s = connect_q("slow", 4, QBYTES);
    join_all("lobby", (struct client *[]){a, b, s}, 3);

    for (int i = 0; i < 4; i++)
        send_text(a, "lobby", "x", NULL);
    cr_assert_eq(s->close_code, 0, "four fit");
    send_text(a, "lobby", "x", NULL);
    settle();
    cr_assert_eq(atomic_load(&F.srv.metrics.slow_consumer_disconnects_total), 1);
    expect_closed_4008(s);
    for (int i = 1; i <= 5; i++)
        expect_message(b, "lobby", i);
    expect_empty(b);
    disconnect(s);
    expect_drop(b, "presence");
    send_text(a, "lobby", "after", NULL);
    settle();
    expect_message(b, "lobby", 6);
}

Test(broker, slow_consumer_on_bytes)
{
    char text[1001];
    memset(text, 'w', 1000);
    text[1000] = '\0';
    struct client *a = connect_as("alice"), *b = connect_as("bob");
    struct client *s = connect_q("slow", QMAX, 3500);
    join_all("lobby", (struct client *[]){a, b, s}, 3);

    for (int i = 0; i < 3; i++)
        send_text(a, "lobby", text, NULL);
    cr_assert_eq(s->close_code, 0, "three 1 KB messages fit in 3500 bytes");
    send_text(a, "lobby", text, NULL);
    settle();
    cr_assert_eq(atomic_load(&F.srv.metrics.slow_consumer_disconnects_total), 1);
    expect_closed_4008(s);
    for (int i = 1; i <= 4; i++)
        expect_message(b, "lobby", i);
    expect_empty(b);
}

/* ----------------------------------------------------------- disconnect */

Test(broker, disconnect_with_writes_in_flight)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob");
    join_all("lobby", (struct client *[]){a, b}, 2);
    int released = atomic_load(&F.releases);

    fake_store_hold(F.st, true);
    send_text(a, "lobby", "one", "i1");
    send_text(a, "lobby", "two", NULL);
    send_text(a, "lobby", "one", "i1"); /* a barrier in flight too */
    disconnect(a);
    cr_assert_eq(atomic_load(&F.releases), released, "the writes keep alice alive");
    expect_message(b, "lobby", 1);
    expect_message(b, "lobby", 2);
    expect_drop(b, "presence");
    cr_assert_eq(fake_store_release(F.st, 3), 3);
    cr_assert_eq(atomic_load(&F.releases), released + 1, "the last completion frees alice");
    cr_assert_eq(fake_store_nevents(F.st), 2);
    expect_empty(b);
}

Test(broker, disconnect_with_read_in_flight)
{
    struct client *a = connect_as("alice");
    join_drop(a, "deep");
    fill_room(a, "deep", 300);
    /* the read goes to the store thread; leave before it is answered */
    sendf(a, "{\"type\":\"history\",\"room\":\"deep\",\"before\":5}");
    disconnect(a);
    settle();
}

struct publisher {
    struct client *c;
    int n;
};

static void *publish_many(void *arg)
{
    struct publisher *p = arg;
    for (int i = 0; i < p->n; i++)
        send_text(p->c, "lobby", "flood", NULL);
    return NULL;
}

/* alice's loop publishes while bob's loop (this thread) closes bob. */
Test(broker, disconnect_during_fanout)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob"), *c = connect_as("carol");
    join_all("lobby", (struct client *[]){a, b, c}, 3);

    struct publisher p = {a, 300};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, publish_many, &p), 0);
    for (volatile int i = 0; i < 20000 && fake_store_nevents(F.st) < 50; i++)
        ;
    drain_q(b);
    disconnect(b);
    pthread_join(t, NULL);
    settle();
    /* every message in order; bob's leave somewhere among them */
    int presences = 0;
    for (int i = 1; i <= 300; i++) {
        json_t *j = next(c);
        cr_assert_not_null(j, "carol: message %d missing", i);
        if (strcmp(jstr(j, "type"), "presence") == 0 && !presences++) {
            cr_assert_str_eq(jstr(j, "user"), "bob");
            json_decref(j);
            j = next(c);
            cr_assert_not_null(j);
        }
        cr_assert_str_eq(jstr(j, "type"), "message");
        cr_assert_eq(jint(j, "seq"), i);
        json_decref(j);
    }
    if (!presences)
        expect_drop(c, "presence");
    expect_empty(c);
    cr_assert_eq(fake_store_nevents(F.st), 300);
}

/* ------------------------------------------------------ store failures */

Test(broker, store_refuses_submit_seq_not_used)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob");
    join_drop(a, "lobby");
    join_drop(b, "lobby");
    drain_q(a);
    fill_room(a, "lobby", 2);
    drain_q(b);

    fake_store_fail_submit(F.st, -EAGAIN);
    send_text(a, "lobby", "lost", "e1");
    settle();
    expect_error(a, "internal");
    expect_empty(a);
    expect_empty(b);

    fake_store_fail_submit(F.st, 0);
    send_text(a, "lobby", "kept", "e1"); /* the id was not taken either */
    settle();
    expect_msg_ack(a, "lobby", 3);
    expect_message(b, "lobby", 3);
    cr_assert_eq(fake_store_nevents(F.st), 3);
}

Test(broker, store_refuses_barrier_of_a_resend)
{
    struct client *a = connect_as("alice");
    join_drop(a, "lobby");
    send_text(a, "lobby", "x", "r1");
    settle();
    drain_q(a);
    fake_store_fail_submit(F.st, -EAGAIN);
    send_text(a, "lobby", "x", "r1");
    expect_error(a, "internal");
    fake_store_fail_submit(F.st, 0);
    send_text(a, "lobby", "x", "r1");
    settle();
    expect_ack(a, "lobby", 1);
}

Test(broker, failed_commit_is_error_internal)
{
    struct client *a = connect_as("alice"), *b = connect_as("bob");
    join_all("lobby", (struct client *[]){a, b}, 2);

    fake_store_fail_commit(F.st, -EIO);
    fake_store_hold(F.st, true);
    send_text(a, "lobby", "doomed", "f1");
    expect_message(a, "lobby", 1);
    expect_empty(a);
    cr_assert_eq(fake_store_release(F.st, 1), 1);
    expect_error(a, "internal");
    expect_empty(a);
    expect_message(b, "lobby", 1);

    fake_store_fail_commit(F.st, 0);
    fake_store_hold(F.st, false);
    send_text(a, "lobby", "doomed", "f1"); /* the resend gets the ack */
    settle();
    expect_ack(a, "lobby", 1);
    send_text(a, "lobby", "fine", NULL);
    settle();
    expect_msg_ack(a, "lobby", 2);
}
