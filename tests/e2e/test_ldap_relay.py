"""`relay serve` with its directory in a real OpenLDAP slapd: refreshes on schedule, rides out the
server going down (at a refresh and at start, from the snapshot), and picks up changes when it is back."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import PASSWORD, RelayProcess, Sink
from tests.test_ldap_directory import Tree, add_person, start_tree


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    t = start_tree(tmp_path / "ldap", ("barrancabermeja",))
    yield t
    t.slapd.stop()


def ldap_section(tree: Tree, tmp_path: Path) -> dict[str, Any]:
    source = yaml.safe_load(tree.sources["barrancabermeja"].read_text(encoding="utf-8"))
    section: dict[str, Any] = source["ldap"]
    section["password_file"] = str(tree.sources["barrancabermeja"].parent / section["password_file"])
    section["snapshot"] = str(tmp_path / "var" / "directory.json")
    section["refresh"] = 1
    return section


def to_list(relay: RelayProcess, login: str = "laura.pinto@barrancabermeja.gov.co") -> tuple[int, bytes]:
    """A funcionario writing to the 900-member list: refused at RCPT by the broadcasters rule."""
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        client.ehlo("pc.barrancabermeja.gov.co")
        client.login(login, PASSWORD)
        client.mail(login)
        code, text = client.rcpt("funcionarios@barrancabermeja.gov.co")
        client.rset()
        return code, text


def wait_for(predicate: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_serve_refreshes_survives_ldap_down_and_starts_from_snapshot(tree: Tree, sink: Sink,
                                                                        tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", directory=tree.slapd.url,
                         ldap=ldap_section(tree, tmp_path),
                         pid_file=str(tmp_path / "var" / "relay.pid")).start()
    try:
        assert relay.wait_events("directory_loaded", 1)
        code, _ = to_list(relay)
        assert code == 550
        # Down at a refresh: the running directory stays, mail is still decided.
        tree.slapd.stop()
        assert relay.wait_events("directory_stale", 1)
        code, _ = to_list(relay)
        assert code == 550
        # Back with a change: the next refresh takes it.
        tree.slapd.start()
        before = len(relay.events("directory_loaded"))
        add_person(tree, "barrancabermeja", "nueva.persona@barrancabermeja.gov.co", "Nueva Persona")
        assert relay.wait_events("directory_loaded", before + 1)
        assert wait_for(lambda: relay.events("directory_loaded")[-1]["people"] == 6)
    finally:
        relay.stop()
    # Down at start, snapshot on disk: the relay starts and decides with it.
    tree.slapd.stop()
    seen = len(relay.events("directory_stale"))
    relay.start()
    try:
        stale = relay.wait_events("directory_stale", seen + 1)
        assert len(stale) > seen and "LDAP unreachable" in stale[-1]["reason"]
        assert "directory.json" in stale[-1]["kept"]  # from the snapshot, not a running directory
        code, _ = to_list(relay)
        assert code == 550
    finally:
        relay.stop()
