"""Moderation and the operators' tools against a running relay: relay queue / audit / inventory."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import os
import smtplib
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import PASSWORD, RelayProcess, Sink
from tests.helpers import ROOT, SHARED, to_bytes

P = "pasto.gov.co"
EDUARDO = f"eduardo.hernandez@{P}"
RCPTS = [f"jorge.benavides@{P}", f"lucia.ortega@{P}"]
PROMO = (f"From: {EDUARDO}\r\nTo: {', '.join(RCPTS)}\r\nSubject: Promocion exclusiva: 40% de descuento en seguros\r\n"
         "\r\nAproveche esta oferta por tiempo limitado. Compre ya su poliza con descuento, precios especiales "
         "para servidores publicos. Escribame para cotizar.\r\n").encode()


@pytest.fixture
def relay_options() -> dict[str, Any]:
    return {"pack": "pasto", "extra_logins": (EDUARDO,)}


@pytest.fixture
def relay_clock() -> datetime:
    return datetime.fromisoformat("2026-11-24T11:30:00-05:00")


def relay_cli(relay: RelayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args[:1], "--config", str(relay.config_path), *args[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **relay.env})


def send_promo(relay: RelayProcess) -> str:
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
        smtp.login(EDUARDO, PASSWORD)
        smtp.mail(EDUARDO)
        for rcpt in RCPTS:
            smtp.rcpt(rcpt)
        code, text = smtp.data(PROMO)
    assert code == 250, text
    return text.decode()


def moderated(relay: RelayProcess) -> dict[str, object]:
    done = relay_cli(relay, "queue", "list", "--reason", "moderate", "--json")
    assert done.returncode == 0, done.stderr
    [hold] = json.loads(done.stdout)
    return hold  # type: ignore[no-any-return]


def originals(sink: Sink) -> list[list[str]]:
    return [m.rcpts for m in sink.messages if m.mail_from not in ("<>", "")]


def test_advertising_waits_for_the_communications_office_then_is_approved(relay: RelayProcess, sink: Sink) -> None:
    assert "held by policy" in send_promo(relay)
    notices = sink.wait_for(2)  # the sender is told it waits; the moderator is asked
    kinds = {m.rcpts[0]: m.content for m in notices}
    assert b"X-Relay-Notice: moderation" in kinds[EDUARDO]
    request = kinds[f"intranet@{P}"]
    assert b"X-Relay-Notice: moderation-request" in request and b"relay queue approve" in request
    hold = moderated(relay)
    assert hold["state"] == "moderation" and hold["recipients"] == RCPTS
    assert str(hold["id"]).encode() in request  # the moderator's notice names what to approve
    shown = relay_cli(relay, "queue", "show", str(hold["id"]))
    assert "commercial" in shown.stdout and "Subject: Promocion exclusiva" in shown.stdout
    assert originals(sink) == []  # nothing delivered while it waits
    done = relay_cli(relay, "queue", "approve", str(hold["id"]), "--by", "yanet.bastidas")
    assert done.returncode == 0, done.stderr
    sink.wait_for(4)
    assert originals(sink) == [RCPTS]
    history = relay_cli(relay, "queue", "show", str(hold["id"]), "--json")
    events = [e["event"] for e in json.loads(history.stdout)["history"]]
    assert events == ["held", "approved", "delivered"]
    assert relay_cli(relay, "queue", "approve", str(hold["id"])).returncode == 5  # not twice


def test_a_refusal_tells_the_sender_the_moderators_reason(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    sink.wait_for(2)
    hold = moderated(relay)
    done = relay_cli(relay, "queue", "reject", str(hold["id"]), "--reason", "Publicidad comercial no autorizada")
    assert done.returncode == 0, done.stderr
    got = sink.wait_for(3)
    refusal = next(m for m in got if b"X-Relay-Notice: moderation-rejected" in m.content)
    assert refusal.rcpts == [EDUARDO]
    body = email.message_from_bytes(refusal.content, policy=email.policy.default)
    text = body.get_content()  # type: ignore[attr-defined]
    assert "Publicidad comercial no autorizada" in text and "Circular 004 de 2021" in text
    assert originals(sink) == []
    assert relay_cli(relay, "queue", "list", "--json").stdout.strip() == "[]"


def test_unknown_id_and_bad_state_are_clear(relay: RelayProcess) -> None:
    done = relay_cli(relay, "queue", "release", "NOPE-1")
    assert done.returncode == 4 and "no held message" in done.stderr and "Traceback" not in done.stderr


def test_audit_and_inventory_exports(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    sink.wait_for(2)
    audit = relay_cli(relay, "audit")  # flushed within half a second
    for _ in range(20):
        if "moderate" in audit.stdout:
            break
        audit = relay_cli(relay, "audit")
    rows = list(csv.DictReader(io.StringIO(relay_cli(relay, "audit", "--csv", "--rule",
                                                     "commercial-content-approval").stdout)))
    assert [r["verdict"] for r in rows] == ["moderate"]
    assert "Pasto" in rows[0]["circulars"] and rows[0]["actions"] == "moderate"


def test_social_signups_fill_the_inventory(tmp_path: Path, sink: Sink) -> None:
    scenario = yaml.safe_load((SHARED / "acceptance" / "scenarios" / "bogota-01-facebook-signup-personal.yaml")
                              .read_text(encoding="utf-8"))
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pack="bogota")
    relay.use_test_clock(datetime.fromisoformat("2026-11-24T14:00:00-05:00"))
    relay.start()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:  # inbound, from outside
            smtp.sendmail(scenario["envelope"]["mail_from"], scenario["envelope"]["rcpt_to"],
                          to_bytes(scenario["message"]))
        sink.wait_for(2)  # the message and the alert to information security
        rows = list(csv.DictReader(io.StringIO(relay_cli(relay, "inventory", "--csv").stdout)))
        assert [(r["red_social"], r["correo_institucional_asociado"], r["tipo_buzon"]) for r in rows] == [
            ("Facebook", "nicolas.rubio@alcaldiabogota.gov.co", "personal")]
        assert rows[0]["primera_vez_visto"].startswith("2026-11-24T19:00")  # 14:00 in Bogotá, in UTC
    finally:
        relay.stop()


def test_trace_tells_a_messages_life_and_agrees_with_the_sink(relay: RelayProcess, sink: Sink) -> None:
    """Issue 27: `relay trace` by sender, recipient, Message-ID and queue id finds the moderated
    message and tells its life — decided (rule, circular), held, approved by whom, delivered with the
    upstream's reply, notices queued — in that order, and what it says was delivered is what the sink
    received."""
    promo = PROMO.replace(b"Subject:", b"Message-ID: <promo-77@pasto.gov.co>\r\nSubject:", 1)
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=15) as smtp:
        smtp.login(EDUARDO, PASSWORD)
        assert smtp.sendmail(EDUARDO, RCPTS, promo) == {}
    sink.wait_for(2)
    hold = moderated(relay)
    assert relay_cli(relay, "queue", "approve", str(hold["id"]), "--by", "yanet.bastidas").returncode == 0
    sink.wait_for(4)

    def trace(*args: str) -> list[dict[str, Any]]:
        done = relay_cli(relay, "trace", *args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    by_queue = trace("--queue-id", str(hold["queue_id"]))
    assert len(by_queue) == 1
    for query in (("--sender", EDUARDO), ("--recipient", RCPTS[1].upper()), ("--message-id", "<promo-77@pasto.gov.co>"),
                  ("--since", "2026-11-24", "--recipient", RCPTS[0])):
        assert [t["queue_id"] for t in trace(*query)] == [hold["queue_id"]], query
    [life] = by_queue
    assert life["recipients"] == RCPTS and life["message_id"] == "promo-77@pasto.gov.co"
    assert life["subject"].startswith("Promocion exclusiva")
    events = [e["event"] for e in life["events"]]
    assert events[:2] == ["received", "decided"]
    assert "commercial" in {r["rule"].split("-")[0] for r in life["events"][1]["rules"]}
    order = [events.index(e) for e in ("received", "decided", "hold held", "hold approved", "hold delivered")]
    assert order == sorted(order), events
    approved = next(e for e in life["events"] if e["event"] == "hold approved")
    assert "yanet.bastidas" in approved["detail"]
    assert any(e["event"].startswith("notice") for e in life["events"]), events
    delivered = [m for m in sink.messages if m.mail_from not in ("<>", "") and b"promo-77" in m.content]
    assert [m.rcpts for m in delivered] == [RCPTS]
    text = relay_cli(relay, "trace", "--queue-id", str(hold["queue_id"]))
    assert "America/Bogota" in text.stdout and "yanet.bastidas" in text.stdout and "1 message(s)" in text.stdout
    assert relay_cli(relay, "trace", "--sender", "nadie@pasto.gov.co").stdout.strip() == "no message matches"
