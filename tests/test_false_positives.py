"""False-positive baseline on real ham (SpamAssassin public corpus, fetched by tests/corpora.py):
the sensitive-notice and commercial rules flag none of the ordinary ham ("easy ham": personal and
list mail). The "hard ham" set is mostly commercial newsletters; bench/false_positives.py reports
what is flagged there (the README has the figures)."""

from __future__ import annotations

import pytest

from bench.false_positives import STAFF, baseline
from tests import corpora

CONTENT_RULE_KINDS = ("sensitive_individual", "commercial")


@pytest.mark.parametrize("pack_name", sorted(STAFF))
def test_ham_is_not_flagged_as_sensitive_or_commercial(pack_name: str) -> None:
    easy = ("easy-ham-1", "easy-ham-2")
    paths = corpora.messages(corpora.SPAM_ASSASSIN, easy) if corpora.SPAM_ASSASSIN.exists() else []
    if not paths:
        if corpora.required():
            pytest.fail("SpamAssassin corpus missing: python -m tests.corpora")
        pytest.skip("corpora not fetched (python -m tests.corpora; ./dev test does it)")
    from tests.helpers import pack

    kinds = {rule.id: rule.kind for rule in pack(pack_name).rules}
    flagged = baseline(pack_name, paths)
    content = {rule: n for rule, n in flagged.items() if kinds.get(rule) in CONTENT_RULE_KINDS}
    assert content == {}, f"{pack_name}: ham flagged by content rules: {content}"


@pytest.mark.parametrize("pack_name", ["barrancabermeja", "pasto"])
def test_real_webmail_senders_are_not_taken_for_our_people(pack_name: str) -> None:
    """Every SpamAssassin message (ham and spam, thousands of real display names, many from
    Hotmail and Yahoo) delivered inbound to a staff member: webmail-impersonation flags none."""
    from datetime import datetime

    from relay.addresses import AddressError
    from relay.message import Envelope, Submission, parse_message
    from relay.policy.engine import evaluate
    from relay.policy.rules.webmail_impersonation import FREE_MAIL
    from tests.helpers import directory, pack

    groups = tuple(sorted(p.name for p in corpora.SPAM_ASSASSIN.iterdir())) if corpora.SPAM_ASSASSIN.exists() else ()
    paths = corpora.messages(corpora.SPAM_ASSASSIN, groups) if groups else []
    if not paths:
        if corpora.required():
            pytest.fail("SpamAssassin corpus missing: python -m tests.corpora")
        pytest.skip("corpora not fetched (python -m tests.corpora; ./dev test does it)")
    staff = STAFF[pack_name][1][0]
    at = datetime.fromisoformat("2026-11-24T10:00:00-05:00")
    webmail, flagged = 0, []
    for path in paths:
        message = parse_message(path.read_bytes())
        if not message.from_:
            continue
        sender = message.from_[0]
        webmail += sender.addr.rpartition("@")[2].casefold() in FREE_MAIL and bool(sender.display_name)
        try:
            envelope = Envelope.build(sender.addr, [staff], None, "198.51.100.200")
        except AddressError:
            continue  # not usable as an envelope sender (the corpus has a few)
        decision = evaluate(Submission(envelope, message), pack(pack_name), directory(pack_name), at)
        if any(f.rule_id == "webmail-impersonation" for f in decision.findings):
            flagged.append((sender.display_name, sender.addr))
    assert webmail > 300  # the corpus really has free-mail senders (on the maintained list) with display names
    assert flagged == []
