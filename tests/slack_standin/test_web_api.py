"""The Web API stand-in, driven by slack_sdk's real WebClient."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import (
    FixedValueRetryIntervalCalculator,
)
from slack_sdk.webhook import WebhookClient

from bot.slack_standin import (
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_TOKEN,
    SlackStandIn,
    StandInChannel,
    StandInUser,
)

CHANNEL = "C0EXCHANGE"
SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*EX01*: critical"}}


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(socket_mode=False) as standin:
        yield standin


@pytest.fixture
def client(slack: SlackStandIn) -> WebClient:
    return WebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url, timeout=5)


def test_auth_test_describes_the_bot(slack: SlackStandIn, client: WebClient) -> None:
    answer = client.auth_test()
    assert answer["user_id"] == slack.bot_user_id
    assert answer["bot_id"] == slack.bot_id
    assert slack.calls("auth.test")[0].token == DEFAULT_BOT_TOKEN


@pytest.mark.parametrize(
    ("token", "error"),
    [("xoxb-wrong", "invalid_auth"), (DEFAULT_APP_TOKEN, "not_allowed_token_type")],
)
def test_tokens_are_checked(slack: SlackStandIn, token: str, error: str) -> None:
    with pytest.raises(SlackApiError) as raised:
        WebClient(token=token, base_url=slack.api_url).chat_postMessage(channel=CHANNEL, text="x")
    assert raised.value.response["error"] == error
    assert slack.messages(CHANNEL) == []


def test_missing_token_is_not_authed(slack: SlackStandIn) -> None:
    with pytest.raises(SlackApiError) as raised:
        WebClient(base_url=slack.api_url).auth_test()
    assert raised.value.response["error"] == "not_authed"


def test_apps_connections_open_needs_the_app_token(slack: SlackStandIn, client: WebClient) -> None:
    with pytest.raises(SlackApiError) as raised:
        client.apps_connections_open(app_token=DEFAULT_BOT_TOKEN)
    assert raised.value.response["error"] == "not_allowed_token_type"


def test_messages_threads_updates_and_permalinks(slack: SlackStandIn, client: WebClient) -> None:
    parent = client.chat_postMessage(channel=CHANNEL, text="report", blocks=[SECTION])
    first = client.chat_postMessage(channel=CHANNEL, text="page 2", thread_ts=parent["ts"])
    client.chat_postMessage(channel=CHANNEL, text="page 3", thread_ts=first["ts"])
    client.chat_update(channel=CHANNEL, ts=parent["ts"], text="report (updated)")

    assert float(first["ts"]) > float(parent["ts"])
    assert [m.text for m in slack.messages(CHANNEL)] == ["report (updated)"]
    thread = slack.thread(CHANNEL, parent["ts"])
    assert [m.text for m in thread] == ["report (updated)", "page 2", "page 3"]
    assert {m.thread_ts for m in thread[1:]} == {parent["ts"]}
    assert thread[0].blocks == [SECTION]
    assert thread[0].edit_count == 1

    link = client.chat_getPermalink(channel=CHANNEL, message_ts=first["ts"])["permalink"]
    assert link.endswith(f"?thread_ts={parent['ts']}&cid={CHANNEL}")
    with pytest.raises(SlackApiError, match="message_not_found"):
        client.chat_update(channel=CHANNEL, ts="1.000001", text="x")
    with pytest.raises(SlackApiError, match="thread_not_found"):
        client.chat_postMessage(channel=CHANNEL, text="orphan", thread_ts="1.000001")


def test_ephemeral_messages_stay_out_of_the_channel(slack: SlackStandIn, client: WebClient) -> None:
    answer = client.chat_postEphemeral(channel=CHANNEL, user="U0ADMIN01", text="only you")
    assert answer["message_ts"]
    assert slack.messages(CHANNEL) == []
    assert [m.text for m in slack.ephemeral_messages(CHANNEL, user="U0ADMIN01")] == ["only you"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        (
            {"text": "x", "blocks": [{**SECTION, "text": {"type": "mrkdwn", "text": "x" * 3001}}]},
            "invalid_blocks",
        ),
        ({"text": "x", "blocks": [SECTION] * 51}, "invalid_blocks"),
        ({"text": "x" * 40_001}, "msg_too_long"),
        ({"text": ""}, "no_text"),
    ],
    ids=["section-too-long", "too-many-blocks", "msg-too-long", "no-text"],
)
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_what_slack_rejects_is_rejected_and_not_stored(
    slack: SlackStandIn, client: WebClient, kwargs: dict[str, object], error: str
) -> None:
    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel=CHANNEL, **kwargs)  # type: ignore[arg-type]
    assert raised.value.response["error"] == error
    assert raised.value.response["response_metadata"]["messages"][0].startswith("[ERROR] ")
    assert slack.messages(CHANNEL) == []
    assert slack.calls("chat.postMessage")[0].error == error


def test_form_encoded_calls_are_understood(slack: SlackStandIn) -> None:
    body = urlencode({"channel": CHANNEL, "text": "form", "blocks": json.dumps([SECTION])})
    connection = http.client.HTTPConnection("127.0.0.1", slack.port, timeout=5)
    connection.request(
        "POST",
        "/api/chat.postMessage",
        body=body,
        headers={
            "Authorization": f"Bearer {DEFAULT_BOT_TOKEN}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert json.load(connection.getresponse())["ok"] is True
    connection.close()
    assert slack.messages(CHANNEL)[0].blocks == [SECTION]
    assert slack.calls("chat.postMessage")[0].args["blocks"] == [SECTION]


def test_configured_channels_users_and_groups() -> None:
    with SlackStandIn(
        socket_mode=False,
        channels=[
            StandInChannel("C0OPS", "ops"),
            StandInChannel("C0QUIET", "quiet", is_member=False),
        ],
        users=[
            StandInUser("U0ALICE", "alice", "Alice Admin", tz="America/New_York", is_admin=True)
        ],
        usergroups={"S0APPROVERS": ["U0ALICE", "U0BOB"]},
    ) as slack:
        client = WebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url)
        assert client.chat_postMessage(channel="#ops", text="x")["channel"] == "C0OPS"
        for channel, error in [("C0NOPE", "channel_not_found"), ("C0QUIET", "not_in_channel")]:
            with pytest.raises(SlackApiError) as raised:
                client.chat_postMessage(channel=channel, text="x")
            assert raised.value.response["error"] == error
        user = client.users_info(user="U0ALICE")["user"]
        assert (user["name"], user["real_name"], user["tz"]) == (
            "alice",
            "Alice Admin",
            "America/New_York",
        )
        assert user["tz_offset"] in (-5 * 3600, -4 * 3600)
        with pytest.raises(SlackApiError, match="user_not_found"):
            client.users_info(user="U0NOBODY")
        assert client.usergroups_users_list(usergroup="S0APPROVERS")["users"] == [
            "U0ALICE",
            "U0BOB",
        ]
        with pytest.raises(SlackApiError, match="no_such_subteam"):
            client.usergroups_users_list(usergroup="S0NONE")
        assert client.conversations_info(channel="C0OPS")["channel"]["name"] == "ops"


def test_rate_limit_is_honoured_and_the_message_delivered_once(slack: SlackStandIn) -> None:
    client = WebClient(
        token=DEFAULT_BOT_TOKEN,
        base_url=slack.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    started = time.monotonic()
    client.chat_postMessage(channel=CHANNEL, text="report")
    assert time.monotonic() - started >= 1.0
    assert [(c.status, c.error) for c in slack.calls("chat.postMessage")] == [
        (429, "ratelimited"),
        (200, None),
    ]
    assert [m.text for m in slack.messages(CHANNEL)] == ["report"]


def test_server_errors_and_dropped_connections_can_be_retried(slack: SlackStandIn) -> None:
    quick = FixedValueRetryIntervalCalculator(fixed_internal=0.01)
    client = WebClient(
        token=DEFAULT_BOT_TOKEN,
        base_url=slack.api_url,
        retry_handlers=[
            ServerErrorRetryHandler(max_retry_count=2, interval_calculator=quick),
            ConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=quick),
        ],
    )
    slack.fail_next("chat.postMessage", status=500)
    slack.disconnect_next("chat.postMessage")
    client.chat_postMessage(channel=CHANNEL, text="report")
    assert [c.status for c in slack.calls("chat.postMessage")] == [500, 0, 200]
    assert len(slack.messages(CHANNEL)) == 1


def test_plain_error_injection_without_retry(slack: SlackStandIn, client: WebClient) -> None:
    slack.fail_next("chat.update", status=200, error="channel_not_found")
    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.chat_update(channel=CHANNEL, ts="1.0", text="x")


def test_latency_knob_delays_answers(slack: SlackStandIn, client: WebClient) -> None:
    slack.set_latency(0.4, "auth.test")
    started = time.monotonic()
    client.auth_test()
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    client.chat_postMessage(channel=CHANNEL, text="fast")
    assert time.monotonic() - started < 0.4


def test_wait_for_wakes_on_change_and_times_out(slack: SlackStandIn, client: WebClient) -> None:
    threading.Timer(0.05, lambda: client.chat_postMessage(channel=CHANNEL, text="late")).start()
    assert slack.wait_for_message(CHANNEL, lambda m: m.text == "late", timeout=5).text == "late"
    with pytest.raises(TimeoutError):
        slack.wait_for(lambda: slack.messages("C0OTHER"), timeout=0.05)


def test_views_are_validated(slack: SlackStandIn, client: WebClient) -> None:
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Deny request"},
        "blocks": [SECTION],
    }
    opened = client.views_open(trigger_id="1.2.abc", view=view)["view"]
    assert slack.views()[0].id == opened["id"]
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        client.views_open(trigger_id="1.2.abc", view={**view, "blocks": [{"type": "nope"}]})


def test_response_urls_post_back_into_the_workspace(slack: SlackStandIn, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=CHANNEL, text="card", blocks=[SECTION])
    hook = slack.response_url(channel_id=CHANNEL, user_id="U0ADMIN01", message_ts=posted["ts"])
    assert WebhookClient(hook).send(text="just you").status_code == 200
    assert WebhookClient(hook).send(text="all", response_type="in_channel").status_code == 200
    assert WebhookClient(hook).send(text="replaced", replace_original=True).status_code == 200
    bad = WebhookClient(hook).send(text="x", blocks=[{"type": "nope"}])
    assert (bad.status_code, bad.body) == (400, "invalid_blocks")
    assert [m.text for m in slack.ephemeral_messages(CHANNEL)] == ["just you"]
    assert [m.text for m in slack.messages(CHANNEL)] == ["replaced", "all"]
    assert [r.status for r in slack.responses()] == [200, 200, 200, 400]
