"""social_signup: social-network accounts belong to service mailboxes, never personal ones.

Circular 004 de 2024 (Bogotá), numerals 1-2: institutional social-network accounts are tied only
to service mailboxes, never to `nombre.apellido@` ones; numeral 4: keep an inventory. A sign-up,
confirmation or verification message from a network is delivered either way; to a personal
mailbox the security mailbox is alerted; every such account is recorded for the inventory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from functools import cached_property
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from relay.directory import Person, ServiceMailbox, address_key
from relay.identity import Direction
from relay.message import ParsedMessage
from relay.notices import mask_codes
from relay.policy.lexicon import Lexicon, check_extra, check_groups, group_scores, merged
from relay.policy.rules.base import Context, RuleBase, Texts, render
from relay.policy.verdicts import Action, Explanation, Finding, Notice, Record

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
    "Pinterest": ("pinterest.com",),
    "Snapchat": ("snapchat.com",),
    "Telegram": ("telegram.org",),
    # the circular's list ends "entre otras": the other networks people open accounts on
    "Reddit": ("reddit.com", "redditmail.com"),
    "Discord": ("discord.com", "discordapp.com"),
    "Kwai": ("kwai.com",),
    "Twitch": ("twitch.tv",),
    "Tumblr": ("tumblr.com",),
    "Bluesky": ("bsky.app", "bsky.social"),
    "Mastodon": ("mastodon.social",),
    "Vimeo": ("vimeo.com",),
}
# What makes a message from a network about an account being created, confirmed or verified —
# the moment a mailbox becomes tied to an account (numerals 1-2) ...
# Account providers that create a network's accounts (a YouTube channel is a Google account): their
# mail counts for the network when its text names the network.
ACCOUNT_PROVIDERS: dict[str, tuple[str, ...]] = {"YouTube": ("accounts.google.com",)}
SIGNUP: dict[str, float] = {
    "confirma cuenta": 3, "confirma correo": 3, "confirma email": 3, "confirma dirección": 3,
    "confirmación de cuenta": 3, "confirmación de correo": 3, "verifica cuenta": 3, "verifica correo": 3,
    "verifica email": 3, "verifica dirección": 3, "verificación de cuenta": 3, "código de verificación": 3,
    "código de confirmación": 3, "código de seguridad": 2.5, "código de acceso": 2, "código de inicio de sesión": 3,
    "es tu código": 3, "tu código": 2.5, "usa este código": 2, "ingresa este código": 2,
    "introduce este código": 2, "crear cuenta": 2.5, "creaste cuenta": 3, "cuenta nueva": 2, "nueva cuenta": 2,
    "activa cuenta": 3, "activar cuenta": 3, "completa registro": 3, "te registraste": 3, "registro": 1.5,
    "bienvenido a": 1.5, "bienvenida a": 1.5, "termina de configurar": 2, "restablecer contraseña": 1,
    r"re:\b\d{4,8}\b": 0.5,  # a code
    "=verify your account": 3, "=your code": 2.5, "=confirm your email": 3,
    "=confirm your email address": 3, "=verify your email": 3,
    "=verification code": 3, "=confirmation code": 3, "=security code": 2.5, "=confirm your account": 3,
    "=activate your account": 3, "=is your": 1, "=welcome to": 1.5, "=sign up": 2, "=signed up": 2,
    "=new account": 2, "=create your account": 2.5, "=finish setting up": 2, "=get started": 1,
    "=reset your password": 1, "=login code": 3, "=one-time code": 3,
}
# ... against what the same networks send every day to an existing account (not a new tie).
ROUTINE: dict[str, float] = {
    "te etiquetó": 3, "comentó": 2, "le gusta": 2.5, "me gusta": 2, "reaccionó": 2.5, "compartió": 2,
    "nuevos seguidores": 3, "te sigue": 2.5, "empezó a seguirte": 3, "personas que quizás conozcas": 3,
    "solicitud de amistad": 2.5, "invitación para conectar": 2.5, "quiere conectar": 2.5, "cumpleaños": 2,
    "=recuerdos": 2, "en vivo": 2, "tendencias": 2, "resumen": 2, "boletín": 2, "novedades": 1.5,
    "=empleo": 2.5, "=empleos": 2.5, "vacante": 2.5, "alerta de empleo": 3, "ofertas de trabajo": 3, "mensaje nuevo": 2,
    "nuevo mensaje": 2, "te mencionó": 3, "publicac*": 1, "vieron tu perfil": 3, "visto tu perfil": 3,
    "inicio de sesión nuevo": 2, "nuevo inicio de sesión": 2, "te invitó": 2, "te ha invitado": 2,
    "=invited you": 2, "alerta de seguridad": 2.5, "=security alert": 2.5, "actividad sospechosa": 2,
    "prueba gratis": 3, "meses gratis": 3, "=premium": 2, "suscripción": 1.5, "=oferta": 2, "=free trial": 3,
    "=precio": 1.5, r"re:\$\s?\d": 1.5,
    "=tagged you": 3, "=commented": 2.5, "=liked": 2.5, "=new followers": 3, "=mentioned you": 3,
    "=people you may know": 3, "=newsletter": 3, "=digest": 3, "=jobs": 3, "=job alert": 3,
    "=weekly": 1.5, "=trending": 2, "=new message": 2, "=viewed your profile": 3, "=connect with": 1.5,
}
GROUPS = ("signup", "routine")


class Config(RuleBase):
    kind: Literal["social_signup"]
    action: Action = Action.NOTIFY
    networks: dict[str, tuple[str, ...]] = Field(default_factory=lambda: dict(NETWORKS))
    account_providers: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: dict(ACCOUNT_PROVIDERS),
        description="network -> sender domains that count for it when the text names the network")
    signup: dict[str, float] = Field(default_factory=lambda: dict(SIGNUP),
                                     description="account creation, confirmation, verification")
    routine: dict[str, float] = Field(default_factory=lambda: dict(ROUTINE),
                                      description="digests, likes, newsletters, job alerts")
    extra_terms: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="{signup|routine: {term: weight}}; weight 0 removes")
    threshold: float = Field(default=3.0, gt=0, description="signup - routine needed")
    subject_weight: float = Field(default=2.0, ge=1)
    alert_to: tuple[str, ...] = Field(min_length=1)
    alert: Texts
    alert_subject: str = "Alerta: cuenta de {network} asociada a un buzón personal ({account})"
    # Addresses not in the directory that look personal (nombre.apellido@) count as personal.
    personal_pattern: str = r"^[^\W\d_]+\.[^\W\d_]+@"
    ADDRESS_FIELDS: ClassVar[tuple[str, ...]] = ("alert_to",)
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.NOTIFY})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"network", "account"})
    DEFAULT_DIRECTIONS: ClassVar[tuple[Direction, ...]] = (Direction.INBOUND,)
    DEFAULT_REPLY: ClassVar[str] = "Cuenta de {network} asociada a {account}"

    @field_validator("signup", "routine")
    @classmethod
    def _terms(cls, value: dict[str, float]) -> dict[str, float]:
        check_groups({"terms": value})
        return value

    @field_validator("extra_terms")
    @classmethod
    def _extra(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return check_extra(value, GROUPS)

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
        return Lexicon(merged({"signup": self.signup, "routine": self.routine}, self.extra_terms))

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
    message = ctx.submission.message
    for network, domains in rule.account_providers.items():
        name = network.split()[0].casefold()
        if any(a.rpartition("@")[2] in domains for a in ctx.sender_addresses) and (
                re.search(rf"\b{re.escape(name)}\b", message.folded_subject + "\n" + message.folded_body)):
            return network
    return None


def _is_personal(rule: Config, ctx: Context, address: str) -> bool:
    entry = ctx.directory.find(address)
    if isinstance(entry, Person):
        return True
    if isinstance(entry, ServiceMailbox) or entry is not None:
        return False
    return re.search(rule.personal_pattern, address, re.IGNORECASE) is not None


def judge(rule: Config, message: ParsedMessage) -> tuple[bool, Explanation]:
    """Whether a network's message is about creating, confirming or verifying an account, and why."""
    evidence = rule.lexicon.hits_message(message, rule.subject_weight)
    scores = group_scores(evidence)
    signup, routine = scores.get("signup", 0.0), scores.get("routine", 0.0)
    net = round(signup - routine, 3)
    hit = net >= rule.threshold
    why = (f"account sign-up/verification: signup {signup:g} - routine {routine:g} >= {rule.threshold:g}" if hit
           else f"routine network mail: signup {signup:g} - routine {routine:g} < {rule.threshold:g}")
    return hit, Explanation(why, (("signup", signup), ("routine", routine)), (("signup", rule.threshold),), evidence)


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    network = _network(rule, ctx)
    if network is None:
        return
    message = ctx.submission.message
    hit, why = judge(rule, message)
    if not hit:
        return
    for account in (r for r in ctx.recipients if ctx.directory.is_local(r)):
        personal = _is_personal(rule, ctx, account)
        # the platform's one-time code (often in the subject) never goes into the alert or the inventory
        values = {**ctx.base_vars(rule), "network": network, "account": account,
                  "subject": mask_codes(message.subject[:200])}
        record = Record("social-account", (
            ("network", network), ("account", account.casefold()),
            ("mailbox_type", "personal" if personal else "service"),
            ("seen_at", ctx.now.isoformat()), ("sender", ctx.sender_display),
            ("subject", mask_codes(message.subject[:200])),
        ))
        notices = tuple(
            Notice(to, "alert", render(rule.alert_subject, values), render(rule.alert.es, values), (rule.id,))
            for to in rule.alert_to
        ) if personal else ()
        finding = rule.finding(ctx, {"network": network, "account": account},
                               action=Action.NOTIFY if personal else Action.RECORD, recipients=[account],
                               notices=notices, records=(record,),
                               detail={"network": network, "personal": personal})
        yield replace(finding, why=why)


def explain(rule: Config, message: ParsedMessage) -> Explanation:
    """The judgement of the text alone, fired or not (for `relay check`: why a rule did not fire)."""
    return judge(rule, message)[1]
