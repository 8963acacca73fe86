"""Exchange Online / Google Workspace in front of the relay (trust.hosted): a TLS client presenting a
certificate from a test CA with the service's name, sending with the service's stamps, to the relay,
which delivers to a sink that requires STARTTLS. The same message from a client outside that trust
is outside mail."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.e2e.harness import RelayProcess, SinkHandler, free_port

B = "barrancabermeja.gov.co"
LAURA = f"laura.pinto@{B}"
TENANT = "1f2e3d4c-0000-4000-8000-00000000abcd"
EXO_NAME = "barrancabermeja-gov-co.mail.protection.outlook.com"


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
    return {k: d / f"{k}.pem" for k in ("ca", "server", "exo", "other")} | {
        f"{k}.key": d / f"{k}.key" for k in ("server", "exo", "other")}


@pytest.fixture
def tls_sink(pki: dict[str, Path]) -> Iterator[SinkHandler]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["server"], pki["server.key"])
    handler = SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True)
    controller.start()
    handler.port = controller.port  # type: ignore[attr-defined]
    yield handler
    controller.stop()


@pytest.fixture
def relay(tmp_path: Path, pki: dict[str, Path], tls_sink: SinkHandler) -> Iterator[RelayProcess]:
    proc = RelayProcess(
        tmp_path, f"smtp://127.0.0.1:{tls_sink.port}?starttls=1",  # type: ignore[attr-defined]
        upstream_options={"tls_ca_file": str(pki["ca"])},
        tls={"cert": str(pki["server"]), "key": str(pki["server.key"]), "client_ca": str(pki["ca"])},
        trust={"hosted": [{"service": "exchange_online", "clients": ["127.0.0.0/8"],
                           "certificate_names": ["*.mail.protection.outlook.com"], "tenant_id": TENANT}]},
        auth={"allow_plaintext_on_loopback": False}).start()
    yield proc
    proc.stop()


def exo_message(authas: str = "Internal", subject: str = "Informe", tenant: str = TENANT) -> bytes:
    return (f"X-MS-Exchange-Organization-AuthAs: {authas}\r\n"
            f"X-MS-Exchange-Organization-AuthSource: BN8PR12MB3456.namprd12.prod.outlook.com\r\n"
            f"X-MS-Exchange-CrossTenant-Id: {tenant}\r\n"
            f"From: {LAURA}\r\nTo: jose@gmail.com\r\nSubject: {subject}\r\n\r\nCordial saludo.\r\n").encode()


def send(port: int, pki: dict[str, Path], client: str | None, content: bytes) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if client:
        context.load_cert_chain(pki[client], pki[f"{client}.key"])
    with smtplib.SMTP("127.0.0.1", port, timeout=15) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo("mail.protection.outlook.com")
        smtp.mail(LAURA)
        code, text = smtp.rcpt("jose@gmail.com")
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
