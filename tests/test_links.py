"""Signed moderation links (pure): round trip, tampering, expiry, unknown actions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.web.links import LinkClaim, LinkError, load_key, sign, verify

KEY = b"k" * 64
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
CLAIM = LinkClaim("H-00042", "approve", "intranet@pasto.gov.co", int((NOW + timedelta(days=3)).timestamp()))


def test_round_trip() -> None:
    assert verify(KEY, sign(KEY, CLAIM), NOW) == CLAIM


def test_another_key_or_a_changed_claim_is_refused() -> None:
    token = sign(KEY, CLAIM)
    with pytest.raises(LinkError, match="no es válido"):
        verify(b"x" * 64, token, NOW)
    other = sign(KEY, LinkClaim(CLAIM.hold_id, "reject", CLAIM.moderator, CLAIM.expires))
    mixed = other.partition(".")[0] + "." + token.partition(".")[2]  # reject's claim, approve's signature
    with pytest.raises(LinkError):
        verify(KEY, mixed, NOW)


def test_expired() -> None:
    token = sign(KEY, CLAIM)
    assert verify(KEY, token, datetime.fromtimestamp(CLAIM.expires, UTC)) == CLAIM  # valid up to the second
    with pytest.raises(LinkError, match="expiró"):
        verify(KEY, token, datetime.fromtimestamp(CLAIM.expires + 1, UTC))


def test_an_unknown_action_is_refused_even_when_signed() -> None:
    with pytest.raises(LinkError, match="acción"):
        verify(KEY, sign(KEY, LinkClaim("H-1", "delete", "m@x.gov.co", CLAIM.expires)), NOW)


@given(st.text(max_size=200))
def test_arbitrary_text_never_verifies_and_never_crashes(token: str) -> None:
    with pytest.raises(LinkError):
        verify(KEY, token, NOW)


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_refused(position: int, value: int) -> None:
    token = sign(KEY, CLAIM)
    i = position % len(token)
    changed = token[:i] + chr(value) + token[i + 1:]
    if changed == token:
        return
    try:
        claim = verify(KEY, changed, NOW)
    except LinkError:
        return
    # base64 without padding can decode two spellings to the same bytes; then the claim is the same one
    assert claim == CLAIM


def test_key_file_is_made_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "admin.secret"
    key = load_key(path)
    assert len(key) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_key(path) == key
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="shorter than 32"):
        load_key(path)
