"""The moderation lifecycle in the scheduler (real SQLite store, fixed clock, in-memory upstream):
a message nobody decides on expires after the pack's period and its sender is told; each
moderator gets one digest a day of what waits; notices go only to our own people."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from relay import moderation
from relay.policy.pack import Moderation
from relay.store import HoldFilter, HoldState, NewHold
from tests.test_scheduler import FakeUpstream, make

B = "barrancabermeja.gov.co"
SENDER, MODERATOR, OTHER = f"carlos.rueda@{B}", f"laura.pinto@{B}", f"andres.mejia@{B}"
T0 = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # Monday 10:00 in Bogotá


def moderated(queue_id: str, moderators: tuple[str, ...] = (MODERATOR,), sender: str | None = SENDER) -> NewHold:
    return NewHold(queue_id, "moderate", SENDER, (f"patriciah.fierro@{B}",), b"Subject: Boletin\r\n\r\nb\r\n", None,
                   ("commercial-content-approval",), ("Circular 004 de 2021",), "Boletin", sender, moderators)


def sent(up: FakeUpstream, kind: str) -> list[tuple[str, str]]:
    """(recipient, text) of the notices of `kind` the upstream took."""
    out = []
    for sender, rcpts, content in up.delivered:
        message = email.message_from_bytes(content, policy=email.policy.default)
        if sender == "" and message["X-Relay-Notice"] == kind:
            out.append((rcpts[0], message.get_content()))  # type: ignore[attr-defined]
    return out


def test_an_undecided_message_expires_and_the_sender_is_told(tmp_path: Path) -> None:
    up = FakeUpstream()
    scheduler, store, clock = make(tmp_path, up)
    [hold_id] = store.add_holds([moderated("Q1")], T0)
    asyncio.run(scheduler.tick())
    assert store.get_hold(hold_id).state is HoldState.MODERATION  # type: ignore[union-attr]
    clock.set(T0 + timedelta(days=7, minutes=1))  # the default period: 7 days
    asyncio.run(scheduler.tick())
    hold = store.get_hold(hold_id)
    assert hold is not None and hold.state is HoldState.EXPIRED and store.hold_content(hold_id) is None
    [(to, text)] = sent(up, "moderation-expired")
    assert to == SENDER and "«Boletin»" in text and "7 días" in text and MODERATOR in text
    assert [r for _, r, _ in up.delivered if r != (SENDER,) and r[0] != MODERATOR] == []  # not delivered
    # a late approval says who decided and when, in Spanish and in the institution's time
    with pytest.raises(moderation.AlreadyDecided, match="ya fue vencido sin decisión el lunes 7 de diciembre"):
        moderation.act(store, hold_id, "approve", "laura", clock.now(), zone=scheduler.disposer.zone)


def test_no_expiry_notice_to_an_outside_sender(tmp_path: Path) -> None:
    up = FakeUpstream()
    scheduler, store, clock = make(tmp_path, up)
    store.add_holds([moderated("Q1", sender="someone@example.com")], T0)
    clock.set(T0 + timedelta(days=8))
    asyncio.run(scheduler.tick())
    assert store.list_holds(HoldFilter(states=(HoldState.EXPIRED,)))
    assert sent(up, "moderation-expired") == []


def test_one_digest_a_day_to_each_moderator_with_something_waiting(tmp_path: Path) -> None:
    up = FakeUpstream()
    scheduler, store, clock = make(tmp_path, up)
    clock.set(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))  # 07:00 in Bogotá: before the digest hour (8)
    store.add_holds([moderated("Q1")], clock.now())
    store.add_holds([moderated("Q2", (MODERATOR, OTHER))], clock.now())
    store.add_holds([moderated("Q3", ("list@example.com",))], clock.now())  # not one of ours: no digest
    asyncio.run(scheduler.tick())
    assert sent(up, "moderation-digest") == []
    clock.set(datetime(2026, 11, 30, 13, 5, tzinfo=UTC))  # 08:05
    asyncio.run(scheduler.tick())
    digests = dict(sent(up, "moderation-digest"))
    assert set(digests) == {MODERATOR, OTHER}
    assert "2 mensajes esperan" in digests[MODERATOR] and "Q1-1" in digests[MODERATOR]
    assert "Q2-1" in digests[MODERATOR] and "Un mensaje espera" in digests[OTHER] and "Q1-1" not in digests[OTHER]
    assert "(America/Bogota" in digests[MODERATOR]  # when each has waited since, in the institution's time
    for later in (timedelta(hours=3), timedelta(hours=12)):  # once that day, whatever the ticks
        clock.set(datetime(2026, 11, 30, 13, 5, tzinfo=UTC) + later)
        asyncio.run(scheduler.tick())
    assert len(sent(up, "moderation-digest")) == 2
    clock.set(datetime(2026, 12, 1, 13, 1, tzinfo=UTC))  # the next day: again
    asyncio.run(scheduler.tick())
    assert len(sent(up, "moderation-digest")) == 4


def test_the_day_s_digest_survives_a_restart(tmp_path: Path) -> None:
    up = FakeUpstream()
    scheduler, store, clock = make(tmp_path, up)
    clock.set(datetime(2026, 11, 30, 14, 0, tzinfo=UTC))
    store.add_holds([moderated("Q1")], clock.now())
    asyncio.run(scheduler.tick())
    again, _, clock2 = make(tmp_path, up)  # the same store, a new relay
    clock2.set(datetime(2026, 11, 30, 16, 0, tzinfo=UTC))
    asyncio.run(again.tick())
    assert len(sent(up, "moderation-digest")) == 1


def test_the_period_is_validated() -> None:
    assert Moderation().expire_after_days == 7 and Moderation().digest_hour == 8
    for bad in ({"expire_after_days": 0}, {"expire_after_days": 400}, {"digest_hour": 24}, {"every": 3}):
        with pytest.raises(ValidationError):
            Moderation.model_validate(bad)


def test_the_senders_held_notices_carry_a_withdrawal_link_and_only_theirs() -> None:
    from relay import holds
    from relay.policy.verdicts import Notice

    planned = [moderated("Q"), NewHold("Q", "hold", SENDER, (f"patriciah.fierro@{B}",), b"x", T0, ("r",), ("c",),
                                       "Boletin", SENDER)]
    found = (Notice(SENDER, "moderation", "s", "espera"), Notice(SENDER, "hold", "s", "retenido"),
             Notice(MODERATOR, "moderation-request", "s", "apruebe"), Notice(OTHER, "alert", "s", "x"))
    out = {n.kind: n for n in holds.with_hold_ids(found, planned, ["Q-1", "Q-2"],
                                                  lambda i, a, who: f"https://relay/{a}/{i}/{who}")}
    assert f"Retirar Q-1: https://relay/withdraw/Q-1/{SENDER}" in out["moderation"].text
    assert "Q-2" not in out["moderation"].text
    assert f"Retirar Q-2: https://relay/withdraw/Q-2/{SENDER}" in out["hold"].text
    assert "withdraw" not in out["moderation-request"].text and out["alert"].text == "x"
    without = holds.with_hold_ids(found, planned, ["Q-1", "Q-2"], None)  # no admin listener: no links
    assert all("Retirar" not in n.text for n in without)


def test_the_pack_words_the_approved_and_rejected_notices(tmp_path: Path) -> None:
    from relay.policy.pack import NoticeTemplate
    from relay.store import SqliteStore

    store = SqliteStore(tmp_path / "s.sqlite3")
    templates = {"approved": NoticeTemplate(subject="Aprobado por Comunicaciones: {subject}",
                                            es="La Oficina de Comunicaciones aprobó «{subject}» para {recipients}.",
                                            en="Approved: {subject}."),
                 "rejected": NoticeTemplate(es="Comunicaciones no aprobó «{subject}»: {reason}")}
    [a] = store.add_holds([moderated("A")], T0)
    [r] = store.add_holds([moderated("R")], T0)
    moderation.act(store, a, "approve", "yanet", T0, templates=templates)
    moderation.act(store, r, "reject", "yanet", T0, "Publicidad no autorizada", templates=templates)
    sent_now = {n.kind: n for n in store.due_notices(T0, 10)}
    approved, rejected = sent_now["moderation-approved"], sent_now["moderation-rejected"]
    assert approved.subject == "Aprobado por Comunicaciones: Boletin"
    assert approved.text == (f"La Oficina de Comunicaciones aprobó «Boletin» para patriciah.fierro@{B}.\n\n"
                             "--- English ---\nApproved: Boletin.")
    assert rejected.text == "Comunicaciones no aprobó «Boletin»: Publicidad no autorizada"
    assert rejected.subject == "Mensaje no aprobado: Boletin"  # no subject in the pack: the relay's


def test_pack_notice_templates_are_checked_when_the_pack_loads() -> None:
    from relay.policy.pack import Pack
    from tests.helpers import pack

    base = pack("pasto").model_dump(mode="json", exclude={"notices"})
    for bad, message in (({"aproved": {"es": "x"}}, "unknown notice 'aproved'"),
                         ({"approved": {"es": "Motivo: {reason}"}}, "unknown placeholder {reason}")):
        with pytest.raises(ValidationError, match=re.escape(message)):
            Pack.model_validate({**base, "notices": bad})
    assert Pack.model_validate({**base, "notices": {"rejected": {"es": "No: {reason}"}}}).notices["rejected"].es
