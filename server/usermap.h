/*
 * usermap — a read-mostly concurrent map from user name to a fixed-size value
 * area, the mechanism under counters and ratelimit.
 *
 * It owns the entries (the name and a zero-initialised value area of the
 * size given at creation, aligned for any type) and the one rwlock that
 * guards the map's shape. Every I/O loop thread looks up and creates
 * entries; any thread iterates (the dumper, the HTTP API) or removes (the
 * rate-limit sweep, the dumper's pruning of idle counters). A lookup of a
 * known name takes only the read lock; a miss takes the write lock and looks
 * again before inserting, so racing threads create a name once. What the
 * value holds and how it is updated under the read lock (atomics, so several
 * readers can update one value at once) is up to the user of the map.
 *
 * A value pointer is valid only inside the callback it is passed to: once
 * the callback returns, the lock is released and the entry may be removed.
 */
#ifndef PARLEY_USERMAP_H
#define PARLEY_USERMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct usermap usermap_t;

/* Called with name's value while the map is locked (read or write lock).
 * created is true exactly once per entry: on the call that inserted it,
 * under the write lock, before any other thread can see it, so fn may
 * initialise the value then with plain stores or atomic_init. */
typedef void (*usermap_fn)(void *value, bool created, void *arg);
/* Called for each entry by usermap_each under the read lock. */
typedef void (*usermap_each_fn)(const char *name, void *value, void *arg);
/* Called for each entry by usermap_remove_if under the write lock (no other
 * callback runs meanwhile, so it may also update the value of an entry it
 * keeps with plain stores); returns true to remove (and free) the entry. */
typedef bool (*usermap_pred_fn)(const char *name, void *value, void *arg);

/* Each entry carries value_size bytes (0 is fine), zeroed at creation.
 * Thread: any. Never NULL (allocation failure aborts). */
usermap_t *usermap_new(size_t value_size);
/* Thread: any, once no other thread uses m. NULL is fine. */
void usermap_free(usermap_t *m);

/*
 * Run fn(value, created, arg) on name's entry while the map is locked: under
 * the read lock if it exists. If it does not and create is false, fn is not
 * called and the result is false. If create is true, the write lock is taken
 * and the map searched again: fn runs under that write lock, with created
 * true if this call inserted the entry, false if another thread did in the
 * meantime. Returns whether fn ran. fn must not call back into m.
 * Thread: any.
 */
bool usermap_with(usermap_t *m, const char *name, bool create, usermap_fn fn, void *arg);

/* Run fn on every entry, in no particular order, all under one read lock (so
 * the set is that of one moment); returns how many entries it visited.
 * fn must not call back into m. Thread: any. */
size_t usermap_each(usermap_t *m, usermap_each_fn fn, void *arg);

/* Remove every entry for which pred returns true, under the write lock;
 * returns how many were removed. pred must not call back into m.
 * Thread: any. */
size_t usermap_remove_if(usermap_t *m, usermap_pred_fn pred, void *arg);

/* Number of entries. Thread: any. */
size_t usermap_count(usermap_t *m);

#endif
