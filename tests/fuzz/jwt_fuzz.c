/*
 * libFuzzer target for auth_jwt_verify. The first input byte picks what the
 * rest is, so the fuzzer reaches past the signature check instead of
 * stopping at "bad signature" every time:
 *   0: a whole token, as an attacker would send it;
 *   1: the payload JSON, wrapped in a valid header and correctly signed here;
 *   2: the header JSON, with a valid payload, correctly signed here.
 * Whatever the input: the result is one of the documented codes, the same
 * twice, sub is empty on failure and a valid user name on success, exp is
 * in the future on success, and a correctly signed token never fails with
 * "bad signature".
 *
 * Build and run (not part of meson; seeds in tests/fuzz/corpus/jwt):
 *   clang-14 -g -fsanitize=fuzzer,address,undefined -Iserver tests/fuzz/jwt_fuzz.c \
 *       server/auth.c server/util.c server/log.c -lcrypto -ljansson -o /tmp/jf
 *   /tmp/jf -max_total_time=20 tests/fuzz/corpus/jwt
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned char KEY[] = "fuzz-key-fuzz-key-fuzz-key-fuzz-key!";
#define KEYLEN (sizeof(KEY) - 1)
#define NOW 1700000000

static void check(int cond)
{
    if (!cond)
        abort();
}

/* base64url without padding via OpenSSL's encoder (independent of auth's).
 * out needs 4 * ((n + 2) / 3) + 1 bytes. Returns the length. */
static size_t b64url(const unsigned char *in, size_t n, char *out)
{
    int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (char *p = out; *p; p++)
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    return (size_t)len;
}

/* A correctly signed token from header and payload bytes; malloc'd. */
static char *sign(const unsigned char *h, size_t hn, const unsigned char *p, size_t pn)
{
    char *t = malloc(4 * ((hn + 2) / 3) + 4 * ((pn + 2) / 3) + 64);
    unsigned char mac[32];
    unsigned int maclen = 0;
    size_t n = b64url(h, hn, t);

    t[n++] = '.';
    n += b64url(p, pn, t + n);
    check(HMAC(EVP_sha256(), KEY, (int)KEYLEN, (unsigned char *)t, n, mac, &maclen) != NULL);
    t[n++] = '.';
    b64url(mac, maclen, t + n);
    return t;
}

static int run(const char *token)
{
    char sub[AUTH_SUB_MAX], sub2[AUTH_SUB_MAX];
    int64_t exp = 0, exp2 = 0;
    int rc = auth_jwt_verify(KEY, KEYLEN, token, NOW, sub, sizeof(sub), &exp, NULL);
    int rc2 = auth_jwt_verify(KEY, KEYLEN, token, NOW, sub2, sizeof(sub2), &exp2, NULL);

    check(rc == rc2);
    check(rc == 0 || rc == AUTH_EMALFORMED || rc == AUTH_EALG || rc == AUTH_ESIG ||
          rc == AUTH_EEXPIRED || rc == AUTH_ECLAIMS);
    check(strcmp(auth_jwt_strerror(rc), "unknown error") != 0);
    if (rc == 0) {
        check(auth_user_name_ok(sub) && strcmp(sub, sub2) == 0);
        check(exp > NOW && exp == exp2);
        check(strlen(token) <= AUTH_JWT_MAX);
    } else {
        check(sub[0] == '\0');
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    static const char payload[] = "{\"sub\":\"alice\",\"iat\":1699999999,\"exp\":1700000600}";
    char *token;

    if (size < 1 || size > 8192)
        return 0;
    switch (data[0] % 3) {
    case 0:
        /* exact size and NUL-terminated, so ASan sees any over-read */
        token = malloc(size);
        memcpy(token, data + 1, size - 1);
        token[size - 1] = '\0';
        run(token);
        break;
    case 1:
        token = sign((const unsigned char *)header, sizeof(header) - 1, data + 1, size - 1);
        check(run(token) != AUTH_ESIG);
        break;
    default: {
        token = sign(data + 1, size - 1, (const unsigned char *)payload, sizeof(payload) - 1);
        int rc = run(token);
        check(rc != AUTH_ESIG && rc != AUTH_ECLAIMS && rc != AUTH_EEXPIRED);
        break;
    }
    }
    free(token);
    return 0;
}
