"""A protocol-true ProjectX Gateway simulator: REST, the SignalR user hub, fault injection.

    from projectx.simulator import GatewaySimulator

    sim = GatewaySimulator.with_demo_data().start()   # background thread, free port
    sim.base_url, sim.user_hub_url                    # REST is base_url + "/api/..."
    sim.set_price("CON.F.US.MNQ.Z26", Decimal("21000.25"))
    sim.faults.lose_response(path="Order/place")
    sim.broker.orders(1001)
    sim.stop()

Run it standalone with `python -m projectx.simulator --host 127.0.0.1 --port 8800`.
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
    "OrderRejection",
    "PlaceOrderRequest",
    "PlaceOrderResult",
    "TokenStore",
    "UserHub",
]
