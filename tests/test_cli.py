"""`relay check`: the JSON contract, the readable output, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main
from tests.helpers import INSTITUTIONS, POLICIES, ROOT

MESSAGE = ("From: luis.fernandez@cancilleria.gov.co\r\nTo: maria.lopez@cancilleria.gov.co\r\n"
           "Subject: Informe\r\n\r\nPor favor revisar.\r\n")


def run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    eml = tmp_path / "m.eml"
    eml.write_text(MESSAGE, encoding="utf-8")
    argv = [sys.executable, "-m", "relay", "check", "--policy", str(POLICIES / "cancilleria.yaml"),
            "--directory", str(INSTITUTIONS / "cancilleria.yaml"), "--at", "2026-11-27T20:00:00-05:00",
            "--mail-from", "luis.fernandez@cancilleria.gov.co", "--rcpt", "maria.lopez@cancilleria.gov.co",
            "--auth", "luis.fernandez@cancilleria.gov.co", *extra, str(eml)]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_json_contract(tmp_path: Path) -> None:
    done = run(tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) >= {"verdict", "smtp_reply", "recipients", "rules", "notices"}
    assert out["verdict"] == "hold" and out["smtp_reply"].startswith("250 ")
    [rcpt] = out["recipients"]
    assert rcpt == {"address": "maria.lopez@cancilleria.gov.co", "verdict": "hold",
                    "deliver_at": "2026-11-30T08:00:00-05:00", "rules": ["right-to-disconnect"]}
    assert out["rules"][0]["id"] == "right-to-disconnect" and "2088" in out["rules"][0]["cites"]
    assert [n["kind"] for n in out["notices"]] == ["hold"]


def test_human_output(tmp_path: Path) -> None:
    done = run(tmp_path)
    assert done.returncode == 0
    assert "verdict:  hold" in done.stdout and "until 2026-11-30T08:00:00-05:00" in done.stdout
    assert "notice (hold) to luis.fernandez@cancilleria.gov.co" in done.stdout


def test_stdin_message(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MESSAGE.encode())))
    code = main(["check", "--policy", str(POLICIES / "cancilleria.yaml"), "--directory",
                 str(INSTITUTIONS / "cancilleria.yaml"), "--at", "2026-11-24T10:00:00-05:00",
                 "--mail-from", "luis.fernandez@cancilleria.gov.co", "--rcpt", "maria.lopez@cancilleria.gov.co",
                 "--auth", "luis.fernandez@cancilleria.gov.co", "--json", "-"])
    assert code == 0 and json.loads(capsys.readouterr().out)["verdict"] == "deliver"


@pytest.mark.parametrize(("args", "message"), [
    (["--at", "friday"], "not a date or instant"),
    (["--at", "2026-02-30 10:00"], "not a date or instant"),
])
def test_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    done = run(tmp_path, *args)
    assert done.returncode == 2 and message in done.stderr


def test_bad_envelope_and_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["check", "--policy", str(POLICIES / "cancilleria.yaml"), "--directory",
            str(INSTITUTIONS / "cancilleria.yaml")]
    assert main([*base, "--rcpt", "a@x.co", "/nonexistent.eml"]) == 2
    assert "cannot read /nonexistent.eml" in capsys.readouterr().err
    assert main([*base, "--rcpt", "Name <a@x.co>", str(POLICIES / "pasto.yaml")]) == 2
    assert "bad envelope address" in capsys.readouterr().err


def test_bad_pack_path_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--policy", "nope.yaml", "--directory", str(INSTITUTIONS / "pasto.yaml"),
                 "--rcpt", "a@pasto.gov.co", "-"]) == 3
    assert "nope.yaml: cannot read file" in capsys.readouterr().err
