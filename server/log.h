/*
 * log — one line per event: "2026-11-23T16:40:01.123Z info  store: message".
 * Levels filter at the call site so a disabled debug line costs one compare.
 * Hot paths (per message) log at debug only.
 */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Thread: main, before any other thread starts. */
void log_set_level(enum log_level lvl);
/* Thread: any; lines from concurrent threads never interleave. */
enum log_level log_get_level(void);
void log_write(enum log_level lvl, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(lvl, mod, ...)                                                                      \
    do {                                                                                           \
        if ((lvl) <= log_get_level())                                                              \
            log_write((lvl), (mod), __VA_ARGS__);                                                  \
    } while (0)
#define log_error(mod, ...) log_at(LOG_ERROR, mod, __VA_ARGS__)
#define log_warn(mod, ...) log_at(LOG_WARN, mod, __VA_ARGS__)
#define log_info(mod, ...) log_at(LOG_INFO, mod, __VA_ARGS__)
#define log_debug(mod, ...) log_at(LOG_DEBUG, mod, __VA_ARGS__)

#endif
