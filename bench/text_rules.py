#!/usr/bin/env python3
"""Precision, recall and false-positive rate of the text rules on the labelled corpus.

tests/textcorpus/labels.yaml lists each message with its rule kind, label (positive: the rule must
fire; negative: a look-alike it must leave alone), institution and envelope. Every message is
decided by its institution's pack and directory, as `relay check` would, and counts as flagged when
a finding of that rule kind fired.

    .venv/bin/python bench/text_rules.py            # the table
    .venv/bin/python bench/text_rules.py --errors   # also each miss and false alarm, with the reasons
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay.directory import load_directory  # noqa: E402
from relay.message import Envelope, Submission, parse_message  # noqa: E402
from relay.policy.engine import evaluate  # noqa: E402
from relay.policy.pack import load_pack  # noqa: E402

CORPUS = ROOT / "tests" / "textcorpus"
INSTITUTIONS = ROOT.parent / "shared" / "acceptance" / "institutions"
AT = datetime.fromisoformat("2026-11-24T10:00:00-05:00")  # a Tuesday morning: working hours
KINDS = ("sensitive_individual", "commercial", "social_signup", "mailbox_purpose")


@dataclass
class Tally:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def fp_rate(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0


def entries(corpus: Path = CORPUS) -> list[dict[str, Any]]:
    data = yaml.safe_load((corpus / "labels.yaml").read_text(encoding="utf-8")) or []
    return [e for e in data if e.get("rule_kind") in KINDS]


def judge(entry: dict[str, Any], corpus: Path = CORPUS) -> tuple[bool, str]:
    """Whether the entry's rule kind fired on its message, and the explanation line (or why not)."""
    pack = _pack(entry["institution"])
    directory = _directory(entry["institution"])
    envelope = Envelope.build(entry["mail_from"], list(entry["rcpt"]), entry.get("auth"), entry.get("client_ip"))
    message = parse_message((corpus / entry["file"]).read_bytes())
    decision = evaluate(Submission(envelope, message), pack, directory, AT)
    mine = [f for f in decision.findings + decision.monitored if f.kind == entry["rule_kind"]]
    if mine:
        return True, mine[0].why.line() if mine[0].why else mine[0].reason
    return False, _why_not(entry["rule_kind"], pack, message)


def _why_not(kind: str, pack: Any, message: Any) -> str:
    from relay.policy.rules import commercial, mailbox_purpose, sensitive_individual, social_signup

    judges = {"sensitive_individual": lambda r: sensitive_individual.judge(r, message)[1],
              "commercial": lambda r: commercial.judge(r, message)[1],
              "social_signup": lambda r: social_signup.judge(r, message)[1],
              "mailbox_purpose": lambda r: mailbox_purpose.judge(r, message)[1]}
    rule = next((r for r in pack.rules if r.kind == kind), None)
    if rule is None:
        return f"the pack has no {kind} rule"
    return "not fired: " + judges[kind](rule).line()


_PACKS: dict[str, Any] = {}
_DIRS: dict[str, Any] = {}


def _pack(name: str) -> Any:
    if name not in _PACKS:
        _PACKS[name] = load_pack(ROOT / "policies" / f"{name}.yaml")
    return _PACKS[name]


def _directory(name: str) -> Any:
    if name not in _DIRS:
        _DIRS[name] = load_directory(INSTITUTIONS / f"{name}.yaml")
    return _DIRS[name]


def measure(corpus: Path = CORPUS, errors: bool = False) -> dict[str, Tally]:
    tallies = {kind: Tally() for kind in KINDS}
    for entry in entries(corpus):
        fired, why = judge(entry, corpus)
        tally = tallies[entry["rule_kind"]]
        positive = entry["label"] == "positive"
        if positive and fired:
            tally.tp += 1
        elif positive:
            tally.fn += 1
        elif fired:
            tally.fp += 1
        else:
            tally.tn += 1
        if errors and fired != positive:
            print(f"{'MISS' if positive else 'FALSE ALARM'} {entry['file']}: {why}")
    return tallies


def table(tallies: dict[str, Tally]) -> str:
    lines = ["| rule kind | positives | negatives | precision | recall | false positives |",
             "|---|---:|---:|---:|---:|---:|"]
    for kind, t in tallies.items():
        lines.append(f"| {kind} | {t.tp + t.fn} | {t.fp + t.tn} | {t.precision:.3f} | {t.recall:.3f} | "
                     f"{t.fp_rate:.1%} ({t.fp}) |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", action="store_true", help="print each miss and false alarm with its reasons")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    print(table(measure(args.corpus, args.errors)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
