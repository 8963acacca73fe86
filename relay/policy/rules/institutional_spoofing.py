"""institutional_spoofing: mail from outside that claims one of the institution's domains must
prove it — DMARC pass (aligned SPF or DKIM); where our domain publishes no DMARC, SPF pass for
our envelope sender, or a valid DKIM signature of our From domain.

Circular 005-20 (Barrancabermeja), numeral 1: the institutional domain is the only official
channel, so an outside server speaking for it without the domain's authorisation is not official
mail — it is how fraud against public offices arrives. The front-end looks SPF and DMARC up (or
reads the Authentication-Results of a trusted hop) only for such mail; this rule reads the facts.
Without DNS facts (checks off) the rule does not judge.

When DMARC fails for one of our From domains whose own DMARC record says `p=none` (monitoring: the
institution has not finished listing its senders), `dmarc_p_none` decides: `tag` (the default)
delivers it with a subject tag and a warning first — the domain asked receivers not to refuse
its failures, and our staff must still not take it for official mail; `enforce` applies the
rule's action as for p=quarantine/reject; `record` delivers it untouched, only audited.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import field_validator

from relay.identity import Direction
from relay.policy.rules.base import Context, RuleBase, render
from relay.policy.verdicts import Action, Finding, Rewrite

P_NONE_BANNER = (
    "ATENCIÓN: este mensaje dice venir de {address}, pero no se pudo verificar que lo haya enviado un "
    "servidor autorizado por la entidad (SPF {spf}, DMARC {dmarc}). Puede ser una suplantación: no responda "
    "con datos personales ni realice pagos; verifique por un canal oficial.\n\n"
    "WARNING: this message claims to come from {address}, but it could not be verified as sent by a server "
    "the institution authorises (SPF {spf}, DMARC {dmarc}). It may be forged: do not reply with personal "
    "data or make payments; check through an official channel."
)


class Config(RuleBase):
    kind: Literal["institutional_spoofing"]
    action: Action = Action.REJECT
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT, Action.MODERATE, Action.HOLD})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"address", "spf", "dmarc"})
    DEFAULT_REPLY: ClassVar[str] = ("{address} es un remitente de la entidad, pero el mensaje llega de un servidor "
                                    "externo no autorizado (SPF {spf}, DMARC {dmarc})")
    DEFAULT_DIRECTIONS: ClassVar[tuple[Direction, ...]] = (Direction.INBOUND, Direction.RELAY)
    # DMARC fails and our From domain publishes p=none: tag (deliver, warned), enforce (the action), record
    dmarc_p_none: Literal["tag", "enforce", "record"] = "tag"
    p_none_subject_tag: str = "[ALERTA: REMITENTE NO VERIFICADO]"
    p_none_banner: str = P_NONE_BANNER

    @field_validator("p_none_subject_tag")
    @classmethod
    def _ascii(cls, value: str) -> str:
        if not value.isascii() or "\n" in value or "\r" in value:
            raise ValueError("the subject tag must be one line of ASCII (it goes into a header)")
        return value


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    facts = ctx.submission.envelope.facts
    if facts is None or (facts.spf is None and facts.dmarc is None):
        return  # no sender facts: DNS checks off, or the mail does not claim one of our domains
    envelope_sender = ctx.submission.envelope.mail_from
    claimed = [a for a in ctx.sender_addresses if ctx.directory.is_local(a)]
    if not claimed:
        return
    if facts.dmarc == "pass":
        return
    envelope_local = bool(envelope_sender) and ctx.directory.is_local(envelope_sender)
    from_local = bool(facts.from_domain) and ctx.directory.is_local(f"x@{facts.from_domain}")
    if facts.spf == "pass" and envelope_local and not from_local:
        return  # our envelope domain authorised this server, and the From is not ours
    if facts.dmarc in (None, "none") and from_local:
        if facts.spf == "pass" and envelope_local:
            return  # no DMARC published: SPF for our envelope domain is the proof there is
        if any(_ours(d, facts.from_domain, ctx) for d in facts.dkim) and (not envelope_local or facts.spf == "pass"):
            return  # ...or a valid signature of our From domain (and no envelope of ours SPF refused)
    values = {"address": claimed[0], "spf": facts.spf or "none", "dmarc": facts.dmarc or "none"}
    detail = {"spf": facts.spf or "none", "dmarc": facts.dmarc or "none", "source": facts.source,
              "spf_domain": facts.spf_domain, "dkim": list(facts.dkim)}
    if facts.spf_explanation:  # the sender domain's own words (RFC 7208 §6.2): for the audit trail only
        detail["spf_explanation"] = facts.spf_explanation[:300]
    if facts.dmarc == "fail" and facts.dmarc_policy == "none" and from_local and rule.dmarc_p_none != "enforce":
        detail["dmarc_policy"] = "none"
        if rule.dmarc_p_none == "record":
            yield rule.finding(ctx, values, action=Action.RECORD, detail=detail)
            return
        rewrite = Rewrite(banner=render(rule.p_none_banner, values), subject_tag=rule.p_none_subject_tag)
        yield rule.finding(ctx, values, action=Action.REWRITE, rewrite=rewrite, detail=detail)
        return
    yield rule.finding(ctx, values, detail=detail)


def _ours(domain: str, from_domain: str, ctx: Context) -> bool:
    """The signing domain is our From domain, a subdomain of it, or another of our domains."""
    signer, ours = domain.casefold().rstrip("."), from_domain.casefold().rstrip(".")
    return signer == ours or signer.endswith("." + ours) or ctx.directory.is_local(f"x@{signer}")
