"""The moderation lifecycle the scheduler runs beside its releases: expiry and the daily digest.

- A message that waited for a moderator longer than the pack's `moderation.expire_after_days`
  expires (state `expired`, bytes dropped) and our own sender is told it was not delivered.
- Once a day, at the pack's `moderation.digest_hour` in the institution's zone, each moderator
  with something waiting gets one digest of it. The day's digest is recorded in the store
  (`take_once`), so a restart or a second relay sharing the queue does not send it twice.

Notices go only to our own people (directory addresses): RFC 3834 — never to automatic mail,
lists or bounces; the sender of a held copy is already one of ours (`sender_notice_to`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from relay import notices
from relay.policy import automatic
from relay.policy.spanish import instant_es
from relay.policy.verdicts import Notice
from relay.store import HoldFilter, HoldState, Store, TraceEvent

BATCH = 200


@dataclass(frozen=True)
class Lifecycle:
    expire_after_days: int
    digest_hour: int | None
    zone: tzinfo
    templates: Mapping[str, notices.Template] = field(default_factory=dict)


def _ours(address: str, is_local: Callable[[str], bool]) -> bool:
    return bool(address) and is_local(address) and not automatic.is_system_address(address)


def expire(store: Store, now: datetime, settings: Lifecycle, is_local: Callable[[str], bool]) -> list[Notice]:
    """Expire what waited too long; the senders' notices (the caller queues them)."""
    out = []
    cutoff = now - timedelta(days=settings.expire_after_days)
    for hold in store.expire_moderation(now, cutoff, BATCH):
        if hold.sender_notice_to and _ours(hold.sender_notice_to, is_local):
            default = notices.expired(hold.sender_notice_to, hold.subject, hold.recipients,
                                      settings.expire_after_days, hold.moderators)
            values = notices.outcome_values(hold.subject, hold.recipients, days=str(settings.expire_after_days),
                                            moderators=", ".join(hold.moderators))
            notice = notices.from_template(default, settings.templates.get("expired"), values)
            out.append(notice)
            if hold.queue_id:  # told in the message's trace (the caller queues the notice at once)
                store.add_audit([], trace=[TraceEvent(hold.queue_id, now, "notice",
                                                      f"{notice.kind} to {notice.to}: {notice.subject}")])
    return out


def digest_instant(now: datetime, settings: Lifecycle) -> datetime | None:
    """Today's digest instant (institution's zone) if it has come, else None."""
    if settings.digest_hour is None:
        return None
    local = now.astimezone(settings.zone)
    at = local.replace(hour=settings.digest_hour, minute=0, second=0, microsecond=0)
    return at if local >= at else None


def digests(store: Store, now: datetime, settings: Lifecycle, is_local: Callable[[str], bool]) -> list[Notice]:
    """Today's digests not yet sent: one per moderator of ours with something waiting."""
    at = digest_instant(now, settings)
    if at is None:
        return []
    waiting = store.list_holds(HoldFilter(states=(HoldState.MODERATION,), limit=5000))
    by_moderator: dict[str, list[tuple[str, str, str, str]]] = {}
    for hold in sorted(waiting, key=lambda h: h.created_at):
        since = instant_es(hold.created_at.astimezone(settings.zone))
        for moderator in hold.moderators:
            by_moderator.setdefault(moderator.casefold(), []).append(
                (hold.id, hold.mail_from, hold.subject, since))
    out = []
    for moderator, items in sorted(by_moderator.items()):
        if not _ours(moderator, is_local):
            continue
        # one a day: the key holds the day's digest instant; an hour of tolerance covers DST shifts
        if store.take_once(f"moderation-digest:{moderator}", at, 3600):
            out.append(notices.digest(moderator, items, settings.expire_after_days))
    return out
