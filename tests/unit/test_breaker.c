/*
 * Unit tests for breaker, on a hand-driven clock: every transition
 * (closed -> open after N consecutive failures, the cooldown, half-open with
 * exactly one probe out, probe success -> closed, probe failure -> open with
 * a fresh cooldown), success resetting the failure run, stale results from
 * calls let through before the breaker opened, and cancelled probes.
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "breaker.h"

static struct breaker b;

static void fail_n(int n, int64_t now)
{
    for (int i = 0; i < n; i++) {
        enum breaker_permit p = breaker_acquire(&b, now);
        cr_assert_eq(p, BREAKER_CALL);
        breaker_release(&b, p, false, now);
    }
}

Test(breaker, starts_closed_and_opens_after_threshold)
{
    breaker_init(&b, 5, 30000);
    cr_expect_eq(breaker_state(&b, 0), BREAKER_CLOSED);
    fail_n(4, 100);
    cr_expect_eq(breaker_state(&b, 100), BREAKER_CLOSED, "4 of 5 failures: still closed");
    enum breaker_permit p = breaker_acquire(&b, 200);
    cr_assert_eq(p, BREAKER_CALL);
    cr_expect_eq(breaker_release(&b, p, false, 200), BREAKER_OPEN);
    cr_expect_eq(breaker_state(&b, 200), BREAKER_OPEN);
    cr_expect_eq(breaker_acquire(&b, 201), BREAKER_DENY);
    cr_expect_eq(breaker_next_ms(&b, 201), 200 + 30000);
}

Test(breaker, success_resets_the_run)
{
    breaker_init(&b, 3, 1000);
    fail_n(2, 0);
    enum breaker_permit p = breaker_acquire(&b, 0);
    breaker_release(&b, p, true, 0);
    fail_n(2, 0);
    cr_expect_eq(breaker_state(&b, 0), BREAKER_CLOSED, "failures are counted consecutively");
    fail_n(1, 0);
    cr_expect_eq(breaker_state(&b, 0), BREAKER_OPEN);
}

Test(breaker, cooldown_then_one_probe_at_a_time)
{
    breaker_init(&b, 1, 1000);
    fail_n(1, 5000);
    cr_expect_eq(breaker_acquire(&b, 5999), BREAKER_DENY, "cooldown not over");
    cr_expect_eq(breaker_state(&b, 5999), BREAKER_OPEN);
    cr_expect_eq(breaker_state(&b, 6000), BREAKER_HALF_OPEN, "reads half-open once cooled");
    cr_expect_eq(breaker_next_ms(&b, 6000), 6000);
    enum breaker_permit probe = breaker_acquire(&b, 6000);
    cr_assert_eq(probe, BREAKER_PROBE);
    cr_expect_eq(breaker_state(&b, 6000), BREAKER_HALF_OPEN);
    for (int i = 0; i < 10; i++)
        cr_expect_eq(breaker_acquire(&b, 6000 + i * 100000), BREAKER_DENY,
                     "a second caller is denied while the probe is out");
    cr_expect_eq(breaker_next_ms(&b, 7000), INT64_MAX);
    cr_expect_eq(breaker_release(&b, probe, true, 7000), BREAKER_CLOSED);
    cr_expect_eq(breaker_acquire(&b, 7000), BREAKER_CALL);
}

Test(breaker, failed_probe_reopens_with_fresh_cooldown)
{
    breaker_init(&b, 2, 1000);
    fail_n(2, 0);
    enum breaker_permit probe = breaker_acquire(&b, 1000);
    cr_assert_eq(probe, BREAKER_PROBE);
    cr_expect_eq(breaker_release(&b, probe, false, 1500), BREAKER_OPEN);
    cr_expect_eq(breaker_acquire(&b, 2400), BREAKER_DENY, "cooldown restarts at the failure");
    cr_expect_eq(breaker_next_ms(&b, 2400), 2500);
    probe = breaker_acquire(&b, 2500);
    cr_assert_eq(probe, BREAKER_PROBE);
    cr_expect_eq(breaker_release(&b, probe, true, 2600), BREAKER_CLOSED);
    /* closed again: the full threshold applies anew */
    fail_n(1, 2700);
    cr_expect_eq(breaker_state(&b, 2700), BREAKER_CLOSED);
}

Test(breaker, stale_results_do_not_move_it)
{
    breaker_init(&b, 2, 1000);
    /* two calls go out while closed; both fail late, after others opened it */
    enum breaker_permit slow1 = breaker_acquire(&b, 0);
    enum breaker_permit slow2 = breaker_acquire(&b, 0);
    fail_n(2, 10);
    cr_assert_eq(breaker_state(&b, 10), BREAKER_OPEN);
    cr_expect_eq(breaker_release(&b, slow1, true, 20), BREAKER_OPEN,
                 "a success begun before the breaker opened does not close it");
    enum breaker_permit probe = breaker_acquire(&b, 1010);
    cr_assert_eq(probe, BREAKER_PROBE);
    cr_expect_eq(breaker_release(&b, slow2, false, 1020), BREAKER_HALF_OPEN,
                 "nor does a stale failure reopen it while the probe is out");
    cr_expect_eq(breaker_acquire(&b, 1020), BREAKER_DENY);
    cr_expect_eq(breaker_release(&b, probe, true, 1030), BREAKER_CLOSED);
    cr_expect_eq(breaker_release(&b, BREAKER_DENY, false, 1040), BREAKER_CLOSED,
                 "a denied permit reports nothing");
}

Test(breaker, cancelled_probe_frees_the_slot)
{
    breaker_init(&b, 1, 0);
    fail_n(1, 0);
    enum breaker_permit probe = breaker_acquire(&b, 0);
    cr_assert_eq(probe, BREAKER_PROBE, "zero cooldown: probe at once");
    cr_expect_eq(breaker_acquire(&b, 0), BREAKER_DENY);
    breaker_cancel(&b, probe);
    cr_expect_eq(breaker_state(&b, 0), BREAKER_HALF_OPEN);
    cr_expect_eq(breaker_acquire(&b, 0), BREAKER_PROBE, "the next caller may probe");
    breaker_cancel(&b, BREAKER_CALL); /* no effect */
    cr_expect_eq(breaker_acquire(&b, 0), BREAKER_DENY);
}

Test(breaker, init_normalises)
{
    breaker_init(&b, 0, -10);
    cr_expect_eq(b.threshold, 1);
    cr_expect_eq(b.cooldown_ms, 0);
}
