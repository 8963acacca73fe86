"""Shared helpers for tests: paths and a one-call decide()."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

from relay.directory import FileDirectory, load_directory
from relay.message import Envelope, Submission, parse_message
from relay.policy.engine import evaluate
from relay.policy.pack import Pack, load_pack
from relay.policy.verdicts import Decision

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
INSTITUTIONS = SHARED / "acceptance" / "institutions"
POLICIES = ROOT / "policies"
PACK_NAMES = ("barrancabermeja", "pasto", "bogota", "cancilleria")


@lru_cache
def pack(name: str) -> Pack:
    return load_pack(POLICIES / f"{name}.yaml")


@lru_cache
def directory(name: str) -> FileDirectory:
    return load_directory(INSTITUTIONS / f"{name}.yaml")


def to_bytes(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def decide(name: str, message: str, *, mail_from: str, rcpt: list[str], auth: str | None = None,
           client_ip: str | None = None, at: str = "2026-11-24T10:00:00-05:00",
           the_pack: Pack | None = None) -> Decision:
    """Evaluate one message with an institution's pack and directory."""
    envelope = Envelope.build(mail_from, rcpt, auth, client_ip)
    return evaluate(Submission(envelope, parse_message(to_bytes(message))), the_pack or pack(name),
                    directory(name), datetime.fromisoformat(at))


def fired(decision: Decision) -> list[str]:
    return [f.rule_id for f in decision.findings]
