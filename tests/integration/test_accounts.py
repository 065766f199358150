"""Accounts, tokens, per-user counters, rate limits, idempotency and metrics.

Every case runs a real parleyd (harness.Server) and talks to it over HTTP
and WebSocket on loopback. Tokens are also forged here with hmac/hashlib,
keyed by the server's own secret file (<db dir>/token.secret) the way an
operator's backend would mint them, so the server's checks are tested
against tokens it did not write itself.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

import websockets

import harness
from harness import PARLEYD, SCALE, T, JClient, Server, ServerCase, uniq

PASSWORD = "correct horse battery"


# ------------------------------------------------------------------ helpers

def post(server, path, body, headers=None):
    """POST body (a JSON-able object, or str/bytes as is); returns
    (status, headers, parsed JSON body or the raw bytes if it is not JSON)."""
    if not isinstance(body, (str, bytes, bytearray)):
        body = json.dumps(body)
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    st, h, raw = harness.http_get(server.port, path, method="POST", headers=hdrs, body=body,
                                  timeout=10 * SCALE)
    return st, h, _maybe_json(raw)


def _maybe_json(raw):
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def register(server, user, password=PASSWORD, email=None, expect=201):
    body = {"user": user, "password": password}
    if email is not None:
        body["email"] = email
    st, _, js = post(server, "/api/register", body)
    if expect is not None and st != expect:
        raise AssertionError(f"register {user!r}: {st} {js!r}, expected {expect}")
    return st, js


def login(server, user, password=PASSWORD):
    """The token of a successful login."""
    st, h, js = post(server, "/api/login", {"user": user, "password": password})
    if st != 200:
        raise AssertionError(f"login {user!r}: {st} {js!r}")
    return js["token"]


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def read_secret(server):
    """The server's JWT key: the secret file's bytes, one line end stripped."""
    with open(os.path.join(server.tmp, "token.secret"), "rb") as f:
        key = f.read()
    for end in (b"\r\n", b"\n"):
        if key.endswith(end):
            return key[:-len(end)]
    return key


def mint(key, payload, alg="HS256", header=None):
    """A JWT signed here: alg HS256, HS512 or none (empty signature)."""
    header = header or {"alg": alg, "typ": "JWT"}
    h = b64u(json.dumps(header, separators=(",", ":")).encode())
    p = b64u(json.dumps(payload, separators=(",", ":")).encode())
    signing = f"{h}.{p}".encode()
    if alg == "HS256":
        sig = hmac.new(key, signing, hashlib.sha256).digest()
    elif alg == "HS512":
        sig = hmac.new(key, signing, hashlib.sha512).digest()
    else:
        sig = b""
    return f"{h}.{p}.{b64u(sig)}"


def claims(token):
    return json.loads(b64u_decode(token.split(".")[1]))


def now_s():
    return int(time.time())


async def token_client(case, token, room=None):
    """Connect and sign in with hello {token}; join room if given."""
    c = await JClient.connect(case.server, hello=False)
    case.addAsyncCleanup(c.close)
    c.welcome = await c.call({"type": "hello", "token": token}, "welcome")
    c.user = c.welcome["user"]
    if room:
        c.joined[room] = await c.call({"type": "join", "room": room}, "joined")
    return c


def run_admin(server, args, stdin_text=None):
    """Run an operator command (parleyd token|user ...) on the server's db."""
    return subprocess.run([PARLEYD] + list(args) + ["--db", server.db], input=stdin_text,
                          capture_output=True, text=True, timeout=30 * SCALE)


def metric(server, name):
    return server.metrics().get(name, {}).get("", 0.0)


ADMIN = "admin-" + "0123456789abcdef" * 2


def admin_token_file(tmp):
    """Write ADMIN to a 0600 file in tmp for --admin-token-file."""
    path = os.path.join(tmp, "admin.token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ADMIN + "\n")
    return path


def stats_users(server):
    """GET /api/stats/users with the admin token; the parsed body."""
    st, _, raw = server.get("/api/stats/users", headers={"Authorization": "Bearer " + ADMIN})
    if st != 200:
        raise AssertionError(f"/api/stats/users answered {st}: {raw!r}")
    return json.loads(raw)


def last_count(dumps, user):
    """The user's count in the latest dump line that lists it (a line lists
    only the users active since the line before), or None."""
    for d in reversed(dumps):
        if user in d["users"]:
            return d["users"][user]
    return None


# ------------------------------------------------------------------ open mode

class OpenMode(ServerCase):
    """The default --auth open: the account endpoints do not exist."""

    def test_register_and_login_are_404_json(self):
        for path in ("/api/register", "/api/login"):
            st, h, js = post(self.server, path, {"user": "alice", "password": PASSWORD})
            self.assertEqual(st, 404, js)
            self.assertTrue(h.get("content-type", "").startswith("application/json"), h)
            self.assertIsInstance(js, dict, js)
            self.assertIsInstance(js.get("error"), str, js)

    async def test_hello_with_token_is_auth_failed(self):
        c = await self.json_client()
        tok = mint(b"k" * 32, {"sub": "alice", "iat": now_s(), "exp": now_s() + 600})
        r = await c.call({"type": "hello", "token": tok})
        self.assertEqual((r["type"], r.get("code")), ("error", "auth_failed"), r)

    def test_start_warns_what_open_mode_allows(self):
        lines = [x for x in self.server.log_text().splitlines() if "open mode" in x]
        self.assertEqual(len(lines), 1, self.server.log_text())
        self.assertIn(" warn ", lines[0])
        for words in ("trusted networks", "any name", "DMs", "--auth accounts"):
            self.assertIn(words, lines[0])

    def test_stats_users_without_an_admin_token_configured_is_403(self):
        """No --admin-token-file: the endpoint is closed, whatever is sent."""
        for hdrs in ({}, {"Authorization": "Bearer " + ADMIN}, {"Authorization": "Bearer "}):
            with self.subTest(hdrs=hdrs):
                st, h, raw = self.server.get("/api/stats/users", headers=hdrs)
                self.assertEqual(st, 403, raw)
                js = json.loads(raw)
                self.assertEqual(js.get("error"), "forbidden", js)
                self.assertIn("--admin-token-file", js.get("message", ""), js)


# ------------------------------------------------------------------ accounts mode

class Accounts(ServerCase):
    server_args = ("--auth", "accounts")

    def test_no_open_mode_warning(self):
        self.assertNotIn("open mode", self.server.log_text())

    async def test_dm_rooms_only_with_users_that_exist(self):
        """A DM room can be joined with a user the server has a record of (an
        account, a live connection, a name seen with a token), and its
        history is the participants' to read; with a name nobody ever held
        the join is refused before any room is made."""
        alice, bob = uniq("xa"), uniq("xb")
        register(self.server, alice)
        register(self.server, bob)  # never connects
        a = await token_client(self, login(self.server, alice))
        ack = await a.call({"type": "dm", "to": bob, "text": "while you are away"}, "ack")
        j = await a.call({"type": "join", "room": ack["room"]}, "joined")
        self.assertEqual([m["text"] for m in j["history"]], ["while you are away"])
        h = await a.call({"type": "history", "room": ack["room"]}, "history")
        self.assertEqual([m["text"] for m in h["messages"]], ["while you are away"])

        rooms_before = metric(self.server, "parley_rooms")
        ghost = uniq("ghost")
        e = await a.call({"type": "join", "room": "dm:" + ":".join(sorted([alice, ghost])),
                          "ref": "g"})
        self.assertEqual((e["type"], e.get("code"), e.get("ref")), ("error", "no_such_user", "g"))
        self.assertEqual(metric(self.server, "parley_rooms"), rooms_before)

        # a name seen once with a backend-minted token is a user from then on
        tok_user = uniq("xt")
        key = read_secret(self.server)
        t = await token_client(self, mint(key, {"sub": tok_user, "iat": now_s(),
                                                "exp": now_s() + 600}))
        await t.close()
        j = await a.call({"type": "join", "room": "dm:" + ":".join(sorted([alice, tok_user]))},
                         "joined")
        self.assertEqual(j["history"], [])

    def test_register_login_token(self):
        user = uniq("reg")
        st, js = register(self.server, user, email=f"{user}@example.org")
        self.assertEqual(st, 201)
        t0 = time.time() * 1000
        st, _, js = post(self.server, "/api/login", {"user": user, "password": PASSWORD})
        self.assertEqual(st, 200, js)
        self.assertIsInstance(js.get("token"), str, js)
        exp = js.get("expires")
        self.assertTrue(isinstance(exp, int) and not isinstance(exp, bool), js)
        # ms since the epoch, about the default --token-ttl (1 day) from now
        self.assertGreater(exp, t0 + 86000 * 1000, js)
        self.assertLess(exp, t0 + 87000 * 1000, js)
        cl = claims(js["token"])
        self.assertEqual(cl["sub"], user)
        self.assertEqual(cl["exp"] * 1000, exp)

    def test_register_refusals(self):
        bad_bodies = [
            ({"user": "no spaces", "password": PASSWORD}, 400),
            ({"user": "", "password": PASSWORD}, 400),
            ({"user": "x" * 33, "password": PASSWORD}, 400),
            ({"user": "a/b", "password": PASSWORD}, 400),
            ({"user": uniq("pw"), "password": "seven77"}, 400),
            ({"user": uniq("pw"), "password": ""}, 400),
            ({"user": uniq("em"), "password": PASSWORD, "email": "no-at-sign"}, 400),
            ({"user": uniq("em"), "password": PASSWORD, "email": "two@@example.org"}, 400),
            ({"user": uniq("em"), "password": PASSWORD, "email": "sp ace@example.org"}, 400),
            ({"user": uniq("em"), "password": PASSWORD,
              "email": "a@example.org\r\nBcc: evil@example.org"}, 400),
            ({"user": uniq("em"), "password": PASSWORD, "email": "a@example.org\nX: y"}, 400),
            ({"user": uniq("em"), "password": PASSWORD, "email": "a@example.org\r"}, 400),
            ({"password": PASSWORD}, 400),
            ({"user": uniq("np")}, 400),
            ({"user": 5, "password": PASSWORD}, 400),
            ("this is not json", 400),
            ("[1, 2, 3]", 400),
            ('{"user": "dup", "user": "dup2", "password": "' + PASSWORD + '"}', 400),
            ("", 400),
        ]
        for body, want in bad_bodies:
            with self.subTest(body=body):
                st, h, js = post(self.server, "/api/register", body)
                self.assertEqual(st, want, js)
                self.assertIsInstance(js, dict, f"the error body is not valid JSON: {js!r}")
                self.assertIsInstance(js.get("error"), str, js)
        # a refused registration did not take the name
        for body, _ in bad_bodies:
            if isinstance(body, dict) and isinstance(body.get("user"), str) and \
                    re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", body["user"]):
                st, _, js = post(self.server, "/api/login",
                                 {"user": body["user"], "password": body.get("password") or "x"})
                self.assertEqual(st, 401, (body, js))

    def test_oversize_body_is_413(self):
        body = json.dumps({"user": uniq("big"), "password": PASSWORD, "pad": "x" * 9000})
        st, _, js = post(self.server, "/api/register", body)
        self.assertEqual(st, 413, js)
        self.assertEqual(js.get("error"), "too_large", js)
        # no Content-Length to go by: refused as such (411) or once the
        # bytes received pass the limit (413)
        st, js = self.chunked_post("/api/login", body.encode(), 1000)
        self.assertIn(st, (411, 413), js)
        # the server still answers afterwards
        st, _, _ = self.server.get("/healthz")
        self.assertEqual(st, 200)

    def test_chunked_body_is_answered(self):
        """A small body in chunked transfer encoding gets an answer (the
        login's, or a refusal such as 411), not silence."""
        user = uniq("ch")
        register(self.server, user)
        body = json.dumps({"user": user, "password": PASSWORD}).encode()
        st, js = self.chunked_post("/api/login", body, 16)
        self.assertIn(st, (200, 400, 411), js)
        if st == 200:
            self.assertEqual(claims(js["token"])["sub"], user)

    def chunked_post(self, path, body, chunk):
        """A POST with Transfer-Encoding: chunked (no Content-Length); returns
        (status, parsed JSON body); fails if no complete answer comes in T."""
        req = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
        for i in range(0, len(body), chunk):
            part = body[i:i + chunk]
            req += f"{len(part):x}\r\n".encode() + part + b"\r\n"
        req += b"0\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=T) as s:
            try:
                s.sendall(req)
            except (BrokenPipeError, ConnectionResetError):
                pass
            data = b""
            deadline = time.monotonic() + T
            while True:
                head, sep, rest = data.partition(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                if sep and m and len(rest) >= int(m.group(1)):
                    break
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, f"no complete answer in {T:.0f} s: {data[:200]!r}")
                s.settimeout(left)
                try:
                    more = s.recv(65536)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    more = b""
                self.assertTrue(more, f"connection closed without an answer: {data[:200]!r}")
                data += more
        st = re.match(rb"HTTP/1\.[01] (\d{3})", data)
        self.assertIsNotNone(st, data[:200])
        return int(st.group(1)), _maybe_json(rest[:int(m.group(1))])

    def test_name_taken_is_409(self):
        user = uniq("tk")
        register(self.server, user)
        st, js = register(self.server, user, password="another password", expect=None)
        self.assertEqual(st, 409, js)
        # the first password still holds
        login(self.server, user)
        st, _, _ = post(self.server, "/api/login", {"user": user, "password": "another password"})
        self.assertEqual(st, 401)

    def test_login_failures_look_the_same(self):
        user = uniq("lf")
        register(self.server, user)
        before = metric(self.server, "parley_auth_failures_total")
        st1, h1, raw1 = harness.http_get(
            self.server.port, "/api/login", method="POST",
            body=json.dumps({"user": user, "password": "wrong password"}))
        st2, h2, raw2 = harness.http_get(
            self.server.port, "/api/login", method="POST",
            body=json.dumps({"user": uniq("nobody"), "password": "wrong password"}))
        self.assertEqual((st1, st2), (401, 401))
        self.assertEqual(raw1, raw2, "wrong password and unknown user must be indistinguishable")
        self.assertEqual(h1.get("content-type"), h2.get("content-type"))
        self.assertEqual(json.loads(raw1).get("error"), "auth_failed")
        self.assertGreaterEqual(metric(self.server, "parley_auth_failures_total"), before + 2)

    async def test_hello_token_and_query_token(self):
        user = uniq("ht")
        register(self.server, user)
        tok = login(self.server, user)
        c = await token_client(self, tok)
        self.assertEqual(c.welcome["user"], user)
        self.assertEqual(c.welcome["user"], claims(tok)["sub"])
        room = uniq("r")
        q = await JClient.connect(self.server, query=f"token={tok}&room={room}")
        self.addAsyncCleanup(q.close)
        w = await q.recv()
        self.assertEqual((w["type"], w.get("user")), ("welcome", user), w)
        j = await q.recv()
        self.assertEqual((j["type"], j.get("room")), ("joined", room), j)
        # two connections of one user in accounts mode are fine
        self.assertEqual((await q.call({"type": "ping"}))["type"], "pong")

    async def test_secret_minted_token_is_accepted(self):
        """An operator's backend holding the secret can mint tokens."""
        key = read_secret(self.server)
        self.assertGreaterEqual(len(key), 32)
        user = uniq("mint")
        tok = mint(key, {"sub": user, "iat": now_s(), "exp": now_s() + 600})
        c = await token_client(self, tok)
        self.assertEqual(c.welcome["user"], user)

    def forged_tokens(self):
        key = read_secret(self.server)
        a, b = uniq("fa"), uniq("fb")
        good = {"sub": a, "iat": now_s(), "exp": now_s() + 600}
        ta = mint(key, good)
        tb = mint(key, {"sub": b, "iat": now_s(), "exp": now_s() + 600})
        wrong_key = mint(b"an entirely different secret key!!", good)
        return {
            "bad signature": wrong_key,
            "signature bytes flipped": ta.rsplit(".", 1)[0] + "." + b64u(
                bytes(x ^ 0x55 for x in b64u_decode(ta.rsplit(".", 1)[1]))),
            "alg none": mint(key, good, alg="none"),
            "alg none, HS256 signature kept": (mint(key, good, alg="none").rsplit(".", 1)[0]
                                               + "." + ta.rsplit(".", 1)[1]),
            "alg HS512": mint(key, good, alg="HS512"),
            "expired": mint(key, {"sub": a, "iat": now_s() - 1000, "exp": now_s() - 10}),
            "no exp": mint(key, {"sub": a, "iat": now_s()}),
            "payload swapped": ".".join([ta.split(".")[0], tb.split(".")[1],
                                         ta.split(".")[2]]),
            "signature swapped": ".".join(ta.split(".")[:2] + [tb.split(".")[2]]),
            "garbage": "not.a.token",
        }

    async def test_forged_tokens_hello(self):
        before = metric(self.server, "parley_auth_failures_total")
        tokens = self.forged_tokens()
        c = await self.json_client()
        for what, tok in tokens.items():
            with self.subTest(what):
                r = await c.call({"type": "hello", "token": tok})
                self.assertEqual((r["type"], r.get("code")), ("error", "auth_failed"), r)
        # none of them signed the connection in: a good token still can
        user = uniq("after")
        key = read_secret(self.server)
        w = await c.call({"type": "hello", "token": mint(
            key, {"sub": user, "iat": now_s(), "exp": now_s() + 60})}, "welcome")
        self.assertEqual(w["user"], user)
        self.assertGreaterEqual(metric(self.server, "parley_auth_failures_total"),
                                before + len(tokens))

    async def test_forged_tokens_at_connect_close_1008(self):
        for what, tok in self.forged_tokens().items():
            with self.subTest(what):
                c = await JClient.connect(self.server, query=f"token={tok}")
                try:
                    e = await c.expect_error("auth_failed")
                    self.assertEqual(e["type"], "error")
                    self.assertEqual(await c.wait_closed(), 1008)
                finally:
                    await c.close()

    async def test_hello_user_without_token_fails(self):
        c = await self.json_client()
        r = await c.call({"type": "hello", "user": uniq("nt")})
        self.assertEqual((r["type"], r.get("code")), ("error", "auth_failed"), r)
        # query-string user in accounts mode: refused the same way
        q = await JClient.connect(self.server, query=f"user={uniq('nq')}")
        try:
            e = await q.recv()
            self.assertEqual((e["type"], e.get("code")), ("error", "auth_failed"), e)
        finally:
            await q.close()

    async def test_operator_commands(self):
        # parleyd token: a token the running server accepts
        user = uniq("op")
        p = run_admin(self.server, ["token", "--user", user, "--ttl", "1h"])
        self.assertEqual(p.returncode, 0, p.stderr)
        tok = p.stdout.strip()
        cl = claims(tok)
        self.assertEqual(cl["sub"], user)
        self.assertEqual(cl["exp"] - cl["iat"], 3600)
        c = await token_client(self, tok)
        self.assertEqual(c.welcome["user"], user)

        # parleyd user add / passwd / del, the password on stdin
        name = uniq("cli")
        p = run_admin(self.server, ["user", "add", name, "--email", f"{name}@example.org"],
                      "first password\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        tok = login(self.server, name, "first password")
        self.assertEqual(claims(tok)["sub"], name)
        c2 = await token_client(self, tok)
        self.assertEqual(c2.welcome["user"], name)
        # adding it again is refused, and the account is untouched
        p = run_admin(self.server, ["user", "add", name], "other password\n")
        self.assertNotEqual(p.returncode, 0)
        login(self.server, name, "first password")
        # too short a password is refused
        p = run_admin(self.server, ["user", "passwd", name], "short\n")
        self.assertNotEqual(p.returncode, 0)
        login(self.server, name, "first password")

        p = run_admin(self.server, ["user", "passwd", name], "second password\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        st, _, _ = post(self.server, "/api/login", {"user": name, "password": "first password"})
        self.assertEqual(st, 401)
        login(self.server, name, "second password")

        p = run_admin(self.server, ["user", "del", name])
        self.assertEqual(p.returncode, 0, p.stderr)
        st, _, _ = post(self.server, "/api/login", {"user": name, "password": "second password"})
        self.assertEqual(st, 401)
        # a deleted name stays reserved (Identities has the details)
        register(self.server, name, expect=409)

    async def test_operator_accounts_seen_by_the_running_server(self):
        """An account added with `parleyd user add` while the server runs is
        an account once the server is told to reload (SIGHUP, as with
        mosquitto_passwd): a DM to it is accepted (no_such_user is for names
        with no account); once deleted with `user del` and reloaded, it is
        no longer one."""
        alice = uniq("dma")
        register(self.server, alice)
        a = await token_client(self, login(self.server, alice))
        name = uniq("dmc")
        p = run_admin(self.server, ["user", "add", name, "--email", f"{name}@example.org"],
                      PASSWORD + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.server.proc.send_signal(signal.SIGHUP)
        r = await self.dm_until(a, name, "ack")
        self.assertEqual(r["type"], "ack", f"DM to an account added by the operator: {r}")
        p = run_admin(self.server, ["user", "del", name])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.server.proc.send_signal(signal.SIGHUP)
        r = await self.dm_until(a, name, "error")
        self.assertEqual((r["type"], r.get("code")), ("error", "no_such_user"),
                         f"DM to a deleted account: {r}")

    async def dm_until(self, client, to, want):
        """DM `to` until the reply has type `want` (the reload after SIGHUP is
        asynchronous to us); at most T seconds; returns the last reply."""
        deadline = time.monotonic() + T
        while True:
            r = await client.call({"type": "dm", "to": to, "text": "welcome aboard"})
            if r["type"] == want or time.monotonic() > deadline:
                return r
            await asyncio.sleep(0.05)

    async def test_two_tabs(self):
        alice, bob = uniq("ta"), uniq("tb")
        register(self.server, alice)
        register(self.server, bob)
        ta, tb = login(self.server, alice), login(self.server, bob)
        room = uniq("tabs")
        b = await token_client(self, tb, room)
        a1 = await token_client(self, ta, room)
        await b.expect_type("presence", room=room, user=alice, event="join")
        a2 = await token_client(self, ta)
        j = await a2.call({"type": "join", "room": room}, "joined")
        self.assertEqual(sorted(j["members"]), sorted([alice, bob]))
        # the second tab joining is not news to bob
        await b.sync()
        await b.expect_none(lambda f: f["type"] == "presence", what="(second tab joined)")
        w = await b.call({"type": "who", "room": room}, "members")
        self.assertEqual(sorted(w["users"]), sorted([alice, bob]))

        # both tabs get room messages and DMs
        ack = await b.send_msg(room, "to both tabs")
        for tab in (a1, a2):
            m = await tab.expect_type("message", room=room, seq=ack["seq"])
            self.assertEqual(m["text"], "to both tabs")
        ack = await b.call({"type": "dm", "to": alice, "text": "psst"}, "ack")
        for tab in (a1, a2):
            m = await tab.expect_type("message", room=ack["room"], seq=ack["seq"])
            self.assertEqual((m["from"], m["text"]), (bob, "psst"))

        # the first tab leaving while the second stays: no leave for bob
        await a1.call({"type": "leave", "room": room}, "left")
        await a1.close()
        await b.sync()
        await b.expect_none(lambda f: f["type"] == "presence", what="(one tab of two left)")
        w = await b.call({"type": "who", "room": room}, "members")
        self.assertEqual(sorted(w["users"]), sorted([alice, bob]))
        # the last tab leaving is
        await a2.call({"type": "leave", "room": room}, "left")
        await b.expect_type("presence", room=room, user=alice, event="leave")


# ------------------------------------------------------------------ login throttling

def known_flags(*pairs):
    """The (flag, value) pairs this parleyd knows, flattened: a class can tune
    the login pool and still run against a build that predates those options
    (and fail on its assertions, not at start)."""
    known = harness.parleyd_flags()
    return tuple(x for flag, value in pairs if flag[2:] in known for x in (flag, value))


def api_post(server, path, body, src=None, timeout=30 * SCALE):
    """POST a JSON body, optionally from another loopback source address;
    returns (status, headers, parsed body)."""
    st, h, raw = harness.http_get(server.port, path, method="POST", body=json.dumps(body),
                                  headers={"Content-Type": "application/json"},
                                  timeout=timeout, src=src)
    return st, h, _maybe_json(raw)


def in_threads(fns):
    """Run each fn on its own thread, all at once; returns their results in
    the order they finished, each as (index, result, monotonic end time)."""
    out, lock = [], threading.Lock()

    def run(i, fn):
        try:
            r = fn()
        except Exception as e:  # noqa: BLE001 - reported as the result
            r = e
        with lock:
            out.append((i, r, time.monotonic()))

    ts = [threading.Thread(target=run, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in ts:
        t.start()
    return out, ts


class ThrottleAsserts:
    def assert_throttled(self, st, h, js):
        """A 429 as PROTOCOL.md §12 has it; returns retry_after_ms."""
        self.assertEqual(st, 429, js)
        self.assertIsInstance(js, dict, js)
        self.assertEqual(js.get("error"), "rate_limited", js)
        self.assertIsInstance(js.get("message"), str, js)
        ms = js.get("retry_after_ms")
        self.assertTrue(isinstance(ms, int) and not isinstance(ms, bool) and ms > 0, js)
        ra = h.get("retry-after", "")
        self.assertRegex(ra, r"^[1-9][0-9]*$", h)
        self.assertEqual(int(ra), -(-ms // 1000), f"Retry-After is not {ms} ms rounded up")
        return ms


class LoginBackoff(ThrottleAsserts, ServerCase):
    """Failed logins for one name back off exponentially (the defaults: 5
    failures, then 1 s, 2 s, 4 s, ...), refused with 429 before any hashing;
    while it lasts even the right password is refused; success resets it."""

    server_args = ("--auth", "accounts")
    WRONG = "wrong password"

    def until_not_429(self, user, password, longest_ms):
        """Retry (every 50 ms, bounded) while the name is backing off; the
        first answer that is not a 429."""
        deadline = time.monotonic() + longest_ms / 1000 + 5 * SCALE
        while True:
            st, h, js = api_post(self.server, "/api/login", {"user": user, "password": password})
            if st != 429:
                return st, js
            self.assert_throttled(st, h, js)
            self.assertLessEqual(js["retry_after_ms"], longest_ms, js)
            self.assertLess(time.monotonic(), deadline, "the backoff did not end")
            time.sleep(0.05)

    def test_wrong_passwords_back_off_longer_each_time(self):
        user, other = uniq("bo"), uniq("bok")
        register(self.server, user)
        register(self.server, other)
        before = metric(self.server, "parley_login_throttled_total")
        for i in range(5):
            st, _, js = api_post(self.server, "/api/login", {"user": user, "password": self.WRONG})
            self.assertEqual(st, 401, f"failure {i + 1}: {js}")
        waits = []
        for step, longest in enumerate((1000, 2000)):
            ms = self.assert_throttled(*api_post(self.server, "/api/login",
                                                 {"user": user, "password": self.WRONG}))
            self.assertLessEqual(ms, longest)
            waits.append(ms)
            if step == 0:
                # the name backs off, not the address: another user signs in
                login(self.server, other)
            st, js = self.until_not_429(user, self.WRONG, longest)
            self.assertEqual(st, 401, js)
        # now 4 s: the right password is refused too while it lasts
        ms = self.assert_throttled(*api_post(self.server, "/api/login",
                                             {"user": user, "password": PASSWORD}))
        self.assertLessEqual(ms, 4000)
        waits.append(ms)
        self.assertTrue(waits[0] < waits[1] < waits[2], f"Retry-After does not grow: {waits}")
        st, js = self.until_not_429(user, PASSWORD, 4000)
        self.assertEqual(st, 200, js)
        self.assertEqual(claims(js["token"])["sub"], user)
        # the success wiped the slate: one wrong password is an ordinary 401
        st, _, js = api_post(self.server, "/api/login", {"user": user, "password": self.WRONG})
        self.assertEqual(st, 401, js)
        self.assertGreaterEqual(metric(self.server, "parley_login_throttled_total") - before, 3)

    def test_unknown_name_backs_off_the_same(self):
        """No telling registered names from others by the throttle."""
        ghost = uniq("ghost")
        for i in range(5):
            st, _, js = api_post(self.server, "/api/login", {"user": ghost, "password": self.WRONG})
            self.assertEqual(st, 401, f"failure {i + 1}: {js}")
        ms = self.assert_throttled(*api_post(self.server, "/api/login",
                                             {"user": ghost, "password": self.WRONG}))
        self.assertLessEqual(ms, 1000)
        # what the throttle remembers is counted: this name and the address
        self.assertGreaterEqual(metric(self.server, "parley_login_throttle_entries"), 2)


class LoginPool(ThrottleAsserts, ServerCase):
    """Junk logins from one address do not hold up a login from another."""

    server_args = ("--auth", "accounts") + known_flags(("--login-workers", "2"))

    def test_junk_logins_do_not_delay_another_address(self):
        user = uniq("real")
        register(self.server, user)
        junk = [lambda: api_post(self.server, "/api/login",
                                 {"user": uniq("junk"), "password": "wrong password"})
                for _ in range(20)]
        done, threads = in_threads(junk)
        # the server has begun answering the junk: all 20 are in by then
        # (an answer takes a hash, or the flood is being refused)
        harness.wait_for(lambda: done, T, what="a first answer to the junk logins")
        st, _, js = api_post(self.server, "/api/login", {"user": user, "password": PASSWORD},
                             src="127.0.0.2")
        t_real = time.monotonic()
        self.assertEqual(st, 200, js)
        for t in threads:
            t.join(60 * SCALE)
        self.assertEqual(len(done), 20, "not every junk login was answered")
        results = [r for _, r, _ in done]
        for r in results:
            self.assertNotIsInstance(r, Exception)
        # structural, not a stopwatch: one worker serving in arrival order
        # hashes all 20 junk logins before the real one; a pool that takes
        # turns between addresses (and caps what one address may queue)
        # answers it after at most a few
        hashed_before = sum(1 for _, r, t in done if r[0] == 401 and t < t_real)
        self.assertLessEqual(hashed_before, 10,
                             f"{hashed_before} junk logins were hashed before the real one")
        refused = [r for r in results if r[0] == 429]
        self.assertGreaterEqual(len(refused), 5, "one address queued the whole flood")
        for st, h, js in refused:
            self.assert_throttled(st, h, js)
        self.assertEqual({r[0] for r in results} - {401, 429}, set())


class LoginQueueFull(ThrottleAsserts, ServerCase):
    """A full queue answers 429 with Retry-After (it was 503 without one)."""

    server_args = ("--auth", "accounts") + known_flags(("--login-workers", "1"),
                                                       ("--login-queue", "2"))

    def test_full_queue_is_429_with_retry_after(self):
        before = metric(self.server, "parley_login_queue_full_total")
        # eight addresses, one request each: the per-address share is not
        # what refuses them, the queue is
        reqs = [lambda i=i: api_post(self.server, "/api/login",
                                     {"user": uniq("q"), "password": "wrong password"},
                                     src=f"127.0.0.{i + 2}")
                for i in range(8)]
        done, threads = in_threads(reqs)
        for t in threads:
            t.join(60 * SCALE)
        self.assertEqual(len(done), 8)
        results = [r for _, r, _ in done]
        for r in results:
            self.assertNotIsInstance(r, Exception)
        statuses = sorted(r[0] for r in results)
        full = [r for r in results if r[0] == 429]
        self.assertTrue(full, f"8 logins at once, one worker, a queue of 2: {statuses}")
        for st, h, js in full:
            self.assert_throttled(st, h, js)
        self.assertEqual(set(statuses) - {401, 429}, set(), statuses)
        self.assertGreaterEqual(metric(self.server, "parley_login_queue_full_total") - before,
                                len(full))
        # the queue drains: the next request is served
        register(self.server, uniq("after"))
        self.assertEqual(self.server.metric("parley_login_queue_depth"), 0)


class LoginRate(ThrottleAsserts, ServerCase):
    """Login and register requests per client address: a token bucket
    (here one per 100 s, burst 3: slow enough that no token comes back
    while the test runs, however slow the machine), refused with 429 before
    any hashing; another address has its own."""

    server_args = ("--auth", "accounts") + known_flags(("--login-rate", "0.01"),
                                                       ("--login-burst", "3"))

    def test_requests_per_address_are_rate_limited(self):
        before = metric(self.server, "parley_login_rate_limited_total")
        statuses = []
        for _ in range(5):
            st, h, js = api_post(self.server, "/api/register",
                                 {"user": uniq("rl"), "password": PASSWORD})
            statuses.append(st)
            if st == 429:
                self.assertLessEqual(self.assert_throttled(st, h, js), 100000)
        self.assertEqual(statuses, [201] * 3 + [429] * 2)
        # another address, another bucket
        st, _, js = api_post(self.server, "/api/register", {"user": uniq("rl"),
                                                             "password": PASSWORD},
                             src="127.0.0.2")
        self.assertEqual(st, 201, js)
        self.assertGreaterEqual(metric(self.server, "parley_login_rate_limited_total") - before,
                                statuses.count(429))
# ------------------------------------------------------------------ identities

class Identities(ServerCase):
    """A name belongs to whoever used it first: registration never takes
    over a name that signed in before (a backend-minted token) or that the
    operator deleted; a password change or a deletion revokes the tokens
    issued before it, at connect, on hello and on live connections, which
    the running server notices by itself (no SIGHUP) within a second or
    so. Passwords and deletions are made with the real `parleyd user`
    binary on the server's database, as an operator would."""

    server_args = ("--auth", "accounts")

    def minted(self, user, iat=None, ttl=600):
        iat = now_s() if iat is None else iat
        return mint(read_secret(self.server), {"sub": user, "iat": iat, "exp": now_s() + ttl})

    async def refused_at_connect(self, token):
        """Connect with ?token=: auth_failed then close 1008."""
        c = await JClient.connect(self.server, query=f"token={token}")
        try:
            e = await c.expect_error("auth_failed")
            self.assertEqual(await c.wait_closed(), 1008)
            return e
        finally:
            await c.close()

    async def test_registering_a_token_only_name_is_409(self):
        bob, sso = uniq("ib"), uniq("sso")
        register(self.server, bob)
        b = await token_client(self, login(self.server, bob))
        # sso only ever signs in with tokens its backend mints
        s1 = await token_client(self, self.minted(sso))
        ack = await b.call({"type": "dm", "to": sso, "text": "the launch code is 1234"}, "ack")
        await s1.expect_type("message", room=ack["room"], seq=ack["seq"])
        await s1.close()

        # an attacker registers the name: refused, and nothing is changed
        st, js = register(self.server, sso, password="attacker password",
                          email="attacker@example.org", expect=None)
        self.assertEqual((st, js.get("error")), (409, "taken"), js)
        st, _, _ = post(self.server, "/api/login", {"user": sso, "password": "attacker password"})
        self.assertEqual(st, 401, "a refused registration must not leave a password behind")
        # with no token for the name, the DM history stays out of reach
        a = await self.json_client()
        r = await a.call({"type": "hello", "user": sso})
        self.assertEqual((r["type"], r.get("code")), ("error", "auth_failed"), r)
        r = await a.call({"type": "history", "room": ack["room"]})
        self.assertEqual((r["type"], r.get("code")), ("error", "auth_required"), r)

        # the real sso user still signs in with its backend's tokens, and
        # reads its own DMs
        s2 = await token_client(self, self.minted(sso))
        h = await s2.call({"type": "history", "room": ack["room"]}, "history")
        self.assertEqual([m["text"] for m in h["messages"]], ["the launch code is 1234"])

        # the operator may give the name a password (the same person, who
        # now also logs in with one): a trusted, deliberate act
        p = run_admin(self.server, ["user", "add", sso], PASSWORD + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        login(self.server, sso)
        await s2.sync()

    async def test_user_del_reserves_the_name(self):
        bob, alice = uniq("db"), uniq("da")
        register(self.server, bob)
        register(self.server, alice, email=f"{alice}@example.org")
        b = await token_client(self, login(self.server, bob))
        ack = await b.call({"type": "dm", "to": alice, "text": "for alice only"}, "ack")

        p = run_admin(self.server, ["user", "del", alice])
        self.assertEqual(p.returncode, 0, p.stderr)
        st, js = register(self.server, alice, password="attacker password", expect=None)
        self.assertEqual((st, js.get("error")), (409, "taken"), js)
        st, _, _ = post(self.server, "/api/login", {"user": alice, "password": PASSWORD})
        self.assertEqual(st, 401)
        st, _, _ = post(self.server, "/api/login", {"user": alice, "password": "attacker password"})
        self.assertEqual(st, 401)
        # nor does the operator hand it out again by mistake
        p = run_admin(self.server, ["user", "add", alice], "operator password\n")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("reserved", p.stderr)
        # deleting again is fine; a name never seen is an error
        p = run_admin(self.server, ["user", "del", alice])
        self.assertEqual(p.returncode, 0, p.stderr)
        p = run_admin(self.server, ["user", "del", uniq("never")])
        self.assertNotEqual(p.returncode, 0)
        # a token minted for it now (by a backend that did not hear of the
        # deletion) does not open its DMs either
        e = await self.refused_once_polled(self.minted(alice))
        self.assertIn("deleted", e["message"])
        # the DM is still there for bob
        h = await b.call({"type": "history", "room": ack["room"]}, "history")
        self.assertEqual([m["text"] for m in h["messages"]], ["for alice only"])

    async def refused_once_polled(self, token):
        """The server takes in `parleyd user` changes within about a second:
        connect with token until refused (bounded by T); returns the error."""
        deadline = time.monotonic() + T
        while True:
            c = await JClient.connect(self.server, query=f"token={token}")
            try:
                f = await c.recv()
                if f["type"] == "error" or time.monotonic() > deadline:
                    self.assertEqual((f["type"], f.get("code")), ("error", "auth_failed"), f)
                    self.assertEqual(await c.wait_closed(), 1008)
                    return f
            finally:
                await c.close()
            await asyncio.sleep(0.05)

    async def test_user_del_closes_live_connections_and_revokes_tokens(self):
        dave, bob = uniq("dd"), uniq("dbb")
        register(self.server, dave)
        register(self.server, bob)
        tok = login(self.server, dave)
        backend_tok = self.minted(dave)
        room = uniq("droom")
        d1 = await token_client(self, tok, room)
        d2 = await JClient.connect(self.server, query=f"token={tok}&room={room}")
        self.addAsyncCleanup(d2.close)
        await d2.expect_type("welcome")
        d3 = await token_client(self, backend_tok)
        b = await token_client(self, login(self.server, bob))
        before = metric(self.server, "parley_auth_revoked_total")

        p = run_admin(self.server, ["user", "del", dave])
        self.assertEqual(p.returncode, 0, p.stderr)
        # committed now; no SIGHUP: the server notices by itself. The bound:
        # one poll period (1 s) plus scheduling slack.
        t0 = time.monotonic()
        bound = 1.0 + 2.0 * SCALE
        for c in (d1, d2, d3):
            self.assertEqual(await c.wait_closed(timeout=bound), 4003)
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, bound + 1.0, f"closed only after {elapsed:.2f} s")
        self.assertGreaterEqual(metric(self.server, "parley_auth_revoked_total"), before + 3)

        # every token of dave is refused, on connect and on hello, old or new
        for t in (tok, backend_tok, self.minted(dave, iat=now_s() + 1)):
            e = await self.refused_at_connect(t)
            self.assertIn("deleted", e["message"])
        c = await self.json_client()
        r = await c.call({"type": "hello", "token": tok})
        self.assertEqual((r["type"], r.get("code")), ("error", "auth_failed"), r)
        # the connection stays usable for someone else
        await c.call({"type": "hello", "token": login(self.server, bob)}, "welcome")
        # and dave is no longer someone to DM
        r = await b.call({"type": "dm", "to": dave, "text": "still there?"})
        self.assertEqual((r["type"], r.get("code")), ("error", "no_such_user"), r)

    async def test_passwd_revokes_older_tokens_not_newer_ones(self):
        carol = uniq("pc")
        register(self.server, carol)
        old_tok = login(self.server, carol)
        old_backend = self.minted(carol)
        c1 = await token_client(self, old_tok)
        before = metric(self.server, "parley_auth_revoked_total")

        p = run_admin(self.server, ["user", "passwd", carol], "a new password\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        # a login right away, in the same second, gets a token that works
        # now and after the server has taken the change in
        new_tok = login(self.server, carol, "a new password")
        c2 = await token_client(self, new_tok)
        st, _, _ = post(self.server, "/api/login", {"user": carol, "password": PASSWORD})
        self.assertEqual(st, 401)

        # the connection on the old token is closed without SIGHUP
        self.assertEqual(await c1.wait_closed(timeout=1.0 + 2.0 * SCALE), 4003)
        self.assertEqual(metric(self.server, "parley_auth_revoked_total"), before + 1)
        # old tokens: refused on connect and on hello
        for t in (old_tok, old_backend):
            e = await self.refused_at_connect(t)
            self.assertIn("revoked", e["message"])
        c = await self.json_client()
        r = await c.call({"type": "hello", "token": old_tok})
        self.assertEqual((r["type"], r.get("code")), ("error", "auth_failed"), r)
        # newer tokens work: the login's, a later login's, a backend's minted
        # after the change, on hello and at connect
        await c2.sync()
        w = await c.call({"type": "hello", "token": new_tok}, "welcome")
        self.assertEqual(w["user"], carol)
        later = self.minted(carol, iat=now_s() + 2)
        for t in (login(self.server, carol, "a new password"), later):
            q = await JClient.connect(self.server, query=f"token={t}")
            self.addAsyncCleanup(q.close)
            self.assertEqual((await q.expect_type("welcome"))["user"], carol)
        await c2.sync()

    async def test_operator_accounts_appear_without_sighup(self):
        """(SIGHUP still reloads: Accounts.test_operator_accounts_seen_by_the_running_server.)"""
        alice = uniq("ha")
        register(self.server, alice)
        a = await token_client(self, login(self.server, alice))
        name = uniq("hc")
        p = run_admin(self.server, ["user", "add", name], PASSWORD + "\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        # a DM to it is accepted once the server has polled (about 1 s)
        deadline = time.monotonic() + 1.0 + 2.0 * SCALE
        while True:
            r = await a.call({"type": "dm", "to": name, "text": "welcome aboard"})
            if r["type"] == "ack" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        self.assertEqual(r["type"], "ack", r)


# ------------------------------------------------------------------ rate limits

class RateLimitDefaults(ServerCase):
    """The default limits (20/s, burst 40), passed explicitly because the
    harness lifts them for the load tests."""
    server_args = ("--rate", "20", "--burst", "40")

    async def test_flood_is_rate_limited(self):
        room = uniq("flood")
        c = await self.json_client(uniq("fl"), room=room)
        limits = c.welcome["limits"]
        self.assertEqual((limits["rate"], limits["burst"]), (20, 40))
        before = metric(self.server, "parley_rate_limited_total")
        n = 60
        for i in range(n):
            await c.send({"type": "send", "room": room, "text": f"m{i}", "ref": f"f{i}"})
        replies = {}
        while len(replies) < n:
            f = await c.expect(lambda f: str(f.get("ref", "")).startswith("f"),
                               what="a reply to the flood")
            replies[f["ref"]] = f
        acks = [f for f in replies.values() if f["type"] == "ack"]
        errors = [f for f in replies.values() if f["type"] == "error"]
        self.assertEqual(len(acks) + len(errors), n)
        self.assertTrue(errors, "60 sends at once were all accepted")
        for e in errors:
            self.assertEqual(e["code"], "rate_limited", e)
            ra = e.get("retry_after_ms")
            self.assertTrue(isinstance(ra, int) and not isinstance(ra, bool), e)
            self.assertGreater(ra, 0, e)
        # the burst went through
        self.assertGreaterEqual(len(acks), 40)
        self.assertEqual(metric(self.server, "parley_rate_limited_total") - before, len(errors))
        # not closed for that: the connection still works
        await c.sync()


class RateLimitAbuse(ServerCase):
    server_args = ("--rate", "1", "--burst", "2", "--abuse-strikes", "5")

    async def test_sustained_flood_closes_4029(self):
        room = uniq("abuse")
        c = await self.json_client(uniq("ab"), room=room)
        before = metric(self.server, "parley_rate_limited_total")
        # Keep sending after each refusal, one request at a time: a client
        # that pipelines still has frames in flight when the server closes,
        # and the kernel's reset for those can destroy the close frame
        # before the client reads it.
        limited = 0
        try:
            for i in range(40):
                r = await c.call({"type": "send", "room": room, "text": f"x{i}"})
                if r["type"] == "error":
                    self.assertEqual(r["code"], "rate_limited", r)
                    limited += 1
        except (websockets.ConnectionClosed, AssertionError):
            pass
        self.assertEqual(await c.wait_closed(), 4029)
        # strikes 1..4 were answered, the fifth closed the connection
        self.assertEqual(limited, 4)
        self.assertGreater(metric(self.server, "parley_rate_limited_total"), before)
        # another user is not affected
        d = await self.json_client(uniq("ok"), room=room)
        await d.send_msg(room, "fine")


# ------------------------------------------------------------------ idempotency

class Idempotency(ServerCase):

    async def test_same_id_same_ack_also_after_restart(self):
        room = uniq("idem")
        sender, watcher = uniq("is"), uniq("iw")
        s = await self.json_client(sender, room=room)
        w = await self.json_client(watcher, room=room)
        a1 = await s.send_msg(room, "once", id="k1")
        a2 = await s.send_msg(room, "once, again", id="k1")
        self.assertEqual((a2["seq"], a2["id"]), (a1["seq"], "k1"))
        self.assertNotEqual(a1["ref"], a2["ref"])
        a3 = await s.send_msg(room, "next", id="k2")
        self.assertEqual(a3["seq"], a1["seq"] + 1)
        got = [await w.expect_type("message", room=room) for _ in range(2)]
        self.assertEqual([(m["seq"], m.get("id")) for m in got],
                         [(a1["seq"], "k1"), (a3["seq"], "k2")])
        await w.sync()
        await w.expect_none(lambda f: f["type"] == "message", what="(duplicate delivered)")

        await s.close()
        await w.close()
        self.server.restart()
        s = await self.json_client(sender, room=room)
        w = await self.json_client(watcher, room=room)
        a4 = await s.send_msg(room, "once, after a restart", id="k1")
        self.assertEqual((a4["seq"], a4["id"]), (a1["seq"], "k1"))
        a5 = await s.send_msg(room, "last", id="k3")
        self.assertEqual(a5["seq"], a3["seq"] + 1)
        m = await w.expect_type("message", room=room)
        self.assertEqual((m["seq"], m.get("id")), (a5["seq"], "k3"))
        h = await w.call({"type": "history", "room": room}, "history")
        self.assertEqual([(x["seq"], x.get("id"), x["text"]) for x in h["messages"]],
                         [(a1["seq"], "k1", "once"), (a3["seq"], "k2", "next"),
                          (a5["seq"], "k3", "last")])


# ------------------------------------------------------------------ counters

def read_dumps(path):
    """Every complete line of a dump file, parsed and shape-checked."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out = []
    for line in data.split(b"\n")[:-1]:  # the part after the last \n is not a line yet
        d = json.loads(line)
        assert isinstance(d, dict) and set(d) == {"ts", "users"}, d
        assert isinstance(d["ts"], int) and isinstance(d["users"], dict), d
        for k, v in d["users"].items():
            assert isinstance(k, str) and isinstance(v, int) and v >= 0, d
        out.append(d)
    return out


class Requests:
    """A client and the number of request frames it sent once signed in."""

    def __init__(self, client):
        self.c = client
        self.n = 0

    async def call(self, obj, expect_type=None):
        self.n += 1
        return await self.c.call(obj, expect_type)

    async def send(self, obj):
        self.n += 1
        await self.c.send(obj)

    async def send_raw(self, data):
        self.n += 1
        await self.c.send_raw(data)

    async def barrier(self):
        """A ping: counted like any request, and answered after everything
        sent before it was handled (and counted)."""
        await self.call({"type": "ping"}, "pong")


async def mixed_requests(r, room, rounds):
    """Requests of every kind, some of them refused, all of them counted."""
    for i in range(rounds):
        await r.call({"type": "join", "room": room}, "joined")
        await r.call({"type": "send", "room": room, "text": f"hello {i}"}, "ack")
        await r.send({"type": "typing", "room": room})
        await r.call({"type": "who", "room": room}, "members")
        await r.call({"type": "rooms"}, "rooms")
        await r.call({"type": "history", "room": room, "limit": 2}, "history")
        await r.call({"type": "leave", "room": room}, "left")
        e = await r.call({"type": "leave", "room": room}, "error")         # not_joined
        assert e["code"] == "not_joined", e
        e = await r.call({"type": "send", "room": room, "text": "x"}, "error")  # not_joined
        assert e["code"] == "not_joined", e
        e = await r.call({"type": "history", "room": "dm:nobody1:nobody2"}, "error")
        assert e["code"] == "forbidden", e
        e = await r.call({"type": "hello", "user": "again"}, "error")   # already signed in
        assert e["code"] in ("bad_request", "auth_failed"), e
    await r.barrier()


class CountersOpen(ServerCase):
    """--dump-interval 0.2 into a file in the test's temporary directory; an
    admin token for the stats API (needed in open mode too)."""

    @classmethod
    def make_server(cls):
        tmp = tempfile.mkdtemp(prefix="parley-it-")
        cls.dump_path = os.path.join(tmp, "c.jsonl")
        return Server(args=["--dump-interval", "0.2", "--dump-file", cls.dump_path,
                            "--admin-token-file", admin_token_file(tmp)], tmpdir=tmp)

    async def test_periodic_dumps_and_stats_api(self):
        alice, bob = uniq("ca"), uniq("cb")
        ra = Requests(await self.json_client(alice))
        rb = Requests(await self.json_client(bob))
        room = uniq("cnt")
        await mixed_requests(ra, room, 3)
        await mixed_requests(rb, room, 1)
        await rb.call({"type": "dm", "to": alice, "text": "hi"}, "ack")
        await rb.barrier()
        want = {alice: ra.n, bob: rb.n}
        lines_before = len(read_dumps(self.dump_path))

        def caught_up():
            d = read_dumps(self.dump_path)
            if d and all(last_count(d, u) == n for u, n in want.items()):
                return d
            return None
        dumps = harness.wait_for(caught_up, 5 * T, what=f"a dump with {want}")
        for u, n in want.items():
            self.assertEqual(last_count(dumps, u), n, dumps[-1])
        # periodic: the lines keep coming, time going forward
        more = harness.wait_for(lambda: (lambda d: d if len(d) >= len(dumps) + 2 else None)(
            read_dumps(self.dump_path)), 5 * T, what="two more periodic dumps")
        self.assertGreater(len(more), lines_before)
        ts = [d["ts"] for d in more]
        self.assertEqual(ts, sorted(ts))
        # a line lists only who was active since the line before: the two
        # idle (still connected) users are in none of the later ones
        for u, n in want.items():
            self.assertNotIn(u, more[-1]["users"], "listed without requests")
            self.assertEqual(last_count(more, u), n, "counts changed without requests")

        js = stats_users(self.server)
        self.assertIsInstance(js["ts"], int)
        for u, n in want.items():
            self.assertEqual(js["users"].get(u), n, js)

    async def test_rate_limited_requests_count(self):
        """Refused by the rate limit is still a request (the harness lifted
        the limit here, so use another server)."""
        tmp = tempfile.mkdtemp(prefix="parley-it-")
        srv = Server(args=["--rate", "1", "--burst", "1", "--abuse-strikes", "1000",
                           "--admin-token-file", admin_token_file(tmp)], tmpdir=tmp)
        self.addCleanup(srv.cleanup)
        srv.start()
        c = await JClient.connect(srv, user=uniq("rl"), room="r")
        self.addAsyncCleanup(c.close)
        r = Requests(c)
        limited = 0
        for i in range(5):
            f = await r.call({"type": "send", "room": "r", "text": f"t{i}"})
            limited += f.get("code") == "rate_limited"
        self.assertGreaterEqual(limited, 3)
        await r.barrier()
        self.assertEqual(stats_users(srv)["users"].get(c.user), r.n + 1)  # + the join
        await c.close()
        self.assertEqual(srv.stop(), 0)

    async def test_malformed_frames_count_too(self):
        """Every request frame of a signed-in user counts, including those the
        decoder refuses (bad_json, bad_request, unknown_type)."""
        user = uniq("mf")
        r = Requests(await self.json_client(user))
        for raw in ("{", "[1]", '{"type":"frob"}', '{"type":"send","room":"x","text":""}',
                    '{"type":"join","room":"no spaces"}', '{"type":5}'):
            await r.send_raw(raw)
            f = await r.c.expect_type("error")
            self.assertIn(f["code"], ("bad_json", "bad_request", "unknown_type"), f)
        await r.barrier()
        self.assertEqual(stats_users(self.server)["users"].get(user), r.n,
                         "malformed request frames of a signed-in user are not counted")


class CountersSignals(ServerCase):
    """A dump interval too long to fire during the test: every line comes
    from SIGUSR1 or from the shutdown."""

    @classmethod
    def make_server(cls):
        tmp = tempfile.mkdtemp(prefix="parley-it-")
        cls.dump_path = os.path.join(tmp, "c.jsonl")
        return Server(args=["--dump-interval", "3600", "--dump-file", cls.dump_path], tmpdir=tmp)

    async def test_sigusr1_and_final_dump(self):
        user = uniq("sg")
        r = Requests(await self.json_client(user))
        await mixed_requests(r, uniq("sig"), 2)
        n1 = r.n
        start_lines = len(read_dumps(self.dump_path))
        self.server.proc.send_signal(signal.SIGUSR1)
        dumps = harness.wait_for(
            lambda: (lambda d: d if len(d) > start_lines else None)(read_dumps(self.dump_path)),
            T, what="the SIGUSR1 dump")
        self.assertEqual(len(dumps), start_lines + 1)
        self.assertEqual(dumps[-1]["users"].get(user), n1, dumps[-1])

        await mixed_requests(r, uniq("sig"), 1)
        await r.c.close()
        rc = self.server.stop()
        self.assertEqual(rc, 0, self.server.log_text())
        dumps = read_dumps(self.dump_path)
        self.assertGreater(len(dumps), start_lines + 1, "no final dump at shutdown")
        self.assertEqual(dumps[-1]["users"].get(user), r.n, dumps[-1])


class CountersAccounts(ServerCase):
    """Accounts mode: the stats API needs the admin token."""

    ADMIN = ADMIN

    @classmethod
    def make_server(cls):
        tmp = tempfile.mkdtemp(prefix="parley-it-")
        tokf = admin_token_file(tmp)
        cls.dump_path = os.path.join(tmp, "c.jsonl")
        return Server(args=["--auth", "accounts", "--admin-token-file", tokf,
                            "--dump-interval", "0.2", "--dump-file", cls.dump_path], tmpdir=tmp)

    async def test_stats_need_admin_token(self):
        user = uniq("adm")
        register(self.server, user)
        r = Requests(await token_client(self, login(self.server, user)))
        await mixed_requests(r, uniq("acc"), 2)
        for hdrs in ({}, {"Authorization": "Bearer wrong-token-of-some-length"},
                     {"Authorization": "Bearer " + self.ADMIN + "x"},
                     {"Authorization": "Bearer " + self.ADMIN[:-1]},
                     {"Authorization": "Basic " + self.ADMIN},
                     {"Authorization": self.ADMIN},
                     {"Authorization": "Bearer " + login(self.server, user)}):
            with self.subTest(hdrs=hdrs):
                st, h, raw = self.server.get("/api/stats/users", headers=hdrs)
                self.assertEqual(st, 401, raw)
                self.assertIn("error", json.loads(raw))
        st, _, raw = self.server.get("/api/stats/users",
                                     headers={"Authorization": "Bearer " + self.ADMIN})
        self.assertEqual(st, 200, raw)
        self.assertEqual(json.loads(raw)["users"].get(user), r.n)
        d = harness.wait_for(
            lambda: (lambda d: d if last_count(d, user) == r.n else None)(
                read_dumps(self.dump_path)), 5 * T, what="a dump with the counts")
        self.assertEqual(last_count(d, user), r.n)


# ------------------------------------------------------------------ metrics

REQUIRED_METRICS = {
    "parley_connections": "gauge",
    "parley_rooms": "gauge",
    "parley_messages_received_total": "counter",
    "parley_deliveries_total": "counter",
    "parley_deliveries_dropped_total": "counter",
    "parley_slow_consumer_disconnects_total": "counter",
    "parley_rate_limited_total": "counter",
    "parley_queue_bytes": "gauge",
    "parley_storage_commit_seconds": "histogram",
    "parley_notify_queue_depth": "gauge",
    "parley_notify_sent_total": "counter",
    "parley_notify_failed_total": "counter",
    "parley_auth_failures_total": "counter",
    "parley_auth_revoked_total": "counter",
}

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(\{{(?:{_LABEL}(?:,{_LABEL})*,?)?\}})? "
                     r"([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+|Inf|NaN))"
                     r"(?: -?\d+)?$")


def parse_prometheus(text):
    """Strict Prometheus text format 0.0.4: returns (types {family: type},
    helps {family: text}, samples {(name, labels): value}). Fails on any
    malformed line, a sample without a TYPE before it, or a duplicate."""
    types, helps, samples = {}, {}, {}
    assert text.endswith("\n"), "the exposition must end with a newline"
    for line in text.split("\n")[:-1]:
        if line.startswith("#"):
            m = re.match(rf"^# (HELP|TYPE) ({_NAME}) (.*)$", line)
            if not m:
                continue  # other comments are allowed
            kind, fam, rest = m.groups()
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert fam not in types, f"second TYPE for {fam}"
                assert not any(k[0] == fam or k[0].startswith(fam + "_") and
                               k[0][len(fam):] in ("_bucket", "_sum", "_count")
                               for k in samples), f"TYPE {fam} after its samples"
                types[fam] = rest
            else:
                assert fam not in helps, f"second HELP for {fam}"
                helps[fam] = rest
            continue
        assert line.strip(), "empty line in the exposition"
        m = _SAMPLE.match(line)
        assert m, f"malformed sample line {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        fam = name
        for suf in ("_bucket", "_sum", "_count"):
            if name.endswith(suf) and types.get(name[:-len(suf)]) == "histogram":
                fam = name[:-len(suf)]
        assert fam in types, f"sample {name} has no TYPE line before it"
        key = (name, labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return types, helps, samples


class Metrics(ServerCase):

    def scrape(self):
        st, h, raw = self.server.get("/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(h.get("content-type", "").startswith("text/plain"), h)
        return parse_prometheus(raw.decode("utf-8"))

    def check_histogram(self, samples, fam):
        buckets = sorted(((float(re.search(r'le="([^"]+)"', lab).group(1)), v)
                          for (n, lab), v in samples.items() if n == fam + "_bucket"))
        self.assertTrue(buckets, f"{fam} has no buckets")
        self.assertEqual(buckets[-1][0], float("inf"), f"{fam} has no +Inf bucket")
        vals = [v for _, v in buckets]
        self.assertEqual(vals, sorted(vals), f"{fam} buckets are not cumulative")
        count = samples.get((fam + "_count", ""))
        self.assertIsNotNone(count, f"{fam}_count missing")
        self.assertIsNotNone(samples.get((fam + "_sum", "")), f"{fam}_sum missing")
        self.assertEqual(vals[-1], count, f"{fam}: +Inf bucket != _count")
        return count

    async def test_exposition(self):
        types1, helps1, s1 = self.scrape()
        for name, kind in REQUIRED_METRICS.items():
            self.assertEqual(types1.get(name), kind, f"{name}: TYPE {types1.get(name)}")
            self.assertIn(name, helps1, f"{name} has no HELP")
        self.check_histogram(s1, "parley_storage_commit_seconds")
        for fam, kind in types1.items():
            self.assertIn(fam, helps1, f"{fam} has no HELP")

        # some traffic between the scrapes
        room = uniq("met")
        a = await self.json_client(uniq("ma"), room=room)
        b = await self.json_client(uniq("mb"), room=room)
        for i in range(5):
            ack = await a.send_msg(room, f"m{i}", id=f"i{i}")
            await b.expect_type("message", room=room, seq=ack["seq"])
        dm = await a.call({"type": "dm", "to": b.user, "text": "psst"}, "ack")
        await b.expect_type("message", room=dm["room"], seq=dm["seq"])
        types2, _, s2 = self.scrape()
        self.assertEqual(types1, types2)

        for (name, labels), v in s1.items():
            fam = name
            for suf in ("_bucket", "_sum", "_count"):
                if name.endswith(suf) and types1.get(name[:-len(suf)]) == "histogram":
                    fam = name[:-len(suf)]
            if types1[fam] in ("counter", "histogram"):
                self.assertIn((name, labels), s2, f"{name}{labels} vanished")
                self.assertGreaterEqual(s2[(name, labels)], v, f"{name}{labels} went backwards")
        self.assertGreaterEqual(s2[("parley_messages_received_total", "")] -
                                s1[("parley_messages_received_total", "")], 6)
        self.assertGreaterEqual(s2[("parley_deliveries_total", "")] -
                                s1[("parley_deliveries_total", "")], 12)
        self.assertGreaterEqual(s2[("parley_connections", "")], 2)
        self.assertGreaterEqual(s2[("parley_rooms", "")], 1)
        c2 = self.check_histogram(s2, "parley_storage_commit_seconds")
        self.assertGreater(c2, self.check_histogram(s1, "parley_storage_commit_seconds"),
                           "acked messages were committed without a commit observed")


if __name__ == "__main__":
    harness.main()
