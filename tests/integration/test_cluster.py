"""Scale-out (issue 17): several parleyd nodes sharing rooms through real
redis-server processes (harness.RedisServer, loopback, AOF fsync always).

Every guarantee of one node must hold across nodes: a message reaches every
member on every node once, in seq order, gapless; each sender is acked;
DMs, presence, `who`, `rooms` and open-mode `name_taken` are cluster-wide;
accounts registered on one node log in on another; `join {since}`,
`history {before}` and idempotent resend work across nodes and restarts.
Faults: a node killed with SIGKILL has its users' leaves announced by the
others within the presence TTL; a Redis hung (SIGSTOP) then killed and
restarted from its AOF under load loses nothing acked, and clients that
stayed connected see no gap and no duplicate.

The command line is fixed by the issue: --engine redis://H:P[,redis://...],
--redis-password-file, --node-id, --history-max; /healthz answers 503
"degraded" while the engine is down; metrics parley_engine_up,
parley_engine_reconnects_total, parley_engine_rtt_seconds_sum/_count,
parley_engine_gap_fills_total.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import harness
from harness import (QUIET, SCALE, T, ClusterCase, RedisServer, Server, collect_messages,
                     free_port, uniq)

# A node that dies without a goodbye has its users' presence removed within
# the TTL (default 15 s); the slack covers the heartbeat period and a
# loaded machine.
PRESENCE_TTL = 15.0
LEAVE_BOUND = (PRESENCE_TTL + 5.0) * SCALE
# A node's reconnect backoff is capped at 5 s; it must be back well within
# a few of those once Redis is.
RECOVER_BOUND = 30.0 * SCALE


def is_msg(room=None, **kw):
    def pred(f):
        if f.get("type") != "message" or (room is not None and f.get("room") != room):
            return False
        return all(f.get(k) == v for k, v in kw.items())
    return pred


def is_presence(room, user, event):
    return lambda f: (f.get("type") == "presence" and f.get("room") == room and
                      f.get("user") == user and f.get("event") == event)


def dm_room(a, b):
    return "dm:" + ":".join(sorted([a, b]))




async def history_all(c, room, limit=200):
    """The room's whole history through history {before}, oldest first."""
    out = []
    before = None
    for _ in range(10000):  # bounded: 200 a page
        req = {"type": "history", "room": room, "limit": limit}
        if before is not None:
            req["before"] = before
        h = await c.call(req, "history")
        out = h["messages"] + out
        if not h["more"] or not h["messages"]:
            return out
        before = h["messages"][0]["seq"]
    raise AssertionError("history never ended")


async def hello_when_free(c, name, timeout=None):
    """hello {name}, retried while it is name_taken (a disconnect elsewhere
    in the cluster frees the name a moment later); the welcome."""
    timeout = timeout or T
    deadline = time.monotonic() + timeout
    while True:
        r = await c.call({"type": "hello", "user": name})
        if r["type"] == "welcome":
            c.user = name
            return r
        if r.get("code") != "name_taken":
            raise AssertionError(f"hello {name}: {r}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} still name_taken after {timeout:.1f} s")
        await asyncio.sleep(0.05)


def healthz(srv):
    st, _, body = srv.get("/healthz", timeout=2.0 * SCALE)
    return st, body


def node_metric(srv, name):
    return srv.metrics().get(name, {}).get("", None)


async def wait_health(nodes, status, word, timeout):
    """Poll every node's /healthz until it answers status with word in the
    body (in a thread: the event loop keeps reading the clients)."""
    loop = asyncio.get_running_loop()
    for s in nodes:
        async def ok(s=s):
            try:
                st, body = await loop.run_in_executor(None, healthz, s)
            except (OSError, AssertionError):
                return False
            return st == status and word in body
        await harness.async_wait_for(ok, timeout, interval=0.05,
                                     what=f"node port {s.port} /healthz {status} {word!r}")


# ------------------------------------------------------------------ chat

class ChatChecks:
    """What holds on any cluster: mixed into cases with 2 and 3 nodes, and
    with two Redis shards."""

    async def room_across_nodes(self, per_node=1, prefix="u"):
        """A fresh room with per_node fresh users on every node (node i % n
        for the i-th); each joined; presence drained. (room, clients)"""
        room = uniq("room")
        clients = []
        for i in range(per_node * self.nodes):
            c = await self.json_client(i % self.nodes, user=uniq(f"{prefix}{i}n"))
            j = await c.call({"type": "join", "room": room}, "joined")
            self.assertIn(c.user, j["members"])
            for other in clients:
                await other.expect(is_presence(room, c.user, "join"),
                                   what=f"presence join of {c.user} (other node)")
            clients.append(c)
        return room, clients

    async def test_room_chat_across_nodes(self):
        room, clients = await self.room_across_nodes(per_node=2, prefix="chat")
        per_sender = 15
        total = per_sender * len(clients)

        async def send_some(c):
            for k in range(per_sender):
                await c.send({"type": "send", "room": room, "text": f"{c.user}:{k}",
                              "id": f"{c.user}-{k}"})

        readers = [asyncio.ensure_future(collect_messages(c, room, total, 60 * SCALE))
                   for c in clients]
        await asyncio.gather(*(send_some(c) for c in clients))
        results = await asyncio.gather(*readers)
        for c, msgs in zip(clients, results):
            self.assertEqual([m["seq"] for m in msgs], list(range(1, total + 1)),
                             f"{c.user} on port {c.node.port}: missing, repeated or out of order")
        # every member saw the same message at each seq, and each sender's
        # messages in the order it sent them
        ref = {m["seq"]: (m["from"], m["text"], m["ts"], m.get("id")) for m in results[0]}
        for msgs in results[1:]:
            self.assertEqual({m["seq"]: (m["from"], m["text"], m["ts"], m.get("id"))
                              for m in msgs}, ref)
        for c in clients:
            own = [m["text"] for m in results[0] if m["from"] == c.user]
            self.assertEqual(own, [f"{c.user}:{k}" for k in range(per_sender)])
        # each sender acked once per message, with the seq its message got
        ack_seqs = []
        for c, msgs in zip(clients, results):
            acks = [f for f in c.skipped if f["type"] == "ack"]
            while len(acks) < per_sender:
                acks.append(await c.expect_type("ack"))
            by_id = {m["id"]: m["seq"] for m in msgs if m["from"] == c.user}
            self.assertEqual({a["id"]: a["seq"] for a in acks}, by_id)
            ack_seqs += [a["seq"] for a in acks]
        self.assertEqual(sorted(ack_seqs), list(range(1, total + 1)))
        # nothing more comes (no duplicate after the last)
        for c in clients:
            await c.sync()
            self.assertFalse([f for f in c.backlog if f["type"] == "message"], c.user)
        # and history, read on each node, is the same log
        for c in clients[:self.nodes]:
            h = await history_all(c, room)
            self.assertEqual({m["seq"]: (m["from"], m["text"], m["ts"], m.get("id"))
                              for m in h}, ref)

    async def test_dm_across_nodes(self):
        a = await self.json_client(0, user=uniq("dma"))
        b = await self.json_client(self.nodes - 1, user=uniq("dmb"))
        dm = dm_room(a.user, b.user)
        ack = await a.call({"type": "dm", "to": b.user, "text": "across", "id": "d1"}, "ack")
        self.assertEqual((ack["room"], ack["seq"], ack["id"]), (dm, 1, "d1"))
        for c in (a, b):
            m = await c.expect(is_msg(dm, seq=1), what=f"the DM on {c.user}")
            self.assertEqual((m["from"], m["text"]), (a.user, "across"))
        ack2 = await b.call({"type": "dm", "to": a.user, "text": "back"}, "ack")
        self.assertEqual((ack2["room"], ack2["seq"]), (dm, 2))
        for c in (a, b):
            await c.expect(is_msg(dm, seq=2, text="back", **{"from": b.user}))
        # idempotent across the cluster: same seq, delivered once
        again = await a.call({"type": "dm", "to": b.user, "text": "across", "id": "d1"}, "ack")
        self.assertEqual(again["seq"], 1)
        mark = await b.call({"type": "dm", "to": a.user, "text": "marker"}, "ack")
        self.assertEqual(mark["seq"], 3)
        for c in (a, b):
            await c.expect(is_msg(dm, seq=3))
            self.assertFalse([f for f in c.backlog if f.get("type") == "message"],
                             f"{c.user} got a duplicate")
        # a third user on a third node (or the first) sees nothing of it
        o = await self.json_client(1 % self.nodes, user=uniq("dmo"))
        e = await o.call({"type": "join", "room": dm})
        self.assertEqual((e["type"], e["code"]), ("error", "forbidden"))
        # a DM to a user online on no node is no_such_user
        e = await a.call({"type": "dm", "to": uniq("ghost"), "text": "x"})
        self.assertEqual((e["type"], e["code"]), ("error", "no_such_user"))

    async def test_dm_right_after_sign_in(self):
        """The welcome comes once the user's channel is live on the node, so
        a DM sent from another node right after it is never missed."""
        a = await self.json_client(0, user=uniq("dsa"))
        for k in range(20):
            b = await self.json_client(self.nodes - 1, user=uniq("dsb"))
            ack = await a.call({"type": "dm", "to": b.user, "text": f"hi{k}"}, "ack")
            m = await b.expect(is_msg(ack["room"], seq=ack["seq"]),
                               what=f"the DM sent right after {b.user} signed in")
            self.assertEqual(m["text"], f"hi{k}")
            await b.close()

    async def test_presence_who_rooms_cluster_wide(self):
        room, clients = await self.room_across_nodes(prefix="p")
        names = sorted(c.user for c in clients)
        # the joiners got no presence about themselves, and no repeats
        for c in clients:
            await c.sync()
            own = [f for f in c.backlog if f.get("type") == "presence" and f["user"] == c.user]
            self.assertEqual(own, [], c.user)
        for c in clients:
            w = await c.call({"type": "who", "room": room}, "members")
            self.assertEqual(sorted(w["users"]), names, f"who on port {c.node.port}")
            r = await c.call({"type": "rooms"}, "rooms")
            self.assertEqual([x for x in r["rooms"] if x["name"] == room],
                             [{"name": room, "members": len(clients), "seq": 0}])
        ack = await clients[-1].send_msg(room, "one")
        for c in clients:
            await c.expect(is_msg(room, seq=ack["seq"]))
            r = await c.call({"type": "rooms"}, "rooms")
            self.assertEqual([x["seq"] for x in r["rooms"] if x["name"] == room], [1])
        # someone joining on another node is seen by everyone, once
        late = await self.json_client(1 % self.nodes, user=uniq("late"))
        j = await late.call({"type": "join", "room": room}, "joined")
        self.assertEqual(sorted(j["members"]), sorted(names + [late.user]))
        for c in clients:
            await c.expect(is_presence(room, late.user, "join"))
        # leave by request, then by disconnect: announced on every node once
        leaver, closer = clients[0], clients[-1]
        await leaver.call({"type": "leave", "room": room}, "left")
        for c in clients[1:] + [late]:
            await c.expect(is_presence(room, leaver.user, "leave"), what="leave (request)")
        await closer.close()
        for c in clients[1:-1] + [late]:
            await c.expect(is_presence(room, closer.user, "leave"), what="leave (disconnect)")
        stay = clients[1:-1] + [late]
        for c in stay:
            await c.expect_none(lambda f: f.get("type") == "presence", window=QUIET,
                                what="a repeated presence event")
        want = sorted(c.user for c in stay)
        for c in stay + [leaver]:
            w = await c.call({"type": "who", "room": room}, "members")
            self.assertEqual(sorted(w["users"]), want, f"who on port {c.node.port}")
            r = await c.call({"type": "rooms"}, "rooms")
            self.assertEqual([x["members"] for x in r["rooms"] if x["name"] == room],
                             [len(stay)])

    async def test_name_taken_across_nodes(self):
        name = uniq("taken")
        holder = await self.json_client(0, user=name)
        for i in range(1, self.nodes):
            other = await self.json_client(i)
            e = await other.call({"type": "hello", "user": name, "ref": "n"})
            self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "name_taken", "n"))
            # user= in the query too
            q = await harness.JClient.connect(self.node(i), query=f"user={name}")
            self.addAsyncCleanup(q.close)
            e = await q.recv()
            self.assertEqual((e["type"], e["code"]), ("error", "name_taken"))
        await holder.close()
        # freed cluster-wide: the last node takes it, then the first refuses it
        last = await self.json_client(self.nodes - 1)
        await hello_when_free(last, name)
        first = await self.json_client(0)
        e = await first.call({"type": "hello", "user": name})
        self.assertEqual((e["type"], e["code"]), ("error", "name_taken"))

    async def test_join_since_and_history_before_across_nodes(self):
        room, (a, *rest) = await self.room_across_nodes(prefix="h")
        b = rest[-1]
        for i in range(1, 13):
            await (a if i % 2 else b).send_msg(room, f"m{i}", id=f"h{i}")
        late = await self.json_client(self.nodes - 1, user=uniq("hl"))
        j = await late.call({"type": "join", "room": room, "since": 4}, "joined")
        self.assertEqual(j["seq"], 12)
        self.assertEqual([m["seq"] for m in j["history"]], list(range(5, 13)))
        self.assertEqual([m["text"] for m in j["history"]], [f"m{i}" for i in range(5, 13)])
        j = await late.call({"type": "join", "room": room, "since": 2, "limit": 3}, "joined")
        self.assertEqual([m["seq"] for m in j["history"]], [3, 4, 5])
        # history {before} on every node: the same pages
        pages = []
        for c in [a] + rest:
            h1 = await c.call({"type": "history", "room": room, "before": 8, "limit": 3},
                              "history")
            h2 = await c.call({"type": "history", "room": room, "before": 3, "limit": 3},
                              "history")
            self.assertEqual(([m["seq"] for m in h1["messages"]], h1["more"]), ([5, 6, 7], True))
            self.assertEqual(([m["seq"] for m in h2["messages"]], h2["more"]), ([1, 2], False))
            pages.append((h1["messages"], h2["messages"]))
        for p in pages[1:]:
            self.assertEqual(p, pages[0])
        for m in pages[0][0]:
            self.assertEqual((m["from"], m["id"]),
                             (a.user if m["seq"] % 2 else b.user, f"h{m['seq']}"))

    async def test_idempotent_resend_across_nodes(self):
        room, clients = await self.room_across_nodes(prefix="i")
        x, watcher = clients[0], clients[-1]
        ack1 = await x.send_msg(room, "once", id="dup-1")
        await watcher.expect(is_msg(room, seq=ack1["seq"]))
        await x.close()
        # the same user, back on another node, resends the same id
        x2 = await self.json_client(self.nodes - 1)
        await hello_when_free(x2, x.user)
        await x2.call({"type": "join", "room": room}, "joined")
        ack2 = await x2.call({"type": "send", "room": room, "text": "once", "id": "dup-1"},
                             "ack")
        self.assertEqual((ack2["seq"], ack2["id"]), (ack1["seq"], "dup-1"))
        mark = await watcher.send_msg(room, "marker")
        self.assertEqual(mark["seq"], ack1["seq"] + 1)
        for c in (watcher, x2):
            await c.expect(is_msg(room, seq=mark["seq"]))
            self.assertFalse([f for f in c.backlog if f.get("type") == "message" and
                              f.get("id") == "dup-1"], f"{c.user} got the duplicate")
        h = await history_all(watcher, room)
        self.assertEqual([m["text"] for m in h], ["once", "marker"])


class TwoNodes(ChatChecks, ClusterCase):
    nodes = 2

    async def test_engine_metrics(self):
        """The engine's metrics exist on every node and move with traffic."""
        room, (a, b) = await self.room_across_nodes(prefix="mt")
        before = [node_metric(s, "parley_engine_rtt_seconds_count") for s in self.cluster.nodes]
        await a.send_msg(room, "x")
        await b.send_msg(room, "y")
        for s, n0 in zip(self.cluster.nodes, before):
            m = s.metrics()
            for name in ("parley_engine_up", "parley_engine_reconnects_total",
                         "parley_engine_rtt_seconds_sum", "parley_engine_rtt_seconds_count",
                         "parley_engine_gap_fills_total"):
                self.assertIn(name, m, f"port {s.port}")
            self.assertEqual(m["parley_engine_up"][""], 1)
            self.assertGreater(m["parley_engine_rtt_seconds_count"][""], n0)
            self.assertGreaterEqual(m["parley_engine_rtt_seconds_sum"][""], 0)


    async def test_event_of_another_kind_is_not_a_message(self):
        """An event of a kind no node produces yet (protocol v1.1 adds them),
        put in the log and published as the append script does: stored and
        delivered by the engine, but no node shows it as a message, and the
        room goes on after it."""
        room, (a, b) = await self.room_across_nodes(prefix="kd")
        redis = self.cluster.redis[0]
        first = await a.send_msg(room, "before")
        await b.expect(is_msg(room, seq=first["seq"]))
        seq = redis.cmd("INCR", f"r:{{{room}}}:seq")
        self.assertEqual(seq, first["seq"] + 1)
        ts, who, body = str(int(time.time() * 1000)), "kdx", "op\x01body"
        redis.cmd("XADD", f"r:{{{room}}}:log", f"{seq}-0", "f", who, "t", ts, "i", "", "x", "",
                  "k", "7", "b", body)
        frame = '{"type":"other"}'
        hdr = f"{ts} 7 {len(room)} {len(who)} 0 0 {len(body)}\n{room}{who}"
        self.assertEqual(redis.cmd("PUBLISH", f"r:{{{room}}}", f"m{seq}\n{hdr}{body}{frame}"), 2)
        after = await a.send_msg(room, "after")
        self.assertEqual(after["seq"], seq + 1)
        for c in (a, b):
            await c.expect(is_msg(room, seq=after["seq"], text="after"))
            self.assertFalse([f for f in c.backlog if f.get("seq") == seq or
                              f.get("type") == "other"], f"{c.user} got the other kind")
            h = await c.call({"type": "history", "room": room, "limit": 3}, "history")
            self.assertEqual([m["seq"] for m in h["messages"]], [first["seq"], after["seq"]])
        late = await self.json_client(1, user=uniq("kl"))
        j = await late.call({"type": "join", "room": room, "since": 0}, "joined")
        self.assertEqual(j["seq"], after["seq"])
        self.assertEqual([m["text"] for m in j["history"]], ["before", "after"])


class ThreeNodes(ChatChecks, ClusterCase):
    nodes = 3


class TwoShards(ChatChecks, ClusterCase):
    """Two independent Redis servers: rooms spread over both by a hash of
    the name, everything else as with one."""
    nodes = 2
    shards = 2

    def test_a_node_with_the_shards_in_another_order_refuses_to_start(self):
        """It would place rooms on other shards than the running nodes."""
        swapped = ",".join(r.url for r in reversed(self.cluster.redis))
        tmp = tempfile.mkdtemp(prefix="parley-it-")
        self.addCleanup(shutil.rmtree, tmp, True)
        args = ["--listen", f"127.0.0.1:{free_port()}", "--db", os.path.join(tmp, "p.db"),
                "--engine", swapped, "--node-id", "swapped"]
        try:
            r = harness.run_parleyd(args, timeout=15 * SCALE)
        except subprocess.TimeoutExpired:
            self.fail("a node with the shards swapped started")
        out = r.stdout + r.stderr
        self.assertNotEqual(r.returncode, 0, out)
        self.assertIn("same order", out)
        self.assertRegex(out, r"'node[01]'", "names a live node")
        self.assertLessEqual(len(out.splitlines()), 20, "a clear message, not a flood")

    async def test_rooms_land_on_both_shards(self):
        a = await self.json_client(0, user=uniq("sh"))
        b = await self.json_client(1, user=uniq("sh"))
        rooms = [f"{uniq('shard')}x{k:02d}" for k in range(16)]
        for r in rooms:
            await a.call({"type": "join", "room": r}, "joined")
            await b.call({"type": "join", "room": r}, "joined")
            ack = await a.send_msg(r, f"in {r}")
            await b.expect(is_msg(r, seq=ack["seq"]))
        # each room's keys are on exactly one shard (its name, bounded by
        # characters a room name cannot hold, is in the key), both are used
        where = {r: set() for r in rooms}
        keys = [self.cluster.redis[i].keys() for i in range(2)]
        for i, ks in enumerate(keys):
            for r in rooms:
                rx = re.compile(r"(?<![A-Za-z0-9_.-])" + re.escape(r) + r"(?![A-Za-z0-9_.-])")
                if any(rx.search(k) for k in ks):
                    where[r].add(i)
        self.assertEqual({r: len(s) for r, s in where.items()}, {r: 1 for r in rooms},
                         f"keys per shard: {keys}")
        per_shard = [sum(1 for s in where.values() if i in s) for i in range(2)]
        self.assertTrue(all(per_shard), f"every room on one shard: {per_shard}")
        # history of each room is whole, read on either node
        for r in rooms:
            for c in (a, b):
                h = await c.call({"type": "history", "room": r}, "history")
                self.assertEqual([m["text"] for m in h["messages"]], [f"in {r}"])


class RedisPassword(ChatChecks, ClusterCase):
    """requirepass on Redis, --redis-password-file on the nodes."""
    nodes = 2
    redis_password = "pw-" + os.urandom(8).hex()

    def test_redis_requires_the_password(self):
        r = self.cluster.redis[0]
        with socket.create_connection(("127.0.0.1", r.port), timeout=T) as s:
            s.sendall(b"PING\r\n")
            with s.makefile("rb") as f:
                self.assertTrue(f.readline().startswith(b"-NOAUTH"))
        self.assertEqual(r.cmd("PING"), "PONG")


# ------------------------------------------------------------------ accounts

def post(srv, path, body):
    st, _, raw = srv.get(path, method="POST", body=json.dumps(body),
                         headers={"Content-Type": "application/json"}, timeout=10 * SCALE)
    try:
        return st, json.loads(raw)
    except ValueError:
        return st, raw


class AccountsAcrossNodes(ClusterCase):
    """--auth accounts: an account made on one node is known to all; the
    nodes share one token secret (the operator's file)."""
    nodes = 2

    @classmethod
    def make_cluster(cls):
        c = super().make_cluster()
        secret = os.path.join(c.tmp, "token.secret")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        c.args = ["--auth", "accounts", "--token-secret-file", secret] + c.args
        return c

    async def token_client(self, node, token):
        c = await self.json_client(node)
        c.welcome = await c.call({"type": "hello", "token": token}, "welcome")
        c.user = c.welcome["user"]
        return c

    async def test_register_on_one_node_login_on_another(self):
        n0, n1 = self.node(0), self.node(1)
        alice, bob, pw = uniq("alice"), uniq("bob"), "correct horse battery"
        st, js = post(n0, "/api/register", {"user": alice, "password": pw})
        self.assertEqual(st, 201, js)
        st, js = post(n1, "/api/register", {"user": alice, "password": pw})
        self.assertEqual(st, 409, js)
        st, js = post(n1, "/api/register", {"user": bob, "password": pw})
        self.assertEqual(st, 201, js)
        st, js = post(n1, "/api/login", {"user": alice, "password": "wrong password!"})
        self.assertEqual(st, 401, js)
        st, js = post(n1, "/api/login", {"user": alice, "password": pw})
        self.assertEqual(st, 200, js)
        tok_a = js["token"]
        st, js = post(n0, "/api/login", {"user": bob, "password": pw})
        self.assertEqual(st, 200, js)
        tok_b = js["token"]
        # a token from either node signs in on either node
        a0 = await self.token_client(0, tok_a)
        a1 = await self.token_client(1, tok_a)
        b1 = await self.token_client(1, tok_b)
        self.assertEqual((a0.user, a1.user, b1.user), (alice, alice, bob))
        room = uniq("acc")
        for c in (a0, b1):
            await c.call({"type": "join", "room": room}, "joined")
        ack = await b1.send_msg(room, "hi alice")
        await a0.expect(is_msg(room, seq=ack["seq"], text="hi alice"))
        # a DM reaches every connection of the recipient, on every node
        ack = await b1.call({"type": "dm", "to": alice, "text": "psst"}, "ack")
        for c in (a0, a1, b1):
            await c.expect(is_msg(ack["room"], seq=ack["seq"], text="psst"))

    async def test_a_hello_left_waiting_keeps_the_channel(self):
        """Two connections of one user sign in while Redis hangs (both wait
        for the user's channel); one goes away. The other must go on
        waiting for the channel, not be welcomed on the strength of the
        first one's leaving, and a DM after its welcome reaches it."""
        n1, redis = self.node(1), self.cluster.redis[0]
        name, pw = uniq("hw"), "correct horse battery"
        st, js = post(n1, "/api/register", {"user": name, "password": pw})
        self.assertEqual(st, 201, js)
        st, js = post(n1, "/api/login", {"user": name, "password": pw})
        self.assertEqual(st, 200, js)
        token = js["token"]
        other = await self.json_client(0, user=None)
        peer, ppw = uniq("hp"), "correct horse battery"
        st, js = post(self.node(0), "/api/register", {"user": peer, "password": ppw})
        self.assertEqual(st, 201, js)
        st, js = post(self.node(0), "/api/login", {"user": peer, "password": ppw})
        other.welcome = await other.call({"type": "hello", "token": js["token"]}, "welcome")
        y1 = await self.json_client(1)
        y2 = await self.json_client(1)
        redis.pause()
        try:
            await y1.send({"type": "hello", "token": token, "ref": "h1"})
            await y2.send({"type": "hello", "token": token, "ref": "h2"})
            await asyncio.sleep(0.2)
            # gone at once (a parked connection reads no close frame)
            y1.ws.transport.abort()
            # the node notices a hung Redis only after its reply deadline (3 s)
            await y2.expect_none(lambda f: f.get("type") == "welcome", window=0.8,
                                 what="a welcome before the channel is live")
        finally:
            redis.resume()
        await y2.expect_type("welcome", timeout=RECOVER_BOUND)
        await wait_health([n1], 200, b"ok", RECOVER_BOUND)
        deadline = time.monotonic() + 10 * SCALE
        while True:  # node 0 learns of the account by its poll
            ack = await other.call({"type": "dm", "to": name, "text": "still there?"})
            if ack["type"] == "ack":
                break
            self.assertLess(time.monotonic(), deadline, ack)
            await asyncio.sleep(0.1)
        await y2.expect(is_msg(ack["room"], seq=ack["seq"], text="still there?"))

    async def test_dm_ack_then_history_with_the_dm_room_loaded(self):
        """A DM room joined on the sender's node keeps a window there: the
        ack waits for the DM to reach it, so a history right after the ack
        has it, and the sender sees its DM before the ack."""
        users = {}
        for n, who in ((0, "dha"), (1, "dhb")):
            name, pw = uniq(who), "correct horse battery"
            st, js = post(self.node(n), "/api/register", {"user": name, "password": pw})
            self.assertEqual(st, 201, js)
            st, js = post(self.node(n), "/api/login", {"user": name, "password": pw})
            self.assertEqual(st, 200, js)
            users[n] = await self.token_client(n, js["token"])
        a, b = users[0], users[1]
        dm = dm_room(a.user, b.user)
        # node 0 learns of an account made on node 1 by its poll (about 1 s)
        deadline = time.monotonic() + 10 * SCALE
        while (await a.call({"type": "join", "room": dm}))["type"] != "joined":
            self.assertLess(time.monotonic(), deadline, f"{b.user} never known on node 0")
            await asyncio.sleep(0.1)
        for k in range(10):
            ack = await a.call({"type": "dm", "to": b.user, "text": f"h{k}"}, "ack")
            self.assertTrue([f for f in a.backlog if f.get("type") == "message" and
                             f.get("seq") == ack["seq"]], "the DM came before its ack")
            h = await a.call({"type": "history", "room": dm, "limit": 1}, "history")
            self.assertEqual([(m["seq"], m["text"]) for m in h["messages"]],
                             [(ack["seq"], f"h{k}")])
            await b.expect(is_msg(dm, seq=ack["seq"]))
            a.backlog.clear()


# ------------------------------------------------------------------ node faults

class NodeCrash(ClusterCase):
    """kill -9 one node of three."""
    nodes = 3

    async def test_kill9_node_leaves_announced_once_nothing_acked_lost(self):
        room = uniq("crash")
        obs0 = await self.json_client(0, user=uniq("obs"), room=room)
        obs2 = await self.json_client(2, user=uniq("obs"), room=room)
        victims = []
        for _ in range(2):
            v = await self.json_client(1, user=uniq("vic"), room=room)
            victims.append(v)
            for o in (obs0, obs2):
                await o.expect(is_presence(room, v.user, "join"))
        acked = {}
        for k in range(5):
            for c in victims + [obs0]:
                ack = await c.send_msg(room, f"{c.user}:{k}")
                acked[ack["seq"]] = (c.user, f"{c.user}:{k}")
        for o in (obs0, obs2):
            await collect_messages(o, room, len(acked), 10 * SCALE)
        t0 = time.monotonic()
        self.node(1).kill()
        for o in (obs0, obs2):
            for v in victims:
                left = LEAVE_BOUND - (time.monotonic() - t0)
                await o.expect(is_presence(room, v.user, "leave"), timeout=max(left, 0.1),
                               what=f"leave of {v.user} within {LEAVE_BOUND:.0f} s")
        # once each, on each surviving node
        for o in (obs0, obs2):
            await o.expect_none(lambda f: f.get("type") == "presence" and
                                f["user"] in {v.user for v in victims}, window=1.0,
                                what="a repeated leave")
        want = sorted([obs0.user, obs2.user])
        for o in (obs0, obs2):
            w = await o.call({"type": "who", "room": room}, "members")
            self.assertEqual(sorted(w["users"]), want)
            r = await o.call({"type": "rooms"}, "rooms")
            self.assertEqual([x["members"] for x in r["rooms"] if x["name"] == room], [2])
        # nothing acked is lost
        h = await history_all(obs2, room)
        self.assertEqual([m["seq"] for m in h], list(range(1, len(acked) + 1)))
        self.assertEqual({m["seq"]: (m["from"], m["text"]) for m in h}, acked)
        # the dead node's names are free again, and the room goes on
        again = await self.json_client(0)
        await hello_when_free(again, victims[0].user)
        ack = await obs0.send_msg(room, "after")
        await obs2.expect(is_msg(room, seq=ack["seq"]))


class NodeRestart(ClusterCase):
    """Idempotency, `join {since}` and seq across node restarts (Redis keeps
    running: the log is there, not in a node)."""
    nodes = 2

    async def test_since_and_idempotent_resend_across_restarts(self):
        room = uniq("rs")
        x = await self.json_client(0, user=uniq("rx"), room=room)
        y = await self.json_client(1, user=uniq("ry"), room=room)
        await x.expect(is_presence(room, y.user, "join"))
        for i in (1, 2, 3):
            ack = await x.send_msg(room, f"m{i}", id=f"i{i}")
            self.assertEqual(ack["seq"], i)
        await collect_messages(y, room, 3, T)
        name = x.user
        self.node(0).restart()  # SIGTERM: exit 0, then a new process on a new port
        code = await x.wait_closed(T)
        self.assertIn(code, (1001, 1006), "a node shutting down closes with 1001")
        await y.expect(is_presence(room, name, "leave"), what="the goodbye of a stopped node")
        x2 = await self.json_client(0)
        await hello_when_free(x2, name)
        j = await x2.call({"type": "join", "room": room, "since": 1}, "joined")
        self.assertEqual(j["seq"], 3)
        self.assertEqual([m["text"] for m in j["history"]], ["m2", "m3"])
        again = await x2.call({"type": "send", "room": room, "text": "m2", "id": "i2"}, "ack")
        self.assertEqual(again["seq"], 2)
        ack = await x2.send_msg(room, "m4", id="i4")
        self.assertEqual(ack["seq"], 4)
        got = await collect_messages(y, room, 1, T)
        self.assertEqual([m["seq"] for m in got], [4], "the resent id was delivered again")
        # every node restarted: the room's seq, history and ids live on
        self.cluster.restart()
        z = await self.json_client(1)
        await hello_when_free(z, name)
        j = await z.call({"type": "join", "room": room, "since": 0}, "joined")
        self.assertEqual((j["seq"], [m["text"] for m in j["history"]]),
                         (4, ["m1", "m2", "m3", "m4"]))
        h = await z.call({"type": "history", "room": room, "before": 4, "limit": 2}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], [2, 3])
        again = await z.call({"type": "send", "room": room, "text": "m1", "id": "i1"}, "ack")
        self.assertEqual(again["seq"], 1)
        ack = await z.send_msg(room, "m5")
        self.assertEqual(ack["seq"], 5)


# ------------------------------------------------------------------ Redis faults

class EngineDown(ClusterCase):
    """Redis stopped: /healthz 503 degraded, sends refused with `internal`,
    and back to normal by itself once Redis is."""
    nodes = 2

    async def test_healthz_degraded_and_recovery(self):
        nodes, redis = self.cluster.nodes, self.cluster.redis[0]
        for s in nodes:
            self.assertEqual(healthz(s), (200, b"ok\n"))
            self.assertEqual(node_metric(s, "parley_engine_up"), 1)
        rc0 = [node_metric(s, "parley_engine_reconnects_total") for s in nodes]
        room = uniq("down")
        a = await self.json_client(0, user=uniq("da"), room=room)
        b = await self.json_client(1, user=uniq("db"), room=room)
        ack = await a.send_msg(room, "before")
        await b.expect(is_msg(room, seq=ack["seq"]))
        self.assertEqual(redis.stop(), 0)
        await wait_health(nodes, 503, b"degraded", 2 * T)
        for s in nodes:
            self.assertEqual(node_metric(s, "parley_engine_up"), 0)
        for c in (a, b):
            e = await c.call({"type": "send", "room": room, "text": "lost", "ref": "l"})
            self.assertEqual((e["type"], e.get("code"), e["ref"]), ("error", "internal", "l"))
            await c.call({"type": "ping"}, "pong")
        await b.expect_none(is_msg(room), window=QUIET, what="a refused message")
        redis.restart()
        await wait_health(nodes, 200, b"ok", RECOVER_BOUND)
        for s, n0 in zip(nodes, rc0):
            self.assertEqual(node_metric(s, "parley_engine_up"), 1)
            self.assertGreaterEqual(node_metric(s, "parley_engine_reconnects_total"), n0 + 1)
        # the refused sends took no seq; chat goes on across nodes
        ack2 = await b.send_msg(room, "after")
        self.assertEqual(ack2["seq"], ack["seq"] + 1)
        await a.expect(is_msg(room, seq=ack2["seq"], text="after"))
        h = await a.call({"type": "history", "room": room}, "history")
        self.assertEqual([m["text"] for m in h["messages"]], ["before", "after"])


class RedisLosesItsData(ClusterCase):
    """Redis comes back empty (its AOF lost): rooms go on above the seqs the
    nodes delivered, instead of counting from 1 again, which every node
    would drop as repeats."""
    nodes = 2

    async def test_seqs_go_on_after_redis_lost_its_data(self):
        nodes, redis = self.cluster.nodes, self.cluster.redis[0]
        room = uniq("amnesia")
        a = await self.json_client(0, user=uniq("la"), room=room)
        b = await self.json_client(1, user=uniq("lb"), room=room)
        for k in range(3):
            ack = await a.send_msg(room, f"before{k}")
            await b.expect(is_msg(room, seq=ack["seq"]))
        last = ack["seq"]
        redis.kill()
        shutil.rmtree(os.path.join(redis.tmp, "appendonlydir"), ignore_errors=True)
        redis.restart()
        self.assertEqual(redis.cmd("DBSIZE"), 0, "it came back empty")
        await wait_health(nodes, 200, b"ok", RECOVER_BOUND)
        # each side sends: seqs go on above what was delivered, everyone gets both
        ack1 = await b.send_msg(room, "after1")
        self.assertGreater(ack1["seq"], last)
        ack2 = await a.send_msg(room, "after2")
        self.assertEqual(ack2["seq"], ack1["seq"] + 1)
        for c in (a, b):
            for ack, text in ((ack1, "after1"), (ack2, "after2")):
                await c.expect(is_msg(room, seq=ack["seq"], text=text))
        self.assertGreaterEqual(sum(node_metric(s, "parley_engine_reseeded_total")
                                    for s in nodes), 1,
                                "a node raised the room's seq when it came back")


class RedisOutageUnderLoad(ClusterCase):
    """Steady bounded load from senders on both nodes while Redis hangs
    (SIGSTOP) for a few seconds, is killed (SIGKILL) and restarted from its
    AOF: the nodes recover by themselves; every acked message is in history;
    readers that stayed connected saw every seq once, in order; sends while
    the engine was down got `error internal`, never an ack."""
    nodes = 2
    HUNG_S = 3.0      # how long Redis stays stopped (a stimulus, not a wait)
    DOWN_S = 2.0      # how long it stays dead before the restart
    PACE_S = 0.02     # between one sender's sends
    MAX_SENDS = 2000  # per sender: bounds the load whatever the timing

    async def test_sigstop_then_sigkill_and_aof_restart(self):
        nodes, redis = self.cluster.nodes, self.cluster.redis[0]
        room = uniq("out")
        readers = [await self.json_client(i, user=uniq(f"rd{i}n"), room=room) for i in (0, 1)]
        senders = [await self.json_client(i, user=uniq(f"sd{i}n"), room=room) for i in (0, 1)]
        for c in readers + senders:  # presence is no part of what is checked here
            await c.sync()
            c.clear()
        rc0 = [node_metric(s, "parley_engine_reconnects_total") for s in nodes]

        stop_sending = asyncio.Event()
        replies = {0: [], 1: []}  # sender -> [(id, reply, t_sent, t_reply)]
        reply_bound = self.HUNG_S * SCALE + 3 * T  # a send pending through the hang

        async def send_loop(i):
            c = senders[i]
            for k in range(self.MAX_SENDS):
                if stop_sending.is_set():
                    return
                mid = f"s{i}-{k}"
                t_sent = time.monotonic()
                r = await c.call({"type": "send", "room": room, "text": mid, "id": mid},
                                 timeout=reply_bound)
                replies[i].append((mid, r, t_sent, time.monotonic()))
                # the sender's own message events are not checked here
                c.backlog = type(c.backlog)(f for f in c.backlog if f.get("type") != "message")
                await asyncio.sleep(self.PACE_S)

        logs = {0: [], 1: []}
        final_seq = asyncio.get_running_loop().create_future()

        async def read_loop(i):
            c = readers[i]
            while not (final_seq.done() and logs[i] and logs[i][-1]["seq"] >= final_seq.result()):
                try:
                    f = await c.recv(0.2)
                except AssertionError:
                    continue  # nothing within 0.2 s: look at final_seq again
                if f.get("type") == "message" and f["room"] == room:
                    logs[i].append(f)

        def acks(i):
            return sum(1 for _, r, _, _ in replies[i] if r["type"] == "ack")

        read_tasks = [asyncio.ensure_future(read_loop(i)) for i in (0, 1)]
        send_tasks = [asyncio.ensure_future(send_loop(i)) for i in (0, 1)]
        try:
            await harness.async_wait_for(lambda: acks(0) >= 10 and acks(1) >= 10, 4 * T,
                                         what="10 acks for each sender before the fault")
            redis.pause()
            await asyncio.sleep(self.HUNG_S)
            redis.kill()
            await wait_health(nodes, 503, b"degraded", 2 * T)
            t_down = time.monotonic()
            await asyncio.sleep(self.DOWN_S)
            t_restart = time.monotonic()
            redis.restart()
            await wait_health(nodes, 200, b"ok", RECOVER_BOUND)
            n0, n1 = acks(0), acks(1)
            await harness.async_wait_for(lambda: acks(0) >= n0 + 10 and acks(1) >= n1 + 10,
                                         4 * T, what="10 more acks each after recovery")
        finally:
            stop_sending.set()
            done = await asyncio.gather(*send_tasks, return_exceptions=True)
        for d in done:
            if isinstance(d, BaseException):
                raise d

        # every reply is an ack of its id, or error internal; while the
        # engine was known down no send was acked
        errored = {0: [], 1: []}
        acked = {}
        for i in (0, 1):
            for mid, r, t_sent, t_reply in replies[i]:
                if r["type"] == "ack":
                    self.assertEqual((r["room"], r.get("id")), (room, mid), r)
                    self.assertNotIn(mid, acked)
                    acked[mid] = r["seq"]
                    self.assertFalse(t_sent >= t_down and t_reply <= t_restart,
                                     f"{mid} acked while Redis was dead: {r}")
                else:
                    self.assertEqual((r["type"], r.get("code")), ("error", "internal"), r)
                    errored[i].append(mid)
        self.assertTrue(errored[0] and errored[1], "no send was refused during the outage")
        # a refused send, resent with its id, is acked once (whether or not
        # it had reached Redis before the fault)
        for i in (0, 1):
            for mid in errored[i]:
                r = await senders[i].call({"type": "send", "room": room, "text": mid, "id": mid},
                                          "ack")
                acked[mid] = r["seq"]
        mark = await senders[0].send_msg(room, "marker")
        final_seq.set_result(mark["seq"])
        await asyncio.wait_for(asyncio.gather(*read_tasks), 30 * SCALE)

        # connected readers: every seq from 1 to the marker, once, in order
        for i in (0, 1):
            seqs = [m["seq"] for m in logs[i]]
            self.assertEqual(seqs, list(range(1, mark["seq"] + 1)),
                             f"reader on node{i}: a gap or a duplicate")
        self.assertEqual([(m["seq"], m["text"]) for m in logs[0]],
                         [(m["seq"], m["text"]) for m in logs[1]])
        # history has every acked message at its acked seq, each id once
        h = await history_all(readers[1], room)
        self.assertEqual([m["seq"] for m in h], list(range(1, mark["seq"] + 1)))
        texts = [m["text"] for m in h]
        self.assertEqual(len(texts), len(set(texts)), "an id is in history twice")
        by_text = {m["text"]: m["seq"] for m in h}
        for mid, seq in acked.items():
            self.assertEqual(by_text.get(mid), seq, f"acked {mid} (seq {seq}) not in history")
        for s, n0 in zip(nodes, rc0):
            m = s.metrics()
            self.assertEqual(m["parley_engine_up"][""], 1)
            self.assertGreaterEqual(m["parley_engine_reconnects_total"][""], n0 + 1)
            # a gap fill that found seqs missing from the log would mean an
            # acked message was lost (a metric of the engine, where it has it)
            self.assertEqual(m.get("parley_engine_lost_total", {"": 0})[""], 0)


def redis_conns_of(pid, redis_port):
    """Local ports of the TCP connections process pid holds to 127.0.0.1:
    redis_port (its socket inodes matched in /proc/net/tcp)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            t = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if t.startswith("socket:["):
            inodes.add(t[8:-1])
    ports = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            col = line.split()
            lport, rport = int(col[1].split(":")[1], 16), int(col[2].split(":")[1], 16)
            if rport == redis_port and col[9] in inodes:
                ports.append(lport)
    return ports


class ShutdownDuringSignIn(ClusterCase):
    """A node told to stop while hellos wait for their users' channels (one
    of its two Redis servers stalled, so those subscriptions are not
    confirmed): the waits end after the loops have stopped (nothing left to
    post the rest of the hello to), and the node must still exit cleanly (0,
    and no sanitizer report: every wait and its connection reference freed
    once)."""
    nodes = 1
    shards = 2
    server_args = ("--drain-timeout", "0")

    async def test_stop_while_hellos_wait_for_their_channel(self):
        n0, stalled = self.node(0), self.cluster.redis[1]
        # several names: the ones the directory keeps on the other shard are
        # granted and then wait for their channel on the stalled one
        clients = [await self.json_client(0) for _ in range(8)]
        stalled.pause()
        try:
            for c in clients:
                await c.send({"type": "hello", "user": uniq("sd")})
            for c in clients:
                await c.expect_none(lambda f: f.get("type") == "welcome", window=QUIET / 4,
                                    what="a welcome while a shard is stalled")
            rc = n0.stop()
        finally:
            stalled.resume()
        log = n0.log_text()
        self.assertEqual(rc, 0, log)
        self.assertNotIn("Sanitizer", log)


class TrimmedGap(ClusterCase):
    """A node cut off from Redis while more than --history-max messages
    were sent elsewhere cannot get them back (the log was trimmed): it must
    go on from what the log has, not stop delivering the room for good."""
    nodes = 2
    history_max = 1000  # the least parleyd takes

    async def test_room_goes_on_after_a_gap_past_history_max(self):
        n1, redis = self.node(1), self.cluster.redis[0]
        room = uniq("trim")
        a = await self.json_client(0, user=uniq("ta"), room=room)
        b = await self.json_client(1, user=uniq("tb"), room=room)
        first = await a.send_msg(room, "first")
        await b.expect(is_msg(room, seq=first["seq"]))
        # node 1 hangs; its Redis connections are cut meanwhile (so what was
        # published to it is gone), and twice history_max is sent on node 0
        n1.proc.send_signal(signal.SIGSTOP)
        try:
            away = self.history_max + 200
            for k0 in range(0, away, 100):  # 100 in flight at a time
                for k in range(k0, min(away, k0 + 100)):
                    await a.send({"type": "send", "room": room, "text": f"away{k}"})
                for k in range(k0, min(away, k0 + 100)):
                    await a.expect_type("ack")
            ports = redis_conns_of(n1.proc.pid, redis.port)
            # its command and pub/sub connections (and the accounts pool's)
            self.assertGreaterEqual(len(ports), 2, ports)
            for p in ports:
                redis.cmd("CLIENT", "KILL", "ADDR", f"127.0.0.1:{p}")
        finally:
            n1.proc.send_signal(signal.SIGCONT)
        await wait_health([n1], 200, b"ok", RECOVER_BOUND)
        after = await a.send_msg(room, "after")
        m = await b.expect(is_msg(room, seq=after["seq"]), timeout=RECOVER_BOUND,
                           what="the room's next message on the node that missed a trimmed gap")
        self.assertEqual(m["text"], "after")
        # what b saw meanwhile: what the log still had, in order, once
        seen = [f["seq"] for f in b.backlog if f.get("type") == "message"]
        self.assertEqual(seen, sorted(set(seen)))
        self.assertTrue(all(first["seq"] < s < after["seq"] for s in seen), seen)
        # a sender on that node is acked and seen on the other
        mine = await b.send_msg(room, "from b")
        self.assertEqual(mine["seq"], after["seq"] + 1)
        await a.expect(is_msg(room, seq=mine["seq"], text="from b"))
        h = await b.call({"type": "history", "room": room, "limit": 3}, "history")
        self.assertEqual([x["text"] for x in h["messages"]], [f"away{away - 1}", "after", "from b"])
        # the node counted what it could not deliver: every seq of the burst
        # was either delivered (some were already in its socket buffers when
        # it stopped; the log still had the rest) or counted lost
        lost = node_metric(n1, "parley_engine_lost_total")
        self.assertGreater(lost, 0)
        self.assertEqual(lost + len(seen), away, f"lost {lost}, seen {len(seen)}")


# ------------------------------------------------------------------ start-up

class StartUp(unittest.TestCase):
    """A node refuses to start, with a clear message and a non-zero exit,
    when a Redis server is unreachable; --engine local is the default."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="parley-it-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def run_node(self, engine, *extra):
        args = ["--listen", f"127.0.0.1:{free_port()}", "--db", os.path.join(self.tmp, "p.db"),
                "--engine", engine, "--node-id", "lonely"] + list(extra)
        try:
            return harness.run_parleyd(args, timeout=15 * SCALE)
        except subprocess.TimeoutExpired:
            self.fail(f"parleyd {' '.join(args)} did not exit (it should refuse to start)")

    def assert_refused(self, r, port):
        out = r.stdout + r.stderr
        self.assertNotEqual(r.returncode, 0, out)
        self.assertIn(f"127.0.0.1:{port}", out, "the message names the unreachable server")
        self.assertRegex(out.lower(), r"redis|engine")
        self.assertLessEqual(len(out.splitlines()), 20, "a clear message, not a flood")

    def test_unreachable_redis(self):
        port = free_port()  # nothing listens there
        self.assert_refused(self.run_node(f"redis://127.0.0.1:{port}"), port)

    def test_one_unreachable_shard_of_two(self):
        r = RedisServer()
        self.addCleanup(r.cleanup)
        r.start()
        port = free_port()
        self.assert_refused(self.run_node(f"{r.url},redis://127.0.0.1:{port}"), port)

    def test_wrong_redis_password(self):
        r = RedisServer(password="right-" + os.urandom(6).hex())
        self.addCleanup(r.cleanup)
        r.start()
        pw = os.path.join(self.tmp, "pw")
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("wrong\n")
        res = self.run_node(r.url, "--redis-password-file", pw)
        self.assertNotEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertIn(f"127.0.0.1:{r.port}", res.stdout + res.stderr)

    def test_engine_local_is_accepted(self):
        s = Server(args=["--engine", "local"])
        self.addCleanup(s.cleanup)
        s.start()
        self.assertEqual(healthz(s), (200, b"ok\n"))
        self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    harness.main()
