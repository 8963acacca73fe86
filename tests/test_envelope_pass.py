"""The RCPT-time pass: what the envelope alone refuses, and what must wait for DATA."""

from __future__ import annotations

from datetime import datetime

import pytest

from relay.message import Envelope
from relay.policy.engine import envelope_refusal
from tests.helpers import directory, pack

B = "barrancabermeja.gov.co"
P = "pasto.gov.co"
NOW = datetime.fromisoformat("2026-11-24T10:00:00-05:00")
LAURA, PATRICIA = f"laura.pinto@{B}", f"patriciah.fierro@{B}"


def refusal(name: str, mail_from: str, rcpts: list[str], login: str | None = None,
            client_ip: str | None = None) -> str | None:
    envelope = Envelope.build(mail_from, rcpts, login, client_ip)
    reply = envelope_refusal(envelope, rcpts[-1], pack(name), directory(name), NOW)
    return None if reply is None else str(reply)


@pytest.mark.parametrize(("mail_from", "rcpts", "login", "client_ip", "rule"), [
    # outside -> outside: open relay (554 like Postfix's "Relay access denied")
    ("spam@example.net", ["victim@example.org"], None, "198.51.100.7", "554 5.7.1 [open-relay-guard]"),
    # a funcionaria writing to a mass list (005-20 num. 3)
    (LAURA, [f"funcionarios@{B}"], LAURA, None, "550 5.7.1 [mass-mail-authorized-senders]"),
    # the list comes after an ordinary recipient: only the list is refused
    (LAURA, [f"pmu@{B}", f"funcionarios@{B}"], LAURA, None, "550 5.7.1 [mass-mail-authorized-senders]"),
    # a login sending as another person (005-20 num. 1-2)
    (LAURA, ["jose@gmail.com"], PATRICIA, None, "550 5.7.1 [send-as-self-or-delegate]"),
    # staff using a webmail envelope sender (005-20 num. 1)
    ("laura.pinto@gmail.com", [f"pmu@{B}"], LAURA, None, "550 5.7.1 [institutional-domain-only]"),
])
def test_refused_from_the_envelope(mail_from: str, rcpts: list[str], login: str | None,
                                   client_ip: str | None, rule: str) -> None:
    reply = refusal("barrancabermeja", mail_from, rcpts, login, client_ip)
    assert reply is not None and reply.startswith(rule), reply
    assert "Fundamento:" in reply and reply.isascii()


@pytest.mark.parametrize(("mail_from", "rcpts", "login", "client_ip"), [
    (LAURA, ["jose@gmail.com"], LAURA, None),  # ordinary outbound mail
    ("ana@example.org", [f"pmu@{B}"], None, "198.51.100.7"),  # a citizen writing in
    (LAURA, [f"pmu@{B}", "jose@gmail.com"], LAURA, None),  # an ordinary recipient after an outside one
    (PATRICIA, [f"funcionarios@{B}"], PATRICIA, None),  # the Secretaria may use the list
    # 26 recipients is mass mail by count, but refusing only the 26th would let 25 through:
    # the count is decided at DATA, never at RCPT
    (LAURA, [f"p{i}@example.org" for i in range(26)], LAURA, None),
    ("", [f"pmu@{B}"], None, "198.51.100.7"),  # a bounce (null sender)
])
def test_not_refused_at_rcpt(mail_from: str, rcpts: list[str], login: str | None, client_ip: str | None) -> None:
    assert refusal("barrancabermeja", mail_from, rcpts, login, client_ip) is None


def test_moderation_is_never_an_rcpt_refusal() -> None:
    from tests.test_rules import with_rule

    # The same broadcast rule set to moderate: it waits for a person at DATA, never a refusal.
    moderated = with_rule("pasto", "mass-mail-via-intranet", action="moderate",
                          moderators=["yanet.bastidas@pasto.gov.co"])
    envelope = Envelope.build(f"eduardo.hernandez@{P}", [f"servidores@{P}"], f"eduardo.hernandez@{P}")
    assert envelope_refusal(envelope, f"servidores@{P}", moderated, directory("pasto"), NOW) is None
    enforced = envelope_refusal(envelope, f"servidores@{P}", pack("pasto"), directory("pasto"), NOW)
    assert enforced is not None and enforced.code == 550


def test_monitor_mode_never_refuses() -> None:
    from tests.test_rules import with_rule

    monitored = with_rule("barrancabermeja", "mass-mail-authorized-senders", mode="monitor")
    envelope = Envelope.build(LAURA, [f"funcionarios@{B}"], LAURA)
    assert envelope_refusal(envelope, f"funcionarios@{B}", monitored, directory("barrancabermeja"), NOW) is None
