/*
 * test_cdir — the cluster directory against real redis-server processes
 * (redis_proc: free loopback ports, private directories, stopped by PID):
 * several cdir instances as nodes of one cluster, each with its own rds,
 * and an observer rds that records what the room channels carry.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cdir.h"
#include "rds.h"
#include "redis_proc.h"
#include "testutil.h"
#include "util.h"

#define TTL_MS 600   /* short, so a dead node is noticed quickly */
#define QUIET_MS 400 /* a negative check listens this long */
#define WAIT_MS 5000 /* ordinary waits */
/* a dead node's leaves: ttl + scan interval (+20 % jitter) + replies */
#define DEAD_BOUND_MS (TTL_MS + CDIR_SCAN_MS * 12 / 10 + 1500)

/* ---- redis-server processes (redis_proc) ---- */

struct redis {
    struct redis_proc p;
    char url[64];
};

static void redis_start(struct redis *s)
{
    cr_assert_eq(redis_proc_start(&s->p, NULL, false), 0, "redis-server did not start");
    redis_proc_url(&s->p, 0, s->url, sizeof(s->url));
}

static void redis_stop(struct redis *s)
{
    redis_proc_stop(&s->p);
}

/* A direct connection to look at the data and change it behind cdir. */
static redisContext *redis_direct(const struct redis *s)
{
    redisContext *k = redis_proc_connect(&s->p);
    cr_assert_not_null(k);
    return k;
}

static long long direct_int(redisContext *k, const char *cmd)
{
    redisReply *r = redisCommand(k, cmd);
    long long v;

    cr_assert(r && r->type == REDIS_REPLY_INTEGER, "'%s'", cmd);
    v = r->integer;
    freeReplyObject(r);
    return v;
}

/* ---- what the room channels carry ---- */

#define REC_MAX 256

struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n;
    char ev[REC_MAX][128]; /* "<channel> <payload>" */
    size_t confirmed;
};

static struct rec rec = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void rec_msg(void *arg, size_t shard, const char *ch, size_t chlen, const char *p,
                    size_t len)
{
    struct rec *r = arg;

    (void)shard;
    pthread_mutex_lock(&r->mu);
    if (r->n < REC_MAX)
        snprintf(r->ev[r->n++], sizeof(r->ev[0]), "%.*s %.*s", (int)chlen, ch, (int)len, p);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void rec_confirm(void *arg, const struct redisReply *reply)
{
    struct rec *r = arg;

    pthread_mutex_lock(&r->mu);
    if (reply)
        r->confirmed++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static size_t rec_count_locked(const char *ev)
{
    size_t k = 0;

    for (size_t i = 0; i < rec.n; i++)
        k += strcmp(rec.ev[i], ev) == 0;
    return k;
}

static size_t rec_count(const char *ev)
{
    pthread_mutex_lock(&rec.mu);
    size_t k = rec_count_locked(ev);
    pthread_mutex_unlock(&rec.mu);
    return k;
}

static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    long ns = ts->tv_nsec + (long)(ms % 1000) * 1000000L;
    ts->tv_sec += ms / 1000 + ns / 1000000000L;
    ts->tv_nsec = ns % 1000000000L;
}

/* Wait until ev has been seen n times; true if it was within ms. */
static bool rec_wait(const char *ev, size_t n, int ms)
{
    struct timespec ts;
    bool ok;

    deadline_in(&ts, ms);
    pthread_mutex_lock(&rec.mu);
    while (rec_count_locked(ev) < n)
        if (pthread_cond_timedwait(&rec.cv, &rec.mu, &ts) == ETIMEDOUT)
            break;
    ok = rec_count_locked(ev) >= n;
    pthread_mutex_unlock(&rec.mu);
    return ok;
}

static void quiet(void)
{
    usleep(QUIET_MS * 1000);
}

/* ---- nodes ---- */

struct node {
    rds_t *r;
    cdir_t *c;
};

static rds_t *open_rds(const char *urls, bool observer)
{
    struct rds_opts o = {.urls = urls};
    char err[256];
    rds_t *r;

    if (observer) {
        o.on_message = rec_msg;
        o.arg = &rec;
    }
    r = rds_open(&o, err, sizeof(err));
    cr_assert_not_null(r, "rds_open: %s", err);
    return r;
}

static struct node node_up(const char *urls, const char *id)
{
    struct node n = {open_rds(urls, false), NULL};
    char err[256];

    n.c = cdir_new(n.r, id, TTL_MS, err, sizeof(err));
    cr_assert_not_null(n.c, "cdir_new: %s", err);
    cr_assert_eq(cdir_start(n.c, err, sizeof(err)), 0, "cdir_start: %s", err);
    return n;
}

/* As if the process died: no goodbye, the heartbeat stops. */
static void node_kill(struct node *n)
{
    cdir__abandon(n->c);
    rds_close(n->r);
    n->c = NULL;
    n->r = NULL;
}

static void node_down(struct node *n)
{
    cdir_free(n->c);
    rds_close(n->r);
    n->c = NULL;
    n->r = NULL;
}

/* The observer: subscribed to the channels of rooms. */
static rds_t *observe(const char *urls, const char *const *rooms, size_t nrooms)
{
    rds_t *o = open_rds(urls, true);
    char ch[CDIR_NAME_MAX + 8];
    struct timespec ts;

    pthread_mutex_lock(&rec.mu);
    rec.n = 0;
    rec.confirmed = 0;
    pthread_mutex_unlock(&rec.mu);
    for (size_t i = 0; i < nrooms; i++) {
        snprintf(ch, sizeof(ch), "r:{%s}", rooms[i]);
        size_t sh = rds_shard(o, rooms[i], strlen(rooms[i]));
        cr_assert_eq(rds_subscribe(o, sh, ch, strlen(ch), rec_confirm, &rec), 0);
    }
    deadline_in(&ts, WAIT_MS);
    pthread_mutex_lock(&rec.mu);
    while (rec.confirmed < nrooms)
        if (pthread_cond_timedwait(&rec.cv, &rec.mu, &ts) == ETIMEDOUT)
            break;
    cr_assert_eq(rec.confirmed, nrooms, "subscriptions not confirmed");
    pthread_mutex_unlock(&rec.mu);
    return o;
}

/* ---- waiting for a callback ---- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done, ok, taken, online;
    size_t n;
    char users[64][CDIR_NAME_MAX + 1];
    struct cdir_room rooms[64];
};

static void waiter_init(struct waiter *w)
{
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void waiter_done(struct waiter *w)
{
    w->done = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void waiter_wait(struct waiter *w)
{
    struct timespec ts;

    deadline_in(&ts, WAIT_MS);
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    bool done = w->done;
    pthread_mutex_unlock(&w->mu);
    cr_assert(done, "no callback within %d ms", WAIT_MS);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void on_who(void *arg, const char *const *users, size_t n, bool ok)
{
    struct waiter *w = arg;

    pthread_mutex_lock(&w->mu);
    w->ok = ok;
    for (size_t i = 0; i < n && w->n < 64; i++)
        snprintf(w->users[w->n++], sizeof(w->users[0]), "%s", users[i]);
    waiter_done(w);
}

static void on_rooms(void *arg, const struct cdir_room *rooms, size_t n, bool ok)
{
    struct waiter *w = arg;

    pthread_mutex_lock(&w->mu);
    w->ok = ok;
    for (size_t i = 0; i < n && w->n < 64; i++)
        w->rooms[w->n++] = rooms[i];
    waiter_done(w);
}

static void on_add(void *arg, bool ok, bool taken)
{
    struct waiter *w = arg;

    pthread_mutex_lock(&w->mu);
    w->ok = ok;
    w->taken = taken;
    waiter_done(w);
}

static void on_online(void *arg, bool online, bool ok)
{
    struct waiter *w = arg;

    pthread_mutex_lock(&w->mu);
    w->ok = ok;
    w->online = online;
    waiter_done(w);
}

static bool has_user(const struct waiter *w, const char *u)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->users[i], u) == 0)
            return true;
    return false;
}

static void who(cdir_t *c, const char *room, struct waiter *w)
{
    waiter_init(w);
    cr_assert_eq(cdir_who(c, room, on_who, w), 0);
    waiter_wait(w);
    cr_assert(w->ok);
}

/* A node's steps on one shard run in order on its connection, and nodes
 * have connections of their own: a who() through node c returns after
 * every step c queued before it on room's shard. */
static void fence(cdir_t *c, const char *room)
{
    struct waiter w;

    who(c, room, &w);
}

static const struct cdir_room *find_room(const struct waiter *w, const char *name)
{
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->rooms[i].name, name) == 0)
            return &w->rooms[i];
    return NULL;
}

static void rooms(cdir_t *c, struct waiter *w)
{
    waiter_init(w);
    cr_assert_eq(cdir_rooms(c, on_rooms, w), 0);
    waiter_wait(w);
    cr_assert(w->ok);
}

static bool add_user(cdir_t *c, const char *name, bool exclusive)
{
    struct waiter w;

    waiter_init(&w);
    cr_assert_eq(cdir_user_add(c, name, exclusive, on_add, &w), 0);
    waiter_wait(&w);
    cr_assert(w.ok);
    return !w.taken;
}

static bool online(cdir_t *c, const char *name)
{
    struct waiter w;

    waiter_init(&w);
    cr_assert_eq(cdir_user_online(c, name, on_online, &w), 0);
    waiter_wait(&w);
    cr_assert(w.ok);
    return w.online;
}

/* Poll online(name) until it is want (another node's steps reach Redis on
 * that node's connection: no order with ours). */
static bool online_until(cdir_t *c, const char *name, bool want, int ms)
{
    int64_t end = now_mono_ms() + ms;

    while (online(c, name) != want)
        if (now_mono_ms() > end)
            return false;
        else
            usleep(20000);
    return true;
}

/* Poll who(room) until it has (want) or lacks (!want) user. */
static bool who_until(cdir_t *c, const char *room, const char *user, bool want, int ms)
{
    int64_t end = now_mono_ms() + ms;
    struct waiter w;

    for (;;) {
        who(c, room, &w);
        if (has_user(&w, user) == want)
            return true;
        if (now_mono_ms() > end)
            return false;
        usleep(20000);
    }
}

/* ---- fixtures ---- */

static struct redis s1, s2;

static void one_shard(void)
{
    redis_start(&s1);
}

static void one_shard_stop(void)
{
    redis_stop(&s1);
}

static void two_shards(void)
{
    redis_start(&s1);
    redis_start(&s2);
}

static void two_shards_stop(void)
{
    redis_stop(&s1);
    redis_stop(&s2);
}

/* ---- tests ---- */

Test(cdir, presence_counts_nodes_and_publishes_once, .init = one_shard, .fini = one_shard_stop)
{
    const char *watch[] = {"lobby"};
    rds_t *obs = observe(s1.url, watch, 1);
    struct node a = node_up(s1.url, "A"), b = node_up(s1.url, "B");
    struct waiter w;

    cr_assert_eq(cdir_room_join(a.c, "lobby", "ann"), 0);
    cr_assert(rec_wait("r:{lobby} p+ann", 1, WAIT_MS));
    cr_assert_eq(cdir_room_join(b.c, "lobby", "ann"), 0); /* ann on a second node */
    cr_assert_eq(cdir_room_join(b.c, "lobby", "ann"), 0); /* said twice: still one */
    fence(b.c, "lobby");
    cr_assert_eq(cdir_room_leave(a.c, "lobby", "ann"), 0);
    who(a.c, "lobby", &w);
    cr_assert_eq(w.n, 1);
    cr_assert(has_user(&w, "ann"), "ann is still on B");
    cr_assert_eq(cdir_room_leave(b.c, "lobby", "ann"), 0);
    cr_assert(rec_wait("r:{lobby} p-ann", 1, WAIT_MS));
    cr_assert_eq(cdir_room_leave(b.c, "lobby", "ann"), 0); /* again: nothing */
    quiet();
    cr_assert_eq(rec_count("r:{lobby} p+ann"), 1);
    cr_assert_eq(rec_count("r:{lobby} p-ann"), 1);
    who(b.c, "lobby", &w);
    cr_assert_eq(w.n, 0);

    node_down(&a);
    node_down(&b);
    rds_close(obs);
}

Test(cdir, who_and_rooms_are_cluster_wide, .init = one_shard, .fini = one_shard_stop)
{
    struct node a = node_up(s1.url, "A"), b = node_up(s1.url, "B");
    redisContext *k = redis_direct(&s1);
    const struct cdir_room *rm;
    struct waiter w;

    cdir_room_join(a.c, "lobby", "ann");
    cdir_room_join(b.c, "lobby", "bob");
    cdir_room_join(b.c, "dev", "carol");
    cdir_room_join(a.c, "dm:ann:bob", "ann");
    cdir_room_join(a.c, "gone", "ann");
    cdir_room_leave(a.c, "gone", "ann");
    freeReplyObject(redisCommand(k, "SET r:{lobby}:seq 42"));
    fence(a.c, "lobby");
    fence(b.c, "lobby");

    who(b.c, "lobby", &w);
    cr_assert_eq(w.n, 2);
    cr_assert(has_user(&w, "ann") && has_user(&w, "bob"));
    who(a.c, "dm:ann:bob", &w);
    cr_assert_eq(w.n, 1);

    rooms(a.c, &w);
    cr_assert_eq(w.n, 2, "lobby and dev; no DM, no empty room");
    rm = find_room(&w, "lobby");
    cr_assert_not_null(rm);
    cr_assert_eq(rm->members, 2);
    cr_assert_eq(rm->seq, 42);
    rm = find_room(&w, "dev");
    cr_assert_not_null(rm);
    cr_assert_eq(rm->members, 1);
    cr_assert_eq(rm->seq, 0);
    /* the index holds only live rooms */
    cr_assert_eq(direct_int(k, "SCARD cdir:rooms"), 2);

    redisFree(k);
    node_down(&a);
    node_down(&b);
}

Test(cdir, exclusive_names_and_online, .init = one_shard, .fini = one_shard_stop)
{
    struct node a = node_up(s1.url, "A"), b = node_up(s1.url, "B");

    cr_assert(add_user(a.c, "ann", true));
    cr_assert_not(add_user(b.c, "ann", true), "A holds ann");
    cr_assert(online(b.c, "ann"));
    cr_assert_not(online(b.c, "zed"));
    cr_assert(add_user(b.c, "ann", false), "accounts mode: one user, many nodes");
    cr_assert_eq(cdir_user_del(a.c, "ann"), 0);
    cr_assert(online(a.c, "ann"), "still on B");
    cr_assert_eq(cdir_user_del(b.c, "ann"), 0);
    cr_assert_not(online(b.c, "ann"));
    cr_assert(online_until(a.c, "ann", false, WAIT_MS));
    cr_assert(add_user(b.c, "ann", true));

    /* a dead node's names do not count, even before its cleanup */
    cr_assert(add_user(a.c, "dora", true));
    node_kill(&a);
    cr_assert(online_until(b.c, "dora", false, DEAD_BOUND_MS));
    cr_assert(add_user(b.c, "dora", true));
    node_down(&b);
}

/* A node dies; two survivors race to clean it up: its leaves are
 * announced once, within the bound, and only for users nobody else holds. */
Test(cdir, dead_node_cleaned_up_once, .init = one_shard, .fini = one_shard_stop)
{
    const char *watch[] = {"lobby", "dev"};
    rds_t *obs = observe(s1.url, watch, 2);
    struct node a = node_up(s1.url, "A"), b = node_up(s1.url, "B"), c = node_up(s1.url, "C");
    redisContext *k = redis_direct(&s1);
    struct cdir_stats sb, sc;
    struct waiter w;

    cdir_room_join(a.c, "lobby", "ann");
    cdir_room_join(a.c, "lobby", "dora");
    cdir_room_join(a.c, "dev", "dora");
    cdir_room_join(b.c, "lobby", "ann");
    fence(b.c, "lobby");
    cr_assert(add_user(a.c, "dora", false));
    cr_assert(rec_wait("r:{dev} p+dora", 1, WAIT_MS));

    int64_t t0 = now_mono_ms();
    node_kill(&a);
    cr_assert(rec_wait("r:{lobby} p-dora", 1, DEAD_BOUND_MS), "not within %d ms", DEAD_BOUND_MS);
    cr_assert(rec_wait("r:{dev} p-dora", 1, WAIT_MS));
    cr_log_info("dead node's leaves announced after %lld ms", (long long)(now_mono_ms() - t0));
    quiet();
    cr_assert_eq(rec_count("r:{lobby} p-dora"), 1);
    cr_assert_eq(rec_count("r:{dev} p-dora"), 1);
    cr_assert_eq(rec_count("r:{lobby} p-ann"), 0, "B still holds ann");
    who(c.c, "lobby", &w);
    cr_assert_eq(w.n, 1);
    cr_assert(has_user(&w, "ann"));
    cr_assert_not(online(c.c, "dora"));

    cdir_stats(b.c, &sb);
    cdir_stats(c.c, &sc);
    cr_assert_eq(sb.cleanups + sc.cleanups, 1, "cleaned up by exactly one survivor");
    cr_assert_eq(sb.leaves_announced + sc.leaves_announced, 2);
    int64_t end = now_mono_ms() + WAIT_MS;
    while (sb.nodes_alive != 2 && now_mono_ms() < end) { /* B's latest scan may predate */
        usleep(50000);
        cdir_stats(b.c, &sb);
    }
    cr_assert_eq(sb.nodes_alive, 2);
    cr_assert_eq(sb.script_failures + sc.script_failures, 0);
    /* nothing of A is left */
    cr_assert_eq(direct_int(k, "EXISTS node:A node:A:rp node:A:rp.old node:A:names "
                               "node:A:names.old"),
                 0);
    cr_assert_eq(direct_int(k, "SISMEMBER cdir:nodes A"), 0);
    cr_assert_eq(direct_int(k, "SISMEMBER cdir:rooms dev"), 0);

    redisFree(k);
    node_down(&b);
    node_down(&c);
    rds_close(obs);
}

/* A node stops without goodbye and starts again with the same id: what the
 * previous run left is removed one ttl later (its leaves announced), what
 * the new run adds stays, and a user back by then makes no flap. */
Test(cdir, restart_with_same_id_cleans_the_previous_run, .init = one_shard, .fini = one_shard_stop)
{
    const char *watch[] = {"lobby"};
    rds_t *obs = observe(s1.url, watch, 1);
    struct node a = node_up(s1.url, "A");
    struct waiter w;

    cdir_room_join(a.c, "lobby", "ann");
    cdir_room_join(a.c, "lobby", "bob");
    cr_assert(add_user(a.c, "ann", true));
    cr_assert(rec_wait("r:{lobby} p+bob", 1, WAIT_MS));
    node_kill(&a);

    a = node_up(s1.url, "A");            /* at once: the old heartbeat has not expired */
    cdir_room_join(a.c, "lobby", "ann"); /* ann reconnected, bob did not */
    int64_t t0 = now_mono_ms();
    cr_assert(rec_wait("r:{lobby} p-bob", 1, WAIT_MS));
    cr_assert_geq(now_mono_ms() - t0, TTL_MS / 2, "cleaned up at once");
    quiet();
    who(a.c, "lobby", &w);
    cr_assert_eq(w.n, 1);
    cr_assert(has_user(&w, "ann"));
    cr_assert_eq(rec_count("r:{lobby} p-bob"), 1);
    cr_assert_eq(rec_count("r:{lobby} p-ann"), 0, "ann came back before the cleanup");
    cr_assert_eq(rec_count("r:{lobby} p+ann"), 1);
    cr_assert_not(online(a.c, "ann"), "the previous run's name was released");

    node_down(&a);
    rds_close(obs);
}

Test(cdir, goodbye_announces_leaves_and_leaves_nothing, .init = one_shard, .fini = one_shard_stop)
{
    const char *watch[] = {"lobby"};
    rds_t *obs = observe(s1.url, watch, 1);
    struct node a = node_up(s1.url, "A"), b = node_up(s1.url, "B");
    redisContext *k = redis_direct(&s1);

    cdir_room_join(a.c, "lobby", "ann");
    cdir_room_join(a.c, "lobby", "bob");
    cdir_room_join(b.c, "lobby", "bob");
    fence(b.c, "lobby");
    cr_assert(add_user(a.c, "ann", true));
    int64_t t0 = now_mono_ms();
    node_down(&a);
    cr_assert_lt(now_mono_ms() - t0, 2500);
    cr_assert(rec_wait("r:{lobby} p-ann", 1, WAIT_MS));
    quiet();
    cr_assert_eq(rec_count("r:{lobby} p-bob"), 0);
    cr_assert_not(online(b.c, "ann"));
    cr_assert_eq(direct_int(k, "EXISTS node:A node:A:rp node:A:rp.old node:A:names "
                               "node:A:names.old"),
                 0);
    cr_assert_eq(direct_int(k, "SISMEMBER cdir:nodes A"), 0);

    redisFree(k);
    node_down(&b);
    rds_close(obs);
}

/* Redis lost our records (say, restarted without persistence): the next
 * heartbeat finds our key gone and the node announces again what it holds. */
Test(cdir, lost_records_are_announced_again, .init = one_shard, .fini = one_shard_stop)
{
    const char *watch[] = {"lobby"};
    rds_t *obs = observe(s1.url, watch, 1);
    struct node a = node_up(s1.url, "A");
    redisContext *k = redis_direct(&s1);
    struct cdir_stats st;

    cdir_room_join(a.c, "lobby", "ann");
    cr_assert(add_user(a.c, "ann", true));
    cr_assert(rec_wait("r:{lobby} p+ann", 1, WAIT_MS));
    freeReplyObject(redisCommand(k, "FLUSHALL"));
    cr_assert(rec_wait("r:{lobby} p+ann", 2, TTL_MS + 1000), "not announced again");
    cr_assert(who_until(a.c, "lobby", "ann", true, WAIT_MS));
    cr_assert(online(a.c, "ann"));
    cdir_stats(a.c, &st);
    cr_assert_geq(st.replays, 1);

    redisFree(k);
    node_down(&a);
    rds_close(obs);
}

/* Rooms land on both shards; who, rooms and the dead-node cleanup cover
 * both. */
Test(cdir, two_shards, .init = two_shards, .fini = two_shards_stop)
{
    char urls[160], r0[16] = "", r1[16] = "";

    snprintf(urls, sizeof(urls), "%s,%s", s1.url, s2.url);
    rds_t *probe = open_rds(urls, false);
    cr_assert_eq(rds_nshards(probe), 2);
    for (int i = 0; i < 1000 && (!*r0 || !*r1); i++) {
        char name[16];
        snprintf(name, sizeof(name), "room%d", i);
        size_t sh = rds_shard(probe, name, strlen(name));
        snprintf(sh == 0 ? r0 : r1, 16, "%s", name);
    }
    rds_close(probe);
    cr_assert(*r0 && *r1, "no room name on each shard");

    const char *watch[] = {r0, r1};
    rds_t *obs = observe(urls, watch, 2);
    struct node a = node_up(urls, "A"), b = node_up(urls, "B");
    char ev0[64], ev1[64];
    struct waiter w;

    cdir_room_join(a.c, r0, "ann");
    cdir_room_join(a.c, r1, "ann");
    cdir_room_join(b.c, r1, "bob");
    fence(a.c, r0);
    fence(a.c, r1);
    rooms(b.c, &w);
    cr_assert_eq(w.n, 2);
    cr_assert_eq(find_room(&w, r0)->members, 1);
    cr_assert_eq(find_room(&w, r1)->members, 2);
    who(b.c, r1, &w);
    cr_assert_eq(w.n, 2);

    node_kill(&a);
    snprintf(ev0, sizeof(ev0), "r:{%s} p-ann", r0);
    snprintf(ev1, sizeof(ev1), "r:{%s} p-ann", r1);
    cr_assert(rec_wait(ev0, 1, DEAD_BOUND_MS));
    cr_assert(rec_wait(ev1, 1, DEAD_BOUND_MS));
    quiet();
    cr_assert_eq(rec_count(ev0), 1);
    cr_assert_eq(rec_count(ev1), 1);
    rooms(b.c, &w);
    cr_assert_eq(w.n, 1);
    cr_assert_str_eq(w.rooms[0].name, r1);

    node_down(&b);
    rds_close(obs);
}

/* Start node id on urls: 0 and the node in *n, or the error (err says). */
static int try_start(const char *urls, const char *id, struct node *n, char *err, size_t errsz)
{
    n->r = open_rds(urls, false);
    n->c = cdir_new(n->r, id, TTL_MS, err, errsz);
    cr_assert_not_null(n->c, "cdir_new: %s", err);
    int rc = cdir_start(n->c, err, errsz);
    if (rc != 0)
        node_down(n);
    return rc;
}

/* Nodes listing the shards differently would place rooms differently: a
 * node whose list differs from a live node's refuses to start, and may
 * once every node with the old list is gone. */
Test(cdir, a_different_shard_list_is_refused_while_a_node_lives, .init = two_shards,
     .fini = two_shards_stop)
{
    char ab[160], ba[160], err[512] = "";
    snprintf(ab, sizeof(ab), "%s,%s", s1.url, s2.url);
    snprintf(ba, sizeof(ba), "%s,%s", s2.url, s1.url);
    struct node a = node_up(ab, "A"), same = node_up(ab, "B"), other;

    cr_assert_eq(try_start(ba, "C", &other, err, sizeof(err)), -EINVAL);
    cr_log_info("refused: %s", err);
    cr_assert(strstr(err, "'A'") || strstr(err, "'B'"), "names the live node: %s", err);
    cr_assert(strstr(err, ab), "shows the cluster's list: %s", err);
    cr_assert(strstr(err, ba), "shows this node's list: %s", err);
    /* one shard of the two is another list as well */
    cr_assert_eq(try_start(s1.url, "D", &other, err, sizeof(err)), -EINVAL, "%s", err);

    /* the old list's nodes are gone (one without goodbye: its key expires
     * with the ttl): the new list is the cluster's now */
    node_down(&same);
    node_kill(&a);
    int64_t end = now_mono_ms() + TTL_MS + WAIT_MS;
    int rc;
    while ((rc = try_start(ba, "C", &other, err, sizeof(err))) != 0 && now_mono_ms() < end)
        usleep(100000);
    cr_assert_eq(rc, 0, "%s", err);
    node_down(&other);
}

Test(cdir, bad_arguments, .init = one_shard, .fini = one_shard_stop)
{
    char err[256], big[CDIR_NAME_MAX + 2];
    rds_t *r = open_rds(s1.url, false);
    struct node a;

    cr_assert_null(cdir_new(NULL, "A", 0, err, sizeof(err)));
    cr_assert_null(cdir_new(r, "", 0, err, sizeof(err)));
    cr_assert_null(cdir_new(r, "a{b}", 0, err, sizeof(err)), "a hash tag in the id");
    cr_assert_null(cdir_new(r, "A", 100, err, sizeof(err)), "ttl under 300 ms");
    rds_close(r);

    a = node_up(s1.url, "A");
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(cdir_room_join(a.c, big, "ann"), -EINVAL);
    cr_assert_eq(cdir_room_join(a.c, "lobby", "a\nb"), -EINVAL);
    cr_assert_eq(cdir_room_leave(a.c, "lobby", ""), -EINVAL);
    cr_assert_eq(cdir_user_add(a.c, big, false, NULL, NULL), -EINVAL);
    cr_assert_eq(cdir_who(a.c, "lobby", NULL, NULL), -EINVAL);
    big[CDIR_NAME_MAX] = '\0'; /* the longest name works */
    cr_assert_eq(cdir_room_join(a.c, big, "ann"), 0);
    fence(a.c, big);
    node_down(&a);
}
