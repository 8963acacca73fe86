"""The scheduler with a real SQLite store, a fixed clock and an in-memory upstream (a fake, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relay import logs
from relay.clock import FixedClock
from relay.config import RelayConfig
from relay.dispose import Disposer, Rules
from relay.scheduler import Scheduler, SchedulerSettings
from relay.store import AuditEntry, HoldState, NewHold, SqliteStore
from relay.upstream import Reply, Transaction
from tests.helpers import directory, pack

T0 = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
OK = Reply(250, "2.0.0 ok")


@dataclass
class FakeUpstream:
    """Answers per recipient from a table; records what was delivered."""

    rcpt_replies: dict[str, Reply] = field(default_factory=dict)
    data_reply: Reply = OK
    delivered: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)

    def transaction(self) -> Transaction:
        return FakeTxn(self)


class FakeTxn(Transaction):
    def __init__(self, up: FakeUpstream) -> None:
        self.up, self.sender = up, ""
        self.rcpts: list[str] = []

    async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        self.sender = sender
        return Reply(250, "ok")

    async def rcpt(self, recipient: str, options: Sequence[str] = ()) -> Reply:
        reply = self.up.rcpt_replies.get(recipient, Reply(250, "ok"))
        if reply.ok:
            self.rcpts.append(recipient)
        return reply

    async def data(self, content: bytes) -> Reply:
        if self.up.data_reply.ok:
            self.up.delivered.append((self.sender, tuple(self.rcpts), content))
        return self.up.data_reply

    async def abort(self) -> None:
        self.rcpts = []


def make(tmp_path: Path, up: FakeUpstream, **settings: Any) -> tuple[Scheduler, SqliteStore, FixedClock]:
    store, clock = SqliteStore(tmp_path / "s.sqlite3"), FixedClock(T0)
    rules = Rules(pack("barrancabermeja"), directory("barrancabermeja"), None, None)
    disposer = Disposer(RelayConfig(policy="p", directory="d"), rules, clock, store, up)  # type: ignore[arg-type]
    scheduler = Scheduler(disposer, logs.get("test"), SchedulerSettings(**settings))
    return scheduler, store, clock


_ids = iter(range(10**6))


def hold(rcpts: tuple[str, ...], due: datetime = T0, sender_notice_to: str | None = "luis@c.gov.co") -> NewHold:
    return NewHold(f"Q{next(_ids)}", "hold", "luis@c.gov.co", rcpts, b"Subject: s\r\n\r\nb\r\n", due,
                   ("right-to-disconnect",), ("Ley 2088 de 2021",), "s", sender_notice_to)


def test_due_holds_go_in_order_and_only_when_due(tmp_path: Path) -> None:
    up = FakeUpstream()
    scheduler, store, clock = make(tmp_path, up)
    store.add_holds([hold(("b@c.gov.co",), T0 + timedelta(hours=2))], T0)
    store.add_holds([hold(("a@c.gov.co",), T0 + timedelta(hours=1))], T0)
    asyncio.run(scheduler.tick())
    assert up.delivered == []
    clock.set(T0 + timedelta(hours=2))
    asyncio.run(scheduler.tick())
    assert [d[1] for d in up.delivered] == [("a@c.gov.co",), ("b@c.gov.co",)]
    assert store.count_holds() == 0


def test_partial_refusals_retry_only_the_temporary_ones_and_bounce_the_permanent(tmp_path: Path) -> None:
    up = FakeUpstream(rcpt_replies={"t@c.gov.co": Reply(451, "4.2.0 busy"), "p@c.gov.co": Reply(550, "5.1.1 no")})
    scheduler, store, clock = make(tmp_path, up, retry_base=60)
    [hold_id] = store.add_holds([hold(("ok@c.gov.co", "t@c.gov.co", "p@c.gov.co"))], T0)
    asyncio.run(scheduler.tick())
    assert [d[1] for d in up.delivered] == [("ok@c.gov.co",)]
    left = store.get_hold(hold_id)
    assert left is not None and left.recipients == ("t@c.gov.co",) and left.next_attempt == T0 + timedelta(minutes=1)
    [bounce] = store.due_notices(T0 + timedelta(hours=1), 10)
    assert bounce.to == "luis@c.gov.co" and "p@c.gov.co" in bounce.text and "550" in bounce.text
    up.rcpt_replies.clear()
    clock.set(T0 + timedelta(minutes=1))
    asyncio.run(scheduler.tick())
    assert [d[1] for d in up.delivered][-1] == ("t@c.gov.co",)
    assert store.get_hold(hold_id).state is HoldState.DELIVERED  # type: ignore[union-attr]


def test_backoff_doubles_and_the_alert_goes_out_once(tmp_path: Path) -> None:
    up = FakeUpstream(data_reply=Reply(451, "4.4.1 down"))
    scheduler, store, clock = make(tmp_path, up, retry_base=10, retry_max=40, alert_after_attempts=3,
                                   alert_to="postmaster@c.gov.co")
    [hold_id] = store.add_holds([hold(("a@c.gov.co",))], T0)
    waits = []
    for _ in range(5):
        asyncio.run(scheduler.tick())
        h = store.get_hold(hold_id)
        assert h is not None and h.next_attempt is not None
        waits.append((h.next_attempt - clock.now()).total_seconds())
        clock.set(h.next_attempt)
    assert waits == [10, 20, 40, 40, 40]
    alerts = [n for n in store.due_notices(clock.now(), 100) if n.kind == "alert"]
    assert len(alerts) == 1 and alerts[0].to == "postmaster@c.gov.co" and hold_id in alerts[0].text


def test_no_bounce_for_an_outside_sender(tmp_path: Path) -> None:
    up = FakeUpstream(rcpt_replies={"p@c.gov.co": Reply(550, "5.1.1 no")})
    scheduler, store, _ = make(tmp_path, up)
    [hold_id] = store.add_holds([hold(("p@c.gov.co",), sender_notice_to=None)], T0)
    asyncio.run(scheduler.tick())
    assert store.get_hold(hold_id).state is HoldState.FAILED  # type: ignore[union-attr]
    assert store.due_notices(T0 + timedelta(days=1), 10) == []  # no backscatter


def test_notices_are_retried_on_4xx_and_dropped_on_5xx(tmp_path: Path) -> None:
    up = FakeUpstream(rcpt_replies={"gone@c.gov.co": Reply(550, "5.1.1 no")}, data_reply=Reply(451, "4.4.1 down"))
    scheduler, store, _ = make(tmp_path, up, retry_base=30)
    store.add_notices([("luis@c.gov.co", "hold", "s", "t"), ("gone@c.gov.co", "hold", "s", "t")], T0)
    asyncio.run(scheduler.tick())
    [left] = store.due_notices(T0 + timedelta(days=1), 10)
    assert left.to == "luis@c.gov.co" and store.next_notice_due() == T0 + timedelta(seconds=30)


@pytest.mark.parametrize("cap", [5.0, 60.0])
def test_sleep_is_bounded_by_the_next_due_instant_and_the_cap(tmp_path: Path, cap: float) -> None:
    scheduler, store, _ = make(tmp_path, FakeUpstream(), max_sleep=cap)
    assert asyncio.run(scheduler._sleep_for(None)) == cap  # nothing waiting: sleep the cap, no polling loop
    store.add_holds([hold(("a@c.gov.co",), T0 + timedelta(seconds=30))], T0)
    assert asyncio.run(scheduler._sleep_for(None)) == min(cap, 30.0)


def test_a_clock_that_jumps_back_and_forth_releases_each_hold_once_and_never_early(tmp_path: Path) -> None:
    """1,000 holds due over three days; the clock walks forward and backward (NTP steps, a VM
    restored from a snapshot, an operator's mistake). Each hold goes exactly once, never before its
    deliver_at as seen by the clock at that moment, and all of them once time has passed them all."""
    import random

    up = FakeUpstream()
    scheduler, store, clock = make(tmp_path, up, batch=200)
    rng = random.Random(2088)
    due = {f"r{i}@c.gov.co": T0 + timedelta(minutes=rng.randrange(3 * 24 * 60)) for i in range(1000)}
    store.add_holds([hold((rcpt,), at) for rcpt, at in due.items()], T0)
    released_at: dict[str, datetime] = {}
    now = T0
    for _ in range(400):
        now = max(T0 - timedelta(hours=6), now + timedelta(minutes=rng.randrange(-600, 900)))
        clock.set(now)
        before = len(up.delivered)
        asyncio.run(scheduler.tick())
        for _sender, rcpts, _content in up.delivered[before:]:
            assert rcpts[0] not in released_at, f"{rcpts[0]} released twice"
            released_at[rcpts[0]] = now
    clock.set(T0 + timedelta(days=4))
    while store.count_holds():
        before = len(up.delivered)
        asyncio.run(scheduler.tick())
        for _sender, rcpts, _content in up.delivered[before:]:
            assert rcpts[0] not in released_at
            released_at[rcpts[0]] = T0 + timedelta(days=4)
    assert sorted(released_at) == sorted(due)
    early = [r for r, at in released_at.items() if at < due[r]]
    assert early == []
    assert len(up.delivered) == 1000


def test_the_message_trace_is_purged_after_the_retention_period_at_most_hourly(tmp_path: Path) -> None:
    """scheduler.retention_days: decisions older than the period go (Ley 1581: personal data kept no
    longer than needed), the purge runs at most once an hour, an open hold stays whatever its age;
    without the setting nothing is ever purged."""
    scheduler, store, _ = make(tmp_path, FakeUpstream(), retention_days=30)
    old, recent = T0 - timedelta(days=31), T0 - timedelta(days=29)
    store.add_audit([AuditEntry(at, f"A{n}", "deliver", "250", "luis@c.gov.co", 1, None, None)
                     for n, at in enumerate((old, recent))])
    [open_id] = store.add_holds([hold(("maria@c.gov.co",), due=T0 + timedelta(days=1))], old)
    asyncio.run(scheduler.purge(T0))
    assert [e.queue_id for e in store.query_audit()] == ["A1"]
    assert store.get_hold(open_id) is not None
    store.add_audit([AuditEntry(old, "A2", "deliver", "250", "luis@c.gov.co", 1, None, None)])
    asyncio.run(scheduler.purge(T0 + timedelta(minutes=30)))  # within the hour: not again
    assert {e.queue_id for e in store.query_audit()} == {"A1", "A2"}
    asyncio.run(scheduler.purge(T0 + timedelta(hours=1, seconds=1)))
    assert [e.queue_id for e in store.query_audit()] == ["A1"]
    (tmp_path / "keep").mkdir()
    keep, kept_store, _ = make(tmp_path / "keep", FakeUpstream())
    kept_store.add_audit([AuditEntry(old, "K", "deliver", "250", "luis@c.gov.co", 1, None, None)])
    asyncio.run(keep.purge(T0))
    assert [e.queue_id for e in kept_store.query_audit()] == ["K"]
