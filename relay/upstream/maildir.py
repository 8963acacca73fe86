"""maildir:PATH — the embedded default next hop: every message fsynced into one Maildir."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from relay.upstream.base import Reply, Transaction


class MaildirUpstream:
    """maildir:PATH — the embedded default: every message is written (fsynced) into one Maildir,
    with the envelope in X-Relay-Envelope-* headers, for a first try without a mail server."""

    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self._count = 0

    def describe(self) -> str:
        return f"maildir:{self.path}"

    def transaction(self) -> Transaction:
        return MaildirTransaction(self)

    async def close(self) -> None:
        return None

    def write(self, content: bytes) -> str:
        self._count += 1
        name = f"{time.time():.6f}.P{os.getpid()}Q{self._count}.{socket.gethostname()}"
        tmp = self.path / "tmp" / name
        try:
            with open(tmp, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, self.path / "new" / name)
        except BaseException:  # disk full, I/O error: no half-written file stays behind
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        dir_fd = os.open(self.path / "new", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return name


class MaildirTransaction(Transaction):
    def __init__(self, upstream: MaildirUpstream) -> None:
        self.upstream = upstream
        self.sender = ""
        self.recipients: list[str] = []

    async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
        self.sender = sender
        return Reply(250, "2.1.0 Ok")

    async def rcpt(self, recipient: str, options: Sequence[str] = ()) -> Reply:
        self.recipients.append(recipient)
        return Reply(250, "2.1.5 Ok")

    async def data(self, content: bytes) -> Reply:
        header = (f"X-Relay-Envelope-From: <{self.sender}>\r\n"
                  f"X-Relay-Envelope-To: {', '.join(f'<{r}>' for r in self.recipients)}\r\n").encode()
        try:
            name = await asyncio.to_thread(self.upstream.write, header + content)
        except OSError:
            return Reply(451, "4.3.0 Local delivery failed; try again later")
        return Reply(250, f"2.0.0 Ok: delivered as {name}")

    async def abort(self) -> None:
        self.recipients = []
