"""Is the order sendable as asked: the prices its type takes, on the contract's tick size."""

from __future__ import annotations

from decimal import Decimal

from accounts.models import Account
from accounts.services import contract_resolve
from orders import idempotency
from orders.exceptions import (
    BrokerUnavailable,
    InvalidOrder,
)
from orders.models import OrderType
from projectx.errors import GatewayError

# Which prices each type needs; any other price given is refused rather than ignored.
_REQUIRED_PRICES: dict[str, set[str]] = {
    OrderType.MARKET: set(),
    OrderType.LIMIT: {"limit_price"},
    OrderType.STOP: {"stop_price"},
    OrderType.STOP_LIMIT: {"limit_price", "stop_price"},
    OrderType.TRAILING_STOP: {"trail_price"},
    OrderType.JOIN_BID: set(),
    OrderType.JOIN_ASK: set(),
}
PRICE_FIELDS = ("limit_price", "stop_price", "trail_price")
BRACKET_FIELDS = ("stop_loss_ticks", "take_profit_ticks")
# The types the broker's native brackets ride on [reference 4.4]: the entry must fill outright
# (market, join) or at its price (limit, stop). Others are refused rather than sent to be
# refused there.
BRACKET_TYPES = frozenset(
    {OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.JOIN_BID, OrderType.JOIN_ASK}
)
MAX_BRACKET_TICKS = 1000


def order_validate_prices(*, payload: idempotency.OrderPayload) -> None:
    """Refuse prices the type does not take, missing ones, and prices off the tick size."""
    errors: dict[str, list[str]] = {}
    for field in BRACKET_FIELDS:
        ticks = getattr(payload, field)
        if ticks is None:
            continue
        if payload.type not in BRACKET_TYPES:
            errors[field] = [f"not available on a {payload.type} order"]
        elif not 1 <= ticks <= MAX_BRACKET_TICKS:
            errors[field] = [f"must be a whole number of ticks from 1 to {MAX_BRACKET_TICKS}"]
    required = _REQUIRED_PRICES[payload.type]
    for field in PRICE_FIELDS:
        value = getattr(payload, field)
        if field in required and value is None:
            errors[field] = [f"required for a {payload.type} order"]
        elif field not in required and value is not None:
            errors[field] = [f"not used by a {payload.type} order"]
        elif value is not None and value <= 0:
            errors[field] = ["must be greater than zero"]
    if errors:
        raise InvalidOrder(errors)
    try:
        contract = contract_resolve(contract_id=payload.contract_id, reuse=True)
    except GatewayError as exc:
        raise BrokerUnavailable(f"cannot look up contract {payload.contract_id}: {exc}") from exc
    if contract is None:
        raise InvalidOrder({"contract_id": [f"unknown contract {payload.contract_id}"]})
    for field in PRICE_FIELDS:
        value = getattr(payload, field)
        if value is not None and not contract.is_on_tick(value):
            tick = format(contract.tick_size.normalize(), "f")
            errors[field] = [f"{value} is not on the contract's tick size {tick}"]
    if errors:
        raise InvalidOrder(errors)


def payload_from(
    *,
    account: Account,
    contract_id: str,
    side: str,
    type: str,
    size: int,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    trail_price: Decimal | None = None,
    stop_loss_ticks: int | None = None,
    take_profit_ticks: int | None = None,
) -> idempotency.OrderPayload:
    return idempotency.OrderPayload(
        account_broker_id=account.broker_account_id,
        contract_id=contract_id,
        side=side,
        type=type,
        size=size,
        limit_price=limit_price,
        stop_price=stop_price,
        trail_price=trail_price,
        stop_loss_ticks=stop_loss_ticks,
        take_profit_ticks=take_profit_ticks,
    )
