"""webmail_impersonation: mail from a consumer webmail account whose display name is one of our
people, one of our service mailboxes, or the institution itself gets a visible warning (subject
tag and a first part in Spanish) and is recorded — or is held for moderation, as the pack chooses.

Circular 005-20 (Barrancabermeja), numeral 1, closes every official account on commercial
platforms, and Pasto's Circular 004 de 2021 forbids personal mailboxes for official business: a
Gmail account wearing a Secretaria's name is by definition not official. Names are compared
without accents, case or order; a citizen who merely shares a first name is not flagged (a match
needs two words of the person's name, one of them a surname).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import ClassVar, Literal

from pydantic import field_validator

from relay.directory import Person, ServiceMailbox
from relay.identity import Direction
from relay.message import fold
from relay.policy.rules.base import Context, RuleBase, render
from relay.policy.verdicts import Action, Finding, Rewrite
from relay.policy.webmail import FREE_MAIL

STOPWORDS = frozenset({"de", "del", "la", "las", "los", "el", "y", "e", "da", "do", "dos", "the", "of", "and",
                       "dr", "dra", "doctor", "doctora", "ing", "lic", "sr", "sra", "srta", "don", "dona"})
OFFICE_WORDS = frozenset({"alcaldia", "alcalde", "alcaldesa", "gobernacion", "gobernador", "secretaria",
                          "secretario", "ministerio", "ministro", "cancilleria", "canciller", "oficina", "despacho",
                          "gobierno", "personeria", "concejo", "contraloria", "distrital", "municipal", "embajada",
                          "consulado", "tesoreria", "hacienda"})
_WORD = re.compile(r"[a-z0-9]+")
# The default list (relay.policy.webmail.FREE_MAIL): the maintained free-mail list plus the one
# list of consumer webmail the rules share.
DEFAULT_BANNER = ("ATENCIÓN: este mensaje llega de una cuenta de correo personal ({address}), no de una cuenta "
                  "institucional, aunque su nombre ({display}) corresponde a {matched}. Las comunicaciones "
                  "oficiales solo se envían desde cuentas institucionales (Circular 005-20). No responda con "
                  "datos personales ni realice pagos; verifique por un canal oficial.")


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(fold(text)) if w not in STOPWORDS and len(w) > 1]


class Config(RuleBase):
    kind: Literal["webmail_impersonation"]
    action: Action = Action.REWRITE
    webmail_domains: tuple[str, ...] = ()  # replaces the maintained list when set
    extra_webmail_domains: tuple[str, ...] = ()  # added to it
    not_webmail_domains: tuple[str, ...] = ()  # taken out of it (an organisation the list calls free mail)
    extra_names: tuple[str, ...] = ()  # offices or titles to protect, e.g. "Secretaría de Salud"
    subject_tag: str = "[ALERTA: POSIBLE SUPLANTACION]"
    banner: str = DEFAULT_BANNER
    moderators: tuple[str, ...] = ()  # with action moderate: who approves
    ADDRESS_FIELDS: ClassVar[tuple[str, ...]] = ("moderators",)
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REWRITE, Action.MODERATE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"address", "display", "matched"})
    DEFAULT_REPLY: ClassVar[str] = ("{address} usa el nombre de {matched} desde una cuenta de correo personal "
                                    "(posible suplantacion)")
    DEFAULT_DIRECTIONS: ClassVar[tuple[Direction, ...]] = (Direction.INBOUND,)

    @field_validator("webmail_domains", "extra_webmail_domains", "not_webmail_domains")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.casefold().strip().rstrip(".") for d in value)

    @property
    def free_mail(self) -> frozenset[str]:
        return _free_mail(self.webmail_domains, self.extra_webmail_domains, self.not_webmail_domains)

    @field_validator("subject_tag")
    @classmethod
    def _ascii(cls, value: str) -> str:
        if not value.isascii() or "\n" in value or "\r" in value:
            raise ValueError("the subject tag must be one line of ASCII (it goes into a header)")
        return value


@lru_cache(maxsize=64)
def _free_mail(replace: tuple[str, ...], extra: tuple[str, ...], remove: tuple[str, ...]) -> frozenset[str]:
    return ((frozenset(replace) if replace else FREE_MAIL) | frozenset(extra)) - frozenset(remove)


def matches(display: str, ctx: Context, extra: tuple[str, ...]) -> str | None:
    """What of ours the display name claims to be (a description for people), or None."""
    said = set(words(display))
    if not said:
        return None
    for entry in ctx.directory.all_entries():
        if isinstance(entry, Person) and entry.name:
            name = words(entry.name)
            surnames = set(name[-2:]) if len(name) >= 3 else set(name[-1:])
            if len(said) >= 2 and said <= set(name) and said & surnames:
                return f"{entry.name} <{entry.address}>"
        elif isinstance(entry, ServiceMailbox):
            box = set(words(entry.address.partition("@")[0].replace(".", " ").replace("_", " ").replace("-", " ")))
            if len(box) >= 2 and box <= said:
                return f"el buzón {entry.address}"
    for office in extra:
        wanted = set(words(office))
        if wanted and wanted <= said:
            return office
    for domain in ctx.directory.domains:
        label = fold(domain.split(".")[0])
        if label in said and (label in OFFICE_WORDS or said & OFFICE_WORDS):
            return ctx.directory.name or domain
    return None


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    for sender in ctx.submission.message.from_:
        domain = sender.addr.rpartition("@")[2].casefold()
        if domain not in rule.free_mail or not sender.display_name:
            continue
        matched = matches(sender.display_name, ctx, rule.extra_names)
        if matched is None:
            continue
        values = {"address": sender.addr, "display": sender.display_name[:100], "matched": matched}
        rewrite = Rewrite(banner=render(rule.banner, values), subject_tag=rule.subject_tag)
        yield rule.finding(ctx, values, rewrite=rewrite if rule.action is Action.REWRITE else None,
                           moderators=rule.moderators, detail={"address": sender.addr, "matched": matched})
        return
