"""The SMTP upstream's connection pool against a real aiosmtpd server on loopback: a pooled
connection is reused without an RSET round trip per message, and one that died while idle is
replaced by a new connection within the same transaction (the client never sees it); MAIL and
the first RCPT go in one write to a server that offers PIPELINING, and stay in step when MAIL is
refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relay.upstream.smtp import SmtpConnection, SmtpUpstream
from tests.e2e.harness import Sink, SinkHandler


class CountingHandler(SinkHandler):
    def __init__(self, pipelining: bool = False) -> None:
        super().__init__()
        self.rsets = 0
        self.ehlos = 0
        self.pipelining = pipelining

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address.startswith("refused@"):
            return "550 5.7.1 Sender refused"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.rsets += 1
        return "250 OK"

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        self.ehlos += 1
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]] if self.pipelining else responses


def counting_sink(port: int | None = None, pipelining: bool = False) -> tuple[Sink, CountingHandler]:
    sink = Sink(port)
    sink.handler = CountingHandler(pipelining)
    return sink.start(), sink.handler


async def deliver(upstream: SmtpUpstream, tag: str) -> int:
    txn = upstream.transaction()
    await txn.mail("laura.pinto@barrancabermeja.gov.co")
    assert (await txn.rcpt("pmu@barrancabermeja.gov.co")).ok
    reply = await txn.data(f"Subject: {tag}\r\n\r\nTexto.\r\n".encode())
    return reply.code


def test_pooled_connection_is_reused_without_rset_and_replaced_when_dead() -> None:
    sink, handler = counting_sink()
    upstream = SmtpUpstream(f"smtp://127.0.0.1:{sink.port}", "relay.test", timeout=2)  # the dead one: 2 s

    async def run() -> list[int]:
        codes = [await deliver(upstream, f"m{i}") for i in range(5)]
        assert handler.ehlos == 1 and handler.rsets == 0  # one connection, five transactions, no RSET
        sink.stop()  # the server goes away: the pooled connection is dead
        second, handler2 = counting_sink(sink.port)
        try:
            await asyncio.sleep(0.2)
            codes.append(await deliver(upstream, "after"))
            assert handler2.ehlos == 1  # a new connection, in the same transaction
            assert [m.content.count(b"Subject: after") for m in second.messages] == [1]
        finally:
            await upstream.close()
            second.stop()
        return codes

    assert asyncio.run(run()) == [250] * 6
    assert len(sink.messages) == 5


def test_mail_and_first_rcpt_are_pipelined_and_a_refused_mail_stays_in_step(monkeypatch: pytest.MonkeyPatch) -> None:
    sink, handler = counting_sink(pipelining=True)
    upstream = SmtpUpstream(f"smtp://127.0.0.1:{sink.port}", "relay.test", timeout=5)
    writes: list[tuple[str, ...]] = []
    send = SmtpConnection.send

    def spy(self: SmtpConnection, *lines: str) -> None:
        writes.append(tuple(line.split(":")[0] for line in lines))
        send(self, *lines)

    monkeypatch.setattr(SmtpConnection, "send", spy)

    async def run() -> list[int]:
        codes = [await deliver(upstream, "first")]
        txn = upstream.transaction()
        await txn.mail("refused@barrancabermeja.gov.co")
        codes.append((await txn.rcpt("pmu@barrancabermeja.gov.co")).code)
        await txn.abort()
        codes.append(await deliver(upstream, "second"))
        await upstream.close()
        return codes

    try:
        assert asyncio.run(run()) == [250, 550, 250]
    finally:
        sink.stop()
    assert handler.ehlos == 1  # one connection throughout: the refusal left it in step
    assert writes.count(("MAIL FROM", "RCPT TO")) == 3  # every MAIL went out with its first RCPT
    assert [m.content.count(b"Subject: second") for m in sink.messages] == [0, 1]
