"""social_signup: social-network accounts belong to service mailboxes, never personal ones.

Circular 004 de 2024 (Bogotá), numerals 1-2: institutional social-network accounts are tied only
to service mailboxes, never to `nombre.apellido@` ones; numeral 4: keep an inventory. A sign-up,
confirmation or verification message from a network is delivered either way; to a personal
mailbox the security mailbox is alerted; every such account is recorded for the inventory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from relay.directory import Person, ServiceMailbox, address_key
from relay.identity import Direction
from relay.policy.lexicon import Lexicon
from relay.policy.rules.base import Context, RuleBase, Texts, check_terms, render
from relay.policy.verdicts import Action, Finding, Notice, Record

NETWORKS: dict[str, tuple[str, ...]] = {
    "Facebook": ("facebookmail.com", "facebook.com"),
    "Instagram": ("mail.instagram.com", "instagram.com"),
    "X (Twitter)": ("x.com", "twitter.com"),
    "LinkedIn": ("linkedin.com",),
    "TikTok": ("tiktok.com",),
    "Flickr": ("flickr.com",),
    "YouTube": ("youtube.com",),
    "Threads": ("threads.net",),
    "WhatsApp": ("whatsapp.com",),
}
SIGNUP_TERMS: dict[str, float] = {
    "codigo de confirmacion": 3, "codigo de verificacion": 3, "confirma* tu cuenta": 3,
    "confirma* tu correo": 3, "verifica* tu cuenta": 3, "crear una cuenta": 2, "creaste una cuenta": 3,
    "bienvenid* a": 1.5, "registr*": 1.5, "confirm your email": 3, "verify your email": 3,
    "verification code": 3, "confirmation code": 3, "confirm your account": 3, "get started": 1,
    "welcome to": 1.5, "sign up": 2, "signed up": 2, "new account": 2, "activate your account": 3,
    "activa tu cuenta": 3, "restablecer tu contrasena": 1, "reset your password": 1,
}


class Config(RuleBase):
    kind: Literal["social_signup"]
    action: Action = Action.NOTIFY
    networks: dict[str, tuple[str, ...]] = Field(default_factory=lambda: dict(NETWORKS))
    terms: dict[str, float] = Field(default_factory=lambda: dict(SIGNUP_TERMS))
    threshold: float = Field(default=3.0, gt=0)
    alert_to: tuple[str, ...] = Field(min_length=1)
    alert: Texts
    alert_subject: str = "Alerta: cuenta de {network} asociada a un buzón personal ({account})"
    # Addresses not in the directory that look personal (nombre.apellido@) count as personal.
    personal_pattern: str = r"^[^\W\d_]+\.[^\W\d_]+@"
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.NOTIFY})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"network", "account"})
    DEFAULT_DIRECTIONS: ClassVar[tuple[Direction, ...]] = (Direction.INBOUND,)
    DEFAULT_REPLY: ClassVar[str] = "Cuenta de {network} asociada a {account}"

    _terms = field_validator("terms")(check_terms)

    @field_validator("alert_to")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(address_key(a) for a in value)

    @field_validator("personal_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"bad regular expression: {error}") from None
        return value

    @cached_property
    def lexicon(self) -> Lexicon:
        return Lexicon(self.terms)

    @cached_property
    def domain_to_network(self) -> dict[str, str]:
        return {d.casefold(): name for name, domains in self.networks.items() for d in domains}


def _network(rule: Config, ctx: Context) -> str | None:
    for address in ctx.sender_addresses:
        domain = address.rpartition("@")[2]
        while domain:
            if domain in rule.domain_to_network:
                return rule.domain_to_network[domain]
            domain = domain.partition(".")[2] if "." in domain else ""
    return None


def _is_personal(rule: Config, ctx: Context, address: str) -> bool:
    entry = ctx.directory.find(address)
    if isinstance(entry, Person):
        return True
    if isinstance(entry, ServiceMailbox) or entry is not None:
        return False
    return re.search(rule.personal_pattern, address, re.IGNORECASE) is not None


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    network = _network(rule, ctx)
    if network is None:
        return
    message = ctx.submission.message
    if rule.lexicon.score(message.folded_subject, message.folded_body, 2.0).score < rule.threshold:
        return
    for account in (r for r in ctx.recipients if ctx.directory.is_local(r)):
        personal = _is_personal(rule, ctx, account)
        values = {**ctx.base_vars(rule), "network": network, "account": account}
        record = Record("social-account", (
            ("network", network), ("account", account.casefold()),
            ("mailbox_type", "personal" if personal else "service"),
            ("seen_at", ctx.now.isoformat()), ("sender", ctx.sender_display),
            ("subject", message.subject[:200]),
        ))
        notices = tuple(
            Notice(to, "alert", render(rule.alert_subject, values), render(rule.alert.es, values), (rule.id,))
            for to in rule.alert_to
        ) if personal else ()
        yield rule.finding(ctx, {"network": network, "account": account},
                           action=Action.NOTIFY if personal else Action.RECORD, recipients=[account],
                           notices=notices, records=(record,),
                           detail={"network": network, "personal": personal})
