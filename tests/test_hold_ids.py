"""Hold ids stay unique when an MTA reuses a queue id (short Postfix queue ids repeat), in both stores."""

from __future__ import annotations

from datetime import timedelta

from relay.store import Store
from tests.test_store import T0, new, store  # noqa: F401 - the two-backend fixture


def test_a_repeated_queue_id_gets_new_hold_ids(store: Store) -> None:  # noqa: F811
    first = store.add_holds([new("4ZK3C1", T0 + timedelta(days=1)), new("4ZK3C1", None)], T0)
    again = store.add_holds([new("4ZK3C1", T0 + timedelta(days=2))], T0)  # the same id, days later
    assert len(set(first + again)) == 3 and first[0] == "4ZK3C1-1"
    assert all(i.startswith("4ZK3C1-") for i in again)
    assert store.get_hold(again[0]).queue_id == "4ZK3C1"  # type: ignore[union-attr]
    assert store.hold_content(first[0]) is not None and store.hold_content(again[0]) is not None
