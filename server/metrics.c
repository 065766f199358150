/* metrics — see metrics.h. */
#include "metrics.h"

#include <string.h>

msg_t *metrics_render(struct metrics *m, const struct store_stats *st)
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
    for (size_t i = 0; i < STORE_COMMIT_BUCKETS; i++)
        mb_printf(&b, "parley_storage_commit_seconds_bucket{le=\"%g\"} %llu\n", st->commit_le[i],
                  (unsigned long long)st->commit_le_count[i]);
    mb_printf(&b, "parley_storage_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
              (unsigned long long)st->commits);
    mb_printf(&b, "parley_storage_commit_seconds_sum %.9f\n", st->commit_seconds_sum);
    mb_printf(&b, "parley_storage_commit_seconds_count %llu\n", (unsigned long long)st->commits);
    mb_printf(&b, "# HELP parley_storage_wal_syncs_total WAL fdatasyncs acks waited for"
                  " (durability full)\n# TYPE parley_storage_wal_syncs_total counter\n"
                  "parley_storage_wal_syncs_total %llu\n",
              (unsigned long long)st->syncs);
    mb_printf(&b, "# HELP parley_storage_wal_sync_seconds_total Time spent in those fdatasyncs\n"
                  "# TYPE parley_storage_wal_sync_seconds_total counter\n"
                  "parley_storage_wal_sync_seconds_total %.9f\n",
              st->sync_seconds_sum);
    return mb_finish(&b);
}
