"""institutional_spoofing with the DNS facts the front-end gathers (pure engine, no DNS): what a
DMARC fail means when our own From domain publishes p=none (`dmarc_p_none`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from relay.message import DnsFacts, Envelope, Submission, parse_message
from relay.policy.engine import evaluate
from relay.policy.pack import Pack
from relay.policy.verdicts import Action, Decision, Verdict
from tests.helpers import directory, pack, to_bytes
from tests.test_rules import with_rule

B = "barrancabermeja.gov.co"
LETTER = f"From: Tesoreria <tesoreria@{B}>\nTo: efrain.molinam@{B}\nSubject: Pago pendiente\n\nConfirme el pago.\n"


def decide_with(facts: DnsFacts, the_pack: Pack | None = None) -> Decision:
    envelope = replace(Envelope.build(f"tesoreria@{B}", [f"efrain.molinam@{B}"], None, "203.0.113.99"), facts=facts)
    return evaluate(Submission(envelope, parse_message(to_bytes(LETTER))), the_pack or pack("barrancabermeja"),
                    directory("barrancabermeja"), datetime.fromisoformat("2026-11-24T10:00:00-05:00"))


def spoofed(policy: str) -> DnsFacts:
    return DnsFacts(spf="fail", spf_domain=B, dmarc="fail", dmarc_policy=policy, from_domain=B)


def spoofing(decision: Decision) -> list[object]:
    return [f for f in decision.findings if f.rule_id == "institutional-domain-spoofing"]


@pytest.mark.parametrize("policy", ["reject", "quarantine"])
def test_a_dmarc_fail_under_reject_or_quarantine_is_refused(policy: str) -> None:
    decision = decide_with(spoofed(policy))
    assert decision.verdict is Verdict.REJECT and spoofing(decision)


def test_under_p_none_the_default_delivers_it_tagged_and_warned() -> None:
    decision = decide_with(spoofed("none"))
    [finding] = spoofing(decision)
    assert decision.verdict is Verdict.DELIVER and finding.action is Action.REWRITE  # type: ignore[attr-defined]
    assert decision.rewrite is not None
    assert decision.rewrite.subject_tag == "[ALERTA: REMITENTE NO VERIFICADO]"
    banner = decision.rewrite.banner
    assert banner.index("ATENCIÓN") < banner.index("WARNING")  # Spanish first, English after
    assert f"tesoreria@{B}" in banner and "SPF fail" in banner and "DMARC fail" in banner


def test_under_p_none_enforce_refuses_and_record_only_audits() -> None:
    enforce = decide_with(spoofed("none"), with_rule("barrancabermeja", "institutional-domain-spoofing",
                                                     dmarc_p_none="enforce"))
    assert enforce.verdict is Verdict.REJECT
    record = decide_with(spoofed("none"), with_rule("barrancabermeja", "institutional-domain-spoofing",
                                                    dmarc_p_none="record"))
    [finding] = spoofing(record)
    assert record.verdict is Verdict.DELIVER and record.rewrite is None
    assert finding.action is Action.RECORD  # type: ignore[attr-defined]


def test_p_none_changes_nothing_for_mail_that_passes_or_a_domain_without_dmarc() -> None:
    passed = decide_with(DnsFacts(spf="pass", spf_domain=B, dmarc="pass", dmarc_policy="none", from_domain=B))
    assert not spoofing(passed) and passed.verdict is Verdict.DELIVER
    no_record = decide_with(DnsFacts(spf="fail", spf_domain=B, dmarc="none", from_domain=B))
    assert no_record.verdict is Verdict.REJECT  # no DMARC at all: SPF fail for our envelope is refused


def test_the_setting_is_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        with_rule("barrancabermeja", "institutional-domain-spoofing", dmarc_p_none="ignore")
    with pytest.raises(ValidationError):
        with_rule("barrancabermeja", "institutional-domain-spoofing", p_none_subject_tag="[NO\nVERIFICADO]")
