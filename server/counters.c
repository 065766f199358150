/*
 * counters — see counters.h. The map itself (the read/write split and the
 * double-checked creation) is usermap's; each entry's value is an atomic
 * count, incremented with a relaxed add under the map's read lock so that
 * an entry can never move or vanish under the increment, plus the number of
 * live connections and the count written by the previous dump. Used by
 * every I/O loop thread (inc, attach, detach), the dumper thread (dump) and
 * the HTTP API (snapshot, json).
 */
#include "counters.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usermap.h"
#include "util.h"

/* One user's entry. n and live change under the map's read lock (atomics,
 * several loops at once); dumped is only touched by counters_dump under the
 * write lock, where nothing else runs. */
struct cval {
    _Atomic uint64_t n;     /* requests */
    _Atomic uint32_t live;  /* live connections (attach - detach) */
    uint64_t dumped;        /* n as of the previous dump */
};

struct counters {
    usermap_t *map; /* name -> struct cval */
};

counters_t *counters_new(void)
{
    counters_t *c = xcalloc(1, sizeof(*c));

    c->map = usermap_new(sizeof(struct cval));
    return c;
}

void counters_free(counters_t *c)
{
    if (!c)
        return;
    usermap_free(c->map);
    free(c);
}

/* Under the write lock, before any other thread sees the entry. */
static void cval_init(struct cval *v)
{
    atomic_init(&v->n, 0);
    atomic_init(&v->live, 0);
    v->dumped = 0;
}

static void inc_value(void *value, bool created, void *arg)
{
    struct cval *v = value;

    (void)arg;
    if (created)
        cval_init(v);
    atomic_fetch_add_explicit(&v->n, 1, memory_order_relaxed);
}

void counters_inc(counters_t *c, const char *user)
{
    usermap_with(c->map, user, true, inc_value, NULL);
}

static void attach_value(void *value, bool created, void *arg)
{
    struct cval *v = value;

    (void)arg;
    if (created)
        cval_init(v);
    atomic_fetch_add_explicit(&v->live, 1, memory_order_relaxed);
}

static void detach_value(void *value, bool created, void *arg)
{
    struct cval *v = value;
    uint32_t old = atomic_load_explicit(&v->live, memory_order_relaxed);

    (void)created;
    (void)arg;
    /* never below 0: an unpaired detach must not pin or free someone else */
    while (old && !atomic_compare_exchange_weak_explicit(&v->live, &old, old - 1,
                                                         memory_order_relaxed,
                                                         memory_order_relaxed))
        ;
}

void counters_attach(counters_t *c, const char *user)
{
    usermap_with(c->map, user, true, attach_value, NULL);
}

void counters_detach(counters_t *c, const char *user)
{
    /* an entry with a live connection is never pruned, so it is there */
    usermap_with(c->map, user, false, detach_value, NULL);
}

size_t counters_count(counters_t *c)
{
    return usermap_count(c->map);
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct counter_entry *)a)->name, ((const struct counter_entry *)b)->name);
}

/* A snapshot being filled under the map's read lock. */
struct snap {
    struct counter_entry *e;
    size_t n, cap;
};

static void snap_put(struct snap *sn, const char *name, uint64_t value)
{
    if (sn->n == sn->cap) {
        sn->cap = sn->cap ? sn->cap * 2 : 64;
        sn->e = xrealloc(sn->e, sn->cap * sizeof(*sn->e));
    }
    sn->e[sn->n].name = xstrdup(name);
    sn->e[sn->n].value = value;
    sn->n++;
}

static void snap_add(const char *name, void *value, void *arg)
{
    struct cval *v = value;

    snap_put(arg, name, atomic_load_explicit(&v->n, memory_order_relaxed));
}

static size_t snap_finish(struct snap *sn, struct counter_entry **out)
{
    if (sn->n > 1)
        qsort(sn->e, sn->n, sizeof(*sn->e), cmp_entry);
    *out = sn->e;
    return sn->n;
}

size_t counters_snapshot(counters_t *c, struct counter_entry **out)
{
    struct snap sn = {0};

    usermap_each(c->map, snap_add, &sn);
    return snap_finish(&sn, out);
}

void counters_snapshot_free(struct counter_entry *e, size_t n)
{
    if (!e)
        return;
    for (size_t i = 0; i < n; i++)
        free(e[i].name);
    free(e);
}

static void sum_value(const char *name, void *value, void *arg)
{
    struct cval *v = value;

    (void)name;
    *(uint64_t *)arg += atomic_load_explicit(&v->n, memory_order_relaxed);
}

uint64_t counters_total(counters_t *c)
{
    uint64_t sum = 0;

    usermap_each(c->map, sum_value, &sum);
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
    uint32_t cp;

    return (size_t)utf8_decode(s, n, &cp);
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

/* Render sorted entries as one JSON object; frees them. */
static char *render_json(struct counter_entry *e, size_t n, int64_t ts_ms)
{
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

char *counters_json(counters_t *c, int64_t ts_ms)
{
    struct counter_entry *e;
    size_t n = counters_snapshot(c, &e);

    return render_json(e, n, ts_ms);
}

/* Under the write lock (nothing else runs): note a changed entry for the
 * line, and say whether an unchanged one with no connection goes. */
static bool dump_entry(const char *name, void *value, void *arg)
{
    struct cval *v = value;
    uint64_t n = atomic_load_explicit(&v->n, memory_order_relaxed);

    if (n != v->dumped) {
        snap_put(arg, name, n);
        v->dumped = n;
        return false;
    }
    return atomic_load_explicit(&v->live, memory_order_relaxed) == 0;
}

char *counters_dump(counters_t *c, int64_t ts_ms)
{
    struct snap sn = {0};
    struct counter_entry *e;

    usermap_remove_if(c->map, dump_entry, &sn);
    size_t n = snap_finish(&sn, &e);
    return render_json(e, n, ts_ms);
}
