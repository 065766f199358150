/* util — see util.h. No state. */
#include "util.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void oom(size_t n)
{
    fprintf(stderr, "parley: out of memory allocating %zu bytes\n", n);
    abort();
}

void util_random_bytes(void *out, size_t n)
{
    unsigned char *p = out;

    while (n) {
        size_t k = n < 4096 ? n : 4096; /* RAND_bytes takes an int */
        if (RAND_bytes(p, (int)k) != 1) {
            fprintf(stderr, "parley: the system random source failed (RAND_bytes)\n");
            abort();
        }
        p += k;
        n -= k;
    }
}

void util_random_hex(char *out, size_t nbytes)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char raw[32];

    while (nbytes) {
        size_t n = nbytes < sizeof(raw) ? nbytes : sizeof(raw);
        util_random_bytes(raw, n);
        for (size_t i = 0; i < n; i++) {
            *out++ = digits[raw[i] >> 4];
            *out++ = digits[raw[i] & 15];
        }
        nbytes -= n;
    }
    *out = '\0';
    OPENSSL_cleanse(raw, sizeof(raw));
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        oom(nmemb * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t now_mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

int64_t now_mono_ms(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000000;
}

int64_t now_wall_ms(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000000;
}

size_t str_lcpy(char *dst, const char *src, size_t dstsz)
{
    size_t n = strlen(src);
    if (dstsz) {
        size_t c = n < dstsz - 1 ? n : dstsz - 1;
        memcpy(dst, src, c);
        dst[c] = '\0';
    }
    return n;
}

int utf8_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned c;
    size_t k;
    uint32_t v;

    if (n == 0)
        return 0;
    c = p[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        k = 1;
        v = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        k = 2;
        v = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        k = 3;
        v = c & 0x07;
    } else {
        return 0;
    }
    if (n <= k)
        return 0;
    for (size_t i = 1; i <= k; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    if ((k == 1 && v < 0x80) || (k == 2 && v < 0x800) || (k == 3 && v < 0x10000) || v > 0x10ffff ||
        (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return (int)k + 1;
}

long utf8_count(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    long n = 0;

    while (p < end) {
        uint32_t cp;
        int k;
        /* ASCII inline: it is nearly all of any chat text */
        if (*p < 0x80) {
            p++;
            n++;
            continue;
        }
        k = utf8_decode(p, (size_t)(end - p), &cp);
        if (k == 0)
            return -1;
        p += k;
        n++;
    }
    return n;
}

char *path_beside(const char *file, const char *name)
{
    const char *slash = strrchr(file, '/');
    int dl = slash ? (int)(slash - file) : 1;
    size_t n = (size_t)dl + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%.*s/%s", dl, slash ? file : ".", name);
    return p;
}
