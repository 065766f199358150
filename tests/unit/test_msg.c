/*
 * Unit tests for msg: the pre-built WebSocket frame header at each length
 * class boundary, the builder's growth, reference counting (including the
 * always-on underflow check), placeholders, and concurrent ref/unref and
 * fill/resolve from many threads (run under TSan by tools/test).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"
#include "util.h"

/*
 * The refcount is private to msg.c, where it is the first member of struct
 * msg (`_Atomic unsigned refs`); a pointer to a struct may be converted to a
 * pointer to its first member. Reading it lets the tests check exactly how
 * many references an operation took or dropped instead of relying on a leak
 * checker alone. msg.layout_assumption fails first if the layout changes.
 */
static _Atomic unsigned *refs_ptr(const msg_t *m)
{
    return (_Atomic unsigned *)(void *)(uintptr_t)m;
}

static unsigned refs_of(const msg_t *m)
{
    return atomic_load(refs_ptr(m));
}

/* A payload whose every byte depends on its position, so a misplaced or
 * truncated copy shows up. */
static unsigned char *pattern(size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    cr_assert_not_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 7 + i / 251);
    return p;
}

Test(msg, layout_assumption)
{
    msg_t *m = msg_new_text("x", 1);
    cr_assert_eq(refs_of(m), 1, "struct msg no longer starts with its refcount");
    msg_t *r = msg_ref(m);
    cr_assert_eq(refs_of(m), 2, "struct msg no longer starts with its refcount");
    msg_unref(&r);
    msg_unref(&m);
}

struct frame_case {
    size_t len;
    unsigned char hdr[10];
    size_t hl;
};

static const struct frame_case frame_cases[] = {
    {0, {0x81, 0x00}, 2},
    {1, {0x81, 0x01}, 2},
    {125, {0x81, 0x7d}, 2},
    {126, {0x81, 0x7e, 0x00, 0x7e}, 4},
    {65535, {0x81, 0x7e, 0xff, 0xff}, 4},
    {65536, {0x81, 0x7f, 0, 0, 0, 0, 0x00, 0x01, 0x00, 0x00}, 10},
    {70000, {0x81, 0x7f, 0, 0, 0, 0, 0x00, 0x01, 0x11, 0x70}, 10},
};

static void check_frame(const msg_t *m, const struct frame_case *fc, const unsigned char *want)
{
    size_t fl, pl;
    const unsigned char *f = msg_frame(m, &fl);
    const unsigned char *p = msg_payload(m, &pl);

    cr_assert_eq(pl, fc->len, "payload length for %zu", fc->len);
    cr_assert_eq(fl, fc->hl + fc->len, "frame length for payload %zu", fc->len);
    cr_assert_eq(memcmp(f, fc->hdr, fc->hl), 0, "frame header for payload %zu", fc->len);
    cr_assert_eq(f + fc->hl, p, "payload must follow the header contiguously (len %zu)", fc->len);
    cr_assert_eq(memcmp(p, want, fc->len), 0, "payload bytes for %zu", fc->len);
    cr_assert_eq(msg_size(m), fl, "a queue is charged the frame length");
}

Test(msg, frame_header_from_new_text)
{
    for (size_t i = 0; i < ARRAY_LEN(frame_cases); i++) {
        const struct frame_case *fc = &frame_cases[i];
        unsigned char *want = pattern(fc->len);
        msg_t *m = msg_new_text(want, fc->len);
        check_frame(m, fc, want);
        msg_unref(&m);
        free(want);
    }
}

Test(msg, frame_header_from_builder)
{
    /* built in uneven pieces from a tiny hint, so the buffer moves as it grows */
    for (size_t i = 0; i < ARRAY_LEN(frame_cases); i++) {
        const struct frame_case *fc = &frame_cases[i];
        unsigned char *want = pattern(fc->len);
        struct msgbuf b;
        mb_init(&b, 1);
        for (size_t off = 0, step = 1; off < fc->len; off += step, step = step * 3 + 1) {
            size_t n = fc->len - off < step ? fc->len - off : step;
            mb_put(&b, want + off, n);
        }
        cr_assert_eq(b.len, fc->len);
        msg_t *m = mb_finish(&b);
        cr_assert_null(b.mem, "mb_finish resets the builder");
        cr_assert_eq(b.len, 0);
        cr_assert_eq(b.cap, 0);
        check_frame(m, fc, want);
        msg_unref(&m);
        free(want);
    }
}

Test(msg, builder_printf_grows_and_matches_snprintf)
{
    static char want[1 << 16];
    size_t wl = 0;
    struct msgbuf b;

    mb_init(&b, 0);
    cr_assert_geq(b.cap, 1);
    for (int i = 0; i < 2000; i++) {
        mb_printf(&b, "%d:%s;", i, i % 2 ? "odd" : "even");
        wl += (size_t)snprintf(want + wl, sizeof(want) - wl, "%d:%s;", i, i % 2 ? "odd" : "even");
        cr_assert_eq(b.len, wl);
        cr_assert_geq(b.cap, b.len);
    }
    /* one call whose output is many times the current capacity */
    char big[20000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    mb_printf(&b, "<%s>", big);
    wl += (size_t)snprintf(want + wl, sizeof(want) - wl, "<%s>", big);
    /* an empty expansion changes nothing */
    mb_printf(&b, "%s", "");
    cr_assert_lt(wl, sizeof(want));

    msg_t *m = mb_finish(&b);
    size_t pl;
    const unsigned char *p = msg_payload(m, &pl);
    cr_assert_eq(pl, wl);
    cr_assert_eq(memcmp(p, want, wl), 0);
    msg_unref(&m);
}

Test(msg, builder_put_putc_puts_trim)
{
    struct msgbuf b;
    mb_init(&b, 64);
    cr_assert_geq(b.cap, 64);

    /* fill to exactly the capacity, then one more byte must grow it */
    size_t cap = b.cap;
    unsigned char *fill = pattern(cap);
    mb_put(&b, fill, cap);
    cr_assert_eq(b.len, cap);
    mb_putc(&b, '!');
    cr_assert_eq(b.len, cap + 1);
    cr_assert_gt(b.cap, cap);
    mb_puts(&b, "tail");
    mb_trim(&b, 2);
    cr_assert_eq(b.len, cap + 3);
    mb_put(&b, "", 0);

    msg_t *m = mb_finish(&b);
    size_t pl;
    const unsigned char *p = msg_payload(m, &pl);
    cr_assert_eq(pl, cap + 3);
    cr_assert_eq(memcmp(p, fill, cap), 0);
    cr_assert_eq(memcmp(p + cap, "!ta", 3), 0);
    msg_unref(&m);
    free(fill);

    /* trimming more than there is empties the builder */
    mb_init(&b, 0);
    mb_puts(&b, "abc");
    mb_trim(&b, 10);
    cr_assert_eq(b.len, 0);
    mb_puts(&b, "x");
    m = mb_finish(&b);
    p = msg_payload(m, &pl);
    cr_assert_eq(pl, 1);
    cr_assert_eq(p[0], 'x');
    msg_unref(&m);
}

Test(msg, builder_release_without_finish)
{
    struct msgbuf b;
    mb_init(&b, 10);
    mb_printf(&b, "%s", "discarded");
    mb_release(&b);
    cr_assert_null(b.mem);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.cap, 0);
    mb_release(&b); /* a released builder may be released again */
}

Test(msg, ref_and_unref)
{
    msg_t *m = msg_new_text("abc", 3);
    msg_t *a = msg_ref(m);
    msg_t *b = msg_ref(m);
    cr_assert_eq(a, m);
    cr_assert_eq(b, m);
    cr_assert_eq(refs_of(m), 3);

    msg_unref(&a);
    cr_assert_null(a, "unref NULLs the caller's pointer");
    cr_assert_eq(refs_of(m), 2);
    msg_unref(&a); /* NULL: no-op */
    cr_assert_eq(refs_of(m), 2);
    msg_unref(&b);
    cr_assert_null(b);
    cr_assert_eq(refs_of(m), 1);

    size_t pl;
    cr_assert_eq(memcmp(msg_payload(m, &pl), "abc", 3), 0, "still intact with one reference");
    msg_unref(&m); /* the last one frees (ASan/valgrind report a leak otherwise) */
    cr_assert_null(m);
}

/* Objects of the tests that abort on purpose stay reachable from here, so
 * valgrind's leak check at the abort does not count them as lost. */
static msg_t *volatile abort_keep[2];

Test(msg, unref_underflow_aborts, .signal = SIGABRT)
{
    msg_t *m = msg_new_text("x", 1);
    abort_keep[0] = m;
    cr_assert_eq(refs_of(m), 1);
    /* a count that is already zero, as a double unref through two owners'
     * pointers would find it if the memory had not been freed yet */
    atomic_store(refs_ptr(m), 0);
    msg_unref(&m);
}

Test(msg, placeholder_empty)
{
    msg_t *p = msg_new_placeholder();
    cr_assert_null(msg_resolve(p), "an empty placeholder has nothing to send");
    cr_assert_eq(msg_size(p), 0);
    cr_assert_eq(refs_of(p), 1);
    msg_unref(&p); /* freed unfilled */
    cr_assert_null(p);
}

Test(msg, resolve_of_plain_msg_is_itself)
{
    msg_t *m = msg_new_text("hi", 2);
    cr_assert_eq(msg_resolve(m), m);
    msg_unref(&m);
}

Test(msg, placeholder_fill_and_resolve)
{
    msg_t *p = msg_new_placeholder();
    msg_t *c = msg_new_text("history", 7);
    msg_t *keep = msg_ref(c);

    msg_fill(p, c); /* takes c's reference */
    cr_assert_eq(refs_of(keep), 2, "msg_fill takes the given reference, no extra one");
    const msg_t *r = msg_resolve(p);
    cr_assert_eq(r, keep);
    cr_assert_eq(msg_size(p), 0, "a placeholder is charged 0 before and after its fill");

    size_t fl;
    const unsigned char *f = msg_frame(r, &fl);
    cr_assert_eq(fl, 9);
    cr_assert_eq(memcmp(f, "\x81\x07history", 9), 0);

    msg_unref(&p);
    cr_assert_eq(refs_of(keep), 1, "the placeholder's last unref drops its content");
    msg_unref(&keep);
}

Test(msg, filled_placeholder_frees_content)
{
    /* no extra reference: ASan/valgrind see a leak if the content survives */
    msg_t *p = msg_new_placeholder();
    msg_fill(p, msg_new_text("x", 1));
    msg_t *q = msg_ref(p);
    msg_unref(&p);
    cr_assert_not_null(msg_resolve(q), "content lives while the placeholder does");
    msg_unref(&q);
}

Test(msg, fill_twice_aborts, .signal = SIGABRT)
{
    msg_t *p = abort_keep[0] = msg_new_placeholder();
    msg_fill(p, msg_new_text("a", 1));
    msg_fill(p, abort_keep[1] = msg_new_text("b", 1));
}

Test(msg, fill_of_plain_msg_aborts, .signal = SIGABRT)
{
    msg_t *m = abort_keep[0] = msg_new_text("a", 1);
    msg_fill(m, abort_keep[1] = msg_new_text("b", 1));
}

Test(msg, fill_with_placeholder_aborts, .signal = SIGABRT)
{
    msg_t *p = abort_keep[0] = msg_new_placeholder();
    msg_fill(p, abort_keep[1] = msg_new_placeholder());
}

/* ---- threads ---- */

#define NTHREADS 8
#define ITERS 20000

struct refarg {
    msg_t *own; /* one reference owned by the thread */
    _Atomic unsigned *errors;
};

static void *ref_worker(void *p)
{
    struct refarg *a = p;
    for (int i = 0; i < ITERS; i++) {
        msg_t *r = msg_ref(a->own);
        size_t pl;
        const unsigned char *b = msg_payload(r, &pl);
        if (pl != 6 || memcmp(b, "shared", 6) != 0)
            atomic_fetch_add(a->errors, 1);
        msg_unref(&r);
        if (r)
            atomic_fetch_add(a->errors, 1);
    }
    msg_unref(&a->own);
    return NULL;
}

static void run_ref_threads(bool main_keeps)
{
    msg_t *m = msg_new_text("shared", 6);
    struct refarg args[NTHREADS];
    pthread_t th[NTHREADS];
    _Atomic unsigned errors = 0;

    for (int i = 0; i < NTHREADS; i++)
        args[i] = (struct refarg){.own = msg_ref(m), .errors = &errors};
    for (int i = 0; i < NTHREADS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, ref_worker, &args[i]), 0);
    if (!main_keeps)
        msg_unref(&m); /* the last worker to finish frees it */
    for (int i = 0; i < NTHREADS; i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
        cr_assert_null(args[i].own);
    }
    cr_assert_eq(atomic_load(&errors), 0);
    if (main_keeps) {
        cr_assert_eq(refs_of(m), 1, "every concurrent ref was matched by one unref");
        msg_unref(&m);
    }
}

Test(msg, concurrent_ref_unref_main_keeps)
{
    run_ref_threads(true);
}

Test(msg, concurrent_ref_unref_last_worker_frees)
{
    run_ref_threads(false);
}

struct fillarg {
    msg_t *ph; /* a reference to the shared placeholder */
    _Atomic unsigned *errors;
};

#define FILL_LEN 4096

static void *resolve_worker(void *p)
{
    struct fillarg *a = p;
    const msg_t *r;
    /* ends as soon as main fills; not a timing assumption */
    while (!(r = msg_resolve(a->ph)))
        sched_yield();
    size_t pl;
    const unsigned char *b = msg_payload(r, &pl);
    if (pl != FILL_LEN)
        atomic_fetch_add(a->errors, 1);
    for (size_t i = 0; i < pl; i++)
        if (b[i] != (unsigned char)(i * 7 + i / 251))
            atomic_fetch_add(a->errors, 1);
    msg_unref(&a->ph);
    return NULL;
}

Test(msg, concurrent_fill_publishes_content)
{
    msg_t *ph = msg_new_placeholder();
    struct fillarg args[NTHREADS];
    pthread_t th[NTHREADS];
    _Atomic unsigned errors = 0;

    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (struct fillarg){.ph = msg_ref(ph), .errors = &errors};
        cr_assert_eq(pthread_create(&th[i], NULL, resolve_worker, &args[i]), 0);
    }
    /* the content is written on this thread just before the fill; readers
     * must see every byte (release in msg_fill, acquire in msg_resolve) */
    unsigned char *want = pattern(FILL_LEN);
    msg_fill(ph, msg_new_text(want, FILL_LEN));
    free(want);
    msg_unref(&ph);
    for (int i = 0; i < NTHREADS; i++)
        cr_assert_eq(pthread_join(th[i], NULL), 0);
    cr_assert_eq(atomic_load(&errors), 0);
}
