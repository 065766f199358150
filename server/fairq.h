/*
 * fairq — a bounded queue that takes turns between keys (client addresses),
 * so one key cannot make everybody else wait behind it.
 *
 * Items wait in one FIFO per key; fairq_pop serves the keys round-robin
 * (the key served goes to the back of the line if it has more), so a new
 * key's first item waits for at most one item of each other key. Two
 * bounds: max_items waiting in all, and max_per_key items of one key
 * waiting or being worked on (an item counts against its key from push
 * until fairq_done), so one key can never fill the queue.
 *
 * Items are intrusive (struct fairq_item inside the caller's struct); the
 * queue only links them. A key's record exists only while it has items
 * waiting or being worked on, so memory is bounded by the items.
 *
 * Not synchronised: the owner's lock guards it (like strmap).
 */
#ifndef PARLEY_FAIRQ_H
#define PARLEY_FAIRQ_H

#include <stddef.h>

struct fairq_key;

struct fairq_item {
    struct fairq_item *next; /* private */
    struct fairq_key *key;   /* private */
};

typedef struct fairq fairq_t;

/* max_items >= 1 waiting in all, max_per_key >= 1 per key waiting or being
 * worked on. Never NULL. */
fairq_t *fairq_new(size_t max_items, size_t max_per_key);
/* Items still queued are the caller's (pop them first). NULL is fine. */
void fairq_free(fairq_t *q);

/* Queue it under key: 0, -EBUSY if the key holds max_per_key items already,
 * -ENOSPC if max_items are waiting. */
int fairq_push(fairq_t *q, const char *key, struct fairq_item *it);
/* The next item (round-robin over keys, FIFO within a key), or NULL. It
 * still counts against its key until fairq_done. */
struct fairq_item *fairq_pop(fairq_t *q);
/* A popped item is finished: its key's share is given back. */
void fairq_done(fairq_t *q, struct fairq_item *it);

size_t fairq_depth(const fairq_t *q); /* items waiting */
size_t fairq_keys(const fairq_t *q);  /* keys with items waiting or being worked on */
size_t fairq_held(const fairq_t *q, const char *key); /* key's items waiting or worked on */

#endif
