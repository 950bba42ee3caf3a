"""Pushing changes to the live desk: after commit, to the channel group of the account.

Services never call this directly: it hangs on `orders.signals.order_changed` and
`accounts.signals.position_changed` (both sent from `transaction.on_commit`; see
`desk/apps.py`). With `REDIS_URL` the channels-redis layer carries the message from any process
(the listener, every web worker) to every open page; without it, only pages served by this same
process see it, which is why `manage.py serve` runs the web server and the listener in one
process.

Every message carries the row's version: a page applies a row only when its version is newer
than the one it shows, so a late, repeated or reordered message never leaves a wrong row."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from accounts.models import Position
from desk.selectors import order_row, position_marks_rows, position_row
from orders.models import Order

logger = logging.getLogger(__name__)


def account_group(broker_account_id: int) -> str:
    return f"account.{broker_account_id}"


def _send(broker_account_id: int, message: Callable[[], dict[str, Any]]) -> None:
    """Send to the account's group; the message is built only when someone can receive it."""
    layer = get_channel_layer()
    if layer is None:
        return
    group = account_group(broker_account_id)
    if isinstance(layer, InMemoryChannelLayer) and not layer.groups.get(group):
        # An in-process layer reaches only this process's sockets: with none open on the
        # account (always, in a listener process of its own), there is nobody to tell.
        return
    try:
        async_to_sync(layer.group_send)(group, message())
    except Exception:  # a dead layer must never fail the write that has already committed
        logger.warning("desk broadcast to account %s failed", broker_account_id, exc_info=True)


def broadcast_order(order: Order) -> None:
    _send(
        order.account.broker_account_id,
        lambda: {"type": "order.updated", "row": order_row(order)},
    )


def broadcast_position(position: Position) -> None:
    _send(
        position.account.broker_account_id,
        lambda: {"type": "position.updated", "row": position_row(position)},
    )


def broadcast_marks(contract_ids: set[str]) -> None:
    """The new price cells of the positions in these contracts, to each account's group.
    `prices_changed` comes at most once per market-data publish interval, which is what keeps
    this to a few messages a second per account however fast the market ticks."""
    layer = get_channel_layer()
    if layer is None or (isinstance(layer, InMemoryChannelLayer) and not layer.groups):
        return  # nobody in this process to tell: skip the query
    for broker_account_id, rows in position_marks_rows(contract_ids).items():
        _send(broker_account_id, functools.partial(_marks_message, rows))


def _marks_message(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "marks.updated", "rows": rows}


def on_prices_changed(sender: Any, prices: dict[str, Any], **kwargs: Any) -> None:
    broadcast_marks(set(prices))


def on_order_changed(sender: Any, order: Order, **kwargs: Any) -> None:
    broadcast_order(order)


def on_position_changed(sender: Any, position: Position, **kwargs: Any) -> None:
    broadcast_position(position)
