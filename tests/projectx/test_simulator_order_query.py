"""`POST /api/Order/v2/query` [4.7] (filter, paging, sort, totalCount, Suspended children),
what `Order/searchOpen` returns, and `GET /api/Status/ping` by `Accept`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from projectx.enums import OrderStatus, OrderType, SearchOrderErrorCode
from projectx.simulator import DEMO_ACCOUNT_ID, DEMO_CONTRACT_ID, GatewaySimulator
from projectx.simulator.wire import format_timestamp, parse_json

pytestmark = pytest.mark.timeout(30)

MES = "CON.F.US.MES.Z26"


def place(client: httpx.Client, **fields: Any) -> int:
    body = {"accountId": DEMO_ACCOUNT_ID, "contractId": DEMO_CONTRACT_ID, "side": 0, "size": 1}
    response = client.post("Order/place", json={**body, **fields}).json()
    assert response["success"], response
    return int(response["orderId"])


def query(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    criteria = {"accountId": DEMO_ACCOUNT_ID, **fields.pop("filter", {})}
    response = client.post("Order/v2/query", json={"filter": criteria, **fields})
    assert response.status_code == 200, response.text
    return dict(parse_json(response.content))


@pytest.fixture
def orders(simulator_api: httpx.Client) -> dict[str, Any]:
    """A filled market order, two resting limits (one on MES) and a bracketed limit whose
    stop-loss and take-profit children wait Suspended."""
    filled = place(simulator_api, type=OrderType.MARKET)
    resting = place(simulator_api, type=OrderType.LIMIT, limitPrice=20900)
    on_mes = place(simulator_api, type=OrderType.LIMIT, limitPrice=5900, contractId=MES)
    entry = place(
        simulator_api,
        type=OrderType.LIMIT,
        limitPrice=20950,
        stopLossBracket={"ticks": -8, "type": OrderType.STOP},
        takeProfitBracket={"ticks": 8, "type": OrderType.LIMIT},
    )
    return {"filled": filled, "resting": resting, "mes": on_mes, "entry": entry}


def test_pages_cover_every_order_once_with_the_total_count(
    simulator_api: httpx.Client, orders: dict[str, Any]
) -> None:
    pages = [
        query(simulator_api, pageSize=2, pageOffset=offset, includeTotalCount=True)
        for offset in (0, 2, 4, 6)
    ]
    ids = [order["id"] for page in pages for order in page["orders"]]
    # Should: six orders in all (two of them bracket children), oldest first by default.
    assert all(page["success"] and page["totalCount"] == 6 for page in pages)
    assert [len(page["orders"]) for page in pages] == [2, 2, 2, 0]
    assert ids == sorted(ids) and len(set(ids)) == 6
    # Should: without includeTotalCount, totalCount is null.
    assert query(simulator_api)["totalCount"] is None


def test_sorting_by_id_or_creation_either_way(
    simulator_api: httpx.Client, orders: dict[str, Any]
) -> None:
    by_id_desc = [o["id"] for o in query(simulator_api, sortBy=1, sortDirection=1)["orders"]]
    created_desc = query(simulator_api, sortBy=0, sortDirection=1)["orders"]
    # Should: descending by id, and by creationTimestamp, agree (ids grow with time).
    assert by_id_desc == sorted(by_id_desc, reverse=True)
    stamps = [o["creationTimestamp"] for o in created_desc]
    assert stamps == sorted(stamps, reverse=True)


def test_filters_narrow_the_result_and_suspended_children_are_found(
    simulator_api: httpx.Client, orders: dict[str, Any]
) -> None:
    suspended = query(
        simulator_api, filter={"statuses": [OrderStatus.SUSPENDED]}, includeTotalCount=True
    )
    # Should: unlike searchOpen, the query returns the bracket's Suspended children.
    assert suspended["totalCount"] == 2
    assert {o["parentOrderId"] for o in suspended["orders"]} == {orders["entry"]}
    on_mes = query(simulator_api, filter={"contractId": MES})["orders"]
    assert [o["id"] for o in on_mes] == [orders["mes"]]
    filled = query(simulator_api, filter={"statuses": [OrderStatus.FILLED]})["orders"]
    assert [o["id"] for o in filled] == [orders["filled"]]
    future = format_timestamp(datetime.now(UTC) + timedelta(hours=1))
    past = format_timestamp(datetime.now(UTC) - timedelta(hours=1))
    # Should: createdAfter/createdBefore bound the creation time.
    assert query(simulator_api, filter={"createdAfter": future})["orders"] == []
    assert query(simulator_api, filter={"createdBefore": past})["orders"] == []
    assert len(query(simulator_api, filter={"createdAfter": past})["orders"]) == 6


def test_search_open_returns_open_orders_only(
    simulator_api: httpx.Client, orders: dict[str, Any]
) -> None:
    found = simulator_api.post("Order/searchOpen", json={"accountId": DEMO_ACCOUNT_ID}).json()
    # Should: status 1 only: no Filled order, no Suspended bracket children [4.7].
    assert {o["id"] for o in found["orders"]} == {orders["resting"], orders["mes"], orders["entry"]}
    assert {o["status"] for o in found["orders"]} == {OrderStatus.OPEN}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 1001}, "pageSize"),
        ({"pageOffset": -1}, "pageOffset"),
        ({"sortBy": 2}, "sortBy"),
        ({"sortDirection": 5}, "sortDirection"),
        ({"filter": {"statuses": [42]}}, "filter.statuses"),
    ],
)
def test_invalid_queries_are_400_problem_details(
    simulator_api: httpx.Client, fields: dict[str, Any], problem: str
) -> None:
    criteria = {"accountId": DEMO_ACCOUNT_ID, **fields.pop("filter", {})}
    response = simulator_api.post("Order/v2/query", json={"filter": criteria, **fields})
    # Should: validation failures are HTTP 400 ProblemDetails naming the field.
    assert response.status_code == 400
    assert problem in response.json()["errors"]


def test_a_missing_account_id_and_an_unknown_account(simulator_api: httpx.Client) -> None:
    missing = simulator_api.post("Order/v2/query", json={"filter": {}})
    assert missing.status_code == 400 and "filter.accountId" in missing.json()["errors"]
    unknown = simulator_api.post("Order/v2/query", json={"filter": {"accountId": 999}}).json()
    # Should: an account the user cannot see is a business failure, HTTP 200.
    assert unknown["success"] is False
    assert unknown["errorCode"] == SearchOrderErrorCode.ACCOUNT_NOT_FOUND
    assert unknown["orders"] is None


@pytest.mark.parametrize(
    ("accept", "json_answer"),
    [
        ("application/json", True),
        ("text/json", True),
        ("text/plain", False),
        ("*/*", False),
        (None, False),
        ("text/plain;q=0.5, application/json", True),
        ("application/json;q=0.1, text/plain", False),
    ],
)
def test_ping_answers_by_accept(
    simulator: GatewaySimulator, accept: str | None, json_answer: bool
) -> None:
    headers = {} if accept is None else {"Accept": accept}
    with httpx.Client() as client:
        if accept is None:
            client.headers.pop("Accept")
        response = client.get(f"{simulator.api_url}/Status/ping", headers=headers)
    assert response.status_code == 200
    if json_answer:
        # Should: a JSON string when JSON is asked for.
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == "pong"
    else:
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == "pong"
