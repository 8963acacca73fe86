"""Working time of one person: weekly spans in their own zone, minus holidays and leave.

Pure: the holiday tables come from the `holidays` package (computed, no I/O) and are cached.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as holidays_lib

from relay.directory import Schedule

SEARCH_DAYS = 800  # how far ahead we look for a working period before giving up


@lru_cache(maxsize=512)
def _holiday_dates(calendar: str, year: int) -> frozenset[date]:
    country, _, subdiv = calendar.partition("-")
    table = holidays_lib.country_holidays(country, subdiv=subdiv or None, years=year)
    return frozenset(table.keys())


def is_day_off(schedule: Schedule, day: date) -> bool:
    """Holiday in the person's calendar, or a day of leave (inclusive ranges)."""
    if schedule.holidays and day in _holiday_dates(schedule.holidays, day.year):
        return True
    return any(start <= day <= end for start, end in schedule.leave)


def _at(day: date, moment: time, zone: ZoneInfo) -> datetime:
    """The instant a wall-clock time happens; a time skipped by a DST jump moves forward."""
    naive = datetime.combine(day, moment)
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)


def periods(schedule: Schedule, day: date) -> list[tuple[datetime, datetime]]:
    """The working periods of a local calendar day, as aware instants (empty on days off)."""
    if is_day_off(schedule, day):
        return []
    return [(_at(day, s, schedule.zone), _at(day, e, schedule.zone)) for s, e in schedule.weekly[day.weekday()]]


def is_working(schedule: Schedule, instant: datetime) -> bool:
    """True when the instant falls inside one of the person's working periods."""
    local = instant.astimezone(schedule.zone)
    return any(s <= instant < e for s, e in periods(schedule, local.date()))


def next_working_start(schedule: Schedule, instant: datetime) -> datetime | None:
    """None if the person is at work at `instant`; otherwise the start of their next working
    period, in their own zone. Also None when no period exists in the next SEARCH_DAYS days
    (an empty schedule): a message must never be held forever."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    first = instant.astimezone(schedule.zone).date() - timedelta(days=1)  # a span may start yesterday
    for offset in range(SEARCH_DAYS):
        for start, end in periods(schedule, first + timedelta(days=offset)):
            if start <= instant < end:
                return None
            if start > instant:
                return start
    return None
