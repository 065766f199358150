/*
 * dumper — a worker thread that appends the per-user counters to a file, one
 * JSON line ({"ts":ms,"users":{...}}, see counters_dump: only the users whose
 * count changed since the previous line) every interval, on demand (SIGUSR1)
 * and once more when stopped. Each dump also forgets the users that were
 * neither active nor connected since the previous one.
 *
 * The thread sleeps on a condition variable timed against CLOCK_MONOTONIC, so
 * wall-clock jumps do not shorten or stretch the interval and a stop or
 * trigger wakes it at once. Lines are written with one write() to a file
 * opened O_APPEND and closed after each dump (so log rotation by rename just
 * works); there is no fsync: a dump is a statistics snapshot, the next one
 * supersedes it, and an fsync per tick would put disk latency on a thread
 * for nothing.
 */
#ifndef PARLEY_DUMPER_H
#define PARLEY_DUMPER_H

#include "counters.h"

typedef struct dumper dumper_t;

/*
 * Start the dumper thread for c (which must outlive it), appending to path
 * every interval_s seconds (0.001 .. 1e6). The file is opened once here
 * (O_APPEND|O_CREAT, mode 0600: user names are not for other local users)
 * so a path that cannot be written is reported at start-up. Returns NULL
 * with a message in err on failure.
 * Thread: any (main, at start-up).
 */
dumper_t *dumper_start(counters_t *c, const char *path, double interval_s, char *err, size_t errsz);

/* Ask for a dump now (it runs on the dumper thread; the interval restarts
 * after it). Thread: any, but not from a signal handler: call it from the
 * thread that takes the signal synchronously (signalfd, sigwait, loop). */
void dumper_trigger(dumper_t *d);

/* Wake the thread at once, let it write a final dump, join it and free d.
 * NULL is fine. Thread: the one that called dumper_start, once. */
void dumper_stop(dumper_t *d);

#endif
