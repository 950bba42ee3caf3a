"""The REST half of the simulated gateway: `/api/...` endpoints, envelopes and error codes.

Every endpoint is `POST` with a JSON body except `GET /api/Status/ping`. Paths match
case-insensitively (ASP.NET routing does). Responses are the envelope of reference section 2 with
the payload field first: `{"orderId": 9001, "success": true, "errorCode": 0, "errorMessage":
null}`; business failures are HTTP 200 with `success: false` and the endpoint's own errorCode.

Choices where the reference is silent or says "unconfirmed":

- 401 (empty body, `WWW-Authenticate: Bearer`) for a missing, unknown, revoked or expired token on
  every endpoint but login and ping, *including* `Auth/validate` with an expired token: ASP.NET's
  bearer authentication rejects it before the endpoint could answer `ExpiredToken`.
- 400 ProblemDetails for a body that fails model binding (see `validation`), 415 for a non-empty
  body that is not `application/json`, 405 for a wrong method, 404 for an unknown endpoint.
- loginKey with an unknown user or a wrong key: `success: false`, errorCode 3 InvalidCredentials
  (we do not tell which of the two was wrong).
- On a failure the payload field is `null` (`"orders": null`), not an empty list.
- An account the token's user cannot see is "not found" (errorCode 1 where the endpoint has it).
- `GET /api/Status/ping` needs no token. It answers by `Accept`, as ASP.NET's output formatters
  do for a string: the JSON string `"pong"` (`application/json`) when JSON is asked for by name
  (`application/json`, `text/json`, `*/*+json`) with a higher quality than `text/plain`;
  otherwise `text/plain` `pong` (also for `*/*` or no `Accept`, where ASP.NET's string formatter,
  first in line, wins).
- `live` on the contract endpoints is accepted and ignored: the simulator has one contract list.
  `Contract/search` matches `searchText` case-insensitively in id, name, description and symbol
  id and returns at most 20 active contracts.
- `Order/search` and `Trade/search` return what was created in [startTimestamp, endTimestamp]
  (no end: up to now), oldest first, unpaged, Suspended bracket children included.
- `Order/searchOpen` returns status 1 Open only [4.7]: not Suspended (8) bracket children, and
  not a Pending (6) market order (which only lingers while its contract has no price).
- `History/retrieveBars` [4.3]: see `market.tape` for the bar rules. Checks in this order:
  an unknown contract is errorCode 1 ContractNotFound; `unit` outside 1..7 (0 Unspecified
  included) 2 UnitInvalid; `unitNumber` < 1 3 UnitNumberInvalid; `limit` outside 1..20,000
  4 LimitInvalid; each with `bars: null`. A known contract without a price yet has no tape: an
  empty list. `live` is accepted and ignored. `endTime` <= `startTime` gives an empty list.
- `Order/v2/query` [4.7]: `filter.accountId` required; `statuses` (any of them; empty or null:
  every status), `contractId`, `createdAfter` (inclusive) and `createdBefore` (exclusive)
  narrow it. `pageOffset` is the number of orders skipped (not a page number), default 0;
  `pageSize` 1..1000, default 100; `sortBy` 0 CreatedAt (default) or 1 Id; `sortDirection` 0 Asc
  (default) or 1 Desc; ties on CreatedAt go by id. `totalCount` (all matches, before paging) is
  filled when `includeTotalCount` is true, else null. Values out of those ranges, or an unknown
  status, are 400 ProblemDetails (the reference's "validation"); an account the user cannot see
  is 200 with errorCode 1 AccountNotFound. Suspended bracket children are returned.
- Not served (404): `Auth/loginApp`.

Deliberate differences from the reference (the simulator is a paper broker, not the gateway):

- No rate limits unless a fault asks for them (`Faults.rate_limit`); no Retry-After.
- `Position/searchOpen` and `GatewayUserPosition` leave out `contractDisplayName`, and trades
  leave out `commissions` (both SPEC/LIVE extras; `fees` carries the whole cost).
- Bars beyond `history_days` back, and sub-minute bars over generated history, are sparse:
  history has four prints a minute.
- Accounts are never live: `Order/cancel`'s errorCode 6 for live or follower accounts never
  happens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from projectx.enums import (
    AggregateBarUnit,
    ClosePositionErrorCode,
    LoginErrorCode,
    OrderStatus,
    OrderType,
    PartialClosePositionErrorCode,
    RetrieveBarErrorCode,
    SearchContractByIdErrorCode,
    SearchOrderByIdErrorCode,
    SearchOrderErrorCode,
    SearchPositionErrorCode,
    SearchTradeErrorCode,
)
from projectx.simulator.auth import TokenState, TokenStore
from projectx.simulator.broker import (
    BracketLeg,
    Broker,
    CloseOutcome,
    PlaceOrderRequest,
)
from projectx.simulator.market import MAX_BARS, BarQuery, MarketData
from projectx.simulator.validation import BodyInvalid, Field, parse_body
from projectx.simulator.wire import dump_json

JSON_CONTENT_TYPE = "application/json"
MAX_ORDER_PAGE_SIZE = 1000
DEFAULT_ORDER_PAGE_SIZE = 100
SORT_BY_CREATED_AT, SORT_BY_ID = 0, 1
SORT_ASCENDING, SORT_DESCENDING = 0, 1


@dataclass(frozen=True)
class Caller:
    username: str
    token: str


Handler = Callable[["RestApi", Caller | None, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Endpoint:
    path: str
    handler: Handler
    fields: tuple[Field, ...] = ()
    needs_token: bool = True


def envelope(
    payload_name: str | None,
    payload: Any = None,
    error_code: int = 0,
    error_message: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if payload_name is not None:
        body[payload_name] = payload
    body.update(
        {"success": error_code == 0, "errorCode": int(error_code), "errorMessage": error_message}
    )
    return body


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=dump_json(body), status=status, content_type=JSON_CONTENT_TYPE, charset="utf-8"
    )


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def unauthorized(description: str | None = None) -> web.Response:
    challenge = "Bearer"
    if description:
        challenge = f'Bearer error="invalid_token", error_description="{description}"'
    return web.Response(status=401, headers={"WWW-Authenticate": challenge})


ACCOUNT_ID = Field("accountId", "int32")
ORDER_ID = Field("orderId", "int64")
CONTRACT_ID = Field("contractId", "str")


class RestApi:
    """Binds the broker and the token store to aiohttp; one instance per simulator."""

    def __init__(self, broker: Broker, tokens: TokenStore, market: MarketData) -> None:
        self.broker = broker
        self.tokens = tokens
        self.market = market
        self.endpoints: dict[str, Endpoint] = {
            endpoint.path.lower(): endpoint for endpoint in _ENDPOINTS
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["endpoint"].strip("/")
        if name.lower() == "status/ping":
            if request.method not in ("GET", "HEAD"):
                raise web.HTTPMethodNotAllowed(request.method, ["GET"])
            return ping_response(request)
        endpoint = self.endpoints.get(name.lower())
        if endpoint is None:
            raise web.HTTPNotFound()
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        caller: Caller | None = None
        if endpoint.needs_token:
            token = bearer_token(request)
            check = self.tokens.check(token)
            if not check.valid or token is None or check.username is None:
                expired = check.state is TokenState.EXPIRED
                return unauthorized("The token expired" if expired else None)
            caller = Caller(check.username, token)
        raw = await request.read()
        if raw.strip() and endpoint.fields and not _is_json_media_type(request.content_type):
            return web.Response(status=415, text="Unsupported Media Type")
        try:
            body = parse_body(raw, endpoint.fields)
            return json_response(await endpoint.handler(self, caller, body))
        except BodyInvalid as invalid:
            return web.Response(
                text=dump_json(invalid.problem),
                status=400,
                content_type="application/problem+json",
                charset="utf-8",
            )

    # ---------------------------------------------------------------- Auth

    async def login_key(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        if not self.broker.check_api_key(body["userName"], body["apiKey"]):
            return envelope(
                "token", None, LoginErrorCode.INVALID_CREDENTIALS, "Invalid credentials."
            )
        return envelope("token", self.tokens.issue(body["userName"]))

    async def validate(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        return envelope("newToken", self.tokens.issue(caller.username))

    async def logout(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        self.tokens.revoke(caller.token)
        return envelope(None)

    # ------------------------------------------------------ Accounts, contracts

    async def search_accounts(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        accounts = self.broker.accounts_for_user(
            caller.username, only_active=body["onlyActiveAccounts"]
        )
        return envelope("accounts", accounts)

    async def search_contracts(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        return envelope("contracts", self.broker.search_contracts(body["searchText"] or ""))

    async def search_contract_by_id(
        self, caller: Caller | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        contract = self.broker.contract(body["contractId"])
        if contract is None:
            return envelope(
                "contract",
                None,
                SearchContractByIdErrorCode.CONTRACT_NOT_FOUND,
                "Contract not found.",
            )
        return envelope("contract", contract)

    async def available_contracts(
        self, caller: Caller | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        return envelope("contracts", self.broker.available_contracts())

    # ---------------------------------------------------------------- Orders

    async def place_order(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        request = PlaceOrderRequest(
            account_id=body["accountId"],
            contract_id=body["contractId"],
            type=body["type"],
            side=body["side"],
            size=body["size"],
            limit_price=body["limitPrice"],
            stop_price=body["stopPrice"],
            trail_price=body["trailPrice"],
            custom_tag=body["customTag"],
            linked_order_id=body["linkedOrderId"],
            stop_loss_bracket=_bracket(body["stopLossBracket"]),
            take_profit_bracket=_bracket(body["takeProfitBracket"]),
        )
        result = self.broker.place_order(caller.username, request)
        return envelope("orderId", result.order_id, result.error_code, result.error_message)

    async def modify_order(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        code, message = self.broker.modify_order(
            caller.username,
            body["accountId"],
            body["orderId"],
            size=body["size"],
            limit_price=body["limitPrice"],
            stop_price=body["stopPrice"],
            trail_price=body["trailPrice"],
        )
        return envelope(None, None, code, message)

    async def cancel_order(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        code, message = self.broker.cancel_order(
            caller.username, body["accountId"], body["orderId"]
        )
        return envelope(None, None, code, message)

    async def search_orders(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        if not self.broker.user_sees_account(caller.username, body["accountId"]):
            return _account_not_found("orders", SearchOrderErrorCode.ACCOUNT_NOT_FOUND)
        orders = self.broker.search_orders(
            body["accountId"], body["startTimestamp"], body["endTimestamp"]
        )
        return envelope("orders", orders)

    async def search_open_orders(
        self, caller: Caller | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        assert caller is not None
        if not self.broker.user_sees_account(caller.username, body["accountId"]):
            return _account_not_found("orders", SearchOrderErrorCode.ACCOUNT_NOT_FOUND)
        return envelope("orders", self.broker.open_orders(body["accountId"]))

    async def search_order_by_id(
        self, caller: Caller | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        assert caller is not None
        order = None
        if self.broker.user_sees_account(caller.username, body["accountId"]):
            order = self.broker.find_order(body["accountId"], body["orderId"])
        if order is None:
            return envelope(
                "order", None, SearchOrderByIdErrorCode.ORDER_NOT_FOUND, "Order not found."
            )
        return envelope("order", order)

    async def query_orders(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        criteria = body["filter"]
        page_size = _default(body["pageSize"], DEFAULT_ORDER_PAGE_SIZE)
        page_offset = _default(body["pageOffset"], 0)
        sort_by = _default(body["sortBy"], SORT_BY_CREATED_AT)
        sort_direction = _default(body["sortDirection"], SORT_ASCENDING)
        statuses: list[int] = criteria["statuses"] or []
        problems: dict[str, list[str]] = {}
        if not 1 <= page_size <= MAX_ORDER_PAGE_SIZE:
            problems["pageSize"] = [f"pageSize must be between 1 and {MAX_ORDER_PAGE_SIZE}."]
        if page_offset < 0:
            problems["pageOffset"] = ["pageOffset must not be negative."]
        if sort_by not in (SORT_BY_CREATED_AT, SORT_BY_ID):
            problems["sortBy"] = ["sortBy must be 0 (CreatedAt) or 1 (Id)."]
        if sort_direction not in (SORT_ASCENDING, SORT_DESCENDING):
            problems["sortDirection"] = ["sortDirection must be 0 (Asc) or 1 (Desc)."]
        known_statuses = {int(status) for status in OrderStatus}
        if any(status not in known_statuses for status in statuses):
            problems["filter.statuses"] = ["Every status must be an OrderStatus value."]
        if problems:
            raise BodyInvalid(problems)
        account_id = criteria["accountId"]
        if not self.broker.user_sees_account(caller.username, account_id):
            body_out = _account_not_found("orders", SearchOrderErrorCode.ACCOUNT_NOT_FOUND)
            return {"orders": None, "totalCount": None, **_status_fields(body_out)}
        orders, total = self.broker.query_orders(
            account_id,
            statuses=frozenset(OrderStatus(status) for status in statuses),
            contract_id=criteria["contractId"],
            created_after=criteria["createdAfter"],
            created_before=criteria["createdBefore"],
            by_id=sort_by == SORT_BY_ID,
            descending=sort_direction == SORT_DESCENDING,
            offset=page_offset,
            limit=page_size,
        )
        total_count = total if body["includeTotalCount"] else None
        return {"orders": orders, "totalCount": total_count, **_status_fields(envelope(None))}

    # ---------------------------------------------------------------- Bars

    async def retrieve_bars(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        codes = RetrieveBarErrorCode
        if self.broker.contract(body["contractId"]) is None:
            return envelope("bars", None, codes.CONTRACT_NOT_FOUND, "Contract not found.")
        try:
            unit = AggregateBarUnit(body["unit"])
        except ValueError:
            unit = AggregateBarUnit.UNSPECIFIED
        if unit == AggregateBarUnit.UNSPECIFIED:
            return envelope("bars", None, codes.UNIT_INVALID, "Invalid unit.")
        if body["unitNumber"] < 1:
            return envelope("bars", None, codes.UNIT_NUMBER_INVALID, "Invalid unit number.")
        if not 1 <= body["limit"] <= MAX_BARS:
            return envelope(
                "bars", None, codes.LIMIT_INVALID, f"Limit must be between 1 and {MAX_BARS}."
            )
        query = BarQuery(
            unit=unit,
            unit_number=body["unitNumber"],
            start=body["startTime"],
            end=body["endTime"],
            limit=body["limit"],
            include_partial=body["includePartialBar"],
        )
        bars = self.market.bars(body["contractId"], query)
        return envelope("bars", bars or [])

    # ------------------------------------------------------ Positions, trades

    async def search_open_positions(
        self, caller: Caller | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        assert caller is not None
        if not self.broker.user_sees_account(caller.username, body["accountId"]):
            return _account_not_found("positions", SearchPositionErrorCode.ACCOUNT_NOT_FOUND)
        return envelope("positions", self.broker.positions(body["accountId"]))

    async def close_position(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        outcome = self.broker.close_position(caller.username, body["accountId"], body["contractId"])
        return _close_envelope(outcome, partial=False)

    async def partial_close_position(
        self, caller: Caller | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        assert caller is not None
        outcome = self.broker.close_position(
            caller.username, body["accountId"], body["contractId"], size=body["size"]
        )
        return _close_envelope(outcome, partial=True)

    async def search_trades(self, caller: Caller | None, body: dict[str, Any]) -> dict[str, Any]:
        assert caller is not None
        if not self.broker.user_sees_account(caller.username, body["accountId"]):
            return _account_not_found("trades", SearchTradeErrorCode.ACCOUNT_NOT_FOUND)
        trades = self.broker.search_trades(
            body["accountId"], body["startTimestamp"], body["endTimestamp"]
        )
        return envelope("trades", trades)


def ping_response(request: web.Request) -> web.Response:
    """`pong` as a JSON string or as plain text, by the request's `Accept` (see the docstring)."""
    if _prefers_json(request.headers.get("Accept", "")):
        return json_response("pong")
    return web.Response(text="pong", content_type="text/plain")


def _prefers_json(accept: str) -> bool:
    best_json = best_text = 0.0
    for part in accept.split(","):
        media_type, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media_type = media_type.lower()
        if _is_json_media_type(media_type):
            best_json = max(best_json, quality)
        elif media_type in ("text/plain", "text/*"):
            best_text = max(best_text, quality)
    return best_json > 0 and best_json > best_text


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def _status_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {name: body[name] for name in ("success", "errorCode", "errorMessage")}


def _is_json_media_type(media_type: str) -> bool:
    """What ASP.NET's JSON input formatter reads: application/json, text/json, */*+json."""
    return media_type in (JSON_CONTENT_TYPE, "text/json") or media_type.endswith("+json")


def _bracket(value: dict[str, int] | None) -> BracketLeg | None:
    if value is None:
        return None
    try:
        order_type = OrderType(value["type"])
    except ValueError:
        order_type = OrderType.UNKNOWN
    return BracketLeg(ticks=value["ticks"], type=order_type)


def _account_not_found(payload_name: str, code: int) -> dict[str, Any]:
    return envelope(payload_name, None, code, "Account not found.")


_CLOSE_MESSAGES: dict[str, str] = {
    "account_not_found": "Account not found.",
    "position_not_found": "Position not found.",
    "contract_not_found": "Contract not found.",
    "invalid_size": "Invalid close size.",
}


def _close_envelope(outcome: CloseOutcome, *, partial: bool) -> dict[str, Any]:
    if outcome == "ok":
        return envelope(None)
    codes: dict[str, int]
    if partial:
        codes = {
            "account_not_found": PartialClosePositionErrorCode.ACCOUNT_NOT_FOUND,
            "position_not_found": PartialClosePositionErrorCode.POSITION_NOT_FOUND,
            "contract_not_found": PartialClosePositionErrorCode.CONTRACT_NOT_FOUND,
            "invalid_size": PartialClosePositionErrorCode.INVALID_CLOSE_SIZE,
        }
    else:
        codes = {
            "account_not_found": ClosePositionErrorCode.ACCOUNT_NOT_FOUND,
            "position_not_found": ClosePositionErrorCode.POSITION_NOT_FOUND,
            "contract_not_found": ClosePositionErrorCode.CONTRACT_NOT_FOUND,
        }
    return envelope(None, None, codes[outcome], _CLOSE_MESSAGES[outcome])


_DECIMAL_OPTIONAL = ("limitPrice", "stopPrice", "trailPrice")

_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "Auth/loginKey",
        RestApi.login_key,
        (Field("userName", "str"), Field("apiKey", "str")),
        needs_token=False,
    ),
    Endpoint("Auth/validate", RestApi.validate),
    Endpoint("Auth/logout", RestApi.logout),
    Endpoint("Account/search", RestApi.search_accounts, (Field("onlyActiveAccounts", "bool"),)),
    Endpoint(
        "Contract/search",
        RestApi.search_contracts,
        (Field("searchText", "str", nullable=True), Field("live", "bool")),
    ),
    Endpoint("Contract/searchById", RestApi.search_contract_by_id, (CONTRACT_ID,)),
    Endpoint("Contract/available", RestApi.available_contracts, (Field("live", "bool"),)),
    Endpoint(
        "Order/place",
        RestApi.place_order,
        (
            ACCOUNT_ID,
            CONTRACT_ID,
            Field("type", "int32"),
            Field("side", "int32"),
            Field("size", "int32"),
            *(Field(name, "decimal", required=False, nullable=True) for name in _DECIMAL_OPTIONAL),
            Field("customTag", "str", required=False, nullable=True),
            Field("linkedOrderId", "int64", required=False, nullable=True),
            Field("stopLossBracket", "bracket", required=False, nullable=True),
            Field("takeProfitBracket", "bracket", required=False, nullable=True),
        ),
    ),
    Endpoint(
        "Order/modify",
        RestApi.modify_order,
        (
            ACCOUNT_ID,
            ORDER_ID,
            Field("size", "int32", required=False, nullable=True),
            *(Field(name, "decimal", required=False, nullable=True) for name in _DECIMAL_OPTIONAL),
        ),
    ),
    Endpoint("Order/cancel", RestApi.cancel_order, (ACCOUNT_ID, ORDER_ID)),
    Endpoint(
        "Order/search",
        RestApi.search_orders,
        (
            ACCOUNT_ID,
            Field("startTimestamp", "datetime"),
            Field("endTimestamp", "datetime", required=False, nullable=True),
        ),
    ),
    Endpoint("Order/searchOpen", RestApi.search_open_orders, (ACCOUNT_ID,)),
    Endpoint(
        "Order/v2/query",
        RestApi.query_orders,
        (
            Field(
                "filter",
                "object",
                children=(
                    ACCOUNT_ID,
                    Field("statuses", "int32_list", required=False, nullable=True),
                    Field("contractId", "str", required=False, nullable=True),
                    Field("createdAfter", "datetime", required=False, nullable=True),
                    Field("createdBefore", "datetime", required=False, nullable=True),
                ),
            ),
            *(
                Field(name, "int32", required=False, nullable=True)
                for name in ("pageSize", "pageOffset", "sortBy", "sortDirection")
            ),
            Field("includeTotalCount", "bool", required=False, nullable=True),
        ),
    ),
    Endpoint(
        "History/retrieveBars",
        RestApi.retrieve_bars,
        (
            CONTRACT_ID,
            Field("live", "bool"),
            Field("startTime", "datetime"),
            Field("endTime", "datetime"),
            Field("unit", "int32"),
            Field("unitNumber", "int32"),
            Field("limit", "int32"),
            Field("includePartialBar", "bool"),
        ),
    ),
    Endpoint("Order/searchById", RestApi.search_order_by_id, (ACCOUNT_ID, ORDER_ID)),
    Endpoint("Position/searchOpen", RestApi.search_open_positions, (ACCOUNT_ID,)),
    Endpoint("Position/closeContract", RestApi.close_position, (ACCOUNT_ID, CONTRACT_ID)),
    Endpoint(
        "Position/partialCloseContract",
        RestApi.partial_close_position,
        (ACCOUNT_ID, CONTRACT_ID, Field("size", "int32")),
    ),
    Endpoint(
        "Trade/search",
        RestApi.search_trades,
        (
            ACCOUNT_ID,
            Field("startTimestamp", "datetime"),
            Field("endTimestamp", "datetime", required=False, nullable=True),
        ),
    ),
)

REST_ENDPOINT_PATHS: tuple[str, ...] = (
    *(f"/api/{endpoint.path}" for endpoint in _ENDPOINTS),
    "/api/Status/ping",
)
