#!/usr/bin/env python3
"""Figures for the README's "Faults and hostile input" section (issue 20), against a real relay
process on loopback and a sink. Not a test; each figure is one run.

    .venv/bin/python bench/hostile.py trickle       # how long a byte-a-second command line lives
    .venv/bin/python bench/hostile.py auth          # AUTH guesses one address gets in a minute
    .venv/bin/python bench/hostile.py rss [--count 25 --mib 24]   # peak RSS, big messages at once
    .venv/bin/python bench/hostile.py rcpts [--rcpts 1000]        # relay CPU for one 1,000-RCPT envelope
"""

from __future__ import annotations

import argparse
import base64
import smtplib
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.harness import RelayProcess, Sink

B = "barrancabermeja.gov.co"
LAURA = f"laura.pinto@{B}"


def proc_status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def trickle(relay: RelayProcess) -> None:
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        s.recv(1024)
        s.settimeout(1.0)
        start, got = time.monotonic(), b""
        for byte in b"EHLO trickle.example.org" * 100:
            try:
                s.sendall(bytes([byte]))
                got += s.recv(1024)
            except TimeoutError:
                continue
            except OSError:
                break
            if not got or b"421" in got:
                break
    idle = relay.config["limits"]["idle_timeout"]
    print(f"trickle: idle_timeout {idle} s, cut after {time.monotonic() - start:.1f} s with {got.strip()!r}")


def auth(relay: RelayProcess) -> None:
    start, guesses, refused = time.monotonic(), 0, 0
    while time.monotonic() - start < 60:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=60) as smtp:
            smtp.ehlo("guess.example.org")
            while time.monotonic() - start < 60:
                blob = base64.b64encode(f"\0{LAURA}\0guess-{guesses}".encode()).decode()
                code, _ = smtp.docmd("AUTH", "PLAIN " + blob)
                if code == 535 or (code == 421 and guesses < 100 and not refused):
                    guesses += 1
                if code == 421:
                    refused += 1
                    break
        time.sleep(0.5)
    print(f"auth: {guesses} passwords tried in 60 s from one address (then 421 until the window passes)")


def rss(relay: RelayProcess, count: int, mib: int) -> None:
    assert relay.proc is not None
    line = b"Texto de relleno para un anexo largo, linea de prueba sin nada especial.\r\n"
    head = f"From: ana@example.org\r\nTo: pmu@{B}\r\nSubject: grande\r\n\r\n".encode()
    body = head + line * (mib * 1024 * 1024 // len(line))
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=60) as smtp:
        smtp.sendmail("ana@example.org", [f"pmu@{B}"], head + line)
    before = proc_status(relay.proc.pid, "VmRSS")
    start = time.monotonic()

    failed: list[str] = []

    def send() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", relay.port, timeout=600) as smtp:
                smtp.sendmail("ana@example.org", [f"pmu@{B}"], body)
        except (OSError, smtplib.SMTPException) as error:
            failed.append(repr(error))

    threads = [threading.Thread(target=send) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peak = proc_status(relay.proc.pid, "VmHWM")
    for line in relay.log().splitlines():
        if '"level": "warning"' in line or '"level": "error"' in line or '"timeout"' in line:
            print(line[:300])
    print("failed:", failed)
    print(f"rss: {count} x {mib} MiB at once: RSS {before:.0f} MiB before, peak {peak:.0f} MiB, "
          f"{time.monotonic() - start:.1f} s, budget {relay.config['limits'].get('memory_budget', 'default')}")


def rcpts(relay: RelayProcess, count: int) -> None:
    assert relay.proc is not None
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=600) as smtp:
        smtp.login(LAURA, "clave-de-prueba")
        before = cpu_seconds(relay.proc.pid)
        start = time.monotonic()
        smtp.mail(LAURA)
        for n in range(count):
            smtp.rcpt(f"persona{n}@example.org")
        smtp.rset()
    print(f"rcpts: {count} RCPTs: {cpu_seconds(relay.proc.pid) - before:.2f} CPU s in the relay, "
          f"{time.monotonic() - start:.1f} s wall")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["trickle", "auth", "rss", "rcpts"])
    parser.add_argument("--count", type=int, default=25)
    parser.add_argument("--mib", type=int, default=24)
    parser.add_argument("--rcpts", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=None, help="idle_timeout (default: 5 s; 300 s for rss)")
    args = parser.parse_args()
    sink = Sink().start()
    with tempfile.TemporaryDirectory() as tmp:
        idle = args.idle or (300 if args.what == "rss" else 5)
        limits: dict[str, object] = {"idle_timeout": idle, "max_recipients": max(1000, args.rcpts),
                                     "max_connections_per_client": None if args.what == "rss" else 20}
        relay = RelayProcess(Path(tmp), f"smtp://127.0.0.1:{sink.port}", limits=limits,
                             log={"level": "info"}).start()
        try:
            if args.what == "trickle":
                trickle(relay)
            elif args.what == "auth":
                auth(relay)
            elif args.what == "rss":
                rss(relay, args.count, args.mib)
            else:
                rcpts(relay, args.rcpts)
        finally:
            relay.stop()
            sink.strict = False
            sink.stop()


if __name__ == "__main__":
    main()
