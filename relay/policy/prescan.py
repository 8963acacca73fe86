"""Searching a text with a `re:` term only where it can match: near a digit, or at a literal word.

The text rules' regular-expression terms (prices, case numbers, forms of address) are written
like `\\b\\d{1,3}\\s?mil\\s(?:pesos|la|el)\\b` or `\\b(?:docena|libra|kilo)\\W{0,3}...\\d`. Python's `re`
tries such a pattern at every position of the text: a leading `\\b` or class leaves it no literal
to skip to, so each costs 150-400 us on a 5 KB body, and fourteen of them were most of a
decision's cost. What every match of a pattern must contain is worked out once, from the parsed
pattern (`plan`):

- **a digit**, at most `lead` characters after the match's start: a text with no digit cannot
  match (one scan for digits per text, shared by every pattern), and only the starts within
  `lead` characters before one of the text's digits are tried;
- **one of a few literal strings at its very start** (after `\\b` and other zero-width checks),
  such as `docena`, `libra`, `kilo`: only the places where one of them occurs (`str.find`) are tried.

A start is tried with `Pattern.match`, which sees the real text before the start, so `\\b` and
lookbehinds judge as in a full search. The first start that matches is the match `search` would
return: `search` tries every start in order, and no other start can match. When there are too many
starts, or nothing can be promised, the pattern is searched as usual (from the first possible
start). Tests compare the result with `re.search` on every corpus message and on generated text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from re import _constants as C  # type: ignore[attr-defined]  # sre internals, stable since 3.11
from re import _parser as P  # type: ignore[attr-defined]
from typing import Any

_DIGIT = re.compile(r"\d")
_ASCII_DIGITS = "0123456789"
MAX_STARTS = 64  # beyond this many candidate starts one search from the first is as cheap
MAX_ANCHORS = 64  # literal strings a pattern may start with, at most
MIN_ANCHOR = 2  # characters: a one-letter anchor would match nearly everywhere
_ZERO_WIDTH = (C.AT, C.ASSERT, C.ASSERT_NOT)


@dataclass(frozen=True)
class Plan:
    """What is known of every match of one pattern."""

    needs_digit: bool  # every match consumes a (Unicode) decimal digit
    lead: int | None  # and that digit is at most this many characters after the match's start
    anchors: tuple[str, ...] = ()  # every match starts with one of these (case as written)


NO_PLAN = Plan(False, None)


# -- digits --------------------------------------------------------------------------------------
def _only_digits(items: list[tuple[Any, Any]]) -> bool:
    """An IN set that matches digits and nothing else."""
    if not items:
        return False
    for op, arg in items:
        if op is C.CATEGORY and arg is C.CATEGORY_DIGIT:
            continue
        if op is C.LITERAL and chr(arg) in _ASCII_DIGITS:
            continue
        if op is C.RANGE and ord("0") <= arg[0] <= arg[1] <= ord("9"):
            continue
        return False
    return True


def _width(items: list[tuple[Any, Any]]) -> int | None:
    """The widest these items can match (None: unbounded)."""
    high = P.SubPattern(P.State(), items).getwidth()[1]
    return None if high >= C.MAXREPEAT else int(high)


def _item(op: Any, arg: Any) -> tuple[bool, int | None]:
    """(every match of this item consumes a digit, the widest stretch before the first such digit)."""
    if op is C.IN:
        return (True, 0) if _only_digits(arg) else (False, None)
    if op is C.LITERAL:
        return (True, 0) if chr(arg) in _ASCII_DIGITS else (False, None)
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
        low, _high, sub = arg
        if low >= 1:
            return _sequence(list(sub))
        return False, None
    if op is C.SUBPATTERN:
        return _sequence(list(arg[-1]))
    if op is C.ATOMIC_GROUP:
        return _sequence(list(arg))
    if op is C.BRANCH:
        leads: list[int] = []
        for branch in arg[1]:
            needs, lead = _sequence(list(branch))
            if not needs:
                return False, None
            if lead is None:
                return True, None
            leads.append(lead)
        return True, max(leads)
    return False, None  # AT, ASSERT, ASSERT_NOT, GROUPREF, ANY, NOT_LITERAL, ...: no digit promised


def _sequence(items: list[tuple[Any, Any]]) -> tuple[bool, int | None]:
    before = 0
    for n, (op, arg) in enumerate(items):
        needs, lead = _item(op, arg)
        if needs:
            if lead is None:
                return True, None
            return True, before + lead
        width = _width(items[n:n + 1])
        if width is None:  # unbounded before the first digit: still needs one, somewhere later
            return any(_item(o, a)[0] for o, a in items[n + 1:]), None
        before += width
    return False, None


# -- literal anchors ---------------------------------------------------------------------------------
def _letters(op: Any, arg: Any) -> list[str] | None:
    """The characters one item matches when it is a literal or a small set of literals."""
    if op is C.LITERAL:
        return [chr(arg)]
    if op is C.IN and 0 < len(arg) <= 4 and all(o is C.LITERAL for o, _ in arg):
        return [chr(a) for _, a in arg]
    return None


def _anchors(items: list[tuple[Any, Any]]) -> list[str] | None:
    """Strings one of which starts every match of this sequence, or None."""
    n = 0
    while n < len(items) and items[n][0] in _ZERO_WIDTH:
        n += 1  # \b, lookarounds: they consume nothing, the match starts where the next item does
    if n < len(items):
        op, arg = items[n]
        if op is C.SUBPATTERN and not (arg[1] & re.IGNORECASE):
            return _anchors(list(arg[-1]) + items[n + 1:])  # a group is its items, for what starts a match
        if op is C.BRANCH:
            found: list[str] = []
            for branch in arg[1]:
                part = _anchors(list(branch))
                if not part:
                    return None
                found.extend(part)
            return sorted(set(found)) if len(set(found)) <= MAX_ANCHORS else None
    prefixes = [""]
    for op, arg in items[n:]:
        letters = _letters(op, arg)
        if letters is None or len(prefixes) * len(letters) > MAX_ANCHORS:
            break
        prefixes = [p + c for p in prefixes for c in letters]
    return prefixes if all(len(p) >= MIN_ANCHOR for p in prefixes) else None


def plan(pattern: re.Pattern[str]) -> Plan:
    """The plan for one compiled pattern (NO_PLAN when nothing can be promised)."""
    try:
        parsed = P.parse(pattern.pattern, pattern.flags & ~re.UNICODE)
    except (re.error, TypeError, ValueError, AttributeError):  # pragma: no cover - compiled already
        return NO_PLAN
    needs, lead = _sequence(list(parsed.data))
    anchors = () if parsed.state.flags & re.IGNORECASE else tuple(_anchors(list(parsed.data)) or ())
    return Plan(needs, lead if needs else None, anchors)


# -- searching ---------------------------------------------------------------------------------------
def digit_positions(text: str) -> list[int]:
    """Where `text` has a character `\\d` matches, in order."""
    if text.isascii():
        found: list[int] = []
        for digit in _ASCII_DIGITS:
            at = text.find(digit)
            while at >= 0:
                found.append(at)
                at = text.find(digit, at + 1)
        found.sort()
        return found
    return [m.start() for m in _DIGIT.finditer(text)]


def _anchor_starts(text: str, anchors: tuple[str, ...]) -> list[int] | None:
    found: set[int] = set()
    for anchor in anchors:
        at = text.find(anchor)
        while at >= 0:
            found.add(at)
            if len(found) > MAX_STARTS:
                return None
            at = text.find(anchor, at + 1)
    return sorted(found)


def _digit_starts(digits: list[int], lead: int) -> list[int] | None:
    """Every start within `lead` characters before a digit, in order (None: too many to try)."""
    out: list[int] = []
    last = -1
    for d in digits:
        out.extend(range(max(d - lead, last + 1), d + 1))
        last = d
        if len(out) > MAX_STARTS:
            return None
    return out


def search(pattern: re.Pattern[str], how: Plan, text: str, digits: list[int]) -> re.Match[str] | None:
    """`pattern.search(text)`, given its plan and (when it needs a digit) `digit_positions(text)`."""
    if how.needs_digit and not digits:
        return None
    starts: list[int] | None = None
    first = 0
    if how.anchors:
        starts = _anchor_starts(text, how.anchors)
    if starts is None and how.needs_digit and how.lead is not None:
        starts = _digit_starts(digits, how.lead)
        first = max(0, digits[0] - how.lead)
    if starts is None:
        return pattern.search(text, first)
    for start in starts:
        found = pattern.match(text, start)
        if found is not None:
            return found
    return None


__all__ = ["NO_PLAN", "Plan", "digit_positions", "plan", "search"]
