/*
 * auth — accounts-mode credentials: scrypt password hashes, input checks for
 * passwords and e-mail addresses, HS256 JSON Web Tokens (RFC 7519) and the
 * secret / admin-token files they are keyed by.
 *
 * Stateless: every function works on its arguments only, so any thread may
 * call any of them. Hashing and verifying a password is deliberately slow
 * (about a tenth of a second) and must never run on an I/O loop thread; JWT
 * signing and verification are cheap (one HMAC) and may.
 */
#ifndef PARLEY_AUTH_H
#define PARLEY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Room for any string auth_hash_password writes (including the NUL). */
#define AUTH_HASH_MAX 160
/* Longest token auth_jwt_verify accepts, and room for any token
 * auth_jwt_sign writes (including the NUL). */
#define AUTH_JWT_MAX 4096
/* Room for a verified token's subject: a user name plus the NUL. */
#define AUTH_SUB_MAX 33
/* Password bounds in bytes. */
#define AUTH_PASSWORD_MIN 8
#define AUTH_PASSWORD_MAX 1024
/* Shortest secret key file accepted, and a buffer big enough for any. */
#define AUTH_SECRET_MIN 32
#define AUTH_SECRET_MAX 1024
/* Shortest admin token accepted. */
#define AUTH_TOKEN_MIN 16

/* Why auth_jwt_verify refused a token. Every one maps to `auth_failed` on the
 * wire; the distinction is for logs and tests. */
enum auth_jwt_err {
    AUTH_EMALFORMED = -1, /* not three base64url parts of JSON objects, too long,
                           * padding, duplicate keys, unsupported header */
    AUTH_EALG = -2,       /* alg is missing or anything but "HS256" */
    AUTH_ESIG = -3,       /* signature does not match the key */
    AUTH_EEXPIRED = -4,   /* exp missing, or exp <= now */
    AUTH_ECLAIMS = -5,    /* sub missing/invalid, iat or nbf in the future, wrong types */
    AUTH_EINVAL = -6,     /* caller error: empty key, sub buffer too small */
};

/*
 * Hash a password with scrypt (N = 2^15, r = 8, p = 1, 32 MiB of memory) and
 * a fresh 16-byte random salt, into a self-describing NUL-terminated string
 *   scrypt$15$8$1$<salt base64>$<hash base64>
 * (standard base64 alphabet, no padding). out needs AUTH_HASH_MAX bytes.
 * Returns 0, -ENOSPC if out is too small, -EIO if the RNG or KDF fails.
 * Thread: any, but slow (about 110 ms of CPU): never on an I/O loop.
 */
int auth_hash_password(const char *pw, size_t len, char *out, size_t outsz);

/*
 * True if pw matches a string written by auth_hash_password. The parameters
 * are read from the string (bounded, so a corrupt row cannot ask for
 * gigabytes); malformed strings give false. Constant-time compare.
 * Thread: any, but slow: never on an I/O loop.
 */
bool auth_verify_password(const char *pw, size_t len, const char *stored);

/* Thread: any. Between AUTH_PASSWORD_MIN and AUTH_PASSWORD_MAX bytes. */
bool auth_password_ok(const char *pw);

/*
 * Thread: any. A sane address, not full RFC 5322: at most 254 bytes of valid
 * UTF-8, exactly one '@', no spaces, control characters or the specials
 * "(),:;<>[\] (so it is safe in a mail header), a local part of 1..64 bytes,
 * and a domain of dot-separated non-empty labels with at least one dot.
 */
bool auth_email_ok(const char *email);

/* Thread: any. A valid user name: ^[A-Za-z0-9_.-]{1,32}$. */
bool auth_user_name_ok(const char *name);

/*
 * Sign an HS256 JWT: header {"alg":"HS256","typ":"JWT"}, payload
 * {"sub":...,"iat":...,"iat_ms":...,"exp":...}: iat and exp in seconds since
 * the epoch, iat_ms the issue time in milliseconds (iat is iat_ms / 1000),
 * so a token can be told apart from a revocation made in the same second.
 * sub must be a valid user name. Writes the NUL-terminated token to out
 * (AUTH_JWT_MAX is always enough). Returns 0, -EINVAL (empty key, invalid
 * sub, negative iat_ms) or -ENOSPC. Thread: any.
 */
int auth_jwt_sign(const unsigned char *key, size_t keylen, const char *sub, int64_t iat_ms,
                  int64_t exp, char *out, size_t outsz);

/*
 * Verify an HS256 JWT at time now (seconds since the epoch): syntax first
 * (strict unpadded base64url, <= AUTH_JWT_MAX bytes, JSON objects without
 * duplicate keys), then the header's alg, then the signature (constant-time)
 * and only then the claims: exp (required integer, > now, no leeway), sub
 * (required valid user name), iat and nbf (optional integers, at most 60 s in
 * the future, for clock skew), iat_ms (optional integer >= 0; needs iat and
 * must lie in iat's second). Other claims are ignored. On success copies
 * sub into sub (subsz >= AUTH_SUB_MAX), stores exp in *exp_out and the issue
 * time in ms in *iat_ms_out (iat_ms; without it the first millisecond of
 * iat's second, the earliest the token can have been made; -1 without iat;
 * either pointer may be NULL) and returns 0; otherwise returns an enum
 * auth_jwt_err and leaves sub empty.
 * Thread: any.
 */
int auth_jwt_verify(const unsigned char *key, size_t keylen, const char *token, int64_t now,
                    char *sub, size_t subsz, int64_t *exp_out, int64_t *iat_ms_out);

/* Thread: any. Static text for 0 or an enum auth_jwt_err value. */
const char *auth_jwt_strerror(int rc);

/*
 * Load the JWT signing key from path, or create it. An existing file is used
 * as-is (bytes, one trailing "\n" or "\r\n" stripped) so operators can supply
 * a secret shared by several servers; it must hold AUTH_SECRET_MIN..keycap
 * bytes, and a file readable by group or others is accepted with a warning.
 * A missing file is created exclusively (O_EXCL) with mode 0600 holding 64
 * hex characters from RAND_bytes and a newline; the key is those 64
 * characters. Returns 0 with the key in key[0..*keylen), or -1 with a
 * message in err. Thread: any (start-up).
 */
int auth_load_or_create_secret(const char *path, unsigned char *key, size_t keycap, size_t *keylen,
                               char *err, size_t errsz);

/*
 * Read an admin token: the file's one line of printable text (a trailing
 * "\n" or "\r\n" is stripped), at least AUTH_TOKEN_MIN characters, written
 * NUL-terminated to buf. Warns if group or others can read it. Returns 0, or
 * -1 with a message in err. Thread: any (start-up).
 */
int auth_load_token_file(const char *path, char *buf, size_t cap, char *err, size_t errsz);
/* A password file (--smtp-password-file, --redis-password-file): its first
 * line without the line end, into buf (any length that fits; unlike a
 * token, nothing is checked). 0, or -1 if it cannot be read. */
int auth_read_password_file(const char *path, char *buf, size_t cap);

/* Thread: any. True if authorization (an Authorization header's value, may be
 * NULL) is "Bearer <token>" with exactly token, compared in constant time
 * for a given length. An empty or NULL token matches nothing. */
bool auth_bearer_ok(const char *authorization, const char *token);

#endif
