"""kill -9 while held mail is being released: after restarts, every held message arrives, none lost.

The one window for a duplicate is between the upstream's 250 for DATA and the store's commit of
"delivered"; at most the holds in flight at each kill (scheduler concurrency) can repeat. The test
counts and reports them.
"""

from __future__ import annotations

import collections
import re
import smtplib
import time
from datetime import datetime
from pathlib import Path

from relay.clock import FileClock
from tests.e2e.harness import PASSWORD, RelayProcess, Sink

LUIS, MARIA = "luis.fernandez@cancilleria.gov.co", "maria.lopez@cancilleria.gov.co"
HOLDS, KILLS, CONCURRENCY = 300, 5, 4


def test_kill_9_during_release_loses_nothing(tmp_path: Path) -> None:
    sink = Sink().start()
    sink.handler.delay = 0.05  # a next hop that takes 50 ms per message: the release takes seconds
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pack="cancilleria",
                         scheduler={"concurrency": CONCURRENCY, "batch": 20})
    relay.use_test_clock(datetime.fromisoformat("2026-11-27T20:00:00-05:00"))  # Friday night
    relay.start()
    try:
        with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
            smtp.login(LUIS, PASSWORD)
            for i in range(HOLDS):
                message = (f"From: {LUIS}\r\nTo: {MARIA}\r\nSubject: Orden {i}\r\nMessage-ID: <orden-{i}@test>\r\n"
                           f"\r\nTexto {i}\r\n").encode()
                code, text = smtp.sendmail(LUIS, [MARIA], message), None
                assert code == {}, text
        FileClock.write(relay.clock_path, datetime.fromisoformat("2026-11-30T08:00:00-05:00"))  # Monday
        kills, progress = 0, []
        for _ in range(KILLS):
            time.sleep(0.5)
            if relay.proc is None or relay.proc.poll() is not None:
                break
            relay.proc.kill()  # SIGKILL: no clean shutdown, no flush
            relay.proc.wait()
            kills += 1
            progress.append(len(set(originals(sink))))
            relay.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ids = [m for m in originals(sink)]
            if len(set(ids)) >= HOLDS:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        counts = collections.Counter(originals(sink))
        missing = HOLDS - len(counts)
        duplicates = sum(c - 1 for c in counts.values())
        print(f"\n{HOLDS} holds, {kills} kill -9 during release (delivered at each kill: {progress}): "
              f"{missing} lost, {duplicates} duplicated")
        mid_release = [p for p in progress if 0 < p < HOLDS]
        assert len(mid_release) >= 3, f"the kills did not land during the release: {progress}"
        assert missing == 0
        assert duplicates <= kills * CONCURRENCY
    finally:
        relay.stop()
        sink.stop()


def originals(sink: Sink) -> list[str]:
    out = []
    for m in list(sink.messages):
        if m.mail_from in ("<>", ""):
            continue  # hold notices
        found = re.search(rb"Message-ID: <(orden-\d+)@test>", m.content)
        if found:
            out.append(found.group(1).decode())
    return out
