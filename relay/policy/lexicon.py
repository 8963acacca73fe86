"""Weighted term lists matched on accent- and case-folded text, compiled once per pack.

A term is a phrase ('estado de salud'), a prefix with a trailing '*' ('deuda*' matches 'deudas'),
or a regular expression written 're:...'. Each distinct term counts once per text, so repeating a
word does not inflate a score. Negative weights mark contexts that are not what the rule looks
for (a vaccination campaign is not a personal health notice).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from relay.message import fold


def _pattern(term: str) -> str:
    if term.startswith("re:"):
        return term[3:]
    text = fold(term.strip())
    prefix = text.endswith("*")
    words = [re.escape(w) for w in text.rstrip("*").split()]
    body = r"\s+".join(words)
    return rf"(?<!\w){body}\w*" if prefix else rf"(?<!\w){body}(?!\w)"


def check_term(term: str) -> str:
    """Validate one term at load time; raises ValueError with the reason."""
    if not term.strip() or term.strip() == "*":
        raise ValueError("empty term")
    try:
        re.compile(_pattern(term))
    except re.error as error:
        raise ValueError(f"bad regular expression {term!r}: {error}") from None
    return term


@dataclass(frozen=True)
class Match:
    score: float
    terms: tuple[str, ...]


class Lexicon:
    """Terms with weights; `score(text)` sums the weights of the distinct terms found."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.terms = tuple(weights)
        self.weights = tuple(float(weights[t]) for t in self.terms)
        if self.terms:
            # Longest terms first, so 'examen medico ocupacional' wins over 'examen medico'.
            order = sorted(range(len(self.terms)), key=lambda i: -len(self.terms[i]))
            joined = "|".join(f"(?P<t{i}>{_pattern(self.terms[i])})" for i in order)
            self._regex: re.Pattern[str] | None = re.compile(joined)
        else:
            self._regex = None

    def find(self, folded: str) -> dict[int, float]:
        """Indexes and weights of the terms present in an already folded text."""
        found: dict[int, float] = {}
        if self._regex is None:
            return found
        for match in self._regex.finditer(folded):
            index = int((match.lastgroup or "t0")[1:])
            found[index] = self.weights[index]
        return found

    def score(self, folded_subject: str, folded_body: str, subject_weight: float = 1.0) -> Match:
        """Score of subject (weighted) and body; a term found in both counts at the higher weight."""
        subject = {i: w * subject_weight for i, w in self.find(folded_subject).items()}
        body = self.find(folded_body)
        merged = {**body}
        for i, w in subject.items():
            merged[i] = max(w, merged.get(i, w), key=abs)
        terms = tuple(self.terms[i] for i in sorted(merged))
        return Match(round(sum(merged.values()), 3), terms)
