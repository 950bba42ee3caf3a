from __future__ import annotations

import pytest

from orders.wire import local_state_for
from projectx.enums import OrderStatus as Broker


@pytest.mark.parametrize(
    ("broker", "filled", "expected"),
    [
        (Broker.OPEN, 0, "open"),
        (Broker.OPEN, 1, "partially_filled"),
        (Broker.PENDING, 0, "open"),  # Pending counts as working
        (Broker.SUSPENDED, 0, "open"),  # bracket children wait suspended
        (Broker.PENDING_CANCELLATION, 0, "pending_cancel"),
        (Broker.FILLED, 2, "filled"),
        (Broker.CANCELLED, 1, "cancelled"),
        (Broker.EXPIRED, 0, "expired"),
        (Broker.REJECTED, 0, "rejected"),
        (Broker.NONE, 0, None),
    ],
)
def test_it_maps_every_broker_status(broker: Broker, filled: int, expected: str | None) -> None:
    # should map each of the broker's statuses onto one of our states (or none for None)
    assert local_state_for(broker, filled_size=filled) == expected
