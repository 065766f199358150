/*
 * metrics — process counters and gauges, declared once in metrics.def, kept
 * as relaxed C11 atomics in the server object and rendered as Prometheus
 * text by metrics_render. Thread: any.
 */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "msg.h"

struct metrics {
#define X(name, kind, help) _Atomic int64_t name;
#include "metrics.def"
#undef X
    /* parley_storage_commit_seconds histogram, fed by the storage thread */
    _Atomic int64_t commit_bucket[12]; /* cumulative counts per bound */
    _Atomic int64_t commit_count;
    _Atomic int64_t commit_sum_ns;
};

#define METRIC_ADD(m, name, v) atomic_fetch_add_explicit(&(m)->name, (v), memory_order_relaxed)
#define METRIC_INC(m, name) METRIC_ADD(m, name, 1)
#define METRIC_SUB(m, name, v) atomic_fetch_sub_explicit(&(m)->name, (v), memory_order_relaxed)

/* Record one storage commit that took ns nanoseconds. */
void metrics_commit_observe(struct metrics *m, int64_t ns);
/* The Prometheus text exposition of every metric (a finished msg whose
 * payload is the body; the frame header is unused). */
msg_t *metrics_render(struct metrics *m);

#endif
