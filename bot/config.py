"""The TOML configuration (product.md section 5) as typed, validated settings.

Every problem is reported as a :class:`ConfigError` naming the key and what is wrong with it.
Secrets never live here: a server names the environment variables that hold its credentials.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import SplitResult, parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

AuthMethod = Literal["kerberos", "negotiate", "ntlm", "basic", "credssp"]
PlanScope = Literal["all", "pin", "unbind"]

AUTH_METHODS: tuple[AuthMethod, ...] = ("kerberos", "negotiate", "ntlm", "basic", "credssp")
PLAN_SCOPES: tuple[PlanScope, ...] = ("all", "pin", "unbind")
SERVER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})$")
RESERVED_SERVER_NAMES = frozenset({"all"})
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SLACK_USER_PATTERN = re.compile(r"^[UW][A-Z0-9]{2,}$")
SLACK_GROUP_PATTERN = re.compile(r"^S[A-Z0-9]{2,}$")
SLACK_CHANNEL_PATTERN = re.compile(r"^[CGD][A-Z0-9]{2,}$")
CONFIG_ENV_VAR = "EXCHANGE_TLS_CONFIG"


class ConfigError(ValueError):
    """The configuration is unusable; the message names the file, the key and the problem.

    Slack tokens and the ``user:password@`` part of URLs are masked in the message.
    """

    def __init__(self, message: str) -> None:
        masked = _SLACK_TOKEN.sub("[a Slack token, not shown]", message)
        super().__init__(_URL_CREDENTIALS.sub(r"\1***@", masked))


_SLACK_TOKEN = re.compile(r"\bx(?:ox[a-z]|app)-[A-Za-z0-9-]+")
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"/@]*@")
_URL_USER_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^?#@/]*:[^?#]*@")
SECRET_URL_PARAMETERS = frozenset({"password", "sslpassword"})
"""libpq connection parameters that hold secrets (a URL's query may carry any parameter)."""


def database_url_has_secret(url: str) -> bool:
    """Whether a database URL carries a password: ``user:password@`` (however the password is
    written) or a ``password``/``sslpassword`` parameter, also inside a ``dbname`` conninfo."""
    if _URL_USER_PASSWORD.match(url):
        return True
    query = urlsplit(url).query if "?" in url else ""
    return any(is_secret_url_parameter(key, value)
               for key, value in parse_qsl(query, keep_blank_values=True))


def is_secret_url_parameter(key: str, value: str) -> bool:
    """A URL query parameter that holds a secret: ``password``/``sslpassword``, or a
    ``dbname``-style conninfo that sets one."""
    return key.strip().lower() in SECRET_URL_PARAMETERS or bool(
        re.search(r"\b(?:ssl)?password\s*=", value, flags=re.IGNORECASE))
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+(?:\[\d+\])?$")


def _key_text(key: str) -> str:
    """A TOML key for a message: as is when bare, else quoted (control characters escaped)."""
    return key if _BARE_KEY.match(key) else repr(key)


_SHOWN_LENGTH = 80


def _shown(value: str) -> str:
    """``value`` quoted for a message, cut to a readable length."""
    if len(value) <= _SHOWN_LENGTH:
        return repr(value)
    return f"{value[:_SHOWN_LENGTH]!r}... ({len(value)} characters)"


def _shown_url(url: str) -> str:
    """``url`` quoted for a message, without any ``user:password@`` part."""
    return _shown(re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)?.*@", r"\1***@", url, flags=re.DOTALL))


_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _host_problem(host: str) -> str | None:
    """Why ``host`` (from a URL) is not a DNS name or an IP address; None when it is one."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if not host.isascii():
        return ("has characters outside ASCII in its host name (a look-alike?); write an "
                "international name in its xn-- form")
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        return "has a host name that is not a DNS name (letters, digits, '-' and dots)"
    if not labels[-1][0].isalpha():  # 10.0.0.999, 0x7f000001: numbers a resolver may read
        return "has a host name that is neither a DNS name nor an IP address"
    return None


def _http_url(section: _Section, key: str, url: str, example: str) -> SplitResult:
    """``url`` as an http(s) URL with a sound host and no spaces or control characters."""
    if any(character.isspace() or not character.isprintable() for character in url):
        raise section.error(key, f"{_shown_url(url)} contains spaces or control characters")
    parts = _split_url(section, key, url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise section.error(key, f"{_shown_url(url)} is not an http(s) URL such as {example}")
    problem = _host_problem(parts.hostname)
    if problem is not None:
        raise section.error(key, f"{_shown_url(url)} {problem}")
    return parts


def _split_url(section: _Section, key: str, url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:  # an unclosed IPv6 bracket or a port that is not a number
        raise section.error(
            key, f"{_shown_url(url)} is not a valid URL (an unclosed '[' or a bad port)"
        ) from None
    return parts


@dataclass(frozen=True)
class ServerSettings:
    """One Exchange server the bot may contact; nothing else is ever contacted."""

    name: str
    url: str
    auth: AuthMethod
    username_env: str | None = None
    password_env: str | None = None
    cert_validation: bool = True
    ca_bundle: str | None = None
    connect_timeout: float = 10.0
    operation_timeout: float = 20.0
    encryption: Literal["auto", "always", "never"] = "auto"

    @property
    def uses_basic_over_http(self) -> bool:
        return self.auth == "basic" and urlsplit(self.url).scheme == "http"


@dataclass(frozen=True)
class SlackSettings:
    api_url: str | None = None
    allowed_channels: tuple[str, ...] = ()
    allowed_users: tuple[str, ...] = ()
    workers: int = 4


@dataclass(frozen=True)
class CheckSettings:
    concurrency: int = 8
    plan_scope: PlanScope = "all"
    pool_idle_seconds: float = 300.0


@dataclass(frozen=True)
class TrustSettings:
    """Extra roots and intermediates for the public-trust check (PEM files)."""

    include_certifi: bool = True
    extra_public_roots: tuple[str, ...] = ()
    intermediates: tuple[str, ...] = ()
    internal_roots: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApprovalSettings:
    approvers: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()
    required: int = 1
    allow_self_approval: bool = False
    expires_after_minutes: int = 30


@dataclass(frozen=True)
class StorageSettings:
    url: str = "sqlite:///exchange-tls.db"


@dataclass(frozen=True)
class ScheduleSettings:
    channel: str
    cron: str | None = None
    every_seconds: int | None = None
    timezone: str = "UTC"
    mention: str | None = None
    servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    servers: tuple[ServerSettings, ...] = ()
    slack: SlackSettings = field(default_factory=SlackSettings)
    check: CheckSettings = field(default_factory=CheckSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    approval: ApprovalSettings = field(default_factory=ApprovalSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    schedules: tuple[ScheduleSettings, ...] = ()
    source: str = "<defaults>"

    def server(self, name: str) -> ServerSettings | None:
        """The configured server of that name (case-insensitive), or None."""
        wanted = name.casefold()
        return next((s for s in self.servers if s.name.casefold() == wanted), None)

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.servers)


T = TypeVar("T")


class _Section:
    """Reads one TOML table, remembering its path for messages and rejecting unknown keys."""

    def __init__(self, data: Mapping[str, Any], path: str, source: str) -> None:
        self._data = data
        self._path = path
        self._source = source
        self._used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self._path}.{_key_text(key)}" if self._path else _key_text(key)

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self._source}: {self._key(key)}: {problem}")

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: T) -> T:
        self._used.add(key)
        if key not in self._data:
            return default
        value = self._data[key]
        if isinstance(value, bool) and kind in (int, float):
            raise self.error(key, f"expected a number, got {value!r}")
        if kind is float and isinstance(value, int):
            if abs(value) > 2**53:
                raise self.error(key, f"{value} is too large")
            return cast(T, float(value))
        if not isinstance(value, kind):
            raise self.error(key, f"expected {_kind_name(kind)}, got {_describe(value)}")
        return cast(T, value)

    def optional_str(self, key: str) -> str | None:
        value = self.get(key, (str, type(None)), None)
        return cast(str | None, value)

    def str_list(
        self, key: str, pattern: re.Pattern[str] | None = None, what: str = ""
    ) -> tuple[str, ...]:
        values: list[Any] = self.get(key, list, [])
        result: list[str] = []
        for index, item in enumerate(values):
            if not isinstance(item, str):
                raise self.error(f"{key}[{index}]", f"expected a string, got {_describe(item)}")
            if pattern is not None and not pattern.match(item):
                raise self.error(f"{key}[{index}]", f"{_shown(item)} is not {what}")
            result.append(item)
        return tuple(result)

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)} (got {_shown(value)})")
        return value

    def positive(
        self,
        key: str,
        kind: type[int] | type[float],
        default: float,
        *,
        maximum: float | None = None,
    ) -> Any:
        value = self.get(key, kind, kind(default))
        not_finite = isinstance(value, float) and not math.isfinite(value)
        if not_finite or value <= 0 or (maximum is not None and value > maximum):
            limit = f" and at most {maximum:g}" if maximum is not None else ""
            raise self.error(key, f"must be greater than 0{limit} (got {value!r})")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            raise self.error(
                unknown[0], "unknown key (check the spelling; see config/example.toml)"
            )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
        type(None): "nothing",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds if k is not type(None))


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}"


def _table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key}: expected a table, got {_describe(value)}")
    return value


def _tables(data: Mapping[str, Any], key: str, source: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{source}: {key}: expected an array of tables ([[{key}]])")
    return value


def _server(data: Mapping[str, Any], index: int, source: str) -> ServerSettings:
    section = _Section(data, f"servers[{index}]", source)
    name = section.get("name", str, "")
    if not SERVER_NAME_PATTERN.match(name):
        raise section.error(
            "name",
            f"{_shown(name)} is not a server name (letters, digits and '-', "
            "at most 63, as Exchange's NetBIOS-style server names)",
        )
    if name.casefold() in RESERVED_SERVER_NAMES:
        raise section.error(
            "name", f"{name!r} is reserved: `check {name.lower()}` means every server"
        )
    url = section.get("url", str, "")
    parts = _http_url(section, "url", url, "http://ex01.contoso.com/PowerShell/")
    if parts.username or parts.password or "@" in parts.netloc:
        raise section.error("url", "must not contain credentials; use username_env/password_env")
    auth = cast(AuthMethod, section.choice("auth", AUTH_METHODS, "kerberos"))
    username_env = section.optional_str("username_env")
    password_env = section.optional_str("password_env")
    for key, env_name in (("username_env", username_env), ("password_env", password_env)):
        if env_name is not None and not ENV_NAME_PATTERN.match(env_name):
            raise section.error(
                key,
                "is not an environment variable name (letters, digits and '_'): give the "
                "variable's name, not the secret (the value is not shown)",
            )
    if auth in ("basic", "ntlm", "credssp") and (username_env is None or password_env is None):
        raise section.error("username_env", f"auth {auth!r} needs username_env and password_env")
    encryption = section.choice("encryption", ("auto", "always", "never"), "auto")
    settings = ServerSettings(
        name=name,
        url=url,
        auth=auth,
        username_env=username_env,
        password_env=password_env,
        cert_validation=section.get("cert_validation", bool, True),
        ca_bundle=section.optional_str("ca_bundle"),
        connect_timeout=section.positive("connect_timeout", float, 10.0, maximum=600),
        operation_timeout=section.positive("operation_timeout", float, 20.0, maximum=3600),
        encryption=cast(Literal["auto", "always", "never"], encryption),
    )
    section.finish()
    return settings


def _schedule(
    data: Mapping[str, Any], index: int, source: str, server_names: Sequence[str]
) -> ScheduleSettings:
    section = _Section(data, f"schedules[{index}]", source)
    channel = section.get("channel", str, "")
    if not SLACK_CHANNEL_PATTERN.match(channel):
        raise section.error("channel", f"{_shown(channel)} is not a Slack channel ID (C...)")
    cron = section.optional_str("cron")
    every = section.get("every_seconds", (int, type(None)), None)
    if (cron is None) == (every is None):
        raise section.error("cron", "give exactly one of cron or every_seconds")
    if cron is not None and len(cron.split()) != 5:
        raise section.error(
            "cron",
            f"{_shown(cron)} is not a 5-field cron expression (minute hour day month weekday)",
        )
    if every is not None and not 1 <= every <= 7 * 86400:
        raise section.error("every_seconds", f"must be between 1 and 604800 (got {every})")
    timezone = section.get("timezone", str, "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise section.error(
            "timezone", f"{_shown(timezone)} is not an IANA time zone such as Europe/Amsterdam"
        ) from None
    mention = section.optional_str("mention")
    if mention is not None and not (
        SLACK_GROUP_PATTERN.match(mention) or SLACK_USER_PATTERN.match(mention)
    ):
        raise section.error(
            "mention", f"{_shown(mention)} is not a Slack user-group (S...) or user ID"
        )
    servers = section.str_list("servers")
    known = {n.casefold() for n in server_names}
    for position, server in enumerate(servers):
        if server.casefold() not in known:
            raise section.error(
                f"servers[{position}]", f"{_shown(server)} is not a configured server"
            )
    result = ScheduleSettings(
        channel=channel,
        cron=cron,
        every_seconds=every,
        timezone=timezone,
        mention=mention,
        servers=servers,
    )
    section.finish()
    return result


def parse_settings(text: str, *, source: str = "<config>") -> Settings:
    """Parse and validate configuration TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
    except RecursionError:  # tomllib reads nested arrays and inline tables recursively
        raise ConfigError(f"{source}: not valid TOML: nested too deeply") from None
    known_sections = {"slack", "servers", "check", "trust", "approval", "storage", "schedules"}
    for key in data:
        if key not in known_sections:
            raise ConfigError(
                f"{source}: {_key_text(key)}: unknown section "
                f"(known: {', '.join(sorted(known_sections))})"
            )

    servers = tuple(
        _server(item, i, source) for i, item in enumerate(_tables(data, "servers", source))
    )
    seen: set[str] = set()
    for index, server in enumerate(servers):
        if server.name.casefold() in seen:
            raise ConfigError(f"{source}: servers[{index}].name: duplicate server {server.name!r}")
        seen.add(server.name.casefold())

    slack_section = _Section(_table(data, "slack", source), "slack", source)
    api_url = slack_section.optional_str("api_url")
    if api_url is not None:
        _http_url(slack_section, "api_url", api_url, "https://slack.com/api/")
    slack = SlackSettings(
        api_url=api_url,
        allowed_channels=slack_section.str_list(
            "allowed_channels", SLACK_CHANNEL_PATTERN, "a Slack channel ID (C...)"
        ),
        allowed_users=slack_section.str_list(
            "allowed_users", SLACK_USER_PATTERN, "a Slack user ID (U... or W...)"
        ),
        workers=slack_section.positive("workers", int, 4, maximum=64),
    )
    slack_section.finish()

    check_section = _Section(_table(data, "check", source), "check", source)
    check = CheckSettings(
        concurrency=check_section.positive("concurrency", int, 8, maximum=256),
        plan_scope=cast(PlanScope, check_section.choice("plan_scope", PLAN_SCOPES, "all")),
        pool_idle_seconds=check_section.positive("pool_idle_seconds", float, 300.0),
    )
    check_section.finish()

    trust_section = _Section(_table(data, "trust", source), "trust", source)
    trust = TrustSettings(
        include_certifi=trust_section.get("include_certifi", bool, True),
        extra_public_roots=trust_section.str_list("extra_public_roots"),
        intermediates=trust_section.str_list("intermediates"),
        internal_roots=trust_section.str_list("internal_roots"),
    )
    trust_section.finish()

    approval_section = _Section(_table(data, "approval", source), "approval", source)
    principal = re.compile(f"{SLACK_USER_PATTERN.pattern}|{SLACK_GROUP_PATTERN.pattern}")
    approval = ApprovalSettings(
        approvers=approval_section.str_list(
            "approvers", principal, "a Slack user ID (U.../W...) or user-group ID (S...)"
        ),
        admins=approval_section.str_list(
            "admins", principal, "a Slack user ID (U.../W...) or user-group ID (S...)"
        ),
        required=approval_section.positive("required", int, 1, maximum=10),
        allow_self_approval=approval_section.get("allow_self_approval", bool, False),
        expires_after_minutes=approval_section.positive(
            "expires_after_minutes", int, 30, maximum=7 * 24 * 60
        ),
    )
    approval_section.finish()

    storage_section = _Section(_table(data, "storage", source), "storage", source)
    storage_url = storage_section.get("url", str, StorageSettings.url)
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", storage_url):
        raise storage_section.error("url", "must be a sqlite:/// or postgresql+psycopg:// URL")
    if database_url_has_secret(storage_url):
        raise storage_section.error(
            "url",
            "must not contain a password: secrets come from the environment (PGPASSWORD) or "
            "~/.pgpass, which PostgreSQL's client reads itself",
        )
    storage = StorageSettings(url=storage_url)
    storage_section.finish()

    names = [s.name for s in servers]
    schedules = tuple(
        _schedule(item, i, source, names)
        for i, item in enumerate(_tables(data, "schedules", source))
    )
    return Settings(
        servers=servers,
        slack=slack,
        check=check,
        trust=trust,
        approval=approval,
        storage=storage,
        schedules=schedules,
        source=source,
    )


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load the configuration from ``path``, else ``$EXCHANGE_TLS_CONFIG``."""
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get(CONFIG_ENV_VAR)
    if not chosen:
        raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV_VAR}")
    file = Path(chosen)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{file}: cannot read the configuration: {error}") from None
    return parse_settings(text, source=str(file))
