"""send_as: staff send only as themselves or as a service mailbox they are a delegate of.

Circular 005-20 (Barrancabermeja), numerals 1 and 2 (institutional accounts are personal and
assigned; service accounts are requested for a process) and Ley 734 de 2002, art. 34.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from relay.addresses import AddressError, parse_address_list
from relay.directory import Person, ServiceMailbox, address_key
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
    if isinstance(entry, Person):
        # One's own alias (AD/Exchange `proxyAddresses` smtp: values) is still oneself.
        return entry == ctx.directory.find(login)
    return isinstance(entry, ServiceMailbox) and login in entry.delegates


def _claimed(ctx: Context) -> tuple[list[str], str | None]:
    """Envelope sender, From and Sender (RFC 5322 §3.6.2: the Sender is who actually sent it;
    clients show "on behalf of"), as keys; and what was wrong with a Sender we could not read."""
    claimed = list(ctx.sender_addresses)
    problem = None
    for value in ctx.submission.message.header_all("Sender"):
        try:
            found = parse_address_list(value)
        except AddressError as error:
            problem = f"Sender: {error}"
            continue
        if len(found) != 1:
            problem = "Sender: must name exactly one mailbox (RFC 5322 3.6.2)"
        claimed.extend(address_key(a.addr) for a in found)
    if len(ctx.submission.message.header_all("Sender")) > 1:
        problem = "more than one Sender header"
    return list(dict.fromkeys(claimed)), problem


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    if ctx.system_generated:  # a DSN or an auto-reply from a trusted host: see Context
        return
    login = ctx.identity.login
    claimed, problem = _claimed(ctx)
    if problem:
        yield rule.finding(ctx, {"address": problem, "login": login or "(sin autenticar)"},
                           detail={"problem": problem, "login": login})
        return
    for address in claimed:
        if login is not None:
            allowed = _may_send_as(ctx, login, address)
        else:
            allowed = rule.unauthenticated == "any" or ctx.directory.find(address) is not None
        if not allowed:
            yield rule.finding(ctx, {"address": address, "login": login or "(sin autenticar)"},
                               envelope_only=address == address_key(ctx.submission.envelope.mail_from),
                               detail={"address": address, "login": login})
            return
