"""Milter protocol negotiation with a real Postfix that offers an older version than 6.

Postfix's `milter_protocol` (2, 3, 4 or 6) is the version it offers in SMFIC_OPTNEG; a milter that
answers with a higher version is dropped and `milter_default_action` (tempfail) applies to every
message. The relay answers with the lower of the two and still decides: a policy refusal is the
relay's own 5xx, and ordinary mail is delivered.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.harness import RelayProcess, Sink, free_port
from tests.e2e.postfix import Postfix

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/postfix").exists(), reason="Postfix is installed by ./dev test")
B = "barrancabermeja.gov.co"
TUESDAY = datetime.fromisoformat("2026-11-24T10:00:00-05:00")


@pytest.fixture(params=[2, 4])
def chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Postfix, Sink, RelayProcess]]:
    sink = Sink().start()
    milter_port = free_port()
    relay = RelayProcess(tmp_path, "smtp://127.0.0.1:1", milter={"listen": f"inet:127.0.0.1:{milter_port}"})
    postfix = Postfix(relay.port, sink.port, B, mode="milter", backoff=3600, milter_port=milter_port,
                      milter_timeout=10)
    main = (postfix.etc / "main.cf").read_text().replace("milter_protocol = 6", f"milter_protocol = {request.param}")
    (postfix.etc / "main.cf").write_text(main)
    relay.set_upstream(f"smtp://127.0.0.1:{postfix.reinject_port}")
    relay.use_test_clock(TUESDAY)
    relay.start()
    postfix.start()
    yield postfix, sink, relay
    postfix.stop()
    relay.stop()
    sink.stop()


def test_an_older_milter_protocol_is_negotiated(chain: tuple[Postfix, Sink, RelayProcess]) -> None:
    postfix, sink, relay = chain
    with smtplib.SMTP("127.0.0.1", postfix.smtpd_port, timeout=60) as smtp:
        smtp.ehlo("client.test")
        smtp.sendmail("ana@example.org", [f"laura.pinto@{B}"],
                      f"From: Ana <ana@example.org>\r\nTo: laura.pinto@{B}\r\nSubject: Consulta\r\n"
                      "Message-ID: <v-1@example.org>\r\n\r\nBuenos dias.\r\n".encode())
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.sendmail("spam@example.net", ["victim@example.org"], b"Subject: x\r\n\r\nx\r\n")
    code, text = refused.value.recipients["victim@example.org"]
    assert code == 554 and b"open-relay-guard" in text, (code, text, postfix.log()[-1500:])
    got = sink.wait_for(1, timeout=20)
    assert got and got[0].rcpts == [f"laura.pinto@{B}"], postfix.log()[-1500:]
    assert b"X-Relay-Rule-Hits" in got[0].content
    negotiated = relay.events("milter_negotiated")
    assert negotiated and negotiated[0]["version"] <= 4
