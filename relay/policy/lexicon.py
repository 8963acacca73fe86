"""Weighted terms in named groups, matched through Spanish stems on folded text, compiled once per pack.

A term is written as a person would say it, and matched in any inflection:
- `cuota vencida`: words matched by their Snowball Spanish stem (relay/policy/spanish.py), so it
  also matches "cuotas vencidas" or "CUOTAS VENCIDAS"; the words of a phrase come in that order,
  with at most two other words between two of them ("confirma dirección correo" matches
  "confirma tu dirección de correo");
- `=mora`: that exact (folded) word, not its stem family ("mora" but not "morado", "moral");
- `deud*`: any word starting so (kept for old packs; a stem is usually what is meant);
- `re:REGEX`: a regular expression on the folded text (for numbers: amounts, IDs, case numbers);
- `raw:REGEX`: a regular expression on the text as written, capitals and accents kept (a name
  after "señora" or "servidor" is told by its capitals).
Each term counts once per message, at its weight times the subject weight when it is in the
subject, so repeating a word does not inflate a score. Every hit is kept as Evidence (group,
term, weight, subject or body, the words matched) so a decision can say why it was taken.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from relay.message import ParsedMessage
from relay.message import fold as _fold
from relay.policy import prescan
from relay.policy.bodytext import message_text
from relay.policy.spanish import stem
from relay.policy.verdicts import Evidence, Explanation

GAP = 2  # words allowed between two consecutive words of a phrase
# Articles and prepositions inside a phrase are not required (they still count toward GAP when
# present): people write "evaluación del desempeño", "examen médico de ingreso", "cobro de la cartera"
# for the same thing. A first or last word is always kept ("el servidor", "le notificamos").
_LINKS = frozenset({"de", "del", "la", "las", "el", "los", "al", "a"})
_WORDS = re.compile(r"\w+")
_SPLIT = re.compile(r"[^\w=*]+")


@dataclass(frozen=True)
class _Word:
    key: str
    how: str  # "stem" | "exact" | "prefix"


def _compile(term: str) -> tuple[tuple[_Word, ...], re.Pattern[str] | None]:
    """(words, None) for a word or phrase term, ((), regex) for a `re:` term; ValueError if unusable."""
    stripped = term.strip()
    if stripped.startswith(("re:", "raw:")):
        try:
            return (), re.compile(stripped.partition(":")[2])
        except re.error as error:
            raise ValueError(f"bad regular expression {term!r}: {error}") from None
    out: list[_Word] = []
    parts = [raw for raw in _SPLIT.split(_fold(stripped)) if raw]
    for n, raw in enumerate(parts):
        if 0 < n < len(parts) - 1 and raw in _LINKS:
            continue  # "evaluación de desempeño" also matches "evaluación del desempeño"
        if raw.startswith("="):
            word = _Word(raw[1:], "exact")
        elif raw.endswith("*"):
            word = _Word(raw.rstrip("*"), "prefix")
        else:
            word = _Word(stem(raw), "stem")
        if not word.key or "*" in word.key or "=" in word.key:
            raise ValueError(f"term {term!r}: '=' goes before a word and '*' after one")
        out.append(word)
    if not out:
        raise ValueError("empty term")
    return tuple(out), None


def check_term(term: str) -> str:
    """Validate one term at load time; raises ValueError with the reason."""
    _compile(term)
    return term


class _Index:
    """One folded text: its words, their stems, and where each occurs (and the text as written)."""

    def __init__(self, folded: str, raw: str = "") -> None:
        self.text = folded
        self.raw = raw
        self.by_word: dict[str, list[int]] = {}
        self.words = _WORDS.findall(folded)
        for i, word in enumerate(self.words):
            self.by_word.setdefault(word, []).append(i)
        self.by_stem: dict[str, list[int]] = {}
        for word, at in self.by_word.items():
            key = stem(word)
            if key in self.by_stem:
                self.by_stem[key] = sorted(self.by_stem[key] + at)
            else:
                self.by_stem[key] = at
        self.sorted_words = sorted(self.by_word)
        self._digits: dict[bool, list[int]] = {}

    def digits(self, raw: bool) -> list[int]:
        """Where the folded (or the raw) text has digits: `re:` price terms match only near them."""
        if raw not in self._digits:
            self._digits[raw] = prescan.digit_positions(self.raw if raw else self.text)
        return self._digits[raw]

    def positions(self, word: _Word) -> list[int]:
        if word.how == "stem":
            return self.by_stem.get(word.key, [])
        if word.how == "exact":
            return self.by_word.get(word.key, [])
        found: list[int] = []
        i = bisect.bisect_left(self.sorted_words, word.key)
        while i < len(self.sorted_words) and self.sorted_words[i].startswith(word.key):
            found.extend(self.by_word[self.sorted_words[i]])
            i += 1
        return sorted(found)

    def has(self, word: _Word) -> bool:
        if word.how == "stem":
            return word.key in self.by_stem
        if word.how == "exact":
            return word.key in self.by_word
        i = bisect.bisect_left(self.sorted_words, word.key)
        return i < len(self.sorted_words) and self.sorted_words[i].startswith(word.key)

    def find(self, phrase: tuple[_Word, ...]) -> str | None:
        """The words of the first occurrence of a phrase, or None."""
        if not all(self.has(w) for w in phrase):  # most terms stop here, on a dict lookup
            return None
        lists = [self.positions(w) for w in phrase]
        if not all(lists):
            return None
        for start in lists[0]:
            last = start
            for later in lists[1:]:
                i = bisect.bisect_right(later, last)
                if i == len(later) or later[i] > last + GAP + 1:
                    break
                last = later[i]
            else:
                return " ".join(self.words[start:last + 1])
        return None


@lru_cache(maxsize=16)
def _index(folded: str, raw: str) -> _Index:
    # Several rules read the same subject and body; index each text once.
    return _Index(folded, raw)


class Lexicon:
    """Named groups of weighted terms; `hits(subject, body)` lists every term found, as Evidence."""

    def __init__(self, groups: Mapping[str, Mapping[str, float]]) -> None:
        self.entries: list[tuple[str, str, float, tuple[_Word, ...], re.Pattern[str] | None, bool]] = []
        # Terms by their first word, so a text is matched by looking up its distinct words (a few
        # hundred) rather than by trying every term; prefix and regex terms are always tried.
        self.by_first: dict[tuple[str, str], list[int]] = {}
        self.always: list[int] = []
        self.plans: dict[int, prescan.Plan] = {}
        for group, terms in groups.items():
            for term, weight in terms.items():
                phrase, regex = _compile(term)
                index = len(self.entries)
                self.entries.append((group, term, float(weight), phrase, regex, term.strip().startswith("raw:")))
                if regex is not None:
                    self.plans[index] = prescan.plan(regex)
                if phrase and phrase[0].how != "prefix":
                    self.by_first.setdefault((phrase[0].how, phrase[0].key), []).append(index)
                else:
                    self.always.append(index)

    def _candidates(self, index: _Index) -> set[int]:
        found = set(self.always)
        for key in index.by_stem:
            found.update(self.by_first.get(("stem", key), ()))
        for key in index.by_word:
            found.update(self.by_first.get(("exact", key), ()))
        return found

    def _find(self, i: int, index: _Index, phrase: tuple[_Word, ...], regex: re.Pattern[str] | None,
              raw: bool) -> str | None:
        if regex is not None:
            text = index.raw if raw else index.text
            how = self.plans[i]
            m = prescan.search(regex, how, text, index.digits(raw) if how.needs_digit else [])
            if m is None:
                return None
            # show the whole words around the match ("30% de descuento", not "% de descuento")
            start, end = m.start(), m.end()
            while start > 0 and not text[start - 1].isspace() and m.start() - start < 40:
                start -= 1
            while end < len(text) and not text[end].isspace() and end - m.end() < 40:
                end += 1
            return text[start:end]
        return index.find(phrase)

    def hits_message(self, message: ParsedMessage, subject_weight: float = 1.0) -> tuple[Evidence, ...]:
        """`hits` on a message's subject and its own text (relay/policy/bodytext.py: legal
        disclaimers and "Enviado desde mi ..." lines left out)."""
        body = message_text(message.body_text)
        folded = message.folded_body if body == message.body_text else _fold(body)
        return self.hits(message.folded_subject, folded, subject_weight, message.subject, body)

    def hits(self, folded_subject: str, folded_body: str, subject_weight: float = 1.0,
             raw_subject: str = "", raw_body: str = "") -> tuple[Evidence, ...]:
        """Every term present, once: in the subject at weight x subject_weight, else in the body.
        `raw_*` are the same texts as written, for `raw:` terms."""
        subject, body = _index(folded_subject, raw_subject), _index(folded_body, raw_body)
        in_subject, in_body = self._candidates(subject), self._candidates(body)
        found: list[Evidence] = []
        for i in sorted(in_subject | in_body):
            group, term, weight, phrase, regex, raw = self.entries[i]
            text = self._find(i, subject, phrase, regex, raw) if i in in_subject else None
            if text is not None:
                found.append(Evidence(group, term, round(weight * subject_weight, 3), "subject", text[:80]))
                continue
            text = self._find(i, body, phrase, regex, raw) if i in in_body else None
            if text is not None:
                found.append(Evidence(group, term, weight, "body", text[:80]))
        return tuple(found)


def group_scores(evidence: tuple[Evidence, ...]) -> dict[str, float]:
    """Sum of the weights per group."""
    scores: dict[str, float] = {}
    for e in evidence:
        scores[e.group] = round(scores.get(e.group, 0.0) + e.weight, 3)
    return scores


def merged(groups: Mapping[str, Mapping[str, float]],
           extra: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """`groups` with a pack's `extra_terms` laid over them: new terms added, weights replaced, and a
    weight of 0 removing a term (so an author can drop one default without copying the list)."""
    out = {g: dict(terms) for g, terms in groups.items()}
    for group, terms in extra.items():
        target = out.setdefault(group, {})
        for term, weight in terms.items():
            if weight == 0:
                target.pop(term, None)
            else:
                target[term] = weight
    return out


def check_groups(value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Field validator body for {group: {term: weight}} maps: every term compiles, weights >= 0."""
    for group, terms in value.items():
        for term, weight in terms.items():
            check_term(term)
            if weight < 0:
                raise ValueError(f"{group}: {term!r} has a negative weight; put it in the opposing group instead")
    return value


def check_extra(value: dict[str, dict[str, float]], known: Sequence[str]) -> dict[str, dict[str, float]]:
    """Field validator body for a pack's `extra_terms`: only the rule's own groups, valid terms."""
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown group {unknown[0]!r}; groups are {', '.join(known)}")
    return check_groups(value)


@dataclass(frozen=True)
class Balance:
    """A two-sided judgement: the `pro` group must reach `threshold` and beat the `con` group by
    `margin`; the three texts name the outcomes (below threshold, outweighed, found)."""

    pro: str
    con: str
    absent: str
    outweighed: str
    found: str


def weigh(lexicon: Lexicon, message: ParsedMessage, subject_weight: float, balance: Balance,
          threshold: float, margin: float) -> tuple[bool, Explanation]:
    """Judge the message's subject and body on `balance`; the verdict and its explanation."""
    return balanced(lexicon.hits_message(message, subject_weight), balance, threshold, margin)


def balanced(evidence: tuple[Evidence, ...], balance: Balance, threshold: float,
             margin: float) -> tuple[bool, Explanation]:
    """The two-sided judgement of `weigh` on evidence already gathered."""
    scores = group_scores(evidence)
    b = balance
    pro, con = scores.get(b.pro, 0.0), scores.get(b.con, 0.0)
    net = round(pro - con, 3)
    if pro < threshold:
        hit, why = False, f"{b.absent}: {b.pro} {pro:g} < {threshold:g}"
    elif net < margin:
        hit, why = False, f"{b.outweighed}: {b.pro} {pro:g} - {b.con} {con:g} < {margin:g}"
    else:
        hit, why = True, (f"{b.found}: {b.pro} {pro:g} >= {threshold:g} and {b.pro} - {b.con} "
                          f"{con:g} = {net:g} >= {margin:g}")
    return hit, Explanation(why, ((b.pro, pro), (b.con, con)), ((b.pro, threshold), ("margin", margin)), evidence)
