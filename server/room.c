/*
 * room — see room.h. The registry is an htable (htable.h) under a rwlock;
 * each room has its own mutex. Two short mutexes of the registry guard its
 * lists: the idle list (rooms nobody references, least recently used
 * first) and the active list (rooms with members). Lock order: registry ->
 * idle; room -> active; room -> client. Neither list lock is ever held
 * while another lock is taken.
 */
#include "room.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "htable.h"
#include "refcount.h"
#include "strmap.h"
#include "util.h"

/* What a room remembers about one user: a member (conns > 0), or a former
 * member on the room's former list. */
struct room_user {
    struct room_user *prev, *next; /* the former list, while conns == 0 */
    unsigned conns;
    bool announced;   /* the members were last told: present */
    bool deferred;    /* a change waits for the presence budget */
    int64_t tat_ms;   /* the presence budget (GCRA theoretical arrival time) */
    char name[CODEC_USER_MAX + 1];
};

struct rooms {
    pthread_rwlock_t lock;
    struct htable t; /* {lock} rooms by name; its own key: any client may create rooms */
    size_t window;
    size_t idle_max;

    pthread_mutex_t idle_lock;
    struct room *idle_head, *idle_tail; /* {idle_lock} oldest first */
    size_t nidle, idle_names;           /* {idle_lock} */
    uint64_t reclaimed;                 /* {idle_lock} */

    pthread_mutex_t act_lock;
    struct room *act_head; /* {act_lock} */
    size_t nactive;        /* {act_lock} */

    void (*forget)(void *arg, struct room *rm); /* fixed; see rooms_forget_idle */
    void *forget_arg;
};

struct hist *hist_new(const char *room, uint64_t seq, const char *from, const char *text,
                      size_t text_len, int64_t ts, const char *id)
{
    size_t rl = strlen(room) + 1, fl = strlen(from) + 1, il = id ? strlen(id) + 1 : 1;
    struct hist *h = xmalloc(sizeof(*h) + rl + fl + il + text_len + 1);
    char *p = h->buf;

    ref_init(&h->refs, 1);
    memcpy(p, room, rl);
    h->m.room = p;
    p += rl;
    memcpy(p, from, fl);
    h->m.from = p;
    p += fl;
    memcpy(p, id ? id : "", il);
    h->m.id = p;
    p += il;
    memcpy(p, text, text_len);
    p[text_len] = '\0';
    h->m.text = p;
    h->m.text_len = text_len;
    h->m.seq = seq;
    h->m.ts = ts;
    return h;
}

struct hist *hist_ref(struct hist *h)
{
    ref_get(&h->refs);
    return h;
}

void hist_unref(struct hist **hp)
{
    struct hist *h = *hp;
    if (!h)
        return;
    *hp = NULL;
    if (ref_put(&h->refs, "hist"))
        free(h);
}

rooms_t *rooms_new(size_t window, size_t idle_max)
{
    rooms_t *r = xcalloc(1, sizeof(*r));
    pthread_rwlock_init(&r->lock, NULL);
    pthread_mutex_init(&r->idle_lock, NULL);
    pthread_mutex_init(&r->act_lock, NULL);
    htable_init(&r->t, 64);
    r->window = window ? window : 1;
    r->idle_max = idle_max;
    return r;
}

static void window_release(struct room *rm)
{
    for (size_t i = 0; i < rm->wcount; i++)
        hist_unref(&rm->win[(rm->whead + i) % rm->wcap]);
    free(rm->win);
    rm->win = NULL;
    rm->whead = rm->wcount = 0;
}

static void room_free(struct room *rm)
{
    for (size_t i = 0; i < rm->nmembers; i++)
        client_unref(&rm->members[i]);
    free(rm->members);
    for (size_t i = 0; i < rm->nwaiters; i++)
        client_unref(&rm->waiters[i]);
    free(rm->waiters);
    window_release(rm);
    strmap_free(rm->users, free);
    pthread_mutex_destroy(&rm->lock);
    free(rm);
}

static bool free_room_node(struct hnode *n, void *arg)
{
    (void)arg;
    room_free(htable_entry(n, struct room, hnode));
    return true;
}

void rooms_free(rooms_t *r)
{
    if (!r)
        return;
    htable_sweep(&r->t, free_room_node, NULL);
    htable_fini(&r->t);
    pthread_mutex_destroy(&r->act_lock);
    pthread_mutex_destroy(&r->idle_lock);
    pthread_rwlock_destroy(&r->lock);
    free(r);
}

static struct room *find_locked(rooms_t *r, const char *name)
{
    struct hnode *n = htable_find(&r->t, name);
    return n ? htable_entry(n, struct room, hnode) : NULL;
}

static struct room *create_locked(rooms_t *r, const char *name)
{
    struct room *rm = xcalloc(1, sizeof(*rm));
    str_lcpy(rm->name, name, sizeof(rm->name));
    rm->is_dm = strncmp(name, "dm:", 3) == 0;
    rm->reg = r;
    rm->state = ROOM_COLD;
    ref_init(&rm->refs, 0);
    pthread_mutex_init(&rm->lock, NULL);
    rm->wcap = r->window;
    htable_insert(&r->t, &rm->hnode, rm->name);
    return rm;
}

static void unlink_locked(rooms_t *r, struct room *rm)
{
    htable_remove(&r->t, &rm->hnode);
}

/* {idle_lock}. Take rm off the idle list: it is referenced again. */
static void idle_unlink_locked(rooms_t *r, struct room *rm)
{
    if (!rm->on_idle)
        return;
    if (rm->idle_prev)
        rm->idle_prev->idle_next = rm->idle_next;
    else
        r->idle_head = rm->idle_next;
    if (rm->idle_next)
        rm->idle_next->idle_prev = rm->idle_prev;
    else
        r->idle_tail = rm->idle_prev;
    rm->idle_prev = rm->idle_next = NULL;
    rm->on_idle = false;
    r->nidle--;
    r->idle_names -= rm->idle_names;
    rm->idle_names = 0;
}

/* {write lock} + {idle_lock}. Reclaim the oldest idle rooms while the idle
 * list is over its bounds. Under the write lock nobody can take a reference,
 * so every idle room has none. */
static void idle_trim_locked(rooms_t *r)
{
    size_t max_names = r->idle_max * ROOM_IDLE_NAMES;
    while (r->idle_head && (r->nidle > r->idle_max || r->idle_names > max_names)) {
        struct room *rm = r->idle_head;
        idle_unlink_locked(r, rm);
        unlink_locked(r, rm);
        room_free(rm);
        r->reclaimed++;
    }
}

/* {write lock} + {idle_lock}. Put an unreferenced room (holding `names`
 * former members) at the recent end of the idle list, then trim the list. */
static void idle_append_locked(rooms_t *r, struct room *rm, size_t names)
{
    rm->on_idle = true;
    rm->idle_names = names;
    rm->idle_prev = r->idle_tail;
    rm->idle_next = NULL;
    if (r->idle_tail)
        r->idle_tail->idle_next = rm;
    else
        r->idle_head = rm;
    r->idle_tail = rm;
    r->nidle++;
    r->idle_names += names;
    idle_trim_locked(r);
}

void rooms_preload(rooms_t *r, const char *name, uint64_t seq)
{
    pthread_rwlock_wrlock(&r->lock);
    struct room *rm = find_locked(r, name);
    bool fresh = !rm;
    if (fresh)
        rm = create_locked(r, name);
    pthread_mutex_lock(&rm->lock);
    rm->seq = seq;
    rm->state = ROOM_READY;
    pthread_mutex_unlock(&rm->lock);
    if (fresh) {
        /* unreferenced: idle from the start, most recent last */
        pthread_mutex_lock(&r->idle_lock);
        idle_append_locked(r, rm, 0);
        pthread_mutex_unlock(&r->idle_lock);
    }
    pthread_rwlock_unlock(&r->lock);
}

/* {registry lock, read or write}. Take a reference; the first one takes the
 * room off the idle list. */
static void take_ref_locked(rooms_t *r, struct room *rm)
{
    if (ref_get(&rm->refs) == 0) {
        pthread_mutex_lock(&r->idle_lock);
        idle_unlink_locked(r, rm);
        pthread_mutex_unlock(&r->idle_lock);
    }
}

struct room *rooms_acquire(rooms_t *r, const char *name, bool create)
{
    struct room *rm;

    pthread_rwlock_rdlock(&r->lock);
    rm = find_locked(r, name);
    if (rm)
        take_ref_locked(r, rm);
    pthread_rwlock_unlock(&r->lock);
    if (rm || !create)
        return rm;

    pthread_rwlock_wrlock(&r->lock);
    rm = find_locked(r, name); /* another thread may have created it meanwhile */
    if (!rm)
        rm = create_locked(r, name);
    take_ref_locked(r, rm);
    pthread_rwlock_unlock(&r->lock);
    return rm;
}

struct room *rooms_ref(struct room *rm)
{
    /* never from zero: the caller's reference keeps it off the idle list */
    ref_get(&rm->refs);
    return rm;
}

void rooms_release(rooms_t *r, struct room **rp)
{
    struct room *rm = *rp;
    if (!rm)
        return;
    *rp = NULL;
    /* Not the last reference: drop it without the lock. The last one is
     * dropped under the write lock, where no lookup can take a new one, so
     * exactly one releaser sees the count reach zero and may reclaim. */
    if (ref_put_unless_last(&rm->refs))
        return;
    pthread_rwlock_wrlock(&r->lock);
    if (ref_put(&rm->refs, "room")) {
        pthread_mutex_lock(&rm->lock);
        /* The broker's memberships and waiters hold references, so the room
         * is empty here (only a caller that adds members without a
         * reference, as unit tests do, gets a room kept as it is). Its
         * window goes (a re-join reads history from storage); it keeps its
         * seq and who joined, for as long as it stays idle. */
        bool empty = rm->nmembers == 0;
        if (empty) {
            window_release(rm);
            free(rm->members);
            rm->members = NULL;
            rm->mcap = 0;
        }
        /* a room nobody joined and nobody wrote to, or one whose seq never
         * loaded, is not worth a place on the idle list */
        bool unused = rm->state != ROOM_READY || (rm->seq == 0 && !rm->nformer);
        if (empty && r->forget) {
            /* its seq goes stale from here on: not kept at all */
            if (rm->state == ROOM_READY)
                r->forget(r->forget_arg, rm);
            unused = true;
        }
        size_t names = rm->nformer;
        pthread_mutex_unlock(&rm->lock);
        pthread_mutex_lock(&r->idle_lock);
        if (!empty) {
            /* kept, off the idle list: never reclaimed with members */
        } else if (unused) {
            unlink_locked(r, rm);
            room_free(rm);
            r->reclaimed++;
        } else {
            idle_append_locked(r, rm, names);
        }
        pthread_mutex_unlock(&r->idle_lock);
    }
    pthread_rwlock_unlock(&r->lock);
}

size_t rooms_list(rooms_t *r, struct room_snapshot *out, size_t max)
{
    struct room **held = xmalloc((max + 1) * sizeof(*held));
    size_t k = 0, n = 0;

    /* A room on the active list has a member, and the member's reference is
     * dropped only after the room leaves the list (under act_lock): so the
     * count is above zero here and a reference may be taken without the
     * registry lock. Room locks are taken after act_lock is let go. */
    pthread_mutex_lock(&r->act_lock);
    for (struct room *rm = r->act_head; rm && k < max; rm = rm->act_next) {
        if (rm->is_dm)
            continue;
        ref_get(&rm->refs);
        held[k++] = rm;
    }
    pthread_mutex_unlock(&r->act_lock);
    for (size_t i = 0; i < k; i++) {
        struct room *rm = held[i];
        pthread_mutex_lock(&rm->lock);
        if (rm->nmembers) {
            str_lcpy(out[n].name, rm->name, sizeof(out[n].name));
            out[n].members = (unsigned)room_member_names_locked(rm, NULL, SIZE_MAX);
            out[n].seq = rm->seq;
            n++;
        }
        pthread_mutex_unlock(&rm->lock);
        rooms_release(r, &held[i]);
    }
    free(held);
    return n;
}

size_t rooms_active(rooms_t *r)
{
    pthread_mutex_lock(&r->act_lock);
    size_t n = r->nactive;
    pthread_mutex_unlock(&r->act_lock);
    return n;
}

void rooms_stats(rooms_t *r, struct rooms_stats *out)
{
    pthread_rwlock_rdlock(&r->lock);
    out->held = htable_count(&r->t);
    pthread_mutex_lock(&r->idle_lock);
    out->idle = r->nidle;
    out->reclaimed = r->reclaimed;
    pthread_mutex_unlock(&r->idle_lock);
    pthread_rwlock_unlock(&r->lock);
    out->active = rooms_active(r);
}

/* ------------------------------------------------------- per-user records */

static struct room_user *user_get(const struct room *rm, const char *user)
{
    return rm->users ? strmap_get(rm->users, user) : NULL;
}

static void former_unlink(struct room *rm, struct room_user *u)
{
    if (u->prev)
        u->prev->next = u->next;
    else
        rm->former = u->next;
    if (u->next)
        u->next->prev = u->prev;
    else
        rm->former_tail = u->prev;
    u->prev = u->next = NULL;
    rm->nformer--;
}

/* Keep at most ROOM_FORMER_MAX former members: forget the oldest. A record
 * whose change still waits to be announced is kept (it is owed to the
 * members); those are few, each needs a presence change over budget. */
static void former_trim(struct room *rm)
{
    struct room_user *u = rm->former;
    while (u && rm->nformer > ROOM_FORMER_MAX) {
        struct room_user *next = u->next;
        if (!u->deferred) {
            former_unlink(rm, u);
            free(strmap_del(rm->users, u->name));
        }
        u = next;
    }
}

static void active_link(struct room *rm)
{
    rooms_t *r = rm->reg;
    pthread_mutex_lock(&r->act_lock);
    rm->act_prev = NULL;
    rm->act_next = r->act_head;
    if (r->act_head)
        r->act_head->act_prev = rm;
    r->act_head = rm;
    r->nactive++;
    pthread_mutex_unlock(&r->act_lock);
}

static void active_unlink(struct room *rm)
{
    rooms_t *r = rm->reg;
    pthread_mutex_lock(&r->act_lock);
    if (rm->act_prev)
        rm->act_prev->act_next = rm->act_next;
    else
        r->act_head = rm->act_next;
    if (rm->act_next)
        rm->act_next->act_prev = rm->act_prev;
    rm->act_prev = rm->act_next = NULL;
    r->nactive--;
    pthread_mutex_unlock(&r->act_lock);
}

static bool forget_announcements(const char *key, void *val, void *arg)
{
    (void)key;
    (void)arg;
    struct room_user *u = val;
    u->announced = u->deferred = false;
    return false;
}

struct announced {
    char **names;
    size_t n;
};

static bool collect_announced(const char *key, void *val, void *arg)
{
    struct room_user *u = val;
    struct announced *a = arg;
    if (u->announced) {
        a->names = xrealloc(a->names, (a->n + 1) * sizeof(*a->names));
        a->names[a->n++] = xstrdup(u->name);
    }
    return false;
}

char **room_announced_locked(struct room *rm, size_t *n)
{
    struct announced a = {NULL, 0};
    strmap_sweep(rm->users, collect_announced, &a);
    *n = a.n;
    return a.names;
}

bool room_has_member_locked(const struct room *rm, const struct client *c)
{
    for (size_t i = 0; i < rm->nmembers; i++)
        if (rm->members[i] == c)
            return true;
    return false;
}

bool room_add_member_locked(struct room *rm, struct client *c)
{
    if (room_has_member_locked(rm, c))
        return false;
    if (rm->nmembers == rm->mcap) {
        rm->mcap = rm->mcap ? rm->mcap * 2 : 4;
        rm->members = xrealloc(rm->members, rm->mcap * sizeof(*rm->members));
    }
    rm->members[rm->nmembers++] = client_ref(c);
    if (rm->nmembers == 1 && rm->reg)
        active_link(rm);
    if (!rm->users)
        rm->users = strmap_new();
    struct room_user *u = strmap_get(rm->users, c->user);
    if (!u) {
        u = xcalloc(1, sizeof(*u));
        str_lcpy(u->name, c->user, sizeof(u->name));
        u->tat_ms = INT64_MIN;
        strmap_put(rm->users, c->user, u);
    } else if (u->conns == 0) {
        former_unlink(rm, u);
    }
    u->conns++;
    return true;
}

bool room_remove_member_locked(struct room *rm, struct client *c)
{
    for (size_t i = 0; i < rm->nmembers; i++) {
        if (rm->members[i] == c) {
            /* swap-remove: member order carries no meaning */
            rm->members[i] = rm->members[--rm->nmembers];
            struct room_user *u = user_get(rm, c->user);
            if (u && --u->conns == 0) {
                u->prev = rm->former_tail;
                u->next = NULL;
                if (rm->former_tail)
                    rm->former_tail->next = u;
                else
                    rm->former = u;
                rm->former_tail = u;
                rm->nformer++;
            }
            if (rm->nmembers == 0) {
                /* nobody is left to have been told anything */
                strmap_sweep(rm->users, forget_announcements, NULL);
                if (rm->reg)
                    active_unlink(rm);
            }
            former_trim(rm);
            client_unref(&c);
            return true;
        }
    }
    return false;
}

bool room_user_joined_ever_locked(const struct room *rm, const char *user)
{
    return user_get(rm, user) != NULL;
}

unsigned room_user_conns_locked(const struct room *rm, const char *user)
{
    const struct room_user *u = user_get(rm, user);
    return u ? u->conns : 0;
}

enum room_presence room_presence_locked(struct room *rm, const char *user, int64_t now_ms,
                                        bool force, bool *present)
{
    struct room_user *u = user_get(rm, user);
    if (!u)
        return ROOM_PRES_NONE;
    bool now_present = u->conns > 0;
    if (now_present == u->announced) {
        u->deferred = false;
        return ROOM_PRES_NONE;
    }
    /* the budget, as a GCRA bucket in ms (see ratelimit.c) */
    const int64_t t = ROOM_PRESENCE_INTERVAL_MS, tau = ROOM_PRESENCE_BURST * t;
    int64_t next = (u->tat_ms > now_ms ? u->tat_ms : now_ms) + t;
    if (!force && next - now_ms > tau) {
        u->deferred = true;
        return ROOM_PRES_DEFERRED;
    }
    u->tat_ms = next;
    u->announced = now_present;
    u->deferred = false;
    *present = now_present;
    return ROOM_PRES_ANNOUNCE;
}

void room_add_waiter_locked(struct room *rm, struct client *c)
{
    if (rm->nwaiters == rm->waitcap) {
        rm->waitcap = rm->waitcap ? rm->waitcap * 2 : 4;
        rm->waiters = xrealloc(rm->waiters, rm->waitcap * sizeof(*rm->waiters));
    }
    rm->waiters[rm->nwaiters++] = client_ref(c);
}

struct client **room_take_waiters_locked(struct room *rm, size_t *n)
{
    struct client **w = rm->waiters;
    *n = rm->nwaiters;
    rm->waiters = NULL;
    rm->nwaiters = rm->waitcap = 0;
    return w;
}

size_t room_member_names_locked(const struct room *rm, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < rm->nmembers && n < max; i++) {
        const char *u = rm->members[i]->user;
        size_t j;
        /* count a user at their first connection in the member array */
        for (j = 0; j < i; j++)
            if (strcmp(rm->members[j]->user, u) == 0)
                break;
        if (j < i)
            continue;
        if (out)
            out[n] = u;
        n++;
    }
    return n;
}

void room_append_locked(struct room *rm, struct hist *h)
{
    /* a jump (a shared engine's log lost the seqs between): the window
     * holds consecutive seqs only, so it starts again here */
    if (h->m.seq != rm->seq + 1)
        window_release(rm);
    if (!rm->win)
        rm->win = xcalloc(rm->wcap, sizeof(*rm->win));
    if (rm->wcount == rm->wcap) {
        hist_unref(&rm->win[rm->whead]);
        rm->whead = (rm->whead + 1) % rm->wcap;
        rm->wcount--;
    }
    rm->win[(rm->whead + rm->wcount) % rm->wcap] = hist_ref(h);
    rm->wcount++;
    rm->seq = h->m.seq;
}

uint64_t room_window_lo_locked(const struct room *rm)
{
    return rm->seq + 1 - rm->wcount;
}

size_t room_window_copy_locked(const struct room *rm, uint64_t a, uint64_t b, struct hist **out)
{
    uint64_t lo = room_window_lo_locked(rm);
    size_t n = 0;
    if (a < lo)
        a = lo;
    for (uint64_t s = a; s <= b && s <= rm->seq; s++)
        out[n++] = hist_ref(rm->win[(rm->whead + (s - lo)) % rm->wcap]);
    return n;
}

void rooms_forget_idle(rooms_t *r, void (*fn)(void *arg, struct room *rm), void *arg)
{
    r->forget = fn;
    r->forget_arg = arg;
}
