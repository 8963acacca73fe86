"""Releases due holds through the upstream and sends the notice outbox; rebuilt from the store.

One loop: send due notices, claim due holds (earliest first) and deliver them, then sleep until
the next due instant, or until woken (a new hold or notice, SIGUSR1 from `relay queue`), at most
`max_sleep` seconds (so a wall clock that jumps is noticed). After a crash, holds claimed but not
confirmed go back to waiting (`recover`) and are delivered again: the one window for a duplicate
is between the upstream's 250 for DATA and the store's commit of "delivered" (a few milliseconds).

The scheduler owns the hold's state in the store (claimed, delivered, retried, failed); what
the next hop is told and what our sender hears goes through the disposer (`Disposer.release`,
`Disposer.send_notice`), the same path as a message at DATA time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from relay import notices
from relay.dispose import Disposer
from relay.store import Hold, OutboxNotice, StoreError


@dataclass(frozen=True)
class SchedulerSettings:
    batch: int = 50
    concurrency: int = 4
    retry_base: float = 60.0  # first retry after a minute, then doubling
    retry_max: float = 3600.0
    alert_after_attempts: int = 6
    alert_to: str | None = None
    max_sleep: float = 60.0


class Scheduler:
    def __init__(self, disposer: Disposer, log: Any, settings: SchedulerSettings) -> None:
        self.disposer, self.store, self.clock, self.log = disposer, disposer.store, disposer.clock, log
        self.settings = settings
        self._wake = asyncio.Event()
        self._stopping = False
        self.delivered = 0

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _backoff(self, attempts: int) -> timedelta:
        return timedelta(seconds=min(self.settings.retry_base * 2 ** max(attempts - 1, 0), self.settings.retry_max))

    async def run(self, poll: float | None = None) -> None:
        """Until stop(). `poll` caps each sleep (the test clock hook sets it: time may jump)."""
        recovered = await asyncio.to_thread(self.store.recover, self.clock.now())
        if recovered:
            self.log.warning("holds_recovered", count=recovered)
        while not self._stopping:
            try:
                busy = await self.tick()
            except StoreError as error:
                self.log.error("scheduler_store_error", error=str(error)[:200])
                busy = False
            except Exception as error:  # a bug must not stop the releases; said once a round
                self.log.exception("scheduler_error", error=type(error).__name__)
                busy = False
            if busy:
                continue  # more may be due right away
            timeout = await self._sleep_for(poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    async def _sleep_for(self, poll: float | None) -> float:
        due = [d for d in await asyncio.gather(asyncio.to_thread(self.store.next_due),
                                                asyncio.to_thread(self.store.next_notice_due)) if d]
        cap = min(self.settings.max_sleep, poll) if poll else self.settings.max_sleep
        if not due:
            return cap
        return max(0.0, min(cap, (min(due) - self.clock.now()).total_seconds()))

    async def tick(self) -> bool:
        """One round; True when a full batch was handled (look again at once). Due holds start
        first (earliest due first), notices beside them, `concurrency` deliveries at a time."""
        now = self.clock.now()
        holds = await asyncio.to_thread(self.store.claim_due, now, self.settings.batch)
        outbox = await asyncio.to_thread(self.store.due_notices, now, self.settings.batch)
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def limited(job: Coroutine[Any, Any, None]) -> None:
            async with gate:
                await job

        jobs = [self.deliver(h) for h in holds] + [self.send_notice(n, now) for n in outbox]
        if jobs:
            await asyncio.gather(*(limited(j) for j in jobs))
        return len(holds) == self.settings.batch or len(outbox) == self.settings.batch

    async def send_notice(self, notice: OutboxNotice, now: datetime) -> None:
        reply = await self.disposer.send_notice(notice, now)
        self.log.info("notice", kind=notice.kind, to=notice.to, code=reply.code, attempts=notice.attempts)
        if reply.ok or not reply.temporary:
            await asyncio.to_thread(self.store.notice_done, notice.id)  # a refused notice is not retried
        else:
            await asyncio.to_thread(self.store.notice_retry, notice.id, now + self._backoff(notice.attempts + 1))

    async def deliver(self, hold: Hold) -> None:
        """Deliver one claimed hold; an unexpected fault puts it back for a later attempt."""
        try:
            await self._deliver(hold)
        except StoreError:
            raise
        except Exception as error:
            self.log.exception("hold_delivery_error", hold_id=hold.id, error=type(error).__name__)
            now = self.clock.now()
            await asyncio.to_thread(self.store.mark_retry, hold.id, now, now + self._backoff(hold.attempts + 1),
                                    f"internal error: {type(error).__name__}")

    async def _deliver(self, hold: Hold) -> None:
        """Deliver one claimed hold; record the outcome per recipient."""
        log = self.log.bind(queue_id=hold.queue_id, hold_id=hold.id)
        content = await asyncio.to_thread(self.store.hold_content, hold.id)
        now = self.clock.now()
        if content is None:
            await asyncio.to_thread(self.store.mark_failed, hold.id, now, "message bytes missing")
            log.error("hold_content_missing")
            return
        released = await self.disposer.release(hold, content, log)
        accepted, later, refused, data = released.accepted, released.later, released.refused, released.data
        now = self.clock.now()
        if later:
            error = str(later[0][1])
            attempts = hold.attempts + 1
            await asyncio.to_thread(self.store.mark_retry, hold.id, now, now + self._backoff(attempts), error,
                                    tuple(r for r, _ in later))
            log.warning("hold_deferred", attempts=attempts, error=error[:200], delivered=len(accepted))
            if attempts == self.settings.alert_after_attempts:
                self.alert(hold, error, log)
        elif accepted:
            detail = f"{len(accepted)} recipient(s): {data}" if data else ""
            await asyncio.to_thread(self.store.mark_delivered, hold.id, now, detail[:300])
            self.delivered += 1
            log.info("hold_delivered", recipients=len(accepted), refused=len(refused))
        else:
            await asyncio.to_thread(self.store.mark_failed, hold.id, now, str(refused[0][1]) if refused else "")
            log.error("hold_failed", error=str(refused[0][1])[:200] if refused else "")

    def alert(self, hold: Hold, error: str, log: Any) -> None:
        log.error("hold_stuck", attempts=self.settings.alert_after_attempts, error=error[:200])
        if self.settings.alert_to:
            self.disposer.queue_notice(notices.stuck(self.settings.alert_to, hold.id, hold.mail_from, hold.recipients,
                                                     self.settings.alert_after_attempts, error), log)
