"""Fixtures for the operations tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

# The listener in a thread against the simulator, for readiness with a real listener.
from tests.fills.conftest import listener  # noqa: F401


def _with(model: BaseModel, path: list[str], values: dict[str, Any]) -> BaseModel:
    if not path:
        return model.model_copy(update=values)
    child = getattr(model, path[0])
    return model.model_copy(update={path[0]: _with(child, path[1:], values)})


@pytest.fixture
def tune(settings) -> Callable[..., None]:
    """Change keys of the YAML config for one test: tune("lifecycle.archive", batch_size=2)."""

    def apply(section: str, **values: Any) -> None:
        settings.ORDER_MANAGEMENT = _with(settings.ORDER_MANAGEMENT, section.split("."), values)

    return apply
