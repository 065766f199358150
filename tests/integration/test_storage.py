"""Storage: history across restarts, recovery with join {since}, paging
beyond the in-memory window, idempotency after a restart, no acked
message lost when the server is killed with SIGKILL, and data files that
only their owner can read."""

import asyncio
import json
import os
import signal
import stat
import tempfile
import time
import unittest

import websockets

import harness
from harness import SCALE, T, JClient, Server, uniq


class StorageCase(harness.ServerCase):
    """A fresh server (and database) for every test: the tests restart it."""

    @classmethod
    def setUpClass(cls):
        unittest.IsolatedAsyncioTestCase.setUpClass()

    @classmethod
    def tearDownClass(cls):
        unittest.IsolatedAsyncioTestCase.tearDownClass()

    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.server = Server(args=self.server_args)
        self.addCleanup(self.server.cleanup)
        self.server.start()

    async def asyncTearDown(self):
        self.server.finish()

    async def restart(self, *clients):
        for c in clients:
            await c.close()
        self.server.restart()

    async def connect(self, user, room=None):
        """Sign in (the name may still be held by a connection the server has
        not yet seen go: retry, bounded) and join room if given."""
        c = await JClient.connect(self.server)
        self.addAsyncCleanup(c.close)
        deadline = time.monotonic() + T
        while True:
            r = await c.call({"type": "hello", "user": user})
            if r["type"] == "welcome":
                break
            self.assertEqual(r.get("code"), "name_taken", r)
            self.assertLess(time.monotonic(), deadline, "name never freed")
            await asyncio.sleep(0.02)
        c.user = user
        if room:
            c.joined[room] = await c.call({"type": "join", "room": room}, "joined")
        return c

    async def send_many(self, c, room, n, prefix, window=200):
        """Pipelined sends with ids prefix0..; returns {id: seq} from the acks."""
        acks = {}
        sem = asyncio.Semaphore(window)

        async def reader():
            while len(acks) < n:
                f = await c.recv(30 * SCALE)
                if f["type"] == "ack":
                    acks[f["id"]] = f["seq"]
                    sem.release()
                elif f["type"] == "error":
                    raise AssertionError(f"send failed: {f}")

        r = asyncio.ensure_future(reader())
        try:
            for i in range(n):
                await sem.acquire()
                await c.send({"type": "send", "room": room, "id": f"{prefix}{i}",
                              "text": f"{prefix} text {i}"})
            await asyncio.wait_for(asyncio.shield(r), 60 * SCALE)
        finally:
            r.cancel()
        c.clear()
        return acks

    async def all_history(self, c, room, page=200):
        """Every message of room, paging backwards with before/limit."""
        out, before = [], None
        for _ in range(10000):
            req = {"type": "history", "room": room, "limit": page}
            if before is not None:
                req["before"] = before
            h = await c.call(req, "history", timeout=15 * SCALE)
            out = h["messages"] + out
            if not h["more"]:
                return out
            self.assertTrue(h["messages"], "more is true but the page is empty")
            before = h["messages"][0]["seq"]
        raise AssertionError("history paging does not end")


class Restart(StorageCase):

    async def test_history_survives_restart(self):
        room = uniq("keep")
        a = await self.connect("alice", room)
        sent = []
        for i in range(5):
            ack = await a.send_msg(room, f"persist {i} \u00e9\U0001F600", id=f"p{i}")
            m = await a.expect(lambda f: f["type"] == "message" and f["seq"] == ack["seq"])
            sent.append(m)
        await self.restart(a)
        b = await self.connect("bob", room)
        j = b.joined[room]
        self.assertEqual(j["seq"], 5)
        self.assertEqual(j["history"], sent)  # same seq, from, text, ts, id
        h = await b.call({"type": "history", "room": room}, "history")
        self.assertEqual((h["messages"], h["more"]), (sent, False))
        # numbering continues after the restart
        ack = await b.send_msg(room, "after restart")
        self.assertEqual(ack["seq"], 6)
        r = await b.call({"type": "rooms"}, "rooms")
        self.assertEqual([x["seq"] for x in r["rooms"] if x["name"] == room], [6])

    async def test_dm_survives_restart(self):
        a = await self.connect("amy")
        b = await self.connect("ben")
        ack = await a.call({"type": "dm", "to": "ben", "text": "remember me"}, "ack")
        self.assertEqual(ack["room"], "dm:amy:ben")
        await self.restart(a, b)
        a = await self.connect("amy")
        # open mode: a DM goes to someone online now (section 9.4)
        e = await a.call({"type": "dm", "to": "ben", "text": "x"})
        self.assertEqual((e["type"], e.get("code")), ("error", "no_such_user"), e)
        b = await self.connect("ben")
        # the conversation's numbering continues after the restart
        ack2 = await a.call({"type": "dm", "to": "ben", "text": "again"}, "ack")
        self.assertEqual((ack2["room"], ack2["seq"]), ("dm:amy:ben", 2))
        # open mode never serves DM history back, stored or not
        e = await a.call({"type": "history", "room": "dm:amy:ben"})
        self.assertEqual((e["type"], e.get("code")), ("error", "forbidden"), e)
        e = await a.call({"type": "dm", "to": "nobody_ever", "text": "x"})
        self.assertEqual(e["code"], "no_such_user")
        c = await self.connect("cat")
        e = await c.call({"type": "history", "room": "dm:amy:ben"})
        self.assertEqual(e["code"], "forbidden")

    async def test_join_since_recovery(self):
        room = uniq("rec")
        a = await self.connect("ann", room)
        b = await self.connect("bea", room)
        for i in range(4):
            await a.send_msg(room, f"seen {i}")
        last = 0
        while last < 4:
            last = (await b.expect(lambda f: f["type"] == "message"))["seq"]
        await b.close()
        for i in range(6):
            await a.send_msg(room, f"missed {i}")
        b = await self.connect("bea")
        j = await b.call({"type": "join", "room": room, "since": last}, "joined")
        self.assertEqual(j["seq"], 10)
        self.assertEqual([(m["seq"], m["text"]) for m in j["history"]],
                         [(5 + i, f"missed {i}") for i in range(6)])
        # the same after a restart, when nothing is in memory
        await self.restart(a, b)
        b = await self.connect("bea")
        j = await b.call({"type": "join", "room": room, "since": 7}, "joined")
        self.assertEqual([m["seq"] for m in j["history"]], [8, 9, 10])
        await b.call({"type": "leave", "room": room}, "left")
        j = await b.call({"type": "join", "room": room, "since": 0, "limit": 3}, "joined")
        self.assertEqual([m["seq"] for m in j["history"]], [1, 2, 3])

    async def test_idempotent_resend_after_restart(self):
        room = uniq("idem")
        a = await self.connect("ida", room)
        first = await a.send_msg(room, "only once", id="keep-1")
        await a.send_msg(room, "another", id="keep-2")
        await self.restart(a)
        a = await self.connect("ida", room)
        o = await self.connect("obs", room)
        again = await a.send_msg(room, "only once", id="keep-1")
        self.assertEqual((again["seq"], again["id"]), (first["seq"], "keep-1"))
        mark = await a.send_msg(room, "marker")
        self.assertEqual(mark["seq"], 3)
        for c in (a, o):
            await c.expect(lambda f: f["type"] == "message" and f["seq"] == 3)
            self.assertFalse([f for f in c.backlog if f["type"] == "message"
                              and f.get("id") == "keep-1"], "resend delivered again")
        h = await o.call({"type": "history", "room": room}, "history")
        self.assertEqual([m["text"] for m in h["messages"]], ["only once", "another", "marker"])


class Paging(StorageCase):

    async def test_paging_beyond_the_memory_window(self):
        room = uniq("page")
        n = 300  # the in-memory window is 256 per room
        a = await self.connect("pager", room)
        acks = await self.send_many(a, room, n, "pg")
        self.assertEqual(sorted(acks.values()), list(range(1, n + 1)))

        async def check(c):
            h = await c.call({"type": "history", "room": room, "limit": 100}, "history")
            self.assertEqual(([m["seq"] for m in h["messages"]], h["more"]),
                             (list(range(201, 301)), True))
            h = await c.call({"type": "history", "room": room, "before": 201, "limit": 100},
                             "history")
            self.assertEqual(([m["seq"] for m in h["messages"]], h["more"]),
                             (list(range(101, 201)), True))
            h = await c.call({"type": "history", "room": room, "before": 101, "limit": 100},
                             "history")
            self.assertEqual(([m["seq"] for m in h["messages"]], h["more"]),
                             (list(range(1, 101)), False))
            # pages across the boundary of the memory window (seq 45 and up)
            for before, limit in ((60, 30), (47, 5), (46, 1), (45, 2), (50, 49), (257, 256)):
                h = await c.call({"type": "history", "room": room, "before": before,
                                  "limit": limit}, "history")
                lo = max(1, before - min(limit, 200))
                self.assertEqual([m["seq"] for m in h["messages"]], list(range(lo, before)),
                                 (before, limit))
                self.assertEqual(h["more"], lo > 1, (before, limit))
            # limits are clamped at 200
            h = await c.call({"type": "history", "room": room, "limit": 5000}, "history")
            self.assertEqual([m["seq"] for m in h["messages"]], list(range(101, 301)))
            self.assertTrue(h["more"])
            # the content is intact, ids included
            msgs = await self.all_history(c, room)
            self.assertEqual([m["seq"] for m in msgs], list(range(1, n + 1)))
            for m in msgs:
                i = m["seq"] - 1
                self.assertEqual((m["text"], m["id"], m["from"]), (f"pg text {i}", f"pg{i}",
                                                                   "pager"))
            # join {since} from deep in the past
            await c.call({"type": "leave", "room": room}, "left")
            j = await c.call({"type": "join", "room": room, "since": 10, "limit": 200},
                             "joined")
            self.assertEqual([m["seq"] for m in j["history"]], list(range(11, 211)))
            await c.call({"type": "leave", "room": room}, "left")
            j = await c.call({"type": "join", "room": room, "since": 40}, "joined")
            self.assertEqual([m["seq"] for m in j["history"]], list(range(41, 91)))
            await c.call({"type": "leave", "room": room}, "left")
            j = await c.call({"type": "join", "room": room}, "joined")
            self.assertEqual([m["seq"] for m in j["history"]], list(range(251, 301)))

        b = await self.connect("reader", room)
        await check(b)
        # the same with an empty memory after a restart
        await self.restart(a, b)
        b = await self.connect("reader", room)
        await check(b)


class Crash(StorageCase):

    async def test_kill9_loses_no_acked_message(self):
        room = uniq("crash")
        a = await self.connect("crasher", room)
        acked = {}  # id -> seq
        sem = asyncio.Semaphore(300)
        max_count, duration = 20000, 2.0
        closed = asyncio.Event()

        async def reader():
            try:
                while True:
                    f = await a.recv(30 * SCALE)
                    if f["type"] == "ack":
                        acked[f["id"]] = f["seq"]
                        sem.release()
                    elif f["type"] == "error":
                        raise AssertionError(f"send failed: {f}")
            except websockets.ConnectionClosed:
                closed.set()

        r = asyncio.ensure_future(reader())
        sent = 0
        t_end = time.monotonic() + duration
        try:
            while time.monotonic() < t_end and sent < max_count:
                try:
                    await asyncio.wait_for(sem.acquire(), 10 * SCALE)
                except asyncio.TimeoutError:
                    self.fail("no ack for 10 s while sending")
                await a.send({"type": "send", "room": room, "id": f"c{sent}",
                              "text": f"crash text {sent}"})
                sent += 1
            # a last burst the server is still taking in when it dies: these
            # may or may not be stored, but never half or twice
            for _ in range(200):
                await a.send({"type": "send", "room": room, "id": f"c{sent}",
                              "text": f"crash text {sent}"})
                sent += 1
            syncs = self.server.metric("parley_storage_wal_syncs_total")
            self.server.kill()
            await asyncio.wait_for(closed.wait(), 10 * SCALE)
        finally:
            r.cancel()
        self.assertGreater(len(acked), 0)
        # acks waited for the sync thread's fdatasync only with --durability full
        if "full" in self.server_args:
            self.assertGreater(syncs, 0)
        else:
            self.assertEqual(syncs, 0)
        await a.close()

        self.server.start()
        b = await self.connect("checker", room)
        msgs = await self.all_history(b, room)
        seqs = [m["seq"] for m in msgs]
        self.assertEqual(seqs, list(range(1, len(msgs) + 1)), "history has gaps")
        by_seq = {m["seq"]: m for m in msgs}
        for id_, seq in acked.items():
            self.assertIn(seq, by_seq, f"acked message {id_} (seq {seq}) lost")
            m = by_seq[seq]
            self.assertEqual((m["id"], m["text"]), (id_, f"crash text {id_[1:]}"))
        ids = [m["id"] for m in msgs]
        self.assertEqual(len(ids), len(set(ids)), "a message was stored twice")
        for m in msgs:
            self.assertEqual(m["text"], f"crash text {m['id'][1:]}")
            self.assertLess(int(m["id"][1:]), sent)
        # acked ids were numbered in send order: so are their seqs
        order = sorted(acked.items(), key=lambda kv: int(kv[0][1:]))
        self.assertEqual([s for _, s in order], sorted(acked.values()))
        ack = await b.send_msg(room, "life goes on")
        self.assertEqual(ack["seq"], len(msgs) + 1)
        print(f"\ncrash test: sent {sent}, acked {len(acked)}, stored {len(msgs)}",
              flush=True)


class CrashFull(Crash):
    """The same with --durability full, where acks wait for the sync
    thread's fdatasync instead of SQLite's in-commit fsync."""
    server_args = ("--durability", "full")


class DataFileModes(harness.AsyncCase):
    """Every file parleyd creates beside its database is 0600 (the umask of
    whoever starts it notwithstanding): the database and its -wal/-shm, the
    counter dump, the token secret and the mail spool all hold user names,
    messages or secrets."""

    def post(self, path, obj):
        st, _, raw = harness.http_get(self.server.port, path, method="POST",
                                      body=json.dumps(obj),
                                      headers={"Content-Type": "application/json"})
        return st, raw

    async def test_every_data_file_is_private(self):
        tmp = tempfile.mkdtemp(prefix="parley-it-")
        data = os.path.join(tmp, "data")
        os.mkdir(data)
        os.chmod(data, 0o755)  # a lax directory: the files must not rely on it
        self.server = Server(args=["--auth", "accounts", "--notify-coalesce", "0"],
                             tmpdir=tmp)
        self.server.db = os.path.join(data, "parley.db")
        self.addCleanup(self.server.cleanup)
        old = os.umask(0o022)  # the usual login umask, inherited by parleyd
        try:
            self.server.start()
        finally:
            os.umask(old)

        alice, bob = uniq("alice"), uniq("bob")
        for u in (alice, bob):
            st, raw = self.post("/api/register", {"user": u, "password": "correct horse 1",
                                                  "email": f"{u}@example.org"})
            self.assertEqual(st, 201, raw)
        st, raw = self.post("/api/login", {"user": alice, "password": "correct horse 1"})
        self.assertEqual(st, 200, raw)
        a = await JClient.connect(self.server, hello=False)
        self.addAsyncCleanup(a.close)
        await a.call({"type": "hello", "token": json.loads(raw)["token"]}, "welcome")
        await a.call({"type": "join", "room": "modes"}, "joined")
        await a.send_msg("modes", "a message on disk")
        await a.call({"type": "dm", "to": bob, "text": "bob is offline: mail"}, "ack")

        def size(name):
            try:
                return os.path.getsize(os.path.join(data, name))
            except FileNotFoundError:
                return 0

        self.server.proc.send_signal(signal.SIGUSR1)
        harness.wait_for(lambda: size("counters.jsonl") > 0, T, what="a counter dump")
        harness.wait_for(lambda: size("mail.mbox") > 0, 3 * T, what="bob's mail in the mbox")

        def check(expect):
            names = sorted(os.listdir(data))
            for n in expect:
                self.assertIn(n, names)
            for n in names:
                mode = stat.S_IMODE(os.lstat(os.path.join(data, n)).st_mode)
                self.assertEqual(mode, 0o600, f"{n} is {mode:o}, want 600 (all: {names})")
            return names

        # running: the WAL and its index exist
        names = check(["parley.db", "parley.db-wal", "parley.db-shm", "counters.jsonl",
                       "token.secret", "mail.mbox"])
        print(f"\ndata files while running, all 0600: {' '.join(names)}", flush=True)
        await a.close()
        self.assertEqual(self.server.stop(), 0, self.server.log_text())
        check(["parley.db", "counters.jsonl", "token.secret", "mail.mbox"])


if __name__ == "__main__":
    harness.main()
