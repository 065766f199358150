/*
 * fnvcollide — names built to collide in the hash the tables used before
 * they were keyed (FNV-1a, 64 bit, bucket = hash & (buckets - 1)), for the
 * tests that show the keyed hash spreads them. Header-only.
 *
 * How they are built (Joux's multicollision, on FNV's structure): FNV-1a
 * steps h = (h ^ byte) * prime mod 2^64, and both steps carry only upwards,
 * so the low k bits of the hash depend only on the low k bits of the state
 * before each byte. Starting from the offset basis, each stage looks for
 * two different 3-character blocks that take the same state to the same
 * low FNVC_BITS bits (a birthday search among 65^3 blocks into 2^17 values;
 * 2-character blocks never collide: the prime's low bits, 0x1b3, spread a
 * one-byte difference over more than 8 bits). A name is one block of each
 * stage's pair, chosen by a bit of its index, so the FNVC_STAGES stages
 * give 2^17 distinct names of 51 characters (valid room names) whose hashes
 * agree in the low 17 bits: all of them share one bucket of every table of
 * up to 131,072 buckets.
 * FNV-1a 32-bit has the same structure, and the same search breaks it.
 */
#ifndef PARLEY_FNVCOLLIDE_H
#define PARLEY_FNVCOLLIDE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FNVC_BITS 17
#define FNVC_STAGES FNVC_BITS                 /* one bit of the name's index per stage */
#define FNVC_COUNT ((size_t)1 << FNVC_STAGES) /* names available */
#define FNVC_BLOCK 3                          /* characters per stage */
#define FNVC_LEN (FNVC_BLOCK * FNVC_STAGES)   /* characters per name */

static const char fnvc_alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "0123456789_.-";

/* The old tables' hash (room registry and notify; strmap and usermap
 * xor-folded it, h ^ (h >> 29), before masking). */
static inline uint64_t fnvc_fnv1a64(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static inline uint64_t fnvc_step(uint64_t h, unsigned char c)
{
    return (h ^ c) * 1099511628211ull;
}

/* Fill pairs[stage][0..1] with the two colliding blocks of each stage
 * (each "xyz" without a NUL); returns 0, or -1 if a stage found no pair. */
static inline int fnvc_pairs(char pairs[FNVC_STAGES][2][FNVC_BLOCK])
{
    const uint64_t mask = ((uint64_t)1 << FNVC_BITS) - 1;
    const size_t na = sizeof(fnvc_alphabet) - 1;
    int32_t *seen = malloc(sizeof(*seen) << FNVC_BITS); /* low bits -> block index + 1 */
    uint64_t h = 1469598103934665603ull;
    int rc = 0;

    if (!seen)
        return -1;
    for (int st = 0; st < FNVC_STAGES && rc == 0; st++) {
        memset(seen, 0, sizeof(*seen) << FNVC_BITS);
        rc = -1;
        for (size_t i = 0; i < na * na * na && rc != 0; i++) {
            uint64_t t = h;
            for (size_t d = na * na; d; d /= na)
                t = fnvc_step(t, (unsigned char)fnvc_alphabet[i / d % na]);
            if (seen[t & mask] == 0) {
                seen[t & mask] = (int32_t)i + 1;
                continue;
            }
            size_t j = (size_t)seen[t & mask] - 1;
            for (size_t d = na * na, c = 0; d; d /= na, c++) {
                pairs[st][0][c] = fnvc_alphabet[j / d % na];
                pairs[st][1][c] = fnvc_alphabet[i / d % na];
            }
            /* both blocks leave the same low bits, which is all that later
             * stages' low bits depend on */
            h = t;
            rc = 0;
        }
    }
    free(seen);
    return rc;
}

/* Name number idx (< FNVC_COUNT) into out (FNVC_LEN + 1 bytes). */
static inline void fnvc_name(char pairs[FNVC_STAGES][2][FNVC_BLOCK], size_t idx, char *out)
{
    for (int st = 0; st < FNVC_STAGES; st++)
        memcpy(out + FNVC_BLOCK * st, pairs[st][(idx >> st) & 1], FNVC_BLOCK);
    out[FNVC_LEN] = '\0';
}

#endif
