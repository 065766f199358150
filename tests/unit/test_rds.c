/*
 * test_rds — the Redis connection module against real redis-server
 * processes (redis_proc), each started on its own loopback port and
 * stopped by PID. Every wait is a condition polled under a deadline.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rds.h"
#include "redis_proc.h"

#define SLOTS 2048
#define MSGS 64

/* What the callbacks saw; they run on the rds thread. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done; /* replies (NULL or not) */
    int nulls;
    int order[SLOTS]; /* slot numbers in completion order */
    bool got[SLOTS];
    int type[SLOTS]; /* REDIS_REPLY_*, -1 for NULL */
    long long integer[SLOTS];
    char str[SLOTS][64];
    int nstates;
    bool state_up[16];
    size_t state_shard[16];
    int nmsgs;
    char msg_ch[MSGS][64];
    char msg_pl[MSGS][64];
    size_t msg_len[MSGS];
    int sub_ok, sub_null;
} B;

static struct redis_proc R1, R2;

#define mono_ms redis_proc_mono_ms

static void setup(void)
{
    memset(&B, 0, sizeof(B));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&B.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&B.mu, NULL);
    memset(&R1, 0, sizeof(R1));
    memset(&R2, 0, sizeof(R2));
}

static void teardown(void)
{
    redis_proc_stop(&R1);
    redis_proc_stop(&R2);
}

TestSuite(rds, .init = setup, .fini = teardown, .timeout = 120);

/* Wait (at most ms) until expr, evaluated under B.mu, holds; ok gets it. */
#define WAIT(ok, expr, ms) REDIS_PROC_WAIT(ok, expr, B.mu, B.cv, ms)

static int snap_int(const int *p)
{
    pthread_mutex_lock(&B.mu);
    int v = *p;
    pthread_mutex_unlock(&B.mu);
    return v;
}

static void on_reply(void *arg, const redisReply *r)
{
    int slot = (int)(intptr_t)arg;
    pthread_mutex_lock(&B.mu);
    B.got[slot] = true;
    B.order[B.done++] = slot;
    B.type[slot] = r ? r->type : -1;
    if (!r)
        B.nulls++;
    else if (r->type == REDIS_REPLY_INTEGER)
        B.integer[slot] = r->integer;
    else if (r->str)
        snprintf(B.str[slot], sizeof(B.str[slot]), "%s", r->str);
    pthread_cond_broadcast(&B.cv);
    pthread_mutex_unlock(&B.mu);
}

static void on_sub(void *arg, const redisReply *r)
{
    (void)arg;
    pthread_mutex_lock(&B.mu);
    if (r)
        B.sub_ok++;
    else
        B.sub_null++;
    pthread_cond_broadcast(&B.cv);
    pthread_mutex_unlock(&B.mu);
}

static void on_message(void *arg, size_t shard, const char *ch, size_t chlen, const char *pl,
                       size_t len)
{
    (void)arg;
    (void)shard;
    pthread_mutex_lock(&B.mu);
    if (B.nmsgs < MSGS) {
        snprintf(B.msg_ch[B.nmsgs], sizeof(B.msg_ch[0]), "%.*s", (int)chlen, ch);
        memcpy(B.msg_pl[B.nmsgs], pl, len < 64 ? len : 64);
        B.msg_len[B.nmsgs] = len;
        B.nmsgs++;
    }
    pthread_cond_broadcast(&B.cv);
    pthread_mutex_unlock(&B.mu);
}

static void on_state(void *arg, size_t shard, bool up)
{
    (void)arg;
    pthread_mutex_lock(&B.mu);
    if (B.nstates < 16) {
        B.state_up[B.nstates] = up;
        B.state_shard[B.nstates] = shard;
        B.nstates++;
    }
    pthread_cond_broadcast(&B.cv);
    pthread_mutex_unlock(&B.mu);
}

static struct rds_opts opts(const char *urls)
{
    return (struct rds_opts){
        .urls = urls,
        .connect_timeout_ms = 2000,
        .reconnect_base_ms = 50,
        .reconnect_max_ms = 200,
        .reply_timeout_ms = 10000,
        .on_message = on_message,
        .on_state = on_state,
    };
}

static rds_t *open_ok(const struct rds_opts *o)
{
    char err[512] = "";
    rds_t *r = rds_open(o, err, sizeof(err));
    cr_assert_not_null(r, "rds_open: %s", err);
    return r;
}

/* Submit argv (strings) on shard with the reply recorded in slot. */
static void cmd(rds_t *r, size_t shard, int slot, int argc, const char **argv)
{
    size_t lens[8];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    int rc = rds_cmd(r, shard, argc, argv, lens, on_reply, (void *)(intptr_t)slot);
    cr_assert_eq(rc, 0, "rds_cmd: %d", rc);
}

static long long sync_int(struct redis_proc *p, const char *fmt, const char *arg)
{
    redisContext *c = redis_proc_connect(p);
    cr_assert_not_null(c, "connect to redis on %d", p->port);
    redisReply *rep = redisCommand(c, fmt, arg);
    cr_assert_not_null(rep);
    long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -999;
    freeReplyObject(rep);
    redisFree(c);
    return v;
}

Test(rds, open_refuses_unreachable_shard)
{
    int port = redis_proc_free_port();
    char url[64], err[512] = "";
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    struct rds_opts o = opts(url);
    long long t0 = mono_ms();
    cr_assert_null(rds_open(&o, err, sizeof(err)));
    cr_assert(strstr(err, url) != NULL, "err names the shard: %s", err);
    cr_assert(strstr(err, "cannot connect") != NULL, "%s", err);
    cr_assert_lt(mono_ms() - t0, 10000);
}

Test(rds, open_refuses_wrong_password)
{
    cr_assert_eq(redis_proc_start(&R1, "s3cret-pw", false), 0);
    char url[64], err[512] = "";
    redis_proc_url(&R1, 0, url, sizeof(url));
    struct rds_opts o = opts(url);
    o.password = "wrong";
    cr_assert_null(rds_open(&o, err, sizeof(err)));
    cr_assert(strstr(err, url) && strstr(err, "refused the password"), "%s", err);
    o.password = NULL;
    err[0] = '\0';
    cr_assert_null(rds_open(&o, err, sizeof(err)));
    cr_assert(strstr(err, url) && strstr(err, "NOAUTH"), "%s", err);
    o.password = "s3cret-pw";
    rds_t *r = open_ok(&o);
    const char *set[] = {"SET", "k", "v"};
    const char *get[] = {"GET", "k"};
    cmd(r, 0, 0, 3, set);
    cmd(r, 0, 1, 2, get);
    bool ok;
    WAIT(ok, B.done == 2, 5000);
    cr_assert(ok);
    cr_assert_str_eq(B.str[1], "v");
    rds_close(r);
}

Test(rds, open_refuses_bad_urls)
{
    const char *bad[] = {
        "",
        "http://127.0.0.1:6379",
        "redis://127.0.0.1",
        "redis://127.0.0.1:",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:65536",
        "redis://127.0.0.1:63x9",
        "redis://:6379",
        "redis://user@127.0.0.1:6379",
        "redis://127.0.0.1:6379/",
        "redis://127.0.0.1:6379/x",
        "redis://127.0.0.1:6379/1/2",
        "redis://127.0.0.1:6379?db=1",
        "redis://127.0.0.1:6379,",
        " redis://127.0.0.1:6379",
        "redis://[::1:6379",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char err[512] = "";
        struct rds_opts o = opts(bad[i]);
        cr_assert_null(rds_open(&o, err, sizeof(err)), "accepted '%s'", bad[i]);
        cr_assert(strstr(err, "URL") != NULL, "'%s': %s", bad[i], err);
    }
    char err[512] = "";
    struct rds_opts o = opts("redis://127.0.0.1:1,redis://127.0.0.1:1");
    cr_assert_null(rds_open(&o, err, sizeof(err)));
    cr_assert(strstr(err, "twice") != NULL, "%s", err);
    char many[RDS_SHARDS_MAX * 32 + 64] = "";
    for (int i = 0; i <= RDS_SHARDS_MAX; i++) {
        char one[40];
        snprintf(one, sizeof(one), "%sredis://127.0.0.1:%d", i ? "," : "", 1000 + i);
        strcat(many, one);
    }
    o = opts(many);
    cr_assert_null(rds_open(&o, err, sizeof(err)));
    cr_assert(strstr(err, "too many") != NULL, "%s", err);
}

Test(rds, commands_complete_in_order)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    char url[64];
    redis_proc_url(&R1, 3, url, sizeof(url)); /* DB 3: SELECT on the async connections */
    struct rds_opts o = opts(url);
    rds_t *r = open_ok(&o);
    const int n = 1000;
    for (int i = 0; i < n; i++) {
        const char *incr[] = {"INCR", "ctr"};
        cmd(r, 0, i, 2, incr);
    }
    bool ok;
    WAIT(ok, B.done == n, 20000);
    cr_assert(ok, "%d of %d replies", snap_int(&B.done), n);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(B.order[i], i, "reply %d came as %d", B.order[i], i);
        cr_assert_eq(B.integer[i], i + 1);
    }
    /* a binary-safe argument and an error reply */
    const char bin[] = {'a', '\0', 'b'};
    const char *set[] = {"SET", "bin", bin};
    size_t lens[] = {3, 3, 3};
    cr_assert_eq(rds_cmd(r, 0, 3, set, lens, on_reply, (void *)(intptr_t)n), 0);
    const char *strlen_[] = {"STRLEN", "bin"};
    cmd(r, 0, n + 1, 2, strlen_);
    const char *bogus[] = {"NOSUCHCOMMAND"};
    cmd(r, 0, n + 2, 1, bogus);
    WAIT(ok, B.done == n + 3, 5000);
    cr_assert(ok);
    cr_assert_eq(B.integer[n + 1], 3);
    cr_assert_eq(B.type[n + 2], REDIS_REPLY_ERROR);
    struct rds_stats st;
    rds_stats(r, &st);
    cr_assert_eq(st.shards, 1);
    cr_assert_eq(st.shards_up, 1);
    cr_assert_geq(st.commands, (uint64_t)n + 3);
    cr_assert_eq(st.failures, 0);
    cr_assert_geq(st.rtt_count, (uint64_t)n + 3);
    cr_assert_gt(st.rtt_seconds_sum, 0.0);
    cr_assert_eq(rds_cmd(r, 1, 2, set, lens, on_reply, NULL), -EINVAL);
    cr_assert_eq(rds_cmd(r, 0, 0, set, lens, on_reply, NULL), -EINVAL);
    rds_close(r);
    /* the counter went to DB 3, not DB 0 */
    redisContext *c = redis_proc_connect(&R1);
    cr_assert_not_null(c);
    redisReply *rep = redisCommand(c, "EXISTS ctr");
    cr_assert_eq(rep->integer, 0);
    freeReplyObject(rep);
    freeReplyObject(redisCommand(c, "SELECT 3"));
    rep = redisCommand(c, "GET ctr");
    cr_assert_str_eq(rep->str, "1000");
    freeReplyObject(rep);
    redisFree(c);
}

/* Shard lists over one server (URLs differ by DB, which is all the ring
 * sees): spread, stability, order independence, ~1/N moved on growth. */
Test(rds, ring_spreads_and_moves_one_nth)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    char u[6][64];
    for (int i = 0; i < 6; i++)
        redis_proc_url(&R1, i + 1, u[i], sizeof(u[i]));
    char four[400], four_rev[400], five[400];
    snprintf(four, sizeof(four), "%s,%s,%s,%s", u[0], u[1], u[2], u[3]);
    snprintf(four_rev, sizeof(four_rev), "%s,%s,%s,%s", u[3], u[2], u[1], u[0]);
    snprintf(five, sizeof(five), "%s,%s,%s,%s,%s", u[0], u[1], u[2], u[3], u[4]);
    struct rds_opts o4 = opts(four), o4r = opts(four_rev), o5 = opts(five);
    rds_t *a = open_ok(&o4), *b = open_ok(&o4r), *c = open_ok(&o5);
    cr_assert_eq(rds_nshards(c), 5);
    cr_assert_str_eq(rds_shard_url(c, 4), u[4]);
    enum { N = 20000 };
    size_t count4[4] = {0}, moved = 0;
    for (int i = 0; i < N; i++) {
        char name[32];
        int len = snprintf(name, sizeof(name), "room-%d", i);
        size_t s4 = rds_shard(a, name, (size_t)len);
        size_t s5 = rds_shard(c, name, (size_t)len);
        cr_assert_lt(s4, 4);
        count4[s4]++;
        /* the reversed list names the same URL */
        cr_assert_str_eq(rds_shard_url(b, rds_shard(b, name, (size_t)len)), rds_shard_url(a, s4));
        if (s5 != s4) {
            moved++;
            cr_assert_eq(s5, 4, "'%s' moved between old shards (%zu -> %zu)", name, s4, s5);
        }
    }
    for (int i = 0; i < 4; i++)
        cr_assert(count4[i] > N * 15 / 100 && count4[i] < N * 35 / 100, "shard %d has %zu of %d", i,
                  count4[i], N);
    cr_assert(moved > N * 12 / 100 && moved < N * 28 / 100, "moved %zu of %d (expected ~1/5)",
              moved, N);
    rds_close(a);
    rds_close(b);
    rds_close(c);
}

/* The placement is part of the cluster's on-disk format: every node, of
 * every version, must agree on it, so it is pinned for a fixed list (a
 * change to the ring, its key or its point names fails here). */
Test(rds, ring_placement_is_pinned)
{
    const char *list = "redis://10.0.0.1:6379,redis://10.0.0.2:6379,redis://10.0.0.3:6379/2";
    static const struct {
        const char *name;
        int shard;
    } pin[] = {
        {"lobby", 1}, {"general", 0}, {"random", 1}, {"room-42", 0}, {"caf\xc3\xa9", 1}, {"x", 0},
        {"dev", 0},   {"ops", 2},     {"a", 1},      {"b", 2},       {"c", 1},           {"d", 0},
    };
    for (size_t i = 0; i < sizeof(pin) / sizeof(pin[0]); i++)
        cr_assert_eq(rds_ring_lookup(list, pin[i].name, strlen(pin[i].name)), pin[i].shard, "%s",
                     pin[i].name);
    /* and 1000 names at once, folded into one number */
    uint64_t fold = 0;
    for (int i = 0; i < 1000; i++) {
        char name[32];
        int len = snprintf(name, sizeof(name), "room-%d", i);
        int sh = rds_ring_lookup(list, name, (size_t)len);
        cr_assert(sh >= 0 && sh < 3);
        fold = fold * 31 + (uint64_t)sh;
    }
    cr_assert_eq(fold, UINT64_C(8173044054045256078), "fold %llu", (unsigned long long)fold);
    /* the order of the list does not matter: points are keyed by URL */
    const char *rev = "redis://10.0.0.3:6379/2,redis://10.0.0.2:6379,redis://10.0.0.1:6379";
    cr_assert_eq(rds_ring_lookup(rev, "ops", 3), 0);
    cr_assert_eq(rds_ring_lookup(rev, "lobby", 5), 1);
    cr_assert_eq(rds_ring_lookup(rev, "general", 7), 2);
    cr_assert_eq(rds_ring_lookup("redis://10.0.0.1", "a", 1), -EINVAL);
}

Test(rds, two_shards_hold_their_keys)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    cr_assert_eq(redis_proc_start(&R2, NULL, false), 0);
    char u1[64], u2[64], list[200];
    snprintf(list, sizeof(list), "%s,%s", redis_proc_url(&R1, 0, u1, sizeof(u1)),
             redis_proc_url(&R2, 0, u2, sizeof(u2)));
    struct rds_opts o = opts(list);
    rds_t *r = open_ok(&o);
    enum { N = 200 };
    int on[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "room:%d", i);
        size_t s = rds_shard(r, key, strlen(key));
        on[s]++;
        const char *set[] = {"SET", key, "1"};
        cmd(r, s, i, 3, set);
    }
    bool ok;
    WAIT(ok, B.done == N, 10000);
    cr_assert(ok);
    cr_assert(on[0] > 0 && on[1] > 0, "rooms on both shards: %d %d", on[0], on[1]);
    cr_assert_eq(sync_int(&R1, "DBSIZE%s", ""), on[0]);
    cr_assert_eq(sync_int(&R2, "DBSIZE%s", ""), on[1]);
    for (int i = 0; i < N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "room:%d", i);
        struct redis_proc *p = rds_shard(r, key, strlen(key)) == 0 ? &R1 : &R2;
        cr_assert_eq(sync_int(p, "EXISTS %s", key), 1, "%s", key);
    }
    rds_close(r);
}

static long long cmdstat_calls(struct redis_proc *p, const char *name)
{
    redisContext *c = redis_proc_connect(p);
    cr_assert_not_null(c);
    redisReply *rep = redisCommand(c, "INFO commandstats");
    cr_assert_not_null(rep);
    char key[64];
    snprintf(key, sizeof(key), "cmdstat_%s:calls=", name);
    const char *at = strstr(rep->str, key);
    long long v = at ? atoll(at + strlen(key)) : 0;
    freeReplyObject(rep);
    redisFree(c);
    return v;
}

Test(rds, eval_reloads_after_noscript)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    char url[64];
    struct rds_opts o = opts(redis_proc_url(&R1, 0, url, sizeof(url)));
    rds_t *r = open_ok(&o);
    int id = rds_script(r, "return redis.call('INCRBY', KEYS[1], ARGV[1])");
    cr_assert_geq(id, 0);
    const char *argv[] = {"evk", "5"};
    size_t lens[] = {3, 1};
    bool ok;
    cr_assert_eq(rds_eval(r, 0, id, 1, 2, argv, lens, on_reply, (void *)(intptr_t)0), 0);
    WAIT(ok, B.done == 1, 5000);
    cr_assert(ok);
    cr_assert_eq(B.integer[0], 5, "type %d %s", B.type[0], B.str[0]);
    cr_assert_eq(rds_eval(r, 0, id, 1, 2, argv, lens, on_reply, (void *)(intptr_t)1), 0);
    WAIT(ok, B.done == 2, 5000);
    cr_assert_eq(B.integer[1], 10);
    /* a Redis that lost its script cache (as after a restart) */
    redisContext *c = redis_proc_connect(&R1);
    freeReplyObject(redisCommand(c, "SCRIPT FLUSH"));
    redisFree(c);
    /* registering loaded it (SCRIPT LOAD) before the first EVALSHA, so no
     * call needed an EVAL: a NOSCRIPT retry would have run after what was
     * pipelined behind it */
    cr_assert_eq(cmdstat_calls(&R1, "eval"), 0);
    cr_assert_geq(cmdstat_calls(&R1, "script|load"), 1); /* and the handshake's */
    cr_assert_eq(rds_eval(r, 0, id, 1, 2, argv, lens, on_reply, (void *)(intptr_t)2), 0);
    WAIT(ok, B.done == 3, 5000);
    cr_assert_eq(B.type[2], REDIS_REPLY_INTEGER, "type %d %s", B.type[2], B.str[2]);
    cr_assert_eq(B.integer[2], 15);
    cr_assert_eq(cmdstat_calls(&R1, "eval"), 1, "loaded again");
    cr_assert_eq(rds_eval(r, 0, id, 1, 2, argv, lens, on_reply, (void *)(intptr_t)3), 0);
    WAIT(ok, B.done == 4, 5000);
    cr_assert_eq(B.integer[3], 20);
    /* and EVALSHA works again */
    cr_assert_eq(cmdstat_calls(&R1, "eval"), 1);
    struct rds_stats st;
    rds_stats(r, &st);
    cr_assert_eq(st.script_loads, 1);
    cr_assert_eq(rds_eval(r, 0, id + 1, 1, 2, argv, lens, on_reply, NULL), -EINVAL);
    cr_assert_eq(rds_eval(r, 0, id, 3, 2, argv, lens, on_reply, NULL), -EINVAL);
    rds_close(r);
}

Test(rds, subscribe_publish_unsubscribe)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    char url[64];
    struct rds_opts o = opts(redis_proc_url(&R1, 0, url, sizeof(url)));
    rds_t *r = open_ok(&o);
    cr_assert_eq(rds_subscribe(r, 0, "chan:a", 6, on_sub, NULL), 0);
    cr_assert_eq(rds_subscribe(r, 0, "chan:b", 6, on_sub, NULL), 0);
    cr_assert_eq(rds_subscribe(r, 0, "chan:a", 6, on_sub, NULL), -EALREADY);
    cr_assert_eq(rds_unsubscribe(r, 0, "chan:zz", 7), -ENOENT);
    cr_assert_eq(rds_subscribe(r, 0, "a\0b", 3, on_sub, NULL), -EINVAL);
    bool ok;
    WAIT(ok, B.sub_ok == 2, 5000);
    cr_assert(ok);
    /* a binary payload, in order */
    redisContext *c = redis_proc_connect(&R1);
    cr_assert_not_null(c);
    redisReply *rep = redisCommand(c, "PUBLISH chan:a %b", "x\0y", (size_t)3);
    cr_assert_eq(rep->integer, 1);
    freeReplyObject(rep);
    freeReplyObject(redisCommand(c, "PUBLISH chan:b two"));
    WAIT(ok, B.nmsgs == 2, 5000);
    cr_assert(ok);
    cr_assert_str_eq(B.msg_ch[0], "chan:a");
    cr_assert_eq(B.msg_len[0], 3);
    cr_assert_eq(memcmp(B.msg_pl[0], "x\0y", 3), 0);
    cr_assert_str_eq(B.msg_ch[1], "chan:b");
    struct rds_stats st;
    rds_stats(r, &st);
    cr_assert_eq(st.subscriptions, 2);
    cr_assert_eq(st.messages, 2);
    /* unsubscribe: the server sees no subscriber, and nothing arrives */
    cr_assert_eq(rds_unsubscribe(r, 0, "chan:a", 6), 0);
    long long deadline = mono_ms() + 5000, subs = 1;
    while (subs != 0 && mono_ms() < deadline) {
        rep = redisCommand(c, "PUBSUB NUMSUB chan:a");
        subs = rep->element[1]->integer;
        freeReplyObject(rep);
    }
    cr_assert_eq(subs, 0);
    freeReplyObject(redisCommand(c, "PUBLISH chan:a gone"));
    freeReplyObject(redisCommand(c, "PUBLISH chan:b three"));
    WAIT(ok, B.nmsgs == 3, 5000);
    cr_assert(ok);
    cr_assert_str_eq(B.msg_ch[2], "chan:b", "only chan:b's message");
    WAIT(ok, B.nmsgs > 3, 300); /* bounded quiet time */
    cr_assert_not(ok);
    /* unsubscribe and subscribe again at once (hiredis quirk: see rds.c) */
    cr_assert_eq(rds_unsubscribe(r, 0, "chan:b", 6), 0);
    cr_assert_eq(rds_subscribe(r, 0, "chan:b", 6, on_sub, NULL), 0);
    WAIT(ok, B.sub_ok == 3, 5000);
    cr_assert(ok);
    rep = redisCommand(c, "PUBLISH chan:b four");
    cr_assert_eq(rep->integer, 1);
    freeReplyObject(rep);
    WAIT(ok, B.nmsgs == 4, 5000);
    cr_assert(ok);
    rds_stats(r, &st);
    cr_assert_eq(st.subscriptions, 1);
    redisFree(c);
    rds_close(r);
}

/* The server dies with commands in flight and comes back on its port. */
Test(rds, reconnects_after_restart)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    char url[64];
    struct rds_opts o = opts(redis_proc_url(&R1, 0, url, sizeof(url)));
    rds_t *r = open_ok(&o);
    cr_assert_eq(rds_subscribe(r, 0, "room:1", 6, on_sub, NULL), 0);
    bool ok;
    WAIT(ok, B.sub_ok == 1, 5000);
    cr_assert(ok);
    redis_proc_pause(&R1);
    for (int i = 0; i < 5; i++) {
        const char *incr[] = {"INCR", "x"};
        cmd(r, 0, i, 2, incr);
    }
    redis_proc_kill(&R1);
    WAIT(ok, B.done == 5 && B.nstates == 1, 10000);
    cr_assert(ok, "replies %d states %d", B.done, B.nstates);
    cr_assert_eq(B.nulls, 5, "every pending command failed");
    cr_assert_not(B.state_up[0]);
    cr_assert_not(rds_up(r, 0));
    /* down: a command fails at once */
    const char *ping[] = {"PING"};
    cmd(r, 0, 5, 1, ping);
    WAIT(ok, B.done == 6, 2000);
    cr_assert(ok);
    cr_assert_eq(B.type[5], -1);
    /* refused reconnect attempts (50..200 ms apart) change nothing */
    WAIT(ok, B.nstates > 1, 600);
    cr_assert_not(ok, "on_state(false) once");
    cr_assert_eq(redis_proc_restart(&R1), 0);
    WAIT(ok, B.nstates == 2, 15000);
    cr_assert(ok, "back up");
    cr_assert(B.state_up[1]);
    cr_assert(rds_up(r, 0));
    const char *incr[] = {"INCR", "x"};
    cmd(r, 0, 6, 2, incr);
    WAIT(ok, B.done == 7, 5000);
    cr_assert_eq(B.integer[6], 1);
    /* subscribed again before on_state(up) */
    cr_assert_eq(sync_int(&R1, "PUBLISH room:1 %s", "after"), 1);
    WAIT(ok, B.nmsgs == 1, 5000);
    cr_assert(ok);
    cr_assert_str_eq(B.msg_pl[0], "after");
    struct rds_stats st;
    rds_stats(r, &st);
    cr_assert_eq(st.reconnects, 1);
    cr_assert_geq(st.failures, 6);
    cr_assert_eq(B.nstates, 2, "on_state once each way");
    rds_close(r);
}

/* A stopped Redis keeps its connections open: the heartbeat and the reply
 * deadline notice it. */
Test(rds, stalled_redis_times_out_and_recovers)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    char url[64];
    struct rds_opts o = opts(redis_proc_url(&R1, 0, url, sizeof(url)));
    o.reply_timeout_ms = 500;
    o.connect_timeout_ms = 1000;
    rds_t *r = open_ok(&o);
    bool ok;
    const char *ping[] = {"PING"};
    cmd(r, 0, 0, 1, ping);
    WAIT(ok, B.done == 1, 5000);
    cr_assert_eq(B.type[0], REDIS_REPLY_STATUS);
    redis_proc_pause(&R1);
    /* idle: found by the heartbeat */
    WAIT(ok, B.nstates == 1, 10000);
    cr_assert(ok);
    cr_assert_not(B.state_up[0]);
    struct rds_stats st;
    rds_stats(r, &st);
    cr_assert_geq(st.timeouts, 1);
    cmd(r, 0, 1, 1, ping);
    WAIT(ok, B.done == 2, 2000);
    cr_assert_eq(B.type[1], -1);
    /* reconnect attempts meet the stopped server (TCP accepts, nothing
     * answers) and time out: no further state change while it stays so */
    WAIT(ok, B.nstates > 1, 2500);
    cr_assert_not(ok, "on_state(false) once");
    redis_proc_resume(&R1);
    WAIT(ok, B.nstates == 2, 15000);
    cr_assert(ok);
    cr_assert(B.state_up[1]);
    cmd(r, 0, 2, 1, ping);
    WAIT(ok, B.done == 3, 5000);
    cr_assert_eq(B.type[2], REDIS_REPLY_STATUS);
    rds_close(r);
}

Test(rds, close_fails_pending_commands)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    char url[64];
    struct rds_opts o = opts(redis_proc_url(&R1, 0, url, sizeof(url)));
    rds_t *r = open_ok(&o);
    cr_assert_eq(rds_subscribe(r, 0, "c", 1, on_sub, NULL), 0);
    bool ok;
    WAIT(ok, B.sub_ok == 1, 5000);
    redis_proc_pause(&R1);
    enum { N = 50 };
    for (int i = 0; i < N; i++) {
        const char *incr[] = {"INCR", "y"};
        cmd(r, 0, i, 2, incr);
    }
    rds_close(r);
    cr_assert_eq(snap_int(&B.done), N);
    cr_assert_eq(snap_int(&B.nulls), N);
    cr_assert_eq(snap_int(&B.nstates), 0, "closing is not a state change");
    redis_proc_resume(&R1);
    rds_close(NULL);
}

Test(rds, pending_is_bounded)
{
    cr_assert_eq(redis_proc_start(&R1, NULL, false), 0);
    char url[64];
    struct rds_opts o = opts(redis_proc_url(&R1, 0, url, sizeof(url)));
    o.max_pending = 4;
    rds_t *r = open_ok(&o);
    redis_proc_pause(&R1);
    const char *incr[] = {"INCR", "z"};
    size_t lens[] = {4, 1};
    for (int i = 0; i < 4; i++)
        cmd(r, 0, i, 2, incr);
    cr_assert_eq(rds_cmd(r, 0, 2, incr, lens, on_reply, (void *)(intptr_t)4), -ENOBUFS);
    redis_proc_resume(&R1);
    bool ok;
    WAIT(ok, B.done == 4, 5000);
    cr_assert(ok);
    cr_assert_eq(B.nulls, 0);
    cr_assert_eq(B.integer[3], 4);
    cmd(r, 0, 5, 2, incr);
    WAIT(ok, B.done == 5, 5000);
    cr_assert_eq(B.integer[5], 5);
    rds_close(r);
}
