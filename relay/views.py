"""What the CLI (`relay queue --json`), the admin web pages and the JSON API show: one function per
view, so the three front doors tell the same story.

Plain blocking functions on a `Store` (callers in the event loop run them in a worker thread);
JSON-ready dicts out, ISO-8601 instants with offsets, no HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from relay import moderation
from relay.rewrite import split_head
from relay.store import AuditEntry, Hold, HoldFilter, HoldState, Store
from relay.store.base import OPEN_STATES, TraceQuery


class NotFound(LookupError):
    """No such hold (or message)."""


class BadRequest(ValueError):
    """The request itself is wrong (a refusal with no reason, an unknown action)."""


class Conflict(ValueError):
    """The hold is not in a state that allows the action."""


def iso(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else ""


def hold_json(hold: Hold) -> dict[str, Any]:
    return {"id": hold.id, "queue_id": hold.queue_id, "reason": hold.reason, "state": hold.state.value,
            "mail_from": hold.mail_from, "recipients": list(hold.recipients),
            "deliver_at": hold.deliver_at_local or iso(hold.deliver_at), "next_attempt": iso(hold.next_attempt),
            "attempts": hold.attempts, "created_at": iso(hold.created_at), "rules": list(hold.rule_ids),
            "cites": list(hold.cites), "subject": hold.subject, "moderators": list(hold.moderators),
            "last_error": hold.last_error, "size": hold.size, "decision": hold.decision or None,
            "decided_by": hold.decided_by or None, "decided_at": iso(hold.decided_at) or None}


@dataclass(frozen=True)
class HoldQuery:
    """A search of held mail: open ones by default (`all_states` for every state, `state` for one)."""

    reason: str | None = None
    recipient: str | None = None
    sender: str | None = None
    due_before: datetime | None = None
    state: str | None = None
    all_states: bool = False
    limit: int = 1000

    def filters(self) -> HoldFilter:
        if self.state:
            try:
                states: tuple[HoldState, ...] = (HoldState(self.state),)
            except ValueError:
                raise BadRequest(f"unknown state {self.state!r}; one of "
                                 + ", ".join(s.value for s in HoldState)) from None
        else:
            states = tuple(HoldState) if self.all_states else OPEN_STATES
        if self.reason not in (None, "hold", "moderate"):
            raise BadRequest(f"unknown reason {self.reason!r}; hold or moderate")
        return HoldFilter(reason=self.reason, recipient=self.recipient, sender=self.sender,
                          due_before=self.due_before, states=states, limit=max(1, min(self.limit, 10000)))


def list_holds(store: Store, query: HoldQuery) -> list[dict[str, Any]]:
    return [hold_json(h) for h in store.list_holds(query.filters())]


def show_hold(store: Store, hold_id: str) -> dict[str, Any]:
    """One hold with its headers (while the bytes are kept) and its history; NotFound."""
    hold = store.get_hold(hold_id)
    if hold is None:
        raise NotFound(hold_id)
    content = store.hold_content(hold.id) or b""
    fields, _ = split_head(content)
    return {**hold_json(hold), "headers": [f.decode("utf-8", "replace") for f in fields],
            "history": [{"at": iso(e.at), "event": e.event, "detail": e.detail} for e in store.hold_events(hold.id)]}


def trace_json(store: Store, entry: AuditEntry) -> dict[str, Any]:
    """One message's life, in time order, ISO 8601 with offsets: received (from which client, as
    whom), decided (verdict, rule hits with their cites), then what happened to it (holds and their
    history: held, approved/rejected/withdrawn/expired by whom, delivered with the upstream's reply;
    the upstream's reply to direct delivery; notices queued)."""
    rules = [{"rule": r[0], "cite": r[1], "action": r[2]} for r in entry.rules if len(r) > 2]
    origin = " ".join(p for p in (f"from {entry.client_ip}" if entry.client_ip else "",
                                  f"as {entry.login}" if entry.login else "") if p)
    events: list[dict[str, Any]] = [
        {"at": iso(entry.at), "event": "received",
         "detail": f"{origin + ', ' if origin else ''}{entry.recipients} recipient(s)"},
        {"at": iso(entry.at), "event": "decided", "detail": entry.verdict + (f": {entry.reply}" if entry.reply else ""),
         "rules": rules}]
    holds = store.list_holds(HoldFilter(queue_id=entry.queue_id, states=tuple(HoldState), limit=1000))
    for hold in holds:
        for e in store.hold_events(hold.id):
            events.append({"at": iso(e.at), "event": f"hold {e.event}", "detail": e.detail, "hold": hold.id})
    for t in store.trace_events(entry.queue_id):
        events.append({"at": iso(t.at), "event": t.event, "detail": t.detail})
    events.sort(key=lambda e: datetime.fromisoformat(e["at"]) if e["at"] else entry.at)  # stable: received first
    return {"queue_id": entry.queue_id, "at": iso(entry.at), "mail_from": entry.mail_from, "login": entry.login,
            "client_ip": entry.client_ip, "recipients": list(entry.rcpt_to), "subject": entry.subject,
            "message_id": entry.message_id, "verdict": entry.verdict, "rules": rules,
            "holds": [{"id": h.id, "state": h.state.value, "decision": h.decision or None,
                       "decided_by": h.decided_by or None} for h in holds],
            "events": events}


def search_traces(store: Store, query: TraceQuery) -> dict[str, Any]:
    """The message trace searched (by sender or login, recipient, Message-ID, queue id, instants):
    one page of messages, newest first, each with its life, and how many match in all. The one
    search behind `relay trace`, the /trace page and GET /api/v1/trace."""
    if query.since and query.until and query.until <= query.since:
        raise BadRequest("until is not after since")
    query = replace(query, limit=max(1, min(query.limit, 10000)), offset=max(0, query.offset))
    total = store.count_audit(query)
    messages = [trace_json(store, e) for e in store.search_audit(query)] if total > query.offset else []
    return {"messages": messages, "total": total, "offset": query.offset, "limit": query.limit}


def actions() -> tuple[str, ...]:
    """The moderation actions this relay's store supports (relay.moderation.ACTIONS)."""
    return tuple(moderation.ACTIONS)


def check_action(action: str, reason: str) -> str:
    """The reason, normalised; BadRequest for an unknown action or a refusal without a reason."""
    if action not in actions():
        raise BadRequest(f"unknown action {action!r}; one of {', '.join(actions())}")
    reason = " ".join(reason.split())
    if action == "reject" and not reason:
        raise BadRequest("a refusal needs a reason: the sender is told it")
    return reason


def act(store: Store, hold_id: str, action: str, by: str, now: datetime, reason: str = "",
        zone: Any = None, templates: Any = None) -> Hold:
    """A moderator's action through relay.moderation.act: NotFound, BadRequest, Conflict (a second
    decision: who decided and when, in Spanish, in `zone`; the sender's notice in the pack's words)."""
    reason = check_action(action, reason)
    try:
        if zone is None:
            return moderation.act(store, hold_id, action, by, now, reason, templates=templates)
        return moderation.act(store, hold_id, action, by, now, reason, zone, templates)
    except KeyError:
        raise NotFound(hold_id) from None
    except ValueError as error:
        raise Conflict(str(error)) from None


def report(store: Store, directory: Any, month: str, zone: Any, rules: Any = None,
           office: str | None = None) -> dict[str, Any]:
    """The compliance report of a month as JSON-ready data (relay.report.report_for): what
    `relay report --format json`, /report and /api/v1/report show. BadRequest for a bad month."""
    from relay import report as compliance

    try:
        period = compliance.Period.month(month, zone)
    except compliance.ReportError as error:
        raise BadRequest(str(error)) from None
    return compliance.report_json(compliance.report_for(store, directory, period, rules, office or None))
