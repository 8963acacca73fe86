"""Milter front-end: one asyncio session per MTA connection, the same engine, notices and holds.

Postfix opens a milter connection per SMTP session and may run several messages through it
(SMFIC_ABORT between them, SMFIC_QUIT_NC to start afresh). Envelope refusals are answered at RCPT
(SMFIR_REPLYCODE), the rest at end of message, where the `Disposer` decides (the MTA delivers:
`MtaDelivers`) and relay.frontends.replies says its `Disposition` in packets. Any fault
of ours answers `451 4.3.0` (never a 5xx, never an accept); if the relay is down or silent, Postfix
applies its `milter_default_action`, which must be `tempfail` (docs/postfix.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
from pathlib import Path
from typing import Any

from relay import logs
from relay.config import Milter
from relay.dispose import Disposer, MtaDelivers, Submitted
from relay.frontends import milter_codec as mc
from relay.frontends import replies
from relay.identity import local_submission_of

INTERNAL_ERROR = "451 4.3.0 Internal error; please try again later"
# What we take from the MTA, and what we ask it to spare us (no DATA/unknown events; no reply per
# header or body chunk, nor to CONNECT, HELO and MAIL, which are never refused here: each reply
# spared is a round trip the MTA does not wait for; header values exactly as received, leading
# space included).
ACTIONS = mc.F_ADDHDRS | mc.F_CHGHDRS | mc.F_CHGBODY | mc.F_DELRCPT | mc.F_SETSYMLIST
PROTOCOL = (mc.P_NOUNKNOWN | mc.P_NODATA | mc.P_NR_HDR | mc.P_NR_BODY | mc.P_NR_EOH | mc.P_HDR_LEADSPC
            | mc.P_NR_CONN | mc.P_NR_HELO | mc.P_NR_MAIL)
MACROS = {
    mc.M_CONNECT: "j {client_addr} {client_name}",
    mc.M_ENVFROM: "i {auth_authen} {auth_type} {mail_addr}",
    mc.M_ENVRCPT: "i {rcpt_addr}",
    mc.M_EOM: "i",
}
_NO_REPLY = {mc.HEADER: mc.P_NR_HDR, mc.BODY: mc.P_NR_BODY, mc.EOH: mc.P_NR_EOH, mc.CONNECT: mc.P_NR_CONN,
             mc.HELO: mc.P_NR_HELO, mc.MAIL: mc.P_NR_MAIL, mc.RCPT: mc.P_NR_RCPT, mc.DATA: mc.P_NR_DATA,
             mc.UNKNOWN: mc.P_NR_UNKN}


class MilterSession:
    def __init__(self, disposer: Disposer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.disposer, self.reader, self.writer = disposer, reader, writer
        self.decoder = mc.Decoder()
        # a log correlation id, not a secret: no urandom read per connection
        self.log = logs.get("relay.milter").bind(session_id=f"{random.getrandbits(32):08x}")
        self.idle_timeout = disposer.config.milter.idle_timeout if disposer.config.milter else 900.0
        self.protocol = 0  # negotiated SMFIP_* bits
        self.actions = 0
        self.macros: dict[bytes, dict[str, str]] = {}
        self.client_ip = ""
        self.helo = ""
        self.sock = _quickack_socket(writer)
        self.out: list[bytes] = []  # the replies to what was read, written together (one send)
        self.reset_message()

    def reset_message(self, keep_mail_macros: bool = False) -> None:
        """Forget the message; macros of its stages too (those of MAIL arrive just before MAIL)."""
        self.mail_from: str | None = None
        self.rcpts: list[str] = []
        self.headers: list[bytes] = []
        self.body = bytearray()
        self.size = 0
        self.too_big = False
        self.refused = False  # one notice per transaction for RCPT-time refusals
        stages = (mc.RCPT, mc.DATA, mc.HEADER, mc.EOH, mc.BODY, mc.BODYEOB)
        for stage in stages if keep_mail_macros else (mc.MAIL, *stages):
            self.macros.pop(stage, None)

    def macro(self, name: str) -> str | None:
        for values in reversed(list(self.macros.values())):
            if values.get(name):
                return values[name]
        return None

    async def run(self) -> None:
        self.disposer.active += 1
        loop = asyncio.get_running_loop()
        # The idle timeout: one timer per connection that re-arms itself, instead of a timeout
        # context (a timer scheduled and cancelled) around every read. It only ever interrupts a
        # read, never a decision or a hold being written.
        task = asyncio.current_task()
        assert task is not None
        self.deadline = loop.time() + self.idle_timeout
        self.reading = self.timed_out = False
        self.timer = loop.call_at(self.deadline, self.watchdog, loop, task)
        try:
            while True:
                self.deadline = loop.time() + self.idle_timeout
                self.reading = True
                try:
                    data = await self.reader.read(65536)
                except asyncio.CancelledError:
                    if not self.timed_out:
                        raise
                    task.uncancel()
                    self.log.info("milter_idle_timeout")
                    return
                self.reading = False
                if not data:
                    return
                if self.sock is not None:
                    # The MTA writes a macro packet, then the command (or one packet per header),
                    # each flushed alone with Nagle on: the next write waits for our ACK, which
                    # Linux delays 40 ms when we have nothing to send. ACK at once instead.
                    with contextlib.suppress(OSError):
                        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                try:
                    commands = self.decoder.feed(data)
                except mc.ProtocolError as error:
                    self.log.warning("milter_protocol_error", error=str(error))
                    return
                for command in commands:
                    if not await self.handle(command):
                        self.flush()
                        return
                if self.flush():
                    await self.writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.timer.cancel()
            if self.sock is not None:
                self.sock.close()
            self.disposer.active -= 1
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    def watchdog(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        """The idle timer: cancel the read when it has waited `idle_timeout`, else look again later."""
        if self.reading and loop.time() >= self.deadline:
            self.timed_out = True
            task.cancel()
            return
        self.timer = loop.call_at(max(self.deadline, loop.time() + 0.05), self.watchdog, loop, task)

    def send(self, data: bytes) -> None:
        self.out.append(data)

    def flush(self) -> bool:
        """Write the replies gathered (the packets that end a message go out in one write)."""
        if not self.out:
            return False
        data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
        self.out.clear()
        self.writer.write(data)
        return True

    def answer(self, code: bytes, data: bytes) -> None:
        """The reply to an event, unless we negotiated not to reply to that kind."""
        flag = _NO_REPLY.get(code)
        if flag is None or not self.protocol & flag:
            self.send(data)

    async def handle(self, command: mc.Command) -> bool:
        """One command; False ends the connection."""
        # the commands of every message first (macros, headers, body chunks)
        if isinstance(command, mc.Macros):
            self.macros[command.stage] = command.values
        elif isinstance(command, mc.Header):
            self.header(command)
            self.answer(mc.HEADER, mc.reply_continue())
        elif isinstance(command, mc.Body):
            self.add_body(command.chunk)
            self.answer(mc.BODY, mc.reply_continue())
        elif isinstance(command, mc.OptNeg):
            self.negotiate(command)
        elif isinstance(command, mc.Connect):
            self.client_ip = command.address if command.family in "46" else "127.0.0.1"
            self.answer(mc.CONNECT, mc.reply_continue())
        elif isinstance(command, mc.Helo):
            self.helo = command.name
            self.answer(mc.HELO, mc.reply_continue())
        elif isinstance(command, mc.Mail):
            self.reset_message(keep_mail_macros=True)
            self.mail_from = command.sender
            self.answer(mc.MAIL, mc.reply_continue())
        elif isinstance(command, mc.Rcpt):
            self.answer(mc.RCPT, await self.rcpt(command.recipient))
        elif isinstance(command, mc.Unknown):
            self.answer(mc.UNKNOWN, mc.reply_continue())
        elif command.code == mc.BODYEOB:
            for reply in await self.end_of_message():
                self.send(reply)
            self.reset_message()
        elif command.code in (mc.EOH, mc.DATA):
            self.answer(command.code, mc.reply_continue())
        elif command.code == mc.ABORT:
            self.reset_message()
        elif command.code == mc.QUIT_NC:
            self.reset_message()
            self.macros.clear()
            self.client_ip = self.helo = ""
        elif command.code == mc.QUIT:
            return False
        return True

    def negotiate(self, offer: mc.OptNeg) -> None:
        self.actions = ACTIONS & offer.actions
        self.protocol = PROTOCOL & offer.protocol
        missing = (mc.F_DELRCPT | mc.F_CHGHDRS | mc.F_ADDHDRS) & ~offer.actions
        if missing:
            self.log.warning("milter_actions_missing", offered=offer.actions, missing=missing)
        version = min(offer.version, mc.VERSION)
        macros = MACROS if self.actions & mc.F_SETSYMLIST and version >= 6 else None
        self.send(mc.reply_optneg(self.actions, self.protocol, macros, version))
        self.log.debug("milter_negotiated", version=version, offered=offer.version, actions=self.actions,
                       protocol=self.protocol)

    async def rcpt(self, recipient: str) -> bytes:
        if self.mail_from is None:
            return mc.reply_code("503 5.5.1 Bad sequence of commands")
        local = local_submission_of(self.disposer.directory)
        if local is not None and local.matches(self.client_ip):
            # sendmail/pickup mail (non_smtpd_milters): Postfix treats a refused simulated RCPT as a
            # configuration error and keeps the mail queued, so it is all decided at end of message.
            self.rcpts.append(recipient)
            return mc.reply_continue()
        try:
            refusal = await self.disposer.rcpt(self.mail_from, [recipient], recipient,  # O(1): see smtp.py
                                               self.macro("auth_authen"), self.client_ip,
                                               queue_id=self.macro("i") or "", notify=not self.refused)
        except Exception as error:  # a fault of ours: the MTA defers, nothing is lost
            self.log.error("milter_rcpt_fault", error=type(error).__name__)
            return mc.reply_code(INTERNAL_ERROR)
        if refusal is not None:
            self.refused = True
            return replies.milter_refusal(refusal)
        self.rcpts.append(recipient)
        return mc.reply_continue()

    def header(self, command: mc.Header) -> None:
        value = command.value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not self.protocol & mc.P_HDR_LEADSPC:
            value = b" " + value
        field = command.name + b":" + value
        self.headers.append(field)
        self.size += len(field) + 2
        self.too_big |= self.size > self.disposer.config.limits.max_message_size

    def add_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.disposer.config.limits.max_message_size:
            self.too_big = True
            self.body.clear()  # answered 552 at end of message; keep no more of it
        elif not self.too_big:
            self.body += chunk

    async def end_of_message(self) -> list[bytes]:
        if self.mail_from is None or not self.rcpts:
            return [mc.reply_code("503 5.5.1 Bad sequence of commands")]
        if self.too_big:
            return [mc.reply_code("552 5.3.4 Message size exceeds fixed maximum message size")]
        content = b"\r\n".join((*self.headers, b"", b"")) + self.body  # bytes: one copy of the body
        queue_id = self.macro("i") or secrets.token_hex(6).upper()
        try:
            outcome = await self.disposer.dispose(
                Submitted(queue_id, self.mail_from, tuple(self.rcpts), content, self.macro("auth_authen"),
                          self.client_ip, self.helo),
                MtaDelivers(replace_body=bool(self.actions & mc.F_CHGBODY)))
            return replies.milter(outcome, self.actions, self.protocol)
        except Exception as error:  # a fault of ours: the MTA defers, nothing is lost
            self.log.exception("milter_fault", queue_id=queue_id, error=type(error).__name__)
            return [mc.reply_code(INTERNAL_ERROR)]


async def listen(disposer: Disposer, milter: Milter, sock: socket.socket | None = None) -> asyncio.Server:
    """The milter listener: a unix socket (a stale one from a previous run replaced, mode set) or
    TCP; OSError when it cannot be opened. `sock`: a listening socket already bound (a worker
    serving the supervisor's socket, relay.workers.bind_milter)."""
    kind, where, port = milter.address()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await MilterSession(disposer, reader, writer).run()

    if sock is not None:
        if sock.family == socket.AF_UNIX:
            return await asyncio.start_unix_server(session, sock=sock)
        return await asyncio.start_server(session, sock=sock)
    if kind != "unix":
        return await asyncio.start_server(session, where, port)
    with contextlib.suppress(FileNotFoundError):
        if Path(where).is_socket():
            Path(where).unlink()  # a stale socket from a previous run
    server = await asyncio.start_unix_server(session, where)
    os.chmod(where, int(milter.socket_mode, 8))
    return server


def _quickack_socket(writer: asyncio.StreamWriter) -> socket.socket | None:
    """A socket on (a duplicate of) the TCP connection under a milter session, to ask Linux for quick
    ACKs, else None. Our own: uvloop's transport socket builds a socket object at every setsockopt,
    and this is asked after every read. The session closes it (the connection stays the transport's)."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "TCP_QUICKACK") or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        return socket.socket(sock.family, socket.SOCK_STREAM, 0, os.dup(sock.fileno()))
    except OSError:
        return None
