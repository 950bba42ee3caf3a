"""What a placement answers: the order, the HTTP status, and whether it was replayed or deferred."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orders.exceptions import PlacementDeferred
from orders.models import Order

Renderer = Callable[[Order], dict[str, Any]]


@dataclass(frozen=True)
class PlacementResult:
    order: Order
    http_status: int
    replayed: bool = False
    body: dict[str, Any] | None = None  # the stored body, on a replay
    # Nothing reached the broker (or it refused for a transient reason): the key is free and
    # the caller answers this error, never a stored outcome.
    deferred: PlacementDeferred | None = None


def minimal_body(order: Order) -> dict[str, Any]:
    return {"id": str(order.pk), "status": order.status}
