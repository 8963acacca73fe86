"""STARTTLS and AUTH on the listener; STARTTLS + AUTH to an SMTP upstream; LMTP to Postfix's smtp-sink."""

from __future__ import annotations

import contextlib
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.e2e.harness import PASSWORD, RelayProcess, Sink, SinkHandler, free_port, wait_port

B = "barrancabermeja.gov.co"
LAURA = f"laura.pinto@{B}"


def message(subject: str = "Informe") -> bytes:
    return f"From: {LAURA}\r\nTo: jose@gmail.com\r\nSubject: {subject}\r\n\r\nCordial saludo.\r\n".encode()


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    crt, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    return crt, key


def client_context(crt: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(crt))


# --- the listener --------------------------------------------------------------------------------

@pytest.fixture
def tls_relay(tmp_path: Path, sink: Sink, cert: tuple[Path, Path]) -> Iterator[RelayProcess]:
    crt, key = cert
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", tls={"cert": str(crt), "key": str(key)},
                         auth={"allow_plaintext_on_loopback": False}).start()
    yield relay
    relay.stop()


def test_auth_only_after_starttls(tls_relay: RelayProcess, sink: Sink, cert: tuple[Path, Path]) -> None:
    with smtplib.SMTP("127.0.0.1", tls_relay.port, timeout=15) as smtp:
        smtp.ehlo("client.test")
        assert smtp.has_extn("starttls")
        code, text = smtp.docmd("AUTH", "PLAIN AGxhdXJhAHg=")
        assert code == 538, text  # RFC 4954 §4: encryption required for this mechanism
        smtp.starttls(context=client_context(cert[0]))
        smtp.ehlo("client.test")
        assert "PLAIN" in smtp.esmtp_features.get("auth", "")
        smtp.login(LAURA, PASSWORD)
        assert smtp.sendmail(LAURA, ["jose@gmail.com"], message()) == {}
    [got] = sink.wait_for(1)
    assert b"with ESMTPSA id" in got.content  # TLS and AUTH both in the trace header


def test_a_bad_certificate_is_a_clear_startup_error(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}",
                         tls={"cert": str(tmp_path / "missing.pem"), "key": str(tmp_path / "missing.key")})
    relay.config_path.write_text(__import__("yaml").safe_dump(relay.config), encoding="utf-8")
    done = subprocess.run([__import__("sys").executable, "-m", "relay", "serve", "--init", "--config",
                           str(relay.config_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3  # a config error
    assert "relay.yaml:" in done.stderr and "tls.cert: file not found" in done.stderr and "missing.pem" in done.stderr
    assert "Traceback" not in done.stderr


# --- an upstream that wants STARTTLS and AUTH (as Microsoft 365 or Google would) -------------------

class AuthSinkHandler(SinkHandler):
    logins: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.logins = []


def upstream_auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"relay@example.org" and data.password == b"s3cret"
    return AuthResult(success=ok)


@pytest.fixture
def tls_upstream(cert: tuple[Path, Path]) -> Iterator[tuple[Controller, SinkHandler]]:
    crt, key = cert
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    handler = SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, auth_required=True, authenticator=upstream_auth)
    controller.start()
    yield controller, handler
    controller.stop()


def test_starttls_and_auth_to_the_upstream(tmp_path: Path, cert: tuple[Path, Path],
                                           tls_upstream: tuple[Controller, SinkHandler]) -> None:
    controller, handler = tls_upstream
    (tmp_path / "upstream.pass").write_text("s3cret\n")
    options = {"tls_ca_file": str(cert[0]), "password_file": str(tmp_path / "upstream.pass")}
    relay = RelayProcess(tmp_path, f"smtp://relay%40example.org@127.0.0.1:{controller.port}?starttls=1",
                         upstream_options=options).start()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
            smtp.login(LAURA, PASSWORD)
            assert smtp.sendmail(LAURA, ["jose@gmail.com"], message()) == {}
        deadline = time.monotonic() + 10
        while not handler.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m.rcpts for m in handler.messages] == [["jose@gmail.com"]]
    finally:
        relay.stop()


def test_an_unverifiable_upstream_certificate_is_a_451_not_a_loss(tmp_path: Path,
                                                                  tls_upstream: tuple[Controller, SinkHandler]) -> None:
    controller, handler = tls_upstream
    # no CA file: the system store does not know our self-signed certificate
    relay = RelayProcess(tmp_path, f"smtp://relay%40example.org:s3cret@127.0.0.1:{controller.port}?starttls=1").start()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
            smtp.login(LAURA, PASSWORD)
            smtp.mail(LAURA)
            code, text = smtp.rcpt("jose@gmail.com")
        assert code == 451 and b"4.4.1" in text
        assert handler.messages == []
    finally:
        relay.stop()


# --- LMTP: Postfix's smtp-sink in LMTP mode, one reply per recipient -------------------------------

@pytest.fixture
def lmtp_sink() -> Iterator[tuple[int, Path]]:
    if shutil.which("smtp-sink") is None and not Path("/usr/sbin/smtp-sink").exists():
        pytest.skip("smtp-sink comes with Postfix, installed by ./dev test")
    folder = Path(tempfile.mkdtemp(prefix="relay-lmtp-"))
    folder.chmod(0o777)
    port = free_port()
    proc = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "postfix", "-L", "-d", f"{folder}/%H%M%S.",
                             f"127.0.0.1:{port}", "10"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port, folder
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(folder, ignore_errors=True)


def test_lmtp_upstream_with_several_recipients(tmp_path: Path, lmtp_sink: tuple[int, Path]) -> None:
    port, folder = lmtp_sink
    relay = RelayProcess(tmp_path, f"lmtp://127.0.0.1:{port}").start()
    rcpts = ["jose@gmail.com", "ana@example.org", "pedro@example.net"]
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
            smtp.login(LAURA, PASSWORD)
            for i in range(3):  # three messages on one connection: the LMTP replies stay in step
                assert smtp.sendmail(LAURA, rcpts, message(f"Informe {i}")) == {}
        deadline = time.monotonic() + 10
        while len(list(folder.iterdir())) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        dumps = sorted(p.read_bytes() for p in folder.iterdir())
        assert len(dumps) == 3
        for dump in dumps:
            assert b"X-Client-Proto: LMTP" in dump
            assert [line for line in dump.splitlines() if line.startswith(b"X-Rcpt-Args:")] == [
                f"X-Rcpt-Args: <{r}>".encode() for r in rcpts]
    finally:
        relay.stop()


def test_starttls_command_injection_gets_no_reply(tls_relay: RelayProcess, sink: Sink,
                                                  cert: tuple[Path, Path]) -> None:
    """Commands sent in the same packet as STARTTLS (before the handshake) are thrown away
    (RFC 3207 4.2; CVE-2011-0411): nothing of them is answered inside the TLS session."""
    with socket.create_connection(("127.0.0.1", tls_relay.port), timeout=10) as raw:
        raw.recv(1024)
        raw.sendall(b"EHLO inject.test\r\n")
        time.sleep(0.3)
        raw.recv(4096)
        raw.sendall(b"STARTTLS\r\nNOOP injected\r\nMAIL FROM:<ana@example.org>\r\n")
        assert raw.recv(1024).startswith(b"220")
        tls = client_context(cert[0]).wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"EHLO after.test\r\n")
        time.sleep(0.5)
        tls.settimeout(1)
        replies = b""
        with contextlib.suppress(TimeoutError):
            while chunk := tls.recv(4096):  # everything the relay says, until it falls silent
                replies += chunk
        final = [line for line in replies.split(b"\r\n") if line[3:4] == b" "]
        assert replies.startswith(b"250-") and len(final) == 1, replies  # only our EHLO's reply
        tls.sendall(b"RCPT TO:<pmu@barrancabermeja.gov.co>\r\n")  # no MAIL was accepted: the injected one is gone
        reply = tls.recv(1024)
        assert reply.startswith(b"503") and b"MAIL" in reply, reply
