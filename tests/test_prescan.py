"""relay/policy/prescan.py finds exactly what `re.search` finds, for every regular-expression term
of every pack, on the labelled corpora and on generated text (pure code: no sockets, no disk
beyond reading the corpus)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.message import fold, parse_message
from relay.policy import prescan
from relay.policy.lexicon import Lexicon
from relay.policy.pack import load_pack

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted((ROOT / "tests" / "textcorpus").rglob("*.eml"))


def _patterns() -> list[re.Pattern[str]]:
    """Every `re:`/`raw:` term the shipped packs' text rules compile (their lexicons, built lazily)."""
    found: dict[str, re.Pattern[str]] = {}
    for path in sorted((ROOT / "policies").glob("*.yaml")):
        for rule in load_pack(path).rules:
            lexicon = getattr(rule, "lexicon", None)
            if isinstance(lexicon, Lexicon):
                for entry in lexicon.entries:
                    if entry[4] is not None:
                        found[entry[4].pattern] = entry[4]
    return list(found.values())


PATTERNS = _patterns()


def _same(pattern: re.Pattern[str], text: str) -> None:
    want = pattern.search(text)
    got = prescan.search(pattern, prescan.plan(pattern), text, prescan.digit_positions(text))
    assert (got.span() if got else None) == (want.span() if want else None), (pattern.pattern, text[:200])


def test_the_packs_have_price_terms_and_most_are_bounded() -> None:
    # The point of the module: the commercial rule's price terms need a digit, close to their start.
    assert len(PATTERNS) >= 10
    plans = [prescan.plan(p) for p in PATTERNS]
    assert sum(p.needs_digit for p in plans) >= 8
    assert sum(p.lead is not None for p in plans) >= 5


@pytest.mark.parametrize("pattern, lead", [
    (r"\b\d{1,3}\s?mil\b", 0), (r"\$?\s?\d", 2), (r"\b(?:a|por)\s\d{3}", 4), (r"(?:ab|c)\d|x\d\d", 2),
    (r"2\s?x\s?1\b", 0), (r"[0-9]{2,}", 0), (r"(?:\d)+", 0),
])
def test_plans_bound_where_the_digit_can_be(pattern: str, lead: int) -> None:
    assert prescan.plan(re.compile(pattern)) == prescan.Plan(True, lead)


@pytest.mark.parametrize("pattern, needs", [
    (r"%\s*descuento", False), (r"\d?", False), (r"\d|x", False), (r"[\d.]+", False), (r"[^a]\d*", False),
    (r"(?=\d)", False), (r"a\s*\d", True), (r"\w+\d", True),
])
def test_patterns_that_promise_no_bounded_digit(pattern: str, needs: bool) -> None:
    how = prescan.plan(re.compile(pattern))
    assert how.needs_digit is needs and how.lead is None


@pytest.mark.parametrize("pattern, anchors", [
    (r"\b(?:docena|libra)\W{0,3}\d", ("docena", "libra")), (r"(?<!\w)[Ss]eñora?\s", ("Señor", "señor")),
    (r"cedula(?: de)?\s*\d", ("cedula",)), (r"(?:(?:ab|cd)x|ef)", ("ab", "cd", "ef")),
    (r"(?i)docena", ()), (r"(?i:docena)", ()), (r"(?:a|libra)", ()), (r"\w+docena", ()), (r"d?ocena", ()),
])
def test_plans_find_the_literal_words_a_match_starts_with(pattern: str, anchors: tuple[str, ...]) -> None:
    assert digitscan_anchors(pattern) == anchors


def digitscan_anchors(pattern: str) -> tuple[str, ...]:
    return tuple(sorted(prescan.plan(re.compile(pattern)).anchors))


def test_the_same_matches_as_re_search_on_every_corpus_message() -> None:
    assert len(CORPUS) > 400
    for path in CORPUS:
        message = parse_message(path.read_bytes())
        for text in {message.body_text, fold(message.body_text), message.subject, fold(message.subject)}:
            for pattern in PATTERNS:
                _same(pattern, text)


def test_unicode_digits_are_digits() -> None:
    # \d also matches other scripts' digits: the non-ASCII path must see them.
    pattern = re.compile(r"\b\d{1,3}\s?mil\s(?:pesos)\b")
    _same(pattern, "café a ١٢ mil pesos")
    assert prescan.digit_positions("café ١٢") == [5, 6]


_ALPHABET = "0123456789 .,$%-/\nabcdilmoprsux" + "ñá١"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=160), st.sampled_from(PATTERNS or [re.compile("x")]))
def test_the_same_matches_as_re_search_on_generated_text(text: str, pattern: re.Pattern[str]) -> None:
    _same(pattern, text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "por", "vale", "cuesta", "desde", "mil", "pesos", "la", "docena", "c/u",
                                 "12", "1.500", "$", "$5.000", "30", "%", "descuento", "2x1", "kg", "a 3", "\n",
                                 "millones", "k", "cada", "una", "solo", "cedula", "radicado", "No.", "Señora", "señor",
                                 "le", "Le", "identificado con", "jornada", "kilo", "el", "un", "c.c."]), max_size=30),
       st.sampled_from(PATTERNS or [re.compile("x")]))
def test_the_same_matches_on_price_like_word_salads(words: list[str], pattern: re.Pattern[str]) -> None:
    _same(pattern, " ".join(words))
