/* iplimit — see iplimit.h. Entries are removed when their count reaches
 * zero, so the map holds only addresses that are connected now. */
#include "iplimit.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "strmap.h"
#include "util.h"

struct iplimit {
    pthread_mutex_t lock;
    strmap_t *counts; /* {lock} ip -> (void *)(uintptr_t)count */
    long max;
};

iplimit_t *iplimit_new(long max_per_ip)
{
    iplimit_t *l = xcalloc(1, sizeof(*l));
    pthread_mutex_init(&l->lock, NULL);
    l->counts = strmap_new();
    l->max = max_per_ip;
    return l;
}

void iplimit_free(iplimit_t *l)
{
    if (!l)
        return;
    strmap_free(l->counts, NULL);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

bool iplimit_acquire(iplimit_t *l, const char *ip)
{
    bool ok = false;
    pthread_mutex_lock(&l->lock);
    uintptr_t n = (uintptr_t)strmap_get(l->counts, ip);
    if ((long)n < l->max) {
        strmap_put(l->counts, ip, (void *)(n + 1));
        ok = true;
    }
    pthread_mutex_unlock(&l->lock);
    return ok;
}

void iplimit_release(iplimit_t *l, const char *ip)
{
    pthread_mutex_lock(&l->lock);
    uintptr_t n = (uintptr_t)strmap_get(l->counts, ip);
    if (n <= 1)
        strmap_del(l->counts, ip);
    else
        strmap_put(l->counts, ip, (void *)(n - 1));
    pthread_mutex_unlock(&l->lock);
}
