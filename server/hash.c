/*
 * hash — see hash.h. SipHash as the paper describes it: four 64-bit state
 * words initialised from the key and four constants ("somepseudorandomly
 * generatedbytes" in ASCII), each 8-byte little-endian message word mixed
 * in with c SipRounds, the last word carrying the message length in its top
 * byte, then 0xff into v2 and d SipRounds; the result is v0^v1^v2^v3.
 */
#include "hash.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static inline uint64_t rotl(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

struct sip {
    uint64_t v0, v1, v2, v3;
};

static inline void sipround(struct sip *s)
{
    s->v0 += s->v1;
    s->v1 = rotl(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = rotl(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = rotl(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = rotl(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = rotl(s->v2, 32);
}

static inline void compress(struct sip *s, uint64_t m, unsigned crounds)
{
    s->v3 ^= m;
    for (unsigned i = 0; i < crounds; i++)
        sipround(s);
    s->v0 ^= m;
}

/* static inline, so hash_bytes gets a copy with its round counts folded in */
static inline uint64_t siphash(const struct hash_key *key, const unsigned char *p, size_t n,
                               unsigned crounds, unsigned drounds)
{
    struct sip s = {
        .v0 = key->k0 ^ 0x736f6d6570736575ull,
        .v1 = key->k1 ^ 0x646f72616e646f6dull,
        .v2 = key->k0 ^ 0x6c7967656e657261ull,
        .v3 = key->k1 ^ 0x7465646279746573ull,
    };
    const unsigned char *end = p + (n & ~(size_t)7);

    for (; p < end; p += 8)
        compress(&s, load_le64(p), crounds);

    /* the 0-7 bytes left, and the length mod 256 in the top byte */
    uint64_t last = (uint64_t)(n & 0xff) << 56;
    for (unsigned i = 0; i < (n & 7); i++)
        last |= (uint64_t)p[i] << (8 * i);
    compress(&s, last, crounds);

    s.v2 ^= 0xff;
    for (unsigned i = 0; i < drounds; i++)
        sipround(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

void hash_key_random(struct hash_key *key)
{
    unsigned char b[16];

    util_random_bytes(b, sizeof(b)); /* aborts if the random source fails */
    hash_key_from_bytes(key, b);
}

void hash_key_from_bytes(struct hash_key *key, const unsigned char bytes[16])
{
    key->k0 = load_le64(bytes);
    key->k1 = load_le64(bytes + 8);
}

uint64_t hash_bytes(const struct hash_key *key, const void *p, size_t n)
{
    return siphash(key, p, n, 1, 3);
}

uint64_t hash_str(const struct hash_key *key, const char *s)
{
    return siphash(key, (const unsigned char *)s, strlen(s), 1, 3);
}

uint64_t hash_siphash(const struct hash_key *key, const void *p, size_t n, unsigned crounds,
                      unsigned drounds)
{
    return siphash(key, p, n, crounds, drounds);
}
