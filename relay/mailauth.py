"""Sender authentication for inbound mail: SPF (RFC 7208), DMARC alignment (RFC 7489), and the
Authentication-Results (RFC 8601) of a trusted hop. Asynchronous, through `relay.dns.Resolver`.

SPF: the mechanisms all, ip4, ip6, a, mx, include, exists and the redirect modifier, with the
limit of 10 DNS-querying terms, and macros (RFC 7208 §7) in their domain-specs; ptr never
matches (deprecated, §5.5), and %{p} expands to "unknown" (no reverse lookups).

DKIM (RFC 6376) signatures are verified with dkimpy: the key lookups go through our resolver
first (asynchronous, cached), then the canonicalisation and signature check run in a worker
thread, so a large message never stalls the loop. Ed25519 keys need PyNaCl, which is not
installed: such a signature does not pass.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache

import dkim
import dkim.util
from publicsuffixlist import PublicSuffixList

from relay.dns import Resolver
from relay.rewrite import split_head

MAX_LOOKUPS = 10
MAX_DKIM_SIGNATURES = 5  # more than this on one message are not looked at (each costs a lookup)
_AR_METHOD = re.compile(r"\b(spf|dkim|dmarc)\s*=\s*([a-z]+)([^;]*)", re.I)
_AR_PROP = re.compile(r"\b(smtp\.mailfrom|smtp\.helo|header\.d|header\.i|header\.from)\s*=\s*([^\s;]+)", re.I)


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # the list shipped inside the package: no download


def org_domain(domain: str) -> str:
    """The organizational domain (RFC 7489 §3.2): the public suffix plus one label."""
    domain = domain.casefold().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(domain: str, from_domain: str, mode: str = "r") -> bool:
    domain, from_domain = domain.casefold().rstrip("."), from_domain.casefold().rstrip(".")
    return domain == from_domain if mode == "s" else org_domain(domain) == org_domain(from_domain)


class _Limit(Exception):
    pass


@dataclass
class _Budget:
    lookups: int = 0

    def spend(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _Limit


@dataclass(frozen=True)
class _Who:
    """What SPF macros may expand to: the address, the envelope sender and the HELO name."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    helo: str


_MACRO = re.compile(r"%(?:\{([a-zA-Z])(\d*)(r?)([.\-+,/_=]*)\}|(.))")


class _MacroError(ValueError):
    pass


def expand(spec: str, who: _Who, domain: str) -> str:
    """A domain-spec with its macros expanded (RFC 7208 §7.3); _MacroError on bad syntax."""
    local, _, sender_domain = who.sender.rpartition("@")
    values = {
        "s": who.sender, "l": local or "postmaster", "o": sender_domain, "d": domain, "h": who.helo or domain,
        "i": (str(who.ip) if who.ip.version == 4 else ".".join(who.ip.exploded.replace(":", ""))),
        "v": "in-addr" if who.ip.version == 4 else "ip6", "p": "unknown",
    }

    def one(match: re.Match[str]) -> str:
        letter, digits, reverse, delimiters, escape = match.groups()
        if escape is not None:
            if escape in "%_-":
                return {"%": "%", "_": " ", "-": "%20"}[escape]
            raise _MacroError(f"bad macro escape %{escape}")
        if letter.lower() not in values:
            raise _MacroError(f"bad macro letter {letter}")
        parts = re.split("[" + re.escape(delimiters or ".") + "]", values[letter.lower()])
        if reverse:
            parts.reverse()
        if digits:
            if int(digits) == 0:
                raise _MacroError("zero labels")
            parts = parts[-int(digits):]
        text = ".".join(parts)
        return urllib.parse.quote(text, safe="") if letter.isupper() else text

    if "%" in _MACRO.sub("", spec):
        raise _MacroError("a stray %")
    out = _MACRO.sub(one, spec)
    while len(out) > 253 and "." in out:  # §7.3: drop labels from the left
        out = out.split(".", 1)[1]
    return out


async def check_spf(resolver: Resolver, ip: str, domain: str, sender: str = "", helo: str = "") -> str:
    """pass | fail | softfail | neutral | none | temperror | permerror for `ip` sending as `domain`
    (`sender`: the envelope sender, for macros; postmaster@domain when empty)."""
    try:
        address = ipaddress.ip_address(ip.strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return "permerror"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    domain = domain.casefold().rstrip(".")
    who = _Who(address, sender if "@" in sender else f"postmaster@{domain}", helo)
    try:
        return await _spf(resolver, who, domain, _Budget(), 0)
    except (_Limit, _MacroError):
        return "permerror"


_RESULTS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


async def _spf(resolver: Resolver, who: _Who, domain: str, budget: _Budget, depth: int) -> str:
    if depth > MAX_LOOKUPS:
        return "permerror"
    answer = await resolver.query(domain, "TXT")
    if answer.status == "error":
        return "temperror"
    records = [r for r in answer.records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]
    if not records:
        return "none"
    if len(records) > 1:
        return "permerror"
    redirect = None
    for term in records[0].split()[1:]:
        qualifier = term[0] if term[0] in _RESULTS else "+"
        body = term[1:] if term[0] in _RESULTS else term
        name, sep, value = body.partition(":")
        name = name.lower()
        if "=" in body and not sep:
            key, _, target = body.partition("=")
            if key.lower() == "redirect":
                redirect = expand(target, who, domain)
            continue  # exp= and unknown modifiers
        matched = await _mechanism(resolver, who, domain, name, value, budget, depth)
        if matched is None:
            return "permerror"
        if isinstance(matched, str):
            return matched  # temperror / permerror from an include
        if matched:
            return _RESULTS[qualifier]
    if redirect:
        budget.spend()
        result = await _spf(resolver, who, redirect.casefold().rstrip("."), budget, depth + 1)
        return "permerror" if result == "none" else result
    return "neutral"


_CIDR = re.compile(r"^(.*?)(?:/(\d+))?(?://(\d+))?$")


def _cidr(value: str, who: _Who, domain: str) -> tuple[str, int | None, int | None]:
    """domain-spec[/v4][//v6] of a, mx: the domain (macros expanded, or the current one) and the
    prefix lengths."""
    match = _CIDR.match(value)
    assert match is not None  # the pattern matches any string
    target, four, six = match.groups()
    v4, v6 = (int(four) if four else None), (int(six) if six else None)
    if (v4 is not None and v4 > 32) or (v6 is not None and v6 > 128):
        raise ValueError("prefix too long")
    return (expand(target, who, domain) if target else domain), v4, v6


def _in(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, record: str, v4: int | None, v6: int | None) -> bool:
    try:
        other = ipaddress.ip_address(record)
    except ValueError:
        return False
    if other.version != ip.version:
        return False
    prefix = (v4 if other.version == 4 else v6)
    if prefix is None:
        return other == ip
    return ip in ipaddress.ip_network(f"{other}/{prefix}", strict=False)


async def _addresses(resolver: Resolver, host: str) -> tuple[list[str], bool]:
    found: list[str] = []
    error = False
    for rdtype in ("A", "AAAA"):
        answer = await resolver.query(host, rdtype)
        error |= answer.status == "error"
        found.extend(answer.records if answer.status == "ok" else ())
    return found, error


async def _mechanism(resolver: Resolver, who: _Who, domain: str, name: str, value: str, budget: _Budget,
                     depth: int) -> bool | str | None:
    """True/False for a match, a result string to return as is, None for a syntax error."""
    ip = who.ip
    try:
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return ip in ipaddress.ip_network(value, strict=False)
        if name == "a":
            budget.spend()
            host, v4, v6 = _cidr(value, who, domain)
            records, error = await _addresses(resolver, host)
            if any(_in(ip, r, v4, v6) for r in records):
                return True
            return "temperror" if error else False
        if name == "mx":
            budget.spend()
            host, v4, v6 = _cidr(value, who, domain)
            mx = await resolver.query(host, "MX")
            if mx.status == "error":
                return "temperror"
            for record in mx.records[:10]:
                records, _ = await _addresses(resolver, record.split(" ", 1)[1])
                if any(_in(ip, r, v4, v6) for r in records):
                    return True
            return False
        if name == "include":
            budget.spend()
            if not value:
                return None
            result = await _spf(resolver, who, expand(value, who, domain).casefold().rstrip("."), budget, depth + 1)
            if result == "pass":
                return True
            if result in ("temperror", "permerror"):
                return result
            if result == "none":
                return "permerror"
            return False
        if name == "exists":
            budget.spend()
            if not value:
                return None
            answer = await resolver.query(expand(value, who, domain), "A")
            return "temperror" if answer.status == "error" else answer.found
        if name == "ptr":
            budget.spend()
            return False  # deprecated (RFC 7208 §5.5): never matches here
    except ValueError:
        return None
    return None


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror
    policy: str  # none | quarantine | reject | ""


async def check_dmarc(resolver: Resolver, from_domain: str, spf_result: str | None, spf_domain: str,
                      dkim_domains: tuple[str, ...] = ()) -> DmarcResult:
    """DMARC for the From domain: pass when SPF passed for an aligned domain or an aligned DKIM
    signature passed; the policy published (the organizational domain's `sp=` for a subdomain)."""
    from_domain = from_domain.casefold().rstrip(".")
    tags, subdomain = await _dmarc_record(resolver, from_domain)
    if tags is None:
        return DmarcResult("temperror", "")
    if not tags:
        return DmarcResult("none", "")
    policy = tags.get("sp", tags.get("p", "none")) if subdomain else tags.get("p", "none")
    spf_ok = spf_result == "pass" and bool(spf_domain) and aligned(spf_domain, from_domain, tags.get("aspf", "r"))
    dkim_ok = any(aligned(d, from_domain, tags.get("adkim", "r")) for d in dkim_domains)
    return DmarcResult("pass" if spf_ok or dkim_ok else "fail", policy.lower())


async def _dmarc_record(resolver: Resolver, domain: str) -> tuple[dict[str, str] | None, bool]:
    for name, subdomain in ((domain, False), (org_domain(domain), True)):
        if subdomain and name == domain:
            break
        answer = await resolver.query(f"_dmarc.{name}", "TXT")
        if answer.status == "error":
            return None, False
        records = [r for r in answer.records if r.replace(" ", "").lower().startswith("v=dmarc1")]
        if len(records) == 1:
            tags = {}
            for part in records[0].split(";"):
                key, _, value = part.strip().partition("=")
                if key:
                    tags[key.strip().lower()] = value.strip()
            return tags, subdomain
    return {}, False


@dataclass(frozen=True)
class ReportedAuth:
    spf: str | None
    spf_domain: str
    dkim: tuple[str, ...]
    dmarc: str | None


def trusted_results(headers: list[tuple[str, str]], authserv_id: str) -> ReportedAuth | None:
    """The topmost Authentication-Results header written by our trusted hop (`authserv_id`);
    results under any other id could come from the sender and are ignored (RFC 8601 §5)."""
    for name, value in headers:
        if name.lower() != "authentication-results":
            continue
        server, _, rest = value.partition(";")
        if server.strip().split()[0:1] != [authserv_id]:
            continue
        spf, spf_domain, dkim, dmarc = None, "", [], None
        for method, result, props in _AR_METHOD.findall(rest):
            found = {k.lower(): v.strip("<>").rpartition("@")[2] for k, v in _AR_PROP.findall(props)}
            method, result = method.lower(), result.lower()
            if method == "spf" and spf is None:
                spf, spf_domain = result, found.get("smtp.mailfrom") or found.get("smtp.helo", "")
            elif method == "dkim" and result == "pass" and (d := found.get("header.d") or found.get("header.i")):
                dkim.append(d.casefold())
            elif method == "dmarc" and dmarc is None:
                dmarc = result
        return ReportedAuth(spf, spf_domain, tuple(dkim), dmarc)
    return None


@dataclass(frozen=True)
class DkimResult:
    passed: tuple[str, ...]  # the d= domains of the signatures that verified
    temperror: bool  # a key lookup failed: a signature could not be checked


_DKIM_LOG = logging.getLogger("relay.dkim")
_DKIM_LOG.addHandler(logging.NullHandler())
_DKIM_LOG.propagate = False  # dkimpy reports every bad signature as an error: our audit says it once


async def verify_dkim(resolver: Resolver, content: bytes, wanted: str | None = None) -> DkimResult:
    """Verify the message's DKIM signatures (the first MAX_DKIM_SIGNATURES; only those whose d= is
    aligned with `wanted`, relaxed, when given)."""
    fields, _ = split_head(content)
    signatures = [f.partition(b":")[2] for f in fields if f.partition(b":")[0].strip().lower() == b"dkim-signature"]
    keys: dict[bytes, str | None] = {}
    candidates: list[tuple[int, str]] = []
    temperror = False
    for index, value in enumerate(signatures[:MAX_DKIM_SIGNATURES]):
        try:
            tags = dkim.util.parse_tag_value(value)
            domain = tags[b"d"].decode("ascii").casefold().rstrip(".")
            selector = tags[b"s"].decode("ascii")
        except (dkim.util.InvalidTagValueList, KeyError, UnicodeDecodeError):
            continue
        if not domain or not selector or (wanted and not aligned(domain, wanted)):
            continue
        name = f"{selector}._domainkey.{domain}"
        answer = await resolver.query(name, "TXT")
        if answer.status == "error":
            temperror = True
            continue
        keys[(tags[b"s"] + b"._domainkey." + tags[b"d"] + b".").lower()] = answer.records[0] if answer.found else None
        candidates.append((index, domain))
    if not candidates:
        return DkimResult((), temperror)
    passed = await asyncio.to_thread(_verify_signatures, content, candidates, keys)
    return DkimResult(passed, temperror)


def _verify_signatures(content: bytes, candidates: list[tuple[int, str]],
                       keys: dict[bytes, str | None]) -> tuple[str, ...]:
    def txt(name: bytes, timeout: float = 5) -> str | None:
        return keys.get(name.lower())

    passed = []
    try:
        verifier = dkim.DKIM(content, logger=_DKIM_LOG)  # the message parsed once for every signature
    except Exception:  # a message dkimpy cannot parse has no valid signature
        return ()
    for index, domain in candidates:
        try:
            if verifier.verify(idx=index, dnsfunc=txt):
                passed.append(domain)
        except Exception:  # dkimpy raises many kinds on hostile input; any of them means "did not verify"
            continue
    return tuple(dict.fromkeys(passed))
