/*
 * Unit tests for cq: the count and byte bounds, ownership on push and pop,
 * FIFO batches bounded by count and bytes, placeholders blocking the head,
 * ring growth across the wrap point (also against a reference model), the
 * ring being given back after a burst, and cq_fill charging a placeholder's
 * content on arrival (refused past the byte bound) and its pop uncharging it.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cq.h"
#include "msg.h"

/* msg's refcount is private; it is the first member of struct msg (see the
 * same helper and msg.layout_assumption in test_msg.c). */
static unsigned refs_of(const msg_t *m)
{
    return atomic_load((_Atomic unsigned *)(void *)(uintptr_t)m);
}

/* A msg whose frame is exactly `frame` bytes (2..127: 2-byte header). */
static msg_t *msg_of_frame(size_t frame, char fill)
{
    char buf[128];
    cr_assert(frame >= 2 && frame - 2 < 126 && frame - 2 <= sizeof(buf));
    memset(buf, fill, frame - 2);
    msg_t *m = msg_new_text(buf, frame - 2);
    cr_assert_eq(msg_size(m), frame);
    return m;
}

static void unref_all(msg_t **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        msg_unref(&v[i]);
}

Test(cq, starts_empty)
{
    struct cq q;
    msg_t *out[4];
    cq_init(&q, 8, 1000);
    cr_assert_eq(cq_count(&q), 0);
    cr_assert_eq(cq_bytes(&q), 0);
    cr_assert_not(cq_blocked(&q));
    cr_assert_eq(cq_pop_batch(&q, out, 4, 1000), 0);
    cq_release(&q);
    cq_release(&q); /* idempotent */
}

Test(cq, zero_count_bound_means_one)
{
    struct cq q;
    cq_init(&q, 0, 1000);
    msg_t *a = msg_of_frame(10, 'a'), *b = msg_of_frame(10, 'b');
    cr_assert_eq(cq_push(&q, a), 0);
    cr_assert_eq(cq_push(&q, b), -1);
    msg_unref(&b);
    cq_release(&q);
}

Test(cq, push_takes_the_reference_and_pop_gives_it_back)
{
    struct cq q;
    msg_t *out[1];
    cq_init(&q, 8, 1000);
    msg_t *m = msg_of_frame(10, 'x');
    cr_assert_eq(cq_push(&q, m), 0);
    cr_assert_eq(refs_of(m), 1, "the queue takes over the caller's reference, adds none");
    cr_assert_eq(cq_count(&q), 1);
    cr_assert_eq(cq_bytes(&q), 10);
    cr_assert_eq(cq_pop_batch(&q, out, 1, 1000), 1);
    cr_assert_eq(out[0], m);
    cr_assert_eq(refs_of(m), 1, "pop hands the reference over, drops none");
    cr_assert_eq(cq_bytes(&q), 0);
    msg_unref(&out[0]);
    cq_release(&q);
}

Test(cq, count_bound)
{
    struct cq q;
    msg_t *m[5];
    cq_init(&q, 5, 1 << 20);
    for (int i = 0; i < 5; i++) {
        m[i] = msg_of_frame(10, (char)('a' + i));
        cr_assert_eq(cq_push(&q, m[i]), 0);
    }
    msg_t *extra = msg_of_frame(10, 'z');
    cr_assert_eq(cq_push(&q, extra), -1);
    cr_assert_eq(cq_count(&q), 5);
    cr_assert_eq(cq_bytes(&q), 50);
    cr_assert_eq(refs_of(extra), 1, "a failed push leaves the caller's reference alone");
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(cq_push(&q, ph), -1, "a placeholder counts against the count bound too");
    msg_unref(&ph);
    msg_unref(&extra);
    cq_release(&q);
}

Test(cq, byte_bound)
{
    struct cq q;
    msg_t *out[8];
    cq_init(&q, 100, 35);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(cq_push(&q, msg_of_frame(10, 'a')), 0);
    cr_assert_eq(cq_bytes(&q), 30);

    msg_t *ten = msg_of_frame(10, 'b');
    cr_assert_eq(cq_push(&q, ten), -1, "30 + 10 > 35");
    cr_assert_eq(cq_bytes(&q), 30);
    cr_assert_eq(refs_of(ten), 1);

    msg_t *five = msg_of_frame(5, 'c');
    cr_assert_eq(cq_push(&q, five), 0, "exactly at the bound fits");
    cr_assert_eq(cq_bytes(&q), 35);
    msg_t *two = msg_of_frame(2, 'd');
    cr_assert_eq(cq_push(&q, two), -1);
    cr_assert_eq(cq_push(&q, msg_new_placeholder()), 0, "a placeholder is charged 0 bytes");
    cr_assert_eq(cq_bytes(&q), 35);
    cr_assert_eq(cq_count(&q), 5);

    /* popping gives the bytes back */
    cr_assert_eq(cq_pop_batch(&q, out, 1, 1000), 1);
    cr_assert_eq(cq_bytes(&q), 25);
    msg_unref(&out[0]);
    cr_assert_eq(cq_push(&q, ten), 0);
    cr_assert_eq(cq_bytes(&q), 35);

    msg_unref(&two);
    cq_release(&q);
    cr_assert_eq(cq_count(&q), 0);
    cr_assert_eq(cq_bytes(&q), 0);
}

Test(cq, pop_is_fifo)
{
    struct cq q;
    msg_t *in[10], *out[10];
    cq_init(&q, 16, 1 << 20);
    for (int i = 0; i < 10; i++) {
        in[i] = msg_of_frame(10, (char)('0' + i));
        cr_assert_eq(cq_push(&q, in[i]), 0);
    }
    cr_assert_eq(cq_pop_batch(&q, out, 3, 1 << 20), 3, "bounded by max");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(out[i], in[i]);
    unref_all(out, 3);
    cr_assert_eq(cq_pop_batch(&q, out, 0, 1 << 20), 0, "max 0 pops nothing");
    cr_assert_eq(cq_count(&q), 7);
    cr_assert_eq(cq_pop_batch(&q, out, 10, 1 << 20), 7);
    for (int i = 0; i < 7; i++)
        cr_assert_eq(out[i], in[i + 3]);
    unref_all(out, 7);
    cr_assert_eq(cq_count(&q), 0);
    cr_assert_eq(cq_bytes(&q), 0);
    cq_release(&q);
}

Test(cq, batch_byte_bound)
{
    struct cq q;
    msg_t *out[8];
    cq_init(&q, 16, 1 << 20);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(cq_push(&q, msg_of_frame(10, 'a')), 0);

    cr_assert_eq(cq_pop_batch(&q, out, 8, 25), 2, "a third frame would make 30 > 25");
    unref_all(out, 2);
    cr_assert_eq(cq_bytes(&q), 60);
    cr_assert_eq(cq_pop_batch(&q, out, 8, 30), 3, "exactly max_bytes fits");
    unref_all(out, 3);
    cr_assert_eq(cq_pop_batch(&q, out, 2, 1000), 2, "max binds before max_bytes");
    unref_all(out, 2);
    cr_assert_eq(cq_count(&q), 1);
    cr_assert_eq(cq_bytes(&q), 10);
    cq_release(&q);
}

Test(cq, first_frame_always_fits)
{
    struct cq q;
    msg_t *out[4];
    char big[1000];
    memset(big, 'B', sizeof(big));
    cq_init(&q, 16, 1 << 20);
    msg_t *b = msg_new_text(big, sizeof(big));
    cr_assert_eq(cq_push(&q, b), 0);
    cr_assert_eq(cq_push(&q, msg_of_frame(10, 's')), 0);

    cr_assert_eq(cq_pop_batch(&q, out, 4, 100), 1, "a frame larger than max_bytes still goes");
    cr_assert_eq(out[0], b);
    msg_unref(&out[0]);
    cr_assert_eq(cq_bytes(&q), 10);
    cr_assert_eq(cq_pop_batch(&q, out, 4, 1), 1);
    msg_unref(&out[0]);
    cq_release(&q);
}

Test(cq, empty_placeholder_blocks_until_filled)
{
    struct cq q;
    msg_t *out[8];
    cq_init(&q, 16, 1 << 20);
    msg_t *a = msg_of_frame(10, 'a'), *ph = msg_new_placeholder(), *b = msg_of_frame(10, 'b');
    cr_assert_eq(cq_push(&q, a), 0);
    cr_assert_eq(cq_push(&q, ph), 0);
    cr_assert_eq(cq_push(&q, b), 0);
    cr_assert_eq(cq_bytes(&q), 20);

    cr_assert_not(cq_blocked(&q));
    cr_assert_eq(cq_pop_batch(&q, out, 8, 1 << 20), 1, "stops at the empty placeholder");
    cr_assert_eq(out[0], a);
    msg_unref(&out[0]);
    cr_assert(cq_blocked(&q));
    cr_assert_eq(cq_pop_batch(&q, out, 8, 1 << 20), 0);
    cr_assert_eq(cq_count(&q), 2);

    msg_fill(ph, msg_of_frame(100, 'h'));
    cr_assert_not(cq_blocked(&q));
    /* the batch bound uses the content's frame; the placeholder is first */
    cr_assert_eq(cq_pop_batch(&q, out, 8, 50), 1);
    cr_assert_eq(out[0], ph, "the queue hands out the placeholder, not its content");
    size_t fl;
    msg_frame(msg_resolve(out[0]), &fl);
    cr_assert_eq(fl, 100);
    msg_unref(&out[0]);
    cr_assert_eq(cq_bytes(&q), 10, "the placeholder was charged 0 at push and at pop");
    cr_assert_eq(cq_pop_batch(&q, out, 8, 50), 1);
    cr_assert_eq(out[0], b);
    msg_unref(&out[0]);
    cr_assert_eq(cq_bytes(&q), 0);
    cq_release(&q);
}

Test(cq, filled_placeholder_counts_content_in_batch_bytes)
{
    struct cq q;
    msg_t *out[8];
    cq_init(&q, 16, 1 << 20);
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(cq_push(&q, msg_of_frame(10, 'a')), 0);
    cr_assert_eq(cq_push(&q, ph), 0);
    msg_fill(ph, msg_of_frame(100, 'h'));
    cr_assert_eq(cq_pop_batch(&q, out, 8, 50), 1, "10 + 100 > 50");
    msg_unref(&out[0]);
    cr_assert_eq(cq_pop_batch(&q, out, 8, 50), 1);
    cr_assert_eq(out[0], ph);
    msg_unref(&out[0]);
    cq_release(&q);
}

Test(cq, placeholder_at_head_blocks_everything)
{
    struct cq q;
    msg_t *out[8];
    cq_init(&q, 16, 1 << 20);
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(cq_push(&q, ph), 0);
    cr_assert_eq(cq_push(&q, msg_of_frame(10, 'a')), 0);
    cr_assert(cq_blocked(&q));
    cr_assert_eq(cq_pop_batch(&q, out, 8, 1 << 20), 0);
    msg_fill(ph, msg_of_frame(10, 'h'));
    cr_assert_eq(cq_pop_batch(&q, out, 8, 1 << 20), 2);
    cr_assert_eq(out[0], ph);
    unref_all(out, 2);
    cq_release(&q);
}

Test(cq, ring_grows_across_the_wrap_point)
{
    struct cq q;
    msg_t *in[8], *out[8];
    cq_init(&q, 100, 1 << 20);
    for (int i = 0; i < 8; i++)
        in[i] = msg_of_frame(10, (char)('a' + i));

    for (int i = 0; i < 3; i++)
        cr_assert_eq(cq_push(&q, in[i]), 0);
    cr_assert_eq(q.cap, 4, "the first ring holds 4");
    cr_assert_eq(cq_pop_batch(&q, out, 2, 1 << 20), 2);
    unref_all(out, 2);
    /* head is now 2: these three wrap round to slots 3, 0, 1 */
    for (int i = 3; i < 6; i++)
        cr_assert_eq(cq_push(&q, in[i]), 0);
    cr_assert_eq(q.cap, 4);
    cr_assert_neq(q.head, 0, "the ring is wrapped before it grows");
    /* full and wrapped: the next push has to unwrap into a bigger ring */
    cr_assert_eq(cq_push(&q, in[6]), 0);
    cr_assert_eq(q.cap, 8);
    cr_assert_eq(cq_push(&q, in[7]), 0);
    cr_assert_eq(cq_count(&q), 6);

    cr_assert_eq(cq_pop_batch(&q, out, 8, 1 << 20), 6);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(out[i], in[i + 2], "order after growth at %d", i);
    unref_all(out, 6);
    cq_release(&q);
}

/* A deterministic random walk of pushes and pops checked against a plain
 * array model of the queue: order, bounds, counts and bytes. */
Test(cq, matches_a_model_queue)
{
    enum { MAXC = 300, MAXB = 9000, STEPS = 30000 };
    static msg_t *model[STEPS];
    size_t mh = 0, mt = 0, mbytes = 0;
    unsigned big_rings = 0, rings_given_back = 0;
    uint32_t rnd = 12345;
    struct cq q;
    msg_t *out[64];

    cq_init(&q, MAXC, MAXB);
    for (int step = 0; step < STEPS; step++) {
        rnd = rnd * 1103515245u + 12345u;
        uint32_t r = rnd >> 8;
        /* phases that mostly push then mostly pop, so the ring fills,
         * wraps, grows and drains many times */
        bool pushing = (step / 700) % 2 == 0;
        if (r % 100 < (pushing ? 90u : 10u)) {
            size_t fs = 2 + r % 60;
            msg_t *m = msg_of_frame(fs, (char)step);
            bool fits = mt - mh < MAXC && mbytes + fs <= MAXB;
            int rc = cq_push(&q, m);
            cr_assert_eq(rc, fits ? 0 : -1, "step %d", step);
            if (rc == 0) {
                model[mt++] = m;
                mbytes += fs;
            } else {
                msg_unref(&m);
            }
        } else {
            size_t max = 1 + (r >> 8) % 8, maxb = 1 + (r >> 14) % 200;
            size_t want = 0, batch = 0;
            while (want < max && mh + want < mt) {
                size_t fs = msg_size(model[mh + want]);
                if (want && batch + fs > maxb)
                    break;
                batch += fs;
                want++;
            }
            size_t n = cq_pop_batch(&q, out, max, maxb);
            cr_assert_eq(n, want, "step %d", step);
            for (size_t i = 0; i < n; i++) {
                cr_assert_eq(out[i], model[mh], "step %d", step);
                mbytes -= msg_size(model[mh]);
                mh++;
            }
            unref_all(out, n);
        }
        cr_assert_eq(cq_count(&q), mt - mh);
        cr_assert_eq(cq_bytes(&q), mbytes);
        if (q.cap > 64 && q.count > 64)
            big_rings++;
        if (!q.ring && big_rings)
            rings_given_back++;
    }
    /* the walk really did wrap, grow past 64 and drain */
    cr_assert_gt(big_rings, 0);
    cr_assert_gt(rings_given_back, 0);
    cq_release(&q);
}

Test(cq, release_unrefs_everything)
{
    struct cq q;
    msg_t *keep[10];
    cq_init(&q, 16, 1 << 20);
    for (int i = 0; i < 10; i++) {
        msg_t *m = msg_of_frame(10, 'r');
        keep[i] = msg_ref(m);
        cr_assert_eq(cq_push(&q, m), 0);
    }
    msg_t *ph = msg_new_placeholder(), *filled = msg_new_placeholder();
    msg_fill(filled, msg_of_frame(10, 'f'));
    cr_assert_eq(cq_push(&q, ph), 0);
    cr_assert_eq(cq_push(&q, filled), 0);

    cq_release(&q);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(refs_of(keep[i]), 1, "cq_release dropped exactly the queue's reference");
    unref_all(keep, 10);
    cr_assert_eq(cq_count(&q), 0);
    cr_assert_eq(cq_bytes(&q), 0);
    cr_assert_null(q.ring);

    /* the queue is usable again with its bounds intact */
    cr_assert_eq(cq_push(&q, msg_of_frame(10, 'n')), 0);
    cr_assert_eq(cq_count(&q), 1);
    cq_release(&q);
}

Test(cq, ring_is_freed_after_a_burst)
{
    struct cq q;
    msg_t *out[64];
    cq_init(&q, 1000, 1 << 20);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(cq_push(&q, msg_of_frame(10, 'b')), 0);
    cr_assert_gt(q.cap, 64);

    cr_assert_eq(cq_pop_batch(&q, out, 64, 1 << 20), 64);
    unref_all(out, 64);
    cr_assert_not_null(q.ring, "not drained yet: the ring stays");
    cr_assert_eq(cq_pop_batch(&q, out, 64, 1 << 20), 36);
    unref_all(out, 36);
    cr_assert_null(q.ring, "a big ring is given back once drained");
    cr_assert_eq(q.cap, 0);
    cr_assert_eq(cq_bytes(&q), 0);

    /* and the queue starts over from nothing */
    msg_t *m = msg_of_frame(10, 'c');
    cr_assert_eq(cq_push(&q, m), 0);
    cr_assert_eq(cq_pop_batch(&q, out, 64, 1 << 20), 1);
    cr_assert_eq(out[0], m);
    msg_unref(&out[0]);
    cq_release(&q);
}

/* ---- cq_fill: a placeholder's content is charged when it arrives ---- */

Test(cq, fill_charges_the_content_and_pop_gives_it_back)
{
    struct cq q;
    msg_t *out[8];
    cq_init(&q, 16, 1000);
    msg_t *a = msg_of_frame(10, 'a'), *ph = msg_new_placeholder();
    cr_assert_eq(cq_push(&q, a), 0);
    cr_assert_eq(cq_push(&q, msg_ref(ph)), 0);
    cr_assert_eq(cq_bytes(&q), 10, "an empty placeholder is charged 0 at the push");

    msg_t *content = msg_of_frame(100, 'h');
    cr_assert_eq(cq_fill(&q, ph, content), 0);
    cr_assert_eq(refs_of(content), 1, "the fill takes the caller's reference, adds none");
    cr_assert_eq(cq_bytes(&q), 110, "the content is charged on arrival");
    cr_assert_eq(msg_size(ph), 100, "and the placeholder now weighs its content");
    cr_assert_eq(msg_resolve(ph), content);

    cr_assert_eq(cq_pop_batch(&q, out, 8, 1 << 20), 2);
    cr_assert_eq(out[1], ph);
    cr_assert_eq(cq_bytes(&q), 0, "the pop uncharges exactly what the fill charged");
    unref_all(out, 2);
    msg_unref(&ph);
    cq_release(&q);
}

Test(cq, fill_over_the_byte_bound_is_refused_and_changes_nothing)
{
    struct cq q;
    cq_init(&q, 16, 100);
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(cq_push(&q, msg_of_frame(60, 'a')), 0);
    cr_assert_eq(cq_push(&q, msg_ref(ph)), 0);

    msg_t *fits_alone = msg_of_frame(50, 'b');
    cr_assert_eq(cq_fill(&q, ph, fits_alone), -ENOBUFS, "60 + 50 > 100: the queue is full");
    cr_assert_eq(refs_of(fits_alone), 1, "a refused fill leaves the caller's reference alone");
    cr_assert_eq(cq_bytes(&q), 60);
    cr_assert_null(msg_resolve(ph), "the placeholder stays empty");
    cr_assert_not(cq_blocked(&q), "the 60-byte frame ahead of it can still go");

    msg_t *never = msg_of_frame(101, 'c');
    cr_assert_eq(cq_fill(&q, ph, never), -EMSGSIZE, "larger than the whole bound");
    cr_assert_eq(refs_of(never), 1);
    cr_assert_eq(cq_bytes(&q), 60);

    msg_t *exact = msg_of_frame(40, 'd');
    cr_assert_eq(cq_fill(&q, ph, exact), 0, "exactly at the bound fits");
    cr_assert_eq(cq_bytes(&q), 100);
    msg_unref(&fits_alone);
    msg_unref(&never);
    msg_unref(&ph);
    cq_release(&q);
}

Test(cq, fill_of_what_is_not_an_empty_placeholder_here_is_refused)
{
    struct cq q, other;
    cq_init(&q, 16, 1000);
    cq_init(&other, 16, 1000);
    msg_t *ph = msg_new_placeholder(), *plain = msg_of_frame(10, 'p');
    msg_t *content = msg_of_frame(20, 'c');
    cr_assert_eq(cq_push(&q, msg_ref(plain)), 0);
    cr_assert_eq(cq_push(&other, msg_ref(ph)), 0);

    cr_assert_eq(cq_fill(&q, ph, content), -ENOENT, "queued on another queue");
    cr_assert_eq(cq_fill(&q, plain, content), -ENOENT, "not a placeholder");
    cr_assert_eq(cq_fill(&other, ph, content), 0);
    msg_t *again = msg_of_frame(20, 'x');
    cr_assert_eq(cq_fill(&other, ph, again), -ENOENT, "already filled");
    cr_assert_eq(cq_bytes(&other), 20);

    cq_release(&other); /* the queue was dropped: the placeholder is no longer queued */
    msg_t *ph2 = msg_new_placeholder();
    cr_assert_eq(cq_push(&other, msg_ref(ph2)), 0);
    cq_release(&other);
    cr_assert_eq(cq_fill(&other, ph2, again), -ENOENT);
    cr_assert_eq(refs_of(again), 1);

    msg_unref(&again);
    msg_unref(&ph);
    msg_unref(&ph2);
    msg_unref(&plain);
    cq_release(&q);
}

/* A placeholder filled behind its queue's back (msg_fill_counted without
 * cq_fill) would be uncharged more than it was charged: always caught. */
Test(cq, pop_of_an_uncharged_fill_aborts, .signal = SIGABRT)
{
    static struct cq q;
    static msg_t *out[1], *ph;
    cq_init(&q, 16, 1000);
    ph = msg_new_placeholder();
    cr_assert_eq(cq_push(&q, ph), 0);
    msg_fill_counted(ph, msg_of_frame(50, 'h'));
    cq_pop_batch(&q, out, 1, 1000);
}
