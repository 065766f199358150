/*
 * htable — the one hash table: intrusive, chained, keyed by string.
 *
 * The user embeds a struct hnode in its own struct and gets the struct back
 * from a node with htable_entry (container_of). The table owns no memory
 * but its bucket array: it never allocates or frees an entry, so the same
 * code serves a table of rooms, of per-user values, of notifications or of
 * strmap's (key, value) pairs.
 *
 * Keys are strings that the entry holds (the node points at them; they must
 * not change while the entry is in a table). They are hashed with the keyed
 * SipHash of hash.h under the table's own random key, drawn at
 * htable_init: names that clients choose cannot be crafted to share a chain.
 * The hash is kept in the node, so growing never rehashes a string and a
 * lookup compares strings only on a full 64-bit hash match.
 *
 * Buckets are a power of two; the table doubles and rehashes when an insert
 * would make the entries outnumber the buckets, so the load factor stays at
 * most 1 and chains stay short (it never shrinks: a table keeps the size of
 * its peak, which the owners bound).
 *
 * Not synchronised: the owner's lock guards the table and its nodes.
 */
#ifndef PARLEY_HTABLE_H
#define PARLEY_HTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hash.h"

struct hnode {
    struct hnode *next; /* in the table's chain */
    uint64_t hash;      /* of key, under the table's key */
    const char *key;    /* the entry's own string, set by htable_insert */
};

struct htable {
    struct hnode **b;
    size_t nb, count;
    struct hash_key key; /* this table's own, drawn at init */
};

/* The struct of type `type` whose member `member` is the node n. */
#define htable_entry(n, type, member) ((type *)((char *)(n) - offsetof(type, member)))

/* Empty table with at least min_buckets buckets (rounded up to a power of
 * two, at least 8) and a fresh random key. Allocation failure aborts.
 * Thread: any. */
void htable_init(struct htable *t, size_t min_buckets);
/* Free the bucket array. The entries are the owner's: remove or free them
 * first (htable_sweep does both in one pass). Thread: owner. */
void htable_fini(struct htable *t);

/* The node whose key equals key, or NULL. Thread: owner, under its lock
 * (a read lock is enough: lookup writes nothing). */
struct hnode *htable_find(const struct htable *t, const char *key);
/* key's hash under t's key. Thread: any, no lock: the key is fixed at init,
 * so a read-mostly owner can hash before it locks (usermap). */
uint64_t htable_hash(const struct htable *t, const char *key);
/* htable_find and htable_insert for a key already hashed with htable_hash. */
struct hnode *htable_find_hashed(const struct htable *t, const char *key, uint64_t h);
void htable_insert_hashed(struct htable *t, struct hnode *n, const char *key, uint64_t h);
/* Link n under key (a string that lives in n's entry and stays unchanged
 * while it is linked). The caller has looked for key first: a table holds
 * each key at most once. May grow the table. Thread: owner, write lock. */
void htable_insert(struct htable *t, struct hnode *n, const char *key);
/* Unlink n; returns false (and changes nothing) if n was not in t.
 * Thread: owner, write lock. */
bool htable_remove(struct htable *t, struct hnode *n);
/* Thread: owner, under its lock. */
size_t htable_count(const struct htable *t);

/* Iteration in bucket order: for (n = htable_first(t, &it); n; n = htable_next(&it)).
 * The table must not change during it (use htable_sweep to remove). */
struct htable_iter {
    const struct htable *t;
    size_t i;
    struct hnode *n;
};
struct hnode *htable_first(const struct htable *t, struct htable_iter *it);
struct hnode *htable_next(struct htable_iter *it);

/* Visit every node; when fn returns true the node is unlinked. fn may free
 * the entry before returning true (the table does not touch a node again
 * once fn has returned true for it), but must not otherwise change t.
 * Returns how many were removed. Thread: owner, write lock. */
size_t htable_sweep(struct htable *t, bool (*fn)(struct hnode *n, void *arg), void *arg);

/* Length of the longest chain, for tests of how keys spread. Thread: owner. */
size_t htable_longest_chain(const struct htable *t);

#endif
