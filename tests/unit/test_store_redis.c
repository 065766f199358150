/*
 * store_redis against a redis-server the test starts (redis_proc.c): what
 * the engine hands its sink when pub/sub and the log disagree. The test
 * writes the log entries and publishes the events itself (as the append
 * script would), so it controls what arrives while a gap fill is in flight.
 */
#include <criterion/criterion.h>

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "redis_proc.h"
#include "store.h"
#include "store_redis.h"

#define ROOM "hold"
/* more than the engine holds while a fill is in flight (HOLD_MAX) */
#define NPUB 6000
/* seq 1 is big, so the fill that reads it is still arriving while the
 * events published after it are read from the subscription */
#define BIG (8u << 20)

static struct redis_proc R;
static char tmpdir[4096];

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t last; /* last seq the sink got */
    int n, bad;    /* events; those out of order or repeated */
    int subs;      /* subscriptions done */
    int sub_status;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void on_event(void *arg, const char *user, const struct room_event *ev, struct msg *json)
{
    pthread_mutex_lock(&S.mu);
    if (ev->seq != S.last + 1)
        S.bad++;
    S.last = ev->seq;
    S.n++;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
}

static void on_sub(struct store_sub *sub)
{
    pthread_mutex_lock(&S.mu);
    S.subs++;
    S.sub_status = sub->status;
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
}

/* Wait (bounded) until the sink got seq `want`; the last seq it got. */
static uint64_t wait_seq(uint64_t want, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    pthread_mutex_lock(&S.mu);
    while (S.last < want && pthread_cond_timedwait(&S.cv, &S.mu, &dl) == 0)
        ;
    uint64_t last = S.last;
    pthread_mutex_unlock(&S.mu);
    return last;
}

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/parley-srtest-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    cr_assert_eq(redis_proc_start(&R, NULL, false), 0);
}

static void teardown(void)
{
    redis_proc_stop(&R);
    char p[4200];
    snprintf(p, sizeof(p), "%s/parley.db", tmpdir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/parley.db-wal", tmpdir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/parley.db-shm", tmpdir);
    unlink(p);
    rmdir(tmpdir);
}

static store_t *open_engine(void)
{
    char path[4200], url[128], err[512] = "";
    snprintf(path, sizeof(path), "%s/parley.db", tmpdir);
    struct store_opts lo = {.path = path, .readers = 1};
    store_t *local = store_open(&lo, err, sizeof(err));
    cr_assert_not_null(local, "store_open: %s", err);
    struct store_redis_opts o = {.urls = redis_proc_url(&R, 0, url, sizeof(url)),
                                 .history_max = 100000, .idempotency_ttl_s = 60,
                                 .local = local};
    store_t *s = store_redis_open(&o, err, sizeof(err));
    cr_assert_not_null(s, "store_redis_open: %s", err);
    struct store_sink sk = {.event = on_event};
    store_set_sink(s, &sk);
    return s;
}

static void xadd(redisContext *rc, uint64_t seq, const char *text, size_t len)
{
    char id[32];
    snprintf(id, sizeof(id), "%llu-0", (unsigned long long)seq);
    const char *argv[] = {"XADD", "r:{" ROOM "}:log", id, "f", "bob", "t", "1", "i", "", "x", text};
    size_t lens[] = {4, strlen(argv[1]), strlen(id), 1, 3, 1, 1, 1, 0, 1, len};
    redisAppendCommandArgv(rc, 11, argv, lens);
}

Test(store_redis, events_past_the_hold_limit_during_a_fill_are_not_stranded,
     .init = setup, .fini = teardown, .timeout = 120)
{
    redisContext *rc = redis_proc_connect(&R);
    cr_assert_not_null(rc);
    store_t *s = open_engine();
    struct store_sub sub = {.room = ROOM, .done = on_sub};
    cr_assert_eq(store_subscribe(s, &sub), 0);
    pthread_mutex_lock(&S.mu);
    for (int i = 0; i < 500 && !S.subs; i++) {
        pthread_mutex_unlock(&S.mu);
        usleep(10000);
        pthread_mutex_lock(&S.mu);
    }
    cr_assert_eq(S.subs, 1);
    cr_assert_eq(S.sub_status, 0);
    pthread_mutex_unlock(&S.mu);

    /* the log has every seq (1 is big); pub/sub misses seq 1, so seq 2
     * starts a fill of 1, and the rest arrive while it is read */
    char *big = malloc(BIG);
    memset(big, 'x', BIG);
    xadd(rc, 1, big, BIG);
    free(big);
    for (uint64_t q = 2; q <= NPUB + 1; q++)
        xadd(rc, q, "t", 1);
    for (uint64_t q = 2; q <= NPUB + 1; q++) {
        char pl[160];
        int n = snprintf(pl, sizeof(pl),
                         "m%llu\n{\"type\":\"message\",\"room\":\"" ROOM "\",\"seq\":%llu,"
                         "\"from\":\"bob\",\"text\":\"t\",\"ts\":1}",
                         (unsigned long long)q, (unsigned long long)q);
        redisAppendCommand(rc, "PUBLISH r:{" ROOM "} %b", pl, (size_t)n);
    }
    for (uint64_t q = 0; q < 2 * (uint64_t)NPUB + 1; q++) {
        redisReply *rep = NULL;
        cr_assert_eq(redisGetReply(rc, (void **)&rep), REDIS_OK);
        cr_assert(rep->type != REDIS_REPLY_ERROR, "%s", rep->str);
        freeReplyObject(rep);
    }
    /* nothing more is published: every seq must still reach the sink */
    uint64_t last = wait_seq(NPUB + 1, 20000);
    cr_assert_eq(last, NPUB + 1, "the sink stopped at seq %llu of %d",
                 (unsigned long long)last, NPUB + 1);
    pthread_mutex_lock(&S.mu);
    cr_assert_eq(S.bad, 0);
    cr_assert_eq(S.n, NPUB + 1);
    pthread_mutex_unlock(&S.mu);
    store_unsubscribe(s, ROOM);
    store_close(s);
    redisFree(rc);
}
