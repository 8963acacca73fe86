"""What a pre-forked worker (relay.workers) and the relay it runs (relay.app) share, in a module of
its own so that neither imports the other for it: the sockets and lock a worker inherits, the
scheduler lock, the signals a starting worker defers, and the error that stops a start."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from relay.config import RelayConfig

DEFERRED = (signal.SIGHUP, signal.SIGUSR1)


class ServeError(Exception):
    """The relay cannot start (a port in use, a missing certificate): said plainly, no traceback."""


@dataclass(frozen=True)
class Inherited:
    """What a worker gets from its supervisor."""

    index: int
    count: int
    smtp: socket.socket | None
    milter: socket.socket | None
    lock_path: Path  # the scheduler lock (flock)
    metrics_dir: Path | None = None  # prometheus_client's multiprocess files, one directory a run


def scheduler_lock_path(config: RelayConfig, config_path: str | Path) -> Path:
    """The file whose flock makes one worker the scheduler: beside the SQLite store (so two relays
    on one store never both release holds), beside the pid file for PostgreSQL."""
    if config.store.startswith("sqlite:"):
        store = config.resolve(config_path, config.store.removeprefix("sqlite:"))
        return store.with_name(store.name + ".scheduler.lock")
    return config.resolve(config_path, config.pid_file).with_suffix(".scheduler.lock")


def try_lock(path: Path) -> int | None:
    """The scheduler lock's file descriptor if this process now holds it, else None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def one_at_a_time(worker: Inherited | None) -> Iterator[None]:
    """Workers starting together open the store one after another (its schema is created by the
    first): an flock on a file beside the scheduler lock. Nothing for a single relay."""
    if worker is None:
        yield
        return
    path = worker.lock_path.with_name(worker.lock_path.name + ".start")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
