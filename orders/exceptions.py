"""The named errors of the order domain. The API maps each to one error shape."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orders.models import Order


class OrderError(Exception):
    """Base of every order-domain error."""

    code = "order_error"


class IllegalTransition(OrderError):
    """The lifecycle does not allow this move from the order's current state."""

    code = "illegal_transition"

    def __init__(self, *, order_id: object, from_state: str, to_state: str) -> None:
        super().__init__(f"order {order_id} cannot move from {from_state} to {to_state}")
        self.order_id = order_id
        self.from_state = from_state
        self.to_state = to_state


class VersionConflict(OrderError):
    """The order changed since the caller read it; `current` is the order as it is now."""

    code = "version_conflict"

    def __init__(self, *, current: Order, expected_version: int) -> None:
        super().__init__(
            f"order {current.pk} is at version {current.version}, not {expected_version}"
        )
        self.current = current
        self.expected_version = expected_version
