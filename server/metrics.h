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
#include "store.h"

struct metrics {
#define X(name, kind, help) _Atomic int64_t name;
#include "metrics.def"
#undef X
};

#define METRIC_ADD(m, name, v) atomic_fetch_add_explicit(&(m)->name, (v), memory_order_relaxed)
#define METRIC_INC(m, name) METRIC_ADD(m, name, 1)
#define METRIC_SUB(m, name, v) atomic_fetch_sub_explicit(&(m)->name, (v), memory_order_relaxed)
/* For gauges and counters sampled from another module at scrape time. */
#define METRIC_SET(m, name, v) atomic_store_explicit(&(m)->name, (v), memory_order_relaxed)

/* The Prometheus text exposition of every metric plus the storage commit
 * histogram from st (a finished msg whose payload is the body). */
msg_t *metrics_render(struct metrics *m, const struct store_stats *st);

#endif
