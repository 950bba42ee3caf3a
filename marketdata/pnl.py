"""Unrealized profit and loss of a position at a price, exact.

    pnl = (last - average) / tick_size * tick_value * size     for a long position
    pnl = (average - last) / tick_size * tick_value * size     for a short one

Exact in Decimal: the average is a stored price (at most 9 fractional digits) and every tick
size the broker lists divides such a difference into a finite decimal (0.25, 0.1, 1/64, ...),
so nothing is rounded; the multiplication by the tick value comes last only to keep the
figure in whole money units of the contract as long as possible.
"""

from __future__ import annotations

from decimal import Decimal

from accounts.models import PositionType


def unrealized_pnl(
    *,
    position_type: str,
    size: int,
    average_price: Decimal | None,
    last_price: Decimal | None,
    tick_size: Decimal,
    tick_value: Decimal,
) -> Decimal | None:
    """None when the figure is not known: no price yet, no average, or a flat position."""
    if last_price is None or average_price is None or size == 0:
        return None
    if position_type == PositionType.LONG:
        move = last_price - average_price
    elif position_type == PositionType.SHORT:
        move = average_price - last_price
    else:
        return None
    return move / tick_size * tick_value * size
