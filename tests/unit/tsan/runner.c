/*
 * criterion shim runner — main() for the threaded unit tests when they are
 * built for ThreadSanitizer (see tsan/criterion/criterion.h for why).
 *
 * The parent stays single-threaded and never runs test code: it sorts the
 * registered tests by suite and name like criterion, then runs them one at a
 * time, each in a forked child (fork without exec is fine under TSan while
 * the parent has no threads). The child runs the suite's and the test's
 * .init, the test and the .fini's, so a crash, an abort or a sanitizer
 * report only fails that test and .signal/.exit_code can be checked from
 * the outside. A test still running after its timeout (default 60 s) is
 * killed.
 *
 * The child tells the parent about failed checks and skips through a memfd
 * opened before the fork: one line per event, written as it happens, so the
 * record survives a later crash. The parent prints criterion's result lines
 * and ends with criterion's exact "[====] Synthesis:" line, which
 * tools/test_summary.py counts. As in criterion, Failing includes Crashing.
 *
 * Command line: --filter PATTERN (or --filter=PATTERN) runs only the tests
 * whose "suite/name" matches the glob; --list prints the tests; every other
 * argument (meson passes --jobs=1) is accepted and ignored.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_S 60.0
#define MSG_MAX 4096
#define TSAN_EXIT_CODE 66 /* TSan's default exitcode after a report */

enum outcome { PASSED, FAILED, CRASHED, SKIPPED };

/* what the child left in the memfd about one test */
struct record {
    unsigned long failures;
    char first[MSG_MAX]; /* "file:line: message" of the first failure */
    bool skipped;
    char skip_msg[MSG_MAX];
};

/* filled by the constructors of Test() and TestSuite(), before main() */
static struct crs_test *all_tests;
static struct crs_suite *all_suites;

/* Child state, set between fork() and the first test code. */
static const struct crs_test *cur_test;
static const struct crs_suite *cur_suite;
static int record_fd = -1;
static pid_t child_pid;
static pthread_t test_thread;
static jmp_buf abort_jmp;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long failures; /* {report_lock} */

static _Thread_local char detail_buf[MSG_MAX];

void crs__register_test(struct crs_test *t)
{
    t->next_ = all_tests;
    all_tests = t;
}

void crs__register_suite(struct crs_suite *s)
{
    s->next_ = all_suites;
    all_suites = s;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Write all of buf, or give up quietly: losing a record must not turn into
 * a second failure inside a failing test. */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

/* Append one record line: a type byte, then text with newlines flattened. */
static void put_record(char type, const char *text)
{
    char line[MSG_MAX + 2];
    size_t n = 0;

    if (record_fd < 0)
        return;
    line[n++] = type;
    for (; *text && n < sizeof(line) - 1; text++)
        line[n++] = *text == '\n' ? ' ' : *text;
    line[n++] = '\n';
    write_all(record_fd, line, n);
}

/* cr_*_fail and cr_skip_test formats start with CRS_MARK_; drop it. */
static const char *unmark(const char *msg)
{
    return msg[0] == CRS_MARK_[0] ? msg + 1 : msg;
}

/* Print text under a failure, each line indented like criterion's. */
static void print_indented(const char *text)
{
    while (*text) {
        const char *nl = strchr(text, '\n');
        int len = nl ? (int)(nl - text) : (int)strlen(text);
        fprintf(stderr, "[----]   %.*s\n", len, text);
        text += len + (nl != NULL);
    }
}

void crs__report(const char *file, int line, const char *text, const char *detail, const char *fmt,
                 ...)
{
    char msg[MSG_MAX], first[MSG_MAX + 256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *m = unmark(msg);

    /* one failure's lines stay together when several threads fail */
    pthread_mutex_lock(&report_lock);
    fprintf(stderr, "[----] %s:%d: %s\n", file, line, text);
    print_indented(m);
    if (detail)
        print_indented(detail);
    if (failures++ == 0) {
        snprintf(first, sizeof(first), "%s:%d: %s", file, line, *m ? m : text);
        put_record('F', first);
    } else {
        put_record('F', "");
    }
    pthread_mutex_unlock(&report_lock);
}

_Noreturn void crs__abort(void)
{
    /* Only the test's own thread can unwind to .fini; a child process the
     * test forked must never run the test's .fini (it would, say, delete
     * the parent test's temporary directory). */
    if (getpid() == child_pid && pthread_equal(pthread_self(), test_thread))
        longjmp(abort_jmp, 1);
    fflush(NULL);
    _exit(EXIT_FAILURE);
}

_Noreturn void crs__skip(const char *file, int line, const char *fmt, ...)
{
    char msg[MSG_MAX];
    va_list ap;

    (void)file;
    (void)line;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&report_lock);
    put_record('S', unmark(msg));
    pthread_mutex_unlock(&report_lock);
    crs__abort();
}

const char *crs__str_detail(int n, const char *a, const char *b)
{
    const char *qa = a ? "\"" : "", *qb = b ? "\"" : "";

    if (n == 1)
        snprintf(detail_buf, sizeof(detail_buf), "value: %s%s%s", qa, a ? a : "NULL", qa);
    else
        snprintf(detail_buf, sizeof(detail_buf), "left:  %s%s%s\nright: %s%s%s", qa, a ? a : "NULL",
                 qa, qb, b ? b : "NULL", qb);
    return detail_buf;
}

const char *crs__float_detail(double a, double b, double epsilon)
{
    snprintf(detail_buf, sizeof(detail_buf), "left: %.17g, right: %.17g, epsilon: %g", a, b,
             epsilon);
    return detail_buf;
}

void cr_log(enum criterion_severity severity, const char *msg, ...)
{
    static const char *const prefix[] = {"[----]", "[WARN]", "[ERR ]"};
    char text[MSG_MAX];
    va_list ap;

    va_start(ap, msg);
    vsnprintf(text, sizeof(text), msg, ap);
    va_end(ap);
    if ((unsigned)severity > CR_LOG_ERROR)
        severity = CR_LOG_ERROR;
    fprintf(stderr, "%s %s\n", prefix[severity], text);
}

/* ---- the child ---- */

/* Run .init, the test and .fini as criterion does: suite init, test init,
 * test, test fini, suite fini. A fatal check longjmps back here; a .fini
 * runs only if its .init completed, so it never undoes what was not done. */
static _Noreturn void child_main(void)
{
    static volatile bool suite_ready, test_ready;

    child_pid = getpid();
    test_thread = pthread_self();
    if (setjmp(abort_jmp) == 0) {
        if (cur_suite && cur_suite->opts_.init)
            cur_suite->opts_.init();
        suite_ready = true;
        if (cur_test->opts_.init)
            cur_test->opts_.init();
        test_ready = true;
        cur_test->fn_();
    }
    if (test_ready && cur_test->opts_.fini) {
        if (setjmp(abort_jmp) == 0)
            cur_test->opts_.fini();
    }
    if (suite_ready && cur_suite && cur_suite->opts_.fini) {
        if (setjmp(abort_jmp) == 0)
            cur_suite->opts_.fini();
    }
    exit(EXIT_SUCCESS);
}

/* ---- the parent ---- */

static const struct crs_suite *find_suite(const char *name)
{
    for (const struct crs_suite *s = all_suites; s; s = s->next_)
        if (strcmp(s->name_, name) == 0)
            return s;
    return NULL;
}

/* A test's own non-zero options win over its suite's. */
static struct crs_opts merged_opts(const struct crs_test *t, const struct crs_suite *s)
{
    struct crs_opts o = t->opts_;

    if (!s)
        return o;
    if (!o.signal)
        o.signal = s->opts_.signal;
    if (!o.exit_code)
        o.exit_code = s->opts_.exit_code;
    if (o.timeout <= 0)
        o.timeout = s->opts_.timeout;
    o.disabled = o.disabled || s->opts_.disabled;
    return o;
}

/* Wait for the child for at most timeout_s; on expiry kill it and return
 * true. A pidfd makes the wait exact; without one, poll every 10 ms. */
static bool wait_child(pid_t pid, double timeout_s, int *status)
{
    int64_t deadline = mono_ms() + (int64_t)(timeout_s * 1000);
    int pidfd = pidfd_open(pid, 0);
    bool timed_out = false;

    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            *status = 0;
            break;
        }
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            while (waitpid(pid, status, 0) < 0 && errno == EINTR)
                ;
            timed_out = true;
            break;
        }
        if (pidfd >= 0) {
            struct pollfd p = {.fd = pidfd, .events = POLLIN};
            poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
        } else {
            struct timespec nap = {.tv_sec = 0, .tv_nsec = 10 * 1000000};
            nanosleep(&nap, NULL);
        }
    }
    if (pidfd >= 0)
        close(pidfd);
    return timed_out;
}

/* Parse the child's record lines (see put_record). */
static void read_record(int fd, struct record *rec)
{
    char buf[8192];
    off_t off = 0;
    bool at_line_start = true;
    char type = 0;
    size_t len = 0;

    memset(rec, 0, sizeof(*rec));
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof(buf), off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += n;
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];
            if (at_line_start) {
                type = c;
                len = 0;
                at_line_start = false;
                if (type == 'F')
                    rec->failures++;
                else if (type == 'S')
                    rec->skipped = true;
                continue;
            }
            if (c == '\n') {
                at_line_start = true;
                continue;
            }
            /* keep the text of the first failure and of the skip */
            char *dst = NULL;
            if (type == 'F' && rec->failures == 1)
                dst = rec->first;
            else if (type == 'S')
                dst = rec->skip_msg;
            if (dst && len < MSG_MAX - 1)
                dst[len++] = c;
        }
    }
}

static const char *signame(int sig)
{
    const char *s = strsignal(sig);
    return s ? s : "unknown signal";
}

/* Run one test in a child and print its result line. */
static enum outcome run_test(const struct crs_test *t, const struct crs_suite *s, int fd)
{
    struct crs_opts o = merged_opts(t, s);
    double timeout = o.timeout > 0 ? o.timeout : DEFAULT_TIMEOUT_S;
    struct record rec;
    char why[MSG_MAX + 128];
    enum outcome res;
    int status = 0;

    if (ftruncate(fd, 0) != 0) {
        fprintf(stderr, "[FAIL] %s::%s: cannot reset the result file: %s\n", t->suite_, t->name_,
                strerror(errno));
        return FAILED;
    }
    fflush(NULL); /* or the child would print our buffered output again */
    int64_t start = mono_ms();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "[FAIL] %s::%s: fork: %s\n", t->suite_, t->name_, strerror(errno));
        return FAILED;
    }
    if (pid == 0) {
        cur_test = t;
        cur_suite = s;
        record_fd = fd;
        child_main();
    }
    bool timed_out = wait_child(pid, timeout, &status);
    double secs = (double)(mono_ms() - start) / 1000;
    read_record(fd, &rec);

    if (timed_out) {
        res = FAILED;
        snprintf(why, sizeof(why), "timed out after %.1fs", timeout);
    } else if (WIFSIGNALED(status) && WTERMSIG(status) != o.signal) {
        res = CRASHED;
        snprintf(why, sizeof(why), "CRASH! killed by signal %d (%s)", WTERMSIG(status),
                 signame(WTERMSIG(status)));
    } else if (rec.failures > 0) {
        res = FAILED;
        if (rec.failures > 1)
            snprintf(why, sizeof(why), "%s (and %lu more failures)", rec.first, rec.failures - 1);
        else
            snprintf(why, sizeof(why), "%s", rec.first);
    } else if (rec.skipped) {
        fprintf(stderr, "[SKIP] %s::%s%s%s\n", t->suite_, t->name_, rec.skip_msg[0] ? ": " : "",
                rec.skip_msg);
        return SKIPPED;
    } else if (o.signal && !WIFSIGNALED(status)) {
        res = FAILED;
        snprintf(why, sizeof(why), "expected signal %d (%s), but exited with status %d", o.signal,
                 signame(o.signal), WEXITSTATUS(status));
    } else if (!WIFSIGNALED(status) && WEXITSTATUS(status) != o.exit_code) {
        res = FAILED;
        snprintf(why, sizeof(why), "exited with status %d, expected %d%s", WEXITSTATUS(status),
                 o.exit_code,
                 WEXITSTATUS(status) == TSAN_EXIT_CODE ? " (a sanitizer report, see above)" : "");
    } else {
        fprintf(stderr, "[PASS] %s::%s: (%.2fs)\n", t->suite_, t->name_, secs);
        return PASSED;
    }
    fprintf(stderr, "[FAIL] %s::%s: %s (%.2fs)\n", t->suite_, t->name_, why, secs);
    return res;
}

static int by_suite_and_name(const void *a, const void *b)
{
    const struct crs_test *x = *(const struct crs_test *const *)a;
    const struct crs_test *y = *(const struct crs_test *const *)b;
    int c = strcmp(x->suite_, y->suite_);
    return c ? c : strcmp(x->name_, y->name_);
}

int main(int argc, char **argv)
{
    const char *filter = NULL;
    bool list = false;
    size_t ntests = 0, tested = 0, passing = 0, failing = 0, crashing = 0;
    int fd = -1, rc = EXIT_FAILURE;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc)
            filter = argv[++i];
        else if (strncmp(argv[i], "--filter=", 9) == 0)
            filter = argv[i] + 9;
        else if (strcmp(argv[i], "--list") == 0 || strcmp(argv[i], "-l") == 0)
            list = true;
        /* criterion's other options mean nothing here: tests already run
         * one at a time, each in its own process */
    }

    for (const struct crs_test *t = all_tests; t; t = t->next_)
        ntests++;
    const struct crs_test **tests = calloc(ntests ? ntests : 1, sizeof(*tests));
    if (!tests) {
        fprintf(stderr, "criterion shim: out of memory\n");
        return EXIT_FAILURE;
    }
    size_t k = 0;
    for (const struct crs_test *t = all_tests; t; t = t->next_)
        tests[k++] = t;
    qsort(tests, ntests, sizeof(*tests), by_suite_and_name);

    if (list) {
        for (size_t i = 0; i < ntests; i++)
            printf("%s::%s%s%s\n", tests[i]->suite_, tests[i]->name_,
                   tests[i]->opts_.description ? ": " : "",
                   tests[i]->opts_.description ? tests[i]->opts_.description : "");
        rc = EXIT_SUCCESS;
        goto free_tests;
    }

    /* O_APPEND: whatever writes, and from where, lands after the last line */
    fd = memfd_create("criterion-shim-results", MFD_CLOEXEC);
    if (fd < 0 || fcntl(fd, F_SETFL, O_APPEND) != 0) {
        fprintf(stderr, "criterion shim: cannot create the result file: %s\n", strerror(errno));
        goto close_fd;
    }

    for (size_t i = 0; i < ntests; i++) {
        const struct crs_test *t = tests[i];
        char id[512];

        snprintf(id, sizeof(id), "%s/%s", t->suite_, t->name_);
        if (filter && fnmatch(filter, id, 0) != 0)
            continue;
        const struct crs_suite *s = find_suite(t->suite_);
        if (merged_opts(t, s).disabled) {
            fprintf(stderr, "[SKIP] %s::%s: test is disabled\n", t->suite_, t->name_);
            continue;
        }
        switch (run_test(t, s, fd)) {
        case PASSED:
            passing++;
            break;
        case CRASHED:
            crashing++;
            failing++;
            break;
        case FAILED:
            failing++;
            break;
        case SKIPPED:
            continue; /* like criterion: neither tested nor failed */
        }
        tested++;
    }
    fprintf(stderr,
            "[====] Synthesis: Tested: %zu | Passing: %zu | Failing: %zu | Crashing: %zu \n",
            tested, passing, failing, crashing);
    rc = failing ? EXIT_FAILURE : EXIT_SUCCESS;

close_fd:
    if (fd >= 0)
        close(fd);
free_tests:
    free(tests);
    return rc;
}
