/*
 * fake_store — an in-memory engine behind the storage seam (store.h), for
 * unit tests of the broker: what the SQLite engine promises on the basics
 * (requests complete once, in queue order, on a thread of the store's own;
 * a duplicate (room, from, id) reports the original seq and is stored
 * without its id; a barrier completes after everything before it; reads
 * see committed events only), plus knobs the real one cannot offer:
 *
 *   - injected failures: submits answer -EAGAIN (or any errno), commits
 *     report a failed status;
 *   - delays: hold completions, then release them one at a time, so a test
 *     can send a duplicate while the first write is still uncommitted;
 *   - inspection: the committed events, in order.
 *
 * tests/unit/test_store_contract.c runs one body against this and SQLite.
 * Accounts: no users, user-seen writes complete; account calls -ENOTSUP.
 * Outbox: adds complete and are counted; nothing is ever pending.
 *
 * Thread: every function on any thread.
 */
#ifndef PARLEY_FAKE_STORE_H
#define PARLEY_FAKE_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "store.h"

/* A new empty fake; free with store_close (it completes what is queued,
 * held or not, first). */
store_t *fake_store_new(void);

/* Every later submit (append, barrier, user seen, outbox add) answers err
 * (e.g. -EAGAIN; 0: accept again). Reads are not affected. */
void fake_store_fail_submit(store_t *s, int err);
/* Every later commit reports status (e.g. -EIO; 0: succeed again). Like the
 * SQLite engine, which keeps retrying a failed batch, a failed append is
 * still stored: the failure is in the report, not in the log. */
void fake_store_fail_commit(store_t *s, int status);

/* Hold completions (true): submitted requests wait, uncommitted (reads of
 * them see nothing) until released. false lets everything go. */
void fake_store_hold(store_t *s, bool hold);
/* While held: commit and complete the next n queued requests, in order,
 * and wait until their done() have returned. Returns how many there were. */
size_t fake_store_release(store_t *s, size_t n);
/* Requests submitted and not yet completed. */
size_t fake_store_queued(store_t *s);
/* Wait until nothing is queued and no done() (of a write or a read) is
 * still running (not while held with requests waiting). */
void fake_store_drain(store_t *s);

/* Committed events, in commit order; *out is a copy whose strings live as
 * long as s. false when i is past the end. */
bool fake_store_event(store_t *s, size_t i, struct room_event *out);
size_t fake_store_nevents(store_t *s);
/* Outbox rows added. */
size_t fake_store_outbox_adds(store_t *s);

#endif
