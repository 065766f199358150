/*
 * accounts — accounts mode (--auth accounts): the JWT secret, token checks,
 * and a worker thread for the slow parts (password hashing, account reads
 * and writes), so an event loop never hashes or touches the disk.
 *
 * An HTTP request becomes a struct acct_req that the loop submits; the
 * worker fills in the HTTP status and JSON body and hands the request back
 * to the loop it came from with loop_post, where done() answers it.
 */
#ifndef PARLEY_ACCOUNTS_H
#define PARLEY_ACCOUNTS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "codec.h"

struct server;
struct loop;
struct accounts;

enum acct_op { ACCT_REGISTER, ACCT_LOGIN };

struct acct_req {
    enum acct_op op;
    struct credentials cred;  /* owned; wiped when the request is freed */
    struct loop *loop;        /* where done() runs */
    void (*done)(struct acct_req *r); /* frees r (acct_req_free) */
    void *arg;
    _Atomic bool cancelled;   /* the asker went away: done() only frees */
    /* result, set by the worker */
    int http_status;
    char body[AUTH_JWT_MAX + 128];
    struct acct_req *next;    /* private */
};

/* Thread: main. Loads (or creates) the token secret and the admin token,
 * starts the worker. NULL with err on failure. */
struct accounts *accounts_new(struct server *srv, char *err, size_t errsz);
/* Thread: main, after the loops stopped. Joins the worker; queued requests
 * are answered 503. NULL is fine. */
void accounts_free(struct accounts *a);

/* Thread: any. Queue a request; 0, or -1 when the queue is full or stopping
 * (the caller keeps r and answers 503 itself). */
int accounts_submit(struct accounts *a, struct acct_req *r);
void acct_req_free(struct acct_req *r);

/* Thread: any (one HMAC). 0, the user name and the token's issue time in ms
 * (-1: unknown; see auth_jwt_verify), or a negative auth error. */
int accounts_verify_token(struct accounts *a, const char *token, char *user, size_t usersz,
                          int64_t *iat_ms);
const char *accounts_token_error(int rc);
/* Thread: any. True if header is "Bearer <admin token>" (constant time). */
bool accounts_admin_ok(struct accounts *a, const char *authorization);
/* Thread: any. Sign a token for user issued at iat_ms (ms since the epoch),
 * valid for ttl_s seconds from now. */
int accounts_sign(struct accounts *a, const char *user, int64_t iat_ms, int64_t ttl_s, char *out,
                  size_t outsz, int64_t *exp_ms);

#endif
