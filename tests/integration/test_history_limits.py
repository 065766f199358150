"""History reads that storage answers are bounded like everything else.

A join or `history` whose range is older than a room's in-memory window is
read from SQLite; the reply waits in the client's queue as a placeholder
until the read is answered. These tests check the three bounds on that
path (proto/PROTOCOL.md, "History reads"):

- the reply counts against --client-queue-bytes when it arrives, so a
  client that asks for history and never reads is cut with 4008 like any
  slow consumer instead of holding megabytes per request;
- a connection has at most 4 history reads waiting for storage; more are
  refused with `rate_limited` (and `retry_after_ms`), a join before it
  changes anything;
- the storage reader serves users in turn, so one user's flood of reads
  does not delay another user's read by more than a few reads.

The room is filled with 2000 messages of ~3900 characters, so every read
below the 256-message window is a reply of ~800 KB.
"""

import asyncio
import json
import os
import subprocess
import time

import websockets

import harness
from harness import SCALE, T, JClient, ServerCase, uniq

HISTORY_WINDOW = 256
READS_PER_CONN = 4          # server/broker.c HISTORY_READS_PER_CONN
QUEUE_BYTES = 4 << 20       # --client-queue-bytes (the default, stated here)
MESSAGES = 2000
TEXT = 3900
# Allocator arenas and SQLite's page cache: what RSS may grow besides the
# bounded queue and reads. Under AddressSanitizer freed memory stays
# resident in its quarantine (up to 256 MiB) for a while, so the replies
# and requests the flood went through count too: allow 96 MiB more (the
# unbounded server grows by ~800 MiB).
RSS_SLACK = (32 << 20) + ((96 << 20) if os.environ.get("ASAN_OPTIONS") else 0)


async def populate(server, room, n=MESSAGES, size=TEXT, window=64, client=None):
    """Send n messages of size characters to room (acks awaited in windows
    of `window`) from client (signed in and joined to room), or from a new
    open-mode client that leaves afterwards; returns the last seq."""
    c = client or await JClient.connect(server, user=uniq("filler"), room=room)
    try:
        last = 0
        for start in range(0, n, window):
            batch = range(start, min(n, start + window))
            for i in batch:
                await c.send({"type": "send", "room": room, "ref": f"p{i}",
                              "text": f"{i:05d} " + "m" * (size - 6)})
            acks = 0
            deadline = time.monotonic() + 30 * SCALE
            while acks < len(batch):
                f = await c.recv(max(deadline - time.monotonic(), 0.01))
                if f["type"] == "ack":
                    acks += 1
                    last = max(last, f["seq"])
                elif f["type"] == "error":
                    raise AssertionError(f"populating {room}: {f}")
        return last
    finally:
        if client is None:
            await c.close()


def masked_text(text):
    """One masked WebSocket text frame (client to server), to write several
    requests in one TCP write."""
    data = text.encode()
    mask = os.urandom(4)
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                            bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def deep_before(i, top):
    """A `before` whose 200 messages all lie below the window (top = the
    room's last seq), varying with i."""
    hi = top - HISTORY_WINDOW - 1
    return hi - (i * 97) % (hi - 400)


class HistoryFlood(ServerCase):
    """One connection sends many deep `history` requests and never reads."""

    server_args = ("--client-queue-bytes", str(QUEUE_BYTES), "--client-queue-max", "1024")
    FLOOD = 1000
    deep = None

    async def deep_room(self):
        """The class's room of MESSAGES long messages (filled once)."""
        if HistoryFlood.deep is None:
            room = uniq("deep")
            self.assertEqual(await populate(self.server, room), MESSAGES)
            HistoryFlood.deep = room
        return HistoryFlood.deep, MESSAGES

    async def test_flood_of_deep_history_reads_is_bounded(self):
        srv = self.server
        room, top = await self.deep_room()

        # a well-behaved reader: also warms SQLite and the allocator up, and
        # tells the size of one reply
        other = await self.json_client(user=uniq("other"))
        h = await other.call({"type": "history", "room": room, "before": deep_before(0, top),
                              "limit": 200}, "history", timeout=10 * SCALE)
        self.assertEqual(len(h["messages"]), 200)
        reply = len(json.dumps(h))
        self.assertGreater(reply, 200 * TEXT)
        # The bound: the queue's bytes, plus what each read in flight holds
        # before its reply is charged (its rows, and the reply being
        # encoded: 3 replies' worth is generous), plus slack. Without the
        # bounds, each of the FLOOD requests holds a whole reply (~800 MB).
        bound = QUEUE_BYTES + READS_PER_CONN * 3 * reply + RSS_SLACK

        m0 = srv.metrics()
        req0 = m0["parley_requests_total"][""]
        base = harness.rss_kb(srv.proc.pid) * 1024

        flood = await JClient.connect(srv, user=uniq("flood"),
                                      sock=harness.small_rcvbuf_socket(srv.port))
        self.addAsyncCleanup(flood.close)
        flood.ws.transport.pause_reading()
        for i in range(self.FLOOD):
            await flood.send({"type": "history", "room": room, "ref": f"f{i}",
                              "before": deep_before(i, top), "limit": 200})

        # RSS stays under the bound while the server takes every request in
        # and answers the reads it accepted
        peak = base
        deadline = time.monotonic() + 30 * SCALE
        while True:
            peak = max(peak, harness.rss_kb(srv.proc.pid) * 1024)
            if peak - base > bound:
                self.fail(f"parleyd RSS grew by {(peak - base) >> 20} MiB, bound "
                          f"{bound >> 20} MiB (queue {QUEUE_BYTES >> 20} MiB, reply "
                          f"{reply >> 10} KiB)")
            m = srv.metrics()
            inflight = m.get("parley_history_reads_in_flight", {}).get("")
            # settled: every request taken in, or the connection cut as a
            # slow consumer (the requests it had not read yet are dropped
            # with it; which comes first depends on the machine's speed)
            cut_now = (m["parley_slow_consumer_disconnects_total"][""] >
                       m0["parley_slow_consumer_disconnects_total"][""])
            if (m["parley_requests_total"][""] >= req0 + self.FLOOD or cut_now) and inflight == 0:
                break
            if time.monotonic() > deadline:
                self.fail(f"the flood was not settled in time (RSS +{(peak - base) >> 20} MiB, "
                          f"reads in flight {inflight})")
            await asyncio.sleep(0.02)
        peak = max(peak, harness.rss_kb(srv.proc.pid) * 1024)
        self.assertLess(peak - base, bound)

        # the connection was refused (rate_limited, with a retry hint) or cut
        # as a slow consumer; never given all it asked for
        m1 = srv.metrics()
        refused = (m1["parley_history_reads_refused_total"][""] -
                   m0["parley_history_reads_refused_total"][""])
        cut = (m1["parley_slow_consumer_disconnects_total"][""] -
               m0["parley_slow_consumer_disconnects_total"][""])
        self.assertTrue(refused > 0 or cut > 0, (refused, cut))
        self.assertLessEqual(m1["parley_history_reads_total"][""] -
                             m0["parley_history_reads_total"][""], self.FLOOD - refused)
        flood.ws.transport.resume_reading()
        histories = limited = 0
        code = None
        deadline = time.monotonic() + 30 * SCALE
        while histories + limited < self.FLOOD:
            try:
                f = await flood.recv(max(deadline - time.monotonic(), 0.01))
            except websockets.ConnectionClosed:
                code = flood.close_code
                break
            if f["type"] == "history":
                histories += 1
            else:
                self.assertEqual((f["type"], f.get("code")), ("error", "rate_limited"))
                self.assertGreater(f["retry_after_ms"], 0)
                limited += 1
        if code is None and histories + limited < self.FLOOD:
            code = await flood.wait_closed(T)
        if cut:
            # 4008, unless the close frame could not get through: the
            # server closes a slow consumer's socket after a bounded wait
            # whether or not the client read its close frame (1006 then)
            self.assertIn(code, (4008, 1006))
        else:
            self.assertEqual(histories + limited, self.FLOOD)
            self.assertGreater(limited, 0)
            self.assertEqual(limited, refused)

        # everyone else is still served
        h = await other.call({"type": "history", "room": room, "before": deep_before(5, top),
                              "limit": 200}, "history", timeout=T)
        self.assertEqual(len(h["messages"]), 200)
        await flood.close()
        # what the flood had queued was uncharged to the byte: nothing is
        # left in the queue gauge once it is gone and the others are idle
        await harness.async_wait_for(
            lambda: srv.metric("parley_queue_bytes") == 0 and
            srv.metric("parley_history_reads_in_flight") == 0, 10 * SCALE,
            what="parley_queue_bytes and parley_history_reads_in_flight back to 0")

    async def test_reads_over_the_bound_are_refused_and_a_join_changes_nothing(self):
        srv = self.server
        room, top = await self.deep_room()
        # a second room whose window is gone (its only member left): a join
        # needs a storage read
        idle = uniq("idle")
        await populate(srv, idle, n=20, size=20)

        c = await self.json_client(user=uniq("pager"))
        watcher = await self.json_client(user=uniq("watch"))
        # asked on c's own connection (its home loop), so the filler's leave
        # and this lookup's release are done before c's next request
        async def filler_gone():
            return not (await c.call({"type": "who", "room": idle}, "members"))["users"]

        await harness.async_wait_for(filler_gone, T, what="the filler gone")
        # five deep reads at once, and a join that needs a read too, in one
        # write so the server takes all six in before any read is answered:
        # four are read, the fifth and the join are refused
        refs = [f"h{i}" for i in range(READS_PER_CONN + 1)]
        reqs = [{"type": "history", "room": room, "ref": ref, "limit": 200,
                 "before": top - HISTORY_WINDOW - i} for i, ref in enumerate(refs)]
        reqs.append({"type": "join", "room": idle, "ref": "j1"})
        c.ws.transport.write(b"".join(masked_text(json.dumps(r)) for r in reqs))
        got = {}
        for _ in range(len(reqs)):
            f = await c.recv(10 * SCALE)
            got[f["ref"]] = f
        summary = {r: (f["type"], f.get("code")) for r, f in got.items()}
        self.assertEqual(sorted(got), sorted(refs + ["j1"]))
        kinds = [got[r]["type"] for r in refs]
        self.assertEqual(kinds.count("history"), READS_PER_CONN, summary)
        refused = [got[r] for r in refs if got[r]["type"] == "error"]
        self.assertEqual(len(refused), 1, summary)
        self.assertEqual(refused[0]["code"], "rate_limited")
        self.assertGreater(refused[0]["retry_after_ms"], 0)
        self.assertEqual(summary["j1"], ("error", "rate_limited"))
        self.assertGreater(got["j1"]["retry_after_ms"], 0)
        w = await watcher.call({"type": "who", "room": idle}, "members")
        self.assertNotIn(c.user, w["users"], "a refused join must not add the member")
        # as a client should: again after retry_after_ms, until a slot is free
        for _ in range(50):
            j = await c.call({"type": "join", "room": idle}, timeout=10 * SCALE)
            if j["type"] != "error":
                break
            self.assertEqual(j["code"], "rate_limited", j["message"])
            await asyncio.sleep(j["retry_after_ms"] / 1000)
        self.assertEqual(j["type"], "joined", j.get("message"))
        self.assertEqual([m["seq"] for m in j["history"]], list(range(1, 21)))
        w = await watcher.call({"type": "who", "room": idle}, "members")
        self.assertIn(c.user, w["users"])


class FairReads(ServerCase):
    """One user floods deep reads from several connections while another
    user's read must still be answered promptly."""

    server_args = ("--auth", "accounts")
    CONNS = 3
    OUTSTANDING = 500   # requests each flooding connection keeps unanswered
    LATENCY = 1.5 * SCALE

    def token(self, user):
        p = subprocess.run(
            [harness.PARLEYD, "token", "--user", user, "--ttl", "1h", "--db", self.server.db],
            capture_output=True, text=True, timeout=30 * SCALE)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout.strip()

    async def signed_in(self, user):
        c = await JClient.connect(self.server, hello=False)
        self.addAsyncCleanup(c.close)
        c.welcome = await c.call({"type": "hello", "token": self.token(user)}, "welcome")
        c.user = user
        return c

    async def test_one_users_flood_does_not_starve_another(self):
        srv = self.server
        room = uniq("fair")
        c = await self.signed_in(uniq("filler"))
        await c.call({"type": "join", "room": room}, "joined")
        top = await populate(srv, room, client=c)
        self.assertEqual(top, MESSAGES)

        attacker = uniq("greedy")
        floods = [await self.signed_in(attacker) for _ in range(self.CONNS)]
        victim = await self.signed_in(uniq("victim"))
        stop = asyncio.Event()
        answered = [0]

        async def flood(fc, k):
            """Keep OUTSTANDING deep reads asked; read every answer."""
            i = 0
            for _ in range(self.OUTSTANDING):
                await fc.send({"type": "history", "room": room, "limit": 200,
                               "before": deep_before(k * 1000 + i, top)})
                i += 1
            while not stop.is_set():
                try:
                    f = await asyncio.wait_for(fc.ws.recv(), 0.5)
                except asyncio.TimeoutError:
                    continue
                except Exception:
                    return
                answered[0] += 1
                if not stop.is_set():
                    await fc.send({"type": "history", "room": room, "limit": 200,
                                   "before": deep_before(k * 1000 + i, top)})
                    i += 1

        tasks = [asyncio.ensure_future(flood(fc, k)) for k, fc in enumerate(floods)]
        try:
            await harness.async_wait_for(lambda: answered[0] >= 20, 30 * SCALE,
                                         what="the flood under way")
            worst = 0.0
            for i in range(5):
                t0 = time.monotonic()
                h = await victim.call({"type": "history", "room": room, "limit": 50,
                                       "before": deep_before(500 + i, top)}, "history",
                                      timeout=30 * SCALE)
                worst = max(worst, time.monotonic() - t0)
                self.assertEqual(len(h["messages"]), 50)
            self.assertLess(worst, self.LATENCY,
                            f"the victim's read waited {worst:.2f} s behind the flood")
        finally:
            stop.set()
            for fc in floods:
                fc.ws.transport.abort()
            await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    harness.main()
