#!/usr/bin/env python3
"""Benchmark: the hold store with 100,000 held messages (SQLite, WAL, synchronous=FULL).

Measures, on one store file: adding holds (one durable transaction each, as the relay does per
message, and in batches), `relay queue list` (first page, a recipient filter), the next due
instant, claiming and marking released holds, and peak RSS (memory must not grow with the queue).
Not a test: figures for the README table.

    .venv/bin/python bench/holds.py [--holds 100000] [--durable-sample 2000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.store import HoldFilter, NewHold, SqliteStore  # noqa: E402

T0 = datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
BODY = b"Subject: Informe\r\nFrom: luis.fernandez@cancilleria.gov.co\r\n\r\n" + b"Texto del informe. " * 270  # ~5 KB


def hold(i: int) -> NewHold:
    due = T0 + timedelta(minutes=i % 5000)
    rcpt = f"persona{i % 3000}@cancilleria.gov.co"
    return NewHold(
        queue_id=f"Q{i:012d}", reason="hold", mail_from="luis.fernandez@cancilleria.gov.co",
        recipients=(rcpt,), content=BODY, deliver_at=due, rule_ids=("right-to-disconnect",),
        cites=("Ley 2088 de 2021",), subject=f"Informe {i}",
        sender_notice_to="luis.fernandez@cancilleria.gov.co", deliver_at_local=due.isoformat())


def timed(label: str, fn, repeat: int = 1) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    elapsed = (time.perf_counter() - started) / repeat
    print(f"{label:<58} {elapsed * 1000:>10.2f} ms")
    return elapsed


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holds", type=int, default=100_000)
    parser.add_argument("--durable-sample", type=int, default=2000, help="holds added one transaction each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-holds-") as tmp:
        store = SqliteStore(Path(tmp) / "holds.sqlite3")
        sample = args.durable_sample
        t = timed(f"add {sample:,} holds, one fsynced transaction each (per message)",
                  lambda: [store.add_holds([hold(i)], T0) for i in range(sample)])
        print(f"{'  -> durable holds per second':<58} {sample / t:>10,.0f}")
        rss_small = rss_mib()
        batch = 1000
        t = timed(f"add {args.holds - sample:,} more in batches of {batch}",
                  lambda: [store.add_holds([hold(i) for i in range(n, min(n + batch, args.holds))], T0)
                           for n in range(sample, args.holds, batch)])
        print(f"{'queue length':<58} {store.count_holds():>10,}")
        timed("next due instant (min over waiting holds)", store.next_due, repeat=100)
        timed("list: first page of 50, earliest due first", lambda: store.list_holds(HoldFilter(limit=50)), repeat=20)
        one = HoldFilter(recipient="persona7@cancilleria.gov.co")
        timed("list: one recipient's holds", lambda: store.list_holds(one), repeat=5)
        timed("list: due before a given instant, first 50",
              lambda: store.list_holds(HoldFilter(due_before=T0 + timedelta(minutes=10), limit=50)), repeat=20)
        released = 0

        def release_batch() -> None:
            nonlocal released
            now = T0 + timedelta(days=10)
            for h in store.claim_due(now, 50):
                store.hold_content(h.id)
                store.mark_delivered(h.id, now)
                released += 1

        t = timed("claim 50 due holds, read each, mark each delivered (x20)", release_batch, repeat=20)
        print(f"{'  -> released holds per second (store side only)':<58} {50 / t:>10,.0f}")
        print(f"{'peak RSS after the small sample / at the end':<58} {rss_small:>7.0f} / {rss_mib():.0f} MiB")
        print(f"{'store file size':<58} {(Path(tmp) / 'holds.sqlite3').stat().st_size / 2**20:>10,.0f} MiB")
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
