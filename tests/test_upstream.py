"""The upstream package's pure parts: MX failover on the typed `unreachable` flag (fakes, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from relay.upstream import Reply, Transaction
from relay.upstream.mx import MxUpstream


class FakeTarget:
    def __init__(self, name: str, reply: Reply, log: list[str]) -> None:
        self.name, self.reply, self.log = name, reply, log

    def describe(self) -> str:
        return self.name

    def transaction(self) -> Transaction:
        target = self

        class Txn(Transaction):
            async def mail(self, sender: str, options: Sequence[str] = ()) -> Reply:
                return Reply(250, "ok")

            async def rcpt(self, recipient: str, options: Sequence[str] = ()) -> Reply:
                target.log.append(target.name)
                return target.reply

            async def data(self, content: bytes) -> Reply:
                return Reply(250, f"2.0.0 via {target.name}")

            async def abort(self) -> None:
                return None

        return Txn()


class FakeMx(MxUpstream):
    def __init__(self, replies: list[Reply]) -> None:
        super().__init__("example.test", 25, "relay.test", resolver=None)  # type: ignore[arg-type]
        self.tried: list[str] = []
        self.fakes = [FakeTarget(f"mx{i}", r, self.tried) for i, r in enumerate(replies)]

    async def targets(self) -> list[Any]:
        return self.fakes


def send(mx: FakeMx) -> tuple[Reply, Reply]:
    async def go() -> tuple[Reply, Reply]:
        txn = mx.transaction()
        await txn.mail("a@b.test")
        rcpt = await txn.rcpt("c@example.test")
        return rcpt, await txn.data(b"x\r\n") if rcpt.ok else rcpt
    return asyncio.run(go())


def test_an_unreachable_host_is_skipped_whatever_its_reply_says() -> None:
    mx = FakeMx([Reply(421, "4.3.2 any words at all", unreachable=True), Reply(250, "ok")])
    rcpt, data = send(mx)
    assert rcpt.ok and data.text == "2.0.0 via mx1" and mx.tried == ["mx0", "mx1"]


def test_a_host_that_answers_is_final_even_with_the_words_of_an_outage() -> None:
    mx = FakeMx([Reply(451, "4.4.1 Upstream mail server unavailable; try again later"), Reply(250, "ok")])
    rcpt, _ = send(mx)
    assert rcpt.code == 451 and mx.tried == ["mx0"]


def test_no_host_reachable_is_a_typed_451() -> None:
    rcpt, _ = send(FakeMx([Reply(451, "4.4.1 x", unreachable=True)] * 2))
    assert rcpt.code == 451 and rcpt.unreachable
