"""sensitive_individual: notices about legal matters, debts, health or other personal matters go
to one person at a time.

Circular 004 de 2021 (Pasto): "la comunicación se deberá hacer de forma individual. No está
permitido enviar este tipo de notificaciones de forma grupal o en listas masivas" (confidentiality,
Ley 1581 de 2012). Hidden (BCC) recipients still make a group. Detection is a weighted lexicon on
the folded subject and body, with negative weights for general campaigns (a vaccination day is
not a health notice). The pack may split the message per recipient instead of refusing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from relay.policy.lexicon import Lexicon
from relay.policy.rules.base import Context, RuleBase, check_terms
from relay.policy.verdicts import Action, Finding, Rewrite

TERMS: dict[str, dict[str, float]] = {
    "legal": {
        "proceso disciplinario": 3, "investigacion disciplinaria": 3, "pliego de cargos": 3,
        "descargos": 3, "llamado de atencion": 3, "sancion*": 2, "incumplimiento": 2, "embargo*": 3,
        "notificacion judicial": 3, "demanda*": 1.5, "tutela": 1.5, "citacion a audiencia": 2.5,
        "asunto legal": 3, "proceso judicial": 2.5, "requerimiento judicial": 3,
    },
    "debt": {
        "deuda*": 2.5, "adeuda*": 3, "en mora": 3, "mora": 2, "saldo pendiente": 2.5,
        "saldos pendientes": 2.5, "cobro juridico": 3, "cobro*": 1.5, "descuento por nomina": 2,
        "obligacion pendiente": 2.5, "pago pendiente": 2, "libranza*": 2, "paz y salvo": 1,
        "fondo de empleados": 1,
    },
    "health": {
        "estado de salud": 3, "examen medico": 2.5, "examenes medicos": 2.5, "diagnostic*": 2.5,
        "incapacidad*": 2.5, "historia clinica": 3, "resultados de laboratorio": 3,
        "tratamiento medico": 2.5, "valoracion medica": 2.5, "recomendaciones medicas": 2.5,
        "restricciones medicas": 2.5, "discapacidad": 2, "embarazo": 2.5, "enfermedad*": 1.5,
        "positivo para covid": 3, "prueba positiva": 2.5, "licencia de maternidad": 2,
        "licencia de paternidad": 2, "psicolog*": 2, "salud mental": 2,
    },
    "personal": {
        "asunto personal": 2.5, "situacion personal": 2.5, "interes particular": 2.5,
        "informacion confidencial": 2, "confidencial": 1, "evaluacion de desempeno": 2,
        "calificacion de desempeno": 2, "periodo de prueba": 1.5, "no supero": 1.5,
        "datos personales": 1,
    },
    "addressed": {  # wording that addresses the recipient's own case
        "se le notifica": 1.5, "se les notifica": 1.5, "usted presenta": 1.5, "su caso": 1,
        "sus resultados": 1, "su examen": 1, "presenta un saldo": 1, "presentan saldos": 1,
    },
}

NEUTRAL: dict[str, float] = {
    "jornada de vacunacion": -3, "vacunacion": -1, "campana*": -2, "semana de la salud": -3,
    "brigada de salud": -3, "pausas activas": -2, "capacitacion": -1.5, "charla": -1.5,
    "taller": -1.5, "invitamos a todos": -2, "todos los servidores": -1.5, "prevencion": -1,
    "donacion de sangre": -3, "boletin": -1.5, "seguridad y salud en el trabajo": -1,
}


class Config(RuleBase):
    kind: Literal["sensitive_individual"]
    action: Action = Action.REJECT
    terms: dict[str, dict[str, float]] = Field(default_factory=lambda: {k: dict(v) for k, v in TERMS.items()})
    neutral: dict[str, float] = Field(default_factory=lambda: dict(NEUTRAL))
    threshold: float = Field(default=3.0, gt=0)
    subject_weight: float = Field(default=2.0, ge=1)
    max_recipients: int = Field(default=1, ge=1)
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset(
        {Action.REJECT, Action.MODERATE, Action.REWRITE})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"topics", "count"})
    DEFAULT_REPLY: ClassVar[str] = "Las notificaciones de asuntos personales se envian de forma individual"

    @field_validator("terms")
    @classmethod
    def _terms(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for group in value.values():
            check_terms(group)
        return value

    _neutral = field_validator("neutral")(check_terms)

    @cached_property
    def lexicon(self) -> Lexicon:
        weights = {t: w for group in self.terms.values() for t, w in group.items()}
        return Lexicon({**weights, **self.neutral})

    @cached_property
    def topic_of(self) -> dict[str, str]:
        return {t: topic for topic, group in self.terms.items() for t in group}


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    others = [r for r in ctx.recipients if r.casefold() not in ctx.own_addresses]
    group = len(others) > rule.max_recipients or bool(ctx.list_recipients)
    if not group:
        return
    message = ctx.submission.message
    match = rule.lexicon.score(message.folded_subject, message.folded_body, rule.subject_weight)
    if match.score < rule.threshold:
        return
    topics = sorted({rule.topic_of[t] for t in match.terms if t in rule.topic_of} - {"addressed"})
    names = {"legal": "asuntos legales", "debt": "deudas", "health": "salud", "personal": "asuntos personales"}
    yield rule.finding(
        ctx, {"topics": ", ".join(names.get(t, t) for t in topics) or "asuntos personales",
              "count": str(len(others))},
        rewrite=Rewrite(split=True),
        detail={"score": match.score, "terms": list(match.terms), "recipients": len(others)},
    )
