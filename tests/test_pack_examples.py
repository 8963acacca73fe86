"""Every pack's own `examples:` give the verdicts they declare."""

from __future__ import annotations

import pytest

from relay.message import Envelope, Submission, parse_message
from relay.policy.engine import evaluate
from tests.helpers import PACK_NAMES, directory, pack, to_bytes

CASES = [(name, i) for name in PACK_NAMES for i in range(len(pack(name).examples))]


def test_every_pack_has_examples() -> None:
    for name in PACK_NAMES:
        assert pack(name).examples, f"policies/{name}.yaml has no examples"


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_pack_example(name: str, index: int) -> None:
    example = pack(name).examples[index]
    env = example.envelope
    envelope = Envelope.build(env.mail_from, env.rcpt_to, env.auth, env.client_ip)
    decision = evaluate(Submission(envelope, parse_message(to_bytes(example.message))), pack(name),
                        directory(name), example.at)
    fired = {f.rule_id for f in decision.findings}
    assert decision.verdict.value == example.expect.verdict, (example.name, decision.to_json())
    for rule in example.expect.rules:
        assert rule in fired, (example.name, fired)
    for rule in example.expect.not_rules:
        assert rule not in fired, (example.name, fired)
