"""The Slack app manifest and config/slack-manifest.yml."""

from __future__ import annotations

from pathlib import Path

import yaml

from bot.render.manifest import BOT_SCOPES, USAGE_HINT, manifest_yaml, slack_manifest

MANIFEST_FILE = Path(__file__).resolve().parents[2] / "config" / "slack-manifest.yml"


def test_committed_file_equals_generated_yaml() -> None:
    assert MANIFEST_FILE.read_text(encoding="utf-8") == manifest_yaml(), (
        "config/slack-manifest.yml is stale: write manifest_yaml() to it"
    )


def test_yaml_is_the_manifest() -> None:
    assert yaml.safe_load(manifest_yaml()) == slack_manifest()


def test_socket_mode_command_and_interactivity() -> None:
    manifest = slack_manifest()
    assert manifest["display_information"]["name"] == "exchange-tls"
    assert manifest["features"]["bot_user"]["display_name"] == "exchange-tls"
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"] == {"is_enabled": True}
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/exchange-tls"
    assert command["usage_hint"] == USAGE_HINT == (
        "check [SERVER|all] | status | audit [REQUEST-ID] | freeze | unfreeze | help"
    )
    assert "url" not in command


def test_only_the_scopes_the_bot_needs_and_no_events() -> None:
    manifest = slack_manifest()
    assert manifest["oauth_config"]["scopes"] == {
        "bot": ["commands", "chat:write", "usergroups:read", "users:read"]
    }
    assert "user" not in manifest["oauth_config"]["scopes"]
    assert "event_subscriptions" not in manifest["settings"]


def test_every_scope_is_justified_in_a_comment() -> None:
    lines = manifest_yaml().splitlines()
    for scope, reason in BOT_SCOPES.items():
        (line,) = [line for line in lines if line.strip().startswith(f"- {scope} ")]
        assert line.endswith(f"  # {reason}")
        assert reason


def test_http_mode_points_slack_at_the_request_url() -> None:
    url = "https://bot.example.com/slack/events"
    manifest = slack_manifest("/tls", request_url=url)
    assert manifest["settings"]["socket_mode_enabled"] is False
    assert manifest["settings"]["interactivity"] == {"is_enabled": True, "request_url": url}
    assert manifest["features"]["slash_commands"][0] == {
        "command": "/tls",
        "description": manifest["features"]["slash_commands"][0]["description"],
        "usage_hint": USAGE_HINT,
        "should_escape": False,
        "url": url,
    }
    assert yaml.safe_load(manifest_yaml("/tls", request_url=url)) == manifest
