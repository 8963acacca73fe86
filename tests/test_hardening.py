"""Unit tests of the pure pieces of the hardening (issue 20): same AUTH cost for unknown logins,
the byte budget, the failure window, quoted-printable with CRLF only."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from datetime import datetime
from pathlib import Path

from relay.auth import Credentials, hash_password
from relay.frontends.guard import AuthFailures, ByteBudget, ClientGuard
from relay.rewrite import add_banner, quoted_printable

BARE = re.compile(rb"(?<!\r)\n|\r(?!\n)")


def test_an_unknown_login_costs_what_a_known_one_does() -> None:
    credentials = Credentials({"laura@x.gov.co": hash_password("secreta", iterations=60_000)})

    def cost(login: str) -> float:
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            assert not credentials.check(login, "incorrecta")
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    known, unknown = cost("laura@x.gov.co"), cost("nadie@x.gov.co")
    assert 0.6 < unknown / known < 1.6, f"known {known * 1000:.1f} ms, unknown {unknown * 1000:.1f} ms"
    assert credentials.check("LAURA@x.gov.co", "secreta")


def test_password_checks_run_off_the_event_loop() -> None:
    credentials = Credentials({"laura@x.gov.co": hash_password("secreta", iterations=200_000)})

    async def main() -> float:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        start = time.perf_counter()
        await asyncio.gather(*(credentials.check_async("laura@x.gov.co", "no") for _ in range(4)))
        took = time.perf_counter() - start
        task.cancel()
        return ticks / (took / 0.01)

    assert asyncio.run(main()) > 0.3, "the loop kept ticking while hashing"


def test_failures_are_counted_within_the_window_only() -> None:
    failures = AuthFailures()
    for t in range(5):
        failures.add("10.0.0.1", window=10, now=float(t))
    assert failures.count("10.0.0.1", 10, 5.0) == 5
    assert failures.count("10.0.0.1", 10, 12.5) == 2
    assert failures.count("10.0.0.1", 10, 100.0) == 0 and "10.0.0.1" not in failures.seen
    stamp = 200.0
    failures.add("10.0.0.2", 10, stamp)
    failures.undo("10.0.0.2", stamp)
    assert failures.count("10.0.0.2", 10, stamp) == 0


def test_the_connection_table_counts_per_address() -> None:
    guard = ClientGuard()
    assert guard.admit("a", 2) and guard.admit("a", 2) and not guard.admit("a", 2)
    assert guard.admit("b", 2) and guard.admit("a", None)
    for _ in range(3):
        guard.leave("a")
    assert "a" not in guard.connections and guard.admit("a", 2)


def test_the_byte_budget_is_never_exceeded_and_waiters_go_in_order() -> None:
    async def main() -> list[int]:
        budget = ByteBudget(100)
        assert budget.take(60) and not budget.take(50)
        order: list[int] = []

        async def decide(n: int, size: int) -> None:
            await budget.wait_for(size)
            order.append(n)
            assert budget.used <= 100 or budget.used == size
            await asyncio.sleep(0.01)
            budget.give(size)

        tasks = [asyncio.create_task(decide(n, 50)) for n in range(4)]
        await asyncio.sleep(0.01)
        assert not budget.take(1), "readers spool while someone waits"
        budget.give(60)
        await asyncio.gather(*tasks)
        alone = asyncio.create_task(decide(9, 1000))  # larger than the budget: granted alone
        await alone
        assert budget.used == 0 and budget.peak <= 1000
        return order

    assert asyncio.run(main()) == [0, 1, 2, 3, 9]


def test_quoted_printable_has_crlf_line_ends_only() -> None:
    text = ("Advertencia: " + "á" * 200 + "\nsegunda línea\r\ntercera\rcuarta " + "x" * 300)
    encoded = quoted_printable(text)
    assert not BARE.search(encoded) and b"=\r\n" in encoded
    assert max(len(line) for line in encoded.split(b"\r\n")) <= 76
    fields, rest = add_banner([b"From: a@b.co", b"Subject: hola", b"Content-Type: text/plain"],
                              b"\r\nhola\r\n", text, "[ALERTA]")
    assert not BARE.search(b"\r\n".join(fields) + rest)


# -- 10. client text in notices ------------------------------------------------------------------------

def test_a_decoded_line_break_in_the_subject_cannot_fake_a_line_of_a_moderation_request() -> None:
    from relay.notices import notice_bytes
    from tests.helpers import decide

    eduardo = "eduardo.hernandez@pasto.gov.co"
    fake = "=?utf-8?q?Seguros=0D=0A=0D=0A__Aprobar:__http://evil.test/m/x=0B=1B[2J=E2=80=A8Rechazar:_x?="
    message = (f"From: =?utf-8?q?Eduardo=0D=0AHern=C3=A1ndez?= <{eduardo}>\n"
               f"To: jorge.benavides@pasto.gov.co\nSubject: Promocion exclusiva {fake}\n\n"
               "Aproveche esta oferta por tiempo limitado. Compre ya su poliza con descuento, precios "
               "especiales para servidores publicos. Escribame para cotizar.\n")
    decision = decide("pasto", message, mail_from=eduardo, rcpt=["jorge.benavides@pasto.gov.co"], auth=eduardo)
    requests = [n for n in decision.notices if n.kind == "moderation-request"]
    assert requests, [n.kind for n in decision.notices]
    for notice in decision.notices:
        for line in notice.text.splitlines():
            assert not line.lstrip().startswith(("Aprobar:", "Rechazar:")), line
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f\u2028\u2029]", notice.text + notice.subject), notice.text
        raw = notice_bytes("postmaster@pasto.gov.co", "pasto.gov.co", notice.to, notice.kind, notice.subject,
                           notice.text, datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
        assert not BARE.search(raw)


def test_a_moderators_reason_keeps_its_lines_but_each_is_indented() -> None:
    from relay.notices import rejected

    notice = rejected("a@pasto.gov.co", "Hola\r\nAprobar: x", "Primera línea\nAprobar: http://evil.test\r\x1b[2J",
                      ["Circular 004"])
    lines = notice.text.splitlines()
    assert "  Aprobar: http://evil.test" in lines and not any(x.startswith("Aprobar:") for x in lines)
    assert "\x1b" not in notice.text and "\r" not in notice.text


# -- 3. a claimed hold is never left `delivering` -------------------------------------------------------

def test_a_released_hold_whose_outcome_cannot_be_recorded_is_recorded_once_the_store_writes(tmp_path: Path) -> None:
    from relay.store import HoldState, StoreError
    from tests.test_scheduler import T0, FakeUpstream, hold, make

    up = FakeUpstream()
    scheduler, store, _clock = make(tmp_path, up, alert_to="ops@barrancabermeja.gov.co")
    [hold_id] = store.add_holds([hold(("a@barrancabermeja.gov.co",))], T0)
    real = store.mark_delivered
    full = [True]

    def mark_delivered(*args: object) -> None:
        if full[0]:
            raise StoreError("database or disk is full")
        real(*args)  # type: ignore[arg-type]

    store.mark_delivered = mark_delivered  # type: ignore[method-assign]  # the disk fills up mid-release
    asyncio.run(scheduler.tick())
    assert len(up.delivered) == 2, "the hold went out, and the operator was alerted directly"
    assert up.delivered[1][1] == ("ops@barrancabermeja.gov.co",)
    assert hold_id in scheduler.unrecorded and scheduler.alerted
    asyncio.run(scheduler.tick())  # still full: kept, not delivered again
    assert len(up.delivered) == 2
    full[0] = False
    asyncio.run(scheduler.tick())
    got = store.get_hold(hold_id)
    assert got is not None and got.state is HoldState.DELIVERED and not scheduler.unrecorded
