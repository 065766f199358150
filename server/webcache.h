/*
 * webcache — the web root held in memory, so that serving a static file
 * never waits on the disk inside the event loop. The whole tree is read once
 * at start (and again on reload, into a new cache) and is read-only after.
 *
 * What is loaded: regular files, found by walking the root recursively.
 * Skipped: names starting with '.', directories named node_modules, anything
 * that is not a regular file or directory (FIFOs, sockets, devices), and
 * symlinks whose target (realpath) lies outside the root. Symlinks that stay
 * inside the root are followed, to files and to directories; a directory link
 * back to one of its own ancestors is not entered twice.
 * Loading fails as a whole, rather than serving a partial site, when the root
 * is missing or not a directory, a file cannot be read, or the tree exceeds
 * the limits (webcache_limits).
 *
 * Reload: load a new cache and publish it; the old one may only be freed once
 * no thread still holds a pointer from it. That hand-over is the caller's.
 */
#ifndef PARLEY_WEBCACHE_H
#define PARLEY_WEBCACHE_H

#include <stddef.h>

typedef struct webcache webcache_t;

/* One cached file. Every pointer lives as long as its cache. */
struct webfile {
    const unsigned char *data; /* never NULL, even for an empty file */
    size_t len;
    const char *mime; /* Content-Type value, e.g. "text/html; charset=utf-8" */
    const char *etag; /* strong ETag, quotes included: "\"1a2b...\"" */
};

struct webcache_limits {
    size_t max_bytes; /* sum of all file sizes */
    size_t max_files;
    unsigned max_depth; /* directory levels below the root */
};

/* 64 MiB, 10000 files, 32 levels. */
#define WEBCACHE_MAX_BYTES ((size_t)64 << 20)
#define WEBCACHE_MAX_FILES 10000
#define WEBCACHE_MAX_DEPTH 32

/*
 * Read every file under root with the default limits. Returns NULL with a
 * one-line reason in err (e.g. "web root 'x': No such file or directory").
 * Thread: main (blocks on the disk).
 */
webcache_t *webcache_load(const char *root, char *err, size_t errsz);

/* The same with explicit limits; a NULL lim means the defaults.
 * Thread: main (blocks on the disk). */
webcache_t *webcache_load_limits(const char *root, const struct webcache_limits *lim, char *err,
                                 size_t errsz);

/*
 * Look up a relative path as produced by pathres_resolve ("index.html",
 * "js/app.js"; no leading '/'). Returns NULL if absent. O(log n).
 * Thread: any (the cache is read-only after load).
 */
const struct webfile *webcache_get(const webcache_t *wc, const char *relpath);

/* Number of files and their total size. Thread: any. */
size_t webcache_count(const webcache_t *wc);
size_t webcache_bytes(const webcache_t *wc);

/* Content-Type for a file name, from its extension (case-insensitive);
 * "application/octet-stream" when unknown. Thread: any. */
const char *webcache_mime(const char *name);

/* Free the cache and every file in it; NULL is accepted. Thread: any, once
 * no other thread can still use the cache. */
void webcache_free(webcache_t *wc);

#endif
