"""Scheduled health posts and the expiry sweep, on APScheduler 3 (the shell around bot.health).

Each configured schedule is an APScheduler job (``coalesce=True``, ``max_instances=1``). When
it runs, the job works out the schedule's latest fire time from the trigger and the clock, and
claims that fire time in the database (``Repository.claim_schedule_fire``: a unique row per
schedule and fire time). Only the replica whose claim wins checks the servers, posts the summary,
completes the fire, stores the results for the next post's comparison and posts the details in
the thread; the others do nothing but look again once the claim's lease has passed: a claim
never completed (its replica died before posting, or the post failed) is then taken over, so a
post is neither doubled nor lost. Missed fire times (downtime, a hung process) coalesce: on
start, and whenever a job runs late, only the latest fire time within ``misfire_grace`` is
posted.

While the database is unavailable nothing can be claimed, so nothing is posted: the claim of a
due fire time (a takeover's too) is tried again every ``database_retry`` (30 s) for as long as
it is the schedule's latest due time (a later fire time coalesces it, as above); once the
database is back, one replica's claim wins and that replica posts, once. A claim tried again
after an outage never takes over at once: when the fire time is already claimed, it is taken
over only after one more lease, so a replica that posted during the outage completes its post
first (below: every ``database_retry``, well within a lease) and it is not posted twice; a
replica that died holding the claim is taken over, so the post is not lost. A replica that
claimed before the database went away still posts, without the comparison with the previous
check (the check reads only the servers; the post says the comparison is missing), and its
results are stored if the database is back by then. A post made just before or during the
outage is completed (the same retry) once the database is back, so other replicas do not take
it over and post it again.

Schedule ids are a hash of what the schedule is (channel, cron or interval, time zone, servers),
so every replica and every restart agree on them. Interval triggers are anchored at the Unix
epoch so every replica computes the same fire times.

Cron expressions mean what crontab(5) says, not what APScheduler 3's ``from_crontab`` does with
them: day-of-week numbers are Sunday = 0 (or 7), where APScheduler 3 counts Monday = 0 (so
``1-5`` is Monday to Friday here); a restricted day-of-month *and* day-of-week match either, as
in cron. Across daylight-saving changes: a wall-clock time that does not exist that day (spring
forward) fires once, at the same offset past the gap (02:00 becomes 03:00 CEST, 02:30 becomes
03:30); a fixed time that occurs twice (autumn) fires once, at its first occurrence, where
APScheduler alone would fire twice. Jobs with ``*`` in the minute or hour fire as time passes,
in both passes of the repeated hour, as in cron.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final, NamedTuple, Protocol
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.analysis.model import FleetReport
from bot.analysis.verdict import server_verdict
from bot.config import ScheduleSettings, ServerSettings, Settings
from bot.health import findings_json, summarise
from bot.remediation.model import RemediationRequest
from bot.render.blocks import SlackMessage
from bot.render.health import render_health_summary
from bot.storage.outage import unavailable_reason
from bot.storage.repository import Repository

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
RunCheck = Callable[[tuple[ServerSettings, ...]], FleetReport]
ExpiredCallback = Callable[[Sequence[RemediationRequest]], None]


class PostMessage(Protocol):
    """Posts a message to a channel (in the thread of ``thread_ts`` when given); returns its
    ``ts``. Raises when Slack refuses."""

    def __call__(self, channel: str, message: SlackMessage, thread_ts: str | None) -> str: ...


DEFAULT_MISFIRE_GRACE: Final = timedelta(hours=6)
"""How late a missed post is still made (once, for the latest missed time)."""
DEFAULT_CLAIM_LEASE: Final = timedelta(minutes=15)
"""After this, an uncompleted claim may be taken over. Longer than a check and post take."""
DEFAULT_SWEEP_INTERVAL: Final = timedelta(minutes=1)
DEFAULT_DATABASE_RETRY: Final = timedelta(seconds=30)
"""While the database is unavailable: how often a due post's claim, or a made post's
completion, is tried again."""
INTERVAL_ANCHOR: Final = datetime(1970, 1, 1, tzinfo=UTC)
SWEEP_JOB_ID: Final = "expiry-sweep"
CATCH_UP_JOB_ID: Final = "catch-up"
_TAKEOVER_MARGIN: Final = timedelta(seconds=5)


# --- triggers ----------------------------------------------------------------------------

_CRON_DAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
"""crontab(5) day-of-week numbering: 0 (and 7) is Sunday."""
_APSCHEDULER_DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _cron_day(token: str, field: str) -> int:
    if token.isdigit():
        number = int(token)
        if number > 7:
            raise ValueError(f"day of week {token!r} in {field!r} is not 0-7 (0 and 7: Sunday)")
        return number
    name = token[:3].lower()
    if len(token) < 3 or name not in _CRON_DAYS:
        raise ValueError(f"day of week {token!r} in {field!r} is not a number 0-7 or a name")
    return _CRON_DAYS.index(name)


def crontab_weekdays(field: str) -> frozenset[int]:
    """The days (0 = Sunday .. 6 = Saturday) a crontab day-of-week field names:
    ``*``, ``1-5``, ``mon-fri``, ``0,6``, ``*/2``, ``1-5/2``, ``7`` (Sunday)."""
    days: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"step {step_text!r} in {field!r} is not a positive number")
        step = int(step_text) if slash else 1
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            start, _, end = base.partition("-")
            first, last = _cron_day(start, field), _cron_day(end, field)
            if first > last:
                raise ValueError(f"range {base!r} in {field!r} runs backwards")
        else:
            first = _cron_day(base, field)
            last = 6 if slash else first
        days.update(day % 7 for day in range(first, last + 1, step))
    return frozenset(days)


def _apscheduler_day_of_week(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "*"
    return ",".join(name for name in _APSCHEDULER_DAYS if _CRON_DAYS.index(name) in days)


def _in_zone(moment: datetime, zone: tzinfo) -> datetime:
    """``moment`` as a normalised wall-clock time of ``zone``."""
    return moment.astimezone(UTC).astimezone(zone)


def _is_second_occurrence(moment: datetime, zone: tzinfo) -> bool:
    """``moment`` is the second time its wall-clock time occurs (the autumn repeat)."""
    local = _in_zone(moment, zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


class CrontabTrigger(BaseTrigger):  # type: ignore[misc]
    """A five-field crontab expression in a time zone, with crontab(5) meanings (see the
    module docstring), built on ``CronTrigger.from_crontab``."""

    def __init__(self, expression: str, timezone: str | tzinfo = "UTC") -> None:
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"{expression!r} is not a 5-field cron expression "
                             "(minute hour day month weekday)")
        minute, hour, day, month, weekday = fields
        self.expression = " ".join(fields)
        self.timezone = ZoneInfo(timezone) if isinstance(timezone, str) else timezone
        day_of_week = _apscheduler_day_of_week(crontab_weekdays(weekday))
        if not day.startswith("*") and not weekday.startswith("*"):
            expressions = [f"{minute} {hour} {day} {month} *",
                           f"{minute} {hour} * {month} {day_of_week}"]
        else:
            expressions = [f"{minute} {hour} {day} {month} {day_of_week}"]
        self._triggers = tuple(CronTrigger.from_crontab(e, timezone=self.timezone)
                               for e in expressions)
        self._once_per_wall_time = not minute.startswith("*") and not hour.startswith("*")

    def _next(self, previous: datetime | None, now: datetime) -> datetime | None:
        candidates = [t.get_next_fire_time(previous, now) for t in self._triggers]
        found = [c for c in candidates if c is not None]
        return min(found) if found else None

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        candidate = self._next(previous_fire_time, now)
        while (candidate is not None and self._once_per_wall_time
               and _is_second_occurrence(candidate, self.timezone)):
            candidate = self._next(candidate, candidate)
        if candidate is None:
            return None
        return _in_zone(candidate, self.timezone)

    def __str__(self) -> str:
        return f"crontab[{self.expression} {self.timezone}]"

    def __repr__(self) -> str:
        return f"<CrontabTrigger ({self.expression!r}, timezone={str(self.timezone)!r})>"


def interval_trigger(seconds: int) -> IntervalTrigger:
    """Every ``seconds``, at multiples of ``seconds`` since the Unix epoch (the same fire
    times on every replica)."""
    return IntervalTrigger(seconds=seconds, start_date=INTERVAL_ANCHOR, timezone=UTC)


def schedule_trigger(schedule: ScheduleSettings) -> BaseTrigger:
    """The trigger of a configured schedule (``cron`` in its ``timezone``, or
    ``every_seconds``). Raises ValueError for an expression that cannot be used."""
    if schedule.cron is not None:
        try:
            return CrontabTrigger(schedule.cron, schedule.timezone)
        except ValueError as error:
            raise ValueError(f"schedule for {schedule.channel}: cron {schedule.cron!r}: "
                             f"{error}") from None
    if schedule.every_seconds is None:
        raise ValueError(f"schedule for {schedule.channel}: give cron or every_seconds")
    return interval_trigger(schedule.every_seconds)


def fire_times(cron: str, timezone: str, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time of ``cron`` in ``timezone`` from ``start`` (inclusive) to ``end``
    (exclusive), as aware datetimes in that time zone."""
    trigger = CrontabTrigger(cron, timezone)
    times: list[datetime] = []
    moment = trigger.get_next_fire_time(None, start)
    while moment is not None and moment < end:
        times.append(moment)
        moment = trigger.get_next_fire_time(moment, moment)
    return times


def latest_fire_time(trigger: BaseTrigger, now: datetime, *,
                     not_before: datetime) -> datetime | None:
    """The latest fire time of ``trigger`` at or before ``now`` and not before
    ``not_before``; None when there is none in that window."""
    latest: datetime | None = None
    moment: datetime | None = trigger.get_next_fire_time(None, not_before)
    while moment is not None and moment <= now:
        latest = moment
        moment = trigger.get_next_fire_time(moment, moment)
    return latest


# --- schedules ---------------------------------------------------------------------------


def schedule_id(schedule: ScheduleSettings) -> str:
    """A stable id: the same for the same channel, cron or interval, time zone and servers
    on every replica and after restarts (the mention is not part of it)."""
    identity = {
        "channel": schedule.channel,
        "cron": " ".join(schedule.cron.split()) if schedule.cron is not None else None,
        "every_seconds": schedule.every_seconds,
        "timezone": schedule.timezone if schedule.cron is not None else None,
        "servers": sorted({s.casefold() for s in schedule.servers}),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
    return f"health-{digest[:16]}"


def schedule_label(schedule: ScheduleSettings) -> str:
    """How a schedule is shown: ``0 8 * * 1-5 (Europe/Amsterdam) · EX01, EX02``."""
    when = (f"{schedule.cron} ({schedule.timezone})" if schedule.cron is not None
            else f"every {schedule.every_seconds} s")
    servers = ", ".join(schedule.servers) if schedule.servers else "all servers"
    return f"{when} · {servers}"


@dataclass(frozen=True)
class Schedule:
    """A configured schedule with its stable id, label and trigger."""

    id: str
    settings: ScheduleSettings
    label: str
    trigger: BaseTrigger

    @property
    def source(self) -> str:
        """The ``source`` of its stored check results."""
        return f"schedule:{self.id}"

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone if self.settings.cron is not None else "UTC")


class NextRun(NamedTuple):
    """One schedule in ``/exchange-tls status``."""

    label: str
    channel: str
    next_fire_time: datetime | None
    """In the schedule's time zone; None when it never fires again."""


@dataclass(frozen=True)
class FireOutcome:
    """What one attempt at one fire time did."""

    schedule_id: str
    fire_time: datetime
    posted: bool
    """This replica won the claim and posted the channel message."""
    ts: str | None = None
    """The channel message's ``ts``."""
    thread_ts: tuple[str, ...] = ()
    reason: str = ""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ScheduleRunner:
    """Runs the configured schedules and the expiry sweep on a ``BackgroundScheduler``.

    ``run_check`` checks servers (``bot.check.check_fleet`` with the bot's session cache and
    trust store); ``post`` posts a message (:func:`web_client_poster`); ``owner`` names this
    replica in claims (stable across its restarts, unique among replicas); ``clock`` gives the
    time used for fire times and claims; ``on_expired`` receives the requests each sweep
    expired (the bot updates their cards); ``database_retry``: see the module docstring.
    """

    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        *,
        run_check: RunCheck,
        post: PostMessage,
        owner: str,
        clock: Clock = _utc_now,
        on_expired: ExpiredCallback | None = None,
        sweep_interval: timedelta = DEFAULT_SWEEP_INTERVAL,
        misfire_grace: timedelta = DEFAULT_MISFIRE_GRACE,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
        catch_up_on_start: bool = True,
        database_retry: timedelta = DEFAULT_DATABASE_RETRY,
    ) -> None:
        if min(sweep_interval, misfire_grace, claim_lease, database_retry) <= timedelta(0):
            raise ValueError("sweep_interval, misfire_grace, claim_lease and database_retry "
                             "must be positive")
        self._settings = settings
        self._repository = repository
        self._run_check = run_check
        self._post = post
        self._owner = owner
        self._clock = clock
        self._on_expired = on_expired
        self._sweep_interval = sweep_interval
        self._misfire_grace = misfire_grace
        self._claim_lease = claim_lease
        self._catch_up_on_start = catch_up_on_start
        self._database_retry = database_retry
        schedules: dict[str, Schedule] = {}
        for configured in settings.schedules:
            identifier = schedule_id(configured)
            if identifier in schedules:
                log.warning("schedule %s for %s is configured twice; posting once",
                            schedule_label(configured), configured.channel)
                continue
            schedules[identifier] = Schedule(identifier, configured, schedule_label(configured),
                                             schedule_trigger(configured))
        self._schedules = schedules
        self._scheduler = BackgroundScheduler(timezone=UTC)

    # -- what the bot reads ------------------------------------------------------------------

    @property
    def schedules(self) -> tuple[Schedule, ...]:
        return tuple(self._schedules.values())

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def next_runs(self) -> list[NextRun]:
        """Each schedule's label, channel and next fire time after the clock's now."""
        now = self._clock()
        runs: list[NextRun] = []
        for schedule in self._schedules.values():
            moment = schedule.trigger.get_next_fire_time(None, now)
            runs.append(NextRun(schedule.label, schedule.settings.channel,
                                _in_zone(moment, schedule.timezone) if moment else None))
        return runs

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Add the jobs and start the scheduler thread; then, once, post the latest fire time
        missed while no replica was running (within ``misfire_grace``)."""
        if self._scheduler.running:
            return
        grace = max(1, int(self._misfire_grace.total_seconds()))
        for schedule in self._schedules.values():
            self._scheduler.add_job(
                self.run_due, trigger=schedule.trigger, args=(schedule.id,), id=schedule.id,
                name=f"health post {schedule.label}", coalesce=True, max_instances=1,
                misfire_grace_time=grace, replace_existing=True)
        self._scheduler.add_job(
            self.sweep_expired,
            trigger=IntervalTrigger(seconds=self._sweep_interval.total_seconds(), timezone=UTC),
            id=SWEEP_JOB_ID, name="expiry sweep", coalesce=True, max_instances=1,
            misfire_grace_time=None, replace_existing=True)
        if self._catch_up_on_start and self._schedules:
            self._scheduler.add_job(self.catch_up, trigger=DateTrigger(timezone=UTC),
                                    id=CATCH_UP_JOB_ID, name="catch up missed posts",
                                    misfire_grace_time=None, replace_existing=True)
        self._scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop the scheduler; with ``wait``, after the jobs running now have finished."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)

    # -- the jobs ----------------------------------------------------------------------------

    def due_fire_time(self, schedule_id: str) -> datetime | None:
        """The schedule's latest fire time at or before the clock's now, within
        ``misfire_grace``; None when nothing is due."""
        schedule = self._schedules[schedule_id]
        now = self._clock()
        window = self._misfire_grace
        if isinstance(schedule.trigger, IntervalTrigger):
            window = min(window, schedule.trigger.interval)
        return latest_fire_time(schedule.trigger, now, not_before=now - window)

    def run_due(self, schedule_id: str) -> FireOutcome | None:
        """The job: post the schedule's latest due fire time if this replica claims it.
        Missed fire times before it are not posted (they coalesce into this one)."""
        fire_time = self.due_fire_time(schedule_id)
        if fire_time is None:
            return None
        return self.fire(schedule_id, fire_time)

    def catch_up(self) -> list[FireOutcome]:
        """:meth:`run_due` for every schedule (at start: one post for missed fire times)."""
        outcomes: list[FireOutcome] = []
        for identifier in self._schedules:
            try:
                outcome = self.run_due(identifier)
            except Exception:
                log.exception("catching up schedule %s failed", identifier)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def fire(self, schedule_id: str, fire_time: datetime, *,
             retry_later: bool = True) -> FireOutcome:
        """Claim ``fire_time`` of the schedule and, if this replica wins, check, post the
        channel message, complete the fire, store the results and post the thread.

        With ``retry_later``, a claim lost to another replica, or won but failed before the
        channel message was out, is tried once more when its lease has passed; then it is taken
        over only if still not completed (its replica died or failed), so the post is not lost.
        Whatever ``retry_later`` says, a claim (or a takeover) that finds the database
        unavailable is tried again while ``fire_time`` is the schedule's latest due time.
        """
        return self._fire(schedule_id, fire_time, retry_later=retry_later, take_over=True)

    def _fire(self, schedule_id: str, fire_time: datetime, *, retry_later: bool,
              take_over: bool) -> FireOutcome:
        """:meth:`fire`; without ``take_over`` an expired claim is not taken over now."""
        schedule = self._schedules[schedule_id]
        fire_time = fire_time.astimezone(UTC)
        try:
            claimed = self._repository.claim_schedule_fire(
                schedule_id, fire_time, owner=self._owner, now=self._clock(),
                lease=self._claim_lease if take_over else None)
        except Exception as error:
            unavailable = unavailable_reason(error)
            if unavailable is None:
                raise
            again = self._retry_when_available(self._claim_again, schedule_id, fire_time,
                                               job="claim")
            log.warning("scheduled post %s at %s not claimed: the database is unavailable "
                        "(%s); %s", schedule.label, fire_time, unavailable,
                        f"claiming it again in {self._database_retry.total_seconds():g} s"
                        if again else "not tried again")
            return FireOutcome(schedule_id, fire_time, posted=False,
                               reason=f"database unavailable: {unavailable}")
        if not claimed:
            if retry_later:
                self._retry_after_lease(schedule_id, fire_time)
            return FireOutcome(schedule_id, fire_time, posted=False,
                               reason="claimed by another replica (or already posted)")
        try:
            return self._post_summary(schedule, fire_time)
        except Exception as error:
            unavailable = unavailable_reason(error)
            if unavailable is None:
                log.exception("scheduled post %s at %s failed", schedule.label, fire_time)
            else:
                log.warning("scheduled post %s at %s not made: the database is unavailable "
                            "(%s); it is tried again once its claim's lease has passed",
                            schedule.label, fire_time, unavailable)
            if retry_later or unavailable is not None:
                self._retry_after_lease(schedule_id, fire_time)
            return FireOutcome(schedule_id, fire_time, posted=False,
                               reason=f"failed: {type(error).__name__}")

    def _post_summary(self, schedule: Schedule, fire_time: datetime) -> FireOutcome:
        """Check, summarise and post. The fire is completed right after the channel message
        (the only step whose repetition would show), before the results are stored and the
        thread is posted; nothing is stored for a post that did not go out. When the database
        is unavailable for reading the previous results, the post is made without the
        comparison (and says so); then the results of unreachable servers are not stored
        (what they carry forward is unknown), so the next post compares them with older ones."""
        report = self._run_check(self._servers_of(schedule))
        checked_at = self._clock()
        previous: dict[str, str | None] = {}
        previous_unavailable = False
        try:
            for analysis in report.servers:
                stored = self._repository.previous_check_result(
                    analysis.name, before=fire_time, source=schedule.source)
                previous[analysis.name] = stored.findings_json if stored is not None else None
        except Exception as error:
            unavailable = unavailable_reason(error)
            if unavailable is None:
                raise
            log.warning("scheduled post %s at %s is made without the comparison with the "
                        "previous check: the database is unavailable (%s)", schedule.label,
                        fire_time, unavailable)
            previous, previous_unavailable = {}, True
        summary = summarise(report, previous, checked_at, mention=schedule.settings.mention,
                            previous_unavailable=previous_unavailable)
        channel_message, *thread = render_health_summary(summary,
                                                         schedule_label=schedule.label)
        ts = self._post(schedule.settings.channel, channel_message, None)
        self._complete(schedule.id, fire_time)
        try:
            for analysis in report.servers:
                if previous_unavailable and not analysis.reachable:
                    continue
                # Filed under the fire time, not the (possibly late) moment of the check, so
                # the next fire's "before fire_time" lookup finds it.
                self._repository.record_check_result(
                    analysis.name, checked_at=fire_time, verdict=server_verdict(analysis),
                    findings_json=findings_json(analysis, checked_at=checked_at,
                                                previous=previous.get(analysis.name)),
                    source=schedule.source)
        except Exception as error:
            unavailable = unavailable_reason(error)
            if unavailable is None:
                log.exception("storing the results of %s at %s failed; the next post compares "
                              "with an older one", schedule.label, fire_time)
            else:
                log.warning("the results of %s at %s are not stored: the database is "
                            "unavailable (%s); the next post compares with an older one",
                            schedule.label, fire_time, unavailable)
        replies: list[str] = []
        for reply in thread:
            try:
                replies.append(self._post(schedule.settings.channel, reply, ts))
            except Exception:
                log.exception("posting the thread of %s at %s failed", schedule.label,
                              fire_time)
                break
        return FireOutcome(schedule.id, fire_time, posted=True, ts=ts,
                           thread_ts=tuple(replies), reason="posted")

    def _complete(self, schedule_id: str, fire_time: datetime, *, again: bool = False) -> None:
        """Mark the fire completed; while the database is unavailable, keep trying (the post
        is out: another replica must not take it over)."""
        label = self._schedules[schedule_id].label
        try:
            done = self._repository.complete_schedule_fire(schedule_id, fire_time,
                                                           owner=self._owner, now=self._clock())
        except Exception as error:
            unavailable = unavailable_reason(error)
            if unavailable is None:
                raise
            retried = self._retry_when_available(self._complete_again, schedule_id, fire_time,
                                                 job="complete")
            log.warning("scheduled post %s at %s was made, but its completion cannot be "
                        "stored: the database is unavailable (%s); %s", label, fire_time,
                        unavailable,
                        f"trying again in {self._database_retry.total_seconds():g} s"
                        if retried else "not tried again")
            return
        if done and again:
            log.info("scheduled post %s at %s completed now that the database is back",
                     label, fire_time)
        elif not done and not again:
            log.warning("scheduled post %s at %s was taken over by another replica before it "
                        "completed here (its lease is too short?)", label, fire_time)

    def _complete_again(self, schedule_id: str, fire_time: datetime) -> None:
        self._complete(schedule_id, fire_time, again=True)

    def _claim_again(self, schedule_id: str, fire_time: datetime) -> FireOutcome | None:
        """A claim (or takeover) that failed while the database was unavailable, tried again
        while ``fire_time`` is still the schedule's latest due time (a later one coalesces it).
        An existing claim is not taken over now but after one more lease: its replica may have
        posted during the outage and be about to complete it."""
        if self.due_fire_time(schedule_id) != fire_time:
            log.info("scheduled post %s at %s not claimed again: a later fire time replaces "
                     "it", self._schedules[schedule_id].label, fire_time)
            return None
        return self._fire(schedule_id, fire_time, retry_later=True, take_over=False)

    def _retry_when_available(self, work: Callable[[str, datetime], object], schedule_id: str,
                              fire_time: datetime, *, job: str) -> bool:
        """Run ``work(schedule_id, fire_time)`` after ``database_retry``; False when the
        scheduler is not running. Claims: one job per schedule (a later fire time replaces an
        earlier one's); completions: one per fire time."""
        if not self._scheduler.running:
            return False
        identifier = f"database-{job}:{schedule_id}"
        if job == "complete":
            identifier += f":{fire_time.isoformat()}"
        self._scheduler.add_job(
            work, trigger=DateTrigger(run_date=datetime.now(UTC) + self._database_retry,
                                      timezone=UTC),
            args=(schedule_id, fire_time), id=identifier,
            name=f"{job} a post again (the database was unavailable)",
            misfire_grace_time=None, replace_existing=True)
        return True

    def _servers_of(self, schedule: Schedule) -> tuple[ServerSettings, ...]:
        if not schedule.settings.servers:
            return self._settings.servers
        found = (self._settings.server(name) for name in schedule.settings.servers)
        return tuple(server for server in found if server is not None)

    def _retry_after_lease(self, schedule_id: str, fire_time: datetime) -> None:
        """One more claim of ``fire_time`` once its lease has passed (a no-op when it was
        completed). At most lease / interval of them wait per schedule."""
        if not self._scheduler.running:
            return
        margin = min(_TAKEOVER_MARGIN, self._claim_lease / 4)
        run_at = datetime.now(UTC) + self._claim_lease + margin
        self._scheduler.add_job(
            self.fire, trigger=DateTrigger(run_date=run_at, timezone=UTC),
            args=(schedule_id, fire_time), kwargs={"retry_later": False},
            id=f"takeover:{schedule_id}:{fire_time.isoformat()}",
            name="take over an unfinished post", misfire_grace_time=None,
            replace_existing=True)

    def sweep_expired(self) -> list[RemediationRequest]:
        """Expire pending requests past their expiry; report those this call expired (none
        while the database is unavailable: the next sweep does it)."""
        try:
            expired = self._repository.expire_due(self._clock())
        except Exception as error:
            unavailable = unavailable_reason(error)
            if unavailable is None:
                raise
            log.warning("expiry sweep skipped: the database is unavailable (%s)", unavailable)
            return []
        if expired and self._on_expired is not None:
            try:
                self._on_expired(expired)
            except Exception:
                log.exception("updating %d expired requests failed", len(expired))
        return expired


def web_client_poster(client: Any) -> PostMessage:
    """A :class:`PostMessage` through a ``slack_sdk.WebClient`` (``chat.postMessage``)."""

    def post(channel: str, message: SlackMessage, thread_ts: str | None) -> str:
        response = client.chat_postMessage(channel=channel, text=message.text,
                                           blocks=list(message.blocks), thread_ts=thread_ts)
        return str(response["ts"])

    return post
