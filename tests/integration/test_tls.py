"""TLS: parleyd --tls-cert/--tls-key serves https:// and wss:// on its one
port. A chain (root CA -> intermediate -> leaf, the cert file holding the
leaf and the intermediate) verifies against the root alone; a self-signed
certificate works too; TLS 1.0/1.1 are refused, 1.2 and 1.3 accepted;
SIGHUP reloads the certificate for new connections while existing wss
connections keep chatting, and a broken reload keeps the old certificate.

Certificates are made with the openssl CLI in the test's temporary
directory.
"""

import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import warnings

import websockets

import harness
from harness import SCALE, T, JClient, Server, ServerCase, uniq

OPENSSL = shutil.which("openssl")


def openssl(*args, cwd):
    p = subprocess.run([OPENSSL] + list(args), cwd=cwd, capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{p.stderr}")
    return p.stdout


class Pki:
    """A root CA, an intermediate CA, and leaf certificates for localhost
    and 127.0.0.1 signed by the intermediate; also self-signed leaves."""

    def __init__(self, d):
        self.d = d
        self._ca("root", None, "parley test root")
        self._ca("inter", "root", "parley test intermediate")

    def path(self, name):
        return os.path.join(self.d, name)

    def _key(self, name):
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-out", f"{name}.key", cwd=self.d)

    def _ext(self, name, text):
        with open(self.path(f"{name}.ext"), "w") as f:
            f.write(text)
        return f"{name}.ext"

    def _ca(self, name, issuer, cn):
        self._key(name)
        ext = self._ext(name, "basicConstraints=critical,CA:TRUE\n"
                              "keyUsage=critical,keyCertSign,cRLSign\n"
                              "subjectKeyIdentifier=hash\n")
        if issuer is None:
            openssl("req", "-x509", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}",
                    "-days", "2", "-out", f"{name}.pem", "-extensions", "v3",
                    "-config", self._cnf(ext), cwd=self.d)
        else:
            openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={cn}",
                    "-out", f"{name}.csr", cwd=self.d)
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem",
                    "-CAkey", f"{issuer}.key", "-set_serial", "7", "-days", "2",
                    "-extfile", ext, "-out", f"{name}.pem", cwd=self.d)

    def _cnf(self, ext):
        """A minimal openssl config whose [v3] section is the ext file."""
        with open(self.path(ext)) as f:
            body = f.read()
        name = ext + ".cnf"
        with open(self.path(name), "w") as f:
            f.write("[req]\ndistinguished_name=dn\n[dn]\n[v3]\n" + body)
        return name

    LEAF_EXT = ("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def leaf(self, name, serial):
        """name.key, name.pem (leaf only) and name.chain.pem (leaf then the
        intermediate); returns (chain path, key path)."""
        self._key(name)
        ext = self._ext(name, self.LEAF_EXT)
        openssl("req", "-new", "-key", f"{name}.key", "-subj", "/CN=localhost",
                "-out", f"{name}.csr", cwd=self.d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "inter.pem", "-CAkey", "inter.key",
                "-set_serial", str(serial), "-days", "2", "-extfile", ext,
                "-out", f"{name}.pem", cwd=self.d)
        with open(self.path(f"{name}.chain.pem"), "w") as out:
            for part in (f"{name}.pem", "inter.pem"):
                with open(self.path(part)) as f:
                    out.write(f.read())
        return self.path(f"{name}.chain.pem"), self.path(f"{name}.key")

    def self_signed(self, name, serial):
        self._key(name)
        ext = self._ext(name, self.LEAF_EXT)
        openssl("req", "-x509", "-new", "-key", f"{name}.key", "-subj", "/CN=localhost",
                "-set_serial", str(serial), "-days", "2", "-out", f"{name}.pem",
                "-extensions", "v3", "-config", self._cnf(ext), cwd=self.d)
        return self.path(f"{name}.pem"), self.path(f"{name}.key")


def client_context(cafile, minimum=None, maximum=None):
    ctx = ssl.create_default_context(cafile=cafile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1, on purpose
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
    return ctx


def tls_connect(port, ctx, server_hostname="localhost", timeout=T):
    """A TLS connection to the server (handshake done)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def https_get(port, path, ctx, timeout=T):
    """GET over TLS; (status, body, peer certificate DER, TLS version)."""
    with tls_connect(port, ctx, timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ssl.SSLZeroReturnError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
        der, version = s.getpeercert(binary_form=True), s.version()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else None
    return status, body, der, version


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def pem_fingerprint(path):
    """SHA-256 of the first certificate in a PEM file."""
    with open(path) as f:
        pem = f.read()
    first = pem[:pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return fingerprint(ssl.PEM_cert_to_DER_cert(first))


class TlsServer(Server):
    """A parleyd with --tls-cert/--tls-key; ready when https /healthz
    answers with a certificate the client context verifies."""

    def __init__(self, cert, key, cafile, **kw):
        super().__init__(**kw)
        self.args += ["--tls-cert", cert, "--tls-key", key]
        self.cafile = cafile

    def context(self, **kw):
        return client_context(self.cafile, **kw)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                st, body, _, _ = https_get(self.port, "/healthz", self.context(), timeout=1.0)
                if st == 200 and body == b"ok\n":
                    return True
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.05)
        return False

    def ws_url(self, query=""):
        q = query.lstrip("?")
        return f"wss://127.0.0.1:{self.port}/ws" + (f"?{q}" if q else "")


@unittest.skipUnless(OPENSSL, "no openssl CLI")
class TlsCase(ServerCase):
    """One TLS server per class; subclasses pick the certificate."""

    @classmethod
    def make_pki_server(cls, tmp, pki):
        raise NotImplementedError

    @classmethod
    def make_server(cls):
        tmp = tempfile.mkdtemp(prefix="parley-tls-")
        try:
            cls.pki = Pki(tmp)
            return cls.make_pki_server(tmp, cls.pki)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    async def wss_client(self, user, room=None, ctx=None):
        ws = await websockets.connect(self.server.ws_url(), ssl=ctx or self.server.context(),
                                      server_hostname="localhost", open_timeout=T,
                                      close_timeout=T, ping_interval=None, max_queue=32)
        c = JClient(ws, self.server)
        self.addAsyncCleanup(c.close)
        c.user, c.joined = user, {}
        c.welcome = await c.call({"type": "hello", "user": user}, "welcome")
        if room:
            c.joined[room] = await c.call({"type": "join", "room": room}, "joined")
        return c

    async def chat(self, a, b, room, what):
        """a sends, b receives, and the other way round."""
        for x, y in ((a, b), (b, a)):
            text = f"{what} from {x.user}"
            ack = await x.send_msg(room, text)
            f = await y.expect(lambda f: f.get("type") == "message" and f.get("seq") == ack["seq"],
                               what=f"{what}: message {ack['seq']}")
            self.assertEqual(f["text"], text)


class Chain(TlsCase):
    """Leaf + intermediate in the cert file; the client trusts the root."""

    @classmethod
    def make_pki_server(cls, tmp, pki):
        cert, key = pki.leaf("leaf", 1001)
        return TlsServer(cert, key, pki.path("root.pem"), tmpdir=tmp)

    def test_https_healthz_verifies_with_the_root(self):
        st, body, der, _ = https_get(self.server.port, "/healthz", self.server.context())
        self.assertEqual((st, body), (200, b"ok\n"))
        self.assertEqual(fingerprint(der), pem_fingerprint(self.pki.path("leaf.pem")))
        # the IP address is in the certificate too
        with tls_connect(self.server.port, self.server.context(), "127.0.0.1") as s:
            self.assertEqual(s.getpeercert()["subject"], ((("commonName", "localhost"),),))

    def test_verification_is_real(self):
        # trusting nothing, or only the intermediate's sibling, fails
        with self.assertRaises(ssl.SSLCertVerificationError):
            https_get(self.server.port, "/healthz", ssl.create_default_context(
                cafile=self.pki.path("leaf.pem")))
        with self.assertRaises(ssl.SSLCertVerificationError):
            tls_connect(self.server.port, self.server.context(), "not-localhost.example")
        self.assertEqual(https_get(self.server.port, "/healthz", self.server.context())[0], 200)

    def test_index_over_https(self):
        st, body, _, _ = https_get(self.server.port, "/", self.server.context())
        self.assertEqual(st, 200)
        with open(os.path.join(self.server.web_root, "index.html"), "rb") as f:
            self.assertEqual(body, f.read())

    async def test_wss_chat(self):
        room = uniq("tls")
        a = await self.wss_client(uniq("alice"), room)
        b = await self.wss_client(uniq("bob"), room)
        await self.chat(a, b, room, "over wss")
        self.assertIsNotNone(a.ws.transport.get_extra_info("ssl_object"))

    def test_tls_versions(self):
        port = self.server.port
        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=v.name):
                st, _, _, version = https_get(port, "/healthz",
                                              self.server.context(minimum=v, maximum=v))
                self.assertEqual(st, 200)
                self.assertEqual(version, {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[v.name])
        for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            with self.subTest(version=v.name):
                ctx = self.server.context(minimum=ssl.TLSVersion.TLSv1, maximum=v)
                # let this client really offer the old version: OpenSSL 3's
                # default security level would refuse it on the client side
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                with self.assertRaises(ssl.SSLError) as cm:
                    tls_connect(port, ctx).close()
                # the server's alert, not the client refusing by itself
                # (that would be NO_PROTOCOLS_AVAILABLE)
                self.assertIn("PROTOCOL_VERSION", str(cm.exception))
        self.assertEqual(https_get(port, "/healthz", self.server.context())[0], 200)

    def test_plain_http_on_the_tls_port(self):
        st, _, body = harness.http_get(self.server.port, "/healthz")
        self.assertNotEqual((st, body), (200, b"ok\n"))
        self.assertEqual(https_get(self.server.port, "/healthz", self.server.context())[0], 200)


class SelfSigned(TlsCase):

    @classmethod
    def make_pki_server(cls, tmp, pki):
        cert, key = pki.self_signed("self", 4242)
        return TlsServer(cert, key, cert, tmpdir=tmp)

    async def test_self_signed(self):
        st, body, der, _ = https_get(self.server.port, "/healthz", self.server.context())
        self.assertEqual((st, body), (200, b"ok\n"))
        self.assertEqual(fingerprint(der), pem_fingerprint(self.pki.path("self.pem")))
        room = uniq("self")
        a = await self.wss_client(uniq("alice"), room)
        b = await self.wss_client(uniq("bob"), room)
        await self.chat(a, b, room, "self-signed")


class Reload(TlsCase):
    """SIGHUP swaps the certificate for new connections only."""

    @classmethod
    def make_pki_server(cls, tmp, pki):
        cert, key = pki.leaf("leaf", 1001)
        # the server reads these two paths; the tests replace their contents
        shutil.copy(cert, os.path.join(tmp, "server.pem"))
        shutil.copy(key, os.path.join(tmp, "server.key"))
        # info: the log tells when a SIGHUP has been dealt with
        return TlsServer(os.path.join(tmp, "server.pem"), os.path.join(tmp, "server.key"),
                         pki.path("root.pem"), tmpdir=tmp, log_level="info")

    def install(self, cert, key):
        """Replace the server's files atomically (as a deploy tool would)."""
        for src, dst in ((cert, "server.pem"), (key, "server.key")):
            tmp = os.path.join(self.server.tmp, dst + ".new")
            shutil.copy(src, tmp)
            os.replace(tmp, os.path.join(self.server.tmp, dst))

    def served(self):
        return fingerprint(https_get(self.server.port, "/healthz", self.server.context())[2])

    async def wait_served(self, want, what):
        await harness.async_wait_for(lambda: self.served() == want, 5 * SCALE, 0.05, what)

    async def test_sighup_reload(self):
        old_fp = pem_fingerprint(self.pki.path("leaf.pem"))
        self.assertEqual(self.served(), old_fp)
        room = uniq("reload")
        a = await self.wss_client(uniq("alice"), room)
        b = await self.wss_client(uniq("bob"), room)
        await self.chat(a, b, room, "before the reload")

        cert2, key2 = self.pki.leaf("leaf2", 2002)
        new_fp = pem_fingerprint(self.pki.path("leaf2.pem"))
        self.assertNotEqual(new_fp, old_fp)
        self.install(cert2, key2)
        self.server.proc.send_signal(signal.SIGHUP)
        await self.wait_served(new_fp, "the new certificate on a new connection")
        with tls_connect(self.server.port, self.server.context()) as s:
            self.assertEqual(int(s.getpeercert()["serialNumber"], 16), 2002)
        # the wss connections made before the reload carry on, with the old
        # certificate, next to a new one made after it
        self.assertEqual(fingerprint(a.ws.transport.get_extra_info("ssl_object")
                                     .getpeercert(binary_form=True)), old_fp)
        await self.chat(a, b, room, "after the reload")
        c = await self.wss_client(uniq("carol"), room)
        self.assertEqual(fingerprint(c.ws.transport.get_extra_info("ssl_object")
                                     .getpeercert(binary_form=True)), new_fp)
        await self.chat(a, c, room, "old and new")

        # a broken reload (garbage, a key that does not match) keeps the
        # current certificate, and the server
        cert3, key3 = self.pki.leaf("leaf3", 3003)
        hups = 1
        for what, cert, key in (("garbage", None, key3), ("mismatched key", cert3, key2),
                                ("missing file", "missing", key3)):
            with self.subTest(reload=what):
                if cert is None:
                    with open(os.path.join(self.server.tmp, "server.pem"), "w") as f:
                        f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
                elif cert == "missing":
                    os.unlink(os.path.join(self.server.tmp, "server.pem"))
                else:
                    self.install(cert, key)
                self.server.proc.send_signal(signal.SIGHUP)
                # the reload is done when the log says so
                hups += 1
                await harness.async_wait_for(
                    lambda: self.server.log_text().count("SIGHUP") >= hups,
                    5 * SCALE, 0.05, f"the server logging the {what} reload")
                self.assertTrue(self.server.running)
                self.assertEqual(self.served(), new_fp)
                await self.chat(a, c, room, f"after a {what} reload")
        # and a good one after the broken ones works
        self.install(cert3, key3)
        self.server.proc.send_signal(signal.SIGHUP)
        await self.wait_served(pem_fingerprint(self.pki.path("leaf3.pem")),
                               "the third certificate")
        await self.chat(a, c, room, "after the last reload")
        self.assertEqual(https_get(self.server.port, "/healthz", self.server.context())[:2],
                         (200, b"ok\n"))


if __name__ == "__main__":
    harness.main()
