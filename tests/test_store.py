"""The SQLite store: durable holds, claims, state changes, outbox, audit, inventory, migrations."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.store import AuditEntry, HoldFilter, HoldState, NewHold, SocialAccount, SqliteStore, StoreError

T0 = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)


def new(queue_id: str, due: datetime | None, rcpts: tuple[str, ...] = ("maria@c.gov.co",),
        sender: str = "luis@c.gov.co") -> NewHold:
    return NewHold(queue_id=queue_id, reason="hold" if due else "moderate", mail_from=sender, recipients=rcpts,
                   content=b"Subject: x\r\n\r\nbody\r\n", deliver_at=due, rule_ids=("right-to-disconnect",),
                   cites=("Ley 2088 de 2021",), subject="x", sender_notice_to=sender)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "s.sqlite3")


def test_holds_come_due_in_order_and_are_claimed_once(store: SqliteStore) -> None:
    later, sooner = T0 + timedelta(days=3), T0 + timedelta(days=2)
    [a] = store.add_holds([new("A", later)], T0)
    [b] = store.add_holds([new("B", sooner)], T0)
    assert store.next_due() == sooner
    assert store.claim_due(T0, 10) == []  # nothing due yet
    claimed = store.claim_due(later, 10)
    assert [h.id for h in claimed] == [b, a] and all(h.attempts == 0 for h in claimed)
    assert store.claim_due(later, 10) == []  # claimed holds are not handed out twice
    assert store.get_hold(a).state is HoldState.DELIVERING  # type: ignore[union-attr]
    store.mark_delivered(a, later)
    assert store.get_hold(a).state is HoldState.DELIVERED and store.hold_content(a) is None  # type: ignore[union-attr]
    assert [e.event for e in store.hold_events(a)] == ["held", "delivered"]


def test_a_crash_between_claim_and_delivery_gives_the_hold_back(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    [a] = store.add_holds([new("A", T0)], T0)
    store.claim_due(T0, 10)
    store.close()
    reopened = SqliteStore(tmp_path / "s.sqlite3")  # the relay starts again
    assert reopened.recover(T0 + timedelta(hours=1)) == 1
    [again] = reopened.claim_due(T0 + timedelta(hours=1), 10)
    assert again.id == a and again.attempts == 1 and reopened.hold_content(a) == b"Subject: x\r\n\r\nbody\r\n"


def test_retry_keeps_only_the_recipients_left(store: SqliteStore) -> None:
    [a] = store.add_holds([new("A", T0, ("x@c.gov.co", "y@c.gov.co"))], T0)
    store.claim_due(T0, 1)
    store.mark_retry(a, T0, T0 + timedelta(minutes=5), "451 try later", ("y@c.gov.co",))
    hold = store.get_hold(a)
    assert hold is not None and hold.recipients == ("y@c.gov.co",) and hold.state is HoldState.WAITING
    assert store.next_due() == T0 + timedelta(minutes=5) and hold.last_error == "451 try later"


def test_moderation_approve_reject_release_delete(store: SqliteStore) -> None:
    [m1, m2] = store.add_holds([new("M", None), new("M", None)], T0)
    [h] = store.add_holds([new("H", T0 + timedelta(days=3))], T0)
    assert store.next_due() == T0 + timedelta(days=3)  # moderation is never due by itself
    with pytest.raises(ValueError, match="moderation"):
        store.release(m1, T0, "ops")  # release is for timed holds; moderation needs approve
    assert store.approve(m1, T0, "comunicaciones").state is HoldState.WAITING
    assert store.next_due() == T0
    rejected = store.reject(m2, T0, "comunicaciones", "No es una comunicación institucional")
    assert rejected.state is HoldState.REJECTED and store.hold_content(m2) is None
    with pytest.raises(ValueError):
        store.approve(m2, T0, "x")  # a refused message cannot come back
    assert store.release(h, T0, "ops").next_attempt == T0
    assert store.delete(h, T0, "ops").state is HoldState.DELETED
    with pytest.raises(KeyError):
        store.approve("nope", T0, "x")


def test_list_filters(store: SqliteStore) -> None:
    store.add_holds([new("A", T0, ("maria@c.gov.co",)), new("A", T0 + timedelta(days=1), ("pedro@c.gov.co",))], T0)
    store.add_holds([new("B", None, ("jorge@c.gov.co",), sender="ana@c.gov.co")], T0)
    assert len(store.list_holds(HoldFilter())) == 3
    assert [h.id for h in store.list_holds(HoldFilter(recipient="MARIA@c.gov.co"))] == ["A-1"]
    assert [h.id for h in store.list_holds(HoldFilter(reason="moderate"))] == ["B-1"]
    assert [h.id for h in store.list_holds(HoldFilter(sender="ana@c.gov.co"))] == ["B-1"]
    assert [h.id for h in store.list_holds(HoldFilter(due_before=T0 + timedelta(hours=1)))] == ["A-1"]


def test_remove_undoes_an_add(store: SqliteStore) -> None:
    ids = store.add_holds([new("A", T0)], T0)
    store.remove(ids)
    assert store.get_hold(ids[0]) is None and store.count_holds() == 0


def test_outbox(store: SqliteStore) -> None:
    store.add_notices([("luis@c.gov.co", "hold", "Retenido", "texto")], T0)
    [n] = store.due_notices(T0, 10)
    store.notice_retry(n.id, T0 + timedelta(minutes=1))
    assert store.due_notices(T0, 10) == [] and store.next_notice_due() == T0 + timedelta(minutes=1)
    store.notice_done(n.id)
    assert store.next_notice_due() is None


def test_audit_query_by_rule_and_time(store: SqliteStore) -> None:
    store.add_audit([
        AuditEntry(T0, "Q1", "reject", "550 5.7.1 x", "a@b", 1, "a@b", "10.0.0.1",
                   (("mass-list-bcc-only", "Circular 005-20", "reject"),)),
        AuditEntry(T0 + timedelta(hours=1), "Q2", "deliver", "250 2.0.0 Ok", "c@d", 2, None, None, ()),
    ])
    assert [e.queue_id for e in store.query_audit(rule="mass-list-bcc-only")] == ["Q1"]
    assert [e.queue_id for e in store.query_audit(since=T0 + timedelta(minutes=1))] == ["Q2"]
    assert store.query_audit(verdict="reject")[0].rules == (("mass-list-bcc-only", "Circular 005-20", "reject"),)


def test_inventory_keeps_first_and_last_seen(store: SqliteStore) -> None:
    account = SocialAccount("facebook", "nicolas.rubio@g.gov.co", "personal", T0, T0)
    store.record_accounts([account])
    store.record_accounts([SocialAccount("facebook", "nicolas.rubio@g.gov.co", "personal",
                                         T0 + timedelta(days=2), T0 + timedelta(days=2))])
    [row] = store.inventory()
    assert (row.first_seen, row.last_seen, row.messages) == (T0, T0 + timedelta(days=2), 2)


def test_migrations_run_once_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    SqliteStore(path).close()
    again = SqliteStore(path)
    assert again.schema_version == 1
    again.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(path)


def test_the_store_is_durable_wal_full_sync(store: SqliteStore) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
