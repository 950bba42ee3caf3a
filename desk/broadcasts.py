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

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from accounts.models import Account, Position
from desk.layers import DeskChannelLayer
from desk.selectors import (
    account_rows,
    contract_followers,
    order_row,
    position_marks_rows,
    position_row,
)
from orders.models import Order

logger = logging.getLogger(__name__)


def account_group(broker_account_id: int) -> str:
    return f"account.{broker_account_id}"


def _framed(layer_type: str, page: dict[str, Any]) -> dict[str, Any]:
    """The group message: the page's message as its fields, and as the text frame itself.

    Serialised once here rather than once per socket in the consumers: a fill reaches every
    open desk of the account, and at 200 desks the per-socket `json.dumps` was a measurable
    share of the fill -> websocket time (bench/desk_latency.py)."""
    return {**page, "type": layer_type, "text": json.dumps(page, separators=(",", ":"))}


def _send(broker_account_id: int, message: Callable[[], dict[str, Any]]) -> None:
    _send_to(account_group(broker_account_id), message)


def _send_to(group: str, message: Callable[[], dict[str, Any]]) -> None:
    """Send to the group; the message is built only when someone can receive it."""
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer) and not layer.groups.get(group):
        # An in-process layer reaches only this process's sockets: with none open on the
        # account (always, in a listener process of its own), there is nobody to tell.
        return
    loop = _loop_that_handed_us_this_work()
    try:
        if loop is None:
            async_to_sync(layer.group_send)(group, message())
        elif isinstance(layer, InMemoryChannelLayer):
            _hand_over(loop, layer, group, _in_process(message()))
        else:
            # A shared layer (Redis): the send is the loop's to finish. Waiting for it held
            # the committed request until Redis had answered the group send's round trips,
            # twice a placement (its `submitting` and its answer), for a page that orders
            # rows by version anyway.
            _hand_over(loop, layer, group, message())
    except Exception:  # a dead layer must never fail the write that has already committed
        logger.warning("desk broadcast to %s failed", group, exc_info=True)


def _in_process(message: dict[str, Any]) -> dict[str, Any]:
    """Only the frame: the fields beside it are for consumers of an older release over Redis,
    and an in-process layer copies the whole message once per socket."""
    if isinstance(message.get("text"), str):
        return {"type": message["type"], "text": message["text"]}
    return message


def _loop_that_handed_us_this_work() -> asyncio.AbstractEventLoop | None:
    """The event loop this thread works for (asgiref's sync_to_async records it: the listener's
    database thread, a view's or a consumer's thread), when it is running; else None."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return None  # called on a loop itself (sync code run inline): async_to_sync refuses
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running():
        return loop
    return None


def _hand_over(
    loop: asyncio.AbstractEventLoop,
    layer: Any,
    group: str,
    message: dict[str, Any],
) -> None:
    """Give the message to the loop the sockets live on, without waiting for it there.

    `async_to_sync` blocked the database thread until the loop had run the group send: a fill's
    batch sends a position and an order message, and the second waited for the loop to write
    the first to every socket (bench/desk_latency.py at 200 desks: 25 ms at the median of the
    fill -> first desk time, beside the apply's own 15-20 ms). Handed over like this, the
    commit's messages are queued on the loop in the order they were sent (call_soon_threadsafe
    is FIFO), and every message carries its row's version anyway.

    Any other layer's sends (Redis) go out one after the other from the loop's outbox. One
    task per message sent them all at once: a commit that changed 300 orders asked redis-py for
    300 connections, past its pool of 100, and lost the messages beyond (MaxConnectionsError).
    One at a time they keep their order and use one connection."""

    def deliver() -> None:
        try:
            if isinstance(layer, DeskChannelLayer):
                layer.group_send_now(group, message)
                return
            outbox = _outboxes.get(loop)
            if outbox is None:
                outbox = _outboxes[loop] = _Outbox()
            outbox.put(loop, layer, group, message)
        except Exception:
            logger.warning("desk broadcast to %s failed", group, exc_info=True)

    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody left to tell
        loop.call_soon_threadsafe(deliver)


# Sends waiting in a loop's outbox (a shared layer that stopped answering): beyond this many, a
# message is dropped with a warning rather than kept without bound. A page that misses one
# shows the row's next version, or the snapshot it takes when it reconnects.
_MAX_PENDING = 10_000


class _Outbox:
    """One loop's group sends to a shared layer, sent in order by one task that runs while
    there is something to send (and ends when there is not: nothing is left pending when the
    loop closes)."""

    def __init__(self) -> None:
        self._messages: collections.deque[tuple[Any, str, dict[str, Any]]] = collections.deque()
        self._sender: asyncio.Task[None] | None = None  # the loop keeps only a weak reference

    def put(
        self, loop: asyncio.AbstractEventLoop, layer: Any, group: str, message: dict[str, Any]
    ) -> None:
        if len(self._messages) >= _MAX_PENDING:
            logger.warning(
                "desk broadcast to %s dropped: %d sends still pending", group, _MAX_PENDING
            )
            return
        self._messages.append((layer, group, message))
        if self._sender is None:
            self._sender = loop.create_task(self._send_all())

    async def _send_all(self) -> None:
        try:
            while self._messages:
                layer, group, message = self._messages.popleft()
                try:
                    await layer.group_send(group, message)
                except Exception:
                    logger.warning("desk broadcast to %s failed", group, exc_info=True)
        finally:
            self._sender = None


_outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Outbox] = (
    weakref.WeakKeyDictionary()
)


def broadcast_order(order: Order) -> None:
    _send(
        order.account.broker_account_id,
        lambda: _framed("order.updated", {"type": "order", "row": order_row(order)}),
    )


def broadcast_position(position: Position) -> None:
    """The position's row with its account's header (the P&L moves with the position): one
    frame, not two, per position change on every open desk of the account."""
    _send(
        position.account.broker_account_id,
        lambda: _framed(
            "position.updated",
            {
                "type": "position",
                "row": position_row(position),
                # Read afresh: the listener's copy of the account may predate a halt.
                "account": account_rows([Account.objects.get(pk=position.account_id)])[0],
            },
        ),
    )


def broadcast_marks(prices: dict[str, Any]) -> None:
    """The new price cells of the positions in these contracts, and the contracts' last prices
    (the chart's newest candle), to each account's group that holds a position or a working
    order in them: the contracts the market-data task follows at all. One frame per account
    per publish: `prices_changed` comes at most once per market-data publish interval, which
    keeps this to a few messages a second per account however fast the market ticks."""
    layer = get_channel_layer()
    if layer is None or (isinstance(layer, InMemoryChannelLayer) and not layer.groups):
        return  # nobody in this process to tell: skip the query
    rows = position_marks_rows(set(prices))
    for broker_account_id, contracts in contract_followers(set(prices)).items():
        quoted = {c: format(prices[c].normalize(), "f") for c in sorted(contracts)}
        message = functools.partial(_marks_message, rows.get(broker_account_id, []), quoted)
        _send(broker_account_id, message)


def _marks_message(rows: list[dict[str, Any]], prices: dict[str, str]) -> dict[str, Any]:
    return _framed("marks.updated", {"type": "marks", "rows": rows, "prices": prices})


def on_prices_changed(sender: Any, prices: dict[str, Any], **kwargs: Any) -> None:
    broadcast_marks(prices)


def on_order_changed(sender: Any, order: Order, **kwargs: Any) -> None:
    broadcast_order(order)


def on_position_changed(sender: Any, position: Position, **kwargs: Any) -> None:
    broadcast_position(position)
