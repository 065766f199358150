"""E-mail notifications: a real SMTP relay (aiosmtpd, in this process) and a
real parleyd in accounts mode.

Offline DMs and @mentions become one e-mail each (--notify-coalesce 0);
online users get none; a relay that is down for a while, or down across a
parleyd restart, still gets the mail exactly once; a relay that refuses
everything makes the notification dead after --notify-max-attempts; with no
relay the mail goes to the mbox file; and a hostile message text cannot add
headers.

Retry timing (server/notify.h, backoff.h): the delay before retry k is drawn
in [cap/2, cap] with cap = min(max_backoff, 1 s * 2^(k-1)), and the circuit
breaker opens after 5 consecutive failures for 30 s. The relay-down cases
keep the relay away for fewer than 5 attempts, so the breaker never opens.
"""

import email
import email.policy
import email.utils
import json
import os
import re
import threading
import time

from aiosmtpd.controller import Controller

import harness
from harness import SCALE, T, JClient, Server, ServerCase, free_port, uniq

PASSWORD = "correct horse battery"
# How long a negative check ("no e-mail comes") listens.
QUIET_MAIL = 2.0


# ------------------------------------------------------------------ the relay

class Relay:
    """A real SMTP server on a fixed loopback port that can be stopped and
    started again on the same port (relay down), or told to refuse every
    message with 554. Each accepted message is kept as (envelope sender,
    recipients, raw bytes)."""

    def __init__(self):
        self.port = free_port()
        self.lock = threading.Lock()
        self.mails = []
        self.refuse = False
        self.ctl = None

    def start(self):
        last = None
        for _ in range(50):  # the port of a stopped relay may linger briefly
            ctl = Controller(self, hostname="127.0.0.1", port=self.port, ready_timeout=T)
            try:
                ctl.start()
            except (OSError, RuntimeError) as e:
                last = e
                time.sleep(0.05)
                continue
            self.ctl = ctl
            return
        raise AssertionError(f"cannot restart the relay on port {self.port}: {last!r}")

    def stop(self):
        if self.ctl is not None:
            self.ctl.stop()
            self.ctl = None

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return "554 5.7.1 refused by the test relay"
        with self.lock:
            self.mails.append((envelope.mail_from, list(envelope.rcpt_tos),
                               bytes(envelope.content)))
        return "250 2.0.0 accepted"

    def to(self, addr):
        """The messages whose envelope names addr, parsed."""
        with self.lock:
            return [parse_mail(raw) for _, rcpts, raw in self.mails if addr in rcpts]

    def count(self):
        with self.lock:
            return len(self.mails)


def parse_mail(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    msg.raw = raw
    return msg


def body_text(msg):
    return msg.get_content()


# ------------------------------------------------------------------ helpers

def post(server, path, obj):
    st, _, raw = harness.http_get(server.port, path, method="POST", body=json.dumps(obj),
                                  headers={"Content-Type": "application/json"},
                                  timeout=10 * SCALE)
    return st, raw


def register(server, user, email_addr):
    st, raw = post(server, "/api/register",
                   {"user": user, "password": PASSWORD, "email": email_addr})
    if st != 201:
        raise AssertionError(f"register {user}: {st} {raw!r}")


def login(server, user):
    st, raw = post(server, "/api/login", {"user": user, "password": PASSWORD})
    if st != 200:
        raise AssertionError(f"login {user}: {st} {raw!r}")
    return json.loads(raw)["token"]


def metric(server, name):
    return server.metrics().get(name, {}).get("", 0.0)


class NotifyCase(ServerCase):
    """One relay and one parleyd (accounts mode, relaying to it) per class."""

    max_backoff = "0.5"
    max_attempts = "3"
    use_relay = True

    @classmethod
    def extra_args(cls):
        return []

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay() if cls.use_relay else None
        if cls.relay:
            cls.relay.start()
        try:
            super().setUpClass()
        except BaseException:
            if cls.relay:
                cls.relay.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if cls.relay:
                cls.relay.stop()

    @classmethod
    def make_server(cls):
        args = ["--auth", "accounts", "--notify-coalesce", "0",
                "--notify-max-backoff", cls.max_backoff,
                "--notify-max-attempts", cls.max_attempts]
        if cls.relay:
            args += ["--smtp-url", f"smtp://127.0.0.1:{cls.relay.port}",
                     "--smtp-from", "parley@test"]
        return Server(args=args + cls.extra_args())

    def users(self):
        """A fresh alice and bob with addresses; returns (names, addresses)."""
        alice, bob = uniq("alice"), uniq("bob")
        addrs = {alice: f"{alice}@example.org", bob: f"{bob}@mail.example.net"}
        register(self.server, alice, addrs[alice])
        register(self.server, bob, addrs[bob])
        return alice, bob, addrs

    async def connect(self, user, room=None):
        c = await JClient.connect(self.server, hello=False)
        self.addAsyncCleanup(c.close)
        c.welcome = await c.call({"type": "hello", "token": login(self.server, user)}, "welcome")
        c.user = user
        if room:
            c.joined[room] = await c.call({"type": "join", "room": room}, "joined")
        return c

    def wait_connections(self, n):
        """Until exactly n WebSockets are open: the server has then fully
        processed the others' disconnects (the gauge drops after that)."""
        harness.wait_for(lambda: metric(self.server, "parley_connections") == n, T,
                         what=f"{n} open connections")

    def wait_mail(self, addr, n=1, timeout=None):
        return harness.wait_for(lambda: (lambda m: m if len(m) >= n else None)(
            self.relay.to(addr)), timeout or T, what=f"{n} e-mail(s) to {addr}")

    def settle(self):
        """Until the notifier holds nothing, then a short quiet window in
        which no further e-mail may appear."""
        harness.wait_for(lambda: metric(self.server, "parley_notify_queue_depth") == 0, 3 * T,
                         what="an empty notification queue")
        before = self.relay.count() if self.relay else None
        time.sleep(0.5)
        if self.relay:
            self.assertEqual(self.relay.count(), before,
                             "an e-mail arrived after the queue emptied")

    def check_headers(self, msg, to_addr, to_name):
        for h in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version",
                  "Content-Type"):
            self.assertEqual(len(msg.get_all(h) or []), 1, f"header {h}: {msg.get_all(h)}")
        self.assertIn("parley@test", str(msg["From"]))
        self.assertIn(to_addr, str(msg["To"]))
        self.assertIn(to_name, str(msg["To"]))
        self.assertEqual(msg.get_content_type(), "text/plain")
        self.assertEqual(msg.get_content_charset(), "utf-8")
        self.assertEqual(str(msg["MIME-Version"]).strip(), "1.0")
        self.assertRegex(str(msg["Message-ID"]), r"^<[^<>@\s]+@[^<>@\s]+>$")
        self.assertIsNotNone(email.utils.parsedate_to_datetime(str(msg["Date"])))
        head = msg.raw.split(b"\r\n\r\n", 1)[0]
        self.assertIsNone(re.search(rb"(?<!\r)\n|\r(?!\n)", head),
                          "a bare LF or CR in the header")
        for line in head.split(b"\r\n"):
            self.assertRegex(line, rb"^([A-Za-z-]+: |[ \t])", "a header line that is no header")


# ------------------------------------------------------------------ cases

class Notify(NotifyCase):

    async def test_offline_dm_sends_one_email(self):
        alice, bob, addrs = self.users()
        a = await self.connect(alice)
        text = "lunch at noon? ünïcødé ✓"
        ack = await a.call({"type": "dm", "to": bob, "text": text}, "ack")
        self.assertTrue(ack["room"].startswith("dm:"))
        mails = self.wait_mail(addrs[bob])
        self.settle()
        mails = self.relay.to(addrs[bob])
        self.assertEqual(len(mails), 1, "one DM, one e-mail")
        m = mails[0]
        self.check_headers(m, addrs[bob], bob)
        self.assertIn(alice, str(m["Subject"]))
        body = body_text(m)
        self.assertIn(text, body)
        self.assertIn(alice, body)
        self.assertEqual(self.relay.to(addrs[alice]), [], "the sender got mail")
        with self.relay.lock:
            env = [(f, r) for f, r, raw in self.relay.mails if addrs[bob] in r]
        self.assertEqual(env, [("parley@test", [addrs[bob]])])

    async def test_online_user_gets_no_email(self):
        alice, bob, addrs = self.users()
        a = await self.connect(alice)
        b = await self.connect(bob)
        ack = await a.call({"type": "dm", "to": bob, "text": "are you there?"}, "ack")
        await b.expect_type("message", room=ack["room"], seq=ack["seq"])
        time.sleep(QUIET_MAIL)
        self.assertEqual(self.relay.to(addrs[bob]), [], "mail to a user who was online")
        # once bob is gone, the next DM does mail him: only that one
        await b.close()
        self.wait_connections(1)
        await a.call({"type": "dm", "to": bob, "text": "now you are away"}, "ack")
        mails = self.wait_mail(addrs[bob])
        self.settle()
        mails = self.relay.to(addrs[bob])
        self.assertEqual(len(mails), 1)
        body = body_text(mails[0])
        self.assertIn("now you are away", body)
        self.assertNotIn("are you there?", body)

    async def test_mention_of_offline_member(self):
        alice, bob, addrs = self.users()
        carol = uniq("carol")
        register(self.server, carol, f"{carol}@example.org")
        b = await self.connect(bob, room="general")
        await b.close()
        a = await self.connect(alice, room="general")
        self.wait_connections(1)
        # carol never joined general: a mention does not reach her
        await a.send_msg("general", f"hi @{bob}, and @{carol} too")
        mails = self.wait_mail(addrs[bob])
        self.settle()
        mails = self.relay.to(addrs[bob])
        self.assertEqual(len(mails), 1)
        m = mails[0]
        self.check_headers(m, addrs[bob], bob)
        self.assertIn("general", str(m["Subject"]))
        self.assertIn(alice, str(m["Subject"]))
        body = body_text(m)
        self.assertIn(f"hi @{bob}", body)
        self.assertEqual(self.relay.to(f"{carol}@example.org"), [])
        self.assertEqual(self.relay.to(addrs[alice]), [])

    async def test_mention_in_a_room_with_history(self):
        """The same with a room that already had a message when bob left."""
        alice, bob, addrs = self.users()
        room = uniq("talk")
        b = await self.connect(bob, room=room)
        await b.send_msg(room, "bob was here")
        await b.close()
        a = await self.connect(alice, room=room)
        self.wait_connections(1)
        await a.send_msg(room, f"@{bob}: look at this")
        self.wait_mail(addrs[bob])
        self.settle()
        mails = self.relay.to(addrs[bob])
        self.assertEqual(len(mails), 1)
        self.assertIn(room, str(mails[0]["Subject"]))
        self.assertIn(f"@{bob}: look at this", body_text(mails[0]))

    async def test_hostile_text_injects_no_headers(self):
        alice, bob, addrs = self.users()
        a = await self.connect(alice)
        text = ("hello\r\nBcc: evil@attacker.example\r\nSubject: injected\r\n"
                "X-Injected: yes\r\n\r\nFrom evil@attacker.example Mon Jan  1 00:00:00 2024\n"
                "From: boss@corp.example\n.\n..\n.hidden\nContent-Type: text/html\n"
                "\x1b[31mred\x1b[0m \u2028 end-of-text")
        await a.call({"type": "dm", "to": bob, "text": text}, "ack")
        self.wait_mail(addrs[bob])
        self.settle()
        mails = self.relay.to(addrs[bob])
        self.assertEqual(len(mails), 1)
        m = mails[0]
        self.check_headers(m, addrs[bob], bob)
        names = [k.lower() for k in m.keys()]
        for bad in ("bcc", "x-injected"):
            self.assertNotIn(bad, names, f"injected header {bad}: {m.items()}")
        self.assertEqual(names.count("subject"), 1)
        self.assertEqual(names.count("content-type"), 1)
        self.assertEqual(names.count("from"), 1)
        self.assertNotIn("injected", str(m["Subject"]))
        self.assertEqual(m.get_content_type(), "text/plain")
        # the envelope went to bob alone
        with self.relay.lock:
            rcpts = [r for _, r, raw in self.relay.mails if addrs[bob] in r]
        self.assertEqual(rcpts, [[addrs[bob]]])
        self.assertEqual(self.relay.to("evil@attacker.example"), [])
        # the hostile lines are body text, and the body is all there
        body = body_text(m)
        for piece in ("Bcc: evil@attacker.example", "X-Injected: yes", "From: boss@corp.example",
                      "end-of-text"):
            self.assertIn(piece, body)
        # SMTP dot-stuffing both ways left lines of dots as they were
        lines = [ln.strip() for ln in body.replace("\r\n", "\n").split("\n")]
        for dots in (".", "..", ".hidden"):
            self.assertIn(dots, lines)
        self.assertNotIn("\r", body.replace("\r\n", "\n"), "a bare CR reached the body")


class NotifyRefused(NotifyCase):
    """A relay that answers every message with 554."""

    async def test_refused_until_dead(self):
        self.relay.refuse = True
        alice, bob, addrs = self.users()
        a = await self.connect(alice)
        await a.call({"type": "dm", "to": bob, "text": "this one never arrives"}, "ack")
        harness.wait_for(lambda: metric(self.server, "parley_notify_dead_total") >= 1, 4 * T,
                         what="parley_notify_dead_total >= 1")
        self.assertGreaterEqual(metric(self.server, "parley_notify_failed_total"), 3)
        self.assertEqual(metric(self.server, "parley_notify_sent_total"), 0)
        self.assertEqual(metric(self.server, "parley_notify_queue_depth"), 0)
        self.assertEqual(self.relay.count(), 0)
        # dead is final: the relay accepting again brings nothing back
        failed = metric(self.server, "parley_notify_failed_total")
        self.relay.refuse = False
        time.sleep(1.0)  # two retry periods (max backoff 0.5 s)
        self.assertEqual(self.relay.count(), 0)
        self.assertEqual(metric(self.server, "parley_notify_failed_total"), failed)


class NotifyRelayDown(NotifyCase):
    """The relay goes away for a while. More attempts and a longer backoff
    than the other classes, so that the mail outlives a relay that is down
    for seconds: attempts come every 0.5..1 s; the relay returns after the
    third failure, before the fifth would open the breaker."""

    max_backoff = "1"
    max_attempts = "8"

    def failed(self):
        return metric(self.server, "parley_notify_failed_total")

    async def test_relay_down_for_a_while(self):
        alice, bob, addrs = self.users()
        a = await self.connect(alice)
        f0 = self.failed()
        self.relay.stop()
        try:
            await a.call({"type": "dm", "to": bob, "text": "sent while the relay was down"},
                         "ack")
            harness.wait_for(lambda: self.failed() >= f0 + 3, 4 * T,
                             what="three failed attempts")
        finally:
            self.relay.start()
        self.assertEqual(self.relay.to(addrs[bob]), [])
        self.wait_mail(addrs[bob])
        self.settle()
        mails = self.relay.to(addrs[bob])
        self.assertEqual(len(mails), 1, "delivered more than once")
        self.assertIn("sent while the relay was down", body_text(mails[0]))
        self.assertEqual(metric(self.server, "parley_notify_dead_total"), 0)

    async def test_relay_down_across_a_restart(self):
        alice, bob, addrs = self.users()
        a = await self.connect(alice)
        f0 = self.failed()
        self.relay.stop()
        try:
            await a.call({"type": "dm", "to": bob, "text": "pending over a restart"}, "ack")
            harness.wait_for(lambda: self.failed() >= f0 + 1, 4 * T,
                             what="a failed attempt")
            await a.close()
            rc = self.server.stop()
            self.assertEqual(rc, 0, self.server.log_text())
        finally:
            self.relay.start()
        # The retry time written to the outbox is at most one max backoff
        # after the last failure, which came before the stop: past it, the
        # restarted server's first outbox scan finds the row due.
        time.sleep(float(self.max_backoff) + 0.1)
        self.server.start()
        self.wait_mail(addrs[bob])
        self.settle()
        mails = self.relay.to(addrs[bob])
        self.assertEqual(len(mails), 1, "delivered more than once")
        self.assertIn("pending over a restart", body_text(mails[0]))
        self.check_headers(mails[0], addrs[bob], bob)


class NotifyMbox(NotifyCase):
    """No --smtp-url: notifications go to <db dir>/mail.mbox (mboxrd)."""

    use_relay = False

    def mbox(self):
        try:
            with open(os.path.join(self.server.tmp, "mail.mbox"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    async def test_offline_dm_goes_to_mbox(self):
        alice, bob, addrs = self.users()
        a = await self.connect(alice)
        text = "from the mbox\nFrom here on, quoted\n>From already quoted"
        await a.call({"type": "dm", "to": bob, "text": text}, "ack")
        data = harness.wait_for(lambda: (lambda d: d if addrs[bob].encode() in d
                                         and d.endswith(b"\n\n") else None)(self.mbox()),
                                3 * T, what="an mbox entry for bob")
        self.settle()
        data = self.mbox()
        self.assertNotIn(b"\r", data, "mbox lines end in LF")
        entries = re.split(rb"(?m)^(?=From )", data)
        entries = [e for e in entries if e]
        self.assertEqual(len(entries), 1, data[:500])
        entry = entries[0]
        first, _, rest = entry.partition(b"\n")
        self.assertRegex(first.decode(),
                         r"^From \S+@\S+ (Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
                         r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d "
                         r"\d\d:\d\d:\d\d \d{4}$")
        # mboxrd: undo the quoting of ^>*From lines, then it is the message
        lines = [re.sub(rb"^>(>*From )", rb"\1", ln) for ln in rest.split(b"\n")]
        msg = parse_mail(b"\r\n".join(lines))
        self.assertIn(addrs[bob], str(msg["To"]))
        self.assertIn(alice, str(msg["Subject"]))
        body = body_text(msg).replace("\r\n", "\n")
        for piece in ("from the mbox", "From here on, quoted", ">From already quoted"):
            self.assertIn(piece, body)
        # no line of the entry after the separator may start with "From "
        self.assertFalse([ln for ln in rest.split(b"\n") if ln.startswith(b"From ")])


if __name__ == "__main__":
    harness.main()
