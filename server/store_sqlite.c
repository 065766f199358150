/*
 * store_sqlite — the SQLite engine behind store.h.
 *
 * Owns four kinds of connection to one database file, each used by one
 * thread at a time (so they are opened SQLITE_OPEN_NOMUTEX):
 *   - the write connection, used by the main thread while store_open
 *     migrates the schema and afterwards only by the writer thread;
 *   - one read-only connection per reader thread (history reads);
 *   - one read-only connection for the main thread's start-up loads and its
 *     once-a-second look for account changes (store_users_gen);
 *   - the checkpointer thread's connection (it writes only the database
 *     file, copying committed pages back from the WAL).
 * With durability_full the sync thread also holds a descriptor of the WAL
 * file, only to fdatasync it (SQLite takes no locks on the WAL itself, so
 * closing it cannot drop one of SQLite's POSIX locks).
 *
 * DESIGN
 * Writes: store_append (and every other queued request: barriers, users
 * seen, outbox rows, the blocking account calls) appends to a bounded FIFO
 * of struct store_op under s->lock and wakes the writer only when that can matter (queue became non-empty, or reached a
 * full batch). The writer takes the first write, waits up to the batch
 * window for more, and commits up to batch_max writes in one transaction
 * with prepared statements (group commit): one WAL append and, with
 * durability_full, one fsync for the whole batch instead of one per message.
 *
 * That fsync does not run inside COMMIT: with durability_full the writer
 * commits at synchronous=NORMAL (the WAL frames reach the OS) and passes the
 * batch to the sync thread, which fdatasyncs the WAL and only then calls
 * done(). So an ack still means "the commit's WAL frames are on disk", as
 * with synchronous=FULL, but the writer fills the next transaction while
 * the disk works, and one fdatasync covers every commit made before it
 * began. Every completion, failures too, passes through the sync thread so
 * done() runs in the writer's order. (sync_in_commit keeps SQLite's own
 * FULL commit: storebench's one-transaction-per-message baseline.)
 * Two differences from FULL, both deliberate: a row is visible to readers
 * between its commit and its sync (as a message is to its room, which is
 * sent before the commit anyway), and a failed fdatasync is final: Linux
 * may have dropped the unsynced pages and marked them clean, so no later
 * sync can be trusted to cover them, and every later write fails until
 * parleyd restarts and SQLite recovers the WAL from what is on disk.
 * Runs of messages go in multi-row INSERTs (insert_chunk), which cuts the
 * per-statement overhead that dominated once the fsync was shared.
 *
 * A failed transaction is rolled back, every write in it is told (status <
 * 0) and the writer keeps a private copy of its rows and retries that batch
 * alone with capped exponential backoff until it commits. Later writes wait
 * in the bounded queue meanwhile, so rows are committed in submit order and
 * a barrier still means "everything before me is durable".
 *
 * Idempotency: the partial UNIQUE index on (room, sender, client_id) is the
 * truth across restarts. A conflicting insert looks up the original seq for
 * the caller (dup_seq) and stores the row without its id, because the broker
 * already handed the seq out and seqs must stay gapless.
 *
 * Checkpoints: SQLite's automatic checkpoint would run inside the writer's
 * COMMIT and fsync the WAL and the database there, stalling every ack
 * behind it (tens of ms on a slow disk). Instead a checkpointer thread with
 * its own connection copies the WAL back in the background (PASSIVE, so
 * commits go on meanwhile), woken by the writer's WAL hook. A WAL can only
 * start over from its beginning when a checkpoint has caught up with it
 * entirely, which never happens while commits keep arriving faster than a
 * checkpoint takes; so past a hard cap the writer checkpoints itself once,
 * between commits, and the WAL restarts. That stall is rare (every
 * CKPT_HARD_BYTES of WAL) instead of every few MB.
 *
 * Reads: history reads wait in one queue per owner (the user who asked),
 * and the owners with reads waiting take turns, one read each, round-robin.
 * So a user who queues many reads (one connection or many) delays anyone
 * else's by at most one read per turn, instead of by everything queued
 * before it; one owner's reads are still taken in order.
 *
 * Rooms: rooms(name, last_seq) is upserted once per room per batch by the
 * writer. Computing it with "GROUP BY room" would read every message row at
 * start-up (SQLite cannot skip-scan max(seq) per group), while the upsert
 * costs one B-tree write per room per batch, not per message.
 *
 * Schema changes are an ordered list of migrations applied at open, one
 * transaction each, tracked in PRAGMA user_version. Shipped migrations are
 * never edited; a new change is a new entry.
 */
#include "store.h"
#include "store_accounts.h"
#include "store_engine.h"
#include "store_outbox.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "strmap.h"
#include "util.h"

#define MOD "store"

#define DEFAULT_BATCH_MAX 512
#define DEFAULT_WINDOW_US 1000
#define DEFAULT_QUEUE_MAX 65536
#define DEFAULT_CLOSE_TIMEOUT_MS 5000
#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000
/* The writer's busy handler gives up after this long (the only other writer
 * could be an outside tool such as the sqlite3 shell holding a lock). */
#define WRITER_BUSY_MS 2000
#define READER_BUSY_MS 2000
/* A persistent failure is logged at error once, then every so many tries. */
#define RETRY_LOG_EVERY 10
/* WAL size that wakes the checkpointer, and the size at which the writer
 * checkpoints itself so the WAL can restart. */
#define CKPT_SOFT_BYTES (4 << 20)
#define CKPT_HARD_BYTES (256 << 20)
/* The checkpointer rests this long between checkpoints: each one fsyncs. */
#define CKPT_REST_MS 20
/* Message rows inserted by one multi-row statement, largest first (see
 * insert_chunk). */
static const int chunk_rows[] = {32, 8};
#define NCHUNK ((int)ARRAY_LEN(chunk_rows))
/* Parameters per row of a chunk statement. */
#define CHUNK_COLS 8

/* migrations[i] takes the schema from version i to i + 1. */
static const char *const migrations[] = {
    /* v1: the initial schema */
    "CREATE TABLE messages(room TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL,"
    "  text TEXT NOT NULL, ts INTEGER NOT NULL, client_id TEXT,"
    "  PRIMARY KEY(room, seq)) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX messages_client_id ON messages(room, sender, client_id)"
    "  WHERE client_id IS NOT NULL;"
    /* start-up loads the ids of the last day: without this index that is a
     * scan of the whole history (dropped again in v3) */
    "CREATE INDEX messages_client_id_ts ON messages(ts) WHERE client_id IS NOT NULL;"
    "CREATE TABLE rooms(name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE users(name TEXT PRIMARY KEY, created_at INTEGER NOT NULL) WITHOUT ROWID;",
    /* v2: accounts and the e-mail notification outbox */
    "ALTER TABLE users ADD COLUMN password_hash TEXT;"
    "ALTER TABLE users ADD COLUMN email TEXT;"
    "CREATE TABLE outbox(id TEXT PRIMARY KEY, recipient TEXT NOT NULL, email TEXT NOT NULL,"
    "  kind TEXT NOT NULL, sender TEXT NOT NULL, room TEXT NOT NULL, text TEXT NOT NULL,"
    "  ts INT NOT NULL, state TEXT NOT NULL DEFAULT 'pending'"
    "  CHECK(state IN ('pending', 'sent', 'dead')), attempts INT NOT NULL DEFAULT 0,"
    "  next_at INT NOT NULL DEFAULT 0, created_at INT NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX outbox_due ON outbox(next_at) WHERE state = 'pending';",
    /* v3: the ts index cost every message insert a fourth B-tree descent and,
     * with many rooms whose clocks interleave, a page of WAL per few
     * messages (storebench, 100 senders: -21% writer instructions, -40% WAL
     * frames without it). Its one reader, store_load_ids, walks each room's
     * newest rows on the primary key instead. */
    "DROP INDEX IF EXISTS messages_client_id_ts;",
    /* v4: revocable identities. tokens_after (ms): tokens issued at or
     * before it are refused; deleted_at (ms): `parleyd user del`, the name
     * stays reserved. acct_gen numbers account changes (set by the
     * triggers, from whichever process writes) so a running server finds
     * what changed with one probe of a small index (store_users_gen). */
    "ALTER TABLE users ADD COLUMN tokens_after INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE users ADD COLUMN deleted_at INTEGER;"
    "ALTER TABLE users ADD COLUMN acct_gen INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX users_acct_gen ON users(acct_gen) WHERE acct_gen > 0;"
    "CREATE TRIGGER users_account_changed AFTER UPDATE OF password_hash, email, tokens_after,"
    "  deleted_at ON users BEGIN"
    "  UPDATE users SET acct_gen = (SELECT COALESCE(max(acct_gen), 0) + 1 FROM users"
    "    WHERE acct_gen > 0) WHERE name = NEW.name;"
    "  END;"
    "CREATE TRIGGER users_account_added AFTER INSERT ON users"
    "  WHEN NEW.password_hash IS NOT NULL OR NEW.deleted_at IS NOT NULL"
    "    OR NEW.tokens_after != 0 BEGIN"
    "  UPDATE users SET acct_gen = (SELECT COALESCE(max(acct_gen), 0) + 1 FROM users"
    "    WHERE acct_gen > 0) WHERE name = NEW.name;"
    "  END;",
    /* v5: every room event kind (event.h), not only messages: its kind and
     * opaque body. Old rows read back as messages without a body. */
    "ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE messages ADD COLUMN body BLOB;",
};
#define SCHEMA_VERSION ((int)ARRAY_LEN(migrations))

static const double commit_le[STORE_COMMIT_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   2.5,
};

/* One write as the executor sees it: pointers into the submitter's write,
 * or into `owned` for a retry copy. */
struct row {
    enum store_op_kind kind;
    const char *room, *from, *text, *id; /* id NULL: none */
    size_t text_len;
    int ev_kind;      /* SOP_APPEND: the event's kind */
    const void *body; /* SOP_APPEND: NULL when body_len is 0 */
    size_t body_len;
    uint64_t seq;
    int64_t ts;
    uint64_t dup_seq;
    /* accounts and outbox (rare writes) */
    const char *hash, *email, *outbox_id, *recipient, *note_kind, *state;
    bool adopt;
    int attempts;
    int64_t next_at_ms;
    int status; /* per-row outcome in a committed batch (-EEXIST, -EACCES, -ENOENT) */
    char *owned;
};

/* One owner's reads waiting for a reader, and its place in the turn. */
struct rowner {
    struct store_read *head, *tail;
    struct rowner *next; /* whose turn comes after this owner's */
};

struct reader {
    store_t *s;
    sqlite3 *db;
    sqlite3_stmt *latest, *since, *before;
    pthread_t tid;
    bool started;
};

struct store {
    struct store_base base; /* first: the ops tables (store_engine.h) */
    char *path;
    struct store_opts o; /* defaults applied; o.path unused */

    /* writer connection and its statements: main thread in store_open,
     * then the writer thread only */
    sqlite3 *wdb;
    sqlite3_stmt *st_begin, *st_commit, *st_rollback, *st_ins_msg, *st_find_dup, *st_room,
        *st_user, *st_find_seq;
    sqlite3_stmt *st_chunk[NCHUNK]; /* INSERT OR IGNORE of chunk_rows[i] messages */
    sqlite3 *mdb; /* main thread: start-up loads, store_users_gen */
    int mdb_version;     /* main thread: PRAGMA data_version at the last store_users_gen */
    uint64_t mdb_gen;    /* main thread: the account generation that call found */
    bool mdb_gen_valid;  /* main thread */
    sqlite3 *cdb; /* checkpointer thread */

    /* checkpoints: the background thread's and the writer's hard-cap one
     * never overlap (SQLite would answer the second with SQLITE_BUSY) */
    pthread_mutex_t ckpt_run;
    pthread_mutex_t ck_lock;
    pthread_cond_t ck_cond;
    bool ck_wanted;     /* {ck_lock} the WAL has grown past CKPT_SOFT_BYTES */
    bool ck_stop;       /* {ck_lock} */
    atomic_bool ck_flag; /* cheap "already asked" check for the WAL hook */
    bool ck_failing;    /* checkpointer thread only: last checkpoint failed */
    pthread_t ckpt_tid;
    bool ckpt_started;
    int ckpt_soft_pages, ckpt_hard_pages; /* the CKPT_*_BYTES in this file's pages */

    pthread_mutex_t lock;
    pthread_cond_t wcond;           /* writer: new work, full batch, close */
    struct store_op *qhead, *qtail; /* {lock} */
    size_t qn;                      /* {lock} */
    int64_t q_first_ns;             /* {lock} mono time the queue last became non-empty */
    bool closing;                   /* {lock} store_close began */
    int64_t close_deadline_ns;      /* {lock} mono; valid when closing */
    atomic_bool closing_flag;       /* mirror of closing for the busy handler */

    pthread_mutex_t rlock;
    pthread_cond_t rcond;
    strmap_t *rowners;                /* {rlock} owner -> struct rowner with reads waiting */
    struct rowner *rturn, *rlast;     /* {rlock} owners in turn, rturn's read next */
    size_t rn;                        /* {rlock} reads waiting */
    bool rclosing;                    /* {rlock} */

    pthread_t writer;
    bool writer_started;
    struct reader *readers;
    int nreaders;

    /* writer thread only */
    struct row *batch;
    struct store_op **batch_w;
    const struct row **sorted;
    struct row *retry;
    size_t nretry;

    /* the sync thread (durability_full without sync_in_commit) */
    bool sync_thread;
    pthread_mutex_t sy_lock;
    pthread_cond_t sy_cond;      /* sync thread: work, stop; writer: room */
    struct store_op *sy_head, *sy_tail; /* {sy_lock} done() waiting for a sync */
    size_t sy_n;                 /* {sy_lock} */
    bool sy_stop;                /* {sy_lock} the writer has exited */
    pthread_t sy_tid;
    bool sy_started;
    char *wal_path;
    int wal_fd;                  /* sync thread only; -1 until the first sync */
    struct stat wal_st;          /* sync thread only: what wal_fd is */
    int sy_failed;               /* sync thread only: a sync failed (its -errno): final */

    /* statistics: written by the store's threads, read by anyone */
    atomic_uint_least64_t n_commits, n_writes, n_failures, n_failed_commits, n_lost;
    atomic_uint_least64_t n_syncs, n_sync_ns;
    atomic_uint_least64_t n_commit_ns;
    atomic_size_t n_retrying;
    atomic_uint_least64_t n_bucket[STORE_COMMIT_BUCKETS];
};

static int wal_hook(void *arg, sqlite3 *db, const char *name, int npages);

/* ------------------------------------------------------------- helpers */

static int errno_from_sqlite(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_CONSTRAINT:
        return -EINVAL;
    case SQLITE_CANTOPEN:
        return -ENOENT;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    default:
        return -EIO;
    }
}

/* "database or disk is full (File too large)": SQLite's message plus the
 * OS error behind it when there is one. */
static void describe(sqlite3 *db, int rc, char *buf, size_t sz)
{
    int sys = sqlite3_system_errno(db);
    const char *msg = sqlite3_errcode(db) == rc ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    if (sys && ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_FULL ||
                (rc & 0xff) == SQLITE_CANTOPEN || (rc & 0xff) == SQLITE_READONLY))
        snprintf(buf, sz, "%s (%s)", msg, strerror(sys));
    else
        snprintf(buf, sz, "%s", msg);
}

/* Run a statement that returns no rows of interest and reset it. */
static int run_stmt(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
    /* seqs never reach 2^63; clamp instead of wrapping negative */
    return sqlite3_bind_int64(st, i, v > (uint64_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)v);
}

static void abs_timespec(struct timespec *ts, int64_t mono_ns)
{
    ts->tv_sec = (time_t)(mono_ns / 1000000000);
    ts->tv_nsec = (long)(mono_ns % 1000000000);
}

static int cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    int rc = pthread_condattr_init(&a);
    if (rc)
        return rc;
    rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    if (!rc)
        rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errsz, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, errsz, "%s: %s", what, msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
    }
    return rc;
}

static int query_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int(st, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_ERROR;
    }
    sqlite3_finalize(st);
    return rc;
}

/* ------------------------------------------------------- open & schema */

/* The writer's busy handler: wait in 1 ms steps, up to WRITER_BUSY_MS, and
 * give up early once store_close has begun so shutdown is never held up. */
static int writer_busy(void *arg, int count)
{
    store_t *s = arg;
    if (count >= WRITER_BUSY_MS || atomic_load_explicit(&s->closing_flag, memory_order_relaxed))
        return 0;
    struct timespec d = {0, 1000000};
    nanosleep(&d, NULL);
    return 1;
}

static sqlite3 *open_conn(const char *path, bool readonly, char *err, size_t errsz)
{
    sqlite3 *db = NULL;
    int flags = SQLITE_OPEN_NOMUTEX |
                (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(path, &db, flags, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errsz, "cannot open database '%s': %s", path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto fail;
    }
    rc = sqlite3_extended_result_codes(db, 1);
    if (rc != SQLITE_OK) {
        snprintf(err, errsz, "cannot configure database '%s': %s", path, sqlite3_errstr(rc));
        goto fail;
    }
    return db;

fail:
    sqlite3_close(db);
    return NULL;
}

/* Bring the schema to SCHEMA_VERSION, one migration per transaction. The
 * version is read inside each IMMEDIATE transaction so two processes opening
 * the same file cannot both apply a step. */
static int migrate(store_t *s, char *err, size_t errsz)
{
    sqlite3 *db = s->wdb;
    int from = -1, v = 0;
    char what[128];

    for (;;) {
        if (exec_sql(db, "BEGIN IMMEDIATE", err, errsz, "cannot begin migration") != SQLITE_OK)
            return -1;
        int rc = query_int(db, "PRAGMA user_version", &v);
        if (rc != SQLITE_OK) {
            snprintf(err, errsz, "cannot read the schema version of '%s': %s", s->path,
                     sqlite3_errmsg(db));
            goto rollback;
        }
        if (from < 0)
            from = v;
        if (v > SCHEMA_VERSION) {
            snprintf(err, errsz,
                     "database '%s' has schema version %d, this parleyd knows up to %d: "
                     "upgrade parleyd",
                     s->path, v, SCHEMA_VERSION);
            goto rollback;
        }
        if (v < 0) {
            snprintf(err, errsz, "database '%s' has an invalid schema version %d", s->path, v);
            goto rollback;
        }
        if (v == SCHEMA_VERSION)
            break;
        snprintf(what, sizeof(what), "cannot migrate '%s' to schema version %d", s->path,
                 v + 1);
        if (exec_sql(db, migrations[v], err, errsz, what) != SQLITE_OK)
            goto rollback;
        char set[64];
        snprintf(set, sizeof(set), "PRAGMA user_version = %d", v + 1);
        if (exec_sql(db, set, err, errsz, what) != SQLITE_OK)
            goto rollback;
        if (exec_sql(db, "COMMIT", err, errsz, what) != SQLITE_OK)
            goto rollback;
    }
    if (exec_sql(db, "COMMIT", err, errsz, "cannot end migration") != SQLITE_OK)
        goto rollback;
    if (from != v)
        log_info(MOD, "migrated database '%s' from schema version %d to %d", s->path, from, v);
    return 0;

rollback:
    if (!sqlite3_get_autocommit(db)) {
        char ignored[256];
        if (exec_sql(db, "ROLLBACK", ignored, sizeof(ignored), "rollback") != SQLITE_OK)
            log_warn(MOD, "cannot roll back the migration of '%s': %s", s->path, ignored);
    }
    return -1;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err, size_t errsz)
{
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK)
        snprintf(err, errsz, "cannot prepare '%s': %s", sql, sqlite3_errmsg(db));
    return rc;
}

static int open_writer(store_t *s, char *err, size_t errsz)
{
    char buf[64];
    int rc;

    s->wdb = open_conn(s->path, false, err, errsz);
    if (!s->wdb)
        return -1;
    rc = sqlite3_busy_handler(s->wdb, writer_busy, s);
    if (rc != SQLITE_OK) {
        snprintf(err, errsz, "cannot configure database '%s': %s", s->path, sqlite3_errstr(rc));
        return -1;
    }

    /* Only a new file takes this (before WAL mode writes its header).
     * Every page a batch changes is written whole to the WAL, and a batch
     * changes about two leaves per room it touches (messages and the id
     * index), so WAL bytes per message scale with the page size. With 100
     * busy rooms at 10,000 msg/s storebench measured, per message, 14 KB of
     * disk writes and an ack p99 of ~16 ms at 4096; 9.4 KB and ~11 ms at
     * 2048; 6.2 KB and ~8 ms at 1024 (which costs ~25% more CPU and spills
     * rows over ~230 bytes into overflow pages; 2048 keeps ~480 inline). */
    if (exec_sql(s->wdb, "PRAGMA page_size = 2048", err, errsz, "cannot set page_size") !=
        SQLITE_OK)
        return -1;
    /* WAL: readers never block the writer and a commit is one append. */
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode = WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        snprintf(err, errsz, "cannot open database '%s': %s", s->path, sqlite3_errmsg(s->wdb));
        sqlite3_finalize(st);
        return -1;
    }
    const unsigned char *mode = sqlite3_column_text(st, 0);
    bool wal = mode && strcmp((const char *)mode, "wal") == 0;
    sqlite3_finalize(st);
    if (!wal) {
        snprintf(err, errsz, "cannot switch database '%s' to WAL mode", s->path);
        return -1;
    }
    snprintf(buf, sizeof(buf), "PRAGMA synchronous = %s", s->o.durability_full ? "FULL" : "NORMAL");
    if (exec_sql(s->wdb, buf, err, errsz, "cannot set synchronous") != SQLITE_OK)
        return -1;
    /* A batch touches a leaf per room written to (and one per room in the
     * id index): keep the hot leaves of many rooms cached. */
    if (exec_sql(s->wdb, "PRAGMA cache_size = -16384", err, errsz, "cannot set cache_size") !=
        SQLITE_OK)
        return -1;

    if (migrate(s, err, errsz) != 0)
        return -1;
    /* from here on the sync thread makes commits durable before their acks */
    if (s->sync_thread &&
        exec_sql(s->wdb, "PRAGMA synchronous = NORMAL", err, errsz, "cannot set synchronous") !=
            SQLITE_OK)
        return -1;
    int page_size = 4096;
    if (query_int(s->wdb, "PRAGMA page_size", &page_size) != SQLITE_OK || page_size <= 0) {
        snprintf(err, errsz, "cannot read the page size of '%s': %s", s->path,
                 sqlite3_errmsg(s->wdb));
        return -1;
    }
    s->ckpt_soft_pages = CKPT_SOFT_BYTES / page_size;
    s->ckpt_hard_pages = CKPT_HARD_BYTES / page_size;
    /* replaces SQLite's automatic checkpoint on this connection */
    sqlite3_wal_hook(s->wdb, wal_hook, s);

    /* A (room, seq) that is already stored can only be a retried row whose
     * earlier COMMIT reported an error yet reached the disk: keep the stored
     * row (and log) instead of failing the batch on every retry. */
    if (prepare(s->wdb, "BEGIN IMMEDIATE", &s->st_begin, err, errsz) ||
        prepare(s->wdb, "COMMIT", &s->st_commit, err, errsz) ||
        prepare(s->wdb, "ROLLBACK", &s->st_rollback, err, errsz) ||
        prepare(s->wdb,
                "INSERT INTO messages(room, seq, sender, text, ts, client_id, kind, body)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(room, seq) DO NOTHING",
                &s->st_ins_msg, err, errsz) ||
        prepare(s->wdb,
                "SELECT seq FROM messages WHERE room = ?1 AND sender = ?2 AND client_id = ?3",
                &s->st_find_dup, err, errsz) ||
        prepare(s->wdb,
                "INSERT INTO rooms(name, last_seq, created_at) VALUES(?1, ?2, ?3)"
                " ON CONFLICT(name) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                &s->st_room, err, errsz) ||
        prepare(s->wdb,
                "INSERT INTO users(name, created_at) VALUES(?1, ?2) ON CONFLICT(name) DO NOTHING",
                &s->st_user, err, errsz) ||
        prepare(s->wdb, "SELECT sender, client_id FROM messages WHERE room = ?1 AND seq = ?2",
                &s->st_find_seq, err, errsz))
        return -1;
    for (int i = 0; i < NCHUNK; i++) {
        static const char head[] =
            "INSERT OR IGNORE INTO messages(room, seq, sender, text, ts, client_id, kind, body)"
            " VALUES";
        static const char tuple[] = ",(?,?,?,?,?,?,?,?)"; /* CHUNK_COLS */
        size_t sz = sizeof(head) + (size_t)chunk_rows[i] * (sizeof(tuple) - 1);
        char *sql = xmalloc(sz), *p = sql;
        memcpy(p, head, sizeof(head) - 1);
        p += sizeof(head) - 1;
        for (int k = 0; k < chunk_rows[i]; k++) {
            const char *t = k ? tuple : tuple + 1;
            size_t n = strlen(t);
            memcpy(p, t, n);
            p += n;
        }
        *p = '\0';
        rc = prepare(s->wdb, sql, &s->st_chunk[i], err, errsz);
        free(sql);
        if (rc != SQLITE_OK)
            return -1;
    }
    return 0;
}

static int open_readonly(store_t *s, sqlite3 **out, char *err, size_t errsz)
{
    *out = open_conn(s->path, true, err, errsz);
    if (!*out)
        return -1;
    int rc = sqlite3_busy_timeout(*out, READER_BUSY_MS);
    if (rc != SQLITE_OK) {
        snprintf(err, errsz, "cannot configure database '%s': %s", s->path, sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

/* -------------------------------------------------------------- writer */

static void stats_commit(store_t *s, int64_t ns, size_t rows)
{
    atomic_fetch_add_explicit(&s->n_commits, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->n_writes, rows, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->n_commit_ns, (uint64_t)ns, memory_order_relaxed);
    double sec = (double)ns / 1e9;
    for (int i = 0; i < STORE_COMMIT_BUCKETS; i++) {
        if (sec <= commit_le[i]) {
            /* non-cumulative here; store_stats accumulates */
            atomic_fetch_add_explicit(&s->n_bucket[i], 1, memory_order_relaxed);
            break;
        }
    }
}

static int insert_msg(store_t *s, struct row *r)
{
    sqlite3_stmt *st = s->st_ins_msg;
    bool has_id = r->id && r->id[0];
    int rc;

    if ((rc = sqlite3_bind_text(st, 1, r->room, -1, SQLITE_STATIC)) ||
        (rc = bind_u64(st, 2, r->seq)) ||
        (rc = sqlite3_bind_text(st, 3, r->from, -1, SQLITE_STATIC)) ||
        (rc = sqlite3_bind_text(st, 4, r->text, (int)r->text_len, SQLITE_STATIC)) ||
        (rc = sqlite3_bind_int64(st, 5, r->ts)) ||
        (rc = has_id ? sqlite3_bind_text(st, 6, r->id, -1, SQLITE_STATIC)
                     : sqlite3_bind_null(st, 6)) ||
        (rc = sqlite3_bind_int(st, 7, r->ev_kind)) ||
        (rc = r->body_len ? sqlite3_bind_blob(st, 8, r->body, (int)r->body_len, SQLITE_STATIC)
                          : sqlite3_bind_null(st, 8)))
        return rc;
    rc = run_stmt(st);
    if (rc == SQLITE_OK) {
        if (sqlite3_changes(s->wdb) == 0)
            log_warn(MOD, "message %s/%" PRIu64 " was already stored; kept the stored row",
                     r->room, r->seq);
        return SQLITE_OK;
    }
    if (rc != SQLITE_CONSTRAINT_UNIQUE || !has_id)
        return rc;

    /* (room, sender, client_id) exists: find its seq, store this row
     * without the id so the seq the broker handed out is not a gap. */
    st = s->st_find_dup;
    if ((rc = sqlite3_bind_text(st, 1, r->room, -1, SQLITE_STATIC)) ||
        (rc = sqlite3_bind_text(st, 2, r->from, -1, SQLITE_STATIC)) ||
        (rc = sqlite3_bind_text(st, 3, r->id, -1, SQLITE_STATIC)))
        return rc;
    rc = sqlite3_step(st);
    uint64_t orig = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? SQLITE_CORRUPT : rc;
    if (orig == r->seq)
        return SQLITE_OK; /* this very row, committed by an earlier try */
    r->dup_seq = orig;
    st = s->st_ins_msg;
    if ((rc = sqlite3_bind_null(st, 6)))
        return rc;
    rc = run_stmt(st);
    return rc;
}

/* Did the chunk statement store r? (room, seq) holds r's sender and id. A
 * row that was already stored by an earlier try of this batch looks the
 * same, which is fine: it is stored. */
static int chunk_stored(store_t *s, const struct row *r, bool *stored)
{
    sqlite3_stmt *st = s->st_find_seq;
    int rc;

    *stored = false;
    if ((rc = sqlite3_bind_text(st, 1, r->room, -1, SQLITE_STATIC)) ||
        (rc = bind_u64(st, 2, r->seq)))
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *from = (const char *)sqlite3_column_text(st, 0);
        const char *id = (const char *)sqlite3_column_text(st, 1);
        bool has_id = r->id && r->id[0];
        *stored = from && strcmp(from, r->from) == 0 &&
                  (has_id ? id && strcmp(id, r->id) == 0 : !id);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_reset(st);
    return rc;
}

/*
 * Insert rows[0..k) (all SOP_APPEND, k = chunk_rows[c]) with one statement.
 * Per-statement work (cursor open/close, VDBE setup and halt) is a third of
 * a one-row insert, and with the cursors kept open across the rows an
 * append to a room's tail often needs no descent from the root; callgrind:
 * -29% writer instructions per message with 1 sender, -17% with 100.
 *
 * OR IGNORE makes a conflict skip its row instead of failing the statement;
 * the normal case has none. When fewer than k rows went in, each row the
 * statement did not store goes through insert_msg, which handles a (room,
 * seq) already stored (log, keep) and a duplicate client id (dup_seq, store
 * without the id) exactly as for a lone row, in the same order.
 */
static int insert_chunk(store_t *s, int c, struct row *rows)
{
    sqlite3_stmt *st = s->st_chunk[c];
    int k = chunk_rows[c];
    int rc;

    for (int i = 0; i < k; i++) {
        const struct row *r = &rows[i];
        int b = i * CHUNK_COLS;
        if ((rc = sqlite3_bind_text(st, b + 1, r->room, -1, SQLITE_STATIC)) ||
            (rc = bind_u64(st, b + 2, r->seq)) ||
            (rc = sqlite3_bind_text(st, b + 3, r->from, -1, SQLITE_STATIC)) ||
            (rc = sqlite3_bind_text(st, b + 4, r->text, (int)r->text_len, SQLITE_STATIC)) ||
            (rc = sqlite3_bind_int64(st, b + 5, r->ts)) ||
            (rc = r->id && r->id[0] ? sqlite3_bind_text(st, b + 6, r->id, -1, SQLITE_STATIC)
                                    : sqlite3_bind_null(st, b + 6)) ||
            (rc = sqlite3_bind_int(st, b + 7, r->ev_kind)) ||
            (rc = r->body_len
                      ? sqlite3_bind_blob(st, b + 8, r->body, (int)r->body_len, SQLITE_STATIC)
                      : sqlite3_bind_null(st, b + 8)))
            return rc;
    }
    if ((rc = run_stmt(st)) != SQLITE_OK)
        return rc;
    if (sqlite3_changes(s->wdb) == k)
        return SQLITE_OK;
    for (int i = 0; i < k; i++) {
        bool stored;
        if ((rc = chunk_stored(s, &rows[i], &stored)) != SQLITE_OK)
            return rc;
        if (!stored && (rc = insert_msg(s, &rows[i])) != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

/* The largest chunk that rows[i..n) starts with, or -1 for none. */
static int chunk_at(const struct row *rows, size_t i, size_t n)
{
    for (int c = 0; c < NCHUNK; c++) {
        size_t k = (size_t)chunk_rows[c];
        if (n - i < k)
            continue;
        size_t j = 0;
        while (j < k && rows[i + j].kind == SOP_APPEND)
            j++;
        if (j == k)
            return c;
    }
    return -1;
}

static int insert_user(store_t *s, const struct row *r)
{
    int rc;
    if ((rc = sqlite3_bind_text(s->st_user, 1, r->from, -1, SQLITE_STATIC)) ||
        (rc = sqlite3_bind_int64(s->st_user, 2, now_wall_ms())))
        return rc;
    return run_stmt(s->st_user);
}

/* SOP_ACCOUNT_ADD with adopt found nothing to change: was the name deleted? */
static int add_refusal(store_t *s, const struct row *r)
{
    sqlite3_stmt *st = NULL;
    int status = -EEXIST;
    if (sqlite3_prepare_v2(s->wdb, "SELECT deleted_at IS NOT NULL FROM users WHERE name = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return status;
    sqlite3_bind_text(st, 1, r->from, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0))
        status = -EACCES;
    sqlite3_finalize(st);
    return status;
}

/* Accounts and outbox rows are rare: prepared per use, not kept. A row
 * that finds nothing to change gets a per-row status and the batch goes on.
 * ?2 is the time of the write (ms). */
static int run_rare(store_t *s, struct row *r)
{
    /* A name that has a row was used (or deleted): registration never
     * hands it over. Only the operator (adopt, ?14) may give a password to
     * a name seen without one (a token-only user), never to a deleted one.
     * A new password and a deletion revoke the tokens issued before them:
     * tokens_after is set STORE_REVOKE_MARGIN_MS past the write, beyond its
     * commit, so a login that read the old row before the commit cannot
     * date its token after it (logins date theirs past tokens_after). */
    static const char *const sql[] = {
        [SOP_ACCOUNT_ADD] = "INSERT INTO users(name, created_at, password_hash, email)"
                           " VALUES(?1, ?2, ?3, ?4) ON CONFLICT(name) DO UPDATE SET"
                           " password_hash = excluded.password_hash, email = excluded.email"
                           " WHERE ?14 AND users.password_hash IS NULL"
                           " AND users.deleted_at IS NULL",
        [SOP_ACCOUNT_PASSWD] = "UPDATE users SET password_hash = ?3,"
                              " tokens_after = max(tokens_after, ?2 + ?15)"
                              " WHERE name = ?1 AND password_hash IS NOT NULL",
        [SOP_ACCOUNT_DEL] = "UPDATE users SET password_hash = NULL, email = NULL,"
                           " deleted_at = COALESCE(deleted_at, ?2),"
                           " tokens_after = max(tokens_after, ?2 + ?15) WHERE name = ?1",
        [SOP_OUTBOX_ADD] = "INSERT INTO outbox(id, recipient, email, kind, sender, room, text, ts,"
                          " created_at) VALUES(?5, ?6, ?4, ?7, ?1, ?8, ?9, ?10, ?2)"
                          " ON CONFLICT(id) DO NOTHING",
        [SOP_OUTBOX_MARK] = "UPDATE outbox SET state = ?11, attempts = ?12, next_at = ?13"
                           " WHERE id = ?5 AND ?2 IS NOT NULL",
    };
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->wdb, sql[r->kind], -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_bind_text(st, 1, r->from, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_wall_ms());
    sqlite3_bind_text(st, 3, r->hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, r->email ? r->email : NULL, -1, SQLITE_STATIC);
    if (r->kind == SOP_ACCOUNT_ADD)
        sqlite3_bind_int(st, 14, r->adopt);
    if (r->kind == SOP_ACCOUNT_PASSWD || r->kind == SOP_ACCOUNT_DEL)
        sqlite3_bind_int(st, 15, STORE_REVOKE_MARGIN_MS);
    if (r->kind == SOP_OUTBOX_ADD || r->kind == SOP_OUTBOX_MARK) {
        sqlite3_bind_text(st, 5, r->outbox_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, r->recipient, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, r->note_kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 8, r->room, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 9, r->text ? r->text : "", (int)r->text_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 10, r->ts);
        sqlite3_bind_text(st, 11, r->state, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 12, r->attempts);
        sqlite3_bind_int64(st, 13, r->next_at_ms);
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
        if (sqlite3_changes(s->wdb) == 0 && r->kind != SOP_OUTBOX_ADD)
            r->status = r->kind != SOP_ACCOUNT_ADD ? -ENOENT
                        : r->adopt                ? add_refusal(s, r)
                                                  : -EEXIST;
    }
    sqlite3_finalize(st);
    return rc;
}

static int cmp_room(const void *a, const void *b)
{
    const struct row *x = *(const struct row *const *)a, *y = *(const struct row *const *)b;
    return strcmp(x->room, y->room);
}

/* One upsert per distinct room of the batch, with its highest seq. */
static int upsert_rooms(store_t *s, struct row *rows, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i].kind == SOP_APPEND)
            s->sorted[m++] = &rows[i];
    if (m > 1)
        qsort(s->sorted, m, sizeof(*s->sorted), cmp_room);
    for (size_t i = 0; i < m;) {
        const struct row *first = s->sorted[i];
        uint64_t max = first->seq;
        int64_t ts = first->ts;
        size_t j = i + 1;
        for (; j < m && strcmp(s->sorted[j]->room, first->room) == 0; j++) {
            if (s->sorted[j]->seq > max)
                max = s->sorted[j]->seq;
            if (s->sorted[j]->ts < ts)
                ts = s->sorted[j]->ts;
        }
        int rc;
        if ((rc = sqlite3_bind_text(s->st_room, 1, first->room, -1, SQLITE_STATIC)) ||
            (rc = bind_u64(s->st_room, 2, max)) || (rc = sqlite3_bind_int64(s->st_room, 3, ts)) ||
            (rc = run_stmt(s->st_room)))
            return rc;
        i = j;
    }
    return SQLITE_OK;
}

/* Errors that belong to one row's content rather than to the disk: that
 * row would fail every retry, and hold up every write behind it. */
static bool row_error(int rc)
{
    int p = rc & 0xff;
    return p == SQLITE_CONSTRAINT || p == SQLITE_TOOBIG || p == SQLITE_MISMATCH ||
           p == SQLITE_RANGE;
}

/* Run rows as one transaction. Returns 0, or a negative errno with the cause
 * in `cause` after rolling back; *bad is then the index of a row that can
 * never be stored (see row_error), or SIZE_MAX. With `chunks`, runs of
 * messages go in multi-row statements (insert_chunk); a failing chunk does
 * not say which row failed, so retries run without. */
static int exec_batch(store_t *s, struct row *rows, size_t n, bool chunks, size_t *bad,
                      char *cause, size_t causesz)
{
    int64_t t0 = now_mono_ns();
    size_t nrows = 0, i = 0;
    int rc;

    *bad = SIZE_MAX;
    for (i = 0; i < n; i++) {
        rows[i].dup_seq = 0;
        rows[i].status = 0;
        if (rows[i].kind != SOP_BARRIER)
            nrows++;
    }
    /* Barriers alone need no transaction: every earlier write has already
     * committed, or is being retried ahead of them. */
    if (!nrows)
        return 0;
    if ((rc = run_stmt(s->st_begin)) != SQLITE_OK)
        goto fail;
    for (i = 0; i < n; i++) {
        int c = chunks ? chunk_at(rows, i, n) : -1;
        if (c >= 0) {
            if ((rc = insert_chunk(s, c, &rows[i])) != SQLITE_OK)
                goto fail;
            i += (size_t)chunk_rows[c] - 1;
            continue;
        }
        switch (rows[i].kind) {
        case SOP_APPEND:
            rc = insert_msg(s, &rows[i]);
            break;
        case SOP_USER_SEEN:
            rc = insert_user(s, &rows[i]);
            break;
        case SOP_BARRIER:
            rc = SQLITE_OK;
            break;
        case SOP_ACCOUNT_ADD:
        case SOP_ACCOUNT_PASSWD:
        case SOP_ACCOUNT_DEL:
        case SOP_OUTBOX_ADD:
        case SOP_OUTBOX_MARK:
            rc = run_rare(s, &rows[i]);
            break;
        }
        if (rc != SQLITE_OK) {
            if (row_error(rc))
                *bad = i;
            goto fail;
        }
    }
    if ((rc = upsert_rooms(s, rows, n)) != SQLITE_OK)
        goto fail;
    if ((rc = run_stmt(s->st_commit)) != SQLITE_OK)
        goto fail;
    stats_commit(s, now_mono_ns() - t0, nrows);
    return 0;

fail:
    describe(s->wdb, rc, cause, causesz);
    atomic_fetch_add_explicit(&s->n_failed_commits, 1, memory_order_relaxed);
    /* some errors (SQLITE_FULL, IOERR) already rolled the transaction back */
    if (!sqlite3_get_autocommit(s->wdb)) {
        int rrc = run_stmt(s->st_rollback);
        if (rrc != SQLITE_OK)
            log_error(MOD, "cannot roll back a failed transaction on '%s': %s", s->path,
                      sqlite3_errmsg(s->wdb));
    }
    return errno_from_sqlite(rc);
}

/* A blocking request of this engine's own (accounts, outbox marks): the
 * row itself, pointing into the caller's strings, and the caller waiting. */
struct sq_job {
    struct store_op op;
    struct row r;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
};

static void row_from_op(struct row *r, const struct store_op *op)
{
    *r = (struct row){.kind = op->kind};
    switch (op->kind) {
    case SOP_APPEND: {
        const struct room_event *e = &STORE_CONTAINER(op, struct store_append, op)->ev;
        r->room = e->room;
        r->from = e->from;
        r->text = e->text;
        r->text_len = e->text_len;
        r->ev_kind = (int)e->kind;
        r->body = e->body_len ? e->body : NULL;
        r->body_len = e->body_len;
        r->id = e->id;
        r->seq = e->seq;
        r->ts = e->ts;
        break;
    }
    case SOP_USER_SEEN:
        r->from = STORE_CONTAINER(op, struct store_user_seen, op)->name;
        break;
    case SOP_BARRIER:
        break;
    case SOP_OUTBOX_ADD: {
        const struct store_outbox_add *o = STORE_CONTAINER(op, struct store_outbox_add, op);
        r->outbox_id = o->id;
        r->recipient = o->recipient;
        r->email = o->email;
        r->note_kind = o->note_kind;
        r->from = o->from;
        r->room = o->room;
        r->text = o->text;
        r->text_len = o->text_len;
        r->ts = o->ts;
        break;
    }
    case SOP_ACCOUNT_ADD:
    case SOP_ACCOUNT_PASSWD:
    case SOP_ACCOUNT_DEL:
    case SOP_OUTBOX_MARK:
        *r = STORE_CONTAINER(op, struct sq_job, op)->r;
        r->kind = op->kind;
        r->dup_seq = 0;
        r->status = 0;
        r->owned = NULL;
        break;
    }
}

/* The request's final status is set: hand it back (may free it). */
static void op_finish(struct store_op *op)
{
    if (op->kind >= SOP_ACCOUNT_ADD && op->kind != SOP_OUTBOX_ADD) {
        struct sq_job *j = STORE_CONTAINER(op, struct sq_job, op);
        pthread_mutex_lock(&j->lock);
        j->done = true;
        pthread_cond_signal(&j->cond);
        pthread_mutex_unlock(&j->lock);
        return;
    }
    store_op_complete(op);
}

/* Append src (n bytes) and a NUL at *p; return where it went, or NULL for
 * a NULL src. */
static const char *own_str(char **p, const char *src, size_t n)
{
    if (!src)
        return NULL;
    char *d = *p;
    memcpy(d, src, n);
    d[n] = '\0';
    *p += n + 1;
    return d;
}

/* Copy a row's strings into one block the store owns (for the retry). */
static void row_own(struct row *dst, const struct row *src)
{
    size_t lroom = src->room ? strlen(src->room) : 0, lfrom = src->from ? strlen(src->from) : 0;
    size_t lid = src->id ? strlen(src->id) : 0;
    size_t ltext = src->text ? src->text_len : 0;
    const char *rare[6] = {src->hash, src->email, src->outbox_id, src->recipient, src->note_kind,
                           src->state};
    size_t lrare = 0;
    for (int i = 0; i < 6; i++)
        lrare += rare[i] ? strlen(rare[i]) + 1 : 0;
    char *p = xmalloc(lroom + lfrom + lid + ltext + lrare + src->body_len + 4);

    *dst = *src;
    dst->owned = p;
    dst->room = own_str(&p, src->room, lroom);
    dst->from = own_str(&p, src->from, lfrom);
    dst->id = own_str(&p, src->id, lid);
    dst->text = own_str(&p, src->text, ltext);
    dst->hash = own_str(&p, src->hash, src->hash ? strlen(src->hash) : 0);
    dst->email = own_str(&p, src->email, src->email ? strlen(src->email) : 0);
    dst->outbox_id = own_str(&p, src->outbox_id, src->outbox_id ? strlen(src->outbox_id) : 0);
    dst->recipient = own_str(&p, src->recipient, src->recipient ? strlen(src->recipient) : 0);
    dst->note_kind = own_str(&p, src->note_kind, src->note_kind ? strlen(src->note_kind) : 0);
    dst->state = own_str(&p, src->state, src->state ? strlen(src->state) : 0);
    if (src->body_len) {
        dst->body = memcpy(p, src->body, src->body_len);
        p += src->body_len;
    }
}

static void retry_clear(store_t *s)
{
    for (size_t i = 0; i < s->nretry; i++)
        free(s->retry[i].owned);
    s->nretry = 0;
    atomic_store_explicit(&s->n_retrying, 0, memory_order_relaxed);
}

/* Sleep until wake_ns, or until store_close begins; once closing, until the
 * earlier of wake_ns and the close deadline. Returns false when the close
 * deadline has passed: give up. */
static bool backoff_wait(store_t *s, int64_t wake_ns)
{
    struct timespec ts;
    bool ok = true;

    pthread_mutex_lock(&s->lock);
    bool was_closing = s->closing;
    for (;;) {
        int64_t now = now_mono_ns();
        if (s->closing && now >= s->close_deadline_ns) {
            ok = false;
            break;
        }
        if (s->closing != was_closing || now >= wake_ns)
            break;
        int64_t until = wake_ns;
        if (s->closing && s->close_deadline_ns < until)
            until = s->close_deadline_ns;
        abs_timespec(&ts, until);
        pthread_cond_timedwait(&s->wcond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

/* ---------------------------------------------------------- completion */

/* Writer thread: the statuses of writes w[0..n) are final; tell their
 * submitters, or, when acks wait for the sync thread, queue them (one lock
 * for the batch) behind the commits before them. The writer stays at most
 * about queue_max completions ahead of the disk. */
static void report_writes(store_t *s, struct store_op **w, size_t n)
{
    if (!s->sync_thread) {
        for (size_t i = 0; i < n; i++)
            op_finish(w[i]); /* may free w[i] */
        return;
    }
    if (!n)
        return;
    for (size_t i = 0; i + 1 < n; i++)
        w[i]->next = w[i + 1];
    w[n - 1]->next = NULL;
    pthread_mutex_lock(&s->sy_lock);
    while (s->sy_n >= s->o.queue_max)
        pthread_cond_wait(&s->sy_cond, &s->sy_lock);
    if (s->sy_tail)
        s->sy_tail->next = w[0];
    else
        s->sy_head = w[0];
    s->sy_tail = w[n - 1];
    if (s->sy_n == 0)
        pthread_cond_broadcast(&s->sy_cond);
    s->sy_n += n;
    pthread_mutex_unlock(&s->sy_lock);
}

/* Sync thread: open the WAL for syncing, and make its name durable too
 * (a power cut must not lose the file the frames are in). */
static int open_wal(store_t *s)
{
    /* O_RDWR: POSIX lets fdatasync refuse a read-only descriptor */
    int fd = open(s->wal_path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char *dir = xstrdup(s->wal_path), *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = '\0';
    int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = dfd >= 0 && fsync(dfd) == 0 ? 0 : -errno;
    if (dfd >= 0)
        close(dfd);
    free(dir);
    if (rc == 0 && fstat(fd, &s->wal_st) != 0)
        rc = -errno;
    if (rc) {
        close(fd);
        return rc;
    }
    s->wal_fd = fd;
    return 0;
}

/* Sync thread: make every WAL frame written so far durable. SQLite never
 * replaces the WAL while its connections are open (it removes it when the
 * last one closes), so a removed or different file under the name means
 * the frames are somewhere this fdatasync cannot reach: -ESTALE. */
static int sync_wal(store_t *s)
{
    struct stat ours, named;
    int rc;

    if (s->wal_fd < 0 && (rc = open_wal(s)) != 0)
        return rc;
    if (fstat(s->wal_fd, &ours) != 0 || ours.st_nlink == 0 ||
        stat(s->wal_path, &named) != 0 || named.st_ino != s->wal_st.st_ino ||
        named.st_dev != s->wal_st.st_dev)
        return -ESTALE;
    return fdatasync(s->wal_fd) == 0 ? 0 : -errno;
}

static void *sync_main(void *arg)
{
    store_t *s = arg;

    pthread_mutex_lock(&s->sy_lock);
    for (;;) {
        while (!s->sy_head && !s->sy_stop)
            pthread_cond_wait(&s->sy_cond, &s->sy_lock);
        if (!s->sy_head)
            break;
        struct store_op *w = s->sy_head;
        size_t n = s->sy_n;
        s->sy_head = s->sy_tail = NULL;
        pthread_mutex_unlock(&s->sy_lock);

        bool any_ok = false;
        for (struct store_op *x = w; x; x = x->next)
            any_ok |= x->status == 0;
        int rc = s->sy_failed;
        if (any_ok && !rc) {
            int64_t t0 = now_mono_ns();
            rc = sync_wal(s);
            atomic_fetch_add_explicit(&s->n_syncs, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&s->n_sync_ns, (uint64_t)(now_mono_ns() - t0),
                                      memory_order_relaxed);
            if (rc) {
                log_error(MOD, "cannot sync the WAL of '%s' to disk: %s; every write from now "
                               "on gets an error: restart parleyd once the disk is sound",
                          s->path,
                          rc == -ESTALE ? "the file was removed or replaced" : strerror(-rc));
                s->sy_failed = rc;
            }
        }
        while (w) {
            struct store_op *next = w->next;
            if (rc && w->status == 0) {
                w->status = -EIO;
                w->dup_seq = 0;
                atomic_fetch_add_explicit(&s->n_failures, 1, memory_order_relaxed);
            }
            op_finish(w); /* may free w */
            w = next;
        }

        pthread_mutex_lock(&s->sy_lock);
        s->sy_n -= n;
        pthread_cond_broadcast(&s->sy_cond);
    }
    pthread_mutex_unlock(&s->sy_lock);
    return NULL;
}

/* Fail every queued write (the close deadline passed during a retry). */
static size_t fail_queue(store_t *s, int status)
{
    pthread_mutex_lock(&s->lock);
    struct store_op *w = s->qhead;
    size_t n = s->qn;
    s->qhead = s->qtail = NULL;
    s->qn = 0;
    pthread_mutex_unlock(&s->lock);
    while (w) {
        struct store_op *next = w->next;
        w->status = status;
        w->dup_seq = 0;
        atomic_fetch_add_explicit(&s->n_failures, 1, memory_order_relaxed);
        report_writes(s, &w, 1);
        w = next;
    }
    return n;
}

/* A row no retry can store: drop it so it does not block every write
 * behind it, and count it as lost. */
static void drop_row(store_t *s, const struct row *r, const char *cause)
{
    if (r->kind == SOP_APPEND)
        log_error(MOD, "dropping message %s/%" PRIu64 " from '%s': it cannot be stored: %s",
                  r->room, r->seq, r->from, cause);
    else
        log_error(MOD, "dropping user '%s': it cannot be stored: %s", r->from, cause);
    atomic_fetch_add_explicit(&s->n_lost, 1, memory_order_relaxed);
}

static void retry_remove(store_t *s, size_t k)
{
    free(s->retry[k].owned);
    memmove(&s->retry[k], &s->retry[k + 1], (s->nretry - k - 1) * sizeof(*s->retry));
    s->nretry--;
    atomic_store_explicit(&s->n_retrying, s->nretry, memory_order_relaxed);
}

/* Retry s->retry until it commits. Returns false if store_close gave up. */
static bool retry_until_committed(store_t *s, int status, const char *first_cause)
{
    char cause[256];
    char last[256];
    int64_t backoff_ms = BACKOFF_MIN_MS;
    int attempt = 0;
    bool wait = true;

    snprintf(last, sizeof(last), "%s", first_cause);
    while (s->nretry) {
        if (wait && !backoff_wait(s, now_mono_ns() + backoff_ms * 1000000)) {
            size_t n = s->nretry;
            atomic_fetch_add_explicit(&s->n_lost, n, memory_order_relaxed);
            retry_clear(s);
            size_t never = fail_queue(s, status);
            atomic_fetch_add_explicit(&s->n_lost, never, memory_order_relaxed);
            log_error(MOD,
                      "giving up on '%s' at shutdown: %zu failed writes and %zu queued writes "
                      "are lost (last error: %s)",
                      s->path, n, never, last);
            return false;
        }
        attempt++;
        size_t bad;
        int rc = exec_batch(s, s->retry, s->nretry, false, &bad, cause, sizeof(cause));
        if (rc == 0) {
            log_info(MOD, "committed %zu delayed writes to '%s' after %d retries", s->nretry,
                     s->path, attempt);
            retry_clear(s);
            return true;
        }
        status = rc;
        snprintf(last, sizeof(last), "%s", cause);
        if (bad != SIZE_MAX) {
            /* the row, not the disk: drop it and go again at once */
            drop_row(s, &s->retry[bad], cause);
            retry_remove(s, bad);
            wait = false;
            continue;
        }
        wait = true;
        if (attempt % RETRY_LOG_EVERY == 0)
            log_error(MOD, "still cannot commit %zu writes to '%s' after %d retries: %s",
                      s->nretry, s->path, attempt, cause);
        else
            log_debug(MOD, "retry %d of %zu writes to '%s' failed: %s", attempt, s->nretry,
                      s->path, cause);
        backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
    }
    return true;
}

/* Take the next batch off the queue into s->batch_w. Waits for the first
 * write, then for more until the batch window has passed since the oldest
 * queued write arrived: writes that piled up during the last commit have
 * waited long enough and go at once. Returns 0 only when closing with an
 * empty queue. */
static size_t take_batch(store_t *s)
{
    size_t max = (size_t)s->o.batch_max, n = 0;

    pthread_mutex_lock(&s->lock);
    while (!s->qn && !s->closing)
        pthread_cond_wait(&s->wcond, &s->lock);
    if (s->qn && s->qn < max && s->o.batch_window_us > 0 && !s->closing) {
        struct timespec ts;
        abs_timespec(&ts, s->q_first_ns + (int64_t)s->o.batch_window_us * 1000);
        while (s->qn < max && !s->closing)
            if (pthread_cond_timedwait(&s->wcond, &s->lock, &ts) == ETIMEDOUT)
                break;
    }
    while (n < max && s->qhead) {
        struct store_op *w = s->qhead;
        s->qhead = w->next;
        s->batch_w[n++] = w;
    }
    if (!s->qhead)
        s->qtail = NULL;
    s->qn -= n;
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void *writer_main(void *arg)
{
    store_t *s = arg;
    char cause[256];

    for (;;) {
        size_t n = take_batch(s);
        if (!n)
            break;
        for (size_t i = 0; i < n; i++)
            row_from_op(&s->batch[i], s->batch_w[i]);
        size_t bad;
        int rc = exec_batch(s, s->batch, n, true, &bad, cause, sizeof(cause));
        if (rc == 0) {
            for (size_t i = 0; i < n; i++) {
                s->batch_w[i]->status = s->batch[i].status;
                s->batch_w[i]->dup_seq = s->batch[i].dup_seq;
            }
            report_writes(s, s->batch_w, n);
            continue;
        }

        log_error(MOD, "cannot commit %zu writes to '%s': %s; retrying", n, s->path, cause);
        /* Keep our own copy first: done() lets the submitter free w. */
        s->nretry = 0;
        for (size_t i = 0; i < n; i++) {
            if (i == bad)
                drop_row(s, &s->batch[i], cause);
            else if (s->batch[i].kind != SOP_BARRIER)
                row_own(&s->retry[s->nretry++], &s->batch[i]);
        }
        atomic_store_explicit(&s->n_retrying, s->nretry, memory_order_relaxed);
        for (size_t i = 0; i < n; i++) {
            s->batch_w[i]->status = rc;
            s->batch_w[i]->dup_seq = 0;
            atomic_fetch_add_explicit(&s->n_failures, 1, memory_order_relaxed);
        }
        report_writes(s, s->batch_w, n);
        if (s->nretry && !retry_until_committed(s, rc, cause))
            break;
    }
    return NULL;
}

/* --------------------------------------------------------- checkpoints */

/* Writer thread, after each commit; npages is the WAL's size in frames. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int npages)
{
    store_t *s = arg;
    if (npages >= s->ckpt_hard_pages) {
        /* If the checkpointer is busy, let it finish and try after the next
         * commit rather than wait for it: its work shrinks ours. */
        if (pthread_mutex_trylock(&s->ckpt_run) != 0)
            return SQLITE_OK;
        int log = 0, done = 0;
        int64_t t0 = now_mono_ns();
        int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        pthread_mutex_unlock(&s->ckpt_run);
        if (rc != SQLITE_OK)
            log_warn(MOD, "cannot checkpoint '%s' (WAL at %d pages): %s", s->path, npages,
                     sqlite3_errmsg(db));
        else
            log_debug(MOD, "writer checkpointed %d of %d WAL pages of '%s' in %.1f ms", done,
                      log, s->path, (double)(now_mono_ns() - t0) / 1e6);
    } else if (npages >= s->ckpt_soft_pages &&
               !atomic_exchange_explicit(&s->ck_flag, true, memory_order_relaxed)) {
        pthread_mutex_lock(&s->ck_lock);
        s->ck_wanted = true;
        pthread_cond_signal(&s->ck_cond);
        pthread_mutex_unlock(&s->ck_lock);
    }
    return SQLITE_OK;
}

static void *ckpt_main(void *arg)
{
    store_t *s = arg;
    struct timespec ts;

    pthread_mutex_lock(&s->ck_lock);
    for (;;) {
        while (!s->ck_wanted && !s->ck_stop)
            pthread_cond_wait(&s->ck_cond, &s->ck_lock);
        if (s->ck_stop)
            break;
        s->ck_wanted = false;
        atomic_store_explicit(&s->ck_flag, false, memory_order_relaxed);
        pthread_mutex_unlock(&s->ck_lock);

        int log = 0, done = 0;
        pthread_mutex_lock(&s->ckpt_run);
        int rc = sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        pthread_mutex_unlock(&s->ckpt_run);
        log_debug(MOD, "checkpoint of '%s': rc %d, %d of %d WAL pages", s->path, rc, done, log);
        /* log changes of state only: a failing disk fails every time */
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && !s->ck_failing) {
            log_warn(MOD, "cannot checkpoint '%s': %s", s->path, sqlite3_errmsg(s->cdb));
            s->ck_failing = true;
        } else if (rc == SQLITE_OK && s->ck_failing) {
            log_info(MOD, "checkpoints of '%s' work again", s->path);
            s->ck_failing = false;
        }

        pthread_mutex_lock(&s->ck_lock);
        abs_timespec(&ts, now_mono_ns() + (int64_t)CKPT_REST_MS * 1000000);
        while (!s->ck_stop)
            if (pthread_cond_timedwait(&s->ck_cond, &s->ck_lock, &ts) == ETIMEDOUT)
                break;
    }
    pthread_mutex_unlock(&s->ck_lock);
    return NULL;
}

/* -------------------------------------------------------------- reader */

/* Result rows collected before the string block's final address is known. */
struct rrow {
    uint64_t seq;
    int64_t ts;
    int kind;
    size_t from, text, id, text_len, body, body_len; /* offsets into the block */
};

static size_t buf_put(char **buf, size_t *len, size_t *cap, const unsigned char *s, size_t n)
{
    size_t off = *len;
    if (*len + n + 1 > *cap) {
        while (*len + n + 1 > *cap)
            *cap = *cap ? *cap * 2 : 1024;
        *buf = xrealloc(*buf, *cap);
    }
    if (n)
        memcpy(*buf + *len, s, n);
    (*buf)[*len + n] = '\0';
    *len += n + 1;
    return off;
}

static int do_read(struct reader *rd, struct store_read *r)
{
    sqlite3_stmt *st;
    bool desc = r->mode != SR_SINCE;
    int rc, keyidx = 0;
    struct rrow *rows = NULL;
    size_t n = 0, cap = 0, blen = 0, bcap = 0;
    char *block = NULL;
    /* fetch one more than asked to learn whether more exist */
    int64_t want = (int64_t)r->limit + 1;

    switch (r->mode) {
    case SR_LATEST:
        st = rd->latest;
        break;
    case SR_SINCE:
        st = rd->since;
        keyidx = 2;
        if (r->key >= (uint64_t)INT64_MAX)
            goto done; /* nothing is newer than that */
        break;
    case SR_BEFORE:
    default:
        st = rd->before;
        keyidx = 2;
        break;
    }
    if ((rc = sqlite3_bind_text(st, 1, r->room, -1, SQLITE_STATIC)) ||
        (keyidx && (rc = bind_u64(st, keyidx, r->key))) ||
        (rc = sqlite3_bind_int64(st, keyidx ? 3 : 2, want)))
        goto fail;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((int64_t)n == r->limit) {
            r->more = true;
            continue; /* the extra row: step once more to reach SQLITE_DONE */
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            rows = xrealloc(rows, cap * sizeof(*rows));
        }
        struct rrow *x = &rows[n++];
        x->seq = (uint64_t)sqlite3_column_int64(st, 0);
        const unsigned char *from = sqlite3_column_text(st, 1);
        size_t lfrom = (size_t)sqlite3_column_bytes(st, 1);
        const unsigned char *text = sqlite3_column_text(st, 2);
        size_t ltext = (size_t)sqlite3_column_bytes(st, 2);
        x->ts = sqlite3_column_int64(st, 3);
        const unsigned char *id = sqlite3_column_text(st, 4);
        size_t lid = id ? (size_t)sqlite3_column_bytes(st, 4) : 0;
        x->kind = sqlite3_column_int(st, 5);
        const unsigned char *body = sqlite3_column_blob(st, 6);
        size_t lbody = body ? (size_t)sqlite3_column_bytes(st, 6) : 0;
        if ((!from || !text || (!body && sqlite3_column_type(st, 6) != SQLITE_NULL)) &&
            sqlite3_errcode(rd->db) == SQLITE_NOMEM) {
            rc = SQLITE_NOMEM;
            goto fail;
        }
        x->from = buf_put(&block, &blen, &bcap, from, from ? lfrom : 0);
        x->text = buf_put(&block, &blen, &bcap, text, text ? ltext : 0);
        x->text_len = text ? ltext : 0;
        x->id = buf_put(&block, &blen, &bcap, id, lid);
        x->body_len = lbody;
        x->body = lbody ? buf_put(&block, &blen, &bcap, body, lbody) : 0;
    }
    if (rc != SQLITE_DONE)
        goto fail;
    sqlite3_reset(st);

done:
    r->n = n;
    r->evs = n ? xmalloc(n * sizeof(*r->evs)) : NULL;
    r->priv = block;
    for (size_t i = 0; i < n; i++) {
        const struct rrow *x = &rows[desc ? n - 1 - i : i];
        struct room_event *m = &r->evs[i];
        *m = (struct room_event){.kind = (enum room_event_kind)x->kind};
        m->room = r->room;
        m->seq = x->seq;
        m->from = block + x->from;
        m->text = block + x->text;
        m->text_len = x->text_len;
        m->ts = x->ts;
        m->id = block + x->id;
        m->body = x->body_len ? block + x->body : NULL;
        m->body_len = x->body_len;
    }
    free(rows);
    return 0;

fail:
    log_warn(MOD, "cannot read history of '%s' from '%s': %s", r->room, rd->s->path,
             sqlite3_errmsg(rd->db));
    sqlite3_reset(st);
    free(rows);
    free(block);
    r->more = false;
    return errno_from_sqlite(rc);
}

/* {rlock} The next read: the first of the owner whose turn it is; that
 * owner goes to the back of the turn, or away once it has none left. */
static struct store_read *next_read_locked(store_t *s)
{
    struct rowner *o = s->rturn;
    if (!o)
        return NULL;
    struct store_read *r = o->head;
    o->head = r->next;
    s->rturn = o->next;
    o->next = NULL;
    if (o->head) {
        if (s->rturn)
            s->rlast->next = o;
        else
            s->rturn = o;
        s->rlast = o;
    } else {
        if (!s->rturn)
            s->rlast = NULL;
        strmap_del(s->rowners, r->owner);
        free(o);
    }
    s->rn--;
    return r;
}

static void *reader_main(void *arg)
{
    struct reader *rd = arg;
    store_t *s = rd->s;

    for (;;) {
        pthread_mutex_lock(&s->rlock);
        while (!s->rturn && !s->rclosing)
            pthread_cond_wait(&s->rcond, &s->rlock);
        struct store_read *r = next_read_locked(s);
        pthread_mutex_unlock(&s->rlock);
        if (!r)
            break;
        r->next = NULL;
        r->status = do_read(rd, r);
        r->done(r);
    }
    return NULL;
}

static int open_reader(store_t *s, struct reader *rd, char *err, size_t errsz)
{
    static const char cols[] =
        "SELECT seq, sender, text, ts, client_id, kind, body FROM messages ";
    char sql[256];

    if (open_readonly(s, &rd->db, err, errsz) != 0)
        return -1;
    snprintf(sql, sizeof(sql), "%sWHERE room = ?1 ORDER BY seq DESC LIMIT ?2", cols);
    if (prepare(rd->db, sql, &rd->latest, err, errsz))
        return -1;
    snprintf(sql, sizeof(sql), "%sWHERE room = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3", cols);
    if (prepare(rd->db, sql, &rd->since, err, errsz))
        return -1;
    snprintf(sql, sizeof(sql), "%sWHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3", cols);
    if (prepare(rd->db, sql, &rd->before, err, errsz))
        return -1;
    return 0;
}

/* -------------------------------------------------------- open / close */

static void close_db(store_t *s, sqlite3 *db)
{
    if (!db)
        return;
    int rc = sqlite3_close(db);
    if (rc != SQLITE_OK)
        log_error(MOD, "cannot close database '%s': %s", s->path, sqlite3_errstr(rc));
}

/* A mutex and its condition variable; mono: timed waits on the monotonic
 * clock. 0, or an errno with the reason in err. */
static int init_pair(pthread_mutex_t *m, pthread_cond_t *c, bool mono, char *err, size_t errsz)
{
    int rc = pthread_mutex_init(m, NULL);
    if (rc == 0 && (rc = mono ? cond_init_mono(c) : pthread_cond_init(c, NULL)) != 0)
        pthread_mutex_destroy(m);
    if (rc)
        snprintf(err, errsz, "cannot create a mutex or condition variable: %s", strerror(rc));
    return rc;
}

static void destroy_pair(pthread_mutex_t *m, pthread_cond_t *c)
{
    pthread_cond_destroy(c);
    pthread_mutex_destroy(m);
}

/* Tell the thread(s) waiting on cond to stop. */
static void raise_stop(pthread_mutex_t *lock, pthread_cond_t *cond, bool *flag)
{
    pthread_mutex_lock(lock);
    *flag = true;
    pthread_cond_broadcast(cond);
    pthread_mutex_unlock(lock);
}

static void join_thread(pthread_t tid, bool started, const char *what)
{
    int rc = started ? pthread_join(tid, NULL) : 0;
    if (rc)
        log_error(MOD, "cannot join the %s thread: %s", what, strerror(rc));
}

/* Stop and join whatever store_open started, then release everything.
 * Shared by store_close and store_open's error path. */
static void store_destroy(store_t *s)
{
    pthread_mutex_lock(&s->lock);
    if (!s->closing) {
        s->closing = true;
        s->close_deadline_ns = now_mono_ns() + (int64_t)s->o.close_timeout_ms * 1000000;
    }
    atomic_store_explicit(&s->closing_flag, true, memory_order_relaxed);
    pthread_cond_broadcast(&s->wcond);
    pthread_mutex_unlock(&s->lock);
    join_thread(s->writer, s->writer_started, "writer");
    /* the writer's last completions are queued: sync them, then stop */
    raise_stop(&s->sy_lock, &s->sy_cond, &s->sy_stop);
    join_thread(s->sy_tid, s->sy_started, "sync");
    if (s->wal_fd >= 0)
        close(s->wal_fd);
    raise_stop(&s->ck_lock, &s->ck_cond, &s->ck_stop);
    join_thread(s->ckpt_tid, s->ckpt_started, "checkpoint");
    raise_stop(&s->rlock, &s->rcond, &s->rclosing);
    for (int i = 0; i < s->nreaders; i++) {
        struct reader *rd = &s->readers[i];
        join_thread(rd->tid, rd->started, "storage reader");
        sqlite3_finalize(rd->latest);
        sqlite3_finalize(rd->since);
        sqlite3_finalize(rd->before);
        close_db(s, rd->db);
    }
    free(s->readers);

    sqlite3_finalize(s->st_begin);
    sqlite3_finalize(s->st_commit);
    sqlite3_finalize(s->st_rollback);
    sqlite3_finalize(s->st_ins_msg);
    sqlite3_finalize(s->st_find_dup);
    sqlite3_finalize(s->st_room);
    sqlite3_finalize(s->st_user);
    sqlite3_finalize(s->st_find_seq);
    for (int i = 0; i < NCHUNK; i++)
        sqlite3_finalize(s->st_chunk[i]);
    close_db(s, s->mdb);
    close_db(s, s->cdb);
    close_db(s, s->wdb); /* the last connection checkpoints and removes the WAL */

    retry_clear(s);
    free(s->batch);
    free(s->batch_w);
    free(s->sorted);
    free(s->retry);
    destroy_pair(&s->sy_lock, &s->sy_cond);
    destroy_pair(&s->ck_lock, &s->ck_cond);
    pthread_mutex_destroy(&s->ckpt_run);
    /* the readers answered every queued read before they exited */
    strmap_free(s->rowners, NULL);
    destroy_pair(&s->rlock, &s->rcond);
    destroy_pair(&s->lock, &s->wcond);
    free(s->wal_path);
    free(s->path);
    free(s);
}

static const struct store_log_ops sq_log_ops;
static const struct store_accounts_ops sq_accounts_ops;
static const struct store_outbox_ops sq_outbox_ops;

store_t *store_open(const struct store_opts *o, char *err, size_t errsz)
{
    int rc;

    if (!o || !o->path || !o->path[0]) {
        snprintf(err, errsz, "no database path given");
        return NULL;
    }
    store_t *s = xcalloc(1, sizeof(*s));
    s->base = (struct store_base){&sq_log_ops, &sq_accounts_ops, &sq_outbox_ops};
    s->path = xstrdup(o->path);
    s->o = *o;
    s->o.path = NULL;
    if (s->o.batch_max <= 0)
        s->o.batch_max = DEFAULT_BATCH_MAX;
    if (s->o.batch_window_us == 0)
        s->o.batch_window_us = DEFAULT_WINDOW_US;
    if (s->o.readers <= 0)
        s->o.readers = 1;
    if (s->o.queue_max == 0)
        s->o.queue_max = DEFAULT_QUEUE_MAX;
    if (s->o.close_timeout_ms == 0)
        s->o.close_timeout_ms = DEFAULT_CLOSE_TIMEOUT_MS;
    else if (s->o.close_timeout_ms < 0)
        s->o.close_timeout_ms = 0;

    /* The primitives first so store_destroy can always use them. */
    if (init_pair(&s->lock, &s->wcond, true, err, errsz) != 0)
        goto fail_early;
    if (init_pair(&s->rlock, &s->rcond, false, err, errsz) != 0)
        goto fail_w;
    s->rowners = strmap_new();
    if ((rc = pthread_mutex_init(&s->ckpt_run, NULL)) != 0) {
        snprintf(err, errsz, "cannot create a mutex: %s", strerror(rc));
        goto fail_r;
    }
    if (init_pair(&s->ck_lock, &s->ck_cond, true, err, errsz) != 0)
        goto fail_ckpt_run;
    if (init_pair(&s->sy_lock, &s->sy_cond, false, err, errsz) != 0)
        goto fail_ck;
    s->sync_thread = s->o.durability_full && !s->o.sync_in_commit;
    s->wal_fd = -1;
    s->wal_path = xmalloc(strlen(s->path) + sizeof("-wal"));
    strcpy(s->wal_path, s->path);
    strcat(s->wal_path, "-wal");

    size_t bm = (size_t)s->o.batch_max;
    s->batch = xcalloc(bm, sizeof(*s->batch));
    s->batch_w = xcalloc(bm, sizeof(*s->batch_w));
    s->sorted = xcalloc(bm, sizeof(*s->sorted));
    s->retry = xcalloc(bm, sizeof(*s->retry));
    s->readers = xcalloc((size_t)s->o.readers, sizeof(*s->readers));

    if (open_writer(s, err, errsz) != 0)
        goto fail;
    if (open_readonly(s, &s->mdb, err, errsz) != 0)
        goto fail;
    s->cdb = open_conn(s->path, false, err, errsz);
    if (!s->cdb)
        goto fail;
    /* PASSIVE checkpoints never call it; it is there for the WAL-index
     * recovery a checkpoint may have to wait for */
    if ((rc = sqlite3_busy_timeout(s->cdb, READER_BUSY_MS)) != SQLITE_OK) {
        snprintf(err, errsz, "cannot configure database '%s': %s", s->path, sqlite3_errstr(rc));
        goto fail;
    }
    /* A connection learns the file is in WAL mode when it first reads it;
     * until then a checkpoint on it is a silent no-op. */
    if (exec_sql(s->cdb, s->o.durability_full ? "PRAGMA synchronous = FULL"
                                              : "PRAGMA synchronous = NORMAL",
                 err, errsz, "cannot set synchronous") != SQLITE_OK ||
        exec_sql(s->cdb, "SELECT count(*) FROM sqlite_schema", err, errsz,
                 "cannot read the database") != SQLITE_OK)
        goto fail;
    for (int i = 0; i < s->o.readers; i++) {
        struct reader *rd = &s->readers[i];
        rd->s = s;
        s->nreaders = i + 1;
        if (open_reader(s, rd, err, errsz) != 0)
            goto fail;
    }
    for (int i = 0; i < s->nreaders; i++) {
        struct reader *rd = &s->readers[i];
        if ((rc = pthread_create(&rd->tid, NULL, reader_main, rd)) != 0) {
            snprintf(err, errsz, "cannot start a storage reader thread: %s", strerror(rc));
            goto fail;
        }
        rd->started = true;
    }
    if ((rc = pthread_create(&s->ckpt_tid, NULL, ckpt_main, s)) != 0) {
        snprintf(err, errsz, "cannot start the storage checkpoint thread: %s", strerror(rc));
        goto fail;
    }
    s->ckpt_started = true;
    if (s->sync_thread) {
        if ((rc = pthread_create(&s->sy_tid, NULL, sync_main, s)) != 0) {
            snprintf(err, errsz, "cannot start the storage sync thread: %s", strerror(rc));
            goto fail;
        }
        s->sy_started = true;
    }
    if ((rc = pthread_create(&s->writer, NULL, writer_main, s)) != 0) {
        snprintf(err, errsz, "cannot start the storage writer thread: %s", strerror(rc));
        goto fail;
    }
    s->writer_started = true;
    log_info(MOD, "opened '%s' (schema version %d, synchronous=%s, batch %d, window %d us)",
             s->path, SCHEMA_VERSION,
             !s->o.durability_full ? "normal"
             : s->sync_thread      ? "full (fdatasync on the sync thread)"
                                   : "full",
             s->o.batch_max,
             s->o.batch_window_us > 0 ? s->o.batch_window_us : 0);
    return s;

fail:
    store_destroy(s);
    return NULL;
fail_ck:
    destroy_pair(&s->ck_lock, &s->ck_cond);
fail_ckpt_run:
    pthread_mutex_destroy(&s->ckpt_run);
fail_r:
    strmap_free(s->rowners, NULL);
    destroy_pair(&s->rlock, &s->rcond);
fail_w:
    destroy_pair(&s->lock, &s->wcond);
fail_early:
    free(s->path);
    free(s);
    return NULL;
}

static void sq_close(store_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    size_t pending = s->qn;
    pthread_mutex_unlock(&s->lock);
    log_info(MOD, "closing '%s': flushing %zu queued writes", s->path, pending);
    store_destroy(s);
}

/* ------------------------------------------------------------- submit */

static int submit_op(store_t *s, struct store_op *w)
{
    w->next = NULL;
    w->status = 0;
    w->dup_seq = 0;

    pthread_mutex_lock(&s->lock);
    if (s->closing) {
        pthread_mutex_unlock(&s->lock);
        return -ESHUTDOWN;
    }
    if (s->qn >= s->o.queue_max) {
        pthread_mutex_unlock(&s->lock);
        return -EAGAIN;
    }
    if (s->qtail) {
        s->qtail->next = w;
    } else {
        s->qhead = w;
        s->q_first_ns = now_mono_ns();
    }
    s->qtail = w;
    s->qn++;
    /* The writer waits only for a first write or for a full batch. */
    if (s->qn == 1 || s->qn == (size_t)s->o.batch_max)
        pthread_cond_signal(&s->wcond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int sq_append(store_t *s, struct store_append *a)
{
    const struct room_event *e = a ? &a->ev : NULL;
    if (!a || !a->done || !store_event_valid(e))
        return -EINVAL;
    a->op.kind = SOP_APPEND;
    return submit_op(s, &a->op);
}

static int sq_barrier(store_t *s, struct store_barrier *b)
{
    if (!b || !b->done)
        return -EINVAL;
    b->op.kind = SOP_BARRIER;
    return submit_op(s, &b->op);
}

static int sq_user_seen(store_t *s, struct store_user_seen *u)
{
    if (!u || !u->done || !u->name)
        return -EINVAL;
    u->op.kind = SOP_USER_SEEN;
    return submit_op(s, &u->op);
}

static int sq_outbox_add(store_t *s, struct store_outbox_add *o)
{
    if (!o || !o->done || !o->id || !o->recipient || !o->email || !o->note_kind || !o->from ||
        !o->room || !o->text)
        return -EINVAL;
    o->op.kind = SOP_OUTBOX_ADD;
    return submit_op(s, &o->op);
}

static int sq_read_submit(store_t *s, struct store_read *r)
{
    if (!r || !r->done || r->limit < 0 ||
        (r->mode != SR_LATEST && r->mode != SR_SINCE && r->mode != SR_BEFORE))
        return -EINVAL;
    r->next = NULL;
    r->owner[sizeof(r->owner) - 1] = '\0';
    r->evs = NULL;
    r->priv = NULL;
    r->n = 0;
    r->more = false;
    r->status = 0;

    pthread_mutex_lock(&s->rlock);
    if (s->rclosing || atomic_load_explicit(&s->closing_flag, memory_order_relaxed)) {
        pthread_mutex_unlock(&s->rlock);
        return -ESHUTDOWN;
    }
    if (s->rn >= s->o.queue_max) {
        pthread_mutex_unlock(&s->rlock);
        return -EAGAIN;
    }
    struct rowner *o = strmap_get(s->rowners, r->owner);
    if (!o) {
        o = xcalloc(1, sizeof(*o));
        strmap_put(s->rowners, r->owner, o);
        if (s->rlast)
            s->rlast->next = o;
        else
            s->rturn = o;
        s->rlast = o;
    }
    if (o->tail)
        o->tail->next = r;
    else
        o->head = r;
    o->tail = r;
    s->rn++;
    pthread_cond_signal(&s->rcond);
    pthread_mutex_unlock(&s->rlock);
    return 0;
}

/* ------------------------------------------------------ start-up loads */

static int load_fail(store_t *s, const char *what)
{
    log_error(MOD, "cannot load %s from '%s': %s", what, s->path, sqlite3_errmsg(s->mdb));
    return -1;
}

static int sq_load_rooms(store_t *s, void (*cb)(void *arg, const char *room, uint64_t last_seq),
                     void *arg)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->mdb, "SELECT name, last_seq FROM rooms", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return load_fail(s, "rooms");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text(st, 0);
        if (name)
            cb(arg, (const char *)name, (uint64_t)sqlite3_column_int64(st, 1));
    }
    if (rc != SQLITE_DONE) {
        load_fail(s, "rooms");
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

static int sq_load_users(store_t *s, uint64_t since_gen,
                     void (*cb)(void *arg, const struct store_user *u), void *arg)
{
    /* the partial index serves the since_gen form: acct_gen > 0 is spelt
     * out so the planner can see it applies */
    static const char all[] =
        "SELECT name, CASE WHEN password_hash IS NOT NULL THEN COALESCE(email, '') END,"
        " tokens_after, deleted_at IS NOT NULL, acct_gen FROM users";
    static const char changed[] =
        "SELECT name, CASE WHEN password_hash IS NOT NULL THEN COALESCE(email, '') END,"
        " tokens_after, deleted_at IS NOT NULL, acct_gen FROM users"
        " WHERE acct_gen > 0 AND acct_gen > ?1";
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->mdb, since_gen ? changed : all, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return load_fail(s, "users");
    if (since_gen)
        bind_u64(st, 1, since_gen);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_user u = {
            .name = (const char *)sqlite3_column_text(st, 0),
            .email = (const char *)sqlite3_column_text(st, 1),
            .tokens_after_ms = sqlite3_column_int64(st, 2),
            .deleted = sqlite3_column_int(st, 3) != 0,
            .gen = (uint64_t)sqlite3_column_int64(st, 4),
        };
        if (u.name)
            cb(arg, &u);
    }
    if (rc != SQLITE_DONE) {
        load_fail(s, "users");
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

static int sq_users_gen(store_t *s, uint64_t *gen)
{
    int version = 0;
    /* changes only when another connection committed (our own writer
     * included): most calls end here */
    if (query_int(s->mdb, "PRAGMA data_version", &version) != SQLITE_OK)
        goto fail;
    if (!s->mdb_gen_valid || version != s->mdb_version) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(s->mdb, "SELECT max(acct_gen) FROM users WHERE acct_gen > 0", -1,
                               &st, NULL) != SQLITE_OK)
            goto fail;
        int rc = sqlite3_step(st);
        uint64_t g = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW)
            goto fail;
        s->mdb_version = version;
        s->mdb_gen = g;
        s->mdb_gen_valid = true;
    }
    *gen = s->mdb_gen;
    return 0;
fail:
    log_error(MOD, "cannot read the account generation of '%s': %s", s->path,
              sqlite3_errmsg(s->mdb));
    return -EIO;
}

/* store_load_ids walks each room from its newest row back to the first one
 * older than since_ms minus this much: a wall clock stepped back by up to
 * this slack still finds every id in the window. An id missed beyond it is
 * still refused by the unique index, only later (as a dup_seq). */
#define ID_LOAD_SLACK_MS (10 * 60 * 1000)

static int sq_load_ids(store_t *s, int64_t since_ms,
                   void (*cb)(void *arg, const char *room, const char *from, const char *id,
                              uint64_t seq, int64_t ts),
                   void *arg)
{
    sqlite3_stmt *rooms = NULL, *st = NULL;
    int64_t stop_ms = since_ms > INT64_MIN + ID_LOAD_SLACK_MS ? since_ms - ID_LOAD_SLACK_MS
                                                              : INT64_MIN;
    int rc = -1, step;

    /* Newest first on the (room, seq) key: no index on ts needed (see v3). */
    if (sqlite3_prepare_v2(s->mdb, "SELECT name FROM rooms", -1, &rooms, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->mdb,
                           "SELECT sender, client_id, seq, ts FROM messages WHERE room = ?1"
                           " ORDER BY seq DESC",
                           -1, &st, NULL) != SQLITE_OK)
        goto fail;
    while ((step = sqlite3_step(rooms)) == SQLITE_ROW) {
        const unsigned char *room = sqlite3_column_text(rooms, 0);
        if (!room)
            continue;
        if (sqlite3_bind_text(st, 1, (const char *)room, -1, SQLITE_STATIC) != SQLITE_OK)
            goto fail;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            int64_t ts = sqlite3_column_int64(st, 3);
            if (ts < stop_ms)
                break;
            const unsigned char *from = sqlite3_column_text(st, 0);
            const unsigned char *id = sqlite3_column_text(st, 1);
            if (ts >= since_ms && from && id)
                cb(arg, (const char *)room, (const char *)from, (const char *)id,
                   (uint64_t)sqlite3_column_int64(st, 2), ts);
        }
        if (step != SQLITE_ROW && step != SQLITE_DONE)
            goto fail;
        sqlite3_reset(st);
    }
    if (step != SQLITE_DONE)
        goto fail;
    rc = 0;
    goto out;

fail:
    load_fail(s, "message ids");
out:
    sqlite3_finalize(st);
    sqlite3_finalize(rooms);
    return rc;
}

/* --------------------------------------------------------------- stats */

static void sq_stats(store_t *s, struct store_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->commits = atomic_load_explicit(&s->n_commits, memory_order_relaxed);
    out->writes = atomic_load_explicit(&s->n_writes, memory_order_relaxed);
    out->failures = atomic_load_explicit(&s->n_failures, memory_order_relaxed);
    out->failed_commits = atomic_load_explicit(&s->n_failed_commits, memory_order_relaxed);
    out->lost = atomic_load_explicit(&s->n_lost, memory_order_relaxed);
    out->retrying = atomic_load_explicit(&s->n_retrying, memory_order_relaxed);
    out->commit_seconds_sum =
        (double)atomic_load_explicit(&s->n_commit_ns, memory_order_relaxed) / 1e9;
    out->syncs = atomic_load_explicit(&s->n_syncs, memory_order_relaxed);
    out->sync_seconds_sum =
        (double)atomic_load_explicit(&s->n_sync_ns, memory_order_relaxed) / 1e9;
    uint64_t cum = 0;
    for (int i = 0; i < STORE_COMMIT_BUCKETS; i++) {
        cum += atomic_load_explicit(&s->n_bucket[i], memory_order_relaxed);
        out->commit_le[i] = commit_le[i];
        out->commit_le_count[i] = cum;
    }
    pthread_mutex_lock(&s->lock);
    out->queued = s->qn;
    pthread_mutex_unlock(&s->lock);
}

/* ------------------------------------------------- blocking helpers */

/* Queue j (its row filled in) and wait for the commit: its status. */
static int run_job(store_t *s, struct sq_job *j, enum store_op_kind kind)
{
    j->op.kind = kind;
    j->done = false;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->cond, NULL);
    int rc = submit_op(s, &j->op);
    if (rc == 0) {
        pthread_mutex_lock(&j->lock);
        while (!j->done)
            pthread_cond_wait(&j->cond, &j->lock);
        pthread_mutex_unlock(&j->lock);
        rc = j->op.status;
    }
    pthread_cond_destroy(&j->cond);
    pthread_mutex_destroy(&j->lock);
    return rc;
}

static int sq_account_add(store_t *s, const struct store_account_add *a)
{
    if (!a || !a->name || !a->password_hash)
        return -EINVAL;
    struct sq_job j = {.r = {.from = a->name, .hash = a->password_hash, .email = a->email,
                             .adopt = a->adopt}};
    return run_job(s, &j, SOP_ACCOUNT_ADD);
}

static int sq_account_passwd(store_t *s, const char *name, const char *password_hash)
{
    if (!name || !password_hash)
        return -EINVAL;
    struct sq_job j = {.r = {.from = name, .hash = password_hash}};
    return run_job(s, &j, SOP_ACCOUNT_PASSWD);
}

static int sq_account_del(store_t *s, const char *name)
{
    if (!name)
        return -EINVAL;
    struct sq_job j = {.r = {.from = name}};
    return run_job(s, &j, SOP_ACCOUNT_DEL);
}

/* A short-lived read-only connection for the rare blocking reads of worker
 * threads (logins, the notifier's outbox scan): no queue, no shared state. */
static sqlite3 *open_side_reader(store_t *s)
{
    char err[256];
    sqlite3 *db = open_conn(s->path, true, err, sizeof(err));
    if (!db) {
        log_error(MOD, "%s", err);
        return NULL;
    }
    sqlite3_busy_timeout(db, READER_BUSY_MS);
    return db;
}

static int sq_account_get(store_t *s, const char *name, char *hash, size_t hashsz, char *email,
                      size_t emailsz, int64_t *tokens_after_ms)
{
    sqlite3_stmt *st = NULL;
    int rc = -EIO;
    sqlite3 *db = open_side_reader(s);
    if (!db)
        return -EIO;
    if (sqlite3_prepare_v2(db, "SELECT password_hash, email, tokens_after FROM users"
                               " WHERE name = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        const char *h = (const char *)sqlite3_column_text(st, 0);
        const char *e = (const char *)sqlite3_column_text(st, 1);
        if (hash)
            str_lcpy(hash, h ? h : "", hashsz);
        if (email)
            str_lcpy(email, e ? e : "", emailsz);
        if (tokens_after_ms)
            *tokens_after_ms = sqlite3_column_int64(st, 2);
        rc = 0;
    } else if (step == SQLITE_ROW || step == SQLITE_DONE) {
        rc = -ENOENT;
    }
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}

static int sq_outbox_pending(store_t *s, int64_t now_ms, size_t max, struct store_outbox_row **rows,
                         size_t *n)
{
    sqlite3_stmt *st = NULL;
    struct store_outbox_row *out = NULL;
    size_t k = 0;
    int rc = -EIO, step;
    sqlite3 *db = open_side_reader(s);

    *rows = NULL;
    *n = 0;
    if (!db)
        return -EIO;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, recipient, email, kind, sender, room, text, ts, attempts,"
                           " next_at FROM outbox WHERE state = 'pending' AND next_at <= ?1"
                           " ORDER BY next_at, created_at LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    out = xcalloc(max ? max : 1, sizeof(*out));
    while (k < max && (step = sqlite3_step(st)) == SQLITE_ROW) {
        struct store_outbox_row *r = &out[k++];
        str_lcpy(r->id, (const char *)sqlite3_column_text(st, 0), sizeof(r->id));
        str_lcpy(r->recipient, (const char *)sqlite3_column_text(st, 1), sizeof(r->recipient));
        str_lcpy(r->email, (const char *)sqlite3_column_text(st, 2), sizeof(r->email));
        str_lcpy(r->kind, (const char *)sqlite3_column_text(st, 3), sizeof(r->kind));
        str_lcpy(r->from, (const char *)sqlite3_column_text(st, 4), sizeof(r->from));
        str_lcpy(r->room, (const char *)sqlite3_column_text(st, 5), sizeof(r->room));
        r->text = xstrdup((const char *)sqlite3_column_text(st, 6));
        r->ts = sqlite3_column_int64(st, 7);
        r->attempts = sqlite3_column_int(st, 8);
        r->next_at_ms = sqlite3_column_int64(st, 9);
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (rc == 0) {
        *rows = out;
        *n = k;
    } else {
        store_outbox_rows_free(out, k);
    }
    return rc;
}

static int sq_outbox_mark(store_t *s, const char *const *ids, size_t n, const char *state,
                      int attempts, int64_t next_at_ms)
{
    int first = 0;
    /* a row that is not there yet (its insert still queued behind) is not
     * an error: the notifier marks what it knows and moves on */
    for (size_t i = 0; i < n; i++) {
        if (!ids[i] || !state)
            return -EINVAL;
        struct sq_job j = {.r = {.outbox_id = ids[i], .state = state, .attempts = attempts,
                                 .next_at_ms = next_at_ms}};
        int rc = run_job(s, &j, SOP_OUTBOX_MARK);
        if (rc != 0 && rc != -ENOENT && !first)
            first = rc;
    }
    return first;
}

/* ------------------------------------------------------------- engine */

static const struct store_log_ops sq_log_ops = {
    .close = sq_close,
    .stats = sq_stats,
    .append = sq_append,
    .barrier = sq_barrier,
    .read_submit = sq_read_submit,
    .load_rooms = sq_load_rooms,
    .load_ids = sq_load_ids,
};

static const struct store_accounts_ops sq_accounts_ops = {
    .load_users = sq_load_users,
    .users_gen = sq_users_gen,
    .user_seen = sq_user_seen,
    .account_add = sq_account_add,
    .account_passwd = sq_account_passwd,
    .account_del = sq_account_del,
    .account_get = sq_account_get,
};

static const struct store_outbox_ops sq_outbox_ops = {
    .add = sq_outbox_add,
    .pending = sq_outbox_pending,
    .mark = sq_outbox_mark,
};
