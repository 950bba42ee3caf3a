"""Fixtures for the desk tests."""

from __future__ import annotations

# Debian's Chromium for Playwright, or a skip (a failure under CI) saying why.
from tests.desk.test_desk_browser import chromium_path  # noqa: F401
