"""Searching a text with a pattern that can only match where the text has a digit, cheaply.

The price and offer terms of the commercial rule are regular expressions such as
`\\b\\d{1,3}\\s?mil\\s(?:pesos|la|el)\\b`. Python's `re` tries such a pattern at every position of
the text (there is no literal to skip to), about 150-400 us on a 5 KB body each; fourteen of them
were most of a decision's cost. But each of them consumes a digit in every match, a few characters
at most after the match starts. So:

- a text with no digit cannot match (one scan for digits per text, shared by every pattern);
- a match must start at most `lead` characters before one of the text's digits, where `lead` is
  the pattern's widest stretch before its first required digit: only those starts are tried, with
  `Pattern.match` at each (which sees the real text before the start, so `\\b` and lookbehinds
  judge as in a full search). The first start that matches is the match `search` would return,
  because `search` tries every start in order and no other start can match.

`plan` works the two facts out from the parsed pattern; a pattern it cannot bound is searched as
usual (after the no-digit check when it still needs a digit). Tests compare with `re.search`.
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


@dataclass(frozen=True)
class Plan:
    """What is known of every match of one pattern."""

    needs_digit: bool  # every match consumes a (Unicode) decimal digit
    lead: int | None  # and that digit is at most this many characters after the match's start


NO_PLAN = Plan(False, None)


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


def plan(pattern: re.Pattern[str]) -> Plan:
    """The plan for one compiled pattern (NO_PLAN when nothing can be promised)."""
    try:
        parsed = P.parse(pattern.pattern, pattern.flags & ~re.UNICODE)
    except (re.error, TypeError, ValueError, AttributeError):  # pragma: no cover - compiled already
        return NO_PLAN
    needs, lead = _sequence(list(parsed.data))
    return Plan(needs, lead if needs else None)


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


def search(pattern: re.Pattern[str], how: Plan, text: str, digits: list[int]) -> re.Match[str] | None:
    """`pattern.search(text)`, given its plan and `digit_positions(text)`."""
    if not how.needs_digit:
        return pattern.search(text)
    if not digits:
        return None
    lead = how.lead
    if lead is None:  # a match may start anywhere before its digit
        return pattern.search(text)
    starts = _starts(digits, lead)
    if starts is None:
        return pattern.search(text, max(0, digits[0] - lead))
    for start in starts:
        found = pattern.match(text, start)
        if found is not None:
            return found
    return None


def _starts(digits: list[int], lead: int) -> list[int] | None:
    """Every start within `lead` characters before a digit, in order (None: too many to try)."""
    out: list[int] = []
    last = -1
    for d in digits:
        low = max(d - lead, last + 1)
        out.extend(range(low, d + 1))
        last = max(last, d)
        if len(out) > MAX_STARTS:
            return None
    return out


__all__ = ["NO_PLAN", "Plan", "digit_positions", "plan", "search"]
