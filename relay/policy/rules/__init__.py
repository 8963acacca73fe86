"""The registry of rule kinds: one module per kind, listed here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from relay.policy.rules import (
    broadcasters,
    commercial,
    disconnect,
    institutional_sender,
    institutional_spoofing,
    mailbox_purpose,
    mass_bcc,
    open_relay,
    originator,
    recipient_domain,
    recipient_route,
    send_as,
    sensitive_individual,
    social_signup,
    webmail_impersonation,
)
from relay.policy.rules.base import Context, RuleBase
from relay.policy.verdicts import Finding


@dataclass(frozen=True)
class RuleKind:
    name: str
    config: type[RuleBase]
    check: Callable[[Any, Context], Iterable[Finding]]


_MODULES = (
    open_relay, institutional_sender, send_as, mass_bcc, broadcasters, sensitive_individual,
    commercial, mailbox_purpose, social_signup, disconnect, recipient_domain, institutional_spoofing,
    webmail_impersonation, originator, recipient_route,
)

KINDS: dict[str, RuleKind] = {
    m.__name__.rsplit(".", 1)[1]: RuleKind(m.__name__.rsplit(".", 1)[1], m.Config, m.check) for m in _MODULES
}
