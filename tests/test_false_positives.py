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
