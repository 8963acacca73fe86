"""Instants for people, through Babel (CLDR): the words of each language, the zone's name.

One wording per language, used by every notice and the pages people read:
  es_CO: "lunes 30 de noviembre de 2026 a las 08:00 (America/Bogota, UTC-05:00)"
  en:    "Monday 30 November 2026 at 08:00 (America/Bogota, UTC-05:00)"
Pure: an instant in, text out (the instant carries its zone: the recipient's or the institution's).
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from functools import lru_cache

from babel import Locale
from babel.dates import format_datetime

LOCALES = {"es": "es_CO", "en": "en"}
_PATTERNS = {"es": "EEEE d 'de' MMMM 'de' y 'a las' HH:mm", "en": "EEEE d MMMM y 'at' HH:mm"}


@lru_cache(maxsize=4)
def _locale(language: str) -> Locale:
    return Locale.parse(LOCALES.get(language, language))


def zone_label(at: datetime) -> str:
    """'America/Bogota, UTC-05:00': the zone's IANA name (or abbreviation) and its offset then."""
    offset = at.strftime("%z")
    zone = getattr(at.tzinfo, "key", None) or at.tzname() or ""
    return f"{zone}, UTC{offset[:3]}:{offset[3:]}"


def instant(at: datetime, language: str = "es") -> str:
    """The instant in `language` ("es" or "en"), in its own zone, with the zone named."""
    if at.tzinfo is None:
        raise ValueError("timezone-aware instants only")
    lang = "en" if language == "en" else "es"
    words = format_datetime(at, _PATTERNS[lang], tzinfo=at.tzinfo, locale=_locale(lang))
    return f"{words} ({zone_label(at)})"


def plural(count: int, one: str, many: str) -> str:
    """'1 destinatario', '3 destinatarios'."""
    return f"{count} {one if count == 1 else many}"


def local(at: datetime | None, zone: tzinfo) -> str:
    """'2026-11-30 08:00 -05 (America/Bogota)': an instant as people here read it, in the institution's
    zone with its name (the one short form of the CLI's tables and the admin pages; "" for none)."""
    if at is None:
        return ""
    here = at.astimezone(zone)
    return f"{here:%Y-%m-%d %H:%M %Z} ({getattr(zone, 'key', here.tzname())})"
