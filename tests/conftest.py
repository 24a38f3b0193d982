"""Shared pytest configuration: database fixtures, and log capture for the secret scan."""

from tests import secret_scan

pytest_plugins = ["tests.conftest_db"]

secret_scan.install()
