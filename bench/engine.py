#!/usr/bin/env python3
"""Benchmark: policy engine decisions per second on a mixed corpus with the largest pack.

Not a test: prints figures for the README table. Runs on one core (one process, no threads).
    .venv/bin/python bench/engine.py [--seconds 5] [--size 5000]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.directory import load_directory  # noqa: E402
from relay.message import Envelope, Submission, parse_message  # noqa: E402
from relay.policy.engine import evaluate  # noqa: E402
from relay.policy.pack import load_pack  # noqa: E402

WORDS = """reunión seguimiento proyecto informe secretaría despacho solicitud trámite plazo documento
contrato comunidad barrio atención ciudadano respuesta radicado memorando oficina jornada
capacitación convocatoria publicación sitio web decreto circular resolución""".split()  # noqa: SIM905
B = "barrancabermeja.gov.co"


def body(size: int, rng: random.Random) -> str:
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < size:
        out.append(rng.choice(WORDS))
    lines = [" ".join(out[i:i + 12]) for i in range(0, len(out), 12)]
    return "\r\n".join(lines)


def corpus(size: int, rng: random.Random) -> list[tuple[Envelope, bytes]]:
    """A mix of the kinds of mail the packs judge: ordinary, mass, forged, webmail, inbound, support."""
    kinds = [
        (f"laura.pinto@{B}", [f"jose{n}@gmail.com" for n in range(1)], f"laura.pinto@{B}", None, f"laura.pinto@{B}"),
        (f"patriciah.fierro@{B}", [f"funcionarios@{B}"], f"patriciah.fierro@{B}", None, f"patriciah.fierro@{B}"),
        (f"laura.pinto@{B}", [f"contratistas@{B}"], f"laura.pinto@{B}", None, f"laura.pinto@{B}"),
        ("laura@gmail.com", ["x@example.org"], f"laura.pinto@{B}", None, "laura@gmail.com"),
        ("ana@gmail.com", [f"pmu@{B}"], None, "209.85.220.41", "ana@gmail.com"),
        (f"laura.pinto@{B}", [f"soportetic@{B}"], f"laura.pinto@{B}", None, f"laura.pinto@{B}"),
        (f"carlos.rueda@{B}", [f"c{n}@{B}" for n in range(30)], f"carlos.rueda@{B}", None, f"carlos.rueda@{B}"),
    ]
    out = []
    for i in range(200):
        mail_from, rcpts, auth, ip, header_from = kinds[i % len(kinds)]
        to = ", ".join(rcpts) if i % 3 else header_from
        text = (f"From: {header_from}\r\nTo: {to}\r\nSubject: Informe {i} de la secretaría\r\n"
                f"Date: Tue, 24 Nov 2026 09:15:00 -0500\r\nMessage-ID: <b{i}@{B}>\r\n"
                f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body(size, rng)}\r\n")
        out.append((Envelope.build(mail_from, rcpts, auth, ip), text.encode()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=5000, help="body size in bytes")
    args = parser.parse_args()
    packs = {p.name: load_pack(p) for p in (ROOT / "policies").glob("*.yaml")}
    name = max(packs, key=lambda n: len(packs[n].rules))
    pack = packs[name]
    directory = load_directory(ROOT.parent / "shared/acceptance/institutions/barrancabermeja.yaml")
    if pack.pack != "barrancabermeja":  # the corpus is written for this institution
        pack = packs["barrancabermeja.yaml"]
    now = datetime.fromisoformat("2026-11-24T10:00:00-05:00")
    items = corpus(args.size, random.Random(7))
    parsed = [Submission(env, parse_message(raw)) for env, raw in items]
    avg = sum(len(raw) for _, raw in items) / len(items)

    def measure(label: str, step) -> None:  # type: ignore[no-untyped-def]
        count, start, deadline = 0, time.perf_counter(), time.perf_counter() + args.seconds
        while time.perf_counter() < deadline and count < 10_000_000:
            step(count % len(items))
            count += 1
        elapsed = time.perf_counter() - start
        print(f"{label:<38} {count / elapsed:>10,.0f} /s  ({count} in {elapsed:.1f} s)")

    print(f"pack {pack.pack} ({len(pack.rules)} rules), {len(items)} messages, mean size {avg:,.0f} bytes")
    measure("engine only (pre-parsed)", lambda i: evaluate(parsed[i], pack, directory, now))
    measure("parse + engine", lambda i: evaluate(Submission(items[i][0], parse_message(items[i][1])),
                                                 pack, directory, now))
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
