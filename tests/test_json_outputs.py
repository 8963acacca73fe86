"""Issue 26: every `--json` output is documented (docs/operations.md, «JSON outputs») and typed —
numbers as numbers, lists as lists, instants ISO 8601 with their offset. Each command runs through
the real `relay` command on a store with data in it, and every object it prints must have exactly
the documented fields, of the documented types; every subcommand with a --json option must be in
the table."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from relay.cli import build_parser
from relay.store import AuditEntry, NewHold, SocialAccount, TraceEvent, open_store
from tests.helpers import INSTITUTIONS, ROOT
from tests.test_cli_habits import LUIS, MARIA, check_args

C = "cancilleria.gov.co"
DOC = ROOT / "docs" / "operations.md"
Spec = dict[str, tuple[str, bool]]  # field path -> (type, required)


def documented() -> dict[str, Spec]:
    """{'queue show': {'id': ('string', True), 'history[].at': ('instant', True), ...}} from the table."""
    section = DOC.read_text(encoding="utf-8").split("## JSON outputs", 1)[1].split("\n## ", 1)[0]
    specs: dict[str, Spec] = {}
    for line in section.splitlines():
        if not line.startswith("| `relay "):
            continue
        command_cell, field_cell, type_cell = (c.strip() for c in line.strip("|").split(" | "))
        words = re.match(r"`relay ([^`]*)`", command_cell).group(1).split()  # type: ignore[union-attr]
        command = " ".join(w for w in words if re.fullmatch(r"[a-z][a-z-]*", w))
        spec = specs.setdefault(command, {})
        inherited = re.fullmatch(r"every field of `relay ([^`]*)`", field_cell)
        if inherited:
            spec.update(specs[" ".join(w for w in inherited.group(1).split() if re.fullmatch(r"[a-z][a-z-]*", w))])
            continue
        kind, _, optional = type_cell.partition(", ")
        for name in re.findall(r"`([^`]+)`", field_cell):
            spec[name] = (kind, optional != "optional")
    return specs


def commands_with_json() -> set[str]:
    """Every subcommand of the real parser that takes --json."""
    found: set[str] = set()

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        if any("--json" in a.option_strings for a in parser._actions):
            found.add(" ".join(path))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, [*path, name])

    walk(build_parser(), [])
    return found


def is_instant(value: Any) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).utcoffset() is not None
    except ValueError:
        return False


TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "instant": is_instant,
    "instant or empty": lambda v: v == "" or is_instant(v),
    "instant or null": lambda v: v is None or is_instant(v),
    "string or null": lambda v: v is None or isinstance(v, str),
    "list of strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "list of strings or null": lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "list of objects": lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
    "object": lambda v: isinstance(v, dict),
    "boolean": lambda v: isinstance(v, bool),
    "list or object": lambda v: isinstance(v, list | dict),
    "list of date pairs": lambda v: isinstance(v, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(d, str) for d in p) for p in v),
    "object or null": lambda v: v is None or isinstance(v, dict),
}


def check(obj: dict[str, Any], spec: Spec, where: str) -> None:
    top = {name: t for name, t in spec.items() if "[]." not in name}
    assert set(obj) <= set(top), f"{where}: undocumented fields {set(obj) - set(top)}"
    for name, (kind, required) in top.items():
        if name not in obj:
            assert not required, f"{where}: {name} missing"
            continue
        assert kind in TYPES, f"docs: unknown type {kind!r} for {name}"
        assert TYPES[kind](obj[name]), f"{where}: {name} = {obj[name]!r} is not {kind}"
    for parent in {name.split("[].", 1)[0] for name in spec if "[]." in name}:
        nested = {name.split("[].", 1)[1]: t for name, t in spec.items() if name.startswith(parent + "[].")}
        for n, item in enumerate(obj.get(parent) or []):
            check(item, nested, f"{where}.{parent}[{n}]")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Cancillería's pack and directory, a store with a held and a moderated message, a decided one,
    decisions with rule hits and reasons, trace events and an inventory row."""
    from tests.helpers import POLICIES

    path = tmp_path / "relay.yaml"
    path.write_text(f"policy: {POLICIES / 'cancilleria.yaml'}\ndirectory: {INSTITUTIONS / 'cancilleria.yaml'}\n"
                    f"store: sqlite:{tmp_path / 'relay.db'}\n", encoding="utf-8")
    store = open_store(f"sqlite:{tmp_path / 'relay.db'}", tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    body = b"Subject: Informe\r\nFrom: luis\r\n\r\nb\r\n"
    try:
        _, moderated = store.add_holds([
            NewHold("Q1", "hold", LUIS, (MARIA,), body, now + timedelta(days=1), ("right-to-disconnect",),
                    ("Ley 2191 de 2022",), "Informe", LUIS,
                    deliver_at_local=(now + timedelta(days=1)).astimezone(ZoneInfo("Europe/Madrid")).isoformat()),
            NewHold("Q2", "moderate", LUIS, (MARIA, "ana.ruiz@cancilleria.gov.co"), body, None, ("commercial",),
                    ("Circular 004",), "Oferta", LUIS, ("comunicaciones@cancilleria.gov.co",))], now)
        store.approve(moderated, now, "yanet")
        store.add_audit([AuditEntry(now - timedelta(minutes=n), f"Q{n}", "moderate" if n == 2 else "hold",
                                    "250 2.0.0 held", LUIS, 1, LUIS, "10.0.0.7",
                                    (("commercial", "Circular 004", "moderate", "offer: por tiempo limitado=2"),),
                                    ("monitored-rule",), (MARIA,), "Oferta", f"m{n}@cancilleria.gov.co")
                         for n in (1, 2)],
                        trace=[TraceEvent("Q2", now, "notice", "moderation-request to comunicaciones: Oferta")])
        store.record_accounts([SocialAccount("Facebook", MARIA, "personal", now, now)])
    finally:
        store.close()
    return path


def run_json(*args: str) -> Any:
    """The real command of this tree (`python -m relay` from the project root, so a worktree runs its own)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RELAY_CONFIG", "RELAY_TRACEBACK")}
    done = subprocess.run([sys.executable, "-m", "relay", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_json_output_matches_its_documentation(config: Path, tmp_path: Path) -> None:
    specs = documented()
    assert commands_with_json() == set(specs), "docs/operations.md «JSON outputs» and the parser differ"
    c = str(config)
    listed = run_json("queue", "list", "--all", "--json", "--config", c)
    outputs: dict[str, list[Any]] = {
        "queue list": listed,
        "queue show": [run_json("queue", "show", listed[0]["id"], "--json", "--config", c),
                       *run_json("queue", "show", "Q1", "Q2", "--json", "--config", c)],
        "audit": run_json("audit", "--json", "--config", c),
        "trace": run_json("trace", "--json", "--config", c),
        "inventory": run_json("inventory", "--json", "--config", c),
        "check": [run_json(*check_args(tmp_path), "--json")],
        "directory show": [run_json("directory", "show", address, "--json", "--directory",
                                    str(INSTITUTIONS / "cancilleria.yaml"))
                           for address in (LUIS, f"talento.humano@{C}", f"planta.externa@{C}")],
        "directory stats": [run_json("directory", "stats", "--json", "--directory",
                                     str(INSTITUTIONS / "cancilleria.yaml"))],
    }
    assert set(outputs) == set(specs)
    for command, objects in outputs.items():
        assert objects and all(isinstance(o, dict) for o in objects), command
        for n, obj in enumerate(objects):
            check(obj, specs[command], f"relay {command} #{n}")
    # the typed figures are the stored ones, not strings
    audit = outputs["audit"][0]
    assert audit["recipients"] == 1 and audit["rules"] == ["commercial"] and audit["monitored"] == ["monitored-rule"]
    assert outputs["inventory"][0]["mensajes"] == 1
    assert {o["attempts"] for o in listed} == {0}


def test_a_wrong_type_is_caught() -> None:
    """The checker itself can fail: a count as a string, a list as a joined string, a missing field."""
    spec: Spec = {"n": ("integer", True), "l": ("list of strings", True), "e": ("list of objects", True),
                  "e[].at": ("instant", True)}
    check({"n": 1, "l": ["a"], "e": [{"at": "2026-11-24T11:30:00-05:00"}]}, spec, "ok")
    for bad in ({"n": "1", "l": ["a"], "e": []}, {"n": 1, "l": "a b", "e": []}, {"n": 1, "e": []},
                {"n": 1, "l": [], "e": [{"at": "2026-11-24T11:30:00"}]}, {"n": 1, "l": [], "e": [], "x": 2}):
        with pytest.raises(AssertionError):
            check(bad, spec, "bad")


def run_text(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("RELAY_CONFIG", "RELAY_TRACEBACK")}
    done = subprocess.run([sys.executable, "-m", "relay", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_people_read_the_institutions_time_with_the_zone_name(config: Path) -> None:
    """Issue 26, one time policy: `queue show`, `audit` and `inventory` print instants as `queue list`
    does — '2026-11-24 11:30 -05 (America/Bogota)' — never UTC ISO; the JSON keeps ISO with offsets."""
    c = str(config)
    local = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} -05 \(America/Bogota\)")
    bogota = ZoneInfo("America/Bogota")
    for args in (("queue", "show", "Q1"), ("queue", "show", "Q2"), ("audit",), ("inventory",), ("queue", "list")):
        text = run_text(*args, "--config", c)
        assert local.search(text), (args, text)
        assert not re.search(r"\d{2}:\d{2}:\d{2}\+00:00|T\d{2}:\d{2}", text), (args, text)
    shown = run_text("queue", "show", "Q1", "--config", c)
    created = run_json("queue", "show", "Q1", "--json", "--config", c)[0]["created_at"]
    want = datetime.fromisoformat(created).astimezone(bogota).strftime("%Y-%m-%d %H:%M -05 (America/Bogota)")
    assert f"created_at:   {want}" in shown, shown
    assert re.search(r"deliver_at:   .* \(America/Bogota\) — .* UTC\+0[12]00 for the recipient", shown), shown
    audit = run_text("audit", "--config", c)
    at = run_json("audit", "--json", "--config", c)[0]["at"]
    assert datetime.fromisoformat(at).astimezone(bogota).strftime("%Y-%m-%d %H:%M -05 (America/Bogota)") in audit
