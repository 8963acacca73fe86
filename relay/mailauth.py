"""Sender authentication for inbound mail: SPF (RFC 7208), DMARC alignment (RFC 7489), and the
Authentication-Results (RFC 8601) of a trusted hop. Asynchronous, through `relay.dns.Resolver`.

SPF: check_host() of RFC 7208 — the whole record checked against the grammar first (a syntax
error anywhere is a permerror), all eight mechanisms (ptr and %{p} through reverse lookups of the
same cached, time-bounded resolver), redirect= and exp= (the explanation of a fail), unknown
modifiers ignored (RFC 6652's rr=e:f too), macros (§7), the limits of §4.6.4 (10 DNS-querying
terms, 2 void lookups, 10 MX or PTR names) and malformed names as names that do not exist (§4.3:
a HELO with a 64-octet label in %{h} is no temperror). It passes every case of the OpenSPF RFC
7208 and RFC 4408 suites (tests/test_spf_suite.py).

DKIM (RFC 6376) signatures are verified with dkimpy: the key lookups go through our resolver
first (asynchronous, cached), then the canonicalisation and signature check run in a worker
thread, so a large message never stalls the loop. Ed25519 signatures (RFC 8463) verify through
dkimpy with PyNaCl (a dependency).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
import urllib.parse
from dataclasses import dataclass
from functools import lru_cache

import dkim
import dkim.util
from publicsuffixlist import PublicSuffixList

from relay.dns import Resolver
from relay.rewrite import split_head

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


class _PermError(Exception):
    """check_host() ends with permerror: a syntax error, or a processing limit exceeded."""


class _TempError(Exception):
    """check_host() ends with temperror: DNS did not answer."""


class _MacroError(_PermError, ValueError):
    """A macro-string that does not parse (RFC 7208 §7.1)."""


@dataclass(frozen=True)
class _Who:
    """What SPF macros may expand to: the address, the envelope sender and the HELO name."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    helo: str
    receiver: str = "unknown"


@dataclass(frozen=True)
class SpfResult:
    result: str  # pass | fail | softfail | neutral | none | temperror | permerror
    explanation: str = ""  # for a fail: the domain's exp= text, expanded (RFC 7208 §6.2); "" if none
    reason: str = ""  # for a permerror: what was wrong (for the audit trail)


# --- record syntax (RFC 7208 §4.6.1, §5, §6, §7.1) ---

_RESULTS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.S)
_MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9_.\-]*)(.*)", re.S)
_IP4 = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}"
_IP4_TERM = re.compile(rf":({_IP4})(?:/(0|[1-9]\d?))?")
_IP6_TERM = re.compile(r":([0-9A-Fa-f:.]+)(?:/(0|[1-9]\d{0,2}))?")
_DUAL_CIDR = re.compile(r"(.*?)(?:/(0|[1-9]\d?))?(?://(0|[1-9]\d{0,2}))?", re.S)
_TOKEN = re.compile(r"%\{([A-Za-z])(\d*)(r?)([.\-+,/_=]*)\}|%[%_\-]|%|[^%]+", re.I | re.S)
_TOPLABEL = re.compile(r"\.(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9])\.?$")
_LETTERS = frozenset("slodiphv")  # in domain-specs; c, r and t only in explanation text (§7.1)
_EXP_LETTERS = _LETTERS | frozenset("crt")


@dataclass(frozen=True)
class _Mechanism:
    qualifier: str
    name: str  # all | include | a | mx | ptr | ip4 | ip6 | exists
    spec: str = ""  # the domain-spec, unexpanded ("": the current domain)
    v4: int | None = None
    v6: int | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None


@dataclass(frozen=True)
class _Record:
    mechanisms: tuple[_Mechanism, ...]
    redirect: str | None
    exp: str | None


def _tokens(text: str, letters: frozenset[str], space: bool = False) -> list[re.Match[str]]:
    """The macro-string's tokens; _MacroError on a stray '%', an unknown letter or a character
    that is not visible ASCII (space too in explanation text)."""
    found = []
    for token in _TOKEN.finditer(text):
        piece = token.group(0)
        if piece == "%":
            raise _MacroError(f"a '%' that starts no macro in {text!r}")
        if token.group(1) is not None:
            if token.group(1).lower() not in letters:
                raise _MacroError(f"macro letter {token.group(1)!r} not allowed here")
            if token.group(2) and int(token.group(2)) == 0:
                raise _MacroError("a macro keeping zero labels")
        elif not piece.startswith("%") and not all(0x21 <= ord(c) <= 0x7E or (space and c == " ") for c in piece):
            raise _MacroError(f"a character outside visible ASCII in {text!r}")
        found.append(token)
    return found


def _domain_spec(spec: str, letters: frozenset[str] = _LETTERS) -> str:
    """`spec` if it is a valid domain-spec (macro-string domain-end), else _PermError."""
    tokens = _tokens(spec, letters)
    if not tokens:
        raise _PermError("an empty domain-spec")
    tail = ""
    for token in reversed(tokens):
        if token.group(0).startswith("%"):
            break
        tail = token.group(0) + tail
    if tail and not _TOPLABEL.search(tail):  # (no tail: it ends in a macro-expand)
        raise _PermError(f"{spec!r} does not end in a macro or a valid top label")
    return spec


def _cidr(text: str, bits: int) -> int | None:
    if not text:
        return None
    if int(text) > bits:
        raise _PermError(f"prefix /{text} too long")
    return int(text)


@lru_cache(maxsize=2048)
def parse_record(record: str) -> _Record:
    """An SPF record checked against the whole grammar up front (§4.6: a syntax error anywhere is
    a permerror, even after a mechanism that would match)."""
    if not record.isascii():
        raise _PermError("non-ASCII characters in the record")
    mechanisms: list[_Mechanism] = []
    redirect = exp = None
    for term in record.split(" ")[1:]:
        if not term:
            continue  # several spaces between terms are allowed (trailing ones too)
        modifier = _MODIFIER.fullmatch(term)
        if modifier:
            key, value = modifier.group(1).lower(), modifier.group(2)
            if key in ("redirect", "exp"):
                if (redirect if key == "redirect" else exp) is not None:
                    raise _PermError(f"{key}= twice")
                _domain_spec(value)
                if key == "redirect":
                    redirect = value
                else:
                    exp = value
            else:
                _tokens(value, _EXP_LETTERS)  # unknown modifiers are ignored, but must parse (RFC 6652's rr=e:f...)
            continue
        match = _MECHANISM.fullmatch(term)
        if not match:
            raise _PermError(f"{term!r} is neither a mechanism nor a modifier")
        qualifier, name, rest = match.group(1) or "+", match.group(2).lower(), match.group(3)
        mechanisms.append(_mechanism(qualifier, name, rest, term))
    return _Record(tuple(mechanisms), redirect, exp)


def _mechanism(qualifier: str, name: str, rest: str, term: str) -> _Mechanism:
    if name == "all":
        if rest:
            raise _PermError(f"{term!r}: all takes no argument")
        return _Mechanism(qualifier, name)
    if name in ("include", "exists"):
        if not rest.startswith(":"):
            raise _PermError(f"{term!r}: {name} needs a domain")
        return _Mechanism(qualifier, name, _domain_spec(rest[1:]))
    if name == "ptr":
        if rest and not rest.startswith(":"):
            raise _PermError(f"{term!r}: ptr takes no prefix length")
        return _Mechanism(qualifier, name, _domain_spec(rest[1:]) if rest else "")
    if name in ("a", "mx"):
        if rest and rest[0] not in ":/":
            raise _PermError(f"{term!r}: unknown mechanism")
        match = _DUAL_CIDR.fullmatch(rest)
        assert match is not None  # the pattern matches any string
        spec, four, six = match.groups()
        if spec and not spec.startswith(":"):
            raise _PermError(f"{term!r}: bad prefix length")
        spec = _domain_spec(spec[1:]) if spec else ""
        return _Mechanism(qualifier, name, spec, _cidr(four, 32), _cidr(six, 128))
    if name == "ip4":
        match = _IP4_TERM.fullmatch(rest)
        if not match:
            raise _PermError(f"{term!r}: not an IPv4 network")
        four = _cidr(match.group(2), 32)
        return _Mechanism(qualifier, name, network=ipaddress.IPv4Network(
            f"{match.group(1)}/{32 if four is None else four}", strict=False))
    if name == "ip6":
        match = _IP6_TERM.fullmatch(rest)
        try:
            address = ipaddress.IPv6Address(match.group(1)) if match else None
        except ValueError:
            address = None
        if match is None or address is None:
            raise _PermError(f"{term!r}: not an IPv6 network")
        six = _cidr(match.group(2), 128)
        return _Mechanism(qualifier, name, network=ipaddress.IPv6Network(
            f"{address}/{128 if six is None else six}", strict=False))
    raise _PermError(f"{term!r}: unknown mechanism")


# --- macros (RFC 7208 §7) ---

def expand(spec: str, who: _Who, domain: str, p: str = "unknown", explanation: bool = False) -> str:
    """A macro-string with its macros expanded (RFC 7208 §7.3); _MacroError on bad syntax. A domain
    name (not `explanation` text) longer than 253 characters loses labels on the left (§7.3)."""
    local, _, sender_domain = who.sender.rpartition("@")
    ip = who.ip
    values = {
        "s": who.sender, "l": local or "postmaster", "o": sender_domain, "d": domain, "h": who.helo or domain,
        "i": str(ip) if ip.version == 4 else ".".join(ip.exploded.replace(":", "").upper()),
        "v": "in-addr" if ip.version == 4 else "ip6", "p": p,
        "c": str(ip), "r": who.receiver or "unknown", "t": str(int(time.time())),
    }
    out = []
    for token in _tokens(spec, _EXP_LETTERS if explanation else _LETTERS, space=explanation):
        letter, digits, reverse, delimiters = token.groups()
        piece = token.group(0)
        if letter is None:
            out.append({"%%": "%", "%_": " ", "%-": "%20"}.get(piece, piece))
            continue
        parts = re.split("[" + re.escape(delimiters or ".") + "]", values[letter.lower()])
        if reverse:
            parts.reverse()
        if digits:
            parts = parts[-int(digits):]
        text = ".".join(parts)
        out.append(urllib.parse.quote(text, safe="") if letter.isupper() else text)
    result = "".join(out)
    if not explanation:
        while len(result.rstrip(".")) > 253 and "." in result:  # §7.3: drop labels from the left
            result = result.split(".", 1)[1]
    return result


def valid_name(name: str, multi_label: bool = False) -> bool:
    """A name a DNS query can be made for (RFC 1035: labels of 1 to 63 octets, 253 in all); with
    `multi_label`, a domain check_host() may start from (RFC 7208 §4.3: no single label, no literal)."""
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    if not name or len(name) > 253 or not all(0 < len(label) <= 63 for label in labels):
        return False
    return not multi_label or (len(labels) > 1 and not name.startswith("["))


# --- evaluation (RFC 7208 §4, §5) ---

MAX_LOOKUPS = 10  # terms that query DNS: include, a, mx, ptr, exists, redirect (§4.6.4)
MAX_VOID = 2  # lookups answering NXDOMAIN or no records (§4.6.4)
MAX_NAMES = 10  # MX names per mx; PTR names per ptr or %{p} (§4.6.4)
MAX_SECONDS = 20.0  # a whole check_host(); over it, temperror (§4.6.4, "at least 20 seconds")


@dataclass
class _State:
    resolver: Resolver
    who: _Who
    lookups: int = 0
    voids: int = 0
    names: list[str] | None = None  # the validated PTR names of the address, looked up once

    def spend(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _PermError(f"more than {MAX_LOOKUPS} DNS-querying terms")

    def void(self) -> None:
        self.voids += 1
        if self.voids > MAX_VOID:
            raise _PermError(f"more than {MAX_VOID} void lookups")


@dataclass(frozen=True)
class _Outcome:
    result: str
    exp: str | None = None  # the exp= of the record whose mechanism failed
    domain: str = ""


async def spf(resolver: Resolver, ip: str, domain: str, sender: str = "", helo: str = "",
              receiver: str = "unknown") -> SpfResult:
    """check_host() (RFC 7208 §4) for `ip` sending as `domain`: `sender` is the envelope sender (for
    macros; postmaster@domain when empty, postmaster@ when it has no local part)."""
    try:
        address = ipaddress.ip_address(ip.strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return SpfResult("permerror", reason="not an IP address")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # §5: an IPv4-mapped address is IPv4
    domain = domain.rstrip(".")
    local, at, sender_domain = sender.rpartition("@")
    sender = f"{local or 'postmaster'}@{sender_domain}" if at else f"postmaster@{domain}"
    state = _State(resolver, _Who(address, sender, helo, receiver))
    if not valid_name(domain, multi_label=True):
        return SpfResult("none")  # §4.3: a malformed domain has no SPF record
    try:
        outcome = await asyncio.wait_for(_check_host(state, domain), MAX_SECONDS)
    except _PermError as error:
        return SpfResult("permerror", reason=str(error))
    except (_TempError, TimeoutError):
        return SpfResult("temperror")
    explanation = ""
    if outcome.result == "fail" and outcome.exp is not None:
        explanation = await _explanation(state, outcome.exp, outcome.domain)
    return SpfResult(outcome.result, explanation)


async def check_spf(resolver: Resolver, ip: str, domain: str, sender: str = "", helo: str = "") -> str:
    """pass | fail | softfail | neutral | none | temperror | permerror for `ip` sending as `domain`."""
    return (await spf(resolver, ip, domain, sender, helo)).result


async def _check_host(state: _State, domain: str) -> _Outcome:
    answer = await state.resolver.query(domain, "TXT")
    if answer.status == "error":
        raise _TempError
    records = [r for r in answer.records if r[:6].lower() == "v=spf1" and (len(r) == 6 or r[6] == " ")]
    if not records:
        return _Outcome("none")
    if len(records) > 1:
        raise _PermError(f"{len(records)} SPF records at {domain}")
    record = parse_record(records[0])
    for mechanism in record.mechanisms:
        if await _matches(state, mechanism, domain):
            return _Outcome(_RESULTS[mechanism.qualifier], record.exp, domain)
    if record.redirect is not None:  # only reached without an "all" (§6.1)
        state.spend()
        target = await _expand_name(state, record.redirect, domain)
        outcome = await _check_host(state, target) if valid_name(target) else _Outcome("none")
        if outcome.result == "none":
            raise _PermError(f"redirect={target}: no SPF record")
        return outcome
    return _Outcome("neutral")


async def _expand_name(state: _State, spec: str, domain: str) -> str:
    p = await _p_macro(state, domain) if "%{p" in spec.lower() else "unknown"
    return expand(spec, state.who, domain, p).rstrip(".")


def _in(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, record: str, v4: int | None, v6: int | None) -> bool:
    try:
        other = ipaddress.ip_address(record)
    except ValueError:
        return False
    if other.version != ip.version:
        return False
    prefix = v4 if other.version == 4 else v6
    if prefix is None:
        return other == ip
    return ip in ipaddress.ip_network(f"{other}/{prefix}", strict=False)


async def _matches(state: _State, mechanism: _Mechanism, domain: str) -> bool:
    ip, name = state.who.ip, mechanism.name
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        assert mechanism.network is not None
        return ip.version == mechanism.network.version and ip in mechanism.network
    state.spend()
    target = await _expand_name(state, mechanism.spec, domain) if mechanism.spec else domain
    if name == "include":
        outcome = await _check_host(state, target) if valid_name(target) else _Outcome("none")
        if outcome.result == "none":
            raise _PermError(f"include:{target}: no SPF record")
        return outcome.result == "pass"  # its fail, softfail, neutral: no match; its errors are ours
    if not valid_name(target):
        state.void()  # a name no query can be made for: as if it did not exist (§4.3, §5)
        return False
    if name == "exists":
        return bool(await _lookup(state, target, "A"))
    rdtype = "A" if ip.version == 4 else "AAAA"
    if name == "a":
        return any(_in(ip, r, mechanism.v4, mechanism.v6) for r in await _lookup(state, target, rdtype))
    if name == "mx":
        hosts = [r.split(" ", 1)[1] for r in await _lookup(state, target, "MX")]
        if len(hosts) > MAX_NAMES:
            raise _PermError(f"mx:{target}: more than {MAX_NAMES} MX names")
        for host in hosts:
            if host in ("", ".") or not valid_name(host):
                continue  # the null MX (RFC 7505)
            answer = await state.resolver.query(host, rdtype)
            if answer.status == "error":
                raise _TempError
            if any(_in(ip, r, mechanism.v4, mechanism.v6) for r in answer.records):
                return True
        return False
    # ptr (§5.5): a validated name of the address that is the target or under it
    names = await _validated_names(state, count_void=True)
    target = target.casefold()
    return any(n == target or n.endswith("." + target) for n in names)


async def _lookup(state: _State, name: str, rdtype: str) -> tuple[str, ...]:
    answer = await state.resolver.query(name, rdtype)
    if answer.status == "error":
        raise _TempError
    if not answer.records:
        state.void()
    return answer.records


async def _validated_names(state: _State, count_void: bool = False) -> list[str]:
    """The names of the address's PTR records (the first MAX_NAMES) whose own A/AAAA records contain
    it (§5.5); looked up once per check. DNS errors skip a name; the PTR query itself failing means
    no names — never a temperror (the sender does not control the client's reverse zone)."""
    if state.names is None:
        ip = state.who.ip
        answer = await state.resolver.reverse(str(ip))
        if not answer.records and answer.status != "error" and count_void:
            state.void()
        names = []
        for name in answer.records[:MAX_NAMES]:
            if not valid_name(name):
                continue
            addresses = await state.resolver.query(name, "A" if ip.version == 4 else "AAAA")
            if any(_in(ip, r, None, None) for r in addresses.records):
                names.append(name.casefold().rstrip("."))
        state.names = names
    return state.names


async def _p_macro(state: _State, domain: str) -> str:
    """%{p}: a validated name of the address — the domain itself, else one under it, else any."""
    names = await _validated_names(state)
    domain = domain.casefold().rstrip(".")
    for wanted in (lambda n: n == domain, lambda n: n.endswith("." + domain), lambda n: True):
        for name in names:
            if wanted(name):
                return name
    return "unknown"


async def _explanation(state: _State, spec: str, domain: str) -> str:
    """The exp= text (§6.2): one TXT record, ASCII, a valid macro-string; anything else, none."""
    try:
        target = await _expand_name(state, spec, domain)
        if not valid_name(target):
            return ""
        answer = await state.resolver.query(target, "TXT")
        if answer.status != "ok" or len(answer.records) != 1 or not answer.records[0].isascii():
            return ""
        text = answer.records[0]
        p = await _p_macro(state, domain) if "%{p" in text.lower() else "unknown"
        return expand(text, state.who, domain, p, explanation=True)
    except _PermError:
        return ""


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
        return _reported(rest)
    return None


def _reported(results: str) -> ReportedAuth:
    """The spf, dkim and dmarc results of an Authentication-Results value (after the authserv-id)."""
    spf, spf_domain, dkim, dmarc = None, "", [], None
    for method, result, props in _AR_METHOD.findall(results):
        found = {k.lower(): v.strip("<>").rpartition("@")[2] for k, v in _AR_PROP.findall(props)}
        method, result = method.lower(), result.lower()
        if method == "spf" and spf is None:
            spf, spf_domain = result, found.get("smtp.mailfrom") or found.get("smtp.helo", "")
        elif method == "dkim" and result == "pass" and (d := found.get("header.d") or found.get("header.i")):
            dkim.append(d.casefold())
        elif method == "dmarc" and dmarc is None:
            dmarc = result
    return ReportedAuth(spf, spf_domain, tuple(dkim), dmarc)


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


# --- ARC (RFC 8617) ---

MAX_ARC_SETS = 10  # a longer chain is not looked at (each set costs two key lookups)


@dataclass(frozen=True)
class ArcResult:
    cv: str  # pass | fail | none (no ARC sets) | untrusted (the newest seal is not a trusted sealer's)
    sealer: str = ""  # d= of the newest ARC-Seal
    reported: ReportedAuth | None = None  # what that sealer saw on arrival (its ARC-Authentication-Results)


async def verify_arc(resolver: Resolver, content: bytes, trusted: frozenset[str]) -> ArcResult:
    """The ARC chain of a forwarded message (RFC 8617 §5.2), when its newest seal is a trusted
    sealer's: every ARC-Seal and the newest ARC-Message-Signature verified with dkimpy (keys looked
    up through our resolver first, the check in a worker thread). On pass, what the sealer's
    ARC-Authentication-Results reports — the SPF/DKIM/DMARC it saw before it changed the message."""
    fields, _ = split_head(content)
    seals: list[tuple[int, dict[bytes, bytes]]] = []
    signatures: list[dict[bytes, bytes]] = []
    for field in fields:
        name, _, value = field.partition(b":")
        name = name.strip().lower()
        if name not in (b"arc-seal", b"arc-message-signature"):
            continue
        try:
            tags = dkim.util.parse_tag_value(value)
            instance = int(tags[b"i"])
        except (dkim.util.InvalidTagValueList, KeyError, ValueError):
            return ArcResult("fail")
        if name == b"arc-seal":
            seals.append((instance, tags))
        else:
            signatures.append(tags)
    if not seals:
        return ArcResult("none")
    newest, seal = max(seals, key=lambda s: s[0])
    sealer = seal.get(b"d", b"").decode("ascii", "replace").casefold().rstrip(".")
    if sealer not in trusted:
        return ArcResult("untrusted", sealer)
    if newest > MAX_ARC_SETS or len(seals) > MAX_ARC_SETS or len(signatures) > MAX_ARC_SETS:
        return ArcResult("fail", sealer)
    keys: dict[bytes, str | None] = {}
    for tags in [t for _, t in seals] + signatures:
        selector, domain = tags.get(b"s", b""), tags.get(b"d", b"")
        qname = (selector + b"._domainkey." + domain + b".").lower()
        if not selector or not domain or qname in keys:
            continue
        answer = await resolver.query(qname.decode("ascii", "replace"), "TXT")
        if answer.status == "error":
            return ArcResult("fail", sealer)  # unverifiable: as if there were no chain
        keys[qname] = answer.records[0] if answer.found else None
    cv, aar = await asyncio.to_thread(_verify_arc, content, keys)
    if cv != "pass" or aar is None:
        return ArcResult(cv, sealer)
    _, _, results = aar.partition(b";")  # after "i=N;": "authserv-id; method=result ..."
    _, _, results = results.partition(b";")
    return ArcResult("pass", sealer, _reported(results.decode("utf-8", "replace")))


def _verify_arc(content: bytes, keys: dict[bytes, str | None]) -> tuple[str, bytes | None]:
    def txt(name: bytes, timeout: float = 5) -> str | None:
        return keys.get(name.lower())

    try:
        cv, results, _ = dkim.ARC(content, logger=_DKIM_LOG).verify(dnsfunc=txt)
    except Exception:  # dkimpy raises many kinds on hostile input: no valid chain
        return "fail", None
    if cv != dkim.CV_Pass or not results:
        return ("none" if cv == dkim.CV_None else "fail"), None
    return "pass", results[0].get("aar-value")  # results[0]: the newest instance


def arc_vouches(arc: ArcResult, from_domain: str) -> bool:
    """A trusted sealer's verified chain says the message authenticated as our From domain when the
    sealer received it: DMARC pass, or an SPF or DKIM pass aligned with the From domain."""
    reported = arc.reported
    if arc.cv != "pass" or reported is None or reported.dmarc == "fail":
        return False
    return reported.dmarc == "pass" or (reported.spf == "pass" and bool(reported.spf_domain)
                                        and aligned(reported.spf_domain, from_domain)) \
        or any(aligned(d, from_domain) for d in reported.dkim)
