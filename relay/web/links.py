"""Signed one-click links for moderation notices: HMAC-SHA256 over (hold, action, moderator, expiry).

Pure: the key and the instant are passed in. A link names what it does; it does not act by
itself — it opens a confirmation page, and the action needs a signed-in moderator as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

LINK_ACTIONS = ("approve", "reject")  # a moderator's links (/m/…)
WITHDRAW_ACTIONS = ("withdraw",)  # the sender's link in a "held" notice (/w/…); `moderator` is the sender


@dataclass(frozen=True)
class LinkClaim:
    hold_id: str
    action: str
    moderator: str
    expires: int  # epoch seconds


class LinkError(Exception):
    """The link is malformed, tampered with or expired (the message says which, in Spanish)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(key: bytes, claim: LinkClaim) -> str:
    payload = _b64(json.dumps([claim.hold_id, claim.action, claim.moderator, claim.expires],
                              separators=(",", ":")).encode())
    mac = hmac.new(key, b"link:" + payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify(key: bytes, token: str, now: datetime, actions: tuple[str, ...] = LINK_ACTIONS) -> LinkClaim:
    """The claim of a genuine, unexpired token for one of `actions`; LinkError otherwise."""
    payload, _, mac = token.partition(".")
    try:
        given = _unb64(mac)
    except ValueError:
        raise LinkError("el enlace está incompleto o dañado") from None
    expected = hmac.new(key, b"link:" + payload.encode(), hashlib.sha256).digest()
    if not mac or not hmac.compare_digest(given, expected):
        raise LinkError("el enlace no es válido (fue alterado o no lo emitió este servidor)")
    try:
        hold_id, action, moderator, expires = json.loads(_unb64(payload))
        claim = LinkClaim(str(hold_id), str(action), str(moderator), int(expires))
    except (ValueError, TypeError):
        raise LinkError("el enlace está incompleto o dañado") from None
    if claim.action not in actions:
        raise LinkError("el enlace no corresponde a una acción conocida")
    if now.timestamp() > claim.expires:
        raise LinkError("el enlace expiró; decida desde la lista de mensajes retenidos")
    return claim


def load_key(path: Path) -> bytes:
    """The HMAC key in `path`, made (32 random bytes, mode 0600) on first use."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(32).hex().encode())
            handle.flush()
            os.fsync(handle.fileno())
        key = path.read_bytes()
    key = key.strip()
    if len(key) < 32:
        raise ValueError(f"{path}: the admin secret is shorter than 32 bytes; delete it to have a new one made")
    return key
