"""Hosted mail services (Exchange Online, Google Workspace) as a trusted hop in front of the relay.

Pure code: which connection is the hosted service (client address ranges and/or the TLS client
certificate's name), and who the authenticated sender is on that hop (the envelope sender, when
the service's own authentication stamps say the message was submitted by one of the tenant's
users). Nothing here is believed from a client outside the configured trust: `hosted_login` is only
called for a connection `HostedTrust.matches` accepted.

Exchange Online stamps `X-MS-Exchange-Organization-AuthAs: Internal` (and `-AuthSource`, the
server that authenticated the sender) on mail from the organization's own mailboxes; on the hop
out of the tenant the cross-premises copies are `X-MS-Exchange-CrossTenant-AuthAs` /
`-AuthSource`. See docs/microsoft365.md for the sources. Google Workspace stamps no equivalent
header a receiver can verify; on its hop the envelope sender is believed only when it is one of
the institution's domains (docs/google-workspace.md).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relay import rewrite

EXCHANGE_AUTHAS = ("x-ms-exchange-organization-authas", "x-ms-exchange-crosstenant-authas")
EXCHANGE_AUTHSOURCE = ("x-ms-exchange-organization-authsource", "x-ms-exchange-crosstenant-authsource")


@dataclass(frozen=True)
class HostedTrust:
    """One hosted service the relay accepts as a trusted hop."""

    service: str  # "exchange_online" | "google_workspace"
    clients: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    certificate_names: tuple[str, ...]  # shell patterns: *.mail.protection.outlook.com
    require: str = "both"  # "both" | "any": address AND certificate, or either one

    @classmethod
    def build(cls, service: str, clients: Iterable[str], certificate_names: Iterable[str],
              require: str = "both") -> HostedTrust:
        return cls(service, tuple(ipaddress.ip_network(c, strict=False) for c in clients),
                   tuple(n.lower() for n in certificate_names), require)

    def address_ok(self, ip: str | None) -> bool | None:
        if not self.clients:
            return None
        try:
            addr = ipaddress.ip_address(ip or "")
        except ValueError:
            return False
        return any(addr in net for net in self.clients)

    def certificate_ok(self, names: Iterable[str]) -> bool | None:
        if not self.certificate_names:
            return None
        return any(fnmatch.fnmatchcase(n.lower(), p) for n in names for p in self.certificate_names)

    def matches(self, ip: str | None, cert_names: Iterable[str]) -> bool:
        checks = [c for c in (self.address_ok(ip), self.certificate_ok(cert_names)) if c is not None]
        if not checks:
            return False
        return all(checks) if self.require == "both" else any(checks)


def certificate_names(peercert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """DNS names of a verified peer certificate (ssl's getpeercert() dict): SAN DNS, else CN."""
    if not peercert:
        return ()
    san: Any = peercert.get("subjectAltName") or ()
    names = [str(value) for kind, value in san if kind == "DNS"]
    if names:
        return tuple(names)
    subject: Any = peercert.get("subject") or ()
    return tuple(str(value) for rdn in subject for key, value in rdn if key == "commonName")


def header_fields(content: bytes) -> dict[str, list[str]]:
    """Lower-cased header names to their (unfolded) values; the header section only."""
    head = content.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    fields: dict[str, list[str]] = {}
    last: str | None = None
    for raw in head.splitlines():
        line = raw.decode("utf-8", "replace")
        if line[:1] in (" ", "\t") and last is not None:
            fields[last][-1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        last = name.strip().lower()
        fields.setdefault(last, []).append(value.strip())
    return fields


def hosted_login(service: str, mail_from: str, content: bytes, domains: Iterable[str],
                 tenant_id: str | None = None) -> str | None:
    """The authenticated sender on a trusted hosted hop, or None (then: outside mail).

    Exchange Online: the message's AuthAs stamp is `Internal` and an AuthSource is present, and the
    envelope sender is in one of the institution's domains. Google Workspace: no verifiable stamp;
    the envelope sender in one of the institution's domains (Google rejects unauthenticated
    sending as the tenant's domains from its relay only when configured so: see the docs)."""
    sender = mail_from.strip().lower()
    domain = sender.rpartition("@")[2]
    if not sender or domain not in {d.lower() for d in domains}:
        return None
    if service == "exchange_online":
        fields = header_fields(content)
        authas = [v.strip().lower() for h in EXCHANGE_AUTHAS for v in fields.get(h, [])]
        source = [v for h in EXCHANGE_AUTHSOURCE for v in fields.get(h, []) if v.strip()]
        if not authas or any(v != "internal" for v in authas) or not source:
            return None
        tenants = [v.strip().lower() for v in fields.get("x-ms-exchange-crosstenant-id", [])]
        if tenant_id is not None and (not tenants or any(t != tenant_id.strip().lower() for t in tenants)):
            return None  # another tenant's mail, through the same Exchange Online servers
        return sender
    if service == "google_workspace":
        return sender
    return None


def _starttls_required(upstream: str) -> bool:
    query = upstream.partition("?")[2].split("&")
    return (upstream.startswith("smtps://")
            or (upstream.startswith("smtp://") and ("starttls=1" in query or "starttls=true" in query))
            or (upstream.startswith("mx:") and "tls=require" in query))


def half_configured(config: Any) -> list[str]:
    """`relay validate` warnings for a hosted mode that is only half set up (a RelayConfig)."""
    warnings: list[str] = []
    hops = config.trust.hosted
    for i, hop in enumerate(hops):
        where = f"trust.hosted[{i}] ({hop.service})"
        if not hop.certificate_names:
            warnings.append(f"{where}: no certificate_names: any client in its address ranges is believed; "
                            "add e.g. certificate_names: ['*.mail.protection.outlook.com']")
        elif config.tls is None or not config.tls.client_ca:
            warnings.append(f"{where}: certificate_names without tls.client_ca: no client certificate is asked "
                            "for, so the hop never matches; set tls.client_ca to the CA bundle")
        if hop.service == "exchange_online" and not hop.tenant_id:
            warnings.append(f"{where}: no tenant_id: any Exchange Online tenant's mail stamped Internal is "
                            "believed (all tenants share the servers and certificate); set tenant_id")
        if hop.require == "any" and hop.clients and hop.certificate_names:
            warnings.append(f"{where}: require: any: an address OR a certificate suffices; use require: both")
        if not hop.clients and hop.service == "google_workspace":
            warnings.append(f"{where}: Google Workspace presents no client certificate by default; "
                            "list its sending ranges in clients")
    guard = config.trust.loop_guard
    if hops and guard is None:
        warnings.append("trust.hosted without trust.loop_guard: what the relay delivers back to the hosted "
                        "service carries no stamp for its routing rule to except, so it can come through again; "
                        "add trust: {loop_guard: {header: X-Policy-Relay-Loop}} and the rule's exception "
                        "(docs/microsoft365.md)")
    options = config.upstream_options
    if options.tls_client_cert and not _starttls_required(str(config.upstream)):
        warnings.append("upstream_options.tls_client_cert is only presented over TLS: add ?starttls=1 "
                        "to the upstream URL")
    if any(h.service == "exchange_online" for h in hops) and not options.tls_client_cert:
        warnings.append("trust.hosted exchange_online without upstream_options.tls_client_cert: a "
                        "certificate-based inbound connector (TlsSenderCertificateName) does not recognise "
                        "the relay; set tls_client_cert/tls_client_key (docs/microsoft365.md)")
    if hops:
        upstream = str(config.upstream)
        if not _starttls_required(upstream):
            warnings.append(f"upstream {upstream!r}: delivery back to the hosted service without STARTTLS "
                            "required; use smtp://HOST:25?starttls=1 (docs/microsoft365.md)")
        if not config.upstream_options.tls_verify:
            warnings.append("upstream_options.tls_verify: false: the hosted service's certificate is not checked")
    return warnings


# -- loop guard ---------------------------------------------------------------------------------
# Every message the relay delivers carries `<header>: v1; q=QUEUEID; t=EPOCH; n=NONCE; m=MAC`, MAC
# an HMAC-SHA256 (the relay's secret, as the moderation links: relay/web/links.py) over the queue id,
# the time, a per-delivery nonce (split copies and holds of one message differ) and the
# Message-ID. The hosted service's routing rule excepts the header; if the message still comes
# back from the trusted hop with a valid, fresh stamp, it is passed on once unchanged.
# Anyone can copy the header's name; only the relay can make a value that checks.

_STAMP = re.compile(r"v1; q=([A-Za-z0-9]{1,40}); t=([0-9]{1,12}); n=([0-9a-f]{1,16}); m=([A-Za-z0-9_-]{22})")
FUTURE_SKEW = 300  # seconds a stamp may be ahead of the clock (another relay of the same pool)


@dataclass(frozen=True)
class StampCheck:
    """What a message's loop-guard header says: `valid` only when exactly one stamp, written by this
    relay's key for this Message-ID, no older than max_age; `why` for the log otherwise."""

    valid: bool
    queue_id: str = ""
    stamped_at: int = 0
    why: str = ""
    nonce: str = ""

    @property
    def key(self) -> str:
        """Its key in the store's once-only table (a second arrival is a loop)."""
        return f"loop-guard:{self.queue_id}:{self.stamped_at}:{self.nonce}"


def _mac(secret: bytes, queue_id: str, when: int, nonce: str, message_id: str) -> str:
    data = f"loop:{queue_id}|{when}|{nonce}|{message_id}".encode("utf-8", "replace")
    return base64.urlsafe_b64encode(hmac.new(secret, data, hashlib.sha256).digest()[:16]).rstrip(b"=").decode()


def stamp_value(secret: bytes, queue_id: str, when: int, nonce: str, message_id: str) -> str:
    return f"v1; q={queue_id}; t={when}; n={nonce}; m={_mac(secret, queue_id, when, nonce, message_id)}"


def _is(field: bytes, header: str) -> bool:
    prefix = header.lower().encode() + b":"
    return field[:len(prefix)].lower() == prefix


def without_stamp(fields: list[bytes], header: str) -> list[bytes]:
    """The header fields without any loop-guard field (a forged or earlier one)."""
    return [f for f in fields if not _is(f, header)]


def stamped(content: bytes, secret: bytes, header: str, queue_id: str, when: int, message_id: str,
            nonce: str = "0") -> bytes:
    """The message with our one stamp on top (any other copy of the header removed)."""
    fields, rest = rewrite.split_head(content)
    if not rest and not fields:
        return content
    field = f"{header}: {stamp_value(secret, queue_id, when, nonce, message_id)}".encode()
    return rewrite.join([field, *without_stamp(fields, header)], rest)


def check_stamp(fields: list[bytes], secret: bytes, header: str, now: float, max_age: float,
                message_id: str) -> StampCheck:
    values = [re.sub(rb"\s+", b" ", f.partition(b":")[2]).strip().decode("utf-8", "replace")
              for f in fields if _is(f, header)]
    if not values:
        return StampCheck(False, why="no stamp")
    if len(values) > 1:
        return StampCheck(False, why=f"{len(values)} stamps")
    match = _STAMP.fullmatch(values[0])
    if not match:
        return StampCheck(False, why="malformed stamp")
    queue_id, when, nonce, mac = match.group(1), int(match.group(2)), match.group(3), match.group(4)
    if not hmac.compare_digest(mac, _mac(secret, queue_id, when, nonce, message_id)):
        return StampCheck(False, queue_id, when, "stamp not made by this relay for this Message-ID", nonce)
    if when > now + FUTURE_SKEW:
        return StampCheck(False, queue_id, when, "stamp from the future", nonce)
    if now - when > max_age:
        return StampCheck(False, queue_id, when, f"stamp older than {max_age:g} s", nonce)
    return StampCheck(True, queue_id, when, nonce=nonce)
