/*
 * Unit tests for fairq: keys served in turn (FIFO within a key), a new key
 * served after at most one item of each other key, the per-key share
 * (waiting + being worked on) and the total bound, and key records freed
 * once their last item is done.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "fairq.h"

struct job {
    struct fairq_item qi; /* first: a popped item is its job */
    const char *name;
};

static const char *pop_name(fairq_t *q)
{
    struct fairq_item *it = fairq_pop(q);
    return it ? ((struct job *)it)->name : NULL;
}

Test(fairq, keys_take_turns)
{
    fairq_t *q = fairq_new(100, 100);
    struct job j[] = {{.name = "a1"}, {.name = "a2"}, {.name = "a3"},
                      {.name = "b1"}, {.name = "b2"}, {.name = "c1"}};
    const char *keys[] = {"a", "a", "a", "b", "b", "c"};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(fairq_push(q, keys[i], &j[i].qi), 0);
    cr_assert_eq(fairq_depth(q), 6);
    cr_assert_eq(fairq_keys(q), 3);
    const char *want[] = {"a1", "b1", "c1", "a2", "b2", "a3"};
    for (int i = 0; i < 6; i++)
        cr_assert_str_eq(pop_name(q), want[i], "pop %d", i);
    cr_assert_null(fairq_pop(q));
    cr_assert_eq(fairq_depth(q), 0);
    cr_assert_eq(fairq_keys(q), 3, "popped items still count until done");
    for (int i = 0; i < 6; i++)
        fairq_done(q, &j[i].qi);
    cr_assert_eq(fairq_keys(q), 0, "no records once every item is done");
    fairq_free(q);
}

Test(fairq, a_newcomer_is_not_stuck_behind_a_flood)
{
    fairq_t *q = fairq_new(100, 100);
    struct job flood[20], late = {.name = "late"};
    for (int i = 0; i < 20; i++) {
        flood[i].name = "flood";
        cr_assert_eq(fairq_push(q, "10.0.0.1", &flood[i].qi), 0);
    }
    /* two are being worked on when the newcomer arrives */
    cr_assert_str_eq(pop_name(q), "flood");
    cr_assert_str_eq(pop_name(q), "flood");
    cr_assert_eq(fairq_push(q, "10.0.0.2", &late.qi), 0);
    /* at most one more of the flood before it */
    const char *n1 = pop_name(q), *n2 = pop_name(q);
    cr_assert(n1 && n2 && (!strcmp(n1, "late") || !strcmp(n2, "late")), "%s %s", n1, n2);
    while (fairq_pop(q))
        ;
    fairq_free(q); /* records of items never done are freed with the queue */
}

Test(fairq, one_key_cannot_take_more_than_its_share)
{
    fairq_t *q = fairq_new(100, 2);
    struct job a[3] = {{.name = "a1"}, {.name = "a2"}, {.name = "a3"}}, b = {.name = "b1"};

    cr_assert_eq(fairq_push(q, "a", &a[0].qi), 0);
    cr_assert_eq(fairq_push(q, "a", &a[1].qi), 0);
    cr_assert_eq(fairq_push(q, "a", &a[2].qi), -EBUSY);
    cr_assert_eq(fairq_push(q, "b", &b.qi), 0, "another key still gets in");
    cr_assert_eq(fairq_held(q, "a"), 2);
    /* a popped item still holds its share: working counts too */
    struct fairq_item *it = fairq_pop(q);
    cr_assert_eq(it, &a[0].qi);
    cr_assert_eq(fairq_push(q, "a", &a[2].qi), -EBUSY);
    fairq_done(q, it);
    cr_assert_eq(fairq_held(q, "a"), 1);
    cr_assert_eq(fairq_push(q, "a", &a[2].qi), 0);
    cr_assert_str_eq(pop_name(q), "b1");
    cr_assert_str_eq(pop_name(q), "a2");
    cr_assert_str_eq(pop_name(q), "a3");
    fairq_done(q, &b.qi);
    fairq_done(q, &a[1].qi);
    fairq_done(q, &a[2].qi);
    cr_assert_eq(fairq_keys(q), 0);
    cr_assert_eq(fairq_held(q, "a"), 0);
    fairq_free(q);
}

Test(fairq, the_queue_is_bounded)
{
    fairq_t *q = fairq_new(3, 10);
    struct job j[5] = {{.name = "1"}, {.name = "2"}, {.name = "3"}, {.name = "4"}, {.name = "5"}};

    cr_assert_eq(fairq_push(q, "a", &j[0].qi), 0);
    cr_assert_eq(fairq_push(q, "b", &j[1].qi), 0);
    cr_assert_eq(fairq_push(q, "c", &j[2].qi), 0);
    cr_assert_eq(fairq_push(q, "d", &j[3].qi), -ENOSPC);
    cr_assert_eq(fairq_push(q, "a", &j[3].qi), -ENOSPC);
    cr_assert_eq(fairq_keys(q), 3, "a refused push leaves no record");
    /* the bound is on waiting items: one taken by a worker makes room */
    struct fairq_item *it = fairq_pop(q);
    cr_assert_eq(fairq_push(q, "d", &j[3].qi), 0);
    cr_assert_eq(fairq_depth(q), 3);
    cr_assert_eq(fairq_push(q, "e", &j[4].qi), -ENOSPC);
    fairq_done(q, it);
    for (int i = 0; i < 3; i++)
        fairq_done(q, fairq_pop(q));
    cr_assert_null(fairq_pop(q));
    cr_assert_eq(fairq_keys(q), 0);
    fairq_free(q);
}
