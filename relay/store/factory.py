"""The one module that knows every store backend: a config's store URL -> a `Store`."""

from __future__ import annotations

from pathlib import Path

from relay.store.base import Store, StoreError
from relay.store.sqlite import SqliteStore


def open_store(url: str, base: Path, lease: float = 300, pool_size: int = 10) -> Store:
    """The store a config names: `sqlite:PATH` (relative to the config's folder) or
    `postgresql://USER@HOST:PORT/DB` (shared by several relays; password in PGPASSWORD or ~/.pgpass)."""
    if url.startswith(("postgresql://", "postgres://")):
        from relay.store.postgres import PostgresStore  # asyncpg is only loaded for a shared store

        return PostgresStore(url, lease=lease, pool_size=pool_size)
    if not url.startswith("sqlite:"):
        raise StoreError(f"unknown store {url!r}: use sqlite:PATH or postgresql://USER@HOST:PORT/DB")
    path = Path(url.removeprefix("sqlite:"))
    return SqliteStore(path if path.is_absolute() else base / path)
