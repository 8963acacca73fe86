"""Spanish (and English) wording of instants for notices."""

from __future__ import annotations

from datetime import datetime

DAYS_ES = ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo")
MONTHS_ES = ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto",
             "septiembre", "octubre", "noviembre", "diciembre")


def instant_es(at: datetime) -> str:
    """'lunes 30 de noviembre de 2026 a las 08:00 (Europe/Madrid, UTC+01:00)'."""
    offset = at.strftime("%z")
    zone = getattr(at.tzinfo, "key", None) or at.tzname() or ""
    return (f"{DAYS_ES[at.weekday()]} {at.day} de {MONTHS_ES[at.month - 1]} de {at.year} "
            f"a las {at:%H:%M} ({zone}, UTC{offset[:3]}:{offset[3:]})")


def instant_en(at: datetime) -> str:
    offset = at.strftime("%z")
    zone = getattr(at.tzinfo, "key", None) or at.tzname() or ""
    return f"{at:%A %d %B %Y at %H:%M} ({zone}, UTC{offset[:3]}:{offset[3:]})"
