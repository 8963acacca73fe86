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
import binascii
import inspect
import ipaddress
import re
import secrets
import socket
import tempfile
import time
from base64 import b64decode
from typing import IO, Any, cast

import aiosmtpd.smtp
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from relay import hosted, logs
from relay.dispose import NO_TRANSACTION, Disposer, Submitted, WeDeliver, clean_token
from relay.frontends import replies
from relay.frontends.guard import guard_for

_NEWLINES = re.compile(rb"\r\n|\r|\n")
# MAIL FROM:<a.b@c.d> / RCPT TO:<...> as nearly every client writes it: dot-atoms both sides (what
# aiosmtpd's RFC 5322 parser returns unchanged); anything else goes to that parser
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*+(?![(\s])")
_END = b"\r\n.\r\n"  # end of DATA: a dot alone on a line, CRLF on both sides, nothing else
CHUNK = 1 << 16
# Memory a message takes while it is decided and sent on, as a multiple of its size (measured:
# ~2.7x for a 24 MB message); what a DATA reader asks the byte budget for before it decides.
MEMORY_FACTOR = 3
_JUNK = ("NOOP", "VRFY", "EXPN", "HELP")  # RFC 5321 §4.1.1: they change nothing; a session may not live on them
_MANY = 1 << 30
_ERRORS = {"500", "501", "502", "503", "504"}  # the client's protocol mistakes (not policy refusals)
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
            command_call_limit={"*": _MANY, **dict.fromkeys(_JUNK, limits.max_junk_commands)},
            **kwargs,
        )
        self.guard = guard_for(disposer)
        self.peer_ip = ""
        self.admitted = False  # counted in the per-client connection table
        self.in_data = False  # between 354 and the end of the message: bytes prove the client alive
        self.auth_failures = 0
        self.errors = 0  # protocol errors answered in this session
        self.busy = False  # a complete command line is being answered: the idle timer waits
        self.held = 0  # bytes of the memory budget this session's message holds
        self.transaction: Any = None
        self.refused = False  # an RCPT-time refusal in this transaction already notified the sender
        self.mail_params: list[str] = []
        self.rcpt_params: list[str] = []
        self.xforward: dict[str, str] = {}
        self.counted = False

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _REPLIES.get(status, status)
        if isinstance(status, str) and status[:3] in _ERRORS:
            self.errors += 1
            if self.errors > self.disposer.config.limits.max_errors:  # Postfix smtpd_hard_error_limit
                logs.get("relay.smtp").warning("too_many_errors", client=self.peer_ip, errors=self.errors)
                status = "421 4.7.0 Too many errors; closing connection"
                if self.transport is not None:
                    cast(asyncio.WriteTransport, self.transport).write(status.encode() + b"\r\n")
                    self.transport.close()
                return
        await super().push(status)
        if not self.in_data and self.transport is not None and not self.transport.is_closing():
            self.busy = False
            self._reset_timeout()  # the client's next line is due within idle_timeout of this reply

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
        limit = None if self.trusted_hop else self.disposer.config.limits.max_connections_per_client
        if not self.guard.admit(self.peer_ip, limit):
            logs.get("relay.smtp").warning("client_connection_limit", client=self.peer_ip, limit=limit)
            cast(asyncio.WriteTransport, transport).write(
                b"421 4.7.0 Too many connections from your address; try again later\r\n")
            transport.close()
            return
        self.admitted = True
        self.disposer.active += 1
        self.counted = True

    def connection_lost(self, error: Exception | None) -> None:
        if self.counted:
            self.disposer.active -= 1
            self.counted = False
        if self.admitted:
            self.guard.leave(self.peer_ip)
            self.admitted = False
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
        # cut off after `timeout` seconds. Inside DATA every byte proves the client alive (the
        # whole transfer has its own deadline, data_timeout). Outside DATA bytes prove nothing: a
        # command line must be complete within idle_timeout of our last reply, or a client that
        # trickles one byte a minute would hold its connection for ever (slowloris).
        if self.in_data:
            self._reset_timeout()
        elif b"\n" in data:  # a command line is complete: from now on the client waits for us, and the
            self.busy = True  # timer waits for our reply (a slow upstream or a busy loop is not its idling)
            self._cancel_timeout()
        super().data_received(data)

    def _cancel_timeout(self) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()

    def _reset_timeout(self, duration: float | None = None) -> None:
        if self.busy and not self.in_data:
            self._cancel_timeout()  # aiosmtpd re-arms on each command; we do on each reply
            return
        super()._reset_timeout(duration)

    def _timeout_cb(self) -> None:
        """The idle timeout: say so (RFC 5321 §4.2.2 421, §3.8 the server may close), then close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        logs.get("relay.smtp").info("timeout", client=self.peer_ip, in_data=self.in_data)
        cast(asyncio.WriteTransport, transport).write(
            f"421 4.4.2 {self.hostname} Error: timeout exceeded; closing connection\r\n".encode())
        transport.close()

    @property
    def trusted_hop(self) -> bool:
        return self.peer_ip in self.disposer.config.trust.xforward_hosts

    # -- commands ---------------------------------------------------------------------------------
    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's, without its cost for a plain <local@domain> (it builds a class per call and
        runs the full header parser): the same answer, checked against it in tests."""
        if (plain := _PLAIN_PATH.match(arg)) and not (self.local_part_limit and
                                                      len(plain.group(1).rpartition("@")[0]) > self.local_part_limit):
            return plain.group(1), arg[plain.end():]
        return super()._getaddr(arg)

    async def smtp_MAIL(self, arg: str) -> None:
        if arg:
            arg, self.mail_params = split_params(arg, _MAIL_KEEP)
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str) -> None:
        if arg:
            arg, self.rcpt_params = split_params(arg, _RCPT_KEEP)
        await super().smtp_RCPT(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        """RFC 4954 AUTH PLAIN/LOGIN with failure limits: each failure waits longer before its 535
        (failure_delay, doubling, at most 16x); after max_failures_per_connection the connection
        is closed with 421, and an address with max_failures_per_client failures in failure_window
        is answered 421 before any password is looked at; a login with max_failures_per_login
        failures in the window (from any addresses) is answered 454 before any password is looked
        at, except from an address it signed in from before. The password is checked off the event
        loop, at the same cost whether the login exists or not; failures are logged with login and
        client address (`auth_failed`, for fail2ban: docs/fail2ban.md)."""
        credentials, auth = self.disposer.rules.credentials, self.disposer.config.auth
        if credentials is None or auth is None:
            await super().smtp_AUTH(arg)
            return
        if await self.check_helo_needed("EHLO"):
            return
        assert self.session is not None
        if not self.session.extended_smtp:
            await self.push("500 5.5.1 Error: command 'AUTH' not recognized")
            return
        if self._auth_require_tls and not self._tls_protocol:
            await self.push("538 5.7.11 Encryption required for requested authentication mechanism")
            return
        if self.session.authenticated:
            await self.push("503 5.5.1 Already authenticated")
            return
        args = (arg or "").split()
        if not args or len(args) > 2:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        mechanism = args[0].upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            await self.push("504 5.5.4 Unrecognized authentication type")
            return
        log = logs.get("relay.smtp")
        failures = self.guard.auth_failures
        if failures.count(self.peer_ip, auth.failure_window, time.monotonic()) >= auth.max_failures_per_client:
            log.warning("auth_blocked", client=self.peer_ip, mechanism=mechanism)
            await self._close_with("421 4.7.0 Too many failed logins from your address; try again later")
            return
        pair = await self._auth_pair(mechanism, args[1] if len(args) == 2 else None)
        if pair is None:
            return  # the client cancelled or sent something undecodable: already answered
        login, password = pair
        shown = _printable(login.decode("utf-8", "replace"), 100)
        account = login.decode("utf-8", "replace").strip().casefold()
        # counted before the check, so parallel guesses from one address cannot all pass the limit
        stamp = time.monotonic()
        by_login = self.guard.login_failures
        if (by_login.count(account, auth.failure_window, stamp) >= auth.max_failures_per_login
                and not self.guard.familiar.knows(account, self.peer_ip, stamp)):
            # guesses at one login spread over many addresses: refused before any password is looked
            # at, temporarily (RFC 4954 454), and only from addresses this login never signed in from
            failures.add(self.peer_ip, auth.failure_window, stamp)
            log.warning("auth_blocked_login", login=shown, client=self.peer_ip, mechanism=mechanism)
            await asyncio.sleep(auth.failure_delay)
            await self.push("454 4.7.0 Temporary authentication failure; try again later")
            return
        recent = failures.add(self.peer_ip, auth.failure_window, stamp)
        login_recent = by_login.add(account, auth.failure_window, stamp)
        ok = await credentials.check_async(login.decode("utf-8", "replace"), password.decode("utf-8", "replace"))
        if ok:
            failures.undo(self.peer_ip, stamp)
            by_login.undo(account, stamp)
            self.guard.familiar.add(account, self.peer_ip, stamp)
            self.session.authenticated = True
            self.session.auth_data = LoginPassword(login, password)  # type: ignore[assignment]
            self.session.login_data = login
            log.info("auth", login=shown, client=self.peer_ip, mechanism=mechanism, success=True)
            await self.push("235 2.7.0 Authentication successful")
            return
        self.auth_failures += 1
        log.warning("auth_failed", login=shown, client=self.peer_ip, mechanism=mechanism,
                    connection_failures=self.auth_failures, client_failures=recent, login_failures=login_recent)
        await asyncio.sleep(auth.failure_delay * 2 ** min(max(self.auth_failures, recent) - 1, 4))
        if self.auth_failures >= auth.max_failures_per_connection or recent >= auth.max_failures_per_client:
            await self._close_with("421 4.7.0 Too many failed logins; closing connection")
            return
        await self.push("535 5.7.8 Authentication credentials invalid")

    async def _auth_pair(self, mechanism: str, initial: str | None) -> tuple[bytes, bytes] | None:
        """Login and password from AUTH PLAIN (RFC 4616) or LOGIN, or None once answered."""
        if mechanism == "PLAIN":
            blob = await self._auth_blob(initial, "")
            if blob is None:
                return None
            parts = blob.split(b"\0")
            if len(parts) != 3:
                await self.push("501 5.5.2 Can't split auth value")
                return None
            return parts[1], parts[2]
        login = await self._auth_blob(initial, "User Name\0")
        if login is None:
            return None
        password = await self._auth_blob(None, "Password\0")
        return None if password is None else (login, password)

    async def _auth_blob(self, initial: str | None, challenge: str) -> bytes | None:
        if initial is None:
            got = await self.challenge_auth(challenge)
            return None if got is MISSING else got
        if initial == "=":
            return b""  # RFC 4954 §4: an empty initial response
        try:
            return b64decode(initial.encode(), validate=True)
        except (binascii.Error, ValueError):
            await self.push("501 5.5.2 Can't decode base64")
            return None

    async def _close_with(self, reply: str) -> None:
        await self.push(reply)
        if self.transport is not None:
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        try:
            await asyncio.wait_for(self._data(arg), self.disposer.config.limits.data_timeout)
        except TimeoutError:
            self.in_data = False
            await self.push("421 4.4.2 DATA took too long; closing connection")
            if self.transport is not None:
                self.transport.close()
        finally:
            self.in_data = False
            self._release()

    def _release(self) -> None:
        if self.held:
            self.guard.bytes_budget(self.disposer.config.limits.memory_budget).give(self.held)
            self.held = 0

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
        self.in_data = True
        self._reset_timeout()
        try:
            content = await self.read_data()
        except asyncio.CancelledError:  # the connection went away during DATA
            self._writer.close()
            raise
        finally:
            self.in_data = False
        if content is None:
            return  # the client closed the connection without ending DATA
        if isinstance(content, str):
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push(content)
            return
        self.envelope.content = self.envelope.original_content = content
        del content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        self._release()
        await self.push("250 OK" if status is MISSING else status)

    async def read_data(self) -> bytes | str | None:
        """The message after `354`: its bytes (transparency dots removed, every line ending CRLF),
        or the error reply once the whole transfer has been read, or None if the client left.

        The end is `CRLF.CRLF` only (a virtual CRLF before the first byte lets `.CRLF` at once
        be an empty message), so no bare-LF or lone-CR dot can end DATA early (SMTP smuggling).
        Bytes after the end (a pipelined QUIT, or the next commands) go back to the reader.

        Memory: every chunk kept in memory is taken from the relay's byte budget (limits.
        memory_budget, shared by all sessions); when the budget is spent the message goes on to a
        temporary file instead, and is read back only when the budget has room for it to be
        decided (MEMORY_FACTOR times its size), in turn. So RSS stays bounded whatever the number
        of large messages in flight; the reply still waits for delivery or the fsynced hold."""
        reader = self._reader
        limit = self.data_size_limit or 0
        budget = self.guard.bytes_budget(self.disposer.config.limits.memory_budget)
        buf = bytearray(b"\r\n")
        spool: IO[bytes] | None = None
        spooled = 0  # bytes already in the spool file (buf holds what follows)
        start = 0  # where the end may begin: the terminator can straddle two chunks
        received = 0  # bytes read in this DATA (the message, its end, maybe pipelined commands)
        too_big = False
        try:
            while (end := buf.find(_END, start)) < 0:
                chunk = await reader.read(CHUNK)
                if not chunk:
                    return None
                received += len(chunk)
                if limit and received > limit + CHUNK:
                    too_big = True  # keep reading to the end, holding no more than the tail
                    del buf[:-4]
                elif spool is None and budget.take(len(chunk)):
                    self.held += len(chunk)
                elif len(buf) > CHUNK:
                    spool = spool or tempfile.TemporaryFile(prefix="relay-data-")  # noqa: SIM115
                    spool.write(buf[:-4])  # page cache: a temporary copy, not the durable one
                    spooled += len(buf) - 4
                    del buf[:-4]
                    self._release()
                start = max(0, len(buf) - 4)
                buf += chunk
            self.in_data, self.busy = False, True  # the client waits for us now: push() re-arms the timer
            self._cancel_timeout()
            leftover = buf[end + len(_END):]
            if leftover:
                reader._buffer[:0] = leftover  # type: ignore[attr-defined]  # the next commands, in order
            if too_big or (limit and spooled + end > limit):  # raw size: every line with its CRLF, dots included
                return "552 5.3.4 Message too big for this server"
            del buf[end + 2:]  # keep the CRLF that ends the last line
            need = MEMORY_FACTOR * (spooled + len(buf))
            if spool is None and not budget.take(max(0, need - self.held)):
                spool = tempfile.TemporaryFile(prefix="relay-data-")  # noqa: SIM115  # wait on disk, not in memory
            if spool is not None:
                spool.write(buf)
                del buf
                self._release()
                await budget.wait_for(need)
                self.held = need
                spool.seek(0)
                buf = bytearray(await asyncio.to_thread(spool.read))
            else:
                self.held = max(self.held, need)
        finally:
            if spool is not None:
                spool.close()
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


async def listen(disposer: Disposer, host: str, port: int, sock: socket.socket | None = None) -> asyncio.Server:
    """The SMTP listener: one RelaySMTP per connection; OSError when the port cannot be opened.
    `sock`: a listening socket already bound (a worker serving the supervisor's socket)."""
    loop = asyncio.get_running_loop()
    if sock is not None:
        return await loop.create_server(lambda: RelaySMTP(disposer), sock=sock)
    return await loop.create_server(lambda: RelaySMTP(disposer), host, port)
def _printable(text: str, limit: int) -> str:
    """Client text fit for a log line: control characters out, bounded."""
    return re.sub(r"[\x00-\x1f\x7f]", "?", text)[:limit]


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
        # Only the new recipient is looked at (O(1) per RCPT, not the whole list again: 1,000 RCPTs
        # were quadratic). Equivalent: an envelope-only refusal of a recipient depends on the sender,
        # login, client and that recipient (lists, foreign domains, send-as); what depends on the
        # whole list (counts) waits for DATA, where the full envelope is decided.
        refusal = await self.disposer.rcpt(envelope.mail_from or "", [address], address,
                                           self.login(server, session), self.client_ip(server),
                                           trusted_hop=server.trusted_hop or self.hosted_hop(server) is not None,
                                           notify=not server.refused)
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
        login = self.login(server, session)
        hop = None if server.trusted_hop else self.hosted_hop(server)
        if login is None and hop is not None:
            login = self.hosted_login(server, envelope.mail_from or "", content)
        submitted = Submitted(
            secrets.token_hex(6).upper(), envelope.mail_from or "", tuple(envelope.rcpt_tos), content,
            login, self.client_ip(server),
            server.xforward.get("HELO") or session.host_name or "", tls=server._tls_protocol is not None,
            trusted_hop=server.trusted_hop, hosted=hop.service if hop is not None else None)
        return replies.smtp(await self.disposer.dispose(submitted, WeDeliver(txn)))

    async def handle_exception(self, error: Exception) -> str:
        self.log.error("session_error", error=type(error).__name__, detail=str(error)[:200])
        return INTERNAL_ERROR

    def login(self, server: RelaySMTP, session: Session) -> str | None:
        if session.authenticated and session.login_data:
            data = session.login_data
            return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        return None  # a trusted hop's login comes from its Received header, read by the disposer

    def hosted_hop(self, server: RelaySMTP) -> Any:
        """The trust.hosted entry this connection is (address and/or verified client certificate), or None."""
        hops = self.disposer.config.trust.hosted
        if not hops or server.trusted_hop:
            return None
        transport = server.transport
        peercert = transport.get_extra_info("peercert") if server._tls_protocol is not None and transport else None
        names = hosted.certificate_names(peercert)
        for hop in hops:
            if hosted.HostedTrust.build(hop.service, hop.clients, hop.certificate_names,
                                        hop.require).matches(server.peer_ip, names):
                return hop
        return None

    def hosted_login(self, server: RelaySMTP, mail_from: str, content: bytes) -> str | None:
        """The sender a trusted hosted service (trust.hosted) authenticated, else None: a client
        outside that trust gets nothing from the same headers (its mail is outside mail)."""
        hop = self.hosted_hop(server)
        if hop is None:
            return None
        login = hosted.hosted_login(hop.service, mail_from, content, self.disposer.rules.directory.domains,
                                    hop.tenant_id)
        self.log.info("hosted_hop", service=hop.service, client=server.peer_ip, login=login)
        return login

    def client_ip(self, server: RelaySMTP) -> str:
        if server.trusted_hop and server.xforward.get("ADDR"):
            addr = server.xforward["ADDR"]
            return addr.removeprefix("IPV6:").removeprefix("IPv6:")
        return server.peer_ip


__all__ = ["AuthResult", "LoginPassword", "RelaySMTP", "listen", "normalise_newlines", "split_params"]
