"""The one module that knows every store backend: a config's store URL -> a `Store`."""

from __future__ import annotations

from pathlib import Path

from relay.store.base import Store, StoreError
from relay.store.sqlite import SqliteStore


def open_store(url: str, base: Path, lease: float = 300, pool_size: int = 10, create: bool = True) -> Store:
    """The store a config names: `sqlite:PATH` (relative to the config's folder) or
    `postgresql://USER@HOST:PORT/DB` (shared by several relays; password in PGPASSWORD or ~/.pgpass).
    With create=False (the operator's tools) a SQLite file that does not exist is an error, never a
    new empty store."""
    if url.startswith(("postgresql://", "postgres://")):
        from relay.store.postgres import PostgresStore  # asyncpg is only loaded for a shared store

        return PostgresStore(url, lease=lease, pool_size=pool_size)
    if not url.startswith("sqlite:"):
        raise StoreError(f"unknown store {url!r}: use sqlite:PATH or postgresql://USER@HOST:PORT/DB")
    path = Path(url.removeprefix("sqlite:"))
    path = path if path.is_absolute() else base / path
    if not create and not path.exists():
        raise StoreError(f"the store {path} does not exist: check `store:` in the config "
                         "(`relay init` creates it, or `relay serve --init` at the first start)")
    return SqliteStore(path)
