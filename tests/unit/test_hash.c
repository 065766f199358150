/*
 * Unit tests for hash: SipHash known-answer vectors in 2-4 mode (the paper's)
 * and 1-3 mode (the mode the tables use), a cross-check of 1-3 against
 * OpenSSL's own SipHash on random keys and lengths, and the point of the
 * module: 100,000 names built to share one bucket of the old unkeyed hash
 * spread over the buckets of the keyed one.
 */
#include <criterion/criterion.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fnvcollide.h"
#include "hash.h"

/* key 00 01 .. 0f and message 00 01 .. (len-1), as in the paper's example */
static void seq_key(struct hash_key *k)
{
    unsigned char b[16];
    for (int i = 0; i < 16; i++)
        b[i] = (unsigned char)i;
    hash_key_from_bytes(k, b);
}

static void seq_msg(unsigned char *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        m[i] = (unsigned char)i;
}

/* SipHash's output as bytes: the 64-bit result, little-endian */
static void le_bytes(uint64_t v, unsigned char out[8])
{
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(v >> (8 * i));
}

struct vec {
    size_t len;
    unsigned char out[8];
};

Test(hash, siphash24_paper_vector)
{
    /* Aumasson & Bernstein, "SipHash: a fast short-input PRF", appendix A:
     * key 00..0f, the 15-byte message 00..0e, SipHash-2-4 = a129ca6149be45e5 */
    struct hash_key k;
    unsigned char m[15];
    seq_key(&k);
    seq_msg(m, sizeof(m));
    cr_assert_eq(hash_siphash(&k, m, sizeof(m), 2, 4), 0xa129ca6149be45e5ull);
}

/* SipHash-c-d of the first len bytes of 00 01 02 .. under the key 00 .. 0f,
 * against each vector; for 1-3, hash_bytes (what the tables use) too. */
static void check_vectors(const struct vec *v, size_t n, unsigned c, unsigned d)
{
    struct hash_key k;
    unsigned char m[64], out[8];
    seq_key(&k);
    seq_msg(m, sizeof(m));
    for (size_t i = 0; i < n; i++) {
        uint64_t h = hash_siphash(&k, m, v[i].len, c, d);
        le_bytes(h, out);
        cr_assert_eq(memcmp(out, v[i].out, 8), 0, "SipHash-%u-%u of %zu bytes", c, d,
                     v[i].len);
        if (c == 1 && d == 3)
            cr_assert_eq(hash_bytes(&k, m, v[i].len), h);
    }
}

Test(hash, siphash24_vectors)
{
    /* Same key and message pattern, the lengths around the 8-byte word edges.
     * The empty, 1- and 15-byte outputs are those of the reference
     * implementation's published vector table; all were also produced with
     * an implementation independent of ours, OpenSSL 3's SIPHASH MAC:
     *   head -c LEN of 00 01 02 .. | openssl mac -macopt
     *   hexkey:000102030405060708090a0b0c0d0e0f -macopt size:8 SIPHASH */
    static const struct vec v[] = {
        {0, {0x31, 0x0e, 0x0e, 0xdd, 0x47, 0xdb, 0x6f, 0x72}},
        {1, {0xfd, 0x67, 0xdc, 0x93, 0xc5, 0x39, 0xf8, 0x74}},
        {7, {0x37, 0xd1, 0x01, 0x8b, 0xf5, 0x00, 0x02, 0xab}},
        {8, {0x62, 0x24, 0x93, 0x9a, 0x79, 0xf5, 0xf5, 0x93}},
        {9, {0xb0, 0xe4, 0xa9, 0x0b, 0xdf, 0x82, 0x00, 0x9e}},
        {15, {0xe5, 0x45, 0xbe, 0x49, 0x61, 0xca, 0x29, 0xa1}},
        {16, {0xdb, 0x9b, 0xc2, 0x57, 0x7f, 0xcc, 0x2a, 0x3f}},
        {63, {0x72, 0x45, 0x06, 0xeb, 0x4c, 0x32, 0x8a, 0x95}},
    };
    check_vectors(v, sizeof(v) / sizeof(v[0]), 2, 4);
}

Test(hash, siphash13_vectors)
{
    /* SipHash-1-3 has no vector table of its own in the paper; these come
     * from OpenSSL 3's SIPHASH MAC with its round counts set, the same
     * command as above plus -macopt c-rounds:1 -macopt d-rounds:3. The code
     * path is the one the 2-4 vectors check, with other round counts. */
    static const struct vec v[] = {
        {0, {0xdc, 0xc4, 0x0f, 0x05, 0x58, 0x01, 0xac, 0xab}},
        {1, {0x93, 0xca, 0x57, 0x7d, 0xf3, 0x9b, 0xf4, 0xc9}},
        {7, {0x40, 0x11, 0xb1, 0x9b, 0x98, 0x7d, 0x92, 0xd3}},
        {8, {0x8e, 0x9a, 0x29, 0x8d, 0x11, 0x95, 0x90, 0x36}},
        {9, {0xe4, 0x3d, 0x06, 0x6c, 0xb3, 0x8e, 0xa4, 0x25}},
        {15, {0x56, 0x99, 0x51, 0x2a, 0x6d, 0xd8, 0x20, 0xd3}},
        {16, {0x66, 0x8b, 0x90, 0x7d, 0x1a, 0xdd, 0x4f, 0xcc}},
        {63, {0xa8, 0xb3, 0xbb, 0xb7, 0x62, 0x90, 0x19, 0x9d}},
    };
    check_vectors(v, sizeof(v) / sizeof(v[0]), 1, 3);
}

Test(hash, str_is_bytes_without_nul)
{
    struct hash_key k;
    seq_key(&k);
    cr_assert_eq(hash_str(&k, ""), hash_bytes(&k, "", 0));
    cr_assert_eq(hash_str(&k, "general"), hash_bytes(&k, "general", 7));
    cr_assert_neq(hash_str(&k, "general"), hash_bytes(&k, "general", 8));
}

/* OpenSSL's SipHash (EVP_MAC "SIPHASH") with 1-3 rounds, as a 64-bit value */
static uint64_t openssl_sip13(const unsigned char key[16], const unsigned char *m, size_t n)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    cr_assert_not_null(mac);
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    cr_assert_not_null(ctx);
    unsigned int c = 1, d = 3;
    size_t size = 8;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
        OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_C_ROUNDS, &c),
        OSSL_PARAM_construct_uint(OSSL_MAC_PARAM_D_ROUNDS, &d),
        OSSL_PARAM_construct_end(),
    };
    unsigned char out[8];
    size_t outl = 0;
    cr_assert_eq(EVP_MAC_init(ctx, key, 16, params), 1);
    cr_assert_eq(EVP_MAC_update(ctx, m, n), 1);
    cr_assert_eq(EVP_MAC_final(ctx, out, &outl, sizeof(out)), 1);
    cr_assert_eq(outl, 8);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)out[i] << (8 * i);
    return v;
}

Test(hash, siphash13_matches_openssl_on_random_input)
{
    unsigned char key[16], m[200];
    struct hash_key k;
    for (int round = 0; round < 20; round++) {
        cr_assert_eq(RAND_bytes(key, sizeof(key)), 1);
        cr_assert_eq(RAND_bytes(m, sizeof(m)), 1);
        hash_key_from_bytes(&k, key);
        for (size_t n = 0; n <= 70; n++)
            cr_assert_eq(hash_bytes(&k, m, n), openssl_sip13(key, m, n), "length %zu", n);
        cr_assert_eq(hash_bytes(&k, m, sizeof(m)), openssl_sip13(key, m, sizeof(m)));
    }
}

Test(hash, random_keys_differ)
{
    struct hash_key a, b;
    hash_key_random(&a);
    hash_key_random(&b);
    cr_assert(a.k0 != b.k0 || a.k1 != b.k1, "two draws gave the same 128-bit key");
    cr_assert_neq(hash_str(&a, "general"), hash_str(&b, "general"));
}

/* The tables' bucket count for 100,000 names: each doubles at load factor
 * 1, from 16 or 64 buckets, so 100,000 entries live in 131,072 buckets. */
#define NAMES 100000
#define BUCKETS ((size_t)1 << 17)
/* With a uniformly random hash, 100,000 names in 131,072 buckets give a
 * longest chain of 8 or 9; P(some chain >= 13) = 131072 * P(Poisson(0.763)
 * >= 13) < 1e-6 per key. About 70,000 buckets are used (1 - e^-0.763 of
 * them, standard deviation under 200); 65,000 is a floor no key misses. */
#define MAX_CHAIN 12
#define MIN_USED 65000

static char (*crafted_names(void))[FNVC_LEN + 1]
{
    static char pairs[FNVC_STAGES][2][FNVC_BLOCK];
    char(*names)[FNVC_LEN + 1] = malloc(NAMES * sizeof(*names));
    cr_assert_not_null(names);
    cr_assert_eq(fnvc_pairs(pairs), 0, "no colliding blocks found");
    for (size_t i = 0; i < NAMES; i++)
        fnvc_name(pairs, i, names[i]);
    return names;
}

static void chains(const uint32_t *len, size_t *max, size_t *used)
{
    *max = *used = 0;
    for (size_t i = 0; i < BUCKETS; i++) {
        if (len[i] > *max)
            *max = len[i];
        *used += len[i] != 0;
    }
}

Test(hash, crafted_fnv_collisions_spread, .timeout = 120)
{
    char(*names)[FNVC_LEN + 1] = crafted_names();
    uint32_t *len = calloc(BUCKETS, sizeof(*len));
    size_t max, used;
    cr_assert_not_null(len);

    /* The names are real: distinct, and one bucket of the old hash at every
     * table size up to 131,072 buckets. */
    uint64_t low = fnvc_fnv1a64(names[0]) & (BUCKETS - 1);
    for (size_t i = 0; i < NAMES; i++) {
        cr_assert_eq(strlen(names[i]), FNVC_LEN);
        cr_assert_eq(fnvc_fnv1a64(names[i]) & (BUCKETS - 1), low, "%s", names[i]);
        len[fnvc_fnv1a64(names[i]) & (BUCKETS - 1)]++;
    }
    chains(len, &max, &used);
    cr_assert_eq(max, NAMES, "old hash: one chain of all names");
    cr_assert_eq(used, 1);
    cr_assert_str_neq(names[0], names[1]);
    cr_assert_str_neq(names[NAMES - 2], names[NAMES - 1]);

    /* The keyed hash: several random keys, as tables draw them. */
    for (int key = 0; key < 4; key++) {
        struct hash_key k;
        hash_key_random(&k);
        memset(len, 0, BUCKETS * sizeof(*len));
        for (size_t i = 0; i < NAMES; i++)
            len[hash_str(&k, names[i]) & (BUCKETS - 1)]++;
        chains(len, &max, &used);
        cr_log_info("keyed hash, key %d: longest chain %zu, %zu buckets used", key, max, used);
        cr_assert_leq(max, MAX_CHAIN, "key %d: longest chain %zu", key, max);
        cr_assert_geq(used, MIN_USED, "key %d: only %zu buckets used", key, used);
    }
    free(len);
    free(names);
}
