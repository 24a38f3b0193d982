"""Socket Mode: a real slack_bolt App on SocketModeHandler, and a bare WebSocket client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from slack_bolt import Ack, App, Respond
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from bot.slack_standin import (
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_TOKEN,
    DEFAULT_CHANNEL_ID,
    SlackStandIn,
    SocketModeError,
)

APPROVE_CARD: list[dict[str, Any]] = [
    {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "Unbind SMTP from the self-signed cert?"},
    },
    {
        "type": "actions",
        "block_id": "decision",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "value": "REQ-1",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
            }
        ],
    },
]


@dataclass
class BoltInSocketMode:
    slack: SlackStandIn
    handler: SocketModeHandler


@pytest.fixture(scope="module")
def bolt() -> Iterator[BoltInSocketMode]:
    with SlackStandIn() as slack:
        app = App(client=WebClient(token=DEFAULT_BOT_TOKEN, base_url=slack.api_url))

        @app.command("/exchange-tls")
        def command(ack: Ack, command: dict[str, Any], client: WebClient) -> None:
            ack(text="checking 1 server...")
            client.chat_postMessage(
                channel=command["channel_id"], text=f"report for {command['text']}"
            )

        @app.action("approve")
        def approve(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
            ack()
            client.chat_update(
                channel=body["channel"]["id"],
                ts=body["container"]["message_ts"],
                text=f"approved {body['actions'][0]['value']} by <@{body['user']['id']}>",
            )
            respond(text="your approval is recorded")

        @app.event("app_mention")
        def mention(client: WebClient, event: dict[str, Any]) -> None:
            client.chat_postMessage(channel=event["channel"], text="hello", thread_ts=event["ts"])

        handler = SocketModeHandler(app, DEFAULT_APP_TOKEN)
        handler.connect()  # type: ignore[no-untyped-call]
        slack.wait_for_call("apps.connections.open")
        assert slack.socket_mode is not None
        slack.socket_mode.wait_for_connection(timeout=5)
        yield BoltInSocketMode(slack, handler)
        handler.client.auto_reconnect_enabled = False
        slack.socket_mode.drop_connections()
        handler.close()  # type: ignore[no-untyped-call]


def test_slash_command_is_acked_and_its_message_posted(bolt: BoltInSocketMode) -> None:
    socket_mode = bolt.slack.socket_mode
    assert socket_mode is not None
    envelope_id = bolt.slack.send_slash_command("check EX01")

    assert socket_mode.wait_for_ack(envelope_id, timeout=5) == {"text": "checking 1 server..."}
    record = socket_mode.ack(envelope_id)
    assert record is not None
    assert 0 <= record.latency < 3
    message = bolt.slack.wait_for_message(
        DEFAULT_CHANNEL_ID, lambda m: m.text == "report for check EX01"
    )
    assert message.user == bolt.slack.bot_user_id
    app_open = bolt.slack.calls("apps.connections.open")[0]
    assert app_open.token == DEFAULT_APP_TOKEN


def test_button_click_updates_the_card_and_responds(bolt: BoltInSocketMode) -> None:
    socket_mode = bolt.slack.socket_mode
    assert socket_mode is not None
    card = WebClient(token=DEFAULT_BOT_TOKEN, base_url=bolt.slack.api_url).chat_postMessage(
        channel=DEFAULT_CHANNEL_ID, text="card", blocks=APPROVE_CARD
    )
    envelope_id = bolt.slack.send_block_action(
        action_id="approve", channel_id=DEFAULT_CHANNEL_ID, message_ts=card["ts"]
    )

    assert socket_mode.wait_for_ack(envelope_id, timeout=5) == {}
    bolt.slack.wait_for(lambda: bolt.slack.responses(), timeout=5)
    updated = bolt.slack.message(DEFAULT_CHANNEL_ID, card["ts"])
    assert updated is not None
    assert updated.text == "approved REQ-1 by <@U0ADMIN01>"
    assert [m.text for m in bolt.slack.ephemeral_messages(user="U0ADMIN01")] == [
        "your approval is recorded"
    ]
    sent = socket_mode.envelopes()[-1]
    assert sent.payload["actions"][0]["block_id"] == "decision"


def test_events_api_envelope(bolt: BoltInSocketMode) -> None:
    socket_mode = bolt.slack.socket_mode
    assert socket_mode is not None
    mention_message = bolt.slack.post_as_user("C0EVENTS", "<@U0BOT0001> hi")
    event = {
        "type": "event_callback",
        "team_id": "T0STANDIN",
        "api_app_id": "A0STANDIN",
        "event_id": "Ev0001",
        "event_time": 1_700_000_000,
        "event": {
            "type": "app_mention",
            "user": "U0ADMIN01",
            "text": "<@U0BOT0001> hi",
            "ts": mention_message.ts,
            "channel": "C0EVENTS",
        },
    }
    envelope_id = socket_mode.send_envelope("events_api", event)
    socket_mode.wait_for_ack(envelope_id, timeout=5)
    reply = bolt.slack.wait_for_message(
        "C0EVENTS", lambda m: m.text == "hello", thread_ts=mention_message.ts, timeout=5
    )
    assert reply.thread_ts == mention_message.ts
    assert [m.text for m in bolt.slack.thread("C0EVENTS", mention_message.ts)] == [
        "<@U0BOT0001> hi",
        "hello",
    ]


def test_bare_client_sees_hello_envelopes_and_disconnect() -> None:
    with SlackStandIn() as slack:
        socket_mode = slack.socket_mode
        assert socket_mode is not None
        url = WebClient(base_url=slack.api_url).apps_connections_open(app_token=DEFAULT_APP_TOKEN)[
            "url"
        ]
        assert url.startswith("ws://127.0.0.1:")
        with connect(url, open_timeout=5) as websocket:
            hello = json.loads(websocket.recv(timeout=5))
            assert hello["type"] == "hello"
            assert hello["connection_info"]["app_id"] == slack.app_id
            envelope_id = slack.send_slash_command("status")
            envelope = json.loads(websocket.recv(timeout=5))
            assert envelope["envelope_id"] == envelope_id
            assert envelope["type"] == "slash_commands"
            assert envelope["accepts_response_payload"] is True
            assert envelope["payload"]["command"] == "/exchange-tls"
            assert envelope["payload"]["response_url"].startswith(slack.base_url + "/hooks/")
            with pytest.raises(SocketModeError):
                socket_mode.wait_for_ack(envelope_id, timeout=0.05)
            websocket.send(json.dumps({"envelope_id": envelope_id, "payload": {"text": "ok"}}))
            assert socket_mode.wait_for_ack(envelope_id, timeout=5) == {"text": "ok"}
            websocket.send(json.dumps({"envelope_id": envelope_id}))
            socket_mode.request_reconnect()
            assert json.loads(websocket.recv(timeout=5)) == {
                "type": "disconnect",
                "reason": "refresh_requested",
                "debug_info": {"host": "applink-standin"},
            }
        slack.wait_for(lambda: socket_mode.connection_count() == 0, timeout=5)
        assert len(socket_mode.acks()) == 1
        assert len(socket_mode.unexpected_messages()) == 1


def test_unknown_ticket_is_refused() -> None:
    with SlackStandIn() as slack:
        assert slack.socket_mode is not None
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{slack.socket_mode.port}/link/?ticket=forged", open_timeout=5)
        assert refused.value.response.status_code == 401
        with pytest.raises(SocketModeError):
            slack.send_slash_command("check", connect_timeout=0.05)
