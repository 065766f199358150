"""Integration-test harness: a real parleyd on a loopback port, and clients.

What it gives the tests:

- Server: starts parleyd on a free 127.0.0.1 port with a temporary database,
  its stdout+stderr captured to a file, waits (bounded poll of GET /healthz)
  until it is ready, stops it with SIGTERM (the exit code is returned so the
  test can insist on 0), kills it with SIGKILL as a last resort, and removes
  its temporary directory.
- ServerCase: an IsolatedAsyncioTestCase with one server per test class;
  the server's log is printed when a test of the class fails and a clean
  exit (code 0 on SIGTERM) is checked when the class is done.
- JClient / TClient: JSON-mode and text-mode WebSocket clients
  (python3-websockets, asyncio API) whose every wait is bounded. Every JSON
  frame received is checked with schema_check.validate_server_frame.
- http_get: a raw-socket HTTP/1.1 request, so a path reaches the server
  byte for byte (urllib and http.client normalise or refuse some of them).
- RawWS: a raw-socket WebSocket client for frames no library will send
  (binary, invalid UTF-8, oversize, hostile fragmentation).
- RedisServer: a real redis-server on a free loopback port in a temporary
  directory (AOF on, fsync always, no RDB), started, stopped, killed,
  paused (SIGSTOP/SIGCONT) and restarted from its AOF on the same port, all
  by PID; cmd() speaks RESP directly, cli() runs redis-cli for assertions.
- Cluster / ClusterCase: several parleyd nodes (--engine redis://...,
  --node-id, their own database) sharing one or more RedisServers. A
  Cluster stands in for a Server: each client connection (ws_url, port,
  get) goes to the next node in turn and metrics are summed over the nodes.
  With PARLEY_CLUSTER=N in the environment, every ServerCase runs against
  an N-node cluster on one Redis (how the protocol and fan-out suites run
  against a cluster); unset, nothing changes.

Every wait polls for a condition with a deadline; nothing sleeps and hopes.
Time limits scale up under sanitizers (ASAN_OPTIONS/TSAN_OPTIONS set) or
with PARLEY_TIMEOUT_SCALE.
"""

import asyncio
import base64
import collections
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import websockets

SOURCE = os.environ.get("PARLEY_SOURCE") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARLEYD = os.environ.get("PARLEYD") or os.path.join(SOURCE, "build", "server", "parleyd")


def _scale():
    s = os.environ.get("PARLEY_TIMEOUT_SCALE")
    if s:
        return float(s)
    if os.environ.get("ASAN_OPTIONS") or os.environ.get("TSAN_OPTIONS"):
        return 3.0
    return 1.0


SCALE = _scale()
# The usual bound for one expected frame; generous because a miss fails fast
# anyway only when the frame never comes.
T = 5.0 * SCALE
# How long a negative check ("no such frame arrives") listens.
QUIET = 0.3

_counter = itertools.count(1)

# PARLEY_CLUSTER=N: ServerCase starts N nodes on one Redis instead of one
# parleyd (0 or unset: a single parleyd, exactly as before).
CLUSTER_NODES = int(os.environ.get("PARLEY_CLUSTER") or 0)


def single_node_only(reason):
    """Skip a test (or class) under PARLEY_CLUSTER: it is about one node's
    process (its RSS, its restart, its metrics alone); reason says which."""
    return unittest.skipIf(CLUSTER_NODES > 0, f"single-node only: {reason}")


def sanitized():
    """True under ASan/TSan or a stretched time scale: RSS and timing mean
    little there (quarantine, shadow memory)."""
    return bool(os.environ.get("ASAN_OPTIONS") or os.environ.get("TSAN_OPTIONS") or
                os.environ.get("PARLEY_TIMEOUT_SCALE"))


def rss_kb(pid):
    """A process's resident memory in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/PID/status")


def uniq(prefix="x"):
    """A name unique within this test process, valid as a user or room."""
    return f"{prefix}{os.getpid() % 10000}_{next(_counter)}"


# ------------------------------------------------------------------ schema

_validator = None


def validate(obj):
    """Check a server frame against the protocol schema (schema_check.py)."""
    global _validator
    if _validator is None:
        try:
            import schema_check  # written alongside; imported lazily
            _validator = schema_check.validate_server_frame
        except ImportError:
            print("harness: schema_check.py not found, using the minimal check",
                  file=sys.stderr)
            _validator = _minimal_validate
    _validator(obj)


def _minimal_validate(obj):
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise AssertionError(f"server frame is not an object with a string type: {obj!r}")


def _no_dup_pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise AssertionError(f"server frame has duplicate key {k!r}")
        d[k] = v
    return d


# Raw frames already validated. A fan-out sends the same bytes to hundreds
# of clients and schema validation costs most of a millisecond, so each
# distinct frame is validated once: identical bytes, identical verdict.
_valid_raw = set()


def parse_frame(raw):
    """Parse and validate one JSON frame from the server."""
    if isinstance(raw, bytes):
        raise AssertionError(f"server sent a binary frame in JSON mode: {raw[:80]!r}")
    obj = json.loads(raw, object_pairs_hook=_no_dup_pairs)
    if raw not in _valid_raw:
        validate(obj)
        if len(_valid_raw) > 200000:
            _valid_raw.clear()
        _valid_raw.add(raw)
    return obj


# ------------------------------------------------------------------ process

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout, interval=0.02, what="condition"):
    """Poll pred() until it returns a true value; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


async def async_wait_for(pred, timeout, interval=0.02, what="condition"):
    """The asyncio form of wait_for; pred may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        await asyncio.sleep(interval)


def run_parleyd(args, timeout=10 * SCALE, **kw):
    """Run parleyd to completion (CLI checks). Returns CompletedProcess."""
    return subprocess.run([PARLEYD] + list(args), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)


_help_text = None


def parleyd_flags():
    """The long flags parleyd --help lists (to pass optional tuning flags)."""
    global _help_text
    if _help_text is None:
        _help_text = run_parleyd(["--help"]).stdout
    return set(re.findall(r"--(?:\[no-\])?([a-z][a-z0-9-]*)", _help_text))


class Server:
    """One parleyd process (restartable on the same database)."""

    def __init__(self, args=(), web_root=None, threads=2, log_level="warn", tmpdir=None):
        self.tmp = tmpdir or tempfile.mkdtemp(prefix="parley-it-")
        self.db = os.path.join(self.tmp, "parley.db")
        self.web_root = web_root or os.path.join(SOURCE, "web")
        self.args = list(args) + self.unlimited_rate_args(args)
        self.threads = threads
        self.log_level = log_level
        self.proc = None
        self.port = None
        self.killed = self.stopped = False
        self.logs = []
        self.starts = 0

    @staticmethod
    def unlimited_rate_args(args):
        """The load tests here send, join and open rooms far faster than a
        person does: raise the per-user limits out of reach (--rate/--burst,
        --join-rate/--join-burst, --max-new-rooms; at most 1e6), and the
        per-address rate of logins and registrations (every test comes from
        127.0.0.1), unless the test sets them itself."""
        out = []
        for name in sorted(parleyd_flags()):
            if name in ("rate", "burst", "join-rate", "join-burst", "max-new-rooms", "login-rate",
                        "login-burst") and f"--{name}" not in args:
                out += [f"--{name}", "1000000"]
        return out

    # -- lifecycle

    def command(self, port):
        return [PARLEYD, "--listen", f"127.0.0.1:{port}", "--db", self.db,
                "--web-root", self.web_root, "--threads", str(self.threads),
                "--log-level", self.log_level] + self.args

    def start(self, timeout=10 * SCALE):
        """Start on a fresh free port and wait until /healthz answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        last = ""
        for _ in range(3):  # a free port can be taken between probe and bind
            port = free_port()
            self.starts += 1
            log = os.path.join(self.tmp, f"parleyd-{self.starts}.log")
            self.logs.append(log)
            self.killed = self.stopped = False
            with open(log, "wb") as lf:
                self.proc = subprocess.Popen(self.command(port), stdin=subprocess.DEVNULL,
                                             stdout=lf, stderr=subprocess.STDOUT)
            self.port = port
            if self._wait_ready(timeout):
                return self
            if self.proc.poll() is None:
                self.kill()
                raise AssertionError(f"parleyd not ready after {timeout:.0f} s\n{self.log_text()}")
            last = self.log_text()
            if "in use" not in last.lower() and "bind" not in last.lower():
                break
        raise AssertionError(f"parleyd exited at start (code {self.proc.returncode}):\n{last}")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                st, _, body = http_get(self.port, "/healthz", timeout=1.0)
                if st == 200 and body == b"ok\n":
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=None):
        """SIGTERM, wait (bounded), return the exit code. Kill -9 on timeout."""
        if self.proc is None:
            return None
        if timeout is None:
            timeout = 15 * SCALE
        if self.proc.poll() is None:
            self.stopped = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"parleyd did not exit within {timeout:.0f} s of SIGTERM\n"
                                     f"{self.log_text()}")
        return self.proc.returncode

    def kill(self):
        """SIGKILL by PID (the crash test, or the last resort)."""
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode if self.proc else None

    def finish(self):
        """End of a test: SIGTERM must end a running server with 0, and a
        server that died by itself (not killed by the test) is a failure."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            rc = self.stop()
            if rc != 0:
                raise AssertionError(f"parleyd exited {rc} on SIGTERM:\n{self.log_text()}")
        elif not self.killed and not self.stopped:
            raise AssertionError(f"parleyd died during the test (exit {self.proc.returncode})"
                                 f":\n{self.log_text()}")

    def restart(self, timeout=10 * SCALE):
        rc = self.stop()
        if rc != 0:
            raise AssertionError(f"parleyd exited {rc} on SIGTERM\n{self.log_text()}")
        return self.start(timeout)

    def cleanup(self):
        self.kill()
        self._kept_log = self.log_text()  # still printable after the files go
        shutil.rmtree(self.tmp, ignore_errors=True)

    _kept_log = None

    def log_text(self, last_n=200):
        if self._kept_log is not None:
            return self._kept_log
        out = []
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            out.append(f"--- {os.path.basename(p)} ---")
            out.extend(lines[-last_n:])
        return "\n".join(out)

    # -- addresses

    def ws_url(self, query=""):
        q = query.lstrip("?")
        return f"ws://127.0.0.1:{self.port}/ws" + (f"?{q}" if q else "")

    def get(self, path, **kw):
        return http_get(self.port, path, **kw)

    def metrics(self):
        st, _, body = self.get("/metrics")
        if st != 200:
            raise AssertionError(f"/metrics answered {st}")
        return parse_metrics(body.decode())

    def metric(self, name):
        return self.metrics().get(name, {}).get("", None)


def parse_metrics(text):
    """Prometheus text -> {name: {labels: value}}; raises on a malformed line."""
    out = {}
    pat = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)(\s+-?\d+)?$')
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = pat.match(line)
        if not m:
            raise AssertionError(f"malformed metrics line: {line!r}")
        v = float(m.group(3))  # raises on a non-number
        out.setdefault(m.group(1), {})[m.group(2) or ""] = v
    return out


# ------------------------------------------------------------------ test case

class AsyncCase(unittest.IsolatedAsyncioTestCase):
    """IsolatedAsyncioTestCase runs its loop in debug mode, which slows a
    test with hundreds of clients down and warns about every blocking call
    (the raw-socket helpers block on purpose); run it in normal mode."""

    async def asyncSetUp(self):
        asyncio.get_running_loop().set_debug(False)
        await super().asyncSetUp()


class ServerCase(AsyncCase):
    """One parleyd per test class; clients are closed after each test."""

    server_args = ()
    web_root = None
    threads = 2

    @classmethod
    def make_server(cls):
        if CLUSTER_NODES > 0:
            return Cluster(nodes=CLUSTER_NODES, args=cls.server_args, web_root=cls.web_root,
                           threads=cls.threads)
        return Server(args=cls.server_args, web_root=cls.web_root, threads=cls.threads)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.server = cls.make_server()
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        srv = cls.server
        try:
            srv.finish()
        finally:
            srv.cleanup()
            super().tearDownClass()

    def run(self, result=None):
        # print the server's log under a failing test, nowhere else
        before = (len(result.failures) + len(result.errors)) if result else 0
        r = super().run(result)
        res = result or r
        if res is not None and len(res.failures) + len(res.errors) > before:
            print(f"\n==== parleyd log for {self.id()} ====\n{self.server.log_text()}\n====",
                  file=sys.stderr)
        return r

    async def json_client(self, user=None, **kw):
        c = await JClient.connect(self.server, user=user, **kw)
        self.addAsyncCleanup(c.close)
        return c

    async def text_client(self, **kw):
        c = await TClient.connect(self.server, **kw)
        self.addAsyncCleanup(c.close)
        return c


# ------------------------------------------------------------------ Redis

REDIS_SERVER = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or \
    "/usr/bin/redis-server"
REDIS_CLI = os.environ.get("REDIS_CLI") or shutil.which("redis-cli") or "/usr/bin/redis-cli"


class RedisError(Exception):
    """An error reply (-ERR ..., -LOADING ..., -NOAUTH ...) from Redis."""


def _resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise EOFError("connection closed mid-reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise EOFError("connection closed mid-reply")
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise AssertionError(f"bad RESP line {line[:80]!r}")


class RedisServer:
    """One redis-server process on 127.0.0.1, in a temporary directory of
    its own, with the append-only file on and fsynced on every write (so a
    restart after SIGKILL has every acknowledged write) and no RDB snapshots.
    Every signal goes to the PID this object started; nothing else is ever
    touched."""

    def __init__(self, password=None, appendfsync="always", tmpdir=None):
        self.tmp = tmpdir or tempfile.mkdtemp(prefix="parley-redis-")
        self.password = password
        self.appendfsync = appendfsync
        self.proc = None
        self.port = None
        self.paused = False
        self.killed = self.stopped = False
        self.logs = []
        self.starts = 0

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def command(self, port, log):
        cmd = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", self.tmp,
               "--save", "", "--appendonly", "yes", "--appendfsync", self.appendfsync,
               "--daemonize", "no", "--logfile", log, "--loglevel", "notice"]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd

    def start(self, timeout=10 * SCALE, port=None):
        """Start on port (default: a fresh free one) and wait until PING
        answers PONG (not LOADING): the AOF, if any, is loaded then."""
        assert not self.running, "redis-server already running"
        if not os.path.exists(REDIS_SERVER):
            raise AssertionError(f"{REDIS_SERVER} not found: install the Debian package "
                                 "redis-server (tools/test does)")
        last = ""
        for _ in range(1 if port else 3):  # a free port can be taken before the bind
            p = port or free_port()
            self.starts += 1
            log = os.path.join(self.tmp, f"redis-{self.starts}.log")
            self.logs.append(log)
            self.killed = self.stopped = self.paused = False
            self.proc = subprocess.Popen(self.command(p, log), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.port = p
            if self._wait_ready(timeout):
                return self
            if self.proc.poll() is None:
                self.kill()
                raise AssertionError(f"redis-server not ready after {timeout:.0f} s\n"
                                     f"{self.log_text()}")
            last = self.log_text()
            if "in use" not in last.lower():
                break
        raise AssertionError(f"redis-server exited at start (code {self.proc.returncode}):\n"
                             f"{last}")

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.cmd("PING", timeout=1.0) == "PONG":
                    return True
            except (OSError, EOFError, RedisError):
                pass  # not listening yet, or -LOADING the AOF
            time.sleep(0.02)
        return False

    def restart(self, timeout=10 * SCALE):
        """Start again on the same port from the same directory, so from its
        AOF (after kill(), stop() or a crash). Stops it first if running."""
        if self.running:
            self.stop()
        return self.start(timeout, port=self.port)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15 * SCALE):
        """SHUTDOWN by SIGTERM (Redis fsyncs the AOF and exits 0); returns
        the exit code. SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.resume()
            self.stopped = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"redis-server did not exit within {timeout:.0f} s of "
                                     "SIGTERM")
        return self.proc.returncode

    def kill(self):
        """SIGKILL by PID (a crash; works on a stopped process too)."""
        if self.proc is not None and self.proc.poll() is None:
            self.killed = True
            self.proc.kill()
            self.proc.wait(10)
            self.paused = False
        return self.proc.returncode if self.proc else None

    def pause(self):
        """SIGSTOP: the process holds its connections open and answers
        nothing (a hung Redis, as a network partition looks to a client)."""
        assert self.running, "redis-server not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        """SIGCONT after pause()."""
        if self.paused and self.running:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def cleanup(self):
        self.kill()
        self._kept_log = self.log_text()
        shutil.rmtree(self.tmp, ignore_errors=True)

    _kept_log = None

    def log_text(self, last_n=60):
        if self._kept_log is not None:
            return self._kept_log
        out = []
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            out.append(f"--- {os.path.basename(p)} (port {self.port}) ---")
            out.extend(lines[-last_n:])
        return "\n".join(out)

    # -- talking to it

    def cmd(self, *args, timeout=5.0 * SCALE):
        """One command over a fresh connection (AUTH first when a password
        is set); the decoded reply. An error reply raises RedisError."""
        cmds = ([("AUTH", self.password)] if self.password else []) + [args]
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(b"".join(_resp_encode(c) for c in cmds))
            with s.makefile("rb") as f:
                replies = [_resp_read(f) for _ in cmds]
        for r in replies:
            if isinstance(r, RedisError):
                raise r
        return replies[-1]

    def cli(self, *args, timeout=10 * SCALE):
        """redis-cli -p PORT --raw ARGS...: its stdout; a non-zero exit or
        an error reply raises AssertionError. For assertions in tests."""
        cmd = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), "--raw"]
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password  # not on the command line
        r = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, env=env)
        if r.returncode != 0 or r.stdout.startswith(("ERR", "NOAUTH", "WRONGPASS")):
            raise AssertionError(f"redis-cli {' '.join(map(str, args))}: exit {r.returncode}"
                                 f"\n{r.stdout}{r.stderr}")
        return r.stdout

    def keys(self, pattern="*"):
        """Every key (redis-cli --scan: SCAN, never a blocking KEYS)."""
        return [k for k in self.cli("--scan", "--pattern", pattern).splitlines() if k]


# ------------------------------------------------------------------ cluster

class Cluster:
    """N parleyd nodes sharing `shards` RedisServers: each node runs with
    --engine (every shard's URL, in one order), --node-id nodeI and its own
    database (its local outbox). It stands in for a Server where a test
    wants "the server": ws_url/port/get pick the next node in turn (so
    successive clients alternate between the nodes), metrics() sums over the
    running nodes, log_text() has every node's and every Redis's log, and
    start/finish/cleanup act on all of them."""

    def __init__(self, nodes=2, shards=1, args=(), web_root=None, threads=2, log_level="warn",
                 redis_password=None, history_max=None, node_args=None):
        self.tmp = tempfile.mkdtemp(prefix="parley-cluster-")
        self.redis = [RedisServer(password=redis_password,
                                  tmpdir=tempfile.mkdtemp(prefix=f"redis{i}-", dir=self.tmp))
                      for i in range(shards)]
        self.n = nodes
        self.args = list(args)
        self.node_args = node_args  # i -> extra args of node i, optional
        self.web_root = web_root
        self.threads = threads
        self.log_level = log_level
        self.history_max = history_max
        self.password_file = None
        if redis_password:
            self.password_file = os.path.join(self.tmp, "redis.password")
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(redis_password + "\n")
        self.nodes = []
        self._rr = itertools.count()

    @property
    def engine(self):
        return ",".join(r.url for r in self.redis)

    def engine_args(self, i):
        """The cluster options of node i (what every node of it is given)."""
        a = ["--engine", self.engine, "--node-id", f"node{i}"]
        if self.password_file:
            a += ["--redis-password-file", self.password_file]
        if self.history_max is not None:
            a += ["--history-max", str(self.history_max)]
        return a

    def start(self, timeout=10 * SCALE):
        for r in self.redis:
            if not r.running:
                r.start()
        if not self.nodes:
            for i in range(self.n):
                extra = list(self.node_args(i)) if self.node_args else []
                tmp = tempfile.mkdtemp(prefix=f"node{i}-", dir=self.tmp)
                self.nodes.append(Server(args=self.engine_args(i) + self.args + extra,
                                         web_root=self.web_root, threads=self.threads,
                                         log_level=self.log_level, tmpdir=tmp))
        for s in self.nodes:
            if not s.running:
                s.start(timeout)
        return self

    def finish(self):
        """Every node must end with 0 on SIGTERM (or have been killed by the
        test); the Redis servers are stopped after the nodes."""
        errors = []
        for s in self.nodes:
            try:
                s.finish()
            except AssertionError as e:
                errors.append(str(e))
        for r in self.redis:
            r.stop()
        if errors:
            raise AssertionError("\n".join(errors))

    def cleanup(self):
        for s in self.nodes:
            s.cleanup()
        for r in self.redis:
            r.cleanup()
        self._kept_log = self.log_text()
        shutil.rmtree(self.tmp, ignore_errors=True)

    _kept_log = None

    def log_text(self, last_n=200):
        if self._kept_log is not None:
            return self._kept_log
        out = []
        for i, s in enumerate(self.nodes):
            out.append(f"===== node{i} (port {s.port}) =====")
            out.append(s.log_text(last_n))
        for i, r in enumerate(self.redis):
            out.append(f"===== redis shard {i} =====")
            out.append(r.log_text())
        return "\n".join(out)

    # -- a Server's face

    def next_node(self):
        """The next running node in turn."""
        for _ in range(len(self.nodes)):
            s = self.nodes[next(self._rr) % len(self.nodes)]
            if s.running:
                return s
        raise AssertionError("no cluster node is running")

    @property
    def port(self):
        return self.next_node().port

    @property
    def running(self):
        return any(s.running for s in self.nodes)

    def ws_url(self, query=""):
        return self.next_node().ws_url(query)

    def get(self, path, **kw):
        return self.next_node().get(path, **kw)

    def metrics(self):
        """The running nodes' metrics, summed label by label: a count over
        the cluster (connections, queue bytes, disconnects)."""
        out = {}
        for s in self.nodes:
            if not s.running:
                continue
            for name, series in s.metrics().items():
                d = out.setdefault(name, {})
                for labels, v in series.items():
                    d[labels] = d.get(labels, 0.0) + v
        return out

    def metric(self, name):
        return self.metrics().get(name, {}).get("", None)

    def restart(self, timeout=10 * SCALE):
        """Restart every node (Redis keeps running)."""
        for s in self.nodes:
            s.restart(timeout)
        return self


class ClusterCase(ServerCase):
    """One Cluster per test class (ServerCase's life cycle and failure logs,
    with a Cluster as its server, also as self.cluster); clients are closed
    after each test. Set nodes, shards, server_args (every node),
    redis_password, history_max on the class."""

    nodes = 2
    shards = 1
    server_args = ()
    redis_password = None
    history_max = None
    threads = 2

    @classmethod
    def make_cluster(cls):
        return Cluster(nodes=cls.nodes, shards=cls.shards, args=cls.server_args,
                       threads=cls.threads, redis_password=cls.redis_password,
                       history_max=cls.history_max)

    @classmethod
    def make_server(cls):
        return cls.make_cluster()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cluster = cls.server

    def node(self, i):
        return self.cluster.nodes[i]

    async def json_client(self, node, user=None, **kw):
        """A JSON client on node (an index, or a Server)."""
        srv = self.cluster.nodes[node] if isinstance(node, int) else node
        c = await JClient.connect(srv, user=user, **kw)
        c.node = srv
        self.addAsyncCleanup(c.close)
        return c


# ------------------------------------------------------------------ clients

class _Client:
    """What the JSON and text clients share: a backlog of unconsumed frames,
    bounded receives, and predicate matching."""

    def __init__(self, ws, server):
        self.ws = ws
        self.server = server
        self.backlog = collections.deque()
        self.received = 0

    @classmethod
    async def _open(cls, server, query="", subprotocols=None, sock=None, timeout=None,
                    max_size=None, max_queue=32):
        kw = dict(subprotocols=subprotocols, max_size=max_size, max_queue=max_queue,
                  open_timeout=timeout or T, ping_interval=None, close_timeout=T)
        if sock is not None:
            kw["sock"] = sock
        return await websockets.connect(server.ws_url(query), **kw)

    def _decode(self, raw):
        raise NotImplementedError

    async def _next(self, timeout):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        self.received += 1
        return self._decode(raw)

    async def recv(self, timeout=None):
        """The next frame (the backlog first); fails after timeout."""
        if self.backlog:
            return self.backlog.popleft()
        try:
            return await self._next(timeout or T)
        except asyncio.TimeoutError:
            raise AssertionError(f"no frame within {timeout or T:.1f} s") from None

    async def expect(self, pred, timeout=None, what=None):
        """The first frame matching pred, from the backlog or the wire; frames
        that do not match stay in the backlog, in order."""
        for i, f in enumerate(self.backlog):
            if pred(f):
                del self.backlog[i]
                return f
        timeout = timeout or T
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out after {timeout:.1f} s waiting for {what or 'a matching frame'};"
                    f" got meanwhile: {skipped[-8:]!r}")
            try:
                f = await self._next(left)
            except asyncio.TimeoutError:
                continue
            if pred(f):
                return f
            skipped.append(f)
            self.backlog.append(f)

    async def expect_none(self, pred=None, window=QUIET, what=None):
        """Negative check: no frame (matching pred) arrives within window."""
        pred = pred or (lambda f: True)
        for f in self.backlog:
            if pred(f):
                raise AssertionError(f"unexpected frame {what or ''}: {f!r}")
        deadline = time.monotonic() + window
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                f = await self._next(left)
            except asyncio.TimeoutError:
                return
            if pred(f):
                raise AssertionError(f"unexpected frame {what or ''}: {f!r}")
            self.backlog.append(f)

    def clear(self):
        self.backlog.clear()

    async def send_raw(self, data):
        await self.ws.send(data)

    async def close(self, code=1000):
        """Close and wait for the server's close frame. Unread frames are
        drained meanwhile: the library stops reading when its queue is full,
        and would then never see the server's answer."""
        async def drain():
            try:
                while True:
                    await self.ws.recv()
            except Exception:
                pass
        d = asyncio.ensure_future(drain())
        try:
            if self.ws.transport is not None and not self.ws.transport.is_closing():
                self.ws.transport.resume_reading()  # a test may have paused it
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.ws.close(code), T)
        except Exception:
            pass
        finally:
            d.cancel()

    async def wait_closed(self, timeout=None):
        """Read (and drop) frames until the server closes; return the close code."""
        timeout = timeout or T
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection not closed within {timeout:.1f} s")
            try:
                await asyncio.wait_for(self.ws.recv(), left)
            except websockets.ConnectionClosed:
                await asyncio.wait_for(self.ws.wait_closed(), max(left, 1.0))
                return self.ws.close_code
            except asyncio.TimeoutError:
                continue

    @property
    def close_code(self):
        return self.ws.close_code


def _match(frame, typ=None, **fields):
    if typ is not None and frame.get("type") != typ:
        return False
    return all(frame.get(k) == v for k, v in fields.items())


class JClient(_Client):
    """A JSON-mode client."""

    _refs = itertools.count(1)

    @classmethod
    async def connect(cls, server, user=None, room=None, query=None, hello=True,
                      subprotocols=None, sock=None, max_queue=32):
        """Connect; with user (and hello), sign in with a hello frame; with
        room, join it too. query (a string) is passed on the URL as is."""
        ws = await cls._open(server, query or "", subprotocols, sock, max_queue=max_queue)
        c = cls(ws, server)
        c.user = user
        c.welcome = None
        c.joined = {}
        if user and hello and not query:
            c.welcome = await c.call({"type": "hello", "user": user}, "welcome")
        if room:
            c.joined[room] = await c.call({"type": "join", "room": room}, "joined")
        return c

    def _decode(self, raw):
        return parse_frame(raw)

    async def send(self, obj):
        await self.ws.send(json.dumps(obj))

    def new_ref(self):
        return f"r{next(self._refs)}"

    async def call(self, obj, expect_type=None, timeout=None):
        """Send obj with a fresh ref and return the frame that echoes it;
        with expect_type, fail unless that frame has that type."""
        obj = dict(obj)
        ref = obj.setdefault("ref", self.new_ref())
        await self.send(obj)
        f = await self.expect(lambda f: f.get("ref") == ref, timeout,
                              what=f"the reply to {obj!r}")
        if expect_type is not None and f.get("type") != expect_type:
            raise AssertionError(f"{obj!r} got {f!r}, expected a {expect_type}")
        return f

    async def expect_type(self, typ, timeout=None, **fields):
        return await self.expect(lambda f: _match(f, typ, **fields), timeout,
                                 what=f"{typ} {fields}")

    async def expect_error(self, code, ref=None, timeout=None):
        f = await self.expect(lambda f: f.get("type") == "error", timeout, what=f"error {code}")
        if f.get("code") != code or (ref is not None and f.get("ref") != ref):
            raise AssertionError(f"expected error {code} (ref {ref!r}), got {f!r}")
        return f

    async def sync(self, timeout=None):
        """A barrier: every frame the server queued to us before it answered
        this ping is then in the backlog."""
        await self.call({"type": "ping"}, "pong", timeout)

    async def send_msg(self, room, text, id=None, timeout=None):
        """send and wait for its ack; returns the ack."""
        req = {"type": "send", "room": room, "text": text}
        if id is not None:
            req["id"] = id
        return await self.call(req, "ack", timeout)


class Line(str):
    """One line of text-mode output; .frame is every line of the frame it
    came in (a joined/history/help reply is one multi-line frame)."""
    frame = ()


class TClient(_Client):
    """A text-mode client. Each frame may hold several lines; recv/expect
    work line by line, and the lines after a hit in the same frame are
    t.last_frame[t.last_index + 1:]."""

    last_frame = ()
    last_index = 0

    @classmethod
    async def connect(cls, server, query="format=text", subprotocols=None):
        ws = await cls._open(server, query, subprotocols)
        return cls(ws, server)

    def _decode(self, raw):
        if isinstance(raw, bytes):
            raise AssertionError(f"server sent a binary frame in text mode: {raw[:80]!r}")
        return raw

    async def _next(self, timeout):
        # split a multi-line frame: the first line now, the rest in the
        # backlog ahead of anything later
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        self.received += 1
        lines = self._decode(raw).split("\n")
        if lines and lines[-1] == "" and len(lines) > 1:
            lines.pop()  # one trailing newline ends a line, it is not a line
        lines = [Line(x) for x in lines]
        frame = tuple(lines)
        for ln in lines:
            ln.frame = frame
        self._pending_lines = lines[1:]
        first = lines[0]
        return first

    async def recv(self, timeout=None):
        if self.backlog:
            return self._hit(self.backlog.popleft())
        line = await super().recv(timeout)
        self.backlog.extend(self._pending_lines)
        self._pending_lines = []
        return self._hit(line)

    def _hit(self, line):
        self.last_frame = getattr(line, "frame", ()) or (line,)
        self.last_index = 0
        for i, x in enumerate(self.last_frame):
            if x is line:
                self.last_index = i
        return line

    def rest_of_frame(self):
        """The lines after the last line returned, in the same frame (taken
        out of the backlog)."""
        rest = list(self.last_frame[self.last_index + 1:])
        ids = {id(x) for x in rest}
        self.backlog = collections.deque(x for x in self.backlog if id(x) not in ids)
        return rest

    async def expect(self, pred, timeout=None, what=None):
        if isinstance(pred, str):
            rx = re.compile(pred)
            what = what or pred
            pred = lambda s: rx.search(s) is not None  # noqa: E731
        for i, f in enumerate(self.backlog):
            if pred(f):
                del self.backlog[i]
                return self._hit(f)
        timeout = timeout or T
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:.1f} s waiting for "
                                     f"{what or 'a matching line'}; backlog: "
                                     f"{list(self.backlog)[-8:]!r}")
            try:
                first = await self._next(left)
            except asyncio.TimeoutError:
                continue
            lines = [first] + self._pending_lines
            self._pending_lines = []
            hit = None
            for ln in lines:
                if hit is None and pred(ln):
                    hit = ln
                else:
                    self.backlog.append(ln)
            if hit is not None:
                return self._hit(hit)

    async def expect_none(self, pred=None, window=QUIET, what=None):
        if isinstance(pred, str):
            rx = re.compile(pred)
            pred = lambda s: rx.search(s) is not None  # noqa: E731
        pred = pred or (lambda s: True)
        for ln in self.backlog:
            if pred(ln):
                raise AssertionError(f"unexpected line {what or ''}: {ln!r}")
        deadline = time.monotonic() + window
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                first = await self._next(left)
            except asyncio.TimeoutError:
                return
            for ln in [first] + self._pending_lines:
                if pred(ln):
                    raise AssertionError(f"unexpected line {what or ''}: {ln!r}")
                self.backlog.append(ln)
            self._pending_lines = []

    _pending_lines = []

    async def send(self, line):
        await self.ws.send(line)


# ------------------------------------------------------------------ raw HTTP

def http_get(port, path, method="GET", headers=None, timeout=5.0 * SCALE, body=None, src=None):
    """One HTTP/1.1 request over a raw socket; path is sent byte for byte.
    body (bytes or str), if given, is sent with its Content-Length (a POST).
    src, if given, is the local address to send from (127.0.0.2, ...: Linux
    loopback answers for all of 127/8), so a test can be another client.

    Returns (status, headers {lowercase name: value}, body bytes); status is
    None when the server closed the connection without a response.
    """
    if isinstance(path, str):
        path = path.encode("latin-1")
    hdrs = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
    if body is not None:
        body = body.encode() if isinstance(body, str) else bytes(body)
        hdrs["Content-Length"] = str(len(body))
    hdrs.update(headers or {})
    req = method.encode() + b" " + path + b" HTTP/1.1\r\n"
    req += b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs.items()) + b"\r\n"
    if body is not None:
        req += body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(src, 0) if src else None) as s:
        s.sendall(req)
        data = b""
        deadline = time.monotonic() + timeout
        head_end = -1
        while head_end < 0:
            chunk = _recv_some(s, deadline)
            if not chunk:
                if not data:
                    return None, {}, b""
                raise AssertionError(f"truncated HTTP response head: {data[:200]!r}")
            data += chunk
            head_end = data.find(b"\r\n\r\n")
        head, rest = data[:head_end].decode("latin-1"), data[head_end + 4:]
        lines = head.split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        if not m:
            raise AssertionError(f"bad status line {lines[0]!r}")
        status = int(m.group(1))
        h = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            h[k.strip().lower()] = v.strip()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return status, h, b""
        if "content-length" in h:
            n = int(h["content-length"])
            while len(rest) < n:
                chunk = _recv_some(s, deadline)
                if not chunk:
                    raise AssertionError("HTTP body shorter than its content-length")
                rest += chunk
            return status, h, rest[:n]
        if "chunked" in h.get("transfer-encoding", "").lower():
            return status, h, _dechunk(s, rest, deadline)
        while True:
            chunk = _recv_some(s, deadline)
            if not chunk:
                return status, h, rest
            rest += chunk


def _recv_some(s, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise AssertionError("HTTP response timed out")
    s.settimeout(left)
    try:
        return s.recv(65536)
    except ConnectionResetError:
        return b""


def _dechunk(s, buf, deadline):
    body = b""
    while True:
        while b"\r\n" not in buf:
            more = _recv_some(s, deadline)
            if not more:
                raise AssertionError("truncated chunked body")
            buf += more
        line, buf = buf.split(b"\r\n", 1)
        n = int(line.split(b";")[0], 16)
        while len(buf) < n + 2:
            more = _recv_some(s, deadline)
            if not more:
                raise AssertionError("truncated chunked body")
            buf += more
        if n == 0:
            return body
        body += buf[:n]
        buf = buf[n + 2:]


# ------------------------------------------------------------------ raw WebSocket

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class RawWS:
    """A blocking raw-socket WebSocket client for hostile frames."""

    def __init__(self, port, query="", subprotocol=None, timeout=5.0 * SCALE):
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = "/ws" + (f"?{query}" if query else "")
        req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n")
        if subprotocol:
            req += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            chunk = _recv_some(self.sock, deadline)
            if not chunk:
                raise AssertionError(f"handshake refused: {self.buf[:200]!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        head = head.decode("latin-1")
        if not head.startswith("HTTP/1.1 101"):
            raise AssertionError(f"handshake failed: {head[:200]!r}")
        want = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if want not in head:
            raise AssertionError("bad Sec-WebSocket-Accept")

    def send_frame(self, opcode, payload=b"", fin=True, masked=True, rsv=0, length=None):
        """Send one frame; length overrides the header's payload length (to
        announce more than is sent)."""
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload) if length is None else length
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        mbit = 0x80 if masked else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if masked:
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            head += mask
        try:
            self.sock.sendall(head + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close first; the close code tells

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def _read(self, n, deadline):
        while len(self.buf) < n:
            try:
                chunk = _recv_some(self.sock, deadline)
            except socket.timeout:
                raise AssertionError("timed out reading a frame") from None
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=None):
        """(fin, opcode, payload) of the next frame; EOFError if the TCP
        connection ends first."""
        deadline = time.monotonic() + (timeout or self.timeout)
        b0, b1 = self._read(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8, deadline))[0]
        if b1 & 0x80:
            raise AssertionError("server sent a masked frame")
        return bool(b0 & 0x80), b0 & 0x0F, self._read(n, deadline)

    def recv_message(self, timeout=None):
        """(opcode, payload) of the next data or close frame, fragments joined."""
        deadline = time.monotonic() + (timeout or self.timeout)
        parts, op0 = [], None
        while True:
            fin, op, data = self.recv_frame(max(deadline - time.monotonic(), 0.01))
            if op == OP_PING:
                self.send_frame(OP_PONG, data)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                return op, data
            if op0 is None:
                op0 = op
            parts.append(data)
            if fin:
                return op0, b"".join(parts)

    def expect_close(self, timeout=None):
        """Read until the server's close frame; return (code, reason), or
        (None, "") if the TCP connection ended without one."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                op, data = self.recv_message(max(deadline - time.monotonic(), 0.01))
            except EOFError:
                return None, ""
            if op == OP_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                return code, data[2:].decode("utf-8", "replace")

    def recv_json(self, timeout=None):
        op, data = self.recv_message(timeout)
        if op != OP_TEXT:
            raise AssertionError(f"expected a text frame, got opcode {op}: {data[:80]!r}")
        return parse_frame(data.decode("utf-8"))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def small_rcvbuf_socket(port, size=4096):
    """A TCP socket to the server with a small receive buffer set before
    connecting, so a client that stops reading backs up into the server's
    queue instead of megabytes of kernel buffers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    s.settimeout(T)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    return s


def main():
    """unittest.main with output that tools/test can count."""
    unittest.main(verbosity=2)


async def collect_messages(c, room, n, timeout):
    """The next n message events of room on c, in arrival order (other
    frames are kept in c.skipped)."""
    if not hasattr(c, "skipped"):
        c.skipped = []
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{c.user} got {len(got)} of {n} messages in {timeout:.0f} s:"
                                 f" seqs {[m['seq'] for m in got][-10:]}")
        f = await c.recv(left)
        if f["type"] == "message" and f["room"] == room:
            got.append(f)
        else:
            c.skipped.append(f)
    return got
