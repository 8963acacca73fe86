"""Moderators' actions on held mail — one path for `relay queue` and the web pages.

Each action changes the hold in the store (durably, with its history) and tells our own sender
the outcome: an approval, or a refusal with the moderator's reason (Spanish first). In a running
relay the admin pages call this through `Disposer.moderate`, which wakes the scheduler: an
approved copy is then delivered through `Disposer.release` like any released hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo

from relay import notices
from relay.policy.spanish import instant_es
from relay.store import Hold, Store, TraceEvent
from relay.store.base import TRANSITIONS

ACTIONS = ("approve", "reject", "release", "delete", "withdraw")

# What a decision was, said of the message ("ya fue aprobado por …").
DECIDED_ES = {"approved": "aprobado", "rejected": "rechazado", "released": "liberado", "deleted": "eliminado",
              "withdrawn": "retirado", "expired": "vencido sin decisión"}


class AlreadyDecided(ValueError):
    """A second action on a copy someone already decided on: says who, what and when, in Spanish."""


def decided_es(hold: Hold, zone: tzinfo = UTC) -> str:
    """'aprobado por yanet.bastidas el jueves 3 de diciembre de 2026 a las 08:00 (America/Bogota, UTC-05:00)'."""
    if not hold.decision:
        return ""
    what = DECIDED_ES.get(hold.decision, hold.decision)
    when = f" el {instant_es(hold.decided_at.astimezone(zone))}" if hold.decided_at else ""
    who = f" por {notices.one_line(hold.decided_by)}" if hold.decided_by and hold.decision != "expired" else ""
    return f"{what}{who}{when}"


def act(store: Store, hold_id: str, action: str, by: str, now: datetime, reason: str = "",
        zone: tzinfo = UTC, templates: Mapping[str, notices.Template] | None = None) -> Hold:
    """Apply one action; ValueError when the hold is not in a state that allows it (AlreadyDecided
    when someone decided on it before: who, what, when, in `zone`) or no reason is given for a
    refusal; KeyError when there is no such hold."""
    current = store.get_hold(hold_id)
    if current is None:
        raise KeyError(hold_id)
    step = TRANSITIONS.get(action)
    if step is not None and current.state not in step.allowed and current.decision:
        raise AlreadyDecided(f"el mensaje {current.id} ya fue {decided_es(current, zone)}")
    if action == "approve":
        hold = store.approve(hold_id, now, by)
        tell_sender(store, hold, now, "approved", "", templates)
    elif action == "reject":
        reason = " ".join(reason.split())
        if not reason:
            raise ValueError("a refusal needs a reason: the sender is told it")
        hold = store.reject(hold_id, now, by, reason)
        tell_sender(store, hold, now, "rejected", reason, templates)
    elif action == "release":
        hold = store.release(hold_id, now, by)
    elif action == "delete":
        hold = store.delete(hold_id, now, by)
        tell_sender(store, hold, now, "deleted", "", templates)
    elif action == "withdraw":
        hold = store.withdraw(hold_id, now, by)
        tell_sender(store, hold, now, "withdrawn", "", templates)
    else:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return hold


def tell_sender(store: Store, hold: Hold, now: datetime, outcome: str, reason: str,
                templates: Mapping[str, notices.Template] | None = None) -> None:
    """The sender hears the moderator's decision (and the reason of a refusal): relay.notices'
    text, or the pack's (`notices:` in the pack)."""
    if not hold.sender_notice_to:
        return
    if outcome == "approved":
        notice = notices.approved(hold.sender_notice_to, hold.subject, hold.recipients)
    elif outcome == "deleted":
        notice = notices.deleted(hold.sender_notice_to, hold.subject, hold.recipients)
    elif outcome == "withdrawn":
        notice = notices.withdrawn(hold.sender_notice_to, hold.subject, hold.recipients)
    else:
        notice = notices.rejected(hold.sender_notice_to, hold.subject, reason, hold.cites)
    values = notices.outcome_values(hold.subject, hold.recipients, reason=reason, cites="; ".join(hold.cites))
    notice = notices.from_template(notice, (templates or {}).get(outcome), values)
    store.add_notices([(notice.to, notice.kind, notice.subject, notice.text)], now)
    if hold.queue_id:  # the message trace tells every notice sent about a message (relay trace)
        store.add_audit([], trace=[TraceEvent(hold.queue_id, now, "notice",
                                              f"{notice.kind} to {notice.to}: {notice.subject}")])
