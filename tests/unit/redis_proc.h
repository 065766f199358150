/*
 * redis_proc — a private redis-server for a test: started on a free
 * loopback port in a temporary directory of its own (no snapshots, AOF as
 * asked), waited for until it answers PING (bounded), and stopped by its
 * PID (SIGTERM, then SIGKILL). Also SIGSTOP/SIGCONT for "Redis is stalled"
 * and a restart on the same port and directory for "Redis crashed and came
 * back". Never touches a Redis it did not start. Criterion-free, so any
 * test can use it; every function reports failure through its return value.
 *
 * Thread: the test's main thread (spawns and reaps children).
 */
#ifndef PARLEY_REDIS_PROC_H
#define PARLEY_REDIS_PROC_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

struct redisContext;

struct redis_proc {
    pid_t pid; /* 0: not running */
    int port;
    char dir[PATH_MAX]; /* its --dir (and log file); removed by redis_proc_stop */
    char password[128]; /* --requirepass, "" for none */
    bool appendonly;    /* --appendonly yes --appendfsync always */
};

/* Start a redis-server on a free 127.0.0.1 port (tries a few ports if one
 * is taken meanwhile). password NULL or "": none. Returns 0 or -1 (with a
 * line on stderr). */
int redis_proc_start(struct redis_proc *p, const char *password, bool appendonly);
/* Start again on the same port and directory (after redis_proc_kill). */
int redis_proc_restart(struct redis_proc *p);
/* SIGKILL and reap; keeps the directory and port for redis_proc_restart. */
void redis_proc_kill(struct redis_proc *p);
/* SIGTERM, up to 5 s, then SIGKILL; reap; remove the directory. NULL-safe. */
void redis_proc_stop(struct redis_proc *p);
/* SIGSTOP / SIGCONT. */
void redis_proc_pause(struct redis_proc *p);
void redis_proc_resume(struct redis_proc *p);

/* "redis://127.0.0.1:PORT" (+ "/db" when db > 0) into buf. */
const char *redis_proc_url(const struct redis_proc *p, int db, char *buf, size_t sz);
/* A synchronous hiredis connection (AUTHed; 2 s timeouts), or NULL. The
 * caller redisFree()s it. */
struct redisContext *redis_proc_connect(const struct redis_proc *p);
/* A port on 127.0.0.1 that nothing listens on right now. */
int redis_proc_free_port(void);

/* Monotonic milliseconds, for the tests' deadlines. */
long long redis_proc_mono_ms(void);
/* Wait on cv (mu held; cv made with CLOCK_MONOTONIC) for at most ms milliseconds. */
void redis_proc_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, long ms);

/* Wait (at most ms) until expr, evaluated under mu, holds; ok gets it.
 * Whoever changes what expr reads signals cv under mu. */
#define REDIS_PROC_WAIT(ok, expr, mu, cv, ms)                                                      \
    do {                                                                                           \
        long long dl_ = redis_proc_mono_ms() + (ms);                                               \
        pthread_mutex_lock(&(mu));                                                                 \
        while (!((ok) = (expr)) && redis_proc_mono_ms() < dl_)                                     \
            redis_proc_cond_wait_ms(&(cv), &(mu), 20);                                             \
        pthread_mutex_unlock(&(mu));                                                               \
    } while (0)

#endif
