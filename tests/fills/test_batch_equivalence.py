"""Applying broker events in batches gives exactly the rows applying them one at a time gives.

The listener applies events set-wise (one lock, one fill INSERT, staged order writes per batch);
the reference is the event-by-event path, each event through the services alone. For any random
stream (duplicates, reordering, voids, orphans of an order placed elsewhere, overfills, stale
order events, positions) and any batch size, the fills, the orders and the positions must come
out the same, on PostgreSQL.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from accounts.models import Account, Position, RealizedPnl
from fills.listener import Event, _apply_one_by_one, apply_events
from fills.models import Fill
from orders.models import Order, OrderTransition
from orders.services import order_transition
from projectx.enums import OrderStatus as BrokerStatus
from projectx.models import Order as WireOrder
from projectx.models import Position as WirePosition
from projectx.models import Trade as WireTrade
from tests.factories import make_account, make_order

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

T0 = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
KNOWN = (7001, 7002)  # broker ids of orders placed through us (size 5)
ELSEWHERE = 7009  # placed outside ordermgmt: its fills are orphans until its order event
PRICES = ("21000.00", "21000.25", "21000.50", "20999.75")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@st.composite
def event_streams(draw: Any) -> list[tuple[str, dict[str, Any]]]:
    """A stream of (kind, fields) the broker might send, in any order, with replays."""
    trades: list[dict[str, Any]] = []
    for n in range(draw(st.integers(1, 14))):
        trades.append(
            {
                "id": 900_000 + n,
                "order_id": draw(st.sampled_from([*KNOWN, ELSEWHERE])),
                "size": draw(st.integers(1, 3)),  # up to 3 x 14 on a 5-lot order: overfills
                "price": draw(st.sampled_from(PRICES)),
                "seconds": n + 1,
            }
        )
    events: list[tuple[str, dict[str, Any]]] = [("trade", dict(t)) for t in trades]
    for trade in draw(st.lists(st.sampled_from(trades), max_size=3)):
        events.append(("trade", {**trade, "voided": True}))  # the broker voids one
    for _ in range(draw(st.integers(0, 8))):
        events.append(
            (
                "order",
                {
                    "id": draw(st.sampled_from([*KNOWN, ELSEWHERE])),
                    "status": draw(
                        st.sampled_from(
                            [BrokerStatus.OPEN, BrokerStatus.FILLED, BrokerStatus.CANCELLED]
                        )
                    ),
                    "fill_volume": draw(st.integers(0, 6)),
                    "seconds": draw(st.integers(0, 20)),  # any time: some are stale
                    "limit_price": draw(st.sampled_from(PRICES)),
                },
            )
        )
    for _ in range(draw(st.integers(0, 4))):
        events.append(
            (
                "position",
                {"size": draw(st.integers(0, 9)), "seconds": draw(st.integers(0, 20))},
            )
        )
    events.extend(draw(st.lists(st.sampled_from(events), max_size=4)))  # replays
    return draw(st.permutations(events))


def wire(kind: str, fields: dict[str, Any], account_id: int) -> Event:
    if kind == "trade":
        payload: Any = WireTrade(
            id=fields["id"],
            account_id=account_id,
            contract_id="CON.F.US.MNQ.Z26",
            creation_timestamp=at(fields["seconds"]),
            price=Decimal(fields["price"]),
            side=0,
            size=fields["size"],
            voided=fields.get("voided", False),
            order_id=fields["order_id"],
            fees=Decimal("0.37"),
        )
    elif kind == "order":
        payload = WireOrder(
            id=fields["id"],
            account_id=account_id,
            contract_id="CON.F.US.MNQ.Z26",
            creation_timestamp=T0,
            update_timestamp=at(fields["seconds"]),
            status=fields["status"],
            type=1,
            side=0,
            size=5,
            limit_price=Decimal(fields["limit_price"]),
            fill_volume=fields["fill_volume"],
        )
    else:
        payload = WirePosition(
            id=1,
            account_id=account_id,
            contract_id="CON.F.US.MNQ.Z26",
            creation_timestamp=at(fields["seconds"]),
            type=1 if fields["size"] else 0,
            size=fields["size"],
            average_price=Decimal("21000.00"),
        )
    return (kind, payload, None)


def fresh_account() -> Account:
    """An account with our two working orders, nothing else."""
    Fill.objects.all().delete()
    OrderTransition.objects.all().delete()
    Order.objects.all().delete()
    Position.objects.all().delete()
    Account.objects.all().delete()
    account = make_account(broker_account_id=1001)
    for broker_id in KNOWN:
        order = make_order(account, size=5, broker_order_id=broker_id)
        order_transition(order_id=order.pk, to_state="submitting", trigger="api")
        order_transition(order_id=order.pk, to_state="open", trigger="broker-rest")
    return account


def rows() -> dict[str, Any]:
    """What a user can see: every order's state and figures, every fill, every position."""
    orders = sorted(
        (
            o.broker_order_id,
            o.status,
            o.size,
            o.limit_price,
            o.filled_size,
            o.fill_notional,
            o.avg_fill_price,
            o.broker_fill_volume,
            o.overfilled,
            o.last_server_ts,
            o.last_fill_at,
        )
        for o in Order.objects.all()
    )
    fills = sorted(
        (f.broker_trade_id, f.order.broker_order_id if f.order else None, f.voided, f.size)
        for f in Fill.objects.select_related("order")
    )
    positions = sorted(
        (p.contract_id, p.type, p.size, p.last_server_ts) for p in Position.objects.all()
    )
    audited = all(o.transitions.count() == o.version - 1 for o in Order.objects.all())
    # The day's realized P&L the daily loss limit reads (issue 15), kept as fills are stored.
    realized = sorted(
        (r.contract_id, r.trading_day, r.profit_and_loss, r.fees, r.trades)
        for r in RealizedPnl.objects.all()
    )
    return {
        "orders": orders,
        "fills": fills,
        "positions": positions,
        "audited": audited,
        "realized": realized,
    }


@given(stream=event_streams(), batch_size=st.integers(1, 40))
@settings(
    max_examples=int(os.environ.get("BATCH_EXAMPLES", "25")),  # more for a long run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_batches_of_any_size_give_the_rows_of_one_event_at_a_time(stream, batch_size) -> None:
    note(f"batch size {batch_size}; events {stream}")
    account = fresh_account()
    events = [wire(kind, fields, account.broker_account_id) for kind, fields in stream]
    for event in events:
        _apply_one_by_one([event], "broker-stream", {})
    one_at_a_time = rows()

    account = fresh_account()
    events = [wire(kind, fields, account.broker_account_id) for kind, fields in stream]
    for start in range(0, len(events), batch_size):
        apply_events(events[start : start + batch_size], "broker-stream", {})
    batched = rows()

    assert batched == one_at_a_time
    assert batched["audited"]


def test_a_burst_of_fills_in_one_batch_is_one_audit_row_naming_every_fill() -> None:
    # A 100-lot order swept as one-lot trades arrives as one batch: its audit must say what
    # happened (which fills, the totals from and to) without one row per trade.
    account = fresh_account()
    order = Order.objects.get(broker_order_id=KNOWN[0])
    Order.objects.filter(pk=order.pk).update(size=10)
    trades = [
        wire(
            "trade",
            {
                "id": 910_000 + n,
                "order_id": KNOWN[0],
                "size": 1,
                "price": PRICES[n % 2],
                "seconds": n + 1,
            },
            account.broker_account_id,
        )
        for n in range(6)
    ]
    before = set(OrderTransition.objects.filter(order=order).values_list("pk", flat=True))

    apply_events(trades, "broker-stream", {})

    order.refresh_from_db()
    assert (order.status, order.filled_size) == ("partially_filled", 6)
    added = list(
        OrderTransition.objects.filter(order=order).exclude(pk__in=before).order_by("version")
    )
    # the move of the state machine keeps its own row; the fills after it share one
    assert [(t.from_state, t.to_state) for t in added] == [
        ("open", "partially_filled"),
        ("partially_filled", "partially_filled"),
    ]
    assert added[0].reason == "fill 910000: 1 @ 21000"
    assert added[1].reason == "; ".join(
        f"fill {910_000 + n}: 1 @ {PRICES[n % 2].rstrip('0').rstrip('.')}" for n in range(1, 6)
    )
    assert added[1].changed_fields["filled_size"] == [1, 6]
    # every audit row is counted by the version, as always
    assert order.transitions.count() == order.version - 1
