"""Tokens of the JSON API (`/api/v1/…` on the admin listener), apart from the moderators' sign-ins.

A token is 32 random bytes (`rly_` + URL-safe base64), shown once by `relay api-token new NAME`;
the relay keeps only its SHA-256 (`sha256$HEX`: a random token of that length needs no slow hash),
in `admin.api_tokens` or one per line (`NAME:sha256$HEX[:SCOPE]`) in `admin.api_token_file`, which
is read again when it changes (add or revoke a token without a restart). Scopes: `read` (holds,
trace, report, health) and `moderate` (also approve, reject, release, delete).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

PREFIX = "rly_"
SCOPES = ("read", "moderate")


@dataclass(frozen=True)
class ApiClient:
    name: str
    token_hash: str
    scope: str = "read"

    @property
    def can_moderate(self) -> bool:
        return self.scope == "moderate"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def valid_hash(value: str) -> bool:
    scheme, _, digest = value.partition("$")
    return scheme == "sha256" and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)


def find(clients: list[ApiClient], token: str) -> ApiClient | None:
    """The client whose hash the token has (every hash compared, in constant time each)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = token_hash(token)
    found = None
    for client in clients:
        if hmac.compare_digest(client.token_hash, digest):
            found = client
    return found


def parse_file(text: str, name: str = "api_token_file") -> list[ApiClient]:
    """`NAME:sha256$HEX[:SCOPE]` lines; # comments and blank lines skipped; ValueError names the line."""
    clients = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        scope = parts[2] if len(parts) == 3 else "read"
        if len(parts) not in (2, 3) or not parts[0] or not valid_hash(parts[1]) or scope not in SCOPES:
            raise ValueError(f"{name}, line {number}: expected NAME:sha256$HEX[:read|moderate] "
                             "(make one with `relay api-token new NAME`)")
        clients.append(ApiClient(parts[0], parts[1], scope))
    return clients


class TokenFile:
    """The token file, read again when its size or modification time changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._clients: list[ApiClient] = []

    def clients(self) -> list[ApiClient]:
        if self.path is None:
            return []
        try:
            st = self.path.stat()
        except OSError:
            self._stamp, self._clients = None, []
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._clients = parse_file(self.path.read_text(encoding="utf-8"), str(self.path))
            except (OSError, ValueError, UnicodeDecodeError):
                self._clients = []  # a broken file lets nobody in (logged by the caller's 401s)
            self._stamp = stamp
        return self._clients
