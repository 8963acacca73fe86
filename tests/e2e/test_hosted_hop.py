"""Exchange Online / Google Workspace in front of the relay (trust.hosted): a TLS client presenting a
certificate from a test CA with the service's name, sending with the service's stamps, to the relay,
which delivers to a sink that requires STARTTLS and the relay's own client certificate (the
certificate-based inbound connector). The same message from a client outside that trust is outside
mail. The loop guard: what the relay delivers carries its stamp, and a stamped message back from the
hosted hop passes once, unchanged; a held copy is released with a fresh stamp."""

from __future__ import annotations

import csv
import io
import os
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from relay.clock import FileClock
from relay.rewrite import split_head
from tests.e2e.harness import ROOT, RelayProcess, SinkHandler, free_port

B = "barrancabermeja.gov.co"
LAURA = f"laura.pinto@{B}"
TENANT = "1f2e3d4c-0000-4000-8000-00000000abcd"
EXO_NAME = "barrancabermeja-gov-co.mail.protection.outlook.com"
GOOGLE_NAME = "smtp.gmail.com"  # the name on the certificate Gmail's outbound servers present
LOOP = "X-Policy-Relay-Loop"


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))

    def issue(name: str, cn: str, san: str) -> None:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", str(d / f"{name}.key"),
                "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))

    issue("server", "localhost", "DNS:localhost,IP:127.0.0.1")
    issue("exo", "mail.protection.outlook.com", f"DNS:{EXO_NAME}")
    issue("other", "mx.attacker.example", "DNS:mx.attacker.example")
    issue("google", GOOGLE_NAME, f"DNS:{GOOGLE_NAME}")
    issue("relay", "relay.barrancabermeja.gov.co", "DNS:relay.barrancabermeja.gov.co")  # the relay's own
    names = ("server", "exo", "other", "google", "relay")
    return {k: d / f"{k}.pem" for k in ("ca", *names)} | {f"{k}.key": d / f"{k}.key" for k in names}


class ClientCertSink(SinkHandler):
    """The inbound connector: STARTTLS required, and a client certificate from the test CA."""

    async def handle_MAIL(self, server: object, session: object, envelope: object, address: str,
                          options: list[str]) -> str:
        ssl_object = getattr(server, "transport", None) and server.transport.get_extra_info("ssl_object")  # type: ignore[attr-defined]
        peer = ssl_object.getpeercert() if ssl_object else None
        names = [v for k, v in (peer or {}).get("subjectAltName", ()) if k == "DNS"]
        if names != ["relay.barrancabermeja.gov.co"]:
            return "530 5.7.1 client certificate required"
        envelope.mail_from = address  # type: ignore[attr-defined]
        envelope.mail_options.extend(options)  # type: ignore[attr-defined]
        return "250 OK"


def sink_context(pki: dict[str, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["server"], pki["server.key"])
    context.verify_mode = ssl.CERT_REQUIRED  # no certificate from the test CA: no TLS session
    context.load_verify_locations(pki["ca"])
    return context


@pytest.fixture(scope="module")
def module_sink(pki: dict[str, Path]) -> Iterator[SinkHandler]:
    handler = ClientCertSink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=sink_context(pki),
                            require_starttls=True)
    controller.start()
    handler.port = controller.port  # type: ignore[attr-defined]
    yield handler
    controller.stop()


@pytest.fixture
def tls_sink(module_sink: SinkHandler) -> SinkHandler:
    with module_sink.lock:
        module_sink.messages.clear()
    return module_sink


def hosted_relay(tmp: Path, pki: dict[str, Path], sink: SinkHandler, pack: str = "barrancabermeja",
                 **overrides: object) -> RelayProcess:
    """The relay between the hosted hops and the inbound connector (one per module: CI time)."""
    return RelayProcess(
        tmp, f"smtp://127.0.0.1:{sink.port}?starttls=1", pack=pack,  # type: ignore[attr-defined]
        upstream_options={"tls_ca_file": str(pki["ca"]), "tls_client_cert": str(pki["relay"]),
                          "tls_client_key": str(pki["relay.key"])},
        tls={"cert": str(pki["server"]), "key": str(pki["server.key"]), "client_ca": str(pki["ca"])},
        trust={"hosted": [{"service": "exchange_online", "clients": ["127.0.0.0/8"],
                           "certificate_names": ["*.mail.protection.outlook.com"], "tenant_id": TENANT},
                          {"service": "google_workspace", "clients": ["127.0.0.0/8"],
                           "certificate_names": [GOOGLE_NAME]}],
               "loop_guard": {"header": LOOP, "max_age": 3600}},
        auth={"allow_plaintext_on_loopback": False}, **overrides)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path],
          module_sink: SinkHandler) -> Iterator[RelayProcess]:
    proc = hosted_relay(tmp_path_factory.mktemp("hosted"), pki, module_sink).start()
    yield proc
    proc.stop()


def exo_message(authas: str = "Internal", subject: str = "Informe", tenant: str = TENANT) -> bytes:
    return (f"X-MS-Exchange-Organization-AuthAs: {authas}\r\n"
            f"X-MS-Exchange-Organization-AuthSource: BN8PR12MB3456.namprd12.prod.outlook.com\r\n"
            f"X-MS-Exchange-CrossTenant-Id: {tenant}\r\n"
            f"From: {LAURA}\r\nTo: jose@gmail.com\r\nSubject: {subject}\r\n\r\nCordial saludo.\r\n").encode()


def google_message(subject: str = "Informe") -> bytes:
    """What Gmail's outbound routing hands on: Google's own headers, none a receiver can verify."""
    return (f"X-Google-Smtp-Source: AGHT+IFq0m3b7cYx0d1u0b8Q2w\r\n"
            f"X-Received: by 2002:a05:6402:1d4b:b0:5d0:8e6c with SMTP id x11mr; Tue, 24 Nov 2026 10:00:00 -0800\r\n"
            f"X-Gm-Message-State: AOJu0Yw1x2y3z4\r\n"
            f"From: {LAURA}\r\nTo: jose@gmail.com\r\nSubject: {subject}\r\nMessage-ID: <g-{subject}@{B}>\r\n"
            f"\r\nCordial saludo.\r\n").encode()


def send(port: int, pki: dict[str, Path], client: str | None, content: bytes, mail_from: str = LAURA,
         rcpts: tuple[str, ...] = ("jose@gmail.com",), helo: str = "mail.protection.outlook.com") -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if client:
        context.load_cert_chain(pki[client], pki[f"{client}.key"])
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo(helo)
        smtp.mail(mail_from)
        for rcpt in rcpts[:-1]:
            smtp.rcpt(rcpt)
        code, text = smtp.rcpt(rcpts[-1])
        if code != 250:
            return code, text
        return smtp.data(content)


def wait(handler: SinkHandler, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(handler.messages) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_exchange_online_hop_is_staff_mail_delivered_over_starttls(
        relay: RelayProcess, pki: dict[str, Path], tls_sink: SinkHandler) -> None:
    code, _ = send(relay.port, pki, "exo", exo_message())
    assert code == 250
    wait(tls_sink, 1)
    assert [m.rcpts for m in tls_sink.messages] == [["jose@gmail.com"]]
    assert b"X-MS-Exchange-Organization-AuthAs: Internal" in tls_sink.messages[0].content


@pytest.mark.parametrize("client", [None, "other"])
def test_the_same_message_from_outside_the_trust_is_outside_mail(
        relay: RelayProcess, pki: dict[str, Path], tls_sink: SinkHandler, client: str | None) -> None:
    """No client certificate, or one with another name: the stamps are not believed, and mail from
    outside to nobody of ours is a relay attempt."""
    code, _ = send(relay.port, pki, client, exo_message())
    assert 500 <= code < 600
    time.sleep(0.3)
    assert tls_sink.messages == []


def test_anonymous_stamp_on_the_trusted_hop_is_not_staff(
        relay: RelayProcess, pki: dict[str, Path], tls_sink: SinkHandler) -> None:
    code, _ = send(relay.port, pki, "exo", exo_message(authas="Anonymous"))
    assert 500 <= code < 600
    time.sleep(0.3)
    assert tls_sink.messages == []


def test_another_tenants_mail_on_the_same_servers_is_not_staff(
        relay: RelayProcess, pki: dict[str, Path], tls_sink: SinkHandler) -> None:
    code, _ = send(relay.port, pki, "exo", exo_message(tenant="99999999-0000-4000-8000-000000000000"))
    assert 500 <= code < 600
    time.sleep(0.3)
    assert tls_sink.messages == []


def relay_cli(relay: RelayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args[:1], "--config", str(relay.config_path), *args[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **relay.env})


def audit_rows(relay: RelayProcess, rule: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(relay_cli(relay, "audit", "--csv", "--rule", rule).stdout)))


def stamps(content: bytes) -> list[bytes]:
    return [f for f in split_head(content)[0] if f.lower().startswith(LOOP.lower().encode() + b":")]


def test_the_inbound_connector_requires_the_relays_client_certificate(
        pki: dict[str, Path], tls_sink: SinkHandler) -> None:
    """The sink stands for Exchange Online's certificate-based inbound connector: without a
    certificate from the test CA there is no TLS session, so nothing is delivered."""
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    port = tls_sink.port  # type: ignore[attr-defined]
    with (smtplib.SMTP("127.0.0.1", port, timeout=15) as smtp,
          pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError))):
        smtp.starttls(context=context)
        smtp.ehlo("x")
        smtp.sendmail(LAURA, ["jose@gmail.com"], b"Subject: x\r\n\r\nx\r\n")
    assert tls_sink.messages == []


def test_delivered_mail_carries_the_loop_guard_stamp(
        relay: RelayProcess, pki: dict[str, Path], tls_sink: SinkHandler) -> None:
    code, _ = send(relay.port, pki, "exo", exo_message(subject="Sello"))
    assert code == 250
    wait(tls_sink, 1)
    (stamp,) = stamps(tls_sink.messages[0].content)
    assert stamp.startswith(f"{LOOP}: v1; q=".encode()) and b"; m=" in stamp


def test_google_workspace_hop_is_staff_mail_and_outside_clients_are_not(
        relay: RelayProcess, pki: dict[str, Path], tls_sink: SinkHandler) -> None:
    code, _ = send(relay.port, pki, "google", google_message(), helo="mail-yw1-f45.google.com")
    assert code == 250
    wait(tls_sink, 1)
    assert [m.rcpts for m in tls_sink.messages] == [["jose@gmail.com"]]
    assert b"X-Google-Smtp-Source:" in tls_sink.messages[0].content and stamps(tls_sink.messages[0].content)
    hops = relay.wait_events("hosted_hop", 1)
    assert any(e["service"] == "google_workspace" and e["login"] == LAURA for e in hops)
    for client in (None, "other"):  # the same message from outside the trust: a relay attempt
        code, _ = send(relay.port, pki, client, google_message(), helo="mail-yw1-f45.google.com")
        assert 500 <= code < 600
    time.sleep(0.3)
    assert len(tls_sink.messages) == 1


def test_a_stamped_message_back_from_the_hop_passes_once_unchanged(
        relay: RelayProcess, pki: dict[str, Path], tls_sink: SinkHandler) -> None:
    code, _ = send(relay.port, pki, "exo", exo_message(subject="Vuelta"))
    assert code == 250
    wait(tls_sink, 1)
    first = tls_sink.messages[0].content
    before = len(audit_rows(relay, "loop-guard"))
    decisions = len(relay.events("decision"))
    code, _ = send(relay.port, pki, "exo", first)  # Exchange routed the relay's own delivery back
    assert code == 250
    wait(tls_sink, 2)
    assert len(tls_sink.messages) == 2
    again = tls_sink.messages[1].content
    assert again == first  # byte for byte: no rule rewrote it, no second stamp, no new trace headers
    assert len(stamps(again)) == 1
    code, text = send(relay.port, pki, "exo", first)  # a third time: a loop
    assert code == 554 and b"5.4.6" in text, text
    time.sleep(0.3)
    assert len(tls_sink.messages) == 2
    rows = audit_rows(relay, "loop-guard")[before:]
    assert sorted(r["verdict"] for r in rows) == ["deliver", "reject"], rows
    assert len(relay.events("decision")) == decisions  # the rules never judged it again


def test_a_stamp_from_an_untrusted_client_or_a_forged_one_counts_for_nothing(
        relay: RelayProcess, pki: dict[str, Path], tls_sink: SinkHandler) -> None:
    code, _ = send(relay.port, pki, "exo", exo_message(subject="Copia"))
    assert code == 250
    wait(tls_sink, 1)
    genuine = tls_sink.messages[0].content
    code, _ = send(relay.port, pki, "other", genuine)  # valid stamp, outside client: outside mail
    assert 500 <= code < 600
    head, rest = genuine.split(b"\r\n", 1)
    forged = head[:-4] + (b"AAAA" if not head.endswith(b"AAAA") else b"BBBB") + b"\r\n" + rest
    code, _ = send(relay.port, pki, "exo", forged)  # trusted hop, forged stamp: judged, stamp replaced
    assert code == 250
    wait(tls_sink, 2)
    assert len(tls_sink.messages) == 2
    (stamp,) = stamps(tls_sink.messages[1].content)
    assert stamp != head and stamp.startswith(f"{LOOP}: v1; q=".encode())
    assert relay.wait_events("loop_guard_invalid", 1)


def test_a_held_message_is_released_back_with_a_fresh_stamp(
        tmp_path: Path, pki: dict[str, Path], tls_sink: SinkHandler) -> None:
    """Cancillería's right to disconnect holds Friday night's order on the Exchange Online hop; on
    Monday the scheduler releases it through the inbound connector with the loop-guard stamp."""
    luis, maria = "luis.fernandez@cancilleria.gov.co", "maria.lopez@cancilleria.gov.co"
    proc = hosted_relay(tmp_path, pki, tls_sink, pack="cancilleria", scheduler={"max_sleep": 0.5})
    proc.use_test_clock(datetime.fromisoformat("2026-11-27T20:00:00-05:00"))
    proc.start()
    try:
        message = exo_message(subject="Orden").replace(LAURA.encode(), luis.encode()).replace(
            b"jose@gmail.com", maria.encode())
        code, _ = send(proc.port, pki, "exo", message, mail_from=luis, rcpts=(maria,))
        assert code == 250
        assert proc.wait_events("held", 1)
        wait(tls_sink, 1)  # the "held" notice to Luis (from <>), stamped like everything the relay sends
        assert [(m.mail_from, m.rcpts) for m in tls_sink.messages] == [("<>", [luis])]
        assert len(stamps(tls_sink.messages[0].content)) == 1
        FileClock.write(proc.clock_path, datetime.fromisoformat("2026-11-30T08:01:00-05:00"))  # Monday
        wait(tls_sink, 2)
        (got,) = [m for m in tls_sink.messages if m.mail_from != "<>"]
        assert got.rcpts == [maria]
        (stamp,) = stamps(got.content)
        monday = int(datetime.fromisoformat("2026-11-30T08:01:00-05:00").timestamp())
        stamped_at = int(stamp.split(b"t=")[1].split(b";")[0])
        assert monday <= stamped_at < monday + 120  # stamped at release, not at DATA time
    finally:
        proc.stop()
