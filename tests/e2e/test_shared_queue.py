"""Two relay processes on one PostgreSQL store release 5,000 holds due at once: every one is
delivered, and exactly once when both live; with one killed (kill -9) mid-release, the other takes
its claims over when their lease runs out — none lost, and duplicates only in the window SMTP
cannot close (after the upstream's 250, before the commit), at most the killed relay's concurrency."""

from __future__ import annotations

import re
import signal
import smtplib
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

from relay.clock import FileClock
from relay.store import HoldState, NewHold
from relay.store.postgres import PostgresStore
from tests.e2e.harness import PASSWORD, RelayProcess, Sink

HOLDS = 5000
CONCURRENCY = 4
T0 = datetime.fromisoformat("2026-11-30T07:00:00-05:00")
_ID = re.compile(rb"X-Test-Hold: (\d+)")


def seed(url: str) -> None:
    """5,000 held copies, all due at T0 (as right-to-disconnect holds of a Friday night would be)."""
    store = PostgresStore(url)
    try:
        for start in range(0, HOLDS, 500):
            store.add_holds([NewHold(
                queue_id=f"Q{n:05d}", reason="hold", mail_from="luis.fernandez@cancilleria.gov.co",
                recipients=("maria.lopez@cancilleria.gov.co",),
                content=f"X-Test-Hold: {n}\r\nSubject: Informe {n}\r\n\r\nTexto {n}\r\n".encode(),
                deliver_at=T0, rule_ids=("right-to-disconnect",), cites=("Ley 2191 de 2022",), subject=f"Informe {n}")
                for n in range(start, start + 500)], T0 - timedelta(days=2))
    finally:
        store.close()


def relays(tmp: Path, url: str, sink: Sink) -> list[RelayProcess]:
    made = []
    for name in ("a", "b"):
        folder = tmp / name
        folder.mkdir()
        relay = RelayProcess(folder, f"smtp://127.0.0.1:{sink.port}", pack="cancilleria", store=url,
                             store_options={"lease": 5}, scheduler={"concurrency": CONCURRENCY, "batch": 50},
                             log={"level": "info"})
        relay.clock_path = tmp / "clock.txt"  # one clock for both
        relay.use_test_clock(T0 - timedelta(minutes=1))
        made.append(relay)
    return made


def delivered(sink: Sink) -> Counter[int]:
    return Counter(int(m.group(1)) for r in list(sink.messages) if (m := _ID.search(r.content)))


def wait_all(sink: Sink, url: str, timeout: float) -> Counter[int]:
    deadline = time.monotonic() + timeout
    store = PostgresStore(url)
    try:
        while time.monotonic() < deadline:
            if store.count_holds((HoldState.WAITING, HoldState.DELIVERING)) == 0:
                break
            time.sleep(0.2)
        assert store.count_holds((HoldState.WAITING, HoldState.DELIVERING)) == 0, "holds left undelivered"
        assert store.count_holds((HoldState.DELIVERED,)) == HOLDS
    finally:
        store.close()
    time.sleep(0.5)
    return delivered(sink)


def test_two_relays_deliver_five_thousand_due_holds_exactly_once(tmp_path: Path, pg_url: str, sink: Sink) -> None:
    seed(pg_url)
    pair = relays(tmp_path, pg_url, sink)
    try:
        for relay in pair:
            relay.start()
        FileClock.write(pair[0].clock_path, T0 + timedelta(seconds=1))  # all 5,000 due at once
        got = wait_all(sink, pg_url, 240)
        assert len(got) == HOLDS and set(got.values()) == {1}  # every hold, exactly once
        shares = [len(r.events("hold_delivered")) for r in pair]
        assert all(s > 0 for s in shares) and sum(shares) == HOLDS, shares  # both relays took part
    finally:
        for relay in pair:
            relay.stop()


def test_one_relay_killed_mid_release_the_other_finishes(tmp_path: Path, pg_url: str, sink: Sink) -> None:
    seed(pg_url)
    pair = relays(tmp_path, pg_url, sink)
    try:
        for relay in pair:
            relay.start()
        FileClock.write(pair[0].clock_path, T0 + timedelta(seconds=1))
        deadline = time.monotonic() + 120
        while len(sink.messages) < HOLDS // 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        victim = pair[0]
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        at_kill = len(sink.messages)
        assert at_kill < HOLDS  # killed mid-release
        # the victim's claims run out after the 5 s lease (of the relays' clock), then the survivor takes them
        FileClock.write(pair[0].clock_path, T0 + timedelta(seconds=30))
        got = wait_all(sink, pg_url, 240)
        assert set(got) == set(range(HOLDS))  # none lost
        duplicates = sum(got.values()) - HOLDS
        assert duplicates <= CONCURRENCY, duplicates  # only deliveries in flight at the kill
        print(f"kill -9 after {at_kill} deliveries: {duplicates} duplicate(s)")
    finally:
        for relay in pair:
            relay.stop()


def test_sending_rate_is_shared_by_two_relays(tmp_path: Path, pg_url: str, sink: Sink) -> None:
    """rate_limits counted in PostgreSQL: what one relay let through counts on the other."""
    laura = "laura.pinto@barrancabermeja.gov.co"
    pair = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        pair.append(RelayProcess(folder, f"smtp://127.0.0.1:{sink.port}", store=pg_url,
                                 rate_limits=[{"window": 3600, "limit": 5}]).start())
    message = (f"From: {laura}\r\nTo: a@example.org, b@example.org\r\nSubject: Respuesta\r\n\r\n"
               "Cordial saludo.\r\n").encode()
    try:
        replies = []
        for relay in (pair[0], pair[1], pair[1]):
            with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
                smtp.login(laura, PASSWORD)
                smtp.mail(laura)
                smtp.rcpt("a@example.org")
                smtp.rcpt("b@example.org")
                replies.append(smtp.data(message))
        assert [code for code, _ in replies] == [250, 250, 450]  # 2 + 2 recipients, then 2 more would pass 5
        assert b"rate-limit" in replies[2][1] and b"5 destinatarios por 1 hora" in replies[2][1]
        assert len(sink.wait_for(2)) == 2
        with smtplib.SMTP("127.0.0.1", pair[0].port, timeout=30) as smtp:  # one more recipient still fits
            smtp.login(laura, PASSWORD)
            assert smtp.sendmail(laura, ["a@example.org"], message) == {}
    finally:
        for relay in pair:
            relay.stop()
