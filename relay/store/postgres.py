"""PostgreSQL store (asyncpg): one queue, audit trail and inventory shared by several relays.

The store interface is blocking (the relay calls it through `asyncio.to_thread`, the `relay queue`
tools directly), so asyncpg runs on an event loop of its own in a daemon thread and each call waits
for its coroutine there. Several relays claim due holds with `FOR UPDATE SKIP LOCKED` and a lease:
a claimed hold carries `lease_until`; when a relay dies mid-release its claims expire and any relay
takes them (the same duplicate window as SQLite's: after the upstream's 250, before the commit).
Notices are leased the same way. A new, approved or released hold is announced with
NOTIFY relay_holds, so the relay that holds it need not be the one that releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from relay.store.base import (
    MODERATION_EVENTS,
    TRANSITIONS,
    AuditEntry,
    Hold,
    HoldEvent,
    HoldFilter,
    HoldState,
    NewHold,
    OutboxNotice,
    SocialAccount,
    StoreError,
    TraceEvent,
    TraceQuery,
    event_detail,
    expire_each,
    like_pattern,
    records_from_json,
    records_json,
    utc,
)

T = TypeVar("T")
CHANNEL = "relay_holds"

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE holds (
        id TEXT PRIMARY KEY,
        queue_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        recipients JSONB NOT NULL,
        deliver_at TIMESTAMPTZ,
        deliver_at_local TEXT NOT NULL DEFAULT '',
        next_attempt TIMESTAMPTZ,
        lease_until TIMESTAMPTZ,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TIMESTAMPTZ NOT NULL,
        rule_ids JSONB NOT NULL,
        cites JSONB NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        sender_notice_to TEXT,
        moderators JSONB NOT NULL DEFAULT '[]',
        last_error TEXT NOT NULL DEFAULT '',
        size INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX holds_due ON holds (state, next_attempt);
    CREATE INDEX holds_lease ON holds (state, lease_until);
    CREATE INDEX holds_queue ON holds (queue_id);
    CREATE TABLE hold_content (id TEXT PRIMARY KEY, content BYTEA NOT NULL);
    CREATE TABLE hold_events (
        seq BIGSERIAL PRIMARY KEY, hold_id TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, event TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX hold_events_hold ON hold_events (hold_id);
    CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        recipient TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL, next_attempt TIMESTAMPTZ NOT NULL, attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_due ON outbox (next_attempt);
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY,
        at TIMESTAMPTZ NOT NULL, queue_id TEXT NOT NULL, verdict TEXT NOT NULL, reply TEXT NOT NULL,
        mail_from TEXT NOT NULL, recipients INTEGER NOT NULL, login TEXT, client_ip TEXT,
        rules JSONB NOT NULL, monitored JSONB NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE TABLE social_accounts (
        network TEXT NOT NULL, account TEXT NOT NULL, mailbox_type TEXT NOT NULL,
        first_seen TIMESTAMPTZ NOT NULL, last_seen TIMESTAMPTZ NOT NULL, messages INTEGER NOT NULL DEFAULT 1,
        last_subject TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (network, account)
    );
    """,
    """
    CREATE TABLE rate_counters (
        key TEXT NOT NULL, window_start TIMESTAMPTZ NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (key, window_start)
    );
    """,
    # 3: who decided on a held copy, when, and what (the moderation lifecycle); expiry by age
    """
    ALTER TABLE holds ADD COLUMN decided_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE holds ADD COLUMN decided_at TIMESTAMPTZ;
    ALTER TABLE holds ADD COLUMN decision TEXT NOT NULL DEFAULT '';
    CREATE INDEX holds_age ON holds (state, created_at);
    ALTER TABLE outbox ADD COLUMN attach_hold TEXT NOT NULL DEFAULT '';
    """,
    # 4: the message trace (as SQLite's migration 3)
    """
    ALTER TABLE audit ADD COLUMN rcpt_to JSONB NOT NULL DEFAULT '[]';
    ALTER TABLE audit ADD COLUMN subject TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN message_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX audit_queue ON audit (queue_id);
    CREATE INDEX audit_sender ON audit (lower(mail_from));
    CREATE INDEX audit_message_id ON audit (message_id);
    CREATE TABLE trace_events (
        id BIGSERIAL PRIMARY KEY, queue_id TEXT NOT NULL, at TIMESTAMPTZ NOT NULL, event TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX trace_events_queue ON trace_events (queue_id);
    CREATE INDEX trace_events_at ON trace_events (at);
    CREATE INDEX holds_created ON holds (created_at);
    """,
    # 5: what a decision recorded beyond its rule hits (as SQLite's migration 5)
    """
    ALTER TABLE audit ADD COLUMN records JSONB NOT NULL DEFAULT '[]';
    """,
)

_COLUMNS = ("id, queue_id, reason, state, mail_from, recipients, deliver_at, next_attempt, attempts, "
            "created_at, rule_ids, cites, subject, sender_notice_to, moderators, last_error, deliver_at_local, size, "
            "decided_by, decided_at, decision")
_EPOCH = datetime.fromtimestamp(0, UTC)


def _hold(row: Any, attempts_before: bool = False) -> Hold:
    return Hold(
        id=row["id"], queue_id=row["queue_id"], reason=row["reason"], state=HoldState(row["state"]),
        mail_from=row["mail_from"], recipients=tuple(json.loads(row["recipients"])), deliver_at=row["deliver_at"],
        next_attempt=row["next_attempt"], attempts=row["attempts"] - (1 if attempts_before else 0),
        created_at=row["created_at"], rule_ids=tuple(json.loads(row["rule_ids"])),
        cites=tuple(json.loads(row["cites"])), subject=row["subject"], sender_notice_to=row["sender_notice_to"],
        moderators=tuple(json.loads(row["moderators"])), last_error=row["last_error"],
        deliver_at_local=row["deliver_at_local"], size=row["size"], decided_by=row["decided_by"],
        decided_at=row["decided_at"], decision=row["decision"])


def _count(status: str) -> int:
    """The row count of a command status ("DELETE 3")."""
    tail = status.rpartition(" ")[2]
    return int(tail) if tail.isdigit() else 0


class PostgresStore:
    """The shared store. Safe to call from any thread; every change commits before it returns
    (PostgreSQL's synchronous_commit, on by default, makes that durable)."""

    def __init__(self, url: str, lease: float = 300, pool_size: int = 10, timeout: float = 30) -> None:
        self.url = url
        self.lease = timedelta(seconds=lease)
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="postgres-store", daemon=True)
        self._thread.start()
        self._listener: asyncpg.Connection | None = None
        try:
            self._pool: asyncpg.Pool = self._run(self._connect(pool_size))
            self._run(self._migrate())
        except StoreError:
            self._stop_loop()
            raise

    # -- plumbing ------------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout + 5)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            future.cancel()
            raise StoreError(f"store: {type(error).__name__}: {str(error)[:300]}") from None

    async def _connect(self, pool_size: int) -> asyncpg.Pool:
        return await asyncpg.create_pool(self.url, min_size=1, max_size=pool_size, command_timeout=self.timeout)

    async def _migrate(self) -> None:
        async with self._pool.acquire() as db, db.transaction():
            # one relay migrates at a time; the others wait here, then find nothing to do
            await db.execute("SELECT pg_advisory_xact_lock(8052021)")
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = await db.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            if current > len(MIGRATIONS):
                raise StoreError(f"the store has schema {current}, newer than this relay knows "
                                 f"({len(MIGRATIONS)}); upgrade the relay")
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                await db.execute(script)
                await db.execute("INSERT INTO schema_version VALUES ($1)", version)

    @property
    def schema_version(self) -> int:
        return int(self._run(self._pool.fetchval("SELECT max(version) FROM schema_version")))

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def close(self) -> None:
        async def shut() -> None:
            if self._listener is not None:
                await self._listener.close()
            await self._pool.close()

        with contextlib.suppress(StoreError):
            self._run(shut())
        self._stop_loop()

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the store's thread) whenever any relay adds or frees a hold."""
        async def start() -> None:
            self._listener = await asyncpg.connect(self.url)
            await self._listener.add_listener(CHANNEL, lambda *_: callback())

        self._run(start())

    @staticmethod
    async def _event(db: Any, hold_id: str, now: datetime, event: str, detail: str = "") -> None:
        await db.execute("INSERT INTO hold_events (hold_id, at, event, detail) VALUES ($1, $2, $3, $4)",
                         hold_id, utc(now), event, detail)

    # -- holds ---------------------------------------------------------------------------------
    def add_holds(self, holds: list[NewHold], now: datetime) -> list[str]:
        async def run() -> list[str]:
            ids = []
            async with self._pool.acquire() as db, db.transaction():
                for n, hold in enumerate(holds, start=1):
                    hold_id = f"{hold.queue_id}-{n}"
                    # an MTA's queue id is not unique forever (short Postfix queue ids repeat)
                    while await db.fetchval("SELECT 1 FROM holds WHERE id = $1", hold_id):
                        hold_id = f"{hold.queue_id}-{n}-{secrets.token_hex(3)}"
                    moderated = hold.reason == "moderate" or hold.deliver_at is None
                    state = HoldState.MODERATION if moderated else HoldState.WAITING
                    due = utc(hold.deliver_at) if hold.deliver_at else None
                    await db.execute(
                        "INSERT INTO holds (id, queue_id, reason, state, mail_from, recipients, deliver_at, "
                        "deliver_at_local, next_attempt, created_at, rule_ids, cites, subject, sender_notice_to, "
                        "moderators, size) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
                        "$15, $16)",
                        hold_id, hold.queue_id, hold.reason, state.value, hold.mail_from,
                        json.dumps(hold.recipients), due, hold.deliver_at_local, None if moderated else due, utc(now),
                        json.dumps(hold.rule_ids), json.dumps(hold.cites), hold.subject[:300],
                        hold.sender_notice_to, json.dumps(hold.moderators), len(hold.content))
                    await db.execute("INSERT INTO hold_content VALUES ($1, $2)", hold_id, hold.content)
                    await self._event(db, hold_id, now, "held", f"{hold.reason}: {', '.join(hold.rule_ids)}")
                    ids.append(hold_id)
                await db.execute(f"NOTIFY {CHANNEL}")
            return ids

        return self._run(run())

    def get_hold(self, hold_id: str) -> Hold | None:
        row = self._run(self._pool.fetchrow(f"SELECT {_COLUMNS} FROM holds WHERE id = $1", hold_id))
        return None if row is None else _hold(row)

    def hold_content(self, hold_id: str) -> bytes | None:
        value = self._run(self._pool.fetchval("SELECT content FROM hold_content WHERE id = $1", hold_id))
        return None if value is None else bytes(value)

    def hold_events(self, hold_id: str) -> list[HoldEvent]:
        rows = self._run(self._pool.fetch(
            "SELECT at, event, detail FROM hold_events WHERE hold_id = $1 ORDER BY seq", hold_id))
        return [HoldEvent(r["at"], r["event"], r["detail"]) for r in rows]

    @staticmethod
    def _where(filters: HoldFilter) -> tuple[str, list[Any]]:
        args: list[Any] = [[s.value for s in filters.states]]
        where = ["state = ANY($1::text[])"]
        if filters.reason:
            args.append(filters.reason)
            where.append(f"reason = ${len(args)}")
        if filters.sender:
            args.append(filters.sender)
            where.append(f"lower(mail_from) = lower(${len(args)})")
        if filters.recipient:
            args.append(filters.recipient)
            where.append(f"EXISTS (SELECT 1 FROM jsonb_array_elements_text(recipients) r "
                         f"WHERE lower(r) = lower(${len(args)}))")
        if filters.due_before:
            args.append(utc(filters.due_before))
            where.append(f"next_attempt < ${len(args)}")
        if filters.queue_id:
            args.append(filters.queue_id)
            where.append(f"queue_id = ${len(args)}")
        if filters.rule:
            args.append(filters.rule)
            where.append(f"EXISTS (SELECT 1 FROM jsonb_array_elements_text(rule_ids) r WHERE r = ${len(args)})")
        if filters.since:
            args.append(utc(filters.since))
            where.append(f"created_at >= ${len(args)}")
        if filters.until:
            args.append(utc(filters.until))
            where.append(f"created_at < ${len(args)}")
        if filters.text:
            args.append(like_pattern(filters.text))
            like = f"LIKE ${len(args)} ESCAPE '\\'"
            where.append(f"(lower(id) {like} OR lower(queue_id) {like} OR lower(mail_from) {like} "
                         f"OR lower(subject) {like} OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(recipients) r "
                         f"WHERE lower(r) {like}))")
        return " AND ".join(where), args

    def list_holds(self, filters: HoldFilter) -> list[Hold]:
        where, args = self._where(filters)
        order = ("state <> 'moderation', created_at, id" if filters.order == "queue"
                 else "next_attempt IS NULL, next_attempt, created_at")
        args.extend((filters.limit, max(0, filters.offset)))
        sql = (f"SELECT {_COLUMNS} FROM holds WHERE {where} "
               f"ORDER BY {order} LIMIT ${len(args) - 1} OFFSET ${len(args)}")
        return [_hold(r) for r in self._run(self._pool.fetch(sql, *args))]

    def count_matching(self, filters: HoldFilter) -> int:
        where, args = self._where(filters)
        return int(self._run(self._pool.fetchval(f"SELECT count(*) FROM holds WHERE {where}", *args)))

    def count_holds(self, states: tuple[HoldState, ...] = (HoldState.WAITING, HoldState.MODERATION,
                                                            HoldState.DELIVERING)) -> int:
        return int(self._run(self._pool.fetchval("SELECT count(*) FROM holds WHERE state = ANY($1::text[])",
                                                 [s.value for s in states])))

    def hold_stats(self) -> dict[str, tuple[int, datetime | None]]:
        rows = self._run(self._pool.fetch(
            "SELECT reason, count(*) AS n, min(created_at) AS oldest FROM holds "
            "WHERE state IN ('waiting', 'moderation', 'delivering') GROUP BY reason"))
        return {r["reason"]: (int(r["n"]), r["oldest"]) for r in rows}

    def outbox_stats(self) -> tuple[int, datetime | None]:
        """Notices not yet taken by the upstream: how many, and when the oldest was queued."""
        row = self._run(self._pool.fetchrow("SELECT count(*) AS n, min(created_at) AS oldest FROM outbox"))
        return int(row["n"]), row["oldest"]

    def moderation_counts(self) -> dict[str, int]:
        """Moderation actions ever recorded (hold events), by event: approved, rejected, ..."""
        rows = self._run(self._pool.fetch(
            "SELECT event, count(*) AS n FROM hold_events WHERE event = ANY($1::text[]) GROUP BY event",
            list(MODERATION_EVENTS)))
        return {str(r["event"]): int(r["n"]) for r in rows}

    def next_due(self) -> datetime | None:
        """The next instant a hold becomes claimable: due, or a lease that runs out."""
        value: datetime | None = self._run(self._pool.fetchval(
            "SELECT least((SELECT min(next_attempt) FROM holds WHERE state = 'waiting'), "
            "(SELECT min(lease_until) FROM holds WHERE state = 'delivering'))"))
        return value

    def claim_due(self, now: datetime, limit: int) -> list[Hold]:
        """Due holds, earliest first, leased to this relay; rows another relay is claiming right now
        are skipped (SKIP LOCKED), expired leases (a relay that died) are taken over."""
        rows = self._run(self._pool.fetch(
            f"UPDATE holds SET state = 'delivering', attempts = attempts + 1, lease_until = $2 "
            f"WHERE id IN (SELECT id FROM holds WHERE (state = 'waiting' AND next_attempt <= $1) "
            f"OR (state = 'delivering' AND lease_until <= $1) ORDER BY next_attempt, created_at LIMIT $3 "
            f"FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}", utc(now), utc(now) + self.lease, limit))
        return sorted((_hold(r, attempts_before=True) for r in rows),
                      key=lambda h: (h.next_attempt or _EPOCH, h.created_at))

    async def _tx(self, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        async with self._pool.acquire() as db, db.transaction():
            return await fn(db)

    def mark_delivered(self, hold_id: str, now: datetime, detail: str = "") -> None:
        async def run(db: Any) -> None:
            await db.execute("UPDATE holds SET state = 'delivered', next_attempt = NULL, lease_until = NULL, "
                             "last_error = '' WHERE id = $1", hold_id)
            await db.execute("DELETE FROM hold_content WHERE id = $1", hold_id)
            await self._event(db, hold_id, now, "delivered", detail)

        self._run(self._tx(run))

    def mark_retry(self, hold_id: str, now: datetime, next_attempt: datetime, error: str,
                   recipients: tuple[str, ...] | None = None) -> None:
        async def run(db: Any) -> None:
            if recipients is not None:
                await db.execute("UPDATE holds SET recipients = $1 WHERE id = $2", json.dumps(recipients), hold_id)
            await db.execute("UPDATE holds SET state = 'waiting', next_attempt = $1, lease_until = NULL, "
                             "last_error = $2 WHERE id = $3", utc(next_attempt), error[:500], hold_id)
            await self._event(db, hold_id, now, "deferred", error[:500])

        self._run(self._tx(run))

    def mark_failed(self, hold_id: str, now: datetime, error: str) -> None:
        async def run(db: Any) -> None:
            await db.execute("UPDATE holds SET state = 'failed', next_attempt = NULL, lease_until = NULL, "
                             "last_error = $1 WHERE id = $2", error[:500], hold_id)
            await db.execute("DELETE FROM hold_content WHERE id = $1", hold_id)
            await self._event(db, hold_id, now, "failed", error[:500])

        self._run(self._tx(run))

    def recover(self, now: datetime) -> int:
        """At start: claims whose lease ran out (a relay died) go back to waiting. Live claims of
        other relays are left alone; claim_due would also take over expired ones."""
        async def run(db: Any) -> int:
            rows = await db.fetch("UPDATE holds SET state = 'waiting', lease_until = NULL, "
                                  "next_attempt = least(next_attempt, $1) WHERE id IN (SELECT id FROM holds "
                                  "WHERE state = 'delivering' AND lease_until <= $1 FOR UPDATE SKIP LOCKED) "
                                  "RETURNING id", utc(now))
            for row in rows:
                await self._event(db, row["id"], now, "recovered", "lease ran out; delivering again")
            return len(rows)

        return self._run(self._tx(run))

    def _change(self, hold_id: str, now: datetime, action: str, by: str, reason: str = "") -> Hold:
        """One action of TRANSITIONS (relay.store.base), checked against the current state."""
        step = TRANSITIONS[action]

        async def run(db: Any) -> None:
            state = await db.fetchval("SELECT state FROM holds WHERE id = $1 FOR UPDATE", hold_id)
            if state is None:
                raise KeyError(hold_id)
            step.check(hold_id, HoldState(state))
            sets, args = step.assignments(utc(now), reason, lambda n: f"${n}", by)
            await db.execute(f"UPDATE holds SET {sets} WHERE id = ${len(args) + 1}", *args, hold_id)
            if step.drop_content:
                await db.execute("DELETE FROM hold_content WHERE id = $1", hold_id)
            await self._event(db, hold_id, now, step.event, event_detail(by, reason))
            await db.execute(f"NOTIFY {CHANNEL}")

        self._run(self._tx(run))
        hold = self.get_hold(hold_id)
        assert hold is not None
        return hold

    def release(self, hold_id: str, now: datetime, by: str) -> Hold:
        return self._change(hold_id, now, "release", by)

    def approve(self, hold_id: str, now: datetime, by: str) -> Hold:
        return self._change(hold_id, now, "approve", by)

    def reject(self, hold_id: str, now: datetime, by: str, reason: str) -> Hold:
        return self._change(hold_id, now, "reject", by, reason)

    def delete(self, hold_id: str, now: datetime, by: str) -> Hold:
        return self._change(hold_id, now, "delete", by)

    def withdraw(self, hold_id: str, now: datetime, by: str) -> Hold:
        return self._change(hold_id, now, "withdraw", by)

    def expire_moderation(self, now: datetime, created_before: datetime, limit: int) -> list[Hold]:
        """Copies that waited for a moderator since before `created_before`: expired, oldest first."""
        rows = self._run(self._pool.fetch(
            "SELECT id FROM holds WHERE state = 'moderation' AND created_at < $1 ORDER BY created_at LIMIT $2",
            utc(created_before), limit))
        return expire_each(self, [r["id"] for r in rows], now)

    def remove(self, hold_ids: list[str]) -> None:
        async def run(db: Any) -> None:
            for table, column in (("holds", "id"), ("hold_content", "id"), ("hold_events", "hold_id")):
                await db.execute(f"DELETE FROM {table} WHERE {column} = ANY($1::text[])", hold_ids)

        self._run(self._tx(run))

    # -- sending rates (shared by every relay on this store) -----------------------------------
    def rate_take(self, key: str, window_start: datetime, amount: int, limit: int) -> int | None:
        """Atomically add `amount` unless that passes `limit`: the new count, or None."""
        async def run(db: Any) -> int | None:
            await db.execute("INSERT INTO rate_counters VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                             key, utc(window_start))
            count = await db.fetchval("UPDATE rate_counters SET count = count + $3 WHERE key = $1 AND "
                                      "window_start = $2 AND count + $3 <= $4 RETURNING count",
                                      key, utc(window_start), amount, limit)
            await db.execute("DELETE FROM rate_counters WHERE key = $1 AND window_start < $2", key, utc(window_start))
            return None if count is None else int(count)

        return self._run(self._tx(run))

    def rate_take_all(self, takes: Sequence[tuple[str, datetime, int]], amount: int) -> int | None:
        """Add `amount` to every counter (key, window start, limit) in one transaction, or to none:
        None when all were taken, else the index of the first that would pass its limit. The rows
        are locked in key order, so two relays taking the same counters cannot deadlock."""
        async def run(db: Any) -> int | None:
            order = sorted(range(len(takes)), key=lambda i: (takes[i][0], takes[i][1]))
            counts: dict[int, int] = {}
            for i in order:
                key, start, _ = takes[i]
                await db.execute("INSERT INTO rate_counters VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
                                 key, utc(start))
                counts[i] = await db.fetchval("SELECT count FROM rate_counters WHERE key = $1 AND "
                                              "window_start = $2 FOR UPDATE", key, utc(start))
            refused = next((i for i, (_, _, limit) in enumerate(takes) if counts[i] + amount > limit), None)
            if refused is not None:
                return refused  # the transaction still commits the zero rows: harmless
            for key, start, _ in takes:
                await db.execute("UPDATE rate_counters SET count = count + $3 WHERE key = $1 AND window_start = $2",
                                 key, utc(start), amount)
                await db.execute("DELETE FROM rate_counters WHERE key = $1 AND window_start < $2", key, utc(start))
            return None

        return self._run(self._tx(run))

    def take_once(self, key: str, now: datetime, period: float) -> bool:
        """True, with `now` recorded, unless `key` was taken less than `period` seconds before
        `now`; one relay at a time per key (advisory lock), so two relays answer once."""
        async def run(db: Any) -> bool:
            await db.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)
            last = await db.fetchval("SELECT max(window_start) FROM rate_counters WHERE key = $1", key)
            if last is not None and last > utc(now) - timedelta(seconds=period):
                return False
            await db.execute("DELETE FROM rate_counters WHERE key = $1", key)
            await db.execute("INSERT INTO rate_counters VALUES ($1, $2, 1)", key, utc(now))
            return True

        return bool(self._run(self._tx(run)))

    def give_back(self, key: str) -> None:
        """Forget a `take_once` (what it guarded did not happen: the next take succeeds)."""
        async def run(db: Any) -> None:
            await db.execute("DELETE FROM rate_counters WHERE key = $1", key)

        self._run(self._tx(run))

    # -- notices -------------------------------------------------------------------------------
    def add_notices(self, notices: Sequence[tuple[str, ...]], now: datetime) -> None:
        if not notices:
            return
        self._run(self._pool.executemany(
            "INSERT INTO outbox (recipient, kind, subject, body, created_at, next_attempt, attach_hold) "
            "VALUES ($1, $2, $3, $4, $5, $5, $6)", [(*n[:4], utc(now), n[4] if len(n) > 4 else "") for n in notices]))
        self._run(self._pool.execute(f"NOTIFY {CHANNEL}"))

    def due_notices(self, now: datetime, limit: int) -> list[OutboxNotice]:
        """Due notices, leased to this relay (another relay skips them until the lease runs out)."""
        rows = self._run(self._pool.fetch(
            "UPDATE outbox SET next_attempt = $2 WHERE id IN (SELECT id FROM outbox WHERE next_attempt <= $1 "
            "ORDER BY next_attempt LIMIT $3 FOR UPDATE SKIP LOCKED) "
            "RETURNING id, recipient, kind, subject, body, attempts, attach_hold",
            utc(now), utc(now) + self.lease, limit))
        return sorted((OutboxNotice(r["id"], r["recipient"], r["kind"], r["subject"], r["body"], r["attempts"],
                                    r["attach_hold"])
                       for r in rows), key=lambda n: n.id)

    def notice_done(self, notice_id: int) -> None:
        self._run(self._pool.execute("DELETE FROM outbox WHERE id = $1", notice_id))

    def notice_retry(self, notice_id: int, next_attempt: datetime) -> None:
        self._run(self._pool.execute("UPDATE outbox SET attempts = attempts + 1, next_attempt = $1 WHERE id = $2",
                                     utc(next_attempt), notice_id))

    def next_notice_due(self) -> datetime | None:
        value: datetime | None = self._run(self._pool.fetchval("SELECT min(next_attempt) FROM outbox"))
        return value

    # -- audit and inventory -------------------------------------------------------------------
    _AUDIT = ("at, queue_id, verdict, reply, mail_from, recipients, login, client_ip, rules, monitored, rcpt_to, "
              "subject, message_id, records")

    @staticmethod
    def _audit(r: Any) -> AuditEntry:
        return AuditEntry(r["at"], r["queue_id"], r["verdict"], r["reply"], r["mail_from"], r["recipients"],
                          r["login"], r["client_ip"], tuple(tuple(x) for x in json.loads(r["rules"])),
                          tuple(json.loads(r["monitored"])), tuple(json.loads(r["rcpt_to"])), r["subject"],
                          r["message_id"], records_from_json(r["records"]))

    def add_audit(self, entries: list[AuditEntry], trace: list[TraceEvent] | None = None) -> None:
        """Decisions (and trace events, in the same transaction)."""
        if not entries and not trace:
            return

        async def run(db: Any) -> None:
            if entries:
                await db.executemany(
                    f"INSERT INTO audit ({self._AUDIT}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
                    "$13, $14)",
                    [(utc(e.at), e.queue_id, e.verdict, e.reply, e.mail_from, e.recipients, e.login, e.client_ip,
                      json.dumps(e.rules), json.dumps(e.monitored), json.dumps(e.rcpt_to), e.subject[:300],
                      e.message_id.strip().strip("<>")[:300], records_json(e.records)) for e in entries])
            if trace:
                await self._add_trace(db, trace)

        self._run(self._tx(run))

    @staticmethod
    async def _add_trace(db: Any, events: list[TraceEvent]) -> None:
        await db.executemany("INSERT INTO trace_events (queue_id, at, event, detail) VALUES ($1, $2, $3, $4)",
                             [(e.queue_id, utc(e.at), e.event, e.detail[:500]) for e in events])

    def add_trace(self, events: list[TraceEvent]) -> None:
        if events:
            self._run(self._tx(lambda db: self._add_trace(db, events)))

    def query_audit(self, since: datetime | None = None, until: datetime | None = None, rule: str | None = None,
                    verdict: str | None = None, limit: int = 10000) -> list[AuditEntry]:
        where, args = ["TRUE"], []  # type: tuple[list[str], list[Any]]
        for clause, value in (("at >= $%d", utc(since) if since else None), ("at < $%d", utc(until) if until else None),
                              ("verdict = $%d", verdict),
                              ("EXISTS (SELECT 1 FROM jsonb_array_elements(rules) x WHERE x->>0 = $%d)", rule)):
            if value is not None:
                args.append(value)
                where.append(clause % len(args))
        args.append(limit)
        rows = self._run(self._pool.fetch(
            f"SELECT {self._AUDIT} FROM audit WHERE {' AND '.join(where)} ORDER BY at, id LIMIT ${len(args)}", *args))
        return [self._audit(r) for r in rows]

    @staticmethod
    def _audit_where(query: TraceQuery) -> tuple[str, list[Any]]:
        where, args = ["TRUE"], []  # type: tuple[list[str], list[Any]]
        for clause, value in (
                ("(lower(mail_from) = lower($%d) OR lower(login) = lower($%d))", query.sender),
                ("EXISTS (SELECT 1 FROM jsonb_array_elements_text(rcpt_to) x WHERE lower(x) = lower($%d))",
                 query.recipient),
                ("message_id = $%d", query.message_id.strip().strip("<>") if query.message_id else None),
                ("queue_id = $%d", query.queue_id),
                ("at >= $%d", utc(query.since) if query.since else None),
                ("at < $%d", utc(query.until) if query.until else None)):
            if value:
                args.append(value)
                where.append(clause.replace("%d", str(len(args))))
        return " AND ".join(where), args

    def search_audit(self, query: TraceQuery) -> list[AuditEntry]:
        """Decisions matching a trace search, newest first (a page: `limit` after `offset`)."""
        where, args = self._audit_where(query)
        args.extend((query.limit, max(0, query.offset)))
        rows = self._run(self._pool.fetch(
            f"SELECT {self._AUDIT} FROM audit WHERE {where} ORDER BY at DESC, id DESC "
            f"LIMIT ${len(args) - 1} OFFSET ${len(args)}", *args))
        return [self._audit(r) for r in rows]

    def count_audit(self, query: TraceQuery) -> int:
        """How many decisions match a trace search (no limit)."""
        where, args = self._audit_where(query)
        return int(self._run(self._pool.fetchval(f"SELECT count(*) FROM audit WHERE {where}", *args)))

    def trace_events(self, queue_id: str) -> list[TraceEvent]:
        rows = self._run(self._pool.fetch(
            "SELECT queue_id, at, event, detail FROM trace_events WHERE queue_id = $1 ORDER BY at, id", queue_id))
        return [TraceEvent(r["queue_id"], r["at"], r["event"], r["detail"]) for r in rows]

    def purge_before(self, before: datetime) -> dict[str, int]:
        """Retention, as SqliteStore.purge_before."""
        async def run(db: Any) -> dict[str, int]:
            done = ("SELECT id FROM holds WHERE created_at < $1 AND state NOT IN "
                    "('waiting', 'moderation', 'delivering')")
            counts = {}
            counts["hold_events"] = _count(await db.execute(f"DELETE FROM hold_events WHERE hold_id IN ({done})",
                                                            utc(before)))
            await db.execute(f"DELETE FROM hold_content WHERE id IN ({done})", utc(before))
            counts["holds"] = _count(await db.execute("DELETE FROM holds WHERE created_at < $1 AND state NOT IN "
                                                      "('waiting', 'moderation', 'delivering')", utc(before)))
            counts["audit"] = _count(await db.execute("DELETE FROM audit WHERE at < $1", utc(before)))
            counts["trace_events"] = _count(await db.execute("DELETE FROM trace_events WHERE at < $1", utc(before)))
            return counts

        return self._run(self._tx(run))

    def record_accounts(self, accounts: list[SocialAccount]) -> None:
        if not accounts:
            return
        self._run(self._pool.executemany(
            "INSERT INTO social_accounts VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT (network, account) DO "
            "UPDATE SET last_seen = greatest(social_accounts.last_seen, excluded.last_seen), "
            "first_seen = least(social_accounts.first_seen, excluded.first_seen), "
            "messages = social_accounts.messages + 1, mailbox_type = excluded.mailbox_type, "
            "last_subject = excluded.last_subject",
            [(a.network, a.account, a.mailbox_type, utc(a.first_seen), utc(a.last_seen), a.last_subject[:200])
             for a in accounts]))

    def inventory(self) -> list[SocialAccount]:
        rows = self._run(self._pool.fetch(
            "SELECT network, account, mailbox_type, first_seen, last_seen, messages, last_subject "
            "FROM social_accounts ORDER BY network, account"))
        return [SocialAccount(r["network"], r["account"], r["mailbox_type"], r["first_seen"], r["last_seen"],
                              r["messages"], r["last_subject"]) for r in rows]
