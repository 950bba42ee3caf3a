"""The simulator's REST API over real loopback HTTP: envelopes, auth, validation, error codes."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import pytest

from projectx.enums import (
    ClosePositionErrorCode,
    LoginErrorCode,
    OrderStatus,
    OrderType,
    PartialClosePositionErrorCode,
    PlaceOrderErrorCode,
    PositionType,
    SearchContractByIdErrorCode,
    SearchOrderByIdErrorCode,
    SearchOrderErrorCode,
    SearchPositionErrorCode,
    SearchTradeErrorCode,
)
from projectx.simulator import DEMO_ACCOUNT_ID, DEMO_CONTRACT_ID, GatewaySimulator
from projectx.simulator.testing import api_client, running_simulator
from projectx.simulator.wire import parse_json

pytestmark = pytest.mark.timeout(30)

EPOCH = "2020-01-01T00:00:00Z"


def ok(response: httpx.Response) -> dict[str, Any]:
    """The body of a successful envelope, parsed with Decimal prices."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = parse_json(response.content)
    assert body["success"] is True and body["errorCode"] == 0 and body["errorMessage"] is None
    return body


def failed(response: httpx.Response, code: int) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = parse_json(response.content)
    assert body["success"] is False and body["errorCode"] == code, body
    assert body["errorMessage"]
    return body


def market(size: int = 1, side: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "accountId": DEMO_ACCOUNT_ID,
        "contractId": DEMO_CONTRACT_ID,
        "type": OrderType.MARKET,
        "side": side,
        "size": size,
        **extra,
    }


# ---------------------------------------------------------------------------------- auth


def test_login_validate_logout(simulator: GatewaySimulator) -> None:
    with api_client(simulator) as anonymous:
        body = ok(
            anonymous.post("Auth/loginKey", json={"userName": "demo", "apiKey": "demo-api-key"})
        )
        assert list(body) == ["token", "success", "errorCode", "errorMessage"]
        token = body["token"]
        assert token.count(".") == 2  # JWT-shaped

    with api_client(simulator, token) as client:
        new_token = ok(client.post("Auth/validate"))["newToken"]
        assert new_token and new_token != token
        assert list(ok(client.post("Auth/logout"))) == ["success", "errorCode", "errorMessage"]
        assert client.post("Account/search", json={"onlyActiveAccounts": True}).status_code == 401
    with api_client(simulator, new_token) as client:  # validate's token outlives the logout
        ok(client.post("Account/search", json={"onlyActiveAccounts": True}))


def test_login_failures(simulator: GatewaySimulator) -> None:
    with api_client(simulator) as client:
        body = failed(
            client.post("Auth/loginKey", json={"userName": "demo", "apiKey": "wrong"}),
            LoginErrorCode.INVALID_CREDENTIALS,
        )
        assert body["token"] is None
        failed(
            client.post("Auth/loginKey", json={"userName": "nobody", "apiKey": "x"}),
            LoginErrorCode.INVALID_CREDENTIALS,
        )
        missing = client.post("Auth/loginKey", json={"userName": "demo"})
        assert missing.status_code == 400
        problem = missing.json()
        assert problem["status"] == 400 and "apiKey" in problem["errors"]
        assert client.post("Auth/loginKey", content=b"{not json", headers=_json).status_code == 400
        assert client.post("Auth/loginKey", json=["demo"]).status_code == 400
        assert client.post("Auth/loginKey", json={"userName": 5, "apiKey": "x"}).status_code == 400
        assert client.post("Auth/loginKey").status_code == 400


_json = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer not-a-token", "Basic ZGVtbzpkZW1v", "token"]
)
def test_missing_or_bad_token_is_401(
    simulator: GatewaySimulator, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.post(
        f"{simulator.api_url}/Account/search", json={"onlyActiveAccounts": True}, headers=headers
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.content == b""


def test_tokens_expire() -> None:
    with running_simulator(token_lifetime=0.3) as simulator:
        token = simulator.issue_token("demo")
        with api_client(simulator, token) as client:
            ok(client.post("Account/search", json={"onlyActiveAccounts": True}))
            time.sleep(0.4)
            expired = client.post("Account/search", json={"onlyActiveAccounts": True})
            assert expired.status_code == 401
            assert "expired" in expired.headers["WWW-Authenticate"]
            assert client.post("Auth/validate").status_code == 401


def test_expire_tokens_on_demand(simulator: GatewaySimulator, simulator_api: httpx.Client) -> None:
    assert simulator.expire_tokens() >= 1
    assert simulator_api.post("Auth/validate").status_code == 401


def test_routing_errors(simulator: GatewaySimulator, simulator_api: httpx.Client) -> None:
    assert simulator_api.post("Nope/nothing", json={}).status_code == 404
    assert simulator_api.get("Account/search").status_code == 405
    assert simulator_api.post("Status/ping").status_code == 405
    assert (
        simulator_api.post(
            "Account/search",
            content=b'{"onlyActiveAccounts":true}',
            headers={"Content-Type": "text/plain"},
        ).status_code
        == 415
    )
    # ASP.NET routing ignores case.
    ok(simulator_api.post("account/SEARCH", json={"onlyActiveAccounts": True}))


def test_ping_needs_no_token(simulator: GatewaySimulator) -> None:
    response = httpx.get(f"{simulator.api_url}/Status/ping")
    assert response.status_code == 200 and response.text == "pong"


# ------------------------------------------------------------------- accounts, contracts


def test_account_search(simulator: GatewaySimulator, simulator_api: httpx.Client) -> None:
    simulator.add_account(1009, "INACTIVE", active=False)
    simulator.add_account(1010, "SOMEONE-ELSES", owner="other")
    active = ok(simulator_api.post("Account/search", json={"onlyActiveAccounts": True}))
    assert [a["id"] for a in active["accounts"]] == [1001, 1002]
    assert active["accounts"][0] == {
        "id": 1001,
        "name": "PRAC-V2-1001",
        "balance": Decimal("50000.0"),
        "canTrade": True,
        "isVisible": True,
        "simulated": True,
    }
    everything = ok(simulator_api.post("Account/search", json={"onlyActiveAccounts": False}))
    assert [a["id"] for a in everything["accounts"]] == [1001, 1002, 1009]
    assert simulator_api.post("Account/search", json={}).status_code == 400
    assert (
        simulator_api.post("Account/search", json={"onlyActiveAccounts": "yes"}).status_code == 400
    )


def test_contracts(simulator_api: httpx.Client) -> None:
    found = ok(simulator_api.post("Contract/search", json={"searchText": "mnq", "live": False}))
    assert [c["id"] for c in found["contracts"]] == [DEMO_CONTRACT_ID]
    assert found["contracts"][0] == {
        "id": DEMO_CONTRACT_ID,
        "name": "MNQZ6",
        "description": "Micro E-mini Nasdaq-100: December 2026",
        "tickSize": Decimal("0.25"),
        "tickValue": Decimal("0.5"),
        "activeContract": True,
        "symbolId": "F.US.MNQ",
    }
    everything = ok(simulator_api.post("Contract/search", json={"searchText": "", "live": True}))
    assert len(everything["contracts"]) == 5
    available = ok(simulator_api.post("Contract/available", json={"live": False}))
    assert len(available["contracts"]) == 5
    by_id = ok(simulator_api.post("Contract/searchById", json={"contractId": DEMO_CONTRACT_ID}))
    assert by_id["contract"]["tickValue"] == Decimal("0.5")
    missing = failed(
        simulator_api.post("Contract/searchById", json={"contractId": "CON.F.US.XX.Z26"}),
        SearchContractByIdErrorCode.CONTRACT_NOT_FOUND,
    )
    assert missing["contract"] is None


def test_contract_search_returns_at_most_twenty(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    for month in range(25):
        simulator.add_contract(f"CON.F.US.ZZ.M{month:02d}", f"ZZ{month}", Decimal(1), Decimal(1))
    found = ok(simulator_api.post("Contract/search", json={"searchText": "ZZ", "live": False}))
    assert len(found["contracts"]) == 20


# ------------------------------------------------------------------------------- orders


def test_place_market_order_and_read_it_back(simulator_api: httpx.Client) -> None:
    placed = ok(simulator_api.post("Order/place", json=market(2, customTag="my-tag")))
    assert list(placed) == ["orderId", "success", "errorCode", "errorMessage"]
    order_id = placed["orderId"]
    assert order_id >= 9000

    order = ok(
        simulator_api.post(
            "Order/searchById", json={"accountId": DEMO_ACCOUNT_ID, "orderId": order_id}
        )
    )["order"]
    assert set(order) >= {
        "id", "accountId", "contractId", "symbolId", "creationTimestamp", "updateTimestamp",
        "status", "type", "side", "size", "limitPrice", "stopPrice", "trailPrice",
        "fillVolume", "filledPrice", "customTag",
    }  # fmt: skip
    assert order["status"] == OrderStatus.FILLED and order["fillVolume"] == 2
    assert order["filledPrice"] == Decimal("21000.0") and order["customTag"] == "my-tag"
    assert order["limitPrice"] is None and order["creationTimestamp"].endswith("+00:00")

    searched = ok(
        simulator_api.post(
            "Order/search", json={"accountId": DEMO_ACCOUNT_ID, "startTimestamp": EPOCH}
        )
    )
    assert [o["id"] for o in searched["orders"]] == [order_id]
    later = ok(
        simulator_api.post(
            "Order/search",
            json={
                "accountId": DEMO_ACCOUNT_ID,
                "startTimestamp": "2999-01-01T00:00:00+00:00",
                "endTimestamp": None,
            },
        )
    )
    assert later["orders"] == []
    assert (
        ok(simulator_api.post("Order/searchOpen", json={"accountId": DEMO_ACCOUNT_ID}))["orders"]
        == []
    )

    positions = ok(simulator_api.post("Position/searchOpen", json={"accountId": DEMO_ACCOUNT_ID}))
    (position,) = positions["positions"]
    assert position["type"] == PositionType.LONG and position["size"] == 2
    assert set(position) == {
        "id", "accountId", "contractId", "creationTimestamp", "type", "size", "averagePrice",
    }  # fmt: skip

    trades = ok(
        simulator_api.post(
            "Trade/search", json={"accountId": DEMO_ACCOUNT_ID, "startTimestamp": EPOCH}
        )
    )
    (trade,) = trades["trades"]
    assert trade["orderId"] == order_id and trade["profitAndLoss"] is None
    assert trade["fees"] == Decimal("0.74") and trade["voided"] is False
    assert set(trade) == {
        "id", "accountId", "contractId", "creationTimestamp", "price", "profitAndLoss",
        "fees", "side", "size", "voided", "orderId",
    }  # fmt: skip


def test_place_validation_and_business_errors(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    failed(simulator_api.post("Order/place", json=market(0)), PlaceOrderErrorCode.ORDER_REJECTED)
    limit_off_tick = market(type=OrderType.LIMIT, limitPrice=20999.1)
    body = failed(
        simulator_api.post("Order/place", json=limit_off_tick), PlaceOrderErrorCode.ORDER_REJECTED
    )
    assert body["orderId"] is None and "tick" in body["errorMessage"]
    no_limit = market(type=OrderType.LIMIT)
    failed(simulator_api.post("Order/place", json=no_limit), PlaceOrderErrorCode.ORDER_REJECTED)
    failed(
        simulator_api.post("Order/place", json=market(accountId=4)),
        PlaceOrderErrorCode.ACCOUNT_NOT_FOUND,
    )
    failed(
        simulator_api.post("Order/place", json=market(contractId="CON.F.US.NOPE.Z26")),
        PlaceOrderErrorCode.CONTRACT_NOT_FOUND,
    )
    # Wrong JSON types fail model binding: 400, not an envelope.
    assert simulator_api.post("Order/place", json=market(size="1")).status_code == 400
    assert simulator_api.post("Order/place", json=market(size=1.0)).status_code == 400
    assert simulator_api.post("Order/place", json=market(size=None)).status_code == 400
    assert simulator_api.post("Order/place", json=market(limitPrice="1")).status_code == 400
    assert simulator.broker.orders(DEMO_ACCOUNT_ID) == []


def test_duplicate_custom_tag_is_refused_and_creates_nothing(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    ok(simulator_api.post("Order/place", json=market(customTag="once")))
    body = failed(
        simulator_api.post("Order/place", json=market(customTag="once")),
        PlaceOrderErrorCode.ORDER_REJECTED,
    )
    assert "duplicate" in body["errorMessage"] and body["orderId"] is None
    assert len(simulator.broker.orders(DEMO_ACCOUNT_ID)) == 1


def test_prices_keep_their_decimals(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    body = (
        b'{"accountId":1001,"contractId":"CON.F.US.MNQ.Z26","type":1,"side":0,"size":1,'
        b'"limitPrice":20999.75}'
    )
    order_id = ok(simulator_api.post("Order/place", content=body, headers=_json))["orderId"]
    assert simulator.broker.order(order_id)["limitPrice"] == Decimal("20999.75")  # type: ignore[index]


def test_modify_cancel_and_search_open(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    order_id = ok(
        simulator_api.post("Order/place", json=market(type=OrderType.LIMIT, limitPrice=20900))
    )["orderId"]
    opened = ok(simulator_api.post("Order/searchOpen", json={"accountId": DEMO_ACCOUNT_ID}))
    assert [o["id"] for o in opened["orders"]] == [order_id]

    modify = {"accountId": DEMO_ACCOUNT_ID, "orderId": order_id}
    ok(simulator_api.post("Order/modify", json={**modify, "size": 3, "limitPrice": 20950.25}))
    order = simulator.broker.order(order_id)
    assert order is not None and order["size"] == 3 and order["limitPrice"] == Decimal("20950.25")
    failed(simulator_api.post("Order/modify", json={**modify, "limitPrice": 20950.1}), 3)
    failed(simulator_api.post("Order/modify", json={**modify, "orderId": 1}), 2)
    failed(simulator_api.post("Order/modify", json={**modify, "accountId": 7}), 1)

    ok(simulator_api.post("Order/cancel", json=modify))
    assert simulator.broker.order(order_id)["status"] == OrderStatus.CANCELLED  # type: ignore[index]
    failed(simulator_api.post("Order/cancel", json=modify), 3)
    failed(simulator_api.post("Order/cancel", json={**modify, "orderId": 5}), 2)
    failed(simulator_api.post("Order/cancel", json={**modify, "accountId": 5}), 1)
    assert (
        ok(simulator_api.post("Order/searchOpen", json={"accountId": DEMO_ACCOUNT_ID}))["orders"]
        == []
    )
    assert (
        simulator_api.post("Order/cancel", json={"accountId": DEMO_ACCOUNT_ID}).status_code == 400
    )


def test_search_endpoints_report_unknown_accounts(simulator_api: httpx.Client) -> None:
    unknown = {"accountId": 4242, "startTimestamp": EPOCH}
    assert (
        failed(
            simulator_api.post("Order/search", json=unknown), SearchOrderErrorCode.ACCOUNT_NOT_FOUND
        )["orders"]
        is None
    )
    failed(
        simulator_api.post("Order/searchOpen", json={"accountId": 4242}),
        SearchOrderErrorCode.ACCOUNT_NOT_FOUND,
    )
    failed(
        simulator_api.post("Order/searchById", json={"accountId": 4242, "orderId": 9001}),
        SearchOrderByIdErrorCode.ORDER_NOT_FOUND,
    )
    failed(
        simulator_api.post("Position/searchOpen", json={"accountId": 4242}),
        SearchPositionErrorCode.ACCOUNT_NOT_FOUND,
    )
    failed(simulator_api.post("Trade/search", json=unknown), SearchTradeErrorCode.ACCOUNT_NOT_FOUND)
    assert simulator_api.post("Trade/search", json={"accountId": 1001}).status_code == 400
    bad_time = {"accountId": 1001, "startTimestamp": "yesterday"}
    assert simulator_api.post("Trade/search", json=bad_time).status_code == 400


def test_close_and_partial_close_contract(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    target = {"accountId": DEMO_ACCOUNT_ID, "contractId": DEMO_CONTRACT_ID}
    failed(
        simulator_api.post("Position/closeContract", json=target),
        ClosePositionErrorCode.POSITION_NOT_FOUND,
    )
    ok(simulator_api.post("Order/place", json=market(3)))
    simulator.set_price(DEMO_CONTRACT_ID, Decimal("21004.00"))

    failed(
        simulator_api.post("Position/partialCloseContract", json={**target, "size": 9}),
        PartialClosePositionErrorCode.INVALID_CLOSE_SIZE,
    )
    partial = simulator_api.post("Position/partialCloseContract", json={**target, "size": 1})
    assert list(ok(partial)) == ["success", "errorCode", "errorMessage"]
    assert simulator.broker.positions(DEMO_ACCOUNT_ID)[0]["size"] == 2
    assert simulator.broker.trades(DEMO_ACCOUNT_ID)[-1]["profitAndLoss"] == Decimal("8.00")

    ok(simulator_api.post("Position/closeContract", json=target))
    assert simulator.broker.positions(DEMO_ACCOUNT_ID) == []
    failed(
        simulator_api.post(
            "Position/closeContract", json={**target, "contractId": "CON.F.US.X.Z26"}
        ),
        ClosePositionErrorCode.CONTRACT_NOT_FOUND,
    )
    failed(
        simulator_api.post(
            "Position/partialCloseContract", json={**target, "accountId": 3, "size": 1}
        ),
        PartialClosePositionErrorCode.ACCOUNT_NOT_FOUND,
    )
    assert simulator_api.post("Position/partialCloseContract", json=target).status_code == 400


def test_partial_fills_over_rest(simulator: GatewaySimulator, simulator_api: httpx.Client) -> None:
    simulator.queue_fill_plan([2, 1, 2])
    order_id = ok(simulator_api.post("Order/place", json=market(5)))["orderId"]
    by_id = {"accountId": DEMO_ACCOUNT_ID, "orderId": order_id}
    order = ok(simulator_api.post("Order/searchById", json=by_id))["order"]
    assert order["status"] == OrderStatus.OPEN and order["fillVolume"] == 2
    simulator.fill_order(order_id)
    simulator.set_price(DEMO_CONTRACT_ID, Decimal("21000.25"))
    order = ok(simulator_api.post("Order/searchById", json=by_id))["order"]
    assert order["status"] == OrderStatus.FILLED and order["fillVolume"] == 5
    trades = ok(
        simulator_api.post(
            "Trade/search", json={"accountId": DEMO_ACCOUNT_ID, "startTimestamp": EPOCH}
        )
    )
    assert [(t["size"], t["price"]) for t in trades["trades"]] == [
        (2, Decimal("21000.0")),
        (1, Decimal("21000.0")),
        (2, Decimal("21000.25")),
    ]
