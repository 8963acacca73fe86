"""Both stores: hold ids stay unique when an MTA reuses a queue id (short Postfix queue ids repeat),
and the auto-reply grace period (take_once) is kept across restarts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from relay.store import SqliteStore, Store
from tests.test_store import T0, new, store  # noqa: F401 - the two-backend fixture


def test_a_repeated_queue_id_gets_new_hold_ids(store: Store) -> None:  # noqa: F811
    first = store.add_holds([new("4ZK3C1", T0 + timedelta(days=1)), new("4ZK3C1", None)], T0)
    again = store.add_holds([new("4ZK3C1", T0 + timedelta(days=2))], T0)  # the same id, days later
    assert len(set(first + again)) == 3 and first[0] == "4ZK3C1-1"
    assert all(i.startswith("4ZK3C1-") for i in again)
    assert store.get_hold(again[0]).queue_id == "4ZK3C1"  # type: ignore[union-attr]
    assert store.hold_content(first[0]) is not None and store.hold_content(again[0]) is not None


def test_take_once_per_grace_period(store: Store) -> None:  # noqa: F811
    """The auto-reply grace period: once per key per period, kept in the store."""
    day = 86400.0
    assert store.take_once("auto-reply:laura@b.gov.co:web", T0, 90 * day)
    assert not store.take_once("auto-reply:laura@b.gov.co:web", T0 + timedelta(days=89), 90 * day)
    assert store.take_once("auto-reply:efrain@b.gov.co:web", T0 + timedelta(days=1), 90 * day)  # per sender
    assert store.take_once("auto-reply:laura@b.gov.co:web", T0 + timedelta(days=90, seconds=1), 90 * day)
    assert not store.take_once("auto-reply:laura@b.gov.co:web", T0 + timedelta(days=91), 90 * day)
    assert store.take_once("auto-reply:laura@b.gov.co:web", T0 + timedelta(days=91), 0)  # 0: every time
    assert store.take_once("loop-guard:Q1:1", T0, 3600)
    assert not store.take_once("loop-guard:Q1:1", T0, 3600)
    store.give_back("loop-guard:Q1:1")  # the pass it guarded did not happen
    assert store.take_once("loop-guard:Q1:1", T0 + timedelta(seconds=1), 3600)
    store.give_back("loop-guard:never-taken")


def test_the_grace_period_survives_a_restart(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "s.sqlite3")
    assert first.take_once("auto-reply:laura@b.gov.co:web", T0, 3600)
    first.close()
    again = SqliteStore(tmp_path / "s.sqlite3")
    assert not again.take_once("auto-reply:laura@b.gov.co:web", T0 + timedelta(minutes=5), 3600)
    again.close()
