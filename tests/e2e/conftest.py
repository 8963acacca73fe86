"""Fixtures the end-to-end tests share: a sink (the next hop, a real SMTP server on loopback) and a
relay (a real `relay serve` process) whose config, store, logs and Maildir all live under tmp_path,
never in the checkout. A test module changes its relay by overriding `relay_options` (keyword
arguments of RelayProcess: pack, extra_logins, policy, ...) or `relay_clock` (the test clock's
start), or by defining its own `relay` fixture."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import RelayProcess, Sink


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture
def relay_options() -> dict[str, Any]:
    return {}


@pytest.fixture
def relay_clock() -> datetime | None:
    return None


@pytest.fixture
def relay(tmp_path: Path, sink: Sink, relay_options: dict[str, Any],
          relay_clock: datetime | None) -> Iterator[RelayProcess]:
    r = RelayProcess(tmp_path, f"smtp://127.0.0.1:{sink.port}", **relay_options)
    if relay_clock is not None:
        r.use_test_clock(relay_clock)
    r.start()
    yield r
    r.stop()
