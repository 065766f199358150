/*
 * accounts — see accounts.h. A pool of worker threads drains a bounded fair
 * queue of requests (fairq: one FIFO per client address, served in turn);
 * a worker may block on scrypt and on the database, which is the point:
 * nothing here ever runs on an event loop except accounts_submit (the
 * throttles and the queue: memory only) and the token check (one HMAC).
 *
 * Throttling happens in submit, before a request costs a hash: a login
 * takes a slot in the per-name and the per-address throttle (throttle.c:
 * backoff after failed logins, one login per name in flight), every request
 * takes a token from its address's bucket (ratelimit.c, GCRA) and a place
 * in the queue within its address's share. The worker gives the slots back
 * with the login's outcome before it answers, so the next request already
 * sees a failure. The workers also sweep the throttles' expired entries
 * every SWEEP_MS.
 */
#include "accounts.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "config.h"
#include "fairq.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "server.h"
#include "store.h"
#include "store_accounts.h"
#include "throttle.h"
#include "util.h"

/* Names and addresses each throttle remembers at most (and address
 * buckets): about 100 bytes each. Failures are what fills them, and each
 * costs a hash, so a pool of a few threads cannot fill them faster than
 * entries expire (LOGIN_FORGET_MS). */
#define THROTTLE_KEYS_MAX 65536
/* A name's or address's failures are forgotten after this long quiet. */
#define LOGIN_FORGET_MS (15 * 60 * 1000)
/* The first backoff; each further failure doubles it. */
#define LOGIN_BACKOFF_BASE_MS 1000
/* How often a worker sweeps the throttles' expired entries. */
#define SWEEP_MS 10000
/* The service time assumed until the workers have measured one. */
#define DEFAULT_JOB_US 100000

struct accounts {
    struct server *srv;
    accounts_user_added_fn *user_added; /* fixed; may be NULL */
    void *user_added_arg;
    unsigned char key[256];
    size_t keylen;
    /* A real hash of a random password: unknown users are "verified" against
     * it so a login costs the same whether or not the name exists. */
    char dummy_hash[256];

    pthread_t *threads;
    int nthreads, started;
    pthread_mutex_t lock;
    pthread_cond_t cond;   /* CLOCK_MONOTONIC, for the sweep's timed wait */
    fairq_t *q;            /* {lock} */
    size_t running;        /* {lock} requests being worked on */
    bool stopping;         /* {lock} */
    int64_t last_sweep_ms; /* {lock} */

    throttle_t *names;                  /* failed logins per user name */
    throttle_t *addrs;                  /* failed logins per client address */
    ratelimit_t *rate;                  /* login/register requests per client address */
    _Atomic int64_t last_rate_sweep_ms; /* the bucket map was full: swept then */
    _Atomic int64_t job_us;             /* average time of a request on a worker (EWMA) */
};

void acct_req_free(struct acct_req *r)
{
    if (!r)
        return;
    credentials_release(&r->cred);
    free(r);
}

/* ---- the worker ---- */

static void answer(struct acct_req *r, int status, const char *body)
{
    r->http_status = status;
    str_lcpy(r->body, body, sizeof(r->body));
}

static void do_register(struct accounts *a, struct acct_req *r)
{
    char hash[256];
    const struct credentials *c = &r->cred;

    if (auth_hash_password(c->password, strlen(c->password), hash, sizeof(hash)) != 0) {
        answer(r, 500, "{\"error\":\"internal\",\"message\":\"cannot hash the password\"}");
        return;
    }
    struct store_account_add add = {.name = c->user, .password_hash = hash, .email = c->email};
    int rc = store_account_add(a->srv->store, &add);
    if (rc == -EEXIST) {
        answer(r, 409, "{\"error\":\"taken\",\"message\":\"that user name is taken\"}");
    } else if (rc != 0) {
        answer(r, 500, "{\"error\":\"internal\",\"message\":\"cannot store the account\"}");
    } else {
        if (a->user_added)
            a->user_added(a->user_added_arg, c->user, c->email ? c->email : "");
        log_info("accounts", "registered '%s'", c->user);
        answer(r, 201, "{\"ok\":true}");
    }
}

static void do_login(struct accounts *a, struct acct_req *r)
{
    char hash[256], token[AUTH_JWT_MAX];
    const struct credentials *c = &r->cred;
    int64_t exp_ms, tokens_after = 0;
    /* the token is dated from before the read, and after the tokens the
     * row revoked: a password change that commits after this read revokes
     * it (see STORE_REVOKE_MARGIN_MS) */
    int64_t iat_ms = now_wall_ms();

    int rc = store_account_get(a->srv->store, c->user, hash, sizeof(hash), NULL, 0,
                               &tokens_after);
    bool ok;
    if (rc == 0 && hash[0]) {
        ok = auth_verify_password(c->password, strlen(c->password), hash);
    } else {
        auth_verify_password(c->password, strlen(c->password), a->dummy_hash);
        ok = false;
    }
    if (rc != 0 && rc != -ENOENT) {
        answer(r, 500, "{\"error\":\"internal\",\"message\":\"cannot read accounts\"}");
        return;
    }
    if (!ok) {
        METRIC_INC(&a->srv->metrics, auth_failures_total);
        answer(r, 401, "{\"error\":\"auth_failed\",\"message\":\"wrong user or password\"}");
        return;
    }
    if (iat_ms <= tokens_after)
        iat_ms = tokens_after + 1;
    if (accounts_sign(a, c->user, iat_ms, a->srv->cfg->token_ttl, token, sizeof(token),
                      &exp_ms) != 0) {
        answer(r, 500, "{\"error\":\"internal\",\"message\":\"cannot sign a token\"}");
        return;
    }
    snprintf(r->body, sizeof(r->body), "{\"token\":\"%s\",\"expires\":%" PRId64 "}", token,
             exp_ms);
    r->http_status = 200;
}

static void hand_back(struct acct_req *r)
{
    if (r->hand_back(r) != 0) {
        /* the loop is gone, and with it the connection that asked */
        atomic_store(&r->cancelled, true);
        r->done(r);
    }
}

/* Give back r's throttle slots with what came of it. Thread: any. */
static void release_slots(struct accounts *a, struct acct_req *r, enum throttle_outcome o)
{
    int64_t now = now_mono_ms();
    if (r->name_held)
        throttle_leave(a->names, r->cred.user, o, now);
    if (r->addr_held)
        throttle_leave(a->addrs, r->addr_key, o, now);
    r->name_held = r->addr_held = false;
}

static void sweep(struct accounts *a)
{
    int64_t now = now_mono_ms();
    throttle_sweep(a->names, now);
    throttle_sweep(a->addrs, now);
    /* a full bucket is the same as none: forgetting it loses nothing */
    ratelimit_sweep(a->rate, now_mono_ns(), 0);
}

/* Called with a->lock held; may drop it for the sweep. */
static void maybe_sweep_locked(struct accounts *a)
{
    int64_t now = now_mono_ms();
    if (now - a->last_sweep_ms < SWEEP_MS)
        return;
    a->last_sweep_ms = now;
    pthread_mutex_unlock(&a->lock);
    sweep(a);
    pthread_mutex_lock(&a->lock);
}

static void deadline_after_ms(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void work(struct accounts *a, struct acct_req *r, bool stopping)
{
    enum throttle_outcome o = THROTTLE_NONE;
    int64_t t0 = now_mono_ns();

    if (stopping || atomic_load(&r->cancelled)) {
        answer(r, 503, "{\"error\":\"shutting_down\",\"message\":\"server is stopping\"}");
    } else if (r->op == ACCT_REGISTER) {
        do_register(a, r);
    } else {
        do_login(a, r);
        o = r->http_status == 200   ? THROTTLE_SUCCESS
            : r->http_status == 401 ? THROTTLE_FAILURE
                                    : THROTTLE_NONE;
    }
    if (o != THROTTLE_NONE || r->op == ACCT_REGISTER) {
        /* only real work moves the average (not a 503 answered at once) */
        int64_t us = (now_mono_ns() - t0) / 1000;
        int64_t avg = atomic_load_explicit(&a->job_us, memory_order_relaxed);
        atomic_store_explicit(&a->job_us, avg + (us - avg) / 8, memory_order_relaxed);
    }
    /* before the answer goes out, so a retry already sees this failure */
    release_slots(a, r, o);
}

static void *worker_main(void *arg)
{
    struct accounts *a = arg;
    struct timespec deadline;

    pthread_mutex_lock(&a->lock);
    for (;;) {
        struct fairq_item *it = fairq_pop(a->q);
        if (!it) {
            if (a->stopping)
                break;
            deadline_after_ms(&deadline, SWEEP_MS);
            pthread_cond_timedwait(&a->cond, &a->lock, &deadline);
            maybe_sweep_locked(a);
            continue;
        }
        struct acct_req *r = (struct acct_req *)((char *)it - offsetof(struct acct_req, qi));
        bool stopping = a->stopping;
        a->running++;
        pthread_mutex_unlock(&a->lock);

        work(a, r, stopping);

        pthread_mutex_lock(&a->lock);
        fairq_done(a->q, it);
        a->running--;
        pthread_mutex_unlock(&a->lock);
        hand_back(r);
        pthread_mutex_lock(&a->lock);
        maybe_sweep_locked(a);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

/* Refuse r with 429: the status, the JSON body and when to come back. */
static int refuse(struct accounts *a, struct acct_req *r, int64_t retry_ms, const char *message)
{
    if (retry_ms < 1)
        retry_ms = 1;
    r->http_status = 429;
    r->retry_after_ms = retry_ms;
    snprintf(r->body, sizeof(r->body),
             "{\"error\":\"rate_limited\",\"message\":\"%s\",\"retry_after_ms\":%" PRId64 "}",
             message, retry_ms);
    release_slots(a, r, THROTTLE_NONE);
    return -EAGAIN;
}

/* When a place in the queue is likely free again: the work ahead of it
 * (depth waiting, shared by the workers) at the measured time per request. */
static int64_t queue_wait_ms(struct accounts *a, size_t depth)
{
    int64_t us = atomic_load_explicit(&a->job_us, memory_order_relaxed);
    return ((int64_t)depth / a->nthreads + 1) * us / 1000;
}

/* One token from the address's bucket; false (and *retry_ms) if there is
 * none. The bucket map is bounded like the throttles: when it holds
 * THROTTLE_KEYS_MAX addresses it is swept (at most once a second), and a
 * new address is refused while it stays full. */
static bool take_token(struct accounts *a, const char *key, int64_t *retry_ms, bool *full)
{
    int64_t now_ns = now_mono_ns();
    *full = false;
    if (ratelimit_count(a->rate) >= THROTTLE_KEYS_MAX &&
        ratelimit_tokens(a->rate, key, now_ns) >= a->srv->cfg->login_burst) {
        /* a new (or full, so as good as new) bucket while the map is full */
        int64_t now_ms = now_mono_ms();
        int64_t last = atomic_load(&a->last_rate_sweep_ms);
        if (now_ms - last >= 1000 &&
            atomic_compare_exchange_strong(&a->last_rate_sweep_ms, &last, now_ms))
            ratelimit_sweep(a->rate, now_ns, 0);
        if (ratelimit_count(a->rate) >= THROTTLE_KEYS_MAX) {
            *full = true;
            *retry_ms = 1000;
            return false;
        }
    }
    return ratelimit_take(a->rate, key, now_ns, retry_ms, NULL);
}

int accounts_submit(struct accounts *a, struct acct_req *r)
{
    struct metrics *m = &a->srv->metrics;
    int64_t now = now_mono_ms(), retry = 0;
    bool full;

    r->name_held = r->addr_held = false;
    throttle_addr_key(r->addr, r->addr_key, sizeof(r->addr_key));
    if (r->op == ACCT_LOGIN) {
        /* the address first: a sprayer backing off is refused whatever name
         * it tries next */
        switch (throttle_enter(a->addrs, r->addr_key, now, &retry)) {
        case THROTTLE_OK:
            r->addr_held = true;
            break;
        case THROTTLE_BLOCKED:
            METRIC_INC(m, login_throttled_total);
            return refuse(a, r, retry, "too many failed logins from your address, try later");
        default:
            METRIC_INC(m, login_queue_full_total);
            return refuse(a, r, 1000, "too many logins in progress, try later");
        }
        /* the same answer whether or not the user exists */
        switch (throttle_enter(a->names, r->cred.user, now, &retry)) {
        case THROTTLE_OK:
            r->name_held = true;
            break;
        case THROTTLE_BLOCKED:
            METRIC_INC(m, login_throttled_total);
            return refuse(a, r, retry, "too many failed logins for this user, try later");
        case THROTTLE_BUSY:
            METRIC_INC(m, login_throttled_total);
            return refuse(a, r, queue_wait_ms(a, 0),
                          "a login for this user is in progress, try again");
        default:
            METRIC_INC(m, login_queue_full_total);
            return refuse(a, r, 1000, "too many logins in progress, try later");
        }
    }
    if (!take_token(a, r->addr_key, &retry, &full)) {
        if (full)
            METRIC_INC(m, login_queue_full_total);
        else
            METRIC_INC(m, login_rate_limited_total);
        return refuse(a, r, retry, "too many requests from your address, slow down");
    }

    pthread_mutex_lock(&a->lock);
    if (a->stopping) {
        pthread_mutex_unlock(&a->lock);
        release_slots(a, r, THROTTLE_NONE);
        answer(r, 503, "{\"error\":\"shutting_down\",\"message\":\"server is stopping\"}");
        return -ESHUTDOWN;
    }
    int rc = fairq_push(a->q, r->addr_key, &r->qi);
    size_t depth = fairq_depth(a->q);
    if (rc == 0)
        pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
    if (rc == -EBUSY) {
        METRIC_INC(m, login_queue_full_total);
        return refuse(a, r, queue_wait_ms(a, depth),
                      "too many requests from your address are waiting, try again");
    }
    if (rc != 0) {
        METRIC_INC(m, login_queue_full_total);
        return refuse(a, r, queue_wait_ms(a, depth), "the login queue is full, try again");
    }
    return 0;
}

void accounts_stats(struct accounts *a, struct accounts_stats *st)
{
    pthread_mutex_lock(&a->lock);
    st->queued = fairq_depth(a->q);
    st->running = a->running;
    pthread_mutex_unlock(&a->lock);
    st->throttle_entries =
        throttle_count(a->names) + throttle_count(a->addrs) + ratelimit_count(a->rate);
}

int accounts_verify_token(struct accounts *a, const char *token, char *user, size_t usersz,
                          int64_t *iat_ms)
{
    int64_t exp;
    return auth_jwt_verify(a->key, a->keylen, token, now_wall_ms() / 1000, user, usersz, &exp,
                           iat_ms);
}

const char *accounts_token_error(int rc)
{
    return auth_jwt_strerror(rc);
}

int accounts_sign(struct accounts *a, const char *user, int64_t iat_ms, int64_t ttl_s, char *out,
                  size_t outsz, int64_t *exp_ms)
{
    int64_t now = now_wall_ms() / 1000;
    *exp_ms = (now + ttl_s) * 1000;
    return auth_jwt_sign(a->key, a->keylen, user, iat_ms, now + ttl_s, out, outsz);
}

struct accounts *accounts_new(struct server *srv, accounts_user_added_fn *user_added,
                              void *user_added_arg, char *err, size_t errsz)
{
    const struct config *cfg = srv->cfg;
    struct accounts *a = xcalloc(1, sizeof(*a));
    char pw[2 * 24 + 1];

    a->srv = srv;
    a->user_added = user_added;
    a->user_added_arg = user_added_arg;
    pthread_mutex_init(&a->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->cond, &ca);
    pthread_condattr_destroy(&ca);
    a->q = fairq_new((size_t)cfg->login_queue, (size_t)cfg->login_queue_per_ip);
    struct throttle_opts to = {
        .limit = (unsigned)cfg->login_failures,
        .base_ms = LOGIN_BACKOFF_BASE_MS,
        .max_ms = cfg->login_max_backoff * 1000,
        .forget_ms = LOGIN_FORGET_MS,
        .max_inflight = 1, /* one login per name at a time: see throttle.h */
        .reset_on_success = true,
        .max_keys = THROTTLE_KEYS_MAX,
    };
    a->names = throttle_new(&to);
    /* an address's failures are not wiped by one good login (see throttle.h) */
    to.limit = (unsigned)cfg->login_failures_per_ip;
    to.max_inflight = 0; /* the queue's per-address share bounds these */
    to.reset_on_success = false;
    a->addrs = throttle_new(&to);
    a->rate = ratelimit_new(cfg->login_rate, cfg->login_burst);
    atomic_init(&a->job_us, DEFAULT_JOB_US);
    atomic_init(&a->last_rate_sweep_ms, INT64_MIN / 2);
    a->last_sweep_ms = now_mono_ms();
    if (auth_load_or_create_secret(cfg->token_secret_file, a->key, sizeof(a->key), &a->keylen,
                                   err, errsz) != 0)
        goto fail;
    util_random_hex(pw, 24);
    if (auth_hash_password(pw, strlen(pw), a->dummy_hash, sizeof(a->dummy_hash)) != 0) {
        snprintf(err, errsz, "cannot hash passwords (scrypt unavailable?)");
        goto fail;
    }
    a->nthreads = cfg->login_workers;
    a->threads = xcalloc((size_t)a->nthreads, sizeof(*a->threads));
    for (; a->started < a->nthreads; a->started++) {
        if (pthread_create(&a->threads[a->started], NULL, worker_main, a) != 0) {
            snprintf(err, errsz, "cannot start the accounts worker threads");
            goto fail;
        }
    }
    return a;
fail:
    accounts_free(a);
    return NULL;
}

void accounts_free(struct accounts *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    a->stopping = true;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    for (int i = 0; i < a->started; i++)
        pthread_join(a->threads[i], NULL);
    /* every queued request was answered 503 by the workers on their way out */
    free(a->threads);
    fairq_free(a->q);
    throttle_free(a->names);
    throttle_free(a->addrs);
    ratelimit_free(a->rate);
    OPENSSL_cleanse(a->key, sizeof(a->key));
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
