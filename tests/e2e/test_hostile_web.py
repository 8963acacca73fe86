"""Hostile use of the admin site of a running relay over real HTTP (issue 20): redirects after
sign-in, notice links used by another moderator, password guessing in parallel."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from relay.auth import hash_password
from tests.e2e.harness import RelayProcess, Sink, wait_port
from tests.e2e.test_admin_web import MOD_PASSWORD, MODERATOR, admin_relay, client, moderation_links
from tests.e2e.test_queue_tools import moderated, send_promo

OTHER, OTHER_PASSWORD = "talento.humano", "clave-de-otra-oficina"


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture
def relay(tmp_path: Path, sink: Sink) -> Iterator[RelayProcess]:
    r = admin_relay(tmp_path, sink, extra_accounts=(
        {"login": OTHER, "password_hash": hash_password(OTHER_PASSWORD, iterations=1000)},))
    wait_port(r.admin_port)  # type: ignore[attr-defined]
    yield r
    r.stop()


HOSTILE_NEXT = ["//evil.test/", "/\t/evil.test", "/%09/evil.test", "/\\evil.test", "https://evil.test/holds",
                "/\n/evil.test", "/holds/../..//evil.test", " //evil.test", "/holds\r\nSet-Cookie: x=1",
                "/.%2F/evil.test", "/m/x/../../evil", "/\x00/evil.test", "/holds?x=//evil.test"]


def test_sign_in_goes_back_only_to_pages_of_the_admin_site(relay: RelayProcess) -> None:
    for raw in [*HOSTILE_NEXT, *(quote(t, safe="") for t in HOSTILE_NEXT)]:  # as sent, and encoded once more
        c = client(relay)
        page = c.post("/login", {"login": MODERATOR, "password": MOD_PASSWORD, "next": raw})
        assert page.status == 303, page.text
        assert page.headers["location"] == "/holds", (raw, page.headers["location"])
        form = c.get(f"/login?next={quote(raw, safe='')}")
        assert "evil" not in form.text, raw


def test_sign_in_still_returns_to_the_page_that_asked(relay: RelayProcess) -> None:
    c = client(relay)
    page = c.post("/login", {"login": MODERATOR, "password": MOD_PASSWORD, "next": "/holds?todos=1"})
    assert page.headers["location"] == "/holds?todos=1"


def test_a_notice_link_works_only_for_the_moderator_it_was_sent_to(relay: RelayProcess, sink: Sink) -> None:
    send_promo(relay)
    hold = moderated(relay)
    links = moderation_links(sink)  # sent to intranet@pasto.gov.co, the account MODERATOR's mailbox
    other = client(relay)
    assert other.sign_in(OTHER, OTHER_PASSWORD).status == 303
    page = other.get(links["approve"])
    assert page.status == 403 and "intranet@pasto.gov.co" in page.text
    csrf = other.get("/check").field("csrf")
    assert other.post(links["approve"], {"csrf": csrf}).status == 403
    assert moderated(relay)["state"] == "moderation"
    assert relay.events("admin_link_wrong_moderator")
    own = client(relay)
    own.sign_in(MODERATOR, MOD_PASSWORD)
    confirm = own.get(links["approve"])
    assert confirm.status == 200 and str(hold["id"]) in confirm.text


def test_parallel_password_guessing_is_cut_per_account_and_per_address(relay: RelayProcess) -> None:
    statuses: list[int] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        page = client(relay).post("/login", {"login": MODERATOR, "password": f"intento-{n}", "next": "/holds"})
        with lock:
            statuses.append(page.status)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses.count(401) <= 10, f"{statuses.count(401)} passwords tried for one account"
    assert statuses.count(429) >= 20
    blocked = client(relay).post("/login", {"login": MODERATOR, "password": MOD_PASSWORD, "next": "/holds"})
    assert blocked.status == 429, "the account is locked for the window, even with its password"
    assert client(relay).sign_in(OTHER, OTHER_PASSWORD).status == 303, "other accounts still sign in"
    assert relay.events("admin_sign_in_blocked")


def test_readyz_says_not_ready_when_the_upstream_is_unreachable(tmp_path: Path, sink: Sink) -> None:
    from tests.e2e.harness import free_port

    relay = admin_relay(tmp_path, sink)
    wait_port(relay.admin_port)  # type: ignore[attr-defined]
    try:
        assert client(relay).get("/readyz").status == 200
    finally:
        relay.stop()
    relay.set_upstream(f"smtp://127.0.0.1:{free_port()}")  # nothing listens there
    relay.start()
    wait_port(relay.admin_port)  # type: ignore[attr-defined]
    try:
        page = client(relay).get("/readyz")
        assert page.status == 503 and "upstream unreachable" in page.text, page.text
    finally:
        relay.stop()


def test_readyz_probe_fails_when_the_store_cannot_write(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from relay.store import SqliteStore, StoreError
    from relay.web.server import _probe_store

    store = SqliteStore(tmp_path / "s.sqlite3")
    _probe_store(store, datetime.now(UTC))

    def full(*args: object) -> None:
        raise StoreError("database or disk is full")

    store.rate_take = full  # type: ignore[method-assign,assignment]
    with pytest.raises(StoreError):
        _probe_store(store, datetime.now(UTC))
