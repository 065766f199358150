/* acctrds — see acctrds.h. Runs on its callers' threads, plus one worker
 * thread of its own for the names seen. */
#include "acctrds.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "log.h"
#include "util.h"

#define MOD "acctrds"
#define TAG "{parley:acct}:"
#define K_NAMES TAG "names"
#define K_GENS TAG "gens"
#define K_GEN TAG "gen"
#define K_USER TAG "u:"

/* Idle connections kept for reuse; a caller that finds none opens its own. */
#define POOL_IDLE_MAX 4
/* Names per page of acctrds_load_users (one script run each). */
#define LOAD_PAGE 512
/* Names seen written per pipeline by the worker. */
#define SEEN_BATCH 1024
#define NAME_MAX_BYTES 4096

/* Script results other than 0, mapped to errnos in C (no errno numbers in Lua). */
enum { R_OK, R_EXISTS, R_DELETED, R_NONE };

/* KEYS names gens gen u:<name>; ARGV name hash email has_email adopt. A name
 * with a member in names was used: registration never hands it over; the
 * operator (adopt) may give a password to one that has none, never to a
 * deleted one. */
static const char lua_add[] = "if redis.call('ZSCORE', KEYS[1], ARGV[1]) then\n"
                              "  if ARGV[5] ~= '1' then return 1 end\n"
                              "  if redis.call('HEXISTS', KEYS[4], 'd') == 1 then return 2 end\n"
                              "  if redis.call('HEXISTS', KEYS[4], 'h') == 1 then return 1 end\n"
                              "else\n"
                              "  redis.call('ZADD', KEYS[1], 0, ARGV[1])\n"
                              "end\n"
                              "local g = redis.call('INCR', KEYS[3])\n"
                              "redis.call('HSET', KEYS[4], 'h', ARGV[2], 'g', g)\n"
                              "if ARGV[4] == '1' then redis.call('HSET', KEYS[4], 'e', ARGV[3])\n"
                              "else redis.call('HDEL', KEYS[4], 'e') end\n"
                              "redis.call('ZADD', KEYS[2], g, ARGV[1])\n"
                              "return 0\n";

/* KEYS gens gen u:<name>; ARGV name hash now_ms margin_ms. tokens_after
 * never moves back (a clock stepped back). */
static const char lua_passwd[] =
    "if redis.call('HEXISTS', KEYS[3], 'h') == 0 then return 3 end\n"
    "local ta = tonumber(redis.call('HGET', KEYS[3], 'ta') or '0')\n"
    "local t = tonumber(ARGV[3]) + tonumber(ARGV[4])\n"
    "if t > ta then ta = t end\n"
    "local g = redis.call('INCR', KEYS[2])\n"
    "redis.call('HSET', KEYS[3], 'h', ARGV[2], 'ta', string.format('%.0f', ta), 'g', g)\n"
    "redis.call('ZADD', KEYS[1], g, ARGV[1])\n"
    "return 0\n";

/* KEYS names gens gen u:<name>; ARGV name now_ms margin_ms. Deleting again
 * keeps the first deletion time. */
static const char lua_del[] =
    "if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 3 end\n"
    "local d = redis.call('HGET', KEYS[4], 'd') or ARGV[2]\n"
    "local ta = tonumber(redis.call('HGET', KEYS[4], 'ta') or '0')\n"
    "local t = tonumber(ARGV[2]) + tonumber(ARGV[3])\n"
    "if t > ta then ta = t end\n"
    "local g = redis.call('INCR', KEYS[3])\n"
    "redis.call('HDEL', KEYS[4], 'h', 'e')\n"
    "redis.call('HSET', KEYS[4], 'd', d, 'ta', string.format('%.0f', ta), 'g', g)\n"
    "redis.call('ZADD', KEYS[2], g, ARGV[1])\n"
    "return 0\n";

/* KEYS names gens gen; ARGV mode (a: all names, by name; s: changed, by
 * generation) cursor limit user-key-prefix. Returns the generation counter,
 * then 6 strings per name: name, has account, email, tokens_after,
 * deleted, gen. */
static const char lua_page[] =
    "local out = {redis.call('GET', KEYS[3]) or '0'}\n"
    "local names\n"
    "if ARGV[1] == 'a' then\n"
    "  names = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], '+', 'LIMIT', 0, ARGV[3])\n"
    "else\n"
    "  names = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[2], '+inf', 'LIMIT', 0, ARGV[3])\n"
    "end\n"
    "for _, n in ipairs(names) do\n"
    "  local f = redis.call('HMGET', ARGV[4] .. n, 'h', 'e', 'ta', 'd', 'g')\n"
    "  out[#out + 1] = n\n"
    "  out[#out + 1] = f[1] and '1' or '0'\n"
    "  out[#out + 1] = f[2] or ''\n"
    "  out[#out + 1] = f[3] or '0'\n"
    "  out[#out + 1] = f[4] and '1' or '0'\n"
    "  out[#out + 1] = f[5] or '0'\n"
    "end\n"
    "return out\n";

enum script { S_ADD, S_PASSWD, S_DEL, S_PAGE, S_COUNT };
static const char *const scripts[S_COUNT] = {lua_add, lua_passwd, lua_del, lua_page};

struct acctrds {
    char host[256]; /* immutable after open */
    int port, db;
    char *password; /* NULL: none */
    struct timeval tv;
    char sha[S_COUNT][41]; /* SCRIPT LOAD's answers at open */

    pthread_mutex_t lock;
    redisContext *idle[POOL_IDLE_MAX]; /* {lock} */
    size_t nidle;                      /* {lock} */
    struct store_op *qhead, *qtail;    /* {lock} names seen, in order */
    size_t qn;                         /* {lock} */
    bool closing;                      /* {lock} */
    pthread_cond_t cond;               /* the worker waits on it */
    pthread_t worker;
    bool worker_started;
};

/* ------------------------------------------------------------ connections */

/* "redis://HOST[:PORT][/DB]", the first of a comma-separated list. */
static int parse_url(acctrds_t *a, const char *url, char *err, size_t errsz)
{
    const char *p = url, *end = strchr(url, ',');
    if (!end)
        end = url + strlen(url);
    if (strncmp(p, "redis://", 8) != 0)
        goto bad;
    p += 8;
    const char *h = p, *he;
    if (*p == '[') {
        h = ++p;
        he = memchr(p, ']', (size_t)(end - p));
        if (!he)
            goto bad;
        p = he + 1;
    } else {
        while (p < end && *p != ':' && *p != '/')
            p++;
        he = p;
    }
    if (he == h || (size_t)(he - h) >= sizeof(a->host))
        goto bad;
    memcpy(a->host, h, (size_t)(he - h));
    a->host[he - h] = '\0';
    a->port = 6379;
    a->db = 0;
    if (p < end && *p == ':') {
        long v = 0;
        const char *q = ++p;
        while (p < end && *p >= '0' && *p <= '9' && v <= 65535)
            v = v * 10 + (*p++ - '0');
        if (p == q || v < 1 || v > 65535)
            goto bad;
        a->port = (int)v;
    }
    if (p < end && *p == '/') {
        long v = 0;
        const char *q = ++p;
        while (p < end && *p >= '0' && *p <= '9' && v <= 100000)
            v = v * 10 + (*p++ - '0');
        if (p == q || v > 100000)
            goto bad;
        a->db = (int)v;
    }
    if (p != end)
        goto bad;
    return 0;
bad:
    snprintf(err, errsz, "malformed Redis URL '%.*s': expected redis://HOST:PORT[/DB]",
             (int)(end - url), url);
    return -EINVAL;
}

static bool reply_ok(const redisReply *r)
{
    return r && r->type != REDIS_REPLY_ERROR;
}

/* Connect, set the timeout on every later call, AUTH, SELECT. */
static redisContext *conn_new(acctrds_t *a, char *err, size_t errsz)
{
    redisContext *c = redisConnectWithTimeout(a->host, a->port, a->tv);
    redisReply *r = NULL;
    const char *what = "connect";
    if (!c || c->err || redisSetTimeout(c, a->tv) != REDIS_OK)
        goto fail;
    if (a->password) {
        what = "AUTH";
        const char *argv[] = {"AUTH", a->password};
        r = redisCommandArgv(c, 2, argv, NULL);
        if (!reply_ok(r))
            goto fail;
        freeReplyObject(r);
    }
    if (a->db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", a->db);
        what = "SELECT";
        const char *argv[] = {"SELECT", db};
        r = redisCommandArgv(c, 2, argv, NULL);
        if (!reply_ok(r))
            goto fail;
        freeReplyObject(r);
    }
    return c;
fail:
    if (err)
        snprintf(err, errsz, "cannot reach Redis %s:%d (%s): %s", a->host, a->port, what,
                 r && r->type == REDIS_REPLY_ERROR ? r->str
                 : c && c->err                     ? c->errstr
                                                   : "out of memory");
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    return NULL;
}

/* An idle connection, or a new one (NULL: Redis unreachable; logged). */
static redisContext *conn_get(acctrds_t *a, bool *reused)
{
    redisContext *c = NULL;
    pthread_mutex_lock(&a->lock);
    if (a->nidle)
        c = a->idle[--a->nidle];
    pthread_mutex_unlock(&a->lock);
    *reused = c != NULL;
    if (c)
        return c;
    char err[512];
    c = conn_new(a, err, sizeof(err));
    if (!c)
        log_warn(MOD, "%s", err);
    return c;
}

/* Return a connection after a call: kept for reuse if it worked; if it
 * failed, closed, and the idle ones with it (after a Redis restart or a
 * network fault they are all stale, and each would cost a caller a
 * failed call to find out). */
static void conn_put(acctrds_t *a, redisContext *c, bool ok)
{
    redisContext *drop[POOL_IDLE_MAX + 1];
    size_t n = 0;
    pthread_mutex_lock(&a->lock);
    if (ok && !c->err && a->nidle < POOL_IDLE_MAX) {
        a->idle[a->nidle++] = c;
        c = NULL;
    } else if (!ok) {
        while (a->nidle)
            drop[n++] = a->idle[--a->nidle];
    }
    pthread_mutex_unlock(&a->lock);
    if (c)
        drop[n++] = c;
    for (size_t i = 0; i < n; i++)
        redisFree(drop[i]);
}

/* EVALSHA, or EVAL when Redis lost the script (restarted, SCRIPT FLUSH). */
static redisReply *run_script(acctrds_t *a, redisContext *c, enum script s, int nkeys, int argc,
                              const char **argv, const size_t *lens)
{
    const char *v[16];
    size_t l[16];
    char nk[8];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    v[0] = "EVALSHA";
    l[0] = 7;
    v[1] = a->sha[s];
    l[1] = strlen(a->sha[s]);
    v[2] = nk;
    l[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        v[3 + i] = argv[i];
        l[3 + i] = lens[i];
    }
    redisReply *r = redisCommandArgv(c, argc + 3, v, l);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        v[0] = "EVAL";
        l[0] = 4;
        v[1] = scripts[s];
        l[1] = strlen(scripts[s]);
        r = redisCommandArgv(c, argc + 3, v, l);
    }
    return r;
}

/* One command or script (s < 0: a plain command), on a pooled connection.
 * A failure on a reused connection is retried once on a new one when
 * `retry` allows: an idle connection the server closed (restart, idle
 * timeout) fails at once with EOF, before the command ran. Returns the
 * reply (the caller frees it) or NULL, logged. */
static redisReply *call(acctrds_t *a, int s, int nkeys, int argc, const char **argv,
                        const size_t *lens, bool retry_any)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        bool reused;
        redisContext *c = conn_get(a, &reused);
        if (!c)
            return NULL;
        redisReply *r = s < 0 ? redisCommandArgv(c, argc, argv, lens)
                              : run_script(a, c, (enum script)s, nkeys, argc, argv, lens);
        if (r) {
            conn_put(a, c, true);
            if (r->type == REDIS_REPLY_ERROR) {
                log_warn(MOD, "Redis %s:%d refused a request: %s", a->host, a->port, r->str);
                freeReplyObject(r);
                return NULL;
            }
            return r;
        }
        bool again = reused && attempt == 0 && (retry_any || c->err == REDIS_ERR_EOF);
        if (!again)
            log_warn(MOD, "Redis %s:%d: %s", a->host, a->port, c->errstr);
        conn_put(a, c, false);
        if (!again)
            return NULL;
    }
    return NULL;
}

/* ------------------------------------------------------------ open, close */

static void *seen_worker(void *arg);

acctrds_t *acctrds_open(const char *url, const char *password, int timeout_ms, char *err,
                        size_t errsz)
{
    acctrds_t *a = xcalloc(1, sizeof(*a));
    redisContext *c = NULL;
    redisReply *r = NULL;

    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    if (timeout_ms <= 0)
        timeout_ms = 2000;
    a->tv.tv_sec = timeout_ms / 1000;
    a->tv.tv_usec = (timeout_ms % 1000) * 1000;
    if (!url || parse_url(a, url, err, errsz) != 0)
        goto fail;
    if (password && password[0])
        a->password = xstrdup(password);
    c = conn_new(a, err, errsz);
    if (!c)
        goto fail;
    for (int s = 0; s < S_COUNT; s++) {
        const char *argv[] = {"SCRIPT", "LOAD", scripts[s]};
        r = redisCommandArgv(c, 3, argv, NULL);
        if (!reply_ok(r) || r->type != REDIS_REPLY_STRING || r->len != 40) {
            snprintf(err, errsz, "cannot load a script into Redis %s:%d: %s", a->host, a->port,
                     r && r->type == REDIS_REPLY_ERROR ? r->str
                     : c->err                          ? c->errstr
                                                       : "unexpected reply");
            goto fail;
        }
        memcpy(a->sha[s], r->str, 40);
        freeReplyObject(r);
        r = NULL;
    }
    conn_put(a, c, true);
    c = NULL;
    if (pthread_create(&a->worker, NULL, seen_worker, a) != 0) {
        snprintf(err, errsz, "cannot start the account worker thread");
        goto fail;
    }
    a->worker_started = true;
    return a;
fail:
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    acctrds_close(a);
    return NULL;
}

void acctrds_close(acctrds_t *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    a->closing = true;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
    if (a->worker_started)
        pthread_join(a->worker, NULL);
    while (a->nidle)
        redisFree(a->idle[--a->nidle]);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    free(a->password);
    free(a);
}

/* ------------------------------------------------------------ names seen */

int acctrds_user_seen(acctrds_t *a, struct store_user_seen *u)
{
    if (!u || !u->done || !u->name || strlen(u->name) > NAME_MAX_BYTES)
        return -EINVAL;
    u->op.kind = SOP_USER_SEEN;
    u->op.next = NULL;
    u->op.status = 0;
    pthread_mutex_lock(&a->lock);
    int rc = a->closing ? -ESHUTDOWN : a->qn >= ACCTRDS_SEEN_QUEUE_MAX ? -EAGAIN : 0;
    if (rc == 0) {
        if (a->qtail)
            a->qtail->next = &u->op;
        else
            a->qhead = &u->op;
        a->qtail = &u->op;
        if (a->qn++ == 0)
            pthread_cond_signal(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
}

/* Worker: one pipeline of ZADD NX (a name seen is never an account change,
 * so no generation) per batch; done() for each, in order. */
static void seen_batch(acctrds_t *a, struct store_op *head)
{
    bool reused;
    redisContext *c = conn_get(a, &reused);
    size_t sent = 0;
    bool ok = c != NULL;
    for (struct store_op *op = head; ok && op; op = op->next) {
        struct store_user_seen *u = STORE_CONTAINER(op, struct store_user_seen, op);
        const char *argv[] = {"ZADD", K_NAMES, "NX", "0", u->name};
        size_t lens[] = {4, strlen(K_NAMES), 2, 1, strlen(u->name)};
        ok = redisAppendCommandArgv(c, 5, argv, lens) == REDIS_OK;
        sent += ok;
    }
    struct store_op *op = head;
    for (size_t i = 0; i < sent; i++, op = op->next) {
        redisReply *r = NULL;
        if (ok && redisGetReply(c, (void **)&r) != REDIS_OK)
            ok = false;
        op->status = ok && reply_ok(r) ? 0 : -EIO;
        if (r)
            freeReplyObject(r);
    }
    for (; op; op = op->next)
        op->status = -EIO;
    if (c) {
        if (!ok)
            log_warn(MOD, "cannot record names seen in Redis %s:%d: %s", a->host, a->port,
                     c->err ? c->errstr : "error reply");
        conn_put(a, c, ok);
    }
    while (head) {
        struct store_op *next = head->next;
        struct store_user_seen *u = STORE_CONTAINER(head, struct store_user_seen, op);
        u->status = head->status;
        u->done(u); /* may free u */
        head = next;
    }
}

static void *seen_worker(void *arg)
{
    acctrds_t *a = arg;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        while (!a->qhead && !a->closing)
            pthread_cond_wait(&a->cond, &a->lock);
        if (!a->qhead)
            break; /* closing, and everything queued was written */
        struct store_op *head = a->qhead, *tail = head;
        size_t n = 1;
        while (tail->next && n < SEEN_BATCH) {
            tail = tail->next;
            n++;
        }
        a->qhead = tail->next;
        if (!a->qhead)
            a->qtail = NULL;
        a->qn -= n;
        tail->next = NULL;
        pthread_mutex_unlock(&a->lock);
        seen_batch(a, head);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

/* ------------------------------------------------------------ users table */

static uint64_t parse_u64(const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_STRING)
        return 0;
    return strtoull(r->str, NULL, 10);
}

int acctrds_users_gen(acctrds_t *a, uint64_t *gen)
{
    const char *argv[] = {"GET", K_GEN};
    redisReply *r = call(a, -1, 0, 2, argv, NULL, true);
    if (!r)
        return -EIO;
    *gen = r->type == REDIS_REPLY_NIL ? 0 : parse_u64(r);
    freeReplyObject(r);
    return 0;
}

int acctrds_load_users(acctrds_t *a, uint64_t since_gen,
                       void (*cb)(void *arg, const struct store_user *u), void *arg)
{
    char cursor[NAME_MAX_BYTES + 32], limit[16];
    size_t cursor_len;
    uint64_t first_gen = 0;
    bool first = true;

    if (since_gen)
        cursor_len = (size_t)snprintf(cursor, sizeof(cursor), "(%" PRIu64, since_gen);
    else
        cursor_len = (size_t)snprintf(cursor, sizeof(cursor), "-");
    snprintf(limit, sizeof(limit), "%d", LOAD_PAGE);
    for (;;) {
        const char *argv[] = {K_NAMES, K_GENS, K_GEN, since_gen ? "s" : "a", cursor, limit, K_USER};
        size_t lens[] = {strlen(K_NAMES), strlen(K_GENS), strlen(K_GEN), 1,
                         cursor_len,      strlen(limit),  strlen(K_USER)};
        redisReply *r = call(a, S_PAGE, 3, 7, argv, lens, true);
        if (!r)
            return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || (r->elements - 1) % 6) {
            log_warn(MOD, "unexpected reply to a users page from Redis %s:%d", a->host, a->port);
            freeReplyObject(r);
            return -1;
        }
        if (first)
            first_gen = parse_u64(r->element[0]);
        first = false;
        size_t rows = (r->elements - 1) / 6;
        for (size_t i = 0; i < rows; i++) {
            redisReply **f = &r->element[1 + 6 * i];
            bool strings = true;
            for (int k = 0; k < 6; k++)
                strings = strings && f[k]->type == REDIS_REPLY_STRING;
            if (!strings)
                continue;
            uint64_t g = parse_u64(f[5]);
            struct store_user u = {
                .name = f[0]->str,
                .email = f[1]->str[0] == '1' ? f[2]->str : NULL,
                .tokens_after_ms = strtoll(f[3]->str, NULL, 10),
                .deleted = f[4]->str[0] == '1',
                /* a change made during a full walk may sit behind the
                 * cursor: report no newer gen than the walk started with,
                 * so the next since_gen call finds it */
                .gen = !since_gen && g > first_gen ? first_gen : g,
            };
            /* a name is a C string everywhere else; one with a NUL
             * (written by someone else) is skipped, not truncated */
            if (strlen(u.name) == f[0]->len && f[0]->len <= NAME_MAX_BYTES)
                cb(arg, &u);
            if (i == rows - 1) {
                cursor_len = since_gen ? (size_t)snprintf(cursor, sizeof(cursor), "(%" PRIu64, g)
                                       : (size_t)snprintf(cursor, sizeof(cursor), "(%.*s",
                                                          (int)f[0]->len, f[0]->str);
                if (cursor_len >= sizeof(cursor))
                    cursor_len = sizeof(cursor) - 1;
            }
        }
        freeReplyObject(r);
        if (rows < LOAD_PAGE)
            return 0;
    }
}

/* ------------------------------------------------------------ accounts */

static int status_of(redisReply *r)
{
    if (!r)
        return -EIO;
    int rc = r->type != REDIS_REPLY_INTEGER ? -EIO
             : r->integer == R_OK           ? 0
             : r->integer == R_EXISTS       ? -EEXIST
             : r->integer == R_DELETED      ? -EACCES
             : r->integer == R_NONE         ? -ENOENT
                                            : -EIO;
    freeReplyObject(r);
    return rc;
}

/* K_USER + name, binary-safe (a name is an argument, never command text). */
static char *user_key(const char *name, size_t *len)
{
    size_t n = strlen(name), p = strlen(K_USER);
    char *k = xmalloc(p + n + 1);
    memcpy(k, K_USER, p);
    memcpy(k + p, name, n + 1);
    *len = p + n;
    return k;
}

int acctrds_account_add(acctrds_t *a, const struct store_account_add *add)
{
    if (!add || !add->name || !add->password_hash || strlen(add->name) > NAME_MAX_BYTES)
        return -EINVAL;
    size_t klen;
    char *key = user_key(add->name, &klen);
    const char *email = add->email ? add->email : "";
    const char *argv[] = {K_NAMES,
                          K_GENS,
                          K_GEN,
                          key,
                          add->name,
                          add->password_hash,
                          email,
                          add->email ? "1" : "0",
                          add->adopt ? "1" : "0"};
    size_t lens[] = {strlen(K_NAMES),
                     strlen(K_GENS),
                     strlen(K_GEN),
                     klen,
                     strlen(add->name),
                     strlen(add->password_hash),
                     strlen(email),
                     1,
                     1};
    /* not retried after an I/O error but EOF: had it run, a second try
     * would answer -EEXIST for a registration that worked */
    int rc = status_of(call(a, S_ADD, 4, 9, argv, lens, false));
    free(key);
    return rc;
}

int acctrds_account_passwd(acctrds_t *a, const char *name, const char *password_hash)
{
    if (!name || !password_hash || strlen(name) > NAME_MAX_BYTES)
        return -EINVAL;
    size_t klen;
    char *key = user_key(name, &klen);
    char now[32], margin[16];
    snprintf(now, sizeof(now), "%" PRId64, now_wall_ms());
    snprintf(margin, sizeof(margin), "%d", STORE_REVOKE_MARGIN_MS);
    const char *argv[] = {K_GENS, K_GEN, key, name, password_hash, now, margin};
    size_t lens[] = {strlen(K_GENS),        strlen(K_GEN), klen,          strlen(name),
                     strlen(password_hash), strlen(now),   strlen(margin)};
    int rc = status_of(call(a, S_PASSWD, 3, 7, argv, lens, true));
    free(key);
    return rc;
}

int acctrds_account_del(acctrds_t *a, const char *name)
{
    if (!name || strlen(name) > NAME_MAX_BYTES)
        return -EINVAL;
    size_t klen;
    char *key = user_key(name, &klen);
    char now[32], margin[16];
    snprintf(now, sizeof(now), "%" PRId64, now_wall_ms());
    snprintf(margin, sizeof(margin), "%d", STORE_REVOKE_MARGIN_MS);
    const char *argv[] = {K_NAMES, K_GENS, K_GEN, key, name, now, margin};
    size_t lens[] = {strlen(K_NAMES), strlen(K_GENS), strlen(K_GEN), klen,
                     strlen(name),    strlen(now),    strlen(margin)};
    int rc = status_of(call(a, S_DEL, 4, 7, argv, lens, true));
    free(key);
    return rc;
}

int acctrds_account_get(acctrds_t *a, const char *name, char *hash, size_t hashsz, char *email,
                        size_t emailsz, int64_t *tokens_after_ms)
{
    if (!name || strlen(name) > NAME_MAX_BYTES)
        return -EINVAL;
    size_t klen;
    char *key = user_key(name, &klen);
    const char *argv[] = {"HMGET", key, "h", "e", "ta"};
    size_t lens[] = {5, klen, 1, 1, 2};
    redisReply *r = call(a, -1, 0, 5, argv, lens, true);
    free(key);
    if (!r)
        return -EIO;
    int rc = -EIO;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        redisReply *h = r->element[0], *e = r->element[1], *ta = r->element[2];
        if (h->type != REDIS_REPLY_STRING) {
            rc = -ENOENT;
        } else {
            if (hash)
                str_lcpy(hash, h->str, hashsz);
            if (email)
                str_lcpy(email, e->type == REDIS_REPLY_STRING ? e->str : "", emailsz);
            if (tokens_after_ms)
                *tokens_after_ms = ta->type == REDIS_REPLY_STRING ? strtoll(ta->str, NULL, 10) : 0;
            rc = 0;
        }
    }
    freeReplyObject(r);
    return rc;
}
