"""Fan-out under load: many clients in one room, a slow consumer among fast
ones, and clients that vanish mid-fan-out."""

import asyncio
import time

import harness
from harness import SCALE, T, JClient, ServerCase, collect_messages, uniq


async def connect_many(server, n, room, prefix, batch=50, **kw):
    """n clients signed in and joined through the query string."""
    out = []
    for start in range(0, n, batch):
        async def one(i):
            user = f"{prefix}{i}"
            c = await JClient.connect(server, query=f"user={user}&room={room}", **kw)
            c.user = user
            w = await c.recv()
            assert w["type"] == "welcome", w
            j = await c.expect(lambda f: f["type"] == "joined")
            c.joined[room] = j
            return c
        out += await asyncio.gather(*(one(i) for i in range(start, min(n, start + batch))))
    return out


async def close_all(clients):
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)




class ManyClients(ServerCase):

    async def test_200_clients_100_messages(self):
        room = uniq("big")
        clients = await connect_many(self.server, 200, room, uniq("fan") + "_")
        self.addAsyncCleanup(close_all, clients)
        base = max(c.joined[room]["seq"] for c in clients)
        senders = clients[:10]
        per_sender = 10

        async def send_some(c):
            for k in range(per_sender):
                await c.send({"type": "send", "room": room, "text": f"{c.user}:{k}"})

        readers = [asyncio.ensure_future(collect_messages(c, room, 100, 60 * SCALE))
                   for c in clients]
        await asyncio.gather(*(send_some(c) for c in senders))
        results = await asyncio.gather(*readers)
        want_texts = {f"{c.user}:{k}" for c in senders for k in range(per_sender)}
        for c, msgs in zip(clients, results):
            seqs = [m["seq"] for m in msgs]
            self.assertEqual(seqs, list(range(base + 1, base + 101)),
                             f"{c.user}: messages missing, repeated or out of order")
            self.assertEqual({m["text"] for m in msgs}, want_texts)
        # every client saw the same message for each seq
        ref = {m["seq"]: (m["from"], m["text"], m["ts"]) for m in results[0]}
        for msgs in results[1:]:
            self.assertEqual({m["seq"]: (m["from"], m["text"], m["ts"]) for m in msgs}, ref)
        # and nothing more arrives (no duplicate after the 100th)
        await clients[-1].sync()
        self.assertFalse([f for f in clients[-1].backlog if f["type"] == "message"])
        # the senders' acks: each seq acked exactly once, to its sender
        ack_seqs = []
        for c in senders:
            acks = [f for f in c.skipped if f["type"] == "ack"]
            while len(acks) < per_sender:
                acks.append(await c.expect_type("ack"))
            own = {m["seq"] for m in results[clients.index(c)] if m["from"] == c.user}
            self.assertEqual({a["seq"] for a in acks}, own)
            ack_seqs += [a["seq"] for a in acks]
        self.assertEqual(sorted(ack_seqs), list(range(base + 1, base + 101)))
        # all go at once, without the close handshake (200 graceful closes
        # would mostly measure the Python client)
        for c in clients:
            c.ws.transport.abort()
        await harness.async_wait_for(
            lambda: self.server.metric("parley_connections") == 0 and
            self.server.metric("parley_queue_bytes") == 0, 10 * SCALE,
            what="no connections and parley_queue_bytes == 0")


class SlowConsumer(ServerCase):
    server_args = ("--client-queue-max", "256", "--client-queue-bytes", "262144")

    async def test_slow_consumer_is_dropped_others_unaffected(self):
        room = uniq("slow")
        count, text_size = 3000, 1100
        m0 = self.server.metric("parley_slow_consumer_disconnects_total")

        slow = await JClient.connect(self.server, user=uniq("slow"), room=room,
                                     sock=harness.small_rcvbuf_socket(self.server.port))
        self.addAsyncCleanup(slow.close)
        fast = await self.json_client(user=uniq("fast"), room=room)
        sender = await self.json_client(user=uniq("send"), room=room)
        slow.ws.transport.pause_reading()

        window = asyncio.Semaphore(100)
        acked = []

        async def sender_reader():
            while len(acked) < count:
                f = await sender.recv(30 * SCALE)
                if f["type"] == "ack":
                    acked.append(f["seq"])
                    window.release()
                elif f["type"] == "error":
                    raise AssertionError(f"sender got {f}")

        async def send_all():
            for i in range(count):
                await window.acquire()
                await sender.send({"type": "send", "room": room,
                                   "text": f"{i:05d} " + "x" * text_size})

        t0 = time.monotonic()
        reader = asyncio.ensure_future(sender_reader())
        fast_got = asyncio.ensure_future(collect_messages(fast, room, count, 60 * SCALE))
        sending = asyncio.ensure_future(send_all())

        # the slow one overflows its queue while the flood goes on
        await harness.async_wait_for(
            lambda: self.server.metric("parley_slow_consumer_disconnects_total") >= m0 + 1,
            30 * SCALE, what="a slow-consumer disconnect in /metrics")
        slow.ws.transport.resume_reading()
        self.assertEqual(await slow.wait_closed(30 * SCALE), 4008)

        await sending
        msgs = await fast_got
        await reader
        elapsed = time.monotonic() - t0
        self.assertEqual([m["seq"] for m in msgs], list(range(1, count + 1)))
        self.assertEqual([int(m["text"][:5]) for m in msgs], list(range(count)))
        self.assertEqual(sorted(acked), list(range(1, count + 1)))
        self.assertLess(elapsed, 60 * SCALE)
        # the fast client is still connected, and saw the slow one leave
        if not [f for f in fast.skipped if f["type"] == "presence" and
                f["user"] == slow.user and f["event"] == "leave"]:
            await fast.expect_type("presence", user=slow.user, event="leave")
        await fast.call({"type": "ping"}, "pong")
        w = await fast.call({"type": "who", "room": room}, "members")
        self.assertEqual(sorted(w["users"]), sorted([fast.user, sender.user]))
        self.assertGreaterEqual(
            self.server.metric("parley_slow_consumer_disconnects_total"), m0 + 1)
        # the name is free again
        again = await JClient.connect(self.server)
        self.addAsyncCleanup(again.close)
        deadline = time.monotonic() + T
        while (await again.call({"type": "hello", "user": slow.user}))["type"] != "welcome":
            self.assertLess(time.monotonic(), deadline)
            await asyncio.sleep(0.02)
        # nothing is left queued anywhere once everyone is idle
        await harness.async_wait_for(
            lambda: self.server.metric("parley_queue_bytes") == 0, 10 * SCALE,
            what="parley_queue_bytes back to 0")


class AbruptDisconnects(ServerCase):

    async def test_no_ghosts_after_abrupt_disconnects(self):
        room = uniq("ghost")
        observer = await self.json_client(user=uniq("obs"), room=room)
        sender = await self.json_client(user=uniq("snd"), room=room)
        prefix = uniq("g") + "_"
        clients = await connect_many(self.server, 100, room, prefix)
        self.addAsyncCleanup(close_all, clients)
        doomed, live = clients[:50], clients[50:]
        n = 60

        async def send_all():
            for i in range(n):
                await sender.send({"type": "send", "room": room, "text": f"m{i}"})

        readers = [asyncio.ensure_future(collect_messages(c, room, n, 30 * SCALE))
                   for c in live]
        sending = asyncio.ensure_future(send_all())
        # once the fan-out is under way, 50 connections vanish without a
        # close frame (TCP closed under them)
        await sender.expect_type("ack", timeout=T)
        for c in doomed:
            c.ws.transport.abort()
        await sending
        results = await asyncio.gather(*readers)
        for c, msgs in zip(live, results):
            self.assertEqual([m["text"] for m in msgs], [f"m{i}" for i in range(n)], c.user)

        # every vanished user is announced as gone ...
        gone = {c.user for c in doomed}
        deadline = time.monotonic() + 15 * SCALE
        while gone:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, f"no presence leave for {sorted(gone)[:5]}...")
            p = await observer.expect(lambda f: f["type"] == "presence" and
                                      f["event"] == "leave", left, what="presence leave")
            self.assertIn(p["user"], gone)
            gone.discard(p["user"])
        # ... and only the living are members
        w = await observer.call({"type": "who", "room": room}, "members")
        self.assertEqual(sorted(w["users"]),
                         sorted([observer.user, sender.user] + [c.user for c in live]))
        r = await observer.call({"type": "rooms"}, "rooms")
        self.assertEqual([x["members"] for x in r["rooms"] if x["name"] == room], [52])
        await harness.async_wait_for(
            lambda: self.server.metric("parley_connections") == 52, 10 * SCALE,
            what="parley_connections == 52")
        # the room still works for everyone left
        ack = await sender.send_msg(room, "after")
        for c in live[:5] + [observer]:
            await c.expect(lambda f: f["type"] == "message" and f["seq"] == ack["seq"])


if __name__ == "__main__":
    harness.main()
