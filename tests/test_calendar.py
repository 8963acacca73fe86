"""Working-time calendar: worked examples and properties (hypothesis)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.directory import Schedule
from relay.policy.calendar import is_day_off, is_working, next_working_start

BOGOTA = ZoneInfo("America/Bogota")
WEEK = tuple(((time(8), time(12)), (time(14), time(18))) if d < 5 else () for d in range(7))


def sched(zone: str = "America/Bogota", holidays: str | None = "CO",
          leave: tuple[tuple[date, date], ...] = ()) -> Schedule:
    return Schedule(ZoneInfo(zone), WEEK, holidays, leave)


@pytest.mark.parametrize(("at", "expected"), [
    ("2026-11-24T09:00:00-05:00", None),  # Tuesday morning: at work
    ("2026-11-24T12:30:00-05:00", "2026-11-24T14:00:00-05:00"),  # lunch break
    ("2026-11-24T18:00:00-05:00", "2026-11-25T08:00:00-05:00"),  # end is exclusive
    ("2026-11-27T20:00:00-05:00", "2026-11-30T08:00:00-05:00"),  # Friday night
    ("2026-12-07T18:30:00-05:00", "2026-12-09T08:00:00-05:00"),  # 8 Dec is a holiday in CO
    ("2026-12-24T19:00:00-05:00", "2026-12-28T08:00:00-05:00"),  # Christmas
])
def test_bogota(at: str, expected: str | None) -> None:
    got = next_working_start(sched(), datetime.fromisoformat(at))
    assert got == (datetime.fromisoformat(expected) if expected else None)


def test_leave_is_skipped() -> None:
    s = sched(leave=((date(2026, 12, 14), date(2026, 12, 18)),))
    got = next_working_start(s, datetime.fromisoformat("2026-12-15T10:00:00-05:00"))
    assert got == datetime.fromisoformat("2026-12-21T08:00:00-05:00")


def test_recipient_zone_and_dst() -> None:
    madrid = sched("Europe/Madrid", "ES")
    # Saturday 28 March 2026, night in Madrid; DST starts on Sunday 29 March: Monday is UTC+2.
    got = next_working_start(madrid, datetime(2026, 3, 28, 22, tzinfo=UTC))
    assert got == datetime.fromisoformat("2026-03-30T08:00:00+02:00")
    assert got is not None and got.utcoffset() == timedelta(hours=2)


def test_empty_schedule_never_holds_forever() -> None:
    empty = Schedule(BOGOTA, tuple(() for _ in range(7)), None)
    assert next_working_start(empty, datetime(2026, 1, 1, tzinfo=UTC)) is None


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError):
        next_working_start(sched(), datetime(2026, 1, 1))


ZONES = st.sampled_from(["America/Bogota", "Europe/Madrid", "America/New_York", "Asia/Tokyo",
                         "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago", "UTC"])
CALENDARS = st.sampled_from([None, "CO", "ES", "US", "JP", "CL"])
MINUTES = st.integers(0, 24 * 60 - 1)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    days = []
    for _ in range(7):
        marks = sorted(set(draw(st.lists(MINUTES, max_size=4))))
        pairs = zip(marks[::2], marks[1::2], strict=False)
        spans = tuple((time(a // 60, a % 60), time(b // 60, b % 60)) for a, b in pairs if b > a)
        days.append(spans)
    start = draw(st.dates(date(2025, 1, 1), date(2027, 12, 31)))
    leave = ((start, start + timedelta(days=draw(st.integers(0, 30)))),) if draw(st.booleans()) else ()
    return Schedule(ZoneInfo(draw(ZONES)), tuple(days), draw(CALENDARS), leave)


INSTANTS = st.datetimes(datetime(2025, 1, 1), datetime(2027, 12, 31)).map(lambda d: d.replace(tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(schedules(), INSTANTS)
def test_next_start_properties(schedule: Schedule, instant: datetime) -> None:
    due = next_working_start(schedule, instant)
    if due is None:
        return  # covered by test_none_means_at_work_or_no_time
    assert due >= instant, "never earlier than the input"
    assert due > instant or not is_working(schedule, instant)
    assert is_working(schedule, due), "always inside the recipient's working hours"
    local_day = due.astimezone(schedule.zone).date()
    assert not is_day_off(schedule, local_day), "never on a holiday or on leave"
    assert due.tzinfo is not None and due.utcoffset() == due.astimezone(schedule.zone).utcoffset()


@settings(max_examples=200, deadline=None)
@given(schedules(), INSTANTS)
def test_none_means_at_work_or_no_time(schedule: Schedule, instant: datetime) -> None:
    if next_working_start(schedule, instant) is None:
        # Leave lasts at most a month and holidays never fill a week, so any weekly span means
        # a working period exists within the search window.
        assert is_working(schedule, instant) or all(not day for day in schedule.weekly)


@settings(max_examples=100, deadline=None)
@given(schedules(), INSTANTS, st.integers(1, 10_000))
def test_nothing_earlier_is_skipped(schedule: Schedule, instant: datetime, minutes: int) -> None:
    """No working instant lies between the input and the returned start (sampled)."""
    due = next_working_start(schedule, instant)
    if due is None:
        return
    probe = instant + (due - instant) * (minutes / 10_001)
    assert not is_working(schedule, probe) or probe >= due
