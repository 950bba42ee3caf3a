"""What a placement answers (`PlacementResult`), and where a sent order landed (`Outcome`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orders.exceptions import PlacementDeferred
from orders.models import Order

Renderer = Callable[[Order], dict[str, Any]]


@dataclass(frozen=True)
class PlacementResult:
    """The answer: the HTTP status and body (the stored body, on a replay), and which order."""

    order_id: str
    http_status: int
    body: dict[str, Any]
    replayed: bool = False

    @property
    def version(self) -> int | None:
        """The order's version as the body shows it (the ETag of this answer): at its top,
        or under `order` when the body is an error shape beside the order."""
        order = self.body.get("order")
        version = self.body.get(
            "version", order.get("version") if isinstance(order, dict) else None
        )
        return version if isinstance(version, int) else None


@dataclass(frozen=True)
class Outcome:
    """Where an order stands after its turn: the HTTP status it means, or, when nothing
    reached the broker (or it refused for a transient reason), the error to answer instead
    (its key is free again)."""

    order: Order
    http_status: int
    deferred: PlacementDeferred | None = None


def minimal_body(order: Order) -> dict[str, Any]:
    return {"id": str(order.pk), "status": order.status, "version": order.version}
