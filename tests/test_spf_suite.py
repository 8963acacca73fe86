"""The OpenSPF test suites (RFC 7208, and RFC 4408 where it agrees with 7208), fetched once from
PyPI with the pyspf sdist (tests/corpora.py): every case's zone is served by a real authoritative
DNS server on loopback (tests/authdns.py) and the relay's own evaluator (relay.mailauth.spf)
queries it through the relay's own resolver (relay.dns.Resolver), exactly as in production.

A case's `result` may list several acceptable results; `explanation` (the exp= text) is compared
when given ("DEFAULT": no explanation published, or one that must be ignored)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from relay import mailauth
from relay.dns import Resolver
from tests import corpora
from tests.authdns import AuthServer, Zone

SUITES = corpora.SPF_SUITES

def zone_of(data: dict[str, list[Any]]) -> Zone:
    """The scenario's zonedata as the suite's drivers read it: an SPF (type 99) record is served as
    TXT too unless the name has TXT records of its own (or "TXT: NONE", which means none at all)."""
    zone: Zone = {}
    for name, entries in (data or {}).items():
        records: list[tuple[str, Any]] = []
        generated: list[tuple[str, Any]] = []
        has_txt = False
        for entry in entries or []:
            if entry == "TIMEOUT":
                records.append(("TIMEOUT", None))
                continue
            [(rdtype, value)] = entry.items()
            if rdtype in ("TXT", "SPF"):
                value = (value,) if isinstance(value, str) else tuple(value)
                if value == ("TIMEOUT",):
                    value = "TIMEOUT"
                if rdtype == "TXT":
                    has_txt = True
                else:
                    generated.append(("TXT", value))
                if value == ("NONE",):
                    continue
            records.append((rdtype, value))
        zone[str(name).lower().rstrip(".")] = records + ([] if has_txt else generated)
    return zone


def cases(filename: str) -> list[Any]:
    path = SUITES / filename
    if not path.exists():
        if corpora.required():
            raise RuntimeError(f"{path} missing: python -m tests.corpora")
        return [pytest.param(None, None, marks=pytest.mark.skip(reason="python -m tests.corpora fetches the suites"))]
    found = []
    with path.open(encoding="utf-8") as handle:
        for scenario in yaml.safe_load_all(handle):
            zone = zone_of(scenario.get("zonedata") or {})
            for case_id, case in scenario["tests"].items():
                found.append(pytest.param(zone, case, id=case_id))
    return found


@pytest.fixture(scope="module")
def auth_dns() -> Iterator[AuthServer]:
    server = AuthServer().start()
    yield server
    server.stop()


def evaluate(server: AuthServer, zone: Zone, case: dict[str, Any]) -> mailauth.SpfResult:
    server.zone = zone
    resolver = Resolver(["127.0.0.1"], server.port, timeout=0.4)  # a fresh cache for each case
    mailfrom = str(case.get("mailfrom") or "")
    helo = str(case.get("helo") or "")
    domain = mailfrom.rpartition("@")[2] if "@" in mailfrom else helo
    return asyncio.run(mailauth.spf(resolver, str(case["host"]), domain, mailfrom, helo))


def check(got: mailauth.SpfResult, case: dict[str, Any]) -> None:
    wanted = case["result"] if isinstance(case["result"], list) else [case["result"]]
    assert got.result in wanted, f"{case.get('spec')}: {got.result} ({got.reason}), wanted {wanted}"
    if "explanation" in case:
        assert (got.explanation or "DEFAULT") == case["explanation"]


@pytest.mark.parametrize(("zone", "case"), cases("rfc7208-tests.yml"))
def test_rfc7208(auth_dns: AuthServer, zone: Zone, case: dict[str, Any]) -> None:
    check(evaluate(auth_dns, zone, case), case)


@pytest.mark.parametrize(("zone", "case"), cases("rfc4408-tests.yml"))
def test_rfc4408(auth_dns: AuthServer, zone: Zone, case: dict[str, Any]) -> None:
    """Where RFC 7208 changed a result (type 99 records, the MX limit...), the 2009 suite already
    lists both results; every case passes as written."""
    check(evaluate(auth_dns, zone, case), case)
