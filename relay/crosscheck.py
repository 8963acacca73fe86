"""A pack against the directory it runs with: the roles and addresses its rules name exist, the
directory's lists are in the institution's domains, and the pack's own `examples:` still hold.

Each rule kind declares which of its fields name roles (`ROLE_FIELDS`) and which name addresses
(`ADDRESS_FIELDS`, relay/policy/rules/base.py), so a new kind needs no edit here. Only values the
pack sets are checked (a kind's defaults are not the pack author's typo). Problems read
'file:line: field: problem (fix)', as every other configuration error (relay/yamlconf.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from relay import yamlconf
from relay.directory import Directory, MailingList, address_key
from relay.policy.pack import Example, Pack


def _values(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _close(word: str, known: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return found[0] if found else None


class _Where:
    """'file:line: field' for a location in one YAML file (read once)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        try:
            _, self.node = yamlconf.read_yaml(path)
        except yamlconf.ConfigError:
            self.node = None

    def __call__(self, loc: Sequence[int | str]) -> str:
        line = yamlconf.line_at(self.node, loc)
        field = yamlconf.field_path(loc)
        return f"{self.path}:{line}: {field}" if line else f"{self.path}: {field}"


def directory_roles(directory: Directory) -> set[str]:
    """Every role someone (a person or a service mailbox) holds in the directory."""
    return {role for entry in directory.all_entries() if not isinstance(entry, MailingList)
            for role in entry.roles}


def cross_check(pack: Pack, pack_path: str | Path, directory: Directory,
                directory_path: str | Path | None = None) -> list[str]:
    """Every way the pack names something the directory does not have; [] when it all fits."""
    where = _Where(pack_path)
    roles = directory_roles(directory)
    entries = {address_key(e.address): e for e in directory.all_entries()}
    domains = ", ".join(sorted(directory.domains))
    problems: list[str] = []
    for index, rule in enumerate(pack.rules):
        for name in rule.ROLE_FIELDS:
            if name not in rule.model_fields_set:
                continue
            for j, role in enumerate(_values(getattr(rule, name))):
                if role in roles:
                    continue
                close = _close(role, roles)
                fix = (f"did you mean '{close}'?" if close else
                       f"roles in the directory: {', '.join(sorted(roles)) or 'none'}")
                loc: list[int | str] = ["rules", index, name, j]
                problems.append(f"{where(loc)}: no one in the directory has the role {role!r} ({fix})")
        for name in rule.ADDRESS_FIELDS:
            if name not in rule.model_fields_set:
                continue
            raw = getattr(rule, name)
            for j, address in enumerate(_values(raw)):
                if address_key(address) in entries:
                    continue
                loc = ["rules", index, name] + ([] if isinstance(raw, str) else [j])
                if directory.is_local(address):
                    close = _close(address_key(address), entries)
                    fix = f"did you mean '{close}'?" if close else "add it to the directory, or fix the address"
                    problems.append(f"{where(loc)}: {address} is not in the directory ({fix})")
                else:
                    problems.append(f"{where(loc)}: {address} is not an address of the institution "
                                    f"({domains}); name a mailbox the directory lists")
    problems.extend(list_problems(directory, directory_path))
    return problems


def list_problems(directory: Directory, directory_path: str | Path | None = None) -> list[str]:
    """Mailing lists must be in one of the institution's domains (a list elsewhere is not ours to
    count as internal mass mail)."""
    where = _Where(directory_path) if directory_path is not None else None
    domains = ", ".join(sorted(directory.domains))
    problems = []
    lists = [e for e in directory.all_entries() if isinstance(e, MailingList)]
    for index, entry in enumerate(lists):
        if directory.is_local(entry.address):
            continue
        text = (f"{entry.address} is not in the institution's domains ({domains}); "
                "add its domain to domains:, or remove the list")
        problems.append(f"{where(['lists', index, 'address'])}: {text}" if where else f"directory: lists: {text}")
    return problems


def run_example(example: Example, pack: Pack, directory: Directory) -> list[str]:
    """How one of the pack's examples differs from what it declares ([] when it holds)."""
    from relay.addresses import AddressError
    from relay.message import Envelope, Submission, parse_message
    from relay.policy.engine import evaluate

    env = example.envelope
    try:
        envelope = Envelope.build(env.mail_from, env.rcpt_to, env.auth, env.client_ip)
    except AddressError as error:
        return [f"bad envelope address: {error}"]
    raw = example.message.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    decision = evaluate(Submission(envelope, parse_message(raw)), pack, directory, example.at)
    fired = {f.rule_id for f in decision.findings}
    found = []
    if decision.verdict.value != example.expect.verdict:
        found.append(f"verdict {decision.verdict.value}, expected {example.expect.verdict}"
                     + (f" (rules fired: {', '.join(sorted(fired))})" if fired else " (no rule fired)"))
    found.extend(f"rule {rule} did not fire" for rule in example.expect.rules if rule not in fired)
    found.extend(f"rule {rule} fired" for rule in example.expect.not_rules if rule in fired)
    return found


def check_examples(pack: Pack, pack_path: str | Path, directory: Directory) -> list[str]:
    """Run every example of the pack against the directory: one problem line per failing example."""
    where = _Where(pack_path)
    problems = []
    for index, example in enumerate(pack.examples):
        found = run_example(example, pack, directory)
        if found:
            problems.append(f"{where(['examples', index])}: example {example.name!r}: " + "; ".join(found)
                            + " (fix the rule or the example; `relay check` shows the whole decision)")
    return problems
