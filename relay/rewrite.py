"""Pure header surgery on raw messages: trace headers, dropping forged relay headers, hiding addresses.

Only values we generate or have sanitised go into headers (CVE-2026-1299: never write a
client-controlled value into a header unchecked).
"""

from __future__ import annotations

import contextlib
import quopri
import re
import secrets
from email.header import decode_header, make_header

from relay.addresses import AddressError, format_address, parse_address_list

_HEADER_END = re.compile(rb"\r\n\r\n")
_OWN_PREFIX = b"x-relay-"


def split_head(content: bytes) -> tuple[list[bytes], bytes]:
    """Header fields (each with its folded continuation lines) and the rest (blank line + body)."""
    match = _HEADER_END.search(content)
    head, rest = (content[: match.start() + 2], content[match.start() + 2:]) if match else (content, b"")
    fields: list[bytes] = []
    for line in head.split(b"\r\n")[:-1] if head.endswith(b"\r\n") else head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, rest


def join(fields: list[bytes], rest: bytes) -> bytes:
    return b"".join(f + b"\r\n" for f in fields) + rest


def drop_own_headers(fields: list[bytes]) -> list[bytes]:
    """Remove X-Relay-* headers a client may have forged; ours are added afresh."""
    return [f for f in fields if f[:len(_OWN_PREFIX)].lower() != _OWN_PREFIX]


def hide_addresses(fields: list[bytes], hide: frozenset[str]) -> list[bytes]:
    """Drop the given addresses from To and Cc (they stay envelope recipients: a BCC, in effect).

    A field that names none of them is kept byte for byte; one that cannot be parsed is kept as it
    is, never emptied (the mass_bcc rule refuses such a message before a rewrite is asked for).
    What is written back quotes local parts that need it and RFC 2047-encodes non-ASCII names."""
    out: list[bytes] = []
    had_to = False
    for field in fields:
        name = field.split(b":", 1)[0].strip().lower()
        if name not in (b"to", b"cc"):
            out.append(field)
            continue
        value = field.split(b":", 1)[1].decode("utf-8", "surrogateescape")
        try:
            found = parse_address_list(value)
        except AddressError:
            out.append(field)
            had_to |= name == b"to"
            continue
        kept = [a for a in found if a.key not in hide]
        if len(kept) == len(found):
            out.append(field)
        elif kept:
            rendered = ",\r\n ".join(format_address(a) for a in kept)
            out.append(name.capitalize() + b": " + rendered.encode("utf-8", "surrogateescape"))
        else:
            continue
        had_to |= name == b"to"
    if not had_to:
        out.append(b"To: undisclosed-recipients:;")
    return out


def set_to(fields: list[bytes], recipient: str) -> list[bytes]:
    """One copy for one recipient: To shows only them, Cc is dropped (split delivery)."""
    kept = [f for f in fields if f.split(b":", 1)[0].strip().lower() not in (b"to", b"cc")]
    return [*kept, b"To: " + recipient.encode("utf-8")]


def header_edits(before: list[bytes], after: list[bytes]) -> list[tuple[str, int, bytes | None]]:
    """The edits that turn header fields `before` into `after`, for an MTA that edits in place
    (milter): (name, index, value) with the 1-based occurrence of that name, 0 to append, and
    None to delete. Values are the raw bytes after the colon (folds as CRLF). Changes come first,
    then appends, then deletions from the last occurrence up, so no edit shifts another's index."""

    def by_name(fields: list[bytes]) -> dict[bytes, list[tuple[bytes, bytes]]]:
        out: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for field in fields:
            name, _, value = field.partition(b":")
            out.setdefault(name.strip().lower(), []).append((name.strip(), value))
        return out

    old, new = by_name(before), by_name(after)
    changes: list[tuple[str, int, bytes | None]] = []
    appends: list[tuple[str, int, bytes | None]] = []
    deletes: list[tuple[str, int, bytes | None]] = []
    for key in dict.fromkeys([*old, *new]):
        was, will = old.get(key, []), new.get(key, [])
        if [v for _, v in was] == [v for _, v in will]:
            continue
        for i, (name, value) in enumerate(will):
            if i >= len(was):
                appends.append((name.decode("ascii", "replace"), 0, value))
            elif was[i][1] != value:
                changes.append((was[i][0].decode("ascii", "replace"), i + 1, value))
        deletes.extend((was[i][0].decode("ascii", "replace"), i + 1, None)
                       for i in reversed(range(len(will), len(was))))
    return changes + appends + deletes


def field_name_value(field: bytes) -> tuple[str, str]:
    """A header field as (name, unfolded value), encoded words decoded."""
    name, _, value = field.decode("utf-8", "replace").partition(":")
    value = " ".join(value.split())
    with contextlib.suppress(ValueError, LookupError, UnicodeError):
        value = str(make_header(decode_header(value)))
    return name.strip(), value


_CONTENT = (b"content-", b"mime-version")


def tag_subject(fields: list[bytes], subject_tag: str) -> list[bytes]:
    """`subject_tag` (ASCII, ours) before the first Subject."""
    tag = subject_tag.encode("ascii", "replace")
    out, done = [], False
    for field in fields:
        if not done and field.split(b":", 1)[0].strip().lower() == b"subject":
            out.append(b"Subject: " + tag + b" " + field.split(b":", 1)[1].lstrip(b" "))
            done = True
        else:
            out.append(field)
    return out if done else [*out, b"Subject: " + tag]


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def quoted_printable(text: str) -> bytes:
    """`text` as quoted-printable UTF-8 with CRLF line ends only, soft breaks included (quopri
    writes bare LF, and leaves a lone CR as it is: both become line breaks first, then CRLF)."""
    encoded = quopri.encodestring(_LINE_BREAK.sub("\n", text).encode("utf-8"))
    return encoded.replace(b"\n", b"\r\n")


def add_banner(fields: list[bytes], rest: bytes, banner: str, subject_tag: str) -> tuple[list[bytes], bytes]:
    """Put a visible warning in front of a message: `subject_tag` before the Subject (ASCII, ours)
    and a first part with `banner` (quoted-printable UTF-8) in a new multipart/mixed around the
    original content, which is kept byte for byte as the second part. No HTML is parsed or edited."""
    out, content = [], []
    for field in tag_subject(fields, subject_tag) if subject_tag else fields:
        name = field.split(b":", 1)[0].strip().lower()
        if name.startswith(_CONTENT[0]) or name == _CONTENT[1]:
            content.append(field)
        else:
            out.append(field)
    if not banner:
        return [*out, *content], rest
    boundary = f"=_policy-relay-warning-{secrets.token_hex(8)}"
    out += [b"MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{boundary}"'.encode()]
    inner = [f for f in content if f.split(b":", 1)[0].strip().lower() != b"mime-version"]
    body = quoted_printable(banner)
    new_rest = (b"\r\n--" + boundary.encode() + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body.rstrip(b"\r\n") + b"\r\n"
                b"--" + boundary.encode() + b"\r\n" + join(inner, rest) + b"\r\n--" + boundary.encode() + b"--\r\n")
    return out, new_rest
