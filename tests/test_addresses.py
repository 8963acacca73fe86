"""Strict address parsing: table cases, the CVE-2023-27043 shape, and properties (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.addresses import AddressError, parse_address_list, parse_path


@pytest.mark.parametrize(("header", "addrs", "names"), [
    ("a@b.co", ["a@b.co"], [""]),
    ("Ana <ana@x.gov.co>", ["ana@x.gov.co"], ["Ana"]),
    ('"Pérez, Ana" <ana@X.GOV.CO>, b@y.co', ["ana@x.gov.co", "b@y.co"], ["Pérez, Ana", ""]),
    ("Equipo: a@x.co, b@x.co;, c@x.co", ["a@x.co", "b@x.co", "c@x.co"], ["", "", ""]),
    ("undisclosed-recipients:;", [], []),
    ("=?utf-8?q?Jos=C3=A9_Arenas?= <jose@gmail.com>", ["jose@gmail.com"], ["José Arenas"]),
    ("jose@gmail.com (José Arenas)", ["jose@gmail.com"], ["José Arenas"]),
    ('"quoted local"@x.co', ["quoted local@x.co"], [""]),
    ("<@relay.example:a@x.co>", ["a@x.co"], [""]),
    ("a@x.co,,b@x.co", ["a@x.co", "b@x.co"], ["", ""]),
])
def test_parses(header: str, addrs: list[str], names: list[str]) -> None:
    parsed = parse_address_list(header)
    assert [a.addr for a in parsed] == addrs
    assert [a.display_name for a in parsed] == names


@pytest.mark.parametrize("header", [
    "alice@inst.gov.co <mallory@evil.test>",  # CVE-2023-27043: two readings, refuse both
    "alice@inst.gov.co@evil.test",
    "Ana <ana@x.co",
    "Ana ana@x.co",
    '"unterminated <a@x.co>',
    "a@",
    "@x.co",
    "a..b@x.co",
    "a@x..co",
    "Group: a@x.co",
    "a@x.co b@x.co",
    "a\x00b@x.co",
])
def test_refuses_ambiguous_or_malformed(header: str) -> None:
    with pytest.raises(AddressError):
        parse_address_list(header)


@pytest.mark.parametrize(("path", "addr"), [("<a@x.co>", "a@x.co"), ("<>", ""), ("a@x.co", "a@x.co"),
                                            ("<@hop.example:a@x.co>", "a@x.co")])
def test_smtp_paths(path: str, addr: str) -> None:
    assert parse_path(path) == addr


@pytest.mark.parametrize("path", ["<a@x.co> extra", "Name <a@x.co>", "a@x.co, b@x.co"])
def test_bad_smtp_paths(path: str) -> None:
    with pytest.raises(AddressError):
        parse_path(path)


ATEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~",
                min_size=1, max_size=12)
LOCAL = st.lists(ATEXT, min_size=1, max_size=3).map(".".join)
DOMAIN = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10),
                  min_size=2, max_size=4).map(".".join)
NAME = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(st.lists(st.tuples(NAME, LOCAL, DOMAIN), min_size=1, max_size=5))
def test_round_trip(entries: list[tuple[str, str, str]]) -> None:
    header = ", ".join(f"{_quote(n)} <{loc}@{dom}>" if n else f"{loc}@{dom}" for n, loc, dom in entries)
    parsed = parse_address_list(header)
    assert [(a.display_name, a.local, a.domain) for a in parsed] == [
        (n, loc, dom) for n, loc, dom in entries]


@given(st.text(max_size=200))
def test_never_crashes_on_arbitrary_text(text: str) -> None:
    try:
        parsed = parse_address_list(text)
    except AddressError:
        return
    for address in parsed:
        assert "@" in address.addr and address.domain == address.domain.casefold()


@given(LOCAL, DOMAIN, LOCAL, DOMAIN)
def test_an_address_as_display_name_is_never_accepted(l1: str, d1: str, l2: str, d2: str) -> None:
    """Another address as display name (CVE-2023-27043) is refused; the same address (`a@x <a@x>`,
    which some clients write when they know no name) is one mailbox."""
    header = f"{l1}@{d1} <{l2}@{d2}>"
    if (l1.casefold(), d1) == (l2.casefold(), d2):
        assert [a.addr for a in parse_address_list(header)] == [f"{l1}@{d1}"]
        return
    with pytest.raises(AddressError):
        parse_address_list(header)
