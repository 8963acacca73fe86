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


PATHS = ["<laura.pinto@barrancabermeja.gov.co>", "<a@b> SIZE=100 BODY=8BITMIME", "<>", "", "<a..b@c>",
         "<.a@b>", "<a.@b>", '<"quoted local"@b.co>', "<a@[127.0.0.1]>", " <a@b>", "<a@b", "a@b",
         "<a(comment)@b>", "<a@-b.co>", "<a@b..co>", "<" + "x" * 65 + "@b.co>", "<@relay:a@b>", "<á@b.co>",
         "<a@b.co>x", "<a@b> (c) SIZE=1", "<a@b>\t SIZE=1", "<a@b.co>\r\n", "<A+tag@Example.COM> NOTIFY=NEVER"]


def _getaddr(cls: type, arg: str, limit: int) -> object:
    server = object.__new__(RelaySMTP)
    server.local_part_limit = limit  # the only state _getaddr reads
    try:
        return cls._getaddr(server, arg)  # type: ignore[attr-defined]
    except Exception as error:  # the stdlib parser has its own bugs (IndexError): the same ones, then
        return type(error)


def test_fast_address_parsing_answers_as_aiosmtpd_does() -> None:
    """RelaySMTP._getaddr's shortcut for plain paths gives exactly aiosmtpd's parser's answer."""
    import random

    from aiosmtpd.smtp import SMTP

    rng = random.Random(22)
    alphabet = "ab.@<>\"()[] -+_=xyz1\\:\t"
    fuzzed = ["<" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) + rng.choice([">", "> ", ""])
              + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))) for _ in range(3000)]
    pieces = ["a", "b1", "x+y", "-", "_", "Z", "a.b"] * 6 + [".", "..", "@", "'", "(", " ", "\t", ">", "<", "é", "[1]"]
    near_plain = ["<" + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 5))) + "@"
                  + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) + ">"
                  + rng.choice(["", " SIZE=1", "  BODY=8BITMIME", " (c)", "\tX", " ", "x"]) for _ in range(3000)]
    shortcut = 0
    for arg in PATHS + fuzzed + near_plain:
        for limit in (0, 64):
            assert _getaddr(RelaySMTP, arg, limit) == _getaddr(SMTP, arg, limit), (arg, limit)
        shortcut += bool(__import__("relay.frontends.smtp", fromlist=["_PLAIN_PATH"])._PLAIN_PATH.match(arg))
    assert shortcut > 300  # the shortcut was taken, not only the fallback
