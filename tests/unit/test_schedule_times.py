"""When schedules fire: daylight-saving transitions, crontab day-of-week meaning, coalescing of
missed fire times, interval fire times shared by replicas, stable schedule ids. Pure."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger

from bot.config import ScheduleSettings
from bot.schedule import (
    CrontabTrigger,
    crontab_weekdays,
    fire_times,
    interval_trigger,
    latest_fire_time,
    schedule_id,
    schedule_label,
)

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def apscheduler_fire_times(cron: str, zone: ZoneInfo, start: datetime,
                           end: datetime) -> list[datetime]:
    trigger = CronTrigger.from_crontab(cron, timezone=zone)
    times = []
    moment = trigger.get_next_fire_time(None, start)
    while moment < end:
        times.append(moment)
        moment = trigger.get_next_fire_time(moment, moment)
    return times


def per_day(times: list[datetime], zone: ZoneInfo) -> Counter[date]:
    return Counter(t.astimezone(zone).date() for t in times)


# --- daylight saving ----------------------------------------------------------------------


def test_spring_forward_nonexistent_two_oclock_fires_once_at_three() -> None:
    # 2025-03-30: Amsterdam clocks jump from 02:00 CET to 03:00 CEST; 02:00 does not exist.
    times = fire_times("0 2 * * *", "Europe/Amsterdam", datetime(2025, 3, 28, tzinfo=AMSTERDAM),
                       datetime(2025, 4, 2, tzinfo=AMSTERDAM))
    assert set(per_day(times, AMSTERDAM).values()) == {1}
    assert len(times) == 5
    transition_day = times[2]
    assert transition_day.astimezone(UTC) == utc(2025, 3, 30, 1, 0)
    assert (transition_day.hour, transition_day.utcoffset()) == (3, timedelta(hours=2))
    assert [t.astimezone(UTC).hour for t in times] == [1, 1, 1, 0, 0]


def test_spring_forward_apscheduler_itself_fires_once_after_the_gap() -> None:
    """APScheduler 3.11 alone: one fire on the transition day, at the instant 01:00 UTC
    (03:00 CEST), given as the non-existent wall time 02:00+01:00."""
    times = apscheduler_fire_times("0 2 * * *", AMSTERDAM, datetime(2025, 3, 28, tzinfo=AMSTERDAM),
                                   datetime(2025, 4, 2, tzinfo=AMSTERDAM))
    assert set(per_day(times, AMSTERDAM).values()) == {1}
    assert times[2].astimezone(UTC) == utc(2025, 3, 30, 1, 0)
    assert (times[2].hour, times[2].utcoffset()) == (2, timedelta(hours=1))


def test_fall_back_repeated_two_oclock_fires_once_at_the_first_occurrence() -> None:
    # 2025-10-26: Amsterdam clocks go back from 03:00 CEST to 02:00 CET; 02:00 happens twice.
    times = fire_times("0 2 * * *", "Europe/Amsterdam", datetime(2025, 10, 24, tzinfo=AMSTERDAM),
                       datetime(2025, 10, 29, tzinfo=AMSTERDAM))
    assert set(per_day(times, AMSTERDAM).values()) == {1}
    assert [t.astimezone(UTC) for t in times] == [
        utc(2025, 10, 24, 0), utc(2025, 10, 25, 0), utc(2025, 10, 26, 0),
        utc(2025, 10, 27, 1), utc(2025, 10, 28, 1)]
    assert times[2].utcoffset() == timedelta(hours=2)


def test_fall_back_apscheduler_itself_fires_twice() -> None:
    """APScheduler 3.11 alone fires a fixed 02:00 in both passes of the repeated hour: this is
    what CrontabTrigger corrects."""
    times = apscheduler_fire_times("0 2 * * *", AMSTERDAM,
                                   datetime(2025, 10, 24, tzinfo=AMSTERDAM),
                                   datetime(2025, 10, 29, tzinfo=AMSTERDAM))
    assert per_day(times, AMSTERDAM)[date(2025, 10, 26)] == 2
    assert [t.astimezone(UTC) for t in times if t.date() == date(2025, 10, 26)] == [
        utc(2025, 10, 26, 0), utc(2025, 10, 26, 1)]


def test_fall_back_wildcard_hour_fires_in_both_passes_like_cron() -> None:
    times = fire_times("*/30 * * * *", "Europe/Amsterdam",
                       datetime(2025, 10, 26, 1, 0, tzinfo=AMSTERDAM),
                       datetime(2025, 10, 26, 3, 0, tzinfo=AMSTERDAM))
    assert [t.astimezone(UTC) for t in times] == [
        utc(2025, 10, 25, 23, 0), utc(2025, 10, 25, 23, 30), utc(2025, 10, 26, 0, 0),
        utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 1, 0), utc(2025, 10, 26, 1, 30)]
    assert [t.strftime("%H:%M%z") for t in times] == [
        "01:00+0200", "01:30+0200", "02:00+0200", "02:30+0200", "02:00+0100", "02:30+0100"]


def test_spring_forward_half_past_two_fires_at_half_past_three() -> None:
    times = fire_times("30 2 * * *", "Europe/Amsterdam", datetime(2025, 3, 29, tzinfo=AMSTERDAM),
                       datetime(2025, 3, 31, tzinfo=AMSTERDAM))
    assert [t.strftime("%d %H:%M%z") for t in times] == ["29 02:30+0100", "30 03:30+0200"]


@pytest.mark.parametrize(("start", "end"), [
    (datetime(2025, 3, 8, tzinfo=NEW_YORK), datetime(2025, 3, 12, tzinfo=NEW_YORK)),
    (datetime(2025, 11, 1, tzinfo=NEW_YORK), datetime(2025, 11, 5, tzinfo=NEW_YORK)),
])
def test_new_york_transitions_fire_once_a_day(start: datetime, end: datetime) -> None:
    times = fire_times("30 1 * * *", "America/New_York", start, end)
    assert set(per_day(times, NEW_YORK).values()) == {1}
    assert len(times) == 4


def test_fire_times_are_aware_in_the_zone_and_end_is_exclusive() -> None:
    times = fire_times("0 8 * * *", "Europe/Amsterdam", datetime(2026, 1, 5, 8, tzinfo=AMSTERDAM),
                       datetime(2026, 1, 7, 8, tzinfo=AMSTERDAM))
    assert times == [datetime(2026, 1, 5, 8, tzinfo=AMSTERDAM),
                     datetime(2026, 1, 6, 8, tzinfo=AMSTERDAM)]
    assert all(t.tzinfo == AMSTERDAM for t in times)


# --- crontab meaning ----------------------------------------------------------------------


def weekdays_fired(cron: str) -> list[str]:
    monday = datetime(2025, 6, 2, tzinfo=AMSTERDAM)
    return [t.strftime("%a") for t in fire_times(cron, "Europe/Amsterdam", monday,
                                                 monday + timedelta(days=7))]


def test_weekday_numbers_are_crontabs_not_apschedulers() -> None:
    assert weekdays_fired("0 8 * * 1-5") == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    assert weekdays_fired("0 8 * * 0") == ["Sun"]
    assert weekdays_fired("0 8 * * 7") == ["Sun"]
    assert weekdays_fired("0 8 * * sat,sun") == ["Sat", "Sun"]
    monday = datetime(2025, 6, 2, tzinfo=AMSTERDAM)
    raw = apscheduler_fire_times("0 8 * * 1-5", AMSTERDAM, monday, monday + timedelta(days=7))
    assert [t.strftime("%a") for t in raw] == ["Tue", "Wed", "Thu", "Fri", "Sat"]


@pytest.mark.parametrize(("field", "days"), [
    ("*", {0, 1, 2, 3, 4, 5, 6}), ("1-5", {1, 2, 3, 4, 5}), ("mon-fri", {1, 2, 3, 4, 5}),
    ("0,6", {0, 6}), ("5-7", {5, 6, 0}), ("*/2", {0, 2, 4, 6}), ("1-5/2", {1, 3, 5}),
    ("SUN", {0}),
])
def test_crontab_weekdays(field: str, days: set[int]) -> None:
    assert crontab_weekdays(field) == days


@pytest.mark.parametrize("field", ["8", "5-1", "funday", "*/0", "1-"])
def test_bad_weekdays_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        crontab_weekdays(field)


def test_day_of_month_and_weekday_both_restricted_match_either() -> None:
    start = datetime(2025, 6, 1, tzinfo=AMSTERDAM)
    times = fire_times("0 8 1 * 1", "Europe/Amsterdam", start, start + timedelta(days=35))
    assert [t.strftime("%a %d") for t in times] == [
        "Sun 01", "Mon 02", "Mon 09", "Mon 16", "Mon 23", "Mon 30", "Tue 01"]


def test_bad_expressions_are_refused() -> None:
    with pytest.raises(ValueError, match="5-field"):
        CrontabTrigger("0 8 * *", "UTC")
    with pytest.raises(ValueError, match=r"\S"):
        CrontabTrigger("61 8 * * *", "UTC")


# --- coalescing and replicas --------------------------------------------------------------


def test_latest_fire_time_coalesces_missed_times_into_the_last() -> None:
    trigger = CrontabTrigger("*/5 * * * *", "Europe/Amsterdam")
    now = utc(2026, 3, 2, 10, 17, 30)
    assert latest_fire_time(trigger, now, not_before=now - timedelta(hours=6)) == utc(
        2026, 3, 2, 10, 15)
    assert latest_fire_time(trigger, utc(2026, 3, 2, 10, 15), not_before=now - timedelta(
        hours=1)) == utc(2026, 3, 2, 10, 15)
    assert latest_fire_time(trigger, now, not_before=utc(2026, 3, 2, 10, 16)) is None


def test_interval_fire_times_do_not_depend_on_when_the_trigger_was_made() -> None:
    one, other = interval_trigger(7), interval_trigger(7)
    now = utc(2026, 3, 2, 10, 0, 3)
    first = one.get_next_fire_time(None, now)
    assert first == other.get_next_fire_time(None, now + timedelta(seconds=2))
    assert first.timestamp() % 7 == 0
    assert latest_fire_time(one, now, not_before=now - timedelta(seconds=7)) == first - timedelta(
        seconds=7)


def test_schedule_ids_are_stable_and_distinct() -> None:
    base = ScheduleSettings(channel="C0HEALTH", cron="0 8 * * 1-5", timezone="Europe/Amsterdam",
                            servers=("EX01", "EX02"), mention="S0ONCALL")
    same = ScheduleSettings(channel="C0HEALTH", cron="0  8 * * 1-5",
                            timezone="Europe/Amsterdam", servers=("ex02", "EX01"))
    assert schedule_id(base) == schedule_id(same)
    assert schedule_id(base).startswith("health-")
    others = [
        ScheduleSettings(channel="C0OTHER", cron="0 8 * * 1-5", timezone="Europe/Amsterdam",
                         servers=("EX01", "EX02")),
        ScheduleSettings(channel="C0HEALTH", cron="0 9 * * 1-5", timezone="Europe/Amsterdam",
                         servers=("EX01", "EX02")),
        ScheduleSettings(channel="C0HEALTH", cron="0 8 * * 1-5", timezone="UTC",
                         servers=("EX01", "EX02")),
        ScheduleSettings(channel="C0HEALTH", cron="0 8 * * 1-5", timezone="Europe/Amsterdam"),
        ScheduleSettings(channel="C0HEALTH", every_seconds=60),
    ]
    assert len({schedule_id(s) for s in [base, *others]}) == 6
    assert schedule_label(base) == "0 8 * * 1-5 (Europe/Amsterdam) · EX01, EX02"
    assert schedule_label(others[-1]) == "every 60 s · all servers"
