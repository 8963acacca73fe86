"""DNS checks against a real DNS server (dnsmasq on loopback): the resolver and its cache, SPF,
DMARC, recipient domains; and the pure parts (typo suggestions, names, Authentication-Results)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import pytest

from relay import mailauth
from relay.dns import Resolver
from relay.policy.rules.recipient_domain import COMMON, distance, suggest
from tests.dkim.sign import sign
from tests.dnsserver import BlackHole, DnsServer
from tests.helpers import decide, fired


def resolver(server: DnsServer, timeout: float = 2) -> Resolver:
    return Resolver(["127.0.0.1"], server.port, timeout)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_mail_domains(dns_server: DnsServer) -> None:
    r = resolver(dns_server)

    async def go() -> list[str]:
        return [await r.mail_domain(d) for d in ("gmail.com", "gmial.com", "solo-a.example", "nadie.example")]

    assert run(go()) == ["mail", "none", "mail", "none"]


def test_answers_are_cached_with_their_ttl(dns_server: DnsServer) -> None:
    r = resolver(dns_server)

    async def go() -> None:
        for _ in range(50):
            assert await r.mail_domain("gmail.com") == "mail"
            assert await r.mail_domain("gmial.com") == "none"  # negative answers too

    before = dns_server.queries()
    run(go())
    assert r.lookups == 2 and r.hits == 98
    assert dns_server.queries() - before == 2


def test_a_dns_timeout_is_an_error_answer_never_an_exception_and_is_bounded() -> None:
    hole = BlackHole()
    try:
        r = Resolver(["127.0.0.1"], hole.port, timeout=0.5)
        started = time.monotonic()
        assert run(r.mail_domain("gmail.com")) == "error"
        assert time.monotonic() - started < 2
        assert run(r.mail_domain("gmail.com")) == "error"  # errors are not cached
        assert r.lookups == 2
    finally:
        hole.stop()


@pytest.mark.parametrize(("ip", "domain", "expected"), [
    ("192.0.2.10", "barrancabermeja.gov.co", "pass"),  # ip4 of its own
    ("203.0.113.20", "barrancabermeja.gov.co", "pass"),  # through include: the authorised provider
    ("198.51.100.7", "barrancabermeja.gov.co", "fail"),  # -all
    ("192.0.2.77", "pasto.gov.co", "pass"),  # mx
    ("198.51.100.7", "pasto.gov.co", "softfail"),  # ~all
    ("192.0.2.200", "cancilleria.gov.co", "pass"),  # a:host
    ("198.51.100.7", "nadie.example", "none"),  # no record
])
def test_spf(dns_server: DnsServer, ip: str, domain: str, expected: str) -> None:
    assert run(mailauth.check_spf(resolver(dns_server), ip, domain)) == expected


def test_spf_temperror_when_dns_does_not_answer() -> None:
    hole = BlackHole()
    try:
        assert run(mailauth.check_spf(Resolver(["127.0.0.1"], hole.port, 0.3), "192.0.2.1", "x.example")) \
            == "temperror"
    finally:
        hole.stop()


def test_dmarc_alignment(dns_server: DnsServer) -> None:
    r = resolver(dns_server)
    ok = run(mailauth.check_dmarc(r, "barrancabermeja.gov.co", "pass", "barrancabermeja.gov.co"))
    assert (ok.result, ok.policy) == ("pass", "reject")
    sub = run(mailauth.check_dmarc(r, "barrancabermeja.gov.co", "pass", "boletin.barrancabermeja.gov.co"))
    assert sub.result == "pass"  # relaxed alignment: same organizational domain
    other = run(mailauth.check_dmarc(r, "barrancabermeja.gov.co", "pass", "boletines.example"))
    assert other.result == "fail"  # SPF passed, but for another domain
    dkim = run(mailauth.check_dmarc(r, "barrancabermeja.gov.co", "fail", "x.example", ("barrancabermeja.gov.co",)))
    assert dkim.result == "pass"
    assert run(mailauth.check_dmarc(r, "pasto.gov.co", "fail", "pasto.gov.co")).result == "none"


def test_org_domain() -> None:
    assert mailauth.org_domain("correo.barrancabermeja.gov.co") == "barrancabermeja.gov.co"
    assert mailauth.org_domain("mail.google.com") == "google.com"


def test_authentication_results_only_from_the_trusted_hop() -> None:
    headers = [
        ("Authentication-Results", "mx.barrancabermeja.gov.co; spf=fail smtp.mailfrom=alcalde@barrancabermeja.gov.co;"
                                   " dkim=none; dmarc=fail header.from=barrancabermeja.gov.co"),
        ("Authentication-Results", "mx.barrancabermeja.gov.co; spf=pass smtp.mailfrom=x@barrancabermeja.gov.co; "
                                   "dmarc=pass"),  # lower down: the sender could have written it
    ]
    got = mailauth.trusted_results(headers, "mx.barrancabermeja.gov.co")
    assert got is not None and (got.spf, got.spf_domain, got.dmarc) == ("fail", "barrancabermeja.gov.co", "fail")
    assert mailauth.trusted_results(headers, "otro.example") is None
    forged = [("Authentication-Results", "mx.evil.example; spf=pass; dmarc=pass")]
    assert mailauth.trusted_results(forged, "mx.barrancabermeja.gov.co") is None
    dkim = [("Authentication-Results", "mx.b.gov.co; dkim=pass header.d=barrancabermeja.gov.co; spf=none")]
    assert mailauth.trusted_results(dkim, "mx.b.gov.co").dkim == ("barrancabermeja.gov.co",)  # type: ignore[union-attr]


@pytest.mark.parametrize(("typo", "meant"), [
    ("gmial.com", "gmail.com"), ("hotmal.com", "hotmail.com"), ("gmail.co", "gmail.com"),
    ("yaho.com", "yahoo.com"), ("outlok.com", "outlook.com"), ("hotmial.com", "hotmail.com"),
])
def test_typo_suggestions(typo: str, meant: str) -> None:
    assert suggest(typo, COMMON, 2) == meant


def test_no_suggestion_for_a_real_different_domain() -> None:
    assert suggest("unal.edu.co", COMMON, 2) is None
    assert suggest("gmail.com", COMMON, 2) is None  # itself is not a suggestion
    assert distance("gmial.com", "gmail.com") == 1  # a swap is one edit


LETTER = "From: {display} <{address}>\nTo: efrain.molinam@barrancabermeja.gov.co\nSubject: Urgente\n\nHola.\n"


@pytest.mark.parametrize(("display", "address", "flagged"), [
    ("Patricia Helena Fierro Vitola", "patriciafierro.secretaria@gmail.com", True),
    ("Fierro Patricia", "pfierro1970@hotmail.com", True),  # any order, no accents needed
    ("PATRICIA FIERRO", "pf@yahoo.com", True),
    ("Patricia", "patricia.gomez@gmail.com", False),  # a citizen who shares a first name
    ("Patricia Gómez", "patricia.gomez@gmail.com", False),
    ("Patricia Helena", "ph@gmail.com", False),  # given names only: no surname of ours
    ("Alcaldía de Barrancabermeja", "alcaldia.barranca@gmail.com", True),  # the institution
    ("Juan Barrancabermeja", "jb@gmail.com", False),  # the town's name alone, no office
    ("Patricia Fierro", "patricia.fierro@empresa.example", False),  # not webmail: another rule's business
])
def test_webmail_impersonation_names(display: str, address: str, flagged: bool) -> None:
    decision = decide("barrancabermeja", LETTER.format(display=display, address=address), mail_from=address,
                      rcpt=["efrain.molinam@barrancabermeja.gov.co"], client_ip="198.51.100.9")
    assert ("webmail-impersonation" in fired(decision)) is flagged
    if flagged:
        assert decision.verdict.value == "deliver" and decision.rewrite is not None
        assert decision.rewrite.subject_tag and "cuenta de correo personal" in decision.rewrite.banner


def test_a_trusted_hops_authentication_results_replace_our_lookups(dns_server: DnsServer) -> None:
    from relay.checks import DnsChecks
    from relay.config import Dns
    from relay.message import Envelope
    from tests.helpers import directory

    checks = DnsChecks(Dns(nameservers=("127.0.0.1",), port=dns_server.port, timeout=2,
                           trust_authentication_results="mx.barrancabermeja.gov.co"))
    envelope = Envelope.build("boletin@barrancabermeja.gov.co", ["efrain.molinam@barrancabermeja.gov.co"],
                              None, "198.51.100.7")
    message = (b"Authentication-Results: mx.barrancabermeja.gov.co; spf=pass smtp.mailfrom=boletin@"
               b"barrancabermeja.gov.co; dmarc=pass header.from=barrancabermeja.gov.co\r\n"
               b"From: boletin@barrancabermeja.gov.co\r\nSubject: x\r\n\r\nHola\r\n")
    facts = run(checks.with_facts(envelope, message, directory("barrancabermeja"))).facts
    assert (facts.dmarc, facts.source) == ("pass", "authentication-results")
    forged = message.replace(b"mx.barrancabermeja.gov.co;", b"mx.evil.example;")
    facts = run(checks.with_facts(envelope, forged, directory("barrancabermeja"))).facts
    assert (facts.spf, facts.dmarc, facts.source) == ("fail", "fail", "dns")  # our own lookups: 198.51.100.7 fails


def test_staff_mail_asks_nothing_about_the_sender(dns_server: DnsServer) -> None:
    from relay.checks import DnsChecks
    from relay.config import Dns
    from relay.message import Envelope
    from tests.helpers import directory

    checks = DnsChecks(Dns(nameservers=("127.0.0.1",), port=dns_server.port, timeout=2))
    envelope = Envelope.build("laura.pinto@barrancabermeja.gov.co", ["ana@gmail.com"],
                              "laura.pinto@barrancabermeja.gov.co", "198.51.100.7")
    facts = run(checks.with_facts(envelope, b"From: laura.pinto@barrancabermeja.gov.co\r\n\r\nx\r\n",
                                  directory("barrancabermeja"))).facts
    assert facts.mail_domains == (("gmail.com", "mail"),) and facts.spf is None and facts.dmarc is None


# --- DKIM (dkimpy, keys looked up through our resolver) ---

CRYMAP = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora" / "crymap-testdata"
PLAIN = (b"From: Boletin <boletin@barrancabermeja.gov.co>\r\nTo: efrain.molinam@barrancabermeja.gov.co\r\n"
         b"Subject: Agenda\r\nDate: Tue, 24 Nov 2026 10:00:00 -0500\r\nMessage-ID: <a-1@envios.example>\r\n\r\n"
         b"Conciertos  y ferias.\r\n\r\n")


def test_a_real_third_party_signature_verifies_against_its_published_key(dns_server: DnsServer) -> None:
    """RFC 8463's example message (corpus), whose RSA and Ed25519 keys the test zone publishes: it
    passes; one changed body byte fails it."""
    raw = (CRYMAP / "rfc-8463.eml").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    r = resolver(dns_server)
    assert run(mailauth.verify_dkim(r, raw)) == mailauth.DkimResult(("football.example.com",), False)
    tampered = raw.replace(b"We lost the game", b"We won the game")
    assert tampered != raw and run(mailauth.verify_dkim(r, tampered)).passed == ()


def test_an_ed25519_only_signature_verifies(dns_server: DnsServer) -> None:
    """RFC 8463's message with its RSA signature taken off: the Ed25519 one (PyNaCl) alone passes."""
    raw = (CRYMAP / "rfc-8463.eml").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    rsa_start = raw.index(b"DKIM-Signature: v=1; a=rsa-sha256")
    ed25519_only = raw[:rsa_start] + raw[raw.index(b"From: Joe"):]
    assert ed25519_only.count(b"DKIM-Signature:") == 1 and b"a=ed25519-sha256" in ed25519_only
    r = resolver(dns_server)
    assert run(mailauth.verify_dkim(r, ed25519_only)) == mailauth.DkimResult(("football.example.com",), False)
    for changed in (ed25519_only.replace(b"We lost the game", b"We won the game"),
                    ed25519_only.replace(b"Subject: Is dinner ready?", b"Subject: Is lunch ready?"),
                    ed25519_only.replace(b"s=brisbane", b"s=brisbane2")):  # no such key
        assert run(mailauth.verify_dkim(r, changed)).passed == ()


def test_our_own_signature_passes_and_any_change_to_a_signed_part_fails(dns_server: DnsServer) -> None:
    r = resolver(dns_server)
    signed = sign(PLAIN, "barrancabermeja.gov.co")
    assert run(mailauth.verify_dkim(r, signed)).passed == ("barrancabermeja.gov.co",)
    assert run(mailauth.verify_dkim(r, signed, wanted="barrancabermeja.gov.co")).passed == ("barrancabermeja.gov.co",)
    # relaxed canonicalisation: whitespace changes in transit are tolerated
    assert run(mailauth.verify_dkim(r, signed.replace(b"Conciertos  y", b"Conciertos y"))).passed
    for changed in (signed.replace(b"Subject: Agenda", b"Subject: Pague ya"),
                    signed.replace(b"ferias", b"cuentas"),
                    signed.replace(b"From: Boletin <boletin@", b"From: Boletin <tesoreria@"),
                    b"From: Otro <otro@barrancabermeja.gov.co>\r\n" + signed):  # a second From on top (oversigned)
        assert run(mailauth.verify_dkim(r, changed)).passed == (), changed[:300]


def test_only_signatures_aligned_with_the_from_are_looked_up(dns_server: DnsServer) -> None:
    r = resolver(dns_server)
    signed = sign(PLAIN, "evil.example")
    assert run(mailauth.verify_dkim(r, signed)).passed == ("evil.example",)  # valid, but a stranger's domain
    both = sign(signed, "barrancabermeja.gov.co")
    assert run(mailauth.verify_dkim(r, both)).passed == ("barrancabermeja.gov.co", "evil.example")
    broken_top = both.replace(b"s=relay2026", b"s=relay2025", 1)  # the top one's key does not exist
    assert run(mailauth.verify_dkim(r, broken_top)).passed == ("evil.example",)
    before = r.lookups + r.hits
    assert run(mailauth.verify_dkim(r, signed, wanted="barrancabermeja.gov.co")) == mailauth.DkimResult((), False)
    assert r.lookups + r.hits == before  # not even asked


def test_a_key_without_a_record_fails_and_a_dns_timeout_is_a_temperror(dns_server: DnsServer) -> None:
    unsigned_key = sign(PLAIN, "gmail.com")  # no key published there
    assert run(mailauth.verify_dkim(resolver(dns_server), unsigned_key)) == mailauth.DkimResult((), False)
    hole = BlackHole()
    try:
        down = Resolver(["127.0.0.1"], hole.port, 0.3)
        started = time.monotonic()
        assert run(mailauth.verify_dkim(down, sign(PLAIN, "barrancabermeja.gov.co"))) == mailauth.DkimResult((), True)
        assert time.monotonic() - started < 3
    finally:
        hole.stop()


def test_at_most_five_signatures_cost_a_lookup(dns_server: DnsServer) -> None:
    r = resolver(dns_server)
    bogus = b"".join(b"DKIM-Signature: v=1; a=rsa-sha256; d=barrancabermeja.gov.co; s=k%d; h=from; bh=x; b=y\r\n" % i
                     for i in range(40))
    assert run(mailauth.verify_dkim(r, bogus + PLAIN)).passed == ()
    assert r.lookups == mailauth.MAX_DKIM_SIGNATURES


def test_dkim_never_raises_on_real_or_hostile_mail(dns_server: DnsServer) -> None:
    """Every corpus message, and garbage signature fields: an answer, never an exception; signatures
    whose keys the test zone does not publish (Yahoo, Amazon, lin.gl) do not pass."""
    r = resolver(dns_server)
    messages = sorted(CRYMAP.glob("*.eml"))
    assert len(messages) >= 30
    for path in messages:
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        result = run(mailauth.verify_dkim(r, raw))
        assert result.passed == (("football.example.com",) if path.name == "rfc-8463.eml" else ()), path.name
    for field in (b"DKIM-Signature: \r\n", b"DKIM-Signature: d=; s=\r\n", b"DKIM-Signature: ;;;==;\r\n",
                  b"DKIM-Signature: v=1; d=barrancabermeja.gov.co; s=relay2026; b=!!; bh=??; h=\r\n",
                  b"DKIM-Signature: v=1; d=\xff\xfe.example; s=\x00\r\n"):
        assert run(mailauth.verify_dkim(r, field + PLAIN)).passed == ()


def test_sender_facts_take_an_aligned_signature_as_dmarc_proof(dns_server: DnsServer) -> None:
    from relay.checks import DnsChecks
    from relay.config import Dns
    from relay.message import Envelope
    from tests.helpers import directory

    checks = DnsChecks(Dns(nameservers=("127.0.0.1",), port=dns_server.port, timeout=2))
    envelope = Envelope.build("rebotes@envios.example", ["efrain.molinam@barrancabermeja.gov.co"], None,
                              "198.51.100.90")
    signed = sign(PLAIN, "barrancabermeja.gov.co")
    facts = run(checks.with_facts(envelope, signed, directory("barrancabermeja"))).facts
    assert (facts.spf, facts.dkim, facts.dmarc) == ("pass", ("barrancabermeja.gov.co",), "pass")
    facts = run(checks.with_facts(envelope, signed.replace(b"ferias", b"cuentas"), directory("barrancabermeja"))).facts
    assert (facts.spf, facts.dkim, facts.dmarc) == ("pass", (), "fail")
    # SPF aligned already: no signature checked at all
    ours = Envelope.build("boletin@barrancabermeja.gov.co", ["efrain.molinam@barrancabermeja.gov.co"], None,
                          "192.0.2.10")
    facts = run(checks.with_facts(ours, signed, directory("barrancabermeja"))).facts
    assert (facts.spf, facts.dkim, facts.dmarc) == ("pass", (), "pass")


@pytest.mark.parametrize("domain", ["yandex.com", "mail.ru", "hotmail.co", "uol.com.co", "gmx.net", "yahoo.com.co"])
def test_the_maintained_free_mail_list_covers_more_than_the_big_providers(domain: str) -> None:
    address = f"patricia.fierro.vitola@{domain}"
    decision = decide("barrancabermeja", LETTER.format(display="Patricia Fierro", address=address),
                      mail_from=address, rcpt=["efrain.molinam@barrancabermeja.gov.co"], client_ip="198.51.100.9")
    assert "webmail-impersonation" in fired(decision)


def test_the_free_mail_list_is_configurable() -> None:
    from tests.test_rules import with_rule

    def flagged(the_pack, domain: str) -> bool:  # type: ignore[no-untyped-def]
        address = f"pfierro@{domain}"
        decision = decide("barrancabermeja", LETTER.format(display="Patricia Fierro", address=address),
                          mail_from=address, rcpt=["efrain.molinam@barrancabermeja.gov.co"],
                          client_ip="198.51.100.9", the_pack=the_pack)
        return "webmail-impersonation" in fired(decision)

    added = with_rule("barrancabermeja", "webmail-impersonation", extra_webmail_domains=["Correo-Gratis.Example."])
    assert flagged(added, "correo-gratis.example") and flagged(added, "gmail.com")
    removed = with_rule("barrancabermeja", "webmail-impersonation", not_webmail_domains=["yandex.com"])
    assert not flagged(removed, "yandex.com") and flagged(removed, "mail.ru")
    only = with_rule("barrancabermeja", "webmail-impersonation", webmail_domains=["gmail.com"])
    assert flagged(only, "gmail.com") and not flagged(only, "hotmail.com")


@pytest.mark.parametrize(("spec", "expanded"), [  # RFC 7208 §7.4's examples
    ("%{s}", "strong-bad@email.example.com"), ("%{o}", "email.example.com"), ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"), ("%{d3}", "email.example.com"), ("%{d2}", "example.com"), ("%{d1}", "com"),
    ("%{dr}", "com.example.email"), ("%{d2r}", "example.email"), ("%{l}", "strong-bad"), ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"), ("%{lr-}", "bad.strong"), ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ("%{S}", "strong-bad%40email.example.com"), ("a%%b%_c%-d", "a%b c%20d"),
])
def test_spf_macro_expansion(spec: str, expanded: str) -> None:
    import ipaddress

    who = mailauth._Who(ipaddress.ip_address("192.0.2.3"), "strong-bad@email.example.com", "mx.example.org")
    assert mailauth.expand(spec, who, "email.example.com") == expanded


def test_spf_macro_expansion_ipv6_and_errors() -> None:
    import ipaddress

    who = mailauth._Who(ipaddress.ip_address("2001:db8::cb01"), "strong-bad@email.example.com", "")
    # DNS names are case-insensitive: the nibbles come out upper-case, as the OpenSPF suite's
    # v-macro-ip6 explanation wants them (RFC 7208 §7.4 happens to print them lower-case)
    assert mailauth.expand("%{ir}.%{v}._spf.%{d2}", who, "email.example.com").lower() == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")
    for bad in ("%{x}", "%{d0}", "50%", "%a", "%{d"):
        with pytest.raises(mailauth._MacroError):
            mailauth.expand(bad, who, "email.example.com")
    assert len(mailauth.expand("%{s}." + "x" * 60 + "." + "y" * 200, who, "e.example")) <= 253


@pytest.mark.parametrize(("ip", "sender", "domain", "expected"), [
    ("192.0.2.7", "ventas@macros.example", "macros.example", "pass"),  # exists:7.2.0.192.ventas.permitidos...
    ("192.0.2.7", "ventas+abril@macros.example", "macros.example", "pass"),  # %{l1r+-}: the part before '+'
    ("192.0.2.7", "otro@macros.example", "macros.example", "fail"),
    ("192.0.2.8", "ventas@macros.example", "macros.example", "fail"),
    ("192.0.2.7", "x@malo.example", "malo.example", "permerror"),  # %{x} is no macro
])
def test_spf_with_macros_against_the_dns_server(dns_server: DnsServer, ip: str, sender: str, domain: str,
                                                expected: str) -> None:
    assert run(mailauth.check_spf(resolver(dns_server), ip, domain, sender)) == expected


def test_an_spf_fail_keeps_the_domains_explanation_for_the_audit_trail(dns_server: DnsServer) -> None:
    """RFC 7208 §6.2: the exp= text of the failing domain, expanded, reaches the finding's detail
    and the audit line; a pass has none."""
    from relay.checks import DnsChecks
    from relay.config import Dns
    from relay.dispose import audit_why
    from relay.message import Envelope, Submission, parse_message
    from relay.policy.engine import evaluate
    from tests.helpers import directory, pack, to_bytes

    checks = DnsChecks(Dns(nameservers=("127.0.0.1",), port=dns_server.port, timeout=2))
    text = "From: consul@cancilleria.gov.co\nTo: efrain@example.org\nSubject: Visado\n\nTexto.\n"
    envelope = Envelope.build("consul@cancilleria.gov.co", ["maria.lopez@cancilleria.gov.co"], None, "198.51.100.7")
    envelope = run(checks.with_facts(envelope, to_bytes(text), directory("cancilleria")))
    facts = envelope.facts
    assert facts is not None and facts.spf == "fail"
    assert facts.spf_explanation == "198.51.100.7 no es un servidor de correo de cancilleria.gov.co"
    decision = evaluate(Submission(envelope, parse_message(to_bytes(text))), pack("cancilleria"),
                        directory("cancilleria"), datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
    spoofing = [f for f in decision.findings if f.kind == "institutional_spoofing"]
    assert spoofing, decision.to_json()
    assert "spf_explanation=198.51.100.7 no es un servidor de correo de cancilleria.gov.co" in audit_why(spoofing[0])[0]
    passing = Envelope.build("consul@cancilleria.gov.co", ["maria.lopez@cancilleria.gov.co"], None, "192.0.2.200")
    assert run(checks.with_facts(passing, to_bytes(text), directory("cancilleria"))).facts.spf_explanation == ""
