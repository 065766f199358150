/*
 * store_accounts — accounts and the names ever seen, in the store's file.
 *
 * Not part of the event-log seam (store.h): these are the SQLite engine's
 * blocking calls for accounts (`parleyd user ...`, POST /api/register,
 * logins) and the users table the broker loads at start and polls for
 * changes. An engine without accounts answers -ENOTSUP (the fake store
 * answers "no users"). In a cluster (issue 17) accounts move to the shared
 * engine behind these same calls.
 *
 * Threads: store_load_users/store_users_gen on the main thread only;
 * store_user_seen on any (never blocks); the account calls on any thread
 * but an I/O loop (they wait for the disk).
 */
#ifndef PARLEY_STORE_ACCOUNTS_H
#define PARLEY_STORE_ACCOUNTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "store_op.h"

/* A row of the users table: every name ever seen, with its account state. */
struct store_user {
    const char *name;
    const char *email;       /* the account's address, "" if none; NULL: no account */
    int64_t tokens_after_ms; /* tokens issued at or before this time are refused; 0: none */
    bool deleted;            /* `parleyd user del`: the name stays reserved */
    uint64_t gen;            /* account generation of its last change (0: never changed) */
};
/* Every user name seen (since_gen 0), or only the names whose account
 * changed after generation since_gen (see store_users_gen). Thread: main.
 * 0 or -1. */
int store_load_users(store_t *s, uint64_t since_gen,
                     void (*cb)(void *arg, const struct store_user *u), void *arg);
/* Thread: main. The newest account generation: it grows with every change to
 * an account (registered, password, e-mail, deleted) by any process using
 * the file (`parleyd user ...` too). Cheap: nothing but PRAGMA data_version
 * when no connection has committed since the last call. 0 or -EIO. */
int store_users_gen(store_t *s, uint64_t *gen);

/* How far past a password change or a deletion tokens_after is set: beyond
 * the commit, so a login that read the old password cannot date its token
 * after the change. A login dates its token after tokens_after instead. */
#define STORE_REVOKE_MARGIN_MS 1000

/* Remember that a user name has been seen (insert or ignore), queued in
 * order with the event log's writes; same rules as store_append. */
struct store_user_seen {
    const char *name; /* owned by the submitter until done() */
    int status;       /* set before done() */
    void (*done)(struct store_user_seen *u); /* store thread; exactly once */
    void *arg;
    struct store_op op; /* private */
};
int store_user_seen(store_t *s, struct store_user_seen *u);

/* Thread: any but an I/O loop (they wait for the commit). */
struct store_account_add {
    const char *name;
    const char *password_hash;
    const char *email; /* NULL: none */
    bool adopt;        /* a name seen without an account (a token-only user) may get one
                          too (the operator's `user add`) */
};
/* 0; -EEXIST if the name was ever used (with adopt: if it has an account),
 * -EACCES (adopt) if it was deleted; -EINVAL, -ENOTSUP, or a storage error. */
int store_account_add(store_t *s, const struct store_account_add *a);
/* Change the password and revoke older tokens: 0, -ENOENT if no account. */
int store_account_passwd(store_t *s, const char *name, const char *password_hash);
/* Delete: no password, no e-mail, every token revoked, the name reserved for
 * good. 0, -ENOENT if the name was never seen. */
int store_account_del(store_t *s, const char *name);

/* Thread: any but an I/O loop (reads the disk on a connection of its own).
 * An account's password hash, email ("" if none) and tokens_after (ms, 0 if
 * none), from one snapshot; any out pointer may be NULL: 0, -ENOENT, or -EIO. */
int store_account_get(store_t *s, const char *name, char *hash, size_t hashsz, char *email,
                      size_t emailsz, int64_t *tokens_after_ms);

#endif
