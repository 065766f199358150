/*
 * server — the one object that holds parleyd's shared state. main.c builds
 * it, starts the threads in order and tears them down in reverse; every other
 * module reaches shared state through it, never through globals.
 */
#ifndef PARLEY_SERVER_H
#define PARLEY_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"
#include "metrics.h"

struct loop;
struct broker;
struct webcache;
struct store;
struct accounts;
struct counters;
struct dumper;
struct ratelimit;
struct notify;
struct iplimit;
struct tls_creds;
struct cdir;

struct server {
    const struct config *cfg;       /* read-only after start */
    struct metrics metrics;
    struct broker *broker;
    struct store *store;
    struct cdir *cdir;              /* cluster directory (--engine redis); NULL on one node */
    struct webcache *web;           /* read-only after start */
    struct accounts *accounts;      /* NULL in open mode */
    char *admin_token;              /* --admin-token-file, every mode; NULL: none; read-only */
    struct counters *counters;      /* per-user request counters */
    struct dumper *dumper;          /* periodic counter dumps */
    struct ratelimit *ratelimit;    /* per-user token buckets */
    struct notify *notify;          /* e-mail notifications */
    struct iplimit *iplimit;        /* connections per client address */
    _Atomic long ws_conns;          /* open WebSocket connections, for --max-connections */
    struct loop **loops;
    int nloops;
};

#endif
