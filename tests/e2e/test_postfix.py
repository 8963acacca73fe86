"""Through a real Postfix: after-queue content_filter pointed at the relay, reinjection to a sink."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import RelayProcess, Sink, free_port, wait_port
from tests.e2e.postfix import Postfix
from tests.helpers import INSTITUTIONS

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/postfix").exists() or shutil.which("swaks") is None,
                                reason="Postfix and swaks are installed by ./dev test")
B = "barrancabermeja.gov.co"


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Postfix, Sink, RelayProcess]]:
    sink = Sink().start()
    reinject = free_port()
    # The institution's directory, with loopback counted as its internal network (Postfix runs here).
    directory = yaml.safe_load((INSTITUTIONS / "barrancabermeja.yaml").read_text(encoding="utf-8"))
    directory["internal_networks"].append("127.0.0.0/8")
    (tmp_path / "dir.yaml").write_text(yaml.safe_dump(directory, allow_unicode=True), encoding="utf-8")
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{reinject}", directory=str(tmp_path / "dir.yaml"),
                         trust={"xforward_hosts": ["127.0.0.1"]})
    # Postfix daemons run as the postfix user, who cannot enter pytest's private (0700) tmp folders.
    root = Path(tempfile.mkdtemp(prefix="relay-postfix-"))
    root.chmod(0o755)
    postfix = Postfix(root / "pf", free_port(), reinject, relay.port, sink.port, B)
    try:
        relay.start()
        postfix.start()
        wait_port(postfix.smtpd_port)
        yield postfix, sink, relay
    finally:
        postfix.stop()
        relay.stop()
        sink.stop()
        shutil.rmtree(root, ignore_errors=True)


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--server", f"127.0.0.1:{port}", *args], capture_output=True, text=True,
                          timeout=60)


def test_clean_mail_passes_through_postfix_and_the_relay(chain: tuple[Postfix, Sink, RelayProcess]) -> None:
    postfix, sink, relay = chain
    done = swaks(postfix.smtpd_port, "--from", f"laura.pinto@{B}", "--to", f"pmu@{B}",
                 "--header", "Subject: Reporte diario")
    assert done.returncode == 0, done.stdout
    [got] = sink.wait_for(1, timeout=30)
    assert got.rcpts == [f"pmu@{B}"]
    assert b"(policy-relay)" in got.content and b"X-Relay-Rule-Hits: none" in got.content
    decisions = [line for line in relay.log().splitlines() if '"event": "decision"' in line]
    assert len(decisions) == 1 and '"verdict": "deliver"' in decisions[0]


def test_policy_refusal_becomes_a_postfix_bounce(chain: tuple[Postfix, Sink, RelayProcess]) -> None:
    postfix, sink, _relay = chain
    done = swaks(postfix.smtpd_port, "--from", f"laura.pinto@{B}", "--to", f"funcionarios@{B}",
                 "--header", f"To: funcionarios@{B}", "--header", "Subject: Rifa")
    assert done.returncode == 0, done.stdout  # after-queue: Postfix accepted it
    messages = sink.wait_for(2, timeout=30)
    assert all(m.mail_from in ("<>", "") for m in messages), [m.mail_from for m in messages]
    bounce = b"".join(m.content for m in messages)
    assert b"005-20" in bounce.replace(b"\r\n ", b" ")
    assert not any(m.rcpts == [f"funcionarios@{B}"] for m in messages)
