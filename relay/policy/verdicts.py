"""Typed outcomes of the policy engine: findings, per-recipient verdicts, notices, the decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """What happens to one recipient's copy, in increasing order of restriction."""

    DELIVER = "deliver"
    HOLD = "hold"  # delivered automatically at deliver_at
    MODERATE = "moderate"  # waits for a person's approval
    TEMPFAIL = "tempfail"  # our fault or a transient state: the client retries
    REJECT = "reject"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Verdict.DELIVER: 0, Verdict.HOLD: 1, Verdict.MODERATE: 2, Verdict.TEMPFAIL: 3, Verdict.REJECT: 4}


class Action(StrEnum):
    """What a rule asks for when it fires."""

    REJECT = "reject"
    TEMPFAIL = "tempfail"
    MODERATE = "moderate"
    HOLD = "hold"
    NOTIFY = "notify"  # deliver, and send the rule's notices
    REWRITE = "rewrite"  # deliver after fixing the message (e.g. move lists to BCC)
    RECORD = "record"  # deliver; only record (inventory, audit)

    @property
    def verdict(self) -> Verdict:
        return {
            Action.REJECT: Verdict.REJECT, Action.TEMPFAIL: Verdict.TEMPFAIL,
            Action.MODERATE: Verdict.MODERATE, Action.HOLD: Verdict.HOLD,
        }.get(self, Verdict.DELIVER)


class Mode(StrEnum):
    ENFORCE = "enforce"
    MONITOR = "monitor"  # decision logged, message untouched


@dataclass(frozen=True)
class SmtpReply:
    """An SMTP reply. Use the constructors: a rejection can only carry 5xx, a tempfail only 4xx."""

    code: int
    status: str
    text: str

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599 or not self.status[:1] == str(self.code)[0]:
            raise ValueError(f"inconsistent reply {self.code} {self.status}")
        if any(c in self.text for c in "\r\n") or not self.text.isascii():
            raise ValueError("reply text must be one line of ASCII")

    @classmethod
    def ok(cls, text: str) -> SmtpReply:
        return cls(250, "2.0.0", text)

    @classmethod
    def reject(cls, text: str, code: int = 550, status: str = "5.7.1") -> SmtpReply:
        if not 500 <= code <= 599:
            raise ValueError("a rejection needs a 5xx code")
        return cls(code, status, text)

    @classmethod
    def tempfail(cls, text: str, code: int = 451, status: str = "4.3.0") -> SmtpReply:
        if not 400 <= code <= 499:
            raise ValueError("a temporary failure needs a 4xx code")
        return cls(code, status, text)

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


@dataclass(frozen=True)
class Notice:
    """A message the relay sends to a person about a decision."""

    to: str
    kind: str  # bounce | hold | auto-reply | alert | moderation
    subject: str
    text: str
    rule_ids: tuple[str, ...] = ()
    attach: str = ""  # a held copy's id: its original goes with the notice (set once the copy is stored)


@dataclass(frozen=True)
class Record:
    """Something worth keeping beyond the message: an inventory entry, a declared urgency."""

    kind: str  # social-account | urgency
    data: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, str]:
        return dict(self.data)


@dataclass(frozen=True)
class Rewrite:
    """How to fix a message instead of refusing it."""

    hide: frozenset[str] = frozenset()  # addresses to drop from To/Cc (they stay envelope recipients)
    split: bool = False  # one copy per recipient, each showing only its own address
    banner: str = ""  # a warning shown first in the message (a new first MIME part)
    subject_tag: str = ""  # ASCII, put before the Subject


@dataclass(frozen=True)
class Evidence:
    """One term or signal a text rule found: its group, weight (subject weight applied) and words."""

    group: str  # e.g. topic "debt", "person", "general", "offer", "signup"
    term: str  # as written in the pack (or the default in code)
    weight: float
    where: str  # "subject" | "body"
    text: str  # the folded words that matched

    @property
    def label(self) -> str:
        """The term, or for a regular expression the text it matched."""
        return f"«{self.text}»" if self.term.startswith(("re:", "raw:")) else self.term

    def as_dict(self) -> dict[str, Any]:
        return {"group": self.group, "term": self.term, "weight": self.weight, "where": self.where,
                "text": self.text}


@dataclass(frozen=True)
class Explanation:
    """Why a text rule judged a message as it did: the sub-scores it compared with their
    thresholds, the conclusion in words, and every term and signal that counted."""

    conclusion: str  # e.g. "personal notice: topic 7.5 >= 3 and person 4 - general 0 >= 1"
    scores: tuple[tuple[str, float], ...]  # named sub-scores (topic, person, general, ...)
    thresholds: tuple[tuple[str, float], ...]
    evidence: tuple[Evidence, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"conclusion": self.conclusion, "scores": dict(self.scores), "thresholds": dict(self.thresholds),
                "evidence": [e.as_dict() for e in self.evidence]}

    def line(self) -> str:
        """One line for logs and audit entries: conclusion, then group:term=weight."""
        terms = " ".join(f"{e.group}:{e.label}={e.weight:g}{'(subject)' if e.where == 'subject' else ''}"
                         for e in self.evidence)
        return f"{self.conclusion} [{terms}]" if terms else self.conclusion


@dataclass(frozen=True)
class Finding:
    """One rule that fired. `recipients` None means the whole message."""

    rule_id: str
    kind: str
    cites: str
    action: Action
    mode: Mode
    reason: str  # short Spanish reason, for the SMTP reply
    recipients: frozenset[str] | None = None
    deliver_at: tuple[tuple[str, datetime], ...] = ()
    notices: tuple[Notice, ...] = ()
    records: tuple[Record, ...] = ()
    rewrite: Rewrite | None = None
    envelope_only: bool = False  # decidable at RCPT time
    explanation: str = ""  # the rule's full notice text for the sender, rendered
    explanation_en: str = ""
    reply_code: tuple[int, str] | None = None
    moderators: tuple[str, ...] = ()
    detail: tuple[tuple[str, Any], ...] = ()
    why: Explanation | None = None  # text rules: the terms, signals and scores behind the finding
    # only a note for the record (e.g. a right-to-disconnect exemption applied): the rule did not
    # fire; its `records` go to the decision (and the audit trail), nothing else of it counts
    note_only: bool = False

    def applies_to(self, recipient_key: str) -> bool:
        return self.recipients is None or recipient_key in self.recipients


@dataclass(frozen=True)
class RecipientVerdict:
    address: str
    verdict: Verdict
    deliver_at: datetime | None = None
    rule_ids: tuple[str, ...] = ()
    # moderated while off work: an approved copy waits until then (the right to disconnect holds
    # after a moderator's approval too); not part of the dry-run contract
    not_before: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """The engine's answer for one message."""

    verdict: Verdict
    reply: SmtpReply
    recipients: tuple[RecipientVerdict, ...]
    findings: tuple[Finding, ...]  # enforced
    monitored: tuple[Finding, ...]  # would have fired; mode monitor
    misses: tuple[str, ...]  # rule ids that ran and did not fire
    notices: tuple[Notice, ...]
    records: tuple[Record, ...]
    rewrite: Rewrite | None
    defects: tuple[str, ...] = ()
    moderators: tuple[str, ...] = ()
    extra_headers: tuple[tuple[str, str], ...] = field(default=())
    # who may be told about this message later (a hold that fails, a moderator's answer): the
    # login, else our own envelope sender; None for outsiders and automatic mail (RFC 3834)
    notice_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The dry-run contract of shared/acceptance/README.md, plus audit details."""
        return {
            "verdict": self.verdict.value,
            "smtp_reply": str(self.reply),
            "recipients": [
                {"address": r.address, "verdict": r.verdict.value,
                 "deliver_at": r.deliver_at.isoformat() if r.deliver_at else None,
                 "rules": list(r.rule_ids)}
                for r in self.recipients
            ],
            "rules": [
                {"id": f.rule_id, "kind": f.kind, "cites": f.cites, "action": f.action.value,
                 "mode": f.mode.value, "reason": f.reason,
                 "recipients": sorted(f.recipients) if f.recipients is not None else None,
                 **({"explanation": f.why.as_dict()} if f.why is not None else {})}
                for f in self.findings + self.monitored
            ],
            "misses": list(self.misses),
            "notices": [{"to": n.to, "kind": n.kind, "subject": n.subject, "text": n.text,
                         "rules": list(n.rule_ids)} for n in self.notices],
            "records": [{"kind": r.kind, **r.as_dict()} for r in self.records],
            "rewrite": None if self.rewrite is None else {
                "hide": sorted(self.rewrite.hide), "split": self.rewrite.split, "banner": self.rewrite.banner,
                "subject_tag": self.rewrite.subject_tag},
            "moderators": list(self.moderators),
            "defects": list(self.defects),
        }
