"""Through a real Postfix: after-queue content_filter and before-queue smtpd_proxy_filter."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import RelayProcess, Sink
from tests.e2e.postfix import Postfix

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/postfix").exists() or shutil.which("swaks") is None,
                                reason="Postfix and swaks are installed by ./dev test")
B = "barrancabermeja.gov.co"
OUTSIDE_IP = "198.51.100.25"  # TEST-NET-2: a client that is not the institution's


def start_chain(tmp_path: Path, mode: str) -> tuple[Postfix, Sink, RelayProcess]:
    sink = Sink().start()
    relay = RelayProcess(tmp_path, "smtp://127.0.0.1:1", trust={"xforward_hosts": ["127.0.0.1"]})
    postfix = Postfix(relay.port, sink.port, B, mode=mode)  # type: ignore[arg-type]
    relay.set_upstream(f"smtp://127.0.0.1:{postfix.reinject_port}")
    relay.start()
    postfix.start()
    return postfix, sink, relay


@pytest.fixture(params=["content_filter", "proxy"])
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Postfix, Sink, RelayProcess]]:
    postfix, sink, relay = start_chain(tmp_path, request.param)
    try:
        yield postfix, sink, relay
    finally:
        postfix.stop()
        relay.stop()
        sink.stop()


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", *args], capture_output=True, text=True,
                          timeout=60)


def xclient_session(postfix: Postfix, login: str | None, addr: str) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", postfix.smtpd_port, timeout=60)
    smtp.ehlo("client.test")
    attrs = f"ADDR={addr} NAME=[UNAVAILABLE]" + (f" LOGIN={login}" if login else "")
    code, text = smtp.docmd("XCLIENT", attrs)
    assert code == 220, text
    smtp.ehlo("client.test")
    return smtp


def test_clean_mail_passes_through_postfix_and_the_relay(chain: tuple[Postfix, Sink, RelayProcess]) -> None:
    postfix, sink, relay = chain
    done = swaks(postfix.smtpd_port, "--from", f"laura.pinto@{B}", "--to", f"pmu@{B}",
                 "--header", "Subject: Reporte diario")
    assert done.returncode == 0, done.stdout
    [got] = sink.wait_for(1, timeout=30)
    assert got.rcpts == [f"pmu@{B}"]
    assert b"(policy-relay)" in got.content and b"X-Relay-Rule-Hits: none" in got.content
    [decision] = relay.wait_events("decision")
    assert decision["verdict"] == "deliver"
    assert decision["client_ip"] == "127.0.0.1"  # XFORWARD ADDR of the original client (swaks)


def test_the_sasl_login_postfix_recorded_is_the_identity(chain: tuple[Postfix, Sink, RelayProcess]) -> None:
    postfix, sink, relay = chain
    # Laura (a funcionaria) logged in to Postfix from outside writes to a mass list: the relay learns
    # the login from Postfix's own Received header, XFORWARD gives the client address.
    with xclient_session(postfix, f"laura.pinto@{B}", OUTSIDE_IP) as smtp:
        try:
            smtp.sendmail(f"laura.pinto@{B}", [f"funcionarios@{B}"],
                          f"From: laura.pinto@{B}\r\nTo: funcionarios@{B}\r\nSubject: Rifa\r\n\r\nHola\r\n".encode())
            outcome = "accepted"
        except smtplib.SMTPDataError as error:
            outcome = f"{error.smtp_code} {error.smtp_error.decode()}"
    [decision] = relay.wait_events("decision")
    assert decision["login"] == f"laura.pinto@{B}" and decision["client_ip"] == OUTSIDE_IP
    if postfix.mode == "proxy":
        # before queue: the client itself hears the refusal, nothing is queued, nobody is bounced
        assert outcome.startswith("550 5.7.1 [mass-mail-authorized-senders]"), outcome
        assert "005-20" in outcome.replace("\n", " ")
        # nothing queued for the list; the only mail is the relay's notice to Laura (null sender)
        [notice] = sink.wait_for(1, timeout=30)
        assert notice.mail_from == "<>" and notice.rcpts == [f"laura.pinto@{B}"]
        assert b"X-Relay-Notice: bounce" in notice.content
    else:
        # after queue: Postfix accepted it, then bounces the relay's refusal to the sender
        assert outcome == "accepted"
        bounce = [m for m in sink.wait_for(2, timeout=30) if b"Undelivered Mail" in m.content]
        assert bounce and bounce[0].rcpts == [f"laura.pinto@{B}"]
        assert b"005-20" in bounce[0].content.replace(b"\r\n ", b" ")
    assert not any(f"funcionarios@{B}" in m.rcpts for m in sink.messages)
