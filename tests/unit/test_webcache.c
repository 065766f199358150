/*
 * Unit tests for webcache: a real temporary tree with files, subdirectories,
 * dot-files, node_modules, symlinks that stay inside or leave the root, a
 * symlink loop and a FIFO; then lookups, MIME types, ETags and limits.
 */
#include <criterion/criterion.h>
#include "testutil.h"
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "webcache.h"

static char base[4096]; /* temp dir; the web root is base/site */
static char root[4200];
static webcache_t *wc;
static char err[512];


static void setup(void)
{
    test_mkdtemp(base, sizeof(base), "webcache");
    snprintf(root, sizeof(root), "%s/site", base);
    cr_assert_eq(mkdir(root, 0755), 0);
    wc = NULL;
    err[0] = '\0';
    log_set_level(LOG_ERROR); /* the skips are expected; keep the output readable */
}

static void teardown(void)
{
    webcache_free(wc);
    cr_assert_eq(test_rmtree(base), 0);
}

TestSuite(webcache, .init = setup, .fini = teardown);

/* Create root/rel (and its directories) holding content. */
static void put(const char *rel, const char *content)
{
    char path[8400];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        cr_assert(mkdir(path, 0755) == 0 || errno == EEXIST, "mkdir %s", path);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s", path);
    fputs(content, f);
    fclose(f);
}

static void link_at(const char *target, const char *rel)
{
    char path[8400];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    cr_assert_eq(symlink(target, path), 0, "symlink %s: %s", path, strerror(errno));
}

static void load(void)
{
    webcache_free(wc);
    wc = webcache_load(root, err, sizeof(err));
    cr_assert_not_null(wc, "load failed: %s", err);
}

static const struct webfile *expect_file(const char *rel, const char *content, const char *mime)
{
    const struct webfile *f = webcache_get(wc, rel);
    cr_assert_not_null(f, "'%s' missing", rel);
    cr_assert_eq(f->len, strlen(content), "'%s' length", rel);
    cr_assert_not_null(f->data);
    cr_assert_eq(memcmp(f->data, content, f->len), 0, "'%s' content", rel);
    cr_assert_str_eq(f->mime, mime, "'%s' mime", rel);
    cr_assert_not_null(f->etag);
    size_t n = strlen(f->etag);
    cr_assert_gt(n, 2);
    cr_assert_eq(f->etag[0], '"', "strong ETag is quoted: %s", f->etag);
    cr_assert_eq(f->etag[n - 1], '"', "strong ETag is quoted: %s", f->etag);
    cr_assert_neq(strncmp(f->etag, "W/", 2), 0, "not a weak ETag");
    return f;
}

static void build_site(void)
{
    put("index.html", "<!doctype html><h1>hi</h1>");
    put("app.js", "console.log('app');");
    put("mod.mjs", "export const x = 1;");
    put("style.css", "body{margin:0}");
    put("data.json", "{\"a\":1}");
    put("app.js.map", "{\"version\":3}");
    put("img/logo.svg", "<svg/>");
    put("img/pic.PNG", "\x89PNG");
    put("img/p.jpg", "jpg");
    put("img/p.jpeg", "jpeg");
    put("img/p.webp", "webp");
    put("favicon.ico", "ico");
    put("fonts/f.woff2", "wOF2");
    put("x.wasm", "\x01" "asm");
    put("sub/deep/readme.txt", "deep text");
    put("sub/deep/more/leaf.html", "leaf");
    put("noext", "raw");
    put("file.bin", "bin");
    put("empty.txt", "");
    /* skipped names */
    put(".hidden", "secret");
    put(".git/config", "[core]");
    put("sub/.env", "PASSWORD=x");
    put("node_modules/lib/index.js", "module.exports = 1;");
    put("sub/node_modules/x.js", "nested");
    /* a file next to the root, to escape to */
    char outside[4300];
    snprintf(outside, sizeof(outside), "%s/outside.txt", base);
    FILE *f = fopen(outside, "w");
    cr_assert_not_null(f);
    fputs("outside", f);
    fclose(f);
    /* symlinks that leave the root */
    link_at("/etc/passwd", "passwd");
    link_at("../outside.txt", "escape.txt");
    link_at(outside, "escape_abs.txt");
    link_at("..", "up");
    link_at("/etc", "etc");
    /* symlinks that stay inside */
    link_at("app.js", "alias.js");
    link_at("../index.html", "img/home.html");
    link_at("sub", "linkdir");
    link_at(".", "loop");
    link_at("..", "sub/parent");
    /* inside but into what the walk skips */
    link_at(".git", "gitlink");
    link_at(".hidden", "hidden_alias");
    link_at("node_modules/lib/index.js", "nm.js");
    /* broken */
    link_at("does-not-exist", "broken");
    /* a FIFO must be skipped, not read (reading would block forever) */
    char fifo[4300];
    snprintf(fifo, sizeof(fifo), "%s/pipe", root);
    cr_assert_eq(mkfifo(fifo, 0644), 0);
}

Test(webcache, loads_files_with_content_and_mime)
{
    build_site();
    load();
    expect_file("index.html", "<!doctype html><h1>hi</h1>", "text/html; charset=utf-8");
    expect_file("app.js", "console.log('app');", "text/javascript; charset=utf-8");
    expect_file("mod.mjs", "export const x = 1;", "text/javascript; charset=utf-8");
    expect_file("style.css", "body{margin:0}", "text/css; charset=utf-8");
    expect_file("data.json", "{\"a\":1}", "application/json");
    expect_file("app.js.map", "{\"version\":3}", "application/json");
    expect_file("img/logo.svg", "<svg/>", "image/svg+xml");
    expect_file("img/pic.PNG", "\x89PNG", "image/png");
    expect_file("img/p.jpg", "jpg", "image/jpeg");
    expect_file("img/p.jpeg", "jpeg", "image/jpeg");
    expect_file("img/p.webp", "webp", "image/webp");
    expect_file("favicon.ico", "ico", "image/x-icon");
    expect_file("fonts/f.woff2", "wOF2", "font/woff2");
    expect_file("x.wasm", "\x01" "asm", "application/wasm");
    expect_file("sub/deep/readme.txt", "deep text", "text/plain; charset=utf-8");
    expect_file("sub/deep/more/leaf.html", "leaf", "text/html; charset=utf-8");
    expect_file("noext", "raw", "application/octet-stream");
    expect_file("file.bin", "bin", "application/octet-stream");
    const struct webfile *e = expect_file("empty.txt", "", "text/plain; charset=utf-8");
    cr_assert_not_null(e->data, "an empty file still has a data pointer");
}

Test(webcache, skips_dot_files_and_node_modules)
{
    build_site();
    load();
    static const char *const absent[] = {
        ".hidden",    ".git/config", ".git",        "sub/.env",      "node_modules/lib/index.js",
        "node_modules", "sub/node_modules/x.js", "gitlink/config", "hidden_alias", "nm.js",
    };
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        cr_assert_null(webcache_get(wc, absent[i]), "'%s' must not be cached", absent[i]);
}

Test(webcache, symlinks_leaving_the_root_are_absent)
{
    build_site();
    load();
    static const char *const absent[] = {
        "passwd", "escape.txt", "escape_abs.txt", "up/outside.txt", "up/site/index.html",
        "etc/passwd", "etc/hostname", "sub/parent/index.html", "broken", "pipe",
    };
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        cr_assert_null(webcache_get(wc, absent[i]), "'%s' must not be cached", absent[i]);
    cr_assert_null(webcache_get(wc, "../outside.txt"));
}

Test(webcache, symlinks_inside_the_root_are_followed)
{
    build_site();
    load();
    const struct webfile *a = expect_file("alias.js", "console.log('app');",
                                          "text/javascript; charset=utf-8");
    const struct webfile *b = webcache_get(wc, "app.js");
    cr_assert_str_eq(a->etag, b->etag, "same content, same ETag");
    expect_file("img/home.html", "<!doctype html><h1>hi</h1>", "text/html; charset=utf-8");
    expect_file("linkdir/deep/readme.txt", "deep text", "text/plain; charset=utf-8");
    /* the loop is not entered */
    cr_assert_null(webcache_get(wc, "loop/index.html"));
    cr_assert_null(webcache_get(wc, "loop/loop/index.html"));
}

Test(webcache, exact_file_count_and_bytes)
{
    build_site();
    load();
    /* 19 files put() outside skipped names, + alias.js + img/home.html, +
     * linkdir/deep/readme.txt + linkdir/deep/more/leaf.html */
    cr_assert_eq(webcache_count(wc), 23, "count %zu", webcache_count(wc));
    size_t want = 0;
    static const char *const all[] = {
        "index.html",  "app.js",     "mod.mjs",    "style.css",     "data.json",
        "app.js.map",  "img/logo.svg", "img/pic.PNG", "img/p.jpg",   "img/p.jpeg",
        "img/p.webp",  "favicon.ico", "fonts/f.woff2", "x.wasm",     "sub/deep/readme.txt",
        "sub/deep/more/leaf.html", "noext", "file.bin", "empty.txt", "alias.js",
        "img/home.html", "linkdir/deep/readme.txt", "linkdir/deep/more/leaf.html",
    };
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        const struct webfile *f = webcache_get(wc, all[i]);
        cr_assert_not_null(f, "'%s'", all[i]);
        want += f->len;
    }
    cr_assert_eq(webcache_bytes(wc), want);
}

Test(webcache, missing_and_malformed_lookups_are_null)
{
    build_site();
    load();
    static const char *const miss[] = {
        "", "/index.html", "nope.html", "index.htm", "INDEX.HTML", "img", "img/", "sub/deep",
        "./index.html", "img/../index.html", "index.html/", "zzz", "a",
    };
    for (size_t i = 0; i < sizeof(miss) / sizeof(miss[0]); i++)
        cr_assert_null(webcache_get(wc, miss[i]), "'%s' should be a miss", miss[i]);
    cr_assert_null(webcache_get(NULL, "index.html"));
}

Test(webcache, etag_follows_content)
{
    put("a.txt", "aaaa");
    put("b.txt", "aaab");
    put("c.txt", "aaaa");
    load();
    const char *ea = webcache_get(wc, "a.txt")->etag;
    const char *eb = webcache_get(wc, "b.txt")->etag;
    const char *ec = webcache_get(wc, "c.txt")->etag;
    cr_assert_str_neq(ea, eb);
    cr_assert_str_eq(ea, ec);

    char before[64];
    snprintf(before, sizeof(before), "%s", ea);
    put("a.txt", "aaac");
    load(); /* a reload sees the new content */
    expect_file("a.txt", "aaac", "text/plain; charset=utf-8");
    cr_assert_str_neq(webcache_get(wc, "a.txt")->etag, before);
}

Test(webcache, many_files_all_found)
{
    char rel[64], body[64];
    for (int i = 0; i < 300; i++) {
        snprintf(rel, sizeof(rel), "d%d/f%03d.txt", i % 7, i);
        snprintf(body, sizeof(body), "file %d", i);
        put(rel, body);
    }
    load();
    cr_assert_eq(webcache_count(wc), 300);
    for (int i = 0; i < 300; i++) {
        snprintf(rel, sizeof(rel), "d%d/f%03d.txt", i % 7, i);
        snprintf(body, sizeof(body), "file %d", i);
        expect_file(rel, body, "text/plain; charset=utf-8");
    }
    cr_assert_null(webcache_get(wc, "d0/f001.txt"), "f001 lives in d1");
}

Test(webcache, empty_root)
{
    load();
    cr_assert_eq(webcache_count(wc), 0);
    cr_assert_eq(webcache_bytes(wc), 0);
    cr_assert_null(webcache_get(wc, "index.html"));
}

Test(webcache, root_through_symlink_and_trailing_slash)
{
    put("index.html", "x");
    char alias[4300], slash[4300];
    snprintf(alias, sizeof(alias), "%s/alias-root", base);
    cr_assert_eq(symlink(root, alias), 0);
    wc = webcache_load(alias, err, sizeof(err));
    cr_assert_not_null(wc, "%s", err);
    cr_assert_not_null(webcache_get(wc, "index.html"));
    webcache_free(wc);
    snprintf(slash, sizeof(slash), "%s/", root);
    wc = webcache_load(slash, err, sizeof(err));
    cr_assert_not_null(wc, "%s", err);
    cr_assert_not_null(webcache_get(wc, "index.html"));
}

Test(webcache, missing_root_fails_with_reason)
{
    char path[4300];
    snprintf(path, sizeof(path), "%s/nope", base);
    wc = webcache_load(path, err, sizeof(err));
    cr_assert_null(wc);
    cr_assert_not_null(strstr(err, "web root '"), "%s", err);
    cr_assert_not_null(strstr(err, "No such file or directory"), "%s", err);
    cr_assert_null(strchr(err, '\n'));
}

Test(webcache, root_that_is_a_file_fails)
{
    put("f.txt", "x");
    char path[4300];
    snprintf(path, sizeof(path), "%s/f.txt", root);
    wc = webcache_load(path, err, sizeof(err));
    cr_assert_null(wc);
    cr_assert_not_null(strstr(err, "Not a directory"), "%s", err);
}

Test(webcache, byte_limit)
{
    put("a.txt", "12345");
    put("b.txt", "67890");
    struct webcache_limits lim = {.max_bytes = 10, .max_files = 100, .max_depth = 8};
    wc = webcache_load_limits(root, &lim, err, sizeof(err));
    cr_assert_not_null(wc, "exactly at the limit loads: %s", err);
    webcache_free(wc);
    lim.max_bytes = 9;
    wc = webcache_load_limits(root, &lim, err, sizeof(err));
    cr_assert_null(wc);
    cr_assert_not_null(strstr(err, "more than 9 bytes"), "%s", err);
}

Test(webcache, file_count_limit)
{
    put("a.txt", "1");
    put("b/c.txt", "2");
    put("b/d.txt", "3");
    struct webcache_limits lim = {.max_bytes = 1000, .max_files = 3, .max_depth = 8};
    wc = webcache_load_limits(root, &lim, err, sizeof(err));
    cr_assert_not_null(wc, "%s", err);
    cr_assert_eq(webcache_count(wc), 3);
    webcache_free(wc);
    lim.max_files = 2;
    wc = webcache_load_limits(root, &lim, err, sizeof(err));
    cr_assert_null(wc);
    cr_assert_not_null(strstr(err, "more than 2 files"), "%s", err);
}

Test(webcache, depth_limit)
{
    put("a/b/c/f.txt", "x");
    struct webcache_limits lim = {.max_bytes = 1000, .max_files = 10, .max_depth = 3};
    wc = webcache_load_limits(root, &lim, err, sizeof(err));
    cr_assert_not_null(wc, "%s", err);
    expect_file("a/b/c/f.txt", "x", "text/plain; charset=utf-8");
    webcache_free(wc);
    lim.max_depth = 2;
    wc = webcache_load_limits(root, &lim, err, sizeof(err));
    cr_assert_null(wc);
    cr_assert_not_null(strstr(err, "deeper than 2 levels"), "%s", err);
}

Test(webcache, mime_table)
{
    static const struct {
        const char *name, *mime;
    } cases[] = {
        {"a.html", "text/html; charset=utf-8"},
        {"A.HTM", "text/html; charset=utf-8"},
        {"a.css", "text/css; charset=utf-8"},
        {"a.js", "text/javascript; charset=utf-8"},
        {"a.mjs", "text/javascript; charset=utf-8"},
        {"a.json", "application/json"},
        {"a.svg", "image/svg+xml"},
        {"a.png", "image/png"},
        {"a.jpg", "image/jpeg"},
        {"a.ico", "image/x-icon"},
        {"a.webp", "image/webp"},
        {"a.woff2", "font/woff2"},
        {"a.txt", "text/plain; charset=utf-8"},
        {"a.js.map", "application/json"},
        {"a.wasm", "application/wasm"},
        {"a.tar.gz", "application/octet-stream"},
        {"README", "application/octet-stream"},
        {"a.", "application/octet-stream"},
        {"dir.html/file", "application/octet-stream"},
        {"x/.html", "application/octet-stream"},
        {"x/y.css", "text/css; charset=utf-8"},
        {"", "application/octet-stream"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_str_eq(webcache_mime(cases[i].name), cases[i].mime, "'%s'", cases[i].name);
}

Test(webcache, free_null)
{
    webcache_free(NULL);
    cr_assert_eq(webcache_count(NULL), 0);
    cr_assert_eq(webcache_bytes(NULL), 0);
}
