"""Rooms a client cannot make the server flood or remember forever.

- join/leave floods: joins and leaves take tokens from their own per-user
  bucket (--join-rate/--join-burst), and presence is coalesced per (room,
  user), so a member reading normally is never cut off by someone else's
  flapping and ends up with the right presence.
- reclaim: rooms nobody is in go to a bounded idle list (--room-cache) and
  are reclaimed from it; the parleyd process's memory stays bounded while
  one user opens tens of thousands of rooms, and `rooms` and /metrics only
  look at rooms with members.
- a reclaimed room's seq is read back from storage before it is used
  again: seqs stay gapless across reclaim and restart, and requests sent
  while that read is in flight are carried out in order.
- --max-new-rooms caps the rooms one user may open.

Every load loop here is bounded by a count and a time limit.
"""

import asyncio
import json
import time

import websockets

import harness
from harness import SCALE, T, JClient, ServerCase, uniq


# The per-(room, user) presence budget (server/room.h): a burst of this
# many events, then one per second.
PRESENCE_BURST = 4


class Flooder:
    """A raw websockets connection that sends request frames as fast as it
    can and drains everything the server sends back, counting by type (a
    flooder that does not read would only get itself dropped as slow)."""

    def __init__(self, ws):
        self.ws = ws
        self.counts = {}
        self.errors = []
        self.close_code = None
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, server, user):
        ws = await websockets.connect(server.ws_url(f"user={user}"), open_timeout=T,
                                      close_timeout=T, ping_interval=None, max_queue=None)
        f = json.loads(await asyncio.wait_for(ws.recv(), T))
        assert f["type"] == "welcome", f
        return cls(ws)

    async def _read(self):
        try:
            async for raw in self.ws:
                f = json.loads(raw)
                self.counts[f["type"]] = self.counts.get(f["type"], 0) + 1
                if f["type"] == "error":
                    self.errors.append(f)
        except websockets.ConnectionClosed:
            pass
        self.close_code = self.ws.close_code

    async def send_all(self, frames, seconds):
        """Send frames (bounded by a time limit); returns how many went."""
        deadline = time.monotonic() + seconds
        n = 0
        try:
            for fr in frames:
                if time.monotonic() >= deadline:
                    break
                await self.ws.send(fr)
                n += 1
        except websockets.ConnectionClosed:
            pass
        return n

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), T)
        except Exception:
            pass
        self.reader.cancel()


class Member:
    """An ordinary member that reads all the time, keeping its own view of
    the room's members from joined and presence frames."""

    def __init__(self, client, room):
        self.c = client
        self.room = room
        self.view = set(client.joined[room]["members"])
        self.presence = {}  # user -> presence frames about them
        self.log = []  # (time, user, event) of every presence frame, for failures
        self.closed = None
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            while True:
                f = await self.c._next(3600)
                if f.get("type") == "presence" and f.get("room") == self.room:
                    u = f["user"]
                    self.presence[u] = self.presence.get(u, 0) + 1
                    self.log.append((round(time.monotonic(), 3), u, f["event"]))
                    if f["event"] == "join":
                        self.view.add(u)
                    else:
                        self.view.discard(u)
                else:
                    self.c.backlog.append(f)
        except websockets.ConnectionClosed:
            self.closed = self.c.ws.close_code
        except asyncio.CancelledError:
            pass

    async def stop(self):
        self.reader.cancel()
        try:
            await self.reader
        except asyncio.CancelledError:
            pass


def pairs(room, n, end_joined=False):
    frames = []
    for _ in range(n):
        frames.append(json.dumps({"type": "join", "room": room, "limit": 1}))
        frames.append(json.dumps({"type": "leave", "room": room}))
    if end_joined:
        frames.append(json.dumps({"type": "join", "room": room, "limit": 1}))
    return frames


class JoinFloodCoalesced(ServerCase):
    """Every join and leave is let through (the joins bucket out of reach):
    only presence coalescing stands between the flooder and the room."""

    server_args = ("--join-rate", "1000000", "--join-burst", "1000000")

    PAIRS = 10000

    async def flood(self, end_joined):
        room = uniq("flood")
        alice = await self.json_client(user=uniq("alice"), room=room)
        bob = await self.json_client(user=uniq("bob"), room=room)
        member = Member(alice, room)
        fl_user = uniq("flapper")
        fl = await Flooder.connect(self.server, fl_user)
        t0 = time.monotonic()
        sent = await fl.send_all(pairs(room, self.PAIRS, end_joined), 60 * SCALE)
        # every request answered (joined/left), in order after the last one
        want = sent // 2 + (sent % 2)
        # every request answered, the last leave included: only then is the
        # flapper's final state settled
        await harness.async_wait_for(
            lambda: fl.counts.get("joined", 0) + fl.counts.get("left", 0) >= sent or
            fl.close_code, 30 * SCALE, what="the flooder's joins and leaves answered")
        elapsed = time.monotonic() - t0
        self.assertIsNone(fl.close_code, "nothing here is refused: the flooder stays")
        self.assertEqual(fl.counts.get("joined", 0), want)
        # The final state reaches the member within the coalescing delay
        # (one presence interval plus a once-a-second tick) and stays: wait
        # (bounded) for the view to show it with no presence frame for a
        # quiet time in which the tick runs twice. The member may see the
        # final state for a moment before a change still owed comes.
        quiet = 2.5
        deadline = time.monotonic() + 10 * SCALE
        while True:
            await harness.async_wait_for(lambda: (fl_user in member.view) == end_joined,
                                         max(deadline - time.monotonic(), 0.1),
                                         what="the member's view of the flapper")
            got = member.presence.get(fl_user, 0)
            await asyncio.sleep(quiet)
            if member.presence.get(fl_user, 0) == got:
                break
            self.assertLess(time.monotonic(), deadline,
                            f"presence never settled (t0 {t0:.3f}): {member.log}")
        w = await bob.call({"type": "who", "room": room}, "members")
        self.assertEqual(fl_user in w["users"], end_joined)
        self.assertEqual(set(member.view), set(w["users"]), "the member's view is the room's")
        # bounded: a burst, at most one a second after it, and the final one
        bound = PRESENCE_BURST + int(elapsed) + 3
        print(f"\n{sent} joins and leaves in {elapsed:.1f} s: {got} presence frames "
              f"(bound {bound})", flush=True)
        self.assertLessEqual(got, bound,
                             f"{got} presence frames for {sent} joins and leaves in "
                             f"{elapsed:.1f} s (bound {bound})")
        self.assertIsNone(member.closed, "the member was cut off")
        await member.stop()
        # the member can still chat
        ack = await alice.send_msg(room, "still here")
        await bob.expect(lambda f: f.get("type") == "message" and f.get("seq") == ack["seq"])
        self.assertGreater(self.server.metric("parley_presence_deferred_total"), 0)
        await fl.close()
        return sent, got

    async def test_flapper_ends_absent(self):
        await self.flood(end_joined=False)

    async def test_flapper_ends_present(self):
        await self.flood(end_joined=True)


class JoinFloodRateLimited(ServerCase):
    """The joins bucket at a person's pace: the flooder is refused with
    rate_limited (and, going on, closed with 4029); the room hears little."""

    JOIN_RATE, JOIN_BURST = 5, 20
    server_args = ("--join-rate", str(JOIN_RATE), "--join-burst", str(JOIN_BURST),
                   "--abuse-strikes", "1000000")

    async def test_flood_is_refused(self):
        room = uniq("flood")
        alice = await self.json_client(user=uniq("alice"), room=room)
        member = Member(alice, room)
        fl_user = uniq("flapper")
        fl = await Flooder.connect(self.server, fl_user)
        t0 = time.monotonic()
        sent = await fl.send_all(pairs(room, 5000), 60 * SCALE)
        await harness.async_wait_for(
            lambda: fl.counts.get("joined", 0) + fl.counts.get("left", 0) +
            fl.counts.get("error", 0) >= sent, 30 * SCALE, what="every request answered")
        elapsed = time.monotonic() - t0
        accepted = fl.counts.get("joined", 0) + fl.counts.get("left", 0)
        self.assertLessEqual(accepted, self.JOIN_BURST + self.JOIN_RATE * (elapsed + 1))
        limited = [e for e in fl.errors if e["code"] == "rate_limited"]
        self.assertGreater(len(limited), sent // 2)
        self.assertIn("joins and leaves", limited[0]["message"])
        self.assertGreaterEqual(limited[0]["retry_after_ms"], 1)
        await fl.close()
        # the flapper is gone: the member learns it, and heard little
        await harness.async_wait_for(lambda: fl_user not in member.view, 5 * SCALE,
                                     what="the flapper's leave")
        self.assertLessEqual(member.presence.get(fl_user, 0), PRESENCE_BURST + int(elapsed) + 3)
        self.assertIsNone(member.closed)
        await member.stop()
        await alice.call({"type": "ping"}, "pong")


class JoinBucket(ServerCase):
    """Joins, leaves and a connection's room= all take from one bucket."""

    server_args = ("--join-rate", "0.01", "--join-burst", "3")

    async def test_joins_leaves_and_url_joins_count(self):
        c = await self.json_client(user=uniq("u"))
        rooms = [uniq("r") for _ in range(4)]
        for r in rooms[:3]:
            await c.call({"type": "join", "room": r}, "joined")
        f = await c.call({"type": "join", "room": rooms[3]})
        self.assertEqual(f.get("code"), "rate_limited", f)
        self.assertIn("joins and leaves", f["message"])
        f = await c.call({"type": "leave", "room": rooms[0]})
        self.assertEqual(f.get("code"), "rate_limited", f)
        # still a member: the refused leave was not carried out
        w = await c.call({"type": "who", "room": rooms[0]}, "members")
        self.assertIn(c.user, w["users"])
        # who, history and rooms answer only the asker: not counted
        for req in ({"type": "who", "room": rooms[1]}, {"type": "rooms"},
                    {"type": "history", "room": rooms[1]}):
            f = await c.call(req)
            self.assertNotEqual(f["type"], "error", f)

        user = uniq("v")
        v = await JClient.connect(self.server, query=f"user={user}&room={rooms[0]}")
        self.addAsyncCleanup(v.close)
        await v.expect_type("welcome")
        await v.expect_type("joined", room=rooms[0])
        await v.call({"type": "join", "room": rooms[1]}, "joined")
        await v.call({"type": "join", "room": rooms[2]}, "joined")
        f = await v.call({"type": "join", "room": rooms[3]})
        self.assertEqual(f.get("code"), "rate_limited", f)


    async def test_join_flood_is_closed_4029(self):
        """Going on over the joins bucket (--abuse-strikes, 50 by default,
        refusals in a row) closes the connection with 4029. One request at
        a time: frames still in flight when the server closes would make
        the kernel reset the connection before the close frame is read."""
        c = await self.json_client(user=uniq("flapper"))
        room = uniq("r")
        limited = 0
        try:
            for i in range(100):
                f = await c.call({"type": "join" if i % 2 == 0 else "leave", "room": room})
                if f["type"] == "error" and f["code"] == "rate_limited":
                    limited += 1
        except (websockets.ConnectionClosed, AssertionError):
            pass
        self.assertEqual(await c.wait_closed(), 4029)
        self.assertEqual(limited, 49, "strikes 1..49 answered, the 50th closed")


class RoomReclaim(ServerCase):
    """One user opens tens of thousands of rooms (join, then leave). The
    idle list holds at most --room-cache of them; the rest are reclaimed.
    --commit-window-us 0: each room not in memory is read from storage
    behind a barrier, which would otherwise wait for the commit window."""

    CACHE = 500
    # Rounds of this many rooms, each bounded by count and time (the whole
    # file must stay well within meson's 300 s); under sanitizers, where RSS
    # is not checked, one small round.
    ROUND = 5000
    ROUNDS = 1 if harness.sanitized() else 6
    ROUND_SECONDS = 30 * SCALE
    server_args = ("--room-cache", str(CACHE), "--commit-window-us", "0")
    # The bound: after the first (warm-up) round, some round grows RSS by at
    # most FLAT_KB, and all of them together by at most TOTAL_KB. The idle
    # list keeps memory flat; the allocator takes one step up of about
    # 4.5 MiB somewhere in the first 40,000 rooms on a busy machine (a new
    # malloc arena), and then stays flat (seen over 140,000 rooms). Keeping
    # a record of each joined room, as parleyd did before rooms were
    # reclaimed, grows it by about 460 bytes a room: 2.2 MiB every round.
    FLAT_KB = 1024
    TOTAL_KB = 8 * 1024

    async def open_rooms(self, c, prefix, n, seconds):
        """Join and leave n distinct rooms, pipelined in batches; returns
        how many were done within the time limit."""
        deadline = time.monotonic() + seconds
        done = 0
        batch = 200
        while done < n and time.monotonic() < deadline:
            k = min(batch, n - done)
            for i in range(done, done + k):
                await c.send({"type": "join", "room": f"{prefix}{i}", "limit": 1})
                await c.send({"type": "leave", "room": f"{prefix}{i}", "ref": f"l{i}"})
            last = f"l{done + k - 1}"
            f = await c.expect(lambda f: f.get("ref") == last, 30 * SCALE, what="the last leave")
            self.assertEqual(f["type"], "left", f)
            bad = [f for f in c.backlog if f["type"] not in ("joined", "left")]
            self.assertEqual(bad, [], "every join and leave was carried out")
            c.clear()
            done += k
        return done

    async def test_many_rooms_are_reclaimed_and_memory_is_bounded(self):
        pid = self.server.proc.pid
        c = await self.json_client(user=uniq("opener"))
        prefix = uniq("many") + "_"
        t0 = time.monotonic()
        n = await self.open_rooms(c, prefix + "w", self.ROUND, self.ROUND_SECONDS)
        self.assertEqual(n, self.ROUND, "the warm-up round did not finish in time")
        rss = [harness.rss_kb(pid)]
        for r in range(1, self.ROUNDS):
            k = await self.open_rooms(c, f"{prefix}{r}_", self.ROUND, self.ROUND_SECONDS)
            n += k
            rss.append(harness.rss_kb(pid))
            if k < self.ROUND or rss[-1] - rss[-2] <= self.FLAT_KB:
                break
        print(f"\n{n} rooms in {time.monotonic() - t0:.1f} s; RSS after each round {rss} KiB",
              flush=True)
        if not harness.sanitized():  # RSS means little under sanitizers (quarantine, shadow memory)
            growth = [b - a for a, b in zip(rss, rss[1:])]
            self.assertLessEqual(min(growth), self.FLAT_KB,
                                 f"RSS grew in every round of {self.ROUND} rooms: {growth} KiB")
            self.assertLessEqual(rss[-1] - rss[0], self.TOTAL_KB, f"RSS {rss} KiB")
        m = self.server.metrics()
        held = m["parley_rooms_held"][""]
        reclaimed = m["parley_rooms_reclaimed_total"][""]
        self.assertLessEqual(held, self.CACHE + 5, "rooms in memory are bounded by --room-cache")
        self.assertGreaterEqual(reclaimed, n - self.CACHE)
        self.assertEqual(m["parley_rooms"][""], 0)
        # `rooms` lists rooms with members only, whatever is idle
        room = uniq("live")
        await c.call({"type": "join", "room": room}, "joined")
        f = await c.call({"type": "rooms"}, "rooms")
        self.assertEqual([r["name"] for r in f["rooms"]], [room])
        self.assertEqual(self.server.metric("parley_rooms"), 1)


class SeqAfterReclaim(ServerCase):
    """--room-cache 0: a room leaves memory with its last reference. Its seq
    is read back from storage when it is used again."""

    server_args = ("--room-cache", "0")

    async def test_seq_continues_after_reclaim_and_restart(self):
        room = uniq("gapless")
        a = await self.json_client(user=uniq("a"), room=room)
        for i in range(3):
            self.assertEqual((await a.send_msg(room, f"m{i}"))["seq"], i + 1)
        held = self.server.metric("parley_rooms_held")
        await a.call({"type": "leave", "room": room}, "left")
        await harness.async_wait_for(lambda: self.server.metric("parley_rooms_held") < held, T,
                                     what="the room reclaimed")
        j = await a.call({"type": "join", "room": room}, "joined")
        self.assertEqual(j["seq"], 3)
        self.assertEqual([m["seq"] for m in j["history"]], [1, 2, 3])
        self.assertEqual((await a.send_msg(room, "m3"))["seq"], 4)
        # history of a room not in memory comes from storage
        await a.call({"type": "leave", "room": room}, "left")
        h = await a.call({"type": "history", "room": room, "limit": 10}, "history")
        self.assertEqual([m["seq"] for m in h["messages"]], [1, 2, 3, 4])
        # a DM conversation nobody joined lives only as long as the dm
        a_user, b_user = a.user, uniq("b")
        b = await self.json_client(user=b_user)
        for i in range(3):
            self.assertEqual((await a.call({"type": "dm", "to": b_user, "text": f"d{i}"},
                                           "ack"))["seq"], i + 1)
        await a.close()
        await b.close()

        self.server.restart()
        a = await self.json_client(user=a_user)
        await self.json_client(user=b_user)  # open mode: DMs go to users online
        self.assertEqual((await a.call({"type": "dm", "to": b_user, "text": "d3"},
                                       "ack"))["seq"], 4)
        # pipelined: the send waits behind the join's read of the room's seq
        await a.send({"type": "join", "room": room, "ref": "j"})
        await a.send({"type": "send", "room": room, "text": "after restart", "ref": "s"})
        j = await a.expect(lambda f: f.get("ref") == "j")
        self.assertEqual(j["type"], "joined", j)
        self.assertEqual(j["seq"], 4)
        ack = await a.expect(lambda f: f.get("ref") == "s")
        self.assertEqual(ack, {"type": "ack", "room": room, "seq": 5, "ref": "s"})

    async def test_requests_wait_in_order_for_the_room(self):
        """A burst sent right behind a join of a room not in memory: every
        request is carried out, in order, after the join."""
        room = uniq("burst")
        a = await self.json_client(user=uniq("a"))
        n = 300
        await a.send({"type": "join", "room": room, "ref": "j"})
        for i in range(n):
            await a.send({"type": "send", "room": room, "text": f"m{i}", "ref": f"s{i}"})
        await a.send({"type": "ping", "ref": "p"})
        j = await a.expect(lambda f: f.get("ref") == "j")
        self.assertEqual(j["type"], "joined")
        acks = []
        for i in range(n):
            f = await a.expect(lambda f, i=i: f.get("ref") == f"s{i}")
            self.assertEqual(f["type"], "ack", f)
            acks.append(f["seq"])
        self.assertEqual(acks, list(range(1, n + 1)))
        await a.expect(lambda f: f.get("ref") == "p")
        await a.call({"type": "leave", "room": room}, "left")
        # a connection's room= parks the connection the same way
        q = await JClient.connect(self.server, query=f"user={uniq('q')}&room={room}")
        self.addAsyncCleanup(q.close)
        await q.send({"type": "send", "room": room, "text": "right away", "ref": "q1"})
        await q.expect_type("welcome")
        j = await q.expect_type("joined", room=room)
        self.assertEqual(j["seq"], n)
        f = await q.expect(lambda f: f.get("ref") == "q1")
        self.assertEqual(f, {"type": "ack", "room": room, "seq": n + 1, "ref": "q1"})
        # text mode: one frame, several lines, two rooms not in memory
        t = await self.text_client()
        r1, r2 = uniq("t"), uniq("t")
        await t.send_raw(f"/nick {uniq('tx')}\n/join {r1}\nfirst\n/join {r2}\nsecond\n/join {r1}\n"
                         "third")
        await t.expect(f"joined {r1}")
        await t.expect(rf"\[{r1} #1 .*first")
        await t.expect(f"joined {r2}")
        await t.expect(rf"\[{r2} #1 .*second")
        await t.expect(rf"\[{r1} #2 .*third")


class NewRoomCap(ServerCase):
    """--max-new-rooms: the rooms one user may open per hour that the
    server does not hold in memory."""

    server_args = ("--max-new-rooms", "5")

    async def test_cap(self):
        c = await self.json_client(user=uniq("maker"))
        rooms = [uniq("new") for _ in range(6)]
        for r in rooms[:5]:
            await c.call({"type": "join", "room": r}, "joined")
        f = await c.call({"type": "join", "room": rooms[5]})
        self.assertEqual(f["type"], "error", f)
        self.assertEqual(f["code"], "rate_limited")
        self.assertIn("new rooms", f["message"])
        self.assertGreater(f["retry_after_ms"], 60 * 1000, "a token takes 12 minutes")
        # history and dm open rooms too
        f = await c.call({"type": "history", "room": rooms[5]})
        self.assertEqual(f.get("code"), "rate_limited", f)
        self.assertGreaterEqual(self.server.metric("parley_rooms_refused_total"), 2)
        # rooms in memory cost nothing; other users are not affected
        await c.call({"type": "join", "room": rooms[0], "since": 0}, "joined")
        other = await self.json_client(user=uniq("other"))
        await other.call({"type": "join", "room": rooms[5]}, "joined")
        await c.call({"type": "join", "room": rooms[5]}, "joined")


if __name__ == "__main__":
    harness.main()
