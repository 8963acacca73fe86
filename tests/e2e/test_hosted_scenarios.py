"""Every public acceptance scenario through the Exchange-Online-shaped hop: a trusted TLS client with
Exchange Online's certificate name (test CA) sends the scenario's message with Exchange's
authentication stamps (`AuthAs: Internal` when the scenario's sender logged in, `Anonymous` when
it is outside mail) to the relay, which delivers back to a sink that requires STARTTLS and the
relay's client certificate (the certificate-based inbound connector). One relay per institution
for all its scenarios (CI time).

On this hop Exchange Online vouches for the envelope sender, not for a separate login: a scenario
whose SMTP AUTH login differs from its envelope sender (a delegate sending as a service mailbox, a
forged sender) is judged with the identity the hop carries; Exchange's own Send As permission
check is what stands in front of the relay there (docs/microsoft365.md). Every other scenario must
come to the same verdict as its expectation and as the direct dry run (tests/test_acceptance.py).
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.clock import FileClock
from relay.directory import address_key
from relay.message import Envelope, Submission, parse_message
from relay.policy.engine import evaluate
from relay.policy.verdicts import Decision, Verdict
from tests.e2e.harness import RelayProcess, SinkHandler
from tests.e2e.test_hosted_hop import TENANT, hosted_relay, module_sink, pki, stamps  # noqa: F401 - fixtures
from tests.helpers import SHARED, directory, pack, to_bytes

SCENARIOS = sorted((SHARED / "acceptance" / "scenarios").glob("*.yaml"))
HOP_IP = "127.0.0.1"  # the hosted service's address on loopback


@pytest.fixture(scope="module")
def relays(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path],  # noqa: F811
           module_sink: SinkHandler) -> Iterator[Callable[[str], RelayProcess]]:  # noqa: F811
    made: dict[str, RelayProcess] = {}

    def get(institution: str) -> RelayProcess:
        if institution not in made:
            proc = hosted_relay(tmp_path_factory.mktemp(f"hosted-{institution}"), pki, module_sink,
                                pack=institution, scheduler={"max_sleep": 0.5})
            proc.use_test_clock(datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
            made[institution] = proc.start()
        return made[institution]

    yield get
    for proc in made.values():
        proc.stop()


def at_of(scenario: dict[str, Any]) -> datetime:
    at = scenario["at"]
    return at if isinstance(at, datetime) else datetime.fromisoformat(str(at))


def hop_login(scenario: dict[str, Any]) -> str | None:
    """Whom the hop vouches for: the envelope sender, when it logged in and is one of ours."""
    env = scenario["envelope"]
    sender = env.get("mail_from") or ""
    if not env.get("auth") or not directory(scenario["institution"]).is_local(sender):
        return None
    return address_key(sender)


def expected(scenario: dict[str, Any], raw: bytes, login: str | None) -> Decision:
    env = scenario["envelope"]
    envelope = Envelope.build(env.get("mail_from") or "", env["rcpt_to"], login, HOP_IP)
    name = scenario["institution"]
    return evaluate(Submission(envelope, parse_message(raw)), pack(name), directory(name), at_of(scenario))


def exchange_stamps(authenticated: bool) -> bytes:
    return (f"X-MS-Exchange-Organization-AuthAs: {'Internal' if authenticated else 'Anonymous'}\r\n"
            "X-MS-Exchange-Organization-AuthSource: BN8PR12MB3456.namprd12.prod.outlook.com\r\n"
            f"X-MS-Exchange-CrossTenant-Id: {TENANT}\r\n").encode()


def send_through_hop(port: int, pki: dict[str, Path], mail_from: str, rcpts: list[str],  # noqa: F811
                     content: bytes) -> str:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    context.load_cert_chain(pki["exo"], pki["exo.key"])
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo("BN8PR12MB3456.namprd12.prod.outlook.com")
        try:
            refused = smtp.sendmail(mail_from, rcpts, content)
        except smtplib.SMTPDataError as error:
            return f"{error.smtp_code} {error.smtp_error.decode()}"
        except smtplib.SMTPRecipientsRefused as error:
            return " ".join(f"{c} {t.decode()}" for c, t in error.recipients.values())
        assert refused == {}  # the hop's recipients are all decided at DATA
        return "250"


def originals_to(sink: SinkHandler) -> set[str]:
    return {address_key(r) for m in list(sink.messages) if m.mail_from not in ("<>", "") for r in m.rcpts}


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_through_the_exchange_online_hop(path: Path, relays: Callable[[str], RelayProcess],
                                                  pki: dict[str, Path],  # noqa: F811
                                                  module_sink: SinkHandler) -> None:  # noqa: F811
    scenario = yaml.safe_load(path.read_text(encoding="utf-8"))
    env, expect = scenario["envelope"], scenario["expect"]
    relay: RelayProcess = relays(scenario["institution"])
    FileClock.write(relay.clock_path, at_of(scenario))
    raw = to_bytes(scenario["message"])
    login = hop_login(scenario)
    mail_from, rcpts = env.get("mail_from") or "", list(env["rcpt_to"])
    decision = expected(scenario, raw, login)
    wanted = expect["verdict"] if isinstance(expect["verdict"], list) else [expect["verdict"]]
    same_identity = not env.get("auth") or address_key(env["auth"]) == address_key(mail_from)
    if same_identity:  # the hop carries the scenario's sender: the scenario's own expectation
        assert decision.verdict.value in wanted, (decision.verdict, decision.reply)

    decisions_before = len(relay.events("decision"))
    notices_before = len(relay.events("notice"))
    with module_sink.lock:
        module_sink.messages.clear()
    reply = send_through_hop(relay.port, pki, mail_from, rcpts, exchange_stamps(login is not None) + raw)

    events = relay.wait_events("decision", decisions_before + 1)
    assert len(events) == decisions_before + 1, reply
    seen = events[-1]
    assert seen["verdict"] == decision.verdict.value, (seen, reply)
    assert seen["login"] == login
    planned = {address_key(n.to) for n in decision.notices}
    relay.wait_events("notice", notices_before + len(planned))
    keys = {address_key(r) for r in rcpts}
    if decision.verdict is Verdict.DELIVER:
        assert reply == "250", reply
        deadline = time.monotonic() + 10
        while originals_to(module_sink) != keys and time.monotonic() < deadline:
            time.sleep(0.05)
        assert originals_to(module_sink) == keys
        assert all(len(stamps(m.content)) == 1 for m in module_sink.messages)  # the loop guard on each
    elif decision.verdict is Verdict.REJECT:
        rule = decision.reply.text.split("]")[0] + "]"
        assert reply.startswith(f"{decision.reply.code} {decision.reply.status} {rule}"), reply
        time.sleep(0.2)
        assert originals_to(module_sink) == set()
    else:  # hold / moderate: stored, 250; deliver-now recipients at once, held ones when due, stamped
        assert reply == "250", reply
        now_keys = {address_key(r.address) for r in decision.recipients if r.verdict is Verdict.DELIVER}
        time.sleep(0.3)
        assert originals_to(module_sink) == now_keys
        held = [r for r in decision.recipients if r.verdict is Verdict.HOLD and r.deliver_at]
        if held:
            FileClock.write(relay.clock_path, max(r.deliver_at for r in held if r.deliver_at) + timedelta(seconds=1))
            want = now_keys | {address_key(r.address) for r in held}
            deadline = time.monotonic() + 30
            while originals_to(module_sink) != want and time.monotonic() < deadline:
                time.sleep(0.1)
            assert originals_to(module_sink) == want
            assert all(len(stamps(m.content)) == 1 for m in module_sink.messages)
    time.sleep(0.2)
    notices = [m for m in list(module_sink.messages) if b"X-Relay-Notice:" in m.content]
    notified = {address_key(r) for m in notices for r in m.rcpts}
    assert planned <= notified, (planned, notified)
    if same_identity:
        for address in expect.get("notify") or []:
            assert address_key(address) in notified
        for address in expect.get("no_notify") or []:
            assert address_key(address) not in notified
