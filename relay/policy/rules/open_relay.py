"""open_relay: mail from outside to addresses that are not ours is refused at RCPT time.

Guards the reputation Circular 005-20, numeral 3 worries about (spammer blacklists); RFC 5321 §3.6.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from relay.identity import Direction
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Finding


class Config(RuleBase):
    kind: Literal["open_relay"]
    action: Action = Action.REJECT
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT})
    DEFAULT_DIRECTIONS: ClassVar[tuple[Direction, ...]] = (Direction.INBOUND, Direction.RELAY)
    DEFAULT_REPLY: ClassVar[str] = "Relay no permitido: este servidor solo recibe correo para {institution}"
    ENVELOPE_RULE: ClassVar[bool] = True
    REPLY_CODE: ClassVar[tuple[int, str] | None] = (554, "5.7.1")  # as Postfix's "Relay access denied"


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    foreign = [r for r in ctx.recipients if not ctx.directory.is_local(r)]
    if foreign:
        yield rule.finding(ctx, recipients=foreign, envelope_only=True, detail={"foreign": len(foreign)})
