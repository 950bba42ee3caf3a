"""A protocol-true ProjectX Gateway simulator, a paper broker: REST, the SignalR user and market
hubs, a seeded price process per contract, bars, fault injection.

    from projectx.simulator import GatewaySimulator

    sim = GatewaySimulator.with_demo_data(seed=7).start()   # background thread, free port
    sim.base_url, sim.user_hub_url, sim.market_hub_url      # REST is base_url + "/api/..."
    sim.set_price("CON.F.US.MNQ.Z26", Decimal("21000.25"))  # a trade: orders fill, hub hears
    sim.market.step(steps=10)                               # ten walk steps, now
    sim.market.start_walk(interval=0.1)                     # or let the loop walk the prices
    sim.market.jump("CON.F.US.MNQ.Z26", -40)                # a 40-tick gap down
    sim.faults.lose_response(path="Order/place")
    sim.broker.orders(1001)
    sim.stop()

Run it standalone with `python -m projectx.simulator --host 127.0.0.1 --port 8800`; prices stand
still unless `--price-walk` is given.

Where the reference says "unconfirmed", each module's docstring writes down the choice made:
`rest` (endpoints, the deliberate differences from the reference, ping, bars and Order/v2/query
validation), `market.tape` (bar alignment, windows, partial bars), `market.feed` (quote, trade
and depth shapes, bid/ask, sessions, history), `market_hub` (snapshots on subscribe, quote
coalescing, faults), `hub` and `signalr` (the user hub and the protocol), `broker.*` (orders).
"""

from __future__ import annotations

from projectx.simulator.auth import DEFAULT_TOKEN_LIFETIME, TokenStore
from projectx.simulator.broker import (
    Broker,
    BrokerError,
    BrokerEvent,
    OrderRejection,
    PlaceOrderRequest,
    PlaceOrderResult,
)
from projectx.simulator.demo import (
    DEMO_ACCOUNT_ID,
    DEMO_API_KEY,
    DEMO_CONTRACT_ID,
    DEMO_SECOND_ACCOUNT_ID,
    DEMO_USERNAME,
)
from projectx.simulator.faults import Faults
from projectx.simulator.hub import HubSettings, UserHub
from projectx.simulator.market import MarketData, MarketEvent, WalkSettings
from projectx.simulator.market_hub import MarketHub
from projectx.simulator.server import GatewaySimulator

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "DEMO_ACCOUNT_ID",
    "DEMO_API_KEY",
    "DEMO_CONTRACT_ID",
    "DEMO_SECOND_ACCOUNT_ID",
    "DEMO_USERNAME",
    "Broker",
    "BrokerError",
    "BrokerEvent",
    "Faults",
    "GatewaySimulator",
    "HubSettings",
    "MarketData",
    "MarketEvent",
    "MarketHub",
    "OrderRejection",
    "PlaceOrderRequest",
    "PlaceOrderResult",
    "TokenStore",
    "UserHub",
    "WalkSettings",
]
