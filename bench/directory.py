#!/usr/bin/env python3
"""Benchmark: the LDAP directory with 10,000 and 50,000 people on a private OpenLDAP slapd.

For each size, an AD-like tree (tests/ldap_tree.py: users with mail and proxyAddresses, role
groups with nesting, 50 shared mailboxes with delegates, a list holding everyone) is loaded with
slapadd, and a fresh process measures:
- load: the first read (paged searches, 500 a page, + building + writing the snapshot), wall
  clock and the relay process's CPU seconds (steadier on a busy machine);
- refresh: a second read with the running directory as the previous one;
- snapshot: starting from the snapshot file alone (the server down);
- lookups per second: `find()` of random known and unknown addresses;
- peak RSS of that process.
Not a test: figures for the README table. Needs Debian's slapd (./dev test installs it).

    .venv/bin/python bench/directory.py [--people 10000 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def institution(people: int) -> dict[str, Any]:
    roles = ["funcionario", "contratista", "directivo", "jefe_oficina", "secretario_de_despacho", "tic",
             "comunicaciones", "talento_humano"]
    return {
        "institution": "Alcaldía de Prueba",
        "domains": ["prueba.gov.co"],
        "timezone": "America/Bogota",
        "holidays": "CO",
        "working_hours": {d: ["08:00-12:00", "14:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        "people": [{"address": f"persona{i:06d}@prueba.gov.co", "name": f"Nombre{i} Apellido{i % 977} Segundo{i % 89}",
                    "roles": [roles[i % 2]] + ([roles[2 + i % 6]] if i % 10 == 0 else []),
                    **({"timezone": "Europe/Madrid", "holidays": "ES"} if i % 50 == 0 else {})}
                   for i in range(people)],
        "service_mailboxes": [{"address": f"buzon{j:03d}@prueba.gov.co",
                               "delegates": [f"persona{(j * 37 + k) % people:06d}@prueba.gov.co" for k in range(3)]}
                              for j in range(50)],
        "lists": [{"address": "todos@prueba.gov.co", "members": people}],
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(source_path: str, lookups: int) -> dict[str, Any]:
    from relay import ldapdir

    source = ldapdir.source_from_file(source_path)
    cpu0 = _cpu()
    started = time.perf_counter()
    first = ldapdir.load(source)
    load = time.perf_counter() - started
    load_cpu = _cpu() - cpu0
    started = time.perf_counter()
    second = ldapdir.load(source, previous=first)
    refresh = time.perf_counter() - started
    assert second.stale is None
    started = time.perf_counter()
    snapshot = ldapdir.read_snapshot(source.snapshot_path)
    assert snapshot is not None
    from_disk = ldapdir.to_directory(snapshot, stale="bench")
    from_snapshot = time.perf_counter() - started
    people = len(snapshot["people"])
    rng = random.Random(7)
    asks = [f"persona{rng.randrange(people * 2):06d}@prueba.gov.co" for _ in range(lookups)]
    started = time.perf_counter()
    found = sum(from_disk.find(a) is not None for a in asks)
    per_second = lookups / (time.perf_counter() - started)
    del first
    return {"people": people, "load_s": load, "load_cpu_s": load_cpu, "refresh_s": refresh, "snapshot_s": from_snapshot,
            "snapshot_mb": source.snapshot_path.stat().st_size / 1e6, "lookups_per_s": per_second,
            "found": found, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_size(people: int, lookups: int) -> dict[str, Any]:
    from tests.ldap_server import Slapd
    from tests.ldap_tree import build_tree, write_source

    with tempfile.TemporaryDirectory(prefix="bench-ldap-") as tmp:
        root = Path(tmp)
        suffix, ldif, mapping = build_tree("bench", institution(people))
        (root / "slapd").mkdir()
        slapd = Slapd(root / "slapd", [suffix])
        started = time.perf_counter()
        slapd.load({suffix: ldif})
        slapadd = time.perf_counter() - started
        slapd.start()
        try:
            source = write_source(root / "bench-ldap.yaml", slapd.url, suffix, mapping, page_size=500)
            done = subprocess.run([sys.executable, __file__, "--measure", str(source), "--lookups", str(lookups)],
                                  capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            slapd.stop()
    result["slapadd_s"] = slapadd
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, nargs="+", default=[10000, 50000])
    parser.add_argument("--lookups", type=int, default=200000)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.lookups)))
        return 0
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| people | load (s) | load, relay CPU (s) | refresh (s) | start from snapshot (s) | snapshot (MB) "
          "| peak RSS (MB) | lookups/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for people in args.people:
        r = run_size(people, args.lookups)
        print(f"| {r['people']:,} | {r['load_s']:.1f} | {r['load_cpu_s']:.1f} | {r['refresh_s']:.1f} | "
              f"{r['snapshot_s']:.2f} | {r['snapshot_mb']:.1f} | {r['rss_mb']:.0f} | "
              f"{r['lookups_per_s']:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
