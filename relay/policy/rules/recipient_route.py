"""recipient_route: recipients written as source routes are refused at RCPT time.

`victim%evil.test@inst` (the percent hack), `evil.test!victim@inst` (a UUCP bang path) and
`"victim@evil.test"@inst` (a quoted local part with an '@') are mailboxes of ours on paper, but
Postfix's defaults (`swap_bangpath = yes`, `allow_percent_hack = yes`, and its rewriting of a
quoted '@') turn them into the outside address behind the relay: an open relay through the back
door (RFC 5321 §3.6.1 and §4.1.1.3 retire source routes). Guards the same reputation as the open
relay rule (the institution on spammers' blacklists).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from relay.identity import Direction
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Finding


class Config(RuleBase):
    kind: Literal["recipient_route"]
    action: Action = Action.REJECT
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT})
    DEFAULT_DIRECTIONS: ClassVar[tuple[Direction, ...]] = (Direction.STAFF, Direction.INBOUND, Direction.RELAY)
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"address"})
    DEFAULT_REPLY: ClassVar[str] = ("{address}: direccion con enrutamiento (%, ! o @ entre comillas) no permitida; "
                                    "source-routed recipient not accepted")
    ENVELOPE_RULE: ClassVar[bool] = True
    REPLY_CODE: ClassVar[tuple[int, str] | None] = (553, "5.1.3")  # RFC 3463: bad destination syntax


def routed(address: str) -> bool:
    """Whether an envelope address (as parsed: quotes removed) carries a route in its local part."""
    local = address.rpartition("@")[0]
    return any(c in local for c in "%!@")


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    for rcpt in ctx.recipients:
        if routed(rcpt):
            yield rule.finding(ctx, {"address": rcpt[:120]}, recipients=[rcpt], envelope_only=True,
                               detail={"address": rcpt})
