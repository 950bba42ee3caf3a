"""What the live desk shows: one row per order and per position, in one JSON shape shared by
the snapshot and the live updates, so the page merges both the same way (by version)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q

from accounts.models import Account, Position, PositionType
from accounts.selectors import accounts_visible_to
from fills.models import Fill
from marketdata.selectors import NO_MARK, Mark, position_marks
from orders.lifecycle import TERMINAL
from orders.models import Order


def _decimal(value: Any) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def order_row(order: Order) -> dict[str, Any]:
    return {
        "id": str(order.pk),
        "account": order.account.broker_account_id,
        "contract_id": order.contract_id,
        "side": order.side,
        "type": order.type,
        "size": order.size,
        "limit_price": _decimal(order.limit_price),
        "stop_price": _decimal(order.stop_price),
        "status": order.status,
        "status_reason": order.status_reason,
        "filled_size": order.filled_size,
        "avg_fill_price": _decimal(order.avg_fill_price),
        "overfilled": order.overfilled,
        "broker_order_id": order.broker_order_id,
        "state_entered_at": order.state_entered_at.isoformat(),
        "created_at": order.created_at.isoformat() if order.created_at else None,
        "version": order.version,
        "terminal": order.status in TERMINAL,
        # Bracket groups: the role, the entry a child belongs to, an entry left unprotected.
        "role": order.bracket_role or None,
        "parent": str(order.bracket_parent_id) if order.bracket_parent_id else None,
        "unprotected": order.unprotected_at is not None,
    }


def position_row(position: Position, mark: Mark | None = None) -> dict[str, Any]:
    if mark is None:
        mark = position_marks([position]).get(position.pk, NO_MARK)
    return {
        "key": f"{position.account.broker_account_id}:{position.contract_id}",
        "account": position.account.broker_account_id,
        "contract_id": position.contract_id,
        "type": position.type,
        "size": position.size,
        "average_price": _decimal(position.average_price),
        "version": position.version,
        "last_server_ts": position.last_server_ts.isoformat() if position.last_server_ts else None,
        **mark_fields(mark),
    }


def mark_fields(mark: Mark) -> dict[str, str | None]:
    """A position's price cells; they move with the market, not with the row's version."""
    return {
        "last_price": _decimal(mark.last_price),
        "unrealized_pnl": _decimal(mark.unrealized_pnl),
    }


def position_marks_rows(contract_ids: set[str]) -> dict[int, list[dict[str, Any]]]:
    """The price cells of every open position in these contracts, by broker account id."""
    positions = list(
        Position.objects.filter(contract_id__in=contract_ids, account__active=True)
        .exclude(type=PositionType.FLAT)
        .select_related("account")
    )
    marks = position_marks(positions)
    rows: dict[int, list[dict[str, Any]]] = {}
    for position in positions:
        account_id = position.account.broker_account_id
        rows.setdefault(account_id, []).append(
            {"key": f"{account_id}:{position.contract_id}", **mark_fields(marks[position.pk])}
        )
    return rows


def desk_accounts(user: User | AnonymousUser) -> list[Account]:
    return list(accounts_visible_to(user).filter(active=True))


def desk_snapshot(user: User | AnonymousUser) -> dict[str, Any]:
    """Today's orders (and older ones still working) and the open positions, per account."""
    accounts = desk_accounts(user)
    start_of_day = datetime.combine(datetime.now(UTC).date(), time.min, tzinfo=UTC)
    orders = (
        Order.objects.filter(account__in=accounts)
        .filter(Q(created_at__gte=start_of_day) | ~Q(status__in=TERMINAL))
        .select_related("account")
        .order_by("-created_at")[:1000]
    )
    positions = list(
        Position.objects.filter(account__in=accounts)
        .exclude(type=PositionType.FLAT)
        .select_related("account")
    )
    marks = position_marks(positions)
    return {
        "accounts": [{"id": a.broker_account_id, "name": a.name} for a in accounts],
        "orders": [order_row(o) for o in orders],
        "positions": [position_row(p, marks[p.pk]) for p in positions],
    }


def desk_order_detail(order: Order) -> dict[str, Any]:
    fills = Fill.objects.filter(order=order).order_by("broker_ts", "broker_trade_id")
    return {
        "order": order_row(order),
        "fills": [
            {
                "trade_id": f.broker_trade_id,
                "size": f.size,
                "price": _decimal(f.price),
                "fees": _decimal(f.fees),
                "voided": f.voided,
                "at": f.broker_ts.isoformat(),
            }
            for f in fills
        ],
        "transitions": [
            {
                "version": t.version,
                "from": t.from_state,
                "to": t.to_state,
                "at": t.at.isoformat(),
                "in_previous_s": t.time_in_previous_state.total_seconds(),
                "trigger": t.trigger,
                "actor": t.actor,
                "reason": t.reason,
            }
            for t in order.transitions.order_by("version")
        ],
    }
