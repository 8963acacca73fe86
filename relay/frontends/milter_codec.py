"""The Sendmail milter protocol, version 6, as bytes: packets in, typed commands out; replies as bytes.

Sans-IO (no sockets, no clock): `Decoder.feed()` takes whatever arrived and returns the complete
commands; the `reply_*`/`mod_*` functions build what the filter sends back. Constants and packet
layouts follow Sendmail's libmilter (mfdef.h) and Postfix's MTA side (src/milter/milter8.c): a
packet is a 4-byte big-endian length (command byte included), the command byte, then its data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VERSION = 6
MAX_PACKET = 1 << 20  # Postfix sends body chunks of at most 65,535 bytes; headers fit in this too

# MTA -> filter commands (SMFIC_*)
ABORT, BODY, CONNECT, MACRO, BODYEOB, HELO, HEADER = b"A", b"B", b"C", b"D", b"E", b"H", b"L"
MAIL, EOH, OPTNEG, QUIT, RCPT, DATA, UNKNOWN, QUIT_NC = b"M", b"N", b"O", b"Q", b"R", b"T", b"U", b"K"

# filter -> MTA replies (SMFIR_*)
R_ADDRCPT, R_DELRCPT, R_ACCEPT, R_CONTINUE, R_DISCARD = b"+", b"-", b"a", b"c", b"d"
R_CHGHEADER, R_PROGRESS, R_REJECT, R_TEMPFAIL, R_ADDHEADER = b"m", b"p", b"r", b"t", b"h"
R_INSHEADER, R_REPLYCODE, R_REPLBODY = b"i", b"y", b"b"
BODY_CHUNK = 65535  # the largest body packet libmilter sends; MTAs take replacement bodies in such pieces

# actions the filter may take (SMFIF_*)
F_ADDHDRS, F_CHGBODY, F_ADDRCPT, F_DELRCPT, F_CHGHDRS, F_QUARANTINE = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
F_CHGFROM, F_ADDRCPT_PAR, F_SETSYMLIST = 0x40, 0x80, 0x100

# protocol steps the filter does not want, or will not answer (SMFIP_*)
P_NOCONNECT, P_NOHELO, P_NOMAIL, P_NORCPT, P_NOBODY, P_NOHDRS, P_NOEOH = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40
P_NR_HDR, P_NOUNKNOWN, P_NODATA, P_SKIP, P_RCPT_REJ = 0x80, 0x100, 0x200, 0x400, 0x800
P_NR_CONN, P_NR_HELO, P_NR_MAIL, P_NR_RCPT, P_NR_DATA = 0x1000, 0x2000, 0x4000, 0x8000, 0x10000
P_NR_UNKN, P_NR_EOH, P_NR_BODY, P_HDR_LEADSPC = 0x20000, 0x40000, 0x80000, 0x100000

# macro stages for the symbol lists sent with the negotiation reply (SMFIM_*)
M_CONNECT, M_HELO, M_ENVFROM, M_ENVRCPT, M_DATA, M_EOM, M_EOH = range(7)


class ProtocolError(Exception):
    """The MTA sent something that is not the milter protocol (or too much of it)."""


@dataclass(frozen=True)
class OptNeg:
    version: int
    actions: int
    protocol: int


@dataclass(frozen=True)
class Macros:
    stage: bytes  # the command these macros belong to (C, H, M, R, T, L, N, B, E)
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Connect:
    hostname: str
    family: str  # "4", "6", "L" (unix), "U" (unknown)
    port: int
    address: str


@dataclass(frozen=True)
class Helo:
    name: str


@dataclass(frozen=True)
class Mail:
    sender: str  # without the angle brackets
    params: tuple[str, ...]


@dataclass(frozen=True)
class Rcpt:
    recipient: str
    params: tuple[str, ...]


@dataclass(frozen=True)
class Header:
    name: bytes
    value: bytes  # as sent: continuation lines separated by a bare LF


@dataclass(frozen=True)
class Body:
    chunk: bytes


@dataclass(frozen=True)
class Simple:
    """A command without data: EOH, end of message, DATA, abort, quit, quit-new-connection."""

    code: bytes


@dataclass(frozen=True)
class Unknown:
    command: str


Command = OptNeg | Macros | Connect | Helo | Mail | Rcpt | Header | Body | Simple | Unknown


def _strings(data: bytes) -> list[bytes]:
    """NUL-terminated strings; the last NUL is required."""
    if not data.endswith(b"\0"):
        raise ProtocolError("string data without its NUL terminator")
    return data[:-1].split(b"\0")


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def unbracket(address: str) -> str:
    address = address.strip()
    return address[1:-1] if address.startswith("<") and address.endswith(">") else address


def parse(code: bytes, data: bytes) -> Command:
    """One packet's command and data as a typed command."""
    if code == OPTNEG:
        if len(data) < 12:
            raise ProtocolError("short option negotiation")
        return OptNeg(*struct.unpack("!III", data[:12]))
    if code == MACRO:
        if not data:
            raise ProtocolError("macro packet without a stage")
        parts = _strings(data[1:]) if len(data) > 1 else []
        if len(parts) % 2:
            parts = parts[:-1]  # libmilter tolerates a trailing name without value
        return Macros(data[:1], {_text(parts[i]).strip("{}"): _text(parts[i + 1]) for i in range(0, len(parts), 2)})
    if code == CONNECT:
        end = data.find(b"\0")
        if end < 0 or end + 1 >= len(data):
            raise ProtocolError("bad connect packet")
        hostname, family, rest = _text(data[:end]), chr(data[end + 1]), data[end + 2:]
        if family in "46L" and len(rest) >= 2:
            (port,) = struct.unpack("!H", rest[:2])
            address = _text(_strings(rest[2:])[0]) if len(rest) > 2 else ""
            return Connect(hostname, family, port, address)
        return Connect(hostname, family, 0, "")
    if code == HELO:
        return Helo(_text(_strings(data)[0]))
    if code in (MAIL, RCPT):
        args = [_text(p) for p in _strings(data)]
        if not args:
            raise ProtocolError("MAIL/RCPT without an address")
        if code == MAIL:
            return Mail(unbracket(args[0]), tuple(a for a in args[1:] if a))
        return Rcpt(unbracket(args[0]), tuple(a for a in args[1:] if a))
    if code == HEADER:
        parts = _strings(data)
        if len(parts) < 2:
            raise ProtocolError("header without a value")
        return Header(parts[0], b"\0".join(parts[1:]))
    if code == BODY:
        return Body(data)
    if code in (EOH, BODYEOB, DATA, ABORT, QUIT, QUIT_NC):
        return Simple(code)
    if code == UNKNOWN:
        return Unknown(_text(data.rstrip(b"\0")))
    raise ProtocolError(f"unknown milter command {code!r}")


class Decoder:
    """Splits the byte stream into packets; `feed` returns the commands completed so far."""

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self.buffer = bytearray()
        self.max_packet = max_packet

    def feed(self, data: bytes) -> list[Command]:
        buffer = self.buffer
        if buffer:  # the rest of a packet split across reads
            buffer += data
            view = bytes(buffer)
            buffer.clear()
        else:
            view = bytes(data)  # the common case (whole packets in one read): no copy for bytes
        out: list[Command] = []
        start, end = 0, len(view)
        while end - start >= 4:
            (size,) = _LENGTH.unpack_from(view, start)
            if size < 1 or size > self.max_packet:
                raise ProtocolError(f"packet of {size} bytes")
            if end - start < 4 + size:
                break
            out.append(parse(view[start + 4:start + 5], view[start + 5:start + 4 + size]))
            start += 4 + size
        if start < end:
            buffer += view[start:]
        return out


_LENGTH = struct.Struct("!I")


def packet(code: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + code + data


def reply_optneg(actions: int, protocol: int, macros: dict[int, str] | None = None,
                 version: int = VERSION) -> bytes:
    """Our side of the negotiation: the lower of `version` (what the MTA offered) and ours — an MTA
    drops a milter that answers with a higher version than it offered (Postfix's milter_protocol 2,
    3, 4) — and, from version 6 on, the macro names we want at each stage (needs F_SETSYMLIST)."""
    version = max(1, min(version, VERSION))
    data = struct.pack("!III", version, actions, protocol)
    if version >= 6:
        for stage, names in sorted((macros or {}).items()):
            data += struct.pack("!I", stage) + names.encode() + b"\0"
    return packet(OPTNEG, data)


def reply_continue() -> bytes:
    return packet(R_CONTINUE)


def reply_accept() -> bytes:
    return packet(R_ACCEPT)


def reply_discard() -> bytes:
    return packet(R_DISCARD)


def well_formed(reply: str) -> str:
    """A 4xx/5xx reply on one line with an enhanced status code of its class (inserted if missing:
    an upstream's bare '451 busy' becomes '451 4.0.0 busy')."""
    text = " ".join(reply.split())
    code, _, rest = text.partition(" ")
    if len(code) != 3 or code[0] not in "45" or not code.isdigit():
        raise ValueError(f"not a 4xx/5xx reply: {reply!r}")
    status = rest.split(" ", 1)[0]
    if not (status[:2] == code[0] + "." and status.count(".") == 2):
        rest = f"{code[0]}.0.0 {rest}".rstrip()
    return f"{code} {rest}"


def reply_code(reply: str) -> bytes:
    """A 4xx or 5xx reply with an enhanced status code of the same class (Postfix refuses others;
    it also reads '%%' as '%', Sendmail's format-string habit, so '%' is doubled)."""
    text = well_formed(reply)
    return packet(R_REPLYCODE, text.replace("%", "%%").encode("utf-8") + b"\0")


def mod_add_header(name: str, value: str) -> bytes:
    return packet(R_ADDHEADER, name.encode() + b"\0" + value.encode("utf-8") + b"\0")


def mod_change_header(index: int, name: str, value: bytes) -> bytes:
    """Replace the `index`-th (1-based) header called `name`; an empty value deletes it."""
    return packet(R_CHGHEADER, struct.pack("!I", index) + name.encode() + b"\0" + value + b"\0")


def mod_replace_body(body: bytes) -> list[bytes]:
    """The new body (everything after the blank line, CRLF line ends) in SMFIR_REPLBODY packets;
    the MTA concatenates them. An empty body is one empty packet."""
    return [packet(R_REPLBODY, body[i:i + BODY_CHUNK]) for i in range(0, len(body), BODY_CHUNK)] or [
        packet(R_REPLBODY)]


def mod_delete_rcpt(recipient: str) -> bytes:
    return packet(R_DELRCPT, f"<{recipient}>".encode() + b"\0")
