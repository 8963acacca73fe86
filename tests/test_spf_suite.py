"""The OpenSPF test suites (RFC 7208, and RFC 4408 where it agrees with 7208), fetched once from
PyPI with the pyspf sdist (tests/corpora.py): every case's zone is served by a real authoritative
DNS server on loopback (tests/authdns.py) and the relay's own evaluator (relay.mailauth.spf)
queries it through the relay's own resolver (relay.dns.Resolver), exactly as in production.

A case's `result` may list several acceptable results; `explanation` (the exp= text) is compared
when given ("DEFAULT": no explanation published, or one that must be ignored)."""

from __future__ import annotations

import asyncio
import time
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


# --- what the suites do not pin down, through the same server and resolver ---

def test_a_malformed_helo_in_a_macro_is_no_temperror(auth_dns: AuthServer) -> None:
    """A remote client chooses its HELO: a label over 63 octets, or an empty one, expanded by %{h}
    is a name that cannot exist (no match), never a DNS failure that would answer 451."""
    zone: Zone = {"helo.example": [("TXT", ("v=spf1 a:%{h} -all",))], "mx.helo.example": [("A", "192.0.2.1")]}
    for helo, result in (("x" * 64 + ".example", "fail"), ("a..b.example", "fail"), ("mx.helo.example", "pass")):
        case = {"host": "192.0.2.1", "mailfrom": "a@helo.example", "helo": helo, "result": result}
        check(evaluate(auth_dns, zone, case), case)


def test_reverse_lookups_are_cached_and_time_bounded(auth_dns: AuthServer) -> None:
    auth_dns.zone = {
        "ptr.example": [("TXT", ("v=spf1 ptr -all",))],
        "1.2.0.192.in-addr.arpa": [("PTR", "mail.ptr.example")], "mail.ptr.example": [("A", "192.0.2.1")],
        "2.2.0.192.in-addr.arpa": [("PTR", "TIMEOUT")],  # a reverse zone that never answers
    }
    resolver = Resolver(["127.0.0.1"], auth_dns.port, timeout=0.4)

    def check_from(ip: str) -> str:
        return asyncio.run(mailauth.spf(resolver, ip, "ptr.example", "a@ptr.example")).result

    assert check_from("192.0.2.1") == "pass"
    asked = auth_dns.queries
    assert check_from("192.0.2.1") == "pass" and auth_dns.queries == asked  # the PTR and its A: cached
    started = time.monotonic()
    assert check_from("192.0.2.2") == "fail"  # the unanswered PTR: no match, not temperror
    assert time.monotonic() - started < 2


def test_more_than_ten_mx_names_is_a_permerror_not_a_cut(auth_dns: AuthServer) -> None:
    mx = [("MX", (i, f"mx{i}.many.example")) for i in range(11)]
    zone: Zone = {"many.example": [("TXT", ("v=spf1 mx -all",)), *mx],
                  **{f"mx{i}.many.example": [("A", f"192.0.2.{i + 1}")] for i in range(11)}}
    case = {"host": "192.0.2.1", "mailfrom": "a@many.example", "helo": "x.example", "result": "permerror"}
    check(evaluate(auth_dns, zone, case), case)
    zone["many.example"] = zone["many.example"][:-1]  # ten: allowed, and the first one matches
    check(evaluate(auth_dns, zone, {**case, "result": "pass"}), {**case, "result": "pass"})


def test_a_malformed_name_does_not_exist_for_the_resolver(auth_dns: AuthServer) -> None:
    resolver = Resolver(["127.0.0.1"], auth_dns.port, timeout=0.4)
    for name in ("a..b.example", "x" * 64 + ".example", ("y" * 60 + ".") * 5 + "example"):
        assert asyncio.run(resolver.mail_domain(name)) == "none"
    assert resolver.failures == 0


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
def test_a_server_failure_is_a_temperror_where_it_matters_and_nowhere_else(auth_dns: AuthServer, rcode: str) -> None:
    zone: Zone = {
        "broken.example": [("RCODE", rcode)],  # its own record cannot be read: temperror (§4.4)
        "uses.example": [("TXT", ("v=spf1 a:broken.example -all",))],  # a mechanism's lookup fails: temperror
        "ptr.example": [("TXT", ("v=spf1 ptr -all",))],
        "1.2.0.192.in-addr.arpa": [("RCODE", rcode)],  # the client's reverse zone fails: ptr no match
        "exp.example": [("TXT", ("v=spf1 -all exp=broken.example",))],  # the explanation fails: ignored
    }
    for sender, result in (("a@broken.example", "temperror"), ("a@uses.example", "temperror"),
                           ("a@ptr.example", "fail"), ("a@exp.example", "fail")):
        case = {"host": "192.0.2.1", "mailfrom": sender, "helo": "x.example", "result": result,
                **({"explanation": "DEFAULT"} if sender.endswith("exp.example") else {})}
        check(evaluate(auth_dns, zone, case), case)


def test_mx_and_ptr_names_are_asked_for_exactly_as_answered(auth_dns: AuthServer) -> None:
    """Names with characters zone-file text would escape (a space, '@') come back from MX and PTR
    answers label by label, and are asked for again unchanged."""
    zone: Zone = {
        "odd.example": [("TXT", ("v=spf1 mx ptr:odd.example -all",)), ("MX", (0, "mail server.odd.example"))],
        "mail server.odd.example": [("A", "192.0.2.1")],
        "2.2.0.192.in-addr.arpa": [("PTR", "host@2.odd.example")], "host@2.odd.example": [("A", "192.0.2.2")],
    }
    for host in ("192.0.2.1", "192.0.2.2"):
        case = {"host": host, "mailfrom": "a@odd.example", "helo": "x.example", "result": "pass"}
        check(evaluate(auth_dns, zone, case), case)
