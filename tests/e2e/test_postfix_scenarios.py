"""Every acceptance scenario, sent by a real client through a real Postfix to the running relay.

Both deployments: after-queue `content_filter` (Postfix accepts, then bounces refusals and defers
4xx) and before-queue `smtpd_proxy_filter` (the client hears the relay's reply itself). For each
scenario the test asserts that the dry-run decision meets the scenario's expectation, and that what
happened on the wire matches that decision: what the sink received, what Postfix bounced or kept
deferred, and the SMTP reply. Time is set through the relay's test clock hook.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.clock import FileClock
from relay.directory import address_key
from relay.message import Envelope, Submission, parse_message
from relay.policy.engine import envelope_notices, envelope_refusal, envelope_refusing, evaluate
from relay.policy.verdicts import Decision, Notice, Verdict
from tests.e2e.harness import RelayProcess, Sink, free_port
from tests.e2e.postfix import Postfix
from tests.helpers import INSTITUTIONS, SHARED, directory, pack, to_bytes

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/postfix").exists(), reason="Postfix is installed by ./dev test")
SCENARIOS = sorted((SHARED / "acceptance" / "scenarios").glob("*.yaml"))
OUTSIDE_IP = "198.51.100.25"  # TEST-NET-2: a client that is not the institution's


class Chain:
    """Sink <- Postfix (reinjection) <- relay <- Postfix (front) for one institution and mode."""

    def __init__(self, tmp: Path, institution: str, mode: str) -> None:
        self.sink = Sink().start()
        milter_port = free_port()
        self.relay = RelayProcess(tmp, "smtp://127.0.0.1:1", pack=institution,
                                  trust={"xforward_hosts": ["127.0.0.1"]},
                                  milter={"listen": f"inet:127.0.0.1:{milter_port}"})
        domains = yaml.safe_load((INSTITUTIONS / f"{institution}.yaml").read_text(encoding="utf-8"))["domains"]
        # a long backoff: a deferred message must stay deferred while the test looks at it
        self.postfix = Postfix(self.relay.port, self.sink.port, ", ".join(domains), mode=mode,  # type: ignore[arg-type]
                               backoff=3600, milter_port=milter_port)
        self.relay.set_upstream(f"smtp://127.0.0.1:{self.postfix.reinject_port}")
        self.relay.use_test_clock(datetime.fromisoformat("2026-11-24T10:00:00-05:00"))
        self.relay.start()
        self.postfix.start()

    def stop(self) -> None:
        self.postfix.stop()
        self.relay.stop()
        self.sink.stop()


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], Chain]]:
    made: dict[tuple[str, str], Chain] = {}
    yield made
    for chain in made.values():
        chain.stop()


def get_chain(chains: dict[tuple[str, str], Chain], tmp_path_factory: pytest.TempPathFactory,
              institution: str, mode: str) -> Chain:
    if (institution, mode) not in chains:
        chains[(institution, mode)] = Chain(tmp_path_factory.mktemp(f"{institution}-{mode}"), institution, mode)
    return chains[(institution, mode)]


def expected_decision(scenario: dict[str, Any], client_ip: str, raw: bytes,
                      rcpts: list[str] | None = None) -> Decision:
    env = scenario["envelope"]
    name = scenario["institution"]
    at = scenario["at"] if isinstance(scenario["at"], datetime) else datetime.fromisoformat(str(scenario["at"]))
    envelope = Envelope.build(env.get("mail_from") or "", rcpts if rcpts is not None else env["rcpt_to"],
                              env.get("auth"), client_ip)
    return evaluate(Submission(envelope, parse_message(raw)), pack(name), directory(name), at)


def refused_at_rcpt(scenario: dict[str, Any], client_ip: str) -> list[str]:
    """The recipients a front-end that sees the envelope (the milter, the relay's own SMTP
    listener) refuses at RCPT, in order, as it does: each judged with those accepted before it."""
    env, name = scenario["envelope"], scenario["institution"]
    at = scenario["at"] if isinstance(scenario["at"], datetime) else datetime.fromisoformat(str(scenario["at"]))
    accepted: list[str] = []
    refused: list[str] = []
    for rcpt in env["rcpt_to"]:
        envelope = Envelope.build(env.get("mail_from") or "", [*accepted, rcpt], env.get("auth"), client_ip)
        if envelope_refusal(envelope, rcpt, pack(name), directory(name), at) is None:
            accepted.append(rcpt)
        else:
            refused.append(rcpt)
    return refused


def early_notices(scenario: dict[str, Any], client_ip: str, early: list[str]) -> tuple[Notice, ...]:
    """The one notice for a transaction's RCPT-time refusals (the first one), to our own sender."""
    if not early:
        return ()
    env, name = scenario["envelope"], scenario["institution"]
    at = scenario["at"] if isinstance(scenario["at"], datetime) else datetime.fromisoformat(str(scenario["at"]))
    accepted = [r for r in env["rcpt_to"][: env["rcpt_to"].index(early[0])] if r not in early]
    envelope = Envelope.build(env.get("mail_from") or "", [*accepted, early[0]], env.get("auth"), client_ip)
    finding = envelope_refusing(envelope, early[0], pack(name), directory(name), at)
    assert finding is not None
    return envelope_notices(envelope, finding, early[0], pack(name), directory(name), at)


def send(postfix: Postfix, login: str | None, addr: str, mail_from: str, rcpts: list[str],
         raw: bytes) -> tuple[str, dict[str, str]]:
    """Send through Postfix as `login` from `addr` (XCLIENT): the final reply as 'code text', and
    the recipients refused at RCPT with their replies."""
    with smtplib.SMTP("127.0.0.1", postfix.smtpd_port, timeout=60) as smtp:
        smtp.ehlo("client.test")
        code, text = smtp.docmd("XCLIENT", f"ADDR={addr} NAME=[UNAVAILABLE]" + (f" LOGIN={login}" if login else ""))
        assert code == 220, text
        smtp.ehlo("client.test")
        try:
            refused = smtp.sendmail(mail_from, rcpts, raw)
        except smtplib.SMTPDataError as error:
            return f"{error.smtp_code} {error.smtp_error.decode()}", {}
        except smtplib.SMTPRecipientsRefused as error:
            replies = {r: f"{c} {t.decode()}" for r, (c, t) in error.recipients.items()}
            return " ".join(replies.values()), replies
        return "250", {r: f"{c} {t.decode()}" for r, (c, t) in refused.items()}


def unfold(data: bytes) -> str:
    return " ".join(data.decode("utf-8", "replace").split())


@pytest.mark.parametrize("mode", ["content_filter", "proxy", "milter"])
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_through_postfix(path: Path, mode: str, chains: dict[tuple[str, str], Chain],
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    scenario = yaml.safe_load(path.read_text(encoding="utf-8"))
    env, expect = scenario["envelope"], scenario["expect"]
    chain = get_chain(chains, tmp_path_factory, scenario["institution"], mode)
    at = scenario["at"] if isinstance(scenario["at"], datetime) else datetime.fromisoformat(str(scenario["at"]))
    FileClock.write(chain.relay.clock_path, at)
    raw = to_bytes(scenario["message"])
    client_ip = env.get("client_ip") or OUTSIDE_IP
    mail_from, rcpts = env.get("mail_from") or "", list(env["rcpt_to"])

    full = expected_decision(scenario, client_ip, raw)
    wanted = expect["verdict"] if isinstance(expect["verdict"], list) else [expect["verdict"]]
    assert full.verdict.value in wanted  # the dry run meets the scenario (run.py checks the rest)
    # Behind Postfix as content_filter or proxy the relay sees the login only with the message, so
    # it decides everything at DATA; as a milter it sees the envelope and refuses at RCPT what the
    # envelope alone decides, then decides the rest at DATA, exactly like its own SMTP listener.
    early = refused_at_rcpt(scenario, client_ip) if mode == "milter" else []
    remaining = [r for r in rcpts if r not in early]
    decision = expected_decision(scenario, client_ip, raw, remaining) if remaining else full

    decisions_before = len(chain.relay.events("decision"))
    notices_before = len(chain.relay.events("notice"))
    refused_before = len(chain.relay.events("rcpt_refused"))
    with chain.sink.handler.lock:
        chain.sink.handler.messages.clear()
    reply, refused = send(chain.postfix, env.get("auth"), client_ip, mail_from, rcpts, raw)

    assert sorted(refused) == sorted(early), (refused, early)
    for rcpt in early:
        assert refused[rcpt].startswith("5") and " 5.7.1 [" in refused[rcpt], refused
    seen_refusals = chain.relay.wait_events("rcpt_refused", refused_before + len(early))[refused_before:]
    assert len(seen_refusals) == len(early)
    planned_early = {address_key(n.to) for n in early_notices(scenario, client_ip, early)}
    if remaining:
        events = chain.relay.wait_events("decision", decisions_before + 1)
        assert len(events) == decisions_before + 1, (reply, chain.postfix.queue(), chain.postfix.log()[-3000:])
        seen = events[-1]
        assert seen["verdict"] == decision.verdict.value, seen
    else:
        seen = seen_refusals[-1]
        reply = refused[early[-1]]
        decision = full
    assert seen["login"] == (address_key(env["auth"]) if env.get("auth") else None)
    planned = {address_key(n.to) for n in decision.notices} if remaining else set()
    planned |= planned_early
    chain.relay.wait_events("notice", notices_before + len(planned))
    queue = chain.postfix.wait_queue(lambda q: all(m["queue_name"] == "deferred" for m in q))
    time.sleep(0.2)
    got = list(chain.sink.messages)
    originals = [m for m in got if m.mail_from not in ("<>", "")]
    notices = [m for m in got if b"X-Relay-Notice:" in m.content]
    bounces = [m for m in got if m.mail_from in ("<>", "") and b"X-Relay-Notice:" not in m.content]
    delivered_to = {address_key(r) for m in originals for r in m.rcpts}
    keys = {address_key(r) for r in rcpts}

    keys -= {address_key(r) for r in early}
    if not remaining:
        assert delivered_to == set() and bounces == [] and queue == []
    elif decision.verdict is Verdict.DELIVER:
        assert reply == "250"
        assert delivered_to == keys
        assert all(b"X-Relay-Queue-ID: " in m.content for m in originals)
        assert queue == [] and bounces == []
    elif decision.verdict is Verdict.REJECT:
        rule = decision.reply.text.split("]")[0] + "]"
        assert delivered_to == set()
        if mode in ("proxy", "milter"):
            assert reply.startswith(f"{decision.reply.code} {decision.reply.status} {rule}"), reply
            assert bounces == []
        else:
            assert reply == "250"  # Postfix took it, then bounced the relay's refusal to the sender
            [bounce] = bounces
            assert bounce.rcpts == [mail_from] and rule in unfold(bounce.content)
    else:
        # hold / moderate: stored durably, then 250; deliver-now recipients go at once
        assert reply == "250", reply
        now_keys = {address_key(r.address) for r in decision.recipients if r.verdict is Verdict.DELIVER}
        assert delivered_to == now_keys and bounces == [] and queue == []
        held = [r for r in decision.recipients if r.verdict is Verdict.HOLD and r.deliver_at]
        if held:
            first = min(r.deliver_at for r in held if r.deliver_at)
            FileClock.write(chain.relay.clock_path, first - timedelta(minutes=1))
            time.sleep(0.6)
            assert {address_key(r) for m in chain.sink.messages if m.mail_from not in ("<>", "")
                    for r in m.rcpts} == now_keys  # not a minute early
            FileClock.write(chain.relay.clock_path, max(r.deliver_at for r in held if r.deliver_at))
            want = now_keys | {address_key(r.address) for r in held}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                released = {address_key(r) for m in chain.sink.messages if m.mail_from not in ("<>", "")
                            for r in m.rcpts}
                if released == want:
                    break
                time.sleep(0.1)
            assert released == want

    notified = {address_key(r) for m in notices for r in m.rcpts}
    assert notified == planned
    for address in expect.get("notify") or []:
        assert address_key(address) in notified
    for address in expect.get("no_notify") or []:
        assert address_key(address) not in notified
