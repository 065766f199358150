/* metrics — see metrics.h. */
#include "metrics.h"

#include <string.h>

static const double commit_bounds[12] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
                                         0.05,   0.1,   0.25,  0.5,   1.0,  2.5};

void metrics_commit_observe(struct metrics *m, int64_t ns)
{
    double s = (double)ns / 1e9;
    for (size_t i = 0; i < 12; i++)
        if (s <= commit_bounds[i])
            METRIC_INC(m, commit_bucket[i]);
    METRIC_INC(m, commit_count);
    METRIC_ADD(m, commit_sum_ns, ns);
}

msg_t *metrics_render(struct metrics *m)
{
    struct msgbuf b;
    mb_init(&b, 4096);
#define X(name, kind, help)                                                                        \
    mb_printf(&b, "# HELP parley_" #name " " help "\n# TYPE parley_" #name " " #kind               \
                  "\nparley_" #name " %lld\n",                                                     \
              (long long)atomic_load_explicit(&m->name, memory_order_relaxed));
#include "metrics.def"
#undef X
    mb_puts(&b, "# HELP parley_storage_commit_seconds Duration of storage group commits\n"
                "# TYPE parley_storage_commit_seconds histogram\n");
    for (size_t i = 0; i < 12; i++)
        mb_printf(&b, "parley_storage_commit_seconds_bucket{le=\"%g\"} %lld\n", commit_bounds[i],
                  (long long)atomic_load_explicit(&m->commit_bucket[i], memory_order_relaxed));
    long long cnt = (long long)atomic_load_explicit(&m->commit_count, memory_order_relaxed);
    mb_printf(&b, "parley_storage_commit_seconds_bucket{le=\"+Inf\"} %lld\n", cnt);
    mb_printf(&b, "parley_storage_commit_seconds_sum %.9f\n",
              (double)atomic_load_explicit(&m->commit_sum_ns, memory_order_relaxed) / 1e9);
    mb_printf(&b, "parley_storage_commit_seconds_count %lld\n", cnt);
    return mb_finish(&b);
}
