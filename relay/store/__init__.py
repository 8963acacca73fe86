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
)
from relay.store.sqlite import SqliteStore, open_store

__all__ = ["AuditEntry", "Hold", "HoldEvent", "HoldFilter", "HoldState", "NewHold", "OutboxNotice",
           "SocialAccount", "SqliteStore", "Store", "StoreError", "open_store"]
