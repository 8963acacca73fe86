"""`workers: 2`: a real `relay serve` supervisor and its two pre-forked workers on loopback.

Mail over many connections is served by both workers; `kill -9` of a worker: it is started again
and nothing that got 250 is lost; SIGHUP reloads every worker; SIGTERM stops them all; exactly one
worker releases holds, and after the releasing worker is killed another one takes over, each hold
delivered once.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import smtplib
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from relay.clock import FileClock
from tests.e2e.harness import PASSWORD, RelayProcess, Sink

LAURA, PATRICIA = "laura.pinto@barrancabermeja.gov.co", "patriciah.fierro@barrancabermeja.gov.co"
LUIS, MARIA = "luis.fernandez@cancilleria.gov.co", "maria.lopez@cancilleria.gov.co"


@pytest.fixture
def relay_options() -> dict[str, Any]:
    return {"workers": 2}


def worker_pids(relay: RelayProcess, count: int = 2) -> dict[int, int]:
    """worker index -> pid of the workers running now (the supervisor's worker_started lines)."""
    started = relay.wait_events("worker_started", count)
    current: dict[int, int] = {}
    for event in started:
        current[event["worker_index"]] = event["worker_pid"]
    return current


def send(port: int, sender: str, rcpt: str, tag: str) -> bool:
    """One message over its own connection; True when the relay answered 250 for DATA."""
    message = (f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {tag}\r\nMessage-ID: <{tag}@test>\r\n\r\n"
               f"Texto {tag}\r\n").encode()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.login(sender, PASSWORD)
            return smtp.sendmail(sender, [rcpt], message) == {}
    except (smtplib.SMTPException, OSError):
        return False


def blast(port: int, sender: str, rcpt: str, prefix: str, count: int, threads: int = 8) -> list[str]:
    """`count` messages over `count` connections from `threads` clients at once: the tags that got 250."""
    accepted: list[str] = []
    lock = threading.Lock()
    todo = iter(range(count))

    def client() -> None:
        for i in todo:
            tag = f"{prefix}-{i}"
            if send(port, sender, rcpt, tag):
                with lock:
                    accepted.append(tag)

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    return accepted


def tags(sink: Sink, prefix: str) -> list[str]:
    out = []
    for m in list(sink.messages):
        if found := re.search(rb"Message-ID: <(" + prefix.encode() + rb"-\d+)@test>", m.content):
            out.append(found.group(1).decode())
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive: the supervisor reaps its workers
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rpartition(")")[2].split()[0] != "Z"


def test_many_connections_are_served_by_both_workers(relay: RelayProcess, sink: Sink) -> None:
    pids = worker_pids(relay)
    assert len(set(pids.values())) == 2 and relay.proc is not None and relay.proc.pid not in pids.values()
    accepted = blast(relay.port, LAURA, PATRICIA, "m", 120)
    assert len(accepted) == 120
    sink.wait_for(120)
    assert collections.Counter(tags(sink, "m")) == collections.Counter(accepted)
    served = collections.Counter(e["pid"] for e in relay.events("decision"))
    assert set(served) == set(pids.values()), served  # both workers decided mail, nobody else did
    assert sum(served.values()) == 120
    assert all(e["worker"] in (0, 1) for e in relay.events("decision"))


def test_kill_9_of_a_worker_restarts_it_and_loses_nothing_that_got_250(relay: RelayProcess, sink: Sink) -> None:
    pids = worker_pids(relay)
    accepted: list[str] = []
    done = threading.Event()

    def load() -> None:
        accepted.extend(blast(relay.port, LAURA, PATRICIA, "k", 240, threads=6))
        done.set()

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(0.8)
    assert not done.is_set(), "the load ended before the kill"
    os.kill(pids[1], signal.SIGKILL)
    loader.join(180)
    died = relay.wait_events("worker_died")
    assert [(e["worker_pid"], e["exit_code"]) for e in died] == [(pids[1], -signal.SIGKILL)]
    restarted = worker_pids(relay, 3)
    assert restarted[1] != pids[1] and restarted[0] == pids[0]
    assert not alive(pids[1])
    # the relay keeps accepting, and the new worker serves too
    later = blast(relay.port, LAURA, PATRICIA, "after", 60)
    assert len(later) == 60
    sink.wait_for(len(accepted) + 60, timeout=30)
    delivered = collections.Counter(tags(sink, "k"))
    lost = [t for t in accepted if t not in delivered]
    print(f"\n{len(accepted)} of 240 got 250 around a kill -9 of worker 1; {len(lost)} of them lost")
    assert not lost
    assert len(accepted) >= 200  # only the sessions in the killed worker failed (and were not 250)
    assert restarted[1] in {e["pid"] for e in relay.events("decision")}  # the new worker 1 served


def test_sighup_reloads_every_worker(relay: RelayProcess) -> None:
    pids = worker_pids(relay)
    assert relay.proc is not None
    relay.proc.send_signal(signal.SIGHUP)
    reloaded = relay.wait_events("reloaded", 2)
    assert {e["pid"]: e["generation"] for e in reloaded} == {pid: 2 for pid in pids.values()}
    status = relay.config_path.parent / "var" / "relay.reload.json"
    deadline = time.monotonic() + 10
    while json.loads(status.read_text(encoding="utf-8"))["generation"] != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(status.read_text(encoding="utf-8"))["generation"] == 2
    pid_file = relay.config_path.parent / "var" / "relay.pid"
    assert int(pid_file.read_text()) == relay.proc.pid  # `relay reload` and `relay queue` signal the supervisor


def test_sigterm_stops_every_worker_cleanly(relay: RelayProcess) -> None:
    pids = worker_pids(relay)
    assert len(relay.wait_events("listening", 2)) == 2  # a worker still starting just dies (nothing in flight)
    assert relay.proc is not None
    relay.proc.terminate()
    assert relay.proc.wait(30) == 0
    stopped = relay.events("worker_stopped")
    assert {e["worker_pid"]: e["exit_code"] for e in stopped} == {pid: 0 for pid in pids.values()}
    assert {e["pid"] for e in relay.events("stopped")} == set(pids.values())
    assert not any(alive(pid) for pid in pids.values())
    assert not (relay.config_path.parent / "var" / "relay.pid").exists()


def test_one_worker_releases_holds_and_another_takes_over_after_kill_9(tmp_path: Path) -> None:
    sink = Sink().start()
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pack="cancilleria", workers=2)
    relay.use_test_clock(datetime.fromisoformat("2026-11-27T20:00:00-05:00"))  # Friday night: held
    relay.start()
    try:
        pids = worker_pids(relay)
        assert len(relay.wait_events("listening", 2)) == 2
        time.sleep(1.5)  # the other worker has tried the scheduler lock meanwhile (every 0.5 s)
        [leader] = relay.events("scheduler_leader")
        assert leader["pid"] in pids.values()
        held = blast(relay.port, LUIS, MARIA, "h", 80)
        assert len(held) == 80
        assert not tags(sink, "h")  # held until Monday
        holding = {e["pid"] for e in relay.events("decision") if e.get("verdict") != "deliver"}
        assert holding == set(pids.values()), holding  # both workers stored holds
        os.kill(leader["pid"], signal.SIGKILL)  # the releasing worker dies: another takes over
        relay.wait_events("worker_died")
        relay.wait_events("scheduler_leader", 2)
        relay.wait_events("listening", 3)  # the restarted worker is up and tries the lock too
        time.sleep(1.5)
        leaders = relay.events("scheduler_leader")
        assert len(leaders) == 2 and leaders[1]["pid"] != leader["pid"], leaders
        FileClock.write(relay.clock_path, datetime.fromisoformat("2026-11-30T08:00:00-05:00"))  # Monday
        deadline = time.monotonic() + 60
        while len(set(tags(sink, "h"))) < 80 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a second releaser would deliver again meanwhile
        counts = collections.Counter(tags(sink, "h"))
        assert set(counts) == set(held)
        assert max(counts.values()) == 1, [t for t, c in counts.items() if c > 1]
        releasers = {e["pid"] for e in relay.events("hold_delivered")}
        assert releasers == {leaders[1]["pid"]}
        assert len(relay.events("hold_delivered")) == 80
    finally:
        relay.stop()
        sink.stop()


@pytest.mark.skipif(not Path("/usr/sbin/postfix").exists(), reason="Postfix is installed by ./dev test")
def test_postfix_milter_sessions_are_served_by_both_workers(tmp_path: Path) -> None:
    from tests.e2e.test_milter import Chain, connect

    chain = Chain(tmp_path, "barrancabermeja")
    chain.relay.config["workers"] = 2
    chain.start(datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
    try:
        pids = worker_pids(chain.relay)
        boss, pmu = "patriciah.fierro@barrancabermeja.gov.co", "pmu@barrancabermeja.gov.co"
        accepted: list[str] = []
        lock = threading.Lock()
        todo = iter(range(40))

        def client() -> None:
            for i in todo:
                tag = f"p-{i}"
                body = (f"From: {boss}\r\nTo: {pmu}\r\nSubject: {tag}\r\nMessage-ID: <{tag}@test>\r\n\r\n"
                        "Texto.\r\n").encode()
                with connect(chain.postfix, boss) as smtp:
                    if smtp.sendmail(boss, [pmu], body) == {}:
                        with lock:
                            accepted.append(tag)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(accepted) == 40
        chain.sink.wait_for(40, timeout=60)
        assert collections.Counter(tags(chain.sink, "p")) == collections.Counter(accepted)
        decisions = [e for e in chain.relay.events("decision") if e.get("frontend") == "milter"]
        assert len(decisions) == 40
        assert {e["pid"] for e in decisions} == set(pids.values())  # both workers took milter connections
    finally:
        chain.stop()


def metric_total(port: int, name: str) -> float:
    """The sum of every sample of one metric on the admin listener's /metrics."""
    from tests.e2e.http import Client

    text = Client(port).get("/metrics").text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def test_metrics_add_up_every_worker_and_keep_a_dead_workers_counts(tmp_path: Path) -> None:
    """/metrics (worker 0's admin listener) counts the mail of both workers; after kill -9 of the
    other worker, what it counted stays in the totals and its successor counts on top."""
    from tests.e2e.harness import free_port

    sink = Sink().start()
    admin = free_port()
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", workers=2, admin={"listen": f"127.0.0.1:{admin}"})
    relay.start()
    try:
        pids = worker_pids(relay)
        assert len(relay.wait_events("listening", 2)) == 2
        accepted = blast(relay.port, LAURA, PATRICIA, "c", 80)
        assert len(accepted) == 80
        served = collections.Counter(e["pid"] for e in relay.events("decision"))
        assert set(served) == set(pids.values()) and sum(served.values()) == 80, served
        assert metric_total(admin, "relay_messages_total") == 80
        assert metric_total(admin, "relay_upstream_seconds_count") == 80
        assert metric_total(admin, "relay_rules_generation") == 1  # livemax: one figure, not one per worker
        assert metric_total(admin, "relay_smtp_sessions") == 0
        metrics_dir = relay.config_path.parent / "var" / "relay.metrics"
        assert {p.name for p in metrics_dir.glob("counter_*.db")} == {f"counter_{pid}.db" for pid in pids.values()}
        os.kill(pids[1], signal.SIGKILL)
        relay.wait_events("worker_died")
        restarted = worker_pids(relay, 3)
        assert relay.wait_events("listening", 3)
        assert metric_total(admin, "relay_messages_total") == 80  # the dead worker's 80 - x are still counted
        assert not list(metrics_dir.glob(f"gauge_live*_{pids[1]}.db"))  # its gauges went with it
        later = blast(relay.port, LAURA, PATRICIA, "d", 40)
        assert len(later) == 40
        assert restarted[1] in {e["pid"] for e in relay.events("decision")[80:]}
        assert metric_total(admin, "relay_messages_total") == 120
        assert metric_total(admin, "relay_upstream_seconds_count") == 120
    finally:
        relay.stop()
        sink.stop()
    assert not (tmp_path / "var" / "relay.metrics").exists()  # the supervisor removes the run's files
