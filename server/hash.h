/*
 * hash — keyed hashing of names that clients choose (rooms, users, ids), so
 * nobody can craft keys that share one bucket of our hash tables.
 *
 * SipHash-1-3 (one compression round per 8-byte word, three finalization
 * rounds) with a 128-bit key, written from the algorithm's published
 * description (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
 * 2012). Without the key, where a name lands is not predictable, so chains
 * stay as short as for random keys whatever names are chosen. 1-3 rather
 * than the paper's 2-4: a table needs collision resistance against an
 * attacker who never sees a hash value, not a MAC; 1-3 is the variant
 * common hash tables use for that, and it is faster on short names.
 *
 * Each table draws its own key when it is created (hash_key_random), so no
 * key is shared state and two tables never share their collisions. A leaf
 * module: pure functions apart from the random key.
 */
#ifndef PARLEY_HASH_H
#define PARLEY_HASH_H

#include <stddef.h>
#include <stdint.h>

struct hash_key {
    uint64_t k0, k1; /* the 16 key bytes, read as two little-endian words */
};

/* Fill key from the OpenSSL CSPRNG (util_random_bytes). A failure aborts,
 * like an allocation failure: a table without an unpredictable key is the
 * defect this module exists to prevent, and it cannot happen on a Linux
 * system whose kernel has seeded its random pool. Thread: any. */
void hash_key_random(struct hash_key *key);

/* The key from 16 bytes, as the SipHash description reads them (for tests
 * and reproducible hashing). Thread: any. */
void hash_key_from_bytes(struct hash_key *key, const unsigned char bytes[16]);

/* SipHash-1-3 of n bytes at p. Thread: any. */
uint64_t hash_bytes(const struct hash_key *key, const void *p, size_t n);

/* SipHash-1-3 of a NUL-terminated string (without the NUL). Thread: any. */
uint64_t hash_str(const struct hash_key *key, const char *s);

/* SipHash-c-d with any round counts: the same code path as hash_bytes, so
 * it can be checked against the paper's SipHash-2-4 vectors. Thread: any. */
uint64_t hash_siphash(const struct hash_key *key, const void *p, size_t n, unsigned crounds,
                      unsigned drounds);

#endif
