/*
 * counters — per-user request counters (GET /api/stats/users, the dumper).
 *
 * Read-mostly map from user name to an atomic 64-bit count: I/O loop threads
 * increment on every request frame, the dumper and the HTTP API read
 * snapshots. The map's lock only guards its shape; increments are relaxed
 * atomic adds under the read lock, so loops never serialise on a known user.
 *
 * Entries are pruned by the dumper, so that names that come and go (open
 * mode hands out any free name) cost nothing once they are gone: a user with
 * no live connection (attach/detach) whose count did not change since the
 * previous dump is forgotten by that dump; if it comes back, its count starts
 * again from 0. The map therefore holds the users online now plus those
 * active during the last dump interval.
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

/* A connection of user signed in: the entry (created at 0 if need be) is
 * kept by every dump while it has a live connection. Thread: any. */
void counters_attach(counters_t *c, const char *user);
/* That connection is gone (one detach per attach). Thread: any. */
void counters_detach(counters_t *c, const char *user);

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

/*
 * One dump line, in counters_json's form but listing only the users whose
 * count changed since the previous counters_dump (on the first call: every
 * user with a count above 0), each with its whole count. Then, in the same
 * pass, forgets every user whose count did not change and who has no live
 * connection. Caller frees. Thread: any (the dumper); takes the map's write
 * lock for one pass over the entries, the JSON is built after it.
 */
char *counters_dump(counters_t *c, int64_t ts_ms);

/* Number of users held. Thread: any. */
size_t counters_count(counters_t *c);

#endif
