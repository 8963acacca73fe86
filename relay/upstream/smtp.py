"""smtp:// smtps:// lmtp:// — delivery over SMTP or LMTP, with STARTTLS and AUTH, reused connections.

A `Transaction` mirrors one client transaction: MAIL at the first RCPT, each RCPT relayed as it
comes (so per-recipient refusals reach the client at RCPT time), then DATA or RSET. Failures to
reach the next hop become 4xx replies marked `unreachable`: the client retries and nothing is lost.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from relay.upstream.base import Reply, Transaction, UpstreamError


def dot_stuffed(data: bytes) -> list[bytes]:
    """RFC 5321 §4.5.2 transparency, as pieces written one after the other (no copy of a large
    message is made unless it has lines to stuff); `data` has CRLF line ends only."""
    pieces = [b"."] if data.startswith(b".") else []
    pieces.append(data.replace(b"\r\n.", b"\r\n..") if b"\r\n." in data else data)
    pieces.append(b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")
    return pieces


class SmtpConnection:
    """One connection to an SMTP or LMTP server, speaking just what a relay needs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lmtp: bool,
                 timeout: float) -> None:
        self.reader, self.writer, self.lmtp, self.timeout = reader, writer, lmtp, timeout
        self.extensions: dict[str, str] = {}
        self.last_used = time.monotonic()
        self.pooled = False  # taken from the pool for this transaction (it may have died meanwhile)

    async def reply(self) -> Reply:
        # asyncio.timeout, not wait_for: no task per line (every reply of every message)
        async with asyncio.timeout(self.timeout):
            return await self._reply()

    async def _reply(self) -> Reply:
        lines: list[str] = []
        while True:
            raw = await self.reader.readline()
            if not raw:
                raise UpstreamError("connection closed by upstream")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit():
                raise UpstreamError(f"bad reply line {line[:80]!r}")
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return Reply(int(line[:3]), " ".join(lines).strip(), tuple(lines))

    def send(self, *lines: str) -> None:
        """Commands written at once, answers read later (`reply`, one each, in order)."""
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("newline in SMTP command")
        self.writer.write("".join(line + "\r\n" for line in lines).encode("utf-8"))

    async def command(self, line: str) -> Reply:
        self.send(line)
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()
            return await self._reply()

    async def hello(self, name: str) -> None:
        verb = "LHLO" if self.lmtp else "EHLO"
        reply = await self.command(f"{verb} {name}")
        if not reply.ok:
            raise UpstreamError(f"{verb} refused: {reply}")
        # RFC 5321 §4.1.1.1: one extension per line after the greeting line.
        self.extensions = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.partition(" ")
            self.extensions[keyword.upper()] = params

    async def data(self, content: bytes, rcpt_count: int) -> list[Reply]:
        reply = await self.command("DATA")
        if reply.code != 354:
            return [reply] * max(rcpt_count, 1)
        self.writer.writelines(dot_stuffed(content))
        async with asyncio.timeout(self.timeout):
            await self.writer.drain()
        # LMTP answers once per accepted recipient (RFC 2033 §4.2); SMTP once.
        return [await self.reply() for _ in range(rcpt_count if self.lmtp else 1)]

    async def close(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.writer.drain(), 2)
        except (TimeoutError, OSError):
            pass
        self.writer.close()


class SmtpUpstream:
    """smtp://[user:pass@]host:port[?starttls=1], smtps://..., or lmtp://host:port.

    `starttls`: "require" (the URL's starttls=1: no STARTTLS offered or a failed handshake is a
    451, the certificate verified unless tls_verify is off), "may" (opportunistic, RFC 7435: used
    when offered, the certificate not verified; a failed handshake means plain text to that host
    for an hour) or "off". `tls_name`: the name the certificate is checked against (default: host).
    """

    PLAIN_AFTER_FAILED_TLS = 3600.0

    def __init__(self, url: str, helo: str, timeout: float = 60, pool_size: int = 8,
                 tls_verify: bool = True, ca_file: Path | None = None, password: str | None = None,
                 starttls: str | None = None, tls_name: str | None = None,
                 client_cert: tuple[Path, Path] | None = None) -> None:
        parts = urlsplit(url)
        self.lmtp = parts.scheme == "lmtp"
        self.implicit_tls = parts.scheme == "smtps"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (24 if self.lmtp else 465 if self.implicit_tls else 25)
        self.user = unquote(parts.username) if parts.username else None
        self.password = password if password is not None else unquote(parts.password) if parts.password else None
        self.ca_file = ca_file
        required = "starttls=1" in parts.query or "starttls=true" in parts.query
        self.starttls = starttls or ("require" if required else "off")
        self.tls_name = tls_name or self.host
        self.plain_until = 0.0  # opportunistic TLS failed with this host: plain text until then
        self.helo, self.timeout, self.pool_size = helo, timeout, pool_size
        self.tls_verify = tls_verify
        self.client_cert = client_cert  # (cert, key) presented in TLS: a certificate-based inbound connector
        self._idle: list[SmtpConnection] = []

    def describe(self) -> str:
        return f"{'lmtp' if self.lmtp else 'smtp'}://{self.host}:{self.port}"

    def _tls(self, verify: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if not (self.tls_verify and verify):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert:
            context.load_cert_chain(str(self.client_cert[0]), str(self.client_cert[1]))
        return context

    async def _open(self) -> SmtpConnection:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                self.host, self.port, ssl=self._tls() if self.implicit_tls else None), self.timeout)
        except (TimeoutError, OSError, socket.gaierror) as error:
            raise UpstreamError(f"cannot connect to {self.describe()}: {error}") from None
        conn = SmtpConnection(reader, writer, self.lmtp, self.timeout)
        greeting = await conn.reply()
        if not greeting.ok:
            await conn.close()
            raise UpstreamError(f"greeting refused: {greeting}")
        await conn.hello(self.helo)
        if self.starttls == "require":
            if "STARTTLS" not in conn.extensions:
                raise UpstreamError("upstream does not offer STARTTLS but the config requires it")
            reply = await conn.command("STARTTLS")
            if not reply.ok:
                raise UpstreamError(f"STARTTLS refused: {reply}")
            await writer.start_tls(self._tls(), server_hostname=self.tls_name)
            await conn.hello(self.helo)
        elif self.starttls == "may" and "STARTTLS" in conn.extensions and time.monotonic() >= self.plain_until:
            try:
                reply = await conn.command("STARTTLS")
                if not reply.ok:
                    raise UpstreamError(f"STARTTLS refused: {reply}")
                await asyncio.wait_for(writer.start_tls(self._tls(verify=False), server_hostname=self.tls_name),
                                       self.timeout)
                await conn.hello(self.helo)
            except (UpstreamError, ssl.SSLError, OSError, TimeoutError):
                await conn.close()
                self.plain_until = time.monotonic() + self.PLAIN_AFTER_FAILED_TLS
                return await self._open()  # once more, in plain text (RFC 7435 §4)
        if self.user is not None:
            token = base64.b64encode(f"\0{self.user}\0{self.password or ''}".encode()).decode()
            reply = await conn.command(f"AUTH PLAIN {token}")
            if not reply.ok:
                raise UpstreamError(f"AUTH refused: {reply.code}")
        return conn

    async def acquire(self) -> SmtpConnection:
        """A connection: a pooled idle one used in the last 50 s, or a new one. A pooled one is
        in a clean state (released only after DATA's reply or a successful RSET) and is checked
        by the MAIL that follows: no RSET round trip per message (SmtpTransaction._ensure opens
        a new connection when the pooled one turns out dead)."""
        while self._idle:
            conn = self._idle.pop()
            if time.monotonic() - conn.last_used < 50:
                conn.pooled = True
                return conn
            await conn.close()
        return await self._open()

    async def release(self, conn: SmtpConnection, reusable: bool) -> None:
        conn.last_used = time.monotonic()
        if reusable and len(self._idle) < self.pool_size:
            self._idle.append(conn)
        else:
            await conn.close()

    async def close(self) -> None:
        while self._idle:
            await self._idle.pop().close()

    def transaction(self) -> Transaction:
        return SmtpTransaction(self)


class SmtpTransaction(Transaction):
    def __init__(self, upstream: SmtpUpstream) -> None:
        self.upstream = upstream
        self.conn: SmtpConnection | None = None
        self.accepted: list[str] = []
        self.sender: tuple[str, tuple[str, ...]] | None = None

    async def _first_rcpt(self, recipient: str, options: Sequence[str]) -> Reply:
        """MAIL and the first RCPT on a connection: written together when the server offers
        PIPELINING (RFC 2920: one round trip), else one after the other. A pooled connection that
        turns out dead (or answers 421) is replaced by a new one, within this transaction."""
        assert self.sender is not None
        address, mail_options = self.sender
        while True:
            conn = self.conn = await self.upstream.acquire()
            dsn = "DSN" in conn.extensions  # RFC 3461 parameters only go to a server that advertises DSN
            mail = f"MAIL FROM:<{address}>" + "".join(f" {o}" for o in mail_options if dsn)
            rcpt = f"RCPT TO:<{recipient}>" + "".join(f" {o}" for o in options if dsn)
            pipelined = "PIPELINING" in conn.extensions
            try:
                if pipelined:
                    conn.send(mail, rcpt)
                    reply = await conn.reply()
                else:
                    reply = await conn.command(mail)
            except (TimeoutError, OSError, UpstreamError):
                if not conn.pooled:
                    raise
                reply = Reply(421, "4.4.2 pooled connection lost")
            if not (conn.pooled and reply.code == 421):
                break
            # the pooled connection died while idle (or the server is closing it): a new one
            self.conn = None
            conn.writer.close()
        conn.pooled = False
        if not reply.ok:
            if pipelined:
                try:
                    await conn.reply()  # the RCPT's answer (a 503): read, to stay in step
                except (TimeoutError, OSError, UpstreamError):
                    await self._drop()  # a 421 that closed the connection: the client hears the 421
            raise _Refused(reply)
        return await conn.reply() if pipelined else await conn.command(rcpt)

    async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        self.sender = (sender, tuple(options))
        return Reply(250, "2.1.0 Ok")  # sent with the first RCPT, when we know a connection is needed

    async def rcpt(self, recipient: str, options: Sequence[str] = ()) -> Reply:
        try:
            if self.conn is None:
                reply = await self._first_rcpt(recipient, options)
            else:
                conn = self.conn
                options = options if "DSN" in conn.extensions else ()
                reply = await conn.command(f"RCPT TO:<{recipient}>" + "".join(f" {o}" for o in options))
        except _Refused as refused:
            return refused.reply
        except (TimeoutError, OSError, UpstreamError):
            await self._drop()
            return Reply(451, "4.4.1 Upstream mail server unavailable; try again later", unreachable=True)
        if reply.ok:
            self.accepted.append(recipient)
        return reply

    async def data(self, content: bytes) -> Reply:
        if self.conn is None or not self.accepted:
            return Reply(554, "5.5.1 No valid recipients")
        try:
            replies = await self.conn.data(content, len(self.accepted))
        except (TimeoutError, OSError, UpstreamError):
            await self._drop()
            return Reply(451, "4.4.1 Upstream did not confirm the message; try again later", unreachable=True)
        conn, self.conn = self.conn, None
        await self.upstream.release(conn, reusable=True)
        bad = [r for r in replies if not r.ok]
        if not bad:
            return replies[0]
        # LMTP with mixed outcomes: the client can only get one answer; a temporary failure for
        # anyone makes the whole message retry (a duplicate beats a loss).
        return next((r for r in bad if r.temporary), bad[0])

    async def abort(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                reusable = (await conn.command("RSET")).ok
            except (TimeoutError, OSError, UpstreamError):
                reusable = False
            await self.upstream.release(conn, reusable)
        self.accepted = []

    async def _drop(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.writer.close()


class _Refused(Exception):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
