#!/usr/bin/env python3
"""Benchmark: SMTP throughput of the relay against Postfix's own tools, side by side in one run.

    smtp-source -> smtp-sink                      (direct: what the machine can do)
    smtp-source -> bare aiosmtpd -> aiosmtplib -> smtp-sink   (bench/passthrough.py, asyncio and uvloop)
    smtp-source -> relay serve -> smtp-sink       (the relay with a full policy pack)

with a latency probe (end of DATA to reply, p50/p99 at 10 sessions), and with --large 10 the same
for 10 MiB messages beside a bare aiosmtpd sink (msg/s, CPU seconds per message, peak RSS),

and with --milter, a private Postfix (Debian's, started on loopback ports):

    smtp-source -> Postfix -> smtp-sink                   (Postfix alone)
    smtp-source -> Postfix + relay milter -> smtp-sink    (smtpd_milters = the relay)

at 1, 10 and 50 concurrent sessions, one ~5 KB Spanish message per connection (as smtp-source does
by default), staff mail that runs every staff rule of the pack. Prints messages/s, the relay's CPU
seconds per 1,000 messages, its peak RSS, and the ratio relay/direct. Not a test: figures for the
README table. Loopback only; every run sends a fixed number of messages.

    .venv/bin/python bench/smtp_load.py [--pack pasto] [--messages 2000] [--sessions 1,10,50] [--runs 1]
    .venv/bin/python bench/smtp_load.py --large 10 [--large-messages 20]
    .venv/bin/python bench/smtp_load.py --milter     (as root: Postfix runs its daemons as postfix)
    .venv/bin/python bench/smtp_load.py --milter --workers 1,2 --sessions 10,50   (relay milter x1 and x2)
    .venv/bin/python bench/smtp_load.py --workers 1,2 --sessions 10,50 --latency 0   (one and two workers)
    .venv/bin/python bench/smtp_load.py --peers [--milter]   (Haraka nodes=1/2; Postfix + Rspamd milter: bench/peers.py)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
INSTITUTIONS = ROOT.parent / "shared" / "acceptance" / "institutions"
SMTP_SOURCE, SMTP_SINK = "/usr/sbin/smtp-source", "/usr/sbin/smtp-sink"
SENDER = {"pasto": ("raul.chaves@pasto.gov.co", "jorge.benavides@pasto.gov.co"),
          "cancilleria": ("luis.fernandez@cancilleria.gov.co", "pedro.castillo@cancilleria.gov.co"),
          "barrancabermeja": ("laura.pinto@barrancabermeja.gov.co", "pmu@barrancabermeja.gov.co")}
PARAGRAPH = ("Cordial saludo. En atencion a la solicitud radicada la semana pasada, la secretaria remite el "
             "informe de seguimiento del proyecto de atencion al ciudadano, con el cronograma de la jornada "
             "de capacitacion y los documentos del contrato para su revision antes de la reunion del comite.\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_tree(pid: int) -> float:
    """CPU seconds of a process and its children now running (the relay's workers under workers: N)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return cpu_seconds(pid) + sum(cpu_seconds(k) for k in kids if Path(f"/proc/{k}/stat").exists())


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def large_message_file(folder: Path, sender: str, rcpt: str, size: int) -> Path:
    """A report with a PDF attached, as such mail really is: base64 in 76-character lines."""
    import base64

    blob = base64.encodebytes(os.urandom(size * 3 // 4))  # LF: smtp-source sends every line with CRLF
    head = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: Informe anual con anexos\r\nMessage-ID: <big@bench.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{PARAGRAPH}\r\n--b1\r\n"
            "Content-Type: application/pdf; name=\"informe.pdf\"\r\nContent-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"informe.pdf\"\r\n\r\n").encode()
    path = folder / "large.eml"
    path.write_bytes(head.replace(b"\r\n", b"\n") + blob + b"--b1--\n")
    return path


def message_file(folder: Path, sender: str, rcpt: str, size: int) -> Path:
    body = PARAGRAPH * (size // len(PARAGRAPH) + 1)
    text = (f"From: {sender}\nTo: {rcpt}\nSubject: Informe de seguimiento del proyecto\n"
            f"Message-ID: <bench@bench.test>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
            f"{body[:size]}\n")
    path = folder / "message.txt"
    path.write_text(text, encoding="ascii")
    return path


def source(port: int, sessions: int, messages: int, sender: str, rcpt: str, msg: Path) -> float:
    """Send `messages` with smtp-source over `sessions` parallel sessions; wall seconds."""
    started = time.perf_counter()
    done = subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-f", sender, "-t", rcpt,
                           "-F", str(msg), "-M", "bench.test", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(f"smtp-source failed: {done.stderr.strip()[:500]}")
    return elapsed


def start_relay(folder: Path, pack: str, upstream_port: int,
                extra: dict[str, object] | None = None) -> tuple[subprocess.Popen[bytes], int, Path]:
    directory = yaml.safe_load((INSTITUTIONS / f"{pack}.yaml").read_text(encoding="utf-8"))
    directory["internal_networks"] = [*directory.get("internal_networks", []), "127.0.0.0/8"]  # staff mail
    (folder / "directory.yaml").write_text(yaml.safe_dump(directory, allow_unicode=True), encoding="utf-8")
    port = free_port()
    config = {"hostname": "relay.bench", "listen": {"host": "127.0.0.1", "port": port},
              "policy": str(ROOT / "policies" / f"{pack}.yaml"), "directory": str(folder / "directory.yaml"),
              "upstream": f"smtp://127.0.0.1:{upstream_port}", "store": f"sqlite:{folder / 'relay.sqlite3'}",
              "limits": {"max_connections": 200, "max_connections_per_client": None},  # smtp-source: one address
              "log": {"level": "info"}, "workers": 1, **(extra or {})}
    (folder / "relay.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    log = folder / "relay.log"
    profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
    proc = subprocess.Popen([sys.executable, *profile, "-m", "relay", "serve", "--init", "--config",
                             str(folder / "relay.yaml")],
                            cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    wait_port(port)
    return proc, port, log


def log_events(log: Path) -> list[dict[str, Any]]:
    """The relay's JSON log lines (its other output, e.g. a traceback, left out)."""
    return [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]


def start_milter_relay(folder: Path, pack: str, port: int, upstream_port: int,
                       workers: int = 1) -> tuple[subprocess.Popen[bytes], Path]:
    """The relay as a milter only (no SMTP listener), with `workers` processes sharing the milter
    socket; held mail would go to `upstream_port`."""
    directory = yaml.safe_load((INSTITUTIONS / f"{pack}.yaml").read_text(encoding="utf-8"))
    directory["internal_networks"] = [*directory.get("internal_networks", []), "127.0.0.0/8"]  # staff mail
    (folder / "directory.yaml").write_text(yaml.safe_dump(directory, allow_unicode=True), encoding="utf-8")
    config = {"hostname": "relay.bench", "listen": None, "milter": {"listen": f"inet:127.0.0.1:{port}"},
              "policy": str(ROOT / "policies" / f"{pack}.yaml"), "directory": str(folder / "directory.yaml"),
              "upstream": f"smtp://127.0.0.1:{upstream_port}", "store": f"sqlite:{folder / 'milter.sqlite3'}",
              "pid_file": str(folder / "milter.pid"), "log": {"level": "info"}, "workers": workers}
    (folder / "milter.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    log = folder / "milter.log"
    proc = subprocess.Popen([sys.executable, "-m", "relay", "serve", "--init", "--config", str(folder / "milter.yaml")],
                            cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    wait_port(port)
    return proc, log


def milter_rows(args: argparse.Namespace, folder: Path, msg: Path, sender: str, rcpt: str) -> None:
    """Postfix alone (its milter-free listener) against Postfix with the relay as its milter; with
    `--workers 1,2` also Postfix + the relay milter with `workers: 2` (its own Postfix, store and log)."""
    sys.path.insert(0, str(ROOT))
    from tests.e2e.postfix import Postfix

    domain = rcpt.split("@")[1]
    sink_port = free_port()
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([SMTP_SINK, *user, f"127.0.0.1:{sink_port}", "1024"])
    counts = sorted(set(args.workers) | {1})
    chains: dict[int, tuple[Postfix, subprocess.Popen[bytes], Path]] = {}
    try:
        for n in counts:  # one Postfix per relay: each smtpd_milters names its own relay
            (folder / f"milter{n}").mkdir()
            milter_port = free_port()
            postfix = Postfix(milter_port, sink_port, domain, mode="milter", backoff=60, milter_port=milter_port)
            relay, log = start_milter_relay(folder / f"milter{n}", args.pack, milter_port, postfix.reinject_port,
                                            workers=n)
            chains[n] = (postfix, relay, log)
            postfix.start()
        wait_port(sink_port)
        alone_port = chains[1][0].reinject_port
        for postfix, _, _ in chains.values():
            source(postfix.smtpd_port, 1, 20, sender, rcpt, msg)  # warm up
        names = {n: "+milter" if n == 1 else f"+milter x{n}" for n in counts}
        print(f"pack {args.pack}, {args.size} B messages, {args.messages} per row, one message per connection; "
              f"msg/s = accepted by Postfix; load average before: {os.getloadavg()[0]:.2f}")
        print(f"{'sessions':>8} {'Postfix msg/s':>14} " + " ".join(f"{names[n] + ' msg/s':>17}" for n in counts)
              + " " + " ".join(f"{'ratio' + names[n][7:]:>9}" for n in counts)
              + " " + " ".join(f"{'CPU s/1000' + names[n][7:]:>14}" for n in counts)
              + f" {'relay peak RSS MiB':>19}")
        for sessions in (int(s) for s in args.sessions.split(",")):
            count = args.messages if sessions > 1 else max(args.messages // 4, 100)
            alone: list[float] = []
            filtered: dict[int, list[float]] = {n: [] for n in counts}
            cpu: dict[int, list[float]] = {n: [] for n in counts}
            for _ in range(args.runs):
                alone.append(count / source(alone_port, sessions, count, sender, rcpt, msg))
                for n, (postfix, relay, _) in chains.items():
                    before = cpu_tree(relay.pid)
                    filtered[n].append(count / source(postfix.smtpd_port, sessions, count, sender, rcpt, msg))
                    cpu[n].append((cpu_tree(relay.pid) - before) / count * 1000)
            a = statistics.median(alone)
            rates = {n: statistics.median(filtered[n]) for n in counts}
            print(f"{sessions:>8} {a:>14,.0f} " + " ".join(f"{rates[n]:>17,.0f}" for n in counts)
                  + " " + " ".join(f"{rates[n] / a:>9.1%}" for n in counts)
                  + " " + " ".join(f"{statistics.median(cpu[n]):>14.2f}" for n in counts)
                  + f" {peak_rss_mib(chains[1][1].pid):>19.0f}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        for n, (_, _, log) in chains.items():
            decided = [e for e in log_events(log) if e["event"] == "decision"]
            verdicts = dict(collections.Counter(e["verdict"] for e in decided))
            pids = collections.Counter(e.get("pid", 0) for e in decided)
            print(f"relay milter{names[n][7:]} decisions: {verdicts}" + (f"; per worker: {sorted(pids.values())}"
                                                                           if n > 1 else ""))
        if args.peers:  # Postfix + Rspamd milter, in the same series (bench/peers.py)
            from bench import peers
            peers.milter_peer_rows(args, folder, msg, sender, rcpt, sink_port)
    finally:
        for postfix, relay, _ in chains.values():
            relay.send_signal(signal.SIGTERM)
            relay.wait(60)
            postfix.stop()
        sink.terminate()
        sink.wait(5)


def start_passthrough(*flags: str, upstream_port: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "passthrough.py"), "--port", str(port),
                             "--upstream", f"127.0.0.1:{upstream_port}", *flags], cwd=ROOT)
    wait_port(port)
    return proc, port


async def _latency_session(port: int, count: int, sender: str, rcpt: str, data: bytes, out: list[float],
                           interval: float = 0.0, offset: float = 0.0) -> None:
    """One message per connection; the time from the end of DATA to the server's reply. With an
    interval, a new message starts every `interval` seconds (a paced load, below saturation)."""
    import asyncio

    start = time.perf_counter() + offset  # paced sessions are staggered, not all at once
    for n in range(count):
        if interval:
            await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def reply(reader: asyncio.StreamReader = reader) -> bytes:
            while True:
                line = await reader.readline()
                if line[3:4] != b"-":
                    return line

        await reply()
        writer.write(f"EHLO bench.test\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        for _ in range(4):
            await reply()
        started = time.perf_counter()
        writer.write(data)
        line = await reply()
        out.append(time.perf_counter() - started)
        if not line.startswith(b"250"):
            raise RuntimeError(f"latency probe: {line!r}")
        writer.write(b"QUIT\r\n")
        await reply()
        writer.close()


def latency(port: int, sessions: int, messages: int, sender: str, rcpt: str, msg: Path,
            rate: float = 0.0) -> list[float]:
    """End-of-DATA to reply, in seconds, for `messages` sent over `sessions` concurrent sessions
    (as fast as they can, or at `rate` messages per second in all)."""
    import asyncio

    body = msg.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    data = body.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    out: list[float] = []

    async def run() -> None:
        interval = sessions / rate if rate else 0.0
        await asyncio.gather(*(_latency_session(port, messages // sessions, sender, rcpt, data, out, interval,
                                                interval * i / sessions)
                               for i in range(sessions)))

    asyncio.run(run())
    return sorted(out)


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def smtp_rows(args: argparse.Namespace, folder: Path, msg: Path, sender: str, rcpt: str) -> None:
    """smtp-source into each target, side by side in one run; the relay's figures against each."""
    sink_port = free_port()
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    counter = ["-c"] if args.peers else []  # counts delivered messages (mesg=N on its stdout) for the peers
    sink = subprocess.Popen([SMTP_SINK, *user, *counter, f"127.0.0.1:{sink_port}", "1024"],
                            stdout=open(folder / "sink.out", "wb") if args.peers else None)  # noqa: SIM115
    wait_port(sink_port)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports = {"direct": sink_port}
    procs["passthrough"], ports["passthrough"] = start_passthrough(upstream_port=sink_port)
    procs["passthrough uvloop"], ports["passthrough uvloop"] = start_passthrough("--uvloop", upstream_port=sink_port)
    relay, ports["relay"], log = start_relay(folder, args.pack, sink_port)
    procs["relay"] = relay
    multis = {n: f"relay x{n}" for n in args.workers if n > 1}
    multi_logs: dict[str, Path] = {}
    for n, multi in multis.items():  # the same relay with workers: N (its own folder, store and log)
        (folder / f"multi{n}").mkdir()
        procs[multi], ports[multi], multi_logs[multi] = start_relay(folder / f"multi{n}", args.pack, sink_port,
                                                                    {"workers": n})
    peer_logs: dict[str, Path] = {}
    if args.peers:  # Haraka nodes=1 and nodes=2 (bench/peers.py); a missing one is a line, not a failure
        sys.path.insert(0, str(ROOT))
        from bench import peers
        started, missing = peers.start_smtp_peers(folder, sink_port, rcpt.split("@")[1])
        for line in missing:
            print(line)
        for name, (proc, port, peer_log) in started.items():
            procs[name], ports[name], peer_logs[name] = proc, port, peer_log
    sunk = dict.fromkeys(peer_logs, 0)
    try:
        for port in ports.values():
            source(port, 1, 20, sender, rcpt, msg)  # warm up (imports, pools)
        print(f"pack {args.pack}, {args.size} B messages, {args.messages} per row, one message per connection, "
              f"median of {args.runs}; msg/s; load average before: {os.getloadavg()[0]:.2f}")
        names = list(ports)
        print(f"{'sessions':>8} " + " ".join(f"{n:>18}" for n in names)
              + f" {'relay/passthrough':>18} {'relay CPU s/1000':>17} {'passthr. CPU s/1000':>19} "
              f"{'relay RSS MiB':>14}")
        for sessions in (int(s) for s in args.sessions.split(",")):
            count = args.messages if sessions > 1 else max(args.messages // 4, 100)
            rates: dict[str, list[float]] = {n: [] for n in names}
            cpu: dict[str, list[float]] = {"relay": [], "passthrough": [], **{m: [] for m in multis.values()},
                                           **{p: [] for p in peer_logs}}
            for _ in range(args.runs):
                for name in names:
                    proc = procs.get(name)
                    before = cpu_tree(proc.pid) if proc else 0.0
                    sink_before = peers.sink_messages(folder / "sink.out") if name in peer_logs else 0
                    rates[name].append(count / source(ports[name], sessions, count, sender, rcpt, msg))
                    if name in peer_logs:
                        time.sleep(0.2)  # the sink's counter line for the last message
                        sunk[name] += peers.sink_messages(folder / "sink.out") - sink_before
                    if proc and name in cpu:
                        cpu[name].append((cpu_tree(proc.pid) - before) / count * 1000)
            med = {n: statistics.median(v) for n, v in rates.items()}
            print(f"{sessions:>8} " + " ".join(f"{med[n]:>18,.0f}" for n in names)
                  + f" {med['relay'] / med['passthrough']:>18.1%} {statistics.median(cpu['relay']):>17.2f}"
                  f" {statistics.median(cpu['passthrough']):>19.2f} {peak_rss_mib(relay.pid):>14.0f}"
                  + "".join(f"   {m}: {med[m] / med['relay']:.2f}x relay, CPU s/1000 "
                            f"{statistics.median(cpu[m]):.2f}" for m in multis.values())
                  + "".join(f"   {p}: {med[p] / med['relay']:.2f}x relay, CPU s/1000 {statistics.median(cpu[p]):.2f}"
                            for p in peer_logs))
        for rate in ((0.0, args.paced) if args.latency else ()):
            load = f"paced at {rate:.0f} msg/s" if rate else "as fast as they can"
            print(f"\nlatency, end of DATA to reply, {args.latency} messages from 10 sessions, {load} (ms)")
            print(f"{'target':>20} {'p50':>7} {'p99':>7}")
            for name in names:
                got = latency(ports[name], 10, args.latency, sender, rcpt, msg, rate)
                print(f"{name:>20} {pct(got, 0.5):>7.2f} {pct(got, 0.99):>7.2f}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        events = log_events(log)
        decisions = sum(1 for e in events if e["event"] == "decision")
        delivered = sum(1 for e in events if e["event"] == "upstream_reply" and e.get("code") == 250)
        print(f"relay decisions: {decisions}, delivered upstream with 250: {delivered}")
        for multi, multi_log in multi_logs.items():
            events = log_events(multi_log)
            print(f"{multi} decisions: {sum(1 for e in events if e['event'] == 'decision')}, by pid: "
                  f"{dict(collections.Counter(e['pid'] for e in events if e['event'] == 'decision'))}")
        for name, peer_log in peer_logs.items():
            print(f"{name}: smtp-sink counted {sunk[name]} messages delivered during its rows; "
                  f"Haraka's log says it accepted {peers.haraka_accepted(peer_log)} (warm-up and latency included)")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        sink.terminate()
        sink.wait(5)


def dns_rows(args: argparse.Namespace, folder: Path, sender: str) -> None:
    """The relay with DNS checks on (answers cached: one domain, looked up once) against the same
    relay with them off, for staff mail to an outside recipient (the recipient-domain check)."""
    sys.path.insert(0, str(ROOT))
    from tests.dnsserver import DnsServer

    rcpt = "vecino@ciudadano.example"
    msg = message_file(folder, sender, rcpt, args.size)
    dns = DnsServer().start()
    sink_port = free_port()
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([SMTP_SINK, *user, f"127.0.0.1:{sink_port}", "1024"])
    wait_port(sink_port)
    procs, ports = {}, {}
    for name, extra in (("relay", None), ("relay + dns", {"dns": {"nameservers": ["127.0.0.1"], "port": dns.port}})):
        sub = folder / name.replace(" ", "").replace("+", "-")
        sub.mkdir()
        procs[name], ports[name], _ = start_relay(sub, args.pack, sink_port, extra)
    try:
        for port in ports.values():
            source(port, 1, 20, sender, rcpt, msg)
        queries = dns.queries()
        print(f"pack {args.pack}, {args.size} B messages to {rcpt}, {args.messages} per row, median of {args.runs}")
        print(f"{'sessions':>8} {'relay':>10} {'relay + dns':>12} {'ratio':>8} {'CPU s/1000 off':>15} {'on':>6}")
        for sessions in (int(s) for s in args.sessions.split(",")):
            count = args.messages if sessions > 1 else max(args.messages // 4, 100)
            rates: dict[str, list[float]] = {n: [] for n in ports}
            cpu: dict[str, list[float]] = {n: [] for n in ports}
            for run in range(args.runs):
                for name in (list(ports) if run % 2 == 0 else list(reversed(ports))):  # alternate who goes first
                    before = cpu_seconds(procs[name].pid)
                    rates[name].append(count / source(ports[name], sessions, count, sender, rcpt, msg))
                    cpu[name].append((cpu_seconds(procs[name].pid) - before) / count * 1000)
            off, on = statistics.median(rates["relay"]), statistics.median(rates["relay + dns"])
            print(f"{sessions:>8} {off:>10,.0f} {on:>12,.0f} {on / off:>8.1%} "
                  f"{statistics.median(cpu['relay']):>15.2f} {statistics.median(cpu['relay + dns']):>6.2f}")
        print(f"DNS queries that reached the server during the rows: {dns.queries() - queries}")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        sink.terminate()
        sink.wait(5)
        dns.stop()


def large_rows(args: argparse.Namespace, folder: Path, sender: str, rcpt: str) -> None:
    """10 MB messages: smtp-sink, a bare aiosmtpd sink, the passthrough and the relay."""
    msg = large_message_file(folder, sender, rcpt, args.large * 1024 * 1024)
    sink_port = free_port()
    user = ["-u", "postfix"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([SMTP_SINK, *user, f"127.0.0.1:{sink_port}", "1024"])
    wait_port(sink_port)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports = {"smtp-sink": sink_port}
    procs["aiosmtpd sink"], ports["aiosmtpd sink"] = start_passthrough("--sink")
    procs["passthrough"], ports["passthrough"] = start_passthrough(upstream_port=sink_port)
    relay, ports["relay"], _ = start_relay(folder, args.pack, sink_port)
    procs["relay"] = relay
    try:
        print(f"{args.large} MiB messages, {args.large_messages} per row, one per connection, median of {args.runs}")
        print(f"{'target':>14} {'sessions':>8} {'msg/s':>7} {'CPU s/msg':>10} {'peak RSS MiB':>13}")
        for sessions in (1, 10):
            for name, port in ports.items():
                rates, cpu = [], []
                proc = procs.get(name)
                for _ in range(args.runs):
                    before = cpu_seconds(proc.pid) if proc else 0.0
                    rates.append(args.large_messages / source(port, sessions, args.large_messages, sender, rcpt, msg))
                    cpu.append((cpu_seconds(proc.pid) - before) / args.large_messages if proc else 0.0)
                rss = f"{peak_rss_mib(proc.pid):>13.0f}" if proc else f"{'-':>13}"
                cpu_text = f"{statistics.median(cpu):>10.3f}" if proc else f"{'-':>10}"
                print(f"{name:>14} {sessions:>8} {statistics.median(rates):>7.1f} {cpu_text} {rss}")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        sink.terminate()
        sink.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", default="pasto", choices=sorted(SENDER))
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", default="1,10,50")
    parser.add_argument("--size", type=int, default=5 * 1024)
    parser.add_argument("--runs", type=int, default=1, help="median of this many runs per row")
    parser.add_argument("--latency", type=int, default=1000, help="messages for the latency probe (0: none)")
    parser.add_argument("--paced", type=float, default=100.0, help="msg/s of the paced latency probe")
    parser.add_argument("--large", type=int, default=0, metavar="MIB", help="large-message rows of this size instead")
    parser.add_argument("--large-messages", type=int, default=20)
    parser.add_argument("--milter", action="store_true", help="Postfix alone against Postfix + relay milter")
    parser.add_argument("--workers", type=lambda v: [int(n) for n in v.split(",")], default=[1],
                        help="the relay with each of these worker counts, e.g. 1,2 (SMTP and --milter rows)")
    parser.add_argument("--peers", action="store_true",
                        help="add peer rows: Haraka nodes=1/2 (SMTP rows), Postfix + Rspamd milter (--milter)")
    parser.add_argument("--dns", action="store_true", help="the relay with DNS checks on against off (dnsmasq)")
    args = parser.parse_args()
    for tool in (SMTP_SOURCE, SMTP_SINK):
        if not Path(tool).exists():
            print(f"{tool} is missing: it comes with Postfix (./dev test installs it)", file=sys.stderr)
            return 2
    sender, rcpt = SENDER[args.pack]
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        folder = Path(tmp)
        if args.large:
            large_rows(args, folder, sender, rcpt)
            return 0
        if args.dns:
            dns_rows(args, folder, sender)
            return 0
        msg = message_file(folder, sender, rcpt, args.size)
        if args.milter:
            milter_rows(args, folder, msg, sender, rcpt)
        else:
            smtp_rows(args, folder, msg, sender, rcpt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
