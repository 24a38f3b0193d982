"""The shell the Slack listeners call: background checks, posting, and the last results.

Listeners acknowledge first and hand work here. :class:`BotService` runs it on a bounded pool
of worker threads (``slack.workers``; a full queue is said, not dropped), started only once
commands stop arriving (:class:`QuietGate`: acknowledgements first), checks servers with
:func:`bot.check.check_fleet` over one long-lived :class:`SessionCache`, posts the report (the
first message to the channel, the rest into its thread) and keeps each server's last result
for ``status`` in a :class:`ResultStore`: in memory for one process, or
:class:`RepositoryResultStore` in the database, where every replica sees every replica's
results (scheduled posts' included). ``status`` also lists the scheduled posts and their next run.
Every failure ends as a readable message to the person who asked: never silence. While the
database is unavailable, work that needs it is not done and the requester is told so
(:func:`bot.replies.database_unavailable_notice`); a check still posts its report. Work that
had recorded something before the database went away is not called undone
(:func:`bot.replies.database_lost_after_recording_notice`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol, cast
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from bot.analysis.model import FleetReport, Verdict
from bot.analysis.trust import TrustStore
from bot.analysis.verdict import server_verdict
from bot.check import Clock, check_fleet, utc_now
from bot.commands import CheckCommand, StatusCommand
from bot.config import PlanScope, ServerSettings, Settings
from bot.exchange.session import SessionCache
from bot.health import decode_stored_result, findings_json
from bot.render.blocks import (
    OpenRequest,
    ScheduleStatus,
    ServerStatus,
    SlackMessage,
    render_error,
    render_report,
    render_status,
)
from bot.replies import (
    BackgroundCommand,
    busy_notice,
    check_not_stored_notice,
    database_lost_after_recording_notice,
    database_unavailable_notice,
    failure_notice,
    not_posted_notice,
    status_summary,
    stopped_notice,
    stored_status_summary,
    with_requester,
)
from bot.schedule import NextRun
from bot.storage.outage import commits_in_this_thread, outcome_unknown, unavailable_reason
from bot.storage.repository import Repository

log = logging.getLogger(__name__)

REPORT_TITLE: Final = "Exchange TLS check"
CHECK_RESULT_SOURCE: Final = "check"
"""``check_results.source`` of results of ``/exchange-tls check``."""
VERDICTS: Final[frozenset[str]] = frozenset({"ok", "warning", "critical", "unknown"})
SLACK_HOOKS_HOST: Final = "hooks.slack.com"


@dataclass(frozen=True)
class Origin:
    """Where a command came from and where its answers go."""

    channel_id: str
    user_id: str
    team_id: str
    command_text: str = ""
    response_url: str | None = None


@dataclass(frozen=True)
class LastResult:
    """One server's most recent check result, as ``status`` shows it."""

    server: str
    verdict: Verdict
    checked_at: datetime
    summary: str
    findings_json: str | None = None
    """The findings as :func:`bot.health.findings_json` keeps them, for stores that keep them."""


class ResultStore(Protocol):
    """Where the last result per server is kept."""

    def record(self, result: LastResult) -> None: ...

    def last(self, server: str) -> LastResult | None: ...


class InMemoryResultStore:
    """The last result per server (case-insensitive), for one bot process."""

    def __init__(self) -> None:
        self._results: dict[str, LastResult] = {}
        self._lock = threading.Lock()

    def record(self, result: LastResult) -> None:
        with self._lock:
            self._results[result.server.casefold()] = result

    def last(self, server: str) -> LastResult | None:
        with self._lock:
            return self._results.get(server.casefold())


class RepositoryResultStore:
    """The last result per server in the database: the latest stored check result of any
    source (``/exchange-tls check`` on any replica, or a scheduled post)."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository

    def record(self, result: LastResult) -> None:
        self._repository.record_check_result(
            result.server, checked_at=result.checked_at, verdict=result.verdict,
            findings_json=result.findings_json or "{}", source=CHECK_RESULT_SOURCE)

    def last(self, server: str) -> LastResult | None:
        stored = self._repository.previous_check_result(server)
        if stored is None:
            return None
        verdict = cast(Verdict, stored.verdict) if stored.verdict in VERDICTS else "unknown"
        decoded = decode_stored_result(stored.findings_json)
        return LastResult(
            server=stored.server,
            verdict=verdict,
            checked_at=stored.checked_at,
            summary=stored_status_summary(decoded) if decoded is not None else "",
            findings_json=stored.findings_json,
        )


ReportHook = Callable[[FleetReport, Origin, str | None], object]
"""Called after a check report was posted: (report, origin, ts of its first message)."""


class ScheduleListing(Protocol):
    """The scheduled posts for ``status`` (:class:`bot.schedule.ScheduleRunner`)."""

    def next_runs(self) -> Sequence[NextRun]: ...


class RemediationStatus(Protocol):
    """What ``status`` shows of remediation: open requests and the freeze (a later issue)."""

    def open_requests(self) -> Sequence[OpenRequest]: ...

    def is_frozen(self) -> bool: ...


class NoRemediation:
    """No remediation yet: nothing open, nothing frozen."""

    def open_requests(self) -> Sequence[OpenRequest]:
        return ()

    def is_frozen(self) -> bool:
        return False


class CheckRunner(Protocol):
    """:func:`bot.check.check_fleet`'s signature; tests may pass another."""

    def __call__(
        self,
        servers: Sequence[ServerSettings],
        cache: SessionCache,
        trust: TrustStore,
        *,
        concurrency: int = ...,
        clock: Clock = ...,
        plan_scope: PlanScope = ...,
    ) -> FleetReport: ...


def slack_error_code(error: BaseException) -> str:
    """Slack's error code (``not_in_channel``...) or a short description of a client error."""
    if isinstance(error, SlackApiError):
        code = error.response.get("error") if error.response is not None else None
        return str(code or f"HTTP {error.response.status_code}")
    return type(error).__name__


def hold_seconds(
    now: float, last_arrival: float, held_since: float, *, settle: float, max_hold: float
) -> float:
    """How much longer a background job should wait before it starts.

    Jobs start once no command has arrived for ``settle`` seconds, and never wait more than
    ``max_hold`` in all: a burst of commands is acknowledged before the checks it caused
    compete with it for the CPU (and the interpreter lock), and a steady stream of commands
    cannot starve the checks.
    """
    return max(0.0, min(last_arrival + settle, held_since + max_hold) - now)


class QuietGate:
    """Holds background jobs back while commands are still arriving (see :func:`hold_seconds`)."""

    def __init__(
        self,
        *,
        settle: float = 0.02,
        max_hold: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settle = settle
        self.max_hold = max_hold
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_arrival = float("-inf")

    def arrived(self) -> None:
        """A command was just accepted."""
        with self._lock:
            self._last_arrival = self._clock()

    def wait(self) -> float:
        """Wait until commands have stopped arriving (or ``max_hold``); the seconds waited."""
        held_since = self._clock()
        while True:
            with self._lock:
                last = self._last_arrival
            now = self._clock()
            remaining = hold_seconds(
                now, last, held_since, settle=self.settle, max_hold=self.max_hold
            )
            if remaining <= 0:
                return now - held_since
            self._sleep(remaining)


class BotService:
    """Background work for the listeners: checks, status, and every message that follows."""

    def __init__(
        self,
        settings: Settings,
        client: WebClient,
        *,
        trust: TrustStore,
        cache: SessionCache,
        results: ResultStore | None = None,
        remediation: RemediationStatus | None = None,
        check_runner: CheckRunner = check_fleet,
        clock: Clock = utc_now,
        max_pending: int | None = None,
        webhook_factory: Callable[[str], WebhookClient] | None = None,
        report_title: str = REPORT_TITLE,
        gate: QuietGate | None = None,
        schedules: ScheduleListing | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.trust = trust
        self.cache = cache
        self.results: ResultStore = results if results is not None else InMemoryResultStore()
        self.remediation: RemediationStatus = (
            remediation if remediation is not None else NoRemediation()
        )
        self.schedules = schedules
        """Listed by ``status`` (set once the scheduler is built: it checks through us)."""
        self.report_hooks: list[ReportHook] = []
        """Called after each check's report, with its ``ts`` (None: not posted); the
        remediation requests and their cards hang here."""
        self._check_runner = check_runner
        self._clock = clock
        self._report_title = report_title
        workers = settings.slack.workers
        self.max_pending = max_pending if max_pending is not None else max(32, workers * 16)
        self._webhook_factory = webhook_factory or self._default_webhook
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exchange-tls-job")
        self._gate = gate if gate is not None else QuietGate()
        self._changed = threading.Condition()
        self._pending = 0
        self._closing = False

    # --- what listeners call ------------------------------------------------------------

    def perform(self, command: BackgroundCommand, origin: Origin) -> bool:
        """Queue a command's work; False (and the user told why) when it was not queued.

        Never blocks: listeners call it before their ack is answered.
        """
        if isinstance(command, CheckCommand):
            return self.check(command.servers, origin)
        if isinstance(command, StatusCommand):
            return self.status(origin)
        raise TypeError(f"not a background command: {command!r}")

    def check(self, server_names: Sequence[str], origin: Origin) -> bool:
        """Queue a check of configured servers; its report is posted in the origin channel."""
        servers = tuple(self._configured(server_names))
        return self._submit("check", origin, lambda: self.run_check(servers, origin))

    def status(self, origin: Origin) -> bool:
        """Queue a status reply (ephemeral, to the person who asked)."""
        return self._submit("status request", origin, lambda: self.post_status(origin))

    # --- the work -------------------------------------------------------------------------

    def check_servers(self, servers: Sequence[ServerSettings]) -> FleetReport:
        """Check now, over the bot's sessions and trust store; nothing is recorded or posted
        (the scheduled posts' ``run_check``)."""
        return self._check_runner(
            servers,
            self.cache,
            self.trust,
            concurrency=self.settings.check.concurrency,
            clock=self._clock,
            plan_scope=self.settings.check.plan_scope,
        )

    def run_check(self, servers: Sequence[ServerSettings], origin: Origin) -> FleetReport:
        """Check now, remember the results, and post the report.

        The check itself reads only the servers: while the database is unavailable the report
        is still posted, and the requester is told that its result was not kept and that the
        report hooks (the remediation request cards, which need the database) were skipped.
        """
        report = self.check_servers(servers)
        unavailable: str | None = None
        for analysis in report.servers:
            checked_at = analysis.taken_at or report.generated_at
            try:
                self.results.record(LastResult(
                    server=analysis.name,
                    verdict=server_verdict(analysis),
                    checked_at=checked_at,
                    summary=status_summary(analysis),
                    findings_json=findings_json(analysis, checked_at=checked_at, previous=None),
                ))
            except Exception as error:
                unavailable = unavailable_reason(error)
                if unavailable is None:
                    log.exception("could not keep the result of %s for status", analysis.name)
                    continue
                log.warning("the results of the check by %s are not kept and no remediation "
                            "request is made: the database is unavailable (%s)",
                            origin.user_id, unavailable)
                break
        ts = self.post_report(report, origin)
        if unavailable is not None:
            self.notify(origin, check_not_stored_notice(
                cards_skipped=bool(self.report_hooks) and any(
                    a.reachable and a.plan is not None and any(s.runnable for s in a.plan.steps)
                    for a in report.servers)))
            return report
        for hook in self.report_hooks:
            hook(report, origin, ts)
        return report

    def post_report(self, report: FleetReport, origin: Origin) -> str | None:
        """Post the report: the first message to the channel, the rest in its thread.

        Returns the ``ts`` of the first message, or None when it could not be posted (then the
        requester is told why and gets the summary privately).
        """
        first, *rest = render_report(report, title=self._report_title)
        first = with_requester(first, origin.user_id, origin.command_text)
        try:
            response = self._post(origin.channel_id, first)
        except SlackClientError as error:
            reason = slack_error_code(error)
            log.warning("could not post the report in %s: %s", origin.channel_id, reason)
            self.notify(origin, not_posted_notice(reason))
            self.notify(origin, first)
            return None
        ts = str(response["ts"])
        failed: list[str] = []
        for number, page in enumerate(rest, start=1):
            try:
                self._post(origin.channel_id, page, thread_ts=ts)
            except SlackClientError as error:
                log.warning("could not post report page %d: %s", number, slack_error_code(error))
                failed.append(f"{number} ({slack_error_code(error)})")
        if failed:
            note = render_error(
                f"Some details could not be posted: part {', '.join(failed)} of {len(rest)}. "
                "Run the check again to see them."
            )
            try:
                self._post(origin.channel_id, note, thread_ts=ts)
            except SlackClientError:
                self.notify(origin, note)
        return ts

    def post_status(self, origin: Origin) -> None:
        """Tell the requester the status now."""
        self.notify(origin, self.status_message())

    def status_message(self) -> SlackMessage:
        """Configured servers with their last results, open requests, the freeze state and,
        when the scheduler runs, the scheduled posts with their next run."""
        servers = []
        for server in self.settings.servers:
            last = self.results.last(server.name)
            servers.append(ServerStatus(
                name=server.name,
                verdict=last.verdict if last else None,
                checked_at=last.checked_at if last else None,
                summary=last.summary if last else None,
            ))
        schedules = None
        if self.schedules is not None:
            schedules = [ScheduleStatus(run.label, run.channel, run.next_fire_time)
                         for run in self.schedules.next_runs()]
        return render_status(
            servers, self.remediation.open_requests(), frozen=self.remediation.is_frozen(),
            schedules=schedules,
        )

    def notify(self, origin: Origin, reply: SlackMessage) -> bool:
        """Tell the requester privately: the response_url, else ``chat.postEphemeral``."""
        url = origin.response_url
        if url and self.response_url_allowed(url):
            try:
                answer = self._webhook_factory(url).send(
                    text=reply.text,
                    blocks=list(reply.blocks) or None,
                    response_type="ephemeral",
                    replace_original=False,
                )
                if answer.status_code == 200:
                    return True
                log.warning("response_url answered HTTP %s", answer.status_code)
            except Exception as error:  # the Web API below is the second way
                log.warning("response_url failed: %s", type(error).__name__)
        try:
            self.client.chat_postEphemeral(
                channel=origin.channel_id,
                user=origin.user_id,
                text=reply.text,
                blocks=list(reply.blocks) or None,
            )
            return True
        except SlackClientError as error:
            log.error(
                "could not reach %s in %s at all: %s",
                origin.user_id, origin.channel_id, slack_error_code(error),
            )
            return False

    def response_url_allowed(self, url: str) -> bool:
        """Only Slack's hooks host, or the host of the configured Web API (a proxy, a stand-in)."""
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.hostname == SLACK_HOOKS_HOST:
            return True
        api = urlsplit(self.client.base_url)
        return (parts.scheme, parts.netloc) == (api.scheme, api.netloc) and bool(parts.netloc)

    # --- the pool -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Jobs queued or running."""
        with self._changed:
            return self._pending

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """Wait until no job is queued or running; False on time-out."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 30.0) -> bool:
        """Stop taking work; jobs not yet started tell their requester; wait for the rest."""
        with self._changed:
            self._closing = True
        self._pool.shutdown(wait=False)
        return self.wait_until_idle(timeout)

    def submit(self, what: str, origin: Origin, work: Callable[[], object]) -> bool:
        """Queue ``work`` on the pool (never blocks); False, and ``origin`` told why, when
        it was not queued. A failure of ``work`` is told to ``origin``."""
        return self._submit(what, origin, work)

    def _submit(self, what: str, origin: Origin, work: Callable[[], object]) -> bool:
        with self._changed:
            refused = (
                stopped_notice(what) if self._closing
                else busy_notice(self._pending) if self._pending >= self.max_pending
                else None
            )
            if refused is None:
                self._pending += 1
        if refused is None:
            try:
                self._gate.arrived()
                self._pool.submit(self._job, what, origin, work)
                return True
            except RuntimeError:  # the pool shut down between the check and the submit
                self._done()
                refused = stopped_notice(what)
        threading.Thread(
            target=self.notify, args=(origin, refused), name="exchange-tls-notice", daemon=True
        ).start()
        return False

    def _job(self, what: str, origin: Origin, work: Callable[[], object]) -> None:
        commits_before = commits_in_this_thread()
        try:
            with self._changed:
                closing = self._closing
            if closing:
                self.notify(origin, stopped_notice(what))
                return
            self._gate.wait()
            work()
        except Exception as error:
            unavailable = unavailable_reason(error)
            if unavailable is None:
                log.exception("%s for %s failed", what, origin.user_id)
                self.notify(origin, failure_notice(what, _readable(error)))
                return
            if commits_in_this_thread() != commits_before:
                log.warning("%s for %s recorded, then the database became unavailable (%s) "
                            "before it was finished", what, origin.user_id, unavailable)
                self.notify(origin, database_lost_after_recording_notice(what))
                return
            unknown = outcome_unknown(error)
            # Not in the audit trail: the trail is in the database that is unavailable.
            log.warning("%s for %s not done: the database is unavailable (%s); %s", what,
                        origin.user_id, unavailable,
                        "it may have been recorded before the connection was lost" if unknown
                        else "nothing was changed; not audited (the trail is in that database)")
            self.notify(origin, database_unavailable_notice(what, outcome_unknown=unknown))
        finally:
            self._done()

    def _done(self) -> None:
        with self._changed:
            self._pending -= 1
            self._changed.notify_all()

    # --- helpers -------------------------------------------------------------------------

    def _configured(self, names: Sequence[str]) -> list[ServerSettings]:
        servers = []
        for name in names:
            server = self.settings.server(name)
            if server is None:  # the parser only passes configured names
                raise ValueError(f"{name!r} is not a configured server")
            servers.append(server)
        return servers

    def _post(
        self, channel: str, reply: SlackMessage, *, thread_ts: str | None = None
    ) -> Any:
        return self.client.chat_postMessage(
            channel=channel,
            text=reply.text,
            blocks=list(reply.blocks),
            thread_ts=thread_ts,
            unfurl_links=False,
            unfurl_media=False,
        )

    def _default_webhook(self, url: str) -> WebhookClient:
        return WebhookClient(
            url,
            timeout=self.client.timeout,
            retry_handlers=list(self.client.retry_handlers),
        )


def _readable(error: Exception) -> str:
    if isinstance(error, SlackClientError):
        return f"Slack answered {slack_error_code(error)}"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
