"""Both stores (SQLite, and PostgreSQL on a real server): durable holds, claims, state changes,
outbox, audit, inventory, migrations; then what only the shared PostgreSQL store promises."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.store import AuditEntry, HoldFilter, HoldState, NewHold, SocialAccount, SqliteStore, Store, StoreError
from relay.store.base import TraceEvent, TraceQuery
from relay.store.postgres import MIGRATIONS as PG_MIGRATIONS
from relay.store.postgres import PostgresStore
from relay.store.sqlite import MIGRATIONS

T0 = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)


def new(queue_id: str, due: datetime | None, rcpts: tuple[str, ...] = ("maria@c.gov.co",),
        sender: str = "luis@c.gov.co") -> NewHold:
    return NewHold(queue_id=queue_id, reason="hold" if due else "moderate", mail_from=sender, recipients=rcpts,
                   content=b"Subject: x\r\n\r\nbody\r\n", deliver_at=due, rule_ids=("right-to-disconnect",),
                   cites=("Ley 2088 de 2021",), subject="x", sender_notice_to=sender)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        made: Store = SqliteStore(tmp_path / "s.sqlite3")
    else:
        made = PostgresStore(request.getfixturevalue("pg_url"))
    yield made
    made.close()


def test_holds_come_due_in_order_and_are_claimed_once(store: Store) -> None:
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


def test_retry_keeps_only_the_recipients_left(store: Store) -> None:
    [a] = store.add_holds([new("A", T0, ("x@c.gov.co", "y@c.gov.co"))], T0)
    store.claim_due(T0, 1)
    store.mark_retry(a, T0, T0 + timedelta(minutes=5), "451 try later", ("y@c.gov.co",))
    hold = store.get_hold(a)
    assert hold is not None and hold.recipients == ("y@c.gov.co",) and hold.state is HoldState.WAITING
    assert store.next_due() == T0 + timedelta(minutes=5) and hold.last_error == "451 try later"


def test_moderation_approve_reject_release_delete(store: Store) -> None:
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


def test_an_approved_copy_waits_for_the_recipients_working_hours(store: Store) -> None:
    """Moderated while the recipient was off work: approval makes it due at their next working
    period, not at once (Ley 2088 de 2021 holds after a moderator's yes too)."""
    back_at_work = T0 + timedelta(hours=12)
    moderated = NewHold(queue_id="W", reason="moderate", mail_from="luis@c.gov.co", recipients=("maria@c.gov.co",),
                        content=b"Subject: x\r\n\r\nbody\r\n", deliver_at=back_at_work,
                        rule_ids=("commercial-content-approval", "right-to-disconnect"), cites=(), subject="x")
    [w] = store.add_holds([moderated], T0)
    hold = store.get_hold(w)
    assert hold is not None and hold.state is HoldState.MODERATION and hold.next_attempt is None
    assert store.next_due() is None and store.claim_due(back_at_work + timedelta(days=1), 10) == []
    approved = store.approve(w, T0 + timedelta(hours=1), "comunicaciones")
    assert approved.state is HoldState.WAITING and approved.next_attempt == back_at_work
    assert store.claim_due(back_at_work - timedelta(minutes=1), 10) == []
    assert [h.id for h in store.claim_due(back_at_work, 10)] == [w]
    [late] = store.add_holds([moderated], T0)  # approved after the recipient is back: due at once
    assert store.approve(late, back_at_work + timedelta(hours=2), "x").next_attempt == back_at_work + timedelta(hours=2)


def test_list_filters(store: Store) -> None:
    store.add_holds([new("A", T0, ("maria@c.gov.co",)), new("A", T0 + timedelta(days=1), ("pedro@c.gov.co",))], T0)
    store.add_holds([new("B", None, ("jorge@c.gov.co",), sender="ana@c.gov.co")], T0)
    assert len(store.list_holds(HoldFilter())) == 3
    assert [h.id for h in store.list_holds(HoldFilter(recipient="MARIA@c.gov.co"))] == ["A-1"]
    assert [h.id for h in store.list_holds(HoldFilter(reason="moderate"))] == ["B-1"]
    assert [h.id for h in store.list_holds(HoldFilter(sender="ana@c.gov.co"))] == ["B-1"]
    assert [h.id for h in store.list_holds(HoldFilter(due_before=T0 + timedelta(hours=1)))] == ["A-1"]


def test_remove_undoes_an_add(store: Store) -> None:
    ids = store.add_holds([new("A", T0)], T0)
    store.remove(ids)
    assert store.get_hold(ids[0]) is None and store.count_holds() == 0


def test_outbox(store: Store) -> None:
    store.add_notices([("luis@c.gov.co", "hold", "Retenido", "texto")], T0)
    [n] = store.due_notices(T0, 10)
    store.notice_retry(n.id, T0 + timedelta(minutes=1))
    assert store.due_notices(T0, 10) == [] and store.next_notice_due() == T0 + timedelta(minutes=1)
    store.notice_done(n.id)
    assert store.next_notice_due() is None


def test_audit_query_by_rule_and_time(store: Store) -> None:
    store.add_audit([
        AuditEntry(T0, "Q1", "reject", "550 5.7.1 x", "a@b", 1, "a@b", "10.0.0.1",
                   (("mass-list-bcc-only", "Circular 005-20", "reject"),)),
        AuditEntry(T0 + timedelta(hours=1), "Q2", "deliver", "250 2.0.0 Ok", "c@d", 2, None, None, ()),
    ])
    assert [e.queue_id for e in store.query_audit(rule="mass-list-bcc-only")] == ["Q1"]
    assert [e.queue_id for e in store.query_audit(since=T0 + timedelta(minutes=1))] == ["Q2"]
    assert store.query_audit(verdict="reject")[0].rules == (("mass-list-bcc-only", "Circular 005-20", "reject"),)


def test_inventory_keeps_first_and_last_seen(store: Store) -> None:
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
    assert again.schema_version == len(MIGRATIONS)
    again.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version VALUES (99)")
    with pytest.raises(StoreError, match="newer"):
        SqliteStore(path)


def test_the_store_is_durable_wal_full_sync(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_notice_may_carry_a_held_copy_to_attach(store: Store) -> None:
    store.add_notices([("a@c.gov.co", "moderation-request", "s", "t", "Q-1"), ("b@c.gov.co", "hold", "s", "t")], T0)
    found = sorted(store.due_notices(T0, 10), key=lambda n: n.to)
    assert [(n.to, n.attach) for n in found] == [("a@c.gov.co", "Q-1"), ("b@c.gov.co", "")]


def test_who_decided_and_when_is_kept(store: Store) -> None:
    [m, d] = store.add_holds([new("M", None), new("D", None)], T0)
    assert store.get_hold(m).decision == "" and store.get_hold(m).decided_at is None  # type: ignore[union-attr]
    store.approve(m, T0 + timedelta(hours=1), "yanet.bastidas")
    store.claim_due(T0 + timedelta(hours=2), 10)
    store.mark_delivered(m, T0 + timedelta(hours=2))
    hold = store.get_hold(m)
    assert hold is not None and hold.state is HoldState.DELIVERED  # delivered after, the decision stays
    assert (hold.decision, hold.decided_by, hold.decided_at) == ("approved", "yanet.bastidas", T0 + timedelta(hours=1))
    store.delete(d, T0, "ops")
    [listed] = store.list_holds(HoldFilter(states=(HoldState.DELETED,)))
    assert (listed.decision, listed.decided_by) == ("deleted", "ops")


def test_a_sender_withdraws_a_waiting_or_moderated_copy(store: Store) -> None:
    [m] = store.add_holds([new("M", None)], T0)
    [h] = store.add_holds([new("H", T0 + timedelta(days=2))], T0)
    for hold_id in (m, h):
        done = store.withdraw(hold_id, T0, "luis@c.gov.co")
        assert done.state is HoldState.WITHDRAWN and done.decision == "withdrawn"
        assert store.hold_content(hold_id) is None
        assert [e.event for e in store.hold_events(hold_id)] == ["held", "withdrawn"]
    assert store.next_due() is None and store.claim_due(T0 + timedelta(days=3), 10) == []
    with pytest.raises(ValueError, match="withdrawn"):
        store.approve(m, T0, "ops")


def test_moderation_expires_after_the_period_oldest_first(store: Store) -> None:
    [old] = store.add_holds([new("OLD", None)], T0)
    [young] = store.add_holds([new("YOUNG", None)], T0 + timedelta(days=5))
    [timed] = store.add_holds([new("T", T0 + timedelta(days=30))], T0)  # a timed hold never expires
    now = T0 + timedelta(days=7, minutes=1)
    expired = store.expire_moderation(now, now - timedelta(days=7), 100)
    assert [h.id for h in expired] == [old] and expired[0].state is HoldState.EXPIRED
    assert store.hold_content(old) is None and store.get_hold(young).state is HoldState.MODERATION  # type: ignore[union-attr]
    assert store.get_hold(timed).state is HoldState.WAITING  # type: ignore[union-attr]
    assert store.expire_moderation(now, now - timedelta(days=7), 100) == []  # once


def test_an_old_store_gains_the_decision_columns(tmp_path: Path) -> None:
    """A store made by the previous relay (schema 2), with a hold in it, opens and keeps working."""
    path = tmp_path / "s.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for version, script in enumerate(MIGRATIONS[:2], start=1):
            db.executescript(script)
            db.execute("INSERT INTO schema_version VALUES (?)", (version,))
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO holds (id, queue_id, reason, state, mail_from, recipients, created_at, rule_ids, "
                   "cites) VALUES ('Q-1', 'Q', 'moderate', 'moderation', 'a@c.gov.co', '[\"b@c.gov.co\"]', 0, "
                   "'[]', '[]')")
    store = SqliteStore(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.approve("Q-1", T0, "ops").decided_by == "ops"
    store.close()


# -- PostgreSQL only: several relays on one store ---------------------------------------------------

def test_two_relays_claiming_at_once_never_get_the_same_hold(pg_url: str) -> None:
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        for batch in range(10):
            first.add_holds([new(f"Q{batch}-{i}", T0) for i in range(50)], T0)
        claimed: list[list[str]] = [[], []]

        def claim(store: PostgresStore, into: list[str]) -> None:
            while batch := store.claim_due(T0, 7):
                into.extend(h.id for h in batch)

        threads = [threading.Thread(target=claim, args=(s, c)) for s, c in zip((first, second), claimed, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        everything = claimed[0] + claimed[1]
        assert len(everything) == 500 and len(set(everything)) == 500  # each hold exactly once
        assert claimed[0] and claimed[1]  # both took part
    finally:
        first.close()
        second.close()


def test_a_dead_relays_claims_are_taken_over_when_the_lease_runs_out(pg_url: str) -> None:
    dying, survivor = PostgresStore(pg_url, lease=60), PostgresStore(pg_url, lease=60)
    try:
        [a] = dying.add_holds([new("A", T0)], T0)
        [claimed] = dying.claim_due(T0, 10)
        assert claimed.id == a
        assert survivor.claim_due(T0 + timedelta(seconds=30), 10) == []  # still leased
        assert survivor.recover(T0 + timedelta(seconds=30)) == 0  # a live claim is not recovered at start
        assert survivor.next_due() == T0 + timedelta(seconds=60)  # the scheduler wakes when it runs out
        [taken] = survivor.claim_due(T0 + timedelta(seconds=61), 10)
        assert taken.id == a and taken.attempts == 1
        survivor.mark_delivered(a, T0 + timedelta(seconds=62))
        assert survivor.claim_due(T0 + timedelta(hours=1), 10) == []
    finally:
        dying.close()
        survivor.close()


def test_notices_are_leased_too(pg_url: str) -> None:
    first, second = PostgresStore(pg_url, lease=60), PostgresStore(pg_url, lease=60)
    try:
        first.add_notices([("luis@c.gov.co", "hold", "Retenido", "texto")], T0)
        assert len(first.due_notices(T0, 10)) == 1
        assert second.due_notices(T0, 10) == []  # the other relay does not send it too
        assert len(second.due_notices(T0 + timedelta(seconds=61), 10)) == 1  # unless the first died
    finally:
        first.close()
        second.close()


def test_a_hold_added_by_one_relay_wakes_the_others(pg_url: str) -> None:
    adder, listener = PostgresStore(pg_url), PostgresStore(pg_url)
    woken = threading.Event()
    try:
        listener.listen(woken.set)
        adder.add_holds([new("A", T0)], T0)
        assert woken.wait(10)
        woken.clear()
        [m] = adder.add_holds([new("M", None)], T0)
        woken.clear()
        adder.approve(m, T0, "comunicaciones")
        assert woken.wait(10)
    finally:
        adder.close()
        listener.close()


def test_postgres_migrations_run_once_and_a_newer_schema_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    again = PostgresStore(pg_url)
    assert again.schema_version == len(PG_MIGRATIONS)
    again._run(again._pool.execute("INSERT INTO schema_version VALUES (99)"))
    again.close()
    with pytest.raises(StoreError, match="newer"):
        PostgresStore(pg_url)


def test_an_unreachable_postgres_is_a_clear_store_error() -> None:
    with pytest.raises(StoreError, match="store:"):
        PostgresStore("postgresql://relay@127.0.0.1:1/relay", timeout=3)


def test_sending_rate_counters(store: Store) -> None:
    hour = T0.replace(minute=0)
    assert store.rate_take("sender:luis@c.gov.co", hour, 3, 5) == 3
    assert store.rate_take("sender:luis@c.gov.co", hour, 3, 5) is None  # would pass 5: nothing taken
    assert store.rate_take("sender:luis@c.gov.co", hour, 2, 5) == 5
    assert store.rate_take("sender:ana@c.gov.co", hour, 5, 5) == 5  # per sender
    assert store.rate_take("sender:luis@c.gov.co", hour + timedelta(hours=1), 5, 5) == 5  # a new window


def test_several_windows_are_taken_together_or_not_at_all(store: Store) -> None:
    """An hourly and a daily limit: a message one limit refuses counts against neither, and the
    hourly counter's new windows never drop the daily one."""
    day, hour = T0.replace(hour=0, minute=0), T0.replace(minute=0)

    def takes(at_hour: datetime) -> list[tuple[str, datetime, int]]:
        return [("sender:luis@c.gov.co:3600", at_hour, 6), ("sender:luis@c.gov.co:86400", day, 8)]

    assert store.rate_take_all(takes(hour), 3) is None
    assert store.rate_take_all(takes(hour), 4) == 0  # the hour would pass 6: nothing taken
    later = hour + timedelta(hours=1)
    assert store.rate_take_all(takes(later), 3) is None  # a new hour; the day is at 6
    assert store.rate_take_all(takes(later), 3) == 1  # the day would pass 8: the hour keeps 3
    assert store.rate_take_all(takes(later), 2) is None  # hour 5, day 8: the day exactly full
    assert store.rate_take_all(takes(later + timedelta(hours=1)), 1) == 1  # the day is still full
    assert store.rate_take_all([], 5) is None


def test_shared_rate_counter_is_exact_under_concurrency(pg_url: str) -> None:
    stores = [PostgresStore(pg_url), PostgresStore(pg_url)]
    taken: list[int] = []
    taken_all: list[int] = []

    def take(store: PostgresStore) -> None:
        for _ in range(100):
            if store.rate_take("sender:x@c.gov.co", T0, 1, 150) is not None:
                taken.append(1)
            if store.rate_take_all([("sender:y@c.gov.co:60", T0, 120), ("sender:y@c.gov.co:3600", T0, 90)], 1) is None:
                taken_all.append(1)

    threads = [threading.Thread(target=take, args=(s,)) for s in stores for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(taken) == 150  # 400 attempts across two relays, exactly the limit granted
        assert len(taken_all) == 90  # the tighter of two counters taken together, exactly
    finally:
        for s in stores:
            s.close()


def test_outbox_backlog_and_moderation_counts_for_metrics(store: Store) -> None:
    assert store.outbox_stats() == (0, None) and store.moderation_counts() == {}
    store.add_notices([("luis@c.gov.co", "hold", "Retenido", "texto")], T0)
    store.add_notices([("ana@c.gov.co", "hold", "Retenido", "texto")], T0 + timedelta(minutes=5))
    assert store.outbox_stats() == (2, T0)
    first = min(n.id for n in store.due_notices(T0 + timedelta(minutes=5), 10))
    store.notice_done(first)
    assert store.outbox_stats() == (1, T0 + timedelta(minutes=5))
    [m1, m2, m3] = store.add_holds([new("M", None), new("M", None), new("M", None)], T0)
    store.approve(m1, T0, "a")
    store.approve(m2, T0, "a")
    store.reject(m3, T0, "a", "no")
    store.release(m1, T0, "a")  # approved, so waiting: release is allowed
    assert store.moderation_counts() == {"approved": 2, "rejected": 1, "released": 1}


def test_the_message_trace_is_searchable_and_purged_by_age(store: Store) -> None:
    """Issue 27: the audit trail keeps recipients, subject and Message-ID; trace events are written
    with the decision; a search by sender (or login), recipient, Message-ID, queue id and dates finds
    the message; retention deletes what is older than the cut, never an open hold."""
    t0 = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)
    entries = [AuditEntry(at=t0 + timedelta(minutes=n), queue_id=f"T{n}", verdict="deliver", reply="250 2.0.0",
                          mail_from=sender, recipients=len(rcpts), login=login, client_ip="127.0.0.1",
                          rcpt_to=rcpts, subject=f"Asunto {n}", message_id=f"<m{n}@c.gov.co>")
               for n, (sender, login, rcpts) in enumerate([
                   ("luis@c.gov.co", "luis@c.gov.co", ("Maria@c.gov.co", "ana@c.gov.co")),
                   ("prensa@c.gov.co", "luis@c.gov.co", ("beto@gmail.com",)),
                   ("otra@c.gov.co", None, ("ana@c.gov.co",))])]
    store.add_audit(entries, trace=[TraceEvent("T0", t0 + timedelta(seconds=1), "delivered", "250 2.0.0 Ok")])

    def found(**query: object) -> list[str]:
        return [e.queue_id for e in store.search_audit(TraceQuery(**query))]  # type: ignore[arg-type]

    assert found(sender="LUIS@c.gov.co") == ["T1", "T0"]  # the sender or the login; newest first
    assert found(recipient="maria@C.gov.co") == ["T0"]
    assert found(message_id="m2@c.gov.co") == found(message_id="<m2@c.gov.co>") == ["T2"]
    assert found(queue_id="T1") == ["T1"]
    assert found(since=t0 + timedelta(minutes=1), until=t0 + timedelta(minutes=2)) == ["T1"]
    # a page of the trace: limit after offset, and the count of all that match
    assert found(limit=2) == ["T2", "T1"] and found(limit=2, offset=2) == ["T0"] and found(offset=3) == []
    assert store.count_audit(TraceQuery()) == 3 and store.count_audit(TraceQuery(sender="luis@c.gov.co")) == 2
    assert store.count_audit(TraceQuery(recipient="ana@c.gov.co", limit=1)) == 2
    [entry] = store.search_audit(TraceQuery(queue_id="T0"))
    assert entry.rcpt_to == ("Maria@c.gov.co", "ana@c.gov.co") and entry.subject == "Asunto 0"
    assert [(e.event, e.detail) for e in store.trace_events("T0")] == [("delivered", "250 2.0.0 Ok")]
    [open_id] = store.add_holds([new("T9", t0 + timedelta(days=1))], t0)
    gone = store.purge_before(t0 + timedelta(minutes=1, seconds=30))
    assert gone["audit"] == 2 and gone["trace_events"] == 1
    assert found() == ["T2"] and store.get_hold(open_id) is not None


def test_the_moderation_list_searches_filters_counts_and_pages(store: Store) -> None:
    """Issue 26 (web): by rule, by a part of the sender, recipient, subject or id, by when stored;
    counted without a cap and read page by page, awaiting moderation first then oldest first."""
    holds = []
    for n in range(7):
        made = NewHold(queue_id=f"Q{n}", reason="moderate" if n % 2 else "hold",
                       mail_from=f"sender{n}@c.gov.co", recipients=(f"rcpt{n}@c.gov.co", "all@c.gov.co"),
                       content=b"Subject: x\r\n\r\nbody\r\n", deliver_at=None if n % 2 else T0 + timedelta(days=1),
                       rule_ids=("commercial-content-approval",) if n % 2 else ("right-to-disconnect",),
                       cites=("c",), subject=f"Asunto {n} 100%_off")
        [hold_id] = store.add_holds([made], T0 + timedelta(hours=n))
        holds.append(hold_id)
    every = HoldFilter(order="queue")
    assert store.count_matching(every) == 7
    ordered = [h.id for h in store.list_holds(every)]
    assert ordered == [holds[i] for i in (1, 3, 5, 0, 2, 4, 6)]
    pages = [[h.id for h in store.list_holds(HoldFilter(order="queue", limit=3, offset=o))] for o in (0, 3, 6, 9)]
    assert pages == [ordered[0:3], ordered[3:6], ordered[6:], []]
    rule = HoldFilter(rule="commercial-content-approval")
    assert store.count_matching(rule) == 3 and {h.id for h in store.list_holds(rule)} == {holds[1], holds[3], holds[5]}
    assert [h.id for h in store.list_holds(HoldFilter(text="SENDER4"))] == [holds[4]]
    assert [h.id for h in store.list_holds(HoldFilter(text="rcpt6@"))] == [holds[6]]
    assert store.count_matching(HoldFilter(text="all@c.gov")) == 7
    assert [h.id for h in store.list_holds(HoldFilter(text="asunto 2"))] == [holds[2]]
    assert store.count_matching(HoldFilter(text="100%_")) == 7 and store.count_matching(HoldFilter(text="0%x")) == 0
    assert store.count_matching(HoldFilter(text="q_")) == 0  # _ is a character, not a wildcard
    window = HoldFilter(since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=4))
    assert [h.id for h in store.list_holds(window)] == [holds[2], holds[3]]
    both = HoldFilter(rule="right-to-disconnect", since=T0 + timedelta(hours=3), reason="hold")
    assert store.count_matching(both) == 2
    store.approve(holds[1], T0 + timedelta(hours=9), "yanet")
    assert store.count_matching(HoldFilter(states=(HoldState.MODERATION,))) == 2
