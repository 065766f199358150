/*
 * counters — per-user request counters (GET /api/stats/users, the dumper).
 *
 * Read-mostly map from user name to an atomic 64-bit count: I/O loop threads
 * increment on every request frame, the dumper and the HTTP API read
 * snapshots. The map's lock only guards its shape; increments are relaxed
 * atomic adds under the read lock, so loops never serialise on a known user.
 * Entries are never removed (one per account that ever sent a request).
 */
#ifndef PARLEY_COUNTERS_H
#define PARLEY_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

typedef struct counters counters_t;

struct counter_entry {
    char *name;
    uint64_t value;
};

/* Thread: any. Never NULL (allocation failure aborts). */
counters_t *counters_new(void);
/* Thread: any, once no other thread uses c. NULL is fine. */
void counters_free(counters_t *c);

/* Add 1 to user's count, creating it at 1 on first use. Thread: any. */
void counters_inc(counters_t *c, const char *user);

/* Copy every (name, value) into a new array sorted by name (byte order);
 * returns the number of entries (*out is NULL when 0). Each value is read
 * atomically, the set as of one moment under the map lock. Thread: any. */
size_t counters_snapshot(counters_t *c, struct counter_entry **out);
/* Thread: any. Frees a snapshot of n entries; NULL is fine. */
void counters_snapshot_free(struct counter_entry *e, size_t n);

/* Sum of every count. Thread: any. */
uint64_t counters_total(counters_t *c);

/* A malloc'd NUL-terminated JSON object
 *   {"ts":<ts_ms>,"users":{"alice":12,...}}
 * with names sorted and escaped (bytes that are not valid UTF-8 are written
 * as \u00XX, so the output is always valid JSON). Caller frees. Thread: any. */
char *counters_json(counters_t *c, int64_t ts_ms);

#endif
