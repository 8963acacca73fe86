#!/usr/bin/env python3
"""False-positive baseline: how many real ham messages each rule flags.

The SpamAssassin public corpus's ham (tests/corpora.py fetches it) is decided by every pack as if
staff had sent each message to two colleagues, so every content rule (sensitive notices, commercial
content, social-network sign-ups, ...) reads it. Prints, per pack and rule, the messages flagged.

    .venv/bin/python bench/false_positives.py
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.directory import load_directory  # noqa: E402
from relay.message import Envelope, Submission, parse_message  # noqa: E402
from relay.policy.engine import evaluate  # noqa: E402
from relay.policy.pack import load_pack  # noqa: E402
from tests import corpora  # noqa: E402

HAM = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
STAFF = {"pasto": ("raul.chaves@pasto.gov.co", ["jorge.benavides@pasto.gov.co", "diana.erazo@pasto.gov.co"]),
         "barrancabermeja": ("laura.pinto@barrancabermeja.gov.co", ["pmu@barrancabermeja.gov.co",
                                                                     "patriciah.fierro@barrancabermeja.gov.co"]),
         "cancilleria": ("luis.fernandez@cancilleria.gov.co", ["maria.lopez@cancilleria.gov.co",
                                                               "pedro.castillo@cancilleria.gov.co"])}
AT = datetime.fromisoformat("2026-11-24T10:00:00-05:00")  # a Tuesday morning: working hours


def baseline(pack_name: str, paths: list[Path]) -> Counter[str]:
    """Rule id -> ham messages it flagged (enforced or monitored), for one pack."""
    pack = load_pack(ROOT / "policies" / f"{pack_name}.yaml")
    directory = load_directory(ROOT.parent / "shared" / "acceptance" / "institutions" / f"{pack_name}.yaml")
    sender, rcpts = STAFF[pack_name]
    envelope = Envelope.build(sender, rcpts, sender, "10.0.0.5")
    flagged: Counter[str] = Counter()
    for path in paths:
        message = parse_message(corpora.raw(path))
        decision = evaluate(Submission(envelope, message), pack, directory, AT)
        for finding in decision.findings + decision.monitored:
            flagged[finding.rule_id] += 1
    return flagged


def main() -> int:
    corpora.fetch()
    for groups in (("easy-ham-1", "easy-ham-2"), ("hard-ham-1",)):
        paths = corpora.messages(corpora.SPAM_ASSASSIN, groups)
        print(f"{'+'.join(groups)}: {len(paths)} messages, sent as staff mail to two colleagues")
        for name in sorted(STAFF):
            flagged = baseline(name, paths)
            print(f"  {name}: " + (", ".join(f"{rule} {n}" for rule, n in flagged.most_common()) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
