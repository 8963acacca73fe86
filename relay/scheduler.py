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

from relay import lifecycle, notices
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
    retention_days: int | None = None  # the message trace is purged after this many days (None: kept)


RECORD_RETRY = 2.0  # seconds between attempts to record what the store refused
HOUSEKEEPING = timedelta(seconds=60)  # moderation expiry and digests: looked at once a minute


class Scheduler:
    def __init__(self, disposer: Disposer, log: Any, settings: SchedulerSettings) -> None:
        self.disposer, self.store, self.clock, self.log = disposer, disposer.store, disposer.clock, log
        self.settings = settings
        self._wake = asyncio.Event()
        self._stopping = False
        self.delivered = 0
        # Outcomes of claimed holds the store could not record (disk full, database down): kept
        # here and written again every round until they are, so a claimed hold is never left
        # `delivering` (and `relay queue release` never refuses it) while the relay runs; after
        # a crash `recover` puts it back to waiting. hold id -> (what to write, its arguments).
        self.unrecorded: dict[str, tuple[str, tuple[Any, ...]]] = disposer.unrecorded_holds
        self.alerted = False
        self.housekept: datetime | None = None

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
            if self.unrecorded:
                timeout = min(timeout, RECORD_RETRY)
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
        await self.record_pending()
        now = self.clock.now()
        await self.housekeeping(now)
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

    async def housekeeping(self, now: datetime) -> None:
        """The moderation lifecycle (relay.lifecycle): expire what waited too long, send the day's
        digests; at most once a minute (and again at once if the clock went back)."""
        if self.housekept is not None and self.housekept <= now < self.housekept + HOUSEKEEPING:
            return
        self.housekept = now
        pack, directory = self.disposer.pack, self.disposer.directory
        settings = lifecycle.Lifecycle(pack.moderation.expire_after_days, pack.moderation.digest_hour,
                                       self.disposer.zone, pack.notices)
        found = await asyncio.to_thread(lifecycle.expire, self.store, now, settings, directory.is_local)
        for notice in found:
            self.log.info("hold_expired", to=notice.to, days=settings.expire_after_days)
        found += await asyncio.to_thread(lifecycle.digests, self.store, now, settings, directory.is_local)
        if found:
            await self.disposer.notify(tuple(found), self.log)
        await self.purge(now)

    async def purge(self, now: datetime) -> None:
        """Retention of the message trace: at most once an hour (across relays sharing the store),
        what is older than `retention_days` goes; open holds stay whatever their age."""
        days = self.settings.retention_days
        if days is None or not await asyncio.to_thread(self.store.take_once, "trace-retention", now, 3600):
            return
        gone = await asyncio.to_thread(self.store.purge_before, now - timedelta(days=days))
        if any(gone.values()):
            self.log.info("trace_purged", days=days, **gone)

    async def send_notice(self, notice: OutboxNotice, now: datetime) -> None:
        reply = await self.disposer.send_notice(notice, now)
        self.log.info("notice", kind=notice.kind, to=notice.to, code=reply.code, attempts=notice.attempts)
        if reply.ok or not reply.temporary:
            await asyncio.to_thread(self.store.notice_done, notice.id)  # a refused notice is not retried
        else:
            await asyncio.to_thread(self.store.notice_retry, notice.id, now + self._backoff(notice.attempts + 1))

    async def deliver(self, hold: Hold) -> None:
        """Deliver one claimed hold; an unexpected fault (the store's too) puts it back for a later
        attempt, recorded now or as soon as the store can write."""
        try:
            await self._deliver(hold)
        except Exception as error:
            if isinstance(error, StoreError):
                self.log.error("hold_store_error", hold_id=hold.id, error=str(error)[:200])
            else:
                self.log.exception("hold_delivery_error", hold_id=hold.id, error=type(error).__name__)
            if hold.id not in self.unrecorded:
                now = self.clock.now()
                await self._mark(hold, "mark_retry", now, now + self._backoff(hold.attempts + 1),
                                 f"internal error: {type(error).__name__}")

    async def _mark(self, hold: Hold, what: str, *args: Any) -> bool:
        """Record a claimed hold's outcome; if the store cannot, keep it for `record_pending`."""
        try:
            await asyncio.to_thread(getattr(self.store, what), hold.id, *args)
        except StoreError as error:
            self.unrecorded[hold.id] = (what, args)
            self.log.error("hold_state_not_recorded", hold_id=hold.id, queue_id=hold.queue_id, write=what,
                           error=str(error)[:200], pending=len(self.unrecorded))
            await self._alert_store(str(error))
            return False
        return True

    async def record_pending(self) -> None:
        """Write again the outcomes the store refused; said once when they are all in."""
        for hold_id, (what, args) in list(self.unrecorded.items()):
            try:
                await asyncio.to_thread(getattr(self.store, what), hold_id, *args)
            except KeyError:
                self.unrecorded.pop(hold_id, None)  # removed meanwhile (relay queue remove)
            except StoreError:
                return  # still cannot write: next round
            except ValueError as error:  # its state changed meanwhile (an operator acted): nothing to undo
                self.log.warning("hold_state_changed", hold_id=hold_id, error=str(error)[:200])
                self.unrecorded.pop(hold_id, None)
            else:
                self.unrecorded.pop(hold_id, None)
        if self.alerted and not self.unrecorded:
            self.alerted = False
            self.log.warning("hold_states_recorded")

    async def _alert_store(self, error: str) -> None:
        """The operator hears that the store refuses writes: straight through the upstream (the
        outbox is in the store that cannot write), once until the backlog is recorded."""
        if self.alerted:
            return
        self.alerted = True
        self.log.error("store_cannot_write", error=error[:200], pending=len(self.unrecorded))
        if not self.settings.alert_to:
            return
        notice = notices.store_failing(self.settings.alert_to, error, len(self.unrecorded))
        try:
            body = self.disposer.notice_bytes(notice.to, notice.kind, notice.subject, notice.text, self.clock.now())
            reply = await self.disposer.deliver_to("", [notice.to], body)
            self.log.info("notice", kind=notice.kind, to=notice.to, code=reply.code, attempts=0)
        except Exception as failure:  # the alert is best effort; the log line above is the record
            self.log.error("alert_not_sent", error=type(failure).__name__)

    async def _deliver(self, hold: Hold) -> None:
        """Deliver one claimed hold; record the outcome per recipient."""
        log = self.log.bind(queue_id=hold.queue_id, hold_id=hold.id)
        content = await asyncio.to_thread(self.store.hold_content, hold.id)
        now = self.clock.now()
        if content is None:
            await self._mark(hold, "mark_failed", now, "message bytes missing")
            log.error("hold_content_missing")
            return
        released = await self.disposer.release(hold, content, log)
        accepted, later, refused, data = released.accepted, released.later, released.refused, released.data
        now = self.clock.now()
        if later:
            error = str(later[0][1])
            attempts = hold.attempts + 1
            await self._mark(hold, "mark_retry", now, now + self._backoff(attempts), error, tuple(r for r, _ in later))
            log.warning("hold_deferred", attempts=attempts, error=error[:200], delivered=len(accepted))
            if attempts == self.settings.alert_after_attempts:
                self.alert(hold, error, log)
        elif accepted:
            detail = f"{len(accepted)} recipient(s): {data}" if data else ""
            await self._mark(hold, "mark_delivered", now, detail[:300])
            self.delivered += 1
            log.info("hold_delivered", recipients=len(accepted), refused=len(refused))
        else:
            await self._mark(hold, "mark_failed", now, str(refused[0][1]) if refused else "")
            log.error("hold_failed", error=str(refused[0][1])[:200] if refused else "")

    def alert(self, hold: Hold, error: str, log: Any) -> None:
        log.error("hold_stuck", attempts=self.settings.alert_after_attempts, error=error[:200])
        if self.settings.alert_to:
            self.disposer.queue_notice(notices.stuck(self.settings.alert_to, hold.id, hold.mail_from, hold.recipients,
                                                     self.settings.alert_after_attempts, error), log)
