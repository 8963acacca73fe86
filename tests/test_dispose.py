"""The Disposition types (pure): a 5xx only in a Reject, a 4xx only in a Tempfail, checked when built."""

from __future__ import annotations

import pytest

from relay.dispose import UPSTREAM_FAILURE, Accept, Held, Reject, Tempfail, from_reply, refusal
from relay.frontends import replies
from relay.upstream import Reply


@pytest.mark.parametrize(("kind", "code", "text"), [
    (Reject, 451, "4.3.0 busy"), (Reject, 250, "2.0.0 ok"), (Tempfail, 550, "5.7.1 no"), (Tempfail, 354, "go"),
    (Reject, 550, "4.7.1 a status of the other class"), (Tempfail, 451, "5.0.0 likewise"),
    (Reject, 550, "5.7.1 two\r\nlines"),
])
def test_a_refusal_of_the_wrong_class_cannot_be_built(kind: type[Reject | Tempfail], code: int, text: str) -> None:
    with pytest.raises(ValueError):
        kind(code, text)


def test_reply_lines_become_their_type() -> None:
    assert refusal("550 5.1.1 no such user") == Reject(550, "5.1.1 no such user")
    assert refusal("452 4.5.3 too many") == Tempfail(452, "4.5.3 too many")
    assert refusal("550 4.1.1 confused next hop") == Reject(550, "confused next hop")  # wrong status dropped
    assert refusal("250 2.0.0 ok") is UPSTREAM_FAILURE  # never a 2xx where a refusal is due
    assert from_reply(Reply(421, "4.4.2 closing")) == Tempfail(421, "4.4.2 closing")


def test_the_smtp_reply_of_each_disposition() -> None:
    assert replies.smtp(Accept("Q1")) == "250 2.0.0 Ok: queued as Q1"
    assert replies.smtp(Accept("Q1", held=2)) == "250 2.0.0 Ok: queued as Q1; 2 recipient(s) held by policy"
    assert replies.smtp(Held("Q1", 1, ("h",))) == "250 2.0.0 Ok: queued as Q1; 1 recipient(s) held by policy"
    assert replies.smtp(Reject(554, "5.6.0 x")) == "554 5.6.0 x"
