"""Snapshot files of rendered Slack messages, and the check that compares with them.

Set ``UPDATE_SNAPSHOTS=1`` to (re)write the files; otherwise any difference fails the test.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

SNAPSHOT_DIR = Path(__file__).parent


def snapshot_text(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def assert_matches_snapshot(name: str, data: Any) -> None:
    """Compare ``data`` (JSON-ready) with ``snapshots/<name>.json``."""
    path = SNAPSHOT_DIR / f"{name}.json"
    actual = snapshot_text(data)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"no snapshot {path.name}; run with UPDATE_SNAPSHOTS=1 to write it")
    expected = path.read_text(encoding="utf-8")
    if actual != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), actual.splitlines(keepends=True),
            fromfile=f"{path.name} (stored)", tofile=f"{path.name} (rendered)", n=2,
        ))
        pytest.fail(f"rendered JSON differs from {path.name} "
                    f"(UPDATE_SNAPSHOTS=1 rewrites it):\n{diff[:20000]}")
