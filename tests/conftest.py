"""Shared pytest configuration: database fixtures, and log capture for the secret scan."""

import pytest

from tests import secret_scan

# Helpers that assert: rewritten like test modules, so their failures show the values.
pytest.register_assert_rewrite("tests.bot_processes", "tests.executor_env", "tests.slack_bots")

pytest_plugins = ["tests.conftest_db"]

secret_scan.install()
