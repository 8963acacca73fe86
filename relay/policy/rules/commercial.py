"""commercial: advertising or commercial offers need approval before they go out.

Circular 004 de 2021 (Pasto): institutional mail is not for "publicidad exterior o información
comercial sin consentimiento del Despacho del Alcalde o la Oficina de Comunicación Social" — so the
default is moderation by those offices, who may approve. Procurement language ('oferta' in a
tender) is neutralised so public contracting mail is not caught.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from relay.directory import address_key
from relay.policy.lexicon import Lexicon
from relay.policy.rules.base import Context, RuleBase, check_terms
from relay.policy.verdicts import Action, Finding

TERMS: dict[str, float] = {
    "promocion*": 2, "oferta*": 1.5, "descuento*": 1.5, r"re:\d+\s*%\s*(de\s+)?(dcto|descuento)": 1.5,
    "por tiempo limitado": 2.5, "compre": 2, "compren": 2, "compra ya": 2, "aproveche*": 2, "precio*": 1,
    "precios especiales": 1.5, "cotiza*": 1.5, "venta*": 1.5, "vendo": 2, "gratis": 1.5,
    "envio gratis": 2, "catalogo": 1.5, "publicidad": 2, "patrocinad*": 1.5,
    # whole Spanish words: the stems "compre*" and "exclusiv*" also caught English "comprehensive", "exclusive"
    "exclusivo": 1, "exclusiva": 1, "exclusivos": 1, "exclusivas": 1,
    "cupos limitados": 1.5, "financiacion": 1, "cuotas sin interes": 2.5, "llame ya": 2,
    "escribame": 1, "whatsapp": 0.5, "rifa*": 1.5, "sorteo*": 1, "emprendimiento": 1,
    "limited time": 2.5, "buy now": 2.5, "discount": 1.5, "free shipping": 2, "unsubscribe": 1.5,
    "cancelar suscripcion": 1.5,
}
NEUTRAL: dict[str, float] = {
    "descuento por nomina": -3, "licitacion*": -3, "proceso de contratacion": -3, "secop": -3,
    "presentacion de ofertas": -3, "oferta institucional": -2, "oferta de empleo": -2,
    "oferta laboral": -2, "convocatoria": -1, "invitacion publica": -2, "estudios previos": -2,
}


class Config(RuleBase):
    kind: Literal["commercial"]
    action: Action = Action.MODERATE
    terms: dict[str, float] = Field(default_factory=lambda: dict(TERMS))
    neutral: dict[str, float] = Field(default_factory=lambda: dict(NEUTRAL))
    threshold: float = Field(default=4.0, gt=0)
    subject_weight: float = Field(default=2.0, ge=1)
    exempt_senders: tuple[str, ...] = ()
    exempt_roles: tuple[str, ...] = ()
    moderators: tuple[str, ...] = ()
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT, Action.MODERATE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"moderators"})
    DEFAULT_REPLY: ClassVar[str] = "Contenido comercial o publicitario: requiere aprobacion previa"

    _terms = field_validator("terms", "neutral")(check_terms)

    @field_validator("exempt_senders", "moderators")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(address_key(a) for a in value)

    @model_validator(mode="after")
    def _moderated(self) -> Config:
        if self.action is Action.MODERATE and not self.moderators:
            raise ValueError("action 'moderate' needs moderators: list who approves")
        return self

    @cached_property
    def lexicon(self) -> Lexicon:
        return Lexicon({**self.terms, **self.neutral})


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    if any(a in rule.exempt_senders for a in ctx.sender_addresses) or ctx.sender_roles & set(rule.exempt_roles):
        return
    message = ctx.submission.message
    match = rule.lexicon.score(message.folded_subject, message.folded_body, rule.subject_weight)
    if match.score >= rule.threshold:
        yield rule.finding(ctx, {"moderators": ", ".join(rule.moderators)}, moderators=rule.moderators,
                           detail={"score": match.score, "terms": list(match.terms)})
