/*
 * util — allocation that cannot fail, clocks, and small string helpers shared
 * by every module. Allocation failure aborts in one place (xmalloc) so no
 * caller carries an out-of-memory branch it could never test.
 */
#ifndef PARLEY_UTIL_H
#define PARLEY_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Thread: any. Abort the process on allocation failure. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Thread: any. Fill out with n bytes from the OpenSSL CSPRNG (RAND_bytes),
 * for what must not be guessed: ids, keys, hash keys. A RAND_bytes failure
 * aborts with a message, as an allocation failure does: carrying on would
 * hand out predictable ids or keys (a security defect, not an error to
 * report), every caller would otherwise need a branch it could never test,
 * and on Linux it cannot fail once the kernel's pool is seeded, long before
 * a server starts. */
void util_random_bytes(void *out, size_t n);

/* Thread: any. nbytes random bytes (as util_random_bytes, aborting the
 * same way) as 2 * nbytes lowercase hex characters and a NUL: out holds
 * 2 * nbytes + 1. Session ids, outbox and Message-IDs, key files, the dummy
 * password. The raw bytes are wiped from the stack afterwards. */
void util_random_hex(char *out, size_t nbytes);

/* Thread: any. Monotonic clock in ms / ns, and wall clock in ms since epoch. */
int64_t now_mono_ms(void);
int64_t now_mono_ns(void);
int64_t now_wall_ms(void);

/* Thread: any. Copy at most dstsz-1 bytes and always terminate; returns the
 * length of src, like BSD strlcpy, so truncation is detectable. */
size_t str_lcpy(char *dst, const char *src, size_t dstsz);

/* Thread: any. "<directory of file>/<name>" (heap; "./name" for a bare
 * file name), for files that live beside another one. */
char *path_beside(const char *file, const char *name);

/* Thread: any. Decode the one UTF-8 sequence at the start of p (n bytes
 * available): store its code point in *cp and return its length (1-4), or
 * return 0 if n is 0 or the bytes are not valid UTF-8 (bad lead or
 * continuation byte, truncated, overlong, surrogate, > U+10FFFF). */
int utf8_decode(const unsigned char *p, size_t n, uint32_t *cp);

/* Thread: any. Number of Unicode code points in valid UTF-8 input, or -1 if
 * the input is not valid UTF-8 (overlongs, surrogates and > U+10FFFF are
 * invalid). */
long utf8_count(const char *s, size_t len);

#endif
