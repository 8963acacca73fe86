"""State shared by every SMTP session of one relay against hostile clients: connections per client
address, AUTH failures per client address, and the budget of message bytes held in memory.

Pure bookkeeping (no sockets, no clock of its own: callers pass `time.monotonic()`); one instance
per running relay (`guard_for(app)`), so a reload keeps the counts.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from typing import Any

# Entries kept per table before old ones are dropped (a spray of addresses cannot grow memory).
MAX_TRACKED = 50_000


class AuthFailures:
    """Failed AUTH attempts per client address within a sliding window."""

    def __init__(self) -> None:
        self.seen: dict[str, collections.deque[float]] = {}

    def _recent(self, client: str, window: float, now: float) -> collections.deque[float] | None:
        times = self.seen.get(client)
        if times is None:
            return None
        while times and times[0] <= now - window:
            times.popleft()
        if not times:
            del self.seen[client]
            return None
        return times

    def count(self, client: str, window: float, now: float) -> int:
        times = self._recent(client, window, now)
        return len(times) if times else 0

    def add(self, client: str, window: float, now: float) -> int:
        """Record a failure; the number of failures in the window, this one included."""
        times = self._recent(client, window, now)
        if times is None:
            if len(self.seen) >= MAX_TRACKED:  # the oldest entry goes (dicts keep insertion order)
                del self.seen[next(iter(self.seen))]
            times = self.seen[client] = collections.deque()
        times.append(now)
        return len(times)

    def undo(self, client: str, stamp: float) -> None:
        """Take back an attempt counted in advance (it succeeded)."""
        times = self.seen.get(client)
        if times is not None and stamp in times:
            times.remove(stamp)
            if not times:
                del self.seen[client]


class ByteBudget:
    """Message bytes the SMTP front-end may hold in memory at once, across all sessions.

    `take` never waits (a DATA reader that cannot take spools to disk instead); `wait_for` waits its
    turn in order (a message being decided); a request larger than the whole budget is granted when
    nothing else is held, so one huge message still goes through, alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    def take(self, size: int) -> bool:
        if self._waiters or not self._fits(size):
            return False
        self._grant(size)
        return True

    def _grant(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)

    async def wait_for(self, size: int) -> None:
        if self.take(size):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if entry in self._waiters:
                self._waiters.remove(entry)
            elif future.done() and not future.cancelled():
                self.give(size)  # granted just as we were cancelled: hand it back
            raise

    def give(self, size: int) -> None:
        self.used = max(0, self.used - size)
        while self._waiters and self._fits(self._waiters[0][0]):
            size, future = self._waiters.popleft()
            if future.done():
                continue
            self._grant(size)
            future.set_result(None)


class FamiliarPlaces:
    """Client addresses a login has signed in from (in this process's memory, bounded): a login
    under a guessing spray stays usable from where its owner already works (as hosted mail's
    "smart lockout" does), while the spray's addresses are refused for it."""

    def __init__(self, keep: float = 30 * 86400) -> None:
        self.keep = keep
        self.seen: dict[tuple[str, str], float] = {}

    def add(self, login: str, client: str, now: float) -> None:
        key = (login, client)
        self.seen.pop(key, None)
        if len(self.seen) >= MAX_TRACKED:
            del self.seen[next(iter(self.seen))]
        self.seen[key] = now

    def knows(self, login: str, client: str, now: float) -> bool:
        at = self.seen.get((login, client))
        return at is not None and now - at < self.keep


class ClientGuard:
    """One relay's counts: open connections per client address, AUTH failures per address and per
    login, where each login signed in from, the byte budget."""

    def __init__(self) -> None:
        self.connections: dict[str, int] = {}
        self.auth_failures = AuthFailures()
        self.login_failures = AuthFailures()  # keyed by the casefolded login, known or not
        self.familiar = FamiliarPlaces()
        self.budget: ByteBudget | None = None

    def admit(self, client: str, limit: int | None) -> bool:
        count = self.connections.get(client, 0)
        if limit is not None and count >= limit:
            return False
        self.connections[client] = count + 1
        return True

    def leave(self, client: str) -> None:
        count = self.connections.get(client, 0) - 1
        if count > 0:
            self.connections[client] = count
        else:
            self.connections.pop(client, None)

    def bytes_budget(self, limit: int) -> ByteBudget:
        if self.budget is None:
            self.budget = ByteBudget(limit)
        self.budget.limit = limit  # a reload may change it
        return self.budget


_GUARDS: weakref.WeakKeyDictionary[Any, ClientGuard] = weakref.WeakKeyDictionary()


def guard_for(app: Any) -> ClientGuard:
    guard = _GUARDS.get(app)
    if guard is None:
        guard = _GUARDS[app] = ClientGuard()
    return guard
