/*
 * loop — see loop.h. Owns one lws_context and the thread that services it.
 * The pending list is the only state other threads touch, under l->lock.
 */
#include "loop.h"

#include <libwebsockets.h>
#include <ev.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "tls.h"
#include "server.h"
#include "util.h"

#define SCRATCH_CAP (64 * 1024)
/* Extra reads per service pass for connections that just received: bounds
 * how long one busy sender can hold the loop (32 x rx_buffer_size). */
#define READ_MORE_ROUNDS 32

_Static_assert(MSG_PRE == LWS_PRE, "msg headroom must match LWS_PRE");

/* The loop this thread runs, NULL on other threads: thread-local, so a
 * schedule from the loop's own thread can skip the wake pipe without any
 * shared state to race on. */
static _Thread_local struct loop *tl_loop;

struct job {
    void (*fn)(void *arg);
    void *arg;
    struct job *next;
};

struct loop {
    struct server *srv;
    const struct loop_ops *ops;  /* the I/O side above: kick, idle check, protocols */
    int index;
    struct lws_context *ctx;
    pthread_t thread;
    bool started;
    bool started_once;           /* the thread owns (and destroys) ctx */

    pthread_mutex_t lock;
    struct conn *pending;        /* {lock} singly linked via pending_next */
    struct conn **pending_tail;  /* {lock} */
    bool stop_requested;         /* {lock} */
    bool alive;                  /* {lock} ctx may be woken; false once destroy begins */
    bool awake;                  /* {lock} between passes, before the last look at the
                                  * lists: work handed over now needs no wake-up */
    int *handoff;                /* {lock} accepted sockets to adopt */
    size_t nhandoff, handoff_cap; /* {lock} */
    _Atomic int nconn;           /* live connections, for least-loaded dispatch */
    struct job *jobs, **jobs_tail; /* {lock} posted work, FIFO */

    /* ---- loop thread only ---- */
    struct conn *clients;        /* live connections, for the shutdown drain */
    bool draining;
    int64_t drain_deadline_ms;
    lws_sorted_usec_list_t drain_sul;
    struct ev_loop *ev;          /* the libev loop lws runs on; NULL: lws's poll() */
    lws_retry_bo_t no_validity;  /* all zero: lws's own idle pings are off */
    lws_sorted_usec_list_t idle_sul; /* once a second: ping or close quiet clients */
    uint32_t tick;               /* seconds since start, advanced by idle_sul */
    int64_t flush_ns;            /* --flush-interval-us */
    int64_t last_flush_ns;       /* when pending clients were last kicked */
    bool flush_armed;            /* flush_sul is scheduled */
    bool kick_wanted;            /* pending clients await a flush; kick_sul armed */
    lws_sorted_usec_list_t flush_sul;
    lws_sorted_usec_list_t kick_sul;
    struct conn **hot, **hot_next; /* received in this pass: read again (each holds
                                    * a reference on its client) */
    size_t nhot, hot_cap;
    struct conn **taken;         /* loop thread: what loop_flush took from pending */
    size_t taken_cap;
    void *ssl_ctx;               /* server SSL_CTX, NULL without TLS */
    unsigned char scratch[LWS_PRE + SCRATCH_CAP];
};


static void loop_flush(struct loop *l);
static void loop_want_flush(struct loop *l);
static void loop_adopt_handoffs(struct loop *l);
static void loop_run_jobs(struct loop *l);
static size_t loop_take_pending(struct loop *l);

struct loop *loop_new(struct server *srv, int index, const struct loop_ops *ops, char *err,
                      size_t errsz)
{
    const struct config *cfg = srv->cfg;
    struct lws_context_creation_info info;
    struct loop *l = xcalloc(1, sizeof(*l));

    l->srv = srv;
    l->ops = ops;
    l->index = index;
    pthread_mutex_init(&l->lock, NULL);
    l->pending_tail = &l->pending;
    l->jobs_tail = &l->jobs;
    l->flush_ns = cfg->flush_interval_us * 1000;

    memset(&info, 0, sizeof(info));
    /* loop 0 listens and dispatches; the others only adopt sockets */
    info.port = index == 0 ? cfg->listen_port : CONTEXT_PORT_NO_LISTEN_SERVER;
    info.iface = index == 0 ? cfg->listen_host : NULL;
    info.protocols = ops->protocols();
    info.vhost_name = "parley";
    info.user = l;
    info.count_threads = 1;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_SKIP_PROTOCOL_INIT;
    if (!strchr(cfg->listen_host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    /* slowloris: a request (or upgrade) must complete within this */
    info.timeout_secs = (unsigned)cfg->handshake_timeout;
    info.timeout_secs_ah_idle = (unsigned)cfg->handshake_timeout;
    info.max_http_header_data = 4096;
    /* lws would keep a "validity" timer per connection in one sorted list
     * and re-insert it on every frame received, walking the list each time
     * (O(connections) per frame and per accept). The loop pings idle
     * connections itself, from one timer (idle_timer). */
    info.retry_and_idle_policy = &l->no_validity;
    if (cfg->tls_cert) {
        /* https:// and wss:// on the same listener; every loop's vhost gets
         * the certificate because adopted sockets do their handshake there */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->tls_cert;
        info.ssl_private_key_filepath = cfg->tls_key;
        info.ssl_cipher_list = tls_cipher_list;
    }
    info.pt_serv_buf_size = 16 * 1024;

    /* lws's own loop polls every descriptor on every pass: O(connections)
     * per wake-up. On libev's epoll backend (lws's evlib plugin) a pass
     * costs what is ready. */
    void *foreign[1] = {NULL};
    if (cfg->event_loop == CFG_EVENT_LOOP_EPOLL) {
        l->ev = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
        if (l->ev) {
            foreign[0] = l->ev;
            info.options |= LWS_SERVER_OPTION_LIBEV;
            info.foreign_loops = foreign;
        }
    }
    l->ctx = lws_create_context(&info);
    if (!l->ctx && l->ev) {
        if (index == 0)
            log_warn("loop", "libwebsockets cannot use libev (is the Debian package "
                             "libwebsockets-evlib-ev installed?): using poll()");
        ev_loop_destroy(l->ev);
        l->ev = NULL;
        info.options &= ~(uint64_t)LWS_SERVER_OPTION_LIBEV;
        info.foreign_loops = NULL;
        l->ctx = lws_create_context(&info);
    }
    if (!l->ctx) {
        snprintf(err, errsz, "cannot listen on %s:%d (in use, or bad address)", cfg->listen_host,
                 cfg->listen_port);
        pthread_mutex_destroy(&l->lock);
        free(l);
        return NULL;
    }
    return l;
}

static void drain_timer(lws_sorted_usec_list_t *sul)
{
    (void)sul; /* waking the loop is all it takes: run() checks the deadline */
}

static void begin_drain(struct loop *l)
{
    l->draining = true;
    l->drain_deadline_ms = now_mono_ms() + (int64_t)(l->srv->cfg->drain_timeout * 1000);
    for (struct conn *k = l->clients; k; k = k->loop_next)
        client_kill(k->c, 1001, "server shutting down");
    lws_sul_schedule(l->ctx, 0, &l->drain_sul, drain_timer,
                     (lws_usec_t)(l->srv->cfg->drain_timeout * LWS_US_PER_SEC));
}

/* {l->lock} held. Wake the loop for work just handed over, unless it is
 * awake and will see the work before it polls again (take_handed_over).
 * lws_cancel_service only writes a byte to the loop's wake pipe; it is
 * under the lock so the context cannot be destroyed in between. */
static void wake_locked(struct loop *l)
{
    if (l->alive && !l->awake)
        lws_cancel_service(l->ctx);
}

static void drop_hot(struct loop *l)
{
    for (size_t i = 0; i < l->nhot; i++) {
        struct client *c = l->hot[i]->c;
        l->hot[i]->rx_hot = false;
        client_unref(&c);
    }
    l->nhot = 0;
}

void loop_note_rx(struct loop *l, struct conn *k)
{
    if (k->rx_hot)
        return;
    if (l->nhot == l->hot_cap) {
        l->hot_cap = l->hot_cap ? 2 * l->hot_cap : 64;
        l->hot = xrealloc(l->hot, l->hot_cap * sizeof(*l->hot));
        l->hot_next = xrealloc(l->hot_next, l->hot_cap * sizeof(*l->hot_next));
    }
    k->rx_hot = true;
    client_ref(k->c);
    l->hot[l->nhot++] = k;
}

/* lws reads at most rx_buffer_size bytes per connection per poll round, so a
 * sender with a burst waiting would cost one poll() over every descriptor
 * per 128 bytes, and each read's messages would go out in their own write.
 * Instead, a connection that received gets serviced again right away (as an
 * external poll loop would after POLLIN) until a read brings nothing: the
 * burst is taken in at once and its messages share the subscribers' next
 * write. A read that finds the socket empty costs one recv(). */
static void read_more(struct loop *l)
{
    for (int round = 0; round < READ_MORE_ROUNDS && l->nhot; round++) {
        struct conn **cur = l->hot;
        size_t n = l->nhot;
        l->hot = l->hot_next;
        l->hot_next = cur;
        l->nhot = 0;
        for (size_t i = 0; i < n; i++) {
            struct conn *k = cur[i];
            struct client *c = k->c;
            k->rx_hot = false;
            struct lws *wsi = k->wsi;
            if (wsi && !c->discard) {
                struct lws_pollfd pfd = {.fd = lws_get_socket_fd(wsi), .events = POLLIN,
                                         .revents = POLLIN};
                if (pfd.fd >= 0)
                    lws_service_fd(l->ctx, &pfd);
            }
            client_unref(&c);
        }
    }
    drop_hot(l); /* still busy after the last round: the next poll sees it */
}

void loop_rx_flow(struct loop *l, struct conn *k, bool on)
{
    struct lws *wsi = k->wsi;
    if (!wsi)
        return;
    /* inside a callback lws applies this when the callback returns, and
     * keeps the unparsed rest of what it read for later */
    lws_rx_flow_control(wsi, on ? 1 : 0);
    if (on && !k->c->discard) {
        /* what lws kept is in its own buffer, not the socket: no poll would
         * report it, so service the connection now, as read_more does */
        struct lws_pollfd pfd = {.fd = lws_get_socket_fd(wsi), .events = POLLIN,
                                 .revents = POLLIN};
        if (pfd.fd >= 0)
            lws_service_fd(l->ctx, &pfd);
    }
}

/* The last look at what other threads handed over before lws may sleep in
 * poll: whatever arrives after this wakes the loop through the pipe, what
 * arrived before (typically storage acks and pushes from other loops while
 * this one was writing) is taken here without a wake-up and the extra pass
 * over every descriptor that would follow it. */
static void take_handed_over(struct loop *l)
{
    pthread_mutex_lock(&l->lock);
    bool handoffs = l->nhandoff > 0, jobs = l->jobs != NULL, pending = l->pending != NULL;
    l->awake = false;
    pthread_mutex_unlock(&l->lock);
    if (handoffs)
        loop_adopt_handoffs(l);
    if (jobs)
        loop_run_jobs(l);
    if (pending)
        loop_want_flush(l);
}

/* Once a second, every client of the loop: ping it after --ping-interval
 * without a frame from it, hang up after twice that (ops->idle_check; it
 * never unlinks a connection). One walk over the loop's list is a few microseconds
 * per thousand clients. */
static void idle_timer(lws_sorted_usec_list_t *sul)
{
    struct loop *l = lws_container_of(sul, struct loop, idle_sul);
    uint32_t ping_s = (uint32_t)l->srv->cfg->ping_interval;

    l->tick++;
    for (struct conn *k = l->clients; k; k = k->loop_next)
        l->ops->idle_check(k, l->tick, ping_s);
    lws_sul_schedule(l->ctx, 0, &l->idle_sul, idle_timer, LWS_US_PER_SEC);
}

uint32_t loop_tick(struct loop *l)
{
    return l->tick;
}

static void *run(void *arg)
{
    struct loop *l = arg;

    tl_loop = l;
    lws_sul_schedule(l->ctx, 0, &l->idle_sul, idle_timer, LWS_US_PER_SEC);
    for (;;) {
        if (l->ev)
            ev_run(l->ev, EVRUN_ONCE); /* lws's watchers: one round of callbacks */
        else if (lws_service(l->ctx, 0) < 0)
            break;
        pthread_mutex_lock(&l->lock);
        l->awake = true;
        bool stop = l->stop_requested;
        pthread_mutex_unlock(&l->lock);
        read_more(l);
        if (stop && !l->draining)
            begin_drain(l);
        take_handed_over(l);
        /* writes happen here, between service calls, never inside another
         * connection's callback */
        if (l->kick_wanted)
            loop_flush(l);
        if (l->draining && (!l->clients || now_mono_ms() >= l->drain_deadline_ms))
            break;
    }
    if (l->clients)
        log_warn("loop", "loop %d: drain timeout, dropping remaining connections", l->index);
    lws_sul_cancel(&l->drain_sul);
    lws_sul_cancel(&l->flush_sul);
    lws_sul_cancel(&l->kick_sul);
    lws_sul_cancel(&l->idle_sul);
    drop_hot(l);
    /* Nobody may wake a context that is being destroyed. */
    pthread_mutex_lock(&l->lock);
    l->alive = false;
    pthread_mutex_unlock(&l->lock);
    /* pushes made while connections close go to the pending list, which
     * nobody drains any more, instead of poking wsis being destroyed */
    tl_loop = NULL;
    /* nothing can be posted any more: run what was, so every job's owner
     * gets its callback exactly once */
    loop_run_jobs(l);
    /* Destroy here, on the thread that serviced it: closes what is left and
     * runs every close callback on the owning thread. */
    lws_context_destroy(l->ctx);
    return NULL;
}

int loop_start(struct loop *l)
{
    l->alive = true;
    if (pthread_create(&l->thread, NULL, run, l) != 0) {
        l->alive = false;
        return -1;
    }
    l->started = true;
    l->started_once = true;
    return 0;
}

void loop_join(struct loop *l)
{
    if (l && l->started) {
        pthread_join(l->thread, NULL);
        l->started = false;
    }
}

void loop_free(struct loop *l)
{
    if (!l)
        return;
    if (!l->started_once)
        lws_context_destroy(l->ctx); /* never ran: destroy it here */
    if (l->ev)
        ev_loop_destroy(l->ev); /* after the context: lws's watchers are stopped */
    for (size_t i = 0; i < l->nhandoff; i++)
        close(l->handoff[i]);
    /* a loop that never started can still hold posted jobs: run them */
    loop_run_jobs(l);
    free(l->handoff);
    /* clients still pending hold a reference taken in loop_schedule */
    for (struct conn *k = l->pending, *n; k; k = n) {
        n = k->pending_next;
        struct client *c = k->c;
        client_unref(&c);
    }
    free(l->hot);
    free(l->hot_next);
    free(l->taken);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

void loop_schedule(struct loop *l, struct conn *k)
{
    bool wake = false;
    pthread_mutex_lock(&l->lock);
    if (!k->scheduled) {
        k->scheduled = true;
        k->pending_next = NULL;
        client_ref(k->c);
        *l->pending_tail = k;
        l->pending_tail = &k->pending_next;
        wake = l->pending == k; /* list was empty: one wake per batch */
    }
    if (wake && tl_loop == l) {
        /* the loop's own thread needs no wake-up through the pipe */
        loop_want_flush(l);
        wake = false;
    }
    if (wake)
        wake_locked(l);
    pthread_mutex_unlock(&l->lock);
}

static void flush_timer(lws_sorted_usec_list_t *sul)
{
    struct loop *l = lws_container_of(sul, struct loop, flush_sul);
    l->flush_armed = false;
    /* timers run before lws polls, outside any connection's callback */
    loop_flush(l);
}

static void kick_timer(lws_sorted_usec_list_t *sul)
{
    /* Due at once: armed from lws's timer phase, it keeps lws from sleeping
     * in the poll that follows; armed between passes, it fires first thing
     * in the next one. */
    struct loop *l = lws_container_of(sul, struct loop, kick_sul);
    loop_flush(l);
}

static void loop_flush(struct loop *l)
{
    /* Kick pending clients at most once per flush interval: while traffic
     * is dense, the frames that arrive meanwhile join the same write (one
     * syscall for many frames); sparse traffic goes out at once. */
    int64_t now = now_mono_ns();
    if (l->kick_wanted) {
        l->kick_wanted = false;
        lws_sul_cancel(&l->kick_sul);
    }
    int64_t wait_us = l->flush_ns ? (l->last_flush_ns + l->flush_ns - now) / 1000 : 0;
    /* lws's poll() loop sleeps for whole milliseconds, rounded down, and
     * spins with zero-timeout polls over every descriptor for whatever is
     * left until a timer is due; there the wait is rounded down to a whole
     * millisecond too (under one millisecond: no wait). libev has no such
     * spin. */
    if (!l->ev)
        wait_us -= wait_us % 1000;
    if (wait_us > 0) {
        if (!l->flush_armed) {
            l->flush_armed = true;
            lws_sul_schedule(l->ctx, 0, &l->flush_sul, flush_timer, (lws_usec_t)wait_us);
        }
        return;
    }
    l->last_flush_ns = now;
    size_t n = loop_take_pending(l);
    for (size_t i = 0; i < n; i++) {
        struct conn *k = l->taken[i];
        struct client *c = k->c;
        l->ops->kick(k);
        client_unref(&c); /* may free k */
    }
}

static void loop_want_flush(struct loop *l)
{
    /* run() flushes after the service pass. The pass may be in lws's timer
     * phase, just before it sleeps in poll(): a timer due now makes that
     * poll return at once (kick_timer). */
    if (!l->kick_wanted) {
        l->kick_wanted = true;
        lws_sul_schedule(l->ctx, 0, &l->kick_sul, kick_timer, 0);
    }
}

/* Take the pending list into l->taken (each entry keeps the reference
 * loop_schedule took). The links are read under the lock: once `scheduled`
 * is clear another thread may schedule the conn again, and that rewrites
 * its pending_next, so walking the list after unlocking would lose the rest
 * of it (and leak their references). */
static size_t loop_take_pending(struct loop *l)
{
    size_t n = 0;
    pthread_mutex_lock(&l->lock);
    for (struct conn *k = l->pending; k; k = k->pending_next) {
        if (n == l->taken_cap) {
            /* memory only, and rare: the array keeps its largest size */
            l->taken_cap = l->taken_cap ? l->taken_cap * 2 : 64;
            l->taken = xrealloc(l->taken, l->taken_cap * sizeof(*l->taken));
        }
        l->taken[n++] = k;
        k->scheduled = false;
    }
    l->pending = NULL;
    l->pending_tail = &l->pending;
    pthread_mutex_unlock(&l->lock);
    return n;
}

void loop_set_ssl_ctx(struct loop *l, void *ssl_ctx)
{
    l->ssl_ctx = ssl_ctx;
}

struct reload_job {
    struct loop *l;
    struct tls_creds *c;
};

static void apply_reload(void *arg)
{
    struct reload_job *j = arg;
    if (j->l->ssl_ctx && tls_apply(j->l->ssl_ctx, j->c) != 0)
        log_error("loop", "loop %d: cannot use the new certificate", j->l->index);
    tls_creds_unref(&j->c);
    free(j);
}

void loop_reload_tls(struct loop *l, struct tls_creds *c)
{
    struct reload_job *j = xmalloc(sizeof(*j));
    j->l = l;
    j->c = tls_creds_ref(c);
    if (loop_post(l, apply_reload, j) != 0) {
        tls_creds_unref(&j->c);
        free(j);
    }
}

int loop_post(struct loop *l, void (*fn)(void *arg), void *arg)
{
    struct job *j = xmalloc(sizeof(*j));
    j->fn = fn;
    j->arg = arg;
    j->next = NULL;
    pthread_mutex_lock(&l->lock);
    if (!l->alive) {
        pthread_mutex_unlock(&l->lock);
        free(j);
        return -1;
    }
    *l->jobs_tail = j;
    l->jobs_tail = &j->next;
    wake_locked(l);
    pthread_mutex_unlock(&l->lock);
    return 0;
}

static void loop_run_jobs(struct loop *l)
{
    pthread_mutex_lock(&l->lock);
    struct job *j = l->jobs;
    l->jobs = NULL;
    l->jobs_tail = &l->jobs;
    pthread_mutex_unlock(&l->lock);
    while (j) {
        struct job *n = j->next;
        j->fn(j->arg);
        free(j);
        j = n;
    }
}

bool loop_dispatch_fd(struct loop *l0, int fd)
{
    struct server *srv = l0->srv;
    struct loop *best = l0;
    int best_n = atomic_load_explicit(&l0->nconn, memory_order_relaxed);

    for (int i = 1; i < srv->nloops; i++) {
        int n = atomic_load_explicit(&srv->loops[i]->nconn, memory_order_relaxed);
        if (n < best_n) {
            best = srv->loops[i];
            best_n = n;
        }
    }
    if (best == l0)
        return false;
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
        return false; /* out of descriptors: serve it here */
    /* count it now so a burst of accepts spreads out before adoption */
    atomic_fetch_add_explicit(&best->nconn, 1, memory_order_relaxed);
    pthread_mutex_lock(&best->lock);
    if (!best->alive) {
        pthread_mutex_unlock(&best->lock);
        close(dup_fd);
        atomic_fetch_sub_explicit(&best->nconn, 1, memory_order_relaxed);
        return false;
    }
    if (best->nhandoff == best->handoff_cap) {
        best->handoff_cap = best->handoff_cap ? best->handoff_cap * 2 : 16;
        best->handoff = xrealloc(best->handoff, best->handoff_cap * sizeof(int));
    }
    best->handoff[best->nhandoff++] = dup_fd;
    wake_locked(best);
    pthread_mutex_unlock(&best->lock);
    return true;
}

static void loop_adopt_handoffs(struct loop *l)
{
    int fds[64];
    size_t n;

    do {
        pthread_mutex_lock(&l->lock);
        n = l->nhandoff < 64 ? l->nhandoff : 64;
        if (n)
            memcpy(fds, l->handoff + (l->nhandoff - n), n * sizeof(int));
        l->nhandoff -= n;
        pthread_mutex_unlock(&l->lock);
        for (size_t i = 0; i < n; i++) {
            /* the adoption's own count comes with loop_attach */
            atomic_fetch_sub_explicit(&l->nconn, 1, memory_order_relaxed);
            if (l->draining)
                close(fds[i]);
            else if (!lws_adopt_socket_vhost(lws_get_vhost_by_name(l->ctx, "parley"), fds[i]))
                log_warn("loop", "loop %d: cannot adopt a connection", l->index);
            /* (a failed adoption has already closed the socket) */
        }
    } while (n);
}

void loop_stop(struct loop *l)
{
    pthread_mutex_lock(&l->lock);
    l->stop_requested = true;
    if (l->alive)
        lws_cancel_service(l->ctx);
    pthread_mutex_unlock(&l->lock);
}

bool loop_stopping(struct loop *l)
{
    return l->draining;
}

struct server *loop_server(struct loop *l)
{
    return l->srv;
}

unsigned char *loop_scratch(struct loop *l, size_t *cap)
{
    *cap = SCRATCH_CAP;
    return l->scratch + LWS_PRE;
}

void loop_attach(struct loop *l, struct conn *k)
{
    atomic_fetch_add_explicit(&l->nconn, 1, memory_order_relaxed);
    k->loop_prev = NULL;
    k->loop_next = l->clients;
    if (l->clients)
        l->clients->loop_prev = k;
    l->clients = k;
}

void loop_detach(struct loop *l, struct conn *k)
{
    atomic_fetch_sub_explicit(&l->nconn, 1, memory_order_relaxed);
    if (k->loop_prev)
        k->loop_prev->loop_next = k->loop_next;
    else
        l->clients = k->loop_next;
    if (k->loop_next)
        k->loop_next->loop_prev = k->loop_prev;
    k->loop_prev = k->loop_next = NULL;
}
