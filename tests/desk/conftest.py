from __future__ import annotations

import pytest

from desk import health_push


@pytest.fixture(autouse=True)
def _no_health_push(monkeypatch) -> None:
    """The desk's health push (every 2 s) would put a frame in the middle of tests that read a
    socket's messages one by one; the tests of the push ask for `fast_health_push`."""
    monkeypatch.setattr(health_push, "PUSH_SECONDS", 3600.0)


@pytest.fixture
def fast_health_push(_no_health_push, monkeypatch) -> None:
    monkeypatch.setattr(health_push, "PUSH_SECONDS", 0.2)
