"""Moderators' actions on held mail — one path for `relay queue` and the web pages.

Each action changes the hold in the store (durably, with its history) and tells our own sender
the outcome: an approval, or a refusal with the moderator's reason (Spanish first).
"""

from __future__ import annotations

from datetime import datetime

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
    """The sender hears the moderator's decision (and the reason of a refusal), in Spanish first."""
    if not hold.sender_notice_to:
        return
    subject = hold.subject or "(sin asunto)"
    if outcome == "approved":
        text = (f"Su mensaje «{subject}» fue aprobado y se entregará ahora a: {', '.join(hold.recipients)}.\n\n"
                f"--- English ---\nYour message \"{subject}\" was approved and is being delivered.")
        store.add_notices([(hold.sender_notice_to, "moderation-approved", f"Mensaje aprobado: {subject}", text)], now)
        return
    cites = "\n".join(f"- {c}" for c in hold.cites)
    text = (f"Su mensaje «{subject}» no fue aprobado y no se entregó.\n\nMotivo del moderador: {reason}\n\n"
            f"Fundamento:\n{cites}\n\n--- English ---\nYour message \"{subject}\" was not approved and was not "
            f"delivered.\nThe moderator's reason: {reason}")
    store.add_notices([(hold.sender_notice_to, "moderation-rejected", f"Mensaje no aprobado: {subject}", text)], now)
