/*
 * rds — see rds.h for the contract and why one thread of its own. This
 * file owns that thread (a private libev loop), the hiredis async contexts
 * (two per shard: commands, pub/sub), the submit queue, the hash ring, the
 * per-shard channel tables and the reconnect state machine. It is the only
 * file that includes hiredis.
 *
 * Threads: the submitters (any thread) only take `lock`, append to the
 * queue and ev_async_send; everything else — hiredis, libev watchers, the
 * channel tables, the in-flight lists — is touched by the rds thread alone
 * (and by rds_open/rds_close before it starts and after it is joined).
 *
 * Shard states, on the rds thread:
 *   UP           both connections usable (or, right after rds_open, still
 *                connecting: the synchronous check has just passed, so
 *                commands are written into hiredis's buffer at once and
 *                follow AUTH/SELECT on the wire);
 *   DOWN         no connections; commands fail at once; a backoff timer
 *                runs towards the next attempt;
 *   RECONNECTING new connections are handshaking (AUTH, SELECT, PING on
 *                both, then SUBSCRIBE of every remembered channel); commands
 *                still fail at once, so nobody reads a shard whose
 *                subscriptions are not all back. UP when the last
 *                confirmation arrives, and only then on_state(true).
 * HOST is resolved by hiredis (getaddrinfo) on the rds thread at every
 * connect, which blocks that thread only: give an address, or a name the
 * local resolver answers at once (/etc/hosts), as for any database.
 *
 * Any fault on either connection — an error, a lost connection, a
 * handshake or reply deadline — drops both: a shard is one server, and a
 * pub/sub connection that outlives its command connection would only hide
 * a gap that the engine must fill after on_state(true) anyway.
 *
 * Pub/sub, and what hiredis 0.14 needs of it:
 *   - a reply is matched to a regular command's callback before any
 *     pub/sub routing, so once subscribed a PING there would be handed
 *     the next message: the pub/sub connection carries nothing but
 *     AUTH/SELECT/PING before its first SUBSCRIBE;
 *   - at most one SUBSCRIBE or UNSUBSCRIBE of a channel is in flight: a
 *     subscribe that arrives while an unsubscribe is in flight is sent when
 *     that one is confirmed. Otherwise the "subscribe" reply of an older
 *     SUBSCRIBE could pass for the confirmation of the new one while the
 *     UNSUBSCRIBE in between still removes it, and messages published
 *     after the callback said "confirmed" would be lost.
 */
#include <errno.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backoff.h"
#include "hash.h"
#include "htable.h"
#include "log.h"
#include "rds.h"
#include "util.h"

#define MOD "rds"
#define RING_VNODES 160   /* points per shard: ~±10% load spread at 160 */
#define SCRIPTS_MAX 32    /* the engine registers a handful */
#define TICK_S 0.1        /* deadline checks */
#define HEARTBEAT_MS 1000 /* PING an idle command connection this often */
#define URL_MAX 256

enum kind { K_CMD, K_EVAL, K_SUB, K_UNSUB, K_PING };

/* One queued command (or subscription change). Allocated in one block with
 * its argv copy; owned by the queue, then the shard's in-flight list, then
 * freed in item_done. */
struct item {
    struct item *next, *prev; /* submit queue (next), then in-flight list */
    rds_t *r;
    size_t shard;
    enum kind kind;
    bool linked;  /* in the shard's in-flight list */
    bool retried; /* K_EVAL: EVAL after NOSCRIPT already sent */
    int argc;     /* argv[0..argc) sent; for K_SUB/K_UNSUB argv[0] is the channel */
    const char **argv;
    size_t *lens;
    const char *source; /* K_EVAL: the script, for NOSCRIPT (lives in r->scripts) */
    size_t source_len;
    rds_cb *cb;
    void *arg;
    int64_t t0_ns;   /* submitted */
    int64_t sent_ms; /* written to the connection, for the reply deadline */
    char nkeys[16];  /* K_EVAL: numkeys as text */
};

enum chst { CH_IDLE, CH_SUBSCRIBING, CH_SUBSCRIBED, CH_UNSUBSCRIBING };

/* A channel as the rds thread sees it (per shard). */
struct chan {
    struct hnode node;
    enum chst st;
    bool want;  /* the caller wants it (false while only an unsubscribe is in flight) */
    rds_cb *cb; /* waiting for the confirmation, or NULL */
    void *arg;
    size_t len;
    char name[];
};

/* A channel as the submitters see it (rds_subscribe's duplicate check). */
struct wanted {
    struct hnode node;
    char name[];
};

enum sstate { S_UP, S_DOWN, S_RECONNECTING };

struct shard {
    rds_t *r;
    size_t idx;
    char url[URL_MAX];
    char host[URL_MAX];
    int port, db;

    /* rds thread only */
    redisAsyncContext *cmd, *sub;
    enum sstate st;
    bool reported_up;       /* on_state's view: true until on_state(false) */
    bool hs_cmd, hs_sub;    /* PING answered on each connection */
    int64_t hs_deadline_ms; /* the handshake must be done by then */
    int attempt;            /* reconnect attempts since the last up */
    ev_timer retry;
    struct item *fl_head, *fl_tail; /* in flight on cmd, oldest first */
    int64_t last_sent_ms;
    struct htable chans; /* struct chan */
    size_t nsubscribing;

    /* any thread */
    atomic_bool up;
    atomic_size_t pending; /* K_CMD/K_EVAL submitted and not done */
    struct htable wanted;  /* {r->lock} struct wanted */
};

struct script {
    char sha[41];
    char *src;
    size_t len;
};

struct ring_point {
    uint64_t point;
    uint32_t shard;
};

struct rds {
    struct rds_opts o;
    char *password; /* o.password points here; NULL: none */
    size_t n;
    struct shard *shards;
    struct ring_point *ring;
    size_t nring;
    struct hash_key ring_key;

    struct ev_loop *loop;
    ev_async wake;
    ev_timer tick;
    pthread_t thread;
    struct backoff bo;
    uint64_t rng; /* rds thread: jitter */

    pthread_mutex_t lock;
    struct item *q_head, *q_tail;       /* {lock} */
    bool closing;                       /* {lock} */
    struct script scripts[SCRIPTS_MAX]; /* {lock} while registering; immutable after */
    int nscripts;                       /* {lock} */
    size_t subscriptions;               /* {lock} */

    atomic_uint_fast64_t commands, failures, reconnects, messages, rtt_ns, rtt_count, timeouts,
        script_loads;
};

static void shard_drop(struct shard *s, redisAsyncContext *gone, const char *why);
static void check_up(struct shard *s);
static int parse_urls(rds_t *r, const char *urls, char *err, size_t errsz);

/* ---- the hash ring ---- */

/* The ring's SipHash key is a constant, unlike every table's (hash.h): all
 * nodes must place a room on the same shard, so the key cannot be drawn per
 * process, and nothing here is a table whose chains a chosen name could
 * lengthen — a crafted name only picks which Redis holds its room, which
 * the name's owner could load anyway. Changing it moves every room. */
static const unsigned char ring_key_bytes[16] = "parley-ring-v1\0";

static int ring_cmp(const void *a, const void *b)
{
    const struct ring_point *x = a, *y = b;
    if (x->point != y->point)
        return x->point < y->point ? -1 : 1;
    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

/* Points are keyed by each shard's URL (not its position), so a list in
 * another order gives the same placement, and adding a shard moves only
 * the names whose nearest point is now one of its points (~1/N). */
static void ring_build(rds_t *r)
{
    hash_key_from_bytes(&r->ring_key, ring_key_bytes);
    r->nring = r->n * RING_VNODES;
    r->ring = xcalloc(r->nring, sizeof(*r->ring));
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        for (int v = 0; v < RING_VNODES; v++) {
            char buf[URL_MAX + 16];
            int len = snprintf(buf, sizeof(buf), "%s#%d", r->shards[i].url, v);
            r->ring[k].point = hash_bytes(&r->ring_key, buf, (size_t)len);
            r->ring[k].shard = (uint32_t)i;
            k++;
        }
    }
    qsort(r->ring, r->nring, sizeof(*r->ring), ring_cmp);
}

size_t rds_shard(const rds_t *r, const char *name, size_t len)
{
    if (r->n == 1)
        return 0;
    uint64_t h = hash_bytes(&r->ring_key, name, len);
    size_t lo = 0, hi = r->nring; /* first point >= h */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->ring[mid].point < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return r->ring[lo == r->nring ? 0 : lo].shard;
}

int rds_ring_lookup(const char *urls, const char *name, size_t len)
{
    rds_t r = {0};
    char err[256];
    int rc = parse_urls(&r, urls, err, sizeof(err));
    if (rc == 0) {
        ring_build(&r);
        rc = (int)rds_shard(&r, name, len);
    }
    free(r.ring);
    free(r.shards);
    return rc;
}

size_t rds_nshards(const rds_t *r)
{
    return r->n;
}

const char *rds_shard_url(const rds_t *r, size_t shard)
{
    return shard < r->n ? r->shards[shard].url : "?";
}

bool rds_up(rds_t *r, size_t shard)
{
    return shard < r->n && atomic_load_explicit(&r->shards[shard].up, memory_order_relaxed);
}

/* ---- parsing ---- */

static bool all_digits(const char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return false;
    return true;
}

/* "redis://HOST:PORT[/DB]", strictly: a HOST of letters, digits, '.', '-'
 * and '_' (or an IPv6 address in brackets), a PORT of 1..65535, a DB of
 * 0..65535; nothing else (no user, no query, no spaces). */
static int parse_url(const char *u, size_t len, struct shard *s)
{
    static const char pfx[] = "redis://";
    if (len >= URL_MAX || len < sizeof(pfx) || memcmp(u, pfx, sizeof(pfx) - 1) != 0)
        return -EINVAL;
    memcpy(s->url, u, len);
    s->url[len] = '\0';
    const char *p = u + sizeof(pfx) - 1, *end = u + len;
    const char *h0, *h1;
    if (*p == '[') {
        h0 = ++p;
        while (p < end && (strchr("0123456789abcdefABCDEF:.", *p) != NULL))
            p++;
        if (p == end || *p != ']')
            return -EINVAL;
        h1 = p++;
    } else {
        h0 = p;
        while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                           (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_'))
            p++;
        h1 = p;
    }
    if (h1 == h0 || p == end || *p != ':')
        return -EINVAL;
    memcpy(s->host, h0, (size_t)(h1 - h0));
    s->host[h1 - h0] = '\0';
    const char *q = ++p;
    while (p < end && *p != '/')
        p++;
    if ((size_t)(p - q) > 5 || !all_digits(q, (size_t)(p - q)))
        return -EINVAL;
    s->port = atoi(q); /* digits only, at most 5 */
    if (s->port < 1 || s->port > 65535)
        return -EINVAL;
    s->db = 0;
    if (p < end) {
        q = ++p;
        if ((size_t)(end - q) > 5 || !all_digits(q, (size_t)(end - q)))
            return -EINVAL;
        s->db = atoi(q);
        if (s->db > 65535)
            return -EINVAL;
    }
    return 0;
}

static int parse_urls(rds_t *r, const char *urls, char *err, size_t errsz)
{
    if (!urls || !*urls) {
        snprintf(err, errsz, "no Redis URL given (expected redis://HOST:PORT[/DB])");
        return -EINVAL;
    }
    size_t n = 1;
    for (const char *c = urls; *c; c++)
        n += *c == ',';
    if (n > RDS_SHARDS_MAX) {
        snprintf(err, errsz, "too many Redis URLs: %zu (at most %d)", n, RDS_SHARDS_MAX);
        return -EINVAL;
    }
    r->shards = xcalloc(n, sizeof(*r->shards));
    const char *p = urls;
    for (size_t i = 0; i < n; i++) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        struct shard *s = &r->shards[i];
        s->r = r;
        s->idx = i;
        if (parse_url(p, len, s) < 0) {
            snprintf(err, errsz, "bad Redis URL '%.*s' (expected redis://HOST:PORT[/DB])",
                     (int)(len > 200 ? 200 : len), p);
            return -EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(r->shards[j].url, s->url) == 0) {
                snprintf(err, errsz, "Redis URL '%s' given twice", s->url);
                return -EINVAL;
            }
        }
        r->n = i + 1;
        p = c ? c + 1 : p + len;
    }
    return 0;
}

/* ---- the synchronous check in rds_open ---- */

static redisReply *probe_cmd(redisContext *c, int argc, const char **argv)
{
    return redisCommandArgv(c, argc, argv, NULL);
}

/* Connect, AUTH, SELECT, PING, each bounded by timeout_ms (connect, then
 * every read), so a node refuses to start on an unreachable, stopped or
 * misconfigured Redis with a message naming it. */
static int probe(const struct shard *s, const char *pw, int timeout_ms, char *err, size_t errsz)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int rc = -EIO;
    redisReply *rep = NULL;
    redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
    if (!c || c->err) {
        snprintf(err, errsz, "cannot connect to Redis '%s': %s", s->url,
                 c ? c->errstr : "out of memory");
        goto out;
    }
    redisSetTimeout(c, tv);
    if (pw) {
        const char *argv[] = {"AUTH", pw};
        rep = probe_cmd(c, 2, argv);
        if (!rep) {
            snprintf(err, errsz, "Redis '%s' did not answer AUTH: %s", s->url, c->errstr);
            goto out;
        }
        if (rep->type == REDIS_REPLY_ERROR) {
            snprintf(err, errsz, "Redis '%s' refused the password: %s", s->url, rep->str);
            goto out;
        }
        freeReplyObject(rep);
        rep = NULL;
    }
    if (s->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", s->db);
        const char *argv[] = {"SELECT", db};
        rep = probe_cmd(c, 2, argv);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            snprintf(err, errsz, "Redis '%s' refused SELECT %d: %s", s->url, s->db,
                     rep ? rep->str : c->errstr);
            goto out;
        }
        freeReplyObject(rep);
        rep = NULL;
    }
    const char *ping[] = {"PING"};
    rep = probe_cmd(c, 1, ping);
    if (!rep || rep->type != REDIS_REPLY_STATUS || strcmp(rep->str, "PONG") != 0) {
        snprintf(err, errsz, "Redis '%s' did not answer PING: %s", s->url,
                 !rep       ? c->errstr
                 : rep->str ? rep->str
                            : "unexpected reply");
        goto out;
    }
    rc = 0;
out:
    if (rep)
        freeReplyObject(rep);
    if (c)
        redisFree(c);
    return rc;
}

/* ---- items ---- */

static struct item *item_new(rds_t *r, size_t shard, enum kind kind, int argc,
                             const char *const *argv, const size_t *lens, int extra)
{
    size_t data = 0;
#define ARGLEN(i) (lens ? lens[i] : strlen(argv[i]))
    for (int i = 0; i < argc; i++)
        data += ARGLEN(i) + 1;
    int slots = argc + extra;
    size_t sz = sizeof(struct item) + (size_t)slots * (sizeof(char *) + sizeof(size_t)) + data;
    struct item *it = xcalloc(1, sz);
    it->r = r;
    it->shard = shard;
    it->kind = kind;
    it->argc = slots;
    it->argv = (const char **)(it + 1);
    it->lens = (size_t *)(it->argv + slots);
    char *d = (char *)(it->lens + slots);
    for (int i = 0; i < argc; i++) {
        size_t n = ARGLEN(i);
        memcpy(d, argv[i], n);
        d[n] = '\0';
        it->argv[extra + i] = d;
        it->lens[extra + i] = n;
        d += n + 1;
    }
#undef ARGLEN
    it->t0_ns = now_mono_ns();
    return it;
}

static void fl_unlink(struct shard *s, struct item *it)
{
    if (!it->linked)
        return;
    if (it->prev)
        it->prev->next = it->next;
    else
        s->fl_head = it->next;
    if (it->next)
        it->next->prev = it->prev;
    else
        s->fl_tail = it->prev;
    it->next = it->prev = NULL;
    it->linked = false;
}

/* Complete an item: its callback, the counters, free. Thread: rds. */
static void item_done(struct item *it, const redisReply *reply)
{
    rds_t *r = it->r;
    struct shard *s = &r->shards[it->shard];
    fl_unlink(s, it);
    if (it->kind == K_CMD || it->kind == K_EVAL) {
        atomic_fetch_sub_explicit(&s->pending, 1, memory_order_relaxed);
        if (reply) {
            atomic_fetch_add_explicit(&r->commands, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&r->rtt_ns, (uint64_t)(now_mono_ns() - it->t0_ns),
                                      memory_order_relaxed);
            atomic_fetch_add_explicit(&r->rtt_count, 1, memory_order_relaxed);
        } else {
            atomic_fetch_add_explicit(&r->failures, 1, memory_order_relaxed);
        }
    }
    if (it->cb)
        it->cb(it->arg, reply);
    free(it);
}

static void item_send(struct shard *s, struct item *it);

static void cmd_reply(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct item *it = priv;
    redisReply *reply = reply_;
    struct shard *s = &it->r->shards[it->shard];
    /* A restarted (or flushed) Redis lost its script cache: load the
     * script by running it once with EVAL, after which EVALSHA works. */
    if (it->kind == K_EVAL && reply && reply->type == REDIS_REPLY_ERROR && !it->retried &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0 && s->cmd == ac && ac->data) {
        fl_unlink(s, it);
        it->retried = true;
        it->argv[0] = "EVAL";
        it->lens[0] = 4;
        it->argv[1] = it->source;
        it->lens[1] = it->source_len;
        atomic_fetch_add_explicit(&it->r->script_loads, 1, memory_order_relaxed);
        item_send(s, it);
        return;
    }
    item_done(it, reply);
}

static void item_send(struct shard *s, struct item *it)
{
    if (s->st != S_UP || !s->cmd ||
        redisAsyncCommandArgv(s->cmd, cmd_reply, it, it->argc, it->argv, it->lens) != REDIS_OK) {
        item_done(it, NULL);
        return;
    }
    it->sent_ms = s->last_sent_ms = now_mono_ms();
    it->prev = s->fl_tail;
    it->next = NULL;
    if (s->fl_tail)
        s->fl_tail->next = it;
    else
        s->fl_head = it;
    s->fl_tail = it;
    it->linked = true;
}

/* ---- channels (rds thread) ---- */

static struct chan *chan_find(struct shard *s, const char *name)
{
    struct hnode *n = htable_find(&s->chans, name);
    return n ? htable_entry(n, struct chan, node) : NULL;
}

static void chan_free(struct shard *s, struct chan *ch)
{
    htable_remove(&s->chans, &ch->node);
    free(ch);
}

static void sub_reply(redisAsyncContext *ac, void *reply, void *priv);

static void chan_send(struct shard *s, struct chan *ch, const char *verb)
{
    const char *argv[] = {verb, ch->name};
    size_t lens[] = {strlen(verb), ch->len};
    bool subscribe = verb[0] == 'S';
    if (!s->sub || redisAsyncCommandArgv(s->sub, sub_reply, s, 2, argv, lens) != REDIS_OK) {
        ch->st = CH_IDLE; /* the connection is going; the reconnect sends it */
        return;
    }
    ch->st = subscribe ? CH_SUBSCRIBING : CH_UNSUBSCRIBING;
    if (subscribe)
        s->nsubscribing++;
}

/* Leave CH_SUBSCRIBING: hand the waiting callback its outcome. */
static void chan_settle(struct shard *s, struct chan *ch, enum chst st, const redisReply *reply)
{
    if (ch->st == CH_SUBSCRIBING)
        s->nsubscribing--;
    ch->st = st;
    rds_cb *cb = ch->cb;
    ch->cb = NULL;
    if (cb)
        cb(ch->arg, reply);
}

static void chan_subscribe(struct shard *s, struct item *it)
{
    struct chan *ch = chan_find(s, it->argv[0]);
    if (!ch) {
        ch = xcalloc(1, sizeof(*ch) + it->lens[0] + 1);
        memcpy(ch->name, it->argv[0], it->lens[0] + 1);
        ch->len = it->lens[0];
        ch->st = CH_IDLE;
        htable_insert(&s->chans, &ch->node, ch->name);
    }
    if (ch->cb) { /* not reached: the wanted set refuses a second subscribe */
        rds_cb *old = ch->cb;
        ch->cb = NULL;
        old(ch->arg, NULL);
    }
    ch->want = true;
    ch->cb = it->cb;
    ch->arg = it->arg;
    if (ch->st == CH_UNSUBSCRIBING)
        return; /* sent when the unsubscribe is confirmed (see the top) */
    if (s->st == S_DOWN) {
        chan_settle(s, ch, CH_IDLE, NULL); /* remembered; subscribed on reconnect */
        return;
    }
    chan_send(s, ch, "SUBSCRIBE");
}

static void chan_unsubscribe(struct shard *s, const char *name)
{
    struct chan *ch = chan_find(s, name);
    if (!ch)
        return;
    ch->want = false;
    switch (ch->st) {
    case CH_IDLE:
        chan_settle(s, ch, CH_IDLE, NULL);
        chan_free(s, ch);
        break;
    case CH_SUBSCRIBING:
    case CH_SUBSCRIBED:
        chan_settle(s, ch, ch->st, NULL);
        chan_send(s, ch, "UNSUBSCRIBE");
        if (ch->st == CH_IDLE)
            chan_free(s, ch);
        check_up(s); /* a resubscription the shard waited for is no more */
        break;
    case CH_UNSUBSCRIBING:
        chan_settle(s, ch, CH_UNSUBSCRIBING, NULL);
        break;
    }
}

static bool sweep_chan_drop(struct hnode *n, void *arg)
{
    struct shard *s = arg;
    struct chan *ch = htable_entry(n, struct chan, node);
    chan_settle(s, ch, CH_IDLE, NULL);
    if (ch->want)
        return false;
    free(ch);
    return true;
}

static bool sweep_chan_free(struct hnode *n, void *arg)
{
    struct shard *s = arg;
    struct chan *ch = htable_entry(n, struct chan, node);
    chan_settle(s, ch, CH_IDLE, NULL);
    free(ch);
    return true;
}

static void sub_reply(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct shard *s = priv;
    redisReply *reply = reply_;
    rds_t *r = s->r;
    /* NULL: the context is being freed (shard_drop deals with the state);
     * data NULL: a context already detached from the shard */
    if (!reply || !ac->data || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3)
        return;
    const redisReply *k = reply->element[0], *c = reply->element[1], *p = reply->element[2];
    if (k->type != REDIS_REPLY_STRING || c->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(k->str, "message") == 0) {
        if (p->type != REDIS_REPLY_STRING)
            return;
        atomic_fetch_add_explicit(&r->messages, 1, memory_order_relaxed);
        if (r->o.on_message)
            r->o.on_message(r->o.arg, s->idx, c->str, c->len, p->str, p->len);
        return;
    }
    struct chan *ch = chan_find(s, c->str);
    if (!ch)
        return;
    if (strcmp(k->str, "subscribe") == 0 && ch->st == CH_SUBSCRIBING) {
        chan_settle(s, ch, CH_SUBSCRIBED, reply);
        check_up(s);
    } else if (strcmp(k->str, "unsubscribe") == 0 && ch->st == CH_UNSUBSCRIBING) {
        if (ch->want)
            chan_send(s, ch, "SUBSCRIBE");
        else
            chan_free(s, ch);
    }
}

/* ---- connections (rds thread) ---- */

static void hs_reply(redisAsyncContext *ac, void *reply_, void *priv)
{
    redisReply *reply = reply_;
    struct shard *s = ac->data;
    (void)priv;
    if (!reply || !s)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[256];
        snprintf(why, sizeof(why), "handshake refused: %s", reply->str);
        shard_drop(s, NULL, why);
        return;
    }
    if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0) {
        if (ac == s->cmd)
            s->hs_cmd = true;
        else
            s->hs_sub = true;
        check_up(s);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct shard *s = ac->data;
    if (s && status != REDIS_OK)
        shard_drop(s, (redisAsyncContext *)ac, ac->errstr);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct shard *s = ac->data;
    (void)status;
    if (s)
        shard_drop(s, (redisAsyncContext *)ac, ac->err ? ac->errstr : "connection closed");
}

static redisAsyncContext *conn_new(struct shard *s, bool cmd)
{
    rds_t *r = s->r;
    redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
    if (!ac)
        return NULL;
    if (ac->err) {
        log_warn(MOD, "cannot connect to Redis '%s': %s", s->url, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = s;
    redisLibevAttach(r->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* written now, sent once connected, answered before anything else */
    if (r->password) {
        const char *argv[] = {"AUTH", r->password};
        redisAsyncCommandArgv(ac, hs_reply, NULL, 2, argv, NULL);
    }
    if (s->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", s->db);
        const char *argv[] = {"SELECT", db};
        redisAsyncCommandArgv(ac, hs_reply, NULL, 2, argv, NULL);
    }
    if (cmd) {
        /* a restarted Redis has no scripts: load them before any EVALSHA
         * (see rds_script) */
        pthread_mutex_lock(&r->lock);
        for (int i = 0; i < r->nscripts; i++) {
            const char *argv[] = {"SCRIPT", "LOAD", r->scripts[i].src};
            const size_t lens[] = {6, 4, r->scripts[i].len};
            redisAsyncCommandArgv(ac, hs_reply, NULL, 3, argv, lens);
        }
        pthread_mutex_unlock(&r->lock);
    }
    const char *ping[] = {"PING"};
    redisAsyncCommandArgv(ac, hs_reply, NULL, 1, ping, NULL);
    return ac;
}

/* Open both connections and subscribe every remembered channel. */
static void shard_connect(struct shard *s)
{
    s->hs_cmd = s->hs_sub = false;
    s->hs_deadline_ms = now_mono_ms() + s->r->o.connect_timeout_ms;
    s->last_sent_ms = now_mono_ms();
    s->cmd = conn_new(s, true);
    s->sub = s->cmd ? conn_new(s, false) : NULL;
    if (!s->cmd || !s->sub) {
        shard_drop(s, NULL, "cannot create a connection");
        return;
    }
    struct htable_iter it;
    for (struct hnode *n = htable_first(&s->chans, &it); n; n = htable_next(&it)) {
        struct chan *ch = htable_entry(n, struct chan, node);
        if (ch->want && ch->st == CH_IDLE)
            chan_send(s, ch, "SUBSCRIBE");
    }
}

static void check_up(struct shard *s)
{
    if (s->st != S_RECONNECTING || !s->hs_cmd || !s->hs_sub || s->nsubscribing > 0)
        return;
    rds_t *r = s->r;
    s->st = S_UP;
    s->attempt = 0;
    atomic_store(&s->up, true);
    atomic_fetch_add_explicit(&r->reconnects, 1, memory_order_relaxed);
    log_info(MOD, "Redis '%s' is back (%zu channels subscribed again)", s->url,
             htable_count(&s->chans));
    s->reported_up = true;
    if (r->o.on_state)
        r->o.on_state(r->o.arg, s->idx, true);
}

/* Detach a context from the shard and free it: hiredis completes its
 * pending callbacks with NULL (at once, or when the callback that is
 * running returns). `gone` is one that hiredis is freeing itself. */
static void conn_release(redisAsyncContext **slot, redisAsyncContext *gone)
{
    redisAsyncContext *ac = *slot;
    *slot = NULL;
    if (!ac)
        return;
    ac->data = NULL;
    if (ac != gone)
        redisAsyncFree(ac);
}

static void shard_drop(struct shard *s, redisAsyncContext *gone, const char *why)
{
    if (s->st == S_DOWN)
        return;
    rds_t *r = s->r;
    s->st = S_DOWN;
    atomic_store(&s->up, false);
    log_warn(MOD, "Redis '%s' lost: %s", s->url, why && *why ? why : "error");
    s->hs_cmd = s->hs_sub = false;
    conn_release(&s->cmd, gone);
    conn_release(&s->sub, gone);
    htable_sweep(&s->chans, sweep_chan_drop, s);
    s->nsubscribing = 0;
    if (s->reported_up) {
        s->reported_up = false;
        if (r->o.on_state)
            r->o.on_state(r->o.arg, s->idx, false);
    }
    s->attempt++;
    int64_t ms = backoff_delay_ms(&r->bo, s->attempt, backoff_rand(&r->rng));
    ev_timer_set(&s->retry, (double)ms / 1000.0, 0.0);
    ev_timer_start(r->loop, &s->retry);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct shard *s = w->data;
    (void)loop;
    (void)revents;
    s->st = S_RECONNECTING;
    shard_connect(s);
}

/* Deadlines and the idle heartbeat, every TICK_S. */
static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    rds_t *r = w->data;
    (void)loop;
    (void)revents;
    int64_t now = now_mono_ms();
    for (size_t i = 0; i < r->n; i++) {
        struct shard *s = &r->shards[i];
        if (s->st == S_DOWN)
            continue;
        bool hs_open = s->st == S_RECONNECTING || !s->hs_cmd || !s->hs_sub;
        if (hs_open && now > s->hs_deadline_ms) {
            shard_drop(s, NULL, "no answer within the connect timeout");
            continue;
        }
        if (s->fl_head && now - s->fl_head->sent_ms > r->o.reply_timeout_ms) {
            atomic_fetch_add_explicit(&r->timeouts, 1, memory_order_relaxed);
            shard_drop(s, NULL, "no reply within the reply timeout");
            continue;
        }
        if (s->st == S_UP && !s->fl_head && now - s->last_sent_ms >= HEARTBEAT_MS) {
            static const size_t len = 4;
            const char *ping = "PING";
            struct item *it = item_new(r, i, K_PING, 1, &ping, &len, 0);
            item_send(s, it);
        }
    }
}

/* ---- the queue ---- */

static void item_run(rds_t *r, struct item *it)
{
    struct shard *s = &r->shards[it->shard];
    switch (it->kind) {
    case K_CMD:
    case K_EVAL:
    case K_PING:
        item_send(s, it); /* fails at once unless UP */
        return;
    case K_SUB:
        chan_subscribe(s, it);
        break;
    case K_UNSUB:
        chan_unsubscribe(s, it->argv[0]);
        break;
    }
    free(it);
}

static void shutdown_all(rds_t *r, struct item *q)
{
    for (size_t i = 0; i < r->n; i++) {
        struct shard *s = &r->shards[i];
        ev_timer_stop(r->loop, &s->retry);
        s->st = S_DOWN; /* item_send fails from here on */
        atomic_store(&s->up, false);
        conn_release(&s->cmd, NULL);
        conn_release(&s->sub, NULL);
        htable_sweep(&s->chans, sweep_chan_free, s);
        s->nsubscribing = 0;
    }
    while (q) {
        struct item *next = q->next;
        q->next = NULL;
        if (q->kind == K_SUB) {
            if (q->cb)
                q->cb(q->arg, NULL);
            free(q);
        } else if (q->kind == K_UNSUB) {
            free(q);
        } else {
            item_done(q, NULL);
        }
        q = next;
    }
    ev_timer_stop(r->loop, &r->tick);
    ev_async_stop(r->loop, &r->wake);
    ev_break(r->loop, EVBREAK_ALL);
}

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    rds_t *r = w->data;
    (void)loop;
    (void)revents;
    pthread_mutex_lock(&r->lock);
    struct item *q = r->q_head;
    r->q_head = r->q_tail = NULL;
    bool closing = r->closing;
    pthread_mutex_unlock(&r->lock);
    if (closing) {
        shutdown_all(r, q);
        return;
    }
    while (q) {
        struct item *next = q->next;
        q->next = NULL;
        item_run(r, q);
        q = next;
    }
}

static void *rds_main(void *arg)
{
    rds_t *r = arg;
    for (size_t i = 0; i < r->n; i++)
        shard_connect(&r->shards[i]);
    ev_run(r->loop, 0);
    return NULL;
}

/* Append to the queue and wake the thread; -ESHUTDOWN once closing. */
/* {r->lock}, not closing: append it to the submit queue and wake the rds
 * thread. The wakeup is sent under the lock, so rds_close (which sets
 * closing under it) cannot destroy the loop between the append and this
 * wakeup; it is one non-blocking write. */
static void queue_locked(rds_t *r, struct item *it)
{
    if (r->q_tail)
        r->q_tail->next = it;
    else
        r->q_head = it;
    r->q_tail = it;
    ev_async_send(r->loop, &r->wake);
}

static int enqueue(rds_t *r, struct item *it)
{
    pthread_mutex_lock(&r->lock);
    if (r->closing) {
        pthread_mutex_unlock(&r->lock);
        return -ESHUTDOWN;
    }
    queue_locked(r, it);
    pthread_mutex_unlock(&r->lock);
    return 0;
}

/* ---- the API ---- */

rds_t *rds_open(const struct rds_opts *o, char *err, size_t errsz)
{
    rds_t *r = xcalloc(1, sizeof(*r));
    r->o = *o;
    if (r->o.connect_timeout_ms <= 0)
        r->o.connect_timeout_ms = 2000;
    if (r->o.reconnect_base_ms <= 0)
        r->o.reconnect_base_ms = 100;
    if (r->o.reconnect_max_ms <= 0)
        r->o.reconnect_max_ms = 5000;
    if (r->o.reply_timeout_ms <= 0)
        r->o.reply_timeout_ms = 3000;
    if (r->o.max_pending == 0)
        r->o.max_pending = 65536;
    r->password = o->password && *o->password ? xstrdup(o->password) : NULL;
    r->o.password = r->password;
    r->o.urls = NULL; /* the caller's string; the shards keep their URLs */
    r->bo = (struct backoff){r->o.reconnect_base_ms, r->o.reconnect_max_ms, BACKOFF_JITTER_EQUAL};
    util_random_bytes(&r->rng, sizeof(r->rng));
    pthread_mutex_init(&r->lock, NULL);
    if (parse_urls(r, o->urls, err, errsz) < 0)
        goto fail;
    for (size_t i = 0; i < r->n; i++) {
        if (probe(&r->shards[i], r->password, r->o.connect_timeout_ms, err, errsz) < 0)
            goto fail;
    }
    ring_build(r);
    r->loop = ev_loop_new(EVFLAG_AUTO);
    if (!r->loop) {
        snprintf(err, errsz, "cannot create the Redis event loop");
        goto fail;
    }
    ev_async_init(&r->wake, wake_cb);
    r->wake.data = r;
    ev_async_start(r->loop, &r->wake);
    ev_timer_init(&r->tick, tick_cb, TICK_S, TICK_S);
    r->tick.data = r;
    ev_timer_start(r->loop, &r->tick);
    for (size_t i = 0; i < r->n; i++) {
        struct shard *s = &r->shards[i];
        s->st = S_UP;
        s->reported_up = true;
        atomic_store(&s->up, true);
        htable_init(&s->chans, 8);
        htable_init(&s->wanted, 8);
        ev_timer_init(&s->retry, retry_cb, 0.0, 0.0);
        s->retry.data = s;
    }
    int rc = pthread_create(&r->thread, NULL, rds_main, r);
    if (rc != 0) {
        snprintf(err, errsz, "cannot start the Redis thread: %s", strerror(rc));
        goto fail;
    }
    log_info(MOD, "connected to %zu Redis shard%s", r->n, r->n == 1 ? "" : "s");
    return r;
fail:
    if (r->loop) {
        for (size_t i = 0; i < r->n; i++) {
            htable_fini(&r->shards[i].chans);
            htable_fini(&r->shards[i].wanted);
        }
        ev_loop_destroy(r->loop);
    }
    pthread_mutex_destroy(&r->lock);
    free(r->ring);
    free(r->shards);
    free(r->password);
    free(r);
    return NULL;
}

static bool sweep_wanted(struct hnode *n, void *arg)
{
    (void)arg;
    free(htable_entry(n, struct wanted, node));
    return true;
}

void rds_close(rds_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->closing = true;
    pthread_mutex_unlock(&r->lock);
    ev_async_send(r->loop, &r->wake);
    pthread_join(r->thread, NULL);
    for (size_t i = 0; i < r->n; i++) {
        htable_fini(&r->shards[i].chans);
        htable_sweep(&r->shards[i].wanted, sweep_wanted, NULL);
        htable_fini(&r->shards[i].wanted);
    }
    ev_loop_destroy(r->loop);
    for (int i = 0; i < r->nscripts; i++)
        free(r->scripts[i].src);
    pthread_mutex_destroy(&r->lock);
    free(r->ring);
    free(r->shards);
    free(r->password);
    free(r);
}

static int submit(rds_t *r, size_t shard, struct item *it)
{
    struct shard *s = &r->shards[shard];
    if (atomic_fetch_add_explicit(&s->pending, 1, memory_order_relaxed) >= r->o.max_pending) {
        atomic_fetch_sub_explicit(&s->pending, 1, memory_order_relaxed);
        free(it);
        return -ENOBUFS;
    }
    int rc = enqueue(r, it);
    if (rc < 0) {
        atomic_fetch_sub_explicit(&s->pending, 1, memory_order_relaxed);
        free(it);
    }
    return rc;
}

static bool args_ok(int argc, const char *const *argv, const size_t *lens)
{
    if (argc < 0 || argc > 1024 * 1024 || (argc > 0 && !argv))
        return false;
    for (int i = 0; i < argc; i++)
        if (!argv[i])
            return false;
    return true;
}

int rds_cmd(rds_t *r, size_t shard, int argc, const char *const *argv, const size_t *lens,
            rds_cb *cb, void *arg)
{
    if (!r || shard >= r->n || argc < 1 || !args_ok(argc, argv, lens))
        return -EINVAL;
    struct item *it = item_new(r, shard, K_CMD, argc, argv, lens, 0);
    it->cb = cb;
    it->arg = arg;
    return submit(r, shard, it);
}

int rds_script(rds_t *r, const char *lua)
{
    if (!r || !lua)
        return -EINVAL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    size_t len = strlen(lua);
    if (!EVP_Digest(lua, len, md, &mdlen, EVP_sha1(), NULL) || mdlen != 20)
        return -EIO;
    pthread_mutex_lock(&r->lock);
    if (r->nscripts == SCRIPTS_MAX) {
        pthread_mutex_unlock(&r->lock);
        return -ENOSPC;
    }
    struct script *sc = &r->scripts[r->nscripts];
    for (unsigned i = 0; i < 20; i++)
        snprintf(sc->sha + 2 * i, 3, "%02x", md[i]);
    sc->src = xstrdup(lua);
    sc->len = len;
    int id = r->nscripts++;
    pthread_mutex_unlock(&r->lock);
    /* Load it now, ahead of its first EVALSHA on every shard (and again in
     * each reconnect's handshake): a NOSCRIPT retry is sent after whatever
     * was pipelined behind the failed call, so it would reorder scripts
     * that must run in the order they were queued (a room's sends). */
    for (size_t i = 0; i < r->n; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", sc->src};
        const size_t lens[] = {6, 4, sc->len};
        rds_cmd(r, i, 3, argv, lens, NULL, NULL);
    }
    return id;
}

int rds_eval(rds_t *r, size_t shard, int script, int nkeys, int argc, const char *const *argv,
             const size_t *lens, rds_cb *cb, void *arg)
{
    if (!r || shard >= r->n || nkeys < 0 || nkeys > argc || !args_ok(argc, argv, lens))
        return -EINVAL;
    pthread_mutex_lock(&r->lock);
    bool known = script >= 0 && script < r->nscripts;
    struct script *sc = known ? &r->scripts[script] : NULL;
    pthread_mutex_unlock(&r->lock);
    if (!known)
        return -EINVAL;
    struct item *it = item_new(r, shard, K_EVAL, argc, argv, lens, 3);
    it->argv[0] = "EVALSHA";
    it->lens[0] = 7;
    it->argv[1] = sc->sha;
    it->lens[1] = 40;
    it->lens[2] = (size_t)snprintf(it->nkeys, sizeof(it->nkeys), "%d", nkeys);
    it->argv[2] = it->nkeys;
    it->source = sc->src;
    it->source_len = sc->len;
    it->cb = cb;
    it->arg = arg;
    return submit(r, shard, it);
}

static bool channel_ok(const char *channel, size_t len)
{
    return channel && len > 0 && len <= RDS_CHANNEL_MAX && !memchr(channel, '\0', len);
}

int rds_subscribe(rds_t *r, size_t shard, const char *channel, size_t len, rds_cb *cb, void *arg)
{
    if (!r || shard >= r->n || !channel_ok(channel, len))
        return -EINVAL;
    struct shard *s = &r->shards[shard];
    struct item *it = item_new(r, shard, K_SUB, 1, &channel, &len, 0);
    it->cb = cb;
    it->arg = arg;
    struct wanted *w = xcalloc(1, sizeof(*w) + len + 1);
    memcpy(w->name, channel, len);
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    if (r->closing) {
        rc = -ESHUTDOWN;
    } else if (htable_find(&s->wanted, w->name)) {
        rc = -EALREADY;
    } else {
        htable_insert(&s->wanted, &w->node, w->name);
        r->subscriptions++;
        w = NULL;
        /* queued under the same lock as the set changes, so the rds thread
         * sees subscribe and unsubscribe of one channel in their order */
        queue_locked(r, it);
        it = NULL;
    }
    pthread_mutex_unlock(&r->lock);
    free(w);
    free(it);
    return rc;
}

int rds_unsubscribe(rds_t *r, size_t shard, const char *channel, size_t len)
{
    if (!r || shard >= r->n || !channel_ok(channel, len))
        return -EINVAL;
    struct shard *s = &r->shards[shard];
    struct item *it = item_new(r, shard, K_UNSUB, 1, &channel, &len, 0);
    struct wanted *w = NULL;
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    struct hnode *n = r->closing ? NULL : htable_find(&s->wanted, it->argv[0]);
    if (r->closing) {
        rc = -ESHUTDOWN;
    } else if (!n) {
        rc = -ENOENT;
    } else {
        w = htable_entry(n, struct wanted, node);
        htable_remove(&s->wanted, n);
        r->subscriptions--;
        queue_locked(r, it);
        it = NULL;
    }
    pthread_mutex_unlock(&r->lock);
    free(w);
    free(it);
    return rc;
}

void rds_stats(rds_t *r, struct rds_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->shards = r->n;
    for (size_t i = 0; i < r->n; i++)
        out->shards_up += rds_up(r, i);
    out->commands = atomic_load_explicit(&r->commands, memory_order_relaxed);
    out->failures = atomic_load_explicit(&r->failures, memory_order_relaxed);
    out->reconnects = atomic_load_explicit(&r->reconnects, memory_order_relaxed);
    out->messages = atomic_load_explicit(&r->messages, memory_order_relaxed);
    out->rtt_seconds_sum = (double)atomic_load_explicit(&r->rtt_ns, memory_order_relaxed) / 1e9;
    out->rtt_count = atomic_load_explicit(&r->rtt_count, memory_order_relaxed);
    out->timeouts = atomic_load_explicit(&r->timeouts, memory_order_relaxed);
    out->script_loads = atomic_load_explicit(&r->script_loads, memory_order_relaxed);
    pthread_mutex_lock(&r->lock);
    out->subscriptions = r->subscriptions;
    pthread_mutex_unlock(&r->lock);
}
