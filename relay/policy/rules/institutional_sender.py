"""institutional_sender: staff mail leaves only from the institution's own domains.

Circular 005-20 (Barrancabermeja), numeral 1: the only official channel is the institutional
domain; accounts on gmail.com, hotmail.com, yahoo.com "o similares" are forbidden. Pasto's
Circular 004 de 2021 says the same of personal mailboxes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import field_validator

from relay.directory import address_key
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Finding
from relay.policy.webmail import CONSUMER_WEBMAIL

WEBMAIL = CONSUMER_WEBMAIL  # relay.policy.webmail: the one list


class Config(RuleBase):
    kind: Literal["institutional_sender"]
    action: Action = Action.REJECT
    webmail_domains: tuple[str, ...] = WEBMAIL
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT, Action.MODERATE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"address", "problem"})
    DEFAULT_REPLY: ClassVar[str] = "{address}: el correo oficial solo se envia desde cuentas institucionales"
    ENVELOPE_RULE: ClassVar[bool] = True

    @field_validator("webmail_domains")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.casefold().strip() for d in value)


def _finding(rule: Config, ctx: Context, address: str) -> Finding:
    domain = address.rpartition("@")[2]
    problem = "cuenta personal de correo comercial" if domain in rule.webmail_domains else "dominio externo"
    return rule.finding(ctx, {"address": address, "problem": problem},
                        envelope_only=address == address_key(ctx.submission.envelope.mail_from),
                        detail={"address": address, "webmail": domain in rule.webmail_domains})


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    if ctx.system_generated:  # a DSN or an auto-reply from a trusted host: see Context
        return
    # The envelope sender first: it alone decides at RCPT time, before any header is seen.
    envelope_sender = ctx.submission.envelope.mail_from
    if envelope_sender and not ctx.directory.is_local(envelope_sender):
        yield _finding(rule, ctx, address_key(envelope_sender))
        return
    message = ctx.submission.message
    if message.from_error:
        yield rule.finding(ctx, {"address": "From", "problem": message.from_error},
                           detail={"problem": message.from_error})
        return
    for address in ctx.sender_addresses:
        if not ctx.directory.is_local(address):
            yield _finding(rule, ctx, address)
            return
