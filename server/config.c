/*
 * config — see config.h. Owns the option table: every flag, config-file key,
 * default, range, --help line and validation rule is one row of opts[]. The
 * parser, the file loader and the usage printer only walk that table, so a new
 * option is one row here plus one field in struct config.
 *
 * Defaults are written as the text a user would type and go through the same
 * parser as flags, so a default can never bypass validation.
 *
 * Thread: main only.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#ifndef PARLEY_VERSION
#define PARLEY_VERSION "0.0.0"
#endif
#ifndef PARLEY_SOURCE_WEB_ROOT
#define PARLEY_SOURCE_WEB_ROOT "web"
#endif
#ifndef PARLEY_INSTALLED_WEB_ROOT
#define PARLEY_INSTALLED_WEB_ROOT "web"
#endif

enum opt_type {
    OPT_STR,      /* char *; min = minimum length */
    OPT_INT,      /* int in [min, max] */
    OPT_LONG,     /* long in [min, max] */
    OPT_DOUBLE,   /* finite double in [min, max] */
    OPT_BOOL,     /* bool; "--x" sets, "--no-x" clears, JSON true/false */
    OPT_ENUM,     /* an enum field set to the value of one of choices[] */
    OPT_HOSTPORT, /* "HOST:PORT" or "[V6]:PORT" -> char *host at off, int port at off2 */
    OPT_HELP,     /* action: print usage */
    OPT_VERSION,  /* action: print version */
};

/* One accepted word of an OPT_ENUM option and the enum value it stands for. */
struct cfg_choice {
    const char *name;
    int value;
};

/* OPTF_ARGV_ONLY: not a config-file key (--config itself, actions). */
#define OPTF_ARGV_ONLY 1u

struct cfg_opt {
    const char *name;     /* long flag without "--"; also the config-file key */
    enum opt_type type;
    size_t off;           /* offsetof(struct config, field) */
    size_t off2;          /* OPT_HOSTPORT: offset of the int port */
    const char *metavar;  /* shown in --help after the flag */
    const char *def;      /* default as typed on the command line; NULL = unset */
    void (*def_fn)(char *buf, size_t sz); /* computed default; wins over def */
    double min, max;      /* numbers: inclusive range; OPT_STR: min length */
    const struct cfg_choice *choices; /* OPT_ENUM, ended by a NULL name */
    unsigned flags;
    const char *help;
};

static void default_threads(char *buf, size_t sz);
static void default_login_workers(char *buf, size_t sz);
static void default_web_root(char *buf, size_t sz);

/* In --help and error messages the words appear in this order. */
static const struct cfg_choice log_levels[] = {
    {"error", LOG_ERROR}, {"warn", LOG_WARN}, {"info", LOG_INFO}, {"debug", LOG_DEBUG}, {NULL, 0},
};
static const struct cfg_choice event_loops[] = {
    {"epoll", CFG_EVENT_LOOP_EPOLL}, {"poll", CFG_EVENT_LOOP_POLL}, {NULL, 0},
};
static const struct cfg_choice durabilities[] = {
    {"normal", CFG_DURABILITY_NORMAL}, {"full", CFG_DURABILITY_FULL}, {NULL, 0},
};
static const struct cfg_choice auth_modes[] = {
    {"open", CFG_AUTH_OPEN}, {"accounts", CFG_AUTH_ACCOUNTS}, {NULL, 0},
};

#define OFF(f) offsetof(struct config, f)

/* set_value stores an OPT_ENUM value through an int lvalue (an enum type is
 * compatible with an int-sized integer type): every enum field must be that
 * size. */
#define ENUM_FIELD_IS_INT(f)                                                                       \
    _Static_assert(sizeof(((struct config *)0)->f) == sizeof(int), #f " is not int-sized")
ENUM_FIELD_IS_INT(log_level);
ENUM_FIELD_IS_INT(durability);
ENUM_FIELD_IS_INT(auth);
ENUM_FIELD_IS_INT(event_loop);

static const struct cfg_opt opts[] = {
    {.name = "listen", .type = OPT_HOSTPORT, .off = OFF(listen_host), .off2 = OFF(listen_port),
     .metavar = "HOST:PORT", .def = "127.0.0.1:8080",
     .help = "address to listen on; IPv6 as [::1]:8080"},
    {.name = "db", .type = OPT_STR, .off = OFF(db_path), .metavar = "FILE",
     .def = "data/parley.db", .min = 1, .help = "SQLite database file"},
    {.name = "web-root", .type = OPT_STR, .off = OFF(web_root), .metavar = "DIR",
     .def_fn = default_web_root, .min = 1, .help = "directory of the web client files"},
    {.name = "threads", .type = OPT_INT, .off = OFF(threads), .metavar = "N",
     .def_fn = default_threads, .min = 1, .max = 64,
     .help = "I/O threads; one per online CPU by default"},
    {.name = "log-level", .type = OPT_ENUM, .off = OFF(log_level), .def = "info",
     .choices = log_levels, .help = "least severe level that is logged"},
    {.name = "drain-timeout", .type = OPT_DOUBLE, .off = OFF(drain_timeout), .metavar = "SEC",
     .def = "5", .min = 0, .max = 3600,
     .help = "seconds to flush clients on shutdown before closing them"},
    {.name = "client-queue-max", .type = OPT_LONG, .off = OFF(client_queue_max),
     .metavar = "N", .def = "1024", .min = 1, .max = 1000000,
     .help = "frames queued per client before it is dropped as slow"},
    {.name = "client-queue-bytes", .type = OPT_LONG, .off = OFF(client_queue_bytes),
     .metavar = "BYTES", .def = "4194304", .min = 4096, .max = 1073741824,
     .help = "bytes queued per client before it is dropped as slow"},
    {.name = "max-text", .type = OPT_LONG, .off = OFF(max_text), .metavar = "N", .def = "4000",
     .min = 1, .max = 1000000, .help = "longest message text in code points"},
    {.name = "max-frame", .type = OPT_LONG, .off = OFF(max_frame), .metavar = "BYTES",
     .def = "65536", .min = 256, .max = 16777216,
     .help = "largest WebSocket frame accepted from a client"},
    {.name = "durability", .type = OPT_ENUM, .off = OFF(durability), .def = "normal",
     .choices = durabilities,
     .help = "what an ack survives: normal, a crash; full, a power cut too"},
    {.name = "engine", .type = OPT_STR, .off = OFF(engine), .metavar = "URL", .def = "local",
     .min = 1, .help = "local (SQLite), or redis://HOST:PORT[/DB][,...] for a cluster"},
    {.name = "redis-password-file", .type = OPT_STR, .off = OFF(redis_password_file),
     .metavar = "FILE", .min = 1, .help = "password for every Redis of --engine"},
    {.name = "node-id", .type = OPT_STR, .off = OFF(node_id), .metavar = "NAME", .min = 1,
     .help = "this node's name in a cluster; default HOST:PORT"},
    {.name = "history-max", .type = OPT_LONG, .off = OFF(history_max), .metavar = "N",
     .def = "100000", .min = 1000, .max = 100000000,
     .help = "events kept per room by the redis engine (older ones dropped)"},
    {.name = "node-ttl", .type = OPT_LONG, .off = OFF(node_ttl), .metavar = "SEC",
     .def = "10", .min = 2, .max = 3600,
     .help = "a cluster node silent this long is dead: its users leave"},
    {.name = "commit-batch", .type = OPT_LONG, .off = OFF(commit_batch), .metavar = "N",
     .def = "512", .min = 1, .max = 100000, .help = "most writes grouped in one transaction"},
    {.name = "commit-window-us", .type = OPT_LONG, .off = OFF(commit_window_us),
     .metavar = "USEC", .def = "1000", .min = 0, .max = 1000000,
     .help = "how long a transaction waits for more writes"},
    {.name = "auth", .type = OPT_ENUM, .off = OFF(auth), .def = "open", .choices = auth_modes,
     .help = "open: any free name; accounts: registered users, tokens"},
    {.name = "token-secret-file", .type = OPT_STR, .off = OFF(token_secret_file),
     .metavar = "FILE", .min = 1,
     .help = "HS256 token secret; created beside the database if missing"},
    {.name = "token-ttl", .type = OPT_LONG, .off = OFF(token_ttl), .metavar = "SEC",
     .def = "86400", .min = 60, .max = 31536000, .help = "lifetime of tokens from /api/login"},
    {.name = "admin-token-file", .type = OPT_STR, .off = OFF(admin_token_file),
     .metavar = "FILE", .min = 1,
     .help = "bearer token for GET /api/stats/users (any mode)"},
    {.name = "dump-interval", .type = OPT_DOUBLE, .off = OFF(dump_interval), .metavar = "SEC",
     .def = "60", .min = 0.01, .max = 86400, .help = "how often per-user counters are dumped"},
    {.name = "dump-file", .type = OPT_STR, .off = OFF(dump_file), .metavar = "FILE", .min = 1,
     .help = "counter dumps (JSON lines); default: beside the database"},
    {.name = "rate", .type = OPT_DOUBLE, .off = OFF(rate), .metavar = "PER_SEC", .def = "20",
     .min = 0.001, .max = 1e6, .help = "messages per second per user (send, dm, typing)"},
    {.name = "burst", .type = OPT_DOUBLE, .off = OFF(burst), .metavar = "N", .def = "40",
     .min = 1, .max = 1e6, .help = "messages a user may send at once"},
    {.name = "abuse-strikes", .type = OPT_LONG, .off = OFF(abuse_strikes), .metavar = "N",
     .def = "50", .min = 1, .max = 1000000,
     .help = "rate-limited requests in a row before close 4029"},
    {.name = "join-rate", .type = OPT_DOUBLE, .off = OFF(join_rate), .metavar = "PER_SEC",
     .def = "5", .min = 0.001, .max = 1e6, .help = "joins and leaves per second per user"},
    {.name = "join-burst", .type = OPT_DOUBLE, .off = OFF(join_burst), .metavar = "N",
     .def = "64", .min = 1, .max = 1e6, .help = "joins and leaves a user may make at once"},
    {.name = "max-new-rooms", .type = OPT_DOUBLE, .off = OFF(max_new_rooms), .metavar = "N",
     .def = "100", .min = 4, .max = 1e6,
     .help = "rooms a user may open per hour that are not in memory"},
    {.name = "room-cache", .type = OPT_LONG, .off = OFF(room_cache), .metavar = "N",
     .def = "10000", .min = 0, .max = 10000000,
     .help = "rooms kept in memory while nobody is in them"},
    {.name = "idempotency-ttl", .type = OPT_LONG, .off = OFF(idempotency_ttl), .metavar = "SEC",
     .def = "600", .min = 1, .max = 604800,
     .help = "how long a client message id is remembered in memory"},
    {.name = "login-workers", .type = OPT_INT, .off = OFF(login_workers), .metavar = "N",
     .def_fn = default_login_workers, .min = 1, .max = 64,
     .help = "threads hashing passwords (login, register); CPUs, at most 4"},
    {.name = "login-queue", .type = OPT_LONG, .off = OFF(login_queue), .metavar = "N",
     .def = "256", .min = 1, .max = 100000,
     .help = "login/register requests waiting for a worker; beyond: 429"},
    {.name = "login-queue-per-ip", .type = OPT_LONG, .off = OFF(login_queue_per_ip),
     .metavar = "N", .def = "8", .min = 1, .max = 100000,
     .help = "login/register requests of one address waiting or hashing"},
    {.name = "login-rate", .type = OPT_DOUBLE, .off = OFF(login_rate), .metavar = "PER_SEC",
     .def = "1", .min = 0.001, .max = 1e6,
     .help = "login/register requests per second per client address"},
    {.name = "login-burst", .type = OPT_DOUBLE, .off = OFF(login_burst), .metavar = "N",
     .def = "20", .min = 1, .max = 1e6,
     .help = "login/register requests one address may send at once"},
    {.name = "login-failures", .type = OPT_LONG, .off = OFF(login_failures), .metavar = "N",
     .def = "5", .min = 1, .max = 1000000,
     .help = "failed logins for one user name before it backs off (429)"},
    {.name = "login-failures-per-ip", .type = OPT_LONG, .off = OFF(login_failures_per_ip),
     .metavar = "N", .def = "50", .min = 1, .max = 1000000,
     .help = "failed logins from one address before it backs off (429)"},
    {.name = "login-max-backoff", .type = OPT_LONG, .off = OFF(login_max_backoff),
     .metavar = "SEC", .def = "900", .min = 1, .max = 86400,
     .help = "longest login backoff; it doubles from 1 s per further failure"},
    {.name = "max-connections", .type = OPT_LONG, .off = OFF(max_connections), .metavar = "N",
     .def = "10000", .min = 1, .max = 10000000, .help = "open connections in all"},
    {.name = "max-connections-per-ip", .type = OPT_LONG, .off = OFF(max_connections_per_ip),
     .metavar = "N", .def = "1000", .min = 1, .max = 10000000,
     .help = "open connections from one IP address"},
    {.name = "smtp-url", .type = OPT_STR, .off = OFF(smtp_url), .metavar = "URL", .min = 1,
     .help = "e-mail relay, smtp:// or smtps://; none: the mbox file"},
    {.name = "smtp-starttls", .type = OPT_BOOL, .off = OFF(smtp_starttls),
     .help = "upgrade smtp:// with STARTTLS when the relay offers it"},
    {.name = "smtp-user", .type = OPT_STR, .off = OFF(smtp_user), .metavar = "NAME", .min = 1,
     .help = "SMTP AUTH user"},
    {.name = "smtp-password-file", .type = OPT_STR, .off = OFF(smtp_password_file),
     .metavar = "FILE", .min = 1, .help = "file holding the SMTP AUTH password"},
    {.name = "smtp-from", .type = OPT_STR, .off = OFF(smtp_from), .metavar = "ADDR",
     .def = "parley@localhost", .min = 3, .help = "sender address of notifications"},
    {.name = "mail-file", .type = OPT_STR, .off = OFF(mail_file), .metavar = "FILE", .min = 1,
     .help = "mbox for notifications without a relay; default: beside the database"},
    {.name = "notify-queue", .type = OPT_LONG, .off = OFF(notify_queue), .metavar = "N",
     .def = "10000", .min = 1, .max = 10000000, .help = "notifications held in memory"},
    {.name = "notify-coalesce", .type = OPT_DOUBLE, .off = OFF(notify_coalesce),
     .metavar = "SEC", .def = "60", .min = 0, .max = 86400,
     .help = "at most one e-mail per recipient per this many seconds"},
    {.name = "notify-max-backoff", .type = OPT_DOUBLE, .off = OFF(notify_max_backoff),
     .metavar = "SEC", .def = "300", .min = 0.01, .max = 86400,
     .help = "longest wait between delivery attempts"},
    {.name = "notify-max-attempts", .type = OPT_LONG, .off = OFF(notify_max_attempts),
     .metavar = "N", .def = "8", .min = 1, .max = 1000,
     .help = "delivery attempts before a notification is dead"},
    {.name = "tls-cert", .type = OPT_STR, .off = OFF(tls_cert), .metavar = "PEM", .min = 1,
     .help = "certificate chain (PEM): serve https:// and wss:// on --listen"},
    {.name = "tls-key", .type = OPT_STR, .off = OFF(tls_key), .metavar = "PEM", .min = 1,
     .help = "private key (PEM) for --tls-cert; SIGHUP reloads both"},
    {.name = "handshake-timeout", .type = OPT_LONG, .off = OFF(handshake_timeout),
     .metavar = "SEC", .def = "10", .min = 1, .max = 3600,
     .help = "close connections that have not finished their HTTP request"},
    {.name = "fragment-timeout", .type = OPT_LONG, .off = OFF(fragment_timeout),
     .metavar = "SEC", .def = "10", .min = 1, .max = 3600,
     .help = "close a WebSocket whose message stays unfinished this long"},
    {.name = "ping-interval", .type = OPT_LONG, .off = OFF(ping_interval), .metavar = "SEC",
     .def = "30", .min = 1, .max = 3600,
     .help = "ping idle WebSockets; close them after twice this without a pong"},
    {.name = "max-rooms-per-conn", .type = OPT_LONG, .off = OFF(max_rooms_per_conn),
     .metavar = "N", .def = "64", .min = 1, .max = 100000, .help = "rooms one connection may join"},
    {.name = "max-room-members", .type = OPT_LONG, .off = OFF(max_room_members), .metavar = "N",
     .def = "10000", .min = 1, .max = 10000000, .help = "connections in one room"},
    {.name = "flush-interval-us", .type = OPT_LONG, .off = OFF(flush_interval_us),
     .metavar = "USEC", .def = "0", .min = 0, .max = 100000,
     .help = "least time between a loop's write rounds (batches frames)"},
    {.name = "event-loop", .type = OPT_ENUM, .off = OFF(event_loop), .def = "epoll",
     .choices = event_loops,
     .help = "epoll: lws on its libev plugin; poll: lws's own poll() loop"},
    {.name = "check-config", .type = OPT_BOOL, .off = OFF(check_config), .flags = OPTF_ARGV_ONLY,
     .help = "check flags, config file and the files they name; exit"},
    {.name = "config", .type = OPT_STR, .off = OFF(config_file), .metavar = "FILE", .min = 1,
     .flags = OPTF_ARGV_ONLY,
     .help = "JSON file of settings; keys are the flag names without \"--\""},
    {.name = "help", .type = OPT_HELP, .flags = OPTF_ARGV_ONLY,
     .help = "print this help and exit"},
    {.name = "version", .type = OPT_VERSION, .flags = OPTF_ARGV_ONLY,
     .help = "print the version and exit"},
};

static void default_threads(char *buf, size_t sz)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > 64)
        n = 64;
    snprintf(buf, sz, "%ld", n);
}

static void default_login_workers(char *buf, size_t sz)
{
    /* scrypt takes 32 MiB and a core per hash: a few threads are enough to
     * keep one slow client from holding everybody up, and bound the memory */
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > 4)
        n = 4;
    snprintf(buf, sz, "%ld", n);
}

static void default_web_root(char *buf, size_t sz)
{
    /* Running from the build tree should serve the checkout's web/, an
     * installed binary its installed copy. */
    struct stat st;
    if (stat(PARLEY_SOURCE_WEB_ROOT, &st) == 0 && S_ISDIR(st.st_mode))
        str_lcpy(buf, PARLEY_SOURCE_WEB_ROOT, sz);
    else
        str_lcpy(buf, PARLEY_INSTALLED_WEB_ROOT, sz);
}

static const struct cfg_opt *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < ARRAY_LEN(opts); i++) {
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    }
    return NULL;
}

static const char *opt_default(const struct cfg_opt *o, char *buf, size_t sz)
{
    if (o->def_fn) {
        o->def_fn(buf, sz);
        return buf;
    }
    return o->def;
}

static void *field(struct config *c, size_t off)
{
    return (char *)c + off;
}

static void set_str(struct config *c, size_t off, const char *v, size_t len)
{
    char **p = field(c, off);
    free(*p);
    *p = v ? xstrndup(v, len) : NULL;
}

/* Where a value came from, for error messages: "--threads" or
 * "config 'f.json': threads". */
struct origin {
    const char *file; /* NULL for the command line */
};

static void fail(char *err, size_t errsz, const struct origin *from, const struct cfg_opt *o,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void fail(char *err, size_t errsz, const struct origin *from, const struct cfg_opt *o,
                 const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (from->file)
        snprintf(err, errsz, "config '%s': %s: %s", from->file, o->name, msg);
    else
        snprintf(err, errsz, "--%s: %s", o->name, msg);
}

/* Strict decimal integer: optional '-', digits, nothing else. */
static int parse_ll(const char *s, long long *out)
{
    const char *p = s;
    if (*p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    for (const char *q = p; *q; q++) {
        if (*q < '0' || *q > '9')
            return -1;
    }
    errno = 0;
    *out = strtoll(s, NULL, 10);
    return errno == ERANGE ? -1 : 0;
}

/* Plain decimal number (no hex, inf or nan, which strtod would accept). */
static int parse_num(const char *s, double *out)
{
    if (!*s || strspn(s, "0123456789.eE+-") != strlen(s))
        return -1;
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return (*end || errno == ERANGE || !isfinite(*out)) ? -1 : 0;
}

static int parse_port(const char *s, int *port)
{
    long long v;
    if (*s == '-' || parse_ll(s, &v) < 0 || v < 1 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

static int set_hostport(struct config *c, const struct cfg_opt *o, const char *v)
{
    const char *host, *colon;
    size_t hlen;

    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (!close || close[1] != ':')
            return -1;
        host = v + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(v, ':');
        if (!colon)
            return -1;
        host = v;
        hlen = (size_t)(colon - v);
        /* a bare IPv6 address is ambiguous: the port could be its last group */
        if (memchr(host, ':', hlen))
            return -1;
    }
    int port;
    if (hlen == 0 || parse_port(colon + 1, &port) < 0)
        return -1;
    set_str(c, o->off, host, hlen);
    *(int *)field(c, o->off2) = port;
    return 0;
}

static void choices_text(const struct cfg_opt *o, char *buf, size_t sz)
{
    size_t n = 0;
    buf[0] = '\0';
    for (const struct cfg_choice *ch = o->choices; ch->name && n < sz; ch++)
        n += (size_t)snprintf(buf + n, sz - n, "%s%s", ch == o->choices ? "" : "|", ch->name);
}

/*
 * Parse text v into o's field. Used for defaults, flags and the string form
 * of config-file values, so every source gets the same checks and messages.
 */
static int set_value(struct config *c, const struct cfg_opt *o, const char *v,
                     const struct origin *from, char *err, size_t errsz)
{
    long long ll;
    double d;
    char buf[256];

    switch (o->type) {
    case OPT_STR:
        if (strlen(v) < (size_t)o->min) {
            fail(err, errsz, from, o, "expected a non-empty value");
            return -1;
        }
        set_str(c, o->off, v, strlen(v));
        return 0;
    case OPT_INT:
    case OPT_LONG:
        if (parse_ll(v, &ll) < 0 || ll < (long long)o->min || ll > (long long)o->max) {
            fail(err, errsz, from, o, "expected an integer from %.0f to %.0f, got '%s'", o->min,
                 o->max, v);
            return -1;
        }
        if (o->type == OPT_INT)
            *(int *)field(c, o->off) = (int)ll;
        else
            *(long *)field(c, o->off) = (long)ll;
        return 0;
    case OPT_DOUBLE:
        if (parse_num(v, &d) < 0 || d < o->min || d > o->max) {
            fail(err, errsz, from, o, "expected a number from %g to %g, got '%s'", o->min,
                 o->max, v);
            return -1;
        }
        *(double *)field(c, o->off) = d;
        return 0;
    case OPT_BOOL:
        if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0) {
            *(bool *)field(c, o->off) = v[0] == 't';
            return 0;
        }
        fail(err, errsz, from, o, "expected true or false, got '%s'", v);
        return -1;
    case OPT_ENUM:
        for (const struct cfg_choice *ch = o->choices; ch->name; ch++) {
            if (strcmp(ch->name, v) == 0) {
                *(int *)field(c, o->off) = ch->value;
                return 0;
            }
        }
        choices_text(o, buf, sizeof(buf));
        fail(err, errsz, from, o, "expected one of %s, got '%s'", buf, v);
        return -1;
    case OPT_HOSTPORT:
        if (set_hostport(c, o, v) < 0) {
            fail(err, errsz, from, o, "expected HOST:PORT with a port from 1 to 65535, got '%s'",
                 v);
            return -1;
        }
        return 0;
    case OPT_HELP:
    case OPT_VERSION:
        break;
    }
    return 0;
}

static void set_defaults(struct config *c)
{
    static const struct origin builtin = {.file = "(built-in default)"};
    char buf[4096], err[256];

    for (size_t i = 0; i < ARRAY_LEN(opts); i++) {
        const char *def = opt_default(&opts[i], buf, sizeof(buf));
        if (opts[i].type == OPT_HELP || opts[i].type == OPT_VERSION || !def)
            continue;
        if (set_value(c, &opts[i], def, &builtin, err, sizeof(err)) < 0) {
            /* a bad table row is a programming error that the unit tests catch */
            fprintf(stderr, "parleyd: bad default: %s\n", err);
            abort();
        }
    }
}

static const char *json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* Apply one config-file value, converting it to the text set_value parses. */
static int set_json(struct config *c, const struct cfg_opt *o, const json_t *j,
                    const struct origin *from, char *err, size_t errsz)
{
    char buf[64];
    const char *want = NULL;

    switch (o->type) {
    case OPT_STR:
    case OPT_ENUM:
    case OPT_HOSTPORT:
        if (!json_is_string(j)) {
            want = "a string";
            break;
        }
        /* no embedded NUL to worry about: jansson refuses \u0000 unless
         * JSON_ALLOW_NUL is given */
        return set_value(c, o, json_string_value(j), from, err, errsz);
    case OPT_INT:
    case OPT_LONG:
        if (!json_is_integer(j)) {
            want = "an integer";
            break;
        }
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        return set_value(c, o, buf, from, err, errsz);
    case OPT_DOUBLE:
        if (!json_is_number(j)) {
            want = "a number";
            break;
        }
        snprintf(buf, sizeof(buf), "%.17g", json_number_value(j));
        return set_value(c, o, buf, from, err, errsz);
    case OPT_BOOL:
        if (!json_is_boolean(j)) {
            want = "a boolean";
            break;
        }
        *(bool *)field(c, o->off) = json_is_true(j);
        return 0;
    case OPT_HELP:
    case OPT_VERSION:
        break;
    }
    fail(err, errsz, from, o, "expected %s, got %s", want ? want : "nothing", json_type_name(j));
    return -1;
}

static int load_file(struct config *c, const char *path, char *err, size_t errsz)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    struct origin from = {.file = path};
    const char *key;
    json_t *val;
    int rc = -1;

    if (!root) {
        if (jerr.line > 0)
            snprintf(err, errsz, "config '%s': line %d column %d: %s", path, jerr.line,
                     jerr.column, jerr.text);
        else
            snprintf(err, errsz, "config '%s': %s", path, jerr.text);
        return -1;
    }
    if (!json_is_object(root)) {
        snprintf(err, errsz, "config '%s': expected a JSON object at the top level", path);
        goto out_root;
    }
    json_object_foreach(root, key, val) {
        const struct cfg_opt *o = find_opt(key, strlen(key));
        if (!o || (o->flags & OPTF_ARGV_ONLY)) {
            snprintf(err, errsz, "config '%s': unknown key '%s'", path, key);
            goto out_root;
        }
        if (set_json(c, o, val, &from, err, errsz) < 0)
            goto out_root;
    }
    rc = 0;
out_root:
    json_decref(root);
    return rc;
}

/* One command-line argument, split into option and inline value. */
struct arg {
    const struct cfg_opt *opt;
    const char *value; /* NULL for actions and booleans */
    bool negated;      /* --no-X for a boolean */
};

/*
 * Decode argv[*i] (advancing *i past a separate value). Only syntax is
 * checked here; values are validated when applied.
 */
static int next_arg(int argc, char **argv, int *i, struct arg *a, char *err, size_t errsz)
{
    const char *s = argv[*i];
    const char *eq, *name;
    size_t nlen;

    memset(a, 0, sizeof(*a));
    if (strcmp(s, "-h") == 0)
        s = "--help";
    if (strncmp(s, "--", 2) != 0 || s[2] == '\0') {
        snprintf(err, errsz, "unexpected argument '%s'", s);
        return -1;
    }
    name = s + 2;
    eq = strchr(name, '=');
    nlen = eq ? (size_t)(eq - name) : strlen(name);
    a->opt = find_opt(name, nlen);
    if (!a->opt && nlen > 3 && strncmp(name, "no-", 3) == 0) {
        a->opt = find_opt(name + 3, nlen - 3);
        if (a->opt && a->opt->type != OPT_BOOL)
            a->opt = NULL;
        a->negated = a->opt != NULL;
    }
    if (!a->opt) {
        snprintf(err, errsz, "unknown option '--%.*s'", (int)nlen, name);
        return -1;
    }
    switch (a->opt->type) {
    case OPT_BOOL:
    case OPT_HELP:
    case OPT_VERSION:
        if (eq) {
            snprintf(err, errsz, "option '--%.*s' takes no value", (int)nlen, name);
            return -1;
        }
        return 0;
    default:
        break;
    }
    if (eq) {
        a->value = eq + 1;
        return 0;
    }
    /* "--db --threads 4" is a forgotten value, not a file named "--threads";
     * such a name can still be given as --db=--threads. */
    if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0) {
        snprintf(err, errsz, "option '--%s' needs a value", a->opt->name);
        return -1;
    }
    a->value = argv[++*i];
    return 0;
}

enum cfg_result cfg_parse(struct config *c, int argc, char **argv, FILE *out, char *err,
                          size_t errsz)
{
    static const struct origin cmdline = {.file = NULL};
    const char *config_path = NULL;
    struct arg a;

    memset(c, 0, sizeof(*c));
    set_defaults(c);
    if (errsz)
        err[0] = '\0';

    /* Pass 1: syntax, actions and --config, so the file can be applied before
     * any flag no matter where --config appears. */
    for (int i = 1; i < argc; i++) {
        if (next_arg(argc, argv, &i, &a, err, errsz) < 0)
            return CFG_ERROR;
        if (a.opt->type == OPT_HELP) {
            cfg_usage(out);
            return CFG_EXIT_0;
        }
        if (a.opt->type == OPT_VERSION) {
            fprintf(out, "parleyd %s\n", PARLEY_VERSION);
            return CFG_EXIT_0;
        }
        if (strcmp(a.opt->name, "config") == 0)
            config_path = a.value;
    }
    if (config_path) {
        if (set_value(c, find_opt("config", 6), config_path, &cmdline, err, errsz) < 0)
            return CFG_ERROR;
        if (load_file(c, c->config_file, err, errsz) < 0)
            return CFG_ERROR;
    }

    /* Pass 2: flags override the file, later flags override earlier ones. */
    for (int i = 1; i < argc; i++) {
        if (next_arg(argc, argv, &i, &a, err, errsz) < 0)
            return CFG_ERROR;
        if (a.opt->type == OPT_BOOL) {
            *(bool *)field(c, a.opt->off) = !a.negated;
            continue;
        }
        if (a.value && set_value(c, a.opt, a.value, &cmdline, err, errsz) < 0)
            return CFG_ERROR;
    }
    return CFG_OK;
}

void cfg_release(struct config *c)
{
    for (size_t i = 0; i < ARRAY_LEN(opts); i++) {
        switch (opts[i].type) {
        case OPT_STR:
        case OPT_HOSTPORT:
            set_str(c, opts[i].off, NULL, 0);
            break;
        default:
            break;
        }
    }
}

static void usage_default(const struct cfg_opt *o, char *buf, size_t sz)
{
    char tmp[4096];
    const char *def = opt_default(o, tmp, sizeof(tmp));

    if (o->type == OPT_HELP || o->type == OPT_VERSION)
        buf[0] = '\0';
    else if (o->type == OPT_BOOL)
        snprintf(buf, sz, " (default: %s)", def && strcmp(def, "true") == 0 ? "on" : "off");
    else if (o->type == OPT_INT || o->type == OPT_LONG)
        snprintf(buf, sz, " (%.0f..%.0f, default: %s)", o->min, o->max, def ? def : "none");
    else if (o->type == OPT_DOUBLE)
        snprintf(buf, sz, " (%g..%g, default: %s)", o->min, o->max, def ? def : "none");
    else
        snprintf(buf, sz, " (default: %s)", def ? def : "none");
}

void cfg_usage(FILE *out)
{
    enum { COL = 32 };
    char left[320], choices[256], def[4200];

    fprintf(out, "Usage: parleyd [OPTIONS]\n\n"
                 "Every option except --config, --help and --version can also be set in the\n"
                 "--config JSON file, keyed by its name without the leading \"--\".\n"
                 "Flags override the file; the file overrides the defaults.\n\n"
                 "Options:\n");
    for (size_t i = 0; i < ARRAY_LEN(opts); i++) {
        const struct cfg_opt *o = &opts[i];
        const char *meta = o->metavar ? o->metavar : "";
        if (o->type == OPT_ENUM) {
            choices_text(o, choices, sizeof(choices));
            meta = choices;
        }
        snprintf(left, sizeof(left), "--%s%s%s%s", o->type == OPT_BOOL ? "[no-]" : "", o->name,
                 *meta ? " " : "", meta);
        usage_default(o, def, sizeof(def));
        if (strlen(left) + 2 >= COL)
            fprintf(out, "  %s\n%*s", left, COL, "");
        else
            fprintf(out, "  %-*s", COL - 2, left);
        /* keep lines within 100 columns: the default goes below a long help */
        if (COL + strlen(o->help) + strlen(def) > 100)
            fprintf(out, "%s\n%*s%s\n", o->help, COL - 1, "", def);
        else
            fprintf(out, "%s%s\n", o->help, def);
    }
}
