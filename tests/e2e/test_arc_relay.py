"""ARC through a running relay: our institution's signed newsletter, changed and sealed by a
mailing list (tests/test_arc.py's forwarded()), arrives from the list's server as from a trusted
front MTA (XFORWARD). The relay, resolving against dnsmasq on loopback, delivers it when the list
is a configured trusted sealer and refuses it — as any DMARC fail — when the seal is anyone else's."""

from __future__ import annotations

import smtplib
from datetime import datetime
from pathlib import Path

import pytest

from tests.dnsserver import DnsServer
from tests.e2e.harness import RelayProcess, Sink
from tests.test_arc import B, forwarded

pytestmark = pytest.mark.e2e


def send(relay: RelayProcess, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
        smtp.ehlo("mx.test")
        code, text = smtp.docmd("XFORWARD", "ADDR=198.51.100.200 NAME=mail.listas.example HELO=mail.listas.example")
        assert code == 250, text
        assert smtp.mail("boletines-bounces@listas.example")[0] == 250
        assert smtp.rcpt(f"efrain.molinam@{B}")[0] == 250
        try:
            code, text = smtp.data(raw)
        except smtplib.SMTPDataError as error:
            return error.smtp_code, error.smtp_error
        return code, text


def test_list_mail_with_a_trusted_arc_chain_is_delivered(tmp_path: Path, dns_server: DnsServer) -> None:
    sink = Sink().start()
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pack="barrancabermeja",
                         trust={"xforward_hosts": ["127.0.0.1"]},
                         dns={"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": 1,
                              "arc_trusted_sealers": ["listas.example"]})
    relay.use_test_clock(datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
    relay.start()
    try:
        code, text = send(relay, forwarded("listas.example"))
        assert code == 250, text
        [arrived] = sink.wait_for(1)
        assert b"Subject: [Boletines] Agenda" in arrived.content and b"ARC-Seal:" in arrived.content
        code, text = send(relay, forwarded("evil.example"))  # a valid chain, but not a trusted sealer's
        assert code == 550 and b"institutional-domain-spoofing" in text and b"DMARC fail" in text, text
    finally:
        relay.stop()
        sink.stop()
