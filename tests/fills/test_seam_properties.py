"""Random interleavings of one order's evidence, against the simulator on PostgreSQL.

Each example places one order through the bot API with one Idempotency-Key, under a random REST
outcome (answered, answer lost, rejected, broker 429, 5xx without processing), with the broker's
events for it applied (as the listener applies them) before the REST answer, after it, twice,
trades before the order event, or not at all; the bot may retry; verification, the stuck sweep
(what a restarted process runs) and the REST catch-up may run. Whatever the interleaving:

- the order ends in the broker's state;
- no API call answers 5xx other than the documented 503 "not placed", nor `illegal_transition`;
- the key never places twice at the broker;
- every write has its audit row.

`make test` runs a few examples; `SEAM_EXAMPLES=300 .venv/bin/pytest
tests/fills/test_seam_properties.py` runs a few hundred.
"""

from __future__ import annotations

import itertools
import os
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.gateway import get_gateway
from accounts.models import Account
from accounts.services import contract_resolve
from fills.services import fill_apply, order_event_apply
from orders import lifecycle
from orders.idempotency import custom_tag_for
from orders.models import Order, OrderStatus
from orders.verification import orders_verify
from orders.wire import local_state_for
from tests.helpers import DEMO_ACCOUNT, LIMIT_BUY, MNQ, in_thread, place

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# A few examples in `make test`; `SEAM_EXAMPLES=300` for the long run.
EXAMPLES = int(os.environ.get("SEAM_EXAMPLES", "12"))

REST_OUTCOMES = ["answered", "lost", "rejected", "broker_429", "unprocessed_5xx"]
HUB_TIMING = ["before_answer", "after_answer", "never"]
_keys = itertools.count()


def broker_view(since) -> tuple[list[Any], list[Any]]:
    gateway = get_gateway()
    orders = gateway.search_orders(account_id=DEMO_ACCOUNT, start=since)
    trades = gateway.search_trades(account_id=DEMO_ACCOUNT, start=since)
    return orders, trades


def deliver_hub_events(tag: str, since, *, duplicate: bool, trades_first: bool) -> None:
    """What the listener does with the broker's events for our order (fetched, as its REST
    catch-up does; the hub carries the same fields)."""
    account = Account.objects.get(broker_account_id=DEMO_ACCOUNT)
    orders, trades = broker_view(since)
    ours = [o for o in orders if o.custom_tag == tag]
    our_trades = [t for t in trades if any(t.order_id == o.id for o in ours)]
    steps: list[Any] = [("order", o) for o in ours] + [("trade", t) for t in our_trades]
    if trades_first:
        steps.reverse()
    for _ in range(2 if duplicate else 1):
        for kind, item in steps:
            if kind == "order":
                order_event_apply(account=account, wire=item, trigger="broker-stream")
            else:
                fill_apply(account=account, trade=item, trigger="broker-stream")


def unknown_orders() -> list[Any]:
    return list(Order.objects.filter(status=OrderStatus.UNKNOWN).values_list("pk", flat=True))


def arm_rest_outcome(sim, outcome: str):
    if outcome == "lost":
        return sim.faults.hold_response(path="Order/place", then="lose")
    if outcome == "rejected":
        sim.faults.reject_orders(count=1, message="Rejected in the property test")
    elif outcome == "broker_429":
        sim.faults.rate_limit(path="Order/place", count=1, retry_after=1)
    elif outcome == "unprocessed_5xx":
        sim.faults.fail_requests(503, path="Order/place", count=1)
    return sim.faults.hold_response(path="Order/place", then="answer")


def check_answer(response) -> None:
    body = response.json()
    code = body.get("error", {}).get("code") if "error" in body else None
    assert code != "illegal_transition", body
    if response.status_code >= 500:
        # The only 5xx a placement may answer: "not placed, retry" (nothing reached the broker).
        assert response.status_code == 503 and code in {"broker_unavailable"}, body


@given(
    outcome=st.sampled_from(REST_OUTCOMES),
    hub=st.sampled_from(HUB_TIMING),
    duplicate=st.booleans(),
    trades_first=st.booleans(),
    market=st.booleans(),
    retry=st.booleans(),
    verify=st.booleans(),
    sweep=st.booleans(),
)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_interleaving_ends_in_the_brokers_state(
    bot, sim, outcome, hub, duplicate, trades_first, market, retry, verify, sweep
) -> None:
    sim.faults.clear()
    contract_resolve(contract_id=MNQ)
    key = f"prop-{next(_keys)}-{timezone.now().timestamp()}"
    tag = custom_tag_for(account_broker_id=DEMO_ACCOUNT, key=key)
    since = timezone.now() - timedelta(seconds=5)
    body = {**LIMIT_BUY, "type": "market", "limit_price": None} if market else LIMIT_BUY

    started = timezone.now()
    gate = arm_rest_outcome(sim, outcome)
    pending = in_thread(lambda: place(bot, body, key=key))
    if outcome not in {"broker_429", "unprocessed_5xx"}:
        gate.wait_until_acted()
        if hub == "before_answer":
            deliver_hub_events(tag, since, duplicate=duplicate, trades_first=trades_first)
    gate.release()
    answers = [pending.result(timeout=30)]
    if hub == "after_answer":
        deliver_hub_events(tag, since, duplicate=duplicate, trades_first=trades_first)
    if retry:
        sim.faults.clear()
        answers.append(place(bot, body, key=key))
    if verify:
        unknown = list(
            Order.objects.filter(status=OrderStatus.UNKNOWN).values_list("pk", flat=True)
        )
        orders_verify(order_ids=unknown)
    if sweep:
        Order.objects.exclude(status__in=lifecycle.TERMINAL).update(
            state_entered_at=timezone.now() - timedelta(hours=1)
        )
        call_command("detect_stuck_orders", "--verify")
    # Whatever happened, the catch-up after a reconnect brings the order to the broker's truth.
    deliver_hub_events(tag, since, duplicate=False, trades_first=False)
    orders_verify(
        order_ids=list(
            Order.objects.filter(status=OrderStatus.UNKNOWN).values_list("pk", flat=True)
        )
    )

    for answer in answers:
        check_answer(answer)
    at_broker, _ = broker_view(since)
    held = [o for o in at_broker if o.custom_tag == tag]
    # the key never places twice at the broker
    assert len(held) <= 1, held
    for order in Order.objects.filter(created_at__gte=started):
        # every write has its audit row
        assert order.transitions.count() == order.version - 1, order
        match = [o for o in held if o.id == order.broker_order_id]
        if match:
            (wire,) = match
            expected = local_state_for(wire.status, filled_size=order.filled_size)
            # the order ends in the broker's state
            assert order.status == expected, (order.status, wire.status, order.status_reason)
        else:
            # not at the broker: it ended, and said why
            assert order.status in lifecycle.TERMINAL, (order.status, order.status_reason)
