"""Foundation: the command line, the HTTP side (health, static files, MIME,
path traversal, metrics), clean shutdown on SIGTERM, a taken port."""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import harness
from harness import SCALE, T, JClient, Server, ServerCase, run_parleyd

SECRET = "SECRET-c0ffee-outside-the-root"
HIDDEN = "HIDDEN-dot-file-inside-the-root"
INDEX = "<!doctype html><title>t</title>INDEX-MARK"


def make_web_root(base):
    """A web root with known files, next to a secret file and reachable by
    symlinks pointing outside it."""
    root = os.path.join(base, "www")
    os.makedirs(os.path.join(root, "sub"))
    os.makedirs(os.path.join(root, "empty"))
    os.makedirs(os.path.join(root, ".git"))
    files = {
        "index.html": INDEX,
        "style.css": "body { color: #123456 }\n",
        "app.js": "console.log('APP-MARK');\n",
        "data.json": '{"k": 1}\n',
        "sub/page.html": "<p>SUB-PAGE</p>",
        "sub/notes.txt": "NOTES-MARK\n",
        ".hidden": HIDDEN,
        ".git/config": "[core] GITCONFIG-MARK\n",
    }
    for rel, text in files.items():
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)
    with open(os.path.join(base, "secret.txt"), "w") as f:
        f.write(SECRET)
    os.symlink(os.path.join(base, "secret.txt"), os.path.join(root, "leak.txt"))
    os.symlink("../secret.txt", os.path.join(root, "leak2.txt"))
    os.symlink(base, os.path.join(root, "outside"))
    os.symlink("/etc", os.path.join(root, "etc"))
    return root


class CommandLine(unittest.TestCase):

    def test_help(self):
        p = run_parleyd(["--help"])
        self.assertEqual(p.returncode, 0, p.stderr)
        for flag in ("--listen", "--db", "--web-root", "--threads", "--log-level",
                     "--drain-timeout", "--client-queue-max", "--client-queue-bytes",
                     "--config", "--help", "--version"):
            self.assertIn(flag, p.stdout, f"--help does not list {flag}")

    def test_version(self):
        p = run_parleyd(["--version"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"\d+\.\d+")

    def test_unknown_flag(self):
        p = run_parleyd(["--no-such-flag"])
        self.assertEqual(p.returncode, 2)
        self.assertIn("no-such-flag", p.stderr)
        self.assertEqual(p.stdout, "")

    def test_bad_values(self):
        for args in (["--threads", "x"], ["--threads", "0"], ["--threads", "2x"],
                     ["--listen", "nohostport"], ["--drain-timeout", "-1"],
                     ["--log-level", "loud"], ["--client-queue-max", "many"], ["--threads"]):
            with self.subTest(args=args):
                p = run_parleyd(args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(args[0].lstrip("-"), p.stderr)

    def test_bad_config_file(self):
        with tempfile.TemporaryDirectory() as d:
            cases = {"notjson.json": "{ not json", "unknown.json": '{"no-such-key": 1}',
                     "badtype.json": '{"threads": "many"}'}
            for name, text in cases.items():
                path = os.path.join(d, name)
                with open(path, "w") as f:
                    f.write(text)
                with self.subTest(config=name):
                    p = run_parleyd(["--config", path])
                    self.assertEqual(p.returncode, 2, p.stderr)
                    self.assertTrue(p.stderr.strip(), "no message for a bad config file")
            p = run_parleyd(["--config", os.path.join(d, "missing.json")])
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("missing.json", p.stderr)


class ConfigFile(harness.AsyncCase):
    """Settings come from --config; a flag overrides the file."""

    async def test_config_and_override(self):
        srv = Server()
        try:
            file_port = harness.free_port()
            cfg = {"listen": f"127.0.0.1:{file_port}", "max-text": 10, "threads": 1,
                   "log-level": "warn"}
            path = os.path.join(srv.tmp, "parley.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            # Server.command passes --listen with another port: it must win,
            # and --config comes last on purpose (flags win wherever they are)
            srv.args = ["--config", path]
            srv.start()
            self.assertNotEqual(srv.port, file_port)
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", file_port), timeout=1).close()
            c = await JClient.connect(srv, user="cfguser")
            try:
                self.assertEqual(c.welcome["limits"]["max_text"], 10)  # from the file
                await c.call({"type": "join", "room": "cfg"}, "joined")
                r = await c.call({"type": "send", "room": "cfg", "text": "x" * 11})
                self.assertEqual(r["code"], "too_large")
                await c.send_msg("cfg", "x" * 10)
            finally:
                await c.close()
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.cleanup()


class Http(ServerCase):

    @classmethod
    def make_server(cls):
        base = tempfile.mkdtemp(prefix="parley-web-")
        cls.base = base
        return Server(web_root=make_web_root(base), tmpdir=base)

    def get(self, path, **kw):
        return self.server.get(path, **kw)

    def test_healthz(self):
        st, h, body = self.get("/healthz")
        self.assertEqual(st, 200)
        self.assertEqual(body, b"ok\n")
        self.assertTrue(h.get("content-type", "").startswith("text/plain"))

    def test_index(self):
        for path in ("/", "/index.html", "/?x=1"):
            with self.subTest(path=path):
                st, h, body = self.get(path)
                self.assertEqual(st, 200)
                self.assertEqual(body.decode(), INDEX)
                self.assertTrue(h["content-type"].startswith("text/html"), h)

    def test_mime_types(self):
        want = {"/style.css": ("text/css",), "/app.js": ("text/javascript",
                                                          "application/javascript"),
                "/data.json": ("application/json",), "/sub/page.html": ("text/html",),
                "/sub/notes.txt": ("text/plain",)}
        for path, types in want.items():
            with self.subTest(path=path):
                st, h, body = self.get(path)
                self.assertEqual(st, 200)
                ct = h.get("content-type", "").split(";")[0].strip()
                self.assertIn(ct, types)
                self.assertTrue(body)
        st, h, body = self.get("/app.js")
        self.assertIn(b"APP-MARK", body)

    def test_head(self):
        for path in ("/style.css", "/", "/healthz", "/metrics"):
            with self.subTest(path=path):
                st, h, body = self.get(path, method="HEAD")
                self.assertEqual(st, 200)
                self.assertEqual(body, b"")
                _, gh, gbody = self.get(path)
                # the GET's headers, length included (metrics change between calls)
                self.assertEqual(h["content-type"], gh["content-type"])
                if path != "/metrics":
                    self.assertEqual(int(h["content-length"]), len(gbody))
                else:
                    self.assertGreater(int(h["content-length"]), 0)

    def test_etag_revalidation(self):
        st, h, body = self.get("/style.css")
        self.assertEqual(st, 200)
        etag = h["etag"]
        self.assertTrue(etag.startswith('"') and etag.endswith('"'), etag)
        self.assertEqual(h["cache-control"], "no-cache")
        for method in ("GET", "HEAD"):
            with self.subTest(method=method):
                st, h2, body2 = self.get("/style.css", method=method,
                                         headers={"If-None-Match": etag})
                self.assertEqual(st, 304)
                self.assertEqual(body2, b"")
                self.assertEqual(h2["etag"], etag)
                # a 304 may only announce the representation's own length
                self.assertEqual(int(h2.get("content-length", len(body))), len(body))
        st, _, body3 = self.get("/style.css", headers={"If-None-Match": '"other"'})
        self.assertEqual((st, body3), (200, body))
        # another file's tag does not match this one
        _, hi, _ = self.get("/")
        self.assertNotEqual(hi["etag"], etag)
        st, _, _ = self.get("/style.css", headers={"If-None-Match": hi["etag"]})
        self.assertEqual(st, 200)

    def request_then_get(self, request, status):
        """Send request on a fresh connection, expect `status` with no body,
        then a GET on the same connection: an announced length must not
        make the server wait for a body."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=5 * SCALE) as s:
            s.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                self.assertTrue(chunk, f"closed after {status}")
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 %d" % status), head)
            self.assertEqual(rest, b"", "a body came with it")
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
            self.assertTrue(data.endswith(b"\r\n\r\nok\n"), data[-100:])

    def test_304_then_get_on_one_connection(self):
        _, h, _ = self.get("/style.css")
        self.request_then_get(b"GET /style.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: "
                              + h["etag"].encode() + b"\r\n\r\n", 304)

    def test_head_then_get_on_one_connection(self):
        self.request_then_get(b"HEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\n", 200)

    def test_missing_is_404(self):
        for path in ("/nope.html", "/sub/nope", "/nope/", "/index.html/x", "/wsx"):
            with self.subTest(path=path):
                st, _, body = self.get(path)
                self.assertEqual(st, 404)
                self.assertNotIn(b"INDEX-MARK", body)

    def test_no_directory_listing(self):
        for path in ("/sub/", "/sub", "/empty/", "/empty", "/outside/", "/etc/"):
            with self.subTest(path=path):
                st, _, body = self.get(path)
                self.assertIn(st, (400, 404))
                for mark in (b"notes.txt", b"page.html", b"secret", b"passwd"):
                    self.assertNotIn(mark, body)

    def test_traversal(self):
        tricks = [
            b"/../etc/passwd", b"/../../../../../../etc/passwd", b"/../secret.txt",
            b"/%2e%2e/secret.txt", b"/%2e%2e/%2e%2e/etc/passwd", b"/%2E%2E/secret.txt",
            b"/..%2fsecret.txt", b"/..%2f..%2f..%2fetc%2fpasswd", b"/%2e%2e%2fsecret.txt",
            b"/%252e%252e/secret.txt", b"/%252e%252e%252fsecret.txt",
            b"//etc/passwd", b"///etc/passwd", b"/.git/config", b"/.hidden", b"/.%68idden",
            b"/%2egit/config", b"/a/../../secret.txt", b"/sub/../../secret.txt",
            b"/./../secret.txt", b"/sub/./../../etc/passwd",
            b"/..\\secret.txt", b"/\\..\\secret.txt", b"/%5c..%5csecret.txt",
            b"/..%5csecret.txt", b"/sub\\..\\..\\secret.txt",
            b"/%00/../secret.txt", b"/index.html%00.txt", b"/leak.txt%00",
            b"/%c0%ae%c0%ae/secret.txt", b"/%e0%80%ae%e0%80%ae/secret.txt",
            b"/..;/secret.txt", b"/...//secret.txt", b"/....//secret.txt",
            b"/leak.txt", b"/leak2.txt", b"/outside/secret.txt", b"/outside/www/index.html",
            b"/etc/passwd", b"/secret.txt", b"/%2fetc%2fpasswd",
            b"/sub/..%2f..%2fsecret.txt", b"/sub%2f..%2f..%2fsecret.txt",
        ]
        for path in tricks:
            with self.subTest(path=path):
                st, _, body = self.get(path)
                self.assertIn(st, (None, 400, 404), f"{path!r} answered {st}")
                self.assertNotIn(SECRET.encode(), body)
                self.assertNotIn(HIDDEN.encode(), body)
                self.assertNotIn(b"GITCONFIG-MARK", body)
                self.assertNotIn(b"root:", body)
        # a raw NUL byte in the request line
        st, _, body = self.get(b"/index.html\x00/../../secret.txt")
        self.assertIn(st, (None, 400, 404))
        self.assertNotIn(SECRET.encode(), body)
        # the server is still fine afterwards
        self.assertEqual(self.get("/healthz")[0], 200)

    def test_ws_path_without_upgrade(self):
        st, _, body = self.get("/ws")
        self.assertNotEqual(st, 200)
        self.assertIsNotNone(st)

    async def test_metrics(self):
        st, h, body = self.get("/metrics")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/plain"), h)
        text = body.decode()
        m = harness.parse_metrics(text)  # every non-comment line must parse
        for name in ("parley_connections", "parley_deliveries_total",
                     "parley_slow_consumer_disconnects_total", "parley_queue_bytes"):
            self.assertIn(name, m)
            self.assertRegex(text, rf"(?m)^# TYPE {name} (counter|gauge)$")
        self.assertRegex(text, r"(?m)^# TYPE parley_deliveries_total counter$")
        self.assertRegex(text, r"(?m)^# TYPE parley_connections gauge$")
        # the gauges and counters move
        base = self.server.metric("parley_deliveries_total")
        a = await self.json_client(user=harness.uniq("m"))
        await harness.async_wait_for(
            lambda: self.server.metric("parley_connections") >= 1, T, what="connections >= 1")
        await a.call({"type": "join", "room": harness.uniq("mr")}, "joined")
        self.assertGreater(self.server.metric("parley_deliveries_total"), base)
        await a.close()
        await harness.async_wait_for(
            lambda: self.server.metric("parley_connections") == 0, T, what="connections == 0")


class RealWebRoot(ServerCase):
    """The checkout's own web client is served."""

    def test_served(self):
        st, h, body = self.server.get("/")
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/html"))
        with open(os.path.join(harness.SOURCE, "web", "index.html"), "rb") as f:
            self.assertEqual(body, f.read())
        for name in os.listdir(os.path.join(harness.SOURCE, "web")):
            if name.endswith(".js"):
                st, h, _ = self.server.get("/" + name)
                self.assertEqual(st, 200, name)
                self.assertIn(h["content-type"].split(";")[0],
                              ("text/javascript", "application/javascript"))


class Shutdown(harness.AsyncCase):

    async def test_sigterm_closes_clients_1001_and_exits_0(self):
        drain = 2.0
        srv = Server(args=["--drain-timeout", str(drain)])
        try:
            srv.start()
            a = await JClient.connect(srv, user="alice", room="general")
            b = await JClient.connect(srv, user="bob", room="general")
            await a.send_msg("general", "before shutdown")
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            self.assertEqual(await a.wait_closed(drain + T), 1001)
            self.assertEqual(await b.wait_closed(drain + T), 1001)
            try:
                rc = srv.proc.wait(drain + 5 * SCALE)
            except subprocess.TimeoutExpired:
                self.fail(f"parleyd still running {time.monotonic() - t0:.1f} s after SIGTERM "
                          f"with --drain-timeout {drain}")
            self.assertEqual(rc, 0, srv.log_text())
            # and the message sent before is still there on the next start
            srv.start()
            c = await JClient.connect(srv, user="carol", room="general")
            self.assertEqual([m["text"] for m in c.joined["general"]["history"]],
                             ["before shutdown"])
            await c.close()
            self.assertEqual(srv.stop(), 0, srv.log_text())
        finally:
            srv.cleanup()

    async def test_sigterm_with_a_client_that_does_not_read(self):
        """A client that stopped reading cannot hold the shutdown beyond the
        drain timeout."""
        drain = 1.0
        srv = Server(args=["--drain-timeout", str(drain)])
        try:
            srv.start()
            sock = harness.small_rcvbuf_socket(srv.port)
            stuck = await JClient.connect(srv, user="stuck", room="r", sock=sock)
            stuck.ws.transport.pause_reading()
            a = await JClient.connect(srv, user="talker", room="r")
            for i in range(50):
                await a.send({"type": "send", "room": "r", "text": f"{i} " + "y" * 900})
            await a.expect_type("ack", seq=50)
            srv.proc.send_signal(signal.SIGTERM)
            try:
                rc = srv.proc.wait(drain + 5 * SCALE)
            except subprocess.TimeoutExpired:
                self.fail("parleyd did not exit within the drain timeout with a stuck client")
            self.assertEqual(rc, 0, srv.log_text())
            await stuck.close()
            await a.close()
        finally:
            srv.cleanup()


class PortInUse(unittest.TestCase):

    def test_port_in_use(self):
        with tempfile.TemporaryDirectory() as d, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            port = s.getsockname()[1]
            p = run_parleyd(["--listen", f"127.0.0.1:{port}", "--db",
                             os.path.join(d, "p.db"), "--threads", "1", "--log-level", "warn"])
            self.assertNotEqual(p.returncode, 0)
            self.assertRegex((p.stderr + p.stdout).lower(), r"in use|bind|listen|address")


if __name__ == "__main__":
    harness.main()
