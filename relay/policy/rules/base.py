"""What every rule kind shares: its YAML model, the evaluation context and how a finding is built."""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from relay.directory import Directory, MailingList, Person, ServiceMailbox, address_key
from relay.identity import Direction, SenderIdentity
from relay.message import Submission
from relay.policy.automatic import auto_replied, is_automatic, is_delivery_report, may_respond
from relay.policy.lexicon import check_term
from relay.policy.verdicts import Action, Finding, Mode, Notice, Record, Rewrite

COMMON_VARS = frozenset({"sender", "recipients", "subject", "cites", "help", "rule", "institution"})


class Texts(BaseModel):
    """A text in Spanish, optionally in English too. Placeholders are `{name}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    es: str = Field(min_length=1)
    en: str | None = None


@dataclass(frozen=True)
class PackSettings:
    """Pack-wide values a rule may read."""

    name: str
    institution: str
    mass_threshold: int
    help: str
    languages: tuple[str, ...]


@dataclass(frozen=True)
class Context:
    """Everything a rule may look at. Rules must not do I/O or read the wall clock."""

    submission: Submission
    identity: SenderIdentity
    directory: Directory
    now: datetime
    pack: PackSettings

    @cached_property
    def recipients(self) -> tuple[str, ...]:
        return self.submission.envelope.rcpt_to

    @cached_property
    def sender_addresses(self) -> tuple[str, ...]:
        """Envelope sender and header From addresses, as keys (the addresses the mail claims)."""
        found = [address_key(a.addr) for a in self.submission.message.from_]
        if self.submission.envelope.mail_from:
            found.insert(0, address_key(self.submission.envelope.mail_from))
        return tuple(dict.fromkeys(found))

    @cached_property
    def own_addresses(self) -> frozenset[str]:
        """The sender's own addresses (login and claimed sender): not 'other' recipients."""
        own = set(self.sender_addresses)
        if self.identity.login:
            own.add(self.identity.login)
        return frozenset(own)

    @cached_property
    def sender_display(self) -> str:
        return self.submission.envelope.mail_from or (self.sender_addresses or ("<>",))[0]

    @cached_property
    def list_recipients(self) -> tuple[str, ...]:
        return tuple(r for r in self.recipients if isinstance(self.directory.find(r), MailingList))

    @cached_property
    def is_mass(self) -> bool:
        """Mass mail: to any mailing list of the directory, or to more recipients than the threshold."""
        return bool(self.list_recipients) or len(self.recipients) > self.pack.mass_threshold

    @cached_property
    def sender_roles(self) -> frozenset[str]:
        """Roles of the verified person, plus those of any service mailbox they send as (if a delegate)."""
        roles: set[str] = set()
        person = self.identity.person
        if person is None and self.identity.login is None and self.identity.internal_network:
            # No login: the internal network vouches for the claimed sender only.
            entry = self.directory.find(self.sender_addresses[0]) if self.sender_addresses else None
            person = entry if isinstance(entry, Person) else None
        if person is not None:
            roles |= person.roles
        for address in self.sender_addresses:
            entry = self.directory.find(address)
            if isinstance(entry, ServiceMailbox) and (
                self.identity.login in entry.delegates or self.identity.login is None
            ):
                roles |= entry.roles
        return frozenset(roles)

    @cached_property
    def notice_to(self) -> str | None:
        """Where a response about this message may go: only to our own staff (no backscatter), to
        the person who tried — the login, never an address they only claimed — and never to
        automatic mail or a system address (RFC 3834 §2; `policy.automatic.may_respond`)."""
        if not self.identity.is_staff:
            return None
        if self.identity.login:
            to: str | None = self.identity.login if self.directory.is_local(self.identity.login) else None
        else:  # no login (internal network, the server itself): where RFC 5321 sends bounces
            sender = self.submission.envelope.mail_from
            to = address_key(sender) if sender and self.directory.is_local(sender) else None
            if to is None and not sender and self.sender_addresses:
                to = self.sender_addresses[0] if self.directory.is_local(self.sender_addresses[0]) else None
        return to if to is not None and may_respond(self.submission, to) else None

    @cached_property
    def automatic(self) -> bool:
        """Mail no one may answer automatically (RFC 3834): DSNs, auto-replies, list mail."""
        return is_automatic(self.submission)

    @cached_property
    def delivery_report(self) -> bool:
        """A DSN or MDN (RFC 3464, RFC 8098): see `policy.automatic`."""
        return is_delivery_report(self.submission)

    @cached_property
    def system_generated(self) -> bool:
        """A notification (null reverse-path: RFC 5321 §4.5.5, DSNs and RFC 3834 responses) or a
        marked automatic reply, sent without a login by a host we trust (an internal server, the
        mail server itself): not someone sending as someone else, so the staff-identity rules let
        it through. With a login the person is checked as usual: neither a header nor `<>` makes
        anyone else's address theirs."""
        if self.identity.login or not self.identity.is_staff:
            return False
        return not self.submission.envelope.mail_from or auto_replied(self.submission)

    def base_vars(self, rule: RuleBase) -> dict[str, str]:
        return {
            "sender": self.sender_display,
            "recipients": ", ".join(self.recipients),
            "subject": self.submission.message.subject[:200],
            "cites": rule.cites,
            "help": self.pack.help,
            "rule": rule.id,
            "institution": self.pack.institution,
        }


class _Values(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""  # a known placeholder this finding has no value for


def render(template: str, values: dict[str, str]) -> str:
    """Fill `{name}` placeholders; names are checked at load time, a missing value renders empty."""
    return template.format_map(_Values(values))


class RuleBase(BaseModel):
    """Fields common to every rule in a pack."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", description="stable kebab-case id")
    cites: str = Field(min_length=3, description="circular and numeral this rule enforces")
    mode: Mode = Mode.ENFORCE
    action: Action
    directions: tuple[Direction, ...] | None = None
    reply: str | None = Field(default=None, max_length=300, description="short SMTP reason, Spanish")
    notice: Texts | None = None

    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset(Action)
    DEFAULT_DIRECTIONS: ClassVar[tuple[Direction, ...]] = (Direction.STAFF,)
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset()
    DEFAULT_REPLY: ClassVar[str] = "Mensaje contrario a la politica de correo institucional"
    # True for kinds that may refuse from the envelope alone (sender, login, client, recipients):
    # only these run in the RCPT-time pass, on an empty message.
    ENVELOPE_RULE: ClassVar[bool] = False
    REPLY_CODE: ClassVar[tuple[int, str] | None] = None  # default 550 5.7.1
    # Fields naming directory roles / directory addresses: `relay validate`, `serve` and `reload`
    # check each value against the directory (relay/crosscheck.py).
    ROLE_FIELDS: ClassVar[tuple[str, ...]] = ()
    ADDRESS_FIELDS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _check_common(self) -> RuleBase:
        if self.action not in self.ALLOWED_ACTIONS:
            allowed = ", ".join(sorted(a.value for a in self.ALLOWED_ACTIONS))
            raise ValueError(f"action {self.action.value!r} is not possible for kind {self.kind}; use {allowed}")
        known = COMMON_VARS | self.TEMPLATE_VARS
        for template in [self.reply or ""] + ([self.notice.es, self.notice.en or ""] if self.notice else []):
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as error:
                raise ValueError(f"bad placeholder in text: {error}; write '{{{{' for a literal brace") from None
            unknown = sorted(n for n in names if n not in known)
            if unknown:
                raise ValueError(f"unknown placeholder {{{unknown[0]}}}; known: {', '.join(sorted(known))}")
        return self

    @property
    def active_directions(self) -> tuple[Direction, ...]:
        return self.directions if self.directions is not None else self.DEFAULT_DIRECTIONS

    def finding(self, ctx: Context, values: dict[str, str] | None = None, *,
                action: Action | None = None, recipients: Iterable[str] | None = None,
                deliver_at: tuple[tuple[str, datetime], ...] = (), notices: tuple[Notice, ...] = (),
                records: tuple[Record, ...] = (), rewrite: Rewrite | None = None,
                envelope_only: bool = False, moderators: tuple[str, ...] = (),
                detail: dict[str, Any] | None = None, values_en: dict[str, str] | None = None) -> Finding:
        """A finding of this rule, with its reply and notice texts rendered (the English text with
        `values_en` over `values`: an instant or a count in English words)."""
        filled = {**ctx.base_vars(self), **(values or {})}
        reply = render(self.reply or self.DEFAULT_REPLY, filled)
        return Finding(
            rule_id=self.id, kind=self.kind, cites=self.cites, action=action or self.action,
            mode=self.mode, reason=reply,
            recipients=frozenset(address_key(r) for r in recipients) if recipients is not None else None,
            deliver_at=deliver_at, notices=notices, records=records, rewrite=rewrite,
            envelope_only=envelope_only, reply_code=self.REPLY_CODE,
            explanation=render(self.notice.es, filled) if self.notice else reply,
            explanation_en=render(self.notice.en, {**filled, **(values_en or {})})
            if self.notice and self.notice.en else "",
            moderators=moderators, detail=tuple((detail or {}).items()),
        )


def check_terms(value: dict[str, float]) -> dict[str, float]:
    """Field validator body for weighted term maps."""
    for term in value:
        check_term(term)
    return value

