"""The pure policy engine: (submission, pack, directory, now) -> Decision.

Every rule whose direction matches runs (Mailman's habit: collect every reason, then decide);
findings are mapped to per-recipient verdicts with a fixed precedence
reject > tempfail > moderate > hold > deliver. No sockets, no disk, no wall clock.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import datetime

from relay import notices
from relay.addresses import AddressError, lenient_addresses, parse_path
from relay.directory import Directory, address_key
from relay.identity import identify
from relay.message import COMBINING, EMPTY_MESSAGE, Envelope, Submission
from relay.policy.automatic import gate
from relay.policy.pack import Pack
from relay.policy.rules import KINDS
from relay.policy.rules.base import Context
from relay.policy.spanish import instant_en, instant_es
from relay.policy.verdicts import (
    Action,
    Decision,
    Finding,
    Mode,
    Notice,
    RecipientVerdict,
    Rewrite,
    SmtpReply,
    Verdict,
)

MAX_REPLY_TEXT = 400


def ascii_text(text: str) -> str:
    """One line of ASCII for an SMTP reply: accents dropped, anything else replaced."""
    plain = " ".join(text.split())
    if not plain.isascii():
        plain = plain.replace("§", "sec. ").replace("º", "o").replace("°", "o")
        plain = COMBINING.sub("", unicodedata.normalize("NFKD", plain))
        plain = plain.encode("ascii", "replace").decode("ascii")
    return plain if len(plain) <= MAX_REPLY_TEXT else plain[: MAX_REPLY_TEXT - 3] + "..."


def _run_rules(pack: Pack, ctx: Context, envelope_only: bool = False) -> tuple[list[Finding], list[str]]:
    findings: list[Finding] = []
    misses: list[str] = []
    for rule in pack.rule_list:
        if ctx.identity.direction not in rule.active_directions:
            continue
        if envelope_only and not rule.ENVELOPE_RULE:
            continue
        try:
            found = list(KINDS[rule.kind].check(rule, ctx))
        except Exception as error:  # a bug in one rule: the client retries, nothing is lost
            found = [Finding(rule.id, rule.kind, rule.cites, Action.TEMPFAIL, Mode.ENFORCE,
                             "Error temporal al evaluar la politica; intente mas tarde",
                             detail=(("error", type(error).__name__),))]
        findings.extend(found)
        if not any(not f.note_only for f in found):
            misses.append(rule.id)
    return findings, misses


def _recipient_verdicts(recipients: Iterable[str], findings: list[Finding]) -> list[RecipientVerdict]:
    out = []
    for rcpt in recipients:
        key = address_key(rcpt)
        verdict, due, ids = Verdict.DELIVER, None, []
        for f in findings:
            if not f.applies_to(key):
                continue
            ids.append(f.rule_id)
            verdict = max(verdict, f.action.verdict, key=lambda v: v.rank)
            for addr, at in f.deliver_at:
                if addr == key and (due is None or at > due):
                    due = at
        out.append(RecipientVerdict(rcpt, verdict, due if verdict is Verdict.HOLD else None,
                                    tuple(dict.fromkeys(ids)),
                                    not_before=due if verdict is Verdict.MODERATE else None))
    return out


def refusal_reply(first: Finding, more: int = 0) -> SmtpReply:
    """The 5xx for a rejecting finding: rule id, Spanish reason and the circular, in ASCII."""
    extra = f" (y {more} motivo(s) mas)" if more else ""
    text = ascii_text(f"[{first.rule_id}] {first.reason}. Fundamento: {first.cites}{extra}")
    code, status = first.reply_code or (550, "5.7.1")
    return SmtpReply.reject(text, code, status)


def _reply(verdict: Verdict, findings: list[Finding]) -> SmtpReply:
    if verdict is Verdict.REJECT:
        rejects = [f for f in findings if f.action is Action.REJECT]
        return refusal_reply(rejects[0], len(rejects) - 1)
    if verdict is Verdict.TEMPFAIL:
        return SmtpReply.tempfail("Error temporal al evaluar la politica de correo; intente mas tarde")
    if verdict is Verdict.MODERATE:
        return SmtpReply.ok("Recibido; en espera de aprobacion segun la politica de correo")
    if verdict is Verdict.HOLD:
        return SmtpReply.ok("Recibido; se entregara en la jornada laboral del destinatario (Ley 2088 de 2021)")
    return SmtpReply.ok("Ok")


def _letter(ctx: Context, opening_es: str, opening_en: str, findings: list[Finding]) -> str:
    """A notice body (relay.notices.letter) with the pack's help contact, institution and languages."""
    return notices.letter(opening_es, opening_en, findings, subject=ctx.submission.message.subject,
                          help_contact=ctx.pack.help, institution=ctx.pack.institution,
                          english="en" in ctx.pack.languages)


def _notices(ctx: Context, verdict: Verdict, findings: list[Finding],
             recipients: list[RecipientVerdict]) -> list[Notice]:
    """The decision's notices; their texts are relay.notices'."""
    out: list[Notice] = []
    sender = ctx.notice_to  # None unless our own staff, and never automatic mail: no backscatter, no loops
    subject = ctx.submission.message.subject[:120] or notices.NO_SUBJECT
    if verdict is Verdict.REJECT:
        rejects = [f for f in findings if f.action is Action.REJECT]
        if sender:
            text = _letter(ctx, notices.NOT_SENT_ES, notices.NOT_SENT_EN, rejects)
            out.append(notices.not_sent(sender, subject, text, tuple(f.rule_id for f in rejects)))
        return out
    for f in findings:
        out.extend(f.notices)
    moderated = [f for f in findings if f.action is Action.MODERATE]
    if moderated:
        moderators = sorted({m for f in moderated for m in f.moderators})
        ids = tuple(f.rule_id for f in moderated)
        if sender:
            out.append(notices.awaiting(sender, subject, _letter(ctx, *notices.awaiting_opening(moderators),
                                                                 moderated), ids))
        waiting = [r.address for r in recipients if r.verdict is Verdict.MODERATE]
        details = notices.request_details(waiting, ctx.submission.message.body_text, moderated)
        for moderator in moderators:
            text = _letter(ctx, *notices.request_opening(ctx.sender_display), moderated) + details
            out.append(notices.moderation_request(moderator, subject, text, ids))
    held = [r for r in recipients if r.verdict is Verdict.HOLD and r.deliver_at]
    if held and sender:
        holds = [f for f in findings if f.action is Action.HOLD]
        when_es = "; ".join(f"{r.address}: {instant_es(r.deliver_at)}" for r in held if r.deliver_at)
        when_en = "; ".join(f"{r.address}: {instant_en(r.deliver_at)}" for r in held if r.deliver_at)
        # the schedule once: in the opening, unless the pack's own text already gives it ({schedule})
        said_es = any(when_es in f.explanation for f in holds)
        said_en = any(when_en in f.explanation_en for f in holds)
        text = _letter(ctx, *notices.held_opening(when_es, when_en, said_es, said_en), holds)
        out.append(notices.held_until(sender, subject, text, tuple(f.rule_id for f in holds)))
    return out


def _rewrite(findings: list[Finding]) -> Rewrite | None:
    fixes = [f.rewrite for f in findings if f.action is Action.REWRITE and f.rewrite is not None]
    if not fixes:
        return None
    return Rewrite(hide=frozenset().union(*(r.hide for r in fixes)), split=any(r.split for r in fixes),
                   banner="\n\n".join(dict.fromkeys(r.banner for r in fixes if r.banner)),
                   subject_tag=next((r.subject_tag for r in fixes if r.subject_tag), ""))


def evaluate(submission: Submission, pack: Pack, directory: Directory, now: datetime) -> Decision:
    """Decide one message. Pure: same inputs, same decision."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if submission.message.incomplete:
        return unreadable(submission)
    identity = identify(submission.envelope, directory)
    ctx = Context(submission, identity, directory, now, pack.settings)
    found, misses = _run_rules(pack, ctx)
    notes = [f for f in found if f.note_only and f.mode is Mode.ENFORCE]
    found = [f for f in found if not f.note_only]
    enforced = [f for f in found if f.mode is Mode.ENFORCE]
    monitored = [f for f in found if f.mode is Mode.MONITOR]
    recipients = _recipient_verdicts(submission.envelope.rcpt_to, enforced)
    verdict = max((r.verdict for r in recipients), key=lambda v: v.rank, default=Verdict.DELIVER)
    if verdict is not Verdict.REJECT and (refusal := ambiguous_from(submission)) is not None:
        return refusal  # a rule of the pack that refuses (and cites its circular) is said first
    hits = [f.rule_id for f in enforced] + [f"{f.rule_id}(monitor)" for f in monitored]
    rewrite = _rewrite(enforced) if verdict is not Verdict.REJECT else None
    return Decision(
        verdict=verdict,
        reply=_reply(verdict, enforced),
        recipients=tuple(recipients),
        findings=tuple(enforced),
        monitored=tuple(monitored),
        misses=tuple(misses),
        notices=gate(_notices(ctx, verdict, enforced, recipients), submission),
        records=tuple(r for f in enforced + notes for r in f.records) if verdict is not Verdict.REJECT else (),
        rewrite=rewrite,
        defects=submission.message.defects,
        moderators=tuple(sorted({m for f in enforced if f.action is Action.MODERATE for m in f.moderators})),
        extra_headers=(("X-Relay-Rule-Hits", ", ".join(dict.fromkeys(hits)) or "none"),),
        notice_to=ctx.notice_to,
    )


UNREADABLE_RULE = "message-unreadable"
AMBIGUOUS_FROM_RULE = "ambiguous-from"


def _builtin_refusal(submission: Submission, rule_id: str, reply: SmtpReply) -> Decision:
    """A refusal of the relay's own (no circular): the message cannot be judged safely."""
    return Decision(
        verdict=Verdict.REJECT, reply=reply,
        recipients=tuple(RecipientVerdict(r, Verdict.REJECT, None, (rule_id,)) for r in submission.envelope.rcpt_to),
        findings=(), monitored=(), misses=(), notices=(), records=(), rewrite=None,
        defects=submission.message.defects, extra_headers=(("X-Relay-Rule-Hits", rule_id),),
    )


def unreadable(submission: Submission) -> Decision:
    """Fail closed: a message the relay could not read whole is refused, never passed unchecked."""
    why = (submission.message.incomplete or "unreadable").encode("ascii", "replace").decode()[:80]
    return _builtin_refusal(submission, UNREADABLE_RULE, SmtpReply(
        554, "5.6.0", f"Mensaje demasiado complejo para verificar la politica de correo ({why}); "
                      "Message too complex to check"))


def ambiguous_from(submission: Submission) -> Decision | None:
    """Two From headers, or one the strict parser cannot read as addresses (the CVE-2023-27043
    shape `alice@inst.gov.co <mallory@evil.test>`): who sent it is unknown, so it is refused."""
    problem = submission.message.from_error
    if not problem or problem == "no From header":
        return None
    if not problem.endswith("From headers"):  # one From the strict parser refused: ambiguous only if
        value = submission.message.header("From") or ""  # it names two addresses ("Postmaster <>" does not)
        if len({a.casefold() for a in lenient_addresses(value)}) < 2:
            return None
    return _builtin_refusal(submission, AMBIGUOUS_FROM_RULE, SmtpReply(
        550, "5.7.1", f"Remitente ambiguo ({problem.encode('ascii', 'replace').decode()[:60]}); "
                      "ambiguous or duplicate From header (RFC 5322 3.6.2)"))


def envelope_refusal(envelope: Envelope, recipient: str, pack: Pack, directory: Directory,
                     now: datetime) -> SmtpReply | None:
    """RCPT time: the 5xx for `recipient` if an enforced rule refuses it from the envelope alone."""
    finding = envelope_refusing(envelope, recipient, pack, directory, now)
    return None if finding is None else refusal_reply(finding)


def envelope_refusing(envelope: Envelope, recipient: str, pack: Pack, directory: Directory,
                      now: datetime) -> Finding | None:
    """RCPT time: the enforced finding that refuses `recipient` from the envelope alone, if any.

    Only rule kinds marked ENVELOPE_RULE run, on an empty message; a finding counts only when the
    rule says the envelope alone decided it (a list among the recipients, the envelope sender, the
    client). Whatever depends on headers, body or the final recipient count waits for DATA."""
    identity = identify(envelope, directory)
    ctx = Context(Submission(envelope, EMPTY_MESSAGE), identity, directory, now, pack.settings)
    found, _ = _run_rules(pack, ctx, envelope_only=True)
    try:
        key = address_key(parse_path(recipient))  # the envelope's form: '"ab"@x' is ab@x
    except AddressError:
        key = address_key(recipient)
    for finding in found:
        if (finding.mode is Mode.ENFORCE and finding.action is Action.REJECT and finding.envelope_only
                and finding.applies_to(key)):
            return finding
    return None


def envelope_notices(envelope: Envelope, finding: Finding, recipient: str, pack: Pack, directory: Directory,
                     now: datetime) -> tuple[Notice, ...]:
    """The notice for an RCPT-time refusal: to our own sender only (no backscatter); the subject
    is not known yet, so the letter names the refused recipient."""
    identity = identify(envelope, directory)
    ctx = Context(Submission(envelope, EMPTY_MESSAGE), identity, directory, now, pack.settings)
    if not ctx.notice_to:
        return ()
    text = _letter(ctx, *notices.not_accepted_opening(recipient), [finding])
    return (notices.not_accepted(ctx.notice_to, recipient, text, finding.rule_id),)
