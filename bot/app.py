"""Builds the Bolt app: the Slack Web API client, the service, and the listeners between them.

Secrets come only from the environment (``SLACK_BOT_TOKEN``, ``SLACK_APP_TOKEN`` for Socket
Mode, ``SLACK_SIGNING_SECRET`` for HTTP mode) and are never logged or shown: :class:`SlackSecrets`
hides them from ``repr``. ``SLACK_API_URL`` (else ``slack.api_url``) replaces the Web API base
URL. The Web API client retries connection errors and honours 429 ``Retry-After``.

With storage (``run_bot`` always opens ``storage.url``), the bot keeps results in the database
and runs the scheduled health posts and the expiry sweep (:mod:`bot.schedule`) as one replica
among any number (:mod:`bot.replicas`).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal, TextIO

from slack_bolt import App
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.analysis.trust import TrustStore
from bot.config import ServerSettings, Settings
from bot.exchange.session import Credentials, SessionCache, credentials_from_environment
from bot.remediation_service import RemediationService, utc_now
from bot.replicas import (
    ReplicaSettingError,
    Storage,
    StorageError,
    claim_lease,
    execution_lease,
    open_storage,
    replica_id,
    secret_values,
)
from bot.schedule import ExpiredCallback, ScheduleRunner, web_client_poster
from bot.service import BotService, RepositoryResultStore

log = logging.getLogger(__name__)

Mode = Literal["socket", "http"]
BOT_TOKEN_ENV: Final = "SLACK_BOT_TOKEN"  # noqa: S105 - a variable name
APP_TOKEN_ENV: Final = "SLACK_APP_TOKEN"  # noqa: S105 - a variable name
SIGNING_SECRET_ENV: Final = "SLACK_SIGNING_SECRET"  # noqa: S105 - a variable name
API_URL_ENV: Final = "SLACK_API_URL"
DEFAULT_API_URL: Final = "https://slack.com/api/"
WEB_API_TIMEOUT: Final = 15
CONNECTION_RETRIES: Final = 2
RATE_LIMIT_RETRIES: Final = 3


class BotStartError(Exception):
    """The bot cannot start; the message says what to fix (never containing a secret)."""


@dataclass(frozen=True)
class SlackSecrets:
    """Tokens and the signing secret, read from the environment; hidden from ``repr``."""

    bot_token: str = field(repr=False)
    app_token: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)


def secrets_from_environment(mode: Mode, environ: Mapping[str, str] | None = None) -> SlackSecrets:
    """The secrets ``mode`` needs, or a :class:`BotStartError` naming the missing variable."""
    env = os.environ if environ is None else environ
    needed = [BOT_TOKEN_ENV, APP_TOKEN_ENV if mode == "socket" else SIGNING_SECRET_ENV]
    missing = [name for name in needed if not env.get(name, "").strip()]
    if missing:
        what = "Socket Mode" if mode == "socket" else "HTTP mode"
        raise BotStartError(
            f"{' and '.join(missing)} not set: {what} needs "
            + ("a bot token (xoxb-...) and an app-level token (xapp-...) with connections:write"
               if mode == "socket" else "a bot token (xoxb-...) and the app's signing secret")
        )
    app_token = env.get(APP_TOKEN_ENV, "").strip() or None
    if mode == "socket" and app_token is not None and not app_token.startswith("xapp-"):
        raise BotStartError(f"{APP_TOKEN_ENV} is not an app-level token (it must start xapp-)")
    return SlackSecrets(
        bot_token=env[BOT_TOKEN_ENV].strip(),
        app_token=app_token,
        signing_secret=env.get(SIGNING_SECRET_ENV, "").strip() or None,
    )


def api_base_url(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """``SLACK_API_URL``, else ``slack.api_url``, else Slack's; always ending in ``/``."""
    env = os.environ if environ is None else environ
    url = env.get(API_URL_ENV, "").strip() or settings.slack.api_url or DEFAULT_API_URL
    if not url.startswith(("http://", "https://")):
        raise BotStartError(f"{API_URL_ENV} must be an http(s) URL such as {DEFAULT_API_URL}")
    return url if url.endswith("/") else url + "/"


def build_web_client(token: str, base_url: str, *, timeout: int = WEB_API_TIMEOUT) -> WebClient:
    """A Web API client that retries dropped connections and waits out 429 ``Retry-After``."""
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=CONNECTION_RETRIES),
            RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        ],
    )


def build_app(
    client: WebClient,
    service: BotService,
    *,
    mode: Mode,
    signing_secret: str | None = None,
    remediation: RemediationService | None = None,
) -> App:
    """The Bolt app with every listener registered. HTTP mode verifies each request's signature.

    Bolt calls ``auth.test`` once here: a wrong token or API URL fails now, not at the first
    command. ``process_before_response``: the listener runs in the request's own thread and
    its ack is answered as soon as it returns, which it does at once (the work is queued on
    the service's pool). Without it Bolt hands the listener to another thread and polls for
    the ack every 10 ms, which alone put p99 over 100 ms in a burst of 50 commands.
    """
    from handlers import register_handlers

    if mode == "http" and not signing_secret:
        raise BotStartError(f"{SIGNING_SECRET_ENV} not set: HTTP mode verifies every request")
    bolt_log = logging.getLogger("exchange_tls.bolt")
    if not any(isinstance(f, _TokenSkippedFilter) for f in bolt_log.filters):
        bolt_log.addFilter(_TokenSkippedFilter())
    try:
        app = App(
            client=client,
            signing_secret=signing_secret or "",
            request_verification_enabled=mode == "http",
            token_verification_enabled=True,
            process_before_response=True,
            logger=bolt_log,
        )
    except BoltError as error:
        raise BotStartError(f"Slack refused the bot token or is unreachable: {error}") from None
    register_handlers(app, service, remediation)
    return app


class _TokenSkippedFilter(logging.Filter):
    """Bolt warns that SLACK_BOT_TOKEN is unused when it is handed a client: it is the
    client's token, so the warning says nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


@dataclass
class BotRuntime:
    """Everything one bot process runs: close it to stop the work and the sessions."""

    settings: Settings
    client: WebClient
    service: BotService
    app: App
    secrets: SlackSecrets
    mode: Mode
    storage: Storage | None = None
    schedules: ScheduleRunner | None = None
    """The scheduled posts and expiry sweep (with storage); started by :meth:`start_schedules`."""
    remediation: RemediationService | None = None
    """Request cards, clicks, runs, freeze and audit (with storage)."""

    def start_schedules(self) -> None:
        """Start the scheduled posts and the expiry sweep (no-op without storage)."""
        if self.schedules is not None:
            self.schedules.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the scheduler after the scheduled post in progress (if any), let running jobs
        finish (up to ``timeout``), tell queued ones, close the sessions and the storage."""
        try:
            if self.remediation is not None:
                self.remediation.close()
            if self.schedules is not None:
                self.schedules.shutdown(wait=True)
            if not self.service.close(timeout):
                log.warning("jobs still running after %.0f s; stopping anyway", timeout)
        finally:
            self.service.cache.close_all()
            if self.storage is not None:
                self.storage.close()


def build_runtime(
    settings: Settings,
    *,
    mode: Mode,
    environ: Mapping[str, str] | None = None,
    secrets: SlackSecrets | None = None,
    trust: TrustStore | None = None,
    credentials: Callable[[ServerSettings], Credentials] | None = None,
    service_factory: Callable[..., BotService] = BotService,
    storage: Storage | None = None,
    replica: str | None = None,
    lease: timedelta | None = None,
    on_expired: ExpiredCallback | None = None,
    clock: Callable[[], datetime] | None = None,
) -> BotRuntime:
    """Assemble the bot from its settings and environment (overrides for the demo and tests).

    With ``storage``: results in the database and a (not yet started) scheduler whose claims
    name ``replica`` (default :func:`~bot.replicas.replica_id`) with ``lease`` (default
    :func:`~bot.replicas.claim_lease`); ``on_expired`` gets the requests each expiry sweep
    closed (for updating their cards; default: the remediation service's). Also with
    ``storage``: the remediation service (request cards after each check, the buttons,
    ``audit`` / ``freeze`` / ``unfreeze``), deciding and running at ``clock`` (tests), which
    starts by recovering what a dead process left (in the background).
    """
    from bot.runner import CheckRunError, trust_store_for

    secrets = secrets or secrets_from_environment(mode, environ)
    client = build_web_client(secrets.bot_token, api_base_url(settings, environ))
    if trust is None:
        try:
            trust = trust_store_for(settings.trust)
        except CheckRunError as error:
            raise BotStartError(str(error)) from None
    env = os.environ if environ is None else environ
    cache = SessionCache(
        idle_seconds=settings.check.pool_idle_seconds,
        credentials=credentials or (lambda server: credentials_from_environment(server, env)),
    )
    service = service_factory(settings, client, trust=trust, cache=cache)
    schedules: ScheduleRunner | None = None
    remediation: RemediationService | None = None
    try:
        if storage is not None:
            remediation = _remediation_service(settings, storage, service, client, env,
                                               replica=replica, clock=clock)
            on_expired = on_expired or remediation.requests_expired
            service.results = RepositoryResultStore(storage.repository)
            schedules = _schedule_runner(settings, storage, service, client, env,
                                         replica=replica, lease=lease, on_expired=on_expired)
            service.schedules = schedules
        app = build_app(client, service, mode=mode, signing_secret=secrets.signing_secret,
                        remediation=remediation)
    except BaseException:
        service.close(0)
        raise
    if remediation is not None:
        remediation.start()
    return BotRuntime(settings, client, service, app, secrets, mode, storage, schedules,
                      remediation)


def _remediation_service(
    settings: Settings, storage: Storage, service: BotService, client: WebClient,
    env: Mapping[str, str], *, replica: str | None, clock: Callable[[], datetime] | None,
) -> RemediationService:
    """Remediation in Slack, wired into the service: its status, its report hook."""
    try:
        owner = replica or replica_id(env)
        lease = execution_lease(env)
    except ReplicaSettingError as error:
        raise BotStartError(str(error)) from None
    remediation = RemediationService(settings, client, service, storage.repository,
                                     storage.audit, owner=owner, clock=clock or utc_now,
                                     execution_lease=lease)
    service.remediation = remediation
    service.report_hooks.append(remediation.report_posted)
    return remediation


def _schedule_runner(
    settings: Settings, storage: Storage, service: BotService, client: WebClient,
    env: Mapping[str, str], *, replica: str | None, lease: timedelta | None,
    on_expired: ExpiredCallback | None,
) -> ScheduleRunner:
    """The scheduled posts of this replica: checks through the service (its sessions and trust
    store), posts through the Web API client."""
    try:
        return ScheduleRunner(
            settings, storage.repository, run_check=service.check_servers,
            post=web_client_poster(client), owner=replica or replica_id(env),
            claim_lease=lease or claim_lease(env), on_expired=on_expired)
    except ReplicaSettingError as error:
        raise BotStartError(str(error)) from None
    except ValueError as error:  # a schedule whose trigger cannot be built
        raise BotStartError(f"{settings.source}: {error}") from None


@contextmanager
def running_runtime(runtime: BotRuntime, timeout: float = 30.0) -> Iterator[BotRuntime]:
    """Close ``runtime`` on the way out."""
    try:
        yield runtime
    finally:
        runtime.close(timeout)


def run_bot(
    *,
    config_path: str | None,
    mode: Mode,
    host: str,
    port: int,
    out: TextIO,
    err: TextIO,
    environ: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
    freeze_heap: bool = True,
) -> int:
    """``exchange-tls bot``: serve until SIGTERM/SIGINT (or ``stop``); the exit code.

    ``freeze_heap``: move everything built at start out of the garbage collector's view
    (``gc.freeze``) so that full collections, which pause every thread, stay short.
    """
    from bot.config import ConfigError, load_settings
    from bot.http_server import BotHTTPServer
    from bot.socket_mode import SocketModeConnection

    storage: Storage | None = None
    try:
        settings = load_settings(config_path, environ)
        secrets = secrets_from_environment(mode, environ)
        storage = open_storage(settings, secrets=secret_values(settings, environ))
        runtime = build_runtime(settings, mode=mode, environ=environ, secrets=secrets,
                                storage=storage)
    except (ConfigError, BotStartError, StorageError) as error:
        if storage is not None:
            storage.close()
        err.write(f"exchange-tls bot: {error}\n")
        return EXIT_CANNOT_START
    stop = stop or threading.Event()
    restore = _stop_on_signals(stop)
    if freeze_heap:
        gc.collect()
        gc.freeze()
    server: BotHTTPServer | None = None
    connection: SocketModeConnection | None = None
    try:
        if mode == "http":
            try:
                server = BotHTTPServer(runtime.app, host=host, port=port,
                                       health=lambda: _health(runtime))
            except OSError as error:
                err.write(f"exchange-tls bot: cannot listen on {host}:{port}: {error.strerror}\n")
                return EXIT_CANNOT_START
            server.start()
            out.write(f"exchange-tls bot: HTTP mode, listening on {server.events_url} "
                      f"(health: {server.url}/healthz); {len(settings.servers)} servers "
                      f"configured; {_replica_text(runtime)}\n")
        else:
            assert runtime.secrets.app_token is not None
            connection = SocketModeConnection(runtime.app, runtime.secrets.app_token)
            try:
                connection.start()
            except BotStartError as error:
                err.write(f"exchange-tls bot: {error}\n")
                return EXIT_CANNOT_START
            out.write(f"exchange-tls bot: connected to Slack over Socket Mode; "
                      f"{len(settings.servers)} servers configured; "
                      f"{_replica_text(runtime)}\n")
        out.flush()
        runtime.start_schedules()
        stop.wait()
        out.write("exchange-tls bot: stopping\n")
        out.flush()
        return 0
    finally:
        if server is not None:
            server.stop()
        if connection is not None:
            connection.stop()
        runtime.close()
        restore()


EXIT_CANNOT_START: Final = 3


def _replica_text(runtime: BotRuntime) -> str:
    if runtime.schedules is None:
        return "no storage"
    count = len(runtime.schedules.schedules)
    return (f"{count} scheduled {'post' if count == 1 else 'posts'}; "
            f"replica {runtime.schedules.owner}")


def _health(runtime: BotRuntime) -> dict[str, object]:
    return {
        "status": "ok",
        "mode": runtime.mode,
        "jobs": runtime.service.pending,
        "servers": len(runtime.settings.servers),
    }


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Set ``stop`` on SIGTERM and SIGINT (main thread only); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {
        number: signal.signal(number, lambda _signum, _frame: stop.set())
        for number in (signal.SIGTERM, signal.SIGINT)
    }

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    return restore
