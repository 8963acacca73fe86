"""SMTP AUTH credentials: a file of `login:pbkdf2_sha256$iterations$salt$hash` lines."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
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


def _iterations(encoded: str) -> int:
    try:
        return int(encoded.split("$")[1])
    except (IndexError, ValueError):
        return ITERATIONS


class Credentials:
    """Logins and password hashes, read once. `check` costs the same for a login that does not
    exist (one pbkdf2 against a dummy hash with the file's own iteration count), so which logins
    exist cannot be timed; `check_async` runs it off the event loop, at most two at a time."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.entries = entries
        counts = sorted(_iterations(e) for e in entries.values())
        self.dummy = hash_password(os.urandom(16).hex(), iterations=counts[len(counts) // 2] if counts else ITERATIONS)

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
        ok = verify_password(password, encoded or self.dummy)
        return ok and encoded is not None

    async def check_async(self, login: str, password: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_HASHING, self.check, login, password)


# pbkdf2 releases the GIL; two threads of its own so guessers cannot take the default pool the
# store's writes use, nor more than the two cores this kind of host has.
_HASHING = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="pbkdf2")
