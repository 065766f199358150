/*
 * counters — see counters.h. The map is chained with a power-of-two bucket
 * array that doubles under the write lock; readers hold the read lock for the
 * lookup and the increment, so an entry can never move or vanish under them.
 * Used by every I/O loop thread (inc), the dumper thread and the HTTP API
 * (snapshot, json).
 */
#include "counters.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct centry {
    struct centry *next;
    _Atomic uint64_t n;
    size_t hash;
    char name[];
};

struct counters {
    pthread_rwlock_t lock;
    struct centry **b; /* {lock} */
    size_t nb, count;  /* {lock} */
};

static size_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29));
}

counters_t *counters_new(void)
{
    counters_t *c = xcalloc(1, sizeof(*c));

    if (pthread_rwlock_init(&c->lock, NULL) != 0)
        abort(); /* only fails for lack of memory, like xmalloc */
    c->nb = 64;
    c->b = xcalloc(c->nb, sizeof(*c->b));
    return c;
}

void counters_free(counters_t *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nb; i++) {
        for (struct centry *e = c->b[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(c->b);
    pthread_rwlock_destroy(&c->lock);
    free(c);
}

/* Caller holds the lock (read or write). */
static struct centry *find_locked(counters_t *c, const char *user, size_t h)
{
    for (struct centry *e = c->b[h & (c->nb - 1)]; e; e = e->next)
        if (e->hash == h && strcmp(e->name, user) == 0)
            return e;
    return NULL;
}

/* Caller holds the write lock. */
static void grow_locked(counters_t *c)
{
    size_t nb = c->nb * 2;
    struct centry **b = xcalloc(nb, sizeof(*b));

    for (size_t i = 0; i < c->nb; i++) {
        for (struct centry *e = c->b[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    }
    free(c->b);
    c->b = b;
    c->nb = nb;
}

void counters_inc(counters_t *c, const char *user)
{
    size_t h = hash_name(user);
    struct centry *e;

    pthread_rwlock_rdlock(&c->lock);
    e = find_locked(c, user, h);
    if (e) {
        atomic_fetch_add_explicit(&e->n, 1, memory_order_relaxed);
        pthread_rwlock_unlock(&c->lock);
        return;
    }
    pthread_rwlock_unlock(&c->lock);

    /* miss: look again under the write lock, since another thread may have
     * created the entry between our unlock and this lock */
    pthread_rwlock_wrlock(&c->lock);
    e = find_locked(c, user, h);
    if (!e) {
        size_t len = strlen(user);
        e = xmalloc(sizeof(*e) + len + 1);
        memcpy(e->name, user, len + 1);
        e->hash = h;
        atomic_init(&e->n, 0);
        if (c->count >= c->nb)
            grow_locked(c);
        e->next = c->b[h & (c->nb - 1)];
        c->b[h & (c->nb - 1)] = e;
        c->count++;
    }
    atomic_fetch_add_explicit(&e->n, 1, memory_order_relaxed);
    pthread_rwlock_unlock(&c->lock);
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct counter_entry *)a)->name, ((const struct counter_entry *)b)->name);
}

size_t counters_snapshot(counters_t *c, struct counter_entry **out)
{
    size_t n = 0;

    pthread_rwlock_rdlock(&c->lock);
    *out = c->count ? xcalloc(c->count, sizeof(**out)) : NULL;
    for (size_t i = 0; i < c->nb; i++) {
        for (struct centry *e = c->b[i]; e; e = e->next) {
            (*out)[n].name = xstrdup(e->name);
            (*out)[n].value = atomic_load_explicit(&e->n, memory_order_relaxed);
            n++;
        }
    }
    pthread_rwlock_unlock(&c->lock);
    if (n > 1)
        qsort(*out, n, sizeof(**out), cmp_entry);
    return n;
}

void counters_snapshot_free(struct counter_entry *e, size_t n)
{
    if (!e)
        return;
    for (size_t i = 0; i < n; i++)
        free(e[i].name);
    free(e);
}

uint64_t counters_total(counters_t *c)
{
    uint64_t sum = 0;

    pthread_rwlock_rdlock(&c->lock);
    for (size_t i = 0; i < c->nb; i++)
        for (struct centry *e = c->b[i]; e; e = e->next)
            sum += atomic_load_explicit(&e->n, memory_order_relaxed);
    pthread_rwlock_unlock(&c->lock);
    return sum;
}

/* A growable string; allocation failure aborts in xrealloc. */
struct sbuf {
    char *s;
    size_t len, cap;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 256;
        b->s = xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    size_t want = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : 2;

    return want <= n && utf8_count((const char *)s, want) == 1 ? want : 0;
}

/* Append name as a JSON string: quotes, backslashes and control characters
 * escaped; a byte that does not start a valid UTF-8 sequence becomes \u00XX
 * so the result is valid JSON whatever the name holds. */
static void sb_put_json_string(struct sbuf *b, const char *name)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t n = strlen(name);
    char esc[8];

    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char ch = s[i];
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            sb_put(b, esc, 2);
            i++;
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            sb_put(b, esc, 6);
            i++;
        } else if (ch < 0x80) {
            sb_put(b, (const char *)s + i, 1);
            i++;
        } else {
            size_t k = utf8_seq(s + i, n - i);
            if (k) {
                sb_put(b, (const char *)s + i, k);
                i += k;
            } else {
                snprintf(esc, sizeof(esc), "\\u%04x", ch);
                sb_put(b, esc, 6);
                i++;
            }
        }
    }
    sb_put(b, "\"", 1);
}

char *counters_json(counters_t *c, int64_t ts_ms)
{
    struct counter_entry *e;
    size_t n = counters_snapshot(c, &e);
    struct sbuf b = {0};
    char num[48];

    int len = snprintf(num, sizeof(num), "{\"ts\":%" PRId64 ",\"users\":{", ts_ms);
    sb_put(&b, num, (size_t)len);
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_put(&b, ",", 1);
        sb_put_json_string(&b, e[i].name);
        len = snprintf(num, sizeof(num), ":%" PRIu64, e[i].value);
        sb_put(&b, num, (size_t)len);
    }
    sb_put(&b, "}}", 2);
    counters_snapshot_free(e, n);
    return b.s;
}
