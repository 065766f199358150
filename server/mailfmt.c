/*
 * mailfmt — building notification e-mails (see mailfmt.h). Everything is
 * assembled in a small growable buffer; allocation failure aborts in
 * xmalloc like everywhere else.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mailfmt.h"
#include "util.h"

/* big enough for a room id ("dm:" + two user names) */
#define NAME_BUF 72

/* ---- growable buffer ---- */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_need(struct sbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

static void sb_put(struct sbuf *b, const void *s, size_t n)
{
    sb_need(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_putc(struct sbuf *b, char c)
{
    sb_put(b, &c, 1);
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    if ((size_t)n < sizeof(small)) {
        sb_put(b, small, (size_t)n);
        return;
    }
    sb_need(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static char *sb_take(struct sbuf *b, size_t *len)
{
    if (!b->p)
        sb_need(b, 0);
    b->p[b->len] = '\0';
    if (len)
        *len = b->len;
    return b->p;
}

/* ---- validation ---- */

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool atext(unsigned char c)
{
    return is_alnum(c) || (c && strchr("!#$%&'*+/=?^_`{|}~-", c));
}

bool mailfmt_valid_addr(const char *addr)
{
    if (!addr)
        return false;
    size_t len = strnlen(addr, MAILFMT_ADDR_MAX + 1);
    if (len == 0 || len > MAILFMT_ADDR_MAX)
        return false;
    const char *at = strchr(addr, '@');
    if (!at || at == addr || at - addr > 64)
        return false;
    /* local part: dot-atom */
    for (const char *p = addr; p < at; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (p == addr || p + 1 == at || p[1] == '.')
                return false;
        } else if (!atext(c)) {
            return false;
        }
    }
    /* domain: LDH labels */
    const char *d = at + 1;
    if (!*d)
        return false;
    size_t label = 0;
    for (const char *p = d;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || p[-1] == '-')
                return false;
            if (c == '\0')
                return true;
            label = 0;
        } else if (is_alnum(c) || c == '-') {
            if (label == 0 && c == '-')
                return false;
            label++;
        } else {
            return false; /* including a second '@', CR, LF, space, '<', '>' */
        }
    }
}

static bool name_char(unsigned char c)
{
    return is_alnum(c) || c == '_' || c == '.' || c == '-' || c == ':';
}

size_t mailfmt_name(char *dst, size_t dstsz, const char *src)
{
    if (dstsz == 0)
        return 0;
    size_t n = 0;
    for (const char *p = src ? src : ""; *p && n + 1 < dstsz; p++) {
        if (name_char((unsigned char)*p))
            dst[n++] = *p;
    }
    if (n == 0 && dstsz > 1)
        dst[n++] = '?';
    dst[n] = '\0';
    return n;
}

static bool valid_msgid_local(const char *s)
{
    size_t n = s ? strnlen(s, 65) : 0;
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* ---- dates ---- */

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static void utc(int64_t wall_ms, struct tm *tm)
{
    /* floor division, so a (nonsensical) negative time still formats */
    time_t t = (time_t)(wall_ms >= 0 ? wall_ms / 1000 : -((-wall_ms + 999) / 1000));
    if (!gmtime_r(&t, tm))
        memset(tm, 0, sizeof(*tm));
    if (tm->tm_wday < 0 || tm->tm_wday > 6)
        tm->tm_wday = 0;
    if (tm->tm_mon < 0 || tm->tm_mon > 11)
        tm->tm_mon = 0;
}

/* Own day and month names rather than strftime's %a/%b, which follow the
 * locale; RFC 5322 wants the English ones. */
void mailfmt_date(char out[MAILFMT_DATE_MAX], int64_t wall_ms)
{
    struct tm tm;
    utc(wall_ms, &tm);
    /* the compiler cannot see that struct tm's fields are small: format
     * into room for any int, then copy (real dates take 31 bytes) */
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s, %02d %s %04d %02d:%02d:%02d +0000", wdays[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    str_lcpy(out, tmp, MAILFMT_DATE_MAX);
}

/* ---- transfer encodings ---- */

static const char hexd[] = "0123456789ABCDEF";

char *mailfmt_qp(const char *s, size_t len, size_t *outlen)
{
    struct sbuf b = {0};
    size_t col = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\r' && i + 1 < len && s[i + 1] == '\n')
            continue; /* the LF that follows makes the break */
        if (c == '\n') {
            sb_puts(&b, "\r\n");
            col = 0;
            continue;
        }
        bool at_eol = i + 1 == len || s[i + 1] == '\n' ||
                      (s[i + 1] == '\r' && i + 2 < len && s[i + 2] == '\n');
        bool literal = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !at_eol);
        size_t w = literal ? 1 : 3;
        /* Room for "=" after the token unless the line ends right after it:
         * a line is at most 76 characters including a soft break's '='. */
        size_t limit = at_eol ? 76 : 75;
        if (col + w > limit) {
            sb_puts(&b, "=\r\n");
            col = 0;
        }
        if (literal) {
            sb_putc(&b, (char)c);
        } else {
            char e[3] = {'=', hexd[c >> 4], hexd[c & 15]};
            sb_put(&b, e, 3);
        }
        col += w;
    }
    return sb_take(&b, outlen);
}

char *mailfmt_base64(const void *data, size_t len, size_t *outlen)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    struct sbuf b = {0};
    sb_need(&b, (len + 2) / 3 * 4 + (len / 57 + 1) * 2);
    size_t col = 0;
    for (size_t i = 0; i < len; i += 3) {
        size_t rest = len - i;
        uint32_t v = (uint32_t)p[i] << 16;
        if (rest > 1)
            v |= (uint32_t)p[i + 1] << 8;
        if (rest > 2)
            v |= p[i + 2];
        char q[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63], rest > 1 ? tbl[(v >> 6) & 63] : '=',
                     rest > 2 ? tbl[v & 63] : '='};
        sb_put(&b, q, 4);
        col += 4;
        if (col == 76) {
            sb_puts(&b, "\r\n");
            col = 0;
        }
    }
    if (col)
        sb_puts(&b, "\r\n");
    return sb_take(&b, outlen);
}

/* ---- body ---- */

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid;
 * the code point in *cp. */
static size_t utf8_seq(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned c = p[0];
    size_t k;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        k = 2, v = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        k = 3, v = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        k = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < k)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return k;
}

/* Append a message text: CR dropped; other C0 controls (but TAB and LF),
 * DEL, C1 controls and invalid UTF-8 shown as '?', so the mail reader's
 * terminal sees no escape sequences; each further line indented; cut at
 * MAILFMT_TEXT_MAX bytes on a code point boundary. */
static void put_text(struct sbuf *b, const char *text)
{
    const unsigned char *p = (const unsigned char *)(text ? text : "");
    size_t n = strlen((const char *)p), used = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_seq(p + i, n - i, &cp);
        if (used + (k ? k : 1) > MAILFMT_TEXT_MAX) {
            sb_puts(b, "\xe2\x80\xa6"); /* … */
            return;
        }
        if (k == 0) {
            sb_putc(b, '?');
            i++, used++;
            continue;
        }
        if (cp == '\n') {
            sb_puts(b, "\n    ");
        } else if (cp == '\r') {
            /* dropped */
        } else if ((cp < 0x20 && cp != '\t') || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) {
            sb_putc(b, '?');
        } else {
            sb_put(b, p + i, k);
        }
        i += k, used += k;
    }
}

static void put_time(struct sbuf *b, int64_t ts_ms)
{
    struct tm tm;
    utc(ts_ms, &tm);
    sb_printf(b, "%04d-%02d-%02d %02d:%02d:%02d UTC", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
              tm.tm_hour, tm.tm_min, tm.tm_sec);
}

char *mailfmt_body(const char *to_name, const struct mail_item *items, size_t n)
{
    struct sbuf b = {0};
    char name[NAME_BUF], from[NAME_BUF], room[NAME_BUF];
    mailfmt_name(name, sizeof(name), to_name);
    sb_printf(&b, "Hello %s,\n\n", name);
    sb_printf(&b, "%s while you were away:\n\n",
              n == 1 ? "You have a new message on parley" : "You have new messages on parley");
    size_t listed = n < MAILFMT_LIST_MAX ? n : MAILFMT_LIST_MAX;
    for (size_t i = 0; i < listed; i++) {
        const struct mail_item *it = &items[i];
        mailfmt_name(from, sizeof(from), it->from);
        if (it->dm) {
            sb_printf(&b, "%s (direct message) at ", from);
        } else {
            mailfmt_name(room, sizeof(room), it->room);
            sb_printf(&b, "[%s] %s at ", room, from);
        }
        put_time(&b, it->ts_ms);
        sb_puts(&b, ": ");
        put_text(&b, it->text);
        sb_putc(&b, '\n');
    }
    if (n > listed)
        sb_printf(&b, "... and %zu more.\n", n - listed);
    sb_puts(&b, "\n-- \nYou get this e-mail because you were offline. Sign in to parley to "
                "reply.\n");
    return sb_take(&b, NULL);
}

/* ---- the message ---- */

static void put_subject(struct sbuf *b, const struct mail_item *items, size_t n)
{
    char from[NAME_BUF], room[NAME_BUF];
    if (n == 1) {
        mailfmt_name(from, sizeof(from), items[0].from);
        if (items[0].dm) {
            sb_printf(b, "Subject: [parley] Direct message from %s\r\n", from);
        } else {
            mailfmt_name(room, sizeof(room), items[0].room);
            sb_printf(b, "Subject: [parley] %s mentioned you in %s\r\n", from, room);
        }
    } else {
        sb_printf(b, "Subject: [parley] %zu new messages\r\n", n);
    }
}

char *mailfmt_message(const struct mail_head *h, const struct mail_item *items, size_t n,
                      size_t *len, char *err, size_t errsz)
{
    if (n == 0) {
        snprintf(err, errsz, "no items");
        return NULL;
    }
    if (!mailfmt_valid_addr(h->from_addr)) {
        snprintf(err, errsz, "invalid sender address");
        return NULL;
    }
    if (!mailfmt_valid_addr(h->to_addr)) {
        snprintf(err, errsz, "invalid recipient address");
        return NULL;
    }
    if (!valid_msgid_local(h->msgid_local)) {
        snprintf(err, errsz, "invalid message id");
        return NULL;
    }
    struct sbuf b = {0};
    char date[MAILFMT_DATE_MAX], name[NAME_BUF];
    mailfmt_date(date, h->date_ms);
    mailfmt_name(name, sizeof(name), h->to_name);
    sb_printf(&b, "Date: %s\r\n", date);
    sb_printf(&b, "From: parley <%s>\r\n", h->from_addr);
    /* quoted: '.' is legal in user names but not in an unquoted phrase, and
     * mailfmt_name leaves no '"' or '\\' that would need escaping */
    sb_printf(&b, "To: \"%s\" <%s>\r\n", name, h->to_addr);
    put_subject(&b, items, n);
    sb_printf(&b, "Message-ID: <%s@%s>\r\n", h->msgid_local, strchr(h->from_addr, '@') + 1);
    sb_puts(&b, "MIME-Version: 1.0\r\n");
    sb_puts(&b, "Content-Type: text/plain; charset=utf-8\r\n");
    sb_printf(&b, "Content-Transfer-Encoding: %s\r\n",
              h->cte == MAILFMT_BASE64 ? "base64" : "quoted-printable");
    /* RFC 3834: tells vacation responders not to answer */
    sb_puts(&b, "Auto-Submitted: auto-generated\r\n");
    sb_puts(&b, "\r\n");

    char *body = mailfmt_body(h->to_name, items, n);
    size_t blen, elen;
    blen = strlen(body);
    char *enc = h->cte == MAILFMT_BASE64 ? mailfmt_base64(body, blen, &elen)
                                         : mailfmt_qp(body, blen, &elen);
    sb_put(&b, enc, elen);
    if (elen < 2 || memcmp(enc + elen - 2, "\r\n", 2) != 0)
        sb_puts(&b, "\r\n");
    free(enc);
    free(body);
    return sb_take(&b, len);
}

/* ---- mboxrd ---- */

/* ^>*From  */
static bool from_line(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] == '>')
        i++;
    return n - i >= 5 && memcmp(p + i, "From ", 5) == 0;
}

char *mailfmt_mbox(const char *env_from, int64_t wall_ms, const char *msg, size_t len,
                   size_t *outlen)
{
    struct sbuf b = {0};
    struct tm tm;
    utc(wall_ms, &tm);
    /* asctime's layout, with our own names (see mailfmt_date) */
    sb_printf(&b, "From %s %s %s %2d %02d:%02d:%02d %04d\n",
              mailfmt_valid_addr(env_from) ? env_from : "MAILER-DAEMON", wdays[tm.tm_wday],
              months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_year + 1900);
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(msg + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - msg) : len; /* the line is [i, end) */
        size_t lend = end;
        if (lend > i && msg[lend - 1] == '\r')
            lend--;
        if (from_line(msg + i, lend - i))
            sb_putc(&b, '>');
        sb_put(&b, msg + i, lend - i);
        sb_putc(&b, '\n');
        i = nl ? end + 1 : len;
    }
    sb_putc(&b, '\n');
    return sb_take(&b, outlen);
}
