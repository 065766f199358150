/*
 * Unit tests for pathres: every traversal and encoding trick we know of,
 * the normalisation rules, output-buffer bounds, and an exhaustive sweep of
 * short paths over the characters that matter, checked against invariants.
 */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <string.h>

#include "pathres.h"
#include "util.h"

struct pcase {
    const char *in;
    size_t len;       /* 0: strlen(in) */
    const char *want; /* NULL: must be refused */
};

#define OK(in, want) {in, 0, want}
#define NO(in) {in, 0, NULL}
#define NO_LEN(in, len) {in, len, NULL}

static void check(const struct pcase *c)
{
    char out[PATHRES_OUT_MAX];
    size_t len = c->len ? c->len : strlen(c->in);
    memset(out, 'X', sizeof(out));
    int rc = pathres_resolve(c->in, len, out, sizeof(out));
    if (c->want) {
        cr_expect_eq(rc, 0, "'%.*s' should resolve to '%s'", (int)len, c->in, c->want);
        if (rc == 0)
            cr_expect_str_eq(out, c->want, "'%.*s'", (int)len, c->in);
    } else {
        cr_expect_eq(rc, -1, "'%.*s' should be refused, got '%s'", (int)len, c->in,
                     rc == 0 ? out : "");
        cr_expect_str_eq(out, "", "refusal leaves out empty");
    }
}

static void check_all(const struct pcase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check(&cases[i]);
}

#define CHECK_ALL(arr) check_all(arr, sizeof(arr) / sizeof(arr[0]))

Test(pathres, plain_paths)
{
    static const struct pcase cases[] = {
        OK("/index.html", "index.html"),
        OK("/app.js", "app.js"),
        OK("/a/b/c.css", "a/b/c.css"),
        OK("/a.b.c", "a.b.c"),
        OK("/a./b", "a./b"),
        OK("/~user", "~user"),
        OK("/a:b", "a:b"),
        OK("/a+b", "a+b"),
        OK("/a b", "a b"),
        OK("/a-b_c=d,e;f@g!h$i&j'k(l)m*n", "a-b_c=d,e;f@g!h$i&j'k(l)m*n"),
    };
    CHECK_ALL(cases);
}

Test(pathres, directories_get_index_html)
{
    static const struct pcase cases[] = {
        OK("/", "index.html"),
        OK("//", "index.html"),
        OK("///", "index.html"),
        OK("/a/", "a/index.html"),
        OK("/a//", "a/index.html"),
        OK("/a/b/", "a/b/index.html"),
        OK("/.", "index.html"),
        OK("/./", "index.html"),
        OK("/a/.", "a/index.html"),
        OK("/a/./", "a/index.html"),
        OK("/a/%2e", "a/index.html"),
        OK("/a/%2E/", "a/index.html"),
        OK("/?x", "index.html"),
        OK("/#top", "index.html"),
        OK("/a/?x=1", "a/index.html"),
    };
    CHECK_ALL(cases);
}

Test(pathres, empty_and_dot_segments_collapse)
{
    static const struct pcase cases[] = {
        OK("//a//b", "a/b"),
        OK("/a/./b", "a/b"),
        OK("/./a", "a"),
        OK("/././a/./././b/.", "a/b/index.html"),
        OK("/%2e/a", "a"),
        OK("/a/%2e/b", "a/b"),
        OK("////a", "a"),
    };
    CHECK_ALL(cases);
}

Test(pathres, query_and_fragment_dropped)
{
    static const struct pcase cases[] = {
        OK("/a?x=1", "a"),
        OK("/a?../../etc/passwd", "a"),
        OK("/a?%00", "a"),
        OK("/a?%zz", "a"),
        OK("/a#frag", "a"),
        OK("/a#/../../x", "a"),
        OK("/a#b?c", "a"),
        OK("/a?b#c", "a"),
        OK("/a/b.js?v=3#x", "a/b.js"),
        NO("/..?x"),
        NO("/.git?x"),
        NO("?/a"),
        NO("#/a"),
    };
    CHECK_ALL(cases);
}

Test(pathres, percent_decoding_once)
{
    static const struct pcase cases[] = {
        OK("/%61%62c", "abc"),
        OK("/%41", "A"),
        OK("/%4a%4A", "JJ"),
        OK("/a%20b.txt", "a b.txt"),
        OK("/%7euser", "~user"),
        OK("/%25", "%"),
        OK("/%2525", "%25"),
        /* double encoding is decoded once: a literal name, never ".." */
        OK("/%252e%252e", "%2e%2e"),
        OK("/%252e%252e/%252e%252e/etc/passwd", "%2e%2e/%2e%2e/etc/passwd"),
        OK("/%252f", "%2f"),
        OK("/%255c", "%5c"),
        OK("/%2500", "%00"),
        /* a decoded '?' or '#' is part of the name, not a query */
        OK("/%3f.html", "?.html"),
        OK("/%23", "#"),
    };
    CHECK_ALL(cases);
}

Test(pathres, invalid_escapes_refused)
{
    static const struct pcase cases[] = {
        NO("/%"),       NO("/a%"),     NO("/%2"),      NO("/a%2"),     NO("/%zz"),
        NO("/%g0"),     NO("/%0g"),    NO("/% 20"),    NO("/%%32%65"), NO("/%u002e"),
        NO("/%u2215"),  NO("/%-1"),    NO("/%+1"),     NO("/%2/"),     NO("/%/a"),
        NO("/a/%"),
    };
    CHECK_ALL(cases);
}

Test(pathres, dot_dot_in_every_spelling_refused)
{
    static const struct pcase cases[] = {
        NO("/.."),
        NO("/../"),
        NO("/../etc/passwd"),
        NO("/a/.."),
        NO("/a/../"),
        NO("/a/../b"),
        NO("/a/b/../../../etc/passwd"),
        NO("//.."),
        NO("/./.."),
        NO("/%2e%2e"),
        NO("/%2E%2E"),
        NO("/%2e%2E"),
        NO("/%2E%2e/"),
        NO("/.%2e"),
        NO("/%2e."),
        NO("/.%2E/x"),
        NO("/a/%2e%2e/b"),
        NO("/a/.%2e/b"),
        NO("/%2e%2e%2f"),
        NO("/%2e%2e%2fetc%2fpasswd"),
        NO("/..%2f"),
        NO("/..%2fetc"),
        NO("/a%2f..%2f..%2fetc"),
        NO("/%2f.."),
        NO("/..%5c"),
        NO("/..\\"),
        NO("/..\\x"),
        NO("/\\..\\x"),
        NO("/..;/x"),
        NO("/..%00"),
        NO("/..%00/x"),
        NO("/..."),
        NO("/...."),
        NO("/a/..."),
        NO("/a..b"),
        NO("/a.."),
        NO("/a%2e%2e"),
        NO("/a.%2eb"),
        NO("/..a"),
        NO("/a/..?"),
        NO("/a/..#"),
    };
    CHECK_ALL(cases);
}

Test(pathres, separators_inside_a_segment_refused)
{
    static const struct pcase cases[] = {
        NO("/a%2fb"), NO("/a%2Fb"), NO("/%2f"),   NO("/%2fetc%2fpasswd"),
        NO("/a%5cb"), NO("/a%5Cb"), NO("/%5c"),   NO("/a\\b"),
        NO("/\\"),    NO("\\a"),    NO("/a/\\"),  NO("/a\\"),
    };
    CHECK_ALL(cases);
}

Test(pathres, control_bytes_refused)
{
    static const struct pcase cases[] = {
        NO("/a%00b"),
        NO("/a%00"),
        NO("/%00"),
        NO("/a%00.html"),
        NO_LEN("/a\0b", 4),
        NO_LEN("/\0", 2),
        NO_LEN("\0/a", 3),
        NO("/a%0a"),
        NO("/a%0d%0a"),
        NO("/a%09"),
        NO("/a%1f"),
        NO("/a%01"),
        NO("/a%7f"),
        NO("/a%7F"),
        NO("/a\nb"),
        NO("/a\rb"),
        NO("/a\tb"),
        NO("/a\x7f"),
        NO("/a\x1b[31m"),
        /* C1 controls, valid UTF-8 but still control characters */
        NO("/%c2%80"),
        NO("/%c2%85"),
        NO("/%c2%9f"),
        NO("/a\xc2\x85"),
    };
    CHECK_ALL(cases);
}

Test(pathres, hidden_segments_refused)
{
    static const struct pcase cases[] = {
        NO("/.hidden"),   NO("/.git/config"), NO("/a/.env"),    NO("/.well-known/x"),
        NO("/%2ehidden"), NO("/%2Egit/HEAD"), NO("/a/.b/c"),    NO("/.htaccess"),
        NO("/a/%2e%2e%2e"), NO("/._x"),       NO("/.%20"),
    };
    CHECK_ALL(cases);
}

Test(pathres, must_start_with_slash)
{
    static const struct pcase cases[] = {
        NO("a"),  NO("a/b"), NO("index.html"), NO(" /a"), NO("%2fa"), NO("./a"),
        NO("../a"), NO("http://x/a"), NO("*"),
    };
    CHECK_ALL(cases);
    char out[PATHRES_OUT_MAX];
    cr_assert_eq(pathres_resolve("", 0, out, sizeof(out)), -1);
    cr_assert_str_eq(out, "");
}

Test(pathres, utf8_valid_accepted)
{
    static const struct pcase cases[] = {
        OK("/caf%c3%a9.html", "caf\xc3\xa9.html"),
        OK("/caf%C3%A9", "caf\xc3\xa9"),
        OK("/caf\xc3\xa9", "caf\xc3\xa9"),
        OK("/%e2%82%ac", "\xe2\x82\xac"),
        OK("/%f0%9f%98%80.png", "\xf0\x9f\x98\x80.png"),
        OK("/%c2%a0", "\xc2\xa0"),
        OK("/%ef%bf%bd", "\xef\xbf\xbd"),
        OK("/%f4%8f%bf%bf", "\xf4\x8f\xbf\xbf"),
        /* a lookalike slash is just a character on Linux */
        OK("/a%e2%88%95b", "a\xe2\x88\x95" "b"),
    };
    CHECK_ALL(cases);
}

Test(pathres, utf8_invalid_and_overlong_refused)
{
    static const struct pcase cases[] = {
        NO("/%c0%ae"),            /* overlong '.' */
        NO("/%c0%ae%c0%ae/"),     /* overlong ".." */
        NO("/%c0%ae%c0%ae/etc"),
        NO("/%c0%af"),            /* overlong '/' */
        NO("/a%c0%afb"),
        NO("/%c1%9c"),            /* overlong '\\' */
        NO("/%c1%1c"),
        NO("/%e0%80%ae"),         /* 3-byte overlong '.' */
        NO("/%e0%80%af"),
        NO("/%f0%80%80%ae"),      /* 4-byte overlong '.' */
        NO("/%f8%80%80%80%ae"),   /* 5-byte form */
        NO("/%fc%80%80%80%80%ae"),
        NO("/%80"),               /* lone continuation */
        NO("/%bf"),
        NO("/%ff"),
        NO("/%fe"),
        NO("/%c3"),               /* truncated */
        NO("/%c3/a"),
        NO("/%e2%82"),
        NO("/%c3%28"),            /* bad continuation */
        NO("/%ed%a0%80"),         /* surrogate */
        NO("/%ed%bf%bf"),
        NO("/%f4%90%80%80"),      /* above U+10FFFF */
        NO("/%f5%80%80%80"),
        NO("/\xc0\xae"),          /* raw overlong */
        NO("/\xc0\xae\xc0\xae/x"),
        NO("/\xff"),
        NO("/a\xe2\x82"),
    };
    CHECK_ALL(cases);
}

Test(pathres, split_before_decoding_means_escapes_never_span_segments)
{
    static const struct pcase cases[] = {
        NO("/%2/e"),  /* not a '.' */
        NO("/%c3/%a9"),
    };
    CHECK_ALL(cases);
}

Test(pathres, length_limit)
{
    char in[PATHRES_MAX_IN + 2];
    char out[PATHRES_OUT_MAX];

    in[0] = '/';
    memset(in + 1, 'a', sizeof(in) - 1);
    /* exactly PATHRES_MAX_IN bytes is accepted */
    cr_assert_eq(pathres_resolve(in, PATHRES_MAX_IN, out, sizeof(out)), 0);
    cr_assert_eq(strlen(out), PATHRES_MAX_IN - 1);
    /* one more is refused, even if the excess is only a query */
    cr_assert_eq(pathres_resolve(in, PATHRES_MAX_IN + 1, out, sizeof(out)), -1);
    cr_assert_str_eq(out, "");
    in[2] = '?';
    cr_assert_eq(pathres_resolve(in, PATHRES_MAX_IN + 1, out, sizeof(out)), -1);

    /* the longest directory path plus "index.html" fits PATHRES_OUT_MAX */
    memset(in + 1, 'a', sizeof(in) - 1);
    in[PATHRES_MAX_IN - 1] = '/';
    cr_assert_eq(pathres_resolve(in, PATHRES_MAX_IN, out, sizeof(out)), 0);
    cr_assert_eq(strlen(out), PATHRES_MAX_IN - 2 + strlen("/index.html"));
}

Test(pathres, input_need_not_be_terminated)
{
    char out[PATHRES_OUT_MAX];
    cr_assert_eq(pathres_resolve("/abc/../etc", 4, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "abc");
    cr_assert_eq(pathres_resolve("/a%2e%2e", 2, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "a");
    /* an escape cut off by len is malformed, not read past len */
    cr_assert_eq(pathres_resolve("/a%41", 4, out, sizeof(out)), -1);
}

Test(pathres, output_buffer_bounds)
{
    char out[16];

    memset(out, 'X', sizeof(out));
    cr_assert_eq(pathres_resolve("/abc", 4, out, 4), 0);
    cr_assert_str_eq(out, "abc");
    cr_assert_eq(out[4], 'X', "nothing written past outsz");

    memset(out, 'X', sizeof(out));
    cr_assert_eq(pathres_resolve("/abc", 4, out, 3), -1);
    cr_assert_str_eq(out, "");
    cr_assert_eq(out[3], 'X');

    cr_assert_eq(pathres_resolve("/", 1, out, 10), -1, "index.html needs 11 bytes");
    cr_assert_eq(pathres_resolve("/", 1, out, 11), 0);
    cr_assert_str_eq(out, "index.html");
    cr_assert_eq(pathres_resolve("/a/", 3, out, 12), -1);
    cr_assert_eq(pathres_resolve("/a/", 3, out, 13), 0);
    cr_assert_str_eq(out, "a/index.html");
    cr_assert_eq(pathres_resolve("/ab/cd", 6, out, 5), -1);

    out[0] = 'X';
    cr_assert_eq(pathres_resolve("/a", 2, out, 0), -1);
    cr_assert_eq(out[0], 'X', "outsz 0 writes nothing");
}

/* The properties every accepted result must have, whatever the input. */
static void assert_invariants(const char *in, size_t len, const char *out)
{
    size_t n = strlen(out);
    cr_assert_gt(n, 0, "'%.*s' resolved to an empty path", (int)len, in);
    cr_assert_neq(out[0], '/', "'%.*s' -> '%s'", (int)len, in, out);
    cr_assert_null(strstr(out, ".."), "'%.*s' -> '%s'", (int)len, in, out);
    cr_assert_null(strstr(out, "//"), "'%.*s' -> '%s'", (int)len, in, out);
    cr_assert_null(strchr(out, '\\'), "'%.*s' -> '%s'", (int)len, in, out);
    cr_assert_neq(out[n - 1], '/', "'%.*s' -> '%s'", (int)len, in, out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        cr_assert(c >= 0x20 && c != 0x7f, "'%.*s' -> control byte", (int)len, in);
        if (c == '.')
            cr_assert(i > 0 && out[i - 1] != '/', "'%.*s' -> '%s' has a dot segment",
                      (int)len, in, out);
    }
    cr_assert_geq(utf8_count(out, n), 0, "'%.*s' -> invalid UTF-8", (int)len, in);
}

/*
 * Every path "/" + up to 5 characters from the alphabet that traversal tricks
 * are made of, checked against the invariants, plus a re-resolve: a result
 * with no '%', '?' or '#' must be a fixed point.
 */
Test(pathres, exhaustive_short_paths)
{
    static const char alpha[] = "/.%2eEfF5cC\\a?";
    const size_t k = sizeof(alpha) - 1;
    char in[8], out[PATHRES_OUT_MAX], again[PATHRES_OUT_MAX + 1], out2[PATHRES_OUT_MAX];
    size_t accepted = 0, total = 0;

    for (size_t len = 0; len <= 5; len++) {
        size_t combos = 1;
        for (size_t i = 0; i < len; i++)
            combos *= k;
        for (size_t idx = 0; idx < combos; idx++) {
            size_t v = idx;
            in[0] = '/';
            for (size_t i = 0; i < len; i++) {
                in[1 + i] = alpha[v % k];
                v /= k;
            }
            total++;
            if (pathres_resolve(in, len + 1, out, sizeof(out)) != 0)
                continue;
            accepted++;
            assert_invariants(in, len + 1, out);
            if (strpbrk(out, "%?#"))
                continue;
            again[0] = '/';
            strcpy(again + 1, out);
            cr_assert_eq(pathres_resolve(again, strlen(again), out2, sizeof(out2)), 0);
            cr_assert_str_eq(out2, out, "not a fixed point: '%s'", again);
        }
    }
    cr_assert_gt(accepted, 1000, "the sweep should accept plenty (%zu of %zu)", accepted, total);
    cr_assert_lt(accepted, total);
}
