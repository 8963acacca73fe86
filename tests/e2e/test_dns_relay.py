"""The DNS scenarios of tests/scenarios/dns/ (acceptance format), sent over SMTP to a running relay
whose resolver is a real DNS server on loopback (dnsmasq) — or a black hole, for the timeouts.

Outside mail arrives as from a trusted front MTA, with XFORWARD naming the outside client; staff
mail authenticates. The reply, what the sink received and the audit trail are checked against the
scenario's expectation; a flagged impersonation must arrive tagged, with the warning first."""

from __future__ import annotations

import email
import email.policy
import json
import re
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller

from relay.clock import FileClock
from tests.dnsserver import BlackHole, DnsServer
from tests.e2e.harness import PASSWORD, RelayProcess, Sink, SinkHandler, free_port
from tests.e2e.http import Client
from tests.e2e.test_queue_tools import relay_cli
from tests.helpers import ROOT, to_bytes

SCENARIOS = sorted((ROOT / "tests" / "scenarios" / "dns").glob("*.yaml"))


class World:
    """One relay per (institution, resolver, on_failure), started on first use."""

    def __init__(self, tmp: pytest.TempPathFactory, dns: DnsServer) -> None:
        self.tmp, self.dns = tmp, dns
        self.sink = Sink().start()
        self.hole = BlackHole()
        self.relays: dict[tuple[str, str, str], RelayProcess] = {}

    def relay(self, scenario: dict[str, Any]) -> RelayProcess:
        key = (scenario["institution"], scenario.get("dns", "dnsmasq"), scenario.get("on_failure", "tempfail"))
        if key not in self.relays:
            port = self.hole.port if key[1] == "unreachable" else self.dns.port
            logins = [scenario["envelope"]["auth"]] if scenario["envelope"].get("auth") else []
            relay = RelayProcess(self.tmp.mktemp("-".join(key)), f"smtp://127.0.0.1:{self.sink.port}", pack=key[0],
                                 extra_logins=tuple(logins), trust={"xforward_hosts": ["127.0.0.1"]},
                                 dns={"nameservers": ["127.0.0.1"], "port": port, "timeout": 1,
                                      "on_failure": key[2]})
            relay.use_test_clock(datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
            self.relays[key] = relay.start()
        return self.relays[key]

    def stop(self) -> None:
        for relay in self.relays.values():
            relay.stop()
        self.sink.stop()
        self.hole.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, dns_server: DnsServer) -> Iterator[World]:
    w = World(tmp_path_factory, dns_server)
    yield w
    w.stop()


def send(relay: RelayProcess, scenario: dict[str, Any], raw: bytes) -> tuple[int, str]:
    env = scenario["envelope"]
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
        smtp.ehlo("mx.test")
        if env.get("auth"):
            smtp.login(env["auth"], PASSWORD)
        else:
            code, text = smtp.docmd("XFORWARD", f"ADDR={env['client_ip']} NAME=[UNAVAILABLE] HELO=mail.client.example")
            assert code == 250, text
        code, text = smtp.mail(env.get("mail_from") or "")
        if code != 250:
            return code, text.decode()
        for rcpt in env["rcpt_to"]:
            code, text = smtp.rcpt(rcpt)
            if code >= 400:
                return code, text.decode()
        code, text = smtp.data(raw)
        return code, text.decode()


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_dns_scenario(path: Path, world: World) -> None:
    scenario = yaml.safe_load(path.read_text(encoding="utf-8"))
    relay = world.relay(scenario)
    at = scenario["at"] if isinstance(scenario["at"], datetime) else datetime.fromisoformat(str(scenario["at"]))
    FileClock.write(relay.clock_path, at)
    subject_marker = path.stem.encode()
    raw = to_bytes(scenario["message"]).replace(b"Subject: ", b"X-Scenario: " + subject_marker + b"\r\nSubject: ", 1)
    code, text = send(relay, scenario, raw)
    expect = scenario["expect"]
    verdict = {2: "deliver", 4: "tempfail", 5: "reject"}[code // 100]
    assert verdict == expect["verdict"], f"{code} {text}"
    for mention in expect.get("mentions", []):
        assert mention.casefold() in text.casefold(), f"{mention!r} not in {text!r}"
    arrived = [m for m in world.sink.wait_for(1, 5) if b"X-Scenario: " + subject_marker in m.content]
    assert len(arrived) == (1 if verdict == "deliver" else 0)
    if verdict != "deliver":
        return
    audit = json.loads(relay_cli(relay, "audit", "--json").stdout)
    for _ in range(20):
        if any(e["queue_id"] in text for e in audit):
            break
        audit = json.loads(relay_cli(relay, "audit", "--json").stdout)
    [entry] = [e for e in audit if e["queue_id"] in text]
    rules = entry["rules"]  # a list (relay audit --json is typed)
    for rule in expect.get("rules", []):
        assert rule in rules
    for rule in expect.get("not_rules", []):
        assert rule not in rules
    if "delivered_subject_starts" in expect:
        message = email.message_from_bytes(arrived[0].content, policy=email.policy.default)
        assert str(message["Subject"]).startswith(expect["delivered_subject_starts"])
        first, original = list(message.iter_parts())  # type: ignore[attr-defined]
        assert "cuenta de correo personal" in first.get_content() and "Circular 005-20" in first.get_content()
        assert original.get_content_type() == "text/plain" and "tarjetas de regalo" in original.get_content()


def test_a_domain_that_cannot_receive_mail_is_refused_at_rcpt_time(tmp_path: Path, dns_server: DnsServer) -> None:
    """Straight from the sender (no trusted hop in front): the refusal is the RCPT reply, the
    other recipients of the same transaction are kept, and the lookups are cached."""
    sink = Sink().start()
    laura = "laura.pinto@barrancabermeja.gov.co"
    admin_port = free_port()
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", admin={"listen": f"127.0.0.1:{admin_port}"},
                         dns={"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": 1})
    relay.start()
    try:
        before = dns_server.queries()
        for _ in range(3):
            with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
                smtp.login(laura, PASSWORD)
                smtp.mail(laura)
                code, text = smtp.rcpt("jose.arenas74@hotmal.com")
                assert code == 550 and b"5.1.2" in text and b"sugerencia: jose.arenas74@hotmail.com" in text
                assert smtp.rcpt("jose.arenas74@solo-a.example")[0] == 250  # an address record is enough
                assert smtp.rcpt("ana@gmail.com")[0] == 250
                code, _ = smtp.data(f"From: {laura}\r\nTo: ana@gmail.com\r\nSubject: x\r\n\r\nHola\r\n".encode())
                assert code == 250
        sink.wait_for(6)
        sent = [m.rcpts for m in sink.messages if b"X-Relay-Notice" not in m.content]
        assert sent == [["jose.arenas74@solo-a.example", "ana@gmail.com"]] * 3
        notices = [m for m in sink.messages if b"X-Relay-Notice: bounce" in m.content]
        assert notices and all(m.rcpts == [laura] for m in notices)  # our sender hears why
        assert dns_server.queries() - before <= 6  # the first transaction's lookups; then the cache
        metrics = Client(admin_port).get("/metrics").text
        lookups = float(re.search(r"^relay_dns_lookups_total (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
        hits = float(re.search(r"^relay_dns_cache_hits_total (\S+)$", metrics, re.M).group(1))  # type: ignore[union-attr]
        assert lookups == dns_server.queries() - before and hits >= 2 * lookups
    finally:
        relay.stop()
        sink.stop()


def test_mx_upstream_follows_preference_and_skips_an_unreachable_host(tmp_path: Path, dns_server: DnsServer) -> None:
    """upstream: mx:ciudadano.example — its preferred MX (127.0.0.2) does not answer, the second
    (127.0.0.1, the sink) takes the message; a domain whose MX hosts are all down gets 451."""
    sink = Sink().start()
    laura = "laura.pinto@barrancabermeja.gov.co"
    dns = {"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": 1}
    relay = RelayProcess(tmp_path, f"mx:ciudadano.example:{sink.port}", dns=dns)
    relay.start()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
            smtp.login(laura, PASSWORD)
            assert smtp.sendmail(laura, ["vecino@ciudadano.example"],
                                 f"From: {laura}\r\nTo: vecino@ciudadano.example\r\nSubject: x\r\n\r\nHola\r\n"
                                 .encode()) == {}
        assert [m.rcpts for m in sink.wait_for(1)] == [["vecino@ciudadano.example"]]
    finally:
        relay.stop()
    (tmp_path / "down").mkdir()
    down = RelayProcess(tmp_path / "down", f"mx:caido.example:{sink.port}", dns=dns)  # loopback, nobody home
    down.start()
    try:
        with smtplib.SMTP("127.0.0.1", down.port, timeout=60) as smtp:
            smtp.login(laura, PASSWORD)
            smtp.mail(laura)
            code, text = smtp.rcpt("ana@caido.example")
            assert code == 451 and b"MX" in text
    finally:
        down.stop()
        sink.stop()


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    crt, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True)
    return crt, key


class _TlsSink:
    """An MX host on loopback that offers STARTTLS; `require_tls`: it refuses MAIL before it.
    `broken`: its TLS wants a client certificate, so every handshake from the relay fails."""

    def __init__(self, crt: Path, key: str | Path, require_tls: bool, broken: bool = False) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(crt, key)
        if broken:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(crt)
        self.handler = TlsRecordingHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, tls_context=context,
                                     require_starttls=require_tls)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


class TlsRecordingHandler(SinkHandler):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        self.tls.append(session.ssl is not None)
        return reply

    def __init__(self) -> None:
        super().__init__()
        self.tls: list[bool] = []


def _send_to_citizen(relay: RelayProcess) -> tuple[int, bytes]:
    laura = "laura.pinto@barrancabermeja.gov.co"
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=60) as smtp:
        smtp.login(laura, PASSWORD)
        smtp.mail(laura)
        code, text = smtp.rcpt("vecino@ciudadano.example")
        if code != 250:
            return code, text
        return smtp.data(f"From: {laura}\r\nTo: vecino@ciudadano.example\r\nSubject: Respuesta\r\n\r\nHola\r\n"
                         .encode())


def test_mx_delivery_uses_starttls_when_offered_and_can_require_a_verified_certificate(
        tmp_path: Path, dns_server: DnsServer) -> None:
    """The MX host (mx2.ciudadano.example, 127.0.0.1 in the test zone) refuses mail without
    STARTTLS: delivery with the default tls=may works. tls=require checks the certificate against
    the MX *name*: our CA and a certificate for that name pass; a certificate for another name is a
    451 (the client keeps the message), never a delivery in the clear."""
    dns = {"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": 1}
    good = _certificate(tmp_path, "mx2.ciudadano.example")
    wrong = _certificate(tmp_path, "otro.example")
    cases = [("may", good, None, 250), ("require", good, good[0], 250), ("require", wrong, wrong[0], 451)]
    for n, (mode, (crt, key), ca, expected) in enumerate(cases):
        sink = _TlsSink(crt, key, require_tls=True)
        folder = tmp_path / f"case{n}"
        folder.mkdir()
        options = {"tls_ca_file": str(ca)} if ca else {}
        relay = RelayProcess(folder, f"mx:ciudadano.example:{sink.port}?tls={mode}", dns=dns,
                             upstream_options=options)
        relay.start()
        try:
            code, text = _send_to_citizen(relay)
            assert code == expected, (mode, code, text)
            assert sink.handler.tls == ([True] if expected == 250 else [])
        finally:
            relay.stop()
            sink.stop()


def test_opportunistic_tls_that_fails_falls_back_to_plain_text(tmp_path: Path, dns_server: DnsServer) -> None:
    """An MX host whose TLS handshake cannot succeed (it wants a client certificate): with the
    default tls=may the relay delivers in plain text instead of deferring for ever."""
    crt, key = _certificate(tmp_path, "mx2.ciudadano.example")
    sink = _TlsSink(crt, key, require_tls=False, broken=True)
    dns = {"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": 1}
    relay = RelayProcess(tmp_path, f"mx:ciudadano.example:{sink.port}", dns=dns)
    relay.start()
    try:
        code, text = _send_to_citizen(relay)
        assert code == 250, text
        assert sink.handler.tls == [False]
    finally:
        relay.stop()
        sink.stop()


def test_a_bad_mx_upstream_is_a_clear_config_error(tmp_path: Path) -> None:
    for bad, says in (("mx:ciudadano.example?tls=yes", "?tls=require"), ("mx:localhost", "mx:DOMAIN"),
                      ("mx:ciudadano.example:99999", "mx:DOMAIN:PORT")):
        relay = RelayProcess(tmp_path, bad)
        relay.config_path.write_text(yaml.safe_dump(relay.config), encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "relay", "validate", str(relay.config_path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "upstream" in done.stderr + done.stdout and says in done.stderr + done.stdout
