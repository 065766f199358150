/*
 * notify — see notify.h for the design. This file owns the worker thread,
 * the in-memory queue (batches of notifications keyed by recipient, and the
 * ids held or recently finished), the breaker, and the two delivery paths
 * (SMTP through libcurl, mboxrd append). It is the only file that includes
 * curl.h.
 *
 * Locking: one mutex guards the queue, the id sets, the breaker and the
 * counters. The worker drops it for every slow step — the store's outbox
 * calls, the SMTP transaction, the mbox write — so notify_enqueue on an
 * event-loop thread only ever waits for a few pointer updates.
 *
 * The transfer runs on a curl multi handle owned by the notifier (not the
 * worker), so notify_stop can wake a transfer that is waiting on a silent
 * relay at once (curl_multi_wakeup) instead of after curl's next poll
 * timeout; the transfer progress callback enforces the same drain deadline
 * from inside curl.
 */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backoff.h"
#include "breaker.h"
#include "htable.h"
#include "log.h"
#include "mailfmt.h"
#include "notify.h"
#include "util.h"

#define MOD "notify"
/* How long a finished id is remembered. The broker's outbox insert goes
 * through the storage writer and can land after we already sent (and
 * marked) the in-memory copy; a later rescan must then recognise the row
 * instead of sending it again. Minutes cover any commit delay. */
#define DONE_TTL_MS (10 * 60 * 1000)
/* Texts are kept only as long as mailfmt shows them (it cuts there). */
#define TEXT_KEEP (MAILFMT_TEXT_MAX + 8)
#define POLL_MAX_MS 1000

/* ---- entries of the three tables, keyed by a 32-character string ---- */

/* The tables are htables (htable.h), each with its own key: recipients are
 * user names clients chose. The key string lives beside the node. */
struct nkey {
    struct hnode node;
    char key[33];
};

static struct nkey *ht_find(const struct htable *t, const char *key)
{
    struct hnode *h = htable_find(t, key);
    return h ? htable_entry(h, struct nkey, node) : NULL;
}

static void ht_add(struct htable *t, struct nkey *k)
{
    htable_insert(t, &k->node, k->key);
}

/* ---- state ---- */

/* One notification held in memory (queued or being sent). */
struct item {
    struct nkey h; /* key: id; in notify.held while held */
    struct item *next;
    bool dm;
    char from[33];
    char room[70];
    char *text;
    int64_t ts;
    int attempts; /* sends tried, across restarts (from the outbox row) */
};

/* One recipient's held notifications, oldest first. */
struct batch {
    struct nkey h; /* key: recipient; in notify.batches while queued */
    struct batch *prev, *next;
    char email[255];
    struct item *head, *tail;
    size_t count;
    int64_t due_ms;      /* monotonic: when it may go out */
    int64_t retry_at_ms; /* monotonic: the backoff's part of due_ms (0: none) */
};

/* An id sent or given up on recently (see DONE_TTL_MS). */
struct done {
    struct nkey h; /* key: id; in notify.done */
    struct done *next;
    int64_t expires_ms;
    bool dead;
};

static struct batch *find_batch(const struct htable *t, const char *recipient)
{
    struct nkey *k = ht_find(t, recipient);
    return k ? htable_entry(k, struct batch, h) : NULL;
}

static struct done *find_done(const struct htable *t, const char *id)
{
    struct nkey *k = ht_find(t, id);
    return k ? htable_entry(k, struct done, h) : NULL;
}

enum outcome {
    OUT_SENT,
    OUT_FAILED,    /* transient: retry later */
    OUT_PERMANENT, /* this message can never go out (e.g. invalid address) */
    OUT_ABORTED,   /* stopped mid-send: no outcome, the rows stay as they were */
};

struct notify {
    /* configuration, fixed after notify_new */
    char *smtp_url, *smtp_user, *smtp_password, *from, *mbox_path;
    bool starttls;
    size_t queue_max;
    int coalesce_ms, max_attempts, connect_timeout_ms, send_timeout_ms, drain_timeout_ms;
    int rescan_ms;
    struct backoff backoff;
    store_t *store;

    /* worker only */
    CURLM *multi; /* created and destroyed on the main thread (see the top comment) */
    CURL *easy;
    bool curl_inited; /* main thread only */
    uint64_t rng;

    pthread_t thread;
    bool started, joined; /* main thread only */

    pthread_mutex_t lock;
    pthread_cond_t cond;                /* CLOCK_MONOTONIC; wakes the worker */
    _Atomic int64_t stop_at_ms;         /* 0 until notify_stop; read inside curl's callback */
    bool stopping;                      /* {lock} */
    struct htable held;                 /* {lock} items by id, queued or in flight */
    struct htable batches;              /* {lock} queued batches by recipient */
    struct batch *qhead;                /* {lock} queued batches, newest first */
    struct htable done;                 /* {lock} */
    struct done *done_head, *done_tail; /* {lock} oldest first, for expiry */
    size_t depth;                       /* {lock} items held */
    struct breaker breaker;             /* {lock} */
    uint64_t enqueued, rejected, sent, emails, failed, dead; /* {lock} */
};

static size_t bounded_copy(char *dst, size_t dstsz, const char *src, size_t srcsz)
{
    size_t n = strnlen(src, srcsz);
    if (n >= dstsz)
        n = dstsz - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return n;
}

/* util's xstrndup copies exactly n bytes, so bound the length first */
static char *keep_text(const char *text)
{
    text = text ? text : "";
    return xstrndup(text, strnlen(text, TEXT_KEEP));
}

static void item_free(struct item *it)
{
    if (it) {
        free(it->text);
        free(it);
    }
}

static void items_free(struct item *it)
{
    for (struct item *next; it; it = next) {
        next = it->next;
        item_free(it);
    }
}

/* ---- queue, under the lock ---- */

static void queue_link_locked(notify_t *n, struct batch *b)
{
    b->prev = NULL;
    b->next = n->qhead;
    if (n->qhead)
        n->qhead->prev = b;
    n->qhead = b;
    ht_add(&n->batches, &b->h);
}

static void queue_unlink_locked(notify_t *n, struct batch *b)
{
    if (b->prev)
        b->prev->next = b->next;
    else
        n->qhead = b->next;
    if (b->next)
        b->next->prev = b->prev;
    b->prev = b->next = NULL;
    htable_remove(&n->batches, &b->h.node);
}

/* Hold it for recipient, in its batch (a new one is due at due_if_new). */
static void add_item_locked(notify_t *n, const char *recipient, const char *email, size_t emailsz,
                            struct item *it, int64_t due_if_new)
{
    struct batch *b = find_batch(&n->batches, recipient);
    if (!b) {
        b = xcalloc(1, sizeof(*b));
        str_lcpy(b->h.key, recipient, sizeof(b->h.key));
        b->due_ms = due_if_new;
        queue_link_locked(n, b);
    }
    /* the newest address wins: a user who changed it wants mail there */
    bounded_copy(b->email, sizeof(b->email), email, emailsz);
    it->next = NULL;
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    b->count++;
    ht_add(&n->held, &it->h);
    n->depth++;
}

static void done_add_locked(notify_t *n, const char *id, bool dead, int64_t now)
{
    struct done *d = find_done(&n->done, id);
    if (d) {
        d->dead = dead;
        return;
    }
    d = xcalloc(1, sizeof(*d));
    str_lcpy(d->h.key, id, sizeof(d->h.key));
    d->expires_ms = now + DONE_TTL_MS;
    d->dead = dead;
    if (n->done_tail)
        n->done_tail->next = d;
    else
        n->done_head = d;
    n->done_tail = d;
    ht_add(&n->done, &d->h);
}

static void done_prune_locked(notify_t *n, int64_t now)
{
    while (n->done_head && (now >= n->done_head->expires_ms)) {
        struct done *d = n->done_head;
        n->done_head = d->next;
        if (!n->done_head)
            n->done_tail = NULL;
        htable_remove(&n->done, &d->h.node);
        free(d);
    }
}

static struct batch *earliest_locked(notify_t *n)
{
    struct batch *best = NULL;
    for (struct batch *b = n->qhead; b; b = b->next) {
        if (!best || b->due_ms <= best->due_ms) /* ties: the oldest (list is newest first) */
            best = b;
    }
    return best;
}

/* ---- enqueue (any thread) ---- */

bool notify_enqueue(notify_t *n, const struct notification *note)
{
    if (!n || !note)
        return false;
    size_t idl = strnlen(note->id, sizeof(note->id));
    size_t rl = strnlen(note->recipient, sizeof(note->recipient));
    bool ok = idl > 0 && idl < sizeof(note->id) && rl > 0 && rl < sizeof(note->recipient);

    /* build the copy before taking the lock: the lock is for pointers only */
    struct item *it = NULL;
    if (ok) {
        it = xcalloc(1, sizeof(*it));
        memcpy(it->h.key, note->id, idl);
        it->dm = note->kind == NOTE_DM;
        bounded_copy(it->from, sizeof(it->from), note->from, sizeof(note->from));
        if (!it->dm)
            bounded_copy(it->room, sizeof(it->room), note->room, sizeof(note->room));
        it->text = keep_text(note->text);
        it->ts = note->ts;
    }
    char recipient[33] = "";
    if (ok)
        memcpy(recipient, note->recipient, rl);

    pthread_mutex_lock(&n->lock);
    if (ok && (ht_find(&n->held, it->h.key) || ht_find(&n->done, it->h.key))) {
        pthread_mutex_unlock(&n->lock);
        item_free(it);
        return true; /* a duplicate: already being handled */
    }
    if (!ok || n->stopping || n->depth >= n->queue_max) {
        n->rejected++;
        pthread_mutex_unlock(&n->lock);
        item_free(it);
        return false;
    }
    add_item_locked(n, recipient, note->email, sizeof(note->email), it,
                    now_mono_ms() + n->coalesce_ms);
    n->enqueued++;
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->lock);
    return true;
}

void notify_flush(notify_t *n)
{
    if (!n)
        return;
    int64_t now = now_mono_ms();
    pthread_mutex_lock(&n->lock);
    for (struct batch *b = n->qhead; b; b = b->next)
        b->due_ms = b->retry_at_ms > now ? b->retry_at_ms : now;
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->lock);
}

void notify_stats(notify_t *n, struct notify_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!n)
        return;
    pthread_mutex_lock(&n->lock);
    out->queue_depth = n->depth;
    out->enqueued = n->enqueued;
    out->rejected = n->rejected;
    out->sent = n->sent;
    out->emails = n->emails;
    out->failed = n->failed;
    out->dead = n->dead;
    out->breaker_state = (int)breaker_state(&n->breaker, now_mono_ms());
    pthread_mutex_unlock(&n->lock);
}

/* ---- delivery (worker, no lock held) ---- */

static bool stop_expired(notify_t *n)
{
    int64_t at = atomic_load(&n->stop_at_ms);
    return at != 0 && now_mono_ms() >= at + n->drain_timeout_ms;
}

struct upload {
    const char *p;
    size_t len, off;
};

static size_t read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
    struct upload *u = arg;
    size_t room = size * nitems, left = u->len - u->off;
    size_t k = left < room ? left : room;
    memcpy(buf, u->p + u->off, k);
    u->off += k;
    return k;
}

static int xferinfo_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    return stop_expired(arg) ? 1 : 0; /* non-zero aborts the transfer */
}

static bool url_is(const char *url, const char *scheme)
{
    return strncasecmp(url, scheme, strlen(scheme)) == 0;
}

static enum outcome send_smtp(notify_t *n, const char *who, const char *email, const char *msg,
                              size_t len)
{
    char from[MAILFMT_ADDR_MAX + 3], rcpt[MAILFMT_ADDR_MAX + 3];
    snprintf(from, sizeof(from), "<%s>", n->from);
    snprintf(rcpt, sizeof(rcpt), "<%s>", email);
    struct curl_slist *rcpts = curl_slist_append(NULL, rcpt);
    if (!rcpts)
        return OUT_FAILED;
    struct upload up = {msg, len, 0};
    CURL *e = n->easy;
    /* Reset, not a new handle: the multi handle keeps the relay connection
     * alive between messages. */
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, n->smtp_url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(e, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(e, CURLOPT_MAIL_RCPT, rcpts);
    curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(e, CURLOPT_READDATA, &up);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)n->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)n->send_timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, n);
    if (n->smtp_user) {
        curl_easy_setopt(e, CURLOPT_USERNAME, n->smtp_user);
        curl_easy_setopt(e, CURLOPT_PASSWORD, n->smtp_password ? n->smtp_password : "");
    }
    if (n->starttls && url_is(n->smtp_url, "smtp://"))
        curl_easy_setopt(e, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);

    enum outcome out = OUT_FAILED;
    CURLcode res = CURLE_OK;
    bool finished = false, aborted = false;
    if (curl_multi_add_handle(n->multi, e) != CURLM_OK)
        goto free_rcpts;
    for (;;) {
        int running = 0;
        if (curl_multi_perform(n->multi, &running) != CURLM_OK)
            break;
        CURLMsg *m;
        int q;
        while ((m = curl_multi_info_read(n->multi, &q))) {
            if (m->msg == CURLMSG_DONE && m->easy_handle == e) {
                res = m->data.result;
                finished = true;
            }
        }
        if (finished || !running)
            break;
        if (stop_expired(n)) {
            aborted = true;
            break;
        }
        int wait = POLL_MAX_MS;
        int64_t at = atomic_load(&n->stop_at_ms);
        if (at) {
            int64_t left = at + n->drain_timeout_ms - now_mono_ms();
            wait = left < 0 ? 0 : left < wait ? (int)left : wait;
        }
        /* returns early on socket activity or curl_multi_wakeup (notify_stop) */
        if (curl_multi_poll(n->multi, NULL, 0, wait, NULL) != CURLM_OK)
            break;
    }
    curl_multi_remove_handle(n->multi, e);
    if (aborted || (finished && res == CURLE_ABORTED_BY_CALLBACK)) {
        log_info(MOD, "send to '%s' abandoned at shutdown", who);
        out = OUT_ABORTED;
    } else if (finished && res == CURLE_OK) {
        out = OUT_SENT;
    } else {
        long code = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        log_warn(MOD, "send to '%s' failed: %s (smtp %ld)", who,
                 finished ? curl_easy_strerror(res) : "transfer error", code);
    }
free_rcpts:
    curl_slist_free_all(rcpts);
    return out;
}

static enum outcome append_mbox(notify_t *n, const char *msg, size_t len)
{
    size_t elen;
    char *entry = mailfmt_mbox(n->from, now_wall_ms(), msg, len, &elen);
    enum outcome out = OUT_FAILED;
    int fd = open(n->mbox_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_warn(MOD, "cannot open mailbox '%s': %s", n->mbox_path, strerror(errno));
        goto free_entry;
    }
    /* O_APPEND makes each write land at the end; the lock keeps another
     * writer's message from landing between two of ours should one write
     * come back short, and lets a failed append be cut off again. */
    if (flock(fd, LOCK_EX) != 0) {
        log_warn(MOD, "cannot lock mailbox '%s': %s", n->mbox_path, strerror(errno));
        goto close_fd;
    }
    struct stat st;
    if (fstat(fd, &st) != 0)
        goto close_fd;
    size_t off = 0;
    while (off < elen) {
        ssize_t w = write(fd, entry + off, elen - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    if (off < elen || fdatasync(fd) != 0) {
        log_warn(MOD, "cannot append to mailbox '%s': %s", n->mbox_path, strerror(errno));
        if (ftruncate(fd, st.st_size) != 0)
            log_error(MOD, "cannot cut a partial entry off '%s': %s", n->mbox_path,
                      strerror(errno));
        goto close_fd;
    }
    out = OUT_SENT;
close_fd:
    close(fd); /* releases the lock */
free_entry:
    free(entry);
    return out;
}

static enum outcome deliver(notify_t *n, struct batch *b)
{
    struct mail_item *items = xcalloc(b->count, sizeof(*items));
    size_t i = 0;
    for (struct item *it = b->head; it; it = it->next, i++) {
        items[i] = (struct mail_item){
            .dm = it->dm, .from = it->from, .room = it->room, .text = it->text, .ts_ms = it->ts};
    }
    char msgid[33];
    util_random_hex(msgid, 16);
    struct mail_head h = {.from_addr = n->from,
                          .to_addr = b->email,
                          .to_name = b->h.key,
                          .date_ms = now_wall_ms(),
                          .msgid_local = msgid,
                          .cte = MAILFMT_QP};
    char err[128];
    size_t len;
    char *msg = mailfmt_message(&h, items, b->count, &len, err, sizeof(err));
    free(items);
    if (!msg) {
        log_warn(MOD, "cannot notify '%s': %s", b->h.key, err);
        return OUT_PERMANENT;
    }
    enum outcome out =
        n->smtp_url ? send_smtp(n, b->h.key, b->email, msg, len) : append_mbox(n, msg, len);
    free(msg);
    return out;
}

/* ---- outbox bookkeeping (worker, no lock held) ---- */

/* One store call for all ids; if it fails, one per id, so that a row that
 * is not there (yet) does not keep the others from being marked. -ENOENT is
 * expected: the broker's outbox insert can land after the in-memory copy was
 * sent, and the rescan settles the row then (see DONE_TTL_MS). */
static void mark_ids(notify_t *n, const char **ids, size_t k, const char *state, int attempts,
                     int64_t next_at_ms)
{
    if (k == 0 || store_outbox_mark(n->store, ids, k, state, attempts, next_at_ms) == 0)
        return;
    for (size_t i = 0; i < k; i++) {
        int rc = store_outbox_mark(n->store, &ids[i], 1, state, attempts, next_at_ms);
        if (rc == -ENOENT)
            log_debug(MOD, "outbox row '%s' not there yet to mark %s", ids[i], state);
        else if (rc != 0)
            log_warn(MOD, "cannot mark outbox row '%s' %s: %s", ids[i], state,
                     strerror(rc < 0 ? -rc : rc));
    }
}

/* Mark every item of list (linked by next) as state, one store call per
 * distinct attempts count (the store takes one count per call). */
static void mark_items(notify_t *n, struct item *list, const char *state, int64_t next_at_ms)
{
    if (!n->store || !list)
        return;
    size_t total = 0;
    for (struct item *it = list; it; it = it->next)
        total++;
    const char **ids = xcalloc(total, sizeof(*ids));
    bool *taken = xcalloc(total, sizeof(*taken));
    size_t i0 = 0;
    for (struct item *first = list; first; first = first->next, i0++) {
        if (taken[i0])
            continue;
        size_t k = 0, i = i0;
        for (struct item *it = first; it; it = it->next, i++) {
            if (!taken[i] && it->attempts == first->attempts) {
                ids[k++] = it->h.key;
                taken[i] = true;
            }
        }
        mark_ids(n, ids, k, state, first->attempts, next_at_ms);
    }
    free(taken);
    free(ids);
}

/* Settle a batch the worker took out of the queue: write the outcome to the
 * outbox, then update the in-memory state. Frees what is finished. */
static void settle(notify_t *n, struct batch *b, enum breaker_permit permit, enum outcome out)
{
    int64_t now = now_mono_ms();
    char who[sizeof(b->h.key)];
    str_lcpy(who, b->h.key, sizeof(who));
    struct item *finished = NULL, *keep = NULL, **keep_tail = &keep;
    struct item *dead = NULL, **dead_tail = &dead;
    int64_t delay = 0;
    int max_attempts_seen = 0;

    if (out == OUT_SENT) {
        for (struct item *it = b->head; it; it = it->next)
            it->attempts++;
        finished = b->head;
        mark_items(n, finished, "sent", 0);
    } else if (out == OUT_PERMANENT) {
        dead = b->head;
        mark_items(n, dead, "dead", 0);
    } else if (out == OUT_FAILED) {
        for (struct item *it = b->head, *next; it; it = next) {
            next = it->next;
            it->next = NULL;
            if (++it->attempts >= n->max_attempts) {
                *dead_tail = it;
                dead_tail = &it->next;
            } else {
                if (it->attempts > max_attempts_seen)
                    max_attempts_seen = it->attempts;
                *keep_tail = it;
                keep_tail = &it->next;
            }
        }
        delay = backoff_delay_ms(&n->backoff, max_attempts_seen, backoff_rand(&n->rng));
        mark_items(n, dead, "dead", 0);
        mark_items(n, keep, "pending", now_wall_ms() + delay);
    } else {
        keep = b->head; /* aborted: unchanged, still pending in the outbox */
    }

    pthread_mutex_lock(&n->lock);
    enum breaker_state before = breaker_state(&n->breaker, now);
    if (out == OUT_SENT || out == OUT_FAILED) {
        enum breaker_state after = breaker_release(&n->breaker, permit, out == OUT_SENT, now);
        if (after != before && after == BREAKER_OPEN)
            log_warn(MOD, "relay circuit open: not sending for %d ms",
                     n->breaker.cooldown_ms > INT32_MAX ? INT32_MAX : (int)n->breaker.cooldown_ms);
        else if (after != before && after == BREAKER_CLOSED)
            log_info(MOD, "relay circuit closed: sending again");
    } else {
        breaker_cancel(&n->breaker, permit);
    }
    if (out == OUT_SENT)
        n->emails++;
    else if (out == OUT_FAILED)
        n->failed++;
    size_t nsent = 0, ndead = 0;
    for (struct item *it = finished; it; it = it->next, nsent++) {
        htable_remove(&n->held, &it->h.node);
        done_add_locked(n, it->h.key, false, now);
    }
    for (struct item *it = dead; it; it = it->next, ndead++) {
        htable_remove(&n->held, &it->h.node);
        done_add_locked(n, it->h.key, true, now);
    }
    n->sent += nsent;
    n->dead += ndead;
    n->depth -= nsent + ndead;
    if (keep) {
        /* back into the queue, in front of anything that arrived meanwhile */
        struct batch *cur = find_batch(&n->batches, b->h.key);
        struct item *last = keep;
        size_t nkeep = 1;
        while (last->next)
            last = last->next, nkeep++;
        if (cur) {
            last->next = cur->head;
            cur->head = keep;
            if (!cur->tail)
                cur->tail = last;
            cur->count += nkeep;
        } else {
            cur = b;
            b = NULL;
            cur->head = keep;
            cur->tail = last;
            cur->count = nkeep;
            cur->due_ms = now;
            queue_link_locked(n, cur);
        }
        if (out == OUT_FAILED) {
            cur->retry_at_ms = now + delay;
            if (cur->due_ms < cur->retry_at_ms)
                cur->due_ms = cur->retry_at_ms;
        }
    }
    pthread_mutex_unlock(&n->lock);

    if (ndead && out == OUT_PERMANENT)
        log_warn(MOD, "gave up on %zu notification%s for '%s': undeliverable", ndead,
                 ndead == 1 ? "" : "s", who);
    else if (ndead)
        log_warn(MOD, "gave up on %zu notification%s for '%s' after %d attempts", ndead,
                 ndead == 1 ? "" : "s", who, n->max_attempts);
    items_free(finished);
    items_free(dead);
    free(b);
}

/* Pick up pending outbox rows not held in memory. Returns true when the
 * read was full and some rows were new (there may be more right away). */
static bool scan_outbox(notify_t *n, size_t max)
{
    struct store_outbox_row *rows = NULL;
    size_t nrows = 0;
    int rc = store_outbox_pending(n->store, now_wall_ms(), max, &rows, &nrows);
    if (rc != 0) {
        log_warn(MOD, "cannot read the outbox: %s", strerror(rc < 0 ? -rc : rc));
        return false;
    }
    /* rows we already finished whose outbox state has not caught up */
    const char **sent_ids = xcalloc(nrows ? nrows : 1, sizeof(*sent_ids));
    const char **dead_ids = xcalloc(nrows ? nrows : 1, sizeof(*dead_ids));
    size_t nsent = 0, ndead = 0, added = 0;
    int64_t now = now_mono_ms();

    pthread_mutex_lock(&n->lock);
    done_prune_locked(n, now);
    for (size_t i = 0; i < nrows; i++) {
        const struct store_outbox_row *r = &rows[i];
        if (!r->id[0] || !r->recipient[0] || ht_find(&n->held, r->id))
            continue;
        struct done *d = find_done(&n->done, r->id);
        if (d) {
            if (d->dead)
                dead_ids[ndead++] = r->id;
            else
                sent_ids[nsent++] = r->id;
            continue;
        }
        if (n->depth >= n->queue_max)
            continue;
        struct item *it = xcalloc(1, sizeof(*it));
        str_lcpy(it->h.key, r->id, sizeof(it->h.key));
        it->dm = strcmp(r->kind, "dm") == 0;
        str_lcpy(it->from, r->from, sizeof(it->from));
        if (!it->dm)
            str_lcpy(it->room, r->room, sizeof(it->room));
        it->text = keep_text(r->text);
        it->ts = r->ts;
        it->attempts = r->attempts;
        /* it has waited in the outbox already: no new coalescing window */
        add_item_locked(n, r->recipient, r->email, sizeof(r->email), it, now);
        n->enqueued++;
        added++;
    }
    pthread_mutex_unlock(&n->lock);

    if (added)
        log_info(MOD, "picked up %zu pending notification%s from the outbox", added,
                 added == 1 ? "" : "s");
    mark_ids(n, sent_ids, nsent, "sent", 1, 0);
    mark_ids(n, dead_ids, ndead, "dead", n->max_attempts, 0);
    free(sent_ids);
    free(dead_ids);
    store_outbox_rows_free(rows, nrows);
    return nrows == max && added > 0;
}

/* ---- the worker ---- */

static void wait_until_locked(notify_t *n, int64_t wake_ms)
{
    if (wake_ms == INT64_MAX) {
        pthread_cond_wait(&n->cond, &n->lock);
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)(wake_ms / 1000),
                          .tv_nsec = (long)(wake_ms % 1000) * 1000000L};
    pthread_cond_timedwait(&n->cond, &n->lock, &ts);
}

static void *worker(void *arg)
{
    notify_t *n = arg;
    int64_t next_scan = 0; /* at once: pick up what the last run left */
    pthread_mutex_lock(&n->lock);
    while (!n->stopping) {
        int64_t now = now_mono_ms();
        if (n->store && now >= next_scan) {
            next_scan = now + n->rescan_ms;
            if (n->depth < n->queue_max) {
                size_t max = n->queue_max;
                pthread_mutex_unlock(&n->lock);
                bool more = scan_outbox(n, max);
                pthread_mutex_lock(&n->lock);
                if (more)
                    next_scan = now;
            }
            continue;
        }
        int64_t wake = n->store ? next_scan : INT64_MAX;
        struct batch *b = earliest_locked(n);
        if (b && b->due_ms <= now) {
            enum breaker_permit permit = breaker_acquire(&n->breaker, now);
            if (permit != BREAKER_DENY) {
                queue_unlink_locked(n, b);
                pthread_mutex_unlock(&n->lock);
                enum outcome out = deliver(n, b);
                settle(n, b, permit, out);
                pthread_mutex_lock(&n->lock);
                continue;
            }
            int64_t t = breaker_next_ms(&n->breaker, now);
            if (t < wake)
                wake = t;
        } else if (b && b->due_ms < wake) {
            wake = b->due_ms;
        }
        wait_until_locked(n, wake);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

/* ---- lifecycle ---- */

void notify_opts_default(struct notify_opts *o)
{
    *o = (struct notify_opts){
        .smtp_from = "parley@localhost",
        .mbox_path = "data/mail.mbox",
        .queue_max = 10000,
        .coalesce_ms = 60000,
        .max_attempts = 8,
        .backoff_base_ms = 1000,
        .max_backoff_ms = 300000,
        .breaker_threshold = 5,
        .breaker_cooldown_ms = 30000,
        .connect_timeout_ms = 10000,
        .send_timeout_ms = 60000,
        .drain_timeout_ms = 2000,
        .rescan_ms = 30000,
    };
}

static char *dup_or_null(const char *s)
{
    return s && *s ? xstrdup(s) : NULL;
}

notify_t *notify_new(const struct notify_opts *o, store_t *store, char *err, size_t errsz)
{
    const char *from = o->smtp_from && *o->smtp_from ? o->smtp_from : "parley@localhost";
    if (!mailfmt_valid_addr(from)) {
        snprintf(err, errsz, "invalid smtp_from address '%s'", from);
        return NULL;
    }
    bool smtp = o->smtp_url && *o->smtp_url;
    if (smtp && !url_is(o->smtp_url, "smtp://") && !url_is(o->smtp_url, "smtps://")) {
        snprintf(err, errsz, "smtp_url must start with smtp:// or smtps://");
        return NULL;
    }
    if (o->queue_max < 1 || o->coalesce_ms < 0 || o->max_attempts < 1 || o->backoff_base_ms < 1 ||
        o->max_backoff_ms < o->backoff_base_ms || o->breaker_threshold < 1 ||
        o->breaker_cooldown_ms < 0 || o->connect_timeout_ms < 1 || o->send_timeout_ms < 1 ||
        o->drain_timeout_ms < 0 || o->rescan_ms < 1) {
        snprintf(err, errsz, "notify options out of range");
        return NULL;
    }
    const char *mbox = o->mbox_path && *o->mbox_path ? o->mbox_path : "data/mail.mbox";
    if (!smtp) {
        /* fail at start-up, not at the first notification */
        int fd = open(mbox, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            snprintf(err, errsz, "cannot open mailbox '%s': %s", mbox, strerror(errno));
            return NULL;
        }
        close(fd);
    }

    notify_t *n = xcalloc(1, sizeof(*n));
    n->from = xstrdup(from);
    n->mbox_path = xstrdup(mbox);
    n->smtp_url = smtp ? xstrdup(o->smtp_url) : NULL;
    n->smtp_user = dup_or_null(o->smtp_user);
    n->smtp_password = dup_or_null(o->smtp_password);
    n->starttls = o->starttls;
    n->queue_max = o->queue_max;
    n->coalesce_ms = o->coalesce_ms;
    n->max_attempts = o->max_attempts;
    n->connect_timeout_ms = o->connect_timeout_ms;
    n->send_timeout_ms = o->send_timeout_ms;
    n->drain_timeout_ms = o->drain_timeout_ms;
    n->rescan_ms = o->rescan_ms;
    n->backoff = (struct backoff){
        .base_ms = o->backoff_base_ms, .max_ms = o->max_backoff_ms, .jitter = BACKOFF_JITTER_EQUAL};
    n->store = store;
    breaker_init(&n->breaker, o->breaker_threshold, o->breaker_cooldown_ms);
    htable_init(&n->held, 64);
    htable_init(&n->batches, 64);
    htable_init(&n->done, 64);
    if (RAND_bytes((unsigned char *)&n->rng, sizeof(n->rng)) != 1)
        n->rng = (uint64_t)now_mono_ns() ^ ((uint64_t)getpid() << 32);
    atomic_init(&n->stop_at_ms, 0);
    pthread_mutex_init(&n->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cond, &ca);
    pthread_condattr_destroy(&ca);

    if (smtp) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            snprintf(err, errsz, "cannot initialise libcurl");
            goto fail;
        }
        n->curl_inited = true;
        n->multi = curl_multi_init();
        n->easy = curl_easy_init();
        if (!n->multi || !n->easy) {
            snprintf(err, errsz, "cannot initialise libcurl");
            goto fail;
        }
    }
    int rc = pthread_create(&n->thread, NULL, worker, n);
    if (rc != 0) {
        snprintf(err, errsz, "cannot start the notifier thread: %s", strerror(rc));
        goto fail;
    }
    n->started = true;
    log_info(MOD, "e-mail notifications via %s", smtp ? "smtp relay" : mbox);
    return n;
fail:
    notify_free(n);
    return NULL;
}

void notify_stop(notify_t *n)
{
    if (!n || n->joined)
        return;
    pthread_mutex_lock(&n->lock);
    n->stopping = true;
    int64_t now = now_mono_ms();
    atomic_store(&n->stop_at_ms, now > 0 ? now : 1);
    pthread_cond_broadcast(&n->cond);
    pthread_mutex_unlock(&n->lock);
    if (n->multi)
        curl_multi_wakeup(n->multi);
    if (n->started)
        pthread_join(n->thread, NULL);
    n->joined = true;
}

void notify_free(notify_t *n)
{
    if (!n)
        return;
    notify_stop(n);
    for (struct batch *b = n->qhead, *next; b; b = next) {
        next = b->next;
        items_free(b->head);
        free(b);
    }
    for (struct done *d = n->done_head, *next; d; d = next) {
        next = d->next;
        free(d);
    }
    htable_fini(&n->held);
    htable_fini(&n->batches);
    htable_fini(&n->done);
    if (n->easy)
        curl_easy_cleanup(n->easy);
    if (n->multi)
        curl_multi_cleanup(n->multi);
    if (n->curl_inited)
        curl_global_cleanup();
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->lock);
    free(n->smtp_url);
    free(n->smtp_user);
    free(n->smtp_password);
    free(n->from);
    free(n->mbox_path);
    free(n);
}
