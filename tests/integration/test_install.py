"""Installation: a fresh build directory configured with --prefix=/usr,
`meson install --destdir`, then the INSTALLED parleyd serving the
INSTALLED web client; the installed systemd unit checked by
systemd-analyze verify (when the host has it).

The build is a real one from the source tree (with -Dtests=false: the test
suites are not installed and would only make this slower); everything it
does is bounded by timeouts.
"""

import filecmp
import os
import re
import shutil
import stat
import subprocess
import tempfile
import unittest

import harness
from harness import SCALE, JClient, Server, ServerCase, SOURCE, uniq

MESON = shutil.which("meson")
NINJA = shutil.which("ninja") or shutil.which("ninja-build")

TMP = None      # the test's temporary directory
ROOT = None     # the destdir
BUILD_ERROR = None


def _env():
    """The environment for meson, less what a surrounding `meson test`
    sets that would steer the nested build (DESTDIR above all)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MESON") and k not in ("DESTDIR", "PARLEYD")}
    return env


def _run(args, timeout, what):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout * SCALE,
                       env=_env(), stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError(f"{what} failed ({p.returncode}):\n{p.stdout[-3000:]}\n"
                             f"{p.stderr[-3000:]}")
    return p


def setUpModule():
    global TMP, ROOT, BUILD_ERROR
    if not MESON or not NINJA:
        return
    TMP = tempfile.mkdtemp(prefix="parley-install-")
    ROOT = os.path.join(TMP, "root")
    build = os.path.join(TMP, "b")
    try:
        _run([MESON, "setup", "--prefix=/usr", "-Dtests=false", build, SOURCE], 120,
             "meson setup")
        _run([MESON, "install", "-C", build, "--destdir", ROOT], 240, "meson install")
    except (AssertionError, subprocess.TimeoutExpired) as e:
        BUILD_ERROR = str(e)


def tearDownModule():
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def installed(*parts):
    return os.path.join(ROOT, "usr", *parts)


class InstalledMixin:

    def setUp(self):
        if not MESON or not NINJA:
            self.skipTest("meson or ninja not found")
        if BUILD_ERROR:
            self.fail(f"the build/install failed:\n{BUILD_ERROR}")
        super().setUp()


class Layout(InstalledMixin, unittest.TestCase):

    def test_files(self):
        exe = installed("bin", "parleyd")
        self.assertTrue(os.path.isfile(exe), exe)
        self.assertTrue(os.stat(exe).st_mode & stat.S_IXUSR, "parleyd is not executable")
        web = installed("share", "parley", "web")
        src = os.path.join(SOURCE, "web")
        want = sorted(f for f in os.listdir(src) if os.path.isfile(os.path.join(src, f))
                      and f != "meson.build")
        self.assertEqual(sorted(os.listdir(web)), want)
        for f in want:
            self.assertTrue(filecmp.cmp(os.path.join(src, f), os.path.join(web, f),
                                        shallow=False), f)
        self.assertTrue(os.path.isfile(installed("lib", "systemd", "system", "parley.service")))
        self.assertTrue(os.path.isfile(installed("share", "doc", "parley", "README.md")))
        # nothing escaped the prefix
        self.assertEqual(os.listdir(ROOT), ["usr"])

    def test_help_names_the_installed_web_root(self):
        exe = installed("bin", "parleyd")
        p = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10 * SCALE)
        self.assertEqual(p.returncode, 0, p.stderr)
        # the default web root is the installed copy; except that a binary
        # whose source checkout still exists (this host) prefers the
        # checkout's web/ (server/config.c, default_web_root)
        m = re.search(r"--web-root DIR.*\(default: ([^)]*)\)", p.stdout)
        self.assertIsNotNone(m, p.stdout)
        self.assertIn(m.group(1), ("/usr/share/parley/web", os.path.join(SOURCE, "web")))
        with open(exe, "rb") as f:
            self.assertIn(b"/usr/share/parley/web\0", f.read(),
                          "the installed web root is not compiled in")
        p = subprocess.run([exe, "--version"], capture_output=True, text=True,
                           timeout=10 * SCALE)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r"\d+\.\d+")


class Unit(InstalledMixin, unittest.TestCase):

    def unit_text(self):
        with open(installed("lib", "systemd", "system", "parley.service")) as f:
            return f.read()

    def test_unit_contents(self):
        text = self.unit_text()
        self.assertNotIn("@", re.sub(r"(?m)^#.*$", "", text), "an unsubstituted @VAR@")
        m = re.search(r"(?m)^ExecStart=(\S+)(.*)$", text)
        self.assertIsNotNone(m, "no ExecStart")
        self.assertEqual(m.group(1), "/usr/bin/parleyd")
        self.assertIn("--web-root /usr/share/parley/web", m.group(2))
        self.assertRegex(text, r"(?m)^ExecReload=.*-HUP \$MAINPID$")
        self.assertRegex(text, r"(?m)^KillSignal=SIGTERM$")
        # the state directory and every file parleyd makes are the service's alone
        self.assertRegex(text, r"(?m)^StateDirectoryMode=0700$")
        self.assertRegex(text, r"(?m)^UMask=0077$")
        doc = re.search(r"(?m)^Documentation=file://(\S+)$", text)
        if doc:
            self.assertTrue(os.path.isfile(os.path.join(ROOT, doc.group(1).lstrip("/"))),
                            f"Documentation {doc.group(1)} is not installed")

    def verify(self, path):
        p = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True,
                           timeout=60 * SCALE, stdin=subprocess.DEVNULL)
        return p.returncode, (p.stdout + p.stderr).splitlines()

    def test_systemd_analyze_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("no systemd-analyze")
        # a copy whose ExecStart is the destdir's binary (/usr/bin/parleyd is
        # not on this host); everything else as installed
        d = tempfile.mkdtemp(prefix="parley-unit-")
        try:
            unit = os.path.join(d, "parley.service")
            exe = installed("bin", "parleyd")
            with open(unit, "w") as f:
                f.write(re.sub(r"(?m)^ExecStart=/usr/bin/parleyd", f"ExecStart={exe}",
                               self.unit_text()))
            rc, lines = self.verify(unit)
            # only complaints about the unit itself count (systemd-analyze
            # also talks about the host's own units, which are not ours)
            ours = [ln for ln in lines if "parley.service" in ln]
            self.assertEqual(ours, [], "\n".join(lines))
            self.assertEqual(rc, 0, "\n".join(lines))
            # the installed unit as is: only the absent /usr/bin/parleyd
            rc, lines = self.verify(installed("lib", "systemd", "system", "parley.service"))
            ours = [ln for ln in lines if "parley.service" in ln and "/usr/bin/parleyd" not in ln]
            self.assertEqual(ours, [], "\n".join(lines))
        finally:
            shutil.rmtree(d, ignore_errors=True)


class InstalledServer(Server):
    """The installed parleyd on its installed web root."""

    def command(self, port):
        return [installed("bin", "parleyd"), "--listen", f"127.0.0.1:{port}",
                "--db", self.db, "--web-root", installed("share", "parley", "web"),
                "--threads", "1", "--log-level", self.log_level]


class Serving(InstalledMixin, ServerCase):

    @classmethod
    def setUpClass(cls):
        if not MESON or not NINJA or BUILD_ERROR:
            cls.server = InstalledServer()  # never started: setUp skips or fails each test
            return
        super().setUpClass()

    @classmethod
    def make_server(cls):
        return InstalledServer(args=())

    def test_index_is_the_installed_one(self):
        st, h, body = self.server.get("/")
        self.assertEqual(st, 200)
        with open(installed("share", "parley", "web", "index.html"), "rb") as f:
            self.assertEqual(body, f.read())
        self.assertIn("text/html", h.get("content-type", ""))
        for name in os.listdir(installed("share", "parley", "web")):
            st, _, body = self.server.get("/" + name)
            self.assertEqual(st, 200, name)
        self.assertEqual(self.server.get("/healthz")[:3:2], (200, b"ok\n"))

    async def test_chat_on_the_installed_binary(self):
        room = uniq("inst")
        a = await self.json_client(user=uniq("alice"), room=room)
        b = await self.json_client(user=uniq("bob"), room=room)
        ack = await a.send_msg(room, "installed and working")
        f = await b.expect(lambda f: f.get("type") == "message" and f.get("seq") == ack["seq"])
        self.assertEqual(f["text"], "installed and working")
        self.assertIsInstance(a, JClient)


if __name__ == "__main__":
    harness.main()
