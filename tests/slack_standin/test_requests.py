"""Signed HTTP-mode requests: slack_sdk's verifier and a real Bolt app in HTTP mode judge them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from bot.slack_standin import (
    DEFAULT_BOT_TOKEN,
    DEFAULT_SIGNING_SECRET,
    Forgery,
    SlackStandIn,
    block_actions,
    post,
    slash_command,
    view_submission,
)
from bot.slack_standin.requests import signature

SECRET = DEFAULT_SIGNING_SECRET


def verifier_at(now: float) -> SignatureVerifier:
    class FixedClock:
        def now(self) -> float:
            return now

    return SignatureVerifier(SECRET, clock=FixedClock())  # type: ignore[arg-type]


def test_signature_matches_slacks_documented_example() -> None:
    # The example of Slack's "Verifying requests from Slack" guide.
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    assert signature("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body) == (
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda **kw: slash_command(text="check EX01", **kw),
        lambda **kw: block_actions(action_id="approve", value="REQ-1", **kw),
        lambda **kw: view_submission(callback_id="deny", **kw),
    ],
    ids=["slash_command", "block_actions", "view_submission"],
)
def test_signed_requests_pass_and_forged_ones_fail(build: Any) -> None:
    now = 1_700_000_000
    verifier = verifier_at(now)
    genuine = build(signing_secret=SECRET, timestamp=now)
    assert verifier.is_valid_request(genuine.body, genuine.headers)
    for forgery in Forgery:
        forged = build(signing_secret=SECRET, timestamp=now, forgery=forgery)
        assert not verifier.is_valid_request(forged.body, forged.headers), forgery
    assert not verifier_at(now + 301).is_valid_request(genuine.body, genuine.headers)


def test_slash_command_body_is_what_slack_posts() -> None:
    signed = slash_command(
        signing_secret=SECRET, text="check all", user_id="U0BOB", channel_id="C0OPS"
    )
    fields = {k: v[0] for k, v in parse_qs(signed.body.decode(), keep_blank_values=True).items()}
    assert fields["command"] == "/exchange-tls"
    assert (fields["text"], fields["user_id"], fields["channel_id"]) == (
        "check all",
        "U0BOB",
        "C0OPS",
    )
    assert fields["response_url"].startswith("https://hooks.slack.com/commands/")
    assert fields["trigger_id"]
    assert signed.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_block_actions_body_carries_a_json_payload() -> None:
    signed = block_actions(
        signing_secret=SECRET, action_id="approve", value="REQ-1", message_ts="1700000000.000200"
    )
    payload = json.loads(parse_qs(signed.body.decode())["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["actions"][0]["action_id"] == "approve"
    assert payload["actions"][0]["value"] == "REQ-1"
    assert payload["container"]["message_ts"] == "1700000000.000200"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def bolt_http_url() -> Iterator[tuple[str, list[str]]]:
    received: list[str] = []
    with SlackStandIn(socket_mode=False) as slack:
        app = App(
            client=WebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url),
            signing_secret=SECRET,
        )

        @app.command("/exchange-tls")
        def command(ack: Ack, command: dict[str, Any]) -> None:
            received.append(command["text"])
            ack(text="checking...")

        @app.action("approve")
        def approve(ack: Ack, action: dict[str, Any]) -> None:
            received.append(action["value"])
            ack()

        server: WSGIServer = make_server(
            "127.0.0.1", 0, SlackRequestHandler(app), handler_class=_QuietHandler
        )
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        yield f"http://127.0.0.1:{server.server_port}/slack/events", received
        server.shutdown()
        server.server_close()
        thread.join()


def test_bolt_in_http_mode_accepts_genuine_requests(bolt_http_url: tuple[str, list[str]]) -> None:
    url, received = bolt_http_url
    status, body = post(url, slash_command(signing_secret=SECRET, text="check EX01"))
    assert (status, body) == (200, "checking...")
    status, _ = post(url, block_actions(signing_secret=SECRET, action_id="approve", value="R1"))
    assert status == 200
    assert received[-2:] == ["check EX01", "R1"]


@pytest.mark.parametrize("forgery", [Forgery.BAD_SIGNATURE, Forgery.STALE_TIMESTAMP])
def test_bolt_in_http_mode_refuses_forgeries(
    bolt_http_url: tuple[str, list[str]], forgery: Forgery
) -> None:
    url, received = bolt_http_url
    before = list(received)
    status, _ = post(url, slash_command(signing_secret=SECRET, text="check", forgery=forgery))
    assert status == 401
    assert received == before
