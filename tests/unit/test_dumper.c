/*
 * Unit tests for dumper: stop interrupts a long interval at once and writes
 * exactly one final line; a trigger writes a line without waiting for the
 * interval; a short interval writes lines on its own; every line is JSON
 * with the exact counts of the users active since the previous line, and
 * each dump forgets the users that are neither active nor connected; bad
 * arguments fail at start.
 *
 * Waiting for the dumper thread is a bounded poll of the file (a 5 s cap
 * that only a broken dumper reaches), never a sleep that hopes.
 */
#include <criterion/criterion.h>
#include "testutil.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dumper.h"
#include "util.h"

static char tmpdir[512], path[600];

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof(tmpdir), "dumper");
    snprintf(path, sizeof(path), "%s/counters.jsonl", tmpdir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(tmpdir);
}

TestSuite(dumper, .init = setup, .fini = teardown);

/* The file's complete lines (each ending in '\n'), NULL-terminated; *n set. */
static char **read_lines(size_t *n)
{
    static char buf[1 << 16];
    char **lines = calloc(1024, sizeof(*lines));
    FILE *f = fopen(path, "r");

    *n = 0;
    if (!f)
        return lines;
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    for (char *s = buf, *nl; *n < 1023 && (nl = strchr(s, '\n')); s = nl + 1) {
        lines[(*n)++] = strndup(s, (size_t)(nl - s));
    }
    return lines;
}

static void free_lines(char **lines)
{
    for (size_t i = 0; lines[i]; i++)
        free(lines[i]);
    free(lines);
}

static size_t count_lines(void)
{
    size_t n;
    free_lines(read_lines(&n));
    return n;
}

/* Poll until the file has at least want lines or 5 s pass; returns the count. */
static size_t wait_lines(size_t want)
{
    int64_t until = now_mono_ms() + 5000;
    size_t n;
    struct timespec ts = {0, 5 * 1000 * 1000};

    while ((n = count_lines()) < want && now_mono_ms() < until)
        nanosleep(&ts, NULL);
    return n;
}

/* Parse a line and check its users object equals the expected pairs. */
static void check_line(const char *line, size_t npairs, const char *const *names,
                       const json_int_t *values)
{
    json_error_t err;
    json_t *j = json_loads(line, 0, &err);

    cr_assert_not_null(j, "%s: %s", line, err.text);
    cr_assert(json_is_integer(json_object_get(j, "ts")));
    cr_assert_gt(json_integer_value(json_object_get(j, "ts")), 1600000000000);
    json_t *users = json_object_get(j, "users");
    cr_assert_eq(json_object_size(users), npairs, "%s", line);
    for (size_t i = 0; i < npairs; i++)
        cr_assert_eq(json_integer_value(json_object_get(users, names[i])), values[i], "%s: %s",
                     names[i], line);
    json_decref(j);
}

Test(dumper, stop_interrupts_a_long_interval_and_dumps_once)
{
    counters_t *c = counters_new();
    char err[256] = "";

    counters_inc(c, "alice");
    counters_inc(c, "alice");
    counters_inc(c, "alice");
    counters_inc(c, "bob");
    dumper_t *d = dumper_start(c, path, 3600, err, sizeof(err));
    cr_assert_not_null(d, "%s", err);
    cr_assert_eq(count_lines(), 0);

    int64_t t0 = now_mono_ms();
    dumper_stop(d);
    /* a correctness bound, not a benchmark: without the wake-up this
     * would take an hour */
    cr_assert_lt(now_mono_ms() - t0, 2000);

    size_t n;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 1);
    const char *names[] = {"alice", "bob"};
    json_int_t values[] = {3, 1};
    check_line(lines[0], 2, names, values);
    free_lines(lines);
    counters_free(c);
}

Test(dumper, trigger_dumps_without_waiting)
{
    counters_t *c = counters_new();
    char err[256] = "";

    dumper_t *d = dumper_start(c, path, 3600, err, sizeof(err));
    cr_assert_not_null(d, "%s", err);
    counters_inc(c, "alice");
    dumper_trigger(d);
    cr_assert_eq(wait_lines(1), 1);

    counters_inc(c, "alice");
    counters_inc(c, "carol");
    dumper_trigger(d);
    cr_assert_eq(wait_lines(2), 2);
    counters_inc(c, "carol");
    dumper_trigger(d);
    cr_assert_eq(wait_lines(3), 3);
    dumper_stop(d);

    size_t n;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 4);
    const char *n1[] = {"alice"};
    json_int_t v1[] = {1};
    check_line(lines[0], 1, n1, v1);
    const char *n2[] = {"alice", "carol"};
    json_int_t v2[] = {2, 1};
    check_line(lines[1], 2, n2, v2);
    /* only who was active since the previous line, with the whole count */
    const char *n3[] = {"carol"};
    json_int_t v3[] = {2};
    check_line(lines[2], 1, n3, v3);
    /* the final dump: nobody was active since */
    check_line(lines[3], 0, NULL, NULL);
    free_lines(lines);
    counters_free(c);
}

Test(dumper, short_interval_dumps_repeatedly)
{
    counters_t *c = counters_new();
    char err[256] = "";

    for (int i = 0; i < 7; i++)
        counters_inc(c, "dave");
    dumper_t *d = dumper_start(c, path, 0.05, err, sizeof(err));
    cr_assert_not_null(d, "%s", err);
    cr_assert_geq(wait_lines(3), 3);
    dumper_stop(d);

    size_t n;
    char **lines = read_lines(&n);
    cr_assert_geq(n, 4); /* at least 3 ticks and the final dump */
    const char *names[] = {"dave"};
    json_int_t values[] = {7};
    check_line(lines[0], 1, names, values);
    for (size_t i = 1; i < n; i++)
        check_line(lines[i], 0, NULL, NULL); /* dave was idle since */
    free_lines(lines);
    counters_free(c);
}

Test(dumper, creates_the_file_private)
{
    /* whatever the umask lets through, user names stay the owner's */
    mode_t old = umask(022);
    counters_t *c = counters_new();
    char err[256] = "";
    struct stat st;

    dumper_t *d = dumper_start(c, path, 3600, err, sizeof(err));
    umask(old);
    cr_assert_not_null(d, "%s", err);
    dumper_stop(d);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", (unsigned)(st.st_mode & 0777));
    counters_free(c);
}

Test(dumper, appends_to_an_existing_file)
{
    counters_t *c = counters_new();
    char err[256] = "";
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f);
    fputs("{\"ts\":1600000000001,\"users\":{}}\n", f);
    fclose(f);
    counters_inc(c, "erin");
    dumper_stop(dumper_start(c, path, 3600, err, sizeof(err)));
    size_t n;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 2);
    check_line(lines[0], 0, NULL, NULL);
    const char *names[] = {"erin"};
    json_int_t values[] = {1};
    check_line(lines[1], 1, names, values);
    free_lines(lines);
    counters_free(c);
}

Test(dumper, dumps_forget_idle_users_who_are_not_connected)
{
    counters_t *c = counters_new();
    char err[256] = "", name[32];

    /* 1000 names that came, sent a request and went; one that stays */
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof(name), "gone%04d", i);
        counters_attach(c, name);
        counters_inc(c, name);
        counters_detach(c, name);
    }
    counters_attach(c, "stays");
    counters_inc(c, "stays");
    dumper_t *d = dumper_start(c, path, 3600, err, sizeof(err));
    cr_assert_not_null(d, "%s", err);
    dumper_trigger(d);
    cr_assert_eq(wait_lines(1), 1);
    /* listed once, kept until the next dump shows they stayed idle */
    cr_assert_eq(counters_count(c), 1001);
    dumper_trigger(d);
    cr_assert_eq(wait_lines(2), 2);
    cr_assert_eq(counters_count(c), 1, "idle users without a connection are forgotten");
    dumper_stop(d);

    size_t n;
    char **lines = read_lines(&n);
    cr_assert_eq(n, 3);
    json_error_t jerr;
    json_t *j = json_loads(lines[0], 0, &jerr);
    cr_assert_not_null(j, "%s", jerr.text);
    cr_assert_eq(json_object_size(json_object_get(j, "users")), 1001);
    json_decref(j);
    check_line(lines[1], 0, NULL, NULL);
    check_line(lines[2], 0, NULL, NULL);
    free_lines(lines);
    counters_free(c);
}

Test(dumper, bad_arguments_fail_at_start)
{
    counters_t *c = counters_new();
    char err[256] = "", bad[700];

    snprintf(bad, sizeof(bad), "%s/no-such-dir/counters.jsonl", tmpdir);
    cr_assert_null(dumper_start(c, bad, 1, err, sizeof(err)));
    cr_assert_not_null(strstr(err, "cannot open"), "%s", err);
    cr_assert_null(dumper_start(c, path, 0, err, sizeof(err)));
    cr_assert_null(dumper_start(c, path, -1, err, sizeof(err)));
    cr_assert_null(dumper_start(c, path, 1e9, err, sizeof(err)));
    cr_assert_null(dumper_start(c, "", 1, err, sizeof(err)));
    cr_assert_null(dumper_start(NULL, path, 1, err, sizeof(err)));
    dumper_stop(NULL);
    counters_free(c);
}
