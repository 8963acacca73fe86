"""The `relay` command meets operators' habits: --version, --config after the action, RELAY_CONFIG
and a default config path, one-line errors instead of tracebacks, a clean broken pipe, and
`relay check` exit codes by verdict (opt-in) and against the deployed config. All through the
real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay import __version__
from relay.cli import DEFAULT_CONFIG, VERDICT_EXIT
from tests.helpers import INSTITUTIONS, POLICIES, ROOT

LUIS, MARIA = "luis.fernandez@cancilleria.gov.co", "maria.lopez@cancilleria.gov.co"
MESSAGE = f"From: {LUIS}\r\nTo: {MARIA}\r\nSubject: Informe\r\n\r\nPor favor revisar.\r\n"


def command() -> list[str]:
    script = Path(sys.executable).parent / "relay"
    return [str(script)] if script.exists() else [sys.executable, "-m", "relay"]


def relay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("RELAY_CONFIG", "RELAY_TRACEBACK")} | (env or {})
    return subprocess.run([*command(), *args], capture_output=True, text=True, cwd=ROOT, timeout=60, env=full)


def one_clean_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(f"policy: {POLICIES / 'cancilleria.yaml'}\ndirectory: {INSTITUTIONS / 'cancilleria.yaml'}\n"
                    f"store: sqlite:{tmp_path / 'relay.db'}\n", encoding="utf-8")
    return path


def check_args(tmp_path: Path, at: str = "2026-11-27T20:00:00-05:00", *, pack: bool = True) -> list[str]:
    eml = tmp_path / "m.eml"
    eml.write_text(MESSAGE, encoding="utf-8")
    where = ["--policy", str(POLICIES / "cancilleria.yaml"),
             "--directory", str(INSTITUTIONS / "cancilleria.yaml")] if pack else []
    return ["check", *where, "--at", at, "--mail-from", LUIS, "--rcpt", MARIA, "--auth", LUIS, str(eml)]


def test_version() -> None:
    done = relay("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"relay (policy-relay) {__version__}"


def test_config_after_the_action(config: Path) -> None:
    for argv in (["queue", "list", "--config", str(config)], ["queue", "--config", str(config), "list"]):
        done = relay(*argv)
        assert done.returncode == 0, done.stderr
        assert "no held messages" in done.stdout


def test_relay_config_environment_variable(config: Path) -> None:
    done = relay("queue", "list", env={"RELAY_CONFIG": str(config)})
    assert done.returncode == 0 and "no held messages" in done.stdout, done.stderr
    done = relay("audit", env={"RELAY_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    assert DEFAULT_CONFIG in relay("queue", "--help").stdout


@pytest.mark.skipif(Path(DEFAULT_CONFIG).exists(), reason="this machine has a deployed config")
@pytest.mark.parametrize("argv", [["queue", "list"], ["audit"], ["inventory"], ["reload"], ["serve"],
                                  ["directory", "stats"]])
def test_no_config_anywhere_is_one_clear_line(argv: list[str]) -> None:
    done = relay(*argv)
    assert done.returncode == 2
    line = one_clean_line(done)
    assert "give --config FILE or set RELAY_CONFIG" in line and DEFAULT_CONFIG in line


@pytest.mark.parametrize(("value", "says"), [("yesterday", "not an ISO-8601 instant"),
                                             ("2026-11-27T20:00:00", "no UTC offset")])
def test_a_bad_date_is_a_usage_error_not_a_traceback(config: Path, value: str, says: str) -> None:
    done = relay("audit", "--config", str(config), "--since", value)
    assert done.returncode == 2 and says in one_clean_line(done)


def test_a_missing_config_is_a_config_error(tmp_path: Path) -> None:
    done = relay("queue", "list", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 3 and "cannot read file" in one_clean_line(done)


def test_a_closed_pipe_is_no_traceback(tmp_path: Path) -> None:
    """`relay check … | head`: the reader goes away before the relay writes."""
    proc = subprocess.Popen([*command(), *check_args(tmp_path), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == "", err


def test_check_exits_with_the_verdict_only_when_asked(tmp_path: Path) -> None:
    night, day = "2026-11-27T20:00:00-05:00", "2026-11-24T10:00:00-05:00"
    assert relay(*check_args(tmp_path, night)).returncode == 0  # the acceptance runner relies on this
    assert relay(*check_args(tmp_path, night), "--exit-code").returncode == VERDICT_EXIT["hold"] == 10
    assert relay(*check_args(tmp_path, day), "--exit-code").returncode == VERDICT_EXIT["deliver"] == 0
    assert VERDICT_EXIT == {"deliver": 0, "hold": 10, "moderate": 11, "reject": 20, "tempfail": 21}


def test_check_a_reject_exit_code(tmp_path: Path) -> None:
    eml = tmp_path / "r.eml"
    eml.write_text("From: someone@gmail.com\r\nTo: x@example.org\r\nSubject: hola\r\n\r\nhola\r\n", encoding="utf-8")
    done = relay("check", "--policy", str(POLICIES / "pasto.yaml"), "--directory", str(INSTITUTIONS / "pasto.yaml"),
                 "--at", "2026-11-24T10:00:00-05:00", "--mail-from", "someone@gmail.com",
                 "--rcpt", "x@example.org", "--client-ip", "203.0.113.9", "--exit-code", "--json", str(eml))
    assert done.returncode == 20, (done.stdout, done.stderr)


def test_check_against_the_deployed_config(tmp_path: Path, config: Path) -> None:
    done = relay(*check_args(tmp_path, pack=False), "--config", str(config), "--exit-code")
    assert done.returncode == 10 and "verdict:  hold" in done.stdout, done.stderr
    done = relay(*check_args(tmp_path, pack=False), "--exit-code", env={"RELAY_CONFIG": str(config)})
    assert done.returncode == 10, done.stderr
