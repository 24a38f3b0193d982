"""Configuration: the documented example loads, and every bad value is named with its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """
[[servers]]
name = "EX01"
url = "http://ex01.contoso.com/PowerShell/"
auth = "ntlm"
username_env = "EX01_USER"
password_env = "EX01_PASSWORD"
"""


def test_example_configuration_loads_with_documented_defaults() -> None:
    settings = load_settings(ROOT / "config" / "example.toml")
    assert settings.server_names == ("EX01",)
    assert settings.approval.required == 1
    assert settings.approval.expires_after_minutes == 30
    assert settings.schedules[0].timezone == "Europe/Amsterdam"
    assert settings.storage.url.startswith("sqlite:///")


def test_server_lookup_is_case_insensitive_and_unknown_names_give_none() -> None:
    settings = parse_settings(MINIMAL)
    assert settings.server("ex01") is not None
    assert settings.server("ex01.contoso.com") is None
    assert settings.server("EX02") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL.replace('"ntlm"', '"kerbros"'), "servers[0].auth: must be one of"),
        (MINIMAL.replace('name = "EX01"', 'name = "ex01; rm -rf /"'), "servers[0].name:"),
        (MINIMAL.replace("http://ex01", "ftp://ex01"), "servers[0].url:"),
        (MINIMAL.replace("http://ex01", "http://user:pw@ex01"), "must not contain credentials"),
        (
            MINIMAL.replace('username_env = "EX01_USER"', 'username_env = "EX01 USER"'),
            "servers[0].username_env:",
        ),
        (
            MINIMAL.replace('password_env = "EX01_PASSWORD"', ""),
            "needs username_env and password_env",
        ),
        (MINIMAL + 'colour = "blue"\n', "servers[0].colour: unknown key"),
        (MINIMAL + MINIMAL, "servers[1].name: duplicate server"),
        (MINIMAL + "[approval]\nrequired = 0\n", "approval.required: must be greater than 0"),
        (MINIMAL + '[approval]\napprovers = ["bob"]\n', "approval.approvers[0]:"),
        (MINIMAL + "[approval]\nrequired = true\n", "approval.required: expected a number"),
        (MINIMAL + '[storage]\nurl = "mysql://x"\n', "storage.url:"),
        (
            MINIMAL + '[[schedules]]\nchannel = "C1"\ncron = "0 8 * *"\n',
            "schedules[0].channel: 'C1' is not a Slack channel ID",
        ),
        (
            MINIMAL + '[[schedules]]\nchannel = "C0HEALTH"\ncron = "0 8 * *"\n',
            "schedules[0].cron: '0 8 * *' is not a 5-field cron",
        ),
        (
            MINIMAL
            + '[[schedules]]\nchannel = "C0HEALTH"\ncron = "0 8 * * *"\ntimezone = "Mars/Base"\n',
            "schedules[0].timezone:",
        ),
        (
            MINIMAL + '[[schedules]]\nchannel = "C0HEALTH"\nevery_seconds = 5\nservers = ["EX9"]\n',
            "schedules[0].servers[0]: 'EX9' is not a configured server",
        ),
        (MINIMAL + "[bogus]\n", "bogus: unknown section"),
        ("[[servers]\n", "not valid TOML"),
    ],
)
def test_bad_configuration_names_the_key_and_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(text, source="test.toml")
    assert expected in str(error.value)
    assert str(error.value).startswith("test.toml: ")


def test_missing_configuration_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="EXCHANGE_TLS_CONFIG"):
        load_settings(None, environ={})


def test_basic_over_http_is_flagged() -> None:
    settings = parse_settings(MINIMAL.replace('"ntlm"', '"basic"'))
    assert settings.servers[0].uses_basic_over_http


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://ex01.contoso.com /PowerShell/", "contains spaces or control characters"),
        ("http://ex01.contoso.com\t/PowerShell/", "contains spaces or control characters"),
        ("http://\u0435x01.contoso.com/PowerShell/", "outside ASCII in its host name"),
        ("http://ex01..contoso.com/PowerShell/", "not a DNS name"),
        ("http://-ex01.contoso.com/PowerShell/", "not a DNS name"),
        ("http://ex01_contoso.com/PowerShell/", "not a DNS name"),
        ("http://10.0.0.999/PowerShell/", "neither a DNS name nor an IP address"),
        ("http://0x7f000001/PowerShell/", "neither a DNS name nor an IP address"),
        ("http://017700000001/PowerShell/", "neither a DNS name nor an IP address"),
    ],
)
def test_server_urls_need_a_sound_host(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(MINIMAL.replace("http://ex01.contoso.com/PowerShell/", url),
                       source="test.toml")
    assert "servers[0].url:" in str(error.value)
    assert expected in str(error.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://EX01.Contoso.com:5986/PowerShell/",
        "http://10.0.0.21/PowerShell/",
        "http://[fe80::1]:5985/PowerShell/",
        "http://xn--exchnge-7fg.contoso.com/PowerShell/",
        "http://ex01/PowerShell/",
    ],
)
def test_dns_names_and_ip_addresses_are_accepted(url: str) -> None:
    settings = parse_settings(MINIMAL.replace("http://ex01.contoso.com/PowerShell/", url))
    assert settings.servers[0].url == url


def test_slack_api_url_gets_the_same_host_checks() -> None:
    with pytest.raises(ConfigError, match=r"slack\.api_url: .*outside ASCII"):
        parse_settings(MINIMAL + '[slack]\napi_url = "https://sl\u0430ck.com/api/"\n')


def test_a_server_cannot_be_named_all() -> None:
    with pytest.raises(ConfigError, match=r"servers\[0\]\.name: 'All' is reserved"):
        parse_settings(MINIMAL.replace('name = "EX01"', 'name = "All"'))


def test_a_database_password_in_the_configuration_is_refused_and_not_echoed() -> None:
    text = MINIMAL + '[storage]\nurl = "postgresql+psycopg://bot:S3cret-pw@db/exchange_tls"\n'
    with pytest.raises(ConfigError) as error:
        parse_settings(text)
    assert "storage.url: must not contain a password" in str(error.value)
    assert "PGPASSWORD" in str(error.value)
    assert "S3cret-pw" not in str(error.value)
    user_only = MINIMAL + '[storage]\nurl = "postgresql+psycopg://bot@db:5432/exchange_tls"\n'
    assert parse_settings(user_only).storage.url.endswith("@db:5432/exchange_tls")


def test_long_bad_values_are_cut_in_messages() -> None:
    name = "x" * 5000 + "!"
    with pytest.raises(ConfigError) as error:
        parse_settings(MINIMAL.replace('name = "EX01"', f'name = "{name}"'))
    message = str(error.value)
    assert "(5001 characters)" in message
    assert len(message) < 400


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://bot@db/exchange_tls?password=S3cret-pw",
        "postgresql+psycopg://bot@db/exchange_tls?sslmode=require&PASSWORD=S3cret-pw",
        "postgresql+psycopg://bot:S3cret/pw@db/exchange_tls",
        "postgresql+psycopg://bot@db/x?dbname=host%3Ddb%20password%3DS3cret-pw",
    ],
)
def test_every_way_of_writing_a_database_password_is_refused(url: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_settings(MINIMAL + f'[storage]\nurl = "{url}"\n')
    assert "storage.url: must not contain a password" in str(error.value)
    assert "S3cret" not in str(error.value)


def test_a_sqlite_path_with_a_colon_and_an_at_sign_is_not_a_password() -> None:
    settings = parse_settings(MINIMAL + '[storage]\nurl = "sqlite:///srv/a:b@c.db"\n')
    assert settings.storage.url == "sqlite:///srv/a:b@c.db"


def test_storage_urls_in_messages_hide_passwords_and_secret_parameters() -> None:
    from bot.replicas import shown_url

    assert shown_url("postgresql+psycopg://bot@db:5432/x?password=S3cret-pw") == (
        "postgresql+psycopg://bot@db:5432/x?***")
    assert "S3cret" not in shown_url("postgresql+psycopg://bot:S3cret@db/x?sslmode=require")
