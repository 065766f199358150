/*
 * accounts — see accounts.h. One worker thread drains a bounded FIFO of
 * requests; it may block on scrypt and on the database, which is the point:
 * nothing here ever runs on an event loop except accounts_submit and the
 * token/admin checks (one HMAC, one memcmp).
 */
#include "accounts.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "broker.h"
#include "config.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "server.h"
#include "store.h"
#include "util.h"

#define QUEUE_MAX 1024

struct accounts {
    struct server *srv;
    unsigned char key[256];
    size_t keylen;
    char admin[256];
    size_t adminlen;   /* 0: no admin token configured */
    /* A real hash of a random password: unknown users are "verified" against
     * it so a login costs the same whether or not the name exists. */
    char dummy_hash[256];

    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct acct_req *head, **tail; /* {lock} */
    size_t depth;                  /* {lock} */
    bool stopping;                 /* {lock} */
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
    struct store_write w = {.kind = SW_ACCOUNT_ADD};
    w.password_hash = hash;
    w.email = c->email;
    w.msg.from = c->user;
    int rc = store_submit_wait(a->srv->store, &w);
    if (rc == -EEXIST) {
        answer(r, 409, "{\"error\":\"taken\",\"message\":\"that user name is taken\"}");
    } else if (rc != 0) {
        answer(r, 500, "{\"error\":\"internal\",\"message\":\"cannot store the account\"}");
    } else {
        broker_user_added(a->srv->broker, c->user, c->email ? c->email : "");
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
    if (loop_post(r->loop, (void (*)(void *))r->done, r) != 0) {
        /* the loop is gone, and with it the connection that asked */
        atomic_store(&r->cancelled, true);
        r->done(r);
    }
}

static void *worker_main(void *arg)
{
    struct accounts *a = arg;
    for (;;) {
        pthread_mutex_lock(&a->lock);
        while (!a->head && !a->stopping)
            pthread_cond_wait(&a->cond, &a->lock);
        struct acct_req *r = a->head;
        if (!r) {
            pthread_mutex_unlock(&a->lock);
            break;
        }
        a->head = r->next;
        if (!a->head)
            a->tail = &a->head;
        a->depth--;
        bool stopping = a->stopping;
        pthread_mutex_unlock(&a->lock);

        if (stopping || atomic_load(&r->cancelled))
            answer(r, 503, "{\"error\":\"shutting_down\",\"message\":\"server is stopping\"}");
        else if (r->op == ACCT_REGISTER)
            do_register(a, r);
        else
            do_login(a, r);
        hand_back(r);
    }
    return NULL;
}

int accounts_submit(struct accounts *a, struct acct_req *r)
{
    int rc = -1;
    r->next = NULL;
    pthread_mutex_lock(&a->lock);
    if (!a->stopping && a->depth < QUEUE_MAX) {
        *a->tail = r;
        a->tail = &r->next;
        a->depth++;
        pthread_cond_signal(&a->cond);
        rc = 0;
    }
    pthread_mutex_unlock(&a->lock);
    return rc;
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

bool accounts_admin_ok(struct accounts *a, const char *authorization)
{
    static const char prefix[] = "Bearer ";
    if (!a->adminlen || !authorization || strncmp(authorization, prefix, 7) != 0)
        return false;
    const char *t = authorization + 7;
    size_t n = strlen(t);
    return n == a->adminlen && CRYPTO_memcmp(t, a->admin, n) == 0;
}

int accounts_sign(struct accounts *a, const char *user, int64_t iat_ms, int64_t ttl_s, char *out,
                  size_t outsz, int64_t *exp_ms)
{
    int64_t now = now_wall_ms() / 1000;
    *exp_ms = (now + ttl_s) * 1000;
    return auth_jwt_sign(a->key, a->keylen, user, iat_ms, now + ttl_s, out, outsz);
}

struct accounts *accounts_new(struct server *srv, char *err, size_t errsz)
{
    const struct config *cfg = srv->cfg;
    struct accounts *a = xcalloc(1, sizeof(*a));
    unsigned char rnd[24];
    char pw[64];

    a->srv = srv;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    a->tail = &a->head;
    if (auth_load_or_create_secret(cfg->token_secret_file, a->key, sizeof(a->key), &a->keylen,
                                   err, errsz) != 0)
        goto fail;
    if (cfg->admin_token_file && cfg->admin_token_file[0]) {
        if (auth_load_token_file(cfg->admin_token_file, a->admin, sizeof(a->admin), err, errsz) !=
            0)
            goto fail;
        a->adminlen = strlen(a->admin);
    }
    RAND_bytes(rnd, sizeof(rnd));
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(pw + 2 * i, 3, "%02x", rnd[i]);
    if (auth_hash_password(pw, strlen(pw), a->dummy_hash, sizeof(a->dummy_hash)) != 0) {
        snprintf(err, errsz, "cannot hash passwords (scrypt unavailable?)");
        goto fail;
    }
    if (pthread_create(&a->thread, NULL, worker_main, a) != 0) {
        snprintf(err, errsz, "cannot start the accounts worker thread");
        goto fail;
    }
    a->started = true;
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
    if (a->started)
        pthread_join(a->thread, NULL);
    OPENSSL_cleanse(a->key, sizeof(a->key));
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    free(a);
}
