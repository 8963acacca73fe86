"""mx:DOMAIN[:PORT] — deliver to the MX hosts of a domain in preference order (RFC 5321 §5.1),
for sites that relay straight to a provider. A host that cannot be reached is skipped for the
next one; a host's own answer (2xx/4xx/5xx) is final for the transaction. Names are resolved with
the relay's resolver (relay.dns, the `dns:` section), MX first, then each host's addresses.

TLS, as `mx:DOMAIN[:PORT]?tls=MODE`: "may" (the default; STARTTLS when the host offers it, the
certificate not checked — opportunistic, RFC 7435, as MTAs deliver to MX hosts), "require"
(STARTTLS or no delivery, the certificate checked against the MX host name, with
upstream_options tls_verify / tls_ca_file), or "off".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from relay.dns import Resolver
from relay.upstream.base import Reply, Transaction
from relay.upstream.smtp import SmtpUpstream

UNREACHABLE = Reply(451, "4.4.1 No MX host of the domain could be reached; try again later", unreachable=True)


class MxUpstream:
    def __init__(self, domain: str, port: int, helo: str, resolver: Resolver, timeout: float = 60,
                 pool_size: int = 8, tls: str = "may", tls_verify: bool = True, ca_file: Path | None = None,
                 client_cert: tuple[Path, Path] | None = None) -> None:
        self.domain, self.port, self.helo = domain, port, helo
        self.resolver, self.timeout, self.pool_size = resolver, timeout, pool_size
        self.tls, self.tls_verify, self.ca_file = tls, tls_verify, ca_file
        self.client_cert = client_cert
        self._hosts: dict[str, SmtpUpstream] = {}

    def describe(self) -> str:
        return f"mx:{self.domain}:{self.port}"

    async def targets(self) -> list[SmtpUpstream]:
        """One SMTP upstream per address of each MX host, in preference order."""
        out = []
        for host in await self.resolver.mx_hosts(self.domain):
            for rdtype in ("A", "AAAA"):
                answer = await self.resolver.query(host, rdtype)
                for address in answer.records if answer.status == "ok" else ():
                    key = f"[{address}]:{self.port}" if ":" in address else f"{address}:{self.port}"
                    if key not in self._hosts:
                        self._hosts[key] = SmtpUpstream(f"smtp://{key}", self.helo, self.timeout, self.pool_size,
                                                        self.tls_verify, self.ca_file, starttls=self.tls,
                                                        tls_name=host, client_cert=self.client_cert)
                    out.append(self._hosts[key])
        return out

    def transaction(self) -> Transaction:
        return MxTransaction(self)

    async def close(self) -> None:
        for upstream in self._hosts.values():
            await upstream.close()


class MxTransaction(Transaction):
    def __init__(self, upstream: MxUpstream) -> None:
        self.upstream = upstream
        self.inner: Transaction | None = None
        self.sender: tuple[str, tuple[str, ...]] = ("", ())
        self.tried: list[str] = []

    async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        self.sender = (sender, tuple(options))
        return Reply(250, "2.1.0 Ok")

    async def rcpt(self, recipient: str, options: Sequence[str] = ()) -> Reply:
        if self.inner is not None:
            return await self.inner.rcpt(recipient, options)
        for target in await self.upstream.targets():
            txn = target.transaction()
            await txn.mail(*self.sender)
            reply = await txn.rcpt(recipient, options)
            self.tried.append(target.describe())
            if reply.unreachable:
                continue  # not reachable (typed by the SMTP backend, whatever the text): the next MX
            self.inner = txn
            return reply
        return UNREACHABLE

    async def data(self, content: bytes) -> Reply:
        if self.inner is None:
            return Reply(554, "5.5.1 No valid recipients")
        return await self.inner.data(content)

    async def abort(self) -> None:
        if self.inner is not None:
            await self.inner.abort()
        self.inner = None
