"""Slack messages as a readable terminal chat transcript. Pure: no I/O, no clock.

Used by ``exchange-tls demo``: each message becomes an entry (time, who, where) followed by its
blocks as text: headers underlined, sections and fields as lines, context dimmed, dividers as
rules, buttons as ``[ Approve ] [ Deny ]``. mrkdwn is read the way Slack shows it: dates by
their fallback text, mentions by name, ``&lt;`` as ``<``, emoji codes as emoji.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

Where = Literal["channel", "thread", "ephemeral", "edited", "user"]

EMOJI: Final[Mapping[str, str]] = {
    "red_circle": "🔴",
    "large_yellow_circle": "🟡",
    "large_green_circle": "🟢",
    "large_blue_circle": "🔵",
    "white_circle": "⚪",
    "white_check_mark": "✅",
    "warning": "⚠️",
    "grey_question": "❔",
    "x": "❌",
    "wrench": "🔧",
    "thread": "🧵",
    "outbox_tray": "📤",
    "information_source": "ℹ️",
    "ice_cube": "🧊",
    "hourglass": "⌛",
    "hourglass_flowing_sand": "⏳",
    "fast_forward": "⏩",
    "electric_plug": "🔌",
    "bar_chart": "📊",
    "arrow_forward": "▶️",
    "gear": "⚙️",
    "no_entry_sign": "🚫",
    "no_entry": "⛔",
    "alarm_clock": "⏰",
    "octagonal_sign": "🛑",
    "mag": "🔍",
    "lock": "🔒",
}

_BOLD, _DIM, _RESET = "\033[1m", "\033[2m", "\033[0m"
_INDENT: Final = "    "


@dataclass(frozen=True)
class ChatEntry:
    """One thing said in the conversation."""

    at: float
    """Seconds since the epoch."""
    author: str
    where: Where
    text: str
    blocks: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Button:
    label: str
    action_id: str
    value: str | None
    style: str | None = None


@dataclass(frozen=True)
class TranscriptStyle:
    color: bool = False
    emoji: bool = True
    width: int = 100
    names: Mapping[str, str] = field(default_factory=dict)
    """Slack IDs (users, channels, groups) to display names."""


# --- mrkdwn -------------------------------------------------------------------------------

_DATE = re.compile(r"<!date\^[^|>]*\|([^>]*)>")
_USER = re.compile(r"<@([UW][A-Z0-9]+)(?:\|([^>]*))?>")
_CHANNEL = re.compile(r"<#([CGD][A-Z0-9]+)(?:\|([^>]*))?>")
_GROUP = re.compile(r"<!subteam\^([A-Z0-9]+)(?:\|([^>]*))?>")
_SPECIAL = re.compile(r"<!(here|channel|everyone)(?:\|[^>]*)?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
_BOLD_SPAN = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC_SPAN = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE_SPAN = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")
_CODE = re.compile(r"```(.*?)```|`([^`\n]*)`", re.DOTALL)


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _prose(text: str, style: TranscriptStyle) -> str:
    names = style.names
    text = _DATE.sub(lambda m: m.group(1), text)
    text = _USER.sub(lambda m: "@" + (names.get(m.group(1)) or m.group(2) or m.group(1)), text)
    text = _CHANNEL.sub(lambda m: "#" + (names.get(m.group(1)) or m.group(2) or m.group(1)), text)
    text = _GROUP.sub(
        lambda m: "@" + (names.get(m.group(1)) or (m.group(2) or m.group(1)).lstrip("@")), text
    )
    text = _SPECIAL.sub(lambda m: "@" + m.group(1), text)
    text = _LINK.sub(lambda m: f"{m.group(2)} ({m.group(1)})" if m.group(2) else m.group(1), text)
    if style.emoji:
        text = _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)
    bold = (lambda m: f"{_BOLD}{m.group(1)}{_RESET}") if style.color else (lambda m: m.group(1))
    text = _BOLD_SPAN.sub(bold, text)
    text = _ITALIC_SPAN.sub(lambda m: m.group(1), text)
    text = _STRIKE_SPAN.sub(lambda m: m.group(1), text)
    return unescape(text)


def mrkdwn_to_text(text: str, style: TranscriptStyle | None = None) -> str:
    """mrkdwn as a terminal shows it; code spans keep their backticks, code blocks indent."""
    style = style or TranscriptStyle()
    parts: list[str] = []
    position = 0
    for match in _CODE.finditer(text):
        parts.append(_prose(text[position:match.start()], style))
        if match.group(1) is not None:
            body = unescape(match.group(1)).strip("\n")
            lines = "\n".join(f"  │ {line}" for line in body.splitlines() or [""])
            before = "" if not parts[-1] or parts[-1].endswith("\n") else "\n"
            parts.append(f"{before}{lines}\n")
        else:
            parts.append(f"`{unescape(match.group(2))}`")
        position = match.end()
    parts.append(_prose(text[position:], style))
    return "".join(parts).rstrip("\n")


def _text_object(value: object, style: TranscriptStyle) -> str:
    if not isinstance(value, Mapping):
        return ""
    text = str(value.get("text", ""))
    if value.get("type") == "plain_text":
        return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text) if style.emoji \
            else text
    return mrkdwn_to_text(text, style)


# --- blocks -------------------------------------------------------------------------------


def _button_label(element: Mapping[str, Any], style: TranscriptStyle) -> str:
    label = _text_object(element.get("text"), style) or str(element.get("action_id", "button"))
    if element.get("type") != "button":
        label += " ▾"
    return f"[ {label} ]"


def _field_text(value: object, style: TranscriptStyle) -> str:
    lines = _text_object(value, style).splitlines()
    if len(lines) == 2 and "│" not in lines[1]:
        return f"{lines[0]}: {lines[1]}"
    return "\n".join(lines)


def _rich_text(elements: object) -> str:
    if isinstance(elements, Mapping):
        if "text" in elements and isinstance(elements["text"], str):
            return elements["text"]
        return _rich_text(elements.get("elements", []))
    if isinstance(elements, list):
        return "".join(_rich_text(element) for element in elements)
    return ""


def block_lines(block: Mapping[str, Any], style: TranscriptStyle) -> list[str]:
    """One block as lines of text (not yet wrapped)."""
    kind = block.get("type")
    if kind == "header":
        title = _text_object(block.get("text"), style)
        shown = f"{_BOLD}{title}{_RESET}" if style.color else title
        return [shown, "━" * min(len(title) + 2, style.width)]
    if kind == "divider":
        return ["─" * min(40, style.width)]
    if kind == "section":
        lines = []
        if block.get("text"):
            lines.extend(_text_object(block["text"], style).splitlines())
        for item in block.get("fields") or []:
            lines.extend(f"  {line}" for line in _field_text(item, style).splitlines())
        accessory = block.get("accessory")
        if isinstance(accessory, Mapping) and accessory.get("type") in ("button", "overflow",
                                                                         "static_select"):
            lines.append(_button_label(accessory, style))
        return lines
    if kind == "context":
        texts = []
        for element in block.get("elements") or []:
            if isinstance(element, Mapping) and element.get("type") == "image":
                texts.append(f"[{element.get('alt_text', 'image')}]")
            else:
                texts.append(_text_object(element, style))
        line = "  ·  ".join(text for text in texts if text)
        return [f"{_DIM}{line}{_RESET}" if style.color else line]
    if kind == "actions":
        labels = [_button_label(e, style) for e in block.get("elements") or []
                  if isinstance(e, Mapping)]
        return [" ".join(labels)]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    if kind == "markdown":
        return mrkdwn_to_text(str(block.get("text", "")), style).splitlines()
    if kind == "rich_text":
        return _rich_text(block.get("elements", [])).splitlines()
    return [f"[{kind} block]"]


def message_lines(
    text: str, blocks: Sequence[Mapping[str, Any]], style: TranscriptStyle
) -> list[str]:
    """A message's blocks as wrapped lines; its text when it has no blocks."""
    raw: list[str] = []
    if blocks:
        for block in blocks:
            raw.extend(block_lines(block, style))
    else:
        raw.extend(mrkdwn_to_text(text, style).splitlines())
    lines: list[str] = []
    for line in raw:
        if len(line) <= style.width or "│" in line:
            lines.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        lines.extend(textwrap.wrap(line, style.width, subsequent_indent=indent + "  ",
                                   break_on_hyphens=False) or [""])
    return lines


def buttons_of(blocks: Iterable[Mapping[str, Any]]) -> list[Button]:
    """The buttons of a message, in order (actions blocks and section accessories)."""
    found: list[Button] = []
    for block in blocks:
        elements: list[Any] = []
        if block.get("type") == "actions":
            elements = list(block.get("elements") or [])
        elif isinstance(block.get("accessory"), Mapping):
            elements = [block["accessory"]]
        for element in elements:
            if isinstance(element, Mapping) and element.get("type") == "button":
                text = element.get("text")
                label = str(text.get("text", "")) if isinstance(text, Mapping) else ""
                found.append(Button(label=label, action_id=str(element.get("action_id", "")),
                                    value=element.get("value"), style=element.get("style")))
    return found


_WHERE_NOTE: Final[Mapping[Where, str]] = {
    "channel": "",
    "thread": "  ↳ in the thread",
    "ephemeral": "  (only visible to you)",
    "edited": "  (edited)",
    "user": "",
}


def format_entry(entry: ChatEntry, style: TranscriptStyle, *, clock_format: str = "%H:%M:%S"
                 ) -> str:
    """An entry as printed: ``[time] author (where)`` and its indented lines."""
    stamp = datetime.fromtimestamp(entry.at).strftime(clock_format)
    author = f"{_BOLD}{entry.author}{_RESET}" if style.color else entry.author
    head = f"[{stamp}] {author}{_WHERE_NOTE[entry.where]}"
    inner = TranscriptStyle(style.color, style.emoji, max(style.width - len(_INDENT), 20),
                            style.names)
    body = message_lines(entry.text, entry.blocks, inner)
    prefix = _INDENT + ("┆ " if entry.where == "thread" else "")
    return "\n".join([head, *(f"{prefix}{line}".rstrip() for line in body)])


def blocks_from(value: object) -> tuple[Mapping[str, Any], ...]:
    """Blocks as a Web API call carried them: a list, or JSON text of one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return ()
    if isinstance(value, list):
        return tuple(block for block in value if isinstance(block, Mapping))
    return ()
