"""Policy packs: one YAML file per institution, validated by pydantic at load time."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relay import yamlconf
from relay.policy.rules import KINDS
from relay.policy.rules.base import PackSettings, RuleBase

for _name, _kind in KINDS.items():
    yamlconf.register_hint(_name, _kind.config)

# A union of every registered kind's model, told apart by `kind` (built from the registry, so a
# new kind needs no edit here).
_UNION: Any = None
for _kind in KINDS.values():
    _UNION = _kind.config if _UNION is None else _UNION | _kind.config
RuleConfig: Any = Annotated[_UNION, Field(discriminator="kind")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MassMail(_Strict):
    recipient_threshold: int = Field(default=25, ge=1)


class Moderation(_Strict):
    """The moderation lifecycle: how long a message waits for a moderator, and the daily digest."""

    expire_after_days: int = Field(
        default=7, ge=1, le=90,
        description="days a message waits for a moderator; then it expires undelivered and the sender is told")
    digest_hour: int | None = Field(
        default=8, ge=0, le=23,
        description="local hour (institution's zone) of the daily digest to each moderator of what waits; "
                    "null: no digest")


class NoticeTemplate(_Strict):
    """The pack's wording of a notice the relay writes after a decision (approved, rejected,
    deleted, withdrawn, expired): {placeholders} as in rule notices."""

    subject: str | None = None
    es: str = Field(min_length=1)
    en: str | None = None


def _check_notice_templates(value: dict[str, NoticeTemplate]) -> dict[str, NoticeTemplate]:
    import string

    from relay.notices import OUTCOME_VARS

    for name, template in value.items():
        if name not in OUTCOME_VARS:
            raise ValueError(f"unknown notice {name!r}; one of {', '.join(OUTCOME_VARS)}")
        for text in (template.subject or "", template.es, template.en or ""):
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
            except ValueError as error:
                raise ValueError(f"notices.{name}: bad placeholder: {error}; write '{{{{' for a brace") from None
            unknown = sorted(names - OUTCOME_VARS[name])
            if unknown:
                raise ValueError(f"notices.{name}: unknown placeholder {{{unknown[0]}}}; known: "
                                 + ", ".join(sorted(OUTCOME_VARS[name])))
    return value


class ExampleEnvelope(_Strict):
    mail_from: str
    rcpt_to: list[str] = Field(min_length=1)
    auth: str | None = None
    client_ip: str | None = None


class ExampleExpect(_Strict):
    verdict: Literal["deliver", "hold", "moderate", "reject", "tempfail"]
    rules: list[str] = []  # rule ids that must fire
    not_rules: list[str] = []  # rule ids that must not fire


class Example(_Strict):
    """A message with the verdict the pack must give it; the test suite runs every example."""

    name: str
    at: datetime
    envelope: ExampleEnvelope
    message: str
    expect: ExampleExpect


class Pack(_Strict):
    pack: str = Field(pattern=r"^[a-z0-9_-]+$")
    institution: str
    languages: list[Literal["es", "en"]] = ["es", "en"]
    help: str = Field(min_length=3, description="whom to ask, shown in every notice")
    mass_mail: MassMail = MassMail()
    moderation: Moderation = Moderation()
    notices: dict[str, NoticeTemplate] = Field(
        default={}, description="the pack's texts for approved, rejected, deleted, withdrawn, expired")
    rules: list[RuleConfig] = Field(min_length=1)
    examples: list[Example] = []

    _notices = field_validator("notices")(_check_notice_templates)

    @model_validator(mode="after")
    def _unique_ids(self) -> Pack:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice; ids must be unique")
            seen.add(rule.id)
        known = seen
        for example in self.examples:
            for rid in example.expect.rules + example.expect.not_rules:
                if rid not in known:
                    raise ValueError(f"example {example.name!r} names unknown rule {rid!r}")
        return self

    @cached_property
    def settings(self) -> PackSettings:
        return PackSettings(self.pack, self.institution, self.mass_mail.recipient_threshold, self.help,
                            tuple(self.languages))

    @property
    def rule_list(self) -> list[RuleBase]:
        return list(self.rules)


def load_pack(path: str | Path) -> Pack:
    """Read and validate a pack; raises yamlconf.ConfigError naming file, line and field."""
    return yamlconf.load(Pack, path, tags=set(KINDS))
