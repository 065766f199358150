/*
 * dumper — see dumper.h. Owns one thread (the dumper) and the state it
 * shares with whoever triggers or stops it, all under one mutex. The file
 * write happens outside the mutex, so dumper_trigger never waits on the disk.
 */
#include "dumper.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

struct dumper {
    counters_t *c;
    char *path;
    int64_t interval_ns;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;    /* {mu} */
    bool pending; /* {mu} a trigger arrived */
    bool failing; /* dumper thread only: the last dump failed (log changes once) */
};

/* Returns 0 or a negative errno. */
static int append_line(const char *path, const char *s, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    int rc = 0;

    if (fd < 0)
        return -errno;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            goto out_fd;
        }
        s += w;
        n -= (size_t)w;
    }
out_fd:
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

static void dump(dumper_t *d)
{
    char *json = counters_dump(d->c, now_wall_ms());
    size_t n = strlen(json);

    /* one buffer, one write(): O_APPEND keeps the line whole */
    json = xrealloc(json, n + 2);
    json[n++] = '\n';
    json[n] = '\0';
    int rc = append_line(d->path, json, n);
    if (rc < 0) {
        if (!d->failing)
            log_warn("dumper", "cannot append to '%s': %s", d->path, strerror(-rc));
        d->failing = true;
    } else if (d->failing) {
        log_info("dumper", "appending to '%s' again", d->path);
        d->failing = false;
    }
    free(json);
}

static void deadline_after(struct timespec *ts, int64_t ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ns += ts->tv_nsec;
    ts->tv_sec += (time_t)(ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
}

static void *dumper_main(void *arg)
{
    dumper_t *d = arg;
    struct timespec deadline;

    pthread_mutex_lock(&d->mu);
    for (;;) {
        deadline_after(&deadline, d->interval_ns);
        while (!d->stop && !d->pending)
            if (pthread_cond_timedwait(&d->cv, &d->mu, &deadline) == ETIMEDOUT)
                break;
        bool stopping = d->stop;
        d->pending = false;
        pthread_mutex_unlock(&d->mu);
        dump(d);
        pthread_mutex_lock(&d->mu);
        /* a stop that arrived during that dump is seen on the next turn
         * without waiting, and gets its own final dump */
        if (stopping)
            break;
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

dumper_t *dumper_start(counters_t *c, const char *path, double interval_s, char *err, size_t errsz)
{
    pthread_condattr_t ca;
    dumper_t *d;
    int rc, fd;

    if (!c || !path || !*path) {
        snprintf(err, errsz, "dumper needs counters and a path");
        return NULL;
    }
    if (!isfinite(interval_s) || interval_s < 0.001 || interval_s > 1e6) {
        snprintf(err, errsz, "dump interval %g s is out of range (0.001 .. 1e6)", interval_s);
        return NULL;
    }
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        snprintf(err, errsz, "cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    close(fd);

    d = xcalloc(1, sizeof(*d));
    d->c = c;
    d->path = xstrdup(path);
    d->interval_ns = (int64_t)(interval_s * 1e9);

    rc = pthread_mutex_init(&d->mu, NULL);
    if (rc != 0)
        goto out_free;
    rc = pthread_condattr_init(&ca);
    if (rc != 0)
        goto out_mutex;
    rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        goto out_mutex;
    rc = pthread_create(&d->thread, NULL, dumper_main, d);
    if (rc != 0)
        goto out_cond;
    log_info("dumper", "writing counters to '%s' every %g s", path, interval_s);
    return d;

out_cond:
    pthread_cond_destroy(&d->cv);
out_mutex:
    pthread_mutex_destroy(&d->mu);
out_free:
    snprintf(err, errsz, "cannot start the dumper thread: %s", strerror(rc));
    free(d->path);
    free(d);
    return NULL;
}

void dumper_trigger(dumper_t *d)
{
    pthread_mutex_lock(&d->mu);
    d->pending = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

void dumper_stop(dumper_t *d)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d->path);
    free(d);
}
