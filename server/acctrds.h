/*
 * acctrds — accounts and the names ever seen, in Redis, for a cluster: the
 * calls of store_accounts.h with the same contract, so a user registered
 * on one node logs in on another and `parleyd user del` on any node
 * revokes everywhere (each node's broker polls acctrds_users_gen).
 *
 * Where: on ONE Redis, the first of --engine's list, not spread over the
 * shards like rooms. A running server finds account changes by one number
 * (the generation), and "every change after generation g" is a range read
 * only while one counter orders all changes; accounts are small (a hash of
 * a few short fields per name) and rarely written, so one server holds
 * millions of them and sees a handful of writes a second.
 *
 * Keys, all under one hash tag so every script touches one slot (on a
 * Redis Cluster too; the scripts name per-user keys they build from the
 * tag, which a cluster accepts within one slot):
 *   {parley:acct}:names    zset, every name ever seen or registered, score 0
 *                          (read in name order, a page at a time)
 *   {parley:acct}:gens     zset, name -> generation of its last account change
 *   {parley:acct}:gen      the newest generation (INCR)
 *   {parley:acct}:u:<name> hash of a name with account state: h (password
 *                          hash; absent: no account), e (e-mail), ta
 *                          (tokens_after ms), d (deleted_at ms), g (generation)
 * Every change of more than one key is one Lua script (atomic). Times
 * (deleted_at, tokens_after) come from the writing process's clock, as with
 * SQLite; STORE_REVOKE_MARGIN_MS covers the commit and small clock skew
 * between nodes. Names are sent as binary-safe arguments, never formatted
 * into a command.
 *
 * Connections: hiredis's synchronous API (these calls never run on an I/O
 * loop). A pool of idle connections under a mutex held only to take or
 * return one; a caller that finds none opens its own (callers are few:
 * login workers, main, the seen worker), so no caller ever waits for
 * another's round trip. Every call has the open's timeout; a connection
 * that failed is closed, and the idle ones with it (after a Redis restart
 * they are all stale): the next call connects again.
 *
 * acctrds_user_seen never blocks: it queues (bounded) to the module's
 * worker thread, which writes what is queued in one pipeline and calls
 * each done() there.
 *
 * Threads: open/close on main; load_users/users_gen on main (any thread
 * works; the contract asks no more); user_seen on any (never blocks); the
 * account calls on any thread but an I/O loop.
 */
#ifndef PARLEY_ACCTRDS_H
#define PARLEY_ACCTRDS_H

#include <stddef.h>
#include <stdint.h>

#include "store_accounts.h"

typedef struct acctrds acctrds_t;

/* Names queued for the seen worker before acctrds_user_seen says -EAGAIN. */
#define ACCTRDS_SEEN_QUEUE_MAX 65536

/* url: "redis://HOST:PORT[/DB]" (of a comma-separated list, the first);
 * password NULL or "": none; timeout_ms bounds the connect and every call.
 * Connects once (AUTH, SELECT, PING) and loads the scripts. Thread: main.
 * NULL with a message in err when the URL is malformed or Redis cannot be
 * reached. */
acctrds_t *acctrds_open(const char *url, const char *password, int timeout_ms, char *err,
                        size_t errsz);
/* Refuse new seen names, write the queued ones (each within the timeout),
 * join the worker, close every connection. NULL ok. Thread: main. */
void acctrds_close(acctrds_t *a);

/* store_load_users: every name (since_gen 0) or the names whose account
 * changed after since_gen. Read a page at a time (each page one atomic
 * script); with since_gen 0 a gen newer than the first page's counter is
 * reported as that counter, so a change made during the walk is found
 * again by the next call with since_gen. Thread: main. 0 or -1. */
int acctrds_load_users(acctrds_t *a, uint64_t since_gen,
                       void (*cb)(void *arg, const struct store_user *u), void *arg);
/* store_users_gen: one GET. Thread: main. 0 or -EIO. */
int acctrds_users_gen(acctrds_t *a, uint64_t *gen);
/* store_user_seen: queued; done() runs on the module's worker thread with
 * status 0 or -EIO. 0, -EINVAL, -EAGAIN (queue full), -ESHUTDOWN. Thread: any. */
int acctrds_user_seen(acctrds_t *a, struct store_user_seen *u);

/* The blocking account calls, as store_accounts.h (a storage error is
 * -EIO: Redis unreachable, timed out, or an error reply). Thread: any but
 * an I/O loop. */
int acctrds_account_add(acctrds_t *a, const struct store_account_add *add);
int acctrds_account_passwd(acctrds_t *a, const char *name, const char *password_hash);
int acctrds_account_del(acctrds_t *a, const char *name);
int acctrds_account_get(acctrds_t *a, const char *name, char *hash, size_t hashsz, char *email,
                        size_t emailsz, int64_t *tokens_after_ms);

#endif
