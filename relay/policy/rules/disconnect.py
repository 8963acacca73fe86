"""disconnect: no work messages outside the recipient's working time (right to disconnect).

Cancillería circular (lineamientos de uso de herramientas oficiales): tools are used "respetando la
jornada y los horarios de trabajo" and the right to disconnect of Ley 2088 de 2021 (rest, leave,
holidays); Ley 2191 de 2022, art. 6 exempts 'dirección, confianza y manejo' roles and allows contact
for fuerza mayor only with a justification. Staff-to-staff mail is held until the recipient's next
working period in their own zone, skipping their holidays and leave; a declared urgency from an
authorised role is delivered and recorded with its stated reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from relay.directory import Person, address_key
from relay.policy.calendar import next_working_start
from relay.policy.rules.base import Context, RuleBase
from relay.policy.spanish import instant_en, instant_es
from relay.policy.verdicts import Action, Finding, Record


class Config(RuleBase):
    kind: Literal["disconnect"]
    action: Action = Action.HOLD
    exempt_roles: tuple[str, ...] = ("direccion_confianza_manejo",)
    urgent_prefix: str = Field(default="[URGENTE]", min_length=1)
    urgent_roles: tuple[str, ...] = ("directivo",)
    hold_self: bool = False  # mail to oneself is not a message to another worker
    ROLE_FIELDS: ClassVar[tuple[str, ...]] = ("exempt_roles", "urgent_roles")
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.HOLD})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"schedule"})
    DEFAULT_REPLY: ClassVar[str] = "Retenido hasta la jornada laboral del destinatario (desconexion laboral)"


def _urgent(rule: Config, ctx: Context) -> bool:
    subject = ctx.submission.message.subject.lstrip()
    return subject[: len(rule.urgent_prefix)].casefold() == rule.urgent_prefix.casefold() and bool(
        ctx.sender_roles & set(rule.urgent_roles))


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    held: list[tuple[str, datetime]] = []
    exempt: list[str] = []  # off work now, but their role is exempt (Ley 2191 de 2022, art. 6)
    for rcpt in ctx.recipients:
        entry = ctx.directory.find(rcpt)
        if not isinstance(entry, Person):
            continue
        if not rule.hold_self and address_key(rcpt) in ctx.own_addresses:
            continue
        due = next_working_start(entry.schedule, ctx.now)
        if due is None:
            continue
        if entry.roles & set(rule.exempt_roles):
            exempt.append(address_key(rcpt))
        else:
            held.append((address_key(rcpt), due))
    records: tuple[Record, ...] = ()
    if exempt:  # kept for the compliance report: exemptions applied
        records = (Record("exemption", (("rule", rule.id), ("sender", ctx.identity.login or ctx.sender_display),
                                        ("roles", ", ".join(sorted(rule.exempt_roles))),
                                        ("recipients", ", ".join(exempt)), ("at", ctx.now.isoformat()))),)
    if not held:
        if records:
            yield replace(rule.finding(ctx, action=Action.RECORD, recipients=exempt, records=records,
                                       detail={"exempt": len(exempt)}), note_only=True)
        return
    if _urgent(rule, ctx):
        reason = ctx.submission.message.subject.strip()[len(rule.urgent_prefix):].strip()
        record = Record("urgency", (("rule", rule.id), ("declared_by", ctx.identity.login or ctx.sender_display),
                                    ("reason", reason[:300]), ("at", ctx.now.isoformat()),
                                    ("recipients", ", ".join(r for r, _ in held))))
        yield rule.finding(ctx, action=Action.RECORD, recipients=[r for r, _ in held], records=(record, *records),
                           detail={"urgent": True, "reason": reason[:300]})
        return
    schedule = "; ".join(f"{r}: {instant_es(at)}" for r, at in held)
    schedule_en = "; ".join(f"{r}: {instant_en(at)}" for r, at in held)
    yield rule.finding(ctx, {"schedule": schedule}, values_en={"schedule": schedule_en},
                       recipients=[r for r, _ in held], deliver_at=tuple(held), records=records,
                       detail={"held": len(held)})
