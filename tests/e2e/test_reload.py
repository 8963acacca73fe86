"""Live reload of a running relay: SIGHUP and `relay reload` under load, a broken pack or directory
that leaves the old rules in force, settings that need a restart, and sd_notify to systemd."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import PASSWORD, RelayProcess, Sink, free_port
from tests.helpers import INSTITUTIONS, POLICIES, ROOT, SHARED, to_bytes

SENDERS, PER_SENDER, RELOADS = 8, 250, 20  # 2,000 messages


def scenario(name: str) -> dict[str, object]:
    return yaml.safe_load((SHARED / "acceptance" / "scenarios" / f"{name}.yaml").read_text(encoding="utf-8"))


def own_files(relay: RelayProcess, tmp: Path, institution: str) -> tuple[Path, Path]:
    """Copies of the pack and directory the test may edit while the relay runs."""
    pack, directory = tmp / f"{institution}-pack.yaml", tmp / f"{institution}-directory.yaml"
    shutil.copy(POLICIES / f"{institution}.yaml", pack)
    shutil.copy(INSTITUTIONS / f"{institution}.yaml", directory)
    relay.config["policy"], relay.config["directory"] = str(pack), str(directory)
    return pack, directory


def status(relay: RelayProcess) -> Path:
    return relay.config_path.parent / "var" / "relay.reload.json"


def reload_cli(relay: RelayProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", "reload", "--config", str(relay.config_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def sighup_and_wait(relay: RelayProcess) -> dict[str, object]:
    """SIGHUP, then the relay's own report of that reload."""
    path = status(relay)
    before = path.stat().st_mtime_ns if path.exists() else 0
    assert relay.proc is not None
    relay.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while (path.stat().st_mtime_ns if path.exists() else 0) == before:
        assert time.monotonic() < deadline, "the relay did not report the reload"
        time.sleep(0.01)
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_twenty_reloads_during_two_thousand_messages_fail_no_transaction(tmp_path: Path, sink: Sink) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pid_file=str(tmp_path / "var" / "relay.pid"))
    pack, _ = own_files(relay, tmp_path, "barrancabermeja")
    relay.start()
    original = pack.read_text(encoding="utf-8")
    # The reloads switch a rule that these messages do not touch between enforce and monitor, so
    # every reload really builds and swaps new rules.
    monitored = original.replace("  - id: mass-list-bcc-only\n", "  - id: mass-list-bcc-only\n    mode: monitor\n", 1)
    assert monitored != original
    case = scenario("barrancabermeja-01-staff-to-citizen")
    env = case["envelope"]
    raw = to_bytes(str(case["message"]))
    sent = [0] * SENDERS
    failures: list[str] = []

    def sender(index: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", relay.port, timeout=60) as smtp:  # one connection for all
                smtp.login(env["auth"], PASSWORD)  # type: ignore[index]
                for _ in range(PER_SENDER):
                    refused = smtp.sendmail(env["mail_from"], env["rcpt_to"], raw)  # type: ignore[index]
                    if refused:
                        failures.append(f"refused {refused}")
                    sent[index] += 1
        except (smtplib.SMTPException, OSError) as error:
            failures.append(f"sender {index}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while sum(sent) < 100 and time.monotonic() < deadline:  # reload while mail flows, not before
            time.sleep(0.01)
        during = []
        for n in range(RELOADS):
            pack.write_text(monitored if n % 2 == 0 else original, encoding="utf-8")
            result = sighup_and_wait(relay)
            assert result["ok"], result
            during.append(sum(sent))
            time.sleep(0.05)
        for t in threads:
            t.join(120)
        assert failures == []
        assert sum(sent) == SENDERS * PER_SENDER
        assert during[0] > 0 and during[-1] < SENDERS * PER_SENDER, during  # the reloads fell within the run
        delivered = sink.wait_for(SENDERS * PER_SENDER, 60)
        assert len(delivered) == SENDERS * PER_SENDER
        reloaded = relay.events("reloaded")
        assert [e["generation"] for e in reloaded] == list(range(2, RELOADS + 2))
    finally:
        relay.stop()


def send_debt_notice(relay: RelayProcess) -> tuple[int, str]:
    case = scenario("pasto-03-debt-notice-to-group")
    env = case["envelope"]
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as smtp:
        smtp.login(env["auth"], PASSWORD)  # type: ignore[index]
        smtp.mail(env["mail_from"])  # type: ignore[index]
        for rcpt in env["rcpt_to"]:  # type: ignore[index]
            smtp.rcpt(rcpt)
        code, text = smtp.data(to_bytes(str(case["message"])))
    return code, text.decode()


@pytest.fixture
def pasto(tmp_path: Path, sink: Sink) -> Iterator[tuple[RelayProcess, Path, Path]]:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pack="pasto",
                         extra_logins=("diana.erazo@pasto.gov.co",), pid_file=str(tmp_path / "var" / "relay.pid"))
    pack, directory = own_files(relay, tmp_path, "pasto")
    relay.use_test_clock(datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
    relay.start()
    yield relay, pack, directory
    relay.stop()


def test_a_broken_pack_leaves_the_old_rules_in_force_and_says_why(pasto: tuple[RelayProcess, Path, Path]) -> None:
    relay, pack, _ = pasto
    code, text = send_debt_notice(relay)
    assert code == 550 and "sensitive-notice-individual" in text
    good = pack.read_text(encoding="utf-8")
    pack.write_text(good.replace("kind: sensitive_individual", "kind: sensitive_individul"), encoding="utf-8")
    validate = subprocess.run([sys.executable, "-m", "relay", "validate", str(pack)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    assert validate.returncode == 3 and validate.stderr.strip()
    done = reload_cli(relay)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert validate.stderr.strip() in done.stderr  # the same words as `relay validate`
    assert re.search(rf"{re.escape(str(pack))}:\d+", done.stderr) and "sensitive_individual" in done.stderr
    result = sighup_and_wait(relay)  # the relay itself refuses it too (someone may signal it directly)
    assert not result["ok"] and result["generation"] == 1
    assert validate.stderr.strip() in "\n".join(result["problems"])  # type: ignore[arg-type]
    refused = relay.events("reload_refused")
    assert refused and refused[-1]["level"] == "error" and "stay in force" in refused[-1]["advice"]
    code, text = send_debt_notice(relay)
    assert code == 550 and "sensitive-notice-individual" in text  # the old rules are still in force
    # A fixed file that changes the rule: the new rules apply to the next message.
    pack.write_text(good.replace("  - id: sensitive-notice-individual\n",
                                 "  - id: sensitive-notice-individual\n    mode: monitor\n", 1), encoding="utf-8")
    done = reload_cli(relay)
    assert done.returncode == 0 and "reloaded: generation 2, pack pasto" in done.stdout, done.stderr
    code, _ = send_debt_notice(relay)
    assert code == 250


def test_a_broken_directory_is_refused_too(pasto: tuple[RelayProcess, Path, Path]) -> None:
    relay, _, directory = pasto
    directory.write_text(directory.read_text(encoding="utf-8").replace("timezone: America/Bogota",
                                                                       "timezone: America/Bogata"), encoding="utf-8")
    done = reload_cli(relay)
    assert done.returncode == 3 and "Bogata" in done.stderr and str(directory) in done.stderr
    code, text = send_debt_notice(relay)
    assert code == 550 and "sensitive-notice-individual" in text


def test_settings_that_need_a_restart_are_named_and_kept(pasto: tuple[RelayProcess, Path, Path]) -> None:
    relay, _, _ = pasto
    config = yaml.safe_load(relay.config_path.read_text(encoding="utf-8"))
    old_port = config["listen"]["port"]
    config["listen"]["port"] = free_port()
    config["limits"] = {"max_recipients": 2}
    relay.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = reload_cli(relay)
    assert done.returncode == 0 and "only a restart applies: listen" in done.stdout
    with smtplib.SMTP("127.0.0.1", old_port, timeout=30) as smtp:  # still listening where it was
        smtp.login("diana.erazo@pasto.gov.co", PASSWORD)
        smtp.mail("diana.erazo@pasto.gov.co")
        assert smtp.rcpt("jorge.benavides@pasto.gov.co")[0] == 250
        assert smtp.rcpt("lucia.ortega@pasto.gov.co")[0] == 250
        code, text = smtp.rcpt("mario.rosero@pasto.gov.co")  # the new limit applies at once
        assert code == 452, text


def test_sd_notify_ready_reloading_stopping(tmp_path: Path, sink: Sink) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", pid_file=str(tmp_path / "var" / "relay.pid"))
        relay.env["NOTIFY_SOCKET"] = path
        relay.start()
        try:
            first = sock.recv(4096).decode()
            assert first.startswith("READY=1")
            with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as probe:
                assert probe.recv(100).startswith(b"220")  # READY=1 came once it listens
            assert relay.proc is not None
            relay.proc.send_signal(signal.SIGHUP)
            assert sock.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert sock.recv(4096).decode().startswith("READY=1")
            relay.proc.send_signal(signal.SIGTERM)
            assert sock.recv(4096).decode() == "STOPPING=1"
            assert relay.proc.wait(20) == 0
        finally:
            relay.stop()
    assert os.path.exists(path)
