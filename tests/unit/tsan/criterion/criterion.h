/*
 * criterion shim — a small in-process stand-in for the part of criterion's
 * API that parley's threaded unit tests use, so that they can run under
 * ThreadSanitizer.
 *
 * Why it exists: at start-up criterion 2.4 maps a shared-memory arena at a
 * fixed random address, which collides with TSan's reserved ranges on most
 * runs ("Could not initialize inheritable arena"). When b_sanitize=thread,
 * tests/unit/meson.build compiles the tests marked 'threads' against this
 * header (tests/unit/tsan comes before the system include path) and links
 * them with tsan/runner.c instead of libcriterion. Every other build uses the
 * real criterion, so a test written here must still build there; the shim
 * only has to be faithful, not complete.
 *
 * Supported: Test() and TestSuite() with .init .fini .signal .exit_code
 * .timeout .disabled .description .data; cr_assert_* and cr_expect_* for
 * plain, not, eq, neq, lt, leq, gt, geq, null, not_null, zero, not_zero,
 * float_eq, float_neq, str_eq, str_neq, str_lt, str_leq, str_gt, str_geq,
 * str_empty, str_not_empty, arr_eq, arr_neq and fail; cr_skip_test; cr_log
 * and cr_log_info/warn/error. Messages are printf formats checked at compile
 * time and evaluated only on failure. Not supported: parameterized tests,
 * theories, the new cr_assert(eq(...)) API, output redirection.
 *
 * Deliberate differences: a NULL string makes a cr_*_str_* check fail
 * instead of crashing; string and float failures print the values; at most
 * 63 arguments follow the values in one assertion.
 *
 * Each test runs in its own forked child (runner.c): .init, the test and
 * .fini run there, a fatal assertion on the test's thread longjmps to .fini
 * as in criterion, and one on another thread ends the child at once.
 */
#ifndef PARLEY_CRITERION_SHIM_H
#define PARLEY_CRITERION_SHIM_H

/* what the real criterion.h makes visible, so a test that builds here also
 * builds there and the other way round */
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The options of Test() and TestSuite(), as in criterion's
 * struct criterion_test_extra_data. A test's non-zero option overrides its
 * suite's; .init/.fini of both run (suite first on the way in, last on the
 * way out). A zero .timeout means the runner's default (60 s). */
struct crs_opts {
    int sentinel_; /* lets Test(s, n) pass an empty option list */
    void (*init)(void);
    void (*fini)(void);
    int signal;
    int exit_code;
    bool disabled;
    const char *description;
    double timeout;
    void *data;
};

/* One Test(); defined by the macro, read by the runner. The field names end
 * in '_' so that a test's own macros (say "#define name ...") cannot rewrite
 * the designators in Test(). */
struct crs_test {
    const char *suite_;
    const char *name_;
    const char *file_;
    int line_;
    void (*fn_)(void);
    struct crs_opts opts_;
    struct crs_test *next_; /* runner's registration list */
};

/* One TestSuite(). */
struct crs_suite {
    const char *name_;
    struct crs_opts opts_;
    struct crs_suite *next_;
};

enum criterion_severity {
    CR_LOG_INFO,
    CR_LOG_WARNING,
    CR_LOG_ERROR,
};

/* Thread: main, from constructors, before main(). Link a test or suite into
 * the runner's lists; the object must live for the whole run. */
void crs__register_test(struct crs_test *t);
void crs__register_suite(struct crs_suite *s);

/* Thread: any thread of a test. Record a failed check at file:line: print
 * it with the check's source text, the detail (values, may be NULL) and the
 * formatted message (an empty message means "none"), and tell the runner.
 * Safe to call from several threads at once. */
__attribute__((format(printf, 5, 6))) void crs__report(const char *file, int line, const char *text,
                                                       const char *detail, const char *fmt, ...);

/* Thread: any thread of a test. End the test after a fatal failure: on the
 * test's own thread, jump to its .fini; on any other thread, end the child
 * process at once (longjmp across threads is undefined). */
_Noreturn void crs__abort(void);

/* Thread: any thread of a test. Mark the test skipped and end it like
 * crs__abort(). Not counted as tested, like criterion. */
__attribute__((format(printf, 3, 4))) _Noreturn void crs__skip(const char *file, int line,
                                                               const char *fmt, ...);

/* Thread: any. Describe the operands of a failed check, in a per-thread
 * buffer that stays valid until the thread's next call. n is how many of a,
 * b are shown (1 or 2). */
const char *crs__str_detail(int n, const char *a, const char *b);
const char *crs__float_detail(double a, double b, double epsilon);

/* Thread: any. Print a message prefixed by its severity, like criterion. */
__attribute__((format(printf, 2, 3))) void cr_log(enum criterion_severity severity, const char *msg,
                                                  ...);

#define cr_log_info(...) cr_log(CR_LOG_INFO, __VA_ARGS__)
#define cr_log_warn(...) cr_log(CR_LOG_WARNING, __VA_ARGS__)
#define cr_log_error(...) cr_log(CR_LOG_ERROR, __VA_ARGS__)

/* ---- test registration ---- */

/* Test(suite, name, .option = value...) { body }. The options are pasted
 * into a designated initializer; the trailing .sentinel_ keeps the variadic
 * part non-empty, which ISO C requires (-Wpedantic). */
#define Test(...) CRS_TEST_(__VA_ARGS__, .sentinel_ = 0)
#define CRS_TEST_(Suite, Name, ...)                                                                \
    static void Suite##_##Name##_impl(void);                                                       \
    static struct crs_test Suite##_##Name##_test = {                                               \
        .suite_ = #Suite,                                                                          \
        .name_ = #Name,                                                                            \
        .file_ = __FILE__,                                                                         \
        .line_ = __LINE__,                                                                         \
        .fn_ = Suite##_##Name##_impl,                                                              \
        .opts_ = {__VA_ARGS__},                                                                    \
    };                                                                                             \
    __attribute__((constructor)) static void Suite##_##Name##_register(void)                       \
    {                                                                                              \
        crs__register_test(&Suite##_##Name##_test);                                                \
    }                                                                                              \
    static void Suite##_##Name##_impl(void)

/* TestSuite(name, .option = value...); ends in a declaration so that the
 * caller's semicolon is not an empty file-scope declaration (-Wpedantic). */
#define TestSuite(...) CRS_SUITE_(__VA_ARGS__, .sentinel_ = 0)
#define CRS_SUITE_(Name, ...)                                                                      \
    static struct crs_suite crs_suite_##Name;                                                      \
    __attribute__((constructor)) static void crs_suite_##Name##_register(void)                     \
    {                                                                                              \
        crs__register_suite(&crs_suite_##Name);                                                    \
    }                                                                                              \
    static struct crs_suite crs_suite_##Name = {.name_ = #Name, .opts_ = {__VA_ARGS__}}

/* ---- argument lists ----
 * Every check is variadic so that its message is optional without the GNU
 * ", ##__VA_ARGS__" extension. CRS_ARGn_ picks the n-th argument and
 * CRS_TAILn_ everything after the first n, or an empty message ("%s", "")
 * when there is nothing after them. */

#define CRS_ARG1_(...) CRS_ARG1X_(__VA_ARGS__, 0)
#define CRS_ARG1X_(a, ...) a
#define CRS_DROP1_(a, ...) __VA_ARGS__
#define CRS_DROP2_(a, b, ...) __VA_ARGS__
#define CRS_ARG2_(...) CRS_ARG1_(CRS_DROP1_(__VA_ARGS__))
#define CRS_ARG3_(...) CRS_ARG1_(CRS_DROP2_(__VA_ARGS__))

/* the name of the macro that takes the tail: CRS_TAIL_ONE_ for exactly one
 * argument, CRS_TAIL_MANY_ for 2 to 64; macro names rather than pasted
 * words, so that a test's own macros (say MANY) cannot capture them */
#define CRS_PICK65_(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17,    \
                    a18, a19, a20, a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32,     \
                    a33, a34, a35, a36, a37, a38, a39, a40, a41, a42, a43, a44, a45, a46, a47,     \
                    a48, a49, a50, a51, a52, a53, a54, a55, a56, a57, a58, a59, a60, a61, a62,     \
                    a63, a64, x, ...)                                                              \
    x
#define CRS_TAIL1_(...)                                                                            \
    CRS_PICK65_(__VA_ARGS__, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,       \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_,    \
                CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_MANY_, CRS_TAIL_ONE_, 0)  \
    (__VA_ARGS__)
#define CRS_TAIL_ONE_(a) "%s", ""
#define CRS_TAIL_MANY_(a, ...) __VA_ARGS__
#define CRS_TAIL2_(...) CRS_TAIL1_(CRS_DROP1_(__VA_ARGS__))
#define CRS_TAIL3_(...) CRS_TAIL1_(CRS_DROP2_(__VA_ARGS__))

/* cr_*_fail and cr_skip_test take only a message, possibly none; a leading
 * marker byte (dropped when printed) keeps the format non-empty, as
 * -Wformat-zero-length wants. Like criterion, the format must be a literal. */
#define CRS_MARK_ "\x1f"

/* ---- checks ---- */

#define CRS_CHECK_(fatal, text, cond, detail, ...)                                                 \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            crs__report(__FILE__, __LINE__, text, detail, __VA_ARGS__);                            \
            if (fatal)                                                                             \
                crs__abort();                                                                      \
        }                                                                                          \
    } while (0)

#define CRS_BOOL_(fatal, text, ...)                                                                \
    CRS_CHECK_(fatal, text, CRS_ARG1_(__VA_ARGS__), NULL, CRS_TAIL1_(__VA_ARGS__))
#define CRS_NOT_(fatal, text, ...)                                                                 \
    CRS_CHECK_(fatal, text, !(CRS_ARG1_(__VA_ARGS__)), NULL, CRS_TAIL1_(__VA_ARGS__))
#define CRS_CMP_(fatal, text, op, ...)                                                             \
    CRS_CHECK_(fatal, text, (CRS_ARG1_(__VA_ARGS__))op(CRS_ARG2_(__VA_ARGS__)), NULL,              \
               CRS_TAIL2_(__VA_ARGS__))
#define CRS_NULL_(fatal, text, op, ...)                                                            \
    CRS_CHECK_(fatal, text, (CRS_ARG1_(__VA_ARGS__))op NULL, NULL, CRS_TAIL1_(__VA_ARGS__))
#define CRS_ARR_(fatal, text, op, ...)                                                             \
    CRS_CHECK_(                                                                                    \
        fatal, text,                                                                               \
        memcmp((CRS_ARG1_(__VA_ARGS__)), (CRS_ARG2_(__VA_ARGS__)), (CRS_ARG3_(__VA_ARGS__))) op 0, \
        NULL, CRS_TAIL3_(__VA_ARGS__))

/* the operands are evaluated once, then shown on failure */
#define CRS_FLOAT_(fatal, text, want_eq, ...)                                                      \
    do {                                                                                           \
        double crs_x_ = (CRS_ARG1_(__VA_ARGS__));                                                  \
        double crs_y_ = (CRS_ARG2_(__VA_ARGS__));                                                  \
        double crs_eps_ = (CRS_ARG3_(__VA_ARGS__));                                                \
        CRS_CHECK_(fatal, text,                                                                    \
                   (crs_x_ - crs_y_ <= crs_eps_ && crs_y_ - crs_x_ <= crs_eps_) == (want_eq),      \
                   crs__float_detail(crs_x_, crs_y_, crs_eps_), CRS_TAIL3_(__VA_ARGS__));          \
    } while (0)
#define CRS_STR_(fatal, text, op, ...)                                                             \
    do {                                                                                           \
        const char *crs_a_ = (CRS_ARG1_(__VA_ARGS__));                                             \
        const char *crs_b_ = (CRS_ARG2_(__VA_ARGS__));                                             \
        CRS_CHECK_(fatal, text, crs_a_ &&crs_b_ &&strcmp(crs_a_, crs_b_) op 0,                     \
                   crs__str_detail(2, crs_a_, crs_b_), CRS_TAIL2_(__VA_ARGS__));                   \
    } while (0)
#define CRS_STR_EMPTY_(fatal, text, want_empty, ...)                                               \
    do {                                                                                           \
        const char *crs_a_ = (CRS_ARG1_(__VA_ARGS__));                                             \
        CRS_CHECK_(fatal, text, crs_a_ && (crs_a_[0] == '\0') == (want_empty),                     \
                   crs__str_detail(1, crs_a_, NULL), CRS_TAIL1_(__VA_ARGS__));                     \
    } while (0)
#define CRS_FAIL_(fatal, text, ...)                                                                \
    do {                                                                                           \
        crs__report(__FILE__, __LINE__, text, NULL, CRS_MARK_ __VA_ARGS__);                        \
        if (fatal)                                                                                 \
            crs__abort();                                                                          \
    } while (0)

/* Each check stringifies its arguments itself: a macro it passed them to
 * would see them already macro-expanded (NULL as ((void *)0)). */
#define cr_assert(...) CRS_BOOL_(1, "cr_assert(" #__VA_ARGS__ ")", __VA_ARGS__)
#define cr_expect(...) CRS_BOOL_(0, "cr_expect(" #__VA_ARGS__ ")", __VA_ARGS__)
#define cr_assert_not(...) CRS_NOT_(1, "cr_assert_not(" #__VA_ARGS__ ")", __VA_ARGS__)
#define cr_expect_not(...) CRS_NOT_(0, "cr_expect_not(" #__VA_ARGS__ ")", __VA_ARGS__)

#define cr_assert_eq(...) CRS_CMP_(1, "cr_assert_eq(" #__VA_ARGS__ ")", ==, __VA_ARGS__)
#define cr_expect_eq(...) CRS_CMP_(0, "cr_expect_eq(" #__VA_ARGS__ ")", ==, __VA_ARGS__)
#define cr_assert_neq(...) CRS_CMP_(1, "cr_assert_neq(" #__VA_ARGS__ ")", !=, __VA_ARGS__)
#define cr_expect_neq(...) CRS_CMP_(0, "cr_expect_neq(" #__VA_ARGS__ ")", !=, __VA_ARGS__)
#define cr_assert_lt(...) CRS_CMP_(1, "cr_assert_lt(" #__VA_ARGS__ ")", <, __VA_ARGS__)
#define cr_expect_lt(...) CRS_CMP_(0, "cr_expect_lt(" #__VA_ARGS__ ")", <, __VA_ARGS__)
#define cr_assert_leq(...) CRS_CMP_(1, "cr_assert_leq(" #__VA_ARGS__ ")", <=, __VA_ARGS__)
#define cr_expect_leq(...) CRS_CMP_(0, "cr_expect_leq(" #__VA_ARGS__ ")", <=, __VA_ARGS__)
#define cr_assert_gt(...) CRS_CMP_(1, "cr_assert_gt(" #__VA_ARGS__ ")", >, __VA_ARGS__)
#define cr_expect_gt(...) CRS_CMP_(0, "cr_expect_gt(" #__VA_ARGS__ ")", >, __VA_ARGS__)
#define cr_assert_geq(...) CRS_CMP_(1, "cr_assert_geq(" #__VA_ARGS__ ")", >=, __VA_ARGS__)
#define cr_expect_geq(...) CRS_CMP_(0, "cr_expect_geq(" #__VA_ARGS__ ")", >=, __VA_ARGS__)

#define cr_assert_null(...) CRS_NULL_(1, "cr_assert_null(" #__VA_ARGS__ ")", ==, __VA_ARGS__)
#define cr_expect_null(...) CRS_NULL_(0, "cr_expect_null(" #__VA_ARGS__ ")", ==, __VA_ARGS__)
#define cr_assert_not_null(...)                                                                    \
    CRS_NULL_(1, "cr_assert_not_null(" #__VA_ARGS__ ")", !=, __VA_ARGS__)
#define cr_expect_not_null(...)                                                                    \
    CRS_NULL_(0, "cr_expect_not_null(" #__VA_ARGS__ ")", !=, __VA_ARGS__)
#define cr_assert_zero(...) CRS_NOT_(1, "cr_assert_zero(" #__VA_ARGS__ ")", __VA_ARGS__)
#define cr_expect_zero(...) CRS_NOT_(0, "cr_expect_zero(" #__VA_ARGS__ ")", __VA_ARGS__)
#define cr_assert_not_zero(...) CRS_BOOL_(1, "cr_assert_not_zero(" #__VA_ARGS__ ")", __VA_ARGS__)
#define cr_expect_not_zero(...) CRS_BOOL_(0, "cr_expect_not_zero(" #__VA_ARGS__ ")", __VA_ARGS__)

#define cr_assert_float_eq(...)                                                                    \
    CRS_FLOAT_(1, "cr_assert_float_eq(" #__VA_ARGS__ ")", 1, __VA_ARGS__)
#define cr_expect_float_eq(...)                                                                    \
    CRS_FLOAT_(0, "cr_expect_float_eq(" #__VA_ARGS__ ")", 1, __VA_ARGS__)
#define cr_assert_float_neq(...)                                                                   \
    CRS_FLOAT_(1, "cr_assert_float_neq(" #__VA_ARGS__ ")", 0, __VA_ARGS__)
#define cr_expect_float_neq(...)                                                                   \
    CRS_FLOAT_(0, "cr_expect_float_neq(" #__VA_ARGS__ ")", 0, __VA_ARGS__)

#define cr_assert_str_eq(...) CRS_STR_(1, "cr_assert_str_eq(" #__VA_ARGS__ ")", ==, __VA_ARGS__)
#define cr_expect_str_eq(...) CRS_STR_(0, "cr_expect_str_eq(" #__VA_ARGS__ ")", ==, __VA_ARGS__)
#define cr_assert_str_neq(...) CRS_STR_(1, "cr_assert_str_neq(" #__VA_ARGS__ ")", !=, __VA_ARGS__)
#define cr_expect_str_neq(...) CRS_STR_(0, "cr_expect_str_neq(" #__VA_ARGS__ ")", !=, __VA_ARGS__)
#define cr_assert_str_lt(...) CRS_STR_(1, "cr_assert_str_lt(" #__VA_ARGS__ ")", <, __VA_ARGS__)
#define cr_expect_str_lt(...) CRS_STR_(0, "cr_expect_str_lt(" #__VA_ARGS__ ")", <, __VA_ARGS__)
#define cr_assert_str_leq(...) CRS_STR_(1, "cr_assert_str_leq(" #__VA_ARGS__ ")", <=, __VA_ARGS__)
#define cr_expect_str_leq(...) CRS_STR_(0, "cr_expect_str_leq(" #__VA_ARGS__ ")", <=, __VA_ARGS__)
#define cr_assert_str_gt(...) CRS_STR_(1, "cr_assert_str_gt(" #__VA_ARGS__ ")", >, __VA_ARGS__)
#define cr_expect_str_gt(...) CRS_STR_(0, "cr_expect_str_gt(" #__VA_ARGS__ ")", >, __VA_ARGS__)
#define cr_assert_str_geq(...) CRS_STR_(1, "cr_assert_str_geq(" #__VA_ARGS__ ")", >=, __VA_ARGS__)
#define cr_expect_str_geq(...) CRS_STR_(0, "cr_expect_str_geq(" #__VA_ARGS__ ")", >=, __VA_ARGS__)
#define cr_assert_str_empty(...)                                                                   \
    CRS_STR_EMPTY_(1, "cr_assert_str_empty(" #__VA_ARGS__ ")", 1, __VA_ARGS__)
#define cr_expect_str_empty(...)                                                                   \
    CRS_STR_EMPTY_(0, "cr_expect_str_empty(" #__VA_ARGS__ ")", 1, __VA_ARGS__)
#define cr_assert_str_not_empty(...)                                                               \
    CRS_STR_EMPTY_(1, "cr_assert_str_not_empty(" #__VA_ARGS__ ")", 0, __VA_ARGS__)
#define cr_expect_str_not_empty(...)                                                               \
    CRS_STR_EMPTY_(0, "cr_expect_str_not_empty(" #__VA_ARGS__ ")", 0, __VA_ARGS__)

#define cr_assert_arr_eq(...) CRS_ARR_(1, "cr_assert_arr_eq(" #__VA_ARGS__ ")", ==, __VA_ARGS__)
#define cr_expect_arr_eq(...) CRS_ARR_(0, "cr_expect_arr_eq(" #__VA_ARGS__ ")", ==, __VA_ARGS__)
#define cr_assert_arr_neq(...) CRS_ARR_(1, "cr_assert_arr_neq(" #__VA_ARGS__ ")", !=, __VA_ARGS__)
#define cr_expect_arr_neq(...) CRS_ARR_(0, "cr_expect_arr_neq(" #__VA_ARGS__ ")", !=, __VA_ARGS__)

#define cr_assert_fail(...) CRS_FAIL_(1, "cr_assert_fail(" #__VA_ARGS__ ")", __VA_ARGS__)
#define cr_expect_fail(...) CRS_FAIL_(0, "cr_expect_fail(" #__VA_ARGS__ ")", __VA_ARGS__)
#define cr_skip_test(...) crs__skip(__FILE__, __LINE__, CRS_MARK_ __VA_ARGS__)

#endif
