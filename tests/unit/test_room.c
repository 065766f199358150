/*
 * Unit tests for room: the registry (creation, lookup, the idle list and
 * reclaim, preload, the active list and listing), the per-room history
 * window, membership and former members, presence coalescing, and
 * concurrent acquire/release from many threads (run under TSan by
 * tools/test).
 *
 * Clients are real struct client objects on a zeroed server with no I/O side:
 * client_new only stores those pointers, and these tests never push (a push
 * would wake through the NULL client_io).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "client.h"
#include "fnvcollide.h"
#include "room.h"
#include "server.h"
#include "util.h"

static struct server srv; /* zeroed: the metrics client_free updates */

static struct client *new_client(const char *user)
{
    struct client *c = client_new(&srv, 16, 1 << 20, NULL, NULL);
    cr_assert_not_null(c);
    cr_assert_lt(strlen(user), sizeof(c->user));
    strcpy(c->user, user);
    return c;
}

static unsigned client_refs(struct client *c)
{
    return atomic_load(&c->refs);
}

static unsigned hist_refs(struct hist *h)
{
    return atomic_load(&h->refs);
}

/* Append message seq to rm (room lock held); the window keeps the only
 * reference unless keep is given, which receives one more. */
static void append(struct room *rm, uint64_t seq, struct hist **keep)
{
    char text[32];
    int n = snprintf(text, sizeof(text), "message %llu", (unsigned long long)seq);
    struct hist *h = hist_new(rm->name, seq, "alice", text, (size_t)n, 1000 + (int64_t)seq, NULL);
    room_append_locked(rm, h);
    if (keep)
        *keep = h;
    else
        hist_unref(&h);
}

/* Acquire (creating) a room and mark its seq known, as the broker does once
 * storage answered (a new room: seq 0). */
static struct room *acquire_ready(rooms_t *r, const char *name)
{
    struct room *rm = rooms_acquire(r, name, true);
    pthread_mutex_lock(&rm->lock);
    rm->state = ROOM_READY;
    pthread_mutex_unlock(&rm->lock);
    return rm;
}

/* user joins rm on connection c and leaves again (room lock taken here). */
static void join_leave(struct room *rm, struct client *c)
{
    pthread_mutex_lock(&rm->lock);
    cr_assert(room_add_member_locked(rm, c));
    cr_assert(room_remove_member_locked(rm, c));
    pthread_mutex_unlock(&rm->lock);
}

static struct rooms_stats stats(rooms_t *r)
{
    struct rooms_stats st;
    rooms_stats(r, &st);
    return st;
}

Test(room, hist_new_lays_out_every_field)
{
    struct hist *h = hist_new("lobby", 7, "bob", "a\0b", 3, 12345, "cid-1");
    cr_assert_str_eq(h->m.room, "lobby");
    cr_assert_eq(h->m.seq, 7);
    cr_assert_str_eq(h->m.from, "bob");
    cr_assert_eq(h->m.text_len, 3);
    cr_assert_eq(memcmp(h->m.text, "a\0b", 4), 0, "text is copied by length and terminated");
    cr_assert_eq(h->m.ts, 12345);
    cr_assert_str_eq(h->m.id, "cid-1");
    cr_assert_eq(hist_refs(h), 1);

    struct hist *r = hist_ref(h);
    cr_assert_eq(r, h);
    cr_assert_eq(hist_refs(h), 2);
    hist_unref(&r);
    cr_assert_null(r, "unref NULLs the caller's pointer");
    hist_unref(&r); /* NULL: no-op */
    cr_assert_eq(hist_refs(h), 1);
    hist_unref(&h);

    h = hist_new("lobby", 1, "bob", "", 0, 0, NULL);
    cr_assert_str_eq(h->m.id, "", "no id reads as the empty string");
    cr_assert_str_eq(h->m.text, "");
    hist_unref(&h);
}

/* Kept reachable so valgrind's leak check at the abort does not count it. */
static struct hist *volatile abort_keep;

Test(room, hist_unref_underflow_aborts, .signal = SIGABRT)
{
    struct hist *h = abort_keep = hist_new("lobby", 1, "bob", "x", 1, 0, NULL);
    atomic_store(&h->refs, 0);
    hist_unref(&h);
}

Test(room, acquire_absent_without_create)
{
    rooms_t *r = rooms_new(8, 16);
    cr_assert_null(rooms_acquire(r, "nowhere", false));
    struct room_snapshot snap[4];
    cr_assert_eq(rooms_list(r, snap, 4), 0);
    cr_assert_eq(rooms_active(r), 0);
    rooms_release(r, &(struct room *){NULL}); /* NULL: no-op */
    rooms_free(r);
    rooms_free(NULL);
}

Test(room, create_lookup_and_reclaim)
{
    rooms_t *r = rooms_new(8, 16);
    struct room *a = rooms_acquire(r, "general", true);
    cr_assert_not_null(a);
    cr_assert_str_eq(a->name, "general");
    cr_assert_not(a->is_dm);
    cr_assert_eq(a->seq, 0);
    cr_assert_eq(a->state, ROOM_COLD, "a created room's seq is still to be read");
    cr_assert_eq(atomic_load(&a->refs), 1);

    struct room *b = rooms_acquire(r, "general", false);
    cr_assert_eq(b, a, "a lookup finds the same room");
    struct room *c = rooms_acquire(r, "general", true);
    cr_assert_eq(c, a, "create finds the existing room");
    cr_assert_eq(atomic_load(&a->refs), 3);

    rooms_release(r, &b);
    cr_assert_null(b, "release NULLs the caller's pointer");
    rooms_release(r, &c);
    struct room *d = rooms_acquire(r, "general", false);
    cr_assert_eq(d, a, "still referenced: not reclaimed");
    rooms_release(r, &d);
    cr_assert_eq(atomic_load(&a->refs), 1);
    rooms_release(r, &a);
    /* no references and never loaded: gone at once, idle list or not */
    cr_assert_null(rooms_acquire(r, "general", false));
    cr_assert_eq(stats(r).held, 0);
    cr_assert_eq(stats(r).reclaimed, 1);
    rooms_free(r);
}

/* 100,000 room names built to share one bucket of the registry's old
 * unkeyed hash (FNV-1a; see fnvcollide.h) made every lookup walk one chain
 * of them all: about 5e9 steps to create them, minutes of CPU under the
 * registry's write lock. With the keyed hash, creating and finding them all
 * takes well under a second (a few seconds under valgrind); 30 s is the
 * stated bound, far below what one shared chain costs. */
Test(room, crafted_colliding_names_stay_fast, .timeout = 120)
{
    static char pairs[FNVC_STAGES][2][FNVC_BLOCK];
    enum { N = 100000 };
    char name[FNVC_LEN + 1];
    rooms_t *r = rooms_new(8, N); /* an idle list that keeps them all */
    int64_t t0 = now_mono_ms();

    cr_assert_eq(fnvc_pairs(pairs), 0);
    for (size_t i = 0; i < N; i++) {
        fnvc_name(pairs, i, name);
        rooms_preload(r, name, i + 1); /* a room with messages stays while idle */
    }
    for (size_t i = 0; i < N; i++) {
        fnvc_name(pairs, i, name);
        struct room *rm = rooms_acquire(r, name, false);
        cr_assert_not_null(rm, "%s", name);
        cr_assert_eq(rm->seq, i + 1);
        rooms_release(r, &rm);
    }
    int64_t ms = now_mono_ms() - t0;
    cr_log_info("%d crafted names created and found in %lld ms", N, (long long)ms);
    cr_assert_lt(ms, 30000, "%lld ms", (long long)ms);
    rooms_free(r);
}

Test(room, dm_rooms_are_marked)
{
    rooms_t *r = rooms_new(8, 16);
    struct room *d = rooms_acquire(r, "dm:alice:bob", true);
    cr_assert(d->is_dm);
    struct room *g = rooms_acquire(r, "dmz", true);
    cr_assert_not(g->is_dm, "only the 'dm:' prefix makes a DM");
    rooms_release(r, &d);
    rooms_release(r, &g);
    rooms_free(r);
}

Test(room, registry_grows_past_its_initial_buckets)
{
    enum { N = 1000 };
    static struct room *held[N];
    rooms_t *r = rooms_new(8, 16);
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "room-%d", i);
        held[i] = rooms_acquire(r, name, true);
        cr_assert_str_eq(held[i]->name, name);
    }
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "room-%d", i);
        struct room *rm = rooms_acquire(r, name, false);
        cr_assert_eq(rm, held[i], "%s moved or was duplicated by growth", name);
        rooms_release(r, &rm);
    }
    for (int i = 0; i < N; i += 2)
        rooms_release(r, &held[i]);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "room-%d", i);
        struct room *rm = rooms_acquire(r, name, false);
        if (i % 2 == 0) {
            cr_assert_null(rm, "%s should have been reclaimed", name);
        } else {
            cr_assert_eq(rm, held[i]);
            rooms_release(r, &rm);
        }
    }
    for (int i = 1; i < N; i += 2)
        rooms_release(r, &held[i]);
    rooms_free(r);
}

Test(room, room_with_messages_keeps_its_seq_but_not_its_window)
{
    rooms_t *r = rooms_new(8, 16);
    struct client *c = new_client("alice");
    struct hist *h3;

    struct room *rm = acquire_ready(r, "lobby"); /* the membership's reference */
    pthread_mutex_lock(&rm->lock);
    cr_assert(room_add_member_locked(rm, c));
    append(rm, 1, NULL);
    append(rm, 2, NULL);
    append(rm, 3, &h3);
    pthread_mutex_unlock(&rm->lock);
    cr_assert_eq(hist_refs(h3), 2);

    pthread_mutex_lock(&rm->lock);
    cr_assert(room_remove_member_locked(rm, c));
    pthread_mutex_unlock(&rm->lock);
    struct room *was = rm;
    rooms_release(r, &rm);

    /* idle: still registered, same seq, window and member array given back */
    cr_assert_eq(stats(r).idle, 1);
    rm = rooms_acquire(r, "lobby", false);
    cr_assert_eq(rm, was, "an idle room stays registered while the idle list has room");
    cr_assert_eq(stats(r).idle, 0, "referenced again: off the idle list");
    pthread_mutex_lock(&rm->lock);
    cr_assert_eq(rm->seq, 3);
    cr_assert_eq(rm->wcount, 0);
    cr_assert_null(rm->win);
    cr_assert_null(rm->members);
    cr_assert_eq(rm->nmembers, 0);
    cr_assert_eq(hist_refs(h3), 1, "the window's reference was dropped");
    cr_assert_eq(room_window_lo_locked(rm), 4, "empty window: lo is seq + 1");
    struct hist *out[4];
    cr_assert_eq(room_window_copy_locked(rm, 1, 3, out), 0);

    /* and it carries on from seq 4 */
    append(rm, 4, NULL);
    cr_assert_eq(rm->seq, 4);
    cr_assert_eq(room_window_lo_locked(rm), 4);
    cr_assert_eq(room_window_copy_locked(rm, 1, 10, out), 1);
    cr_assert_eq(out[0]->m.seq, 4);
    hist_unref(&out[0]);
    pthread_mutex_unlock(&rm->lock);
    rooms_release(r, &rm);

    hist_unref(&h3);
    client_unref(&c);
    rooms_free(r);
}

Test(room, window_evicts_the_oldest)
{
    rooms_t *r = rooms_new(4, 16);
    struct room *rm = rooms_acquire(r, "lobby", true);
    struct hist *h[11];
    struct hist *out[16];

    pthread_mutex_lock(&rm->lock);
    cr_assert_eq(room_window_lo_locked(rm), 1, "a new room's window starts at seq 1");
    cr_assert_eq(room_window_copy_locked(rm, 1, 5, out), 0);
    for (uint64_t s = 1; s <= 10; s++) {
        append(rm, s, &h[s]);
        uint64_t lo = s > 4 ? s - 3 : 1;
        cr_assert_eq(room_window_lo_locked(rm), lo, "after seq %llu", (unsigned long long)s);
        cr_assert_eq(rm->seq, s);
    }
    for (int s = 1; s <= 6; s++)
        cr_assert_eq(hist_refs(h[s]), 1, "seq %d evicted: the window let go", s);
    for (int s = 7; s <= 10; s++)
        cr_assert_eq(hist_refs(h[s]), 2, "seq %d in the window", s);

    size_t n = room_window_copy_locked(rm, 1, 10, out);
    cr_assert_eq(n, 4, "a range below the window is clamped to it");
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(out[i], h[7 + i]);
        cr_assert_eq(out[i]->m.seq, 7 + i);
        cr_assert_eq(hist_refs(out[i]), 3, "each copy holds a reference");
        hist_unref(&out[i]);
    }
    n = room_window_copy_locked(rm, 8, 9, out);
    cr_assert_eq(n, 2);
    cr_assert_eq(out[0], h[8]);
    cr_assert_eq(out[1], h[9]);
    hist_unref(&out[0]);
    hist_unref(&out[1]);
    n = room_window_copy_locked(rm, 9, 1000, out);
    cr_assert_eq(n, 2, "a range beyond seq is clamped to it");
    hist_unref(&out[0]);
    hist_unref(&out[1]);
    cr_assert_eq(room_window_copy_locked(rm, 11, 20, out), 0);
    cr_assert_eq(room_window_copy_locked(rm, 9, 8, out), 0, "an empty range");
    cr_assert_eq(room_window_copy_locked(rm, 0, 7, out), 1);
    cr_assert_eq(out[0], h[7]);
    hist_unref(&out[0]);
    cr_assert_str_eq(h[10]->m.text, "message 10");
    pthread_mutex_unlock(&rm->lock);

    rooms_release(r, &rm);
    rooms_free(r);
    for (int s = 1; s <= 10; s++) {
        cr_assert_eq(hist_refs(h[s]), 1, "rooms_free drops the window's references");
        hist_unref(&h[s]);
    }
}

Test(room, window_of_one)
{
    rooms_t *r = rooms_new(0, 16); /* 0 means 1 */
    struct room *rm = rooms_acquire(r, "tiny", true);
    struct hist *out[2];
    pthread_mutex_lock(&rm->lock);
    for (uint64_t s = 1; s <= 3; s++)
        append(rm, s, NULL);
    cr_assert_eq(room_window_lo_locked(rm), 3);
    cr_assert_eq(room_window_copy_locked(rm, 1, 3, out), 1);
    cr_assert_eq(out[0]->m.seq, 3);
    hist_unref(&out[0]);
    pthread_mutex_unlock(&rm->lock);
    rooms_release(r, &rm);
    rooms_free(r);
}

Test(room, preload)
{
    rooms_t *r = rooms_new(8, 16);
    rooms_preload(r, "archive", 42);
    struct room *rm = rooms_acquire(r, "archive", false);
    cr_assert_not_null(rm, "a preloaded room exists without create");
    cr_assert_eq(rm->seq, 42);
    pthread_mutex_lock(&rm->lock);
    cr_assert_eq(room_window_lo_locked(rm), 43);
    struct hist *out[2];
    cr_assert_eq(room_window_copy_locked(rm, 1, 42, out), 0, "nothing of it is in memory");
    pthread_mutex_unlock(&rm->lock);
    cr_assert_eq(rm->state, ROOM_READY, "a preloaded room's seq is known");
    struct room *was = rm;
    rooms_release(r, &rm);
    cr_assert_eq(rm = rooms_acquire(r, "archive", false), was, "seq > 0: kept while idle");
    rooms_release(r, &rm);

    /* preloading a known room updates it in place */
    rooms_preload(r, "archive", 50);
    rm = rooms_acquire(r, "archive", false);
    cr_assert_eq(rm, was);
    cr_assert_eq(rm->seq, 50);
    pthread_mutex_lock(&rm->lock);
    append(rm, 51, NULL);
    cr_assert_eq(room_window_lo_locked(rm), 51);
    pthread_mutex_unlock(&rm->lock);
    rooms_release(r, &rm);

    struct room_snapshot snap[4];
    cr_assert_eq(rooms_list(r, snap, 4), 0, "a room without members is not listed");
    rooms_free(r);
}

Test(room, members_add_remove_dedupe)
{
    rooms_t *r = rooms_new(8, 16);
    struct room *rm = acquire_ready(r, "lobby");
    struct client *a1 = new_client("alice"), *a2 = new_client("alice"), *b = new_client("bob");

    pthread_mutex_lock(&rm->lock);
    cr_assert_not(room_has_member_locked(rm, a1));
    cr_assert(room_add_member_locked(rm, a1));
    cr_assert_eq(client_refs(a1), 2, "a membership holds a client reference");
    cr_assert_not(room_add_member_locked(rm, a1), "the same connection is added once");
    cr_assert_eq(client_refs(a1), 2);
    cr_assert_eq(rm->nmembers, 1);
    cr_assert(room_add_member_locked(rm, a2), "a second connection of the same user");
    cr_assert(room_add_member_locked(rm, b));
    cr_assert(room_has_member_locked(rm, a1));
    cr_assert(room_has_member_locked(rm, a2));
    cr_assert(room_has_member_locked(rm, b));
    cr_assert_eq(rm->nmembers, 3);

    cr_assert_eq(room_user_conns_locked(rm, "alice"), 2);
    cr_assert_eq(room_user_conns_locked(rm, "bob"), 1);
    cr_assert_eq(room_user_conns_locked(rm, "carol"), 0);
    cr_assert_eq(room_user_conns_locked(rm, "alic"), 0);

    const char *names[8];
    size_t n = room_member_names_locked(rm, names, 8);
    cr_assert_eq(n, 2, "names are distinct");
    cr_assert((strcmp(names[0], "alice") == 0 && strcmp(names[1], "bob") == 0) ||
              (strcmp(names[0], "bob") == 0 && strcmp(names[1], "alice") == 0));
    cr_assert_eq(room_member_names_locked(rm, names, 1), 1, "bounded by max");

    cr_assert(room_remove_member_locked(rm, a1));
    cr_assert_eq(client_refs(a1), 1, "removal drops the membership's reference");
    cr_assert_not(room_remove_member_locked(rm, a1), "already removed");
    cr_assert_eq(client_refs(a1), 1);
    cr_assert_not(room_has_member_locked(rm, a1));
    cr_assert(room_has_member_locked(rm, a2), "removal of one connection keeps the other");
    cr_assert_eq(room_user_conns_locked(rm, "alice"), 1);
    cr_assert_eq(room_member_names_locked(rm, names, 8), 2);

    cr_assert(room_remove_member_locked(rm, b));
    cr_assert(room_remove_member_locked(rm, a2));
    cr_assert_eq(rm->nmembers, 0);
    cr_assert_eq(room_member_names_locked(rm, names, 8), 0);
    pthread_mutex_unlock(&rm->lock);

    rooms_release(r, &rm);
    /* a room that was joined keeps its record (who joined, for @mentions),
     * empty, while idle; never-joined, message-free rooms leave no trace */
    cr_assert_not_null(rm = rooms_acquire(r, "lobby", false));
    cr_assert(room_user_joined_ever_locked(rm, "alice"));
    cr_assert_not(room_user_joined_ever_locked(rm, "carol"));
    cr_assert_eq(rm->nmembers, 0);
    rooms_release(r, &rm);
    client_unref(&a1);
    client_unref(&a2);
    client_unref(&b);
    rooms_free(r);
}

Test(room, many_members)
{
    enum { N = 50 };
    rooms_t *r = rooms_new(8, 16);
    struct room *rm = rooms_acquire(r, "big", true);
    struct client *c[N];
    char user[16];

    pthread_mutex_lock(&rm->lock);
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof(user), "u%d", i % 10);
        c[i] = new_client(user);
        cr_assert(room_add_member_locked(rm, c[i]));
    }
    for (int i = 0; i < N; i++)
        cr_assert(room_has_member_locked(rm, c[i]), "member %d lost as the array grew", i);
    const char *names[N];
    cr_assert_eq(room_member_names_locked(rm, names, N), 10);
    cr_assert_eq(room_user_conns_locked(rm, "u3"), 5);
    /* remove every other one; swap-removal must not lose the rest */
    for (int i = 0; i < N; i += 2)
        cr_assert(room_remove_member_locked(rm, c[i]));
    for (int i = 0; i < N; i++)
        cr_assert_eq(room_has_member_locked(rm, c[i]), i % 2 == 1, "member %d", i);
    cr_assert_eq(rm->nmembers, N / 2);
    pthread_mutex_unlock(&rm->lock);

    rooms_release(r, &rm);
    rooms_free(r); /* frees the room with its remaining members */
    for (int i = 0; i < N; i++) {
        cr_assert_eq(client_refs(c[i]), 1, "rooms_free drops member %d's reference", i);
        client_unref(&c[i]);
    }
}

static const struct room_snapshot *find_snap(const struct room_snapshot *s, size_t n,
                                             const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].name, name) == 0)
            return &s[i];
    return NULL;
}

Test(room, list_and_active)
{
    rooms_t *r = rooms_new(8, 16);
    struct client *a1 = new_client("alice"), *a2 = new_client("alice"), *b = new_client("bob");
    struct client *c = new_client("carol");
    struct room *lobby = rooms_acquire(r, "lobby", true);
    struct room *dev = rooms_acquire(r, "dev", true);
    struct room *empty = rooms_acquire(r, "empty", true);
    struct room *dm = rooms_acquire(r, "dm:alice:bob", true);
    rooms_preload(r, "archive", 9);

    pthread_mutex_lock(&lobby->lock);
    room_add_member_locked(lobby, a1);
    room_add_member_locked(lobby, a2);
    room_add_member_locked(lobby, b);
    append(lobby, 1, NULL);
    append(lobby, 2, NULL);
    pthread_mutex_unlock(&lobby->lock);
    pthread_mutex_lock(&dev->lock);
    room_add_member_locked(dev, c);
    pthread_mutex_unlock(&dev->lock);
    pthread_mutex_lock(&dm->lock);
    room_add_member_locked(dm, a1);
    room_add_member_locked(dm, b);
    pthread_mutex_unlock(&dm->lock);

    struct room_snapshot snap[8];
    size_t n = rooms_list(r, snap, 8);
    cr_assert_eq(n, 2, "only non-DM rooms with members are listed");
    const struct room_snapshot *s = find_snap(snap, n, "lobby");
    cr_assert_not_null(s);
    cr_assert_eq(s->members, 2, "members counts distinct users, not connections");
    cr_assert_eq(s->seq, 2);
    s = find_snap(snap, n, "dev");
    cr_assert_not_null(s);
    cr_assert_eq(s->members, 1);
    cr_assert_eq(s->seq, 0);
    cr_assert_eq(rooms_list(r, snap, 1), 1, "bounded by max");
    cr_assert_eq(rooms_list(r, snap, 0), 0);
    /* rooms_active counts every room with members, DM conversations included */
    cr_assert_eq(rooms_active(r), 3);

    pthread_mutex_lock(&dev->lock);
    room_remove_member_locked(dev, c);
    pthread_mutex_unlock(&dev->lock);
    n = rooms_list(r, snap, 8);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(snap[0].name, "lobby");
    cr_assert_eq(rooms_active(r), 2);

    rooms_release(r, &lobby);
    rooms_release(r, &dev);
    rooms_release(r, &empty);
    rooms_release(r, &dm);
    rooms_free(r);
    cr_assert_eq(client_refs(a1), 1);
    cr_assert_eq(client_refs(b), 1);
    client_unref(&a1);
    client_unref(&a2);
    client_unref(&b);
    client_unref(&c);
}

/* ---- the idle list, reclaim, the active list ---- */

Test(room, idle_list_reclaims_the_least_recently_used)
{
    rooms_t *r = rooms_new(8, 3);
    struct client *c = new_client("alice");
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "r%d", i);
        struct room *rm = acquire_ready(r, name);
        join_leave(rm, c); /* joined once: worth keeping for a while */
        rooms_release(r, &rm);
    }
    struct rooms_stats st = stats(r);
    cr_assert_eq(st.idle, 3, "at most idle_max idle rooms");
    cr_assert_eq(st.held, 3);
    cr_assert_eq(st.reclaimed, 2);
    cr_assert_null(rooms_acquire(r, "r0", false), "the oldest went first");
    cr_assert_null(rooms_acquire(r, "r1", false));

    /* using r2 makes it the most recent: r3 goes next */
    struct room *rm = rooms_acquire(r, "r2", false);
    cr_assert_not_null(rm);
    cr_assert_eq(stats(r).idle, 2);
    rooms_release(r, &rm);
    rm = acquire_ready(r, "r5");
    join_leave(rm, c);
    rooms_release(r, &rm);
    cr_assert_null(rooms_acquire(r, "r3", false), "least recently used");
    cr_assert_not_null(rm = rooms_acquire(r, "r2", false));
    rooms_release(r, &rm);
    st = stats(r);
    cr_assert_eq(st.idle, 3);
    cr_assert_eq(st.reclaimed, 3);

    /* a room in use is never reclaimed, however many idle ones come after */
    struct room *held = rooms_acquire(r, "r4", false);
    cr_assert_not_null(held);
    for (int i = 10; i < 20; i++) {
        snprintf(name, sizeof(name), "r%d", i);
        rm = acquire_ready(r, name);
        join_leave(rm, c);
        rooms_release(r, &rm);
    }
    cr_assert_eq(stats(r).idle, 3);
    cr_assert_eq(stats(r).held, 4);
    cr_assert_eq(rm = rooms_acquire(r, "r4", false), held);
    rooms_release(r, &rm);
    rooms_release(r, &held);
    client_unref(&c);
    rooms_free(r);
}

Test(room, unused_and_unloaded_rooms_leave_at_once)
{
    rooms_t *r = rooms_new(8, 100);
    struct room *rm = acquire_ready(r, "never-used"); /* seq 0, nobody joined */
    rooms_release(r, &rm);
    cr_assert_null(rooms_acquire(r, "never-used", false));

    rm = rooms_acquire(r, "cold", true); /* its seq never came */
    pthread_mutex_lock(&rm->lock);
    cr_assert_eq(rm->state, ROOM_COLD);
    append(rm, 1, NULL); /* even with something in it: its seq is unknown */
    pthread_mutex_unlock(&rm->lock);
    rooms_release(r, &rm);
    cr_assert_null(rooms_acquire(r, "cold", false));

    rm = acquire_ready(r, "written");
    pthread_mutex_lock(&rm->lock);
    append(rm, 1, NULL);
    pthread_mutex_unlock(&rm->lock);
    rooms_release(r, &rm);
    cr_assert_not_null(rm = rooms_acquire(r, "written", false), "a room with messages stays idle");
    rooms_release(r, &rm);
    struct rooms_stats st = stats(r);
    cr_assert_eq(st.held, 1);
    cr_assert_eq(st.idle, 1);
    cr_assert_eq(st.reclaimed, 2);

    /* with no idle list at all, every room leaves with its last reference */
    rooms_t *r0 = rooms_new(8, 0);
    rm = acquire_ready(r0, "written");
    pthread_mutex_lock(&rm->lock);
    append(rm, 1, NULL);
    pthread_mutex_unlock(&rm->lock);
    rooms_release(r0, &rm);
    cr_assert_null(rooms_acquire(r0, "written", false));
    cr_assert_eq(stats(r0).held, 0);
    rooms_free(r0);
    rooms_free(r);
}

Test(room, idle_rooms_former_members_are_bounded_too)
{
    /* idle_max 2: the idle list remembers 2 * ROOM_IDLE_NAMES names */
    rooms_t *r = rooms_new(8, 2);
    struct room *big = acquire_ready(r, "big");
    char user[16];
    for (int i = 0; i < 2 * ROOM_IDLE_NAMES + 1; i++) {
        snprintf(user, sizeof(user), "u%d", i);
        struct client *c = new_client(user);
        join_leave(big, c);
        client_unref(&c);
    }
    rooms_release(r, &big);
    cr_assert_null(rooms_acquire(r, "big", false), "too many names for the idle list");

    struct room *small = acquire_ready(r, "small");
    struct client *c = new_client("solo");
    join_leave(small, c);
    rooms_release(r, &small);
    cr_assert_not_null(small = rooms_acquire(r, "small", false));
    rooms_release(r, &small);
    client_unref(&c);
    rooms_free(r);
}

Test(room, former_members_are_bounded)
{
    enum { N = ROOM_FORMER_MAX + 10 };
    rooms_t *r = rooms_new(8, 16);
    struct room *rm = acquire_ready(r, "busy");
    struct client *stay = new_client("stayer");
    char user[16];

    pthread_mutex_lock(&rm->lock);
    cr_assert(room_add_member_locked(rm, stay));
    pthread_mutex_unlock(&rm->lock);
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof(user), "u%d", i);
        struct client *c = new_client(user);
        join_leave(rm, c);
        client_unref(&c);
    }
    pthread_mutex_lock(&rm->lock);
    cr_assert_eq(rm->nformer, ROOM_FORMER_MAX);
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof(user), "u%d", i);
        cr_assert_eq(room_user_joined_ever_locked(rm, user), i >= 10, "%s", user);
    }
    cr_assert(room_user_joined_ever_locked(rm, "stayer"), "members are never forgotten");
    /* a former member who comes back is a member again, not a former one */
    struct client *back = new_client("u100");
    cr_assert(room_add_member_locked(rm, back));
    cr_assert_eq(rm->nformer, ROOM_FORMER_MAX - 1);
    cr_assert_eq(room_user_conns_locked(rm, "u100"), 1);
    cr_assert(room_remove_member_locked(rm, back));
    cr_assert_eq(rm->nformer, ROOM_FORMER_MAX);
    cr_assert(room_remove_member_locked(rm, stay));
    pthread_mutex_unlock(&rm->lock);
    rooms_release(r, &rm);
    client_unref(&back);
    client_unref(&stay);
    rooms_free(r);
}

Test(room, active_list_and_stats_ignore_idle_rooms)
{
    enum { IDLE = 200 };
    rooms_t *r = rooms_new(8, 1000);
    struct client *c = new_client("alice"), *d = new_client("dave");
    char name[16];
    for (int i = 0; i < IDLE; i++) {
        snprintf(name, sizeof(name), "idle%d", i);
        struct room *rm = acquire_ready(r, name);
        join_leave(rm, c);
        rooms_release(r, &rm);
    }
    struct room *live = acquire_ready(r, "live");
    struct room *dm = acquire_ready(r, "dm:alice:dave");
    pthread_mutex_lock(&live->lock);
    room_add_member_locked(live, c);
    pthread_mutex_unlock(&live->lock);
    pthread_mutex_lock(&dm->lock);
    room_add_member_locked(dm, c);
    room_add_member_locked(dm, d);
    pthread_mutex_unlock(&dm->lock);

    struct rooms_stats st = stats(r);
    cr_assert_eq(st.held, IDLE + 2);
    cr_assert_eq(st.idle, IDLE);
    cr_assert_eq(st.active, 2, "DM conversations with members count as active");
    cr_assert_eq(rooms_active(r), 2);
    struct room_snapshot snap[8];
    cr_assert_eq(rooms_list(r, snap, 8), 1, "the idle rooms are not even looked at");
    cr_assert_str_eq(snap[0].name, "live");

    pthread_mutex_lock(&dm->lock);
    room_remove_member_locked(dm, c);
    cr_assert_eq(rooms_active(r), 2, "one member left: still active");
    room_remove_member_locked(dm, d);
    pthread_mutex_unlock(&dm->lock);
    cr_assert_eq(rooms_active(r), 1);
    pthread_mutex_lock(&live->lock);
    room_remove_member_locked(live, c);
    pthread_mutex_unlock(&live->lock);
    cr_assert_eq(rooms_active(r), 0);
    cr_assert_eq(rooms_list(r, snap, 8), 0);
    rooms_release(r, &live);
    rooms_release(r, &dm);
    cr_assert_eq(stats(r).idle, IDLE + 2);
    client_unref(&c);
    client_unref(&d);
    rooms_free(r);
}

Test(room, waiters_are_handed_over)
{
    rooms_t *r = rooms_new(8, 16);
    struct room *rm = rooms_acquire(r, "loading", true);
    struct client *a = new_client("alice"), *b = new_client("bob");
    size_t n;
    pthread_mutex_lock(&rm->lock);
    room_add_waiter_locked(rm, a);
    room_add_waiter_locked(rm, b);
    cr_assert_eq(client_refs(a), 2, "a waiter holds a client reference");
    struct client **w = room_take_waiters_locked(rm, &n);
    cr_assert_eq(n, 2);
    cr_assert_eq(w[0], a, "in the order they came");
    cr_assert_eq(w[1], b);
    cr_assert_eq(rm->nwaiters, 0);
    room_add_waiter_locked(rm, a); /* rooms_free drops what is still waiting */
    pthread_mutex_unlock(&rm->lock);
    for (size_t i = 0; i < n; i++)
        client_unref(&w[i]);
    free(w);
    rooms_release(r, &rm); /* cold: reclaimed, its waiter's reference dropped */
    cr_assert_eq(client_refs(a), 1);
    client_unref(&a);
    client_unref(&b);
    rooms_free(r);
}

/* ---- presence coalescing ---- */

/* One presence step at time t: what room_presence_locked decides for user. */
static enum room_presence pres(struct room *rm, const char *user, int64_t t, bool force,
                               bool *present)
{
    *present = !*present; /* must be set on ANNOUNCE only; poison it */
    return room_presence_locked(rm, user, t, force, present);
}

Test(room, presence_burst_then_changes_wait_and_cancel)
{
    rooms_t *r = rooms_new(8, 16);
    struct room *rm = acquire_ready(r, "lobby");
    struct client *obs = new_client("observer"), *f = new_client("flapper");
    bool present = false;
    int64_t t = 1000000;

    pthread_mutex_lock(&rm->lock);
    room_add_member_locked(rm, obs);
    cr_assert_eq(pres(rm, "observer", t, false, &present), ROOM_PRES_ANNOUNCE);
    cr_assert(present);
    cr_assert_eq(pres(rm, "nobody", t, false, &present), ROOM_PRES_NONE, "no record");
    /* a burst of ROOM_PRESENCE_BURST changes goes out at once */
    for (int i = 0; i < ROOM_PRESENCE_BURST; i++) {
        bool join = i % 2 == 0;
        if (join)
            room_add_member_locked(rm, f);
        else
            room_remove_member_locked(rm, f);
        cr_assert_eq(pres(rm, "flapper", t, false, &present), ROOM_PRES_ANNOUNCE, "event %d", i);
        cr_assert_eq(present, join);
    }
    /* announced: absent. The next join waits... */
    room_add_member_locked(rm, f);
    cr_assert_eq(pres(rm, "flapper", t, false, &present), ROOM_PRES_DEFERRED);
    /* ...and a leave before it is due cancels it: nothing to tell */
    room_remove_member_locked(rm, f);
    cr_assert_eq(pres(rm, "flapper", t + 1, false, &present), ROOM_PRES_NONE);
    /* any number of pairs over budget: nothing goes out */
    for (int i = 0; i < 1000; i++) {
        room_add_member_locked(rm, f);
        cr_assert_eq(pres(rm, "flapper", t + 2, false, &present), ROOM_PRES_DEFERRED);
        room_remove_member_locked(rm, f);
        cr_assert_eq(pres(rm, "flapper", t + 2, false, &present), ROOM_PRES_NONE);
    }
    /* ends present: deferred until the budget has a token again */
    room_add_member_locked(rm, f);
    cr_assert_eq(pres(rm, "flapper", t + 3, false, &present), ROOM_PRES_DEFERRED);
    cr_assert_eq(pres(rm, "flapper", t + ROOM_PRESENCE_INTERVAL_MS - 1, false, &present),
                 ROOM_PRES_DEFERRED);
    cr_assert_eq(pres(rm, "flapper", t + ROOM_PRESENCE_INTERVAL_MS, false, &present),
                 ROOM_PRES_ANNOUNCE, "one token back after one interval");
    cr_assert(present, "the final state is announced");
    cr_assert_eq(pres(rm, "flapper", t + ROOM_PRESENCE_INTERVAL_MS, false, &present),
                 ROOM_PRES_NONE, "and only once");
    /* force: announce whatever the budget */
    room_remove_member_locked(rm, f);
    cr_assert_eq(pres(rm, "flapper", t + ROOM_PRESENCE_INTERVAL_MS, false, &present),
                 ROOM_PRES_DEFERRED);
    cr_assert_eq(pres(rm, "flapper", t + ROOM_PRESENCE_INTERVAL_MS, true, &present),
                 ROOM_PRES_ANNOUNCE);
    cr_assert_not(present);
    /* a second connection of a present user changes nothing */
    room_add_member_locked(rm, f);
    struct client *f2 = new_client("flapper");
    room_add_member_locked(rm, f2);
    cr_assert_eq(room_user_conns_locked(rm, "flapper"), 2);
    cr_assert_eq(pres(rm, "flapper", t + 100000, false, &present), ROOM_PRES_ANNOUNCE);
    cr_assert(present);
    room_remove_member_locked(rm, f2);
    cr_assert_eq(pres(rm, "flapper", t + 100000, false, &present), ROOM_PRES_NONE);
    room_remove_member_locked(rm, f);
    room_remove_member_locked(rm, obs);
    pthread_mutex_unlock(&rm->lock);
    rooms_release(r, &rm);
    client_unref(&f2);
    client_unref(&f);
    client_unref(&obs);
    rooms_free(r);
}

Test(room, presence_starts_over_when_the_room_empties)
{
    rooms_t *r = rooms_new(8, 16);
    struct room *rm = acquire_ready(r, "lobby");
    struct client *obs = new_client("observer"), *f = new_client("flapper");
    bool present = false;
    int64_t t = 5000;

    pthread_mutex_lock(&rm->lock);
    room_add_member_locked(rm, obs);
    pres(rm, "observer", t, false, &present);
    for (int i = 0; i < ROOM_PRESENCE_BURST; i++) {
        if (i % 2 == 0)
            room_add_member_locked(rm, f);
        else
            room_remove_member_locked(rm, f);
        cr_assert_eq(pres(rm, "flapper", t, false, &present), ROOM_PRES_ANNOUNCE);
    }
    room_add_member_locked(rm, f);
    cr_assert_eq(pres(rm, "flapper", t, false, &present), ROOM_PRES_DEFERRED);
    /* everyone leaves: nobody is owed anything any more */
    room_remove_member_locked(rm, obs);
    room_remove_member_locked(rm, f);
    cr_assert_eq(pres(rm, "flapper", t, false, &present), ROOM_PRES_NONE);
    cr_assert_eq(pres(rm, "observer", t, false, &present), ROOM_PRES_NONE);
    /* a newcomer learns the members from joined; the first join after that
     * is announced as usual */
    room_add_member_locked(rm, obs);
    cr_assert_eq(pres(rm, "observer", t + 10 * ROOM_PRESENCE_INTERVAL_MS, false, &present),
                 ROOM_PRES_ANNOUNCE);
    room_remove_member_locked(rm, obs);
    pthread_mutex_unlock(&rm->lock);
    rooms_release(r, &rm);
    client_unref(&f);
    client_unref(&obs);
    rooms_free(r);
}

/* ---- threads ---- */

#define NTHREADS 8
#define NNAMES 4
#define ROUNDS 200

static const char *const race_names[NNAMES] = {"alpha", "beta", "gamma", "dm:x:y"};

struct race {
    rooms_t *r;
    pthread_barrier_t bar;
    struct room *got[NTHREADS][NNAMES];
    _Atomic unsigned errors;
};

struct race_arg {
    struct race *race;
    int id;
};

static void *race_worker(void *p)
{
    struct race_arg *a = p;
    struct race *rc = a->race;
    char user[16];
    snprintf(user, sizeof(user), "user%d", a->id);
    struct client *me = client_new(&srv, 16, 1 << 20, NULL, NULL);
    strcpy(me->user, user);

    for (int round = 0; round < ROUNDS; round++) {
        pthread_barrier_wait(&rc->bar);
        /* every thread races to create the same names, each in its own order */
        for (int k = 0; k < NNAMES; k++) {
            int n = (k + a->id) % NNAMES;
            struct room *rm = rooms_acquire(rc->r, race_names[n], true);
            rc->got[a->id][n] = rm;
            pthread_mutex_lock(&rm->lock);
            rm->state = ROOM_READY; /* as the broker does once its seq is read */
            if (!room_add_member_locked(rm, me) || room_user_conns_locked(rm, user) != 1)
                atomic_fetch_add(&rc->errors, 1);
            pthread_mutex_unlock(&rm->lock);
        }
        pthread_barrier_wait(&rc->bar);
        if (a->id == 0) {
            for (int t = 0; t < NTHREADS; t++)
                for (int n = 0; n < NNAMES; n++)
                    if (rc->got[t][n] != rc->got[0][n] ||
                        strcmp(rc->got[t][n]->name, race_names[n]) != 0)
                        atomic_fetch_add(&rc->errors, 1);
            if (rooms_active(rc->r) != NNAMES)
                atomic_fetch_add(&rc->errors, 1);
        }
        pthread_barrier_wait(&rc->bar);
        for (int n = 0; n < NNAMES; n++) {
            struct room *rm = rc->got[a->id][n];
            pthread_mutex_lock(&rm->lock);
            if (!room_remove_member_locked(rm, me))
                atomic_fetch_add(&rc->errors, 1);
            pthread_mutex_unlock(&rm->lock);
            rooms_release(rc->r, &rc->got[a->id][n]);
        }
        pthread_barrier_wait(&rc->bar);
        /* every reference is gone: each room is empty and still the one
         * room of its name (joined rooms stay on the idle list) */
        if (a->id == 0) {
            for (int n = 0; n < NNAMES; n++) {
                struct room *rm = rooms_acquire(rc->r, race_names[n], false);
                if (!rm || rm->nmembers != 0)
                    atomic_fetch_add(&rc->errors, 1);
                rooms_release(rc->r, &rm);
            }
        }
    }
    if (atomic_load(&me->refs) != 1)
        atomic_fetch_add(&rc->errors, 1);
    client_unref(&me);
    return NULL;
}

Test(room, concurrent_create_makes_one_room_per_name)
{
    static struct race rc;
    struct race_arg args[NTHREADS];
    pthread_t th[NTHREADS];

    rc.r = rooms_new(8, 16);
    atomic_init(&rc.errors, 0);
    cr_assert_eq(pthread_barrier_init(&rc.bar, NULL, NTHREADS), 0);
    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (struct race_arg){.race = &rc, .id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, race_worker, &args[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        cr_assert_eq(pthread_join(th[i], NULL), 0);
    cr_assert_eq(atomic_load(&rc.errors), 0);
    pthread_barrier_destroy(&rc.bar);
    rooms_free(rc.r);
}

/*
 * rooms_list takes references to the rooms on the active list without the
 * registry lock (a room there has a member, whose reference keeps the count
 * above zero), then locks each room. Forced interleaving: the lister holds
 * a reference to "victim" and waits for its lock, which this test holds
 * while the last member leaves and the membership's reference is dropped.
 * The lister's reference is then the last one: its release must put the
 * room on the idle list exactly once (ASan/TSan report a use after free or
 * a race; the counts below catch a double insertion).
 */
struct parked {
    pthread_t th;
    _Atomic pid_t tid;
    _Atomic bool done;
    rooms_t *r;
    size_t listed;
};

static void *parked_list(void *p)
{
    struct parked *pk = p;
    struct room_snapshot snap[4];
    atomic_store(&pk->tid, (pid_t)syscall(SYS_gettid));
    pk->listed = rooms_list(pk->r, snap, 4);
    atomic_store(&pk->done, true);
    return NULL;
}

/* True once thread tid sleeps in futex(2) (blocked on a lock), read from
 * /proc; false while it runs or waits for anything else. */
static bool in_futex_wait(pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    if (!rp || rp[1] != ' ' || rp[2] != 'S')
        return false;
    snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
    f = fopen(path, "r");
    if (!f)
        return true; /* no syscall file: a sleeping thread is the best we know */
    long nr = -1;
    int ok = fscanf(f, "%ld", &nr);
    fclose(f);
    return ok == 1 && nr == SYS_futex;
}

/* Wait until the thread has blocked on a lock or has finished. */
static void wait_parked(struct parked *pk)
{
    pid_t tid;
    while (!(tid = atomic_load(&pk->tid)))
        sched_yield();
    while (!atomic_load(&pk->done) && !in_futex_wait(tid))
        sched_yield();
}

Test(room, listing_holds_a_room_while_its_last_member_leaves)
{
    rooms_t *r = rooms_new(8, 16);
    struct client *c = new_client("alice");
    struct room *victim = acquire_ready(r, "victim"); /* the membership's reference */
    struct parked lister = {.r = r};

    pthread_mutex_lock(&victim->lock);
    cr_assert(room_add_member_locked(victim, c));
    cr_assert_eq(rooms_active(r), 1);
    cr_assert_eq(pthread_create(&lister.th, NULL, parked_list, &lister), 0);
    wait_parked(&lister); /* holds a reference, waits for victim's lock */
    cr_assert_not(atomic_load(&lister.done));
    cr_assert_eq(atomic_load(&victim->refs), 2, "the lister took a reference");
    cr_assert(room_remove_member_locked(victim, c));
    cr_assert_eq(rooms_active(r), 0, "off the active list with its last member");
    pthread_mutex_unlock(&victim->lock);
    rooms_release(r, &victim); /* not the last: the lister's is */

    cr_assert_eq(pthread_join(lister.th, NULL), 0);
    cr_assert_eq(lister.listed, 0, "a room that emptied meanwhile is not listed");
    struct rooms_stats st = stats(r);
    cr_assert_eq(st.held, 1);
    cr_assert_eq(st.idle, 1, "the lister's release put it on the idle list, once");
    cr_assert_eq(st.reclaimed, 0);
    victim = rooms_acquire(r, "victim", false);
    cr_assert_not_null(victim);
    cr_assert(room_user_joined_ever_locked(victim, "alice"));
    cr_assert_eq(stats(r).idle, 0);
    rooms_release(r, &victim);
    cr_assert_eq(stats(r).idle, 1);
    client_unref(&c);
    rooms_free(r);
}

/* Free-running churn: creation, lookup, membership, appends and reclaim all
 * at once on a few names. Checked by the sanitizers and by the final state. */
#define CHURN_ITERS 3000

struct churn_arg {
    rooms_t *r;
    int id;
    _Atomic unsigned *errors;
};

static void *churn_worker(void *p)
{
    struct churn_arg *a = p;
    struct client *me = client_new(&srv, 16, 1 << 20, NULL, NULL);
    snprintf(me->user, sizeof(me->user), "churn%d", a->id);
    uint32_t rnd = 77u + (uint32_t)a->id;

    for (int i = 0; i < CHURN_ITERS; i++) {
        rnd = rnd * 1103515245u + 12345u;
        uint32_t x = rnd >> 8;
        /* names 0-2 stay message-free (created, joined, emptied over and
         * over); name 3 gets messages */
        char name[16];
        int n = (int)(x % 4);
        snprintf(name, sizeof(name), "churn-%d", n);
        struct room *rm = rooms_acquire(a->r, name, (x >> 4) % 4 != 0);
        if (!rm)
            continue;
        if (strcmp(rm->name, name) != 0)
            atomic_fetch_add(a->errors, 1);
        pthread_mutex_lock(&rm->lock);
        /* most get their seq known; some stay cold and go at once */
        if ((x >> 8) % 8 != 0)
            rm->state = ROOM_READY;
        if (n == 3) {
            append(rm, rm->seq + 1, NULL);
            if (room_window_lo_locked(rm) > rm->seq)
                atomic_fetch_add(a->errors, 1);
        }
        bool added = room_add_member_locked(rm, me);
        if (!added || room_user_conns_locked(rm, me->user) != 1)
            atomic_fetch_add(a->errors, 1);
        room_remove_member_locked(rm, me);
        pthread_mutex_unlock(&rm->lock);
        rooms_release(a->r, &rm);
    }
    if (atomic_load(&me->refs) != 1)
        atomic_fetch_add(a->errors, 1);
    client_unref(&me);
    return NULL;
}

Test(room, concurrent_churn)
{
    rooms_t *r = rooms_new(16, 2);
    _Atomic unsigned errors = 0;
    struct churn_arg args[NTHREADS];
    pthread_t th[NTHREADS];

    for (int i = 0; i < NTHREADS; i++) {
        args[i] = (struct churn_arg){.r = r, .id = i, .errors = &errors};
        cr_assert_eq(pthread_create(&th[i], NULL, churn_worker, &args[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        cr_assert_eq(pthread_join(th[i], NULL), 0);
    cr_assert_eq(atomic_load(&errors), 0);
    for (int n = 0; n < 3; n++) {
        char name[16];
        snprintf(name, sizeof(name), "churn-%d", n);
        /* joined rooms keep an empty record while idle (2 at most here) */
        struct room *e = rooms_acquire(r, name, false);
        if (e) {
            pthread_mutex_lock(&e->lock);
            cr_assert_eq(e->nmembers, 0, "%s has ghost members", name);
            pthread_mutex_unlock(&e->lock);
            rooms_release(r, &e);
        }
    }
    struct room *rm = rooms_acquire(r, "churn-3", false);
    if (rm) { /* absent only if no thread ever chose to create it */
        pthread_mutex_lock(&rm->lock);
        cr_assert_gt(rm->seq, 0);
        pthread_mutex_unlock(&rm->lock);
        rooms_release(r, &rm);
    }
    rooms_free(r);
}
