/*
 * config — every setting of parleyd, from one table: long flags, the keys of
 * the --config JSON file (same names without "--"), defaults, --help text and
 * validation all come from that table, so a new option is one table row and
 * one struct field. Flags override the file; the file overrides defaults.
 *
 * Thread: main only (parsed once at start; the result is then read-only).
 */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "log.h"

/* The options with a fixed set of values are parsed into these once, so the
 * rest of the server compares enums, never strings. */
enum cfg_durability {
    CFG_DURABILITY_NORMAL, /* an ack survives a crash of parleyd */
    CFG_DURABILITY_FULL,   /* an ack survives a power cut too (fdatasync of the WAL) */
};
enum cfg_auth {
    CFG_AUTH_OPEN,     /* any free name */
    CFG_AUTH_ACCOUNTS, /* registered users with tokens */
};
enum cfg_event_loop {
    CFG_EVENT_LOOP_EPOLL, /* lws on its libev plugin (epoll backend) */
    CFG_EVENT_LOOP_POLL,  /* lws's own poll() loop */
};

struct config {
    char *listen_host;          /* --listen HOST:PORT, default 127.0.0.1:8080 */
    int listen_port;
    char *db_path;              /* --db, default data/parley.db */
    char *web_root;             /* --web-root, default PARLEY_DEFAULT_WEB_ROOT */
    int threads;                /* --threads, default = online CPUs, 1..64 */
    enum log_level log_level;   /* --log-level error|warn|info|debug, default info */
    double drain_timeout;       /* --drain-timeout seconds, default 5 */
    long client_queue_max;      /* --client-queue-max messages, default 1024 */
    long client_queue_bytes;    /* --client-queue-bytes, default 4194304 */
    long max_text;              /* --max-text code points, default 4000 */
    long max_frame;             /* --max-frame bytes, default 65536 */
    enum cfg_durability durability; /* --durability normal|full, default normal */
    char *engine;               /* --engine local | redis://H:P[/DB][,...], default local */
    char *redis_password_file;  /* --redis-password-file, default none */
    char *node_id;              /* --node-id, default <host name>:<port> */
    long history_max;           /* --history-max events per room kept by the redis engine */
    long node_ttl;              /* --node-ttl seconds before a silent node counts as dead */
    long commit_batch;          /* --commit-batch writes per transaction, default 512 */
    long commit_window_us;      /* --commit-window-us, default 1000 */
    enum cfg_auth auth;         /* --auth open|accounts, default open */
    char *token_secret_file;    /* --token-secret-file, default <db dir>/token.secret */
    long token_ttl;             /* --token-ttl seconds for /api/login tokens, default 86400 */
    char *admin_token_file;     /* --admin-token-file, default none */
    double dump_interval;       /* --dump-interval seconds, default 60 */
    char *dump_file;            /* --dump-file, default <db dir>/counters.jsonl */
    double rate;                /* --rate messages/s per user, default 20 */
    double burst;               /* --burst, default 40 */
    long abuse_strikes;         /* --abuse-strikes refusals in a row before close 4029 */
    double join_rate;           /* --join-rate joins and leaves/s per user, default 5 */
    double join_burst;          /* --join-burst, default 64 */
    double max_new_rooms;       /* --max-new-rooms rooms a user may open per hour, default 100 */
    long room_cache;            /* --room-cache idle rooms kept in memory, default 10000 */
    long idempotency_ttl;       /* --idempotency-ttl seconds, default 600 */
    int login_workers;          /* --login-workers scrypt threads, default min(CPUs, 4) */
    long login_queue;           /* --login-queue requests waiting for a worker, default 256 */
    long login_queue_per_ip;    /* --login-queue-per-ip waiting or hashing, default 8 */
    double login_rate;          /* --login-rate requests/s per address, default 1 */
    double login_burst;         /* --login-burst, default 20 */
    long login_failures;        /* --login-failures per name before backing off, default 5 */
    long login_failures_per_ip; /* --login-failures-per-ip before backing off, default 50 */
    long login_max_backoff;     /* --login-max-backoff seconds, default 900 */
    long max_connections;       /* --max-connections, default 10000 */
    long max_connections_per_ip; /* --max-connections-per-ip, default 1000 */
    char *smtp_url;             /* --smtp-url smtp://host:port or smtps://; none: mbox */
    bool smtp_starttls;         /* --smtp-starttls */
    char *smtp_user;            /* --smtp-user */
    char *smtp_password_file;   /* --smtp-password-file */
    char *smtp_from;            /* --smtp-from, default parley@localhost */
    char *mail_file;            /* --mail-file, default mail.mbox beside the database */
    long notify_queue;          /* --notify-queue, default 10000 */
    double notify_coalesce;     /* --notify-coalesce seconds, default 60 */
    double notify_max_backoff;  /* --notify-max-backoff seconds, default 300 */
    long notify_max_attempts;   /* --notify-max-attempts, default 8 */
    char *tls_cert;             /* --tls-cert PEM (chain allowed): serve https/wss */
    char *tls_key;              /* --tls-key PEM */
    long handshake_timeout;     /* --handshake-timeout seconds to finish the HTTP upgrade */
    long ping_interval;         /* --ping-interval seconds of idle before a ping */
    long fragment_timeout;      /* --fragment-timeout seconds a message may take to arrive */
    long max_rooms_per_conn;    /* --max-rooms-per-conn, default 64 */
    long max_room_members;      /* --max-room-members, default 10000 */
    bool check_config;          /* --check-config: validate and exit */
    long flush_interval_us;     /* --flush-interval-us: least time between write rounds */
    enum cfg_event_loop event_loop; /* --event-loop epoll|poll, default epoll */
    char *config_file;          /* --config FILE (JSON) */
};

enum cfg_result {
    CFG_OK,      /* run the server */
    CFG_EXIT_0,  /* --help or --version was printed: exit 0 */
    CFG_ERROR,   /* message in err: exit 2 */
};

/*
 * Parse argv (argv[0] is the program name; the first argument may not be a
 * subcommand). Prints --help/--version to out. On CFG_ERROR, err holds one
 * line such as "unknown option '--nope'" or "--threads: expected an integer
 * from 1 to 64, got 'x'" or "config 'f.json': unknown key 'nope'".
 * Accepts "--flag value" and "--flag=value"; boolean flags take no value.
 * The struct always holds every default after the call, even on error, and
 * must be released with cfg_release.
 */
enum cfg_result cfg_parse(struct config *c, int argc, char **argv, FILE *out, char *err,
                          size_t errsz);
void cfg_release(struct config *c);

/* Print the --help text (every flag with its default) to out. */
void cfg_usage(FILE *out);

#endif
