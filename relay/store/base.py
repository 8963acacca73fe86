"""The store interface: held messages, the notice outbox, the decision audit trail, the inventory.

Backends implement `Store` with plain blocking calls (the SMTP front-end and the scheduler call them
through `asyncio.to_thread`; the `relay queue` tools call them directly). Every method that
changes a held message commits durably before it returns: when `add_holds` returns, the bytes and
their metadata are on disk (fsync), so the client may hear `250`. SQLite is the embedded default;
the interface keeps to what a PostgreSQL backend can do the same way (claims by state update,
due times in the row), so several relays can later share one queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol


class HoldState(StrEnum):
    WAITING = "waiting"  # due at next_attempt; the scheduler delivers it
    MODERATION = "moderation"  # waits for a moderator's approve/reject
    DELIVERING = "delivering"  # claimed by a scheduler; back to waiting after a crash
    DELIVERED = "delivered"
    REJECTED = "rejected"  # refused by a moderator
    FAILED = "failed"  # refused permanently by the next hop
    DELETED = "deleted"  # removed by an operator
    WITHDRAWN = "withdrawn"  # taken back by its sender (the signed link of the "held" notice)
    EXPIRED = "expired"  # nobody decided within the pack's moderation period (moderation.expire_after_days)


OPEN_STATES = (HoldState.WAITING, HoldState.MODERATION, HoldState.DELIVERING)


@dataclass(frozen=True)
class Transition:
    """One operator/moderator action on a held copy: the states it is allowed in, the state after
    it (None: unchanged), whether it makes the copy due now (else not due at all, for a final
    state), whether the reason goes into last_error, and whether the bytes are dropped."""

    allowed: tuple[HoldState, ...]
    to: HoldState | None
    due_now: bool
    event: str
    not_before_deliver_at: bool = False  # due now, or at deliver_at if that is later (approve)
    keeps_reason: bool = False
    drop_content: bool = False
    decides: bool = True  # records who decided and when (decided_by, decided_at, decision)

    def check(self, hold_id: str, state: HoldState) -> None:
        if state not in self.allowed:
            raise ValueError(f"hold {hold_id} is {state.value}; this needs it to be "
                             + " or ".join(s.value for s in self.allowed))

    def assignments(self, now: object, reason: str, param: Callable[[int], str],
                    by: str = "") -> tuple[str, tuple[object, ...]]:
        """The SET clause and its arguments, with `param(n)` the n-th placeholder (1-based) of the
        backend's SQL dialect (`?` for SQLite, `$n` for PostgreSQL)."""
        sets: list[str] = []
        args: list[object] = []
        if self.to is not None:
            sets.append(f"state = '{self.to.value}'")
        if self.due_now and self.not_before_deliver_at:
            args.extend((now, now))
            sets.append(f"next_attempt = CASE WHEN deliver_at IS NOT NULL AND deliver_at > {param(len(args) - 1)} "
                        f"THEN deliver_at ELSE {param(len(args))} END")
        elif self.due_now:
            args.append(now)
            sets.append(f"next_attempt = {param(len(args))}")
        else:
            sets.append("next_attempt = NULL")
        if self.keeps_reason:
            args.append(reason[:500])
            sets.append(f"last_error = {param(len(args))}")
        if self.decides:
            args.extend((by[:200], now, self.event))
            sets.append(f"decided_by = {param(len(args) - 2)}, decided_at = {param(len(args) - 1)}, "
                        f"decision = {param(len(args))}")
        return ", ".join(sets), tuple(args)


_OPEN = (HoldState.MODERATION, HoldState.WAITING)
TRANSITIONS: dict[str, Transition] = {
    # release: a waiting copy goes now (its state stays waiting; the scheduler claims it)
    "release": Transition((HoldState.WAITING,), None, due_now=True, event="released"),
    # approve: due now, or when the recipients are back at work (deliver_at of a moderated copy)
    "approve": Transition((HoldState.MODERATION,), HoldState.WAITING, due_now=True, event="approved",
                          not_before_deliver_at=True),
    "reject": Transition(_OPEN, HoldState.REJECTED, due_now=False, event="rejected", keeps_reason=True,
                         drop_content=True),
    "delete": Transition((*_OPEN, HoldState.FAILED), HoldState.DELETED, due_now=False, event="deleted",
                         drop_content=True),
    # withdraw: the sender takes the message back before it goes (a moderated or a timed copy)
    "withdraw": Transition(_OPEN, HoldState.WITHDRAWN, due_now=False, event="withdrawn", drop_content=True),
    # expire: nobody decided within the pack's period; the sender is told (relay.lifecycle)
    "expire": Transition((HoldState.MODERATION,), HoldState.EXPIRED, due_now=False, event="expired",
                         drop_content=True),
}
"""Which action is allowed in which state, and the state after it: read by every backend."""

MODERATION_EVENTS = ("approved", "rejected", "released", "deleted", "withdrawn", "expired")
"""The hold events that are a person's (or the expiry's) decision: counted in /metrics."""


def event_detail(by: str, reason: str = "") -> str:
    return f"by {by}: {reason[:500]}" if reason else f"by {by}"


EXPIRED_BY = "policy-relay (plazo de moderación vencido)"


def expire_each(store: Store, hold_ids: list[str], now: datetime) -> list[Hold]:
    """Expire the given moderated copies one by one; one decided meanwhile (approved a moment
    before) is left as it is."""
    done = []
    for hold_id in hold_ids:
        try:
            done.append(store._change(hold_id, now, "expire", EXPIRED_BY))  # type: ignore[attr-defined]
        except (KeyError, ValueError):
            continue
    return done


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere (its own %, _ and \\ escaped with \\)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("timezone-aware instants only")
    return at.astimezone(UTC)


@dataclass(frozen=True)
class NewHold:
    """A message copy to keep: for `recipients`, until `deliver_at` (hold) or a moderator (moderate;
    then `deliver_at`, when set, is the earliest instant an approved copy goes: the recipients'
    next working period)."""

    queue_id: str
    reason: str  # hold | moderate
    mail_from: str
    recipients: tuple[str, ...]
    content: bytes
    deliver_at: datetime | None  # hold: when due; moderate: not before (None: at once when approved)
    rule_ids: tuple[str, ...]
    cites: tuple[str, ...]
    subject: str = ""
    sender_notice_to: str | None = None  # our own sender, told about the outcome
    moderators: tuple[str, ...] = ()
    deliver_at_local: str = ""  # the instant in the recipient's zone, for people


@dataclass(frozen=True)
class Hold:
    id: str
    queue_id: str
    reason: str
    state: HoldState
    mail_from: str
    recipients: tuple[str, ...]
    deliver_at: datetime | None
    next_attempt: datetime | None
    attempts: int
    created_at: datetime
    rule_ids: tuple[str, ...]
    cites: tuple[str, ...]
    subject: str
    sender_notice_to: str | None
    moderators: tuple[str, ...]
    last_error: str = ""
    deliver_at_local: str = ""
    size: int = 0
    decided_by: str = ""  # who approved, rejected, released, deleted or withdrew it ("" : nobody yet)
    decided_at: datetime | None = None
    decision: str = ""  # the event of that decision: approved, rejected, released, deleted, withdrawn, expired


@dataclass(frozen=True)
class HoldEvent:
    at: datetime
    event: str
    detail: str


@dataclass(frozen=True)
class HoldFilter:
    reason: str | None = None
    recipient: str | None = None
    sender: str | None = None
    due_before: datetime | None = None
    queue_id: str | None = None  # the SMTP queue id of the message: all its holds (one per plan)
    states: tuple[HoldState, ...] = (HoldState.WAITING, HoldState.MODERATION, HoldState.DELIVERING)
    limit: int = 1000
    offset: int = 0  # rows skipped first (a page of the moderation list)
    rule: str | None = None  # holds one of whose rules has this id
    since: datetime | None = None  # stored at or after (created_at)
    until: datetime | None = None  # stored before
    text: str | None = None  # a part of the id, queue id, sender, a recipient or the subject (any case)
    order: str = "due"  # due: next attempt first; queue: awaiting moderation first, then oldest stored


@dataclass(frozen=True)
class OutboxNotice:
    """A notice waiting to go out through the upstream (kept until the upstream took it)."""

    id: int
    to: str
    kind: str
    subject: str
    text: str
    attempts: int = 0
    attach: str = ""  # a held copy whose original goes with the notice (message/rfc822): moderation requests


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    queue_id: str
    verdict: str
    reply: str
    mail_from: str
    recipients: int
    login: str | None
    client_ip: str | None
    # (rule id, circular cited, action), and for text rules a fourth item: why (Explanation.line())
    rules: tuple[tuple[str, ...], ...] = ()
    monitored: tuple[str, ...] = ()
    # the message trace (store migration 3): the recipients' addresses, the subject, the Message-ID
    rcpt_to: tuple[str, ...] = ()
    subject: str = ""
    message_id: str = ""
    # what the decision recorded beyond its rule hits (store migration 5): (kind, ((field, value), ...)),
    # e.g. ("urgency", (("rule", "disconnect"), ("declared_by", ...), ("reason", ...))) or ("exemption", ...)
    records: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()


AuditRecords = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]


def records_json(records: AuditRecords) -> str:
    """An audit entry's records as stored: [[kind, {field: value}], ...]."""
    return json.dumps([[kind, dict(data)] for kind, data in records], ensure_ascii=False)


def records_from_json(text: str | None) -> AuditRecords:
    if not text:
        return ()
    return tuple((str(kind), tuple((str(k), str(v)) for k, v in data.items())) for kind, data in json.loads(text))


@dataclass(frozen=True)
class TraceEvent:
    """What happened to a message after its decision, for `relay trace`: delivered upstream (and
    the reply), refused by the upstream, handed back to the MTA, a notice queued."""

    queue_id: str
    at: datetime
    event: str
    detail: str = ""


@dataclass(frozen=True)
class TraceQuery:
    """A search of the audit trail: every given field must match (addresses case-insensitively;
    `sender` matches the envelope sender or the SASL login)."""

    sender: str | None = None
    recipient: str | None = None
    message_id: str | None = None
    queue_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 1000
    offset: int = 0  # rows skipped first (a page of the trace)


@dataclass(frozen=True)
class SocialAccount:
    network: str
    account: str
    mailbox_type: str  # personal | service
    first_seen: datetime
    last_seen: datetime
    messages: int = 1
    last_subject: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)


class StoreError(Exception):
    """The store could not do what was asked (disk full, I/O error, locked): a 4xx at the edge."""


class Store(Protocol):
    # holds
    def add_holds(self, holds: list[NewHold], now: datetime) -> list[str]: ...
    def get_hold(self, hold_id: str) -> Hold | None: ...
    def hold_content(self, hold_id: str) -> bytes | None: ...
    def hold_events(self, hold_id: str) -> list[HoldEvent]: ...
    def list_holds(self, filters: HoldFilter) -> list[Hold]: ...
    def next_due(self) -> datetime | None: ...
    def claim_due(self, now: datetime, limit: int) -> list[Hold]: ...
    def mark_delivered(self, hold_id: str, now: datetime, detail: str = "") -> None: ...
    def mark_retry(self, hold_id: str, now: datetime, next_attempt: datetime, error: str,
                   recipients: tuple[str, ...] | None = None) -> None: ...
    def mark_failed(self, hold_id: str, now: datetime, error: str) -> None: ...
    def recover(self, now: datetime) -> int: ...
    def release(self, hold_id: str, now: datetime, by: str) -> Hold: ...
    def approve(self, hold_id: str, now: datetime, by: str) -> Hold: ...
    def reject(self, hold_id: str, now: datetime, by: str, reason: str) -> Hold: ...
    def delete(self, hold_id: str, now: datetime, by: str) -> Hold: ...
    def withdraw(self, hold_id: str, now: datetime, by: str) -> Hold: ...
    def expire_moderation(self, now: datetime, created_before: datetime, limit: int) -> list[Hold]: ...
    def remove(self, hold_ids: list[str]) -> None: ...
    def count_holds(self, states: tuple[HoldState, ...] = OPEN_STATES) -> int: ...
    def count_matching(self, filters: HoldFilter) -> int: ...
    def hold_stats(self) -> dict[str, tuple[int, datetime | None]]: ...
    def outbox_stats(self) -> tuple[int, datetime | None]: ...
    def moderation_counts(self) -> dict[str, int]: ...
    # sending rates
    def rate_take(self, key: str, window_start: datetime, amount: int, limit: int) -> int | None: ...
    def rate_take_all(self, takes: Sequence[tuple[str, datetime, int]], amount: int) -> int | None: ...
    def take_once(self, key: str, now: datetime, period: float) -> bool: ...
    def give_back(self, key: str) -> None: ...
    # notices
    def add_notices(self, notices: Sequence[tuple[str, ...]], now: datetime) -> None: ...
    # (to, kind, subject, text) or (to, kind, subject, text, hold id whose original is attached)
    def due_notices(self, now: datetime, limit: int) -> list[OutboxNotice]: ...
    def notice_done(self, notice_id: int) -> None: ...
    def notice_retry(self, notice_id: int, next_attempt: datetime) -> None: ...
    def next_notice_due(self) -> datetime | None: ...
    # audit and inventory
    def add_audit(self, entries: list[AuditEntry], trace: list[TraceEvent] | None = None) -> None: ...
    def query_audit(self, since: datetime | None = None, until: datetime | None = None,
                    rule: str | None = None, verdict: str | None = None, limit: int = 10000) -> list[AuditEntry]: ...
    # the message trace
    def add_trace(self, events: list[TraceEvent]) -> None: ...
    def search_audit(self, query: TraceQuery) -> list[AuditEntry]: ...
    def count_audit(self, query: TraceQuery) -> int: ...
    def trace_events(self, queue_id: str) -> list[TraceEvent]: ...
    def purge_before(self, before: datetime) -> dict[str, int]: ...
    def record_accounts(self, accounts: list[SocialAccount]) -> None: ...
    def inventory(self) -> list[SocialAccount]: ...
    def close(self) -> None: ...
