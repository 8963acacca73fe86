"""Mail the server submits itself: Postfix's `sendmail` → pickup → cleanup → `non_smtpd_milters`.

Postfix presents such mail to the milter as ESMTP from "localhost", 127.0.0.1, with no login, and
treats a refused (simulated) RCPT as a configuration error that keeps the mail queued. With
`local_submission` configured (docs/postfix.md) the relay reads it as staff mail: delivered to a
citizen; refused at end of message (never at RCPT) when a staff rule refuses it, which Postfix turns
into a bounce to the sender. Without it, the open-relay guard refuses the citizen recipient at RCPT
and the mail sits in Postfix's queue.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import RelayProcess, Sink, free_port
from tests.e2e.postfix import Postfix

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/postfix").exists(), reason="Postfix is installed by ./dev test")
B = "barrancabermeja.gov.co"
TUESDAY = datetime.fromisoformat("2026-11-24T10:00:00-05:00")


class LocalChain:
    def __init__(self, tmp: Path, **relay_config: Any) -> None:
        self.sink = Sink().start()
        self.milter_port = free_port()
        self.relay = RelayProcess(tmp, "smtp://127.0.0.1:1", milter={"listen": f"inet:127.0.0.1:{self.milter_port}"},
                                  **relay_config)
        self.postfix = Postfix(self.relay.port, self.sink.port, B, mode="milter", backoff=3600,
                               milter_port=self.milter_port, milter_timeout=10)
        with (self.postfix.etc / "main.cf").open("a") as main:
            main.write(f"non_smtpd_milters = inet:127.0.0.1:{self.milter_port}\nmyorigin = {B}\n")
        self.relay.set_upstream(f"smtp://127.0.0.1:{self.postfix.reinject_port}")
        self.relay.use_test_clock(TUESDAY)
        self.relay.start()
        self.postfix.start()

    def sendmail(self, sender: str, rcpt: str, subject: str) -> None:
        text = (f"From: {sender}\nTo: {rcpt}\nSubject: {subject}\n"
                f"Message-ID: <{subject.replace(' ', '.')}@web.{B}>\n\nSu solicitud fue radicada.\n")
        done = subprocess.run(["/usr/sbin/sendmail", "-C", str(self.postfix.etc), "-f", sender, rcpt],
                              input=text.encode(), capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr

    def stop(self) -> None:
        self.postfix.stop()
        self.relay.stop()
        self.sink.stop()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalChain]:
    chain = LocalChain(tmp_path_factory.mktemp("local"), local_submission={"clients": ["127.0.0.1"]})
    yield chain
    chain.stop()


def test_sendmail_to_a_citizen_is_delivered(local: LocalChain) -> None:
    local.sendmail(f"pmu@{B}", "ciudadano@example.org", "Radicado 2026-001")
    got = [m for m in local.sink.wait_for(1, timeout=30) if b"Radicado 2026-001" in m.content]
    assert got and got[0].rcpts == ["ciudadano@example.org"], local.postfix.log()[-2000:]
    assert b"X-Relay-Rule-Hits: none" in got[0].content
    assert local.relay.events("decision")[-1]["verdict"] == "deliver"


def test_a_staff_rule_refuses_at_end_of_message_and_postfix_bounces(local: LocalChain) -> None:
    """Laura may not use the mass list: refused at end of message (not at RCPT, which Postfix would
    leave queued), so Postfix returns it to her; the list never gets it."""
    before = len(local.sink.messages)
    local.sendmail(f"laura.pinto@{B}", f"funcionarios@{B}", "Convocatoria general")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(local.sink.messages) < before + 2:
        time.sleep(0.1)
    new = local.sink.messages[before:]
    assert not any(f"funcionarios@{B}" in m.rcpts for m in new)
    assert all(m.mail_from in ("", "<>") and m.rcpts == [f"laura.pinto@{B}"] for m in new), new
    postfix_bounce = [m for m in new if b"<MAILER-DAEMON@" in m.content.split(b"\r\n\r\n")[0]]
    relay_notice = [m for m in new if b"X-Relay-Notice: bounce" in m.content]
    assert postfix_bounce and b"mass-mail-authorized-senders" in postfix_bounce[0].content
    assert relay_notice, new
    assert not local.postfix.queue()


def test_without_local_submission_the_mail_sits_in_postfix_queue(tmp_path: Path) -> None:
    """What the issue saw: the open-relay guard refuses the simulated RCPT; Postfix keeps the mail."""
    chain = LocalChain(tmp_path)
    try:
        chain.sendmail(f"pmu@{B}", "ciudadano@example.org", "Radicado 2026-002")
        queue = chain.postfix.wait_queue(lambda q: bool(q), timeout=20)
        assert queue and not chain.sink.messages
    finally:
        chain.stop()
