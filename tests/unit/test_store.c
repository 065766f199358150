/*
 * Unit tests for store (SQLite): schema migrations, group commit, idempotent
 * ids, barriers, history paging, failure and retry without loss, shutdown
 * flush, start-up loads, many submitting threads, and durability full (acks
 * after the sync thread's fdatasync, in order, failures included).
 *
 * Nothing here waits on a clock to decide an outcome: batches are shaped by
 * holding the writer inside a done() callback (a gate; with durability full
 * the gate holds the sync thread, and the test polls the stats until the
 * writer has committed, bounded only as a safety net), and faults are real
 * write failures (RLIMIT_FSIZE, which stops root too, unlike chmod).
 */
#include <criterion/criterion.h>
#include "testutil.h"
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "store_accounts.h"

/* The v1 schema exactly as shipped, to build an "older file" by hand. */
static const char v1_sql[] =
    "CREATE TABLE messages(room TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,"
    "  text TEXT NOT NULL, ts INTEGER NOT NULL, client_id TEXT,"
    "  PRIMARY KEY(room, seq)) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX messages_client_id ON messages(room, sender, client_id)"
    "  WHERE client_id IS NOT NULL;"
    "CREATE INDEX messages_client_id_ts ON messages(ts) WHERE client_id IS NOT NULL;"
    "CREATE TABLE rooms(name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE users(name TEXT PRIMARY KEY, created_at INTEGER NOT NULL) WITHOUT ROWID;";

#define LATEST_VERSION 5
#define WAIT_LIMIT_S 60

static char tmpdir[4096];
static char dbpath[4200];
static char err[512];

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof(tmpdir), "storetest");
    snprintf(dbpath, sizeof(dbpath), "%s/parley.db", tmpdir);
    err[0] = '\0';
}

static void teardown(void)
{
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    setrlimit(RLIMIT_FSIZE, &rl);
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char p[8400];
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(tmpdir);
}

TestSuite(store, .init = setup, .fini = teardown);

/* ------------------------------------------------------------ helpers */

/* Counts completions; waits are bounded only as a safety net. */
struct counter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n;
};

static void counter_init(struct counter *c)
{
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->n = 0;
}

static void counter_destroy(struct counter *c)
{
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
}

static void counter_add(struct counter *c)
{
    pthread_mutex_lock(&c->lock);
    c->n++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static int counter_get(struct counter *c)
{
    pthread_mutex_lock(&c->lock);
    int n = c->n;
    pthread_mutex_unlock(&c->lock);
    return n;
}

static void counter_wait(struct counter *c, int n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_LIMIT_S;
    pthread_mutex_lock(&c->lock);
    while (c->n < n) {
        if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT)
            break;
    }
    int got = c->n;
    pthread_mutex_unlock(&c->lock);
    cr_assert_geq(got, n, "waited for %d completions, got %d", n, got);
}

/* A gate that holds the writer thread inside a done() callback. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool entered, open;
};

static void gate_init(struct gate *g)
{
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->entered = g->open = false;
}

static void gate_destroy(struct gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

/* Called on the writer thread: announce arrival, wait to be let through. */
static void gate_pass(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->entered = true;
    pthread_cond_broadcast(&g->cond);
    while (!g->open)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_wait_entered(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    while (!g->entered)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* A test write with its own string storage and completion record. */
enum tw_kind { TW_MSG, TW_USER, TW_BARRIER };

struct tw {
    enum tw_kind kind;
    struct store_append a;     /* TW_MSG */
    struct store_user_seen u;  /* TW_USER */
    struct store_barrier b;    /* TW_BARRIER */
    char room[CODEC_ROOMID_MAX + 1];
    char from[CODEC_USER_MAX + 1];
    char id[CODEC_ID_MAX + 1];
    char text[128];
    struct counter *cnt;
    struct gate *gate;        /* if set, hold the writer here */
    atomic_int ndone;
    int status;
    uint64_t dup_seq;
    int done_order;           /* value of *order when done ran */
    atomic_int *order;
    store_t *store;           /* if set, done records its WAL syncs so far */
    uint64_t syncs_seen;
};

static void tw_done(struct tw *t, int status, uint64_t dup_seq)
{
    t->status = status;
    t->dup_seq = dup_seq;
    if (t->order)
        t->done_order = atomic_fetch_add(t->order, 1);
    if (t->store) {
        struct store_stats st;
        store_stats(t->store, &st);
        t->syncs_seen = st.syncs;
    }
    atomic_fetch_add(&t->ndone, 1);
    if (t->gate)
        gate_pass(t->gate);
    if (t->cnt)
        counter_add(t->cnt);
}

static void tw_append_done(struct store_append *a)
{
    tw_done(STORE_CONTAINER(a, struct tw, a), a->status, a->dup_seq);
}

static void tw_seen_done(struct store_user_seen *u)
{
    tw_done(STORE_CONTAINER(u, struct tw, u), u->status, 0);
}

static void tw_barrier_done(struct store_barrier *b)
{
    tw_done(STORE_CONTAINER(b, struct tw, b), b->status, 0);
}

/* Queue t by its kind. */
static int tw_submit(store_t *s, struct tw *t)
{
    switch (t->kind) {
    case TW_MSG:
        return store_append(s, &t->a);
    case TW_USER:
        return store_user_seen(s, &t->u);
    case TW_BARRIER:
        return store_barrier(s, &t->b);
    }
    return -EINVAL;
}

static void tw_msg(struct tw *t, struct counter *c, const char *room, uint64_t seq,
                   const char *from, const char *id, const char *text)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->room, sizeof(t->room), "%s", room);
    snprintf(t->from, sizeof(t->from), "%s", from);
    snprintf(t->id, sizeof(t->id), "%s", id ? id : "");
    snprintf(t->text, sizeof(t->text), "%s", text);
    t->kind = TW_MSG;
    t->a.ev.room = t->room;
    t->a.ev.seq = seq;
    t->a.ev.from = t->from;
    t->a.ev.text = t->text;
    t->a.ev.text_len = strlen(t->text);
    t->a.ev.ts = 1700000000000 + (int64_t)seq;
    t->a.ev.id = t->id;
    t->a.done = tw_append_done;
    t->cnt = c;
}

static void tw_user(struct tw *t, struct counter *c, const char *name)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->from, sizeof(t->from), "%s", name);
    t->kind = TW_USER;
    t->u.name = t->from;
    t->u.done = tw_seen_done;
    t->cnt = c;
}

static void tw_barrier(struct tw *t, struct counter *c)
{
    memset(t, 0, sizeof(*t));
    t->kind = TW_BARRIER;
    t->b.done = tw_barrier_done;
    t->cnt = c;
}

static store_t *open_store(const struct store_opts *extra)
{
    struct store_opts o = {0};
    if (extra)
        o = *extra;
    o.path = dbpath;
    store_t *s = store_open(&o, err, sizeof(err));
    cr_assert_not_null(s, "store_open: %s", err);
    return s;
}

/* A fresh connection of our own, as another process would see the file. */
static sqlite3 *raw_open(void)
{
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(dbpath, &db), SQLITE_OK);
    return db;
}

static int64_t raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s: %s", sql, sqlite3_errmsg(db));
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, msg ? msg : "");
}

static int64_t file_int(const char *sql)
{
    sqlite3 *db = raw_open();
    int64_t v = raw_int(db, sql);
    sqlite3_close(db);
    return v;
}

static void raw_exec_file(const char *sql)
{
    sqlite3 *db = raw_open();
    sqlite3_busy_timeout(db, 5000);
    raw_exec(db, sql);
    sqlite3_close(db);
}

static int64_t now_ms_for_test(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void make_fs_fail(void)
{
    /* Any write at or beyond offset 1 of a regular file now fails with
     * EFBIG, for every thread of this (per-test, forked) process. */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = 1;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

static void make_fs_work(void)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

/* Submit a message and wait until it is done; returns its status. */
static int put_sync(store_t *s, const char *room, uint64_t seq, const char *from, const char *id,
                    const char *text, uint64_t *dup)
{
    struct counter c;
    struct tw t;
    counter_init(&c);
    tw_msg(&t, &c, room, seq, from, id, text);
    cr_assert_eq(tw_submit(s, &t), 0);
    counter_wait(&c, 1);
    counter_destroy(&c);
    cr_assert_eq(atomic_load(&t.ndone), 1);
    if (dup)
        *dup = t.dup_seq;
    return t.status;
}

/* ---------------------------------------------------------- migrations */

Test(store, migrates_an_empty_file)
{
    store_t *s = open_store(NULL);
    store_close(s);
    cr_assert_eq(file_int("PRAGMA user_version"), LATEST_VERSION);
    cr_assert_eq(file_int("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
                          "('messages', 'rooms', 'users', 'outbox')"),
                 4);
    cr_assert_eq(file_int("SELECT count(*) FROM pragma_table_info('users') WHERE name IN "
                          "('name', 'password_hash', 'email', 'created_at')"),
                 4);
    sqlite3 *db = raw_open();
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* set before WAL mode wrote the header, or it would not have taken */
    cr_assert_eq(file_int("PRAGMA page_size"), 2048);
    /* reopening a current file is a no-op */
    s = open_store(NULL);
    store_close(s);
    cr_assert_eq(file_int("PRAGMA user_version"), LATEST_VERSION);
}

Test(store, migrates_a_v1_file_keeping_its_data)
{
    sqlite3 *db = raw_open();
    raw_exec(db, v1_sql);
    raw_exec(db, "INSERT INTO messages VALUES('lobby', 1, 'ann', 'hi', 1700000000000, 'c1');"
                 "INSERT INTO rooms VALUES('lobby', 1, 1700000000000);"
                 "INSERT INTO users VALUES('ann', 1700000000000);"
                 "PRAGMA user_version = 1;");
    sqlite3_close(db);

    store_t *s = open_store(NULL);
    /* the old data is still there and the idempotency index still holds */
    uint64_t dup = 0;
    cr_assert_eq(put_sync(s, "lobby", 2, "ann", "c1", "again", &dup), 0);
    cr_assert_eq(dup, 1);
    store_close(s);

    cr_assert_eq(file_int("PRAGMA user_version"), LATEST_VERSION);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'lobby'"), 2);
    cr_assert_eq(file_int("SELECT last_seq FROM rooms WHERE name = 'lobby'"), 2);
    cr_assert_eq(file_int("SELECT count(*) FROM users WHERE name = 'ann' AND email IS NULL "
                          "AND password_hash IS NULL"),
                 1);
    /* v4: a name kept from before is live, with no revocation */
    cr_assert_eq(file_int("SELECT count(*) FROM users WHERE name = 'ann' AND tokens_after = 0 "
                          "AND deleted_at IS NULL AND acct_gen = 0"),
                 1);
    /* v3 dropped the ts index (store_load_ids walks the primary key) */
    cr_assert_eq(file_int("SELECT count(*) FROM sqlite_schema WHERE name = "
                          "'messages_client_id_ts'"),
                 0);
    /* v2's outbox exists with its delivery-state columns */
    cr_assert_eq(file_int("SELECT count(*) FROM pragma_table_info('outbox') WHERE name IN "
                          "('recipient', 'state', 'attempts', 'next_at', 'created_at')"),
                 5);
    cr_assert_eq(file_int("SELECT count(*) FROM sqlite_schema WHERE name = 'outbox' AND "
                          "sql LIKE '%CHECK(state IN (''pending'', ''sent'', ''dead''))%'"),
                 1);
}

Test(store, refuses_a_newer_schema)
{
    sqlite3 *db = raw_open();
    raw_exec(db, "CREATE TABLE future(x); PRAGMA user_version = 6;");
    sqlite3_close(db);

    struct store_opts o = {.path = dbpath};
    store_t *s = store_open(&o, err, sizeof(err));
    cr_assert_null(s);
    char want[5000];
    snprintf(want, sizeof(want),
             "database '%s' has schema version 6, this parleyd knows up to %d: upgrade parleyd",
             dbpath, LATEST_VERSION);
    cr_assert_str_eq(err, want);
    cr_assert_eq(file_int("PRAGMA user_version"), 6, "the file must be left alone");
}

Test(store, refuses_a_file_that_is_not_a_database)
{
    FILE *f = fopen(dbpath, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not an sqlite database, just text. ", f);
    fclose(f);
    struct store_opts o = {.path = dbpath};
    cr_assert_null(store_open(&o, err, sizeof(err)));
    cr_assert(strstr(err, dbpath) != NULL, "error names the file: %s", err);
    cr_assert(strstr(err, "not a database") != NULL, "error says why: %s", err);
}

Test(store, rejects_malformed_requests)
{
    store_t *s = open_store(NULL);
    struct tw t;
    tw_msg(&t, NULL, "r", 1, "ann", NULL, "x");
    t.a.done = NULL;
    cr_assert_eq(tw_submit(s, &t), -EINVAL);
    tw_msg(&t, NULL, "r", 1, "ann", NULL, "x");
    t.a.ev.room = NULL;
    cr_assert_eq(tw_submit(s, &t), -EINVAL);
    tw_user(&t, NULL, "ann");
    t.u.name = NULL;
    cr_assert_eq(tw_submit(s, &t), -EINVAL);

    struct store_read r = {0};
    snprintf(r.room, sizeof(r.room), "r");
    r.limit = -1;
    cr_assert_eq(store_read_submit(s, &r), -EINVAL, "no done");
    store_close(s);
    cr_assert_eq(atomic_load(&t.ndone), 0);
}

/* ------------------------------------------------------------- writes */

Test(store, committed_writes_are_visible_to_another_connection)
{
    struct counter c;
    struct tw t[12];
    counter_init(&c);
    store_t *s = open_store(NULL);
    for (int i = 0; i < 10; i++) {
        char text[32];
        snprintf(text, sizeof(text), "hello %d \xc3\xa9", i + 1);
        tw_msg(&t[i], &c, "lobby", (uint64_t)i + 1, "ann", i % 2 ? "" : NULL, text);
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    tw_user(&t[10], &c, "ann");
    tw_user(&t[11], &c, "ann"); /* seen twice: insert or ignore */
    cr_assert_eq(tw_submit(s, &t[10]), 0);
    cr_assert_eq(tw_submit(s, &t[11]), 0);
    counter_wait(&c, 12);
    for (int i = 0; i < 12; i++) {
        cr_assert_eq(t[i].status, 0);
        cr_assert_eq(atomic_load(&t[i].ndone), 1);
        cr_assert_eq(t[i].dup_seq, 0);
    }

    /* committed means another connection sees it now, before close */
    sqlite3 *db = raw_open();
    cr_assert_eq(raw_int(db, "SELECT count(*) FROM messages WHERE room = 'lobby'"), 10);
    cr_assert_eq(raw_int(db, "SELECT count(*) FROM messages WHERE client_id IS NOT NULL"), 0);
    cr_assert_eq(raw_int(db, "SELECT ts FROM messages WHERE seq = 7"), 1700000000007);
    cr_assert_eq(raw_int(db, "SELECT text = 'hello 7 \xc3\xa9' FROM messages WHERE seq = 7"), 1);
    cr_assert_eq(raw_int(db, "SELECT last_seq FROM rooms WHERE name = 'lobby'"), 10);
    cr_assert_eq(raw_int(db, "SELECT count(*) FROM users"), 1);
    sqlite3_close(db);

    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.writes, 12, "rows committed: %" PRIu64, st.writes);
    cr_assert_eq(st.failures, 0);
    cr_assert_geq(st.commits, 1);
    cr_assert_eq(st.commit_le_count[STORE_COMMIT_BUCKETS - 1] <= st.commits, 1);
    for (int i = 1; i < STORE_COMMIT_BUCKETS; i++) {
        cr_assert_gt(st.commit_le[i], st.commit_le[i - 1]);
        cr_assert_geq(st.commit_le_count[i], st.commit_le_count[i - 1]);
    }
    store_close(s);
    counter_destroy(&c);
}

/*
 * Hold the writer inside the first write's done() while `n` more writes
 * queue up, then let it go: the queued writes must be committed in
 * ceil(n / batch_max) transactions, whatever the timing.
 */
static void group_commit_case(int batch_max, int n, uint64_t want_commits)
{
    struct counter c;
    struct gate g;
    struct tw *t = calloc((size_t)n + 1, sizeof(*t));
    cr_assert_not_null(t);
    counter_init(&c);
    gate_init(&g);
    struct store_opts o = {.batch_max = batch_max};
    store_t *s = open_store(&o);

    tw_msg(&t[0], &c, "g", 1, "ann", NULL, "first");
    t[0].gate = &g;
    cr_assert_eq(tw_submit(s, &t[0]), 0);
    gate_wait_entered(&g); /* write 1 is committed; the writer waits in its done() */
    for (int i = 1; i <= n; i++) {
        tw_msg(&t[i], &c, "g", (uint64_t)i + 1, "ann", NULL, "queued");
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.queued, (size_t)n);
    cr_assert_eq(st.commits, 1);
    gate_open(&g);
    counter_wait(&c, n + 1);

    store_stats(s, &st);
    cr_assert_eq(st.commits, want_commits, "commits %" PRIu64 ", want %" PRIu64, st.commits,
                 want_commits);
    cr_assert_eq(st.writes, (uint64_t)n + 1);
    cr_assert_eq(st.queued, 0);
    for (int i = 0; i <= n; i++) {
        cr_assert_eq(t[i].status, 0);
        cr_assert_eq(atomic_load(&t[i].ndone), 1);
    }
    store_close(s);
    cr_assert_eq(file_int("SELECT count(*) FROM messages"), n + 1);
    cr_assert_eq(file_int("SELECT max(seq) - min(seq) + 1 FROM messages"), n + 1);
    gate_destroy(&g);
    counter_destroy(&c);
    free(t);
}

Test(store, group_commit_takes_a_full_batch_per_transaction)
{
    group_commit_case(0 /* default 512 */, 999, 1 + 2);
}

Test(store, group_commit_respects_batch_max)
{
    group_commit_case(100, 1000, 1 + 10);
}

Test(store, single_transaction_mode_commits_one_by_one)
{
    group_commit_case(1, 20, 1 + 20);
}

Test(store, duplicate_id_reports_the_original_seq_and_keeps_seqs_gapless)
{
    store_t *s = open_store(NULL);
    uint64_t dup = 99;
    cr_assert_eq(put_sync(s, "r", 1, "ann", "m1", "one", &dup), 0);
    cr_assert_eq(dup, 0);
    cr_assert_eq(put_sync(s, "r", 2, "ann", "m1", "one again", &dup), 0);
    cr_assert_eq(dup, 1);
    /* the same id from someone else, or in another room, is not a duplicate */
    cr_assert_eq(put_sync(s, "r", 3, "bob", "m1", "bob's", &dup), 0);
    cr_assert_eq(dup, 0);
    cr_assert_eq(put_sync(s, "other", 1, "ann", "m1", "elsewhere", &dup), 0);
    cr_assert_eq(dup, 0);

    /* a duplicate inside the same batch as its original */
    struct counter c;
    struct gate g;
    struct tw t[3];
    counter_init(&c);
    gate_init(&g);
    tw_msg(&t[0], &c, "r", 4, "ann", NULL, "hold");
    t[0].gate = &g;
    cr_assert_eq(tw_submit(s, &t[0]), 0);
    gate_wait_entered(&g);
    tw_msg(&t[1], &c, "r", 5, "cat", "m2", "orig");
    tw_msg(&t[2], &c, "r", 6, "cat", "m2", "resend");
    cr_assert_eq(tw_submit(s, &t[1]), 0);
    cr_assert_eq(tw_submit(s, &t[2]), 0);
    gate_open(&g);
    counter_wait(&c, 3);
    cr_assert_eq(t[1].status, 0);
    cr_assert_eq(t[1].dup_seq, 0);
    cr_assert_eq(t[2].status, 0);
    cr_assert_eq(t[2].dup_seq, 5);
    store_close(s);

    /* the database is the truth across a restart */
    s = open_store(NULL);
    cr_assert_eq(put_sync(s, "r", 7, "ann", "m1", "much later", &dup), 0);
    cr_assert_eq(dup, 1);
    store_close(s);

    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'r'"), 7);
    cr_assert_eq(file_int("SELECT max(seq) FROM messages WHERE room = 'r'"), 7);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'r' AND client_id IS NULL"),
                 4, "rows 2, 4, 6 and 7 have no id");
    cr_assert_eq(file_int("SELECT client_id IS NULL FROM messages WHERE room = 'r' AND seq = 2"),
                 1);
    cr_assert_eq(file_int("SELECT last_seq FROM rooms WHERE name = 'r'"), 7);
    gate_destroy(&g);
    counter_destroy(&c);
}

/* A batch long enough for multi-row inserts (the writer's chunks) must
 * behave like one insert per row: duplicate ids (against the database and
 * inside the chunk) report the original seq and keep seqs gapless, and a
 * (room, seq) that is already stored keeps the stored row. */
Test(store, long_batches_keep_duplicate_and_conflict_handling)
{
    enum { N = 45 };
    struct counter c;
    struct gate g;
    struct tw hold, t[N];
    uint64_t dup = 0;
    counter_init(&c);
    gate_init(&g);
    store_t *s = open_store(NULL);
    cr_assert_eq(put_sync(s, "k", 1, "ann", "old", "before", &dup), 0);
    /* seq 30 already stored, as by a commit that reported an error */
    cr_assert_eq(put_sync(s, "k", 30, "zed", NULL, "stored earlier", &dup), 0);

    tw_msg(&hold, &c, "h", 1, "ann", NULL, "hold");
    hold.gate = &g;
    cr_assert_eq(tw_submit(s, &hold), 0);
    gate_wait_entered(&g);
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof(id), "m%d", i);
        uint64_t seq = (uint64_t)i + 2;
        const char *use = id;
        if (i == 5)
            use = "old"; /* the original is in the database: seq 1 */
        else if (i == 9)
            use = "m3"; /* the original is earlier in this chunk: seq 5 */
        else if (i == 36)
            use = "m20"; /* ... in an earlier chunk of this batch: seq 22 */
        tw_msg(&t[i], &c, "k", seq, "ann", use, "text");
        if (seq == 30) {
            snprintf(t[i].from, sizeof(t[i].from), "zed");
            t[i].a.ev.id = NULL;
        }
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    gate_open(&g);
    counter_wait(&c, N + 1);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(t[i].status, 0, "row %d: %d", i, t[i].status);
        uint64_t want = i == 5 ? 1 : i == 9 ? 5 : i == 36 ? 22 : 0;
        cr_assert_eq(t[i].dup_seq, want, "row %d: dup_seq %" PRIu64, i, t[i].dup_seq);
    }
    store_close(s);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'k'"), N + 1);
    cr_assert_eq(file_int("SELECT max(seq) - min(seq) + 1 FROM messages WHERE room = 'k'"),
                 N + 1);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'k' AND client_id IS NULL"),
                 4, "the three duplicates and seq 30");
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'k' AND seq = 30 AND "
                          "text = 'stored earlier'"),
                 1);
    cr_assert_eq(file_int("SELECT last_seq FROM rooms WHERE name = 'k'"), N + 1);
    gate_destroy(&g);
    counter_destroy(&c);
}

/* A database whose messages table refuses any row with the text "poison",
 * the way a constraint would, every time. */
static void add_poison_trigger(void)
{
    store_close(open_store(NULL));
    sqlite3 *db = raw_open();
    raw_exec(db, "CREATE TRIGGER poison BEFORE INSERT ON messages WHEN NEW.text = 'poison' "
                 "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;");
    sqlite3_close(db);
}

/* A row that fails inside a multi-row insert cannot be told from its
 * neighbours by the error: the retry runs row by row, drops it alone and
 * stores the rest. */
Test(store, a_bad_row_in_a_long_batch_is_dropped_alone)
{
    enum { N = 40 };
    add_poison_trigger();
    struct counter c;
    struct gate g;
    struct tw hold, t[N], b;
    counter_init(&c);
    gate_init(&g);
    store_t *s = open_store(NULL);
    tw_msg(&hold, &c, "h", 1, "ann", NULL, "hold");
    hold.gate = &g;
    cr_assert_eq(tw_submit(s, &hold), 0);
    gate_wait_entered(&g);
    for (int i = 0; i < N; i++) {
        tw_msg(&t[i], &c, "p", (uint64_t)i + 1, "ann", NULL, i == 17 ? "poison" : "fine");
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    tw_barrier(&b, &c);
    cr_assert_eq(tw_submit(s, &b), 0);
    gate_open(&g);
    counter_wait(&c, N + 2);
    /* the retry committed before the barrier ran: wait for the barrier's own */
    struct tw b2;
    tw_barrier(&b2, &c);
    cr_assert_eq(tw_submit(s, &b2), 0);
    counter_wait(&c, N + 3);
    cr_assert_eq(b2.status, 0);
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.lost, 1);
    store_close(s);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'p'"), N - 1);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE text = 'poison'"), 0);
    gate_destroy(&g);
    counter_destroy(&c);
}

Test(store, barrier_completes_after_every_earlier_write)
{
    enum { N = 300 };
    struct counter c;
    struct gate g;
    struct tw *t = calloc(N + 2, sizeof(*t));
    atomic_int order = 0;
    cr_assert_not_null(t);
    counter_init(&c);
    gate_init(&g);
    /* a small batch_max so the earlier writes span several transactions */
    struct store_opts o = {.batch_max = 64};
    store_t *s = open_store(&o);

    tw_msg(&t[0], &c, "b", 1, "ann", NULL, "hold");
    t[0].gate = &g;
    t[0].order = &order;
    cr_assert_eq(tw_submit(s, &t[0]), 0);
    gate_wait_entered(&g);
    for (int i = 1; i < N; i++) {
        tw_msg(&t[i], &c, "b", (uint64_t)i + 1, "ann", NULL, "x");
        t[i].order = &order;
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    tw_barrier(&t[N], &c);
    t[N].order = &order;
    cr_assert_eq(tw_submit(s, &t[N]), 0);
    gate_open(&g);
    counter_wait(&c, N + 1);
    cr_assert_eq(t[N].status, 0);
    cr_assert_eq(t[N].done_order, N, "the barrier completed after all %d writes", N);
    cr_assert_eq(file_int("SELECT count(*) FROM messages"), N);

    /* a barrier alone */
    tw_barrier(&t[N + 1], &c);
    cr_assert_eq(tw_submit(s, &t[N + 1]), 0);
    counter_wait(&c, N + 2);
    cr_assert_eq(t[N + 1].status, 0);
    store_close(s);
    gate_destroy(&g);
    counter_destroy(&c);
    free(t);
}

/* --------------------------------------------------- durability full */

/* Poll the stats until the counter at `off` reaches want, for what no
 * callback announces (bounded only as a safety net against a hang). */
static struct store_stats poll_stats(store_t *s, size_t off, uint64_t want)
{
    struct store_stats st;
    for (int tries = 0; tries < WAIT_LIMIT_S * 1000; tries++) {
        store_stats(s, &st);
        uint64_t v;
        memcpy(&v, (const char *)&st + off, sizeof(v));
        if (v >= want)
            break;
        usleep(1000);
    }
    return st;
}

/*
 * With durability full an ack waits for an fdatasync of the WAL on the sync
 * thread, which runs behind the writer: every done() comes after a sync, in
 * submit order, and the writer keeps committing while acks wait.
 */
Test(store, full_durability_acks_only_after_a_wal_sync_in_order)
{
    enum { N = 400 };
    struct counter c;
    struct gate g;
    struct tw *t = calloc(N, sizeof(*t));
    atomic_int order = 0;
    cr_assert_not_null(t);
    counter_init(&c);
    gate_init(&g);
    struct store_opts o = {.durability_full = true, .batch_max = 16};
    store_t *s = open_store(&o);

    /* hold the sync thread inside the first ack */
    tw_msg(&t[0], &c, "d", 1, "ann", "first", "first");
    t[0].gate = &g;
    t[0].order = &order;
    t[0].store = s;
    cr_assert_eq(tw_submit(s, &t[0]), 0);
    gate_wait_entered(&g);
    for (int i = 1; i < N; i++) {
        char id[16], text[16];
        snprintf(id, sizeof(id), "id%d", i);
        snprintf(text, sizeof(text), "m%d", i);
        tw_msg(&t[i], &c, "d", (uint64_t)i + 1, "ann", i % 3 ? NULL : id, text);
        t[i].order = &order;
        t[i].store = s;
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    /* the writer is not held by a waiting ack: it commits everything */
    struct store_stats st = poll_stats(s, offsetof(struct store_stats, writes), N);
    cr_assert_eq(st.writes, N, "committed %" PRIu64 " of %d while an ack waited", st.writes, N);
    cr_assert_geq(st.commits, N / 16);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'd'"), N);
    cr_assert_eq(counter_get(&c), 0, "no ack overtook the held one");
    cr_assert_eq(atomic_load(&t[1].ndone), 0);

    gate_open(&g);
    counter_wait(&c, N);
    store_stats(s, &st);
    cr_assert_geq(st.syncs, 2, "the held sync, then at least one for the rest");
    cr_assert_leq(st.syncs, st.commits);
    cr_assert_gt(st.sync_seconds_sum, 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(t[i].status, 0, "write %d: status %d", i, t[i].status);
        cr_assert_eq(atomic_load(&t[i].ndone), 1);
        cr_assert_eq(t[i].done_order, i, "write %d acked in place %d", i, t[i].done_order);
        cr_assert_geq(t[i].syncs_seen, i ? 2 : 1, "write %d acked before its sync", i);
    }
    store_close(s);
    gate_destroy(&g);
    counter_destroy(&c);
    free(t);
}

/* A WAL that cannot be synced must not produce acks: the writes are
 * committed (the OS has them) but their submitters get -EIO, and so does
 * every later write, even once the fault is gone: after a failed fdatasync
 * the OS may have dropped those pages, and no later sync covers them. The
 * fault: the WAL's name disappears under SQLite (which keeps writing to its
 * open file), then comes back as the same file. */
Test(store, full_durability_fails_acks_for_good_once_a_wal_sync_failed)
{
    struct store_opts o = {.durability_full = true};
    store_t *s = open_store(&o);
    cr_assert_eq(put_sync(s, "w", 1, "ann", NULL, "synced", NULL), 0);
    char wal[4300], keep[4300];
    snprintf(wal, sizeof(wal), "%s-wal", dbpath);
    snprintf(keep, sizeof(keep), "%s-wal.keep", dbpath);
    cr_assert_eq(link(wal, keep), 0, "link %s: %s", wal, strerror(errno));
    cr_assert_eq(unlink(wal), 0, "unlink %s: %s", wal, strerror(errno));
    cr_assert_eq(put_sync(s, "w", 2, "ann", NULL, "not synced", NULL), -EIO);
    cr_assert_eq(link(keep, wal), 0, "link %s: %s", keep, strerror(errno));
    cr_assert_eq(unlink(keep), 0);
    cr_assert_eq(put_sync(s, "w", 3, "ann", NULL, "after the fault", NULL), -EIO);
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.failures, 2);
    cr_assert_eq(st.writes, 3, "the rows themselves were committed");
    store_close(s);
}

/* A failing commit with durability full: the failures reach done() through
 * the sync thread too, in order, and what is written after the fault heals
 * is acked after a sync as usual. */
Test(store, full_durability_reports_failed_commits_in_order_then_recovers)
{
    /* every batch is B writes whatever the timing: a batch ends when full,
     * and the window is far longer than a test */
    enum { B = 4 };
    struct counter c;
    struct gate g;
    struct tw t[3 * B]; /* before the fault, during it, after it */
    atomic_int order = 0;
    counter_init(&c);
    gate_init(&g);
    struct store_opts o = {.durability_full = true, .batch_max = B,
                           .batch_window_us = 60 * 1000 * 1000};
    store_t *s = open_store(&o);
    for (int i = 0; i < 3 * B; i++) {
        tw_msg(&t[i], &c, "e", (uint64_t)i + 1, "ann", NULL,
               i < B ? "before" : i < 2 * B ? "during" : "after");
        t[i].order = &order;
        t[i].store = s;
    }

    /* the first ack held at the sync thread: the failures queue behind it */
    t[0].gate = &g;
    for (int i = 0; i < B; i++)
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    gate_wait_entered(&g);
    make_fs_fail();
    for (int i = B; i < 2 * B; i++)
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    struct store_stats st = poll_stats(s, offsetof(struct store_stats, failures), B);
    cr_assert_eq(st.failures, B, "the writer failed the batch");
    cr_assert_eq(counter_get(&c), 0, "a failure overtook the held ack");
    gate_open(&g);
    counter_wait(&c, 2 * B);
    store_stats(s, &st);
    uint64_t syncs_during = st.syncs;
    for (int i = 0; i < 2 * B; i++) {
        cr_assert_eq(t[i].done_order, i, "write %d reported in place %d", i, t[i].done_order);
        if (i < B)
            cr_assert_eq(t[i].status, 0, "write %d: status %d", i, t[i].status);
        else
            cr_assert_lt(t[i].status, 0, "write %d: status %d", i, t[i].status);
    }

    make_fs_work();
    for (int i = 2 * B; i < 3 * B; i++)
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    counter_wait(&c, 3 * B);
    for (int i = 2 * B; i < 3 * B; i++) {
        cr_assert_eq(t[i].status, 0, "write %d: status %d", i, t[i].status);
        cr_assert_eq(t[i].done_order, i);
        cr_assert_gt(t[i].syncs_seen, syncs_during, "write %d acked before a sync", i);
    }
    store_close(s);
    /* the failed rows were retried and kept: no seq is missing */
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'e'"), 3 * B);
    cr_assert_eq(file_int("SELECT max(seq) FROM messages WHERE room = 'e'"), 3 * B);
    gate_destroy(&g);
    counter_destroy(&c);
}

/* sync_in_commit: SQLite's own synchronous=FULL, no sync thread. */
Test(store, sync_in_commit_fsyncs_inside_the_commit)
{
    struct store_opts o = {.durability_full = true, .sync_in_commit = true};
    store_t *s = open_store(&o);
    for (uint64_t i = 1; i <= 5; i++)
        cr_assert_eq(put_sync(s, "c", i, "ann", NULL, "x", NULL), 0);
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.syncs, 0);
    cr_assert_eq(st.writes, 5);
    sqlite3 *db = raw_open();
    cr_assert_eq(raw_int(db, "SELECT count(*) FROM messages"), 5);
    sqlite3_close(db);
    store_close(s);
}

/* -------------------------------------------------------------- reads */

struct tr {
    struct store_read r;
    struct counter *cnt;
    atomic_int ndone;
};

static void tr_done(struct store_read *r)
{
    struct tr *t = (struct tr *)r;
    atomic_fetch_add(&t->ndone, 1);
    counter_add(t->cnt);
}

/* Run one read synchronously; the caller releases it. */
static void read_sync(store_t *s, struct tr *t, const char *room, enum store_read_mode mode,
                      uint64_t key, int limit)
{
    struct counter c;
    counter_init(&c);
    memset(t, 0, sizeof(*t));
    snprintf(t->r.room, sizeof(t->r.room), "%s", room);
    t->r.mode = mode;
    t->r.key = key;
    t->r.limit = limit;
    t->r.done = tr_done;
    t->cnt = &c;
    cr_assert_eq(store_read_submit(s, &t->r), 0);
    counter_wait(&c, 1);
    counter_destroy(&c);
    t->cnt = NULL;
    cr_assert_eq(atomic_load(&t->ndone), 1);
    cr_assert_eq(t->r.status, 0);
}

/* Expect seqs first..last (oldest first) and the more flag. */
static void expect_range(store_t *s, enum store_read_mode mode, uint64_t key, int limit,
                         uint64_t first, uint64_t last, bool more)
{
    struct tr t;
    read_sync(s, &t, "h", mode, key, limit);
    size_t want = last >= first ? (size_t)(last - first + 1) : 0;
    cr_assert_eq(t.r.n, want, "mode %d key %" PRIu64 " limit %d: n %zu, want %zu", mode, key,
                 limit, t.r.n, want);
    for (size_t i = 0; i < t.r.n; i++) {
        const struct room_event *m = &t.r.evs[i];
        cr_assert_eq(m->kind, EV_MESSAGE);
        uint64_t seq = first + i;
        char text[64];
        snprintf(text, sizeof(text), "message %" PRIu64, seq);
        cr_assert_eq(m->seq, seq);
        cr_assert_str_eq(m->room, "h");
        cr_assert_str_eq(m->from, seq % 2 ? "ann" : "bob");
        cr_assert_str_eq(m->text, text);
        cr_assert_eq(m->text_len, strlen(text));
        cr_assert_eq(m->ts, 1700000000000 + (int64_t)seq);
        cr_assert_not_null(m->id);
        if (seq % 3 == 0) {
            char id[16];
            snprintf(id, sizeof(id), "id%" PRIu64, seq);
            cr_assert_str_eq(m->id, id);
        } else {
            cr_assert_str_eq(m->id, "");
        }
    }
    cr_assert_eq(t.r.more, more, "mode %d key %" PRIu64 " limit %d: more %d", mode, key, limit,
                 t.r.more);
    store_read_release(&t.r);
    cr_assert_null(t.r.evs);
}

/* Reads that record the order their done() runs in; read 0's done holds
 * the only reader until the test opens the gate, so the others queue up. */
struct ord {
    struct store_read r;
    int id;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool first_in, gate_open;
    int seq[16];
    int n;
} ord = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false, {0}, 0};

static void ord_wait_locked(bool *flag)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_LIMIT_S;
    while (!*flag && pthread_cond_timedwait(&ord.cond, &ord.lock, &ts) != ETIMEDOUT)
        ;
}

static void ord_done(struct store_read *r)
{
    struct ord *o = (struct ord *)r;
    pthread_mutex_lock(&ord.lock);
    if (o->id == 0) {
        ord.first_in = true;
        pthread_cond_broadcast(&ord.cond);
        ord_wait_locked(&ord.gate_open);
    }
    if (ord.n < (int)(sizeof(ord.seq) / sizeof(ord.seq[0])))
        ord.seq[ord.n++] = o->id;
    pthread_cond_broadcast(&ord.cond);
    pthread_mutex_unlock(&ord.lock);
}

static void ord_submit(store_t *s, struct ord *o, int id, const char *owner)
{
    memset(o, 0, sizeof(*o));
    o->id = id;
    snprintf(o->r.room, sizeof(o->r.room), "r%d", id);
    snprintf(o->r.owner, sizeof(o->r.owner), "%s", owner);
    o->r.mode = SR_LATEST;
    o->r.limit = 10;
    o->r.done = ord_done;
    cr_assert_eq(store_read_submit(s, &o->r), 0);
}

/* Owners with reads waiting take turns, one read each; one owner's reads
 * keep their order. Without turns, "a"'s six reads would all go first. */
Test(store, reads_are_served_in_turn_per_owner)
{
    static const char *const owners[10] = {"a", "a", "a", "a", "a", "a", "a", "b", "c", "b"};
    static const int want[10] = {0, 1, 7, 8, 2, 9, 3, 4, 5, 6};
    struct ord o[10];
    store_t *s = open_store(&(struct store_opts){.readers = 1});

    ord_submit(s, &o[0], 0, owners[0]);
    pthread_mutex_lock(&ord.lock);
    ord_wait_locked(&ord.first_in);
    bool in = ord.first_in;
    pthread_mutex_unlock(&ord.lock);
    cr_assert(in, "the reader did not take the first read");
    for (int i = 1; i < 10; i++)
        ord_submit(s, &o[i], i, owners[i]);
    pthread_mutex_lock(&ord.lock);
    ord.gate_open = true;
    pthread_cond_broadcast(&ord.cond);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_LIMIT_S;
    while (ord.n < 10 && pthread_cond_timedwait(&ord.cond, &ord.lock, &ts) != ETIMEDOUT)
        ;
    int n = ord.n;
    int got[10];
    memcpy(got, ord.seq, sizeof(got));
    pthread_mutex_unlock(&ord.lock);
    cr_assert_eq(n, 10, "answered %d of 10 reads", n);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(got[i], want[i], "position %d: read %d, want %d (owner %s)", i, got[i],
                     want[i], owners[want[i]]);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(o[i].r.status, 0);
        store_read_release(&o[i].r);
    }
    store_close(s);
}

Test(store, history_reads_page_correctly)
{
    struct counter c;
    struct tw t[10];
    counter_init(&c);
    store_t *s = open_store(&(struct store_opts){.readers = 2});
    for (int i = 0; i < 10; i++) {
        uint64_t seq = (uint64_t)i + 1;
        char text[64], id[16];
        snprintf(text, sizeof(text), "message %" PRIu64, seq);
        snprintf(id, sizeof(id), "id%" PRIu64, seq);
        tw_msg(&t[i], &c, "h", seq, seq % 2 ? "ann" : "bob", seq % 3 == 0 ? id : NULL, text);
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    counter_wait(&c, 10);

    /* LATEST */
    expect_range(s, SR_LATEST, 0, 3, 8, 10, true);
    expect_range(s, SR_LATEST, 0, 9, 2, 10, true);
    expect_range(s, SR_LATEST, 0, 10, 1, 10, false);
    expect_range(s, SR_LATEST, 0, 50, 1, 10, false);
    expect_range(s, SR_LATEST, 0, 0, 1, 0, true);
    /* SINCE: seq > key, oldest first */
    expect_range(s, SR_SINCE, 0, 3, 1, 3, true);
    expect_range(s, SR_SINCE, 7, 3, 8, 10, false);
    expect_range(s, SR_SINCE, 6, 3, 7, 9, true);
    expect_range(s, SR_SINCE, 9, 1, 10, 10, false);
    expect_range(s, SR_SINCE, 10, 5, 1, 0, false);
    expect_range(s, SR_SINCE, 1000, 5, 1, 0, false);
    expect_range(s, SR_SINCE, UINT64_MAX, 5, 1, 0, false);
    /* BEFORE: the latest `limit` with seq < key */
    expect_range(s, SR_BEFORE, 1, 5, 1, 0, false);
    expect_range(s, SR_BEFORE, 0, 5, 1, 0, false);
    expect_range(s, SR_BEFORE, 2, 5, 1, 1, false);
    expect_range(s, SR_BEFORE, 5, 2, 3, 4, true);
    expect_range(s, SR_BEFORE, 3, 2, 1, 2, false);
    expect_range(s, SR_BEFORE, 11, 100, 1, 10, false);
    expect_range(s, SR_BEFORE, UINT64_MAX, 4, 7, 10, true);

    /* an empty or unknown room */
    struct tr r;
    read_sync(s, &r, "nobody-here", SR_LATEST, 0, 50);
    cr_assert_eq(r.r.n, 0);
    cr_assert_not(r.r.more);
    store_read_release(&r.r);
    read_sync(s, &r, "nobody-here", SR_SINCE, 0, 50);
    cr_assert_eq(r.r.n, 0);
    cr_assert_not(r.r.more);
    store_read_release(&r.r);
    store_close(s);
    counter_destroy(&c);
}

/* ------------------------------------------------------------- faults */

Test(store, failed_commit_reports_once_then_retries_until_committed)
{
    enum { NF = 5 };
    struct counter c, hc;
    struct gate g;
    struct tw t[NF + 3], hold;
    counter_init(&c);
    counter_init(&hc);
    gate_init(&g);
    store_t *s = open_store(NULL);
    cr_assert_eq(put_sync(s, "f", 1, "ann", "a1", "before the fault", NULL), 0);

    /* hold the writer so that all NF writes form one batch, which fails */
    tw_msg(&hold, &hc, "f", 2, "ann", NULL, "hold");
    hold.gate = &g;
    cr_assert_eq(tw_submit(s, &hold), 0);
    gate_wait_entered(&g);
    for (int i = 0; i < NF; i++) {
        tw_msg(&t[i], &c, "f", (uint64_t)i + 3, "ann", i == 0 ? "a2" : NULL, "during");
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    make_fs_fail();
    gate_open(&g);
    counter_wait(&c, NF);
    cr_assert_eq(hold.status, 0);
    for (int i = 0; i < NF; i++) {
        cr_assert_lt(t[i].status, 0, "write %d: status %d", i, t[i].status);
        cr_assert_eq(atomic_load(&t[i].ndone), 1);
    }
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.failures, NF);
    cr_assert_geq(st.failed_commits, 1);
    cr_assert_eq(st.retrying, NF, "retrying %zu", st.retrying);

    /* written while the retry is pending: waits behind it, then commits */
    tw_msg(&t[NF], &c, "f", NF + 3, "ann", NULL, "after");
    tw_user(&t[NF + 1], &c, "zed");
    tw_barrier(&t[NF + 2], &c);
    for (int i = NF; i < NF + 3; i++)
        cr_assert_eq(tw_submit(s, &t[i]), 0);

    make_fs_work();
    counter_wait(&c, NF + 3);
    for (int i = NF; i < NF + 3; i++) {
        cr_assert_eq(t[i].status, 0, "write %d: status %d", i, t[i].status);
        cr_assert_eq(atomic_load(&t[i].ndone), 1);
    }
    /* the failed ones were not reported again */
    for (int i = 0; i < NF; i++)
        cr_assert_eq(atomic_load(&t[i].ndone), 1);
    store_stats(s, &st);
    cr_assert_eq(st.retrying, 0);
    cr_assert_eq(st.failures, NF);

    sqlite3 *db = raw_open();
    cr_assert_eq(raw_int(db, "SELECT count(*) FROM messages WHERE room = 'f'"), NF + 3);
    cr_assert_eq(raw_int(db, "SELECT max(seq) FROM messages WHERE room = 'f'"), NF + 3);
    cr_assert_eq(raw_int(db, "SELECT count(*) FROM messages WHERE client_id = 'a2'"), 1);
    cr_assert_eq(raw_int(db, "SELECT last_seq FROM rooms WHERE name = 'f'"), NF + 3);
    cr_assert_eq(raw_int(db, "SELECT count(*) FROM users WHERE name = 'zed'"), 1);
    sqlite3_close(db);
    store_close(s);
    gate_destroy(&g);
    counter_destroy(&hc);
    counter_destroy(&c);
}

Test(store, close_gives_up_on_a_lasting_fault_after_its_timeout)
{
    struct counter c;
    struct tw t[4];
    counter_init(&c);
    store_t *s = open_store(&(struct store_opts){.close_timeout_ms = 100});
    cr_assert_eq(put_sync(s, "z", 1, "ann", NULL, "kept", NULL), 0);
    make_fs_fail();
    tw_msg(&t[0], &c, "z", 2, "ann", NULL, "failed");
    cr_assert_eq(tw_submit(s, &t[0]), 0);
    counter_wait(&c, 1);
    cr_assert_lt(t[0].status, 0);
    for (int i = 1; i < 4; i++) {
        tw_msg(&t[i], &c, "z", (uint64_t)i + 2, "ann", NULL, "queued");
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    store_close(s);
    /* every write heard exactly once; the queued ones as failures */
    cr_assert_eq(counter_get(&c), 4);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(atomic_load(&t[i].ndone), 1);
        cr_assert_lt(t[i].status, 0);
    }
    make_fs_work();
    cr_assert_eq(file_int("SELECT count(*) FROM messages"), 1);
    counter_destroy(&c);
}

Test(store, a_row_that_can_never_be_stored_is_dropped_not_retried_forever)
{
    add_poison_trigger();
    struct counter c;
    struct gate g;
    struct tw t[5];
    counter_init(&c);
    gate_init(&g);
    store_t *s = open_store(NULL);
    tw_msg(&t[0], &c, "p", 1, "ann", NULL, "hold");
    t[0].gate = &g;
    cr_assert_eq(tw_submit(s, &t[0]), 0);
    gate_wait_entered(&g);
    tw_msg(&t[1], &c, "p", 2, "ann", NULL, "fine");
    tw_msg(&t[2], &c, "p", 3, "ann", NULL, "poison");
    tw_msg(&t[3], &c, "p", 4, "ann", NULL, "also fine");
    tw_barrier(&t[4], &c);
    for (int i = 1; i < 5; i++)
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    gate_open(&g);
    counter_wait(&c, 5);
    cr_assert_eq(t[0].status, 0);
    for (int i = 1; i < 5; i++) {
        cr_assert_lt(t[i].status, 0, "the batch failed as a whole: %d", t[i].status);
        cr_assert_eq(atomic_load(&t[i].ndone), 1);
    }
    /* the same batch retried without the poisoned row: wait with a barrier */
    struct tw b;
    tw_barrier(&b, &c);
    cr_assert_eq(tw_submit(s, &b), 0);
    counter_wait(&c, 6);
    cr_assert_eq(b.status, 0);
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.lost, 1);
    cr_assert_eq(st.retrying, 0);
    store_close(s);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE room = 'p'"), 3);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE text = 'poison'"), 0);
    cr_assert_eq(file_int("SELECT last_seq FROM rooms WHERE name = 'p'"), 4);
    gate_destroy(&g);
    counter_destroy(&c);
}

/* The background checkpointer copies the WAL into the database file while
 * the store runs (a checkpoint that silently does nothing would leave the
 * file at its initial size until close). */
Test(store, wal_is_checkpointed_in_the_background)
{
    enum { N = 3000 };
    struct counter c;
    struct tw *t = calloc(N, sizeof(*t));
    static char big[2001];
    cr_assert_not_null(t);
    memset(big, 'w', sizeof(big) - 1);
    counter_init(&c);
    store_t *s = open_store(NULL);
    for (int i = 0; i < N; i++) {
        tw_msg(&t[i], &c, "w", (uint64_t)i + 1, "ann", NULL, "");
        t[i].a.ev.text = big; /* ~6 MB of WAL in all, past the checkpoint mark */
        t[i].a.ev.text_len = sizeof(big) - 1;
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    counter_wait(&c, N);
    struct stat sb;
    bool grown = false;
    for (int tries = 0; tries < WAIT_LIMIT_S * 100 && !grown; tries++) {
        cr_assert_eq(stat(dbpath, &sb), 0);
        grown = sb.st_size > 2 * 1024 * 1024;
        if (!grown) {
            /* polling a file's size: nothing to wait on */
            struct timespec d = {0, 10000000};
            nanosleep(&d, NULL);
        }
    }
    cr_assert(grown, "database file still %lld bytes", (long long)sb.st_size);
    store_close(s);
    counter_destroy(&c);
    free(t);
}

/* ---------------------------------------------------------- shutdown */

Test(store, close_flushes_the_queue)
{
    enum { N = 5000 };
    struct counter c;
    struct tw *t = calloc(N, sizeof(*t));
    cr_assert_not_null(t);
    counter_init(&c);
    /* a long window: without the flush these would still be waiting */
    store_t *s = open_store(&(struct store_opts){.batch_window_us = 10000000, .batch_max = 4096});
    for (int i = 0; i < N; i++) {
        tw_msg(&t[i], &c, "q", (uint64_t)i + 1, "ann", NULL, "flush me");
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    }
    store_close(s);
    cr_assert_eq(counter_get(&c), N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(t[i].status, 0);
        cr_assert_eq(atomic_load(&t[i].ndone), 1);
    }
    cr_assert_eq(file_int("SELECT count(*) FROM messages"), N);
    counter_destroy(&c);
    free(t);
}

/* While the writer is held in a done(), a closer thread calls store_close;
 * a submitter spins until the store refuses with -ESHUTDOWN. Everything it
 * got in before that must still be committed. */
struct close_ctx {
    store_t *s;
    struct tw extra[256];
    int nextra;
    int last_rc;
    struct gate gate;
    struct counter cnt;
};

static void *closer_main(void *arg)
{
    struct close_ctx *x = arg;
    store_close(x->s);
    return NULL;
}

Test(store, submit_after_close_began_is_refused)
{
    static struct close_ctx x;
    struct tw first;
    pthread_t closer;

    memset(&x, 0, sizeof(x));
    gate_init(&x.gate);
    counter_init(&x.cnt);
    x.s = open_store(&(struct store_opts){.queue_max = 16});
    tw_msg(&first, &x.cnt, "c", 1, "ann", NULL, "first");
    first.gate = &x.gate;
    cr_assert_eq(tw_submit(x.s, &first), 0);
    gate_wait_entered(&x.gate);
    cr_assert_eq(pthread_create(&closer, NULL, closer_main, &x), 0);
    for (;;) {
        cr_assert_lt(x.nextra, 256);
        struct tw *t = &x.extra[x.nextra];
        tw_msg(t, &x.cnt, "c", (uint64_t)x.nextra + 2, "ann", NULL, "racing close");
        x.last_rc = tw_submit(x.s, t);
        if (x.last_rc == 0)
            x.nextra++;
        else if (x.last_rc == -EAGAIN)
            sched_yield();
        else
            break;
    }
    cr_assert_eq(x.last_rc, -ESHUTDOWN);
    gate_open(&x.gate);
    cr_assert_eq(pthread_join(closer, NULL), 0);
    cr_assert_eq(counter_get(&x.cnt), x.nextra + 1);
    for (int i = 0; i < x.nextra; i++)
        cr_assert_eq(x.extra[i].status, 0);
    cr_assert_eq(file_int("SELECT count(*) FROM messages"), x.nextra + 1);
    gate_destroy(&x.gate);
    counter_destroy(&x.cnt);
}

/* ------------------------------------------------------ start-up loads */

struct seen {
    char names[16][80];
    uint64_t seqs[16];
    int n;
};

static void seen_room(void *arg, const char *room, uint64_t last_seq)
{
    struct seen *v = arg;
    cr_assert_lt(v->n, 16);
    snprintf(v->names[v->n], sizeof(v->names[0]), "%s", room);
    v->seqs[v->n++] = last_seq;
}

static void seen_user(void *arg, const struct store_user *u)
{
    seen_room(arg, u->name, 0);
}

static void seen_id(void *arg, const char *room, const char *from, const char *id, uint64_t seq,
                    int64_t ts)
{
    struct seen *v = arg;
    cr_assert_lt(v->n, 16);
    cr_assert_gt(ts, 0);
    snprintf(v->names[v->n], sizeof(v->names[0]), "%s/%s/%s", room, from, id);
    v->seqs[v->n++] = seq;
}

static uint64_t seen_get(const struct seen *v, const char *name)
{
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->names[i], name) == 0)
            return v->seqs[i] + 1; /* 0: absent */
    return 0;
}

Test(store, loads_rooms_users_and_recent_ids_after_reopen)
{
    struct counter c;
    struct tw t[12];
    int k = 0;
    counter_init(&c);
    store_t *s = open_store(NULL);
    for (uint64_t i = 1; i <= 3; i++)
        tw_msg(&t[k++], &c, "alpha", i, "ann", NULL, "a");
    for (uint64_t i = 1; i <= 5; i++)
        tw_msg(&t[k++], &c, "beta", i, "bob", NULL, "b");
    tw_msg(&t[k++], &c, "dm:ann:bob", 1, "ann", "fresh", "psst");
    t[k - 1].a.ev.ts = 1700000000000 + 86400000;
    t[k - 5].a.ev.id = "stale"; /* beta seq 2 */
    tw_user(&t[k++], &c, "ann");
    tw_user(&t[k++], &c, "bob");
    tw_user(&t[k++], &c, "ann");
    for (int i = 0; i < k; i++)
        cr_assert_eq(tw_submit(s, &t[i]), 0);
    counter_wait(&c, k);
    store_close(s);

    s = open_store(NULL);
    struct seen v = {0};
    cr_assert_eq(store_load_rooms(s, seen_room, &v), 0);
    cr_assert_eq(v.n, 3);
    cr_assert_eq(seen_get(&v, "alpha"), 3 + 1);
    cr_assert_eq(seen_get(&v, "beta"), 5 + 1);
    cr_assert_eq(seen_get(&v, "dm:ann:bob"), 1 + 1);

    memset(&v, 0, sizeof(v));
    cr_assert_eq(store_load_users(s, 0, seen_user, &v), 0);
    cr_assert_eq(v.n, 2);
    cr_assert(seen_get(&v, "ann") && seen_get(&v, "bob"));

    memset(&v, 0, sizeof(v));
    cr_assert_eq(store_load_ids(s, 0, seen_id, &v), 0);
    cr_assert_eq(v.n, 2);
    cr_assert_eq(seen_get(&v, "beta/bob/stale"), 2 + 1);
    cr_assert_eq(seen_get(&v, "dm:ann:bob/ann/fresh"), 1 + 1);

    memset(&v, 0, sizeof(v));
    cr_assert_eq(store_load_ids(s, 1700000000000 + 1000, seen_id, &v), 0);
    cr_assert_eq(v.n, 1, "only ids newer than since_ms");
    cr_assert_eq(seen_get(&v, "dm:ann:bob/ann/fresh"), 1 + 1);
    store_close(s);
    counter_destroy(&c);
}

/* ------------------------------------------------------------ accounts */

/* An account write, waited for; returns its status. */
enum acct_op { ACCT_ADD, ACCT_PASSWD, ACCT_DEL };

static int acct_wait(store_t *s, enum acct_op op, const char *name, const char *hash,
                     const char *email, bool adopt)
{
    struct store_account_add a = {.name = name, .password_hash = hash, .email = email,
                                  .adopt = adopt};
    return op == ACCT_ADD      ? store_account_add(s, &a)
           : op == ACCT_PASSWD ? store_account_passwd(s, name, hash)
                               : store_account_del(s, name);
}

static void user_sync(store_t *s, const char *name)
{
    struct counter c;
    struct tw t;
    counter_init(&c);
    tw_user(&t, &c, name);
    cr_assert_eq(tw_submit(s, &t), 0);
    counter_wait(&c, 1);
    counter_destroy(&c);
    cr_assert_eq(t.status, 0);
}

static int64_t user_int(const char *name, const char *column)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT %s FROM users WHERE name = '%s'", column, name);
    return file_int(sql);
}

static void a_name_ever_used_is_never_registered_again(void)
{
    store_t *s = open_store(NULL);
    /* seen only (a token-only user): registration refuses it */
    user_sync(s, "sso");
    cr_assert_eq(acct_wait(s, ACCT_ADD, "sso", "h1", "x@example.org", false), -EEXIST);
    cr_assert_eq(file_int("SELECT count(*) FROM users WHERE name = 'sso' AND "
                          "password_hash IS NULL AND email IS NULL"),
                 1, "a refused registration changes nothing");
    /* the operator may give it a password (adopt), once */
    cr_assert_eq(acct_wait(s, ACCT_ADD, "sso", "h1", NULL, true), 0);
    cr_assert_eq(acct_wait(s, ACCT_ADD, "sso", "h2", NULL, true), -EEXIST);
    cr_assert_eq(user_int("sso", "password_hash = 'h1'"), 1);
    cr_assert_eq(user_int("sso", "tokens_after"), 0, "adopting revokes nothing");

    /* a new name registers; a second registration is refused */
    cr_assert_eq(acct_wait(s, ACCT_ADD, "ann", "h1", "ann@example.org", false), 0);
    cr_assert_eq(acct_wait(s, ACCT_ADD, "ann", "h2", NULL, false), -EEXIST);

    /* deleted: no password, no e-mail, tokens revoked, the name reserved */
    int64_t t0 = now_ms_for_test();
    cr_assert_eq(acct_wait(s, ACCT_DEL, "ann", NULL, NULL, false), 0);
    int64_t t1 = now_ms_for_test();
    cr_assert_eq(user_int("ann", "password_hash IS NULL AND email IS NULL"), 1);
    int64_t deleted_at = user_int("ann", "deleted_at");
    cr_assert(deleted_at >= t0 && deleted_at <= t1, "%lld", (long long)deleted_at);
    cr_assert_eq(user_int("ann", "tokens_after"), deleted_at + STORE_REVOKE_MARGIN_MS);
    cr_assert_eq(acct_wait(s, ACCT_ADD, "ann", "h3", NULL, false), -EEXIST);
    cr_assert_eq(acct_wait(s, ACCT_ADD, "ann", "h3", NULL, true), -EACCES);
    cr_assert_eq(acct_wait(s, ACCT_PASSWD, "ann", "h3", NULL, false), -ENOENT);
    cr_assert_eq(user_int("ann", "password_hash IS NULL"), 1);
    /* deleting again keeps the first deletion time; a token-only name can
     * be deleted too; a name never seen cannot */
    cr_assert_eq(acct_wait(s, ACCT_DEL, "ann", NULL, NULL, false), 0);
    cr_assert_eq(user_int("ann", "deleted_at"), deleted_at);
    user_sync(s, "tok");
    cr_assert_eq(acct_wait(s, ACCT_DEL, "tok", NULL, NULL, false), 0);
    cr_assert_eq(acct_wait(s, ACCT_ADD, "tok", "h1", NULL, true), -EACCES);
    cr_assert_eq(acct_wait(s, ACCT_DEL, "never", NULL, NULL, false), -ENOENT);
    cr_assert_eq(file_int("SELECT count(*) FROM users WHERE name = 'never'"), 0);
    /* a seen row of a deleted name stays deleted (a user seen inserts or ignores) */
    user_sync(s, "ann");
    cr_assert_eq(user_int("ann", "deleted_at IS NOT NULL"), 1);
    store_close(s);
}

static void a_password_change_revokes_older_tokens(void)
{
    store_t *s = open_store(NULL);
    cr_assert_eq(acct_wait(s, ACCT_ADD, "bob", "h1", NULL, false), 0);
    char hash[64];
    int64_t after = -1;
    cr_assert_eq(store_account_get(s, "bob", hash, sizeof(hash), NULL, 0, &after), 0);
    cr_assert_str_eq(hash, "h1");
    cr_assert_eq(after, 0);
    int64_t t0 = now_ms_for_test();
    cr_assert_eq(acct_wait(s, ACCT_PASSWD, "bob", "h2", NULL, false), 0);
    int64_t t1 = now_ms_for_test();
    cr_assert_eq(store_account_get(s, "bob", hash, sizeof(hash), NULL, 0, &after), 0);
    cr_assert_str_eq(hash, "h2");
    /* past the change by the margin: beyond its commit */
    cr_assert(after >= t0 + STORE_REVOKE_MARGIN_MS && after <= t1 + STORE_REVOKE_MARGIN_MS,
              "%lld", (long long)after);
    /* it never moves back (a clock stepped back) */
    raw_exec_file("UPDATE users SET tokens_after = 9000000000000 WHERE name = 'bob'");
    cr_assert_eq(acct_wait(s, ACCT_PASSWD, "bob", "h3", NULL, false), 0);
    cr_assert_eq(user_int("bob", "tokens_after"), 9000000000000);
    /* no account: nothing to change */
    user_sync(s, "sso");
    cr_assert_eq(acct_wait(s, ACCT_PASSWD, "sso", "h1", NULL, false), -ENOENT);
    cr_assert_eq(store_account_get(s, "sso", hash, sizeof(hash), NULL, 0, &after), -ENOENT);
    store_close(s);
}

struct seen_users {
    struct store_user u[8];
    char names[8][40], emails[8][80];
    int n;
};

static void collect_user(void *arg, const struct store_user *u)
{
    struct seen_users *v = arg;
    cr_assert_lt(v->n, 8);
    v->u[v->n] = *u;
    snprintf(v->names[v->n], sizeof(v->names[0]), "%s", u->name);
    v->u[v->n].name = v->names[v->n];
    if (u->email) {
        snprintf(v->emails[v->n], sizeof(v->emails[0]), "%s", u->email);
        v->u[v->n].email = v->emails[v->n];
    }
    v->n++;
}

static const struct store_user *find_user(const struct seen_users *v, const char *name)
{
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->u[i].name, name) == 0)
            return &v->u[i];
    return NULL;
}

/* What a running server's main thread does each second: notice changes
 * made through another connection (`parleyd user ...` in another process)
 * and read only the names that changed. */
static void account_changes_by_another_writer_are_found_by_generation(void)
{
    store_t *s = open_store(NULL);
    uint64_t g0 = 99, g;
    cr_assert_eq(store_users_gen(s, &g0), 0);
    cr_assert_eq(g0, 0);
    user_sync(s, "seen");
    cr_assert_eq(acct_wait(s, ACCT_ADD, "ann", "h1", "ann@example.org", false), 0);
    cr_assert_eq(store_users_gen(s, &g), 0);
    cr_assert_gt(g, g0, "a new account is a change");
    uint64_t g1 = g;

    /* another writer (as `parleyd user` would be) */
    store_t *other = open_store(NULL);
    user_sync(other, "seen2");
    cr_assert_eq(store_users_gen(s, &g), 0);
    cr_assert_eq(g, g1, "a name seen is not an account change");
    cr_assert_eq(acct_wait(other, ACCT_ADD, "bob", "h1", NULL, false), 0);
    cr_assert_eq(acct_wait(other, ACCT_DEL, "ann", NULL, NULL, false), 0);
    store_close(other);
    cr_assert_eq(store_users_gen(s, &g), 0);
    cr_assert_gt(g, g1);

    struct seen_users v = {0};
    cr_assert_eq(store_load_users(s, g1, collect_user, &v), 0);
    cr_assert_eq(v.n, 2, "only what changed after g1");
    const struct store_user *ann = find_user(&v, "ann"), *bob = find_user(&v, "bob");
    cr_assert(ann && bob);
    cr_assert(ann->deleted);
    cr_assert_null(ann->email, "a deleted name has no account");
    cr_assert_gt(ann->tokens_after_ms, 0);
    cr_assert_not(bob->deleted);
    cr_assert_str_eq(bob->email, "");
    cr_assert_eq(bob->tokens_after_ms, 0);
    cr_assert_eq(ann->gen > bob->gen ? ann->gen : bob->gen, g);
    cr_assert_gt(ann->gen, g1);
    cr_assert_gt(bob->gen, g1);

    /* nothing new: nothing read */
    memset(&v, 0, sizeof(v));
    cr_assert_eq(store_load_users(s, g, collect_user, &v), 0);
    cr_assert_eq(v.n, 0);
    /* the full load has every name seen, accounts or not */
    memset(&v, 0, sizeof(v));
    cr_assert_eq(store_load_users(s, 0, collect_user, &v), 0);
    cr_assert_eq(v.n, 4);
    cr_assert_null(find_user(&v, "seen")->email);
    cr_assert_not(find_user(&v, "seen")->deleted);
    store_close(s);
}

/* One process for the three: each criterion test costs seconds under
 * valgrind (tools/vgwrap). */
Test(store, accounts_reserve_names_and_revoke_tokens)
{
    a_name_ever_used_is_never_registered_again();
    teardown();
    setup();
    a_password_change_revokes_older_tokens();
    teardown();
    setup();
    account_changes_by_another_writer_are_found_by_generation();
}

/* --------------------------------------------------------- concurrency */

#define MT_THREADS 4
#define MT_WRITES 2000

struct mt_arg {
    store_t *s;
    int idx;
    struct tw *t;
    struct counter *cnt;
    struct tr reads[8];
    struct counter rcnt;
};

static void *mt_main(void *arg)
{
    struct mt_arg *a = arg;
    int nreads = 0;
    for (int i = 0; i < MT_WRITES; i++) {
        char room[16], id[16];
        snprintf(room, sizeof(room), "mt%d", a->idx);
        snprintf(id, sizeof(id), "i%d", i);
        tw_msg(&a->t[i], a->cnt, room, (uint64_t)i + 1, "ann", i % 2 ? id : NULL, "concurrent");
        int rc;
        while ((rc = tw_submit(a->s, &a->t[i])) == -EAGAIN)
            sched_yield();
        if (rc != 0)
            return "submit failed";
        if (i % 250 == 0 && nreads < 8) {
            /* reads race the writes: any consistent answer is fine */
            struct tr *r = &a->reads[nreads++];
            snprintf(r->r.room, sizeof(r->r.room), "%s", room);
            r->r.mode = SR_LATEST;
            r->r.limit = 20;
            r->r.done = tr_done;
            r->cnt = &a->rcnt;
            if (store_read_submit(a->s, &r->r) != 0)
                return "read submit failed";
        }
    }
    counter_wait(&a->rcnt, nreads);
    for (int i = 0; i < nreads; i++) {
        if (a->reads[i].r.status != 0 || a->reads[i].r.n > 20)
            return "bad read";
        for (size_t j = 1; j < a->reads[i].r.n; j++)
            if (a->reads[i].r.evs[j].seq != a->reads[i].r.evs[j - 1].seq + 1)
                return "read not contiguous";
        store_read_release(&a->reads[i].r);
    }
    return NULL;
}

Test(store, many_submitting_threads_lose_nothing)
{
    struct counter c;
    struct mt_arg a[MT_THREADS];
    pthread_t th[MT_THREADS];
    counter_init(&c);
    store_t *s = open_store(&(struct store_opts){.queue_max = 1024, .readers = 2});
    for (int i = 0; i < MT_THREADS; i++) {
        memset(&a[i], 0, sizeof(a[i]));
        a[i].s = s;
        a[i].idx = i;
        a[i].cnt = &c;
        a[i].t = calloc(MT_WRITES, sizeof(struct tw));
        cr_assert_not_null(a[i].t);
        counter_init(&a[i].rcnt);
        cr_assert_eq(pthread_create(&th[i], NULL, mt_main, &a[i]), 0);
    }
    for (int i = 0; i < MT_THREADS; i++) {
        void *ret = NULL;
        cr_assert_eq(pthread_join(th[i], &ret), 0);
        cr_assert_null(ret, "thread %d: %s", i, (char *)ret);
    }
    counter_wait(&c, MT_THREADS * MT_WRITES);
    struct store_stats st;
    store_stats(s, &st);
    cr_assert_eq(st.writes, MT_THREADS * MT_WRITES);
    cr_assert_eq(st.failures, 0);
    store_close(s);

    for (int i = 0; i < MT_THREADS; i++) {
        for (int j = 0; j < MT_WRITES; j++) {
            cr_assert_eq(a[i].t[j].status, 0);
            cr_assert_eq(atomic_load(&a[i].t[j].ndone), 1);
        }
        free(a[i].t);
        counter_destroy(&a[i].rcnt);
    }
    cr_assert_eq(file_int("SELECT count(*) FROM messages"), MT_THREADS * MT_WRITES);
    cr_assert_eq(file_int("SELECT count(*) FROM rooms WHERE last_seq = 2000"), MT_THREADS);
    cr_assert_eq(file_int("SELECT count(DISTINCT room || '/' || seq) FROM messages"),
                 MT_THREADS * MT_WRITES);
    counter_destroy(&c);
}

/* v5 (event kinds) on a v4 file: after the read helpers above */
Test(store, migrates_a_v4_file_to_event_kinds)
{
    /* a v4 file: today's schema without v5's columns, with messages in it */
    store_close(open_store(NULL));
    raw_exec_file("ALTER TABLE messages DROP COLUMN body;"
                  "ALTER TABLE messages DROP COLUMN kind;"
                  "INSERT INTO messages VALUES('h', 1, 'ann', 'one', 1700000000001, 'c1');"
                  "INSERT INTO messages VALUES('h', 2, 'bob', 'two', 1700000000002, NULL);"
                  "INSERT INTO rooms VALUES('h', 2, 1700000000000);"
                  "PRAGMA user_version = 4;");
    cr_assert_eq(file_int("SELECT count(*) FROM pragma_table_info('messages') WHERE name IN "
                          "('kind', 'body')"),
                 0);

    store_t *s = open_store(NULL);
    /* the old rows read back as messages without a body */
    struct tr t;
    read_sync(s, &t, "h", SR_SINCE, 0, 10);
    cr_assert_eq(t.r.n, 2);
    for (size_t i = 0; i < 2; i++) {
        const struct room_event *m = &t.r.evs[i];
        cr_assert_eq(m->seq, i + 1);
        cr_assert_eq(m->kind, EV_MESSAGE);
        cr_assert_str_eq(m->text, i ? "two" : "one");
        cr_assert_str_eq(m->from, i ? "bob" : "ann");
        cr_assert_null(m->body);
        cr_assert_eq(m->body_len, 0);
    }
    cr_assert_str_eq(t.r.evs[0].id, "c1");
    store_read_release(&t.r);
    /* new rows of another kind go in beside them, ids still hold */
    uint64_t dup = 0;
    cr_assert_eq(put_sync(s, "h", 3, "ann", "c1", "again", &dup), 0);
    cr_assert_eq(dup, 1);
    struct counter c;
    struct tw w;
    counter_init(&c);
    tw_msg(&w, &c, "h", 4, "ann", "", "");
    w.a.ev.kind = (enum room_event_kind)9;
    w.a.ev.text = NULL;
    w.a.ev.text_len = 0;
    w.a.ev.body = "\0b\0";
    w.a.ev.body_len = 3;
    cr_assert_eq(tw_submit(s, &w), 0);
    counter_wait(&c, 1);
    counter_destroy(&c);
    cr_assert_eq(w.status, 0);
    read_sync(s, &t, "h", SR_SINCE, 3, 10);
    cr_assert_eq(t.r.n, 1);
    cr_assert_eq(t.r.evs[0].kind, 9);
    cr_assert_str_eq(t.r.evs[0].text, "");
    cr_assert_eq(t.r.evs[0].body_len, 3);
    cr_assert_eq(memcmp(t.r.evs[0].body, "\0b\0", 3), 0);
    store_read_release(&t.r);
    store_close(s);

    cr_assert_eq(file_int("PRAGMA user_version"), LATEST_VERSION);
    cr_assert_eq(file_int("SELECT count(*) FROM messages WHERE kind = 0 AND body IS NULL"), 3);
}
