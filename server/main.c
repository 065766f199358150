/*
 * main — parleyd's wiring: parse the configuration, open storage, load the
 * web root, build the broker, bind one lws context per I/O thread, start the
 * threads, wait for a signal, then stop everything in reverse order.
 *
 * Start-up is all-or-nothing: if any part fails, the parts already started
 * are stopped and parleyd exits 1 with one clear line. Shutdown (SIGINT or
 * SIGTERM): loops stop accepting, flush queues, close WebSockets with 1001
 * and exit within --drain-timeout; then the store commits what is queued.
 * A second signal exits at once.
 */
#include <ctype.h>
#include <errno.h>
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "accounts.h"
#include "admin.h"
#include "auth.h"
#include "broker.h"
#include "cdir.h"
#include "counters.h"
#include "dumper.h"
#include "config.h"
#include "iplimit.h"
#include "log.h"
#include "notify.h"
#include "ratelimit.h"
#include "loop.h"
#include "server.h"
#include "store.h"
#include "store_redis.h"
#include "tls.h"
#include "util.h"
#include "webcache.h"
#include "ws.h"

/* How often main looks for account changes made by another process. */
#define USERS_POLL_NS ((int64_t)1000000000)

static void lws_log_emit(int level, const char *line)
{
    enum log_level l = level & LLL_ERR ? LOG_ERROR : level & LLL_WARN ? LOG_WARN : LOG_DEBUG;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    /* lws prefixes its own timestamp; keep its text after the first ": " */
    const char *text = strstr(line, "] ");
    text = text ? text + 2 : line;
    log_at(l, "lws", "%.*s", (int)(n - (size_t)(text - line)), text);
}

/* auth_read_password_file, with the error naming the option. */
static int read_password(const char *opt, const char *path, char *pw, size_t cap, char *err,
                         size_t errsz)
{
    if (auth_read_password_file(path, pw, cap) == 0)
        return 0;
    snprintf(err, errsz, "cannot read %s '%s'", opt, path);
    return -1;
}

/* The notifier: SMTP when --smtp-url is given, the mbox file otherwise. */
static int start_notify(struct server *srv, const struct config *cfg, char *err, size_t errsz)
{
    struct notify_opts o;
    char pw[512] = "";

    notify_opts_default(&o);
    if (cfg->smtp_password_file &&
        read_password("--smtp-password-file", cfg->smtp_password_file, pw, sizeof(pw), err,
                      errsz) != 0)
        return -1;
    o.smtp_url = cfg->smtp_url;
    o.starttls = cfg->smtp_starttls;
    o.smtp_user = cfg->smtp_user;
    o.smtp_password = pw[0] ? pw : NULL;
    o.smtp_from = cfg->smtp_from;
    o.mbox_path = cfg->mail_file;
    o.queue_max = (size_t)cfg->notify_queue;
    o.coalesce_ms = (int)(cfg->notify_coalesce * 1000);
    o.max_backoff_ms = (int)(cfg->notify_max_backoff * 1000);
    if (o.backoff_base_ms > o.max_backoff_ms)
        o.backoff_base_ms = o.max_backoff_ms;
    o.max_attempts = (int)cfg->notify_max_attempts;
    /* look at the outbox at least as often as the longest retry wait, so a
     * row left by the previous run is not held back longer than a retry */
    if (o.rescan_ms > o.max_backoff_ms)
        o.rescan_ms = o.max_backoff_ms > 0 ? o.max_backoff_ms : 1;
    o.drain_timeout_ms = (int)(cfg->drain_timeout * 1000);
    srv->notify = notify_new(&o, srv->store, err, errsz);
    memset(pw, 0, sizeof(pw));
    return srv->notify ? 0 : -1;
}

/* A node's name in a cluster: letters, digits and ".:_-", 1..64 bytes. */
static bool valid_node_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(".:_-", s[i]))
            return false;
    return true;
}

/*
 * --engine redis://...: the rooms' logs move to the cluster's Redis; the
 * node's own SQLite store (already open) keeps the outbox and accounts
 * and is owned by the engine from here. Exits the start-up (non-zero) with
 * one line when a Redis cannot be reached.
 */
static int open_engine(struct server *srv, struct config *cfg, char *err, size_t errsz)
{
    char pw[512] = "";

    if (strcmp(cfg->engine, "local") == 0)
        return 0;
    if (strncmp(cfg->engine, "redis://", 8) != 0) {
        snprintf(err, errsz, "--engine: expected local or redis://HOST:PORT[/DB][,...], got '%s'",
                 cfg->engine);
        return -1;
    }
    if (!cfg->node_id) {
        char host[256] = "localhost";
        gethostname(host, sizeof(host) - 1);
        char id[300];
        snprintf(id, sizeof(id), "%.40s:%d", host, cfg->listen_port);
        cfg->node_id = xstrdup(id);
    }
    if (!valid_node_id(cfg->node_id)) {
        snprintf(err, errsz, "--node-id: 1 to 64 of letters, digits and .:_- expected, got '%s'",
                 cfg->node_id);
        return -1;
    }
    if (cfg->redis_password_file &&
        read_password("--redis-password-file", cfg->redis_password_file, pw, sizeof(pw), err,
                      errsz) != 0)
        return -1;
    struct store_redis_opts o = {
        .urls = cfg->engine,
        .password = pw[0] ? pw : NULL,
        .history_max = cfg->history_max,
        .idempotency_ttl_s = cfg->idempotency_ttl,
        .local = srv->store,
    };
    srv->store = NULL; /* the engine owns it now, also when it fails to open */
    srv->store = store_redis_open(&o, err, errsz);
    memset(pw, 0, sizeof(pw));
    if (!srv->store)
        return -1;
    /* presence, names and liveness across nodes, on the engine's Redis */
    srv->cdir = cdir_new(store_redis_rds(srv->store), cfg->node_id, (int)cfg->node_ttl * 1000,
                         err, errsz);
    if (!srv->cdir || cdir_start(srv->cdir, err, errsz) != 0)
        return -1;
    log_info("main", "engine %s, node id '%s'", cfg->engine, cfg->node_id);
    return 0;
}

/* SIGHUP: read the certificate files here, on main, and let each loop swap
 * them in; live connections keep the certificate they started with. */
static void reload_tls(struct server *srv)
{
    char err[512];
    if (!srv->cfg->tls_cert) {
        log_info("main", "SIGHUP: no certificate configured, nothing to reload");
        return;
    }
    struct tls_creds *c = tls_creds_load(srv->cfg->tls_cert, srv->cfg->tls_key, err, sizeof(err));
    if (!c) {
        log_error("main", "SIGHUP: keeping the old certificate: %s", err);
        return;
    }
    for (int i = 0; i < srv->nloops; i++)
        loop_reload_tls(srv->loops[i], c);
    tls_creds_unref(&c);
    log_info("main", "SIGHUP: certificate reloaded from '%s'", srv->cfg->tls_cert);
}

/* --check-config: everything start-up would read, without serving. */
/* The wiring that keeps the layers one-way: the loop calls up into ws.c
 * through this table, and accounts announces a new account to the broker
 * through this hook, so neither names the layer above it. */
static const struct loop_ops io_ops = {
    .kick = ws_kick,
    .idle_check = ws_idle_check,
    .protocols = ws_protocols,
};

/* Thread: an accounts worker. srv->broker exists before any request can. */
static void user_added(void *arg, const char *name, const char *email)
{
    struct server *srv = arg;
    broker_user_added(srv->broker, name, email);
}

static int check_config(const struct config *cfg)
{
    char err[512];
    int bad = 0;
    struct stat st;

    if (cfg->tls_cert) {
        struct tls_creds *c = tls_creds_load(cfg->tls_cert, cfg->tls_key, err, sizeof(err));
        if (!c) {
            fprintf(stderr, "parleyd: %s\n", err);
            bad = 1;
        }
        tls_creds_unref(&c);
    }
    if (stat(cfg->web_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "parleyd: web root '%s' is not a directory\n", cfg->web_root);
        bad = 1;
    }
    char *dir = path_beside(cfg->db_path, ".");
    if (access(dir, W_OK) != 0) {
        fprintf(stderr, "parleyd: database directory of '%s' is not writable\n", cfg->db_path);
        bad = 1;
    }
    free(dir);
    const char *const files[] = {cfg->admin_token_file, cfg->smtp_password_file};
    for (size_t i = 0; i < 2; i++) {
        if (files[i] && access(files[i], R_OK) != 0) {
            fprintf(stderr, "parleyd: cannot read '%s'\n", files[i]);
            bad = 1;
        }
    }
    if (!bad)
        printf("configuration ok\n");
    return bad;
}

static void exit_now(int sig)
{
    (void)sig;
    static const char m[] = "parleyd: second signal, exiting now\n";
    ssize_t w = write(STDERR_FILENO, m, sizeof(m) - 1);
    (void)w;
    _exit(1);
}

int main(int argc, char **argv)
{
    struct config cfg;
    struct server srv;
    char err[512];
    int rc = 1, started = 0;
    sigset_t sigs;

    /* Everything parleyd creates is its data and nobody else's: the database
     * with its -wal/-shm/-journal (SQLite creates those itself, 0644 less
     * the umask; the -wal and -shm copy the database's mode), the counter
     * dump, the mbox, the token secret. The umask is the one setting that
     * reaches SQLite's files, and it is set before anything (the operator
     * commands too) can create one. The modules that open files themselves
     * ask for 0600 as well, so they hold without it. */
    umask(077);
    memset(&srv, 0, sizeof(srv));
    if (admin_is_command(argc, argv))
        return admin_main(argc, argv);
    switch (cfg_parse(&cfg, argc, argv, stdout, err, sizeof(err))) {
    case CFG_EXIT_0:
        cfg_release(&cfg);
        return 0;
    case CFG_ERROR:
        fprintf(stderr, "parleyd: %s (see --help)\n", err);
        cfg_release(&cfg);
        return 2;
    case CFG_OK:
        break;
    }
    srv.cfg = &cfg;
    if (!cfg.tls_cert != !cfg.tls_key) {
        fprintf(stderr, "parleyd: --tls-cert and --tls-key go together (see --help)\n");
        cfg_release(&cfg);
        return 2;
    }
    if (!cfg.token_secret_file)
        cfg.token_secret_file = path_beside(cfg.db_path, "token.secret");
    if (!cfg.dump_file)
        cfg.dump_file = path_beside(cfg.db_path, "counters.jsonl");
    if (!cfg.mail_file)
        cfg.mail_file = path_beside(cfg.db_path, "mail.mbox");

    if (cfg.check_config) {
        rc = check_config(&cfg);
        cfg_release(&cfg);
        return rc;
    }

    enum log_level lvl = cfg.log_level;
    log_set_level(lvl);
    lws_set_log_level(lvl >= LOG_DEBUG ? LLL_ERR | LLL_WARN | LLL_NOTICE : LLL_ERR | LLL_WARN,
                      lws_log_emit);

    /* Every thread inherits this mask, so only main sees the signals. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct store_opts so = {
        .path = cfg.db_path,
        .durability_full = cfg.durability == CFG_DURABILITY_FULL,
        .batch_max = (int)cfg.commit_batch,
        .batch_window_us = (int)cfg.commit_window_us,
        .readers = 1,
    };
    srv.store = store_open(&so, err, sizeof(err));
    if (!srv.store) {
        log_error("main", "%s", err);
        goto out;
    }
    if (open_engine(&srv, &cfg, err, sizeof(err)) != 0) {
        log_error("main", "%s", err);
        goto out;
    }
    srv.web = webcache_load(cfg.web_root, err, sizeof(err));
    if (!srv.web)
        log_warn("main", "web client not served: %s", err);
    if (start_notify(&srv, &cfg, err, sizeof(err)) != 0) {
        log_error("main", "%s", err);
        goto out;
    }
    if (cfg.admin_token_file && cfg.admin_token_file[0]) {
        /* the admin endpoints need it in open mode too, so it is not
         * an accounts-mode setting */
        srv.admin_token = xmalloc(256);
        if (auth_load_token_file(cfg.admin_token_file, srv.admin_token, 256, err,
                                 sizeof(err)) != 0) {
            log_error("main", "%s", err);
            goto out;
        }
    }
    srv.iplimit = iplimit_new(cfg.max_connections_per_ip);
    srv.counters = counters_new();
    srv.ratelimit = ratelimit_new(cfg.rate, cfg.burst);
    srv.dumper = dumper_start(srv.counters, cfg.dump_file, cfg.dump_interval, err, sizeof(err));
    if (!srv.dumper) {
        log_error("main", "%s", err);
        goto out;
    }
    if (cfg.auth == CFG_AUTH_ACCOUNTS) {
        srv.accounts = accounts_new(&srv, user_added, &srv, err, sizeof(err));
        if (!srv.accounts) {
            log_error("main", "%s", err);
            goto out;
        }
    } else {
        log_warn("main", "open mode (--auth open) is for trusted networks: anyone who can "
                         "connect may sign in as any name no live connection holds, and then "
                         "receives the DMs sent to that name; DMs go only to users online now "
                         "and DM history is never served; use --auth accounts otherwise");
    }
    srv.broker = broker_new(&srv, err, sizeof(err));
    if (!srv.broker) {
        log_error("main", "%s", err);
        goto out;
    }

    srv.nloops = cfg.threads;
    srv.loops = xcalloc((size_t)srv.nloops, sizeof(*srv.loops));
    for (int i = 0; i < srv.nloops; i++) {
        srv.loops[i] = loop_new(&srv, i, &io_ops, err, sizeof(err));
        if (!srv.loops[i]) {
            log_error("main", "%s", err);
            goto stop;
        }
    }
    for (int i = 0; i < srv.nloops; i++) {
        if (loop_start(srv.loops[i]) != 0) {
            log_error("main", "cannot start I/O thread %d", i);
            goto stop;
        }
        started++;
    }
    log_info("main", "parleyd %s listening on %s://%s:%d (%d I/O threads, db '%s')",
             PARLEY_VERSION, cfg.tls_cert ? "https" : "http", cfg.listen_host, cfg.listen_port,
             srv.nloops, cfg.db_path);

    /* Accounts mode: main also takes in account changes made by `parleyd
     * user ...` (another process) once a second, so a deleted user or a
     * revoked token is shut out without a SIGHUP; the loops only ever read
     * the in-memory user map. */
    int64_t next_poll = now_mono_ns() + USERS_POLL_NS;
    for (;;) {
        int sig = 0;
        if (srv.accounts) {
            int64_t now = now_mono_ns();
            if (now >= next_poll) {
                if (broker_poll_users(srv.broker) > 0)
                    log_info("main", "account changes taken in");
                next_poll = now + USERS_POLL_NS;
            }
            int64_t left = next_poll - now < USERS_POLL_NS ? next_poll - now : USERS_POLL_NS;
            struct timespec wait = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
            sig = sigtimedwait(&sigs, NULL, &wait);
            if (sig < 0)
                continue;
        } else if (sigwait(&sigs, &sig) != 0) {
            continue;
        }
        if (sig == SIGHUP) {
            reload_tls(&srv);
            if (broker_reload_users(srv.broker) == 0)
                log_info("main", "SIGHUP: accounts reloaded");
            continue;
        }
        if (sig == SIGUSR1) {
            log_info("main", "SIGUSR1: dumping counters now");
            dumper_trigger(srv.dumper);
            continue;
        }
        log_info("main", "%s: shutting down (drain up to %.1f s)", strsignal(sig),
                 cfg.drain_timeout);
        break;
    }
    rc = 0;

stop:
    /* From here a second SIGINT/SIGTERM ends the process at once. */
    signal(SIGINT, exit_now);
    signal(SIGTERM, exit_now);
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    for (int i = 0; i < started; i++)
        loop_stop(srv.loops[i]);
    for (int i = 0; i < started; i++)
        loop_join(srv.loops[i]);
out:
    /* the accounts worker and the notifier may still wait on storage commits */
    accounts_free(srv.accounts);
    notify_free(srv.notify);
    /* goodbye to the cluster (this node's users leave everywhere), then
     * storage last: it commits what the loops queued before they stopped */
    cdir_free(srv.cdir);
    store_close(srv.store);
    /* the final counter dump, after every request was counted */
    if (srv.dumper)
        dumper_stop(srv.dumper);
    broker_free(srv.broker);
    ratelimit_free(srv.ratelimit);
    iplimit_free(srv.iplimit);
    counters_free(srv.counters);
    for (int i = 0; srv.loops && i < srv.nloops; i++)
        loop_free(srv.loops[i]);
    free(srv.loops);
    webcache_free(srv.web);
    free(srv.admin_token);
    if (rc == 0)
        log_info("main", "stopped cleanly");
    cfg_release(&cfg);
    return rc;
}
