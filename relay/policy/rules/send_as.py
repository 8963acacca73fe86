"""send_as: staff send only as themselves or as a service mailbox they are a delegate of.

Circular 005-20 (Barrancabermeja), numerals 1 and 2 (institutional accounts are personal and
assigned; service accounts are requested for a process) and Ley 734 de 2002, art. 34.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from relay.directory import ServiceMailbox, address_key
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Finding


class Config(RuleBase):
    kind: Literal["send_as"]
    action: Action = Action.REJECT
    # Without SMTP AUTH (an internal network vouches for the client) the sender must at least be
    # an address the directory knows; 'any' trusts the network entirely.
    unauthenticated: Literal["known_address", "any"] = "known_address"
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT, Action.MODERATE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"address", "login"})
    DEFAULT_REPLY: ClassVar[str] = "{login} no puede enviar como {address}"
    ENVELOPE_RULE: ClassVar[bool] = True


def _may_send_as(ctx: Context, login: str, address: str) -> bool:
    if address == login:
        return True
    entry = ctx.directory.find(address)
    return isinstance(entry, ServiceMailbox) and login in entry.delegates


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    login = ctx.identity.login
    for address in ctx.sender_addresses:
        if login is not None:
            allowed = _may_send_as(ctx, login, address)
        else:
            allowed = rule.unauthenticated == "any" or ctx.directory.find(address) is not None
        if not allowed:
            yield rule.finding(ctx, {"address": address, "login": login or "(sin autenticar)"},
                               envelope_only=address == address_key(ctx.submission.envelope.mail_from),
                               detail={"address": address, "login": login})
            return
