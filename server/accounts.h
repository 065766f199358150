/*
 * accounts — accounts mode (--auth accounts): the JWT secret, token checks,
 * and a small pool of worker threads (--login-workers) for the slow parts
 * (password hashing, account reads and writes), so an event loop never
 * hashes or touches the disk.
 *
 * An HTTP request becomes a struct acct_req that the loop submits. Before
 * anything is hashed, submit throttles it on the loop: a client address or
 * user name backing off after failed logins, an address over its request
 * rate (--login-rate/--login-burst), an address holding its share of the
 * queue (--login-queue-per-ip) or a full queue (--login-queue) is refused
 * with 429 and the time to wait. The queue takes turns between addresses.
 * A worker fills in the HTTP status and JSON body, records a login's
 * outcome with the throttle, and hands the request back with the
 * submitter's hand_back (http.c: loop_post to the loop it came from), where
 * done() answers it. accounts calls nothing above it: a new account is
 * announced through the user_added hook main gives accounts_new.
 */
#ifndef PARLEY_ACCOUNTS_H
#define PARLEY_ACCOUNTS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "codec.h"
#include "fairq.h"

struct server;
struct accounts;

enum acct_op { ACCT_REGISTER, ACCT_LOGIN };

struct acct_req {
    enum acct_op op;
    struct credentials cred;  /* owned; wiped when the request is freed */
    /* Thread: a worker. Hand r over to where done() runs (the submitter's
     * thread); 0, or -1 if that is gone: done() is then called at once with
     * cancelled set. */
    int (*hand_back)(struct acct_req *r);
    void *home;               /* for hand_back: where done() runs (http.c: the loop) */
    void (*done)(struct acct_req *r); /* frees r (acct_req_free) */
    void *arg;
    char addr[64];            /* the client's address as text (set by the submitter) */
    _Atomic bool cancelled;   /* the asker went away: done() only frees */
    /* result, set by the worker (or by a refused submit) */
    int http_status;
    int64_t retry_after_ms;   /* > 0 on a 429: when to try again */
    char body[AUTH_JWT_MAX + 128];
    /* private */
    struct fairq_item qi;
    char addr_key[64];         /* what the address is throttled and queued under */
    bool name_held, addr_held; /* slots taken in the throttles */
};

struct accounts_stats {
    size_t queued;           /* waiting for a worker */
    size_t running;          /* being worked on */
    size_t throttle_entries; /* names and addresses the throttles hold */
};

/* Called on a worker when an account was registered (main: the broker's
 * user map, for no_such_user). Thread: a worker. */
typedef void accounts_user_added_fn(void *arg, const char *name, const char *email);

/* Thread: main. Loads (or creates) the token secret, starts the workers.
 * NULL with err on failure. (The admin token is the server's, in every
 * mode: main loads it.) user_added (with arg) may be NULL. */
struct accounts *accounts_new(struct server *srv, accounts_user_added_fn *user_added,
                              void *user_added_arg, char *err, size_t errsz);
/* Thread: main, after the loops stopped. Joins the workers; queued requests
 * are answered 503. NULL is fine. */
void accounts_free(struct accounts *a);

/* Thread: a loop (memory only: no hashing, no disk). Queue a request; 0,
 * or a negative errno when it is refused: -EAGAIN throttled or the queue
 * full (r holds 429, its JSON body and retry_after_ms), -ESHUTDOWN stopping
 * (503). On refusal the caller keeps r and answers from it. */
int accounts_submit(struct accounts *a, struct acct_req *r);
void acct_req_free(struct acct_req *r);
/* Thread: any. The queue and the throttles, for /metrics. */
void accounts_stats(struct accounts *a, struct accounts_stats *st);

/* Thread: any (one HMAC). 0, the user name and the token's issue time in ms
 * (-1: unknown; see auth_jwt_verify), or a negative auth error. */
int accounts_verify_token(struct accounts *a, const char *token, char *user, size_t usersz,
                          int64_t *iat_ms);
const char *accounts_token_error(int rc);
/* Thread: any. Sign a token for user issued at iat_ms (ms since the epoch),
 * valid for ttl_s seconds from now. */
int accounts_sign(struct accounts *a, const char *user, int64_t iat_ms, int64_t ttl_s, char *out,
                  size_t outsz, int64_t *exp_ms);

#endif
