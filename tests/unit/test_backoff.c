/*
 * Unit tests for backoff: the doubling schedule and its cap, overflow-proof
 * ceilings for huge attempt numbers, the bounds of full and equal jitter
 * over pinned and seeded random draws (both ends reachable), and the seeded
 * generator being deterministic.
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "backoff.h"

Test(backoff, schedule_doubles_to_cap)
{
    struct backoff b = {.base_ms = 1000, .max_ms = 300000, .jitter = BACKOFF_JITTER_NONE};
    const int64_t want[] = {1000,  2000,   4000,   8000,   16000, 32000,
                            64000, 128000, 256000, 300000, 300000};
    for (int i = 0; i < (int)(sizeof(want) / sizeof(want[0])); i++) {
        cr_expect_eq(backoff_cap_ms(&b, i + 1), want[i], "attempt %d", i + 1);
        cr_expect_eq(backoff_delay_ms(&b, i + 1, UINT64_MAX), want[i]);
    }
}

Test(backoff, huge_attempts_do_not_overflow)
{
    struct backoff b = {.base_ms = 3, .max_ms = INT64_MAX, .jitter = BACKOFF_JITTER_NONE};
    int64_t prev = 0;
    for (int a = 1; a < 200; a++) {
        int64_t c = backoff_cap_ms(&b, a);
        cr_assert_geq(c, prev, "attempt %d: %lld < %lld", a, (long long)c, (long long)prev);
        cr_assert_gt(c, 0);
        prev = c;
    }
    cr_expect_eq(backoff_cap_ms(&b, 1000000), INT64_MAX);
    b.max_ms = 300000;
    cr_expect_eq(backoff_cap_ms(&b, 1 << 30), 300000);
}

Test(backoff, odd_parameters_are_normalised)
{
    struct backoff b = {.base_ms = 0, .max_ms = -5, .jitter = BACKOFF_JITTER_NONE};
    cr_expect_eq(backoff_cap_ms(&b, 1), 1);
    cr_expect_eq(backoff_cap_ms(&b, 10), 1);
    b = (struct backoff){.base_ms = 500, .max_ms = 100, .jitter = BACKOFF_JITTER_NONE};
    cr_expect_eq(backoff_cap_ms(&b, 0), 500, "attempt < 1 counts as 1");
    cr_expect_eq(backoff_cap_ms(&b, -3), 500);
    cr_expect_eq(backoff_cap_ms(&b, 5), 500, "max below base is raised to base");
}

Test(backoff, full_jitter_bounds)
{
    struct backoff b = {.base_ms = 1000, .max_ms = 300000, .jitter = BACKOFF_JITTER_FULL};
    cr_expect_eq(backoff_delay_ms(&b, 3, 0), 0, "lowest draw gives 0");
    cr_expect_eq(backoff_delay_ms(&b, 3, 4000), 4000, "the cap itself is reachable");
    cr_expect_eq(backoff_delay_ms(&b, 3, 4001), 0);
    uint64_t st = 42;
    bool low = false, high = false;
    for (int i = 0; i < 20000; i++) {
        int64_t d = backoff_delay_ms(&b, 2, backoff_rand(&st));
        cr_assert(d >= 0 && d <= 2000, "%lld", (long long)d);
        low |= d < 500;
        high |= d > 1500;
    }
    cr_expect(low && high, "draws spread over the whole range");
}

Test(backoff, equal_jitter_bounds)
{
    struct backoff b = {.base_ms = 1000, .max_ms = 300000, .jitter = BACKOFF_JITTER_EQUAL};
    cr_expect_eq(backoff_delay_ms(&b, 1, 0), 500);
    cr_expect_eq(backoff_delay_ms(&b, 1, 500), 1000);
    cr_expect_eq(backoff_delay_ms(&b, 20, 0), 150000);
    b.base_ms = 3, b.max_ms = 3; /* odd cap: [1, 3] */
    cr_expect_eq(backoff_delay_ms(&b, 1, 0), 1);
    cr_expect_eq(backoff_delay_ms(&b, 1, 2), 3);
    b = (struct backoff){.base_ms = 1000, .max_ms = 300000, .jitter = BACKOFF_JITTER_EQUAL};
    uint64_t st = 7;
    for (int a = 1; a <= 12; a++) {
        int64_t cap = backoff_cap_ms(&b, a);
        bool low = false, high = false;
        for (int i = 0; i < 4000; i++) {
            int64_t d = backoff_delay_ms(&b, a, backoff_rand(&st));
            cr_assert(d >= cap / 2 && d <= cap, "attempt %d: %lld not in [%lld, %lld]", a,
                      (long long)d, (long long)(cap / 2), (long long)cap);
            low |= d < cap / 2 + cap / 8;
            high |= d > cap - cap / 8;
        }
        cr_expect(low && high, "attempt %d: draws spread over [cap/2, cap]", a);
    }
}

Test(backoff, rand_is_deterministic_per_seed)
{
    uint64_t a = 123, b = 123, c = 124;
    uint64_t first_a = backoff_rand(&a);
    cr_expect_eq(first_a, backoff_rand(&b));
    cr_expect_neq(first_a, backoff_rand(&c));
    for (int i = 0; i < 100; i++)
        cr_expect_eq(backoff_rand(&a), backoff_rand(&b));
    uint64_t z = 0;
    cr_expect_neq(backoff_rand(&z), backoff_rand(&z), "seed 0 is fine");
}
