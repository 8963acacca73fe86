"""Parse a message once into a frozen Submission: envelope, decoded headers, addresses, body text.

Malformed mail never raises here: what cannot be understood becomes a defect string, and the
policy engine still decides on what is left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from email.policy import compat32
from functools import cached_property
from html.parser import HTMLParser

from relay.addresses import Address, AddressError, lenient_addresses, parse_address_list, parse_path
from relay.directory import address_key

MAX_BODY_CHARS = 64 * 1024
MAX_PARTS = 500
# Checked before the stdlib parser sees a message (its cost grows with these, not with the size):
MAX_HEADER_BYTES = 1024 * 1024  # the whole header section
MAX_HEADER_FIELDS = 5000
MAX_MULTIPARTS = 250  # Content-Type: multipart/... fields anywhere (Postfix: mime_nesting_limit 100)
MAX_DECODED_HEADER = 16 * 1024  # characters of one field value that are RFC 2047-decoded
_MULTIPART = re.compile(rb"^content-type:[ \t]*(?:\r?\n[ \t]+)?\"?multipart/", re.I | re.M)
_FIELD_START = re.compile(rb"^[^ \t\r\n]", re.M)
COMBINING = re.compile("[\u0300-\u036f]")


def fold(text: str) -> str:
    """Case- and accent-insensitive form of a text (NFKD without combining marks, casefolded)."""
    if text.isascii():
        return text.lower()
    import unicodedata

    return COMBINING.sub("", unicodedata.normalize("NFKD", text)).casefold()


@dataclass(frozen=True)
class DnsFacts:
    """What DNS said about a message, gathered by the front-end before the (pure) engine runs.

    `mail_domains`: (domain, "mail" | "none") for recipient domains looked up; `spf` is the SPF
    result for `spf_domain` (the envelope sender's domain, or the HELO name for the null sender),
    with the domain's own explanation of a fail (`spf_explanation`, its exp= text);
    `dmarc` is pass | fail | none for the From domain, with its published `dmarc_policy`;
    `source` says whether we looked ourselves ("dns") or read a trusted hop's
    Authentication-Results ("authentication-results")."""

    mail_domains: tuple[tuple[str, str], ...] = ()
    spf: str | None = None
    spf_domain: str = ""
    spf_explanation: str = ""
    dkim: tuple[str, ...] = ()
    dmarc: str | None = None
    dmarc_policy: str = ""
    from_domain: str = ""
    source: str = "dns"

    def mail_domain(self, domain: str) -> str | None:
        key = domain.casefold().rstrip(".")
        return next((status for d, status in self.mail_domains if d == key), None)


@dataclass(frozen=True)
class Envelope:
    """What the SMTP session said, with addresses normalised ('' is the null sender)."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    auth: str | None = None
    client_ip: str | None = None
    helo: str | None = None
    facts: DnsFacts | None = None  # None: DNS checks are off, or nothing was looked up

    @classmethod
    def build(cls, mail_from: str, rcpt_to: list[str] | tuple[str, ...], auth: str | None = None,
              client_ip: str | None = None, helo: str | None = None) -> Envelope:
        """Normalise raw envelope values; raises AddressError on an unusable address."""
        seen: dict[str, str] = {}
        for rcpt in rcpt_to:
            addr = parse_path(rcpt)
            if not addr:
                raise AddressError("empty recipient")
            seen.setdefault(address_key(addr), addr)
        return cls(parse_path(mail_from), tuple(seen.values()), (auth or "").strip() or None,
                   client_ip or None, helo)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


def _unescape_8bit(value: str) -> str:
    """Raw 8-bit header bytes (RFC 6532 UTF-8, or legacy Latin-1) back to text."""
    try:
        raw = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def raw_headers(msg: Message) -> list[tuple[str, str]]:
    """(name, value) pairs as sent, with 8-bit bytes decoded; values still folded and encoded."""
    return [(str(k), _unescape_8bit(v) if isinstance(v, str) else str(v)) for k, v in msg.raw_items()]


def decode_value(raw: str) -> str:
    """RFC 2047-decoded, unfolded header value; undecodable words stay as they are. Only the first
    MAX_DECODED_HEADER characters (the stdlib decoder is slow on thousands of encoded words)."""
    unfolded = raw[:MAX_DECODED_HEADER].replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", " ")
    unfolded = unfolded.replace("\n", " ")
    if "=?" not in unfolded:
        return unfolded.strip()
    try:
        return str(make_header(decode_header(unfolded))).strip()
    except (LookupError, ValueError, UnicodeError, AssertionError):
        return unfolded.strip()


@dataclass(frozen=True)
class ParsedMessage:
    """The parts of a message the rules read. Build with `parse_message`."""

    headers: tuple[tuple[str, str], ...]
    from_: tuple[Address, ...]
    from_error: str | None
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    body_text: str
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    size: int
    incomplete: str | None = None  # why the message could not be read whole (policy then refuses it)

    def header(self, name: str) -> str | None:
        """First value of a header (decoded), or None."""
        return self._first_values.get(name.lower())

    @cached_property
    def _first_values(self) -> dict[str, str]:
        # The rules ask ~20 header names per decision (the RFC 3834 gate alone a dozen): one pass.
        first: dict[str, str] = {}
        for k, v in self.headers:
            first.setdefault(k.lower(), v)
        return first

    def header_all(self, name: str) -> tuple[str, ...]:
        low = name.lower()
        return tuple(v for k, v in self.headers if k.lower() == low)

    @property
    def visible(self) -> tuple[str, ...]:
        """Addresses shown to every recipient (To and Cc)."""
        return self.to + self.cc

    @cached_property
    def folded_subject(self) -> str:
        return fold(self.subject)

    @cached_property
    def folded_body(self) -> str:
        return fold(self.body_text)


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


# Elements that end a line of text when rendered; inline ones (b, span, a, ...) do not split words.
_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
    "ol", "p", "pre", "section", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
})
_HIDDEN = frozenset({"script", "style", "head", "template", "noscript"})  # never shown as text


class _HtmlText(HTMLParser):
    """HTML to plain text the way a mail client shows it: entities decoded (convert_charrefs),
    scripts, styles and the head dropped, block elements on lines of their own, inline markup
    joined (so "sa<b>lud</b>" stays one word)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCKS:
            self.out.append("\n")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt and not self.hidden:
                self.out.append(f" {alt} ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.out.append(data)


def _html_text(markup: str) -> str:
    parser = _HtmlText()
    try:
        parser.feed(markup)
        parser.close()
    except (AssertionError, ValueError):  # the odd markup html.parser gives up on: keep what was read
        pass
    return re.sub(r"[ \t\r\f\v]*\n\s*", "\n", "".join(parser.out)).strip()


def _addresses(raw_values: list[str], defects: list[str], name: str) -> tuple[str, ...]:
    out: list[str] = []
    for raw in raw_values:
        try:
            out.extend(a.addr for a in parse_address_list(raw))
        except AddressError as error:
            defects.append(f"{name}: {error}")
            out.extend(lenient_addresses(decode_value(raw)))
    return tuple(out)


def _walk_body(msg: Message, defects: list[str], max_chars: int) -> tuple[str, tuple[Attachment, ...]]:
    texts: list[str] = []
    attachments: list[Attachment] = []
    total = 0
    for count, part in enumerate(msg.walk()):
        if count >= MAX_PARTS:
            defects.append(f"more than {MAX_PARTS} MIME parts; the rest was not read")
            break
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        filename = part.get_filename()
        if not _read_part(part):
            raw = part.get_payload()
            size = len(raw) if isinstance(raw, str | bytes) else 0
            attachments.append(Attachment(decode_value(str(filename or "")), ctype, size))
            continue
        if ctype not in ("text/plain", "text/html") or total >= max_chars:
            continue
        text = _text_of(part)
        if ctype == "text/html":
            text = _html_text(text[: (max_chars - total) * 8])  # markup beyond that cannot fit
        texts.append(text[: max_chars - total])
        total += len(texts[-1])
    return "\n".join(texts), tuple(attachments)


_BLANK = re.compile(rb"\r?\n\r?\n")
ELIDE_OVER = 256 * 1024
ELIDED = b"!policy-relay-elided!\r\n"  # not base64: decoders skip it; a part that shows it was cut
_PART_TYPE = re.compile(rb"^content-type:[ \t]*\"?([a-z0-9-]+)/", re.I | re.M)


def elide_binary(data: bytes) -> bytes:
    """The bodies of long non-text parts cut to their first line, before parsing.

    The rules read headers, text, and the names and types of attachments, never what is inside an
    attachment, and the stdlib parser reads a multipart message line by line (220 ms for a 10 MB
    PDF). Walks the lines that start with `--` (boundaries, and whatever else starts so): when the
    header block after one names a type other than text/, message/ or multipart/, its body, up to
    the next such line, is cut. No boundary is ever cut. `_parse` then checks that no part it
    reads shows the cut mark (someone may have dressed text up as an attachment) and otherwise
    parses the message whole. Attachment sizes are then the size read, not the size sent."""
    out: list[bytes] = []
    kept = pos = 0
    size = len(data)
    while (dash := data.find(b"\n--", pos)) >= 0:
        head = data.find(b"\n", dash + 1) + 1
        pos = dash + 3
        if head <= 0:
            break
        blank = _BLANK.search(data, head - 2, head + 16384)  # the header block of a part, if it is one
        if blank is None or blank.start() < head - 2:
            continue
        ctype = _PART_TYPE.search(data, head, blank.start() + 2)
        if ctype is None or ctype.group(1).lower() in (b"text", b"message", b"multipart"):
            continue
        body = blank.end()
        nxt = data.find(b"\n--", body)
        nxt = size if nxt < 0 else nxt
        first = data.find(b"\n", body) + 1
        if nxt - body < 4096 or first <= 0 or first >= nxt:
            pos = max(pos, nxt)
            continue
        out.append(data[kept:first])
        out.append(ELIDED)
        kept = nxt - 1 if data[nxt - 1:nxt] == b"\r" else nxt  # the CRLF before a boundary is the boundary's
        pos = nxt
    if not out:
        return data
    out.append(data[kept:])
    return b"".join(out)


def _parse(data: bytes) -> Message:
    """The stdlib parse, with a fast path: a single-part body is attached as the payload directly
    (as feedparser itself does for non-multipart parts) instead of being fed line by line."""
    blank = _BLANK.search(data)
    if blank is not None:
        head = message_from_bytes(data[: blank.end()], policy=compat32)
        if head.get_content_maintype() not in ("multipart", "message") and not head.defects:
            head.set_payload(data[blank.end():].decode("ascii", "surrogateescape"))
            return head
    if len(data) > ELIDE_OVER and (elided := elide_binary(data)) is not data:
        msg = message_from_bytes(elided, policy=compat32)
        if not any(_read_part(part) and ELIDED.decode() in str(part.get_payload()) for part in msg.walk()):
            return msg
    return message_from_bytes(data, policy=compat32)


def _read_part(part: Message) -> bool:
    """Whether `_walk_body` reads this part's content (not only its name)."""
    if part.is_multipart():
        return False
    disposition = str(part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return disposition != "attachment" and not part.get_filename()


def too_complex(data: bytes) -> str | None:
    """Why a message is beyond what is parsed (so never "could not read it, so deliver it"), or None.

    Cheap scans of the raw bytes, made before the stdlib parser, whose time grows with the header
    count, the MIME nesting and the number of encoded words rather than with the size."""
    blank = _BLANK.search(data)
    head = data[: blank.start()] if blank else data
    if len(head) > MAX_HEADER_BYTES:
        return f"header section over {MAX_HEADER_BYTES // 1024} KiB"
    if len(head) > 64 * 1024 and len(_FIELD_START.findall(head)) > MAX_HEADER_FIELDS:
        return f"more than {MAX_HEADER_FIELDS} header fields"
    if data.count(b"ultipart/") > MAX_MULTIPARTS and len(_MULTIPART.findall(data)) > MAX_MULTIPARTS:
        return f"more than {MAX_MULTIPARTS} multipart parts"
    return None


def parse_message(data: bytes, max_body_chars: int = MAX_BODY_CHARS) -> ParsedMessage:
    """Parse raw RFC 5322 bytes. Never raises on malformed input; faults become `defects`, and
    what could not be read whole sets `incomplete` (the engine refuses such a message)."""
    defects: list[str] = []
    incomplete = too_complex(data)
    if incomplete:
        return ParsedMessage(headers=(), from_=(), from_error=None, to=(), cc=(), subject="", body_text="",
                             attachments=(), defects=(incomplete,), size=len(data), incomplete=incomplete)
    try:
        msg = _parse(data)
    except Exception as error:  # the stdlib parser is lenient; stay safe on the odd crash
        incomplete = f"unparseable message: {type(error).__name__}"
        defects.append(incomplete)
        msg = message_from_bytes(b"\r\n", policy=compat32)
    defects.extend(type(d).__name__ for d in msg.defects)

    raw = raw_headers(msg)
    headers = tuple((k, decode_value(v)) for k, v in raw)

    def values(name: str) -> list[str]:
        return [v for k, v in raw if k.lower() == name]

    raw_from = values("from")
    from_: tuple[Address, ...] = ()
    from_error: str | None = None
    if len(raw_from) != 1:
        from_error = "no From header" if not raw_from else f"{len(raw_from)} From headers"
    else:
        try:
            from_ = parse_address_list(raw_from[0])
            if not from_:
                from_error = "empty From header"
        except AddressError as error:
            from_error = f"malformed From header: {error}"
    if from_error:
        defects.append(from_error)

    to = _addresses(values("to"), defects, "To")
    cc = _addresses(values("cc"), defects, "Cc")
    subjects = [decode_value(v) for v in values("subject")]
    if len(subjects) > 1:
        defects.append(f"{len(subjects)} Subject headers")
    try:
        body, attachments = _walk_body(msg, defects, max_body_chars)
    except Exception as error:  # the stdlib's odd crash on odd input: fail closed (the engine refuses)
        incomplete = incomplete or f"body not readable: {type(error).__name__}"
        defects.append(incomplete)
        body, attachments = "", ()
    if not incomplete and any(d.startswith(f"more than {MAX_PARTS} MIME parts") for d in defects):
        incomplete = f"more than {MAX_PARTS} MIME parts"
    return ParsedMessage(
        headers=headers, from_=from_, from_error=from_error, to=to, cc=cc,
        subject=subjects[0] if subjects else "", body_text=body, attachments=attachments,
        defects=tuple(dict.fromkeys(defects)), size=len(data), incomplete=incomplete,
    )


@dataclass(frozen=True)
class Submission:
    """One message as the policy engine sees it: envelope plus parsed content."""

    envelope: Envelope
    message: ParsedMessage
    queue_id: str = ""
    extra: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


EMPTY_MESSAGE = parse_message(b"\r\n")  # what the RCPT-time envelope pass decides on
