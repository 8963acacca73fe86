"""A message that needs a moderator's approval, to someone off work: the approved copy still waits
for the recipient's working hours (Ley 2088 de 2021 / Ley 2191 de 2022 apply after approval too)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from relay import holds
from relay.directory import load_directory
from relay.message import Envelope, Submission, parse_message
from relay.policy.engine import evaluate
from relay.policy.pack import load_pack
from relay.policy.verdicts import Decision, Verdict

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo"
D = "@villaejemplo.gov.co"
AD = (f"From: sofia.vargas{D}\r\nTo: maria.lopez{D}\r\nSubject: Promocion por tiempo limitado\r\n\r\n"
      "Aproveche esta oferta por tiempo limitado: 30% de descuento, compre ya, envio gratis.\r\n").encode()


def decide(at: str) -> Decision:
    envelope = Envelope.build(f"sofia.vargas{D}", [f"maria.lopez{D}"], f"sofia.vargas{D}", "127.0.0.1")
    return evaluate(Submission(envelope, parse_message(AD)), load_pack(DEMO / "pack.yaml"),
                    load_directory(DEMO / "directory.yaml"), datetime.fromisoformat(at))


def test_moderated_at_night_keeps_the_next_working_start() -> None:
    d = decide("2026-11-24T22:30:00-05:00")  # a Tuesday night in Bogotá
    [r] = d.recipients
    assert r.verdict is Verdict.MODERATE and r.deliver_at is None  # the dry-run contract: moderate
    assert {"commercial-content-approval", "right-to-disconnect"} <= set(r.rule_ids), d.to_json()
    assert r.not_before == datetime.fromisoformat("2026-11-25T08:00:00-05:00"), r.not_before
    [kept] = holds.plan(d, "Q1", f"sofia.vargas{D}", AD, "x", None)
    assert kept.reason == "moderate" and kept.deliver_at == r.not_before


def test_moderated_at_work_is_due_when_approved() -> None:
    d = decide("2026-11-24T10:00:00-05:00")
    [r] = d.recipients
    assert r.verdict is Verdict.MODERATE and r.not_before is None and "right-to-disconnect" not in r.rule_ids
    [kept] = holds.plan(d, "Q1", f"sofia.vargas{D}", AD, "x", None)
    assert kept.reason == "moderate" and kept.deliver_at is None
