/*
 * iplimit — open WebSocket connections per client address, so one address
 * cannot take every slot of --max-connections. Thread: any (one mutex,
 * held for a map lookup only).
 */
#ifndef PARLEY_IPLIMIT_H
#define PARLEY_IPLIMIT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct iplimit iplimit_t;

iplimit_t *iplimit_new(long max_per_ip);
void iplimit_free(iplimit_t *l);
/* Count one more connection from ip; false (nothing counted) if ip
 * already has max_per_ip. */
bool iplimit_acquire(iplimit_t *l, const char *ip);
/* One connection from ip ended (after a successful acquire). */
void iplimit_release(iplimit_t *l, const char *ip);

#endif
