/*
 * Unit tests for acctrds (accounts in Redis) against a real redis-server
 * each test starts on a free loopback port in a temporary directory and
 * stops by its PID (a small helper here; nothing else is touched).
 *
 * The account rules are one set of bodies run on both engines: the SQLite
 * store (store_accounts.h) and acctrds, through their public calls only,
 * so the cluster keeps every rule of one node: names ever used are never
 * handed over, deletion reserves, password changes and deletions revoke,
 * another writer's changes are found by generation. Then what only Redis
 * has: two nodes, names with any bytes, Redis stalled or gone (-EIO within
 * the timeout, then recovery), many threads at once, bad URLs, AUTH, DB.
 *
 * Waits poll a condition with a deadline; nothing sleeps and hopes.
 */
#include <criterion/criterion.h>
#include "testutil.h"
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "acctrds.h"
#include "store.h"
#include "store_accounts.h"

#define WAIT_LIMIT_S 30
#define M STORE_REVOKE_MARGIN_MS

static char tmpdir[4096];

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------ a private redis-server */

static pid_t redis_pid;
static int redis_port;
static char redis_pw[64];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    cr_assert(fd >= 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *raw_connect(void)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (c && !c->err && redis_pw[0]) {
        redisReply *r = redisCommand(c, "AUTH %s", redis_pw);
        if (r)
            freeReplyObject(r);
    }
    if (c && c->err) {
        redisFree(c);
        c = NULL;
    }
    return c;
}

static bool redis_answers(void)
{
    redisContext *c = raw_connect();
    if (!c)
        return false;
    redisReply *r = redisCommand(c, "PING");
    bool ok = r && r->type == REDIS_REPLY_STATUS;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok;
}

/* Start (or restart, port > 0 kept) redis-server; wait until it answers. */
static void redis_start(int port)
{
    char dir[4200], log[4300], portbuf[16];
    snprintf(dir, sizeof(dir), "%s/redis", tmpdir);
    mkdir(dir, 0700);
    snprintf(log, sizeof(log), "%s/redis.log", dir);
    for (int attempt = 0; attempt < 5; attempt++) {
        redis_port = port ? port : free_port();
        snprintf(portbuf, sizeof(portbuf), "%d", redis_port);
        pid_t pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
            int fd = open("/dev/null", O_WRONLY);
            dup2(fd, 1);
            dup2(fd, 2);
            const char *argv[] = {"redis-server",
                                  "--port",
                                  portbuf,
                                  "--bind",
                                  "127.0.0.1",
                                  "--dir",
                                  dir,
                                  "--save",
                                  "",
                                  "--appendonly",
                                  "no",
                                  "--daemonize",
                                  "no",
                                  "--logfile",
                                  log,
                                  redis_pw[0] ? "--requirepass" : NULL,
                                  redis_pw,
                                  NULL};
            execvp("redis-server", (char *const *)argv);
            _exit(127);
        }
        redis_pid = pid;
        double end = mono_s() + 10;
        while (mono_s() < end) {
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                redis_pid = 0;
                break; /* the port was taken meanwhile: another */
            }
            if (redis_answers())
                return;
            usleep(10000);
        }
        if (redis_pid) {
            kill(redis_pid, SIGKILL);
            waitpid(redis_pid, NULL, 0);
            redis_pid = 0;
        }
    }
    cr_assert_fail("redis-server did not start");
}

static void redis_kill(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGCONT);
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
    }
    redis_pid = 0;
}

static void redis_url(char *buf, size_t sz, int db)
{
    if (db)
        snprintf(buf, sz, "redis://127.0.0.1:%d/%d", redis_port, db);
    else
        snprintf(buf, sz, "redis://127.0.0.1:%d", redis_port);
}

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof(tmpdir), "acctrds");
    redis_pw[0] = '\0';
    redis_pid = 0;
}

static void teardown(void)
{
    redis_kill();
    test_rmtree(tmpdir);
}

TestSuite(acctrds, .init = setup, .fini = teardown);

/* ------------------------------------------------ one face, two engines */

struct engine {
    void *(*open)(void); /* a second open is a second node (or process) */
    void (*close)(void *h);
    int (*add)(void *h, const struct store_account_add *a);
    int (*passwd)(void *h, const char *name, const char *hash);
    int (*del)(void *h, const char *name);
    int (*get)(void *h, const char *name, char *hash, size_t hashsz, char *email, size_t emailsz,
               int64_t *ta);
    int (*load)(void *h, uint64_t since, void (*cb)(void *, const struct store_user *), void *arg);
    int (*gen)(void *h, uint64_t *gen);
    int (*seen)(void *h, struct store_user_seen *u);
    void (*set_tokens_after)(const char *name, int64_t ms); /* behind the engine's back */
};

static void *sq_open(void)
{
    char path[4200], err[512] = "";
    snprintf(path, sizeof(path), "%s/parley.db", tmpdir);
    struct store_opts o = {.path = path, .readers = 1};
    store_t *s = store_open(&o, err, sizeof(err));
    cr_assert_not_null(s, "store_open: %s", err);
    return s;
}
static void sq_close(void *h)
{
    store_close(h);
}
static int sq_add(void *h, const struct store_account_add *a)
{
    return store_account_add(h, a);
}
static int sq_passwd(void *h, const char *n, const char *p)
{
    return store_account_passwd(h, n, p);
}
static int sq_del(void *h, const char *n)
{
    return store_account_del(h, n);
}
static int sq_get(void *h, const char *n, char *hs, size_t hz, char *e, size_t ez, int64_t *t)
{
    return store_account_get(h, n, hs, hz, e, ez, t);
}
static int sq_load(void *h, uint64_t g, void (*cb)(void *, const struct store_user *), void *arg)
{
    return store_load_users(h, g, cb, arg);
}
static int sq_gen(void *h, uint64_t *g)
{
    return store_users_gen(h, g);
}
static int sq_seen(void *h, struct store_user_seen *u)
{
    return store_user_seen(h, u);
}
static void sq_set_ta(const char *name, int64_t ms)
{
    char path[4200];
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    snprintf(path, sizeof(path), "%s/parley.db", tmpdir);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    cr_assert_eq(
        sqlite3_prepare_v2(db, "UPDATE users SET tokens_after = ?1 WHERE name = ?2", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_int64(st, 1, ms);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static const struct engine sqlite_engine = {
    sq_open, sq_close, sq_add, sq_passwd, sq_del, sq_get, sq_load, sq_gen, sq_seen, sq_set_ta,
};

static int rd_timeout_ms = 2000;
static void *rd_open(void)
{
    char url[128], err[512] = "";
    redis_url(url, sizeof(url), 0);
    acctrds_t *a = acctrds_open(url, redis_pw, rd_timeout_ms, err, sizeof(err));
    cr_assert_not_null(a, "acctrds_open: %s", err);
    return a;
}
static void rd_close(void *h)
{
    acctrds_close(h);
}
static int rd_add(void *h, const struct store_account_add *a)
{
    return acctrds_account_add(h, a);
}
static int rd_passwd(void *h, const char *n, const char *p)
{
    return acctrds_account_passwd(h, n, p);
}
static int rd_del(void *h, const char *n)
{
    return acctrds_account_del(h, n);
}
static int rd_get(void *h, const char *n, char *hs, size_t hz, char *e, size_t ez, int64_t *t)
{
    return acctrds_account_get(h, n, hs, hz, e, ez, t);
}
static int rd_load(void *h, uint64_t g, void (*cb)(void *, const struct store_user *), void *arg)
{
    return acctrds_load_users(h, g, cb, arg);
}
static int rd_gen(void *h, uint64_t *g)
{
    return acctrds_users_gen(h, g);
}
static int rd_seen(void *h, struct store_user_seen *u)
{
    return acctrds_user_seen(h, u);
}
static void rd_set_ta(const char *name, int64_t ms)
{
    redisContext *c = raw_connect();
    cr_assert_not_null(c);
    char key[256], v[32];
    int n = snprintf(key, sizeof(key), "{parley:acct}:u:%s", name);
    snprintf(v, sizeof(v), "%" PRId64, ms);
    const char *argv[] = {"HSET", key, "ta", v};
    size_t lens[] = {4, (size_t)n, 2, strlen(v)};
    redisReply *r = redisCommandArgv(c, 4, argv, lens);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    redisFree(c);
}

static const struct engine redis_engine = {
    rd_open, rd_close, rd_add, rd_passwd, rd_del, rd_get, rd_load, rd_gen, rd_seen, rd_set_ta,
};

/* ---- helpers over an engine */

static int acct_add(const struct engine *e, void *h, const char *name, const char *hash,
                    const char *email, bool adopt)
{
    struct store_account_add a = {
        .name = name, .password_hash = hash, .email = email, .adopt = adopt};
    return e->add(h, &a);
}

struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n;
};

struct seen_req {
    struct store_user_seen u;
    struct waiter *w;
    char name[300];
    pthread_t done_thread;
};

static void seen_done(struct store_user_seen *u)
{
    struct seen_req *r = STORE_CONTAINER(u, struct seen_req, u);
    r->done_thread = pthread_self();
    pthread_mutex_lock(&r->w->lock);
    r->w->n++;
    pthread_cond_broadcast(&r->w->cond);
    pthread_mutex_unlock(&r->w->lock);
}

static void waiter_init(struct waiter *w)
{
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->n = 0;
}

static void waiter_wait(struct waiter *w, int n)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += WAIT_LIMIT_S;
    pthread_mutex_lock(&w->lock);
    while (w->n < n)
        if (pthread_cond_timedwait(&w->cond, &w->lock, &dl) == ETIMEDOUT)
            break;
    int got = w->n;
    pthread_mutex_unlock(&w->lock);
    cr_assert_eq(got, n, "%d of %d completions", got, n);
}

static void waiter_destroy(struct waiter *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
}

/* Names seen, each written, waited for. */
static void seen_many(const struct engine *e, void *h, const char *const *names, int n)
{
    struct waiter w;
    struct seen_req *r = calloc((size_t)n, sizeof(*r));
    waiter_init(&w);
    for (int i = 0; i < n; i++) {
        snprintf(r[i].name, sizeof(r[i].name), "%s", names[i]);
        r[i].w = &w;
        r[i].u.name = r[i].name;
        r[i].u.done = seen_done;
        cr_assert_eq(e->seen(h, &r[i].u), 0);
    }
    waiter_wait(&w, n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(r[i].u.status, 0, "%s", r[i].name);
    free(r);
    waiter_destroy(&w);
}

static void seen_one(const struct engine *e, void *h, const char *name)
{
    seen_many(e, h, &name, 1);
}

struct users {
    struct store_user *u;
    char **names, **emails;
    int n, cap;
};

static void collect(void *arg, const struct store_user *u)
{
    struct users *v = arg;
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 16;
        v->u = realloc(v->u, (size_t)v->cap * sizeof(*v->u));
        v->names = realloc(v->names, (size_t)v->cap * sizeof(char *));
        v->emails = realloc(v->emails, (size_t)v->cap * sizeof(char *));
    }
    v->u[v->n] = *u;
    v->names[v->n] = strdup(u->name);
    v->u[v->n].name = v->names[v->n];
    v->emails[v->n] = u->email ? strdup(u->email) : NULL;
    v->u[v->n].email = v->emails[v->n];
    v->n++;
}

static void users_free(struct users *v)
{
    for (int i = 0; i < v->n; i++) {
        free(v->names[i]);
        free(v->emails[i]);
    }
    free(v->u);
    free(v->names);
    free(v->emails);
    memset(v, 0, sizeof(*v));
}

static void load(const struct engine *e, void *h, uint64_t since, struct users *v)
{
    users_free(v);
    cr_assert_eq(e->load(h, since, collect, v), 0);
}

static const struct store_user *find(const struct users *v, const char *name)
{
    const struct store_user *hit = NULL;
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->u[i].name, name) == 0) {
            cr_assert_null(hit, "'%s' reported twice", name);
            hit = &v->u[i];
        }
    return hit;
}

/* ------------------------------------------------ the shared bodies */

static void names_ever_used_are_never_registered_again(const struct engine *e)
{
    void *h = e->open();
    struct users v = {0};
    char hash[64], email[64];
    int64_t ta = -1;

    /* seen only (a token-only user): registration refuses it */
    seen_one(e, h, "sso");
    cr_assert_eq(acct_add(e, h, "sso", "h1", "x@example.org", false), -EEXIST);
    cr_assert_eq(e->get(h, "sso", hash, sizeof(hash), NULL, 0, NULL), -ENOENT,
                 "a refused registration changes nothing");
    load(e, h, 0, &v);
    cr_assert_not_null(find(&v, "sso"));
    cr_assert_null(find(&v, "sso")->email);
    /* the operator may give it a password (adopt), once */
    cr_assert_eq(acct_add(e, h, "sso", "h1", NULL, true), 0);
    cr_assert_eq(acct_add(e, h, "sso", "h2", NULL, true), -EEXIST);
    cr_assert_eq(e->get(h, "sso", hash, sizeof(hash), email, sizeof(email), &ta), 0);
    cr_assert_str_eq(hash, "h1");
    cr_assert_str_eq(email, "");
    cr_assert_eq(ta, 0, "adopting revokes nothing");

    /* a new name registers; a second registration is refused */
    cr_assert_eq(acct_add(e, h, "ann", "h1", "ann@example.org", false), 0);
    cr_assert_eq(acct_add(e, h, "ann", "h2", NULL, false), -EEXIST);
    cr_assert_eq(e->get(h, "ann", hash, sizeof(hash), email, sizeof(email), &ta), 0);
    cr_assert_str_eq(hash, "h1");
    cr_assert_str_eq(email, "ann@example.org");

    /* deleted: no password, no e-mail, tokens revoked, the name reserved */
    int64_t t0 = now_ms();
    cr_assert_eq(e->del(h, "ann"), 0);
    int64_t t1 = now_ms();
    cr_assert_eq(e->get(h, "ann", hash, sizeof(hash), NULL, 0, NULL), -ENOENT);
    load(e, h, 0, &v);
    const struct store_user *ann = find(&v, "ann");
    cr_assert(ann && ann->deleted);
    cr_assert_null(ann->email);
    cr_assert(ann->tokens_after_ms >= t0 + M && ann->tokens_after_ms <= t1 + M, "%" PRId64,
              ann->tokens_after_ms);
    cr_assert_eq(acct_add(e, h, "ann", "h3", NULL, false), -EEXIST);
    cr_assert_eq(acct_add(e, h, "ann", "h3", NULL, true), -EACCES);
    cr_assert_eq(e->passwd(h, "ann", "h3"), -ENOENT);
    cr_assert_eq(e->get(h, "ann", hash, sizeof(hash), NULL, 0, NULL), -ENOENT);
    /* deleting again is fine; a token-only name can be deleted too; a name
     * never seen cannot */
    cr_assert_eq(e->del(h, "ann"), 0);
    seen_one(e, h, "tok");
    cr_assert_eq(e->del(h, "tok"), 0);
    cr_assert_eq(acct_add(e, h, "tok", "h1", NULL, true), -EACCES);
    cr_assert_eq(e->del(h, "never"), -ENOENT);
    /* a name seen again after its deletion stays deleted */
    seen_one(e, h, "ann");
    load(e, h, 0, &v);
    cr_assert_null(find(&v, "never"));
    cr_assert(find(&v, "ann")->deleted);
    cr_assert(find(&v, "tok")->deleted);
    cr_assert_eq(v.n, 3);
    users_free(&v);
    e->close(h);
}

static void a_password_change_revokes_older_tokens(const struct engine *e)
{
    void *h = e->open();
    char hash[64];
    int64_t after = -1;
    cr_assert_eq(acct_add(e, h, "bob", "h1", NULL, false), 0);
    cr_assert_eq(e->get(h, "bob", hash, sizeof(hash), NULL, 0, &after), 0);
    cr_assert_str_eq(hash, "h1");
    cr_assert_eq(after, 0);
    int64_t t0 = now_ms();
    cr_assert_eq(e->passwd(h, "bob", "h2"), 0);
    int64_t t1 = now_ms();
    cr_assert_eq(e->get(h, "bob", hash, sizeof(hash), NULL, 0, &after), 0);
    cr_assert_str_eq(hash, "h2");
    /* past the change by the margin: beyond its commit */
    cr_assert(after >= t0 + M && after <= t1 + M, "%" PRId64, after);
    /* it never moves back (a clock stepped back) */
    e->set_tokens_after("bob", 9000000000000);
    cr_assert_eq(e->passwd(h, "bob", "h3"), 0);
    cr_assert_eq(e->get(h, "bob", hash, sizeof(hash), NULL, 0, &after), 0);
    cr_assert_eq(after, 9000000000000);
    cr_assert_str_eq(hash, "h3");
    /* no account: nothing to change */
    seen_one(e, h, "sso");
    cr_assert_eq(e->passwd(h, "sso", "h1"), -ENOENT);
    cr_assert_eq(e->get(h, "sso", hash, sizeof(hash), NULL, 0, &after), -ENOENT);
    cr_assert_eq(e->passwd(h, "nobody", "h1"), -ENOENT);
    e->close(h);
}

/* What a running server's main thread does each second: notice changes
 * made through another handle (another node; `parleyd user ...`) and read
 * only the names that changed. */
static void changes_by_another_writer_are_found_by_generation(const struct engine *e)
{
    void *h = e->open();
    struct users v = {0};
    uint64_t g0 = 99, g;
    cr_assert_eq(e->gen(h, &g0), 0);
    cr_assert_eq(g0, 0);
    seen_one(e, h, "seen");
    cr_assert_eq(acct_add(e, h, "ann", "h1", "ann@example.org", false), 0);
    cr_assert_eq(e->gen(h, &g), 0);
    cr_assert_gt(g, g0, "a new account is a change");
    uint64_t g1 = g;

    void *other = e->open();
    seen_one(e, other, "seen2");
    cr_assert_eq(e->gen(h, &g), 0);
    cr_assert_eq(g, g1, "a name seen is not an account change");
    cr_assert_eq(acct_add(e, other, "bob", "h1", NULL, false), 0);
    cr_assert_eq(e->del(other, "ann"), 0);
    /* the other one logs in with what this one registered */
    char hash[64];
    cr_assert_eq(acct_add(e, h, "cyd", "hc", NULL, false), 0);
    cr_assert_eq(e->get(other, "cyd", hash, sizeof(hash), NULL, 0, NULL), 0);
    cr_assert_str_eq(hash, "hc");
    e->close(other);
    cr_assert_eq(e->gen(h, &g), 0);
    cr_assert_gt(g, g1);

    load(e, h, g1, &v);
    cr_assert_eq(v.n, 3, "only what changed after g1");
    const struct store_user *ann = find(&v, "ann"), *bob = find(&v, "bob");
    cr_assert(ann && bob && find(&v, "cyd"));
    cr_assert(ann->deleted);
    cr_assert_null(ann->email, "a deleted name has no account");
    cr_assert_gt(ann->tokens_after_ms, 0);
    cr_assert_not(bob->deleted);
    cr_assert_str_eq(bob->email, "");
    cr_assert_eq(bob->tokens_after_ms, 0);
    uint64_t max = 0;
    for (int i = 0; i < v.n; i++) {
        cr_assert_gt(v.u[i].gen, g1);
        max = v.u[i].gen > max ? v.u[i].gen : max;
    }
    cr_assert_eq(max, g);

    /* nothing new: nothing read */
    load(e, h, g, &v);
    cr_assert_eq(v.n, 0);
    /* the full load has every name seen, accounts or not */
    load(e, h, 0, &v);
    cr_assert_eq(v.n, 5);
    cr_assert_null(find(&v, "seen")->email);
    cr_assert_not(find(&v, "seen")->deleted);
    cr_assert_eq(find(&v, "seen")->gen, 0);
    users_free(&v);
    e->close(h);
}

/* Names are whatever bytes a client sent (less NUL): none may turn into
 * protocol, a key pattern, or a load cursor. */
static const char *const odd_names[] = {
    "\r\n*1\r\n$4\r\nPING\r\n",
    "%s%n%x",
    "{parley:acct}:gen",
    "(",
    "[",
    "-",
    "+",
    "(ann",
    "[ann",
    "a b\tc",
    "\x01\x02\x7f",
    "\xff\xfe",
    "na\xc3\xafve",
    "*",
    "\\",
    "'\"",
    "u:x",
};
#define N_ODD (int)(sizeof(odd_names) / sizeof(odd_names[0]))

static void names_with_any_bytes_round_trip(const struct engine *e)
{
    void *h = e->open();
    struct users v = {0};
    char hash[64], email[64];
    seen_many(e, h, odd_names, N_ODD);
    for (int i = 0; i < N_ODD; i += 2) {
        cr_assert_eq(acct_add(e, h, odd_names[i], odd_names[i], "o@example.org", true), 0);
        cr_assert_eq(e->get(h, odd_names[i], hash, sizeof(hash), email, sizeof(email), NULL), 0);
        cr_assert_str_eq(hash, odd_names[i]);
    }
    cr_assert_eq(e->del(h, odd_names[1]), 0);
    load(e, h, 0, &v);
    cr_assert_eq(v.n, N_ODD);
    for (int i = 0; i < N_ODD; i++) {
        const struct store_user *u = find(&v, odd_names[i]);
        cr_assert_not_null(u, "name %d", i);
        cr_assert_eq(u->email != NULL, i % 2 == 0, "name %d", i);
        cr_assert_eq(u->deleted, i == 1, "name %d", i);
    }
    load(e, h, 1, &v); /* every change but the first */
    cr_assert_eq(v.n, (N_ODD + 1) / 2 - 1 + 1, "the adds after the first, the deletion");
    users_free(&v);
    e->close(h);
}

/* More names than one page of a load, changed more often than one page. */
#define MANY_SEEN 1100
#define MANY_ACCTS 530

static void loads_span_many_pages(const struct engine *e)
{
    void *h = e->open();
    struct users v = {0};
    char **names = calloc(MANY_SEEN, sizeof(char *));
    for (int i = 0; i < MANY_SEEN; i++) {
        names[i] = malloc(16);
        snprintf(names[i], 16, "s%05d", i);
    }
    seen_many(e, h, (const char *const *)names, MANY_SEEN);
    uint64_t g0;
    cr_assert_eq(acct_add(e, h, "first", "h", NULL, false), 0); /* since_gen 0 means all */
    cr_assert_eq(e->gen(h, &g0), 0);
    for (int i = 0; i < MANY_ACCTS; i++) {
        char n[16];
        snprintf(n, sizeof(n), "a%05d", i);
        cr_assert_eq(acct_add(e, h, n, "h", NULL, false), 0);
    }
    load(e, h, 0, &v);
    cr_assert_eq(v.n, MANY_SEEN + MANY_ACCTS + 1);
    for (int i = 0; i < MANY_SEEN; i += 97)
        cr_assert_not_null(find(&v, names[i]));
    load(e, h, g0, &v);
    cr_assert_eq(v.n, MANY_ACCTS);
    for (int i = 1; i < v.n; i++)
        cr_assert_neq(strcmp(v.u[i].name, v.u[i - 1].name), 0);
    users_free(&v);
    for (int i = 0; i < MANY_SEEN; i++)
        free(names[i]);
    free(names);
    e->close(h);
}

static void run_bodies(const struct engine *e, void (*between)(void))
{
    void (*const bodies[])(const struct engine *) = {
        names_ever_used_are_never_registered_again,
        a_password_change_revokes_older_tokens,
        changes_by_another_writer_are_found_by_generation,
        names_with_any_bytes_round_trip,
        loads_span_many_pages,
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        bodies[i](e);
        between();
    }
}

/* a fresh database for the next body */
static void sqlite_between(void)
{
    char path[4300];
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s/parley.db%s", tmpdir, sfx[i]);
        unlink(path);
    }
}

static void redis_between(void)
{
    redisContext *c = raw_connect();
    cr_assert_not_null(c);
    redisReply *r = redisCommand(c, "FLUSHALL");
    cr_assert(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);
}

/* One process per engine: each criterion test costs seconds under valgrind. */
Test(acctrds, account_rules_on_sqlite)
{
    run_bodies(&sqlite_engine, sqlite_between);
}

Test(acctrds, account_rules_on_redis)
{
    redis_start(0);
    run_bodies(&redis_engine, redis_between);
}

/* ------------------------------------------------ Redis only */

Test(acctrds, open_refuses_bad_urls_unreachable_servers_and_bad_passwords)
{
    char err[512], url[128];
    const char *bad[] = {"",
                         "redis:/x",
                         "http://127.0.0.1:6379",
                         "redis://",
                         "redis://:1",
                         "redis://h:0",
                         "redis://h:65536",
                         "redis://h:12x",
                         "redis://h:1/",
                         "redis://h:1/x",
                         "redis://[::1",
                         "redis://h:1/2/3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_assert_null(acctrds_open(bad[i], NULL, 500, err, sizeof(err)), "%s", bad[i]);
        cr_assert(strstr(err, "malformed Redis URL"), "%s: %s", bad[i], err);
    }
    /* nothing listens: refused at once, named */
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", free_port());
    double t0 = mono_s();
    cr_assert_null(acctrds_open(url, NULL, 500, err, sizeof(err)));
    cr_assert_lt(mono_s() - t0, 2.0);
    cr_assert(strstr(err, "cannot reach Redis 127.0.0.1"), "%s", err);

    snprintf(redis_pw, sizeof(redis_pw), "s3cret pass");
    redis_start(0);
    redis_url(url, sizeof(url), 0);
    cr_assert_null(acctrds_open(url, NULL, 1000, err, sizeof(err)), "no password");
    cr_assert_null(acctrds_open(url, "wrong", 1000, err, sizeof(err)));
    cr_assert(strstr(err, "AUTH"), "%s", err);
    /* the first of a list; with a password; in the DB asked for */
    char list[300];
    redis_url(url, sizeof(url), 3);
    snprintf(list, sizeof(list), "%s,redis://127.0.0.1:1", url);
    acctrds_t *a = acctrds_open(list, redis_pw, 1000, err, sizeof(err));
    cr_assert_not_null(a, "%s", err);
    struct store_account_add add = {.name = "ann", .password_hash = "h"};
    cr_assert_eq(acctrds_account_add(a, &add), 0);
    acctrds_close(a);
    redisContext *c = raw_connect();
    redisReply *r = redisCommand(c, "EXISTS {parley:acct}:u:ann");
    cr_assert_eq(r->integer, 0, "not in DB 0");
    freeReplyObject(r);
    freeReplyObject(redisCommand(c, "SELECT 3"));
    r = redisCommand(c, "EXISTS {parley:acct}:u:ann");
    cr_assert_eq(r->integer, 1, "in DB 3");
    freeReplyObject(r);
    redisFree(c);
}

/* Redis stalled (SIGSTOP) or gone (SIGKILL): every call answers -EIO
 * within about its timeout, names seen complete with -EIO; when Redis is
 * back the same handle works again without being reopened. */
Test(acctrds, redis_down_is_eio_within_the_timeout_then_recovers, .timeout = 60)
{
    redis_start(0);
    int port = redis_port;
    rd_timeout_ms = 300;
    acctrds_t *a = rd_open();
    char hash[64];
    uint64_t g;
    struct users v = {0};
    cr_assert_eq(acct_add(&redis_engine, a, "ann", "h1", NULL, false), 0);

    kill(redis_pid, SIGSTOP);
    double t0 = mono_s();
    cr_assert_eq(acctrds_account_get(a, "ann", hash, sizeof(hash), NULL, 0, NULL), -EIO);
    cr_assert_eq(acctrds_users_gen(a, &g), -EIO);
    cr_assert_eq(acctrds_load_users(a, 0, collect, &v), -1);
    struct store_account_add add = {.name = "bob", .password_hash = "h"};
    cr_assert_eq(acctrds_account_add(a, &add), -EIO);
    cr_assert_eq(acctrds_account_passwd(a, "ann", "h2"), -EIO);
    cr_assert_eq(acctrds_account_del(a, "ann"), -EIO);
    double took = mono_s() - t0;
    /* six calls, each at most a connect and a reply wait (and one retry) */
    cr_assert_lt(took, 6 * 4 * 0.3 + 2, "%.2f s", took);
    struct waiter w;
    struct seen_req r = {.w = &w};
    waiter_init(&w);
    snprintf(r.name, sizeof(r.name), "stalled");
    r.u.name = r.name;
    r.u.done = seen_done;
    cr_assert_eq(acctrds_user_seen(a, &r.u), 0);
    waiter_wait(&w, 1);
    cr_assert_eq(r.u.status, -EIO);
    cr_assert_not(pthread_equal(r.done_thread, pthread_self()), "done on the worker");

    /* a write that timed out may still run when Redis wakes up (it read
     * the command before it was stopped, or from the socket after), as
     * with any database: whole or not at all */
    kill(redis_pid, SIGCONT);
    int rc = acctrds_account_get(a, "ann", hash, sizeof(hash), NULL, 0, NULL);
    cr_assert(rc == 0 || rc == -ENOENT, "%d", rc);
    if (rc == 0)
        cr_assert(strcmp(hash, "h1") == 0 || strcmp(hash, "h2") == 0, "%s", hash);

    /* gone, then back on the same port (empty: no persistence here) */
    redis_kill();
    t0 = mono_s();
    cr_assert_eq(acctrds_account_get(a, "ann", hash, sizeof(hash), NULL, 0, NULL), -EIO);
    cr_assert_lt(mono_s() - t0, 2.0);
    redis_start(port);
    cr_assert_eq(acctrds_account_get(a, "ann", hash, sizeof(hash), NULL, 0, NULL), -ENOENT);
    cr_assert_eq(acctrds_account_add(a, &add), 0, "scripts reloaded after the restart");
    cr_assert_eq(acctrds_users_gen(a, &g), 0);
    cr_assert_eq(g, 1);
    users_free(&v);
    acctrds_close(a);
}

Test(acctrds, close_writes_queued_names_and_then_refuses)
{
    redis_start(0);
    acctrds_t *a = rd_open();
    struct waiter w;
    enum { N = 200 };
    static struct seen_req r[N];
    waiter_init(&w);
    struct store_user_seen bad = {.name = "x"};
    cr_assert_eq(acctrds_user_seen(a, &bad), -EINVAL, "no done()");
    for (int i = 0; i < N; i++) {
        snprintf(r[i].name, sizeof(r[i].name), "q%d", i);
        r[i].w = &w;
        r[i].u.name = r[i].name;
        r[i].u.done = seen_done;
        cr_assert_eq(acctrds_user_seen(a, &r[i].u), 0);
    }
    acctrds_close(a);
    cr_assert_eq(w.n, N, "every queued name completed before close returned");
    for (int i = 0; i < N; i++)
        cr_assert_eq(r[i].u.status, 0);
    a = rd_open();
    struct users v = {0};
    load(&redis_engine, a, 0, &v);
    cr_assert_eq(v.n, N);
    users_free(&v);
    acctrds_close(a);
    waiter_destroy(&w);
}

/* Login workers, main and the seen worker at once: every change lands
 * whole, and the generation counts each one exactly once. */
#define MT_THREADS 4
#define MT_NAMES 60

struct mt {
    acctrds_t *a;
    int idx;
    const char *fail;
};

static void *mt_main(void *arg)
{
    struct mt *m = arg;
    char n[32], hash[64];
    for (int i = 0; i < MT_NAMES; i++) {
        snprintf(n, sizeof(n), "t%d-%d", m->idx, i);
        struct store_account_add add = {.name = n, .password_hash = "h1"};
        if (acctrds_account_add(m->a, &add) != 0) {
            m->fail = "add";
            return NULL;
        }
        if (acctrds_account_passwd(m->a, n, "h2") != 0) {
            m->fail = "passwd";
            return NULL;
        }
        if (acctrds_account_get(m->a, n, hash, sizeof(hash), NULL, 0, NULL) != 0 ||
            strcmp(hash, "h2") != 0) {
            m->fail = "get";
            return NULL;
        }
        /* everyone races for one name: exactly one wins */
        struct store_account_add shared = {.name = "shared", .password_hash = n};
        int rc = acctrds_account_add(m->a, &shared);
        if (rc != 0 && rc != -EEXIST) {
            m->fail = "shared";
            return NULL;
        }
    }
    return NULL;
}

Test(acctrds, many_threads_change_accounts_at_once)
{
    redis_start(0);
    acctrds_t *a = rd_open();
    pthread_t t[MT_THREADS];
    struct mt m[MT_THREADS];
    struct waiter w;
    static struct seen_req r[MT_NAMES];
    waiter_init(&w);
    for (int i = 0; i < MT_THREADS; i++) {
        m[i] = (struct mt){.a = a, .idx = i};
        cr_assert_eq(pthread_create(&t[i], NULL, mt_main, &m[i]), 0);
    }
    for (int i = 0; i < MT_NAMES; i++) {
        snprintf(r[i].name, sizeof(r[i].name), "w-%d", i); /* the seen worker meanwhile */
        r[i].w = &w;
        r[i].u.name = r[i].name;
        r[i].u.done = seen_done;
        cr_assert_eq(acctrds_user_seen(a, &r[i].u), 0);
    }
    for (int i = 0; i < MT_THREADS; i++) {
        pthread_join(t[i], NULL);
        cr_assert_null(m[i].fail, "thread %d: %s", i, m[i].fail);
    }
    waiter_wait(&w, MT_NAMES);
    uint64_t g;
    cr_assert_eq(acctrds_users_gen(a, &g), 0);
    struct users v = {0};
    load(&redis_engine, a, 0, &v);
    int accounts = 0;
    for (int i = 0; i < v.n; i++)
        accounts += v.u[i].email != NULL;
    cr_assert_eq(v.n, MT_THREADS * MT_NAMES + 1 + MT_NAMES);
    cr_assert_eq(accounts, MT_THREADS * MT_NAMES + 1);
    cr_assert_eq(g, (uint64_t)(2 * MT_THREADS * MT_NAMES + 1));
    users_free(&v);
    acctrds_close(a);
    waiter_destroy(&w);
}
