"""What every next hop is: a `Reply`, a `Transaction` (one envelope on its way) and the
`Upstream` protocol; the backends (smtp, maildir, mx) implement it, relay.upstream.factory builds one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

UPSTREAM_DOWN = "451 4.4.1 Upstream mail server unavailable; try again later"


@dataclass(frozen=True)
class Reply:
    """A next hop's answer. `unreachable`: we could not talk to it at all (no connection, a broken
    session): the typed fact MX failover is decided on, never the wording of the text."""

    code: int
    text: str
    lines: tuple[str, ...] = ()
    unreachable: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class UpstreamError(Exception):
    """The next hop could not be reached or broke the protocol (always temporary for our client)."""


class Transaction:
    """One envelope on its way upstream."""

    async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        raise NotImplementedError

    async def rcpt(self, recipient: str, options: Sequence[str] = ()) -> Reply:
        raise NotImplementedError

    async def data(self, content: bytes) -> Reply:
        """Send the message to every accepted recipient; the reply the client should see."""
        raise NotImplementedError

    async def abort(self) -> None:
        raise NotImplementedError


class Upstream(Protocol):
    """The next hop: smtp://, lmtp://, maildir: (and wrappers that measure them)."""

    def describe(self) -> str: ...
    def transaction(self) -> Transaction: ...
    async def close(self) -> None: ...
