/* strmap — see strmap.h. A thin wrapper over htable: each entry is one
 * allocation holding the node, the value and a copy of the key. */
#include "strmap.h"

#include <stdlib.h>
#include <string.h>

#include "htable.h"
#include "util.h"

struct entry {
    struct hnode node;
    void *val;
    char key[];
};

struct strmap {
    struct htable t; /* its own key: keys are names clients chose */
};

strmap_t *strmap_new(void)
{
    strmap_t *m = xcalloc(1, sizeof(*m));
    htable_init(&m->t, 16);
    return m;
}

static bool free_entry(struct hnode *n, void *arg)
{
    void (*free_val)(void *) = *(void (**)(void *))arg;
    struct entry *e = htable_entry(n, struct entry, node);
    if (free_val)
        free_val(e->val);
    free(e);
    return true;
}

void strmap_free(strmap_t *m, void (*free_val)(void *))
{
    if (!m)
        return;
    htable_sweep(&m->t, free_entry, &free_val);
    htable_fini(&m->t);
    free(m);
}

static struct entry *find(const strmap_t *m, const char *key)
{
    struct hnode *n = htable_find(&m->t, key);
    return n ? htable_entry(n, struct entry, node) : NULL;
}

void *strmap_get(const strmap_t *m, const char *key)
{
    struct entry *e = find(m, key);
    return e ? e->val : NULL;
}

void *strmap_put(strmap_t *m, const char *key, void *val)
{
    struct entry *e = find(m, key);
    if (e) {
        void *old = e->val;
        e->val = val;
        return old;
    }
    size_t kl = strlen(key) + 1;
    e = xmalloc(sizeof(*e) + kl);
    memcpy(e->key, key, kl);
    e->val = val;
    htable_insert(&m->t, &e->node, e->key);
    return NULL;
}

void *strmap_del(strmap_t *m, const char *key)
{
    struct entry *e = find(m, key);
    if (!e)
        return NULL;
    void *v = e->val;
    htable_remove(&m->t, &e->node);
    free(e);
    return v;
}

size_t strmap_count(const strmap_t *m)
{
    return htable_count(&m->t);
}

struct sweep_ctx {
    bool (*fn)(const char *key, void *val, void *arg);
    void *arg;
};

static bool sweep_one(struct hnode *n, void *arg)
{
    struct sweep_ctx *s = arg;
    struct entry *e = htable_entry(n, struct entry, node);
    if (!s->fn(e->key, e->val, s->arg))
        return false;
    free(e);
    return true;
}

void strmap_sweep(strmap_t *m, bool (*fn)(const char *key, void *val, void *arg), void *arg)
{
    struct sweep_ctx s = {fn, arg};
    htable_sweep(&m->t, sweep_one, &s);
}
