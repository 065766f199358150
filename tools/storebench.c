/*
 * storebench — how many messages per second the store makes durable, and
 * how long a submitter waits for its ack (submit -> done), with group commit
 * against one transaction per message. A benchmark, not a test: it prints a
 * table and judges the two targets (group >= 20x single with durable,
 * fsynced commits; ack p99 < 20 ms at 10,000 msg/s) but never fails a build.
 *
 *   storebench [--db PATH] [--senders N] [--messages M] [--rate R]
 *              [--mode group|single] [--durability normal|full]
 *              [--seconds S] [--batch-max B] [--window-us W]
 *
 * Without --senders, --mode and --rate it runs the whole matrix: both modes
 * with 1 and 100 unpaced senders, then group commit paced at 10,000 msg/s.
 * Each sender writes its own room with gapless seqs and client ids, like
 * the broker does. The single mode is the naive store: batch_max 1 and,
 * with --durability full, SQLite's own fsync inside every COMMIT
 * (sync_in_commit), so each message pays a transaction and an fsync. A paced sender's latency counts from the moment its
 * message was due, not when it got round to sending it, so a stall shows up
 * in the numbers instead of quietly slowing the load down.
 *
 * Runs on any thread layout; the store's threads call done().
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store.h"
#include "util.h"

#define TEXT_BYTES 100
/* Messages in flight (submitted, not yet acked) over all senders: like a
 * broker with bounded client queues, an unpaced sender waits for acks
 * instead of spinning on -EAGAIN, which on 2 cores starves the writer. */
#define INFLIGHT_TOTAL 8192

static bool verbose;

struct bmsg {
    struct store_append w;
    char room[24];
    char from[24];
    char id[32];
    int64_t due_ns; /* latency counts from here */
    struct run *run;
};

struct run {
    /* configuration */
    const char *path;
    bool single, full;
    int senders;
    int messages;
    double rate;  /* total msg/s over all senders, 0 = as fast as possible */
    double max_seconds;
    int batch_max, window_us;

    /* state */
    store_t *s;
    struct bmsg *msgs;
    int64_t *lat_ns;           /* by message index, written by done() */
    char text[TEXT_BYTES + 1];
    int64_t start_ns;
    atomic_int_fast64_t acked;
    atomic_int_fast64_t last_ack_ns;
    atomic_int_fast64_t submitted;
    atomic_int_fast64_t eagain;
    atomic_int failed;
    struct sender *sd;

    /* results */
    double seconds, msgs_per_s;
    double p50_ms, p99_ms, max_ms;
    uint64_t commits;
    struct store_stats st;
};

struct sender {
    struct run *r;
    int idx;
    sem_t slots; /* in-flight budget, returned by msg_done */
    pthread_t tid;
};

static void msg_done(struct store_append *w)
{
    struct bmsg *m = (struct bmsg *)w;
    struct run *r = m->run;
    int64_t now = now_mono_ns();
    r->lat_ns[m - r->msgs] = now - m->due_ns;
    if (w->status != 0)
        atomic_fetch_add_explicit(&r->failed, 1, memory_order_relaxed);
    atomic_store_explicit(&r->last_ack_ns, now, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->acked, 1, memory_order_release);
    sem_post(&r->sd[(m - r->msgs) % r->senders].slots);
}

static void sleep_until(int64_t mono_ns)
{
    struct timespec ts = {(time_t)(mono_ns / 1000000000), (long)(mono_ns % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void *sender_main(void *arg)
{
    struct sender *sd = arg;
    struct run *r = sd->r;
    /* sender i owns messages i, i + N, i + 2N, ... */
    int n = (r->messages - sd->idx + r->senders - 1) / r->senders;
    int64_t deadline = r->start_ns + (int64_t)(r->max_seconds * 1e9);
    double per_sender_rate = r->rate / r->senders;

    for (int k = 0; k < n; k++) {
        struct bmsg *m = &r->msgs[(size_t)k * (size_t)r->senders + (size_t)sd->idx];
        while (sem_wait(&sd->slots) != 0 && errno == EINTR)
            ;
        int64_t now = now_mono_ns();
        if (now >= deadline)
            break;
        if (r->rate > 0) {
            /* stagger the senders across one period */
            m->due_ns = r->start_ns + (int64_t)(((double)k + (double)sd->idx / r->senders) /
                                                per_sender_rate * 1e9);
            if (m->due_ns > now)
                sleep_until(m->due_ns);
        } else {
            m->due_ns = now;
        }
        for (;;) {
            int rc = store_append(r->s, &m->w);
            if (rc == 0)
                break;
            if (rc != -EAGAIN) {
                fprintf(stderr, "storebench: submit failed: %s\n", strerror(-rc));
                return NULL;
            }
            atomic_fetch_add_explicit(&r->eagain, 1, memory_order_relaxed);
            struct timespec d = {0, 50000};
            nanosleep(&d, NULL);
        }
        atomic_fetch_add_explicit(&r->submitted, 1, memory_order_relaxed);
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void remove_db(const char *path)
{
    char p[4200];
    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
}

static int run_one(struct run *r)
{
    char err[512];
    struct store_opts o = {
        .path = r->path,
        .durability_full = r->full,
        /* the baseline: each message its own transaction and its own fsync */
        .sync_in_commit = r->single,
        .batch_max = r->single ? 1 : r->batch_max,
        .batch_window_us = r->single ? -1 : r->window_us,
    };
    int rc = -1;

    remove_db(r->path);
    /* start every run on a quiet disk: the writeback of the run before
     * would otherwise land in this run's fsyncs */
    sync();
    r->s = store_open(&o, err, sizeof(err));
    if (!r->s) {
        fprintf(stderr, "storebench: %s\n", err);
        return -1;
    }
    r->msgs = xcalloc((size_t)r->messages, sizeof(*r->msgs));
    r->lat_ns = xcalloc((size_t)r->messages, sizeof(*r->lat_ns));
    memset(r->text, 'x', TEXT_BYTES);
    r->text[TEXT_BYTES] = '\0';
    for (int i = 0; i < r->messages; i++) {
        struct bmsg *m = &r->msgs[i];
        int sender = i % r->senders;
        snprintf(m->room, sizeof(m->room), "bench-%d", sender);
        snprintf(m->from, sizeof(m->from), "user%d", sender);
        snprintf(m->id, sizeof(m->id), "c%d-%d", sender, i / r->senders);
        m->run = r;
        m->w.ev.room = m->room;
        m->w.ev.seq = (uint64_t)(i / r->senders) + 1;
        m->w.ev.from = m->from;
        m->w.ev.text = r->text;
        m->w.ev.text_len = TEXT_BYTES;
        m->w.ev.ts = now_wall_ms();
        m->w.ev.id = m->id;
        m->w.done = msg_done;
    }
    atomic_store(&r->acked, 0);
    atomic_store(&r->submitted, 0);
    atomic_store(&r->eagain, 0);
    atomic_store(&r->failed, 0);

    struct sender *sd = xcalloc((size_t)r->senders, sizeof(*sd));
    unsigned slots = INFLIGHT_TOTAL / (unsigned)r->senders;
    r->sd = sd;
    for (int i = 0; i < r->senders; i++) {
        if (sem_init(&sd[i].slots, 0, slots ? slots : 1) != 0) {
            perror("storebench: sem_init");
            exit(1);
        }
    }
    r->start_ns = now_mono_ns();
    int started = 0;
    for (int i = 0; i < r->senders; i++) {
        sd[i].r = r;
        sd[i].idx = i;
        if (pthread_create(&sd[i].tid, NULL, sender_main, &sd[i]) != 0) {
            fprintf(stderr, "storebench: cannot start sender %d\n", i);
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(sd[i].tid, NULL);

    /* wait for every ack; a benchmark may poll */
    int64_t submitted = atomic_load(&r->submitted);
    while (atomic_load_explicit(&r->acked, memory_order_acquire) < submitted) {
        struct timespec d = {0, 200000};
        nanosleep(&d, NULL);
    }
    struct store_stats st;
    store_stats(r->s, &st);
    r->commits = st.commits;
    r->st = st;
    store_close(r->s);
    r->s = NULL;
    for (int i = 0; i < r->senders; i++)
        sem_destroy(&sd[i].slots);
    free(sd);
    r->sd = NULL;

    if (started == r->senders && submitted > 0 && atomic_load(&r->failed) == 0) {
        /* only messages that were submitted have a latency; they are not
         * contiguous when the time cap stopped senders early */
        int64_t *lat = xmalloc((size_t)submitted * sizeof(*lat));
        size_t n = 0;
        for (int i = 0; i < r->messages && n < (size_t)submitted; i++)
            if (r->msgs[i].due_ns)
                lat[n++] = r->lat_ns[i];
        qsort(lat, n, sizeof(*lat), cmp_i64);
        r->seconds = (double)(atomic_load(&r->last_ack_ns) - r->start_ns) / 1e9;
        r->msgs_per_s = (double)n / r->seconds;
        r->p50_ms = (double)lat[n / 2] / 1e6;
        r->p99_ms = (double)lat[(n * 99) / 100] / 1e6;
        r->max_ms = (double)lat[n - 1] / 1e6;
        r->messages = (int)n;
        free(lat);
        rc = 0;
    } else if (atomic_load(&r->failed)) {
        fprintf(stderr, "storebench: %d writes failed\n", atomic_load(&r->failed));
    }
    free(r->msgs);
    free(r->lat_ns);
    r->msgs = NULL;
    r->lat_ns = NULL;
    remove_db(r->path);
    return rc;
}

static void print_header(void)
{
    printf("%-6s %-6s %7s %8s %9s %8s %10s %8s %7s %9s %9s %9s\n", "mode", "sync", "senders",
           "rate/s", "messages", "seconds", "msg/s", "commits", "msg/tx", "p50 ms", "p99 ms",
           "max ms");
}

static void print_row(const struct run *r)
{
    char rate[16];
    if (r->rate > 0)
        snprintf(rate, sizeof(rate), "%.0f", r->rate);
    else
        snprintf(rate, sizeof(rate), "max");
    printf("%-6s %-6s %7d %8s %9d %8.2f %10.0f %8" PRIu64 " %7.1f %9.3f %9.3f %9.3f\n",
           r->single ? "single" : "group", r->full ? "full" : "normal", r->senders, rate,
           r->messages, r->seconds, r->msgs_per_s, r->commits,
           r->commits ? (double)r->messages / (double)r->commits : 0.0, r->p50_ms, r->p99_ms,
           r->max_ms);
    if (verbose) {
        /* where the writer's time went: the commit-duration histogram */
        printf("       commits taking <=");
        uint64_t prev = 0;
        for (int i = 0; i < STORE_COMMIT_BUCKETS; i++) {
            uint64_t n = r->st.commit_le_count[i] - prev;
            prev = r->st.commit_le_count[i];
            if (n)
                printf(" %gms:%" PRIu64, r->st.commit_le[i] * 1e3, n);
        }
        if (r->st.commits > prev)
            printf(" more:%" PRIu64, r->st.commits - prev);
        printf("\n");
    }
    fflush(stdout);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: storebench [--db PATH] [--senders N] [--messages M] [--rate R]\n"
            "                  [--mode group|single] [--durability normal|full]\n"
            "                  [--seconds S] [--batch-max B] [--window-us W] [--verbose]\n"
            "  --db PATH        database file to create and remove (must not exist;\n"
            "                   default: a temporary directory)\n"
            "  --senders N      concurrent sender threads (default: 1 and 100)\n"
            "  --messages M     messages per run at most (default 300000; --seconds ends a\n"
            "                   run sooner)\n"
            "  --rate R         pace all senders together at R msg/s (default: unpaced,\n"
            "                   plus a group-commit run at 10000 msg/s)\n"
            "  --mode M         group (default batch/window) or single (one transaction\n"
            "                   per message); default: both\n"
            "  --durability D   normal (synchronous=NORMAL, default) or full\n"
            "  --seconds S      stop submitting after S seconds (default 10)\n"
            "  --batch-max B    group mode batch_max (default: the store's, 512)\n"
            "  --window-us W    group mode batch window (default: the store's, 1000)\n"
            "  --verbose        debug logs and each run's commit-duration histogram\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},       {"senders", required_argument, NULL, 'n'},
        {"messages", required_argument, NULL, 'm'}, {"rate", required_argument, NULL, 'r'},
        {"mode", required_argument, NULL, 'M'},     {"durability", required_argument, NULL, 'D'},
        {"seconds", required_argument, NULL, 's'},  {"batch-max", required_argument, NULL, 'b'},
        {"window-us", required_argument, NULL, 'w'}, {"help", no_argument, NULL, 'h'},
        {"verbose", no_argument, NULL, 'v'},
        {NULL, 0, NULL, 0},
    };
    const char *db = NULL;
    int senders = 0, messages = 300000, batch_max = 0, window_us = 0;
    double rate = -1, seconds = 10;
    int mode = -1; /* -1 both, 0 group, 1 single */
    bool full = false;
    int c;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            db = optarg;
            break;
        case 'n':
            senders = atoi(optarg);
            break;
        case 'm':
            messages = atoi(optarg);
            break;
        case 'r':
            rate = atof(optarg);
            break;
        case 'M':
            if (strcmp(optarg, "group") == 0)
                mode = 0;
            else if (strcmp(optarg, "single") == 0)
                mode = 1;
            else
                goto bad;
            break;
        case 'D':
            if (strcmp(optarg, "full") == 0)
                full = true;
            else if (strcmp(optarg, "normal") != 0)
                goto bad;
            break;
        case 's':
            seconds = atof(optarg);
            break;
        case 'b':
            batch_max = atoi(optarg);
            break;
        case 'w':
            window_us = atoi(optarg);
            break;
        case 'v':
            verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            goto bad;
        }
    }
    if (optind != argc || messages <= 0 || senders < 0 || seconds <= 0 || rate == 0)
        goto bad;
    if (senders > messages)
        senders = messages;

    log_set_level(verbose ? LOG_DEBUG : LOG_WARN);
    char tmpdir[] = "/tmp/storebench-XXXXXX";
    char path[4200];
    bool own_dir = !db;
    if (own_dir) {
        if (!mkdtemp(tmpdir)) {
            perror("storebench: mkdtemp");
            return 1;
        }
        snprintf(path, sizeof(path), "%s/bench.db", tmpdir);
    } else {
        struct stat sb;
        if (stat(db, &sb) == 0) {
            fprintf(stderr, "storebench: '%s' exists; give a path to create\n", db);
            return 1;
        }
        snprintf(path, sizeof(path), "%s", db);
    }

    int sender_list[2] = {1, 100}, nsenders = 2;
    if (senders) {
        sender_list[0] = senders;
        nsenders = 1;
    }
    int modes[2] = {0, 1}, nmodes = 2;
    if (mode >= 0) {
        modes[0] = mode;
        nmodes = 1;
    }

    printf("storebench: %d messages of %d bytes per run, durability %s, db %s\n", messages,
           TEXT_BYTES, full ? "full" : "normal", path);
    print_header();
    double tput[2][2] = {{0}}; /* [mode][sender index] */
    double paced_p99 = -1;
    int failures = 0;
    for (int mi = 0; mi < nmodes; mi++) {
        for (int si = 0; si < nsenders; si++) {
            struct run r = {
                .path = path, .single = modes[mi] == 1, .full = full,
                .senders = sender_list[si], .messages = messages,
                .rate = rate > 0 ? rate : 0, .max_seconds = seconds,
                .batch_max = batch_max, .window_us = window_us,
            };
            if (run_one(&r) != 0) {
                failures++;
                continue;
            }
            print_row(&r);
            tput[modes[mi]][si] = r.msgs_per_s;
            if (r.rate > 0 && !r.single && r.senders == sender_list[nsenders - 1])
                paced_p99 = r.p99_ms;
        }
    }
    if (rate < 0 && mode != 1) {
        /* the latency target: group commit under a steady 10,000 msg/s */
        for (int si = 0; si < nsenders; si++) {
            struct run r = {
                .path = path, .full = full, .senders = sender_list[si],
                .messages = messages, .rate = 10000, .max_seconds = seconds,
                .batch_max = batch_max, .window_us = window_us,
            };
            if (run_one(&r) != 0) {
                failures++;
                continue;
            }
            print_row(&r);
            if (si == nsenders - 1)
                paced_p99 = r.p99_ms;
        }
    }

    printf("\n");
    if (nmodes == 2) {
        for (int si = 0; si < nsenders; si++) {
            if (tput[1][si] > 0)
                printf("group / single throughput, %d sender(s): %.1fx%s\n", sender_list[si],
                       tput[0][si] / tput[1][si],
                       full ? " (target >= 20x)"
                            : " (commits do not fsync at normal; the 20x target is for "
                              "durable commits, --durability full)");
        }
    }
    if (paced_p99 >= 0)
        printf("group commit ack p99 at %.0f msg/s, %d senders: %.3f ms (target < 20 ms)\n",
               rate > 0 ? rate : 10000.0, sender_list[nsenders - 1], paced_p99);
    if (own_dir)
        rmdir(tmpdir);
    return failures ? 1 : 0;

bad:
    usage(stderr);
    return 2;
}
