/*
 * pathres — see pathres.h for the rules. Works one raw segment at a time:
 * decode into a small buffer, judge the decoded bytes, then append. Judging
 * after decoding is what catches "%2e%2e" and ".%2e"; splitting before
 * decoding is what keeps "%2f" from becoming a separator.
 *
 * Thread: any (no state).
 */
#include "pathres.h"

#include <stdbool.h>
#include <string.h>

#include "util.h"

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode raw[0..n) into seg; returns the decoded length or -1. */
static long decode_segment(const char *raw, size_t n, unsigned char *seg)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)raw[i];
        if (c == '%') {
            int hi, lo;
            if (n - i < 3)
                return -1;
            hi = hexval((unsigned char)raw[i + 1]);
            lo = hexval((unsigned char)raw[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        seg[o++] = c;
    }
    return (long)o;
}

/* Is the decoded segment acceptable as (part of) a file name? */
static bool segment_ok(const unsigned char *seg, size_t n)
{
    if (seg[0] == '.')
        return false; /* hidden, "..", "..." */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = seg[i];
        if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
            return false;
        if (c == '.' && i + 1 < n && seg[i + 1] == '.')
            return false;
        /* C1 controls are U+0080..U+009F, encoded 0xC2 0x80..0x9F */
        if (c == 0xc2 && i + 1 < n && seg[i + 1] >= 0x80 && seg[i + 1] <= 0x9f)
            return false;
    }
    return utf8_count((const char *)seg, n) >= 0;
}

int pathres_resolve(const char *url_path, size_t len, char *out, size_t outsz)
{
    static const char index_html[] = "index.html";
    unsigned char seg[PATHRES_MAX_IN];
    size_t o = 0, i;
    bool dir = true; /* does the path so far name a directory? */

    if (outsz == 0)
        return -1;
    out[0] = '\0';
    if (len == 0 || len > PATHRES_MAX_IN || url_path[0] != '/')
        return -1;
    for (i = 0; i < len; i++) {
        if (url_path[i] == '?' || url_path[i] == '#')
            break;
    }
    len = i;

    for (i = 1; i <= len;) {
        const char *raw = url_path + i;
        const char *slash = memchr(raw, '/', len - i);
        size_t rawlen = slash ? (size_t)(slash - raw) : len - i;
        long n;

        i += rawlen + 1;
        if (rawlen == 0) {
            dir = true; /* "//" collapses; a trailing '/' names a directory */
            continue;
        }
        n = decode_segment(raw, rawlen, seg);
        if (n < 0)
            goto refuse;
        if (n == 1 && seg[0] == '.') {
            dir = true;
            continue;
        }
        if (!segment_ok(seg, (size_t)n))
            goto refuse;
        /* the separator, the segment and the final NUL must fit */
        if (o + (o ? 1 : 0) + (size_t)n >= outsz)
            goto refuse;
        if (o)
            out[o++] = '/';
        memcpy(out + o, seg, (size_t)n);
        o += (size_t)n;
        dir = false;
    }
    if (dir) {
        if (o + (o ? 1 : 0) + sizeof(index_html) > outsz)
            goto refuse;
        if (o)
            out[o++] = '/';
        memcpy(out + o, index_html, sizeof(index_html) - 1);
        o += sizeof(index_html) - 1;
    }
    out[o] = '\0';
    return 0;

refuse:
    out[0] = '\0'; /* never hand back half a path */
    return -1;
}
