"""kill -9 five times during a 10,000-message load through Postfix (content_filter), holds mixed in.

Postfix queues each message, then hands it to the relay (content_filter); the relay is killed with
SIGKILL five times while it works and restarted. Afterwards every message Postfix accepted must
arrive at the sink, whole (held ones once Monday 08:00 comes), and a message may arrive twice only
if it was in flight at a kill: the relay had it delivered (or fsynced as a hold) but died before
telling Postfix `250`, so Postfix sent it again. The duplicates are counted and reported.
"""

from __future__ import annotations

import email
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from relay.clock import FileClock
from tests.e2e.harness import RelayProcess, Sink
from tests.e2e.postfix import Postfix
from tests.e2e.test_milter import connect

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/postfix").exists(), reason="Postfix is installed by ./dev test")
C = "cancilleria.gov.co"
FRIDAY_NIGHT = datetime.fromisoformat("2026-11-27T20:00:00-05:00")
MONDAY_0800 = datetime.fromisoformat("2026-11-30T08:00:00-05:00")
TOTAL, WORKERS, KILLS = 10_000, 8, 5
CONCURRENCY = 20  # Postfix's default_destination_concurrency_limit: at most this many in flight per kill


def test_kill_9_five_times_under_10000_messages_loses_nothing(tmp_path: Path) -> None:
    sink = Sink().start()
    relay = RelayProcess(tmp_path, "smtp://127.0.0.1:1", pack="cancilleria", log={"level": "warning"},
                         trust={"xforward_hosts": ["127.0.0.1"]})
    postfix = Postfix(relay.port, sink.port, C, mode="content_filter", backoff=1)
    relay.set_upstream(f"smtp://127.0.0.1:{postfix.reinject_port}")
    relay.use_test_clock(FRIDAY_NIGHT)
    relay.start()
    postfix.start()
    sofia = f"sofia.vargas@{C}"
    # luis is exempt from the right-to-disconnect hold (delivered now); maria is held until Monday
    rcpt_for = {"now": f"luis.fernandez@{C}", "held": f"maria.lopez@{C}"}
    accepted: dict[str, str] = {}
    lock = threading.Lock()

    def client(worker: int) -> None:
        smtp = connect(postfix, sofia)
        for n in range(TOTAL // WORKERS):
            kind = "held" if n % 4 == 0 else "now"
            token = f"k{worker}-{n}-{kind}"
            body = f"From: {sofia}\r\nTo: {rcpt_for[kind]}\r\nSubject: {token}\r\n\r\nTexto {token}.\r\n"
            code, _ = smtp.mail(sofia)
            if code == 250 and smtp.rcpt(rcpt_for[kind])[0] == 250 and smtp.data(body.encode())[0] == 250:
                with lock:
                    accepted[token] = kind
            else:
                smtp.rset()
        smtp.quit()

    def arrived() -> Counter[str]:
        counts: Counter[str] = Counter()
        for m in list(sink.messages):
            if m.mail_from in ("", "<>"):
                continue  # hold notices
            parsed = email.message_from_bytes(m.content)
            token = parsed["Subject"] or ""
            assert parsed.get_payload().strip() == f"Texto {token}.", f"corrupt: {token}"
            counts[token] += 1
        return counts

    try:
        workers = [threading.Thread(target=client, args=(w,)) for w in range(WORKERS)]
        for w in workers:
            w.start()
        kills = 0
        deadline = time.monotonic() + 600
        while kills < KILLS and time.monotonic() < deadline:
            time.sleep(3)
            if len(arrived()) < 200 * (kills + 1):
                continue  # let the relay work between kills
            assert relay.proc is not None
            relay.proc.kill()  # SIGKILL: no goodbye, no flush
            relay.proc.wait()
            kills += 1
            time.sleep(0.5)
            relay.start()
        for w in workers:
            w.join(timeout=600)
        assert kills == KILLS
        assert len(accepted) == TOTAL
        now = {t for t, k in accepted.items() if k == "now"}
        held = {t for t, k in accepted.items() if k == "held"}
        deadline = time.monotonic() + 300
        while not now <= set(arrived()) and time.monotonic() < deadline:
            time.sleep(1)
        got = arrived()
        assert now <= set(got), f"lost: {len(now - set(got))}"
        assert not held & set(got), "a held message went out before Monday"
        FileClock.write(relay.clock_path, MONDAY_0800)
        deadline = time.monotonic() + 300
        while not held <= set(arrived()) and time.monotonic() < deadline:
            time.sleep(1)
        got = arrived()
        assert held <= set(got), f"held and lost: {len(held - set(got))}"
        assert set(got) <= set(accepted)
        duplicates = sum(n - 1 for n in got.values() if n > 1)
        assert duplicates <= KILLS * CONCURRENCY, duplicates
        print(f"\n{TOTAL} accepted by Postfix ({len(held)} held until Monday), {KILLS} kills: 0 lost, "
              f"0 corrupt, {duplicates} duplicates (in flight at a kill)")
    finally:
        postfix.stop()
        relay.stop()
        sink.stop()
