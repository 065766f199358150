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
    if (st->shared) {
        mb_printf(&b,
                  "# HELP parley_engine_up The cluster engine reaches every Redis shard (1) or"
                  " not (0)\n# TYPE parley_engine_up gauge\nparley_engine_up %d\n"
                  "# HELP parley_engine_reconnects_total Reconnects to a Redis shard\n"
                  "# TYPE parley_engine_reconnects_total counter\n"
                  "parley_engine_reconnects_total %llu\n"
                  "# HELP parley_engine_gap_fills_total Ranges read from a room log to close a"
                  " delivery gap\n# TYPE parley_engine_gap_fills_total counter\n"
                  "parley_engine_gap_fills_total %llu\n"
                  "# HELP parley_engine_gap_filled_total Events delivered by gap fills\n"
                  "# TYPE parley_engine_gap_filled_total counter\n"
                  "parley_engine_gap_filled_total %llu\n"
                  "# HELP parley_engine_lost_total Seqs a gap fill found missing from a log\n"
                  "# TYPE parley_engine_lost_total counter\nparley_engine_lost_total %llu\n"
                  "# HELP parley_engine_reseeded_total Rooms whose seq a Redis had lost (it"
                  " restarted without its data), raised above what this node delivered\n"
                  "# TYPE parley_engine_reseeded_total counter\n"
                  "parley_engine_reseeded_total %llu\n"
                  "# HELP parley_engine_rtt_seconds Redis command round trips\n"
                  "# TYPE parley_engine_rtt_seconds summary\n"
                  "parley_engine_rtt_seconds_sum %.9f\nparley_engine_rtt_seconds_count %llu\n"
                  "# HELP parley_engine_subscriptions Channels this node subscribes to\n"
                  "# TYPE parley_engine_subscriptions gauge\n"
                  "parley_engine_subscriptions %llu\n",
                  st->engine_up ? 1 : 0, (unsigned long long)st->engine_reconnects,
                  (unsigned long long)st->engine_gap_fills,
                  (unsigned long long)st->engine_filled, (unsigned long long)st->engine_lost,
                  (unsigned long long)st->engine_reseeded,
                  st->engine_rtt_seconds_sum, (unsigned long long)st->engine_rtt_count,
                  (unsigned long long)st->engine_subscriptions);
    }
    return mb_finish(&b);
}
