"""Moderators' actions on held mail — one path for `relay queue` and the web pages.

Each action changes the hold in the store (durably, with its history) and tells our own sender
the outcome: an approval, or a refusal with the moderator's reason (Spanish first). In a running
relay the admin pages call this through `Disposer.moderate`, which wakes the scheduler: an
approved copy is then delivered through `Disposer.release` like any released hold.
"""

from __future__ import annotations

from datetime import datetime

from relay import notices
from relay.store import Hold, Store

ACTIONS = ("approve", "reject", "release", "delete")


def act(store: Store, hold_id: str, action: str, by: str, now: datetime, reason: str = "") -> Hold:
    """Apply one action; ValueError when the hold is not in a state that allows it (or no reason
    is given for a refusal), KeyError when there is no such hold."""
    if store.get_hold(hold_id) is None:
        raise KeyError(hold_id)
    if action == "approve":
        hold = store.approve(hold_id, now, by)
        tell_sender(store, hold, now, "approved", "")
    elif action == "reject":
        reason = " ".join(reason.split())
        if not reason:
            raise ValueError("a refusal needs a reason: the sender is told it")
        hold = store.reject(hold_id, now, by, reason)
        tell_sender(store, hold, now, "rejected", reason)
    elif action == "release":
        hold = store.release(hold_id, now, by)
    elif action == "delete":
        hold = store.delete(hold_id, now, by)
    else:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return hold


def tell_sender(store: Store, hold: Hold, now: datetime, outcome: str, reason: str) -> None:
    """The sender hears the moderator's decision (and the reason of a refusal): relay.notices."""
    if not hold.sender_notice_to:
        return
    if outcome == "approved":
        notice = notices.approved(hold.sender_notice_to, hold.subject, hold.recipients)
    else:
        notice = notices.rejected(hold.sender_notice_to, hold.subject, reason, hold.cites)
    store.add_notices([(notice.to, notice.kind, notice.subject, notice.text)], now)
