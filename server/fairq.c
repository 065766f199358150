/*
 * fairq — see fairq.h. Keys with items waiting form a ring (a singly
 * linked list with a tail pointer): pop takes the head key's first item and
 * moves that key to the tail if it has more.
 */
#include "fairq.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "strmap.h"
#include "util.h"

struct fairq_key {
    struct fairq_item *head, **tail; /* waiting */
    size_t held;                     /* waiting + being worked on */
    bool in_ring;
    struct fairq_key *ring_next;
    char name[];
};

struct fairq {
    size_t max_items, max_per_key;
    size_t depth;
    strmap_t *keys; /* name -> struct fairq_key */
    struct fairq_key *ring, **ring_tail;
};

fairq_t *fairq_new(size_t max_items, size_t max_per_key)
{
    fairq_t *q = xcalloc(1, sizeof(*q));
    q->max_items = max_items ? max_items : 1;
    q->max_per_key = max_per_key ? max_per_key : 1;
    q->keys = strmap_new();
    q->ring_tail = &q->ring;
    return q;
}

void fairq_free(fairq_t *q)
{
    if (!q)
        return;
    strmap_free(q->keys, free);
    free(q);
}

static void ring_append(fairq_t *q, struct fairq_key *k)
{
    k->ring_next = NULL;
    k->in_ring = true;
    *q->ring_tail = k;
    q->ring_tail = &k->ring_next;
}

int fairq_push(fairq_t *q, const char *key, struct fairq_item *it)
{
    struct fairq_key *k = strmap_get(q->keys, key);
    if (k && k->held >= q->max_per_key)
        return -EBUSY;
    if (q->depth >= q->max_items)
        return -ENOSPC;
    if (!k) {
        size_t n = strlen(key);
        k = xcalloc(1, sizeof(*k) + n + 1);
        memcpy(k->name, key, n + 1);
        k->tail = &k->head;
        strmap_put(q->keys, key, k);
    }
    it->next = NULL;
    it->key = k;
    *k->tail = it;
    k->tail = &it->next;
    k->held++;
    q->depth++;
    if (!k->in_ring)
        ring_append(q, k);
    return 0;
}

struct fairq_item *fairq_pop(fairq_t *q)
{
    struct fairq_key *k = q->ring;
    if (!k)
        return NULL;
    q->ring = k->ring_next;
    if (!q->ring)
        q->ring_tail = &q->ring;
    k->in_ring = false;
    struct fairq_item *it = k->head;
    k->head = it->next;
    if (!k->head)
        k->tail = &k->head;
    else
        ring_append(q, k);
    it->next = NULL;
    q->depth--;
    return it;
}

void fairq_done(fairq_t *q, struct fairq_item *it)
{
    struct fairq_key *k = it->key;
    it->key = NULL;
    if (!k || !k->held)
        return;
    if (--k->held == 0) {
        /* nothing waiting either (a waiting item is held): the record goes */
        strmap_del(q->keys, k->name);
        free(k);
    }
}

size_t fairq_depth(const fairq_t *q)
{
    return q->depth;
}

size_t fairq_keys(const fairq_t *q)
{
    return strmap_count(q->keys);
}

size_t fairq_held(const fairq_t *q, const char *key)
{
    const struct fairq_key *k = strmap_get(q->keys, key);
    return k ? k->held : 0;
}
