/*
 * criterion shim: the new assertion API (cr_assert(eq(int, a, b))) is not
 * supported. Without this file the system header would be found instead and
 * clash with the shim.
 */
#error "the TSan criterion shim (tests/unit/tsan) lacks the new API; use cr_assert_eq() etc."
