/*
 * Unit tests for util: UTF-8 decoding, validation and counting (every class of
 * malformed input at its boundary), str_lcpy truncation, the clocks and the
 * allocation wrappers.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* utf8_count over a byte literal, without its terminating NUL. */
#define U8(lit) utf8_count((lit), sizeof(lit) - 1)

Test(util, utf8_ascii_and_empty)
{
    cr_assert_eq(utf8_count("", 0), 0);
    cr_assert_eq(U8("hello"), 5);
    cr_assert_eq(U8("\x7f"), 1);
    /* the length, not a NUL, ends the input: NUL is a valid code point */
    cr_assert_eq(utf8_count("a\0b", 3), 3);
    /* only len bytes are read */
    cr_assert_eq(utf8_count("hello", 2), 2);
}

Test(util, utf8_valid_multibyte_at_each_boundary)
{
    cr_assert_eq(U8("\xc2\x80"), 1);         /* U+0080, smallest 2-byte */
    cr_assert_eq(U8("\xdf\xbf"), 1);         /* U+07FF, largest 2-byte */
    cr_assert_eq(U8("\xe0\xa0\x80"), 1);     /* U+0800, smallest 3-byte */
    cr_assert_eq(U8("\xed\x9f\xbf"), 1);     /* U+D7FF, just below the surrogates */
    cr_assert_eq(U8("\xee\x80\x80"), 1);     /* U+E000, just above them */
    cr_assert_eq(U8("\xef\xbf\xbf"), 1);     /* U+FFFF */
    cr_assert_eq(U8("\xf0\x90\x80\x80"), 1); /* U+10000, smallest 4-byte */
    cr_assert_eq(U8("\xf4\x8f\xbf\xbf"), 1); /* U+10FFFF, the last code point */
    cr_assert_eq(U8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"), 9);
}

Test(util, utf8_overlong_forms_are_invalid)
{
    cr_assert_eq(U8("\xc0\x80"), -1);         /* NUL in 2 bytes */
    cr_assert_eq(U8("\xc1\xbf"), -1);         /* U+007F in 2 bytes */
    cr_assert_eq(U8("\xe0\x80\x80"), -1);     /* NUL in 3 bytes */
    cr_assert_eq(U8("\xe0\x9f\xbf"), -1);     /* U+07FF in 3 bytes */
    cr_assert_eq(U8("\xf0\x80\x80\x80"), -1); /* NUL in 4 bytes */
    cr_assert_eq(U8("\xf0\x8f\xbf\xbf"), -1); /* U+FFFF in 4 bytes */
}

Test(util, utf8_surrogates_are_invalid)
{
    cr_assert_eq(U8("\xed\xa0\x80"), -1);             /* U+D800 */
    cr_assert_eq(U8("\xed\xb0\x80"), -1);             /* U+DC00 */
    cr_assert_eq(U8("\xed\xbf\xbf"), -1);             /* U+DFFF */
    cr_assert_eq(U8("\xed\xa0\xbd\xed\xb8\x80"), -1); /* a CESU-8 pair */
}

Test(util, utf8_beyond_max_code_point_is_invalid)
{
    cr_assert_eq(U8("\xf4\x90\x80\x80"), -1);         /* U+110000 */
    cr_assert_eq(U8("\xf7\xbf\xbf\xbf"), -1);         /* U+1FFFFF */
    cr_assert_eq(U8("\xf8\x88\x80\x80\x80"), -1);     /* old 5-byte form */
    cr_assert_eq(U8("\xfc\x84\x80\x80\x80\x80"), -1); /* old 6-byte form */
    cr_assert_eq(U8("\xfe"), -1);
    cr_assert_eq(U8("\xff"), -1);
}

Test(util, utf8_truncated_and_broken_sequences_are_invalid)
{
    cr_assert_eq(U8("\xc3"), -1);
    cr_assert_eq(U8("\xe2\x82"), -1);
    cr_assert_eq(U8("\xf0\x9f\x98"), -1);
    cr_assert_eq(U8("ok\xf0\x9f"), -1);
    /* complete in memory, cut by len */
    cr_assert_eq(utf8_count("\xe2\x82\xac", 2), -1);
    /* a lead byte followed by a non-continuation byte */
    cr_assert_eq(U8("\xc3\x28"), -1);
    cr_assert_eq(U8("\xe2\x28\xa1"), -1);
    cr_assert_eq(U8("\xf0\x9f\x98\x41"), -1);
    /* a stray continuation byte */
    cr_assert_eq(U8("\x80"), -1);
    cr_assert_eq(U8("a\xbf"), -1);
}

/* utf8_decode over a byte literal, without its terminating NUL. */
#define DEC(lit, cp) utf8_decode((const unsigned char *)(lit), sizeof(lit) - 1, (cp))

Test(util, utf8_decode_one_code_point)
{
    uint32_t cp = 0;

    cr_assert_eq(DEC("A", &cp), 1);
    cr_assert_eq(cp, 0x41);
    cr_assert_eq(utf8_decode((const unsigned char *)"\0", 1, &cp), 1);
    cr_assert_eq(cp, 0);
    cr_assert_eq(DEC("\xc3\xa9tait", &cp), 2); /* only the first one */
    cr_assert_eq(cp, 0xe9);
    cr_assert_eq(DEC("\xe2\x82\xac", &cp), 3);
    cr_assert_eq(cp, 0x20ac);
    cr_assert_eq(DEC("\xf4\x8f\xbf\xbf", &cp), 4);
    cr_assert_eq(cp, 0x10ffff);
}

Test(util, utf8_decode_refuses_invalid_and_leaves_cp)
{
    uint32_t cp = 7;

    cr_assert_eq(utf8_decode((const unsigned char *)"A", 0, &cp), 0); /* nothing to read */
    cr_assert_eq(DEC("\xc0\x80", &cp), 0);                            /* overlong */
    cr_assert_eq(DEC("\xe0\x9f\xbf", &cp), 0);                        /* overlong */
    cr_assert_eq(DEC("\xed\xa0\x80", &cp), 0);                        /* surrogate */
    cr_assert_eq(DEC("\xf4\x90\x80\x80", &cp), 0);                    /* > U+10FFFF */
    cr_assert_eq(DEC("\x80", &cp), 0);                                /* stray continuation */
    cr_assert_eq(DEC("\xe2\x82", &cp), 0);                            /* truncated */
    cr_assert_eq(DEC("\xe2\x82A", &cp), 0);                           /* broken */
    /* n bounds the read even when more bytes follow */
    cr_assert_eq(utf8_decode((const unsigned char *)"\xe2\x82\xac", 2, &cp), 0);
    cr_assert_eq(cp, 7);
}

Test(util, str_lcpy_fits)
{
    char buf[8];
    cr_assert_eq(str_lcpy(buf, "hello", sizeof(buf)), 5);
    cr_assert_str_eq(buf, "hello");
    cr_assert_eq(str_lcpy(buf, "", sizeof(buf)), 0);
    cr_assert_str_eq(buf, "");
    /* exactly dstsz - 1 characters is not truncation */
    cr_assert_eq(str_lcpy(buf, "1234567", sizeof(buf)), 7);
    cr_assert_str_eq(buf, "1234567");
}

Test(util, str_lcpy_truncates_and_reports_source_length)
{
    struct {
        char buf[8];
        char guard[8];
    } s;
    memset(&s, 'G', sizeof(s));

    size_t n = str_lcpy(s.buf, "hello, world", sizeof(s.buf));
    cr_assert_eq(n, 12);
    cr_assert(n >= sizeof(s.buf), "truncation must be detectable");
    cr_assert_str_eq(s.buf, "hello, ");
    for (size_t i = 0; i < sizeof(s.guard); i++)
        cr_assert_eq(s.guard[i], 'G', "wrote past dstsz at guard[%zu]", i);

    cr_assert_eq(str_lcpy(s.buf, "xyz", 1), 3);
    cr_assert_eq(s.buf[0], '\0');
    /* dstsz 0: nothing is written at all */
    s.buf[0] = 'Q';
    cr_assert_eq(str_lcpy(s.buf, "xyz", 0), 3);
    cr_assert_eq(s.buf[0], 'Q');
}

Test(util, monotonic_clocks_never_go_backwards)
{
    int64_t ms = now_mono_ms(), ns = now_mono_ns();
    cr_assert_geq(ms, 0);
    cr_assert_geq(ns, 0);
    for (int i = 0; i < 100000; i++) {
        int64_t ms2 = now_mono_ms(), ns2 = now_mono_ns();
        cr_assert_geq(ms2, ms);
        cr_assert_geq(ns2, ns);
        ms = ms2;
        ns = ns2;
    }
}

Test(util, mono_ms_and_ns_are_the_same_clock)
{
    /* read in the order ms, ns, ms: the ns reading must fall between */
    for (int i = 0; i < 1000; i++) {
        int64_t a = now_mono_ms();
        int64_t ns = now_mono_ns();
        int64_t b = now_mono_ms();
        cr_assert_leq(a, ns / 1000000);
        cr_assert_leq(ns / 1000000, b);
    }
}

Test(util, wall_clock_is_epoch_ms)
{
    /* later than 2020-01-01 and earlier than 2200-01-01, in milliseconds */
    int64_t w = now_wall_ms();
    cr_assert_gt(w, INT64_C(1577836800000));
    cr_assert_lt(w, INT64_C(7258118400000));
}

Test(util, allocation_wrappers)
{
    void *z = xmalloc(0);
    cr_assert_not_null(z, "xmalloc(0) must return a pointer that can be freed");
    free(z);

    unsigned char *c = xcalloc(100, 1);
    for (size_t i = 0; i < 100; i++)
        cr_assert_eq(c[i], 0);
    c[99] = 7;
    c = xrealloc(c, 100000);
    cr_assert_eq(c[99], 7, "xrealloc must keep the contents");
    free(c);

    char *d = xstrdup("parley");
    cr_assert_str_eq(d, "parley");
    free(d);
    d = xstrndup("parley", 3);
    cr_assert_str_eq(d, "par");
    free(d);
    d = xstrndup("a\0b", 3);
    cr_assert_eq(memcmp(d, "a\0b\0", 4), 0, "xstrndup copies n bytes and terminates");
    free(d);
}

/* util_random_hex: exactly 2n lowercase hex digits and a NUL, nothing
 * written past them, across the helper's internal 32-byte chunks. */
Test(util, random_hex_length_alphabet_and_bounds)
{
    static const size_t sizes[] = {0, 1, 8, 16, 24, 31, 32, 33, 100};
    char buf[2 * 100 + 1 + 16];

    for (size_t s = 0; s < ARRAY_LEN(sizes); s++) {
        size_t n = sizes[s];
        memset(buf, '#', sizeof(buf));
        util_random_hex(buf, n);
        cr_assert_eq(strlen(buf), 2 * n, "%zu bytes gave %zu characters", n, strlen(buf));
        for (size_t i = 0; i < 2 * n; i++)
            cr_assert(strchr("0123456789abcdef", buf[i]) && buf[i], "'%c' in %s", buf[i], buf);
        for (size_t i = 2 * n + 1; i < sizeof(buf); i++)
            cr_assert_eq(buf[i], '#', "%zu bytes: wrote past the end at %zu", n, i);
    }
}

/* The digits come from random bytes: two ids differ, and over 8 KiB every
 * digit turns up near its share in both the high and the low nibble (each
 * position's count is Binomial(8192, 1/16), mean 512, sd 22; a constant,
 * a stuck nibble or a skewed table is far outside 400..624). */
Test(util, random_hex_is_random)
{
    char a[33], b[33];
    util_random_hex(a, 16);
    util_random_hex(b, 16);
    cr_assert_str_neq(a, b, "two 128-bit ids are equal");

    enum { N = 8192 };
    char *big = malloc(2 * N + 1);
    unsigned hi[16] = {0}, lo[16] = {0};
    cr_assert_not_null(big);
    util_random_hex(big, N);
    for (size_t i = 0; i < N; i++) {
        const char *d = "0123456789abcdef";
        hi[strchr(d, big[2 * i]) - d]++;
        lo[strchr(d, big[2 * i + 1]) - d]++;
    }
    for (int k = 0; k < 16; k++) {
        cr_assert(hi[k] >= 400 && hi[k] <= 624, "high nibble %x: %u of %d", k, hi[k], N);
        cr_assert(lo[k] >= 400 && lo[k] <= 624, "low nibble %x: %u of %d", k, lo[k], N);
    }
    free(big);
}
