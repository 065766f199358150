/*
 * store_outbox — dispatch of the outbox calls to the engine that holds the
 * outbox (store_engine.h). A file of its own so that a test may replace
 * the whole outbox at link time (test_notify does).
 */
#include <errno.h>
#include <stdlib.h>

#include "store_engine.h"

int store_outbox_add(store_t *s, struct store_outbox_add *o)
{
    return STORE_BASE(s)->outbox ? STORE_BASE(s)->outbox->add(s, o) : -ENOTSUP;
}

int store_outbox_pending(store_t *s, int64_t now_ms, size_t max, struct store_outbox_row **rows,
                         size_t *n)
{
    return STORE_BASE(s)->outbox ? STORE_BASE(s)->outbox->pending(s, now_ms, max, rows, n)
                                 : -ENOTSUP;
}

void store_outbox_rows_free(struct store_outbox_row *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++)
        free(rows[i].text);
    free(rows);
}

int store_outbox_mark(store_t *s, const char *const *ids, size_t n, const char *state,
                      int attempts, int64_t next_at_ms)
{
    return STORE_BASE(s)->outbox
               ? STORE_BASE(s)->outbox->mark(s, ids, n, state, attempts, next_at_ms)
               : -ENOTSUP;
}
