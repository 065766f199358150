/*
 * Unit tests for client: a history reply filled into its placeholder
 * (client_fill) is charged to the queue and to the queue_bytes gauge when
 * it arrives and uncharged when taken; a fill that overflows the queue
 * closes the client with 4008 and frees the queue, as an overflowing push
 * does; a reply larger than the whole bound is handed back for something
 * smaller; a fill after the client is gone is dropped; the per-client
 * history-read slots (client_read_begin/end) with their gauge; the take
 * (client_take: frame and byte bounds, the close request, the stop at an
 * unfilled placeholder); and the calls into the I/O side (client_io): one
 * wake per empty-to-non-empty, the post, rx_flow and release hand-offs.
 *
 * The I/O side is a recording stand-in (rec_io below): client.c links
 * without the loop or libwebsockets.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "client.h"
#include "server.h"

static struct server srv; /* zeroed: only its metrics are used */

/* What the client asked of its I/O side. */
static struct rec {
    int wakeups, posts, releases, flows_on, flows_off;
    struct client *last_woken;
    void *last_arg;
    int post_rc;
} rec;
static int io_tag; /* its address is the io_arg the client must pass back */

static void rec_wake(void *arg, struct client *c)
{
    rec.wakeups++;
    rec.last_woken = c;
    rec.last_arg = arg;
}

static int rec_post(void *arg, void (*fn)(void *fnarg), void *fnarg)
{
    rec.last_arg = arg;
    if (rec.post_rc)
        return rec.post_rc;
    rec.posts++;
    fn(fnarg); /* as the home loop would, later */
    return 0;
}

static void rec_rx_flow(void *arg, struct client *c, bool on)
{
    rec.last_arg = arg;
    rec.last_woken = c;
    if (on)
        rec.flows_on++;
    else
        rec.flows_off++;
}

static void rec_release(void *arg)
{
    rec.last_arg = arg;
    rec.releases++;
}

static const struct client_io rec_io = {
    .wake = rec_wake, .post = rec_post, .rx_flow = rec_rx_flow, .release = rec_release,
};

static struct client *new_client(size_t qmax, size_t qbytes)
{
    return client_new(&srv, qmax, qbytes, &rec_io, &io_tag);
}

static int64_t gauge(_Atomic int64_t *g)
{
    return atomic_load(g);
}

/* msg's refcount is private; it is the first member of struct msg (see
 * msg.layout_assumption in test_msg.c). */
static unsigned refs_of(const msg_t *m)
{
    return atomic_load((_Atomic unsigned *)(void *)(uintptr_t)m);
}

/* A finished msg whose frame is exactly `frame` bytes (>= 130: a 4-byte
 * header up to 64 KiB). */
static msg_t *msg_of_frame(size_t frame)
{
    static char buf[65536];
    cr_assert(frame >= 130 && frame - 4 <= sizeof(buf));
    memset(buf, 'h', frame - 4);
    msg_t *m = msg_new_text(buf, frame - 4);
    cr_assert_eq(msg_size(m), frame);
    return m;
}

/* What the home loop's flush does (ws.c send_queued): take batches until
 * nothing more comes, dropping the frames. */
static size_t pop_all(struct client *c)
{
    msg_t *out[64];
    struct client_take r;
    size_t n, total = 0;
    do {
        n = client_take(c, out, 64, 1 << 20, &r);
        for (size_t i = 0; i < n; i++)
            msg_unref(&out[i]);
        total += n;
    } while (n);
    return total;
}

static void setup(void)
{
    memset(&srv, 0, sizeof(srv));
    memset(&rec, 0, sizeof(rec));
}

TestSuite(client, .init = setup);

Test(client, fill_is_charged_on_arrival_and_uncharged_on_pop)
{
    struct client *c = new_client(16, 10000);
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(client_push(c, msg_of_frame(200)), 0);
    cr_assert_eq(client_push(c, msg_ref(ph)), 0);
    cr_assert_eq(cq_bytes(&c->q), 200, "the empty placeholder is charged 0");
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 200);
    int before = rec.wakeups;

    msg_t *reply = msg_of_frame(3000);
    cr_assert_eq(client_fill(c, ph, reply), 0);
    cr_assert_eq(cq_bytes(&c->q), 3200, "the reply is charged to the queue when it arrives");
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 3200, "and to the queue_bytes gauge");
    cr_assert_gt(rec.wakeups, before, "the home loop is asked to drain the filled reply");
    cr_assert_eq(msg_resolve(ph), reply);

    cr_assert_eq(pop_all(c), 2);
    cr_assert_eq(cq_bytes(&c->q), 0, "the pop uncharges what push and fill charged");
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0);
    cr_assert_eq(gauge(&srv.metrics.slow_consumer_disconnects_total), 0);
    cr_assert_eq(c->close_code, 0);
    msg_unref(&ph);
    client_unref(&c);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0);
}

Test(client, fill_that_overflows_closes_4008_and_frees_the_queue)
{
    struct client *c = new_client(16, 10000);
    msg_t *ph = msg_new_placeholder(), *keep = msg_of_frame(6000);
    cr_assert_eq(client_push(c, msg_ref(keep)), 0);
    cr_assert_eq(client_push(c, msg_ref(ph)), 0);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 6000);

    /* fits the bound alone, not behind what is queued: a slow consumer */
    msg_t *reply = msg_of_frame(5000);
    msg_t *watch = msg_ref(reply);
    cr_assert_eq(client_fill(c, ph, reply), -1);
    cr_assert_eq(c->close_code, 4008);
    cr_assert_str_eq(c->close_reason, "slow consumer: queue overflow");
    cr_assert_eq(cq_count(&c->q), 0, "the queue is freed");
    cr_assert_eq(cq_bytes(&c->q), 0);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0, "and uncharged from the gauge");
    cr_assert_eq(gauge(&srv.metrics.slow_consumer_disconnects_total), 1);
    cr_assert_eq(gauge(&srv.metrics.deliveries_dropped_total), 1);
    cr_assert_eq(refs_of(keep), 1, "the queue's reference to what it held is gone");
    cr_assert_eq(refs_of(watch), 1, "the refused reply was dropped");
    cr_assert_null(msg_resolve(ph));

    /* afterwards nothing more is queued */
    cr_assert_eq(client_push(c, msg_of_frame(200)), 1);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0);
    msg_unref(&watch);
    msg_unref(&keep);
    msg_unref(&ph);
    client_unref(&c);
}

Test(client, reply_larger_than_the_bound_is_handed_back)
{
    struct client *c = new_client(16, 10000);
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(client_push(c, msg_ref(ph)), 0);

    cr_assert_eq(client_fill(c, ph, msg_of_frame(10001)), -EMSGSIZE);
    cr_assert_eq(c->close_code, 0, "not a slow consumer: the request was too big");
    cr_assert_null(msg_resolve(ph), "the placeholder stays empty for a smaller answer");
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0);

    cr_assert_eq(client_fill(c, ph, msg_of_frame(300)), 0);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 300);
    cr_assert_eq(pop_all(c), 1);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0);
    msg_unref(&ph);
    client_unref(&c);
}

Test(client, fill_after_the_client_is_gone_is_dropped)
{
    struct client *c = new_client(16, 10000);
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(client_push(c, msg_ref(ph)), 0);
    client_mark_dead(c);
    msg_t *reply = msg_of_frame(500), *watch = msg_ref(reply);
    cr_assert_eq(client_fill(c, ph, reply), 1);
    cr_assert_eq(refs_of(watch), 1, "the reply was dropped");
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0);
    msg_unref(&watch);
    msg_unref(&ph);
    client_unref(&c);
}

Test(client, a_client_being_closed_still_gets_its_reply)
{
    struct client *c = new_client(16, 10000);
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(client_push(c, msg_ref(ph)), 0);
    client_kill(c, 1001, "shutting down");
    cr_assert_eq(client_fill(c, ph, msg_of_frame(500)), 0, "the drain sends what was asked");
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 500);
    cr_assert_eq(pop_all(c), 1);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0);
    msg_unref(&ph);
    client_unref(&c);
}

Test(client, read_slots_are_bounded_and_counted)
{
    struct client *c = new_client(16, 10000);
    for (int i = 0; i < 4; i++)
        cr_assert(client_read_begin(c, 4));
    cr_assert_not(client_read_begin(c, 4), "a fifth read waits for a slot");
    cr_assert_eq(gauge(&srv.metrics.history_reads_in_flight), 4);
    client_read_end(c);
    cr_assert(client_read_begin(c, 4), "a slot given back can be taken again");
    for (int i = 0; i < 4; i++)
        client_read_end(c);
    cr_assert_eq(gauge(&srv.metrics.history_reads_in_flight), 0);
    cr_assert_eq(c->reads, 0);
    client_unref(&c);
}

Test(client, take_is_bounded_by_frames_and_bytes_and_uncharges)
{
    struct client *c = new_client(16, 100000);
    msg_t *out[8];
    struct client_take r;
    for (int i = 0; i < 5; i++)
        cr_assert_eq(client_push(c, msg_of_frame(1000)), 0);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 5000);

    cr_assert_eq(client_take(c, out, 2, 1 << 20, &r), 2, "at most max frames");
    cr_assert(r.more, "three are left");
    cr_assert_eq(r.close_code, 0);
    cr_assert_not(r.close_now);
    cr_assert_eq(cq_bytes(&c->q), 3000);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 3000, "what is taken leaves the gauge");
    for (int i = 0; i < 2; i++)
        msg_unref(&out[i]);

    cr_assert_eq(client_take(c, out, 8, 2500, &r), 2, "at most max_bytes bytes");
    cr_assert(r.more);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 1000);
    for (int i = 0; i < 2; i++)
        msg_unref(&out[i]);

    cr_assert_eq(client_take(c, out, 8, 1 << 20, &r), 1);
    cr_assert_not(r.more, "the queue is empty");
    msg_unref(&out[0]);
    cr_assert_eq(client_take(c, out, 8, 1 << 20, &r), 0);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0);
    client_unref(&c);
}

Test(client, take_reports_the_close_after_what_was_queued_before_it)
{
    struct client *c = new_client(16, 100000);
    msg_t *out[8];
    struct client_take r;
    cr_assert_eq(client_push(c, msg_of_frame(500)), 0);
    cr_assert_eq(client_push(c, msg_of_frame(500)), 0);
    client_kill(c, 1001, "server shutting down");

    cr_assert_eq(client_take(c, out, 1, 1 << 20, &r), 1);
    cr_assert_eq(r.close_code, 1001);
    cr_assert_str_eq(r.reason, "server shutting down");
    cr_assert_not(r.close_now, "a frame is still queued before the close");
    cr_assert(r.more);
    msg_unref(&out[0]);

    cr_assert_eq(client_take(c, out, 8, 1 << 20, &r), 1);
    cr_assert(r.close_now, "the queue is drained: close now");
    cr_assert_not(r.more);
    msg_unref(&out[0]);

    cr_assert_eq(client_take(c, out, 8, 1 << 20, &r), 0);
    cr_assert(r.close_now);
    cr_assert_eq(r.close_code, 1001);
    client_unref(&c);
}

Test(client, take_stops_at_a_placeholder_not_yet_filled)
{
    struct client *c = new_client(16, 100000);
    msg_t *out[8];
    struct client_take r;
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(client_push(c, msg_of_frame(300)), 0);
    cr_assert_eq(client_push(c, msg_ref(ph)), 0);
    cr_assert_eq(client_push(c, msg_of_frame(400)), 0);
    client_kill(c, 4000, "test");

    cr_assert_eq(client_take(c, out, 8, 1 << 20, &r), 1, "the frame before the placeholder");
    msg_unref(&out[0]);
    cr_assert_not(r.close_now, "the close waits behind the reply");
    cr_assert_eq(client_take(c, out, 8, 1 << 20, &r), 0);
    cr_assert_not(r.more, "nothing to do until the fill wakes the loop");
    cr_assert_not(r.close_now);

    int before = rec.wakeups;
    cr_assert_eq(client_fill(c, ph, msg_of_frame(200)), 0);
    cr_assert_eq(rec.wakeups, before + 1);
    cr_assert_eq(client_take(c, out, 8, 1 << 20, &r), 2);
    cr_assert_eq(msg_size(out[0]), 200, "the filled reply, in its place");
    cr_assert_eq(msg_size(out[1]), 400);
    cr_assert(r.close_now);
    msg_unref(&out[0]);
    msg_unref(&out[1]);
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 0);
    msg_unref(&ph);
    client_unref(&c);
}

Test(client, wakes_its_home_once_per_empty_to_non_empty)
{
    struct client *c = new_client(4, 100000);
    msg_t *out[8];
    struct client_take r;

    cr_assert_eq(client_push(c, msg_of_frame(200)), 0);
    cr_assert_eq(rec.wakeups, 1);
    cr_assert_eq(rec.last_woken, c);
    cr_assert_eq(rec.last_arg, &io_tag, "the wake gets the io_arg the client was made with");
    cr_assert_eq(client_push(c, msg_of_frame(200)), 0);
    cr_assert_eq(client_push(c, msg_of_frame(200)), 0);
    cr_assert_eq(rec.wakeups, 1, "a non-empty queue is already on its way");

    size_t n = client_take(c, out, 8, 1 << 20, &r);
    cr_assert_eq(n, 3);
    for (size_t i = 0; i < n; i++)
        msg_unref(&out[i]);
    cr_assert_eq(client_push(c, msg_of_frame(200)), 0);
    cr_assert_eq(rec.wakeups, 2, "empty again: the next push wakes");

    /* overflow: the close needs the loop too */
    for (int i = 0; i < 3; i++)
        cr_assert_eq(client_push(c, msg_of_frame(200)), 0);
    cr_assert_eq(client_push(c, msg_of_frame(200)), -1);
    cr_assert_eq(rec.wakeups, 3);
    cr_assert_eq(c->close_code, 4008);
    /* closed: pushes and kills are quiet */
    cr_assert_eq(client_push(c, msg_of_frame(200)), 1);
    client_kill(c, 1001, "again");
    cr_assert_eq(rec.wakeups, 3);
    client_unref(&c);
}

Test(client, kill_wakes_once_and_a_dead_client_never)
{
    struct client *c = new_client(4, 100000);
    client_kill(c, 1008, "bad");
    cr_assert_eq(rec.wakeups, 1);
    client_kill(c, 1001, "later");
    cr_assert_eq(rec.wakeups, 1, "the first close request stands");
    cr_assert_eq(c->close_code, 1008);
    client_unref(&c);

    c = new_client(4, 100000);
    client_mark_dead(c);
    cr_assert_eq(client_push(c, msg_of_frame(200)), 1);
    client_kill(c, 1008, "bad");
    cr_assert_eq(rec.wakeups, 1, "nothing to wake for a dead client");
    client_unref(&c);
}

static int posted_runs;
static void posted(void *arg)
{
    cr_assert_eq(arg, &posted_runs);
    posted_runs++;
}

Test(client, post_rx_flow_and_release_go_to_the_io_side)
{
    struct client *c = new_client(4, 100000);
    posted_runs = 0;
    cr_assert_eq(client_post(c, posted, &posted_runs), 0);
    cr_assert_eq(rec.posts, 1);
    cr_assert_eq(posted_runs, 1);
    cr_assert_eq(rec.last_arg, &io_tag);
    rec.post_rc = -1;
    cr_assert_eq(client_post(c, posted, &posted_runs), -1, "a stopped loop is reported");
    cr_assert_eq(posted_runs, 1);

    client_rx_flow(c, false);
    client_rx_flow(c, true);
    cr_assert_eq(rec.flows_off, 1);
    cr_assert_eq(rec.flows_on, 1);
    cr_assert_eq(rec.last_woken, c);

    struct client *extra = client_ref(c);
    client_unref(&extra);
    cr_assert_eq(rec.releases, 0, "released only with the last reference");
    rec.last_arg = NULL;
    client_unref(&c);
    cr_assert_eq(rec.releases, 1);
    cr_assert_eq(rec.last_arg, &io_tag);
}
