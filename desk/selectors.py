"""What the live desk shows: one row per order and per position, in one JSON shape shared by
the snapshot and the live updates, so the page merges both the same way (by version)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q
from django.utils import timezone

from accounts.models import Account, Contract, Position, PositionType
from accounts.selectors import (
    accounts_visible_to,
    effective_trading_state,
    realized_pnl_by_contract,
)
from fills.models import Fill, ListenerHeartbeat
from marketdata.selectors import NO_MARK, Mark, account_unrealized_pnl, position_marks
from orders.lifecycle import TERMINAL
from orders.models import BracketRole, Order, OrderStatus, Protection
from orders.stuck import stuck_orders, stuck_thresholds


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


def contract_followers(contract_ids: set[str]) -> dict[int, set[str]]:
    """Which of these contracts each active account (by broker id) holds an open position or a
    working order in."""
    followers: dict[int, set[str]] = {}
    positions = (
        Position.objects.filter(contract_id__in=contract_ids, account__active=True)
        .exclude(type=PositionType.FLAT)
        .values_list("account__broker_account_id", "contract_id")
    )
    orders = (
        Order.objects.filter(contract_id__in=contract_ids, account__active=True)
        .exclude(status__in=TERMINAL)
        .values_list("account__broker_account_id", "contract_id")
        .distinct()
    )
    for account_id, contract_id in [*positions, *orders]:
        followers.setdefault(account_id, set()).add(contract_id)
    return followers


def desk_accounts(user: User | AnonymousUser) -> list[Account]:
    return list(accounts_visible_to(user).filter(active=True))


def account_rows(accounts: list[Account], *, now: datetime | None = None) -> list[dict[str, Any]]:
    """The account header: name, trading state (as acceptance sees it: a loss-limit state of
    an earlier trading day has ended), realized P&L today net of fees, unrealized P&L (the page
    counts the working orders from the rows it holds)."""
    now = now or timezone.now()
    unrealized = account_unrealized_pnl(accounts)
    realized = realized_pnl_today_by_account(accounts, now=now)
    return [
        {
            "id": account.broker_account_id,
            "name": account.name,
            "trading_state": effective_trading_state(account, now=now),
            "trading_state_reason": account.trading_state_reason,
            "realized_pnl_today": _decimal(realized.get(account.pk, Decimal(0))),
            "unrealized_pnl": _decimal(unrealized.get(account.pk)),
        }
        for account in accounts
    ]


def realized_pnl_today_by_account(accounts: list[Account], *, now: datetime) -> dict[int, Decimal]:
    """Each account's realized P&L today, net of fees, by primary key, in one query (the
    per-contract rows `accounts.selectors.realized_pnl_by_contract` reads, summed)."""
    totals: dict[int, Decimal] = {}
    by_contract = realized_pnl_by_contract(account_ids=[a.pk for a in accounts], now=now)
    for (account_pk, _contract), net in by_contract.items():
        totals[account_pk] = totals.get(account_pk, Decimal(0)) + net
    return totals


# What Cancel all and Flatten account cancel: orders the broker has working.
WORKING_STATES = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)


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
        "accounts": account_rows(accounts),
        "orders": [order_row(o) for o in orders],
        "positions": [position_row(p, marks[p.pk]) for p in positions],
        "contracts": list(
            Contract.objects.filter(active=True).values_list("contract_id", flat=True)
        ),
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


# --- The health strip -------------------------------------------------------------------------
# Four lights a trader reads at a glance, each green, amber or red with a line of detail. They
# come from the rows the rest of the system already keeps (the listener's heartbeat, the orders'
# states and protection), so the strip says what /readyz and the stuck sweep would say.

GREEN, AMBER, RED = "green", "amber", "red"
# The strip's lights in their order on the page: (name, label).
HEALTH_LIGHTS = (
    ("broker", "Broker"),
    ("listener", "Listener"),
    ("stuck", "Stuck orders"),
    ("protection", "Unprotected"),
)
# The listener writes its heartbeat every sweep interval (1 s under `serve`, 5 s by default):
# an "applied" time older than a few of those means its applier is slow, one older than the
# stale-feed limit means it has stopped (or is stuck), which is what a trader must see.
LISTENER_AMBER_SECONDS = 15.0
# A listener writes its heartbeat every sweep interval, whether or not events come: one not
# written for five default intervals (2 s) belongs to a process that stopped or hangs.
HEARTBEAT_ALIVE_SECONDS = 10.0


@dataclass(frozen=True)
class Light:
    name: str
    label: str
    level: str
    summary: str
    detail: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "level": self.level,
            "summary": self.summary,
            "detail": self.detail,
        }


def _listener_red_seconds() -> float:
    return float(settings.ORDER_MANAGEMENT.partial_fill_tracking.stale_feed_seconds)


def _alive(beat: ListenerHeartbeat, now: datetime) -> bool:
    return (now - beat.updated_at).total_seconds() <= HEARTBEAT_ALIVE_SECONDS


def _broker_light(heartbeats: list[ListenerHeartbeat], now: datetime) -> Light:
    alive = [beat for beat in heartbeats if _alive(beat, now)]
    detail = [
        f"{beat.name}: {'connected' if beat.connected else 'not connected'}"
        f"{', subscribed' if beat.subscribed else ''}, {beat.reconnects} reconnects, "
        f"heartbeat {(now - beat.updated_at).total_seconds():.0f} s ago"
        for beat in heartbeats
    ]
    if any(beat.connected and beat.subscribed for beat in alive):
        return Light("broker", "Broker", GREEN, "connected", detail)
    if any(beat.connected for beat in alive):
        return Light("broker", "Broker", AMBER, "connected, subscribing", detail)
    if alive:
        return Light("broker", "Broker", RED, "disconnected: reconnecting", detail)
    return Light(
        "broker", "Broker", RED, "no listener connected", detail or ["no listener has run"]
    )


def _listener_light(heartbeats: list[ListenerHeartbeat], now: datetime) -> Light:
    red_after = _listener_red_seconds()
    applied = [beat.applied_at for beat in heartbeats if beat.applied_at is not None]
    detail = [
        f"{beat.name}: {beat.events_applied} events applied, last "
        + (f"{(now - beat.applied_at).total_seconds():.0f} s ago" if beat.applied_at else "never")
        + (f"; failing: {', '.join(beat.failing_tasks)}" if beat.failing_tasks else "")
        for beat in heartbeats
    ]
    alive = [beat for beat in heartbeats if _alive(beat, now)]
    seconds = (now - max(applied)).total_seconds() if applied else None
    summary = "never applied" if seconds is None else f"applied {seconds:.0f} s ago"
    if not heartbeats:
        return Light("listener", "Listener", RED, "none running", ["no listener has ever run"])
    if not alive:
        # A stopping listener's last heartbeat may reset its applied time: say when it was last
        # heard of instead.
        last = max(beat.updated_at for beat in heartbeats)
        since = f"stopped (last heartbeat {(now - last).total_seconds():.0f} s ago)"
        return Light("listener", "Listener", RED, since, detail)
    if not any(beat.connected for beat in alive):
        return Light("listener", "Listener", RED, f"{summary} (disconnected)", detail)
    if seconds is None or seconds > red_after:
        return Light("listener", "Listener", RED, f"{summary} (not applying)", detail)
    if seconds > LISTENER_AMBER_SECONDS or any(beat.failing_tasks for beat in heartbeats):
        return Light("listener", "Listener", AMBER, summary, detail)
    return Light("listener", "Listener", GREEN, summary, detail)


def _stuck_light(accounts: list[Account], now: datetime) -> Light:
    thresholds = stuck_thresholds()
    stuck = list(
        stuck_orders(now=now)
        .filter(account__in=accounts)
        .select_related("account")
        .order_by("state_entered_at")[:20]
    )
    if not stuck:
        return Light("stuck", "Stuck orders", GREEN, "none", [])
    detail = []
    worst = AMBER
    for order in stuck:
        seconds = (now - order.state_entered_at).total_seconds()
        # Past twice its threshold the sweep has had its turns at it and not moved it.
        if seconds > 2 * thresholds[order.status]:
            worst = RED
        detail.append(
            f"{str(order.pk)[:8]} {order.contract_id} {order.status} for {seconds:.0f} s "
            f"(threshold {thresholds[order.status]:g} s)"
        )
    return Light("stuck", "Stuck orders", worst, f"{len(stuck)} stuck", detail)


def _protection_light(accounts: list[Account]) -> Light:
    entries = list(
        Order.objects.filter(
            account__in=accounts,
            bracket_role=BracketRole.ENTRY,
            stop_loss_ticks__isnull=False,
            filled_size__gt=0,
        )
        .exclude(protection=Protection.ENDED)
        .exclude(protection=Protection.PROTECTED)
        .select_related("account")[:20]
    )
    unprotected = [o for o in entries if o.protection == Protection.UNPROTECTED]
    waiting = [o for o in entries if o.protection != Protection.UNPROTECTED]
    detail = [
        f"{str(o.pk)[:8]} {o.account.broker_account_id} {o.contract_id} {o.side} "
        f"{o.filled_size}: {o.protection or 'stop not yet confirmed at the broker'}"
        for o in [*unprotected, *waiting]
    ]
    if unprotected:
        return Light("protection", "Unprotected", RED, f"{len(unprotected)} unprotected", detail)
    if waiting:
        return Light("protection", "Unprotected", AMBER, f"{len(waiting)} confirming", detail)
    return Light("protection", "Unprotected", GREEN, "none", [])


def desk_health(user: User | AnonymousUser, *, now: datetime | None = None) -> dict[str, Any]:
    """The health strip and the account header of one person (the page's first look)."""
    return desk_health_for(desk_accounts(user), now=now or timezone.now())


def listener_heartbeats() -> list[ListenerHeartbeat]:
    return list(ListenerHeartbeat.objects.all())


def desk_health_for(
    accounts: list[Account],
    *,
    now: datetime,
    heartbeats: list[ListenerHeartbeat] | None = None,
) -> dict[str, Any]:
    """The health strip and the account header for these accounts: the listener's lights are
    everyone's, the stuck and unprotected orders are these accounts' only."""
    if heartbeats is None:
        heartbeats = listener_heartbeats()
    lights = [
        _broker_light(heartbeats, now),
        _listener_light(heartbeats, now),
        _stuck_light(accounts, now),
        _protection_light(accounts),
    ]
    return {
        "type": "health",
        "at": now.isoformat(),
        "lights": [light.as_dict() for light in lights],
        "accounts": account_rows(accounts),
    }


# --- The chart's overlay: the account's fills and working orders on one contract ---------------


def desk_chart_overlay(
    user: User | AnonymousUser, *, contract_id: str, since: datetime
) -> dict[str, Any]:
    accounts = desk_accounts(user)
    fills = (
        Fill.objects.filter(account__in=accounts, contract_id=contract_id, broker_ts__gte=since)
        .exclude(voided=True)
        .select_related("account")
        .order_by("broker_ts", "broker_trade_id")[:500]
    )
    # The working orders' levels come from the rows the page already holds (live by version).
    return {
        "contract_id": contract_id,
        "fills": [
            {
                "trade_id": f.broker_trade_id,
                "account": f.account.broker_account_id,
                "order": str(f.order_id) if f.order_id else None,
                "side": f.side,
                "size": f.size,
                "price": _decimal(f.price),
                "at": f.broker_ts.isoformat(),
            }
            for f in fills
        ],
    }
