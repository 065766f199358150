/*
 * Unit tests for mailfmt: address validation (including header-injection
 * attempts), name stripping, the RFC 5322 date, quoted-printable and base64
 * (line lengths, CRLF only, UTF-8, '=', trailing white space, round trips
 * through decoders written here), the exact header block, the body listing
 * for DMs and mentions, hostile names and texts (CR/LF, control bytes,
 * invalid UTF-8, SMTP-looking lines), the list and text caps, and mboxrd
 * quoting of "From " lines.
 */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfmt.h"

#define T_2026_11_23_16_00 1795449600000LL /* a Monday */
#define T_2026_11_03_09_05_07 1793696707000LL

/* ---- decoders, written independently of the encoders ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* RFC 2045: encoders must use upper case */
}

/* Decode quoted-printable; hard line breaks (CRLF) come out as "\n". */
static char *qp_decode(const char *s, size_t len, size_t *outlen)
{
    char *out = malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (s[i] == '=') {
            if (i + 2 < len + 1 && s[i + 1] == '\r' && s[i + 2] == '\n') {
                i += 3; /* soft break */
                continue;
            }
            cr_assert(i + 2 < len, "truncated escape");
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            cr_assert(hi >= 0 && lo >= 0, "bad escape '=%c%c'", s[i + 1], s[i + 2]);
            out[n++] = (char)(hi * 16 + lo);
            i += 3;
        } else if (s[i] == '\r') {
            cr_assert(i + 1 < len && s[i + 1] == '\n', "bare CR in QP");
            out[n++] = '\n';
            i += 2;
        } else {
            cr_assert(s[i] != '\n', "bare LF in QP");
            out[n++] = s[i++];
        }
    }
    out[n] = '\0';
    *outlen = n;
    return out;
}

static int b64val(char c)
{
    const char *tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(tbl, c) : NULL;
    return p ? (int)(p - tbl) : -1;
}

static char *b64_decode(const char *s, size_t len, size_t *outlen)
{
    char *out = malloc(len + 1);
    size_t n = 0;
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '=')
            continue;
        int d = b64val(s[i]);
        cr_assert(d >= 0, "bad base64 char 0x%02x", (unsigned char)s[i]);
        v = (v << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)((v >> bits) & 0xff);
        }
    }
    out[n] = '\0';
    *outlen = n;
    return out;
}

/* No bare CR or LF, no line longer than max, and (if whole) a final CRLF. */
static void assert_lines(const char *s, size_t len, size_t max, bool whole)
{
    size_t col = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\r') {
            cr_assert(i + 1 < len && s[i + 1] == '\n', "bare CR at %zu", i);
            i++;
            col = 0;
        } else {
            cr_assert(s[i] != '\n', "bare LF at %zu", i);
            col++;
            cr_assert(col <= max, "line longer than %zu at %zu", max, i);
        }
    }
    cr_assert(!whole || len == 0 || (len >= 2 && s[len - 2] == '\r' && s[len - 1] == '\n'),
              "ends with CRLF");
}

/* ---- addresses and names ---- */

Test(mailfmt, valid_addresses)
{
    const char *good[] = {
        "alice@example.com",  "a@b",      "first.last+tag@sub.example.org", "x_y-z@a-b.c",
        "o'neil@example.com", "a{b}@x.io"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        cr_expect(mailfmt_valid_addr(good[i]), "%s", good[i]);
}

Test(mailfmt, invalid_addresses)
{
    const char *bad[] = {
        "",
        "alice",
        "@example.com",
        "alice@",
        "alice@@example.com",
        "al ice@example.com",
        ".alice@example.com",
        "alice.@example.com",
        "al..ice@example.com",
        "alice@-example.com",
        "alice@example-.com",
        "alice@example..com",
        "alice@.example.com",
        "alice@example.com.",
        "\"alice\"@example.com",
        "alice@example.com\r\nBcc: eve@evil.org",
        "alice@example.com\nBcc: eve@evil.org",
        "alice@exa mple.com",
        "<alice@example.com>",
        "alice@example.com, eve@evil.org",
        "alice@[127.0.0.1]",
        "alice@ex\x01mple.com",
        "ali\xc3\xa9@example.com",
        "alice@example.com\r",
        "alice\t@example.com",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_expect(!mailfmt_valid_addr(bad[i]), "accepted '%s'", bad[i]);
    cr_expect(!mailfmt_valid_addr(NULL));
    char local[70], addr[400];
    memset(local, 'a', 65);
    local[65] = '\0';
    snprintf(addr, sizeof(addr), "%s@example.com", local);
    cr_expect(!mailfmt_valid_addr(addr), "local part over 64");
    local[64] = '\0';
    snprintf(addr, sizeof(addr), "%s@example.com", local);
    cr_expect(mailfmt_valid_addr(addr), "local part of 64");
    /* a domain label over 63, and a whole address over 254 */
    char label[70];
    memset(label, 'b', 64);
    label[64] = '\0';
    snprintf(addr, sizeof(addr), "a@%s.com", label);
    cr_expect(!mailfmt_valid_addr(addr));
    label[63] = '\0';
    snprintf(addr, sizeof(addr), "a@%s.%s.%s.%s", label, label, label, label);
    cr_expect(!mailfmt_valid_addr(addr), "%zu bytes", strlen(addr));
}

Test(mailfmt, names_are_stripped)
{
    char out[72];
    cr_expect_eq(mailfmt_name(out, sizeof(out), "alice_B.9-x"), 11);
    cr_expect_str_eq(out, "alice_B.9-x");
    mailfmt_name(out, sizeof(out), "bob\r\nBcc: eve@evil.org");
    cr_expect_str_eq(out, "bobBcc:eveevil.org");
    mailfmt_name(out, sizeof(out), "\r\n\x01\xc3\xa9");
    cr_expect_str_eq(out, "?");
    mailfmt_name(out, sizeof(out), NULL);
    cr_expect_str_eq(out, "?");
    mailfmt_name(out, 4, "abcdef");
    cr_expect_str_eq(out, "abc", "truncated to fit");
    mailfmt_name(out, sizeof(out), "dm:alice:bob");
    cr_expect_str_eq(out, "dm:alice:bob");
}

Test(mailfmt, dates)
{
    char d[MAILFMT_DATE_MAX];
    mailfmt_date(d, T_2026_11_23_16_00);
    cr_expect_str_eq(d, "Mon, 23 Nov 2026 16:00:00 +0000");
    mailfmt_date(d, T_2026_11_03_09_05_07 + 999);
    cr_expect_str_eq(d, "Tue, 03 Nov 2026 09:05:07 +0000");
    mailfmt_date(d, 0);
    cr_expect_str_eq(d, "Thu, 01 Jan 1970 00:00:00 +0000");
}

/* ---- encodings ---- */

static void qp_roundtrip(const char *in, const char *want_decoded)
{
    size_t elen, dlen;
    char *enc = mailfmt_qp(in, strlen(in), &elen);
    cr_assert_eq(strlen(enc), elen);
    if (elen)
        assert_lines(enc, elen, 76, false);
    char *dec = qp_decode(enc, elen, &dlen);
    cr_expect_str_eq(dec, want_decoded, "encoded as:\n%s", enc);
    /* trailing white space before a line end is never literal */
    for (size_t i = 0; i + 2 < elen + 1 && i < elen; i++) {
        if (enc[i] == '\r')
            cr_expect(i == 0 || (enc[i - 1] != ' ' && enc[i - 1] != '\t'),
                      "literal white space at line end: %s", enc);
    }
    free(dec);
    free(enc);
}

Test(mailfmt, qp_basics)
{
    size_t n;
    const char *in = "caf\xc3\xa9 = 1+1";
    char *e = mailfmt_qp(in, strlen(in), &n);
    cr_expect_str_eq(e, "caf=C3=A9 =3D 1+1");
    free(e);
    e = mailfmt_qp("end   \nnext\t\n", 13, &n);
    cr_expect_str_eq(e, "end  =20\r\nnext=09\r\n");
    free(e);
    e = mailfmt_qp("a\r\nb\rc", 6, &n);
    cr_expect_str_eq(e, "a\r\nb=0Dc", "CRLF is one break, a lone CR is data");
    free(e);
    e = mailfmt_qp("", 0, &n);
    cr_expect_str_eq(e, "");
    cr_expect_eq(n, 0);
    free(e);
}

Test(mailfmt, qp_long_lines_and_roundtrips)
{
    char buf[2000];
    memset(buf, 'x', 300);
    buf[300] = '\0';
    qp_roundtrip(buf, buf);
    /* escapes straddling every possible break position */
    for (int shift = 0; shift < 4; shift++) {
        size_t n = 0;
        for (int i = 0; i < shift; i++)
            buf[n++] = 'y';
        for (int i = 0; i < 60; i++) {
            memcpy(buf + n, "\xe2\x82\xac=", 4); /* € and '=' all encoded */
            n += 4;
        }
        buf[n] = '\0';
        qp_roundtrip(buf, buf);
    }
    /* exactly 76 literal characters fit on a line without a soft break */
    memset(buf, 'z', 76);
    buf[76] = '\0';
    size_t n;
    char *e = mailfmt_qp(buf, 76, &n);
    cr_expect_eq(n, 76, "%s", e);
    free(e);
    memset(buf, 'z', 77);
    buf[77] = '\0';
    e = mailfmt_qp(buf, 77, &n);
    cr_expect(strstr(e, "=\r\n") != NULL);
    free(e);
    qp_roundtrip("spaces at the very end  ", "spaces at the very end  ");
    qp_roundtrip(".\n..\nFrom here\n", ".\n..\nFrom here\n");
}

Test(mailfmt, base64_roundtrips)
{
    size_t n, dn;
    char *e = mailfmt_base64("Man", 3, &n);
    cr_expect_str_eq(e, "TWFu\r\n");
    free(e);
    e = mailfmt_base64("Ma", 2, &n);
    cr_expect_str_eq(e, "TWE=\r\n");
    free(e);
    e = mailfmt_base64("M", 1, &n);
    cr_expect_str_eq(e, "TQ==\r\n");
    free(e);
    e = mailfmt_base64("", 0, &n);
    cr_expect_str_eq(e, "");
    free(e);
    unsigned char bin[1000];
    for (size_t len = 0; len < 300; len += 7) {
        for (size_t i = 0; i < len; i++)
            bin[i] = (unsigned char)(i * 31 + len);
        e = mailfmt_base64(bin, len, &n);
        if (n) {
            assert_lines(e, n, 76, true);
        }
        char *d = b64_decode(e, n, &dn);
        cr_expect_eq(dn, len);
        cr_expect(memcmp(d, bin, len) == 0, "len %zu", len);
        free(d);
        free(e);
    }
    e = mailfmt_base64(bin, 57, &n);
    cr_expect_eq(n, 78, "57 bytes fill exactly one 76-character line");
    free(e);
}

/* ---- messages ---- */

struct parsed {
    char *msg;
    size_t len;
    char *headers; /* the header block, NUL-terminated, CRLF kept */
    char *body;    /* decoded */
};

static void parse(struct parsed *p)
{
    char *sep = strstr(p->msg, "\r\n\r\n");
    cr_assert_not_null(sep, "no header/body separator");
    p->headers = strndup(p->msg, (size_t)(sep - p->msg) + 2);
    const char *enc = sep + 4;
    size_t elen = p->len - (size_t)(enc - p->msg), dlen;
    if (strstr(p->headers, "Content-Transfer-Encoding: base64\r\n"))
        p->body = b64_decode(enc, elen, &dlen);
    else
        p->body = qp_decode(enc, elen, &dlen);
    cr_assert_eq(strlen(p->body), dlen, "no NUL in the decoded body");
}

static void release(struct parsed *p)
{
    free(p->msg);
    free(p->headers);
    free(p->body);
}

static const struct mail_head head = {
    .from_addr = "parley@chat.example.org",
    .to_addr = "alice@example.com",
    .to_name = "alice",
    .date_ms = T_2026_11_23_16_00,
    .msgid_local = "0123456789abcdef0123456789abcdef",
    .cte = MAILFMT_QP,
};

static void build(struct parsed *p, const struct mail_head *h, const struct mail_item *items,
                  size_t n)
{
    char err[128] = "";
    memset(p, 0, sizeof(*p));
    p->msg = mailfmt_message(h, items, n, &p->len, err, sizeof(err));
    cr_assert_not_null(p->msg, "%s", err);
    cr_assert_eq(strlen(p->msg), p->len);
    assert_lines(p->msg, p->len, 998, true);
    parse(p);
}

Test(mailfmt, headers_exact)
{
    struct mail_item it = {.dm = true, .from = "bob", .text = "hi", .ts_ms = T_2026_11_23_16_00};
    struct parsed p;
    build(&p, &head, &it, 1);
    cr_expect_str_eq(p.headers,
                     "Date: Mon, 23 Nov 2026 16:00:00 +0000\r\n"
                     "From: parley <parley@chat.example.org>\r\n"
                     "To: \"alice\" <alice@example.com>\r\n"
                     "Subject: [parley] Direct message from bob\r\n"
                     "Message-ID: <0123456789abcdef0123456789abcdef@chat.example.org>\r\n"
                     "MIME-Version: 1.0\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Transfer-Encoding: quoted-printable\r\n"
                     "Auto-Submitted: auto-generated\r\n");
    cr_expect(strstr(p.body, "Hello alice,\n") != NULL, "%s", p.body);
    cr_expect(strstr(p.body, "\nbob (direct message) at 2026-11-23 16:00:00 UTC: hi\n") != NULL,
              "%s", p.body);
    release(&p);
}

Test(mailfmt, mention_subject_and_listing)
{
    struct mail_item items[] = {
        {.from = "bob", .room = "general", .text = "hey @alice", .ts_ms = T_2026_11_23_16_00},
        {.dm = true,
         .from = "carol",
         .text = "caf\xc3\xa9 \xf0\x9f\x98\x80",
         .ts_ms = T_2026_11_23_16_00 + 61000},
        {.from = "dave", .room = "ops", .text = "line one\nline two", .ts_ms = 1000},
    };
    struct parsed p;
    build(&p, &head, items, 1);
    cr_expect(strstr(p.headers, "Subject: [parley] bob mentioned you in general\r\n"));
    release(&p);

    build(&p, &head, items, 3);
    cr_expect(strstr(p.headers, "Subject: [parley] 3 new messages\r\n"));
    cr_expect(strstr(p.body, "\n[general] bob at 2026-11-23 16:00:00 UTC: hey @alice\n"), "%s",
              p.body);
    cr_expect(strstr(p.body, "\ncarol (direct message) at 2026-11-23 16:01:01 UTC: "
                             "caf\xc3\xa9 \xf0\x9f\x98\x80\n"),
              "%s", p.body);
    cr_expect(strstr(p.body, "\n[ops] dave at 1970-01-01 00:00:01 UTC: line one\n    line two\n"),
              "%s", p.body);
    /* the order is the order given */
    cr_expect(strstr(p.body, "[general]") < strstr(p.body, "carol") &&
              strstr(p.body, "carol") < strstr(p.body, "[ops]"));
    release(&p);
}

Test(mailfmt, base64_message)
{
    struct mail_head h = head;
    h.cte = MAILFMT_BASE64;
    struct mail_item it = {.from = "bob",
                           .room = "general",
                           .text = "\xe4\xbd\xa0\xe5\xa5\xbd",
                           .ts_ms = T_2026_11_23_16_00};
    struct parsed p;
    build(&p, &h, &it, 1);
    cr_expect(strstr(p.headers, "Content-Transfer-Encoding: base64\r\n"));
    cr_expect(
        strstr(p.body, "[general] bob at 2026-11-23 16:00:00 UTC: \xe4\xbd\xa0\xe5\xa5\xbd\n"),
        "%s", p.body);
    release(&p);
}

/* Header names as they appear at the start of each header line. */
static void expect_only_our_headers(const char *headers)
{
    const char *names[] = {
        "Date:",          "From:",         "To:",           "Subject:",
        "Message-ID:",    "MIME-Version:", "Content-Type:", "Content-Transfer-Encoding:",
        "Auto-Submitted:"};
    int count = 0;
    for (const char *l = headers; *l; count++) {
        bool known = false;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            known |= strncmp(l, names[i], strlen(names[i])) == 0;
        cr_expect(known, "unexpected header line: %.40s", l);
        const char *e = strstr(l, "\r\n");
        cr_assert_not_null(e);
        for (const char *q = l; q < e; q++)
            cr_expect(*q >= 0x20 && *q < 0x7f, "non-printable byte 0x%02x in a header",
                      (unsigned char)*q);
        l = e + 2;
    }
    cr_expect_eq(count, 9);
}

Test(mailfmt, hostile_names_and_texts)
{
    struct mail_head h = head;
    h.to_name = "alice\r\nBcc: eve@evil.org\r\n";
    struct mail_item items[] = {
        {.from = "bob\r\nBcc: eve@evil.org",
         .room = "gen\neral\r\nX-Evil: 1",
         .text = "hi\r\n.\r\nMAIL FROM:<eve@evil.org>\r\n",
         .ts_ms = 0},
        {.dm = true,
         .from = "\x1b[31mmallory",
         .text = "bell\x07 esc\x1b[2J del\x7f c1\xc2\x9b"
                 " bad\xff\xfe utf\xed\xa0\x80 end",
         .ts_ms = 0},
    };
    struct parsed p;
    build(&p, &h, items, 1);
    expect_only_our_headers(p.headers);
    cr_expect(strstr(p.headers, "Subject: [parley] bobBcc:eveevil.org mentioned you in "
                                "generalX-Evil:1\r\n"),
              "%s", p.headers);
    cr_expect(strstr(p.headers, "To: \"aliceBcc:eveevil.org\" <alice@example.com>\r\n"), "%s",
              p.headers);
    cr_expect(!strchr(p.body, '\r'), "no CR survives into the decoded body");
    /* the SMTP-looking lines stay body text, indented under their item */
    cr_expect(strstr(p.body, ": hi\n    .\n    MAIL FROM:<eve@evil.org>\n"), "%s", p.body);
    release(&p);

    build(&p, &h, items + 1, 1);
    expect_only_our_headers(p.headers);
    cr_expect(strstr(p.body, "\n31mmallory (direct message)"), "%s", p.body);
    cr_expect(strstr(p.body, ": bell? esc?[2J del? c1? bad?? utf??? end\n"), "%s", p.body);
    for (const char *q = p.body; *q; q++)
        cr_expect(*q == '\n' || *q == '\t' || (unsigned char)*q >= 0x20, "control byte in body");
    release(&p);
}

Test(mailfmt, refuses_bad_addresses)
{
    struct mail_item it = {.from = "bob", .text = "x", .dm = true};
    char err[128];
    size_t n;
    struct mail_head h = head;
    h.to_addr = "alice@example.com\r\nBcc: eve@evil.org";
    cr_expect_null(mailfmt_message(&h, &it, 1, &n, err, sizeof(err)));
    cr_expect_str_eq(err, "invalid recipient address");
    h = head;
    h.from_addr = "parley";
    cr_expect_null(mailfmt_message(&h, &it, 1, &n, err, sizeof(err)));
    h = head;
    h.msgid_local = "abc>\r\nX: y";
    cr_expect_null(mailfmt_message(&h, &it, 1, &n, err, sizeof(err)));
    cr_expect_null(mailfmt_message(&head, &it, 0, &n, err, sizeof(err)));
}

Test(mailfmt, caps_on_text_and_list)
{
    char *big = malloc(MAILFMT_TEXT_MAX * 2);
    /* 2-byte characters that straddle the cut */
    for (size_t i = 0; i + 1 < MAILFMT_TEXT_MAX * 2; i += 2)
        memcpy(big + i, "\xc3\xa9", 2);
    big[MAILFMT_TEXT_MAX * 2 - 1] = '\0';
    struct mail_item items[MAILFMT_LIST_MAX + 50];
    for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++)
        items[i] = (struct mail_item){.from = "bob", .room = "r", .text = i ? "x" : big};
    char *body = mailfmt_body("alice", items, sizeof(items) / sizeof(items[0]));
    const char *first = strstr(body, "UTC: ");
    cr_assert_not_null(first);
    const char *eol = strchr(first, '\n');
    size_t shown = (size_t)(eol - first - 5);
    cr_expect_eq(shown, MAILFMT_TEXT_MAX + 3, "cut at the cap plus the ellipsis: %zu", shown);
    cr_expect(memcmp(eol - 3, "\xe2\x80\xa6", 3) == 0);
    size_t lines = 0;
    for (const char *q = body; (q = strstr(q, "[r] bob")); q++)
        lines++;
    cr_expect_eq(lines, MAILFMT_LIST_MAX);
    cr_expect(strstr(body, "\n... and 50 more.\n"), "%s", body + strlen(body) - 200);
    free(body);
    free(big);
}

/* ---- mboxrd ---- */

Test(mailfmt, mbox_entry)
{
    const char *msg = "Subject: x\r\n\r\nFrom the start\r\n>From quoted\r\n>>From twice\r\n"
                      "Fromage\r\n From indented\r\nlast";
    size_t n;
    char *e = mailfmt_mbox("parley@chat.example.org", T_2026_11_03_09_05_07, msg, strlen(msg), &n);
    cr_expect_str_eq(e, "From parley@chat.example.org Tue Nov  3 09:05:07 2026\n"
                        "Subject: x\n\n>From the start\n>>From quoted\n>>>From twice\n"
                        "Fromage\n From indented\nlast\n\n");
    cr_expect_eq(n, strlen(e));
    free(e);
    e = mailfmt_mbox("bad\naddr", T_2026_11_23_16_00, "a\r\n", 3, &n);
    cr_expect_str_eq(e, "From MAILER-DAEMON Mon Nov 23 16:00:00 2026\na\n\n");
    free(e);
}

Test(mailfmt, mbox_of_a_message_round_trips)
{
    struct mail_item it = {
        .from = "bob", .room = "general", .text = "From now on\nFrom: not a header", .ts_ms = 0};
    struct parsed p;
    build(&p, &head, &it, 1);
    size_t n;
    char *e = mailfmt_mbox(head.from_addr, head.date_ms, p.msg, p.len, &n);
    /* exactly one separator line, and unquoting gives the message back */
    size_t seps = 0;
    for (const char *l = e; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
        seps += strncmp(l, "From ", 5) == 0;
    cr_expect_eq(seps, 1, "%s", e);
    cr_expect(strstr(e, "\n    >From: not a header") == NULL, "indented lines are not quoted");
    free(e);
    release(&p);
}
