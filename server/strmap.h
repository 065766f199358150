/*
 * strmap — a string-keyed map (string -> void *): a thin wrapper over htable
 * (chained, power-of-two buckets, keyed hash with the map's own random key:
 * see htable.h). Not synchronised: the owner's lock guards it. Keys are
 * copied; values are the caller's.
 */
#ifndef PARLEY_STRMAP_H
#define PARLEY_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct strmap strmap_t;

strmap_t *strmap_new(void);
/* Free the map; free_val (may be NULL) is called on each value. */
void strmap_free(strmap_t *m, void (*free_val)(void *));
void *strmap_get(const strmap_t *m, const char *key);
/* Insert or replace; returns the previous value or NULL. */
void *strmap_put(strmap_t *m, const char *key, void *val);
/* Remove; returns the value or NULL. */
void *strmap_del(strmap_t *m, const char *key);
size_t strmap_count(const strmap_t *m);
/* Visit every entry; if fn returns true the entry is removed (after fn has
 * dealt with the value). */
void strmap_sweep(strmap_t *m, bool (*fn)(const char *key, void *val, void *arg), void *arg);

#endif
