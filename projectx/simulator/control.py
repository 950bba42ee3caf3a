"""Test controls over HTTP under `/_sim/` (JSON in, JSON out; no token; faults never apply).

- `GET /_sim/state`: accounts, contracts, prices, orders, positions, trades, faults, hub.
- `POST /_sim/reset`: see `GatewaySimulator.reset`.
- `GET /_sim/timings?path=order/place`: the broker's handling time of each REST request
  (`RequestTiming`: path, receivedAt, seconds, status; orderId and customTag for a place);
  `DELETE /_sim/timings` forgets them.
- `POST /_sim/price` `{"contractId", "price"}`: a trade at that price (tape, hub, fills).
- `GET /_sim/market`: the walk (on/off, interval, seed) and each contract's price and settings.
- `POST /_sim/market/walk` `{"running": true|false, "interval"?}`: the loop-driven walk.
- `POST /_sim/market/step` `{"contractId"?, "steps"?}`: advance the walk now; answers the prices.
- `POST /_sim/market/jump` `{"contractId", "ticks"}`: a gap of `ticks` (signed); answers the price.
- `POST /_sim/market/settings` `{"contractId"?, "volatility"?, "jumpProbability"?,
  "jumpTicks"?, "maxTradeSize"?, "paused"?}`: without `contractId`, every contract.
- `POST /_sim/market/quotes-per-second` `{"value"}` (null: no coalescing).
- `POST /_sim/fill` `{"orderId", "size"?, "price"?}`: answers the trade.
- `POST /_sim/fill-plan` `{"plan": [2, 1, 2], "orderId"}` for a working order, or
  `{"plan", "accountId"?}` for the next order placed.
- `POST /_sim/faults` `{"fault": "<Faults method>", ...its keyword arguments}`;
  `DELETE /_sim/faults` clears every fault; `GET /_sim/faults` lists them.
- `POST /_sim/users` `{"username", "apiKey"}`.
- `POST /_sim/accounts` `{"id", "name", "balance"?, "canTrade"?, "isVisible"?, "simulated"?,
  "active"?, "owner"?, "autoOcoBrackets"?}`.
- `POST /_sim/contracts` `{"id", "name", "tickSize", "tickValue", "description"?, "symbolId"?,
  "active"?, "feePerContract"?}`.
- `POST /_sim/tokens` `{"username"}`: answers `{"token"}` without a login round trip.
- `POST /_sim/tokens/expire` `{"token"?}`: omit the token to expire every token.
- `POST /_sim/token-lifetime` `{"seconds"}`.

Fault names for `POST /_sim/faults` are the public `Faults` methods, e.g.
`{"fault": "fail_requests", "status": 503, "path": "Order/place", "count": 2}` or
`{"fault": "lose_response"}`. Errors answer 400 `{"error": "..."}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from projectx.simulator.broker import BrokerError
from projectx.simulator.wire import dump_json, parse_json

if TYPE_CHECKING:
    from projectx.simulator.server import GatewaySimulator

ControlHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FAULT_METHODS = frozenset(
    {
        "fail_requests",
        "rate_limit",
        "lose_response",
        "delay_response",
        "drop_requests",
        "refuse_connections",
        "accept_connections",
        "reject_orders",
        "void_trade",
        "suppress_oco",
        "drop_hub_connections",
        "close_hub_connections",
        "stall_hub",
        "resume_hub",
        "drop_events",
        "duplicate_events",
        "delay_events",
        "reorder_events",
        "clear",
    }
)


class ControlError(Exception):
    pass


_WALK_SETTINGS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("volatility", "volatility", float),
    ("jumpProbability", "jump_probability", float),
    ("jumpTicks", "jump_ticks", int),
    ("maxTradeSize", "max_trade_size", int),
    ("paused", "paused", bool),
)


def _ok(body: Any = None) -> web.Response:
    return web.Response(
        text=dump_json({"ok": True} if body is None else body),
        content_type="application/json",
    )


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = parse_json(raw)
    except ValueError as error:
        raise ControlError(f"invalid JSON: {error}") from None
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    return body


def _need(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise ControlError(f"{name!r} is required")
    return body[name]


def add_control_routes(app: web.Application, simulator: GatewaySimulator) -> None:
    def guarded(handler: ControlHandler) -> ControlHandler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except (ControlError, BrokerError, ValueError, TypeError, KeyError) as error:
                return web.Response(
                    status=400,
                    text=dump_json({"error": str(error)}),
                    content_type="application/json",
                )

        return run

    async def state(request: web.Request) -> web.StreamResponse:
        return _ok(simulator.state())

    async def reset(request: web.Request) -> web.StreamResponse:
        simulator.reset()
        return _ok()

    async def price(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        simulator.set_price(_need(body, "contractId"), Decimal(_need(body, "price")))
        return _ok()

    async def market_state(request: web.Request) -> web.StreamResponse:
        return _ok(simulator.market.snapshot())

    async def market_walk(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        if bool(_need(body, "running")):
            interval = body.get("interval")
            simulator.market.start_walk(None if interval is None else float(interval))
        else:
            simulator.market.stop_walk()
        return _ok(simulator.market.snapshot())

    async def market_step(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        prices = simulator.market.step(body.get("contractId"), int(body.get("steps", 1)))
        return _ok({"prices": prices})

    async def market_jump(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        price = simulator.market.jump(str(_need(body, "contractId")), int(_need(body, "ticks")))
        return _ok({"price": price})

    async def market_settings(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        changes: dict[str, Any] = {}
        for wire_name, setting, convert in _WALK_SETTINGS:
            if wire_name in body:
                changes[setting] = convert(body[wire_name])
        simulator.market.configure(body.get("contractId"), **changes)
        return _ok(simulator.market.snapshot())

    async def quotes_per_second(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        value = _need(body, "value")
        simulator.market_hub.max_quotes_per_second = None if value is None else float(value)
        return _ok()

    async def fill(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        trade = simulator.fill_order(
            int(_need(body, "orderId")), body.get("size"), body.get("price")
        )
        return _ok(trade)

    async def fill_plan(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        plan = _need(body, "plan")
        if body.get("orderId") is not None:
            simulator.set_fill_plan(int(body["orderId"]), plan)
        else:
            simulator.queue_fill_plan(plan, account_id=body.get("accountId"))
        return _ok()

    async def add_fault(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        name = str(_need(body, "fault"))
        if name not in FAULT_METHODS:
            raise ControlError(f"unknown fault {name!r}; one of {sorted(FAULT_METHODS)}")
        arguments = {key: value for key, value in body.items() if key != "fault"}
        arguments = {
            key: float(value) if isinstance(value, Decimal) else value
            for key, value in arguments.items()
        }
        result = getattr(simulator.faults, name)(**arguments)
        return _ok({"ok": True, "result": result})

    async def clear_faults(request: web.Request) -> web.StreamResponse:
        simulator.faults.clear()
        return _ok()

    async def list_faults(request: web.Request) -> web.StreamResponse:
        return _ok(simulator.faults.snapshot())

    async def add_user(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        simulator.add_user(str(_need(body, "username")), str(_need(body, "apiKey")))
        return _ok()

    async def add_account(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        account = simulator.add_account(
            int(_need(body, "id")),
            str(_need(body, "name")),
            Decimal(body.get("balance", "50000")),
            can_trade=bool(body.get("canTrade", True)),
            is_visible=bool(body.get("isVisible", True)),
            simulated=bool(body.get("simulated", True)),
            active=bool(body.get("active", True)),
            owner=body.get("owner"),
            auto_oco_brackets=bool(body.get("autoOcoBrackets", True)),
        )
        return _ok(account.to_wire())

    async def add_contract(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        options: dict[str, Any] = {}
        for wire_name, option in (
            ("description", "description"),
            ("symbolId", "symbol_id"),
            ("active", "active"),
        ):
            if wire_name in body:
                options[option] = body[wire_name]
        if "feePerContract" in body:
            options["fee_per_contract"] = Decimal(body["feePerContract"])
        contract = simulator.add_contract(
            str(_need(body, "id")),
            str(_need(body, "name")),
            Decimal(_need(body, "tickSize")),
            Decimal(_need(body, "tickValue")),
            **options,
        )
        return _ok(contract.to_wire())

    async def issue_token(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        return _ok({"token": simulator.issue_token(str(_need(body, "username")))})

    async def expire_tokens(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        return _ok({"expired": simulator.expire_tokens(body.get("token"))})

    async def token_lifetime(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        simulator.token_lifetime = float(_need(body, "seconds"))
        return _ok()

    async def timings(request: web.Request) -> web.StreamResponse:
        path = request.query.get("path")
        return _ok(
            [
                timing.describe()
                for timing in list(simulator.request_timings)
                if path is None or timing.path == path.lower()
            ]
        )

    async def clear_timings(request: web.Request) -> web.StreamResponse:
        simulator.request_timings.clear()
        return _ok()

    routes = [
        web.get("/_sim/state", guarded(state)),
        web.get("/_sim/timings", guarded(timings)),
        web.delete("/_sim/timings", guarded(clear_timings)),
        web.post("/_sim/reset", guarded(reset)),
        web.post("/_sim/price", guarded(price)),
        web.post("/_sim/fill", guarded(fill)),
        web.get("/_sim/market", guarded(market_state)),
        web.post("/_sim/market/walk", guarded(market_walk)),
        web.post("/_sim/market/step", guarded(market_step)),
        web.post("/_sim/market/jump", guarded(market_jump)),
        web.post("/_sim/market/settings", guarded(market_settings)),
        web.post("/_sim/market/quotes-per-second", guarded(quotes_per_second)),
        web.post("/_sim/fill-plan", guarded(fill_plan)),
        web.post("/_sim/faults", guarded(add_fault)),
        web.delete("/_sim/faults", guarded(clear_faults)),
        web.get("/_sim/faults", guarded(list_faults)),
        web.post("/_sim/users", guarded(add_user)),
        web.post("/_sim/accounts", guarded(add_account)),
        web.post("/_sim/contracts", guarded(add_contract)),
        web.post("/_sim/tokens", guarded(issue_token)),
        web.post("/_sim/tokens/expire", guarded(expire_tokens)),
        web.post("/_sim/token-lifetime", guarded(token_lifetime)),
    ]
    app.router.add_routes(routes)
