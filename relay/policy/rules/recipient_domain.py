"""recipient_domain: mail to a domain that cannot receive mail is refused at RCPT time, with a
suggestion when the domain is a near miss of a common one ("gmial.com" -> "gmail.com").

Not a circular's rule but the institution's duty of care for citizens' data (Ley 1581 de 2012):
a mistyped domain may belong to someone; one with no MX and no address record surely bounces
later, after the sender has moved on. Reads the DNS facts the front-end gathered (RFC 5321 §5.1:
MX, else the implicit MX of an A/AAAA record; RFC 7505 null MX means "no mail").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

from pydantic import field_validator

from relay.identity import Direction
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Action, Finding
from relay.policy.webmail import CONSUMER_WEBMAIL

COMMON = CONSUMER_WEBMAIL  # relay.policy.webmail: the one list


class Config(RuleBase):
    kind: Literal["recipient_domain"]
    action: Action = Action.REJECT
    common_domains: tuple[str, ...] = COMMON
    max_distance: int = 2
    ALLOWED_ACTIONS: ClassVar[frozenset[Action]] = frozenset({Action.REJECT})
    TEMPLATE_VARS: ClassVar[frozenset[str]] = frozenset({"address", "domain", "suggestion"})
    DEFAULT_REPLY: ClassVar[str] = "El dominio {domain} no recibe correo (no tiene registros MX ni A){suggestion}"
    DEFAULT_DIRECTIONS: ClassVar[tuple[Direction, ...]] = (Direction.STAFF,)
    ENVELOPE_RULE: ClassVar[bool] = True
    REPLY_CODE: ClassVar[tuple[int, str] | None] = (550, "5.1.2")

    @field_validator("common_domains")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(d.casefold().strip() for d in value)


def distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment): a swap of two letters costs one."""
    rows = [list(range(len(b) + 1))] + [[i] + [0] * len(b) for i in range(1, len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[len(a)][len(b)]


def suggest(domain: str, common: tuple[str, ...], limit: int) -> str | None:
    """The closest common domain within `limit` edits, or None (also for a common domain itself:
    gmail.com is not a typo of mail.com)."""
    if domain in common:
        return None
    scored = sorted((distance(domain, c), c) for c in common)
    return scored[0][1] if scored and scored[0][0] <= limit else None


def check(rule: Config, ctx: Context) -> Iterator[Finding]:
    facts = ctx.submission.envelope.facts
    if facts is None:
        return
    for rcpt in ctx.recipients:
        domain = rcpt.rpartition("@")[2].casefold().rstrip(".")
        if ctx.directory.is_local(rcpt) or facts.mail_domain(domain) != "none":
            continue
        near = suggest(domain, rule.common_domains, rule.max_distance)
        hint = f"; sugerencia: {rcpt.rpartition('@')[0]}@{near}" if near else ""
        yield rule.finding(ctx, {"address": rcpt, "domain": domain, "suggestion": hint}, recipients=[rcpt],
                           envelope_only=True, detail={"domain": domain, "suggestion": near or ""})
