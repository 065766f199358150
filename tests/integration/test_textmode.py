"""Text mode end to end: ?format=text and the parley.text subprotocol, mixed
with JSON clients in the same rooms."""

import re
import time

import harness
from harness import T, ServerCase, TClient, uniq

MSG = re.compile(r"^\[(?P<where>[^\]]+?) #(?P<seq>\d+) (?P<hms>\d\d:\d\d:\d\d)\] (?P<rest>.*)$")


def hms(ts_ms):
    return time.strftime("%H:%M:%S", time.gmtime(ts_ms // 1000))


def msg_line(where, frm, text):
    """A regex for a message line in `where` from `frm` with exactly `text`."""
    return (r"^\[" + re.escape(where) + r" #\d+ \d\d:\d\d:\d\d\] " + re.escape(frm) + ": "
            + re.escape(text) + "$")


class TextMode(ServerCase):

    async def signed_in(self, user=None, room=None, **kw):
        t = await self.text_client(**kw)
        user = user or uniq("t")
        await t.send(f"/nick {user}")
        line = await t.expect(r"^\* welcome ")
        self.assertEqual(line, f"* welcome {user} (protocol 1) \u2014 type /help")
        t.user = user
        if room:
            await t.send(f"/join {room}")
            await t.expect(r"^\* joined " + re.escape(room) + " ")
        return t

    async def test_session_format_text(self):
        await self.session(query="format=text")

    async def test_session_subprotocol(self):
        t = await TClient.connect(self.server, query="", subprotocols=["parley.text"])
        self.addAsyncCleanup(t.close)
        self.assertEqual(t.ws.subprotocol, "parley.text")
        await self.session(client=t)

    async def session(self, client=None, **kw):
        t = client or await self.text_client(**kw)
        user, room = uniq("alice"), uniq("general")
        # before signing in
        await t.send(f"/join {room}")
        self.assertRegex(await t.expect(r"^! "), r"^! auth_required: \S")
        await t.send("/ping")
        await t.expect(r"^\* pong$")
        await t.send(f"/nick {user}")
        self.assertEqual(await t.expect(r"^\* welcome "),
                         f"* welcome {user} (protocol 1) \u2014 type /help")
        # text before any join
        await t.send("hello?")
        self.assertRegex(await t.expect(r"^! "), r"^! not_joined: \S")
        await t.send(f"/join {room}")
        self.assertEqual(await t.expect(r"^\* joined "),
                         f"* joined {room} (seq 0, members: {user})")
        # a JSON client joins: presence line
        j = await self.json_client(user=uniq("bob"), room=room)
        self.assertEqual(await t.expect(r"^\* \S+ joined "), f"* {j.user} joined {room}")
        # plain line -> the room joined last; the JSON client sees it
        await t.send("hello  world")
        own = await t.expect(MSG.pattern)
        m = await j.expect(lambda f: f["type"] == "message", what="alice's message")
        self.assertEqual((m["room"], m["from"], m["text"]), (room, user, "hello  world"))
        self.assertEqual(own, f"[{room} #{m['seq']} {hms(m['ts'])}] {user}: hello  world")
        # JSON -> text
        ack = await j.send_msg(room, "hi from json")
        m = await j.expect(lambda f: f["type"] == "message" and f["seq"] == ack["seq"])
        self.assertEqual(await t.expect(msg_line(room, j.user, "hi from json")),
                         f"[{room} #{ack['seq']} {hms(m['ts'])}] {j.user}: hi from json")
        # /me
        await t.send("/me waves")
        self.assertRegex(await t.expect(r"\* " + re.escape(user) + " waves$"),
                         r"^\[" + re.escape(room) + r" #\d+ \d\d:\d\d:\d\d\] \* "
                         + re.escape(user) + " waves$")
        m = await j.expect(lambda f: f["type"] == "message" and f["from"] == user)
        self.assertEqual(m["text"], "/me waves")
        # a JSON client's /me text shows as an action too
        await j.send_msg(room, "/me nods")
        await t.expect(r"^\[" + re.escape(room) + r" #\d+ \S+\] \* " + re.escape(j.user)
                       + " nods$")
        # "//" escapes a leading slash
        await t.send("//not a command")
        m = await j.expect(lambda f: f["type"] == "message" and f["from"] == user)
        self.assertEqual(m["text"], "/not a command")
        # /who, /rooms
        await t.send("/who")
        line = await t.expect(r"^\* members of ")
        self.assertTrue(line.startswith(f"* members of {room}: "), line)
        self.assertEqual(sorted(line.split(": ", 1)[1].split(", ")), sorted([user, j.user]))
        seq = (await j.call({"type": "rooms"}, "rooms"))["rooms"]
        seq = [r["seq"] for r in seq if r["name"] == room][0]
        await t.send("/rooms")
        await t.expect(r"^\* rooms:$")
        self.assertIn(f"  {room} (2 members, seq {seq})", t.rest_of_frame())
        # /history N: a head line and the N latest messages, in one frame
        await t.send("/history 2")
        head = await t.expect(r"^\* history ")
        self.assertEqual(head, f"* history {room}: 2 messages (older messages exist)")
        lines = t.rest_of_frame()
        self.assertEqual(len(lines), 2, lines)
        self.assertEqual([int(MSG.match(x)["seq"]) for x in lines], [seq - 1, seq])
        # /msg -> a DM, shown with its direction
        await t.send(f"/msg {j.user} psst  there")
        dm = await j.expect(lambda f: f["type"] == "message" and f["room"].startswith("dm:"))
        self.assertEqual((dm["room"], dm["text"]), ("dm:" + ":".join(sorted([user, j.user])),
                                                    "psst  there"))
        self.assertEqual(await t.expect(r"^\[dm "),
                         f"[dm {user}\u2192{j.user} #{dm['seq']} {hms(dm['ts'])}] {user}: "
                         "psst  there")
        await j.call({"type": "dm", "to": user, "text": "back"}, "ack")
        self.assertRegex(await t.expect(r"^\[dm " + re.escape(j.user)),
                         r"^\[dm " + re.escape(j.user) + "\u2192" + re.escape(user)
                         + r" #2 \d\d:\d\d:\d\d\] " + re.escape(j.user) + ": back$")
        # errors are lines starting with "! code: "
        await t.send("/bogus")
        self.assertEqual(await t.expect(r"^! "), "! unknown_type: unknown command /bogus, "
                                                 "try /help")
        await t.send("/join bad!room")
        self.assertRegex(await t.expect(r"^! "), r"^! bad_request: \S")
        await t.send(f"/msg {uniq('ghost')} hi")
        self.assertRegex(await t.expect(r"^! "), r"^! no_such_user: \S")
        await t.send("x" * 4001)
        self.assertRegex(await t.expect(r"^! "), r"^! too_large: \S")
        # /help lists the commands
        await t.send("/help")
        await t.expect(r"^\* commands:")
        helptext = t.rest_of_frame()
        for cmd in ("/nick", "/join", "/leave", "/msg", "/who", "/rooms", "/history", "/me",
                    "/help", "/quit"):
            self.assertTrue(any(x.lstrip().startswith(cmd) for x in helptext), cmd)
        # /leave: presence line for the JSON client, "* left" for us
        await t.send("/leave")
        self.assertEqual(await t.expect(r"^\* left "), f"* left {room}")
        p = await j.expect_type("presence", user=user)
        self.assertEqual(p["event"], "leave")
        # /quit -> close 1000
        await t.send("/quit")
        self.assertEqual(await t.wait_closed(), 1000)
        p = await j.call({"type": "who", "room": room}, "members")
        self.assertEqual(p["users"], [j.user])

    async def test_query_sign_in(self):
        user, room = uniq("q"), uniq("qroom")
        t = await self.text_client(query=f"format=text&user={user}&room={room}")
        self.assertEqual(await t.recv(), f"* welcome {user} (protocol 1) \u2014 type /help")
        self.assertEqual(await t.recv(), f"* joined {room} (seq 0, members: {user})")

    async def test_join_shows_history(self):
        room = uniq("hist")
        j = await self.json_client(user=uniq("j"), room=room)
        for i in range(3):
            await j.send_msg(room, f"old {i}")
        t = await self.signed_in()
        await t.send(f"/join {room}")
        self.assertEqual(await t.expect(r"^\* joined "),
                         f"* joined {room} (seq 3, members: " +
                         ", ".join(sorted([j.user, t.user])) + ")")
        lines = t.rest_of_frame()
        self.assertEqual(len(lines), 3, lines)
        for i, line in enumerate(lines):
            self.assertRegex(line, msg_line(room, j.user, f"old {i}"))

    async def test_several_lines_in_one_frame(self):
        room = uniq("multi")
        t = await self.text_client()
        user = uniq("m")
        await t.send(f"/nick {user}\n/join {room}\r\nfirst\nsecond\n")
        await t.expect(r"^\* welcome ")
        await t.expect(r"^\* joined ")
        await t.expect(msg_line(room, user, "first"))
        await t.expect(msg_line(room, user, "second"))

    async def test_injection_is_neutralised(self):
        room = uniq("inj")
        t = await self.signed_in(room=room)
        j = await self.json_client(user=uniq("evil"), room=room)
        await t.expect(r"^\* \S+ joined ")
        evil = ("hi\n[" + room + " #999 00:00:00] admin: you are fired\r"
                "* admin joined " + room + "\x1b[2J\x1b[31mred\u2028line\u202eevil\x7fdel")
        ack = await j.send_msg(room, evil)
        # the whole message arrives as one line, control characters gone
        frames = []
        while True:
            raw = await harness.asyncio.wait_for(t.ws.recv(), T)
            frames.append(raw)
            if f"#{ack['seq']} " in raw:
                break
        line = frames[-1]
        self.assertEqual(line.rstrip("\n").count("\n"), 0, repr(line))
        for bad in ("\r", "\x1b", "\u2028", "\u202e", "\x7f"):
            self.assertNotIn(bad, line)
        self.assertTrue(line.startswith(f"[{room} #{ack['seq']} "), line)
        self.assertIn(f"] {j.user}: hi ", line)
        # no fake line appears afterwards either
        await t.expect_none(r"^\[" + re.escape(room) + r" #999 |^\* admin ")
        # the JSON client gets the text exactly as sent
        m = await j.expect(lambda f: f["type"] == "message" and f["seq"] == ack["seq"])
        self.assertEqual(m["text"], evil)

    async def test_text_and_json_dm_each_other(self):
        t = await self.signed_in()
        j = await self.json_client(user=uniq("jj"))
        await j.call({"type": "dm", "to": t.user, "text": "to text"}, "ack")
        await t.expect(r"^\[dm " + re.escape(j.user) + "\u2192" + re.escape(t.user)
                       + r" #1 \S+\] " + re.escape(j.user) + ": to text$")


if __name__ == "__main__":
    harness.main()
