"""SMTP front-end on aiosmtpd: one session per connection, policy at RCPT and DATA, replies on the wire.

Fixes for aiosmtpd 1.4.6 traps (each has a test): the connection timeout is made an idle timeout
(reset by every byte received, so an active DATA transfer is not cut) plus a separate whole-DATA
deadline; DSN parameters (RET, ENVID, NOTIFY, ORCPT) are parsed here, case preserved, and passed
upstream instead of being refused or upper-cased; handler exceptions answer `451 4.3.0`, never
aiosmtpd's `500 Error: (exception text)`; bare LF / lone CR inside DATA are normalised to CRLF
(Postfix 3.9 `smtpd_forbid_bare_newline = normalize`): end of data is only CRLF.CRLF, so a smuggled
`\\n.\\n` never splits a message, and nothing ambiguous is sent on.

What to answer is the `Disposer`'s (relay.dispose): RCPT asks `Disposer.rcpt`, DATA hands the
message over with the upstream transaction opened at MAIL (`WeDeliver`), and
relay.frontends.replies says the `Disposition` as a reply line.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import re
import secrets
from typing import Any, cast

import aiosmtpd.smtp
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from relay import logs
from relay.dispose import NO_TRANSACTION, Disposer, Submitted, WeDeliver, clean_token
from relay.frontends import replies

_NEWLINES = re.compile(rb"\r\n|\r|\n")
_END = b"\r\n.\r\n"  # end of DATA: a dot alone on a line, CRLF on both sides, nothing else
CHUNK = 1 << 16
_XFORWARD_ATTRS = {"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"}
_MAIL_KEEP = {"RET", "ENVID"}  # forwarded upstream, case preserved
_RCPT_KEEP = {"NOTIFY", "ORCPT"}
INTERNAL_ERROR = "451 4.3.0 Internal error; please try again later"
# aiosmtpd's own replies without enhanced status codes (RFC 2034/3463), said properly.
_REPLIES = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for this server",
    "552 Error: message size exceeds fixed maximum message size":
        "552 5.3.4 Message size exceeds fixed maximum message size",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)",
    "500 Command line too long": "500 5.5.2 Command line too long",
}


def normalise_newlines(data: bytes) -> bytes:
    """Every bare LF or lone CR becomes CRLF (RFC 5322 §2.3: CR and LF only occur together)."""
    return _NEWLINES.sub(b"\r\n", data)


def needs_normalising(data: bytes | bytearray) -> bool:
    """True when some CR or LF is not part of a CRLF pair (three C-speed counts, no copy)."""
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def has_long_line(buf: bytes | bytearray, limit: int) -> bool:
    """Whether some line (LF to LF) is longer than `limit` bytes, without splitting the message:
    a line that long covers a whole aligned block of limit/2 bytes, so only blocks with no LF at
    all are looked at closely (10 MB in ~11 ms instead of ~35 ms for a split)."""
    half = max(limit // 2, 1)
    size, find = len(buf), buf.find
    pos = 0
    while pos + half <= size:
        if find(b"\n", pos, pos + half) >= 0:
            pos += half
            continue
        start = buf.rfind(b"\n", 0, pos) + 1
        stop = find(b"\n", pos)
        stop = size if stop < 0 else stop
        if stop - start > limit:
            return True
        pos = stop
    return False  # a line within the tail is shorter than two blocks, which is at most `limit`


def split_params(arg: str, keep: set[str]) -> tuple[str, list[str]]:
    """Take the parameters we handle ourselves out of a MAIL/RCPT argument.

    Returns the argument aiosmtpd may see and the kept parameters with their original case."""
    close = arg.find(">")
    head, tail = (arg[: close + 1], arg[close + 1:]) if close >= 0 else (arg, "")
    passed, kept = [], []
    for param in tail.split():
        name = param.split("=", 1)[0].upper()
        if name in keep:
            kept.append(param)
        elif name == "AUTH":  # RFC 4954 §5: accepted and not relayed (we do not trust it)
            continue
        else:
            passed.append(param)
    return " ".join([head, *passed]), kept


_clean = clean_token


def authenticator(disposer: Disposer) -> Any:
    """aiosmtpd's AUTH callback: LOGIN/PLAIN against the credentials in force (they reload)."""
    log = logs.get("relay")

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        credentials = disposer.rules.credentials
        if not isinstance(data, LoginPassword) or credentials is None:
            return AuthResult(success=False, handled=False)
        login = data.login.decode("utf-8", "replace")
        ok = credentials.check(login, data.password.decode("utf-8", "replace"))
        log.info("auth", login=login if ok else None, success=ok, mechanism=mechanism)
        return AuthResult(success=ok, handled=False, auth_data=data)

    return authenticate


class _ClassScan:
    """aiosmtpd 1.4.6 looks its server and handler over with `inspect.getmembers`, `dir` and
    `inspect.signature` on every connection (0.2 ms, a tenth of a message's CPU here). Which names
    there are depends only on the class: look each class over once, bind to the instance each time."""

    def __init__(self) -> None:
        self.names: dict[type, list[str]] = {}
        self.signatures: dict[Any, inspect.Signature] = {}

    def _names(self, obj: object) -> list[str]:
        names = self.names.get(type(obj))
        if names is None:
            names = self.names[type(obj)] = [n for n in dir(obj) if n.startswith(("auth_", "handle_", "smtp_"))]
        return names

    def getmembers(self, obj: object) -> list[tuple[str, Any]]:  # only auth_* are asked for
        return [(n, getattr(obj, n)) for n in self._names(obj) if n.startswith("auth_")]

    def dir(self, obj: object) -> list[str]:  # only handle_* and smtp_* are asked for
        return self._names(obj)

    def signature(self, fn: Any) -> inspect.Signature:
        key = getattr(fn, "__func__", fn)
        sig = self.signatures.get(key)
        if sig is None:
            sig = self.signatures[key] = inspect.signature(fn)
        return sig

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)


_SCAN = _ClassScan()
aiosmtpd.smtp.inspect = _SCAN  # type: ignore[attr-defined,assignment]
aiosmtpd.smtp.dir = _SCAN.dir  # type: ignore[attr-defined]  # a module global shadows the builtin there


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with an idle timeout, a DATA deadline, DSN parameters and XFORWARD."""

    def __init__(self, disposer: Disposer, **kwargs: Any) -> None:
        self.disposer = disposer
        limits = disposer.config.limits
        credentials = disposer.rules.credentials
        self.line_length_limit = limits.max_line_length + 3  # CRLF and a transparency dot
        super().__init__(
            PolicyHandler(disposer), hostname=disposer.config.hostname, ident="policy-relay",
            data_size_limit=limits.max_message_size, enable_SMTPUTF8=True, decode_data=False,
            timeout=limits.idle_timeout, tls_context=disposer.rules.tls_context,
            auth_require_tls=True, authenticator=authenticator(disposer) if credentials else None,
            auth_exclude_mechanism=[] if credentials else ["LOGIN", "PLAIN"],
            **kwargs,
        )
        self.transaction: Any = None
        self.refused = False  # an RCPT-time refusal in this transaction already notified the sender
        self.mail_params: list[str] = []
        self.rcpt_params: list[str] = []
        self.xforward: dict[str, str] = {}
        self.counted = False

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _REPLIES.get(status, status)
        await super().push(status)

    # -- connection life ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:
            return  # STARTTLS re-entry
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        auth = self.disposer.config.auth
        if auth and auth.allow_plaintext_on_loopback and _is_loopback(self.peer_ip):
            self._auth_require_tls = False
        if self.disposer.active >= self.disposer.config.limits.max_connections:
            # (uvloop's transports are not asyncio.WriteTransport subclasses, but they write)
            cast(asyncio.WriteTransport, transport).write(b"421 4.7.0 Too many connections; try again later\r\n")
            transport.close()
            return
        self.disposer.active += 1
        self.counted = True

    def connection_lost(self, error: Exception | None) -> None:
        if self.counted:
            self.disposer.active -= 1
            self.counted = False
        if self.transaction is not None:
            txn, self.transaction = self.transaction, None
            self.disposer.spawn(txn.abort())
        super().connection_lost(error)

    def eof_received(self) -> bool:
        # aiosmtpd cancels the session here and keeps the transport half open; under uvloop that
        # transport then never reports connection_lost (and the connection count never drops).
        # The session is over: close it now.
        super().eof_received()
        return False

    def data_received(self, data: bytes) -> None:
        # aiosmtpd only resets its timer between commands: a client still sending DATA would be
        # cut off after `timeout` seconds. Every byte received proves the client is alive.
        self._reset_timeout()
        super().data_received(data)

    @property
    def trusted_hop(self) -> bool:
        return self.peer_ip in self.disposer.config.trust.xforward_hosts

    # -- commands ---------------------------------------------------------------------------------
    async def smtp_MAIL(self, arg: str) -> None:
        if arg:
            arg, self.mail_params = split_params(arg, _MAIL_KEEP)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        if arg:
            arg, self.rcpt_params = split_params(arg, _RCPT_KEEP)
        await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str) -> None:
        try:
            await asyncio.wait_for(self._data(arg), self.disposer.config.limits.data_timeout)
        except TimeoutError:
            await self.push("421 4.4.2 DATA took too long; closing connection")
            if self.transport is not None:
                self.transport.close()

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA with the message read in large chunks instead of line by line."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await self.read_data()
        except asyncio.CancelledError:  # the connection went away during DATA
            self._writer.close()
            raise
        if content is None:
            return  # the client closed the connection without ending DATA
        if isinstance(content, str):
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(content)
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def read_data(self) -> bytes | str | None:
        """The message after `354`: its bytes (transparency dots removed, every line ending CRLF),
        or the error reply once the whole transfer has been read, or None if the client left.

        The end is `CRLF.CRLF` only (a virtual CRLF before the first byte lets `.CRLF` at once
        be an empty message), so no bare-LF or lone-CR dot can end DATA early (SMTP smuggling).
        Bytes after the end (a pipelined QUIT, or the next commands) go back to the reader."""
        reader = self._reader
        limit = self.data_size_limit or 0
        buf = bytearray(b"\r\n")
        start = 0  # where the end may begin: the terminator can straddle two chunks
        received = 0  # bytes read in this DATA (the message, its end, maybe pipelined commands)
        too_big = False
        while (end := buf.find(_END, start)) < 0:
            chunk = await reader.read(CHUNK)
            if not chunk:
                return None
            received += len(chunk)
            if limit and received > limit + CHUNK:
                too_big = True  # keep reading to the end, holding no more than the tail
                del buf[:-4]
            start = max(0, len(buf) - 4)
            buf += chunk
        leftover = buf[end + len(_END):]
        if leftover:
            reader._buffer[:0] = leftover  # type: ignore[attr-defined]  # the next commands, in order, for aiosmtpd's loop
        if too_big or (limit and end > limit):  # raw size: every line with its CRLF, dots included
            return "552 5.3.4 Message too big for this server"
        del buf[end + 2:]  # keep the CRLF that ends the last line
        if has_long_line(buf, self.line_length_limit - 1):
            return "500 5.5.2 Line too long (RFC 5321 4.5.3.1.6)"
        if b"\0" in buf:  # never forwarded (RFC 5321 2.3.8: no BINARYMIME here)
            return "550 5.6.0 Message contains NUL characters, which mail may not carry (RFC 5322 2.3)"
        if b"\r\n." in buf:
            buf = buf.replace(b"\r\n.", b"\r\n")  # RFC 5321 4.5.2: un-stuff
        del buf[:2]
        if needs_normalising(buf):
            return normalise_newlines(bytes(buf))
        return bytes(buf)

    async def smtp_XFORWARD(self, arg: str) -> None:
        """Postfix XFORWARD (the original client of a content_filter), only from trusted hops."""
        if not self.trusted_hop:
            await self.push("550 5.7.0 XFORWARD not permitted")
            return
        for item in (arg or "").split():
            name, _, value = item.partition("=")
            if name.upper() not in _XFORWARD_ATTRS:
                await self.push(f"501 5.5.4 Bad XFORWARD attribute {_clean(name, 20)}")
                return
            self.xforward[name.upper()] = value
        await self.push("250 2.0.0 Ok")


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


class PolicyHandler:
    """aiosmtpd hooks: each returns the reply line for its step."""

    def __init__(self, disposer: Disposer) -> None:
        self.disposer = disposer
        self.log = logs.get("relay.smtp")

    async def handle_EHLO(self, server: RelaySMTP, session: Session, envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        server.xforward = {}
        extra = ["250-DSN"]
        if server.trusted_hop:
            extra.append("250-XFORWARD NAME ADDR PROTO HELO SOURCE IDENT")
        lines = [r for r in responses[:-1] if self.disposer.rules.credentials or not r.startswith("250-AUTH")]
        return [*lines, "250-PIPELINING", *extra, responses[-1]]

    async def handle_MAIL(self, server: RelaySMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if server.transaction is not None:
            await server.transaction.abort()
        server.transaction = self.disposer.upstream.transaction()
        server.refused = False
        # aiosmtpd hands the null sender (RFC 5321 §4.5.5) over as the text "<>" and needs it kept
        # non-empty in its envelope; upstream it is the empty path.
        await server.transaction.mail("" if address == "<>" else address, server.mail_params)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: RelaySMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.disposer.config.limits.max_recipients:
            return "452 4.5.3 Too many recipients"
        refusal = await self.disposer.rcpt(envelope.mail_from or "", [*envelope.rcpt_tos, address], address,
                                           self.login(server, session), self.client_ip(server),
                                           trusted_hop=server.trusted_hop, notify=not server.refused)
        if refusal is not None:
            server.refused = True
            return replies.smtp(refusal)
        reply = await server.transaction.rcpt(address, server.rcpt_params)
        if not reply.ok:
            return str(reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_RSET(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        if server.transaction is not None:
            txn, server.transaction = server.transaction, None
            await txn.abort()
        return "250 2.0.0 Ok"

    async def handle_DATA(self, server: RelaySMTP, session: Session, envelope: Envelope) -> str:
        txn, server.transaction = server.transaction, None
        content = bytes(envelope.original_content or b"")  # read_data normalised it
        if txn is None:
            return replies.smtp(NO_TRANSACTION)
        submitted = Submitted(
            secrets.token_hex(6).upper(), envelope.mail_from or "", tuple(envelope.rcpt_tos), content,
            self.login(server, session), self.client_ip(server),
            server.xforward.get("HELO") or session.host_name or "", tls=server._tls_protocol is not None,
            trusted_hop=server.trusted_hop)
        return replies.smtp(await self.disposer.dispose(submitted, WeDeliver(txn)))

    async def handle_exception(self, error: Exception) -> str:
        self.log.error("session_error", error=type(error).__name__, detail=str(error)[:200])
        return INTERNAL_ERROR

    def login(self, server: RelaySMTP, session: Session) -> str | None:
        if session.authenticated and session.login_data:
            data = session.login_data
            return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        return None  # a trusted hop's login comes from its Received header, read by the disposer

    def client_ip(self, server: RelaySMTP) -> str:
        if server.trusted_hop and server.xforward.get("ADDR"):
            addr = server.xforward["ADDR"]
            return addr.removeprefix("IPV6:").removeprefix("IPv6:")
        return server.peer_ip


__all__ = ["AuthResult", "LoginPassword", "RelaySMTP", "normalise_newlines", "split_params"]
