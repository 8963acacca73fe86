"""The automatic mail an institution gets every day, through the running relay: the flufl.bounce
collection (117 real bounces, fetched by tests/corpora.py) sent by our own mail server, and twenty
out-of-office replies in the shapes Exchange, Gmail and Zimbra use (tests/out_of_office.py), from
staff through our server and from outside. RFC 3834 §2: 0 notices, 0 auto-replies, 0 refusals.
"""

from __future__ import annotations

import smtplib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import corpora
from tests.e2e.harness import PASSWORD, RelayProcess, Sink
from tests.out_of_office import replies

B = "barrancabermeja.gov.co"
WEB_MAILBOX = f"soportetic@{B}"  # auto-answers whatever is not a publication request (Circular 004)
LAURA = f"laura.pinto@{B}"
STAFF = [("Laura Pinto", LAURA), ("Efraín Andrés Molina Montero", f"efrain.molinam@{B}"),
         ("Carlos Rueda", f"carlos.rueda@{B}")]
OUTSIDE = [("Ana Gómez", "ana.gomez@gmail.com"), ("Juan Ruiz", "jruiz@contratista.example"),
           ("Oficina Jurídica", "juridica@municipio.example")]
SUPPORT_SUBJECT = "Mi computador no enciende"  # what soportetic@ answers with the form, for a person


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.stop()


def send(port: int, messages: list[tuple[str, bytes]], rcpts: list[str]) -> Counter[int]:
    """Each (envelope sender, bytes) in its own transaction; counts of DATA reply codes."""
    seen: Counter[int] = Counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("mail.test")
        for sender, data in messages:
            code, _ = smtp.mail(sender or "<>")
            assert code == 250
            for rcpt in rcpts:
                code, text = smtp.rcpt(rcpt)
                assert code == 250, (rcpt, code, text)
            code, text = smtp.data(data)
            assert code == 250, (code, text, data[:300])
            seen[code] += 1
            smtp.rset()
    return seen


def notices_after(sink: Sink, settle: float = 2.0) -> list[list[str]]:
    time.sleep(settle)  # the outbox is drained by the scheduler: give it time to send anything
    return [m.rcpts for m in sink.messages if b"X-Relay-Notice" in m.content]


def test_bounces_and_out_of_office_from_our_own_server(tmp_path: Path, sink: Sink) -> None:
    """Our mail server (local_submission: 127.0.0.1 here) passes on real bounces and staff
    out-of-office replies: none is refused by the staff-identity rules, none is answered."""
    bounces = [("", corpora.raw(p)) for p in corpora.messages(corpora.BOUNCES)] if corpora.BOUNCES.exists() else []
    if not bounces:
        if corpora.required():
            pytest.fail("bounce corpus missing: run python -m tests.corpora")
        pytest.skip("corpora not fetched (python -m tests.corpora; ./dev test does it)")
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", local_submission={"clients": ["127.0.0.1"]},
                         log={"level": "info"}).start()
    try:
        seen = send(relay.port, bounces, [WEB_MAILBOX, f"pmu@{B}", LAURA])
        seen += send(relay.port, replies(STAFF, WEB_MAILBOX, SUPPORT_SUBJECT), [WEB_MAILBOX, f"patriciah.fierro@{B}"])
        assert seen == Counter({250: len(bounces) + 20})
        decisions = relay.wait_events("decision", len(bounces) + 20)
        assert Counter(d["verdict"] for d in decisions) == Counter({"deliver": len(bounces) + 20})
        assert notices_after(sink) == []
        print(f"{len(bounces)} bounces and 20 out-of-office replies from our server: 0 refused, 0 notices")
    finally:
        relay.stop()


def test_out_of_office_from_outside_gets_no_auto_reply(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}").start()
    try:
        seen = send(relay.port, replies(OUTSIDE, WEB_MAILBOX, SUPPORT_SUBJECT), [WEB_MAILBOX, LAURA])
        assert seen == Counter({250: 20})
        hits = [d.get("rules") or d.get("hits") for d in relay.wait_events("decision", 20)]
        assert len(hits) == 20
        assert notices_after(sink) == []
        # control: a person's support question to the web mailbox does get the auto-reply
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
            smtp.login(LAURA, PASSWORD)
            smtp.sendmail(LAURA, [WEB_MAILBOX], f"From: {LAURA}\r\nTo: {WEB_MAILBOX}\r\n"
                          f"Subject: {SUPPORT_SUBJECT}\r\n\r\nBuenos dias, no enciende.\r\n".encode())
        deadline = time.monotonic() + 15
        while not notices_after(sink, 0.1) and time.monotonic() < deadline:
            pass
        assert notices_after(sink, 1.0) == [[LAURA]]
    finally:
        relay.stop()


def ask_support(port: int, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.login(LAURA, PASSWORD)
        smtp.sendmail(LAURA, [WEB_MAILBOX], f"From: {LAURA}\r\nTo: {WEB_MAILBOX}\r\n"
                      f"Subject: {SUPPORT_SUBJECT} ({n})\r\nMessage-ID: <support-{n}@{B}>\r\n\r\n"
                      "Buenos dias, sigue sin encender.\r\n".encode())


def test_one_auto_reply_per_sender_per_grace_period_even_across_a_restart(tmp_path: Path, sink: Sink) -> None:
    """Mailman's autoresponse_grace_period: Laura asks soportetic@ three times, with a relay restart
    in between; she is told about the form once. With the period at 0, every time."""
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", auto_reply_grace_period=3600).start()
    try:
        ask_support(relay.port, 1)
        ask_support(relay.port, 2)
        relay.wait_events("decision", 2)
        relay.stop()
        relay.start()
        ask_support(relay.port, 3)
        relay.wait_events("decision", 3)
        assert notices_after(sink, 3.0) == [[LAURA]]
        assert len(relay.events("auto_reply_suppressed")) == 2
        assert len([m for m in sink.messages if b"X-Relay-Notice" not in m.content]) == 3  # all delivered
    finally:
        relay.stop()


def test_a_grace_period_of_zero_answers_every_time(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", auto_reply_grace_period=0).start()
    try:
        ask_support(relay.port, 1)
        ask_support(relay.port, 2)
        deadline = time.monotonic() + 15
        while len(notices_after(sink, 0.2)) < 2 and time.monotonic() < deadline:
            pass
        assert notices_after(sink, 1.0) == [[LAURA], [LAURA]]
    finally:
        relay.stop()
