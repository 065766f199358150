/*
 * The storage seam's contract (store.h), one body run against both the
 * SQLite engine and the fake of tests/fakes, so the broker's unit tests on
 * the fake rest on the same basics as the server: completion order, the
 * duplicate id's original seq, barriers, range reads at their edges, the
 * start-up loads, malformed requests. Then the fake's own knobs: injected
 * submit and commit failures, held completions (a duplicate arriving while
 * the first write is uncommitted), inspection.
 *
 * Waits poll a counter with a deadline (WAIT_LIMIT_S is only a safety net).
 */
#include <criterion/criterion.h>
#include "testutil.h"
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fake_store.h"
#include "store.h"

#define WAIT_LIMIT_S 60

static char tmpdir[4096];

static void setup(void)
{
    tmpdir[0] = '\0';
}

static void teardown(void)
{
    if (tmpdir[0])
        test_rmtree(tmpdir);
}

TestSuite(store_contract, .init = setup, .fini = teardown);

static store_t *open_sqlite(void)
{
    char path[4200], err[512] = "";
    test_mkdtemp(tmpdir, sizeof(tmpdir), "contract");
    snprintf(path, sizeof(path), "%s/parley.db", tmpdir);
    struct store_opts o = {.path = path};
    store_t *s = store_open(&o, err, sizeof(err));
    cr_assert_not_null(s, "store_open: %s", err);
    return s;
}

/* ---- requests that record how they completed */

static atomic_int order_ctr;

struct creq {
    struct store_append a;
    struct store_barrier b;
    char id[16], text[32];
    atomic_int ndone;
    int status, order;
    uint64_t dup_seq;
};

static void req_append_done(struct store_append *a)
{
    struct creq *q = STORE_CONTAINER(a, struct creq, a);
    q->status = a->status;
    q->dup_seq = a->dup_seq;
    q->order = atomic_fetch_add(&order_ctr, 1);
    atomic_fetch_add(&q->ndone, 1);
}

static void req_barrier_done(struct store_barrier *b)
{
    struct creq *q = STORE_CONTAINER(b, struct creq, b);
    q->status = b->status;
    q->order = atomic_fetch_add(&order_ctr, 1);
    atomic_fetch_add(&q->ndone, 1);
}

static void req_msg(struct creq *q, uint64_t seq, const char *id)
{
    memset(q, 0, sizeof(*q));
    snprintf(q->id, sizeof(q->id), "%s", id);
    snprintf(q->text, sizeof(q->text), "text %" PRIu64, seq);
    q->a.ev = (struct room_event){.kind = EV_MESSAGE, .room = "r", .seq = seq, .from = "ann",
                                  .ts = 1700000000000 + (int64_t)seq, .id = q->id,
                                  .text = q->text, .text_len = strlen(q->text)};
    q->a.done = req_append_done;
}

static void req_barrier(struct creq *q)
{
    memset(q, 0, sizeof(*q));
    q->b.done = req_barrier_done;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wait_done(struct creq *q)
{
    int64_t end = mono_ms() + WAIT_LIMIT_S * 1000;
    while (atomic_load(&q->ndone) == 0 && mono_ms() < end)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    cr_assert_eq(atomic_load(&q->ndone), 1, "request completed exactly once");
}

/* ---- reads */

struct rd {
    struct store_read r;
    atomic_int ndone;
};

static void rd_done(struct store_read *r)
{
    atomic_fetch_add(&STORE_CONTAINER(r, struct rd, r)->ndone, 1);
}

/* Read room (mode, key, limit) into *x and wait until it is answered, OK. */
static void read_sync(store_t *s, const char *room, enum store_read_mode mode, uint64_t key,
                      int limit, struct rd *x)
{
    snprintf(x->r.room, sizeof(x->r.room), "%s", room);
    x->r.mode = mode;
    x->r.key = key;
    x->r.limit = limit;
    x->r.done = rd_done;
    cr_assert_eq(store_read_submit(s, &x->r), 0);
    int64_t end = mono_ms() + WAIT_LIMIT_S * 1000;
    while (atomic_load(&x->ndone) == 0 && mono_ms() < end)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    cr_assert_eq(atomic_load(&x->ndone), 1);
    cr_assert_eq(x->r.status, 0);
}

/* Read and check that seqs first..last (none if last < first) came back
 * with `more`. */
static void check_read(store_t *s, enum store_read_mode mode, uint64_t key, int limit,
                       uint64_t first, uint64_t last, bool more)
{
    struct rd x = {0};
    read_sync(s, "r", mode, key, limit, &x);
    size_t want = last >= first ? (size_t)(last - first + 1) : 0;
    cr_assert_eq(x.r.n, want, "mode %d key %" PRIu64 " limit %d: n %zu want %zu", mode, key,
                 limit, x.r.n, want);
    for (size_t i = 0; i < x.r.n; i++) {
        const struct room_event *e = &x.r.evs[i];
        char text[32];
        snprintf(text, sizeof(text), "text %" PRIu64, first + i);
        cr_assert_eq(e->seq, first + i);
        cr_assert_eq(e->kind, EV_MESSAGE);
        cr_assert_str_eq(e->room, "r");
        cr_assert_str_eq(e->from, "ann");
        cr_assert_str_eq(e->text, text);
        cr_assert_eq(e->text_len, strlen(text));
        cr_assert_eq(e->ts, 1700000000000 + (int64_t)(first + i));
        /* seq 3 holds id "x"; seq 6 resent it and is stored without */
        cr_assert_str_eq(e->id, e->seq == 3 ? "x" : "");
    }
    cr_assert_eq(x.r.more, more, "mode %d key %" PRIu64 " limit %d: more", mode, key, limit);
    store_read_release(&x.r);
    cr_assert_null(x.r.evs);
}

/* ---- start-up loads */

struct loads {
    int rooms, ids;
    uint64_t last_seq, id_seq;
};

static void on_room(void *arg, const char *room, uint64_t last_seq)
{
    struct loads *l = arg;
    l->rooms++;
    cr_assert_str_eq(room, "r");
    l->last_seq = last_seq;
}

static void on_id(void *arg, const char *room, const char *from, const char *id, uint64_t seq,
                  int64_t ts)
{
    struct loads *l = arg;
    l->ids++;
    cr_assert_str_eq(room, "r");
    cr_assert_str_eq(from, "ann");
    cr_assert_str_eq(id, "x");
    l->id_seq = seq;
}

/* ---- every event kind, with its body (room "k") */

/* Kinds beyond the messages of today: a test's own values (v1.1 adds the
 * real ones). */
#define KIND_A ((enum room_event_kind)7)
#define KIND_MAX ((enum room_event_kind)STORE_KIND_MAX)

static char big_body[STORE_BODY_MAX + 1];
static const char nul_body[] = {'a', '\0', 'b', '\0', '\0', 'c'};

/* What seq (1..5) of room "k" holds: kind, text, body. Seq 5 resends seq
 * 1's id and is stored without it. */
static void kev(uint64_t seq, struct room_event *e)
{
    switch (seq) {
    case 1: /* NUL bytes in the body, no text */
        *e = (struct room_event){.kind = KIND_A, .text = NULL, .body = nul_body,
                                 .body_len = sizeof(nul_body), .id = "e1"};
        break;
    case 2: /* an empty body: no body */
        *e = (struct room_event){.kind = KIND_MAX, .text = "", .body = "", .body_len = 0};
        break;
    case 3: /* the largest body, and a text beside it */
        *e = (struct room_event){.kind = (enum room_event_kind)3, .text = "t3", .text_len = 2,
                                 .body = big_body, .body_len = STORE_BODY_MAX};
        break;
    case 4: /* a message between them */
        *e = (struct room_event){.kind = EV_MESSAGE, .text = "m4", .text_len = 2};
        break;
    default: /* a resend of seq 1's id */
        kev(1, e);
        e->body = "z";
        e->body_len = 1;
        return;
    }
}

static void check_kev(const struct room_event *e)
{
    struct room_event w;
    kev(e->seq, &w);
    cr_assert_eq(e->kind, w.kind, "seq %" PRIu64 ": kind %d", e->seq, e->kind);
    cr_assert_str_eq(e->room, "k");
    cr_assert_str_eq(e->from, "kim");
    cr_assert_eq(e->ts, 1700000000000 + (int64_t)e->seq);
    cr_assert_not_null(e->text);
    cr_assert_eq(e->text_len, w.text ? w.text_len : 0);
    cr_assert_str_eq(e->text, w.text ? w.text : "");
    cr_assert_str_eq(e->id, e->seq == 1 ? "e1" : "");
    cr_assert_eq(e->body_len, w.body_len, "seq %" PRIu64 ": body_len %zu", e->seq, e->body_len);
    if (w.body_len) {
        cr_assert_not_null(e->body);
        cr_assert_eq(memcmp(e->body, w.body, w.body_len), 0, "seq %" PRIu64 ": body", e->seq);
    } else {
        cr_assert_null(e->body);
    }
}

static void check_kread(store_t *s, enum store_read_mode mode, uint64_t key, int limit,
                        uint64_t first, uint64_t last)
{
    struct rd x = {0};
    read_sync(s, "k", mode, key, limit, &x);
    cr_assert_eq(x.r.n, (size_t)(last - first + 1));
    for (size_t i = 0; i < x.r.n; i++) {
        cr_assert_eq(x.r.evs[i].seq, first + i);
        check_kev(&x.r.evs[i]);
    }
    store_read_release(&x.r);
}

static void req_kev(struct creq *q, uint64_t seq)
{
    memset(q, 0, sizeof(*q));
    kev(seq, &q->a.ev);
    q->a.ev.room = "k";
    q->a.ev.from = "kim";
    q->a.ev.seq = seq;
    q->a.ev.ts = 1700000000000 + (int64_t)seq;
    q->a.done = req_append_done;
}

static void kinds_contract(store_t *s)
{
    enum { N = 5 };
    struct creq q[N];
    for (size_t i = 0; i < sizeof(big_body); i++)
        big_body[i] = (char)(i * 7 + 1);

    for (int i = 0; i < N; i++) {
        req_kev(&q[i], (uint64_t)i + 1);
        cr_assert_eq(store_append(s, &q[i].a), 0, "seq %d", i + 1);
        wait_done(&q[i]);
        cr_assert_eq(q[i].status, 0);
        /* ids work alike for every kind: the resend learns the original */
        cr_assert_eq(q[i].dup_seq, i == N - 1 ? 1 : 0, "seq %d", i + 1);
    }
    check_kread(s, SR_SINCE, 0, 10, 1, 5);
    check_kread(s, SR_SINCE, 2, 2, 3, 4);
    check_kread(s, SR_BEFORE, 4, 2, 2, 3);
    check_kread(s, SR_LATEST, 0, 1, 5, 5);

    /* refused: a body over the bound, a kind over it, text_len without text */
    struct creq bad;
    req_kev(&bad, 6);
    bad.a.ev.body = big_body;
    bad.a.ev.body_len = STORE_BODY_MAX + 1;
    cr_assert_eq(store_append(s, &bad.a), -EINVAL, "body over STORE_BODY_MAX");
    req_kev(&bad, 6);
    bad.a.ev.kind = (enum room_event_kind)(STORE_KIND_MAX + 1);
    cr_assert_eq(store_append(s, &bad.a), -EINVAL, "kind over STORE_KIND_MAX");
    req_kev(&bad, 6);
    bad.a.ev.body = NULL;
    bad.a.ev.body_len = 3;
    cr_assert_eq(store_append(s, &bad.a), -EINVAL, "body_len without a body");
    req_kev(&bad, 6);
    bad.a.ev.text = NULL;
    bad.a.ev.text_len = 3;
    cr_assert_eq(store_append(s, &bad.a), -EINVAL, "text_len without a text");
    check_kread(s, SR_SINCE, 0, 10, 1, 5);
    cr_assert_eq(atomic_load(&bad.ndone), 0);
}

/* ---- the contract */

static void contract(store_t *s)
{
    enum { N = 5 };
    struct creq q[N + 2];
    atomic_store(&order_ctr, 0);

    for (int i = 0; i < N; i++) {
        req_msg(&q[i], (uint64_t)i + 1, i == 2 ? "x" : "");
        cr_assert_eq(store_append(s, &q[i].a), 0);
    }
    req_barrier(&q[N]);
    cr_assert_eq(store_barrier(s, &q[N].b), 0);
    wait_done(&q[N]);
    for (int i = 0; i <= N; i++) {
        cr_assert_eq(atomic_load(&q[i].ndone), 1, "request %d done before the barrier", i);
        cr_assert_eq(q[i].status, 0);
        cr_assert_eq(q[i].order, i, "completions in queue order");
        cr_assert_eq(q[i].dup_seq, 0);
    }

    /* a resend of id "x" under a new seq: the original's seq comes back */
    req_msg(&q[N + 1], N + 1, "x");
    cr_assert_eq(store_append(s, &q[N + 1].a), 0);
    wait_done(&q[N + 1]);
    cr_assert_eq(q[N + 1].status, 0);
    cr_assert_eq(q[N + 1].dup_seq, 3);

    /* range reads at their edges: seqs 1..6 */
    check_read(s, SR_LATEST, 0, 3, 4, 6, true);
    check_read(s, SR_LATEST, 0, 6, 1, 6, false);
    check_read(s, SR_LATEST, 0, 0, 1, 0, true);
    check_read(s, SR_SINCE, 0, 100, 1, 6, false);
    check_read(s, SR_SINCE, 2, 2, 3, 4, true);
    check_read(s, SR_SINCE, 4, 2, 5, 6, false);
    check_read(s, SR_SINCE, 6, 10, 1, 0, false);
    check_read(s, SR_BEFORE, 3, 5, 1, 2, false);
    check_read(s, SR_BEFORE, 5, 2, 3, 4, true);
    check_read(s, SR_BEFORE, 1, 5, 1, 0, false);

    struct loads l = {0};
    cr_assert_eq(store_load_rooms(s, on_room, &l), 0);
    cr_assert_eq(l.rooms, 1);
    cr_assert_eq(l.last_seq, 6);
    cr_assert_eq(store_load_ids(s, 0, on_id, &l), 0);
    cr_assert_eq(l.ids, 1);
    cr_assert_eq(l.id_seq, 3);

    kinds_contract(s);

    /* malformed: refused, done never called */
    struct creq bad;
    req_msg(&bad, 7, "");
    bad.a.done = NULL;
    cr_assert_eq(store_append(s, &bad.a), -EINVAL);
    req_msg(&bad, 7, "");
    bad.a.ev.text = NULL;
    cr_assert_eq(store_append(s, &bad.a), -EINVAL);
    req_barrier(&bad);
    bad.b.done = NULL;
    cr_assert_eq(store_barrier(s, &bad.b), -EINVAL);
    struct rd x = {0};
    x.r.limit = -1;
    x.r.done = rd_done;
    cr_assert_eq(store_read_submit(s, &x.r), -EINVAL);

    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.failures, 0);
    cr_assert_eq(st.queued, 0);
    store_close(s);
    cr_assert_eq(atomic_load(&bad.ndone), 0);
}

Test(store_contract, sqlite_engine)
{
    contract(open_sqlite());
}

Test(store_contract, fake_engine)
{
    store_t *s = fake_store_new();
    contract(s);
}

/* ---- the fake's knobs */

Test(store_contract, fake_injects_submit_failures_and_stores_nothing)
{
    store_t *s = fake_store_new();
    struct creq q;
    fake_store_fail_submit(s, -EAGAIN);
    req_msg(&q, 1, "a");
    cr_assert_eq(store_append(s, &q.a), -EAGAIN);
    req_barrier(&q);
    cr_assert_eq(store_barrier(s, &q.b), -EAGAIN);
    fake_store_drain(s);
    cr_assert_eq(atomic_load(&q.ndone), 0);
    cr_assert_eq(fake_store_nevents(s), 0);

    fake_store_fail_submit(s, 0);
    req_msg(&q, 1, "a");
    cr_assert_eq(store_append(s, &q.a), 0);
    wait_done(&q);
    cr_assert_eq(q.status, 0);
    cr_assert_eq(fake_store_nevents(s), 1);
    store_close(s);
}

Test(store_contract, fake_reports_a_failed_commit_and_keeps_the_event)
{
    store_t *s = fake_store_new();
    struct creq q[2];
    fake_store_fail_commit(s, -EIO);
    req_msg(&q[0], 1, "a");
    cr_assert_eq(store_append(s, &q[0].a), 0);
    req_barrier(&q[1]);
    cr_assert_eq(store_barrier(s, &q[1].b), 0);
    wait_done(&q[1]);
    cr_assert_eq(q[0].status, -EIO);
    cr_assert_eq(q[0].dup_seq, 0);
    cr_assert_eq(q[1].status, -EIO);
    /* like the SQLite engine's retry: reported failed, stored all the same */
    struct room_event e;
    cr_assert(fake_store_event(s, 0, &e));
    cr_assert_eq(e.seq, 1);
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.failures, 2);
    store_close(s);
}

Test(store_contract, fake_holds_completions_for_a_duplicate_in_flight)
{
    store_t *s = fake_store_new();
    struct creq q[2];
    atomic_store(&order_ctr, 0);
    fake_store_hold(s, true);
    req_msg(&q[0], 1, "k");
    cr_assert_eq(store_append(s, &q[0].a), 0);
    /* the resend arrives while the first is still uncommitted */
    req_msg(&q[1], 2, "k");
    cr_assert_eq(store_append(s, &q[1].a), 0);
    cr_assert_eq(fake_store_queued(s), 2);
    check_read(s, SR_LATEST, 0, 10, 1, 0, false); /* nothing committed yet */
    cr_assert_eq(atomic_load(&q[0].ndone), 0);

    cr_assert_eq(fake_store_release(s, 1), 1);
    cr_assert_eq(atomic_load(&q[0].ndone), 1, "release returns after done()");
    cr_assert_eq(q[0].status, 0);
    cr_assert_eq(q[0].dup_seq, 0);
    cr_assert_eq(atomic_load(&q[1].ndone), 0, "the second is still held");
    cr_assert_eq(fake_store_queued(s), 1);

    cr_assert_eq(fake_store_release(s, 5), 1);
    cr_assert_eq(q[1].status, 0);
    cr_assert_eq(q[1].dup_seq, 1, "the duplicate learns the original's seq");
    cr_assert_eq(q[1].order, 1);

    cr_assert_eq(fake_store_nevents(s), 2);
    struct room_event e;
    cr_assert(fake_store_event(s, 0, &e));
    cr_assert_eq(e.seq, 1);
    cr_assert_str_eq(e.id, "k");
    cr_assert(fake_store_event(s, 1, &e));
    cr_assert_eq(e.seq, 2);
    cr_assert_str_eq(e.id, "", "stored without its id, seqs stay gapless");
    cr_assert_not(fake_store_event(s, 2, &e));

    /* unheld: completions flow again */
    fake_store_hold(s, false);
    req_msg(&q[0], 3, "");
    cr_assert_eq(store_append(s, &q[0].a), 0);
    wait_done(&q[0]);
    store_close(s);
}
