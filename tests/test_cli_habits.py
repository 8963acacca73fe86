"""The `relay` command meets operators' habits: --version, --config after the action, RELAY_CONFIG
and a default config path, one-line errors instead of tracebacks, a clean broken pipe, and
`relay check` exit codes by verdict (opt-in) and against the deployed config. All through the
real command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from relay import __version__
from relay.cli import DEFAULT_CONFIG, VERDICT_EXIT
from relay.store import AuditEntry, NewHold, open_store
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
    open_store(f"sqlite:{tmp_path / 'relay.db'}", tmp_path).close()  # a relay that has run once
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


@pytest.mark.parametrize("value", ["next week", "27/11/2026", "2026-13-01"])
def test_a_bad_date_is_a_usage_error_not_a_traceback(config: Path, value: str) -> None:
    done = relay("audit", "--config", str(config), "--since", value)
    line = one_clean_line(done)
    assert done.returncode == 2 and "not a date or instant" in line and "America/Bogota" in line


def _audit_at(store_path: Path, *instants: datetime) -> None:
    store = open_store(f"sqlite:{store_path}", store_path.parent)
    try:
        store.add_audit([AuditEntry(at=at, queue_id=f"Q{n}", verdict="deliver", reply="250", mail_from=LUIS,
                                    recipients=1, login=LUIS, client_ip="127.0.0.1", rules=(), monitored=())
                         for n, at in enumerate(instants)])
    finally:
        store.close()


def test_dates_as_people_write_them_are_the_institutions_local_time(config: Path, tmp_path: Path) -> None:
    """Cancillería is in America/Bogota (UTC-5): `--since 2026-11-27` is 05:00 UTC, not 00:00 UTC;
    a date and time without offset is Bogotá's; `yesterday`/`today` are Bogotá's midnights."""
    bogota = ZoneInfo("America/Bogota")
    _audit_at(tmp_path / "relay.db", datetime(2026, 11, 27, 3, 0, tzinfo=UTC),  # 26 Nov 22:00 in Bogotá
              datetime(2026, 11, 27, 14, 0, tzinfo=UTC), datetime.now(bogota) - timedelta(minutes=5))

    def queue_ids(*args: str, env: dict[str, str] | None = None) -> list[str]:
        done = relay("audit", "--config", str(config), "--json", *args, env=env)
        assert done.returncode == 0, done.stderr
        return sorted(row["queue_id"] for row in json.loads(done.stdout))

    assert queue_ids("--since", "2026-11-27", "--until", "2026-11-28") == ["Q1"]
    assert queue_ids("--since", "2026-11-26 21:00", "--until", "2026-11-27T00:00:00-05:00") == ["Q0"]
    assert queue_ids("--since", "2026-11-27T00:00:00+00:00", "--until", "2026-11-28") == ["Q0", "Q1"]
    assert "Q2" in queue_ids("--since", "today") and "Q2" in queue_ids("--since", "yesterday")
    assert queue_ids("--until", "yesterday") == ["Q0", "Q1"]


def test_check_at_a_local_time_is_the_institutions_zone(tmp_path: Path) -> None:
    """`--at '2026-11-27 20:00'` is 20:00 in Bogotá: off hours for María, as with the explicit offset."""
    local = relay(*check_args(tmp_path, at="2026-11-27 20:00"), "--json")
    explicit = relay(*check_args(tmp_path, at="2026-11-27T20:00:00-05:00"), "--json")
    assert local.returncode == explicit.returncode == 0, local.stderr
    assert json.loads(local.stdout)["verdict"] == json.loads(explicit.stdout)["verdict"] == "hold"
    assert json.loads(relay(*check_args(tmp_path, at="2026-11-27 10:00"), "--json").stdout)["verdict"] == "deliver"


def _held(store_path: Path) -> dict[str, list[str]]:
    """Two messages: Q1 held for two recipients in two plans (two holds), Q2 awaiting moderation."""
    store = open_store(f"sqlite:{store_path}", store_path.parent)
    due = datetime.now(UTC) + timedelta(days=1)
    body = b"Subject: s\r\n\r\nb\r\n"
    try:
        q1 = store.add_holds([NewHold("Q1", "hold", LUIS, (MARIA,), body, due, ("right-to-disconnect",), ("c",)),
                              NewHold("Q1", "hold", LUIS, ("ana.ruiz@cancilleria.gov.co",), body,
                                      due + timedelta(hours=1), ("right-to-disconnect",), ("c",))],
                             datetime.now(UTC))
        q2 = store.add_holds([NewHold("Q2", "moderate", LUIS, (MARIA,), body, None, ("commercial",), ("c",))],
                             datetime.now(UTC))
    finally:
        store.close()
    return {"Q1": q1, "Q2": q2}


def test_several_ids_a_queue_id_and_ids_on_standard_input(config: Path, tmp_path: Path) -> None:
    ids = _held(tmp_path / "relay.db")
    # a queue id names all holds of its message
    done = relay("queue", "show", "Q1", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert sorted(h["id"] for h in json.loads(done.stdout)) == sorted(ids["Q1"])
    # one hold id: one object, as before
    one = json.loads(relay("queue", "show", ids["Q2"][0], "--json", "--config", str(config)).stdout)
    assert isinstance(one, dict) and one["id"] == ids["Q2"][0]
    # several ids in one action; an unknown one is reported and sets the exit status, the rest is done
    done = relay("queue", "release", ids["Q1"][0], "nope-7", ids["Q1"][1], "--config", str(config))
    assert done.returncode == 4 and "nope-7" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout.count(": waiting") == 2, done.stdout
    # ids piped from `relay queue list`
    listing = relay("queue", "list", "--reason", "moderate", "--config", str(config))
    assert ids["Q2"][0] in listing.stdout
    done = subprocess.run([*command(), "queue", "approve", "-", "--by", "comunicaciones", "--config", str(config)],
                          input=listing.stdout, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{ids['Q2'][0]}: waiting (delivered within seconds by the running relay)"
    # acting twice: a state error for that id, exit 5
    for given in ("Q2", ids["Q2"][0]):
        again = relay("queue", "approve", given, "--config", str(config))
        assert again.returncode == 5 and "ya fue aprobado por comunicaciones el" in one_clean_line(again)
    assert relay("queue", "approve", "--config", str(config)).returncode == 2


def test_a_missing_config_is_a_config_error(tmp_path: Path) -> None:
    done = relay("queue", "list", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 3 and "cannot read file" in one_clean_line(done)


def test_a_store_path_that_does_not_exist_is_an_error_not_a_new_empty_store(tmp_path: Path) -> None:
    """Issue 26: a typo in `store:` (or `admin.secret_file`) used to start an empty store: the
    tools said "no held messages" and the relay served with the held mail out of sight."""
    path = tmp_path / "relay.yaml"
    path.write_text(f"policy: {POLICIES / 'cancilleria.yaml'}\ndirectory: {INSTITUTIONS / 'cancilleria.yaml'}\n"
                    f"store: sqlite:var/relya.db\nadmin:\n  listen: 127.0.0.1:1\n  secret_file: var/admin.secret\n",
                    encoding="utf-8")
    for tool in (["queue", "list"], ["audit"], ["trace"], ["inventory"], ["report", "--month", "2026-11"]):
        done = relay(*tool, "--config", str(path))
        assert done.returncode == 1 and "relya.db does not exist" in one_clean_line(done), (tool, done.stderr)
    assert not (tmp_path / "var").exists(), "nothing made"
    served = relay("serve", "--config", str(path))
    assert served.returncode == 3, served.stderr
    assert f"{path}:3: store: " in served.stderr and "relay init" in served.stderr
    assert f"{path}:6: admin.secret_file: " in served.stderr
    assert not (tmp_path / "var").exists()
    made = relay("init", "--config", str(path))
    assert made.returncode == 0 and "made store" in made.stdout and "made admin secret" in made.stdout
    assert (tmp_path / "var" / "relya.db").exists() and (tmp_path / "var" / "admin.secret").stat().st_mode & 0o077 == 0
    assert relay("queue", "list", "--config", str(path)).stdout.strip() == "no held messages"
    assert "nothing to make" in relay("init", "--config", str(path)).stdout


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
