"""ProjectXClient against the gateway simulator over real loopback sockets: every endpoint, the
token lifecycle, and the definitive/ambiguous line for each mutating endpoint under real faults."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from projectx.client import ProjectXClient, SessionToken
from projectx.config import GatewayConfig
from projectx.enums import OrderSide, OrderStatus, OrderType, PositionType
from projectx.errors import (
    AmbiguousError,
    AuthenticationError,
    BrokerRejected,
    ConnectionLost,
    DefinitiveError,
    GatewayTimeout,
    GatewayUnavailable,
    RateLimited,
    RequestNotSent,
)
from projectx.ratelimit import SlidingWindowRateLimiter
from projectx.simulator import DEMO_ACCOUNT_ID, DEMO_API_KEY, DEMO_USERNAME, GatewaySimulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(15)]

MNQ = "CON.F.US.MNQ.Z26"
BELOW_MARKET = Decimal("20000.25")  # the demo MNQ trades at 21000.00


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def config_for(simulator: GatewaySimulator, **overrides: Any) -> GatewayConfig:
    options: dict[str, Any] = {
        "request_timeout": 0.5,  # the lost-ack tests wait this long
        "retry_backoff_initial": 0.01,
        "retry_backoff_max": 0.05,
    }
    options.update(overrides)
    return GatewayConfig(
        api_url=simulator.base_url,
        user_hub_url=simulator.user_hub_url,
        username=DEMO_USERNAME,
        api_key=DEMO_API_KEY,
        **options,
    )


@pytest.fixture
async def client(simulator: GatewaySimulator) -> AsyncIterator[ProjectXClient]:
    async with ProjectXClient(
        config_for(simulator), rate_limiter=SlidingWindowRateLimiter()
    ) as client:
        yield client


async def place_limit_buy(client: ProjectXClient, custom_tag: str | None = None) -> int:
    return await client.place_order(
        account_id=DEMO_ACCOUNT_ID,
        contract_id=MNQ,
        type=OrderType.LIMIT,
        side=OrderSide.BID,
        size=2,
        limit_price=BELOW_MARKET,
        custom_tag=custom_tag,
    )


async def buy_at_market(client: ProjectXClient, size: int) -> int:
    return await client.place_order(
        account_id=DEMO_ACCOUNT_ID,
        contract_id=MNQ,
        type=OrderType.MARKET,
        side=OrderSide.BID,
        size=size,
    )


def broker_orders_tagged(simulator: GatewaySimulator, tag: str) -> list[dict[str, Any]]:
    return [
        order for order in simulator.broker.orders(DEMO_ACCOUNT_ID) if order["customTag"] == tag
    ]


# -- Every endpoint --------------------------------------------------------------------------


async def test_it_reads_accounts_and_contracts(client: ProjectXClient) -> None:
    accounts = await client.search_accounts()
    contract = await client.get_contract(MNQ)

    # should log in by itself and return typed, Decimal-valued models
    assert DEMO_ACCOUNT_ID in [account.id for account in accounts]
    assert all(isinstance(account.balance, Decimal) for account in accounts)
    assert contract.tick_size == Decimal("0.25")
    assert contract.tick_value == Decimal("0.5")


async def test_an_order_lives_through_place_modify_and_cancel(
    client: ProjectXClient, simulator: GatewaySimulator
) -> None:
    start = datetime.now(UTC) - timedelta(seconds=5)
    order_id = await place_limit_buy(client, custom_tag="lifecycle-1")

    placed = await client.get_order(account_id=DEMO_ACCOUNT_ID, order_id=order_id)
    open_orders = await client.search_open_orders(account_id=DEMO_ACCOUNT_ID)
    await client.modify_order(
        account_id=DEMO_ACCOUNT_ID, order_id=order_id, limit_price=Decimal("20000.50"), size=1
    )
    modified = await client.get_order(account_id=DEMO_ACCOUNT_ID, order_id=order_id)
    await client.cancel_order(account_id=DEMO_ACCOUNT_ID, order_id=order_id)
    history = await client.search_orders(account_id=DEMO_ACCOUNT_ID, start=start)

    # should round-trip the exact price and tag, and see each change
    assert placed.status is OrderStatus.OPEN
    assert placed.limit_price == BELOW_MARKET
    assert placed.custom_tag == "lifecycle-1"
    assert order_id in [order.id for order in open_orders]
    assert (modified.limit_price, modified.size) == (Decimal("20000.50"), 1)
    assert [order.status for order in history if order.id == order_id] == [OrderStatus.CANCELLED]
    assert simulator.broker.order(order_id)["status"] == OrderStatus.CANCELLED


async def test_positions_and_trades_follow_fills_and_closes(client: ProjectXClient) -> None:
    start = datetime.now(UTC) - timedelta(seconds=5)
    await buy_at_market(client, size=3)

    [position] = await client.search_open_positions(account_id=DEMO_ACCOUNT_ID)
    await client.partial_close_position(account_id=DEMO_ACCOUNT_ID, contract_id=MNQ, size=1)
    [reduced] = await client.search_open_positions(account_id=DEMO_ACCOUNT_ID)
    await client.close_position(account_id=DEMO_ACCOUNT_ID, contract_id=MNQ)
    remaining = await client.search_open_positions(account_id=DEMO_ACCOUNT_ID)
    trades = await client.search_trades(account_id=DEMO_ACCOUNT_ID, start=start)

    # should open long 3, partially close to 2 (field `size`), then flatten
    assert (position.type, position.size) == (PositionType.LONG, 3)
    assert isinstance(position.average_price, Decimal)
    assert reduced.size == 2
    assert remaining == []
    # should list the half-turns: the opening one without P&L, the closing ones with it
    assert [trade.side for trade in trades] == [OrderSide.BID, OrderSide.ASK, OrderSide.ASK]
    assert trades[0].profit_and_loss is None
    assert all(trade.profit_and_loss is not None for trade in trades[1:])


# -- Tokens ----------------------------------------------------------------------------------


async def test_an_expired_token_is_replaced_by_one_fresh_login(
    client: ProjectXClient, simulator: GatewaySimulator
) -> None:
    await client.search_accounts()
    first_token = client.session_token
    simulator.expire_tokens()

    accounts = await client.search_accounts()

    # should recover from the 401 by logging in again, transparently
    assert accounts
    assert client.session_token is not None and first_token is not None
    assert client.session_token.value != first_token.value


async def test_it_fails_with_an_auth_error_when_a_fresh_token_is_refused_too(
    client: ProjectXClient, simulator: GatewaySimulator
) -> None:
    # The broker refuses the request and its re-send after a fresh login alike (a lifetime of
    # 1 ms for every token was a race: a fast machine used the fresh token within it).
    simulator.faults.fail_requests(
        401, path="Order/searchOpen", count=2, headers={"WWW-Authenticate": "Bearer"}
    )

    # should re-login once, then give up with an authentication error
    with pytest.raises(AuthenticationError) as caught:
        await client.search_open_orders(account_id=DEMO_ACCOUNT_ID)
    assert caught.value.status_code == 401


async def test_validate_swaps_the_token(client: ProjectXClient) -> None:
    first = await client.login_key()

    refreshed = await client.validate()

    # should replace the session token with the broker's newToken
    assert refreshed != first
    assert client.session_token is not None and client.session_token.value == refreshed


async def test_a_wrong_api_key_is_an_authentication_error(simulator: GatewaySimulator) -> None:
    config = GatewayConfig(
        api_url=simulator.base_url,
        user_hub_url=simulator.user_hub_url,
        username=DEMO_USERNAME,
        api_key="wrong",
    )
    async with ProjectXClient(config, rate_limiter=SlidingWindowRateLimiter()) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.search_accounts()

    # should name the LoginErrorCode
    assert caught.value.error_name == "INVALID_CREDENTIALS"


# -- Definitive vs ambiguous, per mutating endpoint ------------------------------------------

Mutation = Callable[[ProjectXClient], Awaitable[object]]

MUTATIONS: dict[str, Mutation] = {
    "Order/place": lambda client: place_limit_buy(client, custom_tag="mutation-under-test"),
    "Order/modify": lambda client: client.modify_order(
        account_id=DEMO_ACCOUNT_ID, order_id=9001, size=1
    ),
    "Order/cancel": lambda client: client.cancel_order(account_id=DEMO_ACCOUNT_ID, order_id=9001),
    "Position/closeContract": lambda client: client.close_position(
        account_id=DEMO_ACCOUNT_ID, contract_id=MNQ
    ),
    "Position/partialCloseContract": lambda client: client.partial_close_position(
        account_id=DEMO_ACCOUNT_ID, contract_id=MNQ, size=1
    ),
}


@pytest.mark.parametrize(
    ("path", "error_name"),
    [
        ("Order/modify", "ORDER_NOT_FOUND"),
        ("Order/cancel", "ORDER_NOT_FOUND"),
        ("Position/closeContract", "POSITION_NOT_FOUND"),
        ("Position/partialCloseContract", "POSITION_NOT_FOUND"),
    ],
)
async def test_a_broker_refusal_is_definitive_with_the_endpoints_code(
    client: ProjectXClient, path: str, error_name: str
) -> None:
    # Nothing exists yet: order 9001 and an MNQ position are both unknown to the broker.
    with pytest.raises(BrokerRejected) as caught:
        await MUTATIONS[path](client)

    assert caught.value.endpoint == path
    assert caught.value.error_name == error_name


async def test_a_rejected_place_is_definitive_and_carries_the_rejected_order_id(
    client: ProjectXClient, simulator: GatewaySimulator
) -> None:
    simulator.faults.reject_orders(1, message="Insufficient margin.")

    with pytest.raises(BrokerRejected) as caught:
        await place_limit_buy(client, custom_tag="rejected-1")

    # should name PlaceOrderErrorCode 2 and keep the id of the order the broker rejected
    assert caught.value.error_name == "ORDER_REJECTED"
    assert caught.value.order_id is not None
    assert simulator.broker.order(caught.value.order_id)["status"] == OrderStatus.REJECTED


async def test_a_partial_close_larger_than_the_position_is_invalid_close_size(
    client: ProjectXClient,
) -> None:
    await buy_at_market(client, size=1)

    with pytest.raises(BrokerRejected) as caught:
        await client.partial_close_position(account_id=DEMO_ACCOUNT_ID, contract_id=MNQ, size=5)

    # should use partialCloseContract's own numbering (5), not closeContract's
    assert (caught.value.error_code, caught.value.error_name) == (5, "INVALID_CLOSE_SIZE")


@pytest.mark.parametrize("path", sorted(MUTATIONS))
async def test_a_5xx_on_any_mutation_is_ambiguous_and_sent_once(
    client: ProjectXClient, simulator: GatewaySimulator, path: str
) -> None:
    await client.login_key()
    simulator.faults.fail_requests(502, path=path, count=2)

    with pytest.raises(GatewayUnavailable) as caught:
        await MUTATIONS[path](client)

    # should say "may have happened", and leave the second fault unused (no retry)
    assert isinstance(caught.value, AmbiguousError)
    assert len(simulator.faults.snapshot()["http"]) == 1


@pytest.mark.parametrize("path", sorted(MUTATIONS))
async def test_a_refused_connection_on_any_mutation_is_definitively_not_sent(
    simulator: GatewaySimulator, path: str
) -> None:
    # A token issued directly, so this client holds no pooled connection: the mutation's own
    # connect is what gets refused. (The simulator's refuse_connections() leaves idle keep-alive
    # connections half-open, and a request sent on one is swallowed: that is a read timeout,
    # rightly ambiguous, not a refusal.)
    token = SessionToken(simulator.issue_token(DEMO_USERNAME), issued_at=datetime.now(UTC))
    simulator.faults.refuse_connections()

    async with ProjectXClient(
        config_for(simulator), rate_limiter=SlidingWindowRateLimiter(), session_token=token
    ) as client:
        with pytest.raises(RequestNotSent) as caught:
            await MUTATIONS[path](client)

    # should tell the caller that the broker never saw it
    assert isinstance(caught.value, DefinitiveError)


async def test_a_lost_ack_is_ambiguous_and_the_broker_still_holds_the_order(
    client: ProjectXClient, simulator: GatewaySimulator
) -> None:
    await client.login_key()
    simulator.faults.lose_response(path="Order/place")

    with pytest.raises(GatewayTimeout) as caught:
        await place_limit_buy(client, custom_tag="lost-ack-1")

    # should be ambiguous, and rightly so: the order is working at the broker
    assert isinstance(caught.value, AmbiguousError)
    [held] = broker_orders_tagged(simulator, "lost-ack-1")
    assert held["status"] == OrderStatus.OPEN
    # should find it again by customTag, the reconciliation path the caller takes
    found = await client.search_orders(
        account_id=DEMO_ACCOUNT_ID, start=datetime.now(UTC) - timedelta(minutes=1)
    )
    assert [order.id for order in found if order.custom_tag == "lost-ack-1"] == [held["id"]]


async def test_a_connection_cut_on_arrival_is_ambiguous_though_nothing_happened(
    client: ProjectXClient, simulator: GatewaySimulator
) -> None:
    await client.login_key()
    simulator.faults.drop_requests(path="Order/place")

    # should not guess: from our side of the socket this is indistinguishable from a lost ack
    with pytest.raises(ConnectionLost):
        await place_limit_buy(client, custom_tag="cut-1")
    assert broker_orders_tagged(simulator, "cut-1") == []


# -- 429 -------------------------------------------------------------------------------------


async def test_a_429_on_a_read_is_retried_after_its_retry_after(
    client: ProjectXClient, simulator: GatewaySimulator
) -> None:
    await client.login_key()
    simulator.faults.rate_limit(path="Order/searchOpen", count=1, retry_after=0.05)

    # should wait and retry, invisibly to the caller
    assert await client.search_open_orders(account_id=DEMO_ACCOUNT_ID) == []


async def test_a_429_on_a_mutation_raises_rate_limited_and_places_nothing(
    client: ProjectXClient, simulator: GatewaySimulator
) -> None:
    await client.login_key()
    simulator.faults.rate_limit(path="Order/place", count=1, retry_after=0.05)

    with pytest.raises(RateLimited) as caught:
        await place_limit_buy(client, custom_tag="limited-1")

    # should surface the refusal with the broker's Retry-After, and not retry
    assert caught.value.retry_after == pytest.approx(0.05)
    assert broker_orders_tagged(simulator, "limited-1") == []
