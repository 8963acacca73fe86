"""The text rules' judgement of a message on its own, fired or not: for `relay check` and the
moderator's view (why a rule did or did not take the text for what it looks for)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from relay.message import ParsedMessage
from relay.policy.verdicts import Explanation

TEXT_KINDS = ("sensitive_individual", "commercial", "social_signup", "mailbox_purpose")


def explain(rule: Any, message: ParsedMessage) -> Explanation | None:
    """The explanation of a text rule (a RuleBase of one of TEXT_KINDS) on a message; None for
    other kinds."""
    if getattr(rule, "kind", None) not in TEXT_KINDS:
        return None
    why: Explanation = import_module(f"relay.policy.rules.{rule.kind}").explain(rule, message)
    return why


def explain_rules(pack: Any, rule_ids: tuple[str, ...] | list[str], message: ParsedMessage) -> dict[str, Explanation]:
    """Explanations, by rule id, of the text rules among `rule_ids`."""
    out: dict[str, Explanation] = {}
    for rule in pack.rules:
        if rule.id in rule_ids and (why := explain(rule, message)) is not None:
            out[rule.id] = why
    return out
