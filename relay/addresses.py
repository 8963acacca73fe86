"""Strict RFC 5322 §3.4 address-list parsing that refuses ambiguity.

Python 3.11's `email.utils.getaddresses` reads `alice@inst.gov.co <mallory@evil.test>` as two
addresses (CVE-2023-27043). This parser follows the grammar instead: an unquoted '@' cannot be
part of a display name, so that header is an error, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.header import decode_header, make_header

# RFC 5322 §3.2.3 atext, plus '.' (obs-phrase / dot-atom) and any non-ASCII (RFC 6532).
_SPECIALS = set('()<>[]:;@\\,"')
_WS = set(" \t\r\n")
_LENIENT = re.compile(r"[^\s<>,;:\"()\[\]]+@[^\s<>,;:\"()\[\]]+")


class AddressError(ValueError):
    """A header that is not a valid address list."""


@dataclass(frozen=True)
class Address:
    display_name: str
    local: str
    domain: str

    @property
    def addr(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def key(self) -> str:
        return self.addr.casefold()

    def __str__(self) -> str:
        return self.addr


@dataclass(frozen=True)
class _Tok:
    kind: str  # 'atom', 'qstr', 'dlit', 'comment' or the special character itself
    text: str


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _WS:
            i += 1
        elif c == '"':
            i, value = _quoted(text, i + 1, '"')
            tokens.append(_Tok("qstr", value))
        elif c == "(":
            depth, j, buf = 1, i + 1, []
            while j < n and depth:
                ch = text[j]
                if ch == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                depth += (ch == "(") - (ch == ")")
                if depth:
                    buf.append(ch)
                j += 1
            if depth:
                raise AddressError("unterminated comment")
            tokens.append(_Tok("comment", "".join(buf)))
            i = j
        elif c == "[":
            end = text.find("]", i)
            if end < 0:
                raise AddressError("unterminated domain literal")
            tokens.append(_Tok("dlit", text[i:end + 1]))
            i = end + 1
        elif c in _SPECIALS:
            if c in ")]\\":
                raise AddressError(f"unexpected {c!r}")
            tokens.append(_Tok(c, c))
            i += 1
        else:
            j = i
            while j < n and text[j] not in _SPECIALS and text[j] not in _WS:
                if ord(text[j]) < 32 or text[j] == "\x7f":
                    raise AddressError("control character in address")
                j += 1
            tokens.append(_Tok("atom", text[i:j]))
            i = j
    return tokens


def _quoted(text: str, i: int, close: str) -> tuple[int, str]:
    buf = []
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i + 1])
            i += 2
        elif ch == close:
            return i + 1, "".join(buf)
        elif ch in "\r\n":
            i += 1  # folding inside a quoted string
        else:
            buf.append(ch)
            i += 1
    raise AddressError("unterminated quoted string")


def _decode_words(text: str) -> str:
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (LookupError, ValueError, UnicodeError):
        return text


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.comments = [t.text for t in tokens if t.kind == "comment"]
        self.toks = [t for t in tokens if t.kind != "comment"]
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i].kind if self.i < len(self.toks) else None

    def take(self, kind: str) -> _Tok:
        if self.peek() != kind:
            found = self.peek() or "end of header"
            raise AddressError(f"expected {kind!r}, found {found!r}")
        self.i += 1
        return self.toks[self.i - 1]

    def phrase(self) -> list[_Tok]:
        words = []
        while self.peek() in ("atom", "qstr"):
            words.append(self.toks[self.i])
            self.i += 1
        return words

    def addr_spec(self, local_words: list[_Tok] | None = None) -> tuple[str, str]:
        words = local_words if local_words is not None else self.phrase()
        if len(words) != 1:
            raise AddressError("local part must be one word or quoted string")
        local = words[0].text
        if words[0].kind == "atom" and (not local or ".." in local or local[0] == "." or local[-1] == "."):
            raise AddressError(f"invalid local part {local!r}")
        self.take("@")
        if self.peek() == "dlit":
            domain = self.take("dlit").text
        else:
            domain = self.take("atom").text
            labels = domain.rstrip(".").split(".")
            if not all(labels) or any(c in domain for c in "\"\\"):
                raise AddressError(f"invalid domain {domain!r}")
        return local, domain.rstrip(".").casefold()

    def mailbox(self, words: list[_Tok]) -> Address:
        name = " ".join(_decode_words(w.text) if w.kind == "atom" else w.text for w in words)
        if self.peek() == "<":
            self.take("<")
            if self.peek() == "@":  # obs-route: @a,@b:local@domain
                while self.peek() in ("@", ",", "atom", "dlit") and self.peek() != ":":
                    self.i += 1
                self.take(":")
            local, domain = self.addr_spec()
            self.take(">")
            return Address(name, local, domain)
        if self.peek() == "@":
            local, domain = self.addr_spec(words)
            if self.peek() == "<":
                # `addr <same addr>` (what some clients write when the name is unknown) is one
                # mailbox; `alice@inst <mallory@evil>` (CVE-2023-27043) has two readings: refused.
                self.take("<")
                again = self.addr_spec()
                self.take(">")
                if (again[0].casefold(), again[1]) != (local.casefold(), domain):
                    raise AddressError("an address as display name of another address")
            return Address("", local, domain)
        found = self.peek() or "end of header"
        raise AddressError(f"expected an address, found {found!r}")

    def address_list(self) -> list[Address]:
        out: list[Address] = []
        pending: list[str] = []  # display-name pieces before an unquoted comma
        while self.peek() is not None:
            if self.peek() == ",":  # obs-addr-list allows empty members
                self.i += 1
                continue
            words = self.phrase()
            if words and self.peek() == ",":
                # `Pinto Ortiz, Laura <laura@x>` (Outlook address books): a phrase with no address
                # is the first part of the next mailbox's name, if that one has <angle brackets>.
                pending.append(" ".join(self._word(w) for w in words))
                continue
            if pending:
                if self.peek() != "<":
                    raise AddressError("a display name with an unquoted comma and no <address>")
                box = self.mailbox(words)
                out.append(Address(", ".join([*pending, box.display_name]).strip(", "), box.local, box.domain))
                pending = []
            elif self.peek() == ":":
                self.take(":")
                while self.peek() not in (";", None):
                    if self.peek() == ",":
                        self.i += 1
                        continue
                    out.append(self.mailbox(self.phrase()))
                self.take(";")
            else:
                out.append(self.mailbox(words))
            if self.peek() not in (",", None):
                raise AddressError(f"unexpected {self.peek()!r} after an address")
        if pending:
            raise AddressError("a display name with an unquoted comma and no <address>")
        return out

    @staticmethod
    def _word(word: _Tok) -> str:
        return _decode_words(word.text) if word.kind == "atom" else word.text


def parse_address_list(value: str) -> tuple[Address, ...]:
    """Every mailbox in an address-list header (groups flattened); AddressError if malformed."""
    parser = _Parser(_tokenize(value))
    result = parser.address_list()
    if len(result) == 1 and not result[0].display_name and parser.comments:
        # obsolete 'addr (Display Name)' form
        only = result[0]
        result = [Address(_decode_words(parser.comments[0].strip()), only.local, only.domain)]
    return tuple(result)


def lenient_addresses(value: str) -> tuple[str, ...]:
    """Best-effort address extraction for counting recipients in a malformed header."""
    return tuple(m.group(0).strip(".") for m in _LENIENT.finditer(value))


def parse_path(value: str) -> str:
    """An SMTP reverse- or forward-path without brackets, in its written form ('"a b"@x' keeps its
    quotes); '' is the null sender. Raises on garbage."""
    text = value.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text == "":
        return ""
    if text.startswith("@") and ":" in text:  # RFC 5321 source route, ignored (§3.3, C.)
        text = text.split(":", 1)[1]
    found = parse_address_list(text)
    if len(found) != 1 or found[0].display_name:
        raise AddressError(f"not a single address: {value!r}")
    # as SMTP writes it again (a local part that is not a dot-atom stays quoted, RFC 5321 §4.1.2):
    # the form compared at RCPT time, stored in holds and given to the upstream is one and valid
    return format_addr_spec(found[0].local, found[0].domain)


def is_group(value: str) -> bool:
    """Whether an address-list header uses RFC 5322 §3.4 group syntax (`Name: a@x, b@y;`)."""
    try:
        tokens = _tokenize(value)
    except AddressError:
        return False
    return any(t.kind == ":" for t in tokens)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_ATEXT = re.compile(rf"^{_ATOM}(\.{_ATOM})*$")
_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-. ]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_addr_spec(local: str, domain: str) -> str:
    """`local@domain` as RFC 5322 §3.4.1 writes it: a local part that is not a dot-atom is quoted
    (`"Juan Perez"@x`); non-ASCII stays UTF-8 (RFC 6532), never dropped or mangled."""
    local = _CONTROL.sub("", local)
    return f"{local if _ATEXT.match(local) else _quote(local)}@{domain}"


def format_address(address: Address) -> str:
    """One mailbox for a header we write: the display name as atoms, a quoted string, or (when it
    is not ASCII) an RFC 2047 encoded word, so the result always parses back to the same mailbox."""
    spec = format_addr_spec(address.local, address.domain)
    name = " ".join(_CONTROL.sub(" ", address.display_name).split())
    if not name:
        return spec
    if not name.isascii():
        from email.header import Header

        name = Header(name, "utf-8").encode()
    elif not _PHRASE.match(name) or name.startswith(".") or ".." in name:
        name = _quote(name)
    return f"{name} <{spec}>"
