#!/usr/bin/env python3
"""Where the relay's CPU goes per message: py-spy samples a running relay under smtp-source load.

    smtp-source -> relay serve (SMTP, Pasto pack) -> smtp-sink
    smtp-source -> Postfix -> relay milter -> Postfix -> smtp-sink      (--milter)

py-spy (dev extra) records every thread of the relay process without stopping it (--nonblocking)
while a fixed number of messages goes through; each sample is put in one bucket by the innermost
frame that belongs to a known part of the relay (logging before engine before protocol...), and
the relay's CPU per message (from /proc) is split in the buckets' proportions. Not a test: the
figures of the README's profile breakdown. Run as root (py-spy attaches with ptrace).

    .venv/bin/python bench/profile_relay.py [--sessions 10] [--messages 3000] [--milter] [--rate 100]
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import smtp_load
from bench.smtp_load import (
    SENDER,
    SMTP_SINK,
    cpu_seconds,
    free_port,
    message_file,
    source,
    start_milter_relay,
    start_relay,
    wait_port,
)

PY_SPY = Path(sys.executable).with_name("py-spy")

# (bucket, what a frame's "function (file)" contains): the first bucket, walking from the innermost
# frame outwards, whose pattern matches takes the sample
BUCKETS = (
    ("logging", ("structlog/", "relay/logs.py")),
    ("metrics", ("prometheus_client/", "relay/metrics.py")),
    ("audit/store", ("relay/store/", "audit_loop", "_flush_audit", "sqlite3")),
    ("parse", ("relay/message.py", "email/", "relay/addresses.py")),
    ("engine (rules)", ("relay/policy/", "relay/checks.py", "relay/identity.py", "relay/directory.py",
                        "relay/mailauth.py", "relay/hosted.py", "relay/crosscheck.py", "relay/rewrite.py")),
    ("upstream client", ("relay/upstream/", "aiosmtplib/")),
    ("milter codec", ("relay/frontends/milter_codec.py",)),
    ("milter session", ("relay/frontends/milter.py",)),
    ("DATA reader", ("_data", "data_received (relay/frontends/smtp.py", "DataReader", "smtp_DATA")),
    ("SMTP protocol", ("relay/frontends/", "aiosmtpd/")),
    ("dispose (glue)", ("relay/dispose.py", "relay/notices.py", "relay/moderation.py")),
)
# Only when no frame of a part above is on the stack: a socket write under the SMTP replies is the
# protocol's, under the upstream client the client's; what is left is the loop's own work (epoll,
# callbacks, uvloop's transports) and the hand-off to and from the store's threads
FALLBACK = (
    ("thread pool hand-off", ("concurrent/futures/", "threading.py")),
    ("event loop (epoll, callbacks, transports)", ("asyncio/", "selectors.py", "socket.py", "uvloop", "ssl.py")),
)


def bucket(stack: str) -> str:
    frames = stack.split(";")
    for buckets in (BUCKETS, FALLBACK):
        for frame in reversed(frames):
            for name, patterns in buckets:
                if any(p in frame for p in patterns):
                    return name
    return "other"


def record(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
                             "--nonblocking", "--threads", "--full-filenames", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# Innermost frames where a thread waits rather than runs, which py-spy does not always see as idle:
# a pool thread blocked in its queue's get() has `_worker` itself innermost (the wait is in C).
WAITING = ("_worker (", "idle")


def waiting(stack: str) -> bool:
    inner = stack.rsplit(";", 1)[-1]
    return inner.startswith("idle") or (inner.startswith(WAITING[0]) and "concurrent/futures/thread.py" in inner)


def breakdown(raw: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit() and not waiting(stack):
            counts[bucket(stack)] += int(n)
    return counts


def leaves(raw: Path, top: int) -> list[tuple[str, int]]:
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit() and not waiting(stack):
            counts[stack.split(";")[-1]] += int(n)
    return counts.most_common(top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pack", default="pasto", choices=sorted(SENDER))
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--size", type=int, default=5 * 1024)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--milter", action="store_true", help="the relay as Postfix's milter")
    parser.add_argument("--top", type=int, default=0, help="also the N busiest innermost frames")
    parser.add_argument("--keep", type=Path, help="copy py-spy's raw (collapsed) stacks here")
    parser.add_argument("--root", type=Path, help="run the relay of another checkout (before/after a change)")
    parser.add_argument("--no-spy", action="store_true", help="only the rate and CPU per message")
    args = parser.parse_args()
    sender, rcpt = SENDER[args.pack]
    if args.root:
        smtp_load.ROOT = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="relay-profile-") as tmp:
        folder = Path(tmp)
        msg = message_file(folder, sender, rcpt, args.size)
        sink_port = free_port()
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        sink = subprocess.Popen([SMTP_SINK, *user, f"127.0.0.1:{sink_port}", "1024"])
        wait_port(sink_port)
        postfix = None
        try:
            if args.milter:
                from tests.e2e.postfix import Postfix

                milter_port = free_port()
                postfix = Postfix(milter_port, sink_port, rcpt.split("@")[1], mode="milter", backoff=60,
                                  milter_port=milter_port)
                relay, _log = start_milter_relay(folder, args.pack, milter_port, postfix.reinject_port)
                postfix.start()
                port = postfix.smtpd_port
            else:
                relay, port, _log = start_relay(folder, args.pack, sink_port)
            source(port, 1, 50, sender, rcpt, msg)  # warm up
            raw = folder / "profile.txt"
            spy = None if args.no_spy else record(relay.pid, raw, args.rate)
            time.sleep(1.0)  # py-spy attached
            before = cpu_seconds(relay.pid)
            seconds = source(port, args.sessions, args.messages, sender, rcpt, msg)
            cpu_ms = (cpu_seconds(relay.pid) - before) / args.messages * 1000
            path = "milter (Postfix in front)" if args.milter else "SMTP"
            if spy is None:
                print(f"{path} {smtp_load.ROOT}, {args.sessions} sessions: {args.messages / seconds:,.0f} msg/s, "
                      f"relay CPU {cpu_ms:.2f} ms/msg, load average {os.getloadavg()[0]:.2f}")
                return 0
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=60)
            if not raw.exists():
                print(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
                return 1
            if args.keep:
                args.keep.write_bytes(raw.read_bytes())
            counts = breakdown(raw)
            total = sum(counts.values())
            print(f"{path}, pack {args.pack}, {args.sessions} sessions, {args.messages} messages of {args.size} B: "
                  f"{args.messages / seconds:,.0f} msg/s, relay CPU {cpu_ms:.2f} ms/msg, {total} busy samples, "
                  f"load average {os.getloadavg()[0]:.2f}")
            print(f"{'part':>42} {'share':>7} {'ms/msg':>7}")
            for name, n in counts.most_common():
                print(f"{name:>42} {n / total:>7.1%} {cpu_ms * n / total:>7.3f}")
            for frame, n in leaves(raw, args.top):
                print(f"{n / total:>7.1%}  {frame}")
        finally:
            if postfix is not None:
                postfix.stop()
            if "relay" in locals():
                relay.send_signal(signal.SIGTERM)
                relay.wait(20)
            sink.terminate()
            sink.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
