"""Asynchronous DNS for the front-ends (dnspython): cached with each answer's TTL, bounded by a
timeout, never raising — a failure is an answer with status "error" that the caller turns into a
temporary refusal or a pass, as configured. The policy core never calls this; it reads the facts.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

Status = Literal["ok", "nxdomain", "nodata", "error"]
NEGATIVE_TTL = 300.0  # seconds a "no such name / no such record" answer is kept (capped by the zone's SOA)
MAX_TTL = 86400.0


@dataclass(frozen=True)
class Answer:
    status: Status
    records: tuple[str, ...] = ()
    error: str = ""

    @property
    def found(self) -> bool:
        return self.status == "ok" and bool(self.records)


def _qname(name: str) -> dns.name.Name:
    """The query name: an ASCII name label by label as written — SPF macros can expand to any
    visible character ("%", "/", ":"...), which zone-file syntax would read as escapes —, other
    names through IDNA as dnspython does."""
    if not name.isascii():
        return dns.name.from_text(name)
    if name in ("", "."):
        return dns.name.root
    return dns.name.Name([label.encode("ascii") for label in name.split(".")] + [b""])


def _text(name: dns.name.Name) -> str:
    """A name as its labels say, without zone-file escapes (so _qname asks for the same name)."""
    return ".".join(label.decode("ascii", "replace") for label in name.labels if label)


class Resolver:
    """One cache per relay; `lookups` and `hits` count for the metrics and tests."""

    def __init__(self, nameservers: list[str] | None = None, port: int = 53, timeout: float = 3.0,
                 cache_size: int = 20000) -> None:
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
            self._resolver.port = port
        else:
            self._resolver = dns.asyncresolver.Resolver()  # /etc/resolv.conf
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._cache: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()
        self.cache_size = cache_size
        self.lookups = 0
        self.hits = 0
        self.failures = 0

    async def query(self, name: str, rdtype: str) -> Answer:
        key = (name.casefold().rstrip("."), rdtype)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            self._cache.move_to_end(key)
            self.hits += 1
            return cached[1]
        self.lookups += 1
        answer, ttl = await self._ask(key[0], rdtype)
        if answer.status == "error":
            self.failures += 1
        else:
            self._cache[key] = (time.monotonic() + ttl, answer)
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return answer

    async def _ask(self, name: str, rdtype: str) -> tuple[Answer, float]:
        try:
            qname = _qname(name)
        except (dns.exception.DNSException, ValueError, UnicodeError):
            # a label over 63 octets, an empty label, over 255 in all: no such name can exist, and no
            # query can be made for it — an answer (the name does not exist), never a DNS failure
            return Answer("nxdomain", error="malformed name"), NEGATIVE_TTL
        try:
            result = await self._resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer("nxdomain"), NEGATIVE_TTL
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as error:
            return Answer("error", error=type(error).__name__), 0.0
        except (dns.exception.DNSException, ValueError, OSError) as error:
            return Answer("error", error=f"{type(error).__name__}: {str(error)[:100]}"), 0.0
        if result.rrset is None:
            return Answer("nodata"), NEGATIVE_TTL
        ttl = min(float(result.rrset.ttl), MAX_TTL)
        if rdtype == "TXT":
            records = tuple(b"".join(r.strings).decode("utf-8", "replace") for r in result.rrset)
        elif rdtype == "MX":
            records = tuple(f"{r.preference} {_text(r.exchange)}"
                            for r in sorted(result.rrset, key=lambda r: r.preference))
        elif rdtype in ("PTR", "CNAME"):
            records = tuple(_text(r.target) for r in result.rrset)
        else:
            records = tuple(r.to_text().rstrip(".") for r in result.rrset)
        return Answer("ok", records), ttl

    async def reverse(self, ip: str) -> Answer:
        """The PTR names of an address (reverse lookup), cached and time-bounded like the rest."""
        return await self.query(ipaddress.ip_address(ip).reverse_pointer, "PTR")

    async def mail_domain(self, domain: str) -> Literal["mail", "none", "error"]:
        """Whether `domain` can receive mail (RFC 5321 §5.1): an MX other than the null MX
        (RFC 7505), or else an address record. "error" when DNS did not answer."""
        mx = await self.query(domain, "MX")
        if mx.status == "error":
            return "error"
        if mx.found:
            hosts = [r.split(" ", 1)[1] for r in mx.records]
            return "none" if hosts in ([""], ["."]) else "mail"
        if mx.status == "nxdomain":
            return "none"
        for rdtype in ("A", "AAAA"):
            address = await self.query(domain, rdtype)
            if address.status == "error":
                return "error"
            if address.found:
                return "mail"
        return "none"

    async def mx_hosts(self, domain: str) -> list[str]:
        """MX hosts in preference order, or the domain itself (implicit MX); [] for none."""
        mx = await self.query(domain, "MX")
        if mx.found:
            hosts = [r.split(" ", 1)[1] for r in mx.records]
            return [] if hosts in ([""], ["."]) else hosts
        return [domain] if mx.status == "nodata" else []
