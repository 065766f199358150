/*
 * auth — see auth.h. Owns no state: every call works on its arguments, so any
 * thread may use it (password hashing is slow and belongs on a worker).
 *
 * The JWT verifier reads the token in an order chosen so that nothing an
 * attacker wrote is trusted before the signature has been checked: the
 * syntax of all three parts (cheap, trusts nothing), then the header (only to
 * insist on HS256: we never let the token pick the algorithm), then the HMAC,
 * and only then the payload's claims.
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "log.h"
#include "util.h"

/* scrypt cost for new hashes: N = 2^15, r = 8, p = 1 takes 32 MiB and about
 * 110 ms of CPU on the 2-core development machine (measured while it was
 * busy), within the usual interactive-login budget; 2^14 would halve it. */
#define SCRYPT_LOGN 15
#define SCRYPT_R 8
#define SCRYPT_P 1
#define SCRYPT_SALT_LEN 16
#define SCRYPT_HASH_LEN 32
/* Bounds on what a stored string may ask for, so a corrupt or hostile row
 * cannot make one verification take gigabytes or minutes: at most 256 MiB
 * (128 * r * N) and 16 times the default work (N * r * p). */
#define SCRYPT_MAX_MEM (256ull << 20)
#define SCRYPT_MAX_WORK (16ull << 18)

/* Characters of unpadded base64 for n bytes. */
#define B64_LEN(n) (((n) * 4 + 2) / 3)

#define JWT_HMAC_LEN 32
/* Clock skew tolerated for iat and nbf. */
#define JWT_SKEW_S 60

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* ---- base64 without padding, strict ---------------------------------- */

/* Encode n bytes; out needs 4 * ((n + 2) / 3) + 1 bytes. Returns the length. */
static size_t b64_encode(const char *alpha, const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        out[o++] = alpha[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

static int b64_value(const char *alpha, unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (unsigned char)alpha[62])
        return 62;
    if (c == (unsigned char)alpha[63])
        return 63;
    return -1;
}

/*
 * Decode unpadded base64 strictly: only the alphabet's 64 characters (so '='
 * is refused), no length that leaves 1 spare character, and the unused low
 * bits of the last character must be zero — so each byte string has exactly
 * one accepted encoding and a token cannot be altered without changing what
 * it decodes to. Returns 0 with *outlen set, or -1.
 */
static int b64_decode(const char *alpha, const char *in, size_t n, unsigned char *out, size_t cap,
                      size_t *outlen)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;

    if (n % 4 == 1 || n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) > cap)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(alpha, (unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (acc & ((1u << bits) - 1))
        return -1;
    *outlen = o;
    return 0;
}

/* ---- passwords ------------------------------------------------------- */

static int scrypt_derive(const char *pw, size_t len, const unsigned char *salt, size_t saltlen,
                         unsigned logn, uint32_t r, uint32_t p, unsigned char *out, size_t outlen)
{
    uint64_t n = 1ull << logn;
    uint64_t maxmem = SCRYPT_MAX_MEM + (1ull << 20) * (uint64_t)p * r;
    int rc = -EIO;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
    EVP_KDF_CTX *ctx = NULL;

    if (!kdf)
        goto out;
    ctx = EVP_KDF_CTX_new(kdf);
    if (!ctx)
        goto out_kdf;

    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)(len ? pw : ""), len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, saltlen),
        OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
        OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
        OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p),
        OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_KDF_derive(ctx, out, outlen, params) == 1)
        rc = 0;

    EVP_KDF_CTX_free(ctx);
out_kdf:
    EVP_KDF_free(kdf);
out:
    return rc;
}

int auth_hash_password(const char *pw, size_t len, char *out, size_t outsz)
{
    unsigned char salt[SCRYPT_SALT_LEN], hash[SCRYPT_HASH_LEN];
    char salt64[(SCRYPT_SALT_LEN + 2) / 3 * 4 + 1], hash64[(SCRYPT_HASH_LEN + 2) / 3 * 4 + 1];
    int rc;

    if (outsz)
        out[0] = '\0';
    /* check the room first: no point spending 100 ms to fail */
    int head = snprintf(NULL, 0, "scrypt$%d$%d$%d$", SCRYPT_LOGN, SCRYPT_R, SCRYPT_P);
    if ((size_t)head + B64_LEN(SCRYPT_SALT_LEN) + 1 + B64_LEN(SCRYPT_HASH_LEN) + 1 > outsz)
        return -ENOSPC;
    if (RAND_bytes(salt, sizeof(salt)) != 1)
        return -EIO;
    rc = scrypt_derive(pw, len, salt, sizeof(salt), SCRYPT_LOGN, SCRYPT_R, SCRYPT_P, hash,
                       sizeof(hash));
    if (rc < 0)
        goto out;
    b64_encode(b64_std, salt, sizeof(salt), salt64);
    b64_encode(b64_std, hash, sizeof(hash), hash64);
    int n = snprintf(out, outsz, "scrypt$%d$%d$%d$%s$%s", SCRYPT_LOGN, SCRYPT_R, SCRYPT_P, salt64,
                     hash64);
    if (n < 0 || (size_t)n >= outsz) {
        if (outsz)
            out[0] = '\0';
        rc = -ENOSPC;
    }
out:
    OPENSSL_cleanse(hash, sizeof(hash));
    return rc;
}

/* Parse a decimal field of 1..3 digits without a leading zero, ending at '$'.
 * Advances *s past the '$'. Returns the value or -1. */
static long parse_field(const char **s)
{
    const char *p = *s;
    long v = 0;
    int digits = 0;

    if (*p == '0')
        return -1;
    while (*p >= '0' && *p <= '9' && digits < 3) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || *p != '$')
        return -1;
    *s = p + 1;
    return v;
}

bool auth_verify_password(const char *pw, size_t len, const char *stored)
{
    unsigned char salt[64], want[64], got[64];
    size_t saltlen, wantlen;
    bool ok = false;

    if (!stored || strncmp(stored, "scrypt$", 7) != 0)
        return false;
    const char *s = stored + 7;
    long logn = parse_field(&s);
    long r = parse_field(&s);
    long p = parse_field(&s);
    if (logn < 1 || logn > 30 || r < 1 || p < 1)
        return false;
    /* the cost bounds; no overflow since logn <= 30 and r, p <= 999 */
    uint64_t n = 1ull << logn;
    if (128ull * (uint64_t)r * n > SCRYPT_MAX_MEM ||
        n * (uint64_t)r * (uint64_t)p > SCRYPT_MAX_WORK)
        return false;

    const char *dollar = strchr(s, '$');
    if (!dollar || strchr(dollar + 1, '$'))
        return false;
    if (b64_decode(b64_std, s, (size_t)(dollar - s), salt, sizeof(salt), &saltlen) < 0 ||
        b64_decode(b64_std, dollar + 1, strlen(dollar + 1), want, sizeof(want), &wantlen) < 0)
        return false;
    if (saltlen < 8 || wantlen < 16)
        return false;
    if (scrypt_derive(pw, len, salt, saltlen, (unsigned)logn, (uint32_t)r, (uint32_t)p, got,
                      wantlen) < 0)
        goto out;
    ok = CRYPTO_memcmp(got, want, wantlen) == 0;
out:
    OPENSSL_cleanse(got, sizeof(got));
    return ok;
}

bool auth_password_ok(const char *pw)
{
    if (!pw)
        return false;
    size_t n = strnlen(pw, AUTH_PASSWORD_MAX + 1);
    return n >= AUTH_PASSWORD_MIN && n <= AUTH_PASSWORD_MAX;
}

bool auth_email_ok(const char *email)
{
    if (!email)
        return false;
    size_t n = strnlen(email, 255);
    if (n == 0 || n > 254 || utf8_count(email, n) < 0)
        return false;
    const char *at = strchr(email, '@');
    if (!at || strchr(at + 1, '@'))
        return false;
    size_t local = (size_t)(at - email);
    if (local == 0 || local > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)email[i];
        if (c <= 0x20 || c == 0x7f || strchr("\"(),:;<>[\\]", c))
            return false;
    }
    /* domain: non-empty labels of letters, digits, '-' or UTF-8 (IDN), and a dot */
    const char *d = at + 1;
    bool dot = false;
    size_t label = 0;
    for (; *d; d++) {
        unsigned char c = (unsigned char)*d;
        if (c == '.') {
            if (label == 0)
                return false;
            dot = true;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-' || c >= 0x80) {
            label++;
        } else {
            return false;
        }
    }
    return dot && label > 0;
}

bool auth_user_name_ok(const char *name)
{
    size_t n = 0;

    if (!name)
        return false;
    for (; name[n]; n++) {
        unsigned char c = (unsigned char)name[n];
        if (n >= 32)
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return n > 0;
}

/* ---- JWT ------------------------------------------------------------- */

static int hmac_sha256(const unsigned char *key, size_t keylen, const char *data, size_t n,
                       unsigned char mac[JWT_HMAC_LEN])
{
    unsigned int maclen = 0;

    if (keylen > INT32_MAX)
        return -1;
    if (!HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)data, n, mac, &maclen) ||
        maclen != JWT_HMAC_LEN)
        return -1;
    return 0;
}

int auth_jwt_sign(const unsigned char *key, size_t keylen, const char *sub, int64_t iat_ms,
                  int64_t exp, char *out, size_t outsz)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char payload[160], buf[AUTH_JWT_MAX];
    unsigned char mac[JWT_HMAC_LEN];
    size_t n;

    if (outsz)
        out[0] = '\0';
    if (!key || keylen == 0 || !auth_user_name_ok(sub) || iat_ms < 0)
        return -EINVAL;
    /* sub is a validated user name, so it needs no JSON escaping. iat_ms
     * says within which millisecond of iat the token was made, so it can be
     * told apart from a revocation in the same second (see auth.h) */
    int plen = snprintf(payload, sizeof(payload),
                        "{\"sub\":\"%s\",\"iat\":%" PRId64 ",\"iat_ms\":%" PRId64
                        ",\"exp\":%" PRId64 "}",
                        sub, iat_ms / 1000, iat_ms, exp);
    if (plen < 0 || (size_t)plen >= sizeof(payload))
        return -EINVAL;

    n = b64_encode(b64_url, (const unsigned char *)header, sizeof(header) - 1, buf);
    buf[n++] = '.';
    n += b64_encode(b64_url, (const unsigned char *)payload, (size_t)plen, buf + n);
    if (hmac_sha256(key, keylen, buf, n, mac) < 0)
        return -EINVAL;
    buf[n++] = '.';
    n += b64_encode(b64_url, mac, sizeof(mac), buf + n);
    if (n + 1 > outsz)
        return -ENOSPC;
    memcpy(out, buf, n + 1);
    return 0;
}

/* The token's three parts, located but not yet decoded. */
struct jwt_parts {
    const char *p[3];
    size_t n[3];
};

static int jwt_split(const char *token, struct jwt_parts *jp)
{
    size_t len = strnlen(token, AUTH_JWT_MAX + 1);
    const char *s = token;

    if (len == 0 || len > AUTH_JWT_MAX)
        return AUTH_EMALFORMED;
    for (int i = 0; i < 3; i++) {
        const char *dot = memchr(s, '.', len - (size_t)(s - token));
        if ((i < 2) != (dot != NULL))
            return AUTH_EMALFORMED; /* fewer or more than two dots */
        jp->p[i] = s;
        jp->n[i] = dot ? (size_t)(dot - s) : len - (size_t)(s - token);
        if (jp->n[i] == 0)
            return AUTH_EMALFORMED;
        if (dot)
            s = dot + 1;
    }
    return 0;
}

/* Parse a decoded part as one JSON object with no duplicate keys. */
static json_t *jwt_json(const unsigned char *raw, size_t n)
{
    json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);

    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static int check_header(json_t *h)
{
    json_t *alg = json_object_get(h, "alg"), *typ = json_object_get(h, "typ");

    /* compare with the length so "HS256\u0000..." cannot pass (jansson
     * already refuses \u0000 without JSON_ALLOW_NUL; belt and braces) */
    if (!json_is_string(alg) || json_string_length(alg) != 5 ||
        memcmp(json_string_value(alg), "HS256", 5) != 0)
        return AUTH_EALG;
    if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
        return AUTH_EMALFORMED;
    /* RFC 7515 4.1.11: extensions we do not understand must be refused */
    if (json_object_get(h, "crit"))
        return AUTH_EMALFORMED;
    return 0;
}

/* True if the optional time claim is absent, or an integer no more than the
 * allowed skew in the future. */
static bool time_claim_ok(json_t *payload, const char *name, int64_t now)
{
    json_t *v = json_object_get(payload, name);

    if (!v)
        return true;
    if (!json_is_integer(v))
        return false;
    json_int_t t = json_integer_value(v);
    return now > INT64_MAX - JWT_SKEW_S || t <= now + JWT_SKEW_S;
}

/* The issue time in ms: iat_ms if present (it must agree with iat), else
 * the first millisecond of iat's second, else -1 (unknown). Returns false
 * for an iat_ms that is not an integer or disagrees with iat. */
static bool issued_ms(json_t *pl, int64_t *out)
{
    json_t *iat = json_object_get(pl, "iat"), *ms = json_object_get(pl, "iat_ms");

    *out = -1;
    if (ms) {
        if (!json_is_integer(ms) || !iat || json_integer_value(ms) < 0 ||
            json_integer_value(ms) / 1000 != json_integer_value(iat))
            return false;
        *out = json_integer_value(ms);
    } else if (iat) {
        json_int_t t = json_integer_value(iat);
        /* before the epoch is before every revocation; the upper end is
         * bounded by the skew check */
        *out = t <= 0 ? 0 : t * 1000;
    }
    return true;
}

static int check_claims(json_t *pl, int64_t now, char *sub, size_t subsz, int64_t *exp_out,
                        int64_t *iat_ms_out)
{
    int64_t iat_ms;

    json_t *exp = json_object_get(pl, "exp"), *jsub = json_object_get(pl, "sub");

    if (!exp)
        return AUTH_EEXPIRED; /* a token that never expires is not one we issue */
    if (!json_is_integer(exp))
        return AUTH_ECLAIMS;
    if (json_integer_value(exp) <= now)
        return AUTH_EEXPIRED;
    if (!time_claim_ok(pl, "iat", now) || !time_claim_ok(pl, "nbf", now) ||
        !issued_ms(pl, &iat_ms))
        return AUTH_ECLAIMS;
    if (!json_is_string(jsub) || json_string_length(jsub) >= subsz ||
        !auth_user_name_ok(json_string_value(jsub)) ||
        strlen(json_string_value(jsub)) != json_string_length(jsub))
        return AUTH_ECLAIMS;
    memcpy(sub, json_string_value(jsub), json_string_length(jsub) + 1);
    if (exp_out)
        *exp_out = json_integer_value(exp);
    if (iat_ms_out)
        *iat_ms_out = iat_ms;
    return 0;
}

int auth_jwt_verify(const unsigned char *key, size_t keylen, const char *token, int64_t now,
                    char *sub, size_t subsz, int64_t *exp_out, int64_t *iat_ms_out)
{
    /* each part of a token of at most AUTH_JWT_MAX characters decodes to
     * at most 3/4 of that */
    unsigned char hraw[AUTH_JWT_MAX / 4 * 3], praw[AUTH_JWT_MAX / 4 * 3], sig[AUTH_JWT_MAX / 4 * 3];
    unsigned char mac[JWT_HMAC_LEN];
    size_t hn, pn, sn;
    struct jwt_parts jp;
    json_t *header = NULL, *payload = NULL;
    int rc;

    if (sub && subsz)
        sub[0] = '\0';
    if (!key || keylen == 0 || !sub || subsz < AUTH_SUB_MAX)
        return AUTH_EINVAL;
    if (!token)
        return AUTH_EMALFORMED;

    rc = jwt_split(token, &jp);
    if (rc < 0)
        goto out;
    rc = AUTH_EMALFORMED;
    if (b64_decode(b64_url, jp.p[0], jp.n[0], hraw, sizeof(hraw), &hn) < 0 ||
        b64_decode(b64_url, jp.p[1], jp.n[1], praw, sizeof(praw), &pn) < 0 ||
        b64_decode(b64_url, jp.p[2], jp.n[2], sig, sizeof(sig), &sn) < 0)
        goto out;

    header = jwt_json(hraw, hn);
    if (!header)
        goto out;
    rc = check_header(header);
    if (rc < 0)
        goto out_header;

    /* the signature covers the encoded header and payload exactly as sent */
    rc = AUTH_ESIG;
    if (hmac_sha256(key, keylen, token, jp.n[0] + 1 + jp.n[1], mac) < 0)
        goto out_header;
    if (sn != JWT_HMAC_LEN || CRYPTO_memcmp(sig, mac, JWT_HMAC_LEN) != 0)
        goto out_header;

    rc = AUTH_EMALFORMED;
    payload = jwt_json(praw, pn);
    if (!payload)
        goto out_header;
    rc = check_claims(payload, now, sub, subsz, exp_out, iat_ms_out);

    json_decref(payload);
out_header:
    json_decref(header);
out:
    return rc;
}

const char *auth_jwt_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "ok";
    case AUTH_EMALFORMED:
        return "malformed token";
    case AUTH_EALG:
        return "unsupported algorithm";
    case AUTH_ESIG:
        return "bad signature";
    case AUTH_EEXPIRED:
        return "token expired";
    case AUTH_ECLAIMS:
        return "invalid claims";
    case AUTH_EINVAL:
        return "invalid argument";
    default:
        return "unknown error";
    }
}

/* ---- secret and token files ----------------------------------------- */

/*
 * Read a small regular file whole into buf (at most cap bytes). Returns 0
 * with *len and *mode set, -ENOENT if it does not exist (err untouched), or
 * -1 with a message in err.
 */
static int read_small_file(const char *path, void *buf, size_t cap, size_t *len, mode_t *mode,
                           char *err, size_t errsz)
{
    struct stat st;
    size_t n = 0;
    int rc = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0) {
        if (errno == ENOENT)
            return -ENOENT;
        snprintf(err, errsz, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        snprintf(err, errsz, "cannot stat '%s': %s", path, strerror(errno));
        goto out_fd;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errsz, "'%s' is not a regular file", path);
        goto out_fd;
    }
    for (;;) {
        /* ask for one byte more than cap so a file that is too big is seen */
        char extra;
        ssize_t r = n < cap ? read(fd, (char *)buf + n, cap - n) : read(fd, &extra, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errsz, "cannot read '%s': %s", path, strerror(errno));
            goto out_fd;
        }
        if (r == 0)
            break;
        if (n >= cap) {
            snprintf(err, errsz, "'%s' is too large (more than %zu bytes)", path, cap);
            goto out_fd;
        }
        n += (size_t)r;
    }
    *len = n;
    *mode = st.st_mode;
    rc = 0;
out_fd:
    close(fd);
    return rc;
}

static size_t strip_newline(const void *buf, size_t n)
{
    const char *s = buf;

    if (n && s[n - 1] == '\n')
        n--;
    if (n && s[n - 1] == '\r')
        n--;
    return n;
}

static void warn_mode(const char *what, const char *path, mode_t mode)
{
    if (mode & 077)
        log_warn("auth", "%s '%s' is readable by others (mode %03o): chmod 600 it", what, path,
                 (unsigned)(mode & 0777));
}

static int write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Create path exclusively with a fresh hex key. Returns 0, -EEXIST if someone
 * else created it first, or -1 with err set. */
static int create_secret(const char *path, char hex[65], char *err, size_t errsz)
{
    int rc = -1;

    util_random_hex(hex, 32);
    hex[64] = '\n';

    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return -EEXIST;
        snprintf(err, errsz, "cannot create '%s': %s", path, strerror(errno));
        return -1;
    }
    /* fsync: a key that vanished in a crash would log every user out */
    if (write_all(fd, hex, 65) < 0 || fsync(fd) < 0) {
        snprintf(err, errsz, "cannot write '%s': %s", path, strerror(errno));
        goto out_unlink;
    }
    if (close(fd) < 0) {
        fd = -1;
        snprintf(err, errsz, "cannot write '%s': %s", path, strerror(errno));
        goto out_unlink;
    }
    log_info("auth", "created a new secret key in '%s'", path);
    return 0;

out_unlink:
    if (fd >= 0)
        close(fd);
    unlink(path);
    return rc;
}

int auth_load_or_create_secret(const char *path, unsigned char *key, size_t keycap, size_t *keylen,
                               char *err, size_t errsz)
{
    char hex[65];
    size_t n;
    mode_t mode;
    int rc;

    *keylen = 0;
    /* two tries: if another process creates the file between our read and
     * our O_EXCL create, read what it wrote */
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = read_small_file(path, key, keycap, &n, &mode, err, errsz);
        if (rc == 0) {
            n = strip_newline(key, n);
            if (n < AUTH_SECRET_MIN) {
                snprintf(err, errsz, "secret key file '%s' holds %zu bytes, at least %d needed",
                         path, n, AUTH_SECRET_MIN);
                return -1;
            }
            warn_mode("secret key file", path, mode);
            *keylen = n;
            return 0;
        }
        if (rc != -ENOENT)
            return -1;
        if (keycap < 64) {
            snprintf(err, errsz, "no room for a new secret key (%zu bytes)", keycap);
            return -1;
        }
        rc = create_secret(path, hex, err, errsz);
        if (rc == 0) {
            memcpy(key, hex, 64);
            OPENSSL_cleanse(hex, sizeof(hex));
            *keylen = 64;
            return 0;
        }
        if (rc != -EEXIST)
            return -1;
    }
    snprintf(err, errsz, "cannot read or create '%s'", path);
    return -1;
}

int auth_load_token_file(const char *path, char *buf, size_t cap, char *err, size_t errsz)
{
    size_t n;
    mode_t mode;

    if (cap)
        buf[0] = '\0';
    if (cap < 2) {
        snprintf(err, errsz, "no room for a token");
        return -1;
    }
    int rc = read_small_file(path, buf, cap - 1, &n, &mode, err, errsz);
    if (rc == -ENOENT)
        snprintf(err, errsz, "cannot open '%s': %s", path, strerror(ENOENT));
    if (rc < 0)
        goto fail;
    n = strip_newline(buf, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c < 0x20 || c == 0x7f) {
            snprintf(err, errsz, "token file '%s' must hold one line of printable text", path);
            goto fail;
        }
    }
    if (n < AUTH_TOKEN_MIN) {
        snprintf(err, errsz, "token in '%s' is %zu characters, at least %d needed", path, n,
                 AUTH_TOKEN_MIN);
        goto fail;
    }
    buf[n] = '\0';
    warn_mode("token file", path, mode);
    return 0;

fail:
    OPENSSL_cleanse(buf, cap);
    buf[0] = '\0';
    return -1;
}

bool auth_bearer_ok(const char *authorization, const char *token)
{
    static const char prefix[] = "Bearer ";
    size_t plen = sizeof(prefix) - 1;

    if (!token || !token[0] || !authorization || strncmp(authorization, prefix, plen) != 0)
        return false;
    const char *t = authorization + plen;
    size_t n = strlen(t);
    return n == strlen(token) && CRYPTO_memcmp(t, token, n) == 0;
}

int auth_read_password_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *ok = fgets(buf, (int)cap, f);
    fclose(f);
    if (!ok)
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}
