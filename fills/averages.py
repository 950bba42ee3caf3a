"""Exact fill arithmetic: an order's notional and average price, in Decimal, never rounded
until the average is quantized to the price precision.

The average is derived from the notional (the sum of price x size over the non-voided fills),
so an average kept up fill by fill equals one recomputed from the fill history, whatever order
the fills arrived in.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable
from decimal import Decimal
from typing import Protocol

from orders.models import PRICE_DIGITS

PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_DIGITS["decimal_places"])
# Wide enough that sums of price x size never round (20-digit prices x 6-digit sizes, summed).
_EXACT = decimal.Context(prec=60)


class FillLike(Protocol):
    size: int
    price: Decimal
    voided: bool


def add_to_notional(notional: Decimal, *, price: Decimal, size: int) -> Decimal:
    return _EXACT.add(notional, _EXACT.multiply(price, Decimal(size)))


def average_price(notional: Decimal, filled: int) -> Decimal | None:
    if filled <= 0:
        return None
    return _EXACT.divide(notional, Decimal(filled)).quantize(
        PRICE_QUANTUM, rounding=decimal.ROUND_HALF_EVEN
    )


def fill_totals(fills: Iterable[FillLike]) -> tuple[int, Decimal]:
    """(filled size, notional) of the non-voided fills: the recomputation from history."""
    size, notional = 0, Decimal(0)
    for fill in fills:
        if not fill.voided:
            size += fill.size
            notional = add_to_notional(notional, price=fill.price, size=fill.size)
    return size, notional
