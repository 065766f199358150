"""Protocol v1 in JSON mode: every request, reply, event and error of the
contract, against a real parleyd."""

import asyncio
import json
import time

import harness
from harness import OP_BINARY, OP_CONT, OP_TEXT, T, JClient, RawWS, ServerCase, uniq


def is_msg(room=None, **kw):
    def pred(f):
        if f.get("type") != "message" or (room is not None and f.get("room") != room):
            return False
        return all(f.get(k) == v for k, v in kw.items())
    return pred


class Protocol(ServerCase):

    async def room_with(self, *names):
        """A fresh room joined by fresh users (prefixes names); returns
        (room, [clients]) with every presence event consumed."""
        room = uniq("room")
        clients = []
        for n in names:
            c = await self.json_client(user=uniq(n))
            await c.call({"type": "join", "room": room}, "joined")
            for other in clients:
                await other.expect_type("presence", room=room, user=c.user, event="join")
            clients.append(c)
        return room, clients

    async def send_pair(self, c, room, text, id=None):
        """send; return (ack, the sender's own message event) in either order."""
        req = {"type": "send", "room": room, "text": text}
        if id is not None:
            req["id"] = id
        ack = await c.call(req, "ack")
        msg = await c.expect(is_msg(room, seq=ack["seq"]), what="own message event")
        return ack, msg

    # ------------------------------------------------------------ hello

    async def test_welcome(self):
        c = await self.json_client()
        user = uniq("alice")
        w = await c.call({"type": "hello", "user": user, "ref": "h1"}, "welcome")
        self.assertEqual(w["ref"], "h1")
        self.assertEqual(w["user"], user)
        self.assertEqual(w["protocol"], 1)
        self.assertIsInstance(w["session"], str)
        self.assertTrue(w["session"])
        lim = w["limits"]
        self.assertEqual(lim["max_text"], 4000)
        self.assertEqual(lim["max_frame"], 65536)
        for k in ("rate", "burst"):
            self.assertIsInstance(lim[k], (int, float))
        # a second session gets a different session id
        d = await self.json_client(user=uniq("bob"))
        self.assertNotEqual(d.welcome["session"], w["session"])

    async def test_name_taken_and_freed(self):
        name = uniq("dup")
        a = await self.json_client(user=name)
        b = await self.json_client()
        e = await b.call({"type": "hello", "user": name, "ref": 7})
        self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "name_taken", 7))
        # still open and still not signed in
        await b.call({"type": "ping"}, "pong")
        e = await b.call({"type": "join", "room": "x"})
        self.assertEqual(e["code"], "auth_required")
        # once the holder is gone the name is free again (bounded retry: the
        # server sees the disconnect asynchronously)
        await a.close()
        deadline = time.monotonic() + T
        while True:
            r = await b.call({"type": "hello", "user": name})
            if r["type"] == "welcome":
                break
            self.assertEqual(r["code"], "name_taken")
            self.assertLess(time.monotonic(), deadline, "name never freed")
            await asyncio.sleep(0.02)
        self.assertEqual(r["user"], name)

    async def test_name_freed_after_abrupt_disconnect(self):
        name = uniq("abrupt")
        a = await self.json_client(user=name)
        a.ws.transport.abort()
        b = await self.json_client()
        deadline = time.monotonic() + T
        while True:
            r = await b.call({"type": "hello", "user": name})
            if r["type"] == "welcome":
                break
            self.assertEqual(r["code"], "name_taken")
            self.assertLess(time.monotonic(), deadline, "name never freed")
            await asyncio.sleep(0.02)

    async def test_second_hello_and_query_name_taken(self):
        c = await self.json_client(user=uniq("twice"))
        e = await c.call({"type": "hello", "user": uniq("other"), "ref": "h2"})
        self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "bad_request", "h2"))
        w = await c.call({"type": "who", "room": uniq("x")}, "members")
        self.assertEqual(w["users"], [])
        # user= in the query with a taken name: error, connection stays open
        d = await JClient.connect(self.server, query=f"user={c.user}&room={uniq('qr')}")
        self.addAsyncCleanup(d.close)
        e = await d.recv()
        self.assertEqual((e["type"], e["code"]), ("error", "name_taken"))
        self.assertNotIn("ref", e)
        await d.call({"type": "ping"}, "pong")
        await d.expect_none(lambda f: f["type"] == "joined", window=0)
        await d.call({"type": "hello", "user": uniq("free")}, "welcome")
        # an invalid user= is bad_request, room= without user= auth_required
        for q, code in (("user=bad%20name", "bad_request"),
                        (f"room={uniq('r')}", "auth_required")):
            with self.subTest(query=q):
                x = await JClient.connect(self.server, query=q)
                self.addAsyncCleanup(x.close)
                e = await x.recv()
                self.assertEqual((e["type"], e["code"]), ("error", code))
                await x.call({"type": "ping"}, "pong")

    async def test_token_in_open_mode(self):
        c = await self.json_client()
        e = await c.call({"type": "hello", "token": "eyJhbGciOiJIUzI1NiJ9.e30.x"})
        self.assertEqual((e["type"], e["code"]), ("error", "auth_failed"))
        await c.call({"type": "hello", "user": uniq("after")}, "welcome")

    async def test_auth_required(self):
        c = await self.json_client()
        room = uniq("r")
        reqs = [{"type": "join", "room": room}, {"type": "leave", "room": room},
                {"type": "send", "room": room, "text": "hi"},
                {"type": "dm", "to": "someone", "text": "hi"},
                {"type": "history", "room": room}, {"type": "who", "room": room},
                {"type": "rooms"}, {"type": "typing", "room": room}]
        for i, req in enumerate(reqs):
            with self.subTest(req=req["type"]):
                e = await c.call(dict(req, ref=f"a{i}"))
                self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "auth_required",
                                                                     f"a{i}"))
        p = await c.call({"type": "ping", "ref": "p"})
        self.assertEqual(p, {"type": "pong", "ref": "p"})
        await c.call({"type": "hello", "user": uniq("late")}, "welcome")
        await c.call({"type": "join", "room": room}, "joined")

    async def test_query_sign_in_and_join(self):
        user, room = uniq("q"), uniq("qr")
        c = await JClient.connect(self.server, query=f"user={user}&room={room}")
        self.addAsyncCleanup(c.close)
        first = await c.recv()
        self.assertEqual((first["type"], first["user"]), ("welcome", user))
        second = await c.recv()
        self.assertEqual((second["type"], second["room"]), ("joined", room))
        self.assertIn(user, second["members"])
        await c.send_msg(room, "via query")
        # user= alone: welcome only
        u2 = uniq("q")
        d = await JClient.connect(self.server, query=f"user={u2}")
        self.addAsyncCleanup(d.close)
        self.assertEqual((await d.recv())["type"], "welcome")
        await d.call({"type": "ping"}, "pong")
        self.assertEqual(list(d.backlog), [])

    # ------------------------------------------------------------ rooms

    async def test_join_leave_presence(self):
        room = uniq("jl")
        a = await self.json_client(user=uniq("a"))
        j = await a.call({"type": "join", "room": room, "ref": "j"}, "joined")
        self.assertEqual(j["room"], room)
        self.assertEqual(j["seq"], 0)
        self.assertEqual(j["members"], [a.user])
        self.assertEqual(j["history"], [])
        b = await self.json_client(user=uniq("b"))
        jb = await b.call({"type": "join", "room": room}, "joined")
        self.assertEqual(sorted(jb["members"]), sorted([a.user, b.user]))
        p = await a.expect_type("presence", room=room)
        self.assertEqual((p["user"], p["event"]), (b.user, "join"))
        # the joiner gets no presence about itself
        await b.sync()
        await b.expect_none(lambda f: f["type"] == "presence", window=0)
        # leave
        left = await b.call({"type": "leave", "room": room, "ref": 99}, "left")
        self.assertEqual((left["room"], left["ref"]), (room, 99))
        p = await a.expect_type("presence", room=room, user=b.user)
        self.assertEqual(p["event"], "leave")
        # after leaving, send is refused and no more events come
        e = await b.call({"type": "send", "room": room, "text": "x"})
        self.assertEqual(e["code"], "not_joined")
        await a.send_msg(room, "after leave")
        await b.sync()
        await b.expect_none(is_msg(room), window=0)
        e = await b.call({"type": "leave", "room": room})
        self.assertEqual(e["code"], "not_joined")
        # disconnect: presence leave
        c = await self.json_client(user=uniq("c"))
        await c.call({"type": "join", "room": room}, "joined")
        await a.expect_type("presence", room=room, user=c.user, event="join")
        await c.close()
        await a.expect_type("presence", room=room, user=c.user, event="leave")
        d = await self.json_client(user=uniq("d"))
        await d.call({"type": "join", "room": room}, "joined")
        await a.expect_type("presence", room=room, user=d.user, event="join")
        d.ws.transport.abort()
        await a.expect_type("presence", room=room, user=d.user, event="leave")
        w = await a.call({"type": "who", "room": room}, "members")
        self.assertEqual(w["users"], [a.user])
        # joining again is allowed: a fresh joined, no presence for anyone
        e = await self.json_client(user=uniq("e"))
        await e.call({"type": "join", "room": room}, "joined")
        await a.expect_type("presence", room=room, user=e.user, event="join")
        again = await e.call({"type": "join", "room": room}, "joined")
        self.assertEqual(sorted(again["members"]), sorted([a.user, e.user]))
        await a.sync()
        await a.expect_none(lambda f: f["type"] == "presence", window=0)

    async def test_who_and_rooms(self):
        room, (a, b) = await self.room_with("wa", "wb")
        w = await a.call({"type": "who", "room": room, "ref": "w"}, "members")
        self.assertEqual((w["room"], w["ref"]), (room, "w"))
        self.assertEqual(sorted(w["users"]), sorted([a.user, b.user]))
        await a.send_msg(room, "one")
        await a.send_msg(room, "two")
        r = await a.call({"type": "rooms", "ref": "rr"}, "rooms")
        self.assertEqual(r["ref"], "rr")
        mine = [x for x in r["rooms"] if x["name"] == room]
        self.assertEqual(mine, [{"name": room, "members": 2, "seq": 2}])
        # DM conversations are not listed, even when joined
        dm = "dm:" + ":".join(sorted([a.user, b.user]))
        await a.call({"type": "dm", "to": b.user, "text": "psst"}, "ack")
        await a.call({"type": "join", "room": dm}, "joined")
        r = await a.call({"type": "rooms"}, "rooms")
        self.assertFalse([x for x in r["rooms"] if x["name"].startswith("dm:")], r)
        # rooms without members are not listed
        await a.call({"type": "leave", "room": room}, "left")
        await b.call({"type": "leave", "room": room}, "left")
        r = await a.call({"type": "rooms"}, "rooms")
        self.assertFalse([x for x in r["rooms"] if x["name"] == room], r)
        # who of an empty room: nobody
        w = await a.call({"type": "who", "room": room}, "members")
        self.assertEqual(w["users"], [])

    async def test_typing(self):
        room, (a, b, c) = await self.room_with("ta", "tb", "tc")
        await a.send({"type": "typing", "room": room})
        for other in (b, c):
            t = await other.expect_type("typing", room=room)
            self.assertEqual(t["user"], a.user)
        await a.sync()
        await a.expect_none(lambda f: f["type"] == "typing", window=0)
        # not to people outside the room
        d = await self.json_client(user=uniq("td"))
        await a.send({"type": "typing", "room": room})
        await b.expect_type("typing", room=room, user=a.user)
        await d.sync()
        await d.expect_none(lambda f: f["type"] == "typing", window=0)
        e = await d.call({"type": "typing", "room": room, "ref": "t"})
        self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "not_joined", "t"))

    async def test_ping(self):
        c = await self.json_client(user=uniq("p"))
        self.assertEqual(await c.call({"type": "ping", "ref": 12}), {"type": "pong", "ref": 12})
        self.assertEqual(await c.call({"type": "ping", "ref": "s"}), {"type": "pong", "ref": "s"})
        await c.send({"type": "ping"})
        self.assertEqual(await c.recv(), {"type": "pong"})

    async def test_ref_echo_everywhere(self):
        room, (a, b) = await self.room_with("ra", "rb")
        checks = [
            ({"type": "who", "room": room}, "members"),
            ({"type": "rooms"}, "rooms"),
            ({"type": "history", "room": room}, "history"),
            ({"type": "send", "room": room, "text": "r"}, "ack"),
            ({"type": "dm", "to": b.user, "text": "r"}, "ack"),
            ({"type": "ping"}, "pong"),
            ({"type": "leave", "room": room}, "left"),
            ({"type": "join", "room": room}, "joined"),
            ({"type": "nope"}, "error"),
            ({"type": "send", "room": uniq("nj"), "text": "x"}, "error"),
        ]
        for k, base in enumerate(("str", 1000, "ünï \"quoted\"")):
            for i, (req, typ) in enumerate(checks):
                ref = f"{base}-{i}" if isinstance(base, str) else base + 100 * k + i
                with self.subTest(req=req["type"], ref=ref):
                    await a.send(dict(req, ref=ref))
                    f = await a.expect(lambda f: "ref" in f and f["ref"] == ref,
                                       what=f"reply with ref {ref!r}")
                    self.assertEqual(f["type"], typ, f)
        c = await self.json_client()
        w = await c.call({"type": "hello", "user": uniq("rc"), "ref": -5}, "welcome")
        self.assertEqual(w["ref"], -5)

    # ------------------------------------------------------------ messages

    async def test_send_fanout_and_ack(self):
        room, (a, b, c) = await self.room_with("sa", "sb", "sc")
        outsider = await self.json_client(user=uniq("so"))
        t0 = int(time.time() * 1000)
        ack, own = await self.send_pair(a, room, "hello world", id="m-1")
        self.assertEqual((ack["room"], ack["seq"], ack["id"]), (room, 1, "m-1"))
        self.assertEqual(own["from"], a.user)
        seen = {a.user: [1]}
        for cl in (b, c):
            m = await cl.expect(is_msg(room), what="message")
            self.assertEqual((m["seq"], m["from"], m["text"], m["id"]),
                             (1, a.user, "hello world", "m-1"))
            self.assertEqual(m["ts"], own["ts"])
            seen[cl.user] = [1]
        self.assertLessEqual(abs(own["ts"] - t0), 60_000)
        # without an id: no id in the ack nor the message
        ack, own = await self.send_pair(b, room, "second")
        self.assertEqual(ack["seq"], 2)
        self.assertNotIn("id", ack)
        self.assertNotIn("id", own)
        seen[b.user].append(2)
        # seqs continue gapless whoever sends
        for i in range(3, 11):
            sender = (a, b, c)[i % 3]
            ack = await sender.send_msg(room, f"n{i}")
            self.assertEqual(ack["seq"], i)
        for cl in (a, b, c):
            seqs = seen[cl.user]
            while len(seqs) < 10:
                m = await cl.expect(is_msg(room))
                seqs.append(m["seq"])
            self.assertEqual(seqs, list(range(1, 11)))
        await outsider.sync()
        await outsider.expect_none(is_msg(room), window=0)
        # unicode and JSON escapes survive the round trip
        text = 'quote " backslash \\ tab \t newline \n emoji 😀 nul-free ünï'
        ack, own = await self.send_pair(a, room, text)
        self.assertEqual(own["text"], text)
        m = await b.expect(is_msg(room, seq=ack["seq"]))
        self.assertEqual(m["text"], text)

    async def test_send_not_joined(self):
        room, (a,) = await self.room_with("nj")
        b = await self.json_client(user=uniq("nj"))
        e = await b.call({"type": "send", "room": room, "text": "x", "ref": "n"})
        self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "not_joined", "n"))
        e = await b.call({"type": "send", "room": uniq("never"), "text": "x"})
        self.assertEqual(e["code"], "not_joined")
        await a.sync()
        await a.expect_none(is_msg(room), window=0)

    async def test_idempotent_send(self):
        room, (a, b) = await self.room_with("ia", "ib")
        ack1, _ = await self.send_pair(a, room, "once", id="dup-1")
        await b.expect(is_msg(room, seq=ack1["seq"]))
        ack2 = await a.call({"type": "send", "room": room, "text": "once", "id": "dup-1"}, "ack")
        self.assertEqual((ack2["seq"], ack2["id"]), (ack1["seq"], "dup-1"))
        # even with a different text the id wins
        ack3 = await a.call({"type": "send", "room": room, "text": "other", "id": "dup-1"},
                            "ack")
        self.assertEqual(ack3["seq"], ack1["seq"])
        # a marker after the duplicates: whatever the duplicates caused has
        # been delivered before it
        mark = await b.send_msg(room, "marker")
        self.assertEqual(mark["seq"], ack1["seq"] + 1)
        for cl in (a, b):
            await cl.expect(is_msg(room, seq=mark["seq"]))
            dups = [f for f in cl.backlog if f["type"] == "message" and f.get("id") == "dup-1"]
            self.assertEqual(dups, [], "a duplicate id was delivered again")
        # the same id from another user, or to another room, is a new message
        ack4 = await b.call({"type": "send", "room": room, "text": "b's", "id": "dup-1"}, "ack")
        self.assertEqual(ack4["seq"], mark["seq"] + 1)
        room2 = uniq("ir")
        await a.call({"type": "join", "room": room2}, "joined")
        ack5 = await a.call({"type": "send", "room": room2, "text": "x", "id": "dup-1"}, "ack")
        self.assertEqual(ack5["seq"], 1)
        h = await a.call({"type": "history", "room": room}, "history")
        self.assertEqual([m["text"] for m in h["messages"]], ["once", "marker", "b's"])

    async def test_too_large(self):
        room, (a, b) = await self.room_with("tl", "tlb")
        for text in ("a" * 4001, "😀" * 4001, "é" * 4001):
            with self.subTest(n=len(text.encode())):
                e = await a.call({"type": "send", "room": room, "text": text, "ref": "big"})
                self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "too_large", "big"))
        for text in ("a" * 4000, "😀" * 4000, "é" * 4000):
            with self.subTest(n=len(text.encode())):
                ack, own = await self.send_pair(a, room, text)
                self.assertEqual(own["text"], text)
                m = await b.expect(is_msg(room, seq=ack["seq"]))
                self.assertEqual(m["text"], text)
        e = await a.call({"type": "dm", "to": b.user, "text": "x" * 4001})
        self.assertEqual(e["code"], "too_large")
        # a frame just under the 64 KiB frame limit is an error, not a close
        e = await a.call({"type": "send", "room": room, "text": "z" * 65000})
        self.assertEqual(e["code"], "too_large")
        await a.call({"type": "ping"}, "pong")

    # ------------------------------------------------------------ DMs

    async def test_dm(self):
        a = await self.json_client(user=uniq("dmb"))  # "dmb..." > "dma..."
        b = await self.json_client(user=uniq("dma"))
        dm = f"dm:{b.user}:{a.user}"
        ack = await a.call({"type": "dm", "to": b.user, "text": "secret", "id": "d1",
                            "ref": "dd"}, "ack")
        self.assertEqual((ack["room"], ack["seq"], ack["id"], ack["ref"]), (dm, 1, "d1", "dd"))
        for cl in (a, b):
            m = await cl.expect(is_msg(dm), what="the DM")
            self.assertEqual((m["seq"], m["from"], m["text"], m["id"]),
                             (1, a.user, "secret", "d1"))
        # the other way round: same conversation
        ack = await b.call({"type": "dm", "to": a.user, "text": "back"}, "ack")
        self.assertEqual((ack["room"], ack["seq"]), (dm, 2))
        await a.expect(is_msg(dm, seq=2, text="back"))
        # idempotent too
        again = await a.call({"type": "dm", "to": b.user, "text": "secret", "id": "d1"}, "ack")
        self.assertEqual(again["seq"], 1)
        # participants may join it; open mode serves no stored DM history
        # (section 9.4): the join brings none, history is forbidden
        j = await b.call({"type": "join", "room": dm}, "joined")
        self.assertEqual((j["seq"], j["history"]), (2, []))
        e = await a.call({"type": "history", "room": dm, "ref": "h"})
        self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "forbidden", "h"))
        # the joined room works for send like any room
        ack = await b.call({"type": "send", "room": dm, "text": "via send"}, "ack")
        await a.expect(is_msg(dm, seq=ack["seq"], text="via send"))
        # a third user sees nothing of it
        c = await self.json_client(user=uniq("dmc"))
        for req in ({"type": "join", "room": dm}, {"type": "history", "room": dm},
                    {"type": "who", "room": dm}):
            with self.subTest(req=req["type"]):
                e = await c.call(dict(req, ref="f"))
                self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "forbidden", "f"))
        await c.sync()
        await c.expect_none(is_msg(dm), window=0)

    async def test_dm_byte_order(self):
        a = await self.json_client(user=uniq("amy"))
        z = await self.json_client(user=uniq("Zed"))  # 'Z' < 'a' in byte order
        ack = await a.call({"type": "dm", "to": z.user, "text": "hi"}, "ack")
        self.assertEqual(ack["room"], f"dm:{z.user}:{a.user}")
        await z.expect(is_msg(ack["room"], seq=ack["seq"]))

    async def test_dm_only_to_users_online_now(self):
        """Open mode: a name is nobody's once its last connection is gone, so
        a DM (or a send in a joined DM room) to it is no_such_user."""
        name = uniq("off")
        a = await self.json_client(user=uniq("on"))
        b = await self.json_client(user=name)
        ack = await a.call({"type": "dm", "to": name, "text": "while here"}, "ack")
        await a.call({"type": "join", "room": ack["room"]}, "joined")
        await b.close()

        async def refused():
            r = await a.call({"type": "dm", "to": name, "text": "while away"})
            return r if r["type"] == "error" else None
        # the server sees the close a moment after the client did
        e = await harness.async_wait_for(refused, T, what="DM to a gone user refused")
        self.assertEqual(e["code"], "no_such_user", e)
        self.assertIn("online", e["message"])
        e = await a.call({"type": "send", "room": ack["room"], "text": "still there?"})
        self.assertEqual((e["type"], e.get("code")), ("error", "no_such_user"), e)
        # someone holding the name again is online: DMs reach them
        b2 = await self.json_client()
        deadline = time.monotonic() + T
        while (await b2.call({"type": "hello", "user": name}))["type"] != "welcome":
            self.assertLess(time.monotonic(), deadline)
            await asyncio.sleep(0.02)
        ack2 = await a.call({"type": "dm", "to": name, "text": "back"}, "ack")
        m = await b2.expect(is_msg(ack["room"], seq=ack2["seq"]))
        self.assertEqual(m["text"], "back")

    async def test_dm_errors(self):
        a = await self.json_client(user=uniq("de"))
        e = await a.call({"type": "dm", "to": uniq("ghost"), "text": "hi", "ref": 1})
        self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "no_such_user", 1))
        e = await a.call({"type": "dm", "to": a.user, "text": "me", "ref": 2})
        self.assertEqual((e["type"], e["code"], e["ref"]), ("error", "bad_request", 2))
        # a DM room with a name nobody holds is refused, and no room is made
        rooms = self.server.metric("parley_rooms")
        ghost_dm = "dm:" + ":".join(sorted([a.user, uniq("ghost")]))
        e = await a.call({"type": "join", "room": ghost_dm, "ref": 3})
        self.assertEqual((e["type"], e.get("code"), e["ref"]), ("error", "no_such_user", 3))
        self.assertEqual(self.server.metric("parley_rooms"), rooms)
        e = await a.call({"type": "send", "room": ghost_dm, "text": "x", "ref": 4})
        self.assertEqual((e["type"], e["code"]), ("error", "not_joined"))
        # a non-participant cannot get at a DM room of users that exist
        x = await self.json_client(user=uniq("dx"))
        y = await self.json_client(user=uniq("dy"))
        dm = "dm:" + ":".join(sorted([x.user, y.user]))
        e = await a.call({"type": "join", "room": dm})
        self.assertEqual(e["code"], "forbidden")
        e = await a.call({"type": "send", "room": dm, "text": "sneak"})
        self.assertIn(e["code"], ("forbidden", "not_joined"))
        await a.call({"type": "ping"}, "pong")

    # ------------------------------------------------------------ history

    async def test_history_and_since(self):
        room, (a,) = await self.room_with("h")
        for i in range(1, 11):
            await a.send_msg(room, f"m{i}")
        h = await a.call({"type": "history", "room": room, "ref": "h"}, "history")
        self.assertEqual((h["room"], h["ref"], h["more"]), (room, "h", False))
        self.assertEqual([m["seq"] for m in h["messages"]], list(range(1, 11)))
        self.assertEqual([m["text"] for m in h["messages"]], [f"m{i}" for i in range(1, 11)])
        for m in h["messages"]:
            self.assertEqual((m["type"], m["room"], m["from"]), ("message", room, a.user))
        h = await a.call({"type": "history", "room": room, "limit": 3}, "history")
        self.assertEqual(([m["seq"] for m in h["messages"]], h["more"]), ([8, 9, 10], True))
        h = await a.call({"type": "history", "room": room, "before": 8, "limit": 3}, "history")
        self.assertEqual(([m["seq"] for m in h["messages"]], h["more"]), ([5, 6, 7], True))
        h = await a.call({"type": "history", "room": room, "before": 3, "limit": 3}, "history")
        self.assertEqual(([m["seq"] for m in h["messages"]], h["more"]), ([1, 2], False))
        h = await a.call({"type": "history", "room": room, "before": 1}, "history")
        self.assertEqual((h["messages"], h["more"]), ([], False))
        h = await a.call({"type": "history", "room": room, "before": 1000, "limit": 2},
                         "history")
        self.assertEqual([m["seq"] for m in h["messages"]], [9, 10])
        h = await a.call({"type": "history", "room": uniq("empty")}, "history")
        self.assertEqual((h["messages"], h["more"]), ([], False))
        # history needs no join
        o = await self.json_client(user=uniq("ho"))
        h = await o.call({"type": "history", "room": room, "limit": 2}, "history")
        self.assertEqual([m["text"] for m in h["messages"]], ["m9", "m10"])
        # join: latest `limit`, or everything after `since`
        b = await self.json_client(user=uniq("hb"))
        cases = [({}, list(range(1, 11))), ({"limit": 4}, [7, 8, 9, 10]),
                 ({"since": 7}, [8, 9, 10]), ({"since": 0}, list(range(1, 11))),
                 ({"since": 10}, []), ({"since": 50}, []), ({"since": 2, "limit": 3}, [3, 4, 5])]
        for extra, seqs in cases:
            with self.subTest(join=extra):
                j = await b.call(dict({"type": "join", "room": room}, **extra), "joined")
                self.assertEqual(j["seq"], 10)
                self.assertEqual([m["seq"] for m in j["history"]], seqs)
                await b.call({"type": "leave", "room": room}, "left")

    # ------------------------------------------------------------ bad input

    async def test_bad_input(self):
        room, (a, b) = await self.room_with("bad", "badb")
        deep = '{"type":"ping","x":' + "[" * 40 + "]" * 40 + "}"
        cases = [
            # bad_json: no ref can be read
            ("not json", "bad_json"), ('{"type":"ping",}', "bad_json"),
            ('{"type":"ping"', "bad_json"), ('{"type":"ping","type":"ping"}', "bad_json"),
            ('{"type":"ping","ref":1,"ref":2}', "bad_json"), ("[1,2,3]", "bad_json"),
            ('"ping"', "bad_json"), ("42", "bad_json"), ("null", "bad_json"), ("", "bad_json"),
            (deep, "bad_json"), ("{\"type\":\"ping\",\"x\":\"a\x01b\"}", "bad_json"),
            ("\ufeff{\"type\":\"ping\"}", "bad_json"),
            # bad_request
            ("{}", "bad_request"), ('{"type":5}', "bad_request"),
            ('{"type":null}', "bad_request"), ('{"type":["ping"]}', "bad_request"),
            ('{"type":"ping","ref":{"a":1}}', "bad_request"),
            ('{"type":"ping","ref":[1]}', "bad_request"),
            ('{"type":"ping","ref":"' + "r" * 1000 + '"}', "bad_request"),
        ]
        R = json.dumps(room)
        with_ref = [
            ('{"type":"join"}', "bad_request"), ('{"type":"join","room":5}', "bad_request"),
            ('{"type":"join","room":""}', "bad_request"),
            ('{"type":"join","room":"bad room"}', "bad_request"),
            ('{"type":"join","room":"' + "r" * 65 + '"}', "bad_request"),
            ('{"type":"join","room":"r/x"}', "bad_request"),
            ('{"type":"join","room":"ümlaut"}', "bad_request"),
            ('{"type":"join","room":"dm:onlyone"}', "bad_request"),
            ('{"type":"join","room":%s,"since":-1}' % R, "bad_request"),
            ('{"type":"join","room":%s,"since":"3"}' % R, "bad_request"),
            ('{"type":"join","room":%s,"since":1.5}' % R, "bad_request"),
            ('{"type":"join","room":%s,"limit":0}' % R, "bad_request"),
            ('{"type":"send","room":%s}' % R, "bad_request"),
            ('{"type":"send","room":%s,"text":5}' % R, "bad_request"),
            ('{"type":"send","room":%s,"text":["x"]}' % R, "bad_request"),
            ('{"type":"send","text":"x"}', "bad_request"),
            ('{"type":"send","room":%s,"text":"x","id":"%s"}' % (R, "i" * 65), "bad_request"),
            ('{"type":"send","room":%s,"text":"x","id":7}' % R, "bad_request"),
            ('{"type":"history","room":%s,"limit":"x"}' % R, "bad_request"),
            ('{"type":"history","room":%s,"before":-3}' % R, "bad_request"),
            ('{"type":"who"}', "bad_request"), ('{"type":"typing","room":7}', "bad_request"),
            ('{"type":"dm","text":"x"}', "bad_request"),
            ('{"type":"dm","to":"bad name","text":"x"}', "bad_request"),
            ('{"type":"dm","to":"%s","text":"x"}' % ("u" * 33), "bad_request"),
            ('{"type":"dm","to":%s}' % json.dumps(b.user), "bad_request"),
            ('{"type":"frobnicate"}', "unknown_type"), ('{"type":"PING"}', "unknown_type"),
            ('{"type":"send","room":%s,"text":"%s"}' % (R, "x" * 4001), "too_large"),
        ]
        for i, (raw, code) in enumerate(with_ref):
            ref = f"bad{i}"
            cases.append((raw[:-1] + f',"ref":"{ref}"' + "}", (code, ref)))
        for raw, want in cases:
            code, ref = want if isinstance(want, tuple) else (want, None)
            with self.subTest(frame=raw[:80]):
                await a.send_raw(raw)
                e = await a.expect(lambda f: f["type"] in ("error", "pong", "ack", "joined"),
                                   what=f"the error for {raw[:60]!r}")
                self.assertEqual((e["type"], e.get("code")), ("error", code), e)
                self.assertIsInstance(e["message"], str)
                self.assertTrue(e["message"])
                if ref is not None:
                    self.assertEqual(e.get("ref"), ref)
                # the connection still works, and so does everyone else
                await a.call({"type": "ping"}, "pong")
        ack = await a.send_msg(room, "still here")
        await b.expect(is_msg(room, seq=ack["seq"], text="still here"))
        await b.call({"type": "ping"}, "pong")
        # unknown fields are ignored, and null counts as absent
        await a.call({"type": "ping", "extra": {"nested": [1, 2, {"x": None}]}}, "pong")
        await a.call({"type": "history", "room": room, "limit": None, "before": None},
                     "history")

    async def test_bad_user_names(self):
        c = await self.json_client()
        for user in ("", "a b", "u" * 33, "ümlaut", "a/b", "dm:a:b", "a\nb", 5, None):
            with self.subTest(user=user):
                e = await c.call({"type": "hello", "user": user})
                self.assertEqual((e["type"], e["code"]), ("error", "bad_request"), e)
        for user in ("u" * 32, "A.b-c_9"):
            d = await self.json_client()
            w = await d.call({"type": "hello", "user": user}, "welcome")
            self.assertEqual(w["user"], user)
            await d.close()

    async def test_room_dm_is_reserved(self):
        # "dm" names the DM rooms (dm:a:b): it is no public room, whichever
        # way a client asks; names that only start with dm are
        c = await self.json_client(user=uniq("u"))
        for req in ({"type": "join", "room": "dm"}, {"type": "leave", "room": "dm"},
                    {"type": "send", "room": "dm", "text": "x"},
                    {"type": "history", "room": "dm", "before": 5},
                    {"type": "who", "room": "dm"}, {"type": "typing", "room": "dm"}):
            with self.subTest(req=req["type"]):
                e = await c.call(req)
                self.assertEqual((e["type"], e["code"]), ("error", "bad_request"), e)
                self.assertIn("reserved", e["message"])
        for room in ("dms", "DM", "dm.general"):
            j = await c.call({"type": "join", "room": room}, "joined")
            self.assertEqual(j["room"], room)
        names = [r["name"] for r in (await c.call({"type": "rooms"}, "rooms"))["rooms"]]
        self.assertIn("dm.general", names)
        self.assertNotIn("dm", names)
        # room=dm in the query string: signed in, not joined
        q = await JClient.connect(self.server, query=f"user={uniq('q')}&room=dm")
        self.addAsyncCleanup(q.close)
        self.assertEqual((await q.recv())["type"], "welcome")
        e = await q.recv()
        self.assertEqual((e["type"], e["code"]), ("error", "bad_request"), e)
        await q.call({"type": "ping"}, "pong")
        # text mode
        t = await self.text_client(query="format=text")
        await t.send(f"/nick {uniq('t')}")
        await t.expect(r"^\* welcome ")
        await t.send("/join dm")
        self.assertRegex(await t.expect(r"^! "), r"^! bad_request: .*reserved")


class CloseCodes(ServerCase):
    """Frames the server must refuse by closing, each from a raw socket;
    everyone else carries on."""

    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.room = uniq("cc")
        self.watcher = await self.json_client(user=uniq("w"), room=self.room)

    def raw(self):
        r = RawWS(self.server.port, query=f"user={uniq('raw')}&room={self.room}")
        self.addCleanup(r.close)
        self.assertEqual(r.recv_json()["type"], "welcome")
        self.assertEqual(r.recv_json()["type"], "joined")
        return r

    @staticmethod
    def recv_pong(r):
        """The next pong from a raw client (presence events may come first)."""
        while True:
            f = r.recv_json()
            if f["type"] == "pong":
                return f
            if f["type"] not in ("presence", "message"):
                raise AssertionError(f"expected a pong, got {f}")

    async def still_fine(self):
        ack = await self.watcher.send_msg(self.room, "fine")
        await self.watcher.expect(is_msg(self.room, seq=ack["seq"]))

    async def close_code(self, r):
        return await asyncio.get_running_loop().run_in_executor(None, r.expect_close)

    async def test_binary_frame_1003(self):
        r = self.raw()
        r.send_frame(OP_BINARY, b'{"type":"ping"}')
        self.assertEqual((await self.close_code(r))[0], 1003)
        await self.still_fine()

    async def test_invalid_utf8_1007(self):
        for payload in (b'{"type":"ping","x":"\xff"}', b'{"type":"ping","x":"\xc0\xae"}',
                        b'{"type":"ping","x":"\xed\xa0\x80"}'):
            with self.subTest(payload=payload):
                r = self.raw()
                r.send_frame(OP_TEXT, payload)
                self.assertEqual((await self.close_code(r))[0], 1007)
        # split across fragments: each fragment alone is not valid UTF-8
        r = self.raw()
        r.send_frame(OP_TEXT, b'{"type":"ping","x":"\xe2\x82', fin=False)
        r.send_frame(OP_CONT, b'\xac"}')
        self.assertEqual(self.recv_pong(r)["type"], "pong")
        r.send_frame(OP_TEXT, b'{"type":"ping","x":"\xe2\x82', fin=False)
        r.send_frame(OP_CONT, b'"}')
        self.assertEqual((await self.close_code(r))[0], 1007)
        await self.still_fine()

    async def test_oversize_frame_1009(self):
        r = self.raw()
        # announce 70000 bytes, send only the start: the header is enough
        r.send_frame(OP_TEXT, b'{"type":"ping","x":"' + b"a" * 1000, length=70000)
        self.assertEqual((await self.close_code(r))[0], 1009)
        # fragments adding up to more than 64 KiB
        r = self.raw()
        chunk = b"a" * 16384
        r.send_frame(OP_TEXT, b'{"type":"ping","x":"' + chunk[20:], fin=False)
        for _ in range(3):
            r.send_frame(OP_CONT, chunk, fin=False)
        r.send_frame(OP_CONT, b'a"}', fin=True)
        self.assertEqual((await self.close_code(r))[0], 1009)
        # exactly 64 KiB in fragments is still fine
        r = self.raw()
        head = b'{"type":"ping","ref":"ok","x":"'
        body = head + b"a" * (65536 - len(head) - 2) + b'"}'
        self.assertEqual(len(body), 65536)
        r.send_frame(OP_TEXT, body[:30000], fin=False)
        r.send_frame(OP_CONT, body[30000:], fin=True)
        self.assertEqual(self.recv_pong(r), {"type": "pong", "ref": "ok"})
        await self.still_fine()

    async def test_control_frames_do_not_break_fragments(self):
        r = self.raw()
        r.send_frame(OP_TEXT, b'{"type":"ping",', fin=False)
        r.send_frame(harness.OP_PING, b"hi")
        r.send_frame(OP_CONT, b'"ref":"frag"}')
        self.assertEqual(self.recv_pong(r), {"type": "pong", "ref": "frag"})


if __name__ == "__main__":
    harness.main()
