"""broadcasters: only authorised people or mailboxes send mass mail.

Circular 005-20 (Barrancabermeja), numeral 3: only Secretarios de Despacho and Jefes de Oficinas
Asesoras broadcast, and only internally ("mucho menos Externas hacia la comunidad"). Pasto's
Circular 004 de 2021: mass mail to staff goes out only from intranet@pasto.gov.co (Oficina de
Comunicación Social); other offices send the request form COM_F_004 instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import field_validator, model_validator

from relay.directory import address_key
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Finding
from relay.when import plural


class Config(RuleBase):
    kind: Literal["broadcasters"]
    action: Action = Action.REJECT
    allowed_roles: tuple[str, ...] = ()
    allowed_senders: tuple[str, ...] = ()
    moderators: tuple[str, ...] = ()
    # Mass mail to more outside recipients than the threshold is refused even from authorised senders.
    internal_only: bool = False
    ROLE_FIELDS: ClassVar[tuple[str, ...]] = ("allowed_roles",)
    ADDRESS_FIELDS: ClassVar[tuple[str, ...]] = ("allowed_senders", "moderators")
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT, Action.MODERATE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"allowed", "lists", "count", "addressed"})
    DEFAULT_REPLY: ClassVar[str] = "Solo {allowed} pueden enviar correos masivos"
    ENVELOPE_RULE: ClassVar[bool] = True

    @field_validator("allowed_senders", "moderators")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if "@" not in address:
                raise ValueError(f"{address!r} is not an e-mail address")
        return tuple(address_key(a) for a in value)

    @model_validator(mode="after")
    def _moderated(self) -> Config:
        if self.action is Action.MODERATE and not self.moderators:
            raise ValueError("action 'moderate' needs moderators: list who approves (e.g. the communications office)")
        return self


def _authorised(rule: Config, ctx: Context) -> bool:
    if any(a in rule.allowed_senders for a in ctx.sender_addresses[:1]):
        # the envelope sender (or From if null) must be the authorised mailbox, and the
        # send_as rule makes sure the login may use it
        return True
    return bool(ctx.sender_roles & set(rule.allowed_roles))


def _addressed(ctx: Context, language: str) -> str:
    """Why the message counts as mass mail, in words: the list(s) it went to, or how many people
    ("la lista masiva todos@…", "30 destinatarios"; never "1 destinatarios")."""
    lists = list(ctx.list_recipients)
    if lists:
        if language == "en":
            return ("the mass list " if len(lists) == 1 else "the mass lists ") + ", ".join(lists)
        return ("la lista masiva " if len(lists) == 1 else "las listas masivas ") + ", ".join(lists)
    n = len(ctx.recipients)
    return plural(n, "recipient", "recipients") if language == "en" else plural(n, "destinatario", "destinatarios")


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    if not ctx.is_mass:
        return
    values = {
        "allowed": ", ".join(list(rule.allowed_senders) + list(rule.allowed_roles)) or "nadie",
        "lists": ", ".join(ctx.list_recipients) or "-",
        "count": str(len(ctx.recipients)),
        "addressed": _addressed(ctx, "es"),
    }
    values_en = {"addressed": _addressed(ctx, "en")}
    if not _authorised(rule, ctx):
        # A mailing list among the recipients is decidable at RCPT time; a count over the threshold
        # is not (refusing only the 26th recipient would let the first 25 through).
        yield rule.finding(ctx, values, moderators=rule.moderators, envelope_only=bool(ctx.list_recipients),
                           detail={"roles": sorted(ctx.sender_roles)}, values_en=values_en)
        return
    outside = [r for r in ctx.recipients if not ctx.directory.is_local(r)]
    if rule.internal_only and len(outside) > ctx.pack.mass_threshold:
        yield rule.finding(ctx, values, action=Action.REJECT,
                           detail={"outside": len(outside)}, values_en=values_en)
