/*
 * Unit tests for client: a history reply filled into its placeholder
 * (client_fill) is charged to the queue and to the queue_bytes gauge when
 * it arrives and uncharged when popped; a fill that overflows the queue
 * closes the client with 4008 and frees the queue, as an overflowing push
 * does; a reply larger than the whole bound is handed back for something
 * smaller; a fill after the client is gone is dropped; and the per-client
 * history-read slots (client_read_begin/end) with their gauge.
 *
 * The home loop is a stand-in: loop_schedule is defined here (it counts the
 * wake-ups), so client.c links against it instead of the real loop.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "client.h"
#include "loop.h"
#include "server.h"

static struct server srv; /* zeroed: only its metrics are used */
static int wakeups;

void loop_schedule(struct loop *l, struct client *c)
{
    (void)l;
    (void)c;
    wakeups++;
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

/* What the home loop's flush does (ws.c send_queued): pop under the lock,
 * then give the popped frames' bytes back to the gauge. */
static size_t pop_all(struct client *c)
{
    msg_t *out[64];
    size_t n, total = 0, bytes = 0;
    do {
        pthread_mutex_lock(&c->lock);
        n = cq_pop_batch(&c->q, out, 64, 1 << 20);
        pthread_mutex_unlock(&c->lock);
        for (size_t i = 0; i < n; i++) {
            bytes += msg_size(out[i]);
            msg_unref(&out[i]);
        }
        total += n;
    } while (n);
    atomic_fetch_sub(&srv.metrics.queue_bytes, (int64_t)bytes);
    return total;
}

static void setup(void)
{
    memset(&srv, 0, sizeof(srv));
    wakeups = 0;
}

TestSuite(client, .init = setup);

Test(client, fill_is_charged_on_arrival_and_uncharged_on_pop)
{
    struct client *c = client_new(&srv, NULL, 16, 10000);
    msg_t *ph = msg_new_placeholder();
    cr_assert_eq(client_push(c, msg_of_frame(200)), 0);
    cr_assert_eq(client_push(c, msg_ref(ph)), 0);
    cr_assert_eq(cq_bytes(&c->q), 200, "the empty placeholder is charged 0");
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 200);
    int before = wakeups;

    msg_t *reply = msg_of_frame(3000);
    cr_assert_eq(client_fill(c, ph, reply), 0);
    cr_assert_eq(cq_bytes(&c->q), 3200, "the reply is charged to the queue when it arrives");
    cr_assert_eq(gauge(&srv.metrics.queue_bytes), 3200, "and to the queue_bytes gauge");
    cr_assert_gt(wakeups, before, "the home loop is asked to drain the filled reply");
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
    struct client *c = client_new(&srv, NULL, 16, 10000);
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
    struct client *c = client_new(&srv, NULL, 16, 10000);
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
    struct client *c = client_new(&srv, NULL, 16, 10000);
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
    struct client *c = client_new(&srv, NULL, 16, 10000);
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
    struct client *c = client_new(&srv, NULL, 16, 10000);
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
