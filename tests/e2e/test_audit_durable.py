"""kill -9 under load (issue 20, finding 6): every message a client heard 250 for, and every
message the upstream received, has its audit row; the row is committed before the 250."""

from __future__ import annotations

import re
import smtplib
import sqlite3
import threading
import time
from pathlib import Path

from tests.e2e.harness import PASSWORD, RelayProcess, Sink

B = "barrancabermeja.gov.co"
LAURA = f"laura.pinto@{B}"
KILLS, WORKERS = 3, 6


def audited(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT queue_id FROM audit")}


def test_every_accepted_and_every_delivered_message_has_its_audit_row_after_kill_9(tmp_path: Path) -> None:
    sink = Sink().start()
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}")
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        count = 0
        while not stop.is_set():
            count += 1
            try:
                with smtplib.SMTP("127.0.0.1", relay.port, timeout=10) as smtp:
                    smtp.login(LAURA, PASSWORD)
                    smtp.mail(LAURA)
                    smtp.rcpt(f"pmu@{B}")
                    code, text = smtp.data(f"From: {LAURA}\r\nTo: pmu@{B}\r\nSubject: informe {n}-{count}\r\n\r\n"
                                           "Cordial saludo.\r\n".encode())
                if code == 250:
                    with lock:
                        accepted.append(re.search(rb"queued as (\w+)", text).group(1).decode())  # type: ignore[union-attr]
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the relay is down: try again once it is back

    relay.start()
    workers = [threading.Thread(target=client, args=(n,)) for n in range(WORKERS)]
    try:
        for w in workers:
            w.start()
        for _ in range(KILLS):
            time.sleep(2.5)
            assert relay.proc is not None
            relay.proc.kill()  # SIGKILL: no flush, no clean shutdown
            relay.proc.wait()
            relay.proc = None
            relay.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
        relay.stop()
        sink.stop()
    rows = audited(tmp_path / "relay.sqlite3")
    delivered = {m.group(1).decode() for r in sink.messages
                 if (m := re.search(rb"X-Relay-Queue-ID: (\w+)", r.content))}
    assert len(accepted) > 50, "enough load to matter"
    assert set(accepted) - rows == set(), f"{len(set(accepted) - rows)} of {len(accepted)} accepted without a row"
    assert delivered - rows == set(), f"{len(delivered - rows)} of {len(delivered)} delivered without a row"
    print(f"{len(accepted)} accepted, {len(delivered)} delivered, {len(rows)} audit rows, {KILLS} kills")
