"""The user hub (`/hubs/user`): account, order, position and trade events per account.

The protocol (negotiate, handshake, framing, keep-alive, Close) is `signalr.SignalRHub`'s.

Events go out as type-1 invocations without an id and with one argument, the `{action, data}`
envelope, only to connections that subscribed to that kind for that account (SubscribeAccounts
covers every account the connection's user can see). Subscribing to an account the user cannot see
is accepted but delivers nothing (the real gateway's answer is unconfirmed). Subscriptions belong to
one connection and die with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from projectx.enums import (
    HUB_SUBSCRIBE_ACCOUNTS,
    HUB_SUBSCRIBE_ORDERS,
    HUB_SUBSCRIBE_POSITIONS,
    HUB_SUBSCRIBE_TRADES,
    HUB_UNSUBSCRIBE_ACCOUNTS,
    HUB_UNSUBSCRIBE_ORDERS,
    HUB_UNSUBSCRIBE_POSITIONS,
    HUB_UNSUBSCRIBE_TRADES,
)
from projectx.simulator.auth import TokenStore
from projectx.simulator.broker import Broker, BrokerEvent
from projectx.simulator.faults import Faults, HubName
from projectx.simulator.signalr import (
    HubConnection,
    HubSettings,
    Invoked,
    ProtocolError,
    SignalRHub,
    arity_error,
    binding_error,
    find_method,
    invocation_frame,
)

__all__ = ["HubConnection", "HubSettings", "ProtocolError", "UserHub"]

# Hub method -> (subscription kind, takes an accountId, subscribe or unsubscribe)
_METHODS: dict[str, tuple[str, bool, bool]] = {
    HUB_SUBSCRIBE_ACCOUNTS: ("account", False, True),
    HUB_SUBSCRIBE_ORDERS: ("order", True, True),
    HUB_SUBSCRIBE_POSITIONS: ("position", True, True),
    HUB_SUBSCRIBE_TRADES: ("trade", True, True),
    HUB_UNSUBSCRIBE_ACCOUNTS: ("account", False, False),
    HUB_UNSUBSCRIBE_ORDERS: ("order", True, False),
    HUB_UNSUBSCRIBE_POSITIONS: ("position", True, False),
    HUB_UNSUBSCRIBE_TRADES: ("trade", True, False),
}


class UserHub(SignalRHub[BrokerEvent]):
    """The broker's events, per account, to the connections that subscribed to them."""

    name: HubName = "user"

    def __init__(
        self,
        broker: Broker,
        tokens: TokenStore,
        faults: Faults,
        settings: HubSettings,
        *,
        is_stopping: Callable[[], bool],
    ) -> None:
        super().__init__(tokens, faults, settings, is_stopping=is_stopping)
        self.broker = broker

    def _invoke(self, connection: HubConnection, target: str, arguments: list[Any]) -> Invoked:
        method = find_method(_METHODS, target)
        if method is None:
            return Invoked(f"Unknown hub method '{target}'")
        kind, takes_account, subscribe = _METHODS[method]
        expected = 1 if takes_account else 0
        if len(arguments) != expected:
            return Invoked(arity_error(method, len(arguments), expected))
        account_id: int | None = None
        if takes_account:
            value = arguments[0]
            if isinstance(value, bool) or not isinstance(value, int):
                return Invoked(binding_error(method))
            account_id = value
        key = (kind, account_id)
        if subscribe:
            connection.subscriptions.add(key)
        else:
            connection.subscriptions.discard(key)
        return Invoked()

    def _frame_for(self, connection: HubConnection, event: BrokerEvent) -> str | None:
        if not self._wants(connection, event):
            return None
        return invocation_frame(event.event_name, [event.envelope()])

    def _wants(self, connection: HubConnection, event: BrokerEvent) -> bool:
        if not self.broker.user_sees_account(connection.username, event.account_id):
            return False
        if event.kind == "account":
            return ("account", None) in connection.subscriptions
        return (event.kind, event.account_id) in connection.subscriptions
