/*
 * loadgen — a WebSocket load generator for parley (protocol v1 JSON) and, with
 * --raw, for any WebSocket broadcast server (the lws mirror, a node `ws` echo
 * room), so the same workload can be run against each and compared.
 *
 * Scenarios:
 *   fanout  one room: N subscribers and P publishers (everyone receives)
 *   rooms   N connections in rooms of --members, --publishers of them publish
 *   churn   connect / join / leave / disconnect storm; reconnects join with
 *           `since` and the history is checked for gaps
 *   idle    N idle connections; server RSS per connection (needs --pid)
 *   dm      N/2 pairs sending direct messages to each other
 *
 * DESIGN: one thread, one epoll loop, and a minimal RFC 6455 client on
 * non-blocking sockets. A load tool must not be the bottleneck, and lws's
 * client adds a callback, a copy and a poll update per frame; here a whole
 * socket read is parsed in place and a frame costs a memmem and a few integer
 * parses. The payload text carries "~L<pub>.<seq>.<send ns>~", so latency,
 * loss and per-publisher order are found without parsing JSON; in parley mode
 * only the `"type":"` prefix is looked at to tell message, ack and the rest
 * apart. Everything is bounded: connection count, duration, in-flight window,
 * buffers, and a hard deadline after which the process exits whatever happens.
 *
 * A cluster is measured as one server: --url several times spreads the connections over
 * its nodes (connection i to URL i mod n, so each room's publishers and subscribers
 * alternate), and --pid several times sums every node's and Redis's CPU; in parley mode the
 * time from send to ack is a histogram of its own, as an ack means the message is durable.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

#define NO_IDX UINT32_MAX
#define RBUF_SIZE (256 * 1024)  /* one socket read; bigger frames use a per-conn buffer */
#define MAX_FRAME (16u << 20)   /* a server frame bigger than this is a protocol error */
#define HS_MAX 8192             /* handshake response headers */
#define OUT_MAX (8u << 20)      /* unsent bytes per connection before we give up on it */
#define HBUCKETS 1024
#define MAX_CONNS 1000000u
#define MAX_DURATION_S 3600.0
#define MAX_WINDOW 65536u
#define MAX_SIZE (1u << 20)
#define NCODES 8
#define MAX_TARGETS 8 /* --url given several times: a cluster's nodes */
#define MAX_PIDS 8    /* --pid given several times: every process of the server side */

/* RFC 6455's sample key: its accept value is a constant, so the handshake can
 * be checked without SHA-1. Every connection may use the same key. */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

enum scen { SC_FANOUT, SC_ROOMS, SC_CHURN, SC_IDLE, SC_DM };
static const char *const scen_names[] = {"fanout", "rooms", "churn", "idle", "dm"};

enum cstate {
    CS_WAIT,       /* not connected; (re)connect at t_next */
    CS_CONNECTING, /* TCP connect in progress */
    CS_HANDSHAKE,  /* upgrade request sent, waiting for 101 */
    CS_OPEN,       /* WebSocket open, waiting for welcome / joined */
    CS_READY,      /* joined (or open, in raw mode) */
    CS_LEAVING,    /* churn: leave sent */
    CS_CLOSING,    /* close frame sent, waiting for the server to close */
    CS_DEAD,       /* gone for good */
};

enum phase { PH_CONNECT, PH_SETTLE, PH_RUN, PH_DRAIN, PH_DONE };
static const char *const phase_names[] = {"connect", "settle", "run", "drain", "done"};

struct conn {
    int fd;
    uint8_t state;
    bool is_pub;
    bool want_out;      /* EPOLLOUT armed */
    bool ever_ready;
    uint32_t room;      /* NO_IDX: no room */
    uint32_t pub;       /* index into g.pubs or NO_IDX */
    uint32_t peer;      /* dm: the other connection of the pair */
    uint32_t *last_seq; /* last publisher seq seen, per publisher of the room */
    uint8_t *in;        /* leftover bytes of a partial frame or handshake */
    uint32_t in_len, in_cap, in_want;
    uint8_t *out;       /* bytes the socket did not take yet */
    uint32_t out_len, out_off, out_cap;
    int64_t t_start;    /* connect started */
    int64_t t_next;     /* timer: reconnect, hold end, or a timeout */
    int64_t since;      /* churn: last room seq seen, -1 if none */
};

struct slot {
    int64_t t_send;
    uint32_t remaining; /* deliveries still expected */
    bool acked;
};

struct pub {
    uint32_t conn;
    uint32_t local;     /* index among its room's publishers */
    uint64_t next_seq;  /* next seq to send; seqs start at 1 */
    uint64_t base;      /* oldest seq still in flight */
    int64_t next_due;   /* rate mode: when the next send is due */
    struct slot *ring;  /* window entries, by seq % window */
};

struct room {
    char name[48];
    uint32_t first_conn, nconn;
    uint32_t first_pub, npub;
    uint32_t live; /* members whose connection is ready */
};

struct hist {
    uint64_t b[HBUCKETS];
    uint64_t n;
    int64_t max;
};

struct opts {
    enum scen scen;
    const char *url[MAX_TARGETS], *subprotocol, *csv, *prefix;
    uint32_t nurls, npids;
    bool raw, json, allow_remote;
    uint32_t conns, pubs, members, sources, window, size, concurrency;
    double rate, duration;
    uint64_t max_messages;
    pid_t pid[MAX_PIDS];
    uint32_t settle_ms, drain_ms, connect_timeout_ms, inflight_timeout_ms, hold_ms;
};

struct srv_sample {
    bool ok;
    double cpu_s, user_s, sys_s; /* summed over every --pid */
    long rss_kib, anon_kib;
    double pid_cpu_s[MAX_PIDS];
};

/* One server address; connection i talks to target i % ntargets, so with two nodes the
 * subscribers and the publishers of every room alternate between them. */
struct target {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char host_hdr[300];
    char path[1024];
    bool v4;
};

struct codes {
    char name[NCODES][32];
    uint64_t n[NCODES];
};

static struct {
    struct opts o;
    struct target tg[MAX_TARGETS];
    uint32_t ntargets;
    uint32_t nsources;
    /* population */
    struct conn *conns;
    uint32_t nconns;
    struct room *rooms;
    uint32_t nrooms;
    struct pub *pubs;
    uint32_t npubs;
    int ep;
    uint8_t *rbuf;
    uint8_t *sbuf; /* scratch for building one outgoing frame */
    uint32_t sbuf_cap;
    uint32_t rng;
    /* progress */
    enum phase phase;
    int64_t t0, t_phase, t_run, t_run_end, t_last_rx, t_deadline, t_tick;
    uint32_t pending;   /* connects / handshakes in progress */
    uint32_t next_connect;
    uint32_t ready, open_now;
    /* counters */
    uint64_t sent, acked, send_errors, deliveries, late, expired, order_viol;
    uint64_t frames_in, other_frames, bytes_in, bad_frames, unmatched_acks, errors;
    uint64_t conn_failed, conn_timeouts, server_closes, hs_failed;
    uint64_t cycles, join_gaps, live_gaps, recovered, churn_timeouts;
    uint64_t behind; /* rate mode: sends that were due while the window was full */
    struct codes err_codes, close_codes;
    struct hist lat, lat_iv, join, ack; /* ack: send to ack, parley mode */
    uint64_t iv_sent, iv_deliv;
    int64_t t_connect_done;
    /* server and self */
    struct srv_sample srv_base, srv0, srv1, srv_iv, srv_idle0;
    uint64_t expected;
    double self_cpu0, self_cpu1;
    FILE *csv;
    bool tty;
    int64_t first_send, last_deliv;
} g;

static volatile sig_atomic_t g_sigint;

/* ---- small helpers ---------------------------------------------------------------------- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warnx_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (g.tty)
        fputs("\r\033[K", stderr);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static uint32_t rnd(void)
{
    /* xorshift32: mask keys and jitter only, nothing that needs to be strong */
    uint32_t x = g.rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    g.rng = x;
    return x;
}

static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void code_count(struct codes *c, const char *name, size_t len)
{
    if (len >= sizeof(c->name[0]))
        len = sizeof(c->name[0]) - 1;
    for (int i = 0; i < NCODES; i++) {
        if (c->n[i] && strlen(c->name[i]) == len && memcmp(c->name[i], name, len) == 0) {
            c->n[i]++;
            return;
        }
        if (!c->n[i]) {
            memcpy(c->name[i], name, len);
            c->name[i][len] = '\0';
            c->n[i] = 1;
            return;
        }
    }
    c->n[NCODES - 1]++; /* table full: lump the rest into the last entry */
}

/* ---- histogram: 16 log-linear sub-buckets per power of two (about 3% error) -------------- */

static unsigned hist_idx(uint64_t v)
{
    if (v < 32)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (e - 4)) & 15u;
    return 32u + (e - 5u) * 16u + sub;
}

static uint64_t hist_val(unsigned i)
{
    if (i < 32)
        return i;
    unsigned e = (i - 32u) / 16u + 5u, sub = (i - 32u) % 16u;
    uint64_t lo = (1ull << e) | ((uint64_t)sub << (e - 4));
    return lo + (1ull << (e - 4)) / 2;
}

static void hist_add(struct hist *h, int64_t v)
{
    if (v < 0)
        v = 0;
    h->b[hist_idx((uint64_t)v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

/* Value (ns) at quantile q, or 0 for an empty histogram. */
static double hist_q(const struct hist *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)ceil(q * (double)h->n), acc = 0;
    if (want == 0)
        want = 1;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        acc += h->b[i];
        if (acc >= want) {
            uint64_t v = hist_val(i);
            return (double)(v > (uint64_t)h->max ? (uint64_t)h->max : v);
        }
    }
    return (double)h->max;
}

/* ---- server sampling from /proc ---------------------------------------------------------- */

/* Add one process's CPU and memory to s; false if it is gone. */
static bool srv_sample_pid(struct srv_sample *s, uint32_t i)
{
    char path[64], buf[4096];
    pid_t pid = g.o.pid[i];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name may hold spaces and parentheses: fields start after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p)
        return false;
    unsigned long long ut = 0, st = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return false;
    double hz = (double)sysconf(_SC_CLK_TCK);
    s->user_s += (double)ut / hz;
    s->sys_s += (double)st / hz;
    s->pid_cpu_s[i] = (double)(ut + st) / hz;
    s->cpu_s += s->pid_cpu_s[i];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return false;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            s->rss_kib += strtol(line + 6, NULL, 10);
        else if (strncmp(line, "RssAnon:", 8) == 0)
            s->anon_kib += strtol(line + 8, NULL, 10);
    }
    fclose(f);
    return true;
}

/* CPU and memory of every --pid, summed: the whole server side (e.g. nodes and Redis). */
static struct srv_sample srv_sample(void)
{
    struct srv_sample s = {0};
    for (uint32_t i = 0; i < g.o.npids; i++)
        if (!srv_sample_pid(&s, i))
            return (struct srv_sample){0};
    s.ok = g.o.npids > 0;
    return s;
}

/* ---- URL and target ---------------------------------------------------------------------- */

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

static void parse_url(struct target *t, const char *url)
{
    if (strncmp(url, "ws://", 5) != 0)
        die("only ws:// URLs are supported: '%s'", url);
    const char *h = url + 5, *hend, *pstart;
    char host[256];
    if (*h == '[') {
        hend = strchr(h, ']');
        if (!hend)
            die("bad IPv6 literal in '%s'", url);
        if ((size_t)(hend - h - 1) >= sizeof(host))
            die("host too long");
        memcpy(host, h + 1, (size_t)(hend - h - 1));
        host[hend - h - 1] = '\0';
        hend++;
    } else {
        hend = h + strcspn(h, ":/?");
        if ((size_t)(hend - h) >= sizeof(host) || hend == h)
            die("bad host in '%s'", url);
        memcpy(host, h, (size_t)(hend - h));
        host[hend - h] = '\0';
    }
    const char *port = "80";
    char portbuf[8];
    pstart = hend;
    if (*hend == ':') {
        size_t pl = strcspn(hend + 1, "/?");
        if (pl == 0 || pl >= sizeof(portbuf))
            die("bad port in '%s'", url);
        memcpy(portbuf, hend + 1, pl);
        portbuf[pl] = '\0';
        port = portbuf;
        pstart = hend + 1 + pl;
    }
    if (*pstart == '\0')
        pstart = "/";
    if (*pstart == '?')
        snprintf(t->path, sizeof(t->path), "/%s", pstart);
    else if (str_lcpy(t->path, pstart, sizeof(t->path)) >= sizeof(t->path))
        die("URL path too long");
    snprintf(t->host_hdr, sizeof(t->host_hdr), "%.*s", (int)(pstart - (url + 5)), url + 5);

    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    /* without --allow-remote only literal addresses and "localhost" are resolved, so a
     * typo can never send load anywhere but this machine */
    if (!g.o.allow_remote && strcmp(host, "localhost") != 0)
        hints.ai_flags = AI_NUMERICHOST;
    if (strcmp(host, "localhost") == 0)
        hints.ai_family = AF_INET;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res)
        die("cannot resolve '%s': %s%s", host, gai_strerror(rc),
            g.o.allow_remote ? "" : " (only loopback literals without --allow-remote)");
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    if (!is_loopback(&t->addr) && !g.o.allow_remote)
        die("refusing non-loopback target '%s' (use --allow-remote to override)", host);
    t->v4 = t->addr.ss_family == AF_INET;
}

/* ---- population -------------------------------------------------------------------------- */

static void add_room(uint32_t k, uint32_t first, uint32_t n, uint32_t npub)
{
    struct room *r = &g.rooms[k];
    snprintf(r->name, sizeof(r->name), "%sr%u", g.o.prefix, k);
    r->first_conn = first;
    r->nconn = n;
    r->first_pub = g.npubs;
    r->npub = npub;
    for (uint32_t i = 0; i < n; i++) {
        struct conn *c = &g.conns[first + i];
        c->room = k;
        if (npub)
            c->last_seq = xcalloc(npub, sizeof(uint32_t));
        if (i < npub) {
            struct pub *p = &g.pubs[g.npubs];
            p->conn = first + i;
            p->local = i;
            p->next_seq = 1;
            p->base = 1;
            c->is_pub = true;
            c->pub = g.npubs++;
        }
    }
}

static void build_population(void)
{
    const struct opts *o = &g.o;
    uint32_t n = o->conns, m = o->members;
    switch (o->scen) {
    case SC_FANOUT:
        g.nconns = n + o->pubs;
        g.nrooms = 1;
        break;
    case SC_ROOMS:
        if (m < 1 || o->pubs > m)
            die("rooms: --members must be >= 1 and >= --publishers");
        g.nrooms = (n + m - 1) / m;
        g.nconns = n;
        break;
    case SC_CHURN:
        /* churners in rooms of --members, plus --publishers stable publishers per room */
        if (m < 1)
            die("churn: --members must be >= 1");
        g.nrooms = (n + m - 1) / m;
        g.nconns = n + g.nrooms * o->pubs;
        break;
    case SC_IDLE:
        g.nrooms = m ? (n + m - 1) / m : 0;
        g.nconns = n;
        break;
    case SC_DM:
        if (n < 2)
            die("dm: needs at least 2 connections");
        g.nrooms = n / 2;
        g.nconns = g.nrooms * 2;
        break;
    }
    if (g.nconns > MAX_CONNS)
        die("too many connections (at most %u)", MAX_CONNS);
    g.conns = xcalloc(g.nconns ? g.nconns : 1, sizeof(struct conn));
    g.rooms = xcalloc(g.nrooms ? g.nrooms : 1, sizeof(struct room));
    g.pubs = xcalloc(g.nconns ? g.nconns : 1, sizeof(struct pub));
    for (uint32_t i = 0; i < g.nconns; i++) {
        g.conns[i].fd = -1;
        g.conns[i].room = NO_IDX;
        g.conns[i].pub = NO_IDX;
        g.conns[i].peer = NO_IDX;
        g.conns[i].since = -1;
    }
    uint32_t at = 0;
    switch (o->scen) {
    case SC_FANOUT:
        add_room(0, 0, g.nconns, o->pubs);
        break;
    case SC_ROOMS:
    case SC_IDLE:
        for (uint32_t k = 0; k < g.nrooms; k++) {
            uint32_t sz = n - at < m ? n - at : m;
            add_room(k, at, sz, o->scen == SC_ROOMS ? (o->pubs < sz ? o->pubs : sz) : 0);
            at += sz;
        }
        break;
    case SC_CHURN: {
        uint32_t left = n;
        for (uint32_t k = 0; k < g.nrooms; k++) {
            uint32_t sz = left < m ? left : m;
            add_room(k, at, sz + o->pubs, o->pubs);
            at += sz + o->pubs;
            left -= sz;
        }
        break;
    }
    case SC_DM:
        for (uint32_t k = 0; k < g.nrooms; k++) {
            add_room(k, 2 * k, 2, 2);
            g.conns[2 * k].peer = 2 * k + 1;
            g.conns[2 * k + 1].peer = 2 * k;
        }
        break;
    }
    uint32_t w = o->window;
    for (uint32_t i = 0; i < g.npubs; i++)
        g.pubs[i].ring = xcalloc(w, sizeof(struct slot));
}

/* Deliveries each message of this publisher should produce. Churn rooms change size all the
 * time, so there only the ack (or nothing, in raw mode) holds a window slot. */
static uint32_t expected_for(const struct pub *p)
{
    if (g.o.scen == SC_CHURN)
        return 0;
    return g.rooms[g.conns[p->conn].room].live;
}

/* ---- output ------------------------------------------------------------------------------ */

static void conn_close(struct conn *c, bool failed);

static void set_out(struct conn *c, bool on)
{
    if (c->want_out == on || c->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u),
                             .data.u64 = (uint64_t)(c - g.conns)};
    epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* Send what is queued; returns false if the connection was closed. */
static bool conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_out(c, true);
                return true;
            }
            if (errno == EINTR)
                continue;
            conn_close(c, true);
            return false;
        }
        c->out_off += (uint32_t)n;
    }
    c->out_off = c->out_len = 0;
    set_out(c, false);
    return true;
}

static void out_reserve(struct conn *c, size_t more)
{
    if (c->out_off && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + more <= c->out_cap)
        return;
    size_t cap = c->out_cap ? c->out_cap : 256;
    while (cap < c->out_len + more)
        cap *= 2;
    c->out = xrealloc(c->out, cap);
    c->out_cap = (uint32_t)cap;
}

/* Append one masked client frame (RFC 6455 5.3: every client frame is masked). */
static void put_frame(struct conn *c, unsigned opcode, const void *payload, size_t len)
{
    out_reserve(c, len + 14);
    uint8_t *h = c->out + c->out_len;
    size_t hl = 2;
    h[0] = (uint8_t)(0x80u | opcode);
    if (len < 126) {
        h[1] = (uint8_t)(0x80u | len);
    } else if (len <= 0xffff) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        hl = 10;
    }
    uint32_t key = rnd();
    uint8_t k[4];
    memcpy(k, &key, 4);
    memcpy(h + hl, k, 4);
    hl += 4;
    const uint8_t *src = payload;
    uint8_t *dst = h + hl;
    for (size_t i = 0; i < len; i++)
        dst[i] = src[i] ^ k[i & 3];
    c->out_len += (uint32_t)(hl + len);
}

static void send_text(struct conn *c, const char *s, size_t len)
{
    put_frame(c, 1, s, len);
    if (c->out_len > OUT_MAX) {
        warnx_("connection %u: %u bytes unsent, closing it", (unsigned)(c - g.conns),
               c->out_len);
        conn_close(c, true);
        return;
    }
    conn_flush(c);
}

/* ---- connections ------------------------------------------------------------------------- */

static void user_name(uint32_t idx, char *out, size_t cap)
{
    snprintf(out, cap, "%su%u", g.o.prefix, idx);
}

/* Copy src into out, replacing {user} and {room}; returns false if it did not fit. */
static bool subst(char *out, size_t cap, const char *src, const char *user, const char *room)
{
    size_t o = 0;
    while (*src) {
        const char *rep = NULL;
        size_t skip = 1;
        if (strncmp(src, "{user}", 6) == 0) {
            rep = user;
            skip = 6;
        } else if (strncmp(src, "{room}", 6) == 0) {
            rep = room;
            skip = 6;
        }
        size_t rl = rep ? strlen(rep) : 1;
        if (o + rl + 1 > cap)
            return false;
        memcpy(out + o, rep ? rep : src, rl);
        o += rl;
        src += skip;
    }
    out[o] = '\0';
    return true;
}

static void conn_start(struct conn *c, int64_t now)
{
    uint32_t idx = (uint32_t)(c - g.conns);
    const struct target *t = &g.tg[idx % g.ntargets];
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        warnx_("socket: %s", strerror(errno));
        g.conn_failed++;
        c->state = CS_DEAD;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (g.nsources > 1 && t->v4) {
        /* spread connections over 127.0.0.x so the 4-tuples never run out of ports; the
         * port is picked at connect() time thanks to IP_BIND_ADDRESS_NO_PORT */
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + idx % g.nsources);
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
            warnx_("bind 127.0.0.%u: %s", 1 + idx % g.nsources, strerror(errno));
            close(fd);
            g.conn_failed++;
            c->state = CS_DEAD;
            return;
        }
    }
    c->fd = fd;
    c->t_start = now;
    c->t_next = now + (int64_t)g.o.connect_timeout_ms * 1000000;
    c->in_len = c->in_want = 0;
    c->out_len = c->out_off = 0;
    c->want_out = true;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = idx};
    if (epoll_ctl(g.ep, EPOLL_CTL_ADD, fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    g.pending++;
    c->state = CS_CONNECTING;
    if (connect(fd, (const struct sockaddr *)&t->addr, t->addrlen) < 0 &&
        errno != EINPROGRESS) {
        if (g.conn_failed < 5)
            warnx_("connect: %s", strerror(errno));
        conn_close(c, true);
    }
}

static void send_upgrade(struct conn *c)
{
    uint32_t idx = (uint32_t)(c - g.conns);
    const struct target *t = &g.tg[idx % g.ntargets];
    char user[64], path[1400], req[2048];
    user_name(idx, user, sizeof(user));
    const char *room = c->room != NO_IDX ? g.rooms[c->room].name : "";
    /* churn joins with an explicit request (so it can pass `since`) and dm has no room */
    bool url_room = c->room != NO_IDX && g.o.scen != SC_CHURN && g.o.scen != SC_DM;
    if (!subst(path, sizeof(path), t->path, user, room))
        die("URL too long");
    if (!g.o.raw && !strstr(t->path, "{user}")) {
        size_t l = strlen(path);
        snprintf(path + l, sizeof(path) - l, "%cuser=%s%s%s", strchr(path, '?') ? '&' : '?',
                 user, url_room ? "&room=" : "", url_room ? room : "");
    }
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY "\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                     path, t->host_hdr, g.o.subprotocol ? "Sec-WebSocket-Protocol: " : "",
                     g.o.subprotocol ? g.o.subprotocol : "", g.o.subprotocol ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(req))
        die("upgrade request too long");
    out_reserve(c, (size_t)n);
    memcpy(c->out + c->out_len, req, (size_t)n);
    c->out_len += (uint32_t)n;
    c->state = CS_HANDSHAKE;
    conn_flush(c);
}

static void phase_check_ready(int64_t now);

static void became_ready(struct conn *c, int64_t now)
{
    c->state = CS_READY;
    if (g.pending)
        g.pending--;
    if (!c->ever_ready) {
        c->ever_ready = true;
        g.ready++;
    }
    g.open_now++;
    if (c->room != NO_IDX)
        g.rooms[c->room].live++;
    if (g.o.scen == SC_CHURN && !c->is_pub) {
        hist_add(&g.join, now - c->t_start);
        c->t_next = now + (g.o.hold_ms ? (int64_t)(rnd() % g.o.hold_ms) * 1000000 : 0);
    }
    phase_check_ready(now);
}

/* Tear a connection down. Churners go back to waiting for their next cycle. */
static void conn_close(struct conn *c, bool failed)
{
    if (c->fd < 0)
        return;
    epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE || c->state == CS_OPEN) {
        if (g.pending)
            g.pending--;
        if (failed)
            g.conn_failed++;
    } else if (c->state == CS_READY || c->state == CS_LEAVING || c->state == CS_CLOSING) {
        if (g.open_now)
            g.open_now--;
        if (c->room != NO_IDX && g.rooms[c->room].live)
            g.rooms[c->room].live--;
    }
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = c->in_want = 0;
    c->out_len = c->out_off = 0;
    c->want_out = false;
    int64_t now = now_mono_ns();
    if (g.o.scen == SC_CHURN && !c->is_pub && c->ever_ready && g.phase <= PH_RUN) {
        if (c->state == CS_CLOSING && !failed)
            g.cycles++;
        c->state = CS_WAIT;
        c->t_next = now + 1000000 + (int64_t)(rnd() % 10) * 1000000;
    } else {
        c->state = CS_DEAD;
    }
}

/* ---- publishing -------------------------------------------------------------------------- */

static size_t fmt_u64(char *p, uint64_t v)
{
    char t[24];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = t[n - 1 - i];
    return n;
}

/* Build the text "~L<pub>.<seq>.<ns>~xxxx" of exactly --size bytes (or the marker alone when
 * --size is smaller) into dst; returns its length. */
static size_t build_text(char *dst, uint32_t pub, uint64_t seq, int64_t t)
{
    size_t n = 0;
    dst[n++] = '~';
    dst[n++] = 'L';
    n += fmt_u64(dst + n, pub);
    dst[n++] = '.';
    n += fmt_u64(dst + n, seq);
    dst[n++] = '.';
    n += fmt_u64(dst + n, (uint64_t)t);
    dst[n++] = '~';
    while (n < g.o.size)
        dst[n++] = 'x';
    return n;
}

static void pub_send(struct pub *p, int64_t now)
{
    struct conn *c = &g.conns[p->conn];
    uint64_t seq = p->next_seq++;
    struct slot *s = &p->ring[seq % g.o.window];
    s->t_send = now;
    s->remaining = expected_for(p);
    g.expected += s->remaining;
    s->acked = g.o.raw;
    char *b = (char *)g.sbuf;
    size_t n = 0;
    if (g.o.raw) {
        n = build_text(b, (uint32_t)(p - g.pubs), seq, now);
    } else {
        if (g.o.scen == SC_DM) {
            char peer[64];
            user_name(c->peer, peer, sizeof(peer));
            n = (size_t)sprintf(b, "{\"type\":\"dm\",\"to\":\"%s\",\"text\":\"", peer);
        } else {
            n = (size_t)sprintf(b, "{\"type\":\"send\",\"room\":\"%s\",\"text\":\"",
                                g.rooms[c->room].name);
        }
        n += build_text(b + n, (uint32_t)(p - g.pubs), seq, now);
        memcpy(b + n, "\",\"ref\":", 8);
        n += 8;
        n += fmt_u64(b + n, seq);
        b[n++] = '}';
    }
    put_frame(c, 1, b, n);
    g.sent++;
    g.iv_sent++;
    if (!g.first_send)
        g.first_send = now;
}

/* Whether the slot of the oldest in-flight seq can be retired. */
static bool slot_done(struct pub *p, int64_t now)
{
    struct slot *s = &p->ring[p->base % g.o.window];
    if (s->remaining == 0 && s->acked)
        return true;
    if (now - s->t_send > (int64_t)g.o.inflight_timeout_ms * 1000000) {
        g.expired++;
        return true;
    }
    return false;
}

/* Retire finished window slots and send whatever the window and the rate allow; returns the
 * earliest time (ns) a publisher wants to be woken for, or INT64_MAX. */
static int64_t publish(int64_t now)
{
    int64_t wake = INT64_MAX;
    if (!g.npubs)
        return wake;
    bool sending = g.phase == PH_RUN;
    double per_pub = g.o.rate > 0 ? g.o.rate / (double)g.npubs : 0;
    int64_t interval = per_pub > 0 ? (int64_t)(1e9 / per_pub) : 0;
    for (uint32_t i = 0; i < g.npubs; i++) {
        struct pub *p = &g.pubs[i];
        while (p->base < p->next_seq && slot_done(p, now))
            p->base++;
        if (p->base < p->next_seq) {
            int64_t exp = p->ring[p->base % g.o.window].t_send +
                          (int64_t)g.o.inflight_timeout_ms * 1000000;
            if (exp < wake)
                wake = exp;
        }
        if (!sending)
            continue;
        struct conn *c = &g.conns[p->conn];
        if (c->state != CS_READY)
            continue;
        bool any = false;
        while (p->next_seq - p->base < g.o.window) {
            if (g.o.max_messages && g.sent >= g.o.max_messages)
                break;
            if (interval) {
                if (now < p->next_due) {
                    if (p->next_due < wake)
                        wake = p->next_due;
                    break;
                }
                if (now - p->next_due > 5000000)
                    g.behind++; /* > 5 ms late: a full window (or a starved loadgen) */
                p->next_due += interval;
                /* never try to catch up more than a second of missed sends in a burst */
                if (now - p->next_due > 1000000000)
                    p->next_due = now;
            }
            pub_send(p, now);
            any = true;
            if (c->out_len > 65536)
                break;
        }
        if (any)
            conn_flush(c);
    }
    return wake;
}

/* ---- incoming frames --------------------------------------------------------------------- */

static const uint8_t *find(const uint8_t *p, size_t n, const char *needle)
{
    return memmem(p, n, needle, strlen(needle));
}

/* Parse the decimal number at p (bounded by end); sets *ok. */
static uint64_t parse_u64(const uint8_t **pp, const uint8_t *end, bool *ok)
{
    const uint8_t *p = *pp;
    uint64_t v = 0;
    *ok = p < end && *p >= '0' && *p <= '9';
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    *pp = p;
    return v;
}

/* Number after `key` (e.g. "\"seq\":") in [p, p+n), or -1. */
static int64_t field_num(const uint8_t *p, size_t n, const char *key)
{
    const uint8_t *k = find(p, n, key);
    if (!k)
        return -1;
    const uint8_t *q = k + strlen(key);
    bool ok;
    uint64_t v = parse_u64(&q, p + n, &ok);
    return ok ? (int64_t)v : -1;
}

/* A frame carrying a marker: count it, time it and check per-publisher order. */
static void on_marker(struct conn *c, const uint8_t *p, size_t n, int64_t now)
{
    const uint8_t *m = find(p, n, "~L"), *end = p + n;
    if (!m) {
        g.other_frames++;
        return;
    }
    m += 2;
    bool ok1, ok2, ok3;
    uint64_t pub = parse_u64(&m, end, &ok1);
    m++;
    uint64_t seq = parse_u64(&m, end, &ok2);
    m++;
    uint64_t ts = parse_u64(&m, end, &ok3);
    if (!ok1 || !ok2 || !ok3 || pub >= g.npubs) {
        g.bad_frames++;
        return;
    }
    struct pub *pb = &g.pubs[pub];
    g.deliveries++;
    g.iv_deliv++;
    g.last_deliv = now;
    int64_t lat = now - (int64_t)ts;
    hist_add(&g.lat, lat);
    hist_add(&g.lat_iv, lat);
    if (c->last_seq && g.conns[pb->conn].room == c->room) {
        uint32_t *ls = &c->last_seq[pb->local];
        if (seq <= *ls)
            g.order_viol++;
        else
            *ls = (uint32_t)seq;
    }
    if (seq >= pb->base && seq < pb->next_seq) {
        struct slot *s = &pb->ring[seq % g.o.window];
        if (s->remaining)
            s->remaining--;
    } else if (g.o.scen != SC_CHURN) {
        g.late++; /* after its slot expired: counted, but too late for the window */
    }
}

static void on_ack(struct conn *c, const uint8_t *p, size_t n, bool error)
{
    int64_t ref = field_num(p, n, "\"ref\":");
    if (c->pub == NO_IDX || ref < 0) {
        if (!error)
            g.unmatched_acks++;
        return;
    }
    struct pub *pb = &g.pubs[c->pub];
    uint64_t seq = (uint64_t)ref;
    if (seq >= pb->base && seq < pb->next_seq) {
        struct slot *s = &pb->ring[seq % g.o.window];
        if (!error && !s->acked && g.phase >= PH_RUN)
            hist_add(&g.ack, now_mono_ns() - s->t_send);
        s->acked = true;
        /* an error (e.g. rate_limited) means no delivery will come: free the slot now */
        if (error) {
            pb->ring[seq % g.o.window].remaining = 0;
            g.send_errors++;
        } else {
            g.acked++;
        }
    } else if (!error) {
        g.unmatched_acks++;
    }
}

static void send_join(struct conn *c)
{
    char b[256];
    int n;
    if (c->since >= 0)
        n = snprintf(b, sizeof(b), "{\"type\":\"join\",\"room\":\"%s\",\"since\":%" PRId64 "}",
                     g.rooms[c->room].name, c->since);
    else
        n = snprintf(b, sizeof(b), "{\"type\":\"join\",\"room\":\"%s\"}",
                     g.rooms[c->room].name);
    send_text(c, b, (size_t)n);
}

/* churn: check that the history answering `since` starts right after it */
static void on_joined(struct conn *c, const uint8_t *p, size_t n)
{
    const uint8_t *h = find(p, n, "\"history\":[");
    int64_t room_seq = field_num(p, h ? (size_t)(h - p) : n, "\"seq\":");
    if (!h)
        return;
    const uint8_t *q = h, *end = p + n;
    int64_t first = -1, last = -1;
    uint64_t count = 0;
    while ((q = find(q, (size_t)(end - q), "\"seq\":")) != NULL) {
        q += 6;
        bool ok;
        uint64_t v = parse_u64(&q, end, &ok);
        if (!ok)
            continue;
        if (first < 0)
            first = (int64_t)v;
        last = (int64_t)v;
        count++;
    }
    if (c->since >= 0 && room_seq > c->since) {
        if (first != c->since + 1)
            g.join_gaps++;
        g.recovered += count;
    }
    if (last > c->since)
        c->since = last;
    if (room_seq >= 0 && count == 0 && room_seq > c->since)
        c->since = room_seq; /* nothing returned: continue from the room's latest */
}

static void on_text(struct conn *c, const uint8_t *p, size_t n, int64_t now)
{
    if (g.o.raw) {
        on_marker(c, p, n, now);
        return;
    }
    /* parley writes "type" first; look further only if some other server did not */
    const uint8_t *t = NULL;
    if (n > 9 && memcmp(p, "{\"type\":\"", 9) == 0)
        t = p + 9;
    else if ((t = find(p, n, "\"type\":\"")) != NULL)
        t += 8;
    size_t rest = t ? (size_t)(p + n - t) : 0;
    if (!t || rest < 3) {
        g.other_frames++;
        return;
    }
    switch (t[0]) {
    case 'm': /* message */
        on_marker(c, p, n, now);
        if (g.o.scen == SC_CHURN && !c->is_pub) {
            int64_t s = field_num(t, rest, "\"seq\":");
            if (s >= 0) {
                if (c->since >= 0 && s > c->since + 1)
                    g.live_gaps++;
                if (s > c->since)
                    c->since = s;
            }
        }
        return;
    case 'a': /* ack */
        on_ack(c, p, n, false);
        return;
    case 'e': /* error */
        g.errors++;
        if (rest > 20) {
            const uint8_t *k = find(t, rest, "\"code\":\"");
            if (k) {
                k += 8;
                const uint8_t *e = memchr(k, '"', (size_t)(p + n - k));
                if (e)
                    code_count(&g.err_codes, (const char *)k, (size_t)(e - k));
            }
        }
        on_ack(c, p, n, true);
        return;
    case 'w': /* welcome */
        if (c->state != CS_OPEN)
            return;
        if (g.o.scen == SC_CHURN)
            send_join(c);
        else if (c->room == NO_IDX || g.o.scen == SC_DM)
            became_ready(c, now);
        return;
    case 'j': /* joined */
        if (g.o.scen == SC_CHURN && !c->is_pub)
            on_joined(c, p, n);
        if (c->state == CS_OPEN)
            became_ready(c, now);
        return;
    case 'l': /* left */
        if (c->state == CS_LEAVING) {
            put_frame(c, 8, "\x03\xe8", 2);
            c->state = CS_CLOSING;
            c->t_next = now + 2000000000;
            conn_flush(c);
        }
        return;
    default:
        g.other_frames++;
        return;
    }
}

/* Handle one complete frame; returns false if the connection is gone. */
static bool on_frame(struct conn *c, unsigned op, uint8_t *p, size_t n, int64_t now)
{
    g.frames_in++;
    switch (op) {
    case 1:
        on_text(c, p, n, now);
        return c->fd >= 0;
    case 0:
    case 2:
        g.other_frames++;
        return true;
    case 8: {
        char code[8] = "none";
        if (n >= 2)
            snprintf(code, sizeof(code), "%u", (unsigned)(p[0] << 8 | p[1]));
        if (c->state == CS_CLOSING)
            return true; /* the reply to our close: let the server close TCP first */
        {
            g.server_closes++;
            code_count(&g.close_codes, code, strlen(code));
            if (g.server_closes <= 3)
                warnx_("server closed connection %u with code %s", (unsigned)(c - g.conns),
                       code);
        }
        conn_close(c, true);
        return false;
    }
    case 9:
        put_frame(c, 10, p, n);
        return conn_flush(c);
    default:
        return true;
    }
}

/* Handshake: wait for the full response head, check 101 and the accept value. Returns the
 * number of bytes consumed, 0 if more are needed, -1 on failure. */
static long on_handshake(struct conn *c, const uint8_t *p, size_t n, int64_t now)
{
    const uint8_t *e = find(p, n, "\r\n\r\n");
    if (!e)
        return n > HS_MAX ? -1 : 0;
    size_t hl = (size_t)(e - p) + 4;
    if (hl < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0 || !find(p, hl, WS_ACCEPT)) {
        g.hs_failed++;
        if (g.hs_failed <= 3)
            warnx_("handshake refused: %.*s", (int)strcspn((const char *)p, "\r\n"), p);
        return -1;
    }
    c->state = CS_OPEN;
    if (g.o.raw)
        became_ready(c, now);
    return (long)hl;
}

/* Parse whatever complete frames sit in buf; keep the tail in c->in. */
static void parse_input(struct conn *c, uint8_t *buf, size_t len, int64_t now)
{
    size_t pos = 0;
    if (c->state == CS_HANDSHAKE) {
        long used = on_handshake(c, buf, len, now);
        if (used < 0) {
            conn_close(c, true);
            return;
        }
        pos = (size_t)used;
        if (used == 0)
            goto keep;
    }
    c->in_want = 0;
    while (len - pos >= 2) {
        uint8_t *f = buf + pos;
        size_t avail = len - pos, hl = 2;
        uint64_t pl = f[1] & 0x7fu;
        if (pl == 126) {
            if (avail < 4)
                break;
            pl = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (pl == 127) {
            if (avail < 10)
                break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | f[2 + i];
            hl = 10;
        }
        bool masked = f[1] & 0x80u;
        if (masked)
            hl += 4;
        if (pl > MAX_FRAME) {
            g.bad_frames++;
            conn_close(c, true);
            return;
        }
        if (avail < hl + pl) {
            c->in_want = (uint32_t)(hl + pl);
            break;
        }
        uint8_t *payload = f + hl;
        if (masked) /* servers must not mask, but be lenient */
            for (uint64_t i = 0; i < pl; i++)
                payload[i] ^= f[hl - 4 + (i & 3)];
        if (!on_frame(c, f[0] & 0x0fu, payload, (size_t)pl, now))
            return;
        pos += hl + (size_t)pl;
    }
keep:
    if (c->fd < 0)
        return;
    size_t left = len - pos;
    if (left == 0) {
        c->in_len = 0;
        if (c->in_cap > 65536) {
            free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
        return;
    }
    if (c->in_cap < left || (c->in_want > c->in_cap)) {
        size_t cap = left > c->in_want ? left : c->in_want;
        if (cap < 256)
            cap = 256;
        uint8_t *nb = xmalloc(cap);
        memcpy(nb, buf + pos, left);
        free(c->in);
        c->in = nb;
        c->in_cap = (uint32_t)cap;
    } else {
        memmove(c->in, buf + pos, left);
    }
    c->in_len = (uint32_t)left;
}

static void conn_read(struct conn *c, int64_t now)
{
    uint8_t *buf;
    size_t cap, have = c->in_len;
    bool big = c->in_want > RBUF_SIZE || c->in_len > RBUF_SIZE / 2;
    if (big) {
        /* a frame larger than the shared buffer grows in its own buffer */
        size_t want = c->in_want > have + 65536 ? c->in_want : have + 65536;
        if (c->in_cap < want) {
            c->in = xrealloc(c->in, want);
            c->in_cap = (uint32_t)want;
        }
        buf = c->in;
        cap = c->in_cap;
    } else {
        buf = g.rbuf;
        cap = RBUF_SIZE;
        if (have)
            memcpy(buf, c->in, have);
    }
    ssize_t n = recv(c->fd, buf + have, cap - have, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return; /* the leftover is still in c->in */
        bool clean = n == 0 && c->state == CS_CLOSING;
        if (!clean && c->state >= CS_OPEN && c->state <= CS_LEAVING) {
            g.server_closes++;
            code_count(&g.close_codes, "eof", 3);
        }
        conn_close(c, !clean);
        return;
    }
    g.bytes_in += (uint64_t)n;
    g.t_last_rx = now;
    if (big) {
        c->in_len = 0; /* parse_input copies the tail back (memmove within c->in) */
        size_t len = have + (size_t)n;
        uint8_t *tmp = xmalloc(len);
        memcpy(tmp, buf, len);
        parse_input(c, tmp, len, now);
        free(tmp);
    } else {
        parse_input(c, buf, have + (size_t)n, now);
    }
}

static void on_event(struct conn *c, uint32_t ev, int64_t now)
{
    if (c->state == CS_CONNECTING) {
        if (ev & (EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t l = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
            if (g.conn_failed < 5)
                warnx_("connect: %s", strerror(err ? err : ECONNREFUSED));
            conn_close(c, true);
            return;
        }
        if (ev & EPOLLOUT)
            send_upgrade(c);
        return;
    }
    if ((ev & EPOLLOUT) && !conn_flush(c))
        return;
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        conn_read(c, now);
}

/* ---- timers: connection ramp, churn cycles, timeouts -------------------------------------- */

static void ramp(int64_t now)
{
    while (g.next_connect < g.nconns && g.pending < g.o.concurrency) {
        struct conn *c = &g.conns[g.next_connect++];
        conn_start(c, now);
    }
}

static void churn_rejoin(struct conn *c, int64_t now)
{
    conn_start(c, now);
}

static void timers(int64_t now)
{
    for (uint32_t i = 0; i < g.next_connect; i++) {
        struct conn *c = &g.conns[i];
        switch (c->state) {
        case CS_CONNECTING:
        case CS_HANDSHAKE:
        case CS_OPEN:
            if (now > c->t_next) {
                g.conn_timeouts++;
                conn_close(c, true);
            }
            break;
        case CS_WAIT:
            if (g.phase == PH_RUN && now >= c->t_next && g.pending < g.o.concurrency)
                churn_rejoin(c, now);
            break;
        case CS_READY:
            if (g.o.scen == SC_CHURN && !c->is_pub && g.phase == PH_RUN && now >= c->t_next) {
                if (g.o.raw) {
                    put_frame(c, 8, "\x03\xe8", 2);
                    c->state = CS_CLOSING;
                } else {
                    char b[160];
                    int n = snprintf(b, sizeof(b), "{\"type\":\"leave\",\"room\":\"%s\"}",
                                     g.rooms[c->room].name);
                    put_frame(c, 1, b, (size_t)n);
                    c->state = CS_LEAVING;
                }
                c->t_next = now + 5000000000;
                conn_flush(c);
            }
            break;
        case CS_LEAVING:
        case CS_CLOSING:
            if (now > c->t_next) {
                g.churn_timeouts++;
                conn_close(c, true);
            }
            break;
        default:
            break;
        }
    }
}

/* ---- phases and reporting ---------------------------------------------------------------- */

static void set_phase(enum phase ph, int64_t now)
{
    g.phase = ph;
    g.t_phase = now;
    if (ph == PH_RUN) {
        g.srv0 = srv_sample();
        g.self_cpu0 = self_cpu();
        g.t_run = now;
        memset(&g.lat, 0, sizeof(g.lat));
        memset(&g.ack, 0, sizeof(g.ack));
        memset(&g.lat_iv, 0, sizeof(g.lat_iv));
        g.iv_sent = g.iv_deliv = 0;
        double interval = g.o.rate > 0 ? (double)g.npubs / g.o.rate * 1e9 : 0;
        for (uint32_t i = 0; i < g.npubs; i++)
            g.pubs[i].next_due = now + (int64_t)(interval * i / (g.npubs ? g.npubs : 1));
    } else if (ph == PH_DRAIN) {
        g.t_run_end = now;
    } else if (ph == PH_DONE) {
        g.srv1 = srv_sample();
        g.self_cpu1 = self_cpu();
    }
}

static void phase_check_ready(int64_t now)
{
    if (g.phase == PH_CONNECT && g.ready + g.conn_failed >= g.nconns) {
        g.t_connect_done = now;
        set_phase(PH_SETTLE, now);
    }
}

static bool inflight(void)
{
    for (uint32_t i = 0; i < g.npubs; i++)
        if (g.pubs[i].base < g.pubs[i].next_seq)
            return true;
    return false;
}

static void advance(int64_t now)
{
    int64_t in_phase = now - g.t_phase;
    switch (g.phase) {
    case PH_CONNECT:
        phase_check_ready(now);
        if (g.phase != PH_CONNECT)
            break;
        if (in_phase > (int64_t)g.o.connect_timeout_ms * 1000000 + 1000000000 || g_sigint) {
            warnx_("only %u of %u connections ready after the connect timeout", g.ready,
                   g.nconns);
            g.t_connect_done = now;
            set_phase(PH_SETTLE, now);
        }
        break;
    case PH_SETTLE:
        /* let join/presence storms die down before measuring: quiet for 300 ms, or 10 s */
        if (g_sigint || (in_phase >= (int64_t)g.o.settle_ms * 1000000 &&
                         (now - g.t_last_rx > 300000000 || in_phase > 10000000000))) {
            if (g.o.scen == SC_IDLE)
                g.srv_idle0 = srv_sample();
            set_phase(g_sigint ? PH_DRAIN : PH_RUN, now);
        }
        break;
    case PH_RUN:
        if (g_sigint || in_phase >= (int64_t)(g.o.duration * 1e9) ||
            (g.o.max_messages && g.sent >= g.o.max_messages && !inflight()))
            set_phase(PH_DRAIN, now);
        break;
    case PH_DRAIN:
        if (!inflight() || in_phase > (int64_t)g.o.drain_ms * 1000000 || g_sigint > 1)
            set_phase(PH_DONE, now);
        break;
    case PH_DONE:
        break;
    }
}

static void tick(int64_t now)
{
    double dt = (double)(now - g.t_tick) / 1e9;
    if (dt <= 0)
        return;
    struct srv_sample s = srv_sample();
    double cpu_pct = s.ok && g.srv_iv.ok ? (s.cpu_s - g.srv_iv.cpu_s) / dt * 100 : 0;
    double tsec = (double)(now - g.t0) / 1e9;
    if (g.csv) {
        fprintf(g.csv,
                "%.3f,%s,%u,%" PRIu64 ",%.1f,%" PRIu64 ",%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%ld\n",
                tsec, phase_names[g.phase], g.open_now, g.sent, g.iv_sent / dt, g.deliveries,
                g.iv_deliv / dt, hist_q(&g.lat_iv, 0.5) / 1e3, hist_q(&g.lat_iv, 0.99) / 1e3,
                hist_q(&g.lat_iv, 0.999) / 1e3, (double)g.lat_iv.max / 1e3, cpu_pct,
                s.ok ? s.rss_kib : 0L);
        fflush(g.csv);
    }
    if (g.tty && !g.o.json) {
        fprintf(stdout, "\r\033[K%6.1fs %-7s conns %u/%u  sent %.0f/s  deliv %.0f/s  "
                        "p99 %.2f ms  srv cpu %.0f%%",
                tsec, phase_names[g.phase], g.open_now, g.nconns, g.iv_sent / dt,
                g.iv_deliv / dt, hist_q(&g.lat, 0.99) / 1e6, cpu_pct);
        fflush(stdout);
    }
    memset(&g.lat_iv, 0, sizeof(g.lat_iv));
    g.iv_sent = g.iv_deliv = 0;
    g.srv_iv = s;
    g.t_tick = now;
}

static void json_codes(const char *key, const struct codes *c)
{
    printf(",\"%s\":{", key);
    for (int i = 0; i < NCODES && c->n[i]; i++)
        printf("%s\"%s\":%" PRIu64, i ? "," : "", c->name[i], c->n[i]);
    printf("}");
}

static void report(void)
{
    const struct opts *o = &g.o;
    double run_s = (double)(g.t_run_end - g.t_run) / 1e9;
    /* throughput over the time deliveries actually happened: first send to last delivery */
    double deliv_s = g.last_deliv > g.first_send ? (double)(g.last_deliv - g.first_send) / 1e9
                                                 : run_s;
    if (deliv_s <= 0)
        deliv_s = 1e-9;
    uint64_t expected = g.expected;
    bool loss_known = o->scen != SC_CHURN;
    int64_t loss = loss_known ? (int64_t)expected - (int64_t)g.deliveries : 0;
    bool srv = g.srv0.ok && g.srv1.ok;
    double scpu = srv ? g.srv1.cpu_s - g.srv0.cpu_s : 0;
    double ucpu = srv ? g.srv1.user_s - g.srv0.user_s : 0;
    double kcpu = srv ? g.srv1.sys_s - g.srv0.sys_s : 0;
    double per_cpu = scpu > 0 ? (double)g.deliveries / scpu : 0;
    double lcpu = g.self_cpu1 - g.self_cpu0;
    double wall = (double)(now_mono_ns() - g.t_run) / 1e9;
    double lg_pct = wall > 0 ? lcpu / wall * 100 : 0;
    double rss_per = 0, anon_per = 0;
    uint32_t n_idle = g.ready;
    if (o->scen == SC_IDLE && g.srv_idle0.ok && g.srv_base.ok && n_idle) {
        rss_per = (double)(g.srv_idle0.rss_kib - g.srv_base.rss_kib) * 1024.0 / n_idle;
        anon_per = (double)(g.srv_idle0.anon_kib - g.srv_base.anon_kib) * 1024.0 / n_idle;
    }
    double p50 = hist_q(&g.lat, 0.5), p90 = hist_q(&g.lat, 0.9), p99 = hist_q(&g.lat, 0.99);
    double p999 = hist_q(&g.lat, 0.999), pmax = (double)g.lat.max;
    double connect_s = (double)(g.t_connect_done - g.t0) / 1e9;

    if (o->json) {
        printf("{\"scenario\":\"%s\",\"url\":\"%s\",\"mode\":\"%s\",\"connections\":%u,"
               "\"ready\":%u,\"failed\":%" PRIu64 ",\"connect_s\":%.3f,\"rooms\":%u,"
               "\"publishers\":%u,\"window\":%u,\"size\":%u,\"rate\":%.1f,\"run_s\":%.3f,"
               "\"sent\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"send_errors\":%" PRIu64
               ",\"deliveries\":%" PRIu64 ",\"deliveries_per_s\":%.1f,\"expected\":%" PRIu64
               ",\"loss\":%" PRId64 ",\"order_violations\":%" PRIu64 ",\"late\":%" PRIu64
               ",\"expired\":%" PRIu64 ",\"behind\":%" PRIu64 ",\"errors\":%" PRIu64
               ",\"server_closes\":%" PRIu64 ",\"latency_us\":{\"p50\":%.1f,\"p90\":%.1f,"
               "\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"n\":%" PRIu64 "}",
               scen_names[o->scen], o->url[0], o->raw ? "raw" : "parley", g.nconns, g.ready,
               g.conn_failed, connect_s, g.nrooms, g.npubs, o->window, o->size, o->rate, run_s,
               g.sent, g.acked, g.send_errors, g.deliveries, (double)g.deliveries / deliv_s,
               expected, loss, g.order_viol, g.late, g.expired, g.behind, g.errors,
               g.server_closes, p50 / 1e3, p90 / 1e3, p99 / 1e3, p999 / 1e3, pmax / 1e3,
               g.lat.n);
        printf(",\"targets\":%u", g.ntargets);
        if (g.ack.n)
            printf(",\"ack_us\":{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
                   "\"max\":%.1f,\"n\":%" PRIu64 "}",
                   hist_q(&g.ack, 0.5) / 1e3, hist_q(&g.ack, 0.9) / 1e3,
                   hist_q(&g.ack, 0.99) / 1e3, hist_q(&g.ack, 0.999) / 1e3,
                   (double)g.ack.max / 1e3, g.ack.n);
        if (srv) {
            printf(",\"server\":{\"pid\":%d,\"cpu_s\":%.3f,\"user_s\":%.3f,\"sys_s\":%.3f,"
                   "\"deliveries_per_cpu_s\":%.1f,\"rss_kib\":%ld,\"rss_per_conn_bytes\":%.1f,"
                   "\"anon_per_conn_bytes\":%.1f,\"pids\":[",
                   (int)o->pid[0], scpu, ucpu, kcpu, per_cpu, g.srv1.rss_kib, rss_per, anon_per);
            for (uint32_t i = 0; i < o->npids; i++)
                printf("%s{\"pid\":%d,\"cpu_s\":%.3f}", i ? "," : "", (int)o->pid[i],
                       g.srv1.pid_cpu_s[i] - g.srv0.pid_cpu_s[i]);
            printf("]}");
        }
        if (o->scen == SC_CHURN)
            printf(",\"churn\":{\"cycles\":%" PRIu64 ",\"cycles_per_s\":%.1f,\"join_gaps\":%"
                   PRIu64 ",\"live_gaps\":%" PRIu64 ",\"recovered\":%" PRIu64
                   ",\"timeouts\":%" PRIu64 ",\"join_us\":{\"p50\":%.1f,\"p99\":%.1f,"
                   "\"max\":%.1f}}",
                   g.cycles, run_s > 0 ? g.cycles / run_s : 0, g.join_gaps, g.live_gaps,
                   g.recovered, g.churn_timeouts, hist_q(&g.join, 0.5) / 1e3,
                   hist_q(&g.join, 0.99) / 1e3, (double)g.join.max / 1e3);
        printf(",\"frames\":{\"in\":%" PRIu64 ",\"bytes_in\":%" PRIu64 ",\"other\":%" PRIu64
               ",\"bad\":%" PRIu64 ",\"unmatched_acks\":%" PRIu64 ",\"handshake_failures\":%"
               PRIu64 "}",
               g.frames_in, g.bytes_in, g.other_frames, g.bad_frames, g.unmatched_acks,
               g.hs_failed);
        printf(",\"loadgen_cpu_pct\":%.1f", lg_pct);
        json_codes("error_codes", &g.err_codes);
        json_codes("close_codes", &g.close_codes);
        printf("}\n");
        return;
    }
    if (g.tty)
        printf("\r\033[K");
    printf("loadgen %s  %s%s  (%s)\n", scen_names[o->scen], o->url[0],
           g.ntargets > 1 ? " and more" : "", o->raw ? "raw" : "parley");
    printf("  connections  %u ready of %u (%" PRIu64 " failed, %" PRIu64 " timed out) in %.2f s,"
           " %u rooms, %u publishers\n",
           g.ready, g.nconns, g.conn_failed, g.conn_timeouts, connect_s, g.nrooms, g.npubs);
    if (o->scen != SC_IDLE) {
        printf("  sent         %" PRIu64 " in %.2f s (%.0f msg/s), %u B, window %u, rate %s",
               g.sent, run_s, run_s > 0 ? g.sent / run_s : 0, o->size, o->window,
               o->rate > 0 ? "" : "max");
        if (o->rate > 0)
            printf("%.0f/s", o->rate);
        printf("; acked %" PRIu64 ", errors %" PRIu64 "\n", g.acked, g.send_errors);
        printf("  deliveries   %" PRIu64 " (%.0f/s)", g.deliveries, g.deliveries / deliv_s);
        if (loss_known)
            printf("  expected %" PRIu64 "  loss %" PRId64 " (%.3f%%)", expected, loss,
                   expected ? 100.0 * (double)loss / (double)expected : 0);
        printf("  order violations %" PRIu64 "\n", g.order_viol);
        printf("  latency      p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms\n",
               p50 / 1e6, p90 / 1e6, p99 / 1e6, p999 / 1e6, pmax / 1e6);
        if (g.ack.n)
            printf("  acks         p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  "
                   "max %.3f ms\n",
                   hist_q(&g.ack, 0.5) / 1e6, hist_q(&g.ack, 0.9) / 1e6,
                   hist_q(&g.ack, 0.99) / 1e6, hist_q(&g.ack, 0.999) / 1e6,
                   (double)g.ack.max / 1e6);
        if (g.expired || g.late || g.behind)
            printf("  window       %" PRIu64 " expired, %" PRIu64 " late, %" PRIu64
                   " sends > 5 ms behind schedule\n", g.expired, g.late, g.behind);
    }
    if (o->scen == SC_CHURN)
        printf("  churn        %" PRIu64 " cycles (%.1f/s); join p50 %.3f ms p99 %.3f ms; "
               "%" PRIu64 " recovered by since, %" PRIu64 " join gaps, %" PRIu64
               " live gaps, %" PRIu64 " timeouts\n",
               g.cycles, run_s > 0 ? g.cycles / run_s : 0, hist_q(&g.join, 0.5) / 1e6,
               hist_q(&g.join, 0.99) / 1e6, g.recovered, g.join_gaps, g.live_gaps,
               g.churn_timeouts);
    if (srv) {
        printf("  server       pid %d%s: cpu %.3f s (user %.3f, sys %.3f)", (int)o->pid[0],
               o->npids > 1 ? " and the rest" : "", scpu, ucpu, kcpu);
        if (o->scen != SC_IDLE)
            printf(", %.0f deliveries per cpu-second", per_cpu);
        printf(", rss %.1f MiB\n", g.srv1.rss_kib / 1024.0);
        for (uint32_t i = 0; o->npids > 1 && i < o->npids; i++)
            printf("    pid %d: cpu %.3f s\n", (int)o->pid[i],
                   g.srv1.pid_cpu_s[i] - g.srv0.pid_cpu_s[i]);
        if (o->scen == SC_IDLE)
            printf("  idle memory  %.0f B rss per connection (%.0f B anonymous)\n", rss_per,
                   anon_per);
    }
    if (g.errors || g.server_closes) {
        printf("  problems     %" PRIu64 " error frames, %" PRIu64 " closed by server", g.errors,
               g.server_closes);
        for (int i = 0; i < NCODES && g.err_codes.n[i]; i++)
            printf("  %s x%" PRIu64, g.err_codes.name[i], g.err_codes.n[i]);
        for (int i = 0; i < NCODES && g.close_codes.n[i]; i++)
            printf("  close %s x%" PRIu64, g.close_codes.name[i], g.close_codes.n[i]);
        printf("\n");
    }
    printf("  frames in    %" PRIu64 " (%.1f MiB), %" PRIu64 " without a marker, %" PRIu64
           " malformed, %" PRIu64 " unmatched acks, %" PRIu64 " refused handshakes\n",
           g.frames_in, (double)g.bytes_in / 1048576.0, g.other_frames, g.bad_frames,
           g.unmatched_acks, g.hs_failed);
    printf("  loadgen      cpu %.2f s (%.0f%% of a core)%s\n", lcpu, lg_pct,
           lg_pct > 90 ? "  WARNING: the load generator may be the bottleneck" : "");
}

/* ---- options ----------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
"Usage: loadgen SCENARIO [OPTIONS]\n"
"Scenarios: fanout, rooms, churn, idle, dm (see tools/bench/README.md)\n\n"
"  --url URL              ws://HOST:PORT/PATH; {user} and {room} are substituted\n"
"                         (default ws://127.0.0.1:8080/ws); given up to 8 times\n"
"                         (a cluster's nodes), connection i uses URL i mod count\n"
"  --raw                  no parley protocol: each text frame is the message\n"
"  --subprotocol NAME     Sec-WebSocket-Protocol to ask for (e.g. lws-mirror-protocol)\n"
"  --connections N        subscribers (fanout), connections (rooms, idle, dm), churners\n"
"  --publishers P         fanout: publishers; rooms/churn: publishers per room (default 1)\n"
"  --members M            rooms/churn/idle: connections per room (idle: 0 = no room)\n"
"  --rate R               messages per second over all publishers (0 = as fast as the\n"
"                         window allows; default 0)\n"
"  --size B               message text bytes (default 100)\n"
"  --window W             most messages in flight per publisher: sent but not yet\n"
"                         delivered to every member (and acked) (default 32)\n"
"  --duration S           seconds of publishing (default 10, at most 3600)\n"
"  --max-messages N       stop after N messages in total\n"
"  --pid PID              server process: CPU seconds and RSS from /proc; up to 8\n"
"                         times (e.g. every node and Redis): the figures are summed\n"
"  --json                 print the summary as one JSON object\n"
"  --csv FILE             one row per second (throughput, latency, server CPU)\n"
"  --sources N            spread connections over 127.0.0.1..N (default: 1 per 500)\n"
"  --concurrency N        connects in progress at once (default 200)\n"
"  --hold-ms MS           churn: longest stay in the room per cycle (default 500)\n"
"  --settle-ms MS         quiet time before measuring (default 500)\n"
"  --drain-ms MS          wait for in-flight messages after the run (default 3000)\n"
"  --connect-timeout-ms MS  (default 30000)\n"
"  --inflight-timeout-ms MS  a message not fully delivered by then is given up (2000)\n"
"  --prefix STR           user and room name prefix (default lg<pid>_)\n"
"  --allow-remote         allow a non-loopback target\n"
"  --help\n");
}

static uint64_t num_opt(const char *name, const char *v, uint64_t lo, uint64_t hi)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        die("--%s must be an integer in %" PRIu64 "..%" PRIu64 ", not '%s'", name, lo, hi, v);
    return x;
}

static double dbl_opt(const char *name, const char *v, double lo, double hi)
{
    char *end;
    double x = strtod(v, &end);
    if (*end || end == v || !(x >= lo && x <= hi))
        die("--%s must be a number in %g..%g, not '%s'", name, lo, hi, v);
    return x;
}

static void parse_opts(int argc, char **argv)
{
    static char prefix[32];
    struct opts *o = &g.o;
    *o = (struct opts){.conns = 100, .pubs = 1,
                       .members = 0, .window = 32, .size = 100, .duration = 10,
                       .concurrency = 200, .settle_ms = 500, .drain_ms = 3000,
                       .connect_timeout_ms = 30000, .inflight_timeout_ms = 2000,
                       .hold_ms = 500};
    bool members_set = false;
    enum {
        O_URL = 256, O_RAW, O_SUB, O_CONNS, O_PUBS, O_MEMBERS, O_RATE, O_SIZE, O_WINDOW,
        O_DUR, O_MAXMSG, O_PID, O_JSON, O_CSV, O_SOURCES, O_CONC, O_HOLD, O_SETTLE, O_DRAIN,
        O_CTO, O_ITO, O_PREFIX, O_REMOTE, O_HELP
    };
    static const struct option lo[] = {
        {"url", required_argument, 0, O_URL},
        {"raw", no_argument, 0, O_RAW},
        {"subprotocol", required_argument, 0, O_SUB},
        {"connections", required_argument, 0, O_CONNS},
        {"publishers", required_argument, 0, O_PUBS},
        {"members", required_argument, 0, O_MEMBERS},
        {"rate", required_argument, 0, O_RATE},
        {"size", required_argument, 0, O_SIZE},
        {"window", required_argument, 0, O_WINDOW},
        {"duration", required_argument, 0, O_DUR},
        {"max-messages", required_argument, 0, O_MAXMSG},
        {"pid", required_argument, 0, O_PID},
        {"json", no_argument, 0, O_JSON},
        {"csv", required_argument, 0, O_CSV},
        {"sources", required_argument, 0, O_SOURCES},
        {"concurrency", required_argument, 0, O_CONC},
        {"hold-ms", required_argument, 0, O_HOLD},
        {"settle-ms", required_argument, 0, O_SETTLE},
        {"drain-ms", required_argument, 0, O_DRAIN},
        {"connect-timeout-ms", required_argument, 0, O_CTO},
        {"inflight-timeout-ms", required_argument, 0, O_ITO},
        {"prefix", required_argument, 0, O_PREFIX},
        {"allow-remote", no_argument, 0, O_REMOTE},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case O_URL:
            if (o->nurls == MAX_TARGETS)
                die("--url at most %d times", MAX_TARGETS);
            o->url[o->nurls++] = optarg;
            break;
        case O_RAW: o->raw = true; break;
        case O_SUB: o->subprotocol = optarg; break;
        case O_CONNS: o->conns = (uint32_t)num_opt("connections", optarg, 1, MAX_CONNS); break;
        case O_PUBS: o->pubs = (uint32_t)num_opt("publishers", optarg, 0, 100000); break;
        case O_MEMBERS:
            o->members = (uint32_t)num_opt("members", optarg, 0, MAX_CONNS);
            members_set = true;
            break;
        case O_RATE: o->rate = dbl_opt("rate", optarg, 0, 1e8); break;
        case O_SIZE: o->size = (uint32_t)num_opt("size", optarg, 1, MAX_SIZE); break;
        case O_WINDOW: o->window = (uint32_t)num_opt("window", optarg, 1, MAX_WINDOW); break;
        case O_DUR: o->duration = dbl_opt("duration", optarg, 0, MAX_DURATION_S); break;
        case O_MAXMSG: o->max_messages = num_opt("max-messages", optarg, 1, UINT64_MAX); break;
        case O_PID:
            if (o->npids == MAX_PIDS)
                die("--pid at most %d times", MAX_PIDS);
            o->pid[o->npids++] = (pid_t)num_opt("pid", optarg, 1, INT_MAX);
            break;
        case O_JSON: o->json = true; break;
        case O_CSV: o->csv = optarg; break;
        case O_SOURCES: o->sources = (uint32_t)num_opt("sources", optarg, 1, 254); break;
        case O_CONC: o->concurrency = (uint32_t)num_opt("concurrency", optarg, 1, 100000); break;
        case O_HOLD: o->hold_ms = (uint32_t)num_opt("hold-ms", optarg, 0, 600000); break;
        case O_SETTLE: o->settle_ms = (uint32_t)num_opt("settle-ms", optarg, 0, 600000); break;
        case O_DRAIN: o->drain_ms = (uint32_t)num_opt("drain-ms", optarg, 0, 600000); break;
        case O_CTO:
            o->connect_timeout_ms = (uint32_t)num_opt("connect-timeout-ms", optarg, 100, 600000);
            break;
        case O_ITO:
            o->inflight_timeout_ms =
                (uint32_t)num_opt("inflight-timeout-ms", optarg, 1, 600000);
            break;
        case O_PREFIX: o->prefix = optarg; break;
        case O_REMOTE: o->allow_remote = true; break;
        case O_HELP:
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        exit(2);
    }
    const char *s = argv[optind];
    bool found = false;
    for (size_t i = 0; i < ARRAY_LEN(scen_names); i++)
        if (strcmp(s, scen_names[i]) == 0) {
            o->scen = (enum scen)i;
            found = true;
        }
    if (!found)
        die("unknown scenario '%s' (fanout, rooms, churn, idle, dm)", s);
    if (!o->nurls)
        o->url[o->nurls++] = "ws://127.0.0.1:8080/ws";
    if (!members_set)
        o->members = o->scen == SC_ROOMS ? 5 : o->scen == SC_CHURN ? 10 : 0;
    if (o->scen == SC_DM)
        o->pubs = 2;
    if (o->scen == SC_IDLE)
        o->pubs = 0;
    if (o->scen == SC_FANOUT && o->pubs == 0)
        die("fanout needs at least one publisher");
    if (!o->prefix) {
        snprintf(prefix, sizeof(prefix), "lg%u_", (unsigned)getpid() % 100000u);
        o->prefix = prefix;
    }
    if (strlen(o->prefix) > 16)
        die("--prefix is at most 16 characters");
    for (const char *p = o->prefix; *p; p++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-", *p))
            die("--prefix may only hold A-Z a-z 0-9 _ . -");
}

static void raise_nofile(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t want = (rlim_t)need + 64;
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max < want) {
        /* root (CAP_SYS_RESOURCE) may raise the hard limit too, up to fs.nr_open */
        struct rlimit up = {want, want};
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            return;
        want = rl.rlim_max;
    }
    rl.rlim_cur = want;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (want < (rlim_t)need + 16)
        warnx_("open-file limit %lu is below the %u connections asked for",
               (unsigned long)want, need);
}

static void on_sigint(int sig)
{
    (void)sig;
    if (++g_sigint > 2)
        _exit(130);
}

int main(int argc, char **argv)
{
    parse_opts(argc, argv);
    g.tty = isatty(STDOUT_FILENO);
    g.ntargets = g.o.nurls;
    for (uint32_t i = 0; i < g.ntargets; i++)
        parse_url(&g.tg[i], g.o.url[i]);
    build_population();
    raise_nofile(g.nconns);
    /* servers cap connections per address (parley: --max-connections-per-ip) and each
     * address has ~28k ephemeral ports, so by default use one 127.0.0.x per 500 */
    g.nsources = g.o.sources ? g.o.sources : g.nconns / 500 + 1;
    if (g.nsources > 254)
        g.nsources = 254;
    bool all_v4 = true, all_lo = true;
    for (uint32_t i = 0; i < g.ntargets; i++) {
        all_v4 = all_v4 && g.tg[i].v4;
        all_lo = all_lo && is_loopback(&g.tg[i].addr);
    }
    if (!g.o.sources && !all_lo)
        g.nsources = 1;
    if (g.nsources > 1 && !all_v4) {
        warnx_("--sources needs an IPv4 target; using one source");
        g.nsources = 1;
    }
    g.rng = (uint32_t)now_mono_ns() | 1u;
    g.rbuf = xmalloc(RBUF_SIZE);
    g.sbuf_cap = g.o.size + 512;
    g.sbuf = xmalloc(g.sbuf_cap);
    if (g.o.csv) {
        g.csv = fopen(g.o.csv, "w");
        if (!g.csv)
            die("cannot open '%s': %s", g.o.csv, strerror(errno));
        fprintf(g.csv, "t_s,phase,connections,sent,sent_per_s,deliveries,deliveries_per_s,"
                       "p50_us,p99_us,p999_us,max_us,server_cpu_pct,server_rss_kib\n");
    }
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (g.ep < 0)
        die("epoll_create1: %s", strerror(errno));
    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int64_t now = now_mono_ns();
    g.t0 = g.t_phase = g.t_tick = g.t_last_rx = now;
    g.srv_base = srv_sample(); /* idle: the baseline before any connection */
    g.srv_iv = g.srv_base;
    /* the hard stop: whatever state the run is in, it ends by then */
    g.t_deadline = now + (int64_t)(g.o.connect_timeout_ms + 12000 + g.o.drain_ms) * 1000000 +
                   (int64_t)(g.o.duration * 1e9) + 10000000000;
    struct epoll_event evs[1024];
    int64_t last_timers = 0;
    if (g.nconns == 0)
        set_phase(PH_SETTLE, now);
    while (g.phase != PH_DONE) {
        now = now_mono_ns();
        if (g.phase == PH_CONNECT)
            ramp(now);
        int64_t wake = publish(now);
        int64_t next_tick = g.t_tick + 1000000000;
        if (wake > next_tick)
            wake = next_tick;
        int timeout = wake <= now ? 0 : (int)((wake - now + 999999) / 1000000);
        if (timeout > 50)
            timeout = 50;
        int n = epoll_wait(g.ep, evs, (int)ARRAY_LEN(evs), timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        now = now_mono_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = &g.conns[evs[i].data.u64];
            if (c->fd >= 0)
                on_event(c, evs[i].events, now);
        }
        if (now - last_timers > 5000000) {
            timers(now);
            last_timers = now;
        }
        if (now >= next_tick)
            tick(now);
        advance(now);
        if (now > g.t_deadline) {
            warnx_("hard deadline reached, stopping");
            set_phase(PH_DRAIN, now);
            set_phase(PH_DONE, now);
        }
    }
    if (g.phase == PH_DONE && !g.t_run_end)
        g.t_run_end = now_mono_ns();
    if (!g.t_run)
        g.t_run = g.t_run_end;
    report();
    if (g.csv)
        fclose(g.csv);
    for (uint32_t i = 0; i < g.nconns; i++) {
        if (g.conns[i].fd >= 0)
            close(g.conns[i].fd);
        free(g.conns[i].in);
        free(g.conns[i].out);
        free(g.conns[i].last_seq);
    }
    for (uint32_t i = 0; i < g.npubs; i++)
        free(g.pubs[i].ring);
    free(g.conns);
    free(g.rooms);
    free(g.pubs);
    free(g.rbuf);
    free(g.sbuf);
    close(g.ep);
    return g.ready == 0 && g.nconns ? 1 : 0;
}
