"""ARC (RFC 8617): a mailing list changes our institution's signed message (subject tag, footer),
which breaks its DKIM signature and SPF, and seals what it received with the test key of
tests/dkim; the relay verifies the chain with dkimpy (keys from dnsmasq on loopback through the
relay's resolver) and believes it only from a configured trusted sealer."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import dkim
import pytest

from relay import mailauth
from relay.checks import DnsChecks
from relay.config import Dns
from relay.dns import Resolver
from relay.message import Envelope, Submission, parse_message
from relay.policy.engine import evaluate
from relay.policy.verdicts import Verdict
from tests.dkim.sign import HERE, sign
from tests.dnsserver import DnsServer
from tests.helpers import directory, pack

B = "barrancabermeja.gov.co"
PLAIN = (f"From: Boletin <boletin@{B}>\r\nTo: efrain.molinam@{B}\r\nSubject: Agenda\r\n"
         "Date: Tue, 24 Nov 2026 10:00:00 -0500\r\nMessage-ID: <a-7@barrancabermeja.gov.co>\r\n\r\n"
         "Conciertos y ferias.\r\n").encode()
SEEN = (f"spf=pass smtp.mailfrom=boletin@{B}; dkim=pass header.d={B}; dmarc=pass header.from={B}")


def forwarded(sealer: str = "listas.example", seen: str = SEEN) -> bytes:
    """Our signed message as a list forwards it: its Authentication-Results on arrival, the subject
    tagged and a footer added, then sealed (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results)."""
    received = f"Authentication-Results: {sealer}; {seen}\r\n".encode() + sign(PLAIN, B)
    changed = received.replace(b"Subject: Agenda", b"Subject: [Boletines] Agenda") + b"--\r\nLista Boletines\r\n"
    key = (HERE / "relay2026.key").read_bytes()
    arc_set = dkim.arc_sign(changed, b"relay2026", sealer.encode(), key, sealer.encode(), timestamp=1795000000)
    assert arc_set, "dkimpy produced no ARC set"
    return b"".join(arc_set) + changed


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def resolver(server: DnsServer) -> Resolver:
    return Resolver(["127.0.0.1"], server.port, 2)


def test_the_list_broke_dkim_but_its_chain_verifies(dns_server: DnsServer) -> None:
    message = forwarded()
    assert run(mailauth.verify_dkim(resolver(dns_server), message)).passed == ()  # the list's changes broke it
    arc = run(mailauth.verify_arc(resolver(dns_server), message, frozenset({"listas.example"})))
    assert (arc.cv, arc.sealer) == ("pass", "listas.example")
    assert arc.reported is not None and arc.reported.dmarc == "pass" and mailauth.arc_vouches(arc, B)


def test_an_untrusted_sealer_or_a_broken_chain_vouches_for_nothing(dns_server: DnsServer) -> None:
    trusted = frozenset({"listas.example"})
    r = resolver(dns_server)
    stranger = run(mailauth.verify_arc(r, forwarded("evil.example"), trusted))  # valid, but not trusted
    assert (stranger.cv, stranger.sealer) == ("untrusted", "evil.example") and not mailauth.arc_vouches(stranger, B)
    altered = forwarded().replace(b"Conciertos y ferias", b"Pague la factura")  # changed after sealing
    assert run(mailauth.verify_arc(r, altered, trusted)).cv == "fail"
    failed = run(mailauth.verify_arc(r, forwarded(seen=f"spf=fail smtp.mailfrom=x@{B}; dmarc=fail"), trusted))
    assert failed.cv == "pass" and not mailauth.arc_vouches(failed, B)  # it saw a failure: still a failure
    assert run(mailauth.verify_arc(r, sign(PLAIN, B), trusted)).cv == "none"


def decide(dns_server: DnsServer, message: bytes, sealers: tuple[str, ...]) -> tuple[Any, Any]:
    checks = DnsChecks(Dns(nameservers=("127.0.0.1",), port=dns_server.port, timeout=2,
                           arc_trusted_sealers=sealers))
    envelope = Envelope.build("boletines-bounces@listas.example", [f"efrain.molinam@{B}"], None, "198.51.100.200")
    with_facts = run(checks.with_facts(envelope, message, directory("barrancabermeja")))
    decision = evaluate(Submission(with_facts, parse_message(message)), pack("barrancabermeja"),
                        directory("barrancabermeja"), datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
    return with_facts.facts, decision


@pytest.mark.parametrize(("sealer", "trusted", "delivered"), [
    ("listas.example", ("listas.example",), True),  # the configured list: it vouches, delivered
    ("listas.example", (), False),  # no trusted sealers configured: DMARC fail, refused as today
    ("evil.example", ("listas.example",), False),  # a chain sealed by someone else
])
def test_forwarded_list_mail_passes_only_with_a_trusted_sealer(dns_server: DnsServer, sealer: str,
                                                               trusted: tuple[str, ...], delivered: bool) -> None:
    facts, decision = decide(dns_server, forwarded(sealer), trusted)
    assert facts.spf != "pass" and facts.dkim == ()  # SPF and DKIM both broken by the forwarding
    rules = [f.rule_id for f in decision.findings]
    if delivered:
        assert (facts.dmarc, facts.source) == ("pass", "arc:listas.example")
        assert "institutional-domain-spoofing" not in rules
    else:
        assert facts.dmarc == "fail" and decision.verdict is Verdict.REJECT
        assert "institutional-domain-spoofing" in rules
