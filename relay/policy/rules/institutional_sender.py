"""institutional_sender: staff mail leaves only from the institution's own domains.

Circular 005-20 (Barrancabermeja), numeral 1: the only official channel is the institutional
domain; accounts on gmail.com, hotmail.com, yahoo.com "o similares" are forbidden. Pasto's
Circular 004 de 2021 says the same of personal mailboxes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import field_validator

from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Finding

WEBMAIL = (
    "gmail.com", "googlemail.com", "hotmail.com", "hotmail.es", "outlook.com", "outlook.es",
    "live.com", "msn.com", "yahoo.com", "yahoo.es", "yahoo.com.co", "ymail.com", "icloud.com",
    "me.com", "aol.com", "protonmail.com", "proton.me", "gmx.com", "zoho.com", "mail.com",
)


class Config(RuleBase):
    kind: Literal["institutional_sender"]
    action: Action = Action.REJECT
    webmail_domains: tuple[str, ...] = WEBMAIL
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT, Action.MODERATE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"address", "problem"})
    DEFAULT_REPLY: ClassVar[str] = "{address}: el correo oficial solo se envia desde cuentas institucionales"

    @field_validator("webmail_domains")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.casefold().strip() for d in value)


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    message = ctx.submission.message
    if message.from_error:
        yield rule.finding(ctx, {"address": "From", "problem": message.from_error},
                           detail={"problem": message.from_error})
        return
    for address in ctx.sender_addresses:
        if ctx.directory.is_local(address):
            continue
        domain = address.rpartition("@")[2]
        problem = "cuenta personal de correo comercial" if domain in rule.webmail_domains else "dominio externo"
        yield rule.finding(ctx, {"address": address, "problem": problem},
                           envelope_only=address == ctx.submission.envelope.mail_from.casefold(),
                           detail={"address": address, "webmail": domain in rule.webmail_domains})
        return
