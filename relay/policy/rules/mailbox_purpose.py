"""mailbox_purpose: a mailbox that takes only some requests answers the others with the right channel.

Circular 004 (Barrancabermeja), numerals 1-3 and 5: soportetic@ receives EXCLUSIVELY web-site
publication requests; technical support goes through the web form, followed up on extension 2500.
The message is still delivered (nothing is lost) and the sender — only our own staff, never an
outside address (no backscatter) — gets an automatic answer pointing to the form.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from relay.directory import address_key
from relay.policy.lexicon import Lexicon
from relay.policy.rules.base import Context, RuleBase, Texts, check_terms, render
from relay.policy.verdicts import Action, Finding, Notice


class Config(RuleBase):
    kind: Literal["mailbox_purpose"]
    action: Action = Action.NOTIFY
    mailbox: str
    accepts: dict[str, float] = Field(min_length=1, description="terms of the requests the mailbox takes")
    threshold: float = Field(default=3.0, gt=0)
    subject_weight: float = Field(default=2.0, ge=1)
    auto_reply: Texts
    auto_reply_subject: str = "Respuesta automática: {mailbox}"
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.NOTIFY, Action.REJECT})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"mailbox"})
    DEFAULT_REPLY: ClassVar[str] = "{mailbox} solo recibe las solicitudes para las que fue creado"

    _accepts = field_validator("accepts")(check_terms)

    @field_validator("mailbox")
    @classmethod
    def _key(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"{value!r} is not an e-mail address")
        return address_key(value)

    @cached_property
    def lexicon(self) -> Lexicon:
        return Lexicon(self.accepts)


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    if rule.mailbox not in (r.casefold() for r in ctx.recipients) or rule.mailbox in ctx.own_addresses:
        return
    message = ctx.submission.message
    match = rule.lexicon.score(message.folded_subject, message.folded_body, rule.subject_weight)
    if match.score >= rule.threshold:
        return
    values = {**ctx.base_vars(rule), "mailbox": rule.mailbox}
    notices: tuple[Notice, ...] = ()
    if ctx.notice_to and rule.action is Action.NOTIFY:
        text = render(rule.auto_reply.es, values)
        if rule.auto_reply.en and "en" in ctx.pack.languages:
            text += "\n\n--- English ---\n" + render(rule.auto_reply.en, values)
        notices = (Notice(ctx.notice_to, "auto-reply", render(rule.auto_reply_subject, values), text,
                          (rule.id,)),)
    yield rule.finding(ctx, {"mailbox": rule.mailbox}, recipients=[rule.mailbox], notices=notices,
                       detail={"score": match.score, "terms": list(match.terms)})
