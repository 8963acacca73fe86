"""The SMTP front-end's pure parts: aiosmtpd's per-connection look-over, done once per class."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

from relay.app import RelayApp
from relay.frontends.smtp import RelaySMTP, needs_normalising, normalise_newlines

ROOT = Path(__file__).resolve().parent.parent


def test_cached_class_scan_finds_what_aiosmtpd_would() -> None:
    app = RelayApp.from_config(ROOT / "config.example.yaml")

    async def build() -> tuple[RelaySMTP, RelaySMTP]:
        return RelaySMTP(app.disposer), RelaySMTP(app.disposer)

    first, second = asyncio.run(build())
    try:
        for server in (first, second):
            expected_smtp = {m.removeprefix("smtp_") for m in dir(server) if m.startswith("smtp_")}
            assert set(server._smtp_methods) == expected_smtp and "DATA" in expected_smtp
            handler = server.event_handler
            assert set(server._handle_hooks) == {m.removeprefix("handle_") for m in dir(handler)
                                                  if m.startswith("handle_")}
            # methods are bound to this instance, not to the one the class was first looked over for
            assert server._smtp_methods["DATA"].__self__ is server
            assert server._handle_hooks["DATA"].__self__ is handler
            auth = {n for n, _ in inspect.getmembers(server) if n.startswith("auth_")}
            assert {a.method.__name__ for a in server._auth_methods.values()} <= auth
        assert first._ehlo_hook_ver == "new"
    finally:
        app.store.close()


def test_bare_newlines_are_found_without_a_copy() -> None:
    assert not needs_normalising(b"a\r\nb\r\n")
    for bad in (b"a\nb\r\n", b"a\rb\r\n", b"a\r\n\rb", b"\n"):
        assert needs_normalising(bad)
        assert not needs_normalising(normalise_newlines(bad))


def test_long_line_scan_agrees_with_a_plain_split() -> None:
    import random

    from relay.frontends.smtp import has_long_line

    rng = random.Random(7)
    for _ in range(3000):
        limit = rng.choice([4, 10, 77, 999])
        lines = [b"x" * rng.choice([0, 1, limit // 2, limit - 1, limit, limit + 1, 2 * limit, rng.randrange(3 * limit)])
                 for _ in range(rng.randrange(1, 8))]
        buf = b"\n".join(lines)
        assert has_long_line(buf, limit) == (max(map(len, buf.split(b"\n"))) > limit), (limit, lines)
