"""Metrics read from the database at scrape time, in whichever process answers /metrics.

The listener's health and the stuck orders are facts about the database and the broker
connection, not about one process: a gauge the listener process set would vanish with it (or,
in multiprocess mode, linger after it died), and the listener may run on another machine.
Computed per scrape from `ListenerHeartbeat` rows and the orders table, they are always current.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common import metrics
from ops.health import listener_state

logger = logging.getLogger(__name__)


class DatabaseStateCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        from orders.stuck import stuck_orders_count

        now = timezone.now()
        try:
            listener = listener_state(now=now)
            stuck = stuck_orders_count(now=now)
        except Exception:  # /metrics must still answer with the rest when the database cannot
            logger.warning("database metrics unavailable for this scrape", exc_info=True)
            return
        yield GaugeMetricFamily(
            metrics.LISTENER_CONNECTED,
            "1 while a listener with a fresh heartbeat is connected and subscribed",
            value=1 if listener.connected else 0,
        )
        age = (
            (now - listener.last_heard_at).total_seconds()
            if listener.last_heard_at is not None
            else math.inf  # never heard: as stale as it gets
        )
        yield GaugeMetricFamily(
            metrics.LISTENER_LAST_EVENT_AGE_SECONDS,
            "Seconds since a listener last heard from the broker (event or ping)",
            value=max(age, 0.0),
        )
        stuck_family = GaugeMetricFamily(
            metrics.ORDERS_STUCK,
            "Orders stuck past their state's threshold right now, by state",
            labels=["state"],
        )
        for state, count in stuck.items():
            stuck_family.add_metric([state], count)
        yield stuck_family
        yield from _account_risk(now)


def _account_risk(now: datetime) -> Iterator[Metric]:
    """Per account (broker id): its trading state, today's realized P&L, the loss limit."""
    from accounts.models import Account, TradingState
    from accounts.selectors import (
        effective_trading_state,
        loss_limit_reached,
        realized_pnl_by_contract,
    )

    try:
        accounts = list(Account.objects.filter(active=True))
        pnl = realized_pnl_by_contract(account_ids=[a.pk for a in accounts], now=now)
    except Exception:
        logger.warning("account risk metrics unavailable for this scrape", exc_info=True)
        return
    state_family = GaugeMetricFamily(
        metrics.ACCOUNT_TRADING_STATE,
        "1 for the trading state each account is in (active, reduce_only, halted)",
        labels=["account", "state"],
    )
    reached_family = GaugeMetricFamily(
        metrics.ACCOUNT_DAILY_LOSS_LIMIT_REACHED,
        "1 while an account's realized loss today has reached its dailyLossLimit",
        labels=["account"],
    )
    pnl_family = GaugeMetricFamily(
        metrics.ACCOUNT_REALIZED_PNL_TODAY,
        "Realized P&L net of fees since the trading day began, per account",
        labels=["account"],
    )
    for account in accounts:
        label = str(account.broker_account_id)
        current = effective_trading_state(account, now=now)
        for state in TradingState.values:
            state_family.add_metric([label, state], 1 if state == current else 0)
        total = sum((v for (a, _), v in pnl.items() if a == account.pk), Decimal(0))
        reached = loss_limit_reached(account, now=now, pnl=total)
        reached_family.add_metric([label], 1 if reached else 0)
        pnl_family.add_metric([label], float(total))
    yield state_family
    yield reached_family
    yield pnl_family
