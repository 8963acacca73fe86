"""SQLite store: WAL journal, synchronous=FULL, numbered migrations; one connection behind a lock.

Due instants are kept in the row (`next_attempt`, epoch seconds UTC) with an index on
(state, next_attempt): the next due hold and the due batch are index range scans, whatever the
queue length. Message bytes live in their own table, so listing never reads them.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

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

MIGRATIONS: tuple[str, ...] = (
    # 1: holds, their bytes and history; the outbox; the audit trail; the social-account inventory
    """
    CREATE TABLE holds (
        id TEXT PRIMARY KEY,
        queue_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        state TEXT NOT NULL,
        mail_from TEXT NOT NULL,
        recipients TEXT NOT NULL,
        deliver_at REAL,
        deliver_at_local TEXT NOT NULL DEFAULT '',
        next_attempt REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        rule_ids TEXT NOT NULL,
        cites TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        sender_notice_to TEXT,
        moderators TEXT NOT NULL DEFAULT '[]',
        last_error TEXT NOT NULL DEFAULT '',
        size INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX holds_due ON holds (state, next_attempt);
    CREATE INDEX holds_queue ON holds (queue_id);
    CREATE TABLE hold_content (id TEXT PRIMARY KEY, content BLOB NOT NULL);
    CREATE TABLE hold_events (
        hold_id TEXT NOT NULL, at REAL NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX hold_events_hold ON hold_events (hold_id);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
        created_at REAL NOT NULL, next_attempt REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX outbox_due ON outbox (next_attempt);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL, queue_id TEXT NOT NULL, verdict TEXT NOT NULL, reply TEXT NOT NULL,
        mail_from TEXT NOT NULL, recipients INTEGER NOT NULL, login TEXT, client_ip TEXT,
        rules TEXT NOT NULL, monitored TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE TABLE social_accounts (
        network TEXT NOT NULL, account TEXT NOT NULL, mailbox_type TEXT NOT NULL,
        first_seen REAL NOT NULL, last_seen REAL NOT NULL, messages INTEGER NOT NULL DEFAULT 1,
        last_subject TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (network, account)
    );
    """,
    # 2: sending-rate counters (per sender and window)
    """
    CREATE TABLE rate_counters (
        key TEXT NOT NULL, window_start REAL NOT NULL, count INTEGER NOT NULL,
        PRIMARY KEY (key, window_start)
    );
    """,
    # 3: who decided on a held copy, when, and what (the moderation lifecycle); expiry by age
    """
    ALTER TABLE holds ADD COLUMN decided_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE holds ADD COLUMN decided_at REAL;
    ALTER TABLE holds ADD COLUMN decision TEXT NOT NULL DEFAULT '';
    CREATE INDEX holds_age ON holds (state, created_at);
    ALTER TABLE outbox ADD COLUMN attach_hold TEXT NOT NULL DEFAULT '';
    """,
    # 4: the message trace: the audit trail keeps recipients, subject and Message-ID; what happened
    # after the decision (delivered and the upstream's reply, notices) in trace_events
    """
    ALTER TABLE audit ADD COLUMN rcpt_to TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE audit ADD COLUMN subject TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN message_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX audit_queue ON audit (queue_id);
    CREATE INDEX audit_sender ON audit (mail_from COLLATE NOCASE);
    CREATE INDEX audit_message_id ON audit (message_id);
    CREATE TABLE trace_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, queue_id TEXT NOT NULL, at REAL NOT NULL, event TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX trace_events_queue ON trace_events (queue_id);
    CREATE INDEX trace_events_at ON trace_events (at);
    CREATE INDEX holds_created ON holds (created_at);
    """,
    # 5: the compliance report: what a decision recorded beyond its rule hits (a declared urgency
    # with its stated reason, a right-to-disconnect exemption), as [[kind, {field: value}], ...]
    """
    ALTER TABLE audit ADD COLUMN records TEXT NOT NULL DEFAULT '[]';
    """,
)


def _ts(at: datetime | None) -> float | None:
    return None if at is None else utc(at).timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class SqliteStore:
    """The embedded store. Safe to share between the event loop's worker threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # every commit fsynced before it returns
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the store {self.path}: {error}") from None

    # -- plumbing ------------------------------------------------------------------------------
    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self._db.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        if current > len(MIGRATIONS):
            raise StoreError(f"the store {self.path} has schema {current}, newer than this relay knows "
                             f"({len(MIGRATIONS)}); upgrade the relay")
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute("INSERT INTO schema_version VALUES (?)", (version,))
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("SELECT max(version) FROM schema_version").fetchone()[0])

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One durable transaction; any SQLite failure (disk full, I/O) becomes a StoreError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"store: {error}") from None

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return fn(self._db)
            except sqlite3.Error as error:
                raise StoreError(f"store: {error}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _event(db: sqlite3.Connection, hold_id: str, now: datetime, event: str, detail: str = "") -> None:
        db.execute("INSERT INTO hold_events VALUES (?, ?, ?, ?)", (hold_id, _ts(now), event, detail))

    # -- holds ---------------------------------------------------------------------------------
    def add_holds(self, holds: list[NewHold], now: datetime) -> list[str]:
        ids = []
        with self._tx() as db:
            for n, hold in enumerate(holds, start=1):
                hold_id = f"{hold.queue_id}-{n}"
                # an MTA's queue id is not unique forever (short Postfix queue ids repeat): never reuse
                while db.execute("SELECT 1 FROM holds WHERE id = ?", (hold_id,)).fetchone():
                    hold_id = f"{hold.queue_id}-{n}-{secrets.token_hex(3)}"
                moderated = hold.reason == "moderate" or hold.deliver_at is None
                state = HoldState.MODERATION if moderated else HoldState.WAITING
                db.execute(
                    "INSERT INTO holds (id, queue_id, reason, state, mail_from, recipients, deliver_at, "
                    "deliver_at_local, next_attempt, created_at, rule_ids, cites, subject, sender_notice_to, "
                    "moderators, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (hold_id, hold.queue_id, hold.reason, state.value, hold.mail_from, json.dumps(hold.recipients),
                     _ts(hold.deliver_at), hold.deliver_at_local, None if moderated else _ts(hold.deliver_at), _ts(now),
                     json.dumps(hold.rule_ids), json.dumps(hold.cites), hold.subject[:300], hold.sender_notice_to,
                     json.dumps(hold.moderators), len(hold.content)))
                db.execute("INSERT INTO hold_content VALUES (?, ?)", (hold_id, hold.content))
                self._event(db, hold_id, now, "held", f"{hold.reason}: {', '.join(hold.rule_ids)}")
                ids.append(hold_id)
        return ids

    _COLUMNS = ("id, queue_id, reason, state, mail_from, recipients, deliver_at, next_attempt, attempts, "
                "created_at, rule_ids, cites, subject, sender_notice_to, moderators, last_error, "
                "deliver_at_local, size, decided_by, decided_at, decision")

    @staticmethod
    def _hold(row: tuple[Any, ...]) -> Hold:
        return Hold(
            id=row[0], queue_id=row[1], reason=row[2], state=HoldState(row[3]), mail_from=row[4],
            recipients=tuple(json.loads(row[5])), deliver_at=_dt(row[6]), next_attempt=_dt(row[7]),
            attempts=row[8], created_at=_dt(row[9]) or datetime.fromtimestamp(0, UTC),
            rule_ids=tuple(json.loads(row[10])), cites=tuple(json.loads(row[11])), subject=row[12],
            sender_notice_to=row[13], moderators=tuple(json.loads(row[14])), last_error=row[15],
            deliver_at_local=row[16], size=row[17], decided_by=row[18], decided_at=_dt(row[19]), decision=row[20],
        )

    def get_hold(self, hold_id: str) -> Hold | None:
        row = self._read(lambda db: db.execute(f"SELECT {self._COLUMNS} FROM holds WHERE id = ?",
                                               (hold_id,)).fetchone())
        return None if row is None else self._hold(row)

    def hold_content(self, hold_id: str) -> bytes | None:
        row = self._read(lambda db: db.execute("SELECT content FROM hold_content WHERE id = ?",
                                               (hold_id,)).fetchone())
        return None if row is None else bytes(row[0])

    def hold_events(self, hold_id: str) -> list[HoldEvent]:
        rows = self._read(lambda db: db.execute(
            "SELECT at, event, detail FROM hold_events WHERE hold_id = ? ORDER BY rowid", (hold_id,)).fetchall())
        return [HoldEvent(_dt(r[0]) or datetime.fromtimestamp(0, UTC), r[1], r[2]) for r in rows]

    @staticmethod
    def _where(filters: HoldFilter) -> tuple[str, list[Any]]:
        where = [f"state IN ({', '.join('?' * len(filters.states))})"]
        args: list[Any] = [s.value for s in filters.states]
        if filters.reason:
            where.append("reason = ?")
            args.append(filters.reason)
        if filters.sender:
            where.append("mail_from = ? COLLATE NOCASE")
            args.append(filters.sender)
        if filters.recipient:
            where.append("EXISTS (SELECT 1 FROM json_each(holds.recipients) WHERE lower(value) = lower(?))")
            args.append(filters.recipient)
        if filters.due_before:
            where.append("next_attempt < ?")
            args.append(_ts(filters.due_before))
        if filters.queue_id:
            where.append("queue_id = ?")
            args.append(filters.queue_id)
        if filters.rule:
            where.append("EXISTS (SELECT 1 FROM json_each(holds.rule_ids) WHERE value = ?)")
            args.append(filters.rule)
        if filters.since:
            where.append("created_at >= ?")
            args.append(_ts(filters.since))
        if filters.until:
            where.append("created_at < ?")
            args.append(_ts(filters.until))
        if filters.text:
            like = "LIKE ? ESCAPE '\\'"
            where.append(f"(lower(id) {like} OR lower(queue_id) {like} OR lower(mail_from) {like} "
                         f"OR lower(subject) {like} OR lower(recipients) {like})")
            args.extend([like_pattern(filters.text)] * 5)
        return " AND ".join(where), args

    def list_holds(self, filters: HoldFilter) -> list[Hold]:
        where, args = self._where(filters)
        order = ("state != 'moderation', created_at, id" if filters.order == "queue"
                 else "next_attempt IS NULL, next_attempt, created_at")
        sql = f"SELECT {self._COLUMNS} FROM holds WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
        rows = self._read(lambda db: db.execute(sql, (*args, filters.limit, max(0, filters.offset))).fetchall())
        return [self._hold(r) for r in rows]

    def count_matching(self, filters: HoldFilter) -> int:
        where, args = self._where(filters)
        return int(self._read(lambda db: db.execute(f"SELECT count(*) FROM holds WHERE {where}", args).fetchone()[0]))

    def count_holds(self, states: tuple[HoldState, ...] = (HoldState.WAITING, HoldState.MODERATION,
                                                            HoldState.DELIVERING)) -> int:
        sql = f"SELECT count(*) FROM holds WHERE state IN ({', '.join('?' * len(states))})"
        return int(self._read(lambda db: db.execute(sql, [s.value for s in states]).fetchone()[0]))

    def hold_stats(self) -> dict[str, tuple[int, datetime | None]]:
        """Open holds by reason (hold | moderate): how many, and when the oldest was stored."""
        rows = self._read(lambda db: db.execute(
            "SELECT reason, count(*), min(created_at) FROM holds WHERE state IN ('waiting', 'moderation', "
            "'delivering') GROUP BY reason").fetchall())
        return {str(r[0]): (int(r[1]), _dt(r[2])) for r in rows}

    def outbox_stats(self) -> tuple[int, datetime | None]:
        """Notices not yet taken by the upstream: how many, and when the oldest was queued."""
        row = self._read(lambda db: db.execute("SELECT count(*), min(created_at) FROM outbox").fetchone())
        return int(row[0]), _dt(row[1])

    def moderation_counts(self) -> dict[str, int]:
        """Moderation actions ever recorded (hold events), by event: approved, rejected, ..."""
        marks = ", ".join("?" * len(MODERATION_EVENTS))
        rows = self._read(lambda db: db.execute(
            f"SELECT event, count(*) FROM hold_events WHERE event IN ({marks}) GROUP BY event",
            MODERATION_EVENTS).fetchall())
        return {str(r[0]): int(r[1]) for r in rows}

    def next_due(self) -> datetime | None:
        row = self._read(lambda db: db.execute(
            "SELECT min(next_attempt) FROM holds WHERE state = 'waiting'").fetchone())
        return _dt(row[0])

    def claim_due(self, now: datetime, limit: int) -> list[Hold]:
        """Due holds, earliest first, moved to 'delivering' (a crash sends them back by recover())."""
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {self._COLUMNS} FROM holds WHERE state = 'waiting' AND next_attempt <= ? "
                "ORDER BY next_attempt, created_at LIMIT ?", (_ts(now), limit)).fetchall()
            for row in rows:
                db.execute("UPDATE holds SET state = 'delivering', attempts = attempts + 1 WHERE id = ?", (row[0],))
        return [self._hold(r) for r in rows]

    def mark_delivered(self, hold_id: str, now: datetime, detail: str = "") -> None:
        with self._tx() as db:
            db.execute("UPDATE holds SET state = 'delivered', next_attempt = NULL, last_error = '' WHERE id = ?",
                       (hold_id,))
            db.execute("DELETE FROM hold_content WHERE id = ?", (hold_id,))
            self._event(db, hold_id, now, "delivered", detail)

    def mark_retry(self, hold_id: str, now: datetime, next_attempt: datetime, error: str,
                   recipients: tuple[str, ...] | None = None) -> None:
        with self._tx() as db:
            if recipients is not None:
                db.execute("UPDATE holds SET recipients = ? WHERE id = ?", (json.dumps(recipients), hold_id))
            db.execute("UPDATE holds SET state = 'waiting', next_attempt = ?, last_error = ? WHERE id = ?",
                       (_ts(next_attempt), error[:500], hold_id))
            self._event(db, hold_id, now, "deferred", error[:500])

    def mark_failed(self, hold_id: str, now: datetime, error: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE holds SET state = 'failed', next_attempt = NULL, last_error = ? WHERE id = ?",
                       (error[:500], hold_id))
            db.execute("DELETE FROM hold_content WHERE id = ?", (hold_id,))
            self._event(db, hold_id, now, "failed", error[:500])

    def recover(self, now: datetime) -> int:
        """After a crash: holds claimed but not confirmed go back to waiting, due now."""
        with self._tx() as db:
            rows = db.execute("SELECT id FROM holds WHERE state = 'delivering'").fetchall()
            for (hold_id,) in rows:
                db.execute("UPDATE holds SET state = 'waiting', next_attempt = min(next_attempt, ?) WHERE id = ?",
                           (_ts(now), hold_id))
                self._event(db, hold_id, now, "recovered", "claimed before a stop; delivering again")
        return len(rows)

    def _change(self, hold_id: str, now: datetime, action: str, by: str, reason: str = "") -> Hold:
        """One action of TRANSITIONS (relay.store.base), checked against the current state."""
        step = TRANSITIONS[action]
        with self._tx() as db:
            row = db.execute("SELECT state FROM holds WHERE id = ?", (hold_id,)).fetchone()
            if row is None:
                raise KeyError(hold_id)
            step.check(hold_id, HoldState(row[0]))
            sets, args = step.assignments(_ts(now), reason, lambda n: "?", by)
            db.execute(f"UPDATE holds SET {sets} WHERE id = ?", (*args, hold_id))
            if step.drop_content:
                db.execute("DELETE FROM hold_content WHERE id = ?", (hold_id,))
            self._event(db, hold_id, now, step.event, event_detail(by, reason))
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
        rows = self._read(lambda db: db.execute(
            "SELECT id FROM holds WHERE state = 'moderation' AND created_at < ? ORDER BY created_at LIMIT ?",
            (_ts(created_before), limit)).fetchall())
        return expire_each(self, [r[0] for r in rows], now)

    def remove(self, hold_ids: list[str]) -> None:
        """Undo add_holds (the rest of the message could not be delivered: the client retries)."""
        with self._tx() as db:
            for hold_id in hold_ids:
                db.execute("DELETE FROM holds WHERE id = ?", (hold_id,))
                db.execute("DELETE FROM hold_content WHERE id = ?", (hold_id,))
                db.execute("DELETE FROM hold_events WHERE hold_id = ?", (hold_id,))

    # -- sending rates -------------------------------------------------------------------------
    def rate_take(self, key: str, window_start: datetime, amount: int, limit: int) -> int | None:
        """Add `amount` to the counter of (key, window) unless that passes `limit`: the new count,
        or None (nothing added) when it would. Old windows are dropped on the way."""
        with self._tx() as db:
            row = db.execute("SELECT count FROM rate_counters WHERE key = ? AND window_start = ?",
                             (key, _ts(window_start))).fetchone()
            count = (row[0] if row else 0) + amount
            if count > limit:
                return None
            db.execute("INSERT INTO rate_counters VALUES (?, ?, ?) ON CONFLICT (key, window_start) DO UPDATE "
                       "SET count = excluded.count", (key, _ts(window_start), count))
            db.execute("DELETE FROM rate_counters WHERE key = ? AND window_start < ?", (key, _ts(window_start)))
            return int(count)

    def rate_take_all(self, takes: Sequence[tuple[str, datetime, int]], amount: int) -> int | None:
        """Add `amount` to every counter (key, window start, limit) in one transaction, or to none:
        None when all were taken, else the index of the first one that would pass its limit. Each
        key's older windows are dropped on the way."""
        with self._tx() as db:
            counts = []
            for index, (key, start, limit) in enumerate(takes):
                row = db.execute("SELECT count FROM rate_counters WHERE key = ? AND window_start = ?",
                                 (key, _ts(start))).fetchone()
                counts.append((row[0] if row else 0) + amount)
                if counts[-1] > limit:
                    return index
            for (key, start, _), count in zip(takes, counts, strict=True):
                db.execute("INSERT INTO rate_counters VALUES (?, ?, ?) ON CONFLICT (key, window_start) DO UPDATE "
                           "SET count = excluded.count", (key, _ts(start), count))
                db.execute("DELETE FROM rate_counters WHERE key = ? AND window_start < ?", (key, _ts(start)))
            return None

    def take_once(self, key: str, now: datetime, period: float) -> bool:
        """True, with `now` recorded, unless `key` was taken less than `period` seconds before
        `now` (one auto-reply per sender and mailbox per grace period; kept with the rate counters)."""
        with self._tx() as db:
            row = db.execute("SELECT max(window_start) FROM rate_counters WHERE key = ?", (key,)).fetchone()
            stamp = _ts(now) or 0.0
            if row[0] is not None and row[0] > stamp - period:
                return False
            db.execute("DELETE FROM rate_counters WHERE key = ?", (key,))
            db.execute("INSERT INTO rate_counters VALUES (?, ?, 1)", (key, stamp))
            return True

    def give_back(self, key: str) -> None:
        """Forget a `take_once` (what it guarded did not happen: the next take succeeds)."""
        with self._tx() as db:
            db.execute("DELETE FROM rate_counters WHERE key = ?", (key,))

    # -- notices -------------------------------------------------------------------------------
    def add_notices(self, notices: Sequence[tuple[str, ...]], now: datetime) -> None:
        if not notices:
            return
        with self._tx() as db:
            db.executemany("INSERT INTO outbox (recipient, kind, subject, body, created_at, next_attempt, "
                           "attach_hold) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [(*n[:4], _ts(now), _ts(now), n[4] if len(n) > 4 else "") for n in notices])

    def due_notices(self, now: datetime, limit: int) -> list[OutboxNotice]:
        rows = self._read(lambda db: db.execute(
            "SELECT id, recipient, kind, subject, body, attempts, attach_hold FROM outbox WHERE next_attempt <= ? "
            "ORDER BY next_attempt LIMIT ?", (_ts(now), limit)).fetchall())
        return [OutboxNotice(*r) for r in rows]

    def notice_done(self, notice_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE id = ?", (notice_id,))

    def notice_retry(self, notice_id: int, next_attempt: datetime) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, next_attempt = ? WHERE id = ?",
                       (_ts(next_attempt), notice_id))

    def next_notice_due(self) -> datetime | None:
        return _dt(self._read(lambda db: db.execute("SELECT min(next_attempt) FROM outbox").fetchone())[0])

    # -- audit and inventory -------------------------------------------------------------------
    _AUDIT = ("at, queue_id, verdict, reply, mail_from, recipients, login, client_ip, rules, monitored, rcpt_to, "
              "subject, message_id, records")

    @staticmethod
    def _audit(r: tuple[Any, ...]) -> AuditEntry:
        return AuditEntry(_dt(r[0]) or datetime.fromtimestamp(0, UTC), r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                          tuple(tuple(x) for x in json.loads(r[8])), tuple(json.loads(r[9])),
                          tuple(json.loads(r[10])), r[11], r[12], records_from_json(r[13]))

    def add_audit(self, entries: list[AuditEntry], trace: list[TraceEvent] | None = None) -> None:
        """Decisions (and trace events, in the same transaction)."""
        if not entries and not trace:
            return
        with self._tx() as db:
            db.executemany(
                f"INSERT INTO audit ({self._AUDIT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(_ts(e.at), e.queue_id, e.verdict, e.reply, e.mail_from, e.recipients, e.login, e.client_ip,
                  json.dumps(e.rules), json.dumps(e.monitored), json.dumps(e.rcpt_to), e.subject[:300],
                  e.message_id.strip().strip("<>")[:300], records_json(e.records)) for e in entries])
            if trace:
                self._add_trace(db, trace)

    @staticmethod
    def _add_trace(db: sqlite3.Connection, events: list[TraceEvent]) -> None:
        db.executemany("INSERT INTO trace_events (queue_id, at, event, detail) VALUES (?, ?, ?, ?)",
                       [(e.queue_id, _ts(e.at), e.event, e.detail[:500]) for e in events])

    def add_trace(self, events: list[TraceEvent]) -> None:
        if events:
            with self._tx() as db:
                self._add_trace(db, events)

    def query_audit(self, since: datetime | None = None, until: datetime | None = None, rule: str | None = None,
                    verdict: str | None = None, limit: int = 10000) -> list[AuditEntry]:
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if since:
            where.append("at >= ?")
            args.append(_ts(since))
        if until:
            where.append("at < ?")
            args.append(_ts(until))
        if verdict:
            where.append("verdict = ?")
            args.append(verdict)
        if rule:
            where.append("EXISTS (SELECT 1 FROM json_each(audit.rules) WHERE json_extract(value, '$[0]') = ?)")
            args.append(rule)
        sql = f"SELECT {self._AUDIT} FROM audit WHERE {' AND '.join(where)} ORDER BY at, id LIMIT ?"
        rows = self._read(lambda db: db.execute(sql, (*args, limit)).fetchall())
        return [self._audit(r) for r in rows]

    def _audit_where(self, query: TraceQuery) -> tuple[str, list[Any]]:
        where: list[str] = ["1 = 1"]
        args: list[Any] = []
        if query.sender:
            where.append("(mail_from = ? COLLATE NOCASE OR login = ? COLLATE NOCASE)")
            args.extend((query.sender, query.sender))
        if query.recipient:
            where.append("EXISTS (SELECT 1 FROM json_each(audit.rcpt_to) WHERE lower(value) = lower(?))")
            args.append(query.recipient)
        if query.message_id:
            where.append("message_id = ?")
            args.append(query.message_id.strip().strip("<>"))
        if query.queue_id:
            where.append("queue_id = ?")
            args.append(query.queue_id)
        if query.since:
            where.append("at >= ?")
            args.append(_ts(query.since))
        if query.until:
            where.append("at < ?")
            args.append(_ts(query.until))
        return " AND ".join(where), args

    def search_audit(self, query: TraceQuery) -> list[AuditEntry]:
        """Decisions matching a trace search, newest first (a page: `limit` after `offset`)."""
        where, args = self._audit_where(query)
        sql = f"SELECT {self._AUDIT} FROM audit WHERE {where} ORDER BY at DESC, id DESC LIMIT ? OFFSET ?"
        rows = self._read(lambda db: db.execute(sql, (*args, query.limit, max(0, query.offset))).fetchall())
        return [self._audit(r) for r in rows]

    def count_audit(self, query: TraceQuery) -> int:
        """How many decisions match a trace search (no limit)."""
        where, args = self._audit_where(query)
        row = self._read(lambda db: db.execute(f"SELECT count(*) FROM audit WHERE {where}", args).fetchone())
        return int(row[0])

    def trace_events(self, queue_id: str) -> list[TraceEvent]:
        rows = self._read(lambda db: db.execute(
            "SELECT queue_id, at, event, detail FROM trace_events WHERE queue_id = ? ORDER BY at, id",
            (queue_id,)).fetchall())
        return [TraceEvent(r[0], _dt(r[1]) or datetime.fromtimestamp(0, UTC), r[2], r[3]) for r in rows]

    def purge_before(self, before: datetime) -> dict[str, int]:
        """Retention: decisions, trace events and finished holds (with their history) older than
        `before` are deleted; open holds stay whatever their age. Rows deleted, by kind."""
        cut = _ts(before)
        with self._tx() as db:
            done = ("SELECT id FROM holds WHERE created_at < ? AND state NOT IN "
                    "('waiting', 'moderation', 'delivering')")
            events = db.execute(f"DELETE FROM hold_events WHERE hold_id IN ({done})", (cut,)).rowcount
            db.execute(f"DELETE FROM hold_content WHERE id IN ({done})", (cut,))
            held = db.execute("DELETE FROM holds WHERE created_at < ? AND state NOT IN "
                              "('waiting', 'moderation', 'delivering')", (cut,)).rowcount
            audit = db.execute("DELETE FROM audit WHERE at < ?", (cut,)).rowcount
            trace = db.execute("DELETE FROM trace_events WHERE at < ?", (cut,)).rowcount
        return {"audit": audit, "trace_events": trace, "holds": held, "hold_events": events}

    def record_accounts(self, accounts: list[SocialAccount]) -> None:
        if not accounts:
            return
        with self._tx() as db:
            for a in accounts:
                db.execute(
                    "INSERT INTO social_accounts VALUES (?, ?, ?, ?, ?, 1, ?) ON CONFLICT (network, account) DO "
                    "UPDATE SET last_seen = max(last_seen, excluded.last_seen), "
                    "first_seen = min(first_seen, excluded.first_seen), messages = messages + 1, "
                    "mailbox_type = excluded.mailbox_type, last_subject = excluded.last_subject",
                    (a.network, a.account, a.mailbox_type, _ts(a.first_seen), _ts(a.last_seen), a.last_subject[:200]))

    def inventory(self) -> list[SocialAccount]:
        rows = self._read(lambda db: db.execute(
            "SELECT network, account, mailbox_type, first_seen, last_seen, messages, last_subject "
            "FROM social_accounts ORDER BY network, account").fetchall())
        return [SocialAccount(r[0], r[1], r[2], _dt(r[3]) or datetime.fromtimestamp(0, UTC),
                              _dt(r[4]) or datetime.fromtimestamp(0, UTC), r[5], r[6]) for r in rows]
