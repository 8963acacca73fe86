#!/usr/bin/env python3
"""Benchmark: releasing due holds with one and two relay instances on one PostgreSQL store.

Seeds N holds due at the same instant into a fresh database on a PostgreSQL server started here
(Debian's packages, loopback), starts K relays (`relay serve`, test clock) sharing it, moves their
clock past the due instant and times until every hold is delivered to Postfix's `smtp-sink`.
Also the same with one relay on SQLite, for reference. Prints the README table rows; not a test.

    .venv/bin/python bench/shared_queue.py [--holds 5000] [--concurrency 4] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.smtp_load import cpu_seconds, free_port, wait_port  # noqa: E402
from relay.clock import TEST_CLOCK_ENV, FileClock  # noqa: E402
from relay.store import HoldState, NewHold, Store, open_store  # noqa: E402
from tests.pg import PostgresServer  # noqa: E402

T0 = datetime.fromisoformat("2026-11-30T07:00:00-05:00")
BODY = b"Subject: Informe\r\nFrom: luis.fernandez@cancilleria.gov.co\r\n\r\n" + b"Texto del informe. " * 270


def seed(store: Store, holds: int) -> None:
    for start in range(0, holds, 1000):
        store.add_holds([NewHold(
            queue_id=f"Q{n:06d}", reason="hold", mail_from="luis.fernandez@cancilleria.gov.co",
            recipients=(f"persona{n % 300}@cancilleria.gov.co",), content=BODY, deliver_at=T0,
            rule_ids=("right-to-disconnect",), cites=("Ley 2191 de 2022",), subject=f"Informe {n}")
            for n in range(start, min(start + 1000, holds))], T0 - timedelta(days=1))


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def run(folder: Path, store_url: str, instances: int, holds: int, concurrency: int,
        sink_port: int) -> tuple[float, float, float]:
    """Seconds until all holds are delivered, the relays' CPU seconds, and the cores the whole
    machine kept busy meanwhile (relays, PostgreSQL, sink)."""
    store = open_store(store_url, folder)
    seed(store, holds)
    clock = folder / "clock.txt"
    FileClock.write(clock, T0 - timedelta(minutes=1))
    procs = []
    for i in range(instances):
        port = free_port()
        config = {"listen": {"host": "127.0.0.1", "port": port}, "policy": str(ROOT / "policies/cancilleria.yaml"),
                  "directory": str(ROOT.parent / "shared/acceptance/institutions/cancilleria.yaml"),
                  "upstream": f"smtp://127.0.0.1:{sink_port}", "store": store_url,
                  "pid_file": str(folder / f"relay{i}.pid"), "log": {"level": "warning"}, "workers": 1,
                  "scheduler": {"concurrency": concurrency, "batch": 50}}
        (folder / f"relay{i}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        command = [sys.executable, "-m", "relay", "serve", "--init", "--config", str(folder / f"relay{i}.yaml")]
        procs.append(subprocess.Popen(command, cwd=ROOT, env={**os.environ, TEST_CLOCK_ENV: str(clock)},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(port)
    cpu_before = sum(cpu_seconds(p.pid) for p in procs)
    busy_before = machine_busy()
    started = time.perf_counter()
    FileClock.write(clock, T0 + timedelta(seconds=1))
    deadline = started + 600
    while store.count_holds((HoldState.WAITING, HoldState.DELIVERING)) and time.perf_counter() < deadline:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
    busy_after = machine_busy()
    cores = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1]) * (os.cpu_count() or 1)
    assert store.count_holds((HoldState.DELIVERED,)) == holds, "not every hold was delivered"
    for p in procs:
        p.terminate()
        p.wait(30)
    store.close()
    return elapsed, cpu, cores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holds", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4, help="scheduler.concurrency of each relay")
    parser.add_argument("--runs", type=int, default=1, help="median of this many runs per row")
    args = parser.parse_args()
    sink_port = free_port()
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(["smtp-sink", *user, "-c", f"127.0.0.1:{sink_port}", "1000"], stdout=subprocess.DEVNULL)
    server = PostgresServer().start()
    rows = []
    try:
        wait_port(sink_port)
        n = 0
        for label, instances, kind in (("1 relay, SQLite", 1, "sqlite"), ("1 relay, PostgreSQL", 1, "pg"),
                                       ("2 relays, one PostgreSQL", 2, "pg")):
            times, cpus, busy = [], [], []
            for _ in range(args.runs):
                n += 1
                with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
                    url = (f"sqlite:{tmp}/relay.sqlite3" if kind == "sqlite"
                           else server.fresh_database(f"bench{os.getpid()}_{n}"))
                    elapsed, cpu, cores = run(Path(tmp), url, instances, args.holds, args.concurrency, sink_port)
                times.append(elapsed)
                cpus.append(cpu)
                busy.append(cores)
            t, c, b = statistics.median(times), statistics.median(cpus), statistics.median(busy)
            rows.append((label, args.holds / t, t, c * 1000 / args.holds, b))
            print(f"{label:<28} {args.holds / t:>8.0f} holds/s  {t:>6.1f} s  "
                  f"relay CPU {c * 1000 / args.holds:.2f} s/1000  machine {b:.2f} cores busy", flush=True)
    finally:
        server.stop()
        sink.terminate()
    print(f"\n| setup ({args.holds:,} holds due at once, concurrency {args.concurrency}) | holds/s | seconds "
          f"| relay CPU s/1000 | cores busy (of {os.cpu_count()}) |")
    print("|---|---:|---:|---:|---:|")
    for label, rate, t, cpu, cores in rows:
        print(f"| {label} | {rate:,.0f} | {t:.1f} | {cpu:.2f} | {cores:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
