"""Fixtures for the operations tests."""

from __future__ import annotations

# The listener in a thread against the simulator, for readiness with a real listener.
from tests.fills.conftest import listener  # noqa: F401
