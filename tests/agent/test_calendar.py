"""The business calendar against deadlines worked out by hand (2026–2027 calendars).

Japanese holidays used below: 2026-04-29 Showa Day, 05-03/04/05 Constitution,
Greenery and Children's Day, 05-06 substitute holiday (05-03 was a Sunday),
09-21/22/23 (22 is a "citizens' holiday" between two holidays), 11-03 Culture
Day, 11-23 Labour Thanksgiving; 2027-03-22 substitute for the vernal equinox
on Sunday 03-21. The year-end break is 12/30–1/3.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from agent.policy.calendar import WEEKDAYS, BusinessCalendar

JST = ZoneInfo("Asia/Tokyo")
MICROSOFT = BusinessCalendar(start=time(9, 0), end=time(17, 30))
SKYARCH = BusinessCalendar(start=time(10, 0), end=time(18, 0))
NTT_ENTRY = BusinessCalendar(days=frozenset(WEEKDAYS), start=time(9), end=time(21),
                             japanese_holidays=False, year_end_break=False)
ALWAYS = BusinessCalendar(always=True)


def jst(*args: int) -> datetime:
    return datetime(*args, tzinfo=JST)  # type: ignore[misc]


@pytest.mark.parametrize(("calendar", "start", "hours", "due"), [
    pytest.param(MICROSOFT, jst(2026, 11, 20, 17, 50), 2, jst(2026, 11, 24, 11, 0),
                 id="friday-17:50-sev-B-after-hours-monday-is-a-holiday"),
    pytest.param(SKYARCH, jst(2026, 11, 20, 17, 50), 2, jst(2026, 11, 24, 11, 50),
                 id="friday-17:50-skyarch-ten-minutes-left-that-day"),
    pytest.param(MICROSOFT, jst(2026, 11, 2, 16, 0), 4, jst(2026, 11, 4, 11, 30),
                 id="eve-of-culture-day"),
    pytest.param(MICROSOFT, jst(2026, 4, 30, 17, 0), 4, jst(2026, 5, 1, 12, 30),
                 id="golden-week-between-holidays"),
    pytest.param(MICROSOFT, jst(2026, 5, 1, 17, 0), 2, jst(2026, 5, 7, 10, 30),
                 id="golden-week-across-the-substitute-holiday"),
    pytest.param(MICROSOFT, jst(2026, 12, 29, 15, 0), 4, jst(2027, 1, 4, 10, 30),
                 id="12-29-across-the-year-end-break"),
    pytest.param(MICROSOFT, jst(2026, 9, 18, 17, 0), 1, jst(2026, 9, 24, 9, 30),
                 id="silver-week-with-the-citizens-holiday"),
    pytest.param(NTT_ENTRY, jst(2026, 11, 22, 20, 30), 2, jst(2026, 11, 23, 10, 30),
                 id="ntt-entry-every-day-9-to-21-holidays-open"),
    pytest.param(ALWAYS, jst(2026, 12, 31, 23, 0), 2, jst(2027, 1, 1, 1, 0),
                 id="24-365-counts-every-hour"),
])
def test_adding_business_hours(calendar: BusinessCalendar, start: datetime, hours: float,
                               due: datetime) -> None:
    assert calendar.add_business_time(start, timedelta(hours=hours)) == due
    assert calendar.business_time_between(start, due) == timedelta(hours=hours)


@pytest.mark.parametrize(("recovered", "due"), [
    pytest.param(jst(2026, 11, 16, 15, 0), jst(2026, 11, 18, 18, 0), id="monday-to-wednesday"),
    pytest.param(jst(2026, 11, 20, 18, 28), jst(2026, 11, 25, 18, 0),
                 id="friday-night-over-a-holiday-monday"),
    pytest.param(jst(2027, 3, 19, 14, 0), jst(2027, 3, 24, 18, 0),
                 id="over-the-substitute-holiday"),
    pytest.param(jst(2026, 12, 28, 15, 0), jst(2027, 1, 4, 18, 0),
                 id="into-the-year-end-break"),
    pytest.param(jst(2026, 5, 3, 10, 0), jst(2026, 5, 8, 18, 0),
                 id="recovered-on-a-holiday-counts-from-the-next-business-day"),
])
def test_a_report_due_two_business_days_after_recovery(recovered: datetime,
                                                       due: datetime) -> None:
    assert SKYARCH.add_business_days(recovered, 2) == due


@pytest.mark.parametrize(("moment", "open_"), [
    pytest.param(jst(2026, 11, 20, 10, 0), True, id="friday-morning"),
    pytest.param(jst(2026, 11, 20, 18, 0), False, id="closing-time-is-closed"),
    pytest.param(jst(2026, 11, 21, 12, 0), False, id="saturday"),
    pytest.param(jst(2026, 11, 23, 12, 0), False, id="labour-thanksgiving"),
    pytest.param(jst(2026, 5, 6, 12, 0), False, id="substitute-holiday"),
    pytest.param(jst(2026, 12, 30, 12, 0), False, id="year-end-break"),
    pytest.param(jst(2027, 1, 4, 10, 0), True, id="first-business-day"),
])
def test_is_open(moment: datetime, open_: bool) -> None:
    assert SKYARCH.is_open(moment) is open_


def test_next_open_from_a_closed_moment_is_the_next_opening() -> None:
    assert SKYARCH.next_open(jst(2026, 5, 2, 11, 0)) == jst(2026, 5, 7, 10, 0)
    assert SKYARCH.next_open(jst(2026, 5, 7, 11, 0)) == jst(2026, 5, 7, 11, 0)


def test_extra_closed_days_and_a_midnight_end() -> None:
    late = BusinessCalendar(start=time(18), end=time(0), closed=frozenset({date(2026, 11, 19)}))
    assert late.is_open(jst(2026, 11, 20, 23, 59))
    assert not late.is_open(jst(2026, 11, 19, 20, 0))
    assert late.add_business_time(jst(2026, 11, 18, 23, 0), timedelta(hours=2)) == \
        jst(2026, 11, 20, 19, 0)


def test_instants_in_other_zones_are_the_same_instants() -> None:
    utc_friday_night = datetime(2026, 11, 20, 8, 50, tzinfo=ZoneInfo("UTC"))  # 17:50 JST
    assert MICROSOFT.add_business_time(utc_friday_night, timedelta(hours=2)) == \
        jst(2026, 11, 24, 11, 0)
