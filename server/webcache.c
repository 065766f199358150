/*
 * webcache — see webcache.h. Owns the in-memory copy of the web root: a
 * sorted array of (relative path, content, MIME type, ETag) searched with
 * bsearch. Built by a recursive walk with openat() relative to each
 * directory's descriptor, so a plain entry is opened exactly where it was
 * found (O_NOFOLLOW); only symlinks go through realpath() and the
 * inside-the-root check.
 *
 * Thread: load on main; lookups from any thread once loaded (read-only).
 */
#include "webcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

struct entry {
    char *path;
    unsigned char *data;
    struct webfile f;
    char etag[48];
};

struct webcache {
    struct entry *v;
    size_t n, cap;
    size_t bytes;
};

/* State of one load. */
struct walk {
    webcache_t *wc;
    const struct webcache_limits *lim;
    const char *root;         /* as given, for messages */
    char root_real[PATH_MAX]; /* realpath of the root */
    size_t root_len;
    struct {
        dev_t dev;
        ino_t ino;
    } dirs[WEBCACHE_MAX_DEPTH + 2]; /* the directories from the root down to here */
    unsigned depth;
    char *err;
    size_t errsz;
};

static const struct {
    const char *ext;
    const char *mime;
} mime_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"wasm", "application/wasm"},
    {"pdf", "application/pdf"},
};

const char *webcache_mime(const char *name)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strrchr(base, '.');

    if (dot && dot != base) {
        for (size_t i = 0; i < ARRAY_LEN(mime_types); i++) {
            if (strcasecmp(dot + 1, mime_types[i].ext) == 0)
                return mime_types[i].mime;
        }
    }
    return "application/octet-stream";
}

static void walk_fail(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void walk_fail(struct walk *w, const char *fmt, ...)
{
    char msg[PATH_MAX + 128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(w->err, w->errsz, "web root '%s': %s", w->root, msg);
}

/* FNV-1a, 64 bit: content changes must change the tag; the web root is the
 * operator's, so collision resistance against an attacker is not needed. */
static uint64_t fnv1a64(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static int add_file(struct walk *w, int fd, const struct stat *st, const char *rel)
{
    webcache_t *wc = w->wc;
    size_t size = (size_t)st->st_size, got = 0;

    if (wc->n + 1 > w->lim->max_files) {
        walk_fail(w, "more than %zu files", w->lim->max_files);
        return -1;
    }
    if (st->st_size < 0 || size > w->lim->max_bytes - wc->bytes) {
        walk_fail(w, "more than %zu bytes of files (at '%s')", w->lim->max_bytes, rel);
        return -1;
    }
    unsigned char *data = xmalloc(size);
    while (got < size) {
        ssize_t r = read(fd, data + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            walk_fail(w, "cannot read '%s': %s", rel, strerror(errno));
            free(data);
            return -1;
        }
        if (r == 0)
            break; /* shrank while we read: keep what is there */
        got += (size_t)r;
    }
    if (wc->n == wc->cap) {
        wc->cap = wc->cap ? wc->cap * 2 : 64;
        wc->v = xrealloc(wc->v, wc->cap * sizeof(*wc->v));
    }
    struct entry *e = &wc->v[wc->n++];
    memset(e, 0, sizeof(*e));
    e->path = xstrdup(rel);
    e->data = data;
    e->f.data = data;
    e->f.len = got;
    e->f.mime = webcache_mime(rel);
    snprintf(e->etag, sizeof(e->etag), "\"%zx-%016llx\"", got,
             (unsigned long long)fnv1a64(data, got));
    /* e->f.etag is set once the array stops moving */
    wc->bytes += got;
    return 0;
}

/* Is path (a realpath) the root or below it? */
static bool inside_root(const struct walk *w, const char *path)
{
    if (w->root_len == 1)
        return true; /* the root is "/" */
    return strncmp(path, w->root_real, w->root_len) == 0 &&
           (path[w->root_len] == '/' || path[w->root_len] == '\0');
}

/* Is this a name the walk never loads? Dot-files are private by convention
 * (.git, .env); node_modules is build input, never something a client loads. */
static bool skipped_name(const char *name, size_t len)
{
    return name[0] == '.' || (len == 12 && memcmp(name, "node_modules", 12) == 0);
}

/* Does a realpath inside the root pass through a skipped name? Without this
 * a link such as "cfg -> .git" would publish what the walk itself skips. */
static bool skipped_inside(const struct walk *w, const char *real)
{
    const char *p = real + (w->root_len == 1 ? 0 : w->root_len);
    while (*p) {
        p += strspn(p, "/");
        size_t n = strcspn(p, "/");
        if (n && skipped_name(p, n))
            return true;
        p += n;
    }
    return false;
}

static int walk_dir(struct walk *w, int dfd, char *rel, size_t rlen);

/* Open the target of a symlink found at rel, if it stays inside the root.
 * Returns an fd, -1 to skip the entry, -2 on error. */
static int open_symlink(struct walk *w, const char *rel)
{
    char abs[PATH_MAX * 2], real[PATH_MAX];
    struct stat st;

    snprintf(abs, sizeof(abs), "%s/%s", w->root_real, rel);
    if (!realpath(abs, real)) {
        log_warn("webcache", "skipping '%s': broken symlink (%s)", rel, strerror(errno));
        return -1;
    }
    if (!inside_root(w, real)) {
        log_warn("webcache", "skipping '%s': symlink leads outside the web root", rel);
        return -1;
    }
    if (skipped_inside(w, real)) {
        log_warn("webcache", "skipping '%s': symlink leads into a skipped directory", rel);
        return -1;
    }
    if (stat(real, &st) < 0) {
        log_warn("webcache", "skipping '%s': %s", rel, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return -1;
    /* O_NONBLOCK: should the target be swapped for a FIFO, open must not hang;
     * the fstat after opening rejects it */
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0) {
        walk_fail(w, "cannot open '%s': %s", rel, strerror(errno));
        return -2;
    }
    return fd;
}

/* Load or descend into the entry name of directory dfd. rel holds the
 * entry's relative path. Returns 0 (loaded or skipped) or -1. */
static int walk_entry(struct walk *w, int dfd, const char *name, char *rel, size_t rlen)
{
    struct stat st;
    int fd, rc = 0;

    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return 0; /* removed while we walked */
        walk_fail(w, "cannot stat '%s': %s", rel, strerror(errno));
        return -1;
    }
    if (S_ISLNK(st.st_mode)) {
        fd = open_symlink(w, rel);
        if (fd == -1)
            return 0;
        if (fd < 0)
            return -1;
    } else if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
        fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW);
        if (fd < 0) {
            walk_fail(w, "cannot open '%s': %s", rel, strerror(errno));
            return -1;
        }
    } else {
        log_debug("webcache", "skipping '%s': not a regular file", rel);
        return 0;
    }

    /* judge what was opened, not what was stat'ed by name a moment ago */
    if (fstat(fd, &st) < 0) {
        walk_fail(w, "cannot stat '%s': %s", rel, strerror(errno));
        close(fd);
        return -1;
    }
    if (S_ISREG(st.st_mode)) {
        rc = add_file(w, fd, &st, rel);
        close(fd);
        return rc;
    }
    if (!S_ISDIR(st.st_mode)) {
        close(fd);
        return 0;
    }
    for (unsigned i = 0; i <= w->depth; i++) {
        if (w->dirs[i].dev == st.st_dev && w->dirs[i].ino == st.st_ino) {
            log_debug("webcache", "skipping '%s': link to its own ancestor", rel);
            close(fd);
            return 0;
        }
    }
    if (w->depth + 1 > w->lim->max_depth) {
        walk_fail(w, "'%s' is nested deeper than %u levels", rel, w->lim->max_depth);
        close(fd);
        return -1;
    }
    w->depth++;
    w->dirs[w->depth].dev = st.st_dev;
    w->dirs[w->depth].ino = st.st_ino;
    rc = walk_dir(w, fd, rel, rlen);
    w->depth--;
    return rc;
}

/* Walk the directory open on dfd (consumed) whose relative path is
 * rel[0..rlen); rel has room for PATH_MAX bytes. */
static int walk_dir(struct walk *w, int dfd, char *rel, size_t rlen)
{
    DIR *d = fdopendir(dfd);
    struct dirent *de;
    int rc = 0;

    if (!d) {
        walk_fail(w, "cannot list '%s': %s", rlen ? rel : ".", strerror(errno));
        close(dfd);
        return -1;
    }
    for (;;) {
        errno = 0;
        de = readdir(d);
        if (!de) {
            if (errno) {
                walk_fail(w, "cannot list '%s': %s", rlen ? rel : ".", strerror(errno));
                rc = -1;
            }
            break;
        }
        size_t nlen = strlen(de->d_name);
        if (skipped_name(de->d_name, nlen))
            continue; /* also ".", ".." */
        if (rlen + 1 + nlen >= PATH_MAX) {
            walk_fail(w, "path too long under '%s'", rel);
            rc = -1;
            break;
        }
        size_t clen = rlen;
        if (clen)
            rel[clen++] = '/';
        memcpy(rel + clen, de->d_name, nlen + 1);
        rc = walk_entry(w, dirfd(d), de->d_name, rel, clen + nlen);
        rel[rlen] = '\0';
        if (rc < 0)
            break;
    }
    closedir(d);
    return rc;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->path, ((const struct entry *)b)->path);
}

webcache_t *webcache_load(const char *root, char *err, size_t errsz)
{
    return webcache_load_limits(root, NULL, err, errsz);
}

webcache_t *webcache_load_limits(const char *root, const struct webcache_limits *lim, char *err,
                                 size_t errsz)
{
    static const struct webcache_limits defaults = {
        .max_bytes = WEBCACHE_MAX_BYTES,
        .max_files = WEBCACHE_MAX_FILES,
        .max_depth = WEBCACHE_MAX_DEPTH,
    };
    struct webcache_limits l = lim ? *lim : defaults;
    struct walk *w = xcalloc(1, sizeof(*w));
    char *rel = xmalloc(PATH_MAX);
    struct stat st;
    int fd;

    if (l.max_depth > WEBCACHE_MAX_DEPTH)
        l.max_depth = WEBCACHE_MAX_DEPTH; /* the ancestor array is sized for it */
    w->wc = xcalloc(1, sizeof(*w->wc));
    w->lim = &l;
    w->root = root;
    w->err = err;
    w->errsz = errsz;
    rel[0] = '\0';

    if (!realpath(root, w->root_real)) {
        walk_fail(w, "%s", strerror(errno));
        goto fail;
    }
    w->root_len = strlen(w->root_real);
    fd = open(w->root_real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        walk_fail(w, "%s", strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) < 0) {
        walk_fail(w, "%s", strerror(errno));
        close(fd);
        goto fail;
    }
    w->dirs[0].dev = st.st_dev;
    w->dirs[0].ino = st.st_ino;
    if (walk_dir(w, fd, rel, 0) < 0)
        goto fail;

    webcache_t *wc = w->wc;
    if (wc->n)
        qsort(wc->v, wc->n, sizeof(*wc->v), entry_cmp);
    for (size_t i = 0; i < wc->n; i++)
        wc->v[i].f.etag = wc->v[i].etag;
    log_info("webcache", "loaded %zu files (%zu bytes) from '%s'", wc->n, wc->bytes,
             w->root_real);
    free(rel);
    free(w);
    return wc;

fail:
    webcache_free(w->wc);
    free(rel);
    free(w);
    return NULL;
}

static int key_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct entry *)elem)->path);
}

const struct webfile *webcache_get(const webcache_t *wc, const char *relpath)
{
    if (!wc || !wc->n)
        return NULL;
    const struct entry *e = bsearch(relpath, wc->v, wc->n, sizeof(*wc->v), key_cmp);
    return e ? &e->f : NULL;
}

size_t webcache_count(const webcache_t *wc)
{
    return wc ? wc->n : 0;
}

size_t webcache_bytes(const webcache_t *wc)
{
    return wc ? wc->bytes : 0;
}

void webcache_free(webcache_t *wc)
{
    if (!wc)
        return;
    for (size_t i = 0; i < wc->n; i++) {
        free(wc->v[i].path);
        free(wc->v[i].data);
    }
    free(wc->v);
    free(wc);
}
