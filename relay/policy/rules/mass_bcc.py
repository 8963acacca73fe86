"""mass_bcc: a mass mailing never shows its list or its recipients in To/Cc.

Circular 005-20 (Barrancabermeja), numeral 3a: the list "DEBERÁ ir en el campo CCO o correo
oculto" to avoid reply-all storms and to keep the list confidential. The pack may choose to fix
the message (drop the exposed addresses from the headers) instead of refusing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from relay.directory import MailingList, address_key
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Finding, Rewrite


class Config(RuleBase):
    kind: Literal["mass_bcc"]
    action: Action = Action.REJECT
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset(
        {Action.REJECT, Action.MODERATE, Action.REWRITE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"exposed", "count"})
    DEFAULT_REPLY: ClassVar[str] = "Las listas y envios masivos van en CCO (copia oculta)"


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    visible = {address_key(a): a for a in ctx.submission.message.visible}
    for own in ctx.own_addresses:
        visible.pop(own, None)
    lists = [a for k, a in visible.items() if isinstance(ctx.directory.find(k), MailingList)]
    too_many = ctx.is_mass and len(visible) > ctx.pack.mass_threshold
    if not lists and not too_many:
        return
    exposed = list(visible.values()) if too_many else lists
    shown = ", ".join(exposed[:5]) + (f" (+{len(exposed) - 5})" if len(exposed) > 5 else "")
    unreadable = [d for d in ctx.submission.message.defects if d.startswith(("To:", "Cc:"))]
    if rule.action is Action.REWRITE and unreadable:
        # A header we cannot parse cannot be rewritten without losing addresses: refuse instead.
        yield rule.finding(ctx, {"exposed": shown, "count": str(len(visible))}, action=Action.REJECT,
                           detail={"lists": lists, "visible": len(visible), "unparsed": unreadable[:3]})
        return
    yield rule.finding(
        ctx, {"exposed": shown, "count": str(len(visible))},
        rewrite=Rewrite(hide=frozenset(address_key(a) for a in exposed)),
        detail={"lists": lists, "visible": len(visible)},
    )
