"""Shared fixtures: a real PostgreSQL server for the tests that need one (started once)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dnsserver import DNSMASQ, DnsServer
from tests.pg import PostgresServer, pg_bin


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    if pg_bin() is None:
        if os.environ.get("RELAY_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is not installed; ./dev test installs Debian's postgresql")
        pytest.skip("PostgreSQL is installed by ./dev test")
    server = PostgresServer().start()
    yield server
    server.stop()


_COUNT = [0]


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A new, empty database on the shared server."""
    _COUNT[0] += 1
    return pg_server.fresh_database(f"t{os.getpid()}_{_COUNT[0]}")


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    if not Path(DNSMASQ).exists():
        if os.environ.get("RELAY_REQUIRE_DNS"):
            pytest.fail("dnsmasq is not installed; ./dev test installs Debian's dnsmasq-base")
        pytest.skip("dnsmasq is installed by ./dev test")
    server = DnsServer().start()
    yield server
    server.stop()
