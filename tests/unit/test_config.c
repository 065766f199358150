/*
 * Unit tests for config: defaults, every error class, both flag syntaxes,
 * the JSON file, precedence, --help and --version.
 */
#include <criterion/criterion.h>
#include "testutil.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

/* Every option in the table; --help must list them all. */
static const char *const all_opts[] = {
    "listen",     "db",           "web-root",         "threads",          "log-level",
    "drain-timeout", "client-queue-max", "client-queue-bytes", "max-text", "max-frame",
    "durability", "commit-batch", "commit-window-us", "config",           "help",
    "version",
};

static struct config cfg;
static char err[512];
static char *outbuf;
static size_t outlen;
static FILE *out;
static char tmpdir[4096];

static void setup(void)
{
    test_mkdtemp(tmpdir, sizeof(tmpdir), "cfgtest");
    out = open_memstream(&outbuf, &outlen);
    cr_assert_not_null(out);
    err[0] = '\0';
}

static void teardown(void)
{
    cfg_release(&cfg);
    fclose(out);
    free(outbuf);
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(config, .init = setup, .fini = teardown);

/* parse(NULL-terminated args...) with argv[0] supplied. */
static enum cfg_result parse_v(const char *first, va_list ap)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "parleyd";
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        cr_assert_lt(argc, 63);
        argv[argc++] = (char *)a;
    }
    argv[argc] = NULL;
    cfg_release(&cfg);
    return cfg_parse(&cfg, argc, argv, out, err, sizeof(err));
}

static enum cfg_result parse(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    enum cfg_result r = parse_v(first, ap);
    va_end(ap);
    return r;
}

/* Expect CFG_ERROR whose one-line message contains want. */
static void expect_error(const char *want, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    enum cfg_result r = parse_v(first, ap);
    va_end(ap);
    cr_assert_eq(r, CFG_ERROR, "expected an error containing '%s'", want);
    cr_assert_not_null(strstr(err, want), "error '%s' lacks '%s'", err, want);
    cr_assert_null(strchr(err, '\n'), "error must be one line: '%s'", err);
}

static const char *write_file(const char *name, const char *content)
{
    static char path[4200];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(content, f);
    fclose(f);
    return path;
}

static void assert_defaults(const struct config *c)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want_threads = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus;

    cr_assert_str_eq(c->listen_host, "127.0.0.1");
    cr_assert_eq(c->listen_port, 8080);
    cr_assert_str_eq(c->db_path, "data/parley.db");
    cr_assert_not_null(c->web_root);
    cr_assert_gt(strlen(c->web_root), 0);
    cr_assert_eq(c->threads, want_threads);
    cr_assert_eq(c->log_level, LOG_INFO);
    cr_assert_float_eq(c->drain_timeout, 5.0, 1e-9);
    cr_assert_eq(c->client_queue_max, 1024);
    cr_assert_eq(c->client_queue_bytes, 4194304);
    cr_assert_eq(c->max_text, 4000);
    cr_assert_eq(c->max_frame, 65536);
    cr_assert_eq(c->durability, CFG_DURABILITY_NORMAL);
    cr_assert_eq(c->commit_batch, 512);
    cr_assert_eq(c->commit_window_us, 1000);
    cr_assert_null(c->config_file);
}

Test(config, defaults)
{
    cr_assert_eq(parse(NULL), CFG_OK);
    assert_defaults(&cfg);
    cr_assert_eq(outlen, 0, "nothing is printed for a normal run");
}

Test(config, defaults_hold_even_on_error)
{
    cr_assert_eq(parse("--nope", NULL), CFG_ERROR);
    assert_defaults(&cfg);
}

Test(config, web_root_default_is_an_existing_dir_or_the_installed_one)
{
    struct stat st;
    cr_assert_eq(parse(NULL), CFG_OK);
    /* either the source tree's web/ (which exists) or the install path */
    if (stat(cfg.web_root, &st) == 0)
        cr_assert(S_ISDIR(st.st_mode));
    else
        cr_assert_not_null(strstr(cfg.web_root, "web"));
}

Test(config, flag_space_value_and_equals_value)
{
    cr_assert_eq(parse("--threads", "3", "--db=/tmp/x.db", "--log-level", "debug",
                       "--durability=full", "--drain-timeout", "0.25", "--client-queue-max=7",
                       "--client-queue-bytes", "8192", "--max-text=10", "--max-frame", "1000",
                       "--commit-batch=1", "--commit-window-us", "0", "--web-root=/srv/w",
                       "--listen", "0.0.0.0:9000", NULL),
                 CFG_OK, "%s", err);
    cr_assert_eq(cfg.threads, 3);
    cr_assert_str_eq(cfg.db_path, "/tmp/x.db");
    cr_assert_eq(cfg.log_level, LOG_DEBUG);
    cr_assert_eq(cfg.durability, CFG_DURABILITY_FULL);
    cr_assert_float_eq(cfg.drain_timeout, 0.25, 1e-12);
    cr_assert_eq(cfg.client_queue_max, 7);
    cr_assert_eq(cfg.client_queue_bytes, 8192);
    cr_assert_eq(cfg.max_text, 10);
    cr_assert_eq(cfg.max_frame, 1000);
    cr_assert_eq(cfg.commit_batch, 1);
    cr_assert_eq(cfg.commit_window_us, 0);
    cr_assert_str_eq(cfg.web_root, "/srv/w");
    cr_assert_str_eq(cfg.listen_host, "0.0.0.0");
    cr_assert_eq(cfg.listen_port, 9000);
}

Test(config, later_flag_wins)
{
    cr_assert_eq(parse("--threads=2", "--threads", "5", "--db", "a", "--db=b", NULL), CFG_OK);
    cr_assert_eq(cfg.threads, 5);
    cr_assert_str_eq(cfg.db_path, "b");
}

Test(config, equals_value_may_start_with_dashes_or_contain_equals)
{
    cr_assert_eq(parse("--db=--weird=name", NULL), CFG_OK, "%s", err);
    cr_assert_str_eq(cfg.db_path, "--weird=name");
}

Test(config, range_edges_accepted)
{
    cr_assert_eq(parse("--threads=1", "--commit-window-us=1000000", "--drain-timeout=3600",
                       "--listen=h:65535", NULL),
                 CFG_OK, "%s", err);
    cr_assert_eq(cfg.threads, 1);
    cr_assert_eq(cfg.commit_window_us, 1000000);
    cr_assert_eq(cfg.listen_port, 65535);
    cr_assert_eq(parse("--threads=64", "--drain-timeout=0", "--listen=h:1", NULL), CFG_OK);
    cr_assert_eq(cfg.threads, 64);
    cr_assert_eq(cfg.listen_port, 1);
}

Test(config, listen_forms)
{
    cr_assert_eq(parse("--listen", "[::1]:8081", NULL), CFG_OK, "%s", err);
    cr_assert_str_eq(cfg.listen_host, "::1");
    cr_assert_eq(cfg.listen_port, 8081);
    cr_assert_eq(parse("--listen=[::]:80", NULL), CFG_OK, "%s", err);
    cr_assert_str_eq(cfg.listen_host, "::");
    cr_assert_eq(cfg.listen_port, 80);
    cr_assert_eq(parse("--listen=localhost:443", NULL), CFG_OK, "%s", err);
    cr_assert_str_eq(cfg.listen_host, "localhost");
    cr_assert_eq(cfg.listen_port, 443);
}

Test(config, listen_errors)
{
    static const char *const bad[] = {
        "8080",      ":8080",    "host:",     "host:0",    "host:65536", "host:x",
        "host:-1",   "host:+80", "host:80x",  "host: 80",  "::1:8080",   "[::1]8080",
        "[::1]:",    "[::1",     "[]:80",     "host:99999999999999999999", "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char arg[128];
        snprintf(arg, sizeof(arg), "--listen=%s", bad[i]);
        expect_error("--listen: expected HOST:PORT", arg, NULL);
        cr_assert_not_null(strstr(err, bad[i]));
    }
}

Test(config, unknown_option)
{
    expect_error("unknown option '--nope'", "--nope", NULL);
    cr_assert_str_eq(err, "unknown option '--nope'");
    expect_error("unknown option '--nope'", "--nope=3", NULL);
    expect_error("unknown option '--thread'", "--thread", "3", NULL);
    /* --no- is only for booleans */
    expect_error("unknown option '--no-db'", "--no-db", NULL);
}

Test(config, unexpected_positional_and_short)
{
    expect_error("unexpected argument 'serve'", "serve", NULL);
    expect_error("unexpected argument '-t'", "-t", "3", NULL);
    expect_error("unexpected argument '--'", "--", NULL);
    expect_error("unexpected argument 'extra'", "--threads", "2", "extra", NULL);
}

Test(config, missing_value)
{
    expect_error("option '--threads' needs a value", "--threads", NULL);
    expect_error("option '--db' needs a value", "--db", "--threads", "2", NULL);
    expect_error("option '--config' needs a value", "--config", NULL);
}

Test(config, empty_value_refused_for_paths)
{
    expect_error("--db: expected a non-empty value", "--db=", NULL);
    expect_error("--web-root: expected a non-empty value", "--web-root", "", NULL);
    expect_error("--config: expected a non-empty value", "--config=", NULL);
}

Test(config, bad_numbers)
{
    expect_error("--threads: expected an integer from 1 to 64, got 'x'", "--threads", "x", NULL);
    cr_assert_str_eq(err, "--threads: expected an integer from 1 to 64, got 'x'");
    expect_error("got '4x'", "--threads=4x", NULL);
    expect_error("got ''", "--threads=", NULL);
    expect_error("got ' 4'", "--threads= 4", NULL);
    expect_error("got '+4'", "--threads=+4", NULL);
    expect_error("got '4.0'", "--threads=4.0", NULL);
    expect_error("got '0x10'", "--threads=0x10", NULL);
    expect_error("got '-'", "--max-text=-", NULL);
    expect_error("got '99999999999999999999999'", "--max-text=99999999999999999999999", NULL);
    expect_error("--drain-timeout: expected a number from 0 to 3600, got 'abc'",
                 "--drain-timeout=abc", NULL);
    expect_error("got 'nan'", "--drain-timeout=nan", NULL);
    expect_error("got 'inf'", "--drain-timeout=inf", NULL);
    expect_error("got '1e999'", "--drain-timeout=1e999", NULL);
    expect_error("got '0x1p3'", "--drain-timeout=0x1p3", NULL);
    expect_error("got '1.5.'", "--drain-timeout=1.5.", NULL);
    expect_error("got ''", "--drain-timeout=", NULL);
}

Test(config, out_of_range)
{
    expect_error("--threads: expected an integer from 1 to 64, got '0'", "--threads=0", NULL);
    expect_error("got '65'", "--threads=65", NULL);
    expect_error("got '-1'", "--threads", "-1", NULL);
    expect_error("--client-queue-max: expected an integer from 1 to 1000000, got '0'",
                 "--client-queue-max=0", NULL);
    expect_error("--client-queue-bytes: expected an integer from 4096 to 1073741824",
                 "--client-queue-bytes=1073741825", NULL);
    expect_error("--commit-window-us", "--commit-window-us=-1", NULL);
    expect_error("got '-0.5'", "--drain-timeout=-0.5", NULL);
    expect_error("got '3600.5'", "--drain-timeout=3600.5", NULL);
}

Test(config, bad_enum_choice)
{
    expect_error("--log-level: expected one of error|warn|info|debug, got 'loud'", "--log-level",
                 "loud", NULL);
    expect_error("got 'INFO'", "--log-level=INFO", NULL);
    expect_error("--durability: expected one of normal|full, got 'off'", "--durability=off", NULL);
}

/* Every enum option: each word maps to its own value from the command line
 * and from the file, and a word outside the set is refused by name. */
Test(config, enum_options_parse_to_their_values)
{
    cr_assert_eq(parse(NULL), CFG_OK, "%s", err);
    cr_assert_eq(cfg.auth, CFG_AUTH_OPEN);
    cr_assert_eq(cfg.event_loop, CFG_EVENT_LOOP_EPOLL);

    static const struct {
        const char *word;
        enum log_level want;
    } levels[] = {{"error", LOG_ERROR}, {"warn", LOG_WARN}, {"info", LOG_INFO},
                  {"debug", LOG_DEBUG}};
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        char arg[64];
        snprintf(arg, sizeof(arg), "--log-level=%s", levels[i].word);
        cr_assert_eq(parse(arg, NULL), CFG_OK, "%s", err);
        cr_assert_eq(cfg.log_level, levels[i].want, "%s", arg);
    }

    cr_assert_eq(parse("--auth=accounts", "--event-loop", "poll", "--durability=full", NULL),
                 CFG_OK, "%s", err);
    cr_assert_eq(cfg.auth, CFG_AUTH_ACCOUNTS);
    cr_assert_eq(cfg.event_loop, CFG_EVENT_LOOP_POLL);
    cr_assert_eq(cfg.durability, CFG_DURABILITY_FULL);
    /* and back: a later flag sets the first word of each set again */
    cr_assert_eq(parse("--auth=accounts", "--auth=open", "--event-loop=poll",
                       "--event-loop=epoll", "--durability=full", "--durability=normal", NULL),
                 CFG_OK, "%s", err);
    cr_assert_eq(cfg.auth, CFG_AUTH_OPEN);
    cr_assert_eq(cfg.event_loop, CFG_EVENT_LOOP_EPOLL);
    cr_assert_eq(cfg.durability, CFG_DURABILITY_NORMAL);

    const char *f = write_file("e.json", "{\"auth\": \"accounts\", \"event-loop\": \"poll\", "
                                         "\"durability\": \"full\", \"log-level\": \"error\"}");
    cr_assert_eq(parse("--config", f, NULL), CFG_OK, "%s", err);
    cr_assert_eq(cfg.auth, CFG_AUTH_ACCOUNTS);
    cr_assert_eq(cfg.event_loop, CFG_EVENT_LOOP_POLL);
    cr_assert_eq(cfg.durability, CFG_DURABILITY_FULL);
    cr_assert_eq(cfg.log_level, LOG_ERROR);
    cr_assert_eq(parse("--config", f, "--auth", "open", NULL), CFG_OK, "%s", err);
    cr_assert_eq(cfg.auth, CFG_AUTH_OPEN, "the flag beats the file");
}

Test(config, enum_options_refuse_other_words)
{
    expect_error("--auth: expected one of open|accounts, got 'closed'", "--auth=closed", NULL);
    cr_assert_str_eq(err, "--auth: expected one of open|accounts, got 'closed'");
    cr_assert_eq(cfg.auth, CFG_AUTH_OPEN, "a refused word leaves the default");
    expect_error("--auth: expected one of open|accounts, got 'Accounts'", "--auth", "Accounts",
                 NULL);
    expect_error("--event-loop: expected one of epoll|poll, got 'select'", "--event-loop=select",
                 NULL);
    cr_assert_eq(cfg.event_loop, CFG_EVENT_LOOP_EPOLL);
    expect_error("--event-loop: expected one of epoll|poll, got ''", "--event-loop=", NULL);
    expect_error("--durability: expected one of normal|full, got '1'", "--durability=1", NULL);
    expect_error("event-loop: expected one of epoll|poll, got 'kqueue'", "--config",
                 write_file("a.json", "{\"event-loop\": \"kqueue\"}"), NULL);
    expect_error("auth: expected a string, got an integer", "--config",
                 write_file("b.json", "{\"auth\": 1}"), NULL);
}

Test(config, actions_take_no_value)
{
    expect_error("option '--help' takes no value", "--help=yes", NULL);
    expect_error("option '--version' takes no value", "--version=1", NULL);
}

Test(config, help_lists_every_option_with_defaults)
{
    cr_assert_eq(parse("--help", NULL), CFG_EXIT_0);
    fflush(out);
    cr_assert_not_null(outbuf);
    cr_assert_eq(strncmp(outbuf, "Usage: parleyd [OPTIONS]\n", 25), 0, "%s", outbuf);
    for (size_t i = 0; i < sizeof(all_opts) / sizeof(all_opts[0]); i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "  --%s", all_opts[i]);
        cr_assert_not_null(strstr(outbuf, flag), "--help lacks %s", all_opts[i]);
    }
    cr_assert_not_null(strstr(outbuf, "(default: 127.0.0.1:8080)"));
    cr_assert_not_null(strstr(outbuf, "(default: data/parley.db)"));
    cr_assert_not_null(strstr(outbuf, "(1..64, default: "));
    cr_assert_not_null(strstr(outbuf, "(default: info)"));
    cr_assert_not_null(strstr(outbuf, "error|warn|info|debug"));
    cr_assert_not_null(strstr(outbuf, "(4096..1073741824, default: 4194304)"));
    cr_assert_not_null(strstr(outbuf, "(0..3600, default: 5)"));
    cr_assert_not_null(strstr(outbuf, "normal|full"));
    /* every line fits the house 100 columns */
    for (const char *l = outbuf; *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        cr_assert_leq(n, 100, "long help line: %.*s", (int)n, l);
        l += n + (nl ? 1 : 0);
    }
}

Test(config, help_wins_over_other_flags_and_short_h)
{
    cr_assert_eq(parse("--threads=999", "--help", NULL), CFG_EXIT_0);
    fflush(out);
    cr_assert_not_null(strstr(outbuf, "Usage: parleyd"));
    cr_assert_eq(parse("-h", NULL), CFG_EXIT_0);
}

Test(config, cfg_usage_matches_help)
{
    cfg_usage(out);
    fflush(out);
    cr_assert_eq(strncmp(outbuf, "Usage: parleyd [OPTIONS]\n", 25), 0);
}

Test(config, version)
{
    cr_assert_eq(parse("--version", NULL), CFG_EXIT_0);
    fflush(out);
    cr_assert_eq(strncmp(outbuf, "parleyd ", 8), 0, "%s", outbuf);
    cr_assert(outbuf[8] >= '0' && outbuf[8] <= '9', "%s", outbuf);
    cr_assert_eq(outbuf[outlen - 1], '\n');
    cr_assert_eq(strchr(outbuf, '\n'), outbuf + outlen - 1, "one line");
}

Test(config, file_sets_every_kind_of_key)
{
    const char *f = write_file("c.json", "{\n"
                                         "  \"listen\": \"[::1]:7000\",\n"
                                         "  \"db\": \"/var/lib/p.db\",\n"
                                         "  \"web-root\": \"/srv/web\",\n"
                                         "  \"threads\": 7,\n"
                                         "  \"log-level\": \"warn\",\n"
                                         "  \"drain-timeout\": 1.5,\n"
                                         "  \"client-queue-max\": 9,\n"
                                         "  \"client-queue-bytes\": 65536,\n"
                                         "  \"max-text\": 100,\n"
                                         "  \"max-frame\": 4096,\n"
                                         "  \"durability\": \"full\",\n"
                                         "  \"commit-batch\": 3,\n"
                                         "  \"commit-window-us\": 10\n"
                                         "}\n");
    cr_assert_eq(parse("--config", f, NULL), CFG_OK, "%s", err);
    cr_assert_str_eq(cfg.config_file, f);
    cr_assert_str_eq(cfg.listen_host, "::1");
    cr_assert_eq(cfg.listen_port, 7000);
    cr_assert_str_eq(cfg.db_path, "/var/lib/p.db");
    cr_assert_str_eq(cfg.web_root, "/srv/web");
    cr_assert_eq(cfg.threads, 7);
    cr_assert_eq(cfg.log_level, LOG_WARN);
    cr_assert_float_eq(cfg.drain_timeout, 1.5, 1e-12);
    cr_assert_eq(cfg.client_queue_max, 9);
    cr_assert_eq(cfg.client_queue_bytes, 65536);
    cr_assert_eq(cfg.max_text, 100);
    cr_assert_eq(cfg.max_frame, 4096);
    cr_assert_eq(cfg.durability, CFG_DURABILITY_FULL);
    cr_assert_eq(cfg.commit_batch, 3);
    cr_assert_eq(cfg.commit_window_us, 10);
}

Test(config, file_keeps_defaults_for_absent_keys)
{
    const char *f = write_file("c.json", "{\"threads\": 2}");
    char arg[4300];
    snprintf(arg, sizeof(arg), "--config=%s", f);
    cr_assert_eq(parse(arg, NULL), CFG_OK, "%s", err);
    cr_assert_eq(cfg.threads, 2);
    cr_assert_str_eq(cfg.db_path, "data/parley.db");
    cr_assert_eq(cfg.listen_port, 8080);
    cr_assert_eq(parse("--config", write_file("e.json", "{}"), NULL), CFG_OK, "%s", err);
}

Test(config, double_key_accepts_integer)
{
    cr_assert_eq(parse("--config", write_file("c.json", "{\"drain-timeout\": 2}"), NULL), CFG_OK,
                 "%s", err);
    cr_assert_float_eq(cfg.drain_timeout, 2.0, 1e-12);
}

Test(config, flag_beats_file_in_any_order)
{
    const char *f = write_file("c.json", "{\"threads\": 7, \"db\": \"file.db\"}");
    cr_assert_eq(parse("--threads", "3", "--config", f, NULL), CFG_OK, "%s", err);
    cr_assert_eq(cfg.threads, 3, "flag before --config still wins");
    cr_assert_str_eq(cfg.db_path, "file.db", "file beats default");
    cr_assert_eq(parse("--config", f, "--threads=4", NULL), CFG_OK, "%s", err);
    cr_assert_eq(cfg.threads, 4, "flag after --config wins");
    cr_assert_str_eq(cfg.db_path, "file.db");
}

Test(config, last_config_flag_wins)
{
    const char *a = write_file("a.json", "{\"threads\": 5}");
    char apath[4300];
    snprintf(apath, sizeof(apath), "%s", a);
    const char *b = write_file("b.json", "{\"threads\": 6}");
    cr_assert_eq(parse("--config", apath, "--config", b, NULL), CFG_OK, "%s", err);
    cr_assert_eq(cfg.threads, 6);
    cr_assert_str_eq(cfg.config_file, b);
}

Test(config, file_unknown_key)
{
    const char *f = write_file("c.json", "{\"threads\": 2, \"nope\": 1}");
    expect_error("unknown key 'nope'", "--config", f, NULL);
    char want[4400];
    snprintf(want, sizeof(want), "config '%s': unknown key 'nope'", f);
    cr_assert_str_eq(err, want);
}

Test(config, file_may_not_hold_argv_only_keys)
{
    expect_error("unknown key 'config'", "--config",
                 write_file("c.json", "{\"config\": \"other.json\"}"), NULL);
    expect_error("unknown key 'help'", "--config", write_file("d.json", "{\"help\": true}"),
                 NULL);
    expect_error("unknown key 'version'", "--config", write_file("e.json", "{\"version\": 1}"),
                 NULL);
    /* keys are names without dashes */
    expect_error("unknown key '--threads'", "--config",
                 write_file("f.json", "{\"--threads\": 1}"), NULL);
}

Test(config, file_wrong_types)
{
    expect_error("threads: expected an integer, got a string", "--config",
                 write_file("a.json", "{\"threads\": \"4\"}"), NULL);
    expect_error("threads: expected an integer, got a number", "--config",
                 write_file("b.json", "{\"threads\": 4.5}"), NULL);
    expect_error("db: expected a string, got an integer", "--config",
                 write_file("c.json", "{\"db\": 5}"), NULL);
    expect_error("log-level: expected a string, got a boolean", "--config",
                 write_file("d.json", "{\"log-level\": true}"), NULL);
    expect_error("listen: expected a string, got an array", "--config",
                 write_file("e.json", "{\"listen\": [\"h\", 80]}"), NULL);
    expect_error("drain-timeout: expected a number, got a string", "--config",
                 write_file("f.json", "{\"drain-timeout\": \"5\"}"), NULL);
    expect_error("max-text: expected an integer, got null", "--config",
                 write_file("g.json", "{\"max-text\": null}"), NULL);
    expect_error("durability: expected a string, got an object", "--config",
                 write_file("h.json", "{\"durability\": {}}"), NULL);
    expect_error("not allowed", "--config",
                 write_file("i.json", "{\"db\": \"a\\u0000b\"}"), NULL);
}

Test(config, file_bad_values_name_the_file_and_key)
{
    const char *f = write_file("c.json", "{\"threads\": 0}");
    char want[4400];
    snprintf(want, sizeof(want),
             "config '%s': threads: expected an integer from 1 to 64, got '0'", f);
    expect_error(want, "--config", f, NULL);
    expect_error("log-level: expected one of error|warn|info|debug, got 'loud'", "--config",
                 write_file("d.json", "{\"log-level\": \"loud\"}"), NULL);
    expect_error("listen: expected HOST:PORT", "--config",
                 write_file("e.json", "{\"listen\": \"nohost\"}"), NULL);
    expect_error("drain-timeout: expected a number from 0 to 3600, got '1", "--config",
                 write_file("g.json", "{\"drain-timeout\": 1e300}"), NULL);
    expect_error("db: expected a non-empty value", "--config",
                 write_file("h.json", "{\"db\": \"\"}"), NULL);
}

Test(config, file_unreadable)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/does-not-exist.json", tmpdir);
    expect_error("config '", "--config", path, NULL);
    cr_assert_not_null(strstr(err, "does-not-exist.json"));
    cr_assert_eq(parse("--config", tmpdir, NULL), CFG_ERROR, "a directory is not a file");
}

Test(config, file_invalid_json)
{
    expect_error("line 1", "--config", write_file("a.json", "{\"threads\": }"), NULL);
    expect_error("line 2", "--config", write_file("b.json", "{\"threads\": 2,\n}"), NULL);
    expect_error("config '", "--config", write_file("c.json", ""), NULL);
    expect_error("config '", "--config", write_file("d.json", "{\"a\":1} trailing"), NULL);
    expect_error("expected a JSON object at the top level", "--config",
                 write_file("e.json", "[1, 2]"), NULL);
    expect_error("config '", "--config", write_file("f.json", "{\"threads\": 2, \"threads\": 3}"),
                 NULL);
}

Test(config, bad_flag_still_reported_when_file_is_fine)
{
    const char *f = write_file("c.json", "{\"threads\": 2}");
    expect_error("--threads: expected an integer", "--threads=x", "--config", f, NULL);
}

Test(config, release_clears_and_is_repeatable)
{
    cr_assert_eq(parse("--db=x", NULL), CFG_OK);
    cfg_release(&cfg);
    cr_assert_null(cfg.db_path);
    cr_assert_null(cfg.listen_host);
    cr_assert_null(cfg.web_root);
    cr_assert_null(cfg.smtp_from);
    cfg_release(&cfg);
}
