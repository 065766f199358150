/*
 * redis_proc — see redis_proc.h. posix_spawnp rather than fork: the test
 * process has threads (and may run under TSan or valgrind), and a spawn
 * runs nothing of ours in the child.
 */
#include "redis_proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define START_WAIT_MS 10000
#define STOP_WAIT_MS 5000

long long redis_proc_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define mono_ms redis_proc_mono_ms

void redis_proc_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += ms % 1000 * 1000000L;
    ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, mu, &ts);
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int redis_proc_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

struct redisContext *redis_proc_connect(const struct redis_proc *p)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", p->port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (p->password[0]) {
        redisReply *r = redisCommand(c, "AUTH %s", p->password);
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        if (r)
            freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

/* Until the server answers PING (NOAUTH counts: it is up), the child
 * exits, or the deadline. */
static int wait_ready(struct redis_proc *p)
{
    long long deadline = mono_ms() + START_WAIT_MS;
    while (mono_ms() < deadline) {
        int st;
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            p->pid = 0;
            return -1;
        }
        redisContext *c = redis_proc_connect(p);
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r != NULL;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 0;
        }
        nap_ms(20);
    }
    return -1;
}

static int spawn(struct redis_proc *p)
{
    char port[16], logfile[PATH_MAX + 16];
    snprintf(port, sizeof(port), "%d", p->port);
    snprintf(logfile, sizeof(logfile), "%s/redis.log", p->dir);
    const char *argv[32];
    int n = 0;
    argv[n++] = "redis-server";
    argv[n++] = "--port";
    argv[n++] = port;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--dir";
    argv[n++] = p->dir;
    argv[n++] = "--logfile";
    argv[n++] = logfile;
    argv[n++] = "--appendonly";
    argv[n++] = p->appendonly ? "yes" : "no";
    if (p->appendonly) {
        argv[n++] = "--appendfsync";
        argv[n++] = "always";
    }
    if (p->password[0]) {
        argv[n++] = "--requirepass";
        argv[n++] = p->password;
    }
    argv[n] = NULL;
    pid_t pid;
    int rc = posix_spawnp(&pid, "redis-server", NULL, NULL, (char *const *)argv, environ);
    if (rc != 0) {
        fprintf(stderr, "redis_proc: cannot start redis-server: %s\n", strerror(rc));
        return -1;
    }
    p->pid = pid;
    if (wait_ready(p) < 0) {
        fprintf(stderr, "redis_proc: redis-server on port %d did not come up (log: %s)\n", p->port,
                logfile);
        redis_proc_kill(p);
        return -1;
    }
    return 0;
}

int redis_proc_start(struct redis_proc *p, const char *password, bool appendonly)
{
    memset(p, 0, sizeof(*p));
    const char *base = getenv("PARLEY_TEST_TMP");
    snprintf(p->dir, sizeof(p->dir), "%s/redis-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(p->dir)) {
        fprintf(stderr, "redis_proc: mkdtemp '%s': %s\n", p->dir, strerror(errno));
        return -1;
    }
    if (password)
        snprintf(p->password, sizeof(p->password), "%s", password);
    p->appendonly = appendonly;
    for (int tries = 0; tries < 5; tries++) { /* a port can be taken between probe and bind */
        p->port = redis_proc_free_port();
        if (p->port > 0 && spawn(p) == 0)
            return 0;
    }
    return -1;
}

int redis_proc_restart(struct redis_proc *p)
{
    if (p->pid)
        return -1;
    /* the port may sit in TIME_WAIT on our side only; redis sets SO_REUSEADDR */
    return spawn(p);
}

static void reap(struct redis_proc *p, long wait_ms)
{
    long long deadline = mono_ms() + wait_ms;
    for (;;) {
        int st;
        pid_t w = waitpid(p->pid, &st, WNOHANG);
        if (w == p->pid || (w < 0 && errno == ECHILD))
            break;
        if (mono_ms() >= deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            break;
        }
        nap_ms(10);
    }
    p->pid = 0;
}

void redis_proc_kill(struct redis_proc *p)
{
    if (!p->pid)
        return;
    kill(p->pid, SIGKILL);
    reap(p, STOP_WAIT_MS);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void redis_proc_stop(struct redis_proc *p)
{
    if (!p)
        return;
    if (p->pid) {
        kill(p->pid, SIGCONT); /* a stopped process would not act on SIGTERM */
        kill(p->pid, SIGTERM);
        reap(p, STOP_WAIT_MS);
    }
    if (p->dir[0]) {
        nftw(p->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
        p->dir[0] = '\0';
    }
}

void redis_proc_pause(struct redis_proc *p)
{
    if (p->pid)
        kill(p->pid, SIGSTOP);
}

void redis_proc_resume(struct redis_proc *p)
{
    if (p->pid)
        kill(p->pid, SIGCONT);
}

const char *redis_proc_url(const struct redis_proc *p, int db, char *buf, size_t sz)
{
    if (db > 0)
        snprintf(buf, sz, "redis://127.0.0.1:%d/%d", p->port, db);
    else
        snprintf(buf, sz, "redis://127.0.0.1:%d", p->port);
    return buf;
}
