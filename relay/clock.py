"""Injected clocks: the system clock for serving, a fixed or hand-driven one for tests and dry runs."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("a clock needs a timezone-aware instant")
        self._at = at

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("a clock needs a timezone-aware instant")
        self._at = at

    def advance(self, delta: timedelta) -> None:
        self._at += delta


TEST_CLOCK_ENV = "POLICY_RELAY_TEST_CLOCK"


class FileClock:
    """Test hook: the instant written (ISO 8601 with offset) in a file, re-read whenever the file
    changes. `relay serve` uses it only when the POLICY_RELAY_TEST_CLOCK environment variable names
    such a file, and says so in its log; end-to-end tests move time by rewriting the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._at = self._read()

    def _read(self) -> datetime:
        text = self.path.read_text(encoding="utf-8").strip()
        at = datetime.fromisoformat(text)
        if at.tzinfo is None:
            raise ValueError(f"{self.path}: {text!r} has no UTC offset")
        return at

    def now(self) -> datetime:
        try:
            info = self.path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
            if stamp != self._stamp:
                self._at, self._stamp = self._read(), stamp
        except (OSError, ValueError):
            pass  # a half-written file: keep the last instant
        return self._at

    @staticmethod
    def write(path: str | Path, at: datetime) -> None:
        """Set the instant atomically (tests)."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(at.isoformat(), encoding="utf-8")
        os.replace(tmp, target)


def clock_from_env() -> Clock:
    """The system clock, unless the test hook names a clock file."""
    path = os.environ.get(TEST_CLOCK_ENV)
    return FileClock(path) if path else SystemClock()
