"""The simulator's price process: a seeded random walk on each contract's tick grid that resting
orders fill against, with pause, jump and volatility controls from Python and over /_sim/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from projectx.enums import OrderStatus, OrderType
from projectx.simulator import DEMO_ACCOUNT_ID, DEMO_CONTRACT_ID, GatewaySimulator
from projectx.simulator.demo import DEMO_CONTRACTS
from projectx.simulator.testing import api_client, running_simulator, wait_until
from projectx.simulator.wire import parse_json

pytestmark = pytest.mark.timeout(30)

MNQ = DEMO_CONTRACT_ID
MES = "CON.F.US.MES.Z26"
M2K = "CON.F.US.M2K.Z26"
TICK = {contract.id: contract.tick_size for contract in DEMO_CONTRACTS}


def control(simulator: GatewaySimulator, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{simulator.base_url}/_sim/{path}", json=body, timeout=5.0)
    assert response.status_code == 200, response.text
    return parse_json(response.content)


def walked_prices(seed: int, steps: int) -> list[dict[str, Any]]:
    """Every contract's price after each of `steps` walk steps, driven over /_sim/."""
    with (
        running_simulator(seed=seed) as simulator,
        httpx.Client(base_url=simulator.base_url) as client,
    ):
        return [
            parse_json(client.post("/_sim/market/step", json={}).content)["prices"]
            for _ in range(steps)
        ]


def place_limit(token: str, simulator: GatewaySimulator, side: int, price: Decimal) -> int:
    with api_client(simulator, token) as client:
        body = client.post(
            "Order/place",
            json={
                "accountId": DEMO_ACCOUNT_ID,
                "contractId": MNQ,
                "type": OrderType.LIMIT,
                "side": side,
                "size": 1,
                "limitPrice": float(price),
            },
        ).json()
    assert body["success"], body
    return int(body["orderId"])


def order_status(simulator_api: httpx.Client, order_id: int) -> dict[str, Any]:
    body = simulator_api.post(
        "Order/searchById", json={"accountId": DEMO_ACCOUNT_ID, "orderId": order_id}
    )
    return dict(parse_json(body.content)["order"])


@pytest.fixture
def volatile_simulator() -> Iterator[GatewaySimulator]:
    with running_simulator(seed=3) as simulator:
        simulator.market.configure(volatility=4.0)
        yield simulator


def test_the_walk_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    first, again, other = walked_prices(11, 30), walked_prices(11, 30), walked_prices(12, 30)
    # Should: a seed fixes every contract's path exactly; another seed gives another path.
    assert first == again
    assert first != other
    # Should: the walk actually moves prices.
    assert len({step[MNQ] for step in first}) > 3


def test_every_print_stays_on_the_tick_grid_and_positive(
    volatile_simulator: GatewaySimulator,
) -> None:
    simulator = volatile_simulator
    simulator.market.configure(volatility=25.0, jump_probability=0.2, jump_ticks=50)
    simulator.market.step(steps=300)
    for contract_id in (MNQ, M2K):
        trades = simulator.market.recent_trades(contract_id, 300)
        assert len(trades) == 300
        for trade in trades:
            # Should: prices are whole ticks of the contract, and never zero or negative.
            assert trade["price"] % TICK[contract_id] == 0 and trade["price"] > 0
            assert trade["volume"] >= 1 and trade["type"] in (0, 1)
        quote = simulator.market.quote(contract_id)
        assert quote is not None
        # Should: the inside market is one tick wide around the last trade.
        assert quote["bestAsk"] - quote["bestBid"] == TICK[contract_id]
        assert quote["bestBid"] <= quote["lastPrice"] <= quote["bestAsk"]


def test_a_resting_limit_fills_when_the_walk_crosses_it(
    volatile_simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    simulator = volatile_simulator
    token = simulator.issue_token("demo")
    start = simulator.price(MNQ)
    assert start is not None
    limit = start - 4 * TICK[MNQ]
    order_id = place_limit(token, simulator, side=0, price=limit)
    with api_client(simulator, token) as client:
        assert order_status(client, order_id)["status"] == OrderStatus.OPEN
        for _ in range(2000):
            price = simulator.market.step(MNQ)[MNQ]
            if price <= limit:
                break
        else:
            pytest.fail("the walk never came down to the limit")
        order = order_status(client, order_id)
    # Should: the walk's price reaches the broker, which fills the buy limit at its limit.
    assert order["status"] == OrderStatus.FILLED
    assert Decimal(str(order["filledPrice"])) == limit


def test_a_jump_over_control_gaps_through_a_resting_stop(simulator: GatewaySimulator) -> None:
    token = simulator.issue_token("demo")
    start = simulator.price(MNQ)
    assert start is not None
    stop_price = start - 10 * TICK[MNQ]
    with api_client(simulator, token) as client:
        placed = client.post(
            "Order/place",
            json={
                "accountId": DEMO_ACCOUNT_ID,
                "contractId": MNQ,
                "type": OrderType.STOP,
                "side": 1,
                "size": 1,
                "stopPrice": float(stop_price),
            },
        ).json()
        answer = control(simulator, "market/jump", {"contractId": MNQ, "ticks": -40})
        order = order_status(client, placed["orderId"])
    # Should: the jump moves the price 40 ticks at once, and the sell stop fills at the gap price.
    assert answer["price"] == start - 40 * TICK[MNQ]
    assert order["status"] == OrderStatus.FILLED
    assert Decimal(str(order["filledPrice"])) == start - 40 * TICK[MNQ]


def test_a_paused_contract_keeps_its_price_while_the_others_walk(
    volatile_simulator: GatewaySimulator,
) -> None:
    simulator = volatile_simulator
    before = {contract.id: simulator.price(contract.id) for contract in DEMO_CONTRACTS}
    control(simulator, "market/settings", {"contractId": MNQ, "paused": True})
    after = simulator.market.step(steps=20)
    # Should: a paused contract is left out of the walk, the others move.
    assert MNQ not in after and simulator.price(MNQ) == before[MNQ]
    assert simulator.price(MES) != before[MES]
    control(simulator, "market/settings", {"contractId": MNQ, "paused": False})
    simulator.market.step(steps=20)
    # Should: resumed, it walks again.
    assert simulator.price(MNQ) != before[MNQ]


def test_volatility_zero_holds_the_price_but_still_prints_trades(
    simulator: GatewaySimulator,
) -> None:
    control(simulator, "market/settings", {"volatility": 0})
    start = simulator.price(MNQ)
    simulator.market.step(steps=10)
    # Should: no move without volatility, yet the tape goes on printing.
    assert simulator.price(MNQ) == start
    assert [t["price"] for t in simulator.market.recent_trades(MNQ, 10)] == [start] * 10


def test_set_price_still_scripts_the_market(simulator: GatewaySimulator) -> None:
    simulator.set_price(MNQ, "21012.50")
    quote = simulator.market.quote(MNQ)
    assert quote is not None
    # Should: a scripted price is a trade like any other: broker, tape and quote agree.
    assert simulator.price(MNQ) == Decimal("21012.50")
    assert quote["lastPrice"] == Decimal("21012.50")
    assert simulator.market.recent_trades(MNQ, 1)[0]["price"] == Decimal("21012.50")
    with pytest.raises(Exception, match="off the"):
        simulator.set_price(MNQ, "21012.10")


def test_prices_stand_still_until_the_walk_is_switched_on() -> None:
    with running_simulator(walk_interval=0.01) as simulator:
        tape_before = simulator.market.tape_length(MNQ)
        time.sleep(0.1)  # ten walk intervals pass; nothing may happen in them
        # Should: without --price-walk the loop's walk task moves nothing.
        assert simulator.market.tape_length(MNQ) == tape_before
        state = control(simulator, "market/walk", {"running": True})
        assert state["walking"] is True
        # Should: switched on, the loop walks every contract by itself.
        wait_until(lambda: simulator.market.tape_length(MNQ) >= tape_before + 5)
        wait_until(lambda: simulator.market.tape_length(MES) >= 5)
        control(simulator, "market/walk", {"running": False})
        assert httpx.get(f"{simulator.base_url}/_sim/market").json()["walking"] is False


def test_the_walk_can_be_on_from_the_start() -> None:
    with running_simulator(price_walk=True, walk_interval=0.01) as simulator:
        start = simulator.market.tape_length(MNQ)
        # Should: price_walk=True (the --price-walk flag) walks from the first moment.
        wait_until(lambda: simulator.market.tape_length(MNQ) >= start + 5)


def test_bad_controls_are_refused(simulator: GatewaySimulator) -> None:
    url = f"{simulator.base_url}/_sim/market"
    # Should: bad settings and unknown contracts answer 400 with a reason.
    for path, body in (
        ("settings", {"volatility": -1}),
        ("settings", {"jumpProbability": 2}),
        ("jump", {"contractId": "CON.F.US.NOPE.Z26", "ticks": 3}),
        ("walk", {"running": True, "interval": 0}),
    ):
        response = httpx.post(f"{url}/{path}", json=body)
        assert response.status_code == 400 and response.json()["error"], (path, body)
