"""Connection churn: thousands of short-lived connections (clean closes,
TCP resets, half-done handshakes, text mode) while two users chat in the
same room. Afterwards nothing is left behind: no ghost members, no queued
bytes, no connections counted that are gone, and the server's memory is
flat from one identical round to the next.
"""

import asyncio
import json
import os
import socket
import struct
import time

import websockets

import harness
from harness import SCALE, T, ServerCase, uniq

# Each round is bounded by a count and by a time limit (whichever comes
# first); a round that hits the time limit is reported, and the second
# round then does the same number of cycles as the first.
CYCLES = int(os.environ.get("PARLEY_CHURN_CYCLES", "4000"))
ROUND_SECONDS = 30 * SCALE
WORKERS = 16
# RSS may grow this much from the end of the warm-up round to the end of
# the second round (allocator slack, SQLite page cache); a leak of a few
# KiB per connection goes well past it.
RSS_SLACK_KB = 8 * 1024


def reset_socket(port):
    """A connected TCP socket that is reset (RST), not closed, when closed:
    SO_LINGER on with a zero timeout."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.settimeout(T)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


class Churn(ServerCase):

    # the pair reads thousands of presence events a round (each one checked
    # against the schema): a deep queue keeps them from being dropped as
    # slow consumers while the test's own event loop is busy churning
    server_args = ("--client-queue-max", "100000")

    async def connect(self, query, sock=None, subprotocols=None):
        return await websockets.connect(self.server.ws_url(query), sock=sock, open_timeout=T,
                                        close_timeout=T, ping_interval=None,
                                        subprotocols=subprotocols, max_queue=None)

    async def expect_types(self, ws, *types):
        """Read frames until each of types has come, in order (presence and
        messages of the room may come in between)."""
        for typ in types:
            deadline = time.monotonic() + T
            while True:
                # plain json.loads: validating every joined (50 messages of
                # history) of thousands of cycles would starve the event
                # loop; the chatting pair's frames are all validated
                f = json.loads(await asyncio.wait_for(
                    ws.recv(), max(deadline - time.monotonic(), 0.01)))
                if f["type"] == typ:
                    break
                if f["type"] not in ("presence", "message"):
                    raise AssertionError(f"expected {typ}, got {f}")

    async def cycle(self, kind, user):
        """One open ... close of a connection of the given kind."""
        port = self.server.port
        room = self.room
        if kind == 0:       # join, clean close
            ws = await self.connect(f"user={user}&room={room}")
            await self.expect_types(ws, "welcome", "joined")
            await ws.close()
        elif kind == 1:     # join, then a TCP reset
            ws = await self.connect(f"user={user}&room={room}", sock=reset_socket(port))
            await self.expect_types(ws, "welcome", "joined")
            ws.transport.abort()
        elif kind == 2:     # join, send, reset before the ack can be read
            ws = await self.connect(f"user={user}&room={room}", sock=reset_socket(port))
            await self.expect_types(ws, "welcome", "joined")
            await ws.send('{"type":"send","room":"%s","text":"bye from %s"}' % (room, user))
            ws.transport.abort()
        elif kind == 3:     # half an HTTP upgrade, then a reset
            s = reset_socket(port)
            s.setblocking(True)
            s.sendall(b"GET /ws?user=%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      % user.encode())
            s.close()
        elif kind == 4:     # signed in, not joined, reset
            ws = await self.connect(f"user={user}", sock=reset_socket(port))
            await self.expect_types(ws, "welcome")
            ws.transport.abort()
        elif kind == 5:     # join, send, clean close right away (no waiting)
            ws = await self.connect(f"user={user}&room={room}")
            await self.expect_types(ws, "welcome", "joined")
            await ws.send('{"type":"send","room":"%s","text":"hi from %s"}' % (room, user))
            await ws.close()
        elif kind == 6:     # text mode, join, clean close
            ws = await self.connect(f"format=text&user={user}&room={room}")
            await asyncio.wait_for(ws.recv(), T)  # the welcome line
            await ws.close()
        elif kind == 7:     # the upgrade done, nothing else, reset
            ws = await self.connect("", sock=reset_socket(port))
            ws.transport.abort()

    KINDS = 8

    async def churn_round(self, rnd, cycles):
        """Run cycles connection cycles on WORKERS workers; the number done."""
        deadline = time.monotonic() + ROUND_SECONDS
        done = [0]
        errors = []

        async def worker(w):
            i = w
            while i < cycles and time.monotonic() < deadline:
                # the same names every round: a name still held after the
                # settle phase would show as name_taken in the next round
                try:
                    await self.cycle(i % self.KINDS, f"ch{w}_{i}")
                except Exception as e:  # noqa: BLE001 - collected and reported
                    errors.append(f"cycle {i} kind {i % self.KINDS}: {e!r}")
                done[0] += 1
                i += WORKERS

        await asyncio.gather(*(worker(w) for w in range(WORKERS)))
        self.assertEqual(errors[:5], [], f"round {rnd}: {len(errors)} cycles failed")
        return done[0]

    async def settle(self, what):
        """Wait until only the two chatting users are left, everywhere.
        (Asked by carol, who is not in the room: bob's reader is busy.)"""
        live = sorted([self.alice.user, self.bob.user])

        async def members():
            w = await self.carol.call({"type": "who", "room": self.room}, "members")
            return sorted(w["users"]) == live
        try:
            await harness.async_wait_for(members, 15 * SCALE, 0.1, f"who == {live} ({what})")
        except AssertionError:
            w = await self.carol.call({"type": "who", "room": self.room}, "members")
            raise AssertionError(f"ghosts after {what}: {sorted(set(w['users']) - set(live))[:10]}"
                                 f" ({len(w['users'])} members)") from None
        r = await self.carol.call({"type": "rooms"}, "rooms")
        self.assertEqual([x["members"] for x in r["rooms"] if x["name"] == self.room], [2])
        self.carol.clear()
        await harness.async_wait_for(lambda: self.server.metric("parley_connections") == 3,
                                     10 * SCALE, 0.1, f"parley_connections == 3 ({what})")
        await harness.async_wait_for(lambda: self.server.metric("parley_queue_bytes") == 0,
                                     10 * SCALE, 0.1, f"parley_queue_bytes == 0 ({what})")

    async def reader(self, c, on_frame, done):
        """Read everything c receives until done() (never cancelled while a
        frame is half read: a timeout ends each wait)."""
        quiet_since = time.monotonic()
        while not done():
            try:
                f = await c.recv(0.5)
            except AssertionError:  # nothing for half a second
                if time.monotonic() - quiet_since > 30 * SCALE:
                    raise AssertionError(f"{c.user} heard nothing for 30 s") from None
                continue
            quiet_since = time.monotonic()
            on_frame(f)

    async def test_churn(self):
        self.room = uniq("churn")
        self.alice = await self.json_client(user=uniq("alice"), room=self.room)
        self.bob = await self.json_client(user=uniq("bob"), room=self.room)
        self.carol = await self.json_client(user=uniq("carol"))
        first_seq = self.bob.joined[self.room]["seq"]
        stop = asyncio.Event()
        sent = []        # ids alice sent
        acked = {}       # id -> seq
        heard = []       # seqs bob received, in order

        async def talk():
            # alice sends all the time without waiting for acks (her reader
            # collects them): she reads every presence event of the churn
            # too, and waiting would leave her a few messages a round
            i = 0
            while not stop.is_set():
                mid = f"t{i}"
                await self.alice.send({"type": "send", "room": self.room, "text": f"talk {i}",
                                       "id": mid})
                sent.append(mid)
                i += 1
                await asyncio.sleep(0.003)

        def on_alice(f):
            if f["type"] == "ack":
                acked[f["id"]] = f["seq"]
            elif f["type"] not in ("presence", "message"):
                raise AssertionError(f"alice got {f}")

        def on_bob(f):
            if f["type"] == "message" and f["room"] == self.room:
                heard.append(f["seq"])
            elif f["type"] != "presence":
                raise AssertionError(f"bob got {f}")

        def all_acked():
            return stop.is_set() and len(acked) == len(sent)

        def all_heard():
            return all_acked() and heard and heard[-1] >= max(acked.values())

        tasks = [asyncio.ensure_future(talk()),
                 asyncio.ensure_future(self.reader(self.alice, on_alice, all_acked)),
                 asyncio.ensure_future(self.reader(self.bob, on_bob, all_heard))]
        pid = self.server.proc.pid
        rss = []
        counts = []
        try:
            for rnd in range(2):
                t0 = time.monotonic()
                n = await self.churn_round(rnd, counts[0] if counts else CYCLES)
                counts.append(n)
                print(f"churn round {rnd}: {n} cycles in {time.monotonic() - t0:.1f} s, "
                      f"{len(sent)} messages sent so far", flush=True)
                for t in tasks:
                    if t.done():
                        t.result()  # raises what went wrong
                        self.fail("talking or listening ended early")
                await self.settle(f"round {rnd}")
                rss.append(harness.rss_kb(pid))
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30 * SCALE)
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.assertGreaterEqual(sum(counts), min(2 * CYCLES, 1000),
                                f"too few cycles in the time limit: {counts}")

        # every message of the room reached bob, in order, none twice; each
        # of alice's was acked once, with its own seq
        self.assertGreater(len(sent), 100, "alice hardly talked")
        self.assertEqual(heard, list(range(first_seq + 1, first_seq + 1 + len(heard))),
                         "bob's messages are not gapless and in order")
        self.assertEqual(len(set(acked.values())), len(sent))
        self.assertLessEqual(set(acked.values()), set(heard))
        # the room still works for a newcomer, who sees only the living
        c = await self.json_client(user=uniq("late"), room=self.room)
        self.assertEqual(sorted(c.joined[self.room]["members"]),
                         sorted([self.alice.user, self.bob.user, c.user]))
        self.alice.clear()
        ack = await self.alice.send_msg(self.room, "after the churn")
        await c.expect(lambda f: f["type"] == "message" and f["seq"] == ack["seq"])

        print(f"churn RSS: {rss[0]} KiB after the warm-up round, {rss[1]} KiB after the "
              f"second ({rss[1] - rss[0]:+d} KiB)", flush=True)
        if harness.sanitized():
            return  # RSS means little under sanitizers (quarantine, shadow memory)
        self.assertLess(rss[1] - rss[0], RSS_SLACK_KB,
                        f"RSS grew from {rss[0]} to {rss[1]} KiB over {counts[1]} cycles")


if __name__ == "__main__":
    harness.main()
