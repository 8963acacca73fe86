"""Sign test messages with the throwaway key of this folder (dkimpy), and re-sign the scenarios
whose message carries a DKIM-Signature: `python -m tests.dkim.sign` after the key or a signed
scenario's text changed. A scenario comment `# after signing: "old" -> "new"` changes the signed
message afterwards (tampering in transit)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import dkim

HERE = Path(__file__).resolve().parent
SELECTOR = "relay2026"
PUBLIC_KEY = (HERE / "relay2026.pub").read_text(encoding="ascii").strip()


def key_record() -> str:
    """The TXT record of the public key, as dnsmasq's txt-record wants it: strings of at most 255
    characters (a 2048-bit key does not fit in one)."""
    text = f"v=DKIM1; k=rsa; p={PUBLIC_KEY}"
    return ",".join(f'"{text[i:i + 250]}"' for i in range(0, len(text), 250))


def sign(raw: bytes, domain: str, selector: str = SELECTOR) -> bytes:
    """`raw` (CRLF) with a DKIM-Signature of `domain` on top (relaxed/relaxed, no expiry)."""
    private = (HERE / "relay2026.key").read_bytes()
    signature = dkim.sign(raw, selector.encode(), domain.encode(), private,
                          canonicalize=(b"relaxed", b"relaxed"), linesep=b"\r\n")
    return bytes(signature) + raw


def _unsigned(message: str) -> tuple[str, str]:
    """(the signing domain, the message without its DKIM-Signature field)."""
    match = re.search(r"^DKIM-Signature:.*?(?=^\S)", message, re.M | re.S)
    assert match, "no DKIM-Signature"
    domain = re.search(r"\bd=([^;\s]+)", match.group(0))
    assert domain
    return domain.group(1), message[: match.start()] + message[match.end():]


def resign(path: Path) -> bool:
    text = path.read_text(encoding="utf-8")
    match = re.search(r"^message: \|\n((?:  .*\n|\n)+)", text, re.M)
    if not match or "DKIM-Signature:" not in match.group(1):
        return False
    message = "".join(line[2:] if line.strip() else line for line in match.group(1).splitlines(keepends=True))
    for old, new in re.findall(r'^# after signing: "([^"]*)" -> "([^"]*)"$', text, re.M):
        message = message.replace(new, old)  # undo the change in transit before signing again
    domain, unsigned = _unsigned(message)
    raw = unsigned.replace("\n", "\r\n").encode("utf-8")
    signed = sign(raw, domain).decode("utf-8").replace("\r\n", "\n")
    for old, new in re.findall(r'^# after signing: "([^"]*)" -> "([^"]*)"$', text, re.M):
        assert old in signed, f"{path.name}: {old!r} is not in the message"
        signed = signed.replace(old, new)  # a change in transit, which the signature must catch
    block = "".join(("  " + line) if line.strip() else line for line in signed.splitlines(keepends=True))
    path.write_text(text[: match.start(1)] + block + text[match.end(1):], encoding="utf-8")
    return True


def main() -> int:
    root = HERE.parent / "scenarios"
    for path in sorted(root.rglob("*.yaml")):
        if resign(path):
            print(f"signed {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
