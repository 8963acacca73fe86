"""SMTP AUTH credentials: a file of `login:pbkdf2_sha256$iterations$salt$hash` lines."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

ITERATIONS = 200_000


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, iterations, salt, digest = encoded.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


class Credentials:
    """Logins and password hashes, read once; `check` is constant-time per known login."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: Path) -> Credentials:
        entries: dict[str, str] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            login, sep, encoded = line.rpartition(":")
            if not sep or not encoded.startswith("pbkdf2_sha256$"):
                raise ValueError(f"{path}:{number}: expected 'login:pbkdf2_sha256$...' (make one with relay passwd)")
            entries[login.strip().casefold()] = encoded
        return cls(entries)

    def check(self, login: str, password: str) -> bool:
        encoded = self.entries.get(login.strip().casefold())
        if encoded is None:
            verify_password(password, hash_password("x", iterations=ITERATIONS, salt=b"0" * 16))
            return False
        return verify_password(password, encoded)
