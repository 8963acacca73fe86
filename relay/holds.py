"""From a decision to the copies to keep: one stored copy per distinct (verdict, due instant).

Pure: no store, no clock. The relay stores what `plan` returns before it answers 250.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from relay import notices
from relay.policy.verdicts import Decision, Notice, Verdict
from relay.store import NewHold

HELD = (Verdict.HOLD, Verdict.MODERATE)


def plan(decision: Decision, queue_id: str, mail_from: str, content: bytes, subject: str,
         sender_notice_to: str | None) -> list[NewHold]:
    """The held part of a message: recipients grouped by verdict and due instant, in due order."""
    groups: dict[tuple[Verdict, datetime | None], list[str]] = {}
    rules: dict[tuple[Verdict, datetime | None], list[str]] = {}
    for r in decision.recipients:
        if r.verdict not in HELD:
            continue
        key = (r.verdict, r.deliver_at if r.verdict is Verdict.HOLD else r.not_before)
        groups.setdefault(key, []).append(r.address)
        rules.setdefault(key, []).extend(i for i in r.rule_ids if i not in rules.get(key, []))
    cites = {f.rule_id: f.cites for f in decision.findings}
    out = []
    order = sorted(groups, key=lambda k: (k[1] is None, k[1].timestamp() if k[1] else 0.0))
    for verdict, due in order:
        ids = tuple(dict.fromkeys(rules[(verdict, due)]))
        out.append(NewHold(
            queue_id=queue_id, reason=verdict.value, mail_from=mail_from,
            recipients=tuple(groups[(verdict, due)]), content=content, deliver_at=due,
            rule_ids=ids, cites=tuple(cites[i] for i in ids if i in cites), subject=subject,
            sender_notice_to=sender_notice_to,
            moderators=decision.moderators if verdict is Verdict.MODERATE else (),
            deliver_at_local=due.isoformat() if due else "",
        ))
    return out


def deliver_now(decision: Decision) -> list[str]:
    """Recipients that are not held: they go upstream at once."""
    return [r.address for r in decision.recipients if r.verdict is Verdict.DELIVER]


def with_hold_ids(found: tuple[Notice, ...], holds: list[NewHold], ids: list[str],
                  link: Callable[[str, str, str], str] | None = None) -> tuple[Notice, ...]:
    """Moderation requests name the held copies and how to decide on them: signed links to the
    admin pages (`link(hold_id, action, moderator)`, when the admin listener is on) and the
    commands for the relay server. The sender's "held" notices (awaiting approval, held until
    working hours) end with a signed link to withdraw each of their copies (`link(hold_id,
    "withdraw", sender)`), when the admin listener is on."""
    moderated = [i for h, i in zip(holds, ids, strict=True) if h.reason == Verdict.MODERATE.value]
    timed = [i for h, i in zip(holds, ids, strict=True) if h.reason == Verdict.HOLD.value]
    senders = {h.sender_notice_to for h in holds if h.sender_notice_to}

    def how(moderator: str) -> str:
        return notices.how_to_moderate(moderated, moderator, link)

    def withdraw(n: Notice, which: list[str]) -> Notice:
        if link is None or not which or n.to not in senders:
            return n
        text = n.text + notices.how_to_withdraw(which, lambda hold_id: link(hold_id, "withdraw", n.to))
        return Notice(n.to, n.kind, n.subject, text, n.rule_ids)

    out = []
    for n in found:
        if n.kind == "moderation-request" and moderated:
            n = Notice(n.to, n.kind, n.subject, n.text + how(n.to), n.rule_ids, attach=moderated[0])
        elif n.kind == "moderation":
            n = withdraw(n, moderated)
        elif n.kind == "hold":
            n = withdraw(n, timed)
        out.append(n)
    return tuple(out)
