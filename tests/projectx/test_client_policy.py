"""ProjectXClient policy on scripted HTTP answers (a loopback server answering from a script
written as httpx requests and responses): error mapping per endpoint, retries for reads only,
the 401 re-login, token refresh by age, and rate limiting.

What only real sockets can show (timeouts, refused connections) is in test_client_network.py;
the full protocol against the simulator is in test_client_simulator.py.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp import web

from projectx.client import ProjectXClient, SessionToken
from projectx.config import GatewayConfig
from projectx.enums import OrderSide, OrderStatus, OrderType
from projectx.errors import (
    AmbiguousError,
    AuthenticationError,
    BrokerRejected,
    DefinitiveError,
    GatewayUnavailable,
    MalformedResponse,
    RateLimited,
    RateLimitExceeded,
    RequestNotSent,
    RequestRejected,
)
from projectx.models import Bracket, dumps, loads
from projectx.ratelimit import RateLimit, SlidingWindowRateLimiter

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

CONFIG = GatewayConfig(
    api_url="https://gateway.test",
    user_hub_url="https://rtc.test/hubs/user",
    username="trader",
    api_key="api-key-1",
)

ORDER = {
    "id": 9056,
    "accountId": 1001,
    "contractId": "CON.F.US.MNQ.Z26",
    "creationTimestamp": "2025-07-18T21:00:01.2680090+00:00",
    "updateTimestamp": None,
    "status": 1,
    "type": 1,
    "side": 0,
    "size": 1,
    "limitPrice": Decimal("21000.25"),
    "fillVolume": 0,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def envelope(body: dict[str, Any]) -> httpx.Response:
    # Written with our exact encoder so Decimal prices travel as JSON numbers, as they do live.
    return httpx.Response(200, content=dumps(body), headers={"Content-Type": "application/json"})


def ok(**payload: Any) -> httpx.Response:
    return envelope({"success": True, "errorCode": 0, "errorMessage": None, **payload})


def rejected(error_code: int, message: str = "no", **payload: Any) -> httpx.Response:
    return envelope({"success": False, "errorCode": error_code, "errorMessage": message, **payload})


@dataclass
class ScriptedGateway:
    """Answers each path from its script, in order; logs in anyone who asks."""

    scripts: dict[str, deque[httpx.Response | Callable[[httpx.Request], httpx.Response]]] = field(
        default_factory=dict
    )
    requests: list[httpx.Request] = field(default_factory=list)
    tokens_issued: int = 0
    unscripted: list[str] = field(default_factory=list)

    def script(self, path: str, *answers: httpx.Response) -> None:
        self.scripts.setdefault(path, deque()).extend(answers)

    def sent_to(self, path: str) -> list[httpx.Request]:
        return [request for request in self.requests if request.url.path == f"/api/{path}"]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/api/")
        queue = self.scripts.get(path)
        if queue:
            answer = queue.popleft()
            return answer(request) if callable(answer) else answer
        if path == "Auth/loginKey":
            self.tokens_issued += 1
            return ok(token=f"token-{self.tokens_issued}")
        if path == "Auth/validate":
            self.tokens_issued += 1
            return ok(newToken=f"token-{self.tokens_issued}")
        self.unscripted.append(path)
        return httpx.Response(599, text=f"unscripted request to {path}")


class FakeTime:
    """A wall clock and a sleep that only move when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
        self.slept: list[float] = []

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def gateway() -> ScriptedGateway:
    return ScriptedGateway()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def config(gateway: ScriptedGateway) -> AsyncIterator[GatewayConfig]:
    """CONFIG, pointing at a loopback server that answers from the gateway's script."""

    async def answer(request: web.Request) -> web.Response:
        sent = httpx.Request(
            request.method,
            str(request.url),
            headers=list(request.headers.items()),
            content=await request.read(),
        )
        reply = gateway.handle(sent)
        reply.read()
        headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-length"}
        return web.Response(status=reply.status_code, body=reply.content, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield dataclasses.replace(CONFIG, api_url=f"http://{host}:{port}")
    finally:
        await runner.cleanup()
    # should only have sent what the test scripted (or a login)
    assert gateway.unscripted == []


@pytest.fixture
async def client(config: GatewayConfig, fake_time: FakeTime) -> Any:
    async with ProjectXClient(
        config,
        rate_limiter=SlidingWindowRateLimiter(),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    ) as client:
        yield client


async def test_it_logs_in_once_and_sends_the_bearer_token(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    gateway.script("Order/searchOpen", ok(orders=[ORDER]), ok(orders=[]))

    first = await client.search_open_orders(account_id=1001)
    await client.search_open_orders(account_id=1001)

    # should log in with the exact login body, once
    [login] = gateway.sent_to("Auth/loginKey")
    assert loads(login.content) == {"userName": "trader", "apiKey": "api-key-1"}
    assert "Authorization" not in login.headers
    # should authorise each call with the session token
    for request in gateway.sent_to("Order/searchOpen"):
        assert request.headers["Authorization"] == "Bearer token-1"
        assert request.headers["Content-Type"] == "application/json"
        assert request.method == "POST"
    # should return typed models
    assert first[0].status is OrderStatus.OPEN
    assert first[0].limit_price == Decimal("21000.25")


async def test_it_sends_a_place_body_with_exact_fields_and_prices(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    gateway.script("Order/place", ok(orderId=9056))

    order_id = await client.place_order(
        account_id=1001,
        contract_id="CON.F.US.MNQ.Z26",
        type=OrderType.LIMIT,
        side=OrderSide.BID,
        size=2,
        limit_price=Decimal("21000.250000000"),
        custom_tag="bot-1-abc",
        stop_loss_bracket=Bracket(ticks=-20, type=OrderType.STOP),
        take_profit_bracket=Bracket(ticks=40, type=OrderType.LIMIT),
    )

    [request] = gateway.sent_to("Order/place")
    # should write the price as a JSON number with its digits, not a string or a float
    assert b'"limitPrice":21000.250000000' in request.content
    # should send exactly the documented field names, and nothing unset
    assert loads(request.content) == {
        "accountId": 1001,
        "contractId": "CON.F.US.MNQ.Z26",
        "type": 1,
        "side": 0,
        "size": 2,
        "limitPrice": Decimal("21000.25"),
        "customTag": "bot-1-abc",
        "stopLossBracket": {"ticks": -20, "type": 4},
        "takeProfitBracket": {"ticks": 40, "type": 1},
    }
    assert order_id == 9056


async def test_a_rejected_place_with_an_order_id_is_still_a_rejection(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    message = "Brackets cannot be used with Position Brackets."
    gateway.script("Order/place", rejected(2, message, orderId=9057))

    with pytest.raises(BrokerRejected) as caught:
        await client.place_order(
            account_id=1001,
            contract_id="CON.F.US.MNQ.Z26",
            type=OrderType.MARKET,
            side=OrderSide.BID,
            size=1,
        )

    # should be definitive, name the place-specific code, and keep the order id
    assert isinstance(caught.value, DefinitiveError)
    assert caught.value.error_code == 2
    assert caught.value.error_name == "ORDER_REJECTED"
    assert caught.value.order_id == 9057
    assert caught.value.broker_message == message


@pytest.mark.parametrize(
    ("path", "call", "code", "name"),
    [
        ("Order/modify", "modify", 2, "ORDER_NOT_FOUND"),
        ("Order/cancel", "cancel", 6, "ACCOUNT_REJECTED"),
        ("Position/closeContract", "close", 5, "ORDER_REJECTED"),
        ("Position/partialCloseContract", "partial_close", 5, "INVALID_CLOSE_SIZE"),
        ("Order/searchById", "get_order", 1, "ORDER_NOT_FOUND"),
        ("Contract/searchById", "get_contract", 1, "CONTRACT_NOT_FOUND"),
        ("Order/place", "place", 99, "UNRECOGNISED"),
    ],
)
async def test_it_names_error_codes_by_the_endpoints_own_enum(
    client: ProjectXClient, gateway: ScriptedGateway, path: str, call: str, code: int, name: str
) -> None:
    gateway.script(path, rejected(code))
    calls = {
        "modify": lambda: client.modify_order(account_id=1, order_id=2, size=3),
        "cancel": lambda: client.cancel_order(account_id=1, order_id=2),
        "close": lambda: client.close_position(account_id=1, contract_id="C"),
        "partial_close": lambda: client.partial_close_position(
            account_id=1, contract_id="C", size=1
        ),
        "get_order": lambda: client.get_order(account_id=1, order_id=2),
        "get_contract": lambda: client.get_contract("C"),
        "place": lambda: client.place_order(
            account_id=1, contract_id="C", type=OrderType.MARKET, side=OrderSide.ASK, size=1
        ),
    }

    with pytest.raises(BrokerRejected) as caught:
        await calls[call]()

    # should carry both the wire number and this endpoint's name for it
    assert (caught.value.error_code, caught.value.error_name) == (code, name)
    # should not retry a rejection
    assert len(gateway.sent_to(path)) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_5xx_on_a_mutation_is_ambiguous_and_never_retried(
    client: ProjectXClient, gateway: ScriptedGateway, status: int
) -> None:
    gateway.script("Order/cancel", httpx.Response(status, text="upstream trouble"))

    with pytest.raises(GatewayUnavailable) as caught:
        await client.cancel_order(account_id=1001, order_id=9056)

    # should say "may have happened", and send it once only
    assert isinstance(caught.value, AmbiguousError)
    assert caught.value.status_code == status
    assert len(gateway.sent_to("Order/cancel")) == 1


async def test_an_unparseable_answer_to_a_place_is_ambiguous(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    gateway.script(
        "Order/place",
        httpx.Response(200, text="<html>proxy error</html>"),
        ok(),  # success, but without the orderId
    )

    for _ in range(2):
        # should not claim to know the outcome
        with pytest.raises(MalformedResponse):
            await client.place_order(
                account_id=1, contract_id="C", type=OrderType.MARKET, side=OrderSide.BID, size=1
            )


async def test_reads_retry_5xx_with_backoff_then_succeed(
    client: ProjectXClient, gateway: ScriptedGateway, fake_time: FakeTime
) -> None:
    gateway.script(
        "Position/searchOpen",
        httpx.Response(503),
        httpx.Response(500),
        ok(positions=[]),
    )

    positions = await client.search_open_positions(account_id=1001)

    # should have tried three times, backing off in between
    assert positions == []
    assert len(gateway.sent_to("Position/searchOpen")) == 3
    assert len(fake_time.slept) == 2
    assert all(0 < delay <= CONFIG.retry_backoff_max for delay in fake_time.slept)


async def test_reads_give_up_after_the_bounded_attempts(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    gateway.script("Trade/search", *[httpx.Response(502) for _ in range(5)])

    # should surface the last failure
    with pytest.raises(GatewayUnavailable):
        await client.search_trades(account_id=1001, start=datetime(2026, 1, 5, tzinfo=UTC))
    # should stop at read_max_attempts
    assert len(gateway.sent_to("Trade/search")) == CONFIG.read_max_attempts


async def test_a_429_on_a_read_waits_the_retry_after_and_retries(
    client: ProjectXClient, gateway: ScriptedGateway, fake_time: FakeTime
) -> None:
    gateway.script(
        "Account/search",
        httpx.Response(429, headers={"Retry-After": "2"}),
        ok(accounts=[{"id": 1001, "name": "P", "balance": Decimal("1.5"), "canTrade": True}]),
    )

    accounts = await client.search_accounts()

    # should honour the broker's Retry-After
    assert fake_time.slept == [2.0]
    assert accounts[0].balance == Decimal("1.5")
    assert loads(gateway.sent_to("Account/search")[0].content) == {"onlyActiveAccounts": True}


async def test_a_429_with_a_long_retry_after_is_not_waited_out(
    client: ProjectXClient, gateway: ScriptedGateway, fake_time: FakeTime
) -> None:
    gateway.script("Account/search", httpx.Response(429, headers={"Retry-After": "600"}))

    # should give up at once rather than stall the caller for ten minutes
    with pytest.raises(RateLimited) as caught:
        await client.search_accounts()
    assert caught.value.retry_after == 600
    assert fake_time.slept == []


async def test_a_429_on_a_mutation_raises_rate_limited_without_retrying(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    gateway.script("Order/modify", httpx.Response(429))

    with pytest.raises(RateLimited) as caught:
        await client.modify_order(account_id=1, order_id=2, limit_price=Decimal("1.25"))

    # should be definitive (the broker refused it) and sent once
    assert isinstance(caught.value, DefinitiveError)
    assert caught.value.retry_after is None
    assert len(gateway.sent_to("Order/modify")) == 1
    # should leave unset fields out of the body
    assert loads(gateway.sent_to("Order/modify")[0].content) == {
        "accountId": 1,
        "orderId": 2,
        "limitPrice": Decimal("1.25"),
    }


async def test_other_4xx_are_definitive(client: ProjectXClient, gateway: ScriptedGateway) -> None:
    gateway.script("Order/place", httpx.Response(400, json={"title": "One or more errors"}))

    with pytest.raises(RequestRejected) as caught:
        await client.place_order(
            account_id=1, contract_id="C", type=OrderType.MARKET, side=OrderSide.BID, size=1
        )

    # should carry the status
    assert caught.value.status_code == 400
    assert isinstance(caught.value, DefinitiveError)


async def test_a_401_logs_in_again_and_resends_once(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    gateway.script("Order/cancel", httpx.Response(401), ok())

    await client.cancel_order(account_id=1001, order_id=9056)

    # should re-login and re-send with the new token (a 401 means nothing was executed)
    cancels = gateway.sent_to("Order/cancel")
    assert [request.headers["Authorization"] for request in cancels] == [
        "Bearer token-1",
        "Bearer token-2",
    ]
    assert len(gateway.sent_to("Auth/loginKey")) == 2


async def test_a_second_401_fails_with_an_authentication_error(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    gateway.script("Order/searchOpen", httpx.Response(401), httpx.Response(401))

    with pytest.raises(AuthenticationError) as caught:
        await client.search_open_orders(account_id=1001)

    # should try exactly once more after one fresh login, then stop
    assert caught.value.status_code == 401
    assert len(gateway.sent_to("Order/searchOpen")) == 2
    assert len(gateway.sent_to("Auth/loginKey")) == 2


async def test_a_refused_login_is_an_authentication_error_with_its_code(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    gateway.script("Auth/loginKey", rejected(3, "Invalid credentials", token=None))

    with pytest.raises(AuthenticationError) as caught:
        await client.search_open_orders(account_id=1001)

    # should name the LoginErrorCode and send nothing further
    assert (caught.value.error_code, caught.value.error_name) == (3, "INVALID_CREDENTIALS")
    assert gateway.sent_to("Order/searchOpen") == []


async def test_an_old_token_is_refreshed_with_validate_before_use(
    client: ProjectXClient, gateway: ScriptedGateway, fake_time: FakeTime
) -> None:
    gateway.script("Order/searchOpen", ok(orders=[]), ok(orders=[]), ok(orders=[]))
    await client.search_open_orders(account_id=1001)

    fake_time.now += timedelta(hours=22)
    await client.search_open_orders(account_id=1001)
    # should not refresh a token younger than the margin
    assert gateway.sent_to("Auth/validate") == []

    fake_time.now += timedelta(hours=1, minutes=1)
    await client.search_open_orders(account_id=1001)
    # should validate with the old token and use the new one
    [validate] = gateway.sent_to("Auth/validate")
    assert validate.headers["Authorization"] == "Bearer token-1"
    assert gateway.sent_to("Order/searchOpen")[-1].headers["Authorization"] == "Bearer token-2"
    assert client.session_token is not None
    assert client.session_token.issued_at == fake_time.now


async def test_a_refused_validate_falls_back_to_a_fresh_login(
    gateway: ScriptedGateway, config: GatewayConfig, fake_time: FakeTime
) -> None:
    stored: list[SessionToken] = []
    old = SessionToken("old-token", issued_at=fake_time.now - timedelta(hours=23, minutes=30))
    gateway.script("Auth/validate", rejected(3, "expired"))
    gateway.script("Order/searchOpen", ok(orders=[]))

    async with ProjectXClient(
        config,
        rate_limiter=SlidingWindowRateLimiter(),
        session_token=old,
        on_session_token=stored.append,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    ) as client:
        await client.search_open_orders(account_id=1001)

    # should log in again and hand the new token to whoever persists it
    assert len(gateway.sent_to("Auth/loginKey")) == 1
    assert [token.value for token in stored] == ["token-1"]
    assert gateway.sent_to("Order/searchOpen")[0].headers["Authorization"] == "Bearer token-1"


async def test_every_read_endpoint_speaks_the_documented_shape(
    client: ProjectXClient, gateway: ScriptedGateway
) -> None:
    start = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
    gateway.script("Order/search", ok(orders=[ORDER]))
    gateway.script("Order/searchById", ok(order=ORDER))
    gateway.script(
        "Contract/searchById",
        ok(
            contract={
                "id": "CON.F.US.MNQ.Z26",
                "name": "MNQZ6",
                "tickSize": Decimal("0.25"),
                "tickValue": Decimal("0.5"),
            }
        ),
    )
    gateway.script("History/retrieveBars", ok(bars=[]))

    orders = await client.search_orders(account_id=1001, start=start)
    order = await client.get_order(account_id=1001, order_id=9056)
    contract = await client.get_contract("CON.F.US.MNQ.Z26")
    bars = await client.retrieve_bars(
        contract_id="CON.F.US.MNQ.Z26",
        start=start,
        end=start + timedelta(hours=1),
        unit=2,  # type: ignore[arg-type]
        unit_number=1,
        limit=60,
    )

    # should send timestamps as ISO-8601 with offset and leave a missing end out
    assert loads(gateway.sent_to("Order/search")[0].content) == {
        "accountId": 1001,
        "startTimestamp": "2026-01-05T14:00:00+00:00",
    }
    assert loads(gateway.sent_to("Order/searchById")[0].content) == {
        "accountId": 1001,
        "orderId": 9056,
    }
    assert loads(gateway.sent_to("History/retrieveBars")[0].content)["unit"] == 2
    assert orders == [order]
    assert contract.tick_size == Decimal("0.25")
    assert bars == []


async def test_a_mutation_over_the_local_limit_fails_fast_and_is_not_sent(
    gateway: ScriptedGateway, config: GatewayConfig, fake_time: FakeTime
) -> None:
    limiter = SlidingWindowRateLimiter(general=RateLimit(max_requests=2, window_seconds=60))
    gateway.script("Order/cancel", ok())
    async with ProjectXClient(
        config,
        rate_limiter=limiter,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
    ) as client:
        await client.cancel_order(account_id=1, order_id=1)  # login + cancel fill the window

        with pytest.raises(RateLimitExceeded) as caught:
            await client.cancel_order(account_id=1, order_id=2)

    # should be a not-sent error that says when to try again, without queueing
    assert isinstance(caught.value, RequestNotSent)
    assert 0 < caught.value.retry_after <= 60
    assert len(gateway.sent_to("Order/cancel")) == 1
    assert fake_time.slept == []
