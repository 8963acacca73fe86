"""Spanish language helpers: wording of instants for notices; words and stems for the text rules."""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from typing import Any


def instant_es(at: datetime) -> str:
    """'lunes 30 de noviembre de 2026 a las 08:00 (Europe/Madrid, UTC+01:00)' (Babel, es_CO)."""
    from relay.when import instant

    return instant(at, "es")


def instant_en(at: datetime) -> str:
    """'Monday 30 November 2026 at 08:00 (Europe/Madrid, UTC+01:00)' (Babel, en)."""
    from relay.when import instant

    return instant(at, "en")


# --- Words for the text rules -------------------------------------------------------------------
# The Snowball Spanish stemmer (snowballstemmer, the Snowball project's own pure-Python build):
# an algorithm with no data files, so it is deterministic, fast (~2 µs a word, cached) and reduces
# the inflections that matter here — plural, gender, verb forms, derived nouns (notificar,
# notificó, notificación, notificaciones -> "notif"). A lemmatizer (simplemma) would need a
# dictionary of several MB and still miss administrative and platform vocabulary; matching needs
# only that the same word in any form gives the same key. Words are folded (accents, case) BEFORE
# stemming, so "notificacion" written without its accent stems like "notificación".

_WORD = re.compile(r"\w+")


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import snowballstemmer  # type: ignore[import-untyped]

    return snowballstemmer.stemmer("spanish")


@lru_cache(maxsize=65536)
def stem(folded_word: str) -> str:
    """The stem of one folded (lower-case, accent-free) word; digits and short words stay as they are."""
    if len(folded_word) <= 2 or not folded_word.isalpha():
        return folded_word
    return str(_stemmer().stemWord(folded_word))


def words(folded: str) -> list[tuple[str, int, int]]:
    """The words of a folded text, as (word, start, end) offsets."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(folded)]
