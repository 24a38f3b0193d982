"""A Slack stand-in that speaks HTTP and WebSocket like Slack, for tests, benchmarks and the demo.

- ``SlackStandIn``: the Web API (``.api_url`` for ``WebClient(base_url=...)``), Socket Mode
  (``.socket_mode``) and response_url hooks, with call recording and fault injection.
- ``requests``: signed HTTP-mode requests (slash commands, block_actions, view_submission).
- ``blocks``: Block Kit validation as Slack applies it.
"""

from bot.slack_standin.blocks import (
    MessageRejection,
    check_message,
    validate_blocks,
    validate_message,
    validate_view,
)
from bot.slack_standin.requests import (
    DEFAULT_APP_ID,
    DEFAULT_CHANNEL_ID,
    DEFAULT_TEAM_ID,
    DEFAULT_USER_ID,
    Forgery,
    SignedRequest,
    block_actions,
    post,
    slash_command,
    view_submission,
)
from bot.slack_standin.socket_mode import (
    Envelope,
    SocketModeAck,
    SocketModeError,
    SocketModeServer,
    SocketModeTimeout,
)
from bot.slack_standin.web_api import (
    DEFAULT_APP_TOKEN,
    DEFAULT_BOT_ID,
    DEFAULT_BOT_TOKEN,
    DEFAULT_BOT_USER_ID,
    DEFAULT_SIGNING_SECRET,
    EphemeralMessage,
    OpenedView,
    RecordedCall,
    ResponseUrlPost,
    SlackStandIn,
    StandInChannel,
    StandInUser,
    StoredMessage,
)

__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_APP_TOKEN",
    "DEFAULT_BOT_ID",
    "DEFAULT_BOT_TOKEN",
    "DEFAULT_BOT_USER_ID",
    "DEFAULT_CHANNEL_ID",
    "DEFAULT_SIGNING_SECRET",
    "DEFAULT_TEAM_ID",
    "DEFAULT_USER_ID",
    "Envelope",
    "EphemeralMessage",
    "Forgery",
    "MessageRejection",
    "OpenedView",
    "RecordedCall",
    "ResponseUrlPost",
    "SignedRequest",
    "SlackStandIn",
    "SocketModeAck",
    "SocketModeError",
    "SocketModeServer",
    "SocketModeTimeout",
    "StandInChannel",
    "StandInUser",
    "StoredMessage",
    "block_actions",
    "check_message",
    "post",
    "slash_command",
    "validate_blocks",
    "validate_message",
    "validate_view",
    "view_submission",
]
