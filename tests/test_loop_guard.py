"""The loop guard (trust.loop_guard): what the relay delivers carries its HMAC stamp; a message back
from a trusted hosted hop with a valid, fresh stamp passes once unchanged (no rules, no second
stamp, no notices, one audit row); forged, stale or untrusted stamps count for nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from relay import hosted, rewrite
from relay.clock import FixedClock
from relay.config import RelayConfig
from relay.dispose import Disposer, Rules, Submitted, WeDeliver
from relay.hosted import check_stamp, half_configured, stamped
from relay.store import NewHold, SqliteStore
from relay.upstream import Reply
from tests.helpers import directory, pack
from tests.test_one_path import FakeUpstream

KEY = b"k" * 32
H = "X-Policy-Relay-Loop"
B = "barrancabermeja.gov.co"
LAURA = f"laura.pinto@{B}"
NOW = datetime.fromisoformat("2026-11-25T10:00:00-05:00")
MSG = (f"From: {LAURA}\r\nTo: jose@gmail.com\r\nSubject: Informe\r\nMessage-ID: <abc@{B}>\r\n\r\n"
       "Cordial saludo.\r\n").encode()


def fields(content: bytes) -> list[bytes]:
    return rewrite.split_head(content)[0]


def test_a_stamp_checks_only_for_its_key_message_id_and_age() -> None:
    t = int(NOW.timestamp())
    out = stamped(MSG, KEY, H, "Q1", t, f"abc@{B}")
    assert out.endswith(MSG) and out.startswith(f"{H}: v1; q=Q1; t={t}; n=0; m=".encode())
    assert check_stamp(fields(out), KEY, H, t + 10, 3600, f"abc@{B}").valid
    assert check_stamp(fields(out), KEY, H, t + 10, 3600, f"abc@{B}").key == f"loop-guard:Q1:{t}:0"
    assert check_stamp(fields(out), b"x" * 32, H, t, 3600, f"abc@{B}").why.startswith("stamp not made")
    assert not check_stamp(fields(out), KEY, H, t, 3600, "other@x").valid  # copied onto another message
    assert "older" in check_stamp(fields(out), KEY, H, t + 3601, 3600, f"abc@{B}").why
    assert "future" in check_stamp(fields(out), KEY, H, t - 3600, 3600, f"abc@{B}").why
    assert check_stamp(fields(MSG), KEY, H, t, 3600, "").why == "no stamp"
    for tampered in (out.replace(b"q=Q1", b"q=Q2"), out.replace(b"n=0", b"n=1")):
        assert not check_stamp(fields(tampered), KEY, H, t, 3600, f"abc@{B}").valid
    twice = out.split(b"\r\n", 1)[0] + b"\r\n" + out
    assert check_stamp(fields(twice), KEY, H, t, 3600, f"abc@{B}").why == "2 stamps"
    restamped = stamped(stamped(MSG, b"x" * 32, H, "Q9", t, ""), KEY, H, "Q1", t, f"abc@{B}")
    assert restamped == out  # any other copy replaced, one stamp


def test_the_header_name_is_checked() -> None:
    def guard(header: str) -> object:
        return {"policy": "p", "directory": "d", "trust": {"loop_guard": {"header": header}}}

    with pytest.raises(ValueError, match="X-Relay"):
        RelayConfig.model_validate(guard("X-Relay-Loop"))
    with pytest.raises(ValueError, match="header name"):
        RelayConfig.model_validate(guard("a b"))


def test_validate_warns_without_loop_guard_or_client_certificate() -> None:
    hop = {"service": "exchange_online", "clients": ["40.92.0.0/15"],
           "certificate_names": ["*.mail.protection.outlook.com"], "tenant_id": "1f2e3d4c-0000-4000-8000-00000000abcd"}
    base = {"policy": "p", "directory": "d", "upstream": "smtp://x:25?starttls=1",
            "tls": {"cert": "c", "key": "k", "client_ca": "ca"}}
    warned = half_configured(RelayConfig.model_validate({**base, "trust": {"hosted": [hop]}}))
    assert any("without trust.loop_guard" in w for w in warned)
    assert any("tls_client_cert" in w for w in warned)
    full = RelayConfig.model_validate({**base, "trust": {"hosted": [hop], "loop_guard": {}},
                                       "upstream_options": {"tls_client_cert": "relay.pem"}})
    assert half_configured(full) == []
    plain = RelayConfig.model_validate({**base, "upstream": "smtp://x:25", "trust": {"hosted": [hop], "loop_guard": {}},
                                        "upstream_options": {"tls_client_cert": "relay.pem"}})
    assert any("only presented over TLS" in w for w in half_configured(plain))


def build(tmp_path: Path, clock: FixedClock) -> tuple[Disposer, SqliteStore, FakeUpstream]:
    config = RelayConfig.model_validate({
        "hostname": "relay.test", "policy": "p.yaml", "directory": "d.yaml",
        "trust": {"hosted": [{"service": "exchange_online", "clients": ["127.0.0.0/8"]}],
                  "loop_guard": {"max_age": 3600}}})
    store, up = SqliteStore(tmp_path / "s.db"), FakeUpstream()
    disposer = Disposer(config, Rules(pack("barrancabermeja"), directory("barrancabermeja"), None, None), clock,
                        store, up, loop_key=KEY)  # type: ignore[arg-type]
    return disposer, store, up


async def submit(disposer: Disposer, up: FakeUpstream, content: bytes, hosted_as: str | None,
                 qid: str, login: str | None = LAURA) -> str:
    txn = up.transaction()
    await txn.mail(LAURA)
    await txn.rcpt("jose@gmail.com")
    m = Submitted(qid, LAURA, ("jose@gmail.com",), content, login, "127.0.0.1", "mail.protection.outlook.com",
                  tls=True, hosted=hosted_as)
    return type(await disposer.dispose(m, WeDeliver(txn))).__name__


def test_delivered_mail_is_stamped_and_passes_once_unchanged(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    disposer, store, up = build(tmp_path, clock)

    async def run() -> list[str]:
        first = await submit(disposer, up, MSG, "exchange_online", "AAA1")
        clock.advance(timedelta(seconds=30))
        back = up.delivered[0][2]
        again = await submit(disposer, up, back, "exchange_online", "AAA2")
        loop = await submit(disposer, up, back, "exchange_online", "AAA3")
        return [first, again, loop]

    outcomes = asyncio.run(run())
    assert outcomes == ["Accept", "Accept", "Reject"]
    out = up.delivered[0][2]
    assert next(f for f in fields(out) if f.startswith(H.encode())).startswith(f"{H}: v1; q=AAA1; ".encode())
    assert len(up.delivered) == 2 and up.delivered[1][2] == out  # byte for byte: no second stamp
    rows = {e.queue_id: e for e in store.query_audit()}
    assert [r[0] for r in rows["AAA2"].rules] == ["loop-guard"] and rows["AAA2"].rules[0][2] == "pass"
    assert rows["AAA3"].verdict == "reject" and "5.4.6" in rows["AAA3"].reply
    assert store.due_notices(NOW + timedelta(days=1), 10) == []


@pytest.mark.parametrize("how", ["untrusted", "forged", "stale"])
def test_a_stamp_that_does_not_count_is_judged_and_replaced(tmp_path: Path, how: str) -> None:
    clock = FixedClock(NOW)
    disposer, store, up = build(tmp_path, clock)
    t = int(NOW.timestamp())
    key = b"z" * 32 if how == "forged" else KEY
    content = stamped(MSG, key, H, "OLD1", t - (7200 if how == "stale" else 0), f"abc@{B}")
    code = asyncio.run(submit(disposer, up, content, None if how == "untrusted" else "exchange_online", "BBB1"))
    assert code == "Accept"  # judged by the rules (staff mail to an outside address)
    (_, _, out), = up.delivered
    stamps = [f for f in fields(out) if f.lower().startswith(H.lower().encode())]
    assert len(stamps) == 1 and b"q=BBB1;" in stamps[0]  # ours replaced theirs
    assert b"X-Relay-Queue-ID: BBB1" in out
    rules = [r[0] for e in store.query_audit() for r in e.rules]
    assert "loop-guard" not in rules


def test_a_refused_pass_can_be_retried(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    disposer, _, up = build(tmp_path, clock)
    back = hosted.stamped(MSG, KEY, H, "CCC0", int(NOW.timestamp()), f"abc@{B}")
    up.data_replies["jose@gmail.com"] = Reply(451, "4.3.0 try later")
    assert asyncio.run(submit(disposer, up, back, "exchange_online", "CCC1")) == "Tempfail"
    del up.data_replies["jose@gmail.com"]
    assert asyncio.run(submit(disposer, up, back, "exchange_online", "CCC2")) == "Accept"
    assert [d[2] for d in up.delivered] == [back]


def test_an_approved_moderation_copy_is_released_with_a_fresh_stamp(tmp_path: Path) -> None:
    """Moderators' approvals and due holds leave through `Disposer.release`: stamped at release,
    with the hold's queue id, any stamp the stored copy carried replaced."""
    clock = FixedClock(NOW)
    disposer, store, up = build(tmp_path, clock)
    old = stamped(MSG, b"x" * 32, H, "OLD1", int(NOW.timestamp()) - 86400 * 3, f"abc@{B}")
    (hold_id,) = store.add_holds([NewHold("MOD1", "moderate", LAURA, ("jose@gmail.com",), old, None,
                                          ("commercial-content-approval",), ("Circular",))], NOW)
    store.approve(hold_id, NOW, "moderador@" + B)
    hold = store.get_hold(hold_id)
    assert hold is not None
    clock.set(NOW + timedelta(hours=5))
    released = asyncio.run(disposer.release(hold, store.hold_content(hold_id) or b"", disposer.log))
    assert released.accepted == ("jose@gmail.com",)
    (_, _, out), = up.delivered
    assert len([f for f in fields(out) if f.lower().startswith(H.lower().encode())]) == 1  # theirs replaced
    check = check_stamp(fields(out), KEY, H, (NOW + timedelta(hours=5)).timestamp(), 3600, f"abc@{B}")
    assert check.valid and check.queue_id == "MOD1" and check.stamped_at == int((NOW + timedelta(hours=5)).timestamp())
    assert out.endswith(MSG)
