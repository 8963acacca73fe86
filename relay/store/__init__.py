"""Durable state: held messages, notices waiting to go out, the audit trail and the inventory."""

from relay.store.base import (
    AuditEntry,
    Hold,
    HoldEvent,
    HoldFilter,
    HoldState,
    NewHold,
    OutboxNotice,
    SocialAccount,
    Store,
    StoreError,
    TraceEvent,
    TraceQuery,
    Transition,
)
from relay.store.factory import open_store
from relay.store.sqlite import SqliteStore

__all__ = ["AuditEntry", "Hold", "HoldEvent", "HoldFilter", "HoldState", "NewHold", "OutboxNotice",
           "SocialAccount", "SqliteStore", "Store", "StoreError", "TraceEvent", "TraceQuery", "Transition",
           "open_store"]
