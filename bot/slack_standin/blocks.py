"""Block Kit validation the way Slack's Web API applies it to messages and views.

Pure: no I/O. Problems are strings in Slack's own style, ``"<what> [json-pointer:/blocks/0/text]"``,
so a failing test reads like the ``response_metadata.messages`` Slack would have sent.
The limits are those of Slack's Block Kit reference; properties Slack does not know are
rejected as Slack does ("invalid additional property").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

MAX_MESSAGE_TEXT: Final = 40_000
MAX_MESSAGE_BLOCKS: Final = 50
MAX_VIEW_BLOCKS: Final = 100
MAX_SECTION_TEXT: Final = 3_000
MAX_SECTION_FIELDS: Final = 10
MAX_FIELD_TEXT: Final = 2_000
MAX_HEADER_TEXT: Final = 150
MAX_BUTTON_TEXT: Final = 75
MAX_ACTION_ID: Final = 255
MAX_BLOCK_ID: Final = 255
MAX_ACTIONS_ELEMENTS: Final = 25
MAX_CONTEXT_ELEMENTS: Final = 10
MAX_MARKDOWN_TEXT: Final = 12_000

INVALID_BLOCKS: Final = "invalid_blocks"
INVALID_BLOCKS_FORMAT: Final = "invalid_blocks_format"
MSG_TOO_LONG: Final = "msg_too_long"
NO_TEXT: Final = "no_text"


@dataclass(frozen=True)
class MessageRejection:
    """Why Slack would refuse a message: its error code and the problems behind it."""

    error: str
    problems: tuple[str, ...]


def check_message(
    text: object,
    blocks: object,
    *,
    attachments: object = None,
) -> MessageRejection | None:
    """Return Slack's rejection of a ``chat.postMessage``/``chat.update`` payload, or None."""
    normalized = _normalize_blocks(blocks)
    if normalized is _MALFORMED:
        return MessageRejection(
            INVALID_BLOCKS_FORMAT, ("must provide an array of objects [json-pointer:/blocks]",)
        )
    block_list = normalized if isinstance(normalized, list) else None
    if block_list:
        problems = validate_blocks(block_list, max_blocks=MAX_MESSAGE_BLOCKS)
        if problems:
            return MessageRejection(INVALID_BLOCKS, tuple(problems))
    if text is not None and not isinstance(text, str):
        return MessageRejection(NO_TEXT, ("text must be a string [json-pointer:/text]",))
    if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
        return MessageRejection(
            MSG_TOO_LONG,
            (f"must be less than {MAX_MESSAGE_TEXT + 1} characters [json-pointer:/text]",),
        )
    if not text and not block_list and not attachments:
        return MessageRejection(NO_TEXT, ("no text, blocks or attachments [json-pointer:/text]",))
    return None


def validate_message(text: str | None, blocks: Sequence[object] | None) -> list[str]:
    """Problems Slack would report for a message with this text and these blocks; [] if fine.

    Blocks may be dicts or slack_sdk Block objects (anything with ``to_dict()``).
    """
    rejection = check_message(text, blocks)
    return [] if rejection is None else list(rejection.problems)


def validate_blocks(
    blocks: Sequence[object], *, max_blocks: int = MAX_MESSAGE_BLOCKS, pointer: str = "/blocks"
) -> list[str]:
    """Problems in a list of blocks (dicts or slack_sdk Block objects); [] if fine."""
    normalized = _normalize_blocks(list(blocks))
    if not isinstance(normalized, list):
        return [f"must provide an array of objects [json-pointer:{pointer}]"]
    checker = _Checker()
    checker.blocks(normalized, pointer, max_blocks)
    return checker.problems


def validate_view(view: object) -> list[str]:
    """Problems Slack would report for a ``views.open``/``views.update`` view; [] if fine."""
    checker = _Checker()
    if hasattr(view, "to_dict"):
        view = view.to_dict()
    if not isinstance(view, Mapping):
        return ["must provide an object [json-pointer:/view]"]
    checker.view(view, "/view")
    return checker.problems


_MALFORMED: Final = object()


def _normalize_blocks(blocks: object) -> object:
    if blocks is None:
        return None
    if isinstance(blocks, str | bytes | Mapping) or not isinstance(blocks, Sequence):
        return _MALFORMED
    normalized: list[object] = []
    for block in blocks:
        to_dict = getattr(block, "to_dict", None)
        normalized.append(to_dict() if callable(to_dict) else block)
    return normalized


_TEXT_TYPES: Final = frozenset({"plain_text", "mrkdwn"})
_INTERACTIVE_ELEMENTS: Final = frozenset(
    {
        "button",
        "checkboxes",
        "datepicker",
        "datetimepicker",
        "multi_static_select",
        "multi_external_select",
        "multi_users_select",
        "multi_conversations_select",
        "multi_channels_select",
        "overflow",
        "radio_buttons",
        "static_select",
        "external_select",
        "users_select",
        "conversations_select",
        "channels_select",
        "timepicker",
        "workflow_button",
    }
)
_SECTION_ACCESSORIES: Final = (_INTERACTIVE_ELEMENTS - {"datetimepicker"}) | {"image"}
_INPUT_ELEMENTS: Final = (_INTERACTIVE_ELEMENTS - {"button", "overflow", "workflow_button"}) | {
    "plain_text_input",
    "email_text_input",
    "url_text_input",
    "number_input",
    "file_input",
    "rich_text_input",
}
_MESSAGE_BLOCK_TYPES: Final = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)
_RICH_TEXT_ELEMENTS: Final = frozenset(
    {"rich_text_section", "rich_text_list", "rich_text_preformatted", "rich_text_quote"}
)
_DATE_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE: Final = re.compile(r"^\d{2}:\d{2}$")
_SELECT_COMMON: Final = frozenset({"type", "action_id", "placeholder", "confirm", "focus_on_load"})


class _Checker:
    """Walks a payload collecting problems; one method per Block Kit object kind."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._markdown_chars = 0

    def fail(self, pointer: str, what: str) -> None:
        self.problems.append(f"{what} [json-pointer:{pointer}]")

    # --- structure helpers -------------------------------------------------

    def obj(self, value: object, pointer: str) -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.fail(pointer, "must provide an object")
            return None
        return value

    def allowed(self, value: Mapping[str, Any], pointer: str, names: frozenset[str]) -> None:
        for key in value:
            if key not in names:
                self.fail(pointer, f"invalid additional property: {key}")

    def required(self, value: Mapping[str, Any], pointer: str, *names: str) -> bool:
        missing = [name for name in names if value.get(name) is None]
        for name in missing:
            self.fail(f"{pointer}/{name}", "missing required field")
        return not missing

    def string(self, value: object, pointer: str, *, max_len: int, min_len: int = 0) -> str | None:
        if not isinstance(value, str):
            self.fail(pointer, "must be a string")
            return None
        if len(value) > max_len:
            self.fail(pointer, f"must be less than {max_len + 1} characters")
        elif len(value) < min_len:
            self.fail(pointer, f"must be more than {min_len - 1} characters")
        return value

    def optional_string(
        self, value: Mapping[str, Any], key: str, pointer: str, *, max_len: int
    ) -> None:
        if key in value and value[key] is not None:
            self.string(value[key], f"{pointer}/{key}", max_len=max_len)

    def array(
        self, value: object, pointer: str, *, max_items: int, min_items: int = 1
    ) -> list[object]:
        if not isinstance(value, list):
            self.fail(pointer, "must provide an array")
            return []
        if len(value) > max_items:
            self.fail(pointer, f"no more than {max_items} items allowed")
        elif len(value) < min_items:
            self.fail(pointer, f"must provide at least {min_items} items")
        return value

    def one_of(self, value: object, pointer: str, choices: frozenset[str]) -> None:
        if value not in choices:
            self.fail(pointer, f"must be one of {sorted(choices)}")

    def boolean(self, value: Mapping[str, Any], key: str, pointer: str) -> None:
        if key in value and not isinstance(value[key], bool):
            self.fail(f"{pointer}/{key}", "must be a boolean")

    # --- composition objects -----------------------------------------------

    def text(
        self,
        value: object,
        pointer: str,
        *,
        max_len: int = MAX_SECTION_TEXT,
        plain_only: bool = False,
    ) -> None:
        text = self.obj(value, pointer)
        if text is None:
            return
        kind = text.get("type")
        if plain_only and kind != "plain_text":
            self.fail(f"{pointer}/type", "must be plain_text")
        elif kind not in _TEXT_TYPES:
            self.fail(f"{pointer}/type", "must be one of ['mrkdwn', 'plain_text']")
        names = {"type", "text"} | ({"emoji"} if kind == "plain_text" else {"verbatim"})
        self.allowed(text, pointer, frozenset(names))
        self.boolean(text, "emoji", pointer)
        self.boolean(text, "verbatim", pointer)
        if self.required(text, pointer, "text"):
            self.string(text["text"], f"{pointer}/text", max_len=max_len, min_len=1)

    def confirm(self, value: object, pointer: str) -> None:
        confirm = self.obj(value, pointer)
        if confirm is None:
            return
        self.allowed(confirm, pointer, frozenset({"title", "text", "confirm", "deny", "style"}))
        if self.required(confirm, pointer, "title", "text", "confirm", "deny"):
            self.text(confirm["title"], f"{pointer}/title", max_len=100, plain_only=True)
            self.text(confirm["text"], f"{pointer}/text", max_len=300)
            self.text(confirm["confirm"], f"{pointer}/confirm", max_len=30, plain_only=True)
            self.text(confirm["deny"], f"{pointer}/deny", max_len=30, plain_only=True)
        if "style" in confirm:
            self.one_of(confirm["style"], f"{pointer}/style", frozenset({"primary", "danger"}))

    def option(self, value: object, pointer: str, *, mrkdwn_allowed: bool) -> None:
        option = self.obj(value, pointer)
        if option is None:
            return
        self.allowed(option, pointer, frozenset({"text", "value", "description", "url"}))
        if self.required(option, pointer, "text", "value"):
            self.text(option["text"], f"{pointer}/text", max_len=75, plain_only=not mrkdwn_allowed)
            self.string(option["value"], f"{pointer}/value", max_len=150, min_len=1)
        if "description" in option:
            self.text(
                option["description"],
                f"{pointer}/description",
                max_len=75,
                plain_only=not mrkdwn_allowed,
            )
        self.optional_string(option, "url", pointer, max_len=3000)

    def options(
        self, value: object, pointer: str, *, max_items: int, mrkdwn_allowed: bool = False
    ) -> None:
        for index, option in enumerate(self.array(value, pointer, max_items=max_items)):
            self.option(option, f"{pointer}/{index}", mrkdwn_allowed=mrkdwn_allowed)

    # --- elements ------------------------------------------------------------

    def element(self, value: object, pointer: str, kinds: frozenset[str]) -> str | None:
        element = self.obj(value, pointer)
        if element is None:
            return None
        kind = element.get("type")
        if not isinstance(kind, str) or kind not in kinds:
            self.fail(f"{pointer}/type", f"unsupported element type: {kind}")
            return None
        if "action_id" in element:
            self.string(element["action_id"], f"{pointer}/action_id", max_len=MAX_ACTION_ID)
        if "confirm" in element:
            self.confirm(element["confirm"], f"{pointer}/confirm")
        if "placeholder" in element:
            self.text(
                element["placeholder"], f"{pointer}/placeholder", max_len=150, plain_only=True
            )
        check = _ELEMENT_CHECKS.get(kind)
        if check is not None:
            check(self, element, pointer)
        action_id = element.get("action_id")
        return action_id if isinstance(action_id, str) else None

    def button(self, button: Mapping[str, Any], pointer: str) -> None:
        self.allowed(
            button,
            pointer,
            frozenset(
                {
                    "type",
                    "text",
                    "action_id",
                    "url",
                    "value",
                    "style",
                    "confirm",
                    "accessibility_label",
                }
            ),
        )
        if self.required(button, pointer, "text"):
            self.text(button["text"], f"{pointer}/text", max_len=MAX_BUTTON_TEXT, plain_only=True)
        self.optional_string(button, "url", pointer, max_len=3000)
        self.optional_string(button, "value", pointer, max_len=2000)
        self.optional_string(button, "accessibility_label", pointer, max_len=75)
        if "style" in button:
            self.one_of(button["style"], f"{pointer}/style", frozenset({"primary", "danger"}))

    def static_select(self, select: Mapping[str, Any], pointer: str) -> None:
        self.allowed(
            select,
            pointer,
            _SELECT_COMMON
            | {
                "options",
                "option_groups",
                "initial_option",
                "initial_options",
                "max_selected_items",
            },
        )
        has_options = "options" in select
        has_groups = "option_groups" in select
        if has_options == has_groups:
            self.fail(pointer, "must provide exactly one of options or option_groups")
        if has_options:
            self.options(select["options"], f"{pointer}/options", max_items=100)
        if has_groups:
            groups = self.array(select["option_groups"], f"{pointer}/option_groups", max_items=100)
            for index, group in enumerate(groups):
                self.option_group(group, f"{pointer}/option_groups/{index}")

    def option_group(self, value: object, pointer: str) -> None:
        group = self.obj(value, pointer)
        if group is None:
            return
        self.allowed(group, pointer, frozenset({"label", "options"}))
        if self.required(group, pointer, "label", "options"):
            self.text(group["label"], f"{pointer}/label", max_len=75, plain_only=True)
            self.options(group["options"], f"{pointer}/options", max_items=100)

    def choice_list(self, element: Mapping[str, Any], pointer: str) -> None:
        if self.required(element, pointer, "options"):
            self.options(
                element["options"], f"{pointer}/options", max_items=10, mrkdwn_allowed=True
            )

    def overflow(self, element: Mapping[str, Any], pointer: str) -> None:
        self.allowed(element, pointer, frozenset({"type", "action_id", "options", "confirm"}))
        if self.required(element, pointer, "options"):
            self.options(element["options"], f"{pointer}/options", max_items=5)

    def datepicker(self, element: Mapping[str, Any], pointer: str) -> None:
        initial = element.get("initial_date")
        if initial is not None and (not isinstance(initial, str) or not _DATE_RE.match(initial)):
            self.fail(f"{pointer}/initial_date", "must be a date in the format YYYY-MM-DD")

    def timepicker(self, element: Mapping[str, Any], pointer: str) -> None:
        initial = element.get("initial_time")
        if initial is not None and (not isinstance(initial, str) or not _TIME_RE.match(initial)):
            self.fail(f"{pointer}/initial_time", "must be a time in the format HH:mm")

    def image_element(self, element: Mapping[str, Any], pointer: str) -> None:
        self.allowed(element, pointer, frozenset({"type", "image_url", "slack_file", "alt_text"}))
        self.image_source(element, pointer)

    def image_source(self, image: Mapping[str, Any], pointer: str) -> None:
        if "image_url" not in image and "slack_file" not in image:
            self.fail(f"{pointer}/image_url", "missing required field")
        self.optional_string(image, "image_url", pointer, max_len=3000)
        if self.required(image, pointer, "alt_text"):
            self.string(image["alt_text"], f"{pointer}/alt_text", max_len=2000, min_len=1)

    def text_input(self, element: Mapping[str, Any], pointer: str) -> None:
        for key in ("min_length", "max_length"):
            limit = element.get(key)
            if limit is not None and (not isinstance(limit, int) or not 0 <= limit <= 3000):
                self.fail(f"{pointer}/{key}", "must be an integer from 0 to 3000")
        self.optional_string(element, "initial_value", pointer, max_len=3000)

    def workflow_button(self, element: Mapping[str, Any], pointer: str) -> None:
        if self.required(element, pointer, "text", "workflow"):
            self.text(element["text"], f"{pointer}/text", max_len=MAX_BUTTON_TEXT, plain_only=True)

    # --- blocks --------------------------------------------------------------

    def blocks(
        self,
        blocks: list[object],
        pointer: str,
        max_blocks: int,
        kinds: frozenset[str] = _MESSAGE_BLOCK_TYPES,
    ) -> None:
        if len(blocks) > max_blocks:
            self.fail(pointer, f"no more than {max_blocks} items allowed")
        block_ids: set[str] = set()
        for index, value in enumerate(blocks):
            block_pointer = f"{pointer}/{index}"
            block = self.obj(value, block_pointer)
            if block is None:
                continue
            kind = block.get("type")
            if not isinstance(kind, str) or kind not in kinds:
                self.fail(f"{block_pointer}/type", f"unsupported block type: {kind}")
                continue
            block_id = block.get("block_id")
            if block_id is not None:
                checked = self.string(block_id, f"{block_pointer}/block_id", max_len=MAX_BLOCK_ID)
                if checked is not None and checked in block_ids:
                    self.fail(f"{block_pointer}/block_id", f"duplicate block_id: {checked}")
                if checked is not None:
                    block_ids.add(checked)
            _BLOCK_CHECKS[kind](self, block, block_pointer)
        if self._markdown_chars > MAX_MARKDOWN_TEXT:
            self.fail(
                pointer, f"markdown blocks must total less than {MAX_MARKDOWN_TEXT + 1} characters"
            )

    def section(self, block: Mapping[str, Any], pointer: str) -> None:
        self.allowed(
            block,
            pointer,
            frozenset({"type", "block_id", "text", "fields", "accessory", "expand"}),
        )
        self.boolean(block, "expand", pointer)
        if block.get("text") is None and block.get("fields") is None:
            self.fail(f"{pointer}/text", "missing required field")
        if block.get("text") is not None:
            self.text(block["text"], f"{pointer}/text", max_len=MAX_SECTION_TEXT)
        if block.get("fields") is not None:
            fields = self.array(block["fields"], f"{pointer}/fields", max_items=MAX_SECTION_FIELDS)
            for index, field in enumerate(fields):
                self.text(field, f"{pointer}/fields/{index}", max_len=MAX_FIELD_TEXT)
        if block.get("accessory") is not None:
            self.element(block["accessory"], f"{pointer}/accessory", _SECTION_ACCESSORIES)

    def header(self, block: Mapping[str, Any], pointer: str) -> None:
        self.allowed(block, pointer, frozenset({"type", "block_id", "text"}))
        if self.required(block, pointer, "text"):
            self.text(block["text"], f"{pointer}/text", max_len=MAX_HEADER_TEXT, plain_only=True)

    def divider(self, block: Mapping[str, Any], pointer: str) -> None:
        self.allowed(block, pointer, frozenset({"type", "block_id"}))

    def image_block(self, block: Mapping[str, Any], pointer: str) -> None:
        self.allowed(
            block,
            pointer,
            frozenset({"type", "block_id", "image_url", "slack_file", "alt_text", "title"}),
        )
        self.image_source(block, pointer)
        if "title" in block:
            self.text(block["title"], f"{pointer}/title", max_len=2000, plain_only=True)

    def context(self, block: Mapping[str, Any], pointer: str) -> None:
        self.allowed(block, pointer, frozenset({"type", "block_id", "elements"}))
        if not self.required(block, pointer, "elements"):
            return
        elements = self.array(
            block["elements"], f"{pointer}/elements", max_items=MAX_CONTEXT_ELEMENTS
        )
        for index, value in enumerate(elements):
            element_pointer = f"{pointer}/elements/{index}"
            if isinstance(value, Mapping) and value.get("type") == "image":
                self.element(value, element_pointer, frozenset({"image"}))
            else:
                self.text(value, element_pointer)

    def actions(self, block: Mapping[str, Any], pointer: str) -> None:
        self.allowed(block, pointer, frozenset({"type", "block_id", "elements"}))
        if not self.required(block, pointer, "elements"):
            return
        elements = self.array(
            block["elements"], f"{pointer}/elements", max_items=MAX_ACTIONS_ELEMENTS
        )
        action_ids: set[str] = set()
        for index, value in enumerate(elements):
            element_pointer = f"{pointer}/elements/{index}"
            action_id = self.element(value, element_pointer, _INTERACTIVE_ELEMENTS)
            if action_id is not None and action_id in action_ids:
                self.fail(f"{element_pointer}/action_id", f"duplicate action_id: {action_id}")
            if action_id is not None:
                action_ids.add(action_id)

    def input(self, block: Mapping[str, Any], pointer: str) -> None:
        self.allowed(
            block,
            pointer,
            frozenset(
                {"type", "block_id", "label", "element", "dispatch_action", "hint", "optional"}
            ),
        )
        if self.required(block, pointer, "label", "element"):
            self.text(block["label"], f"{pointer}/label", max_len=2000, plain_only=True)
            self.element(block["element"], f"{pointer}/element", _INPUT_ELEMENTS)
        if "hint" in block:
            self.text(block["hint"], f"{pointer}/hint", max_len=2000, plain_only=True)
        self.boolean(block, "optional", pointer)
        self.boolean(block, "dispatch_action", pointer)

    def rich_text(self, block: Mapping[str, Any], pointer: str) -> None:
        self.allowed(block, pointer, frozenset({"type", "block_id", "elements"}))
        if not self.required(block, pointer, "elements"):
            return
        elements = self.array(block["elements"], f"{pointer}/elements", max_items=100, min_items=0)
        for index, value in enumerate(elements):
            element = self.obj(value, f"{pointer}/elements/{index}")
            if element is not None and element.get("type") not in _RICH_TEXT_ELEMENTS:
                self.fail(
                    f"{pointer}/elements/{index}/type",
                    f"unsupported element type: {element.get('type')}",
                )

    def markdown(self, block: Mapping[str, Any], pointer: str) -> None:
        self.allowed(block, pointer, frozenset({"type", "block_id", "text"}))
        if self.required(block, pointer, "text"):
            text = self.string(
                block["text"], f"{pointer}/text", max_len=MAX_MARKDOWN_TEXT, min_len=1
            )
            self._markdown_chars += len(text or "")

    def video(self, block: Mapping[str, Any], pointer: str) -> None:
        if self.required(block, pointer, "alt_text", "title", "thumbnail_url", "video_url"):
            self.text(block["title"], f"{pointer}/title", max_len=200, plain_only=True)

    def file(self, block: Mapping[str, Any], pointer: str) -> None:
        self.required(block, pointer, "external_id", "source")

    def table(self, block: Mapping[str, Any], pointer: str) -> None:
        if self.required(block, pointer, "rows"):
            self.array(block["rows"], f"{pointer}/rows", max_items=100)

    # --- views ---------------------------------------------------------------

    def view(self, view: Mapping[str, Any], pointer: str) -> None:
        kind = view.get("type")
        if kind not in ("modal", "home"):
            self.fail(f"{pointer}/type", "must be one of ['home', 'modal']")
        if kind == "modal" and self.required(view, pointer, "title"):
            self.text(view["title"], f"{pointer}/title", max_len=24, plain_only=True)
        for key in ("submit", "close"):
            if view.get(key) is not None:
                self.text(view[key], f"{pointer}/{key}", max_len=24, plain_only=True)
        self.optional_string(view, "callback_id", pointer, max_len=255)
        self.optional_string(view, "private_metadata", pointer, max_len=3000)
        self.optional_string(view, "external_id", pointer, max_len=255)
        if not self.required(view, pointer, "blocks"):
            return
        blocks = view["blocks"]
        if not isinstance(blocks, list):
            self.fail(f"{pointer}/blocks", "must provide an array")
            return
        self.blocks(blocks, f"{pointer}/blocks", MAX_VIEW_BLOCKS)
        has_input = any(isinstance(b, Mapping) and b.get("type") == "input" for b in blocks)
        if kind == "modal" and has_input and view.get("submit") is None:
            self.fail(f"{pointer}/submit", "must provide submit when the view has input blocks")


_ELEMENT_CHECKS: Final[dict[str, Callable[[_Checker, Mapping[str, Any], str], None]]] = {
    "button": _Checker.button,
    "static_select": _Checker.static_select,
    "multi_static_select": _Checker.static_select,
    "checkboxes": _Checker.choice_list,
    "radio_buttons": _Checker.choice_list,
    "overflow": _Checker.overflow,
    "datepicker": _Checker.datepicker,
    "timepicker": _Checker.timepicker,
    "image": _Checker.image_element,
    "plain_text_input": _Checker.text_input,
    "workflow_button": _Checker.workflow_button,
}

_BLOCK_CHECKS: Final[dict[str, Callable[[_Checker, Mapping[str, Any], str], None]]] = {
    "section": _Checker.section,
    "header": _Checker.header,
    "divider": _Checker.divider,
    "image": _Checker.image_block,
    "context": _Checker.context,
    "actions": _Checker.actions,
    "input": _Checker.input,
    "rich_text": _Checker.rich_text,
    "markdown": _Checker.markdown,
    "video": _Checker.video,
    "file": _Checker.file,
    "table": _Checker.table,
}
