/*
 * cdir — see cdir.h for the data model and the guarantees. This file owns
 * the Lua scripts, the node's local mirror of what it holds (to re-announce
 * it when Redis lost it), and the timer thread ("cdir") that heartbeats,
 * scans for dead nodes, finishes the start-up cleanup and replays the
 * mirror. Calls from any thread take c->lock only to update the mirror and
 * hand the script to rds in one step, so the order of a node's joins and
 * leaves on a shard is the order of the calls.
 */
#include "cdir.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "strmap.h"
#include "util.h"

#define KEY_MAX (CDIR_NAME_MAX + 32)
#define BYE_WAIT_MS 2000
#define HELD ((void *)1)

/* ---- scripts ---- */

/* Shared by the join/leave and cleanup scripts: one node stops holding
 * (room, user); the user's node count drops, and at 0 the user is gone
 * cluster-wide: announce it, and drop the room from the index when empty.
 * The HEXISTS guard keeps a stray record from announcing a leave twice. */
#define LUA_DROP                                                                                   \
    "local function drop(who, chan, idx, room, user)\n"                                            \
    "  if redis.call('HEXISTS', who, user) == 0 then return 0 end\n"                               \
    "  if redis.call('HINCRBY', who, user, -1) > 0 then return 0 end\n"                            \
    "  redis.call('HDEL', who, user)\n"                                                            \
    "  redis.call('PUBLISH', chan, 'p-' .. user)\n"                                                \
    "  if redis.call('EXISTS', who) == 0 then redis.call('SREM', idx, room) end\n"                 \
    "  return 1\n"                                                                                 \
    "end\n"

/* Remove up to budget entries of node id's records. merge first moves the
 * live records into the ".old" ones, which are what gets removed: a node
 * cleaning up after its previous run keeps its new joins apart that way,
 * and a join or leave of a pair still in ".old" moves or removes it there
 * (SMOVE / SREM below) instead of counting it twice. Each entry is popped in
 * the step that removes it, which is what makes two survivors racing
 * announce each leave once. KEYS[2] is the room index. */
#define LUA_CLEAN                                                                                  \
    "local function clean(id, budget, merge)\n"                                                    \
    "  local rp, old = 'node:' .. id .. ':rp', 'node:' .. id .. ':rp.old'\n"                       \
    "  local nm, nold = 'node:' .. id .. ':names', 'node:' .. id .. ':names.old'\n"                \
    "  if merge then\n"                                                                            \
    "    for _, p in ipairs({{rp, old}, {nm, nold}}) do\n"                                         \
    "      if redis.call('EXISTS', p[1]) == 1 then\n"                                              \
    "        if redis.call('EXISTS', p[2]) == 1 then\n"                                            \
    "          redis.call('SUNIONSTORE', p[2], p[2], p[1])\n"                                      \
    "          redis.call('DEL', p[1])\n"                                                          \
    "        else\n"                                                                               \
    "          redis.call('RENAME', p[1], p[2])\n"                                                 \
    "        end\n"                                                                                \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  local announced = 0\n"                                                                      \
    "  local ps = redis.call('SPOP', old, budget)\n"                                               \
    "  for _, p in ipairs(ps) do\n"                                                                \
    "    local nl = string.find(p, '\\n', 1, true)\n"                                              \
    "    if nl then\n"                                                                             \
    "      local room, user = string.sub(p, 1, nl - 1), string.sub(p, nl + 1)\n"                   \
    "      announced = announced + drop('r:{' .. room .. '}:who', 'r:{' .. room .. '}',\n"         \
    "                                   KEYS[2], room, user)\n"                                    \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  budget = budget - #ps\n"                                                                    \
    "  if budget > 0 then\n"                                                                       \
    "    local ns = redis.call('SPOP', nold, budget)\n"                                            \
    "    for _, n in ipairs(ns) do redis.call('HDEL', 'u:{' .. n .. '}', id) end\n"                \
    "    budget = budget - #ns\n"                                                                  \
    "  end\n"                                                                                      \
    "  local done = redis.call('EXISTS', old) + redis.call('EXISTS', nold) == 0\n"                 \
    "  return announced, budget, done\n"                                                           \
    "end\n"

/* KEYS: who, rp, rp.old, index, nodes. ARGV: room, user, id, channel, dm.
 * Returns 1 if the user became present cluster-wide. */
static const char lua_join[] =
    "local pair = ARGV[1] .. '\\n' .. ARGV[2]\n"
    "if redis.call('SMOVE', KEYS[3], KEYS[2], pair) == 1 then return 0 end\n"
    "if redis.call('SADD', KEYS[2], pair) == 0 then return 0 end\n"
    "redis.call('SADD', KEYS[5], ARGV[3])\n"
    "if redis.call('HINCRBY', KEYS[1], ARGV[2], 1) > 1 then return 0 end\n"
    "redis.call('PUBLISH', ARGV[4], 'p+' .. ARGV[2])\n"
    "if ARGV[5] == '0' then redis.call('SADD', KEYS[4], ARGV[1]) end\n"
    "return 1\n";

/* KEYS: who, rp, rp.old, index. ARGV: room, user, channel. Returns 1 if the
 * user became absent cluster-wide. */
static const char lua_leave[] =
    LUA_DROP "local pair = ARGV[1] .. '\\n' .. ARGV[2]\n"
             "if redis.call('SREM', KEYS[2], pair) + redis.call('SREM', KEYS[3], pair) == 0 then\n"
             "  return 0\n"
             "end\n"
             "return drop(KEYS[1], ARGV[3], KEYS[4], ARGV[1], ARGV[2])\n";

/* KEYS: node:<id>, nodes. ARGV: id, ttl ms, the node's shard list. Returns 1
 * if the key was still there (0: expired or lost, so the records may have
 * been cleaned up). The key's value is the shard list, for lua_layout. */
static const char lua_heartbeat[] = "local had = redis.call('EXISTS', KEYS[1])\n"
                                    "redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])\n"
                                    "redis.call('SADD', KEYS[2], ARGV[1])\n"
                                    "return had\n";

/* KEYS: nodes. ARGV: own id, own shard list. Returns {id, list} of a live
 * node whose --engine list differs (it would place rooms elsewhere: two
 * nodes would each keep their own seq for one room), or 0. A value of
 * "1" is a node from before the list was kept: not compared. */
static const char lua_layout[] =
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if id ~= ARGV[1] then\n"
    "    local v = redis.call('GET', 'node:' .. id)\n"
    "    if v and v ~= '1' and v ~= ARGV[2] then return {id, v} end\n"
    "  end\n"
    "end\n"
    "return 0\n";

/* KEYS: nodes, index. ARGV: own id, budget. Cleans up the nodes whose key
 * expired. Returns {alive, nodes finished, leaves announced, more}. */
static const char lua_scan[] = LUA_DROP LUA_CLEAN
    "local budget, alive, cleaned, announced, more = tonumber(ARGV[2]), 0, 0, 0, 0\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if id == ARGV[1] or redis.call('EXISTS', 'node:' .. id) == 1 then\n"
    "    alive = alive + 1\n"
    "  elseif budget > 0 then\n"
    "    local a, b, done = clean(id, budget, true)\n"
    "    announced, budget = announced + a, b\n"
    "    if done then\n"
    "      redis.call('SREM', KEYS[1], id)\n"
    "      cleaned = cleaned + 1\n"
    "    else\n"
    "      more = 1\n"
    "    end\n"
    "  else\n"
    "    more = 1\n"
    "  end\n"
    "end\n"
    "return {alive, cleaned, announced, more}\n";

/* KEYS: nodes, index. ARGV: own id, budget, merge, bye. This node's own
 * records: at start what a previous run left, at goodbye everything (then
 * the heartbeat key and the node's place in nodes go too). Returns {done,
 * leaves announced}. */
static const char lua_self[] = LUA_DROP LUA_CLEAN
    "local id = ARGV[1]\n"
    "local a, b, done = clean(id, tonumber(ARGV[2]), ARGV[3] == '1')\n"
    "if done and ARGV[4] == '1' then\n"
    "  redis.call('DEL', 'node:' .. id)\n"
    "  if redis.call('EXISTS', 'node:' .. id .. ':rp', 'node:' .. id .. ':names') == 0 then\n"
    "    redis.call('SREM', KEYS[1], id)\n"
    "  end\n"
    "end\n"
    "return {done and 1 or 0, a}\n";

/* KEYS: who. ARGV: max. Users present, at most max. */
static const char lua_who[] =
    "local max = tonumber(ARGV[1])\n"
    "if redis.call('HLEN', KEYS[1]) <= max then return redis.call('HKEYS', KEYS[1]) end\n"
    "local out, cur = {}, '0'\n"
    "repeat\n"
    "  local r = redis.call('HSCAN', KEYS[1], cur, 'COUNT', 256)\n"
    "  cur = r[1]\n"
    "  for i = 1, #r[2], 2 do\n"
    "    if #out >= max then return out end\n"
    "    out[#out + 1] = r[2][i]\n"
    "  end\n"
    "until cur == '0'\n"
    "return out\n";

/* KEYS: index. ARGV: max. {name, users, seq, ...} for at most max rooms of
 * the shard (SSCAN may repeat an entry: seen). */
static const char lua_rooms[] =
    "local max, out, seen, n, cur = tonumber(ARGV[1]), {}, {}, 0, '0'\n"
    "repeat\n"
    "  local r = redis.call('SSCAN', KEYS[1], cur, 'COUNT', 256)\n"
    "  cur = r[1]\n"
    "  for _, room in ipairs(r[2]) do\n"
    "    if n >= max then return out end\n"
    "    if not seen[room] then\n"
    "      seen[room] = true\n"
    "      local c = redis.call('HLEN', 'r:{' .. room .. '}:who')\n"
    "      if c > 0 then\n"
    "        out[#out + 1] = room\n"
    "        out[#out + 1] = c\n"
    "        out[#out + 1] = redis.call('GET', 'r:{' .. room .. '}:seq') or '0'\n"
    "        n = n + 1\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "until cur == '0'\n"
    "return out\n";

/* KEYS: u:{name}, names, names.old, nodes. ARGV: id, exclusive, name.
 * Returns 1 (taken) if exclusive and another live node holds the name. */
static const char lua_user_add[] =
    "if ARGV[2] == '1' then\n"
    "  for _, n in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "    if n ~= ARGV[1] and redis.call('EXISTS', 'node:' .. n) == 1 then return 1 end\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], '1')\n"
    "if redis.call('SMOVE', KEYS[3], KEYS[2], ARGV[3]) == 0 then\n"
    "  redis.call('SADD', KEYS[2], ARGV[3])\n"
    "end\n"
    "redis.call('SADD', KEYS[4], ARGV[1])\n"
    "return 0\n";

/* KEYS: u:{name}, names, names.old. ARGV: id, name. */
static const char lua_user_del[] = "redis.call('HDEL', KEYS[1], ARGV[1])\n"
                                   "redis.call('SREM', KEYS[2], ARGV[2])\n"
                                   "redis.call('SREM', KEYS[3], ARGV[2])\n"
                                   "return 0\n";

/* KEYS: u:{name}. Returns 1 if a node holding the name is alive. */
static const char lua_online[] = "for _, n in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
                                 "  if redis.call('EXISTS', 'node:' .. n) == 1 then return 1 end\n"
                                 "end\n"
                                 "return 0\n";

/* ---- state ---- */

enum {
    SC_JOIN,
    SC_LEAVE,
    SC_HEARTBEAT,
    SC_SCAN,
    SC_SELF,
    SC_WHO,
    SC_ROOMS,
    SC_UADD,
    SC_UDEL,
    SC_ONLINE,
    SC_LAYOUT,
    SC_N
};

static const char *const script_src[SC_N] = {
    [SC_JOIN] = lua_join,     [SC_LEAVE] = lua_leave,   [SC_HEARTBEAT] = lua_heartbeat,
    [SC_SCAN] = lua_scan,     [SC_SELF] = lua_self,     [SC_WHO] = lua_who,
    [SC_ROOMS] = lua_rooms,   [SC_UADD] = lua_user_add, [SC_UDEL] = lua_user_del,
    [SC_ONLINE] = lua_online, [SC_LAYOUT] = lua_layout,
};

/* What the timer thread owes one shard. All {lock}. */
struct shard_state {
    int64_t scan_at; /* next scan (monotonic ms) */
    bool scan_busy;  /* a scan is in flight */
    bool hb_busy;    /* a heartbeat is in flight */
    bool replay;     /* the heartbeat found our key gone: re-announce */
    bool self_more;  /* the start-up cleanup has more to remove */
    int64_t self_at; /* ... from then on (monotonic ms) */
    bool hb_ok;      /* a heartbeat has succeeded (the key is ours to miss) */
    bool self_busy;  /* a cleanup of our own records is in flight */
    int bye;         /* goodbye: 0 running, 1 done, -1 failed */
    size_t alive;    /* nodes alive at its latest scan */
    int layout;      /* start-up check: 0 asked, 1 answered, -1 failed */
};

struct cdir {
    rds_t *rds;
    char id[CDIR_NAME_MAX + 1];
    int ttl_ms;
    size_t nshards;
    int sc[SC_N];
    char *layout;       /* the shard list, as every node must give it */
    char layout_bad[512]; /* {lock} a live node's differing list, from the start-up check */

    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC; timer work, in-flight drops, goodbye steps */
    pthread_t thread;
    bool started;       /* main thread only */
    bool stop;          /* {lock} */
    bool orphaned;      /* {lock} shut down with replies outstanding: the last one frees */
    unsigned inflight;  /* {lock} scripts queued and not yet answered */
    strmap_t *pairs;    /* {lock} "room\nuser" -> HELD: what this node holds */
    strmap_t *names;    /* {lock} name -> generation (uintptr_t) */
    uintptr_t name_gen; /* {lock} */
    struct shard_state sh[RDS_SHARDS_MAX]; /* {lock} */
    struct cdir_stats st;                  /* {lock} but nodes_alive, computed on demand */
};

enum op_kind {
    OP_JOIN,
    OP_LEAVE,
    OP_HEARTBEAT,
    OP_SCAN,
    OP_SELF,
    OP_BYE,
    OP_WHO,
    OP_ROOMS,
    OP_UADD,
    OP_UDEL,
    OP_ONLINE,
    OP_LAYOUT
};

struct rooms_agg {
    cdir_rooms_cb *cb;
    void *arg;
    atomic_size_t pending; /* shards outstanding + the issuer's guard */
    atomic_bool failed;
    size_t n; /* rds thread only (callbacks) */
    struct cdir_room rooms[CDIR_LIST_MAX];
};

struct op {
    cdir_t *c;
    enum op_kind kind;
    size_t shard;
    union {
        cdir_list_cb *list;
        cdir_add_cb *add;
        cdir_online_cb *online;
    } cb;
    void *arg;
    uintptr_t gen;
    struct rooms_agg *agg;
    char name[CDIR_NAME_MAX + 1];
};

static void destroy(cdir_t *c)
{
    strmap_free(c->pairs, NULL);
    strmap_free(c->names, NULL);
    free(c->layout);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static int64_t mono_ms(void)
{
    return now_mono_ms();
}

static bool name_ok(const char *s)
{
    size_t n;

    if (!s)
        return false;
    n = strnlen(s, CDIR_NAME_MAX + 1);
    return n > 0 && n <= CDIR_NAME_MAX && !memchr(s, '\n', n);
}

/* ---- completions (rds thread) ---- */

/* An op is over: forget it, wake a waiting cdir_free, and free c if it was
 * left to the last reply. */
static void op_end(cdir_t *c, bool failed)
{
    bool free_now;

    pthread_mutex_lock(&c->lock);
    if (failed)
        c->st.script_failures++;
    c->inflight--;
    free_now = c->orphaned && c->inflight == 0;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    if (free_now)
        destroy(c);
}

static bool reply_ok(const struct redisReply *r)
{
    return r && r->type != REDIS_REPLY_ERROR;
}

static long long int_at(const struct redisReply *r, size_t i)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements ||
        r->element[i]->type != REDIS_REPLY_INTEGER)
        return -1;
    return r->element[i]->integer;
}

static void rooms_deliver(struct rooms_agg *a)
{
    bool failed = atomic_load(&a->failed);
    a->cb(a->arg, failed ? NULL : a->rooms, failed ? 0 : a->n, !failed);
    free(a);
}

static void rooms_part_done(struct rooms_agg *a)
{
    if (atomic_fetch_sub_explicit(&a->pending, 1, memory_order_acq_rel) == 1)
        rooms_deliver(a);
}

static void rooms_take(struct rooms_agg *a, const struct redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        atomic_store(&a->failed, true);
        return;
    }
    for (size_t i = 0; i + 2 < r->elements && a->n < CDIR_LIST_MAX; i += 3) {
        const struct redisReply *nm = r->element[i], *cnt = r->element[i + 1],
                                *seq = r->element[i + 2];
        if (nm->type != REDIS_REPLY_STRING || nm->len > CDIR_NAME_MAX ||
            cnt->type != REDIS_REPLY_INTEGER || seq->type != REDIS_REPLY_STRING)
            continue;
        struct cdir_room *o = &a->rooms[a->n++];
        memcpy(o->name, nm->str, nm->len);
        o->name[nm->len] = '\0';
        o->members = cnt->integer > 0 ? (unsigned)cnt->integer : 0;
        o->seq = strtoull(seq->str, NULL, 10);
    }
}

static void deliver_who(struct op *o, const struct redisReply *r)
{
    const char **users = NULL;
    size_t n = 0;
    bool ok = r && r->type == REDIS_REPLY_ARRAY;

    if (ok) {
        users = xmalloc((r->elements ? r->elements : 1) * sizeof(*users));
        for (size_t i = 0; i < r->elements && n < CDIR_LIST_MAX; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                users[n++] = r->element[i]->str;
    }
    o->cb.list(o->arg, users, n, ok);
    free(users);
}

static void on_reply(void *arg, const struct redisReply *r)
{
    struct op *o = arg;
    cdir_t *c = o->c;
    bool ok = reply_ok(r);
    struct shard_state *s = &c->sh[o->shard];

    switch (o->kind) {
    case OP_JOIN:
    case OP_LEAVE:
    case OP_UDEL:
        break;
    case OP_HEARTBEAT:
        pthread_mutex_lock(&c->lock);
        s->hb_busy = false;
        if (ok && r->type == REDIS_REPLY_INTEGER) {
            /* the first one always finds the key missing */
            if (r->integer == 0 && s->hb_ok) {
                s->replay = true;
                pthread_cond_broadcast(&c->cond);
            }
            s->hb_ok = true;
        }
        pthread_mutex_unlock(&c->lock);
        break;
    case OP_SCAN:
        pthread_mutex_lock(&c->lock);
        s->scan_busy = false;
        if (ok && int_at(r, 0) >= 0) {
            s->alive = (size_t)int_at(r, 0);
            c->st.cleanups += (uint64_t)int_at(r, 1);
            c->st.leaves_announced += (uint64_t)int_at(r, 2);
            if (int_at(r, 3) == 1) { /* more to clean: at once */
                s->scan_at = mono_ms();
                pthread_cond_broadcast(&c->cond);
            }
        }
        pthread_mutex_unlock(&c->lock);
        break;
    case OP_SELF:
    case OP_BYE:
        pthread_mutex_lock(&c->lock);
        s->self_busy = false;
        if (ok && int_at(r, 0) >= 0) {
            bool done = int_at(r, 0) == 1;
            if (o->kind == OP_BYE)
                s->bye = done ? 1 : 0;
            else
                s->self_more = !done;
        } else if (o->kind == OP_BYE) {
            s->bye = -1;
        }
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        break;
    case OP_WHO:
        deliver_who(o, ok ? r : NULL);
        break;
    case OP_ROOMS:
        rooms_take(o->agg, ok ? r : NULL);
        rooms_part_done(o->agg);
        break;
    case OP_UADD: {
        bool taken = ok && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        if (!ok || taken) {
            /* not held after all, unless a later add took its place */
            pthread_mutex_lock(&c->lock);
            if ((uintptr_t)strmap_get(c->names, o->name) == o->gen)
                strmap_del(c->names, o->name);
            pthread_mutex_unlock(&c->lock);
        }
        if (o->cb.add)
            o->cb.add(o->arg, ok, taken);
        break;
    }
    case OP_ONLINE:
        o->cb.online(o->arg, ok && r->type == REDIS_REPLY_INTEGER && r->integer == 1, ok);
        break;
    case OP_LAYOUT:
        pthread_mutex_lock(&c->lock);
        s->layout = ok ? 1 : -1;
        if (ok && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            r->element[1]->type == REDIS_REPLY_STRING && !c->layout_bad[0])
            snprintf(c->layout_bad, sizeof(c->layout_bad), "live node '%.*s' has --engine %.*s",
                     (int)(r->element[0]->len > 64 ? 64 : r->element[0]->len),
                     r->element[0]->str,
                     (int)(r->element[1]->len > 300 ? 300 : r->element[1]->len),
                     r->element[1]->str);
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->lock);
        break;
    }
    free(o);
    op_end(c, !ok);
}

/* ---- issuing ---- */

/* {lock}. Queue script sc on shard with o as its completion; argv holds the
 * keys then the arguments. Counts o in flight; on a refusal (cb not called)
 * frees o and returns the error. rds_eval only queues (its callbacks run on
 * the rds thread, outside its lock), so calling it under c->lock is safe and
 * keeps a node's steps in the order of its calls. */
static int issue_locked(cdir_t *c, struct op *o, int sc, int nkeys, int argc,
                        const char *const *argv)
{
    size_t lens[16];
    int rc;

    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    c->inflight++;
    rc = rds_eval(c->rds, o->shard, c->sc[sc], nkeys, argc, argv, lens, on_reply, o);
    if (rc < 0) {
        free(o);
        c->inflight--;
        c->st.script_failures++;
    }
    return rc;
}

static int issue(cdir_t *c, struct op *o, int sc, int nkeys, int argc, const char *const *argv)
{
    pthread_mutex_lock(&c->lock);
    int rc = issue_locked(c, o, sc, nkeys, argc, argv);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static struct op *op_new(cdir_t *c, enum op_kind kind, size_t shard)
{
    struct op *o = xcalloc(1, sizeof(*o));
    o->c = c;
    o->kind = kind;
    o->shard = shard;
    return o;
}

static size_t shard_of(cdir_t *c, const char *name)
{
    return rds_shard(c->rds, name, strlen(name));
}

/* {lock}: issue the join or leave script for (room, user). */
static int pair_script_locked(cdir_t *c, const char *room, const char *user, bool join)
{
    char who[KEY_MAX], chan[KEY_MAX], rp[KEY_MAX], old[KEY_MAX];
    size_t shard = shard_of(c, room);

    snprintf(who, sizeof(who), "r:{%s}:who", room);
    snprintf(chan, sizeof(chan), "r:{%s}", room);
    snprintf(rp, sizeof(rp), "node:%s:rp", c->id);
    snprintf(old, sizeof(old), "node:%s:rp.old", c->id);
    if (join) {
        const char *dm = strncmp(room, "dm:", 3) == 0 ? "1" : "0";
        const char *argv[] = {who,  rp,   old,   "cdir:rooms", "cdir:nodes",
                              room, user, c->id, chan,         dm};
        return issue_locked(c, op_new(c, OP_JOIN, shard), SC_JOIN, 5, 10, argv);
    }
    const char *argv[] = {who, rp, old, "cdir:rooms", room, user, chan};
    return issue_locked(c, op_new(c, OP_LEAVE, shard), SC_LEAVE, 4, 7, argv);
}

/* {lock}: issue the add script for name. */
static int user_add_locked(cdir_t *c, const char *name, bool exclusive, uintptr_t gen,
                           cdir_add_cb *cb, void *arg)
{
    char u[KEY_MAX], nm[KEY_MAX], old[KEY_MAX];
    struct op *o = op_new(c, OP_UADD, shard_of(c, name));

    snprintf(u, sizeof(u), "u:{%s}", name);
    snprintf(nm, sizeof(nm), "node:%s:names", c->id);
    snprintf(old, sizeof(old), "node:%s:names.old", c->id);
    o->cb.add = cb;
    o->arg = arg;
    o->gen = gen;
    snprintf(o->name, sizeof(o->name), "%s", name);
    const char *argv[] = {u, nm, old, "cdir:nodes", c->id, exclusive ? "1" : "0", name};
    return issue_locked(c, o, SC_UADD, 4, 7, argv);
}

static void pair_key(char *out, size_t sz, const char *room, const char *user)
{
    snprintf(out, sz, "%s\n%s", room, user);
}

int cdir_room_join(cdir_t *c, const char *room, const char *user)
{
    char k[2 * CDIR_NAME_MAX + 2];
    int rc;

    if (!name_ok(room) || !name_ok(user))
        return -EINVAL;
    pair_key(k, sizeof(k), room, user);
    pthread_mutex_lock(&c->lock);
    strmap_put(c->pairs, k, HELD);
    rc = pair_script_locked(c, room, user, true);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cdir_room_leave(cdir_t *c, const char *room, const char *user)
{
    char k[2 * CDIR_NAME_MAX + 2];
    int rc;

    if (!name_ok(room) || !name_ok(user))
        return -EINVAL;
    pair_key(k, sizeof(k), room, user);
    pthread_mutex_lock(&c->lock);
    strmap_del(c->pairs, k);
    rc = pair_script_locked(c, room, user, false);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cdir_who(cdir_t *c, const char *room, cdir_list_cb *cb, void *arg)
{
    char who[KEY_MAX], max[16];
    struct op *o;

    if (!name_ok(room) || !cb)
        return -EINVAL;
    o = op_new(c, OP_WHO, shard_of(c, room));
    o->cb.list = cb;
    o->arg = arg;
    snprintf(who, sizeof(who), "r:{%s}:who", room);
    snprintf(max, sizeof(max), "%d", CDIR_LIST_MAX);
    const char *argv[] = {who, max};
    return issue(c, o, SC_WHO, 1, 2, argv);
}

int cdir_rooms(cdir_t *c, cdir_rooms_cb *cb, void *arg)
{
    struct rooms_agg *a;
    char max[16];
    bool any = false;

    if (!cb)
        return -EINVAL;
    a = xcalloc(1, sizeof(*a));
    a->cb = cb;
    a->arg = arg;
    atomic_init(&a->pending, c->nshards + 1);
    atomic_init(&a->failed, false);
    snprintf(max, sizeof(max), "%d", CDIR_LIST_MAX);
    for (size_t s = 0; s < c->nshards; s++) {
        struct op *o = op_new(c, OP_ROOMS, s);
        o->agg = a;
        const char *argv[] = {"cdir:rooms", max};
        if (issue(c, o, SC_ROOMS, 1, 2, argv) < 0) {
            atomic_store(&a->failed, true);
            rooms_part_done(a);
        } else {
            any = true;
        }
    }
    if (!any) {
        free(a); /* no shard took it: nothing will call back */
        return -ESHUTDOWN;
    }
    /* the guard: delivered here only if every reply came already */
    rooms_part_done(a);
    return 0;
}

int cdir_user_add(cdir_t *c, const char *name, bool exclusive, cdir_add_cb *cb, void *arg)
{
    int rc;

    if (!name_ok(name))
        return -EINVAL;
    pthread_mutex_lock(&c->lock);
    uintptr_t gen = ++c->name_gen;
    strmap_put(c->names, name, (void *)gen);
    rc = user_add_locked(c, name, exclusive, gen, cb, arg);
    if (rc < 0)
        strmap_del(c->names, name);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cdir_user_del(cdir_t *c, const char *name)
{
    char u[KEY_MAX], nm[KEY_MAX], old[KEY_MAX];
    int rc;

    if (!name_ok(name))
        return -EINVAL;
    snprintf(u, sizeof(u), "u:{%s}", name);
    snprintf(nm, sizeof(nm), "node:%s:names", c->id);
    snprintf(old, sizeof(old), "node:%s:names.old", c->id);
    const char *argv[] = {u, nm, old, c->id, name};
    pthread_mutex_lock(&c->lock);
    strmap_del(c->names, name);
    rc = issue_locked(c, op_new(c, OP_UDEL, shard_of(c, name)), SC_UDEL, 3, 5, argv);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

int cdir_user_online(cdir_t *c, const char *name, cdir_online_cb *cb, void *arg)
{
    char u[KEY_MAX];
    struct op *o;

    if (!name_ok(name) || !cb)
        return -EINVAL;
    o = op_new(c, OP_ONLINE, shard_of(c, name));
    o->cb.online = cb;
    o->arg = arg;
    snprintf(u, sizeof(u), "u:{%s}", name);
    const char *argv[] = {u};
    return issue(c, o, SC_ONLINE, 1, 1, argv);
}

void cdir_stats(cdir_t *c, struct cdir_stats *out)
{
    pthread_mutex_lock(&c->lock);
    *out = c->st;
    out->nodes_alive = 0;
    for (size_t s = 0; s < c->nshards; s++)
        if (c->sh[s].alive > out->nodes_alive)
            out->nodes_alive = c->sh[s].alive;
    pthread_mutex_unlock(&c->lock);
}

/* ---- timers (the cdir thread) ---- */

static int heartbeat_locked(cdir_t *c, size_t s)
{
    char key[KEY_MAX], ttl[16];

    snprintf(key, sizeof(key), "node:%s", c->id);
    snprintf(ttl, sizeof(ttl), "%d", c->ttl_ms);
    const char *argv[] = {key, "cdir:nodes", c->id, ttl, c->layout};
    c->sh[s].hb_busy = true;
    int rc = issue_locked(c, op_new(c, OP_HEARTBEAT, s), SC_HEARTBEAT, 2, 5, argv);
    if (rc < 0)
        c->sh[s].hb_busy = false;
    return rc;
}

static void scan_locked(cdir_t *c, size_t s)
{
    char budget[16];

    snprintf(budget, sizeof(budget), "%d", CDIR_CLEAN_BUDGET);
    const char *argv[] = {"cdir:nodes", "cdir:rooms", c->id, budget};
    c->sh[s].scan_busy = true;
    if (issue_locked(c, op_new(c, OP_SCAN, s), SC_SCAN, 2, 4, argv) < 0)
        c->sh[s].scan_busy = false;
}

static int self_clean_locked(cdir_t *c, size_t s, int n, bool merge, bool bye)
{
    char budget[16];

    snprintf(budget, sizeof(budget), "%d", n);
    const char *argv[] = {"cdir:nodes", "cdir:rooms",      c->id,
                          budget,       merge ? "1" : "0", bye ? "1" : "0"};
    c->sh[s].self_busy = true;
    int rc = issue_locked(c, op_new(c, bye ? OP_BYE : OP_SELF, s), SC_SELF, 2, 6, argv);
    if (rc < 0)
        c->sh[s].self_busy = false;
    return rc;
}

struct replay_arg {
    cdir_t *c;
    size_t shard;
    size_t n;
};

static bool replay_pair(const char *key, void *val, void *arg)
{
    struct replay_arg *a = arg;
    char room[CDIR_NAME_MAX + 1];
    const char *nl = strchr(key, '\n');
    size_t rl = nl ? (size_t)(nl - key) : 0;

    (void)val;
    if (!nl || rl > CDIR_NAME_MAX)
        return false;
    memcpy(room, key, rl);
    room[rl] = '\0';
    if (shard_of(a->c, room) == a->shard) {
        pair_script_locked(a->c, room, nl + 1, true);
        a->n++;
    }
    return false;
}

static bool replay_name(const char *key, void *val, void *arg)
{
    struct replay_arg *a = arg;

    if (shard_of(a->c, key) == a->shard) {
        user_add_locked(a->c, key, false, (uintptr_t)val, NULL, NULL);
        a->n++;
    }
    return false;
}

/* {lock}. Our heartbeat key on shard s was gone: we may have been taken for
 * dead and cleaned up (a pause past the TTL), or Redis lost its data.
 * Announce again what we hold there; joins are idempotent per node. */
static void replay_locked(cdir_t *c, size_t s)
{
    struct replay_arg a = {c, s, 0};

    strmap_sweep(c->pairs, replay_pair, &a);
    strmap_sweep(c->names, replay_name, &a);
    if (a.n > 0) {
        c->st.replays++;
        log_warn("cdir", "re-announcing %zu entries on '%s' (our heartbeat key was gone)", a.n,
                 rds_shard_url(c->rds, s));
    }
}

static int64_t scan_interval(void)
{
    uint32_t r;

    /* +-20 %: nodes started together do not scan in step */
    util_random_bytes(&r, sizeof(r));
    return CDIR_SCAN_MS * 8 / 10 + (int64_t)(r % (CDIR_SCAN_MS * 4 / 10 + 1));
}

static void deadline_at(struct timespec *ts, int64_t mono_ms_at)
{
    int64_t d = mono_ms_at - mono_ms();

    if (d < 0)
        d = 0;
    clock_gettime(CLOCK_MONOTONIC, ts);
    int64_t ns = ts->tv_nsec + (d % 1000) * 1000000;
    ts->tv_sec += (time_t)(d / 1000 + ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
}

static void *cdir_main(void *arg)
{
    cdir_t *c = arg;
    int64_t hb_at = mono_ms() + c->ttl_ms / 3; /* cdir_start sent the first */

    pthread_mutex_lock(&c->lock);
    while (!c->stop) {
        int64_t now = mono_ms(), wake = hb_at;

        if (now >= hb_at) {
            for (size_t s = 0; s < c->nshards; s++)
                if (!c->sh[s].hb_busy)
                    heartbeat_locked(c, s);
            hb_at = now + c->ttl_ms / 3;
            wake = hb_at;
        }
        for (size_t s = 0; s < c->nshards; s++) {
            struct shard_state *sh = &c->sh[s];
            if (sh->replay) {
                sh->replay = false;
                replay_locked(c, s);
            }
            if (sh->self_more && !sh->self_busy && now >= sh->self_at) {
                sh->self_more = false;
                self_clean_locked(c, s, CDIR_CLEAN_BUDGET, false, false);
            } else if (sh->self_more && sh->self_at < wake) {
                wake = sh->self_at;
            }
            if (now >= sh->scan_at && !sh->scan_busy) {
                scan_locked(c, s);
                sh->scan_at = now + scan_interval();
            }
            if (sh->scan_at < wake)
                wake = sh->scan_at;
        }
        struct timespec ts;
        deadline_at(&ts, wake);
        pthread_cond_timedwait(&c->cond, &c->lock, &ts);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/* ---- life cycle ---- */

cdir_t *cdir_new(rds_t *rds, const char *node_id, int ttl_ms, char *err, size_t errsz)
{
    pthread_condattr_t ca;
    cdir_t *c;
    int rc;

    if (!rds || !name_ok(node_id) || strpbrk(node_id, "{}")) {
        snprintf(err, errsz,
                 "cluster directory: node id must be 1-%d characters without "
                 "braces or line breaks",
                 CDIR_NAME_MAX);
        return NULL;
    }
    if (ttl_ms <= 0)
        ttl_ms = CDIR_TTL_DEFAULT_MS;
    if (ttl_ms < 300) {
        snprintf(err, errsz, "cluster directory: node ttl %d ms is under 300 ms", ttl_ms);
        return NULL;
    }
    c = xcalloc(1, sizeof(*c));
    c->rds = rds;
    snprintf(c->id, sizeof(c->id), "%s", node_id);
    c->ttl_ms = ttl_ms;
    c->nshards = rds_nshards(rds);
    for (int i = 0; i < SC_N; i++) {
        c->sc[i] = rds_script(rds, script_src[i]);
        if (c->sc[i] < 0) {
            snprintf(err, errsz, "cluster directory: cannot register a script: %s",
                     strerror(-c->sc[i]));
            goto out_free;
        }
    }
    rc = pthread_mutex_init(&c->lock, NULL);
    if (rc != 0)
        goto out_err;
    rc = pthread_condattr_init(&ca);
    if (rc != 0)
        goto out_mutex;
    rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        goto out_mutex;
    c->pairs = strmap_new();
    c->names = strmap_new();
    /* the list as parleyd normalized it (no passwords in it) */
    size_t len = 1;
    for (size_t i = 0; i < c->nshards; i++)
        len += strlen(rds_shard_url(rds, i)) + 1;
    c->layout = xmalloc(len);
    c->layout[0] = '\0';
    for (size_t i = 0; i < c->nshards; i++) {
        if (i)
            strcat(c->layout, ",");
        strcat(c->layout, rds_shard_url(rds, i));
    }
    return c;

out_mutex:
    pthread_mutex_destroy(&c->lock);
out_err:
    snprintf(err, errsz, "cluster directory: %s", strerror(rc));
out_free:
    free(c);
    return NULL;
}

static bool wait_until_locked(cdir_t *c, int64_t deadline, bool (*pred)(cdir_t *));

/* How long the start-up check waits for every shard's answer. */
#define CDIR_START_WAIT_MS 10000

static bool layouts_answered(cdir_t *c)
{
    for (size_t s = 0; s < c->nshards; s++)
        if (c->sh[s].layout == 0)
            return false;
    return true;
}

/* {lock}. Before this node takes part: does a live node place rooms by
 * another shard list? Then the two would split rooms between them. A
 * list changed while every node is down is fine: no live node has the old
 * one (their keys expire with --node-ttl). */
static int check_layout_locked(cdir_t *c, char *err, size_t errsz)
{
    for (size_t s = 0; s < c->nshards; s++) {
        const char *argv[] = {"cdir:nodes", c->id, c->layout};
        c->sh[s].layout = 0;
        if (issue_locked(c, op_new(c, OP_LAYOUT, s), SC_LAYOUT, 1, 3, argv) < 0)
            c->sh[s].layout = -1;
    }
    if (!wait_until_locked(c, mono_ms() + CDIR_START_WAIT_MS, layouts_answered)) {
        snprintf(err, errsz, "cluster directory: Redis did not answer the start-up check");
        return -ETIMEDOUT;
    }
    for (size_t s = 0; s < c->nshards; s++)
        if (c->sh[s].layout < 0) {
            snprintf(err, errsz, "cluster directory: the start-up check failed on %s",
                     rds_shard_url(c->rds, s));
            return -EIO;
        }
    if (c->layout_bad[0]) {
        snprintf(err, errsz,
                 "--engine %s differs from the cluster's: %s; every node must list the "
                 "same Redis servers in the same order (change the list only with every "
                 "node stopped)",
                 c->layout, c->layout_bad);
        return -EINVAL;
    }
    return 0;
}

int cdir_start(cdir_t *c, char *err, size_t errsz)
{
    int64_t now = mono_ms();
    int rc;

    /* Queued before any join can be: the previous run's records move aside
     * (merge, removing nothing yet), so what this run adds is never taken
     * for them; then the first heartbeat. They are removed one ttl later,
     * like a dead node's: a user who reconnects meanwhile moves their entry
     * back (the join script's SMOVE), so a quick restart makes no
     * leave-and-join flap. */
    pthread_mutex_lock(&c->lock);
    rc = check_layout_locked(c, err, errsz);
    if (rc < 0) {
        pthread_mutex_unlock(&c->lock);
        return rc;
    }
    for (size_t s = 0; s < c->nshards; s++) {
        self_clean_locked(c, s, 0, true, false);
        c->sh[s].self_at = now + c->ttl_ms;
        heartbeat_locked(c, s);
        c->sh[s].scan_at = now + scan_interval();
    }
    pthread_mutex_unlock(&c->lock);
    rc = pthread_create(&c->thread, NULL, cdir_main, c);
    if (rc != 0) {
        snprintf(err, errsz, "cluster directory: %s", strerror(rc));
        return -rc;
    }
    c->started = true;
    log_info("cdir", "node '%s' in the cluster directory (%zu shard%s, ttl %d ms)", c->id,
             c->nshards, c->nshards == 1 ? "" : "s", c->ttl_ms);
    return 0;
}

static void stop_thread(cdir_t *c)
{
    if (!c->started)
        return;
    pthread_mutex_lock(&c->lock);
    c->stop = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    pthread_join(c->thread, NULL);
    c->started = false;
}

/* {lock}. Wait until deadline for pred; false if it timed out. */
static bool wait_until_locked(cdir_t *c, int64_t deadline, bool (*pred)(cdir_t *))
{
    struct timespec ts;

    deadline_at(&ts, deadline);
    while (!pred(c))
        if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT)
            return pred(c);
    return true;
}

static bool idle(cdir_t *c)
{
    return c->inflight == 0;
}

static bool byes_settled(cdir_t *c)
{
    for (size_t s = 0; s < c->nshards; s++)
        if (c->sh[s].self_busy)
            return false;
    return true;
}

static void goodbye_locked(cdir_t *c, int64_t deadline)
{
    bool first = true;

    for (size_t s = 0; s < c->nshards; s++)
        c->sh[s].bye = 0;
    for (;;) {
        size_t open = 0;
        for (size_t s = 0; s < c->nshards; s++) {
            if (c->sh[s].bye != 0 || c->sh[s].self_busy)
                continue;
            if (self_clean_locked(c, s, CDIR_CLEAN_BUDGET, first, true) < 0)
                c->sh[s].bye = -1;
            else
                open++;
        }
        first = false;
        if (open == 0 || !wait_until_locked(c, deadline, byes_settled))
            break;
    }
    for (size_t s = 0; s < c->nshards; s++)
        if (c->sh[s].bye != 1)
            log_warn("cdir", "goodbye on '%s' incomplete: other nodes clean up after the ttl",
                     rds_shard_url(c->rds, s));
}

static void shut(cdir_t *c, bool goodbye)
{
    int64_t deadline = mono_ms() + BYE_WAIT_MS;
    bool free_now;

    stop_thread(c);
    pthread_mutex_lock(&c->lock);
    if (goodbye)
        goodbye_locked(c, deadline);
    wait_until_locked(c, deadline + 500, idle);
    /* replies still owed (a hung shard): the last one frees */
    free_now = c->inflight == 0;
    c->orphaned = !free_now;
    pthread_mutex_unlock(&c->lock);
    if (free_now)
        destroy(c);
}

void cdir_free(cdir_t *c)
{
    if (c)
        shut(c, true);
}

void cdir__abandon(cdir_t *c)
{
    if (c)
        shut(c, false);
}
