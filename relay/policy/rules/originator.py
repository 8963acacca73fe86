"""originator: mail from outside whose originator fields RFC 5322 §3.6.2 forbids.

RFC 5322 §3.6.2: a message has exactly one From; if the From names more than one mailbox, a
Sender naming exactly one MUST be present; a From is a mailbox-list (§3.6.2 grammar), so group
syntax (`Equipo: a@x, b@y;`) is not a From either. Such a message cannot say who wrote it, so
staff and lists would read a sender nobody is accountable for (the circulars' "único medio
oficial" rests on knowing who sent a message). Two From headers and the CVE-2023-27043 shape
are refused by the engine itself (`ambiguous-from`); this rule covers the rest, per pack.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from relay.addresses import AddressError, is_group, parse_address_list
from relay.identity import Direction
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Finding


class Config(RuleBase):
    kind: Literal["originator"]
    action: Action = Action.REJECT
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT, Action.MODERATE, Action.RECORD})
    DEFAULT_DIRECTIONS: ClassVar[tuple[Direction, ...]] = (Direction.INBOUND,)
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"problem"})
    DEFAULT_REPLY: ClassVar[str] = "Remitente invalido segun RFC 5322 3.6.2 ({problem})"
    REPLY_CODE: ClassVar[tuple[int, str] | None] = (550, "5.6.0")


def problem(ctx: Context) -> str | None:
    """What is wrong with the message's originator fields, or None."""
    message = ctx.submission.message
    froms = message.header_all("From")
    if not froms:
        return "sin encabezado From / no From header"
    if len(froms) > 1:
        return None  # the engine's ambiguous-from refusal
    if is_group(froms[0]):
        return "From con sintaxis de grupo / group syntax in From"
    if message.from_error:
        return None if message.from_error.startswith("malformed") else message.from_error
    senders = message.header_all("Sender")
    if len(message.from_) > 1:
        if not senders:
            return "From con varios buzones y sin Sender / several From mailboxes and no Sender"
        try:
            if len(senders) != 1 or len(parse_address_list(senders[0])) != 1:
                return "Sender debe nombrar un solo buzon / Sender must name one mailbox"
        except AddressError:
            return "Sender ilegible / unreadable Sender"
    return None


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    if ctx.delivery_report:  # an MTA wrote it (some omit From): refusing it loses the report
        return
    found = problem(ctx)
    if found:
        yield rule.finding(ctx, {"problem": found}, detail={"problem": found})
