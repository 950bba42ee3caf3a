"""Fault injection: make the simulated broker misbehave the ways real networks and brokers do.

One `Faults` object per simulator, reachable as `sim.faults` from Python and through
`POST /_sim/faults` (see `projectx.simulator.control`). Every method is thread-safe and can be
called from test code while the simulator runs in its background thread.

HTTP faults match a request by *path*: the part after `/api/` for REST (`"Order/place"`), or the
path without its leading slash for the hub (`"hubs/user/negotiate"`, `"hubs/user"` for the WebSocket
upgrade). Matching ignores case and accepts shell wildcards (`"Order/*"`); `path=None` matches
every request except the `/_sim/` control endpoints, which faults never touch. `count` is how many
matching requests the fault applies to (`None`: until `clear()`); the first matching fault wins.

Hub faults act on the event stream of every connection of one hub (or on the connections
themselves). There are two hubs, `"user"` and `"market"`: event faults (`drop_events`,
`duplicate_events`, `delay_events`, `reorder_events`) count the events of one hub only (the user
hub unless `hub="market"`), so that market data flowing past cannot use up a fault a test aimed
at order events. Stalls and connection drops/closes hit both hubs unless `hub=` names one, as an
outage of the realtime host would.
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from projectx.enums import PlaceOrderErrorCode
from projectx.simulator.broker import DEFAULT_REJECTION_MESSAGE, Broker

HubName = Literal["user", "market"]
HUB_NAMES: tuple[HubName, ...] = ("user", "market")

HttpFaultKind = Literal[
    "status", "lose_response", "delay_response", "drop_request", "hold_response"
]


class ConnectionController(Protocol):
    """What the faults need from the running server (implemented by `GatewaySimulator`)."""

    def drop_hub_connections(
        self, username: str | None = None, hub: HubName | None = None
    ) -> int: ...

    def close_hub_connections(
        self,
        error: str | None,
        allow_reconnect: bool,
        username: str | None = None,
        hub: HubName | None = None,
    ) -> int: ...

    def refuse_connections(self, seconds: float | None) -> None: ...

    def accept_connections(self) -> None: ...


def normalize_path(path: str) -> str:
    """`/api/Order/place` -> `order/place`; `/hubs/user/negotiate` -> `hubs/user/negotiate`."""
    cleaned = path.strip().strip("/").lower()
    if cleaned.startswith("api/"):
        cleaned = cleaned[len("api/") :]
    return cleaned


class HeldResponse:
    """A gate for one request: the broker acts, then its answer waits until `release()`.

    Lets a test put events in a chosen order without timing: `wait_until_acted()` returns once
    the broker has carried the request out (its hub events are on their way); the test makes
    the other side happen (e.g. waits for the listener to apply them), then `release()`s the
    answer, which is sent (`then="answer"`) or lost with a cut connection (`then="lose"`).
    """

    def __init__(self, then: Literal["answer", "lose"]) -> None:
        self.then = then
        self.acted = threading.Event()
        self.released = threading.Event()

    def wait_until_acted(self, timeout: float = 10.0) -> None:
        if not self.acted.wait(timeout):
            raise TimeoutError(f"no matching request reached the broker within {timeout} s")

    def release(self) -> None:
        self.released.set()


@dataclass
class HttpFault:
    kind: HttpFaultKind
    path: str | None
    remaining: int | None
    status: int = 503
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    gate: HeldResponse | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "remaining": self.remaining,
            "status": self.status,
            "body": self.body,
            "headers": dict(self.headers),
            "delay": self.delay,
        }

    def matches(self, normalized_path: str) -> bool:
        return self.path is None or fnmatch.fnmatchcase(normalized_path, normalize_path(self.path))


@dataclass
class EventFaults:
    """The event faults of one hub: remaining uses (None: every event until cleared)."""

    stalled: bool = False
    drop: int | None = 0
    duplicate: int | None = 0
    delay: int | None = 0
    delay_seconds: float = 0.0
    reorder_remaining: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "hubStalled": self.stalled,
            "dropEvents": self.drop,
            "duplicateEvents": self.duplicate,
            "delayEvents": self.delay,
            "delaySeconds": self.delay_seconds,
            "reorderRemaining": self.reorder_remaining,
        }


@dataclass(frozen=True)
class EventDelivery:
    """What the hub must do with one outgoing event."""

    drop: bool = False
    copies: int = 1
    delay: float = 0.0
    hold_for_reorder: bool = False
    flush_reorder: bool = False


class Faults:
    """Scriptable misbehaviour. Methods return immediately; see each docstring for timing."""

    def __init__(self, broker: Broker) -> None:
        self._lock = threading.Lock()
        self._broker = broker
        self._controller: ConnectionController | None = None
        self._http: list[HttpFault] = []
        self._hubs: dict[HubName, EventFaults] = {name: EventFaults() for name in HUB_NAMES}

    def attach(self, controller: ConnectionController) -> None:
        self._controller = controller

    # ---------------------------------------------------------------- HTTP

    def fail_requests(
        self,
        status: int = 503,
        *,
        path: str | None = None,
        count: int | None = 1,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer matching requests with HTTP `status` without processing them (nothing is
        created). `body` (str or JSON-able) defaults to an empty body."""
        self._add(HttpFault("status", path, count, status=status, body=body, headers=headers or {}))

    def rate_limit(
        self, *, path: str | None = None, count: int | None = 1, retry_after: float | None = None
    ) -> None:
        """Answer matching requests with 429, unprocessed. The real gateway's `Retry-After` is
        unconfirmed [reference 7], so none is sent unless `retry_after` is given."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.fail_requests(429, path=path, count=count, headers=headers)

    def lose_response(self, *, path: str | None = "Order/place", count: int | None = 1) -> None:
        """The "lost ack": process the request (the order is created and its events go out)
        but never answer. The connection is held open until the client gives up or the
        simulator stops, then closed without a response."""
        self._add(HttpFault("lose_response", path, count))

    def delay_response(
        self, seconds: float, *, path: str | None = None, count: int | None = 1
    ) -> None:
        """Process the request at once, then hold the answer for `seconds` (the broker has
        acted, the client just hears late). If the client gives up first it gets nothing."""
        self._add(HttpFault("delay_response", path, count, delay=seconds))

    def hold_response(
        self, *, path: str = "Order/place", then: Literal["answer", "lose"] = "answer"
    ) -> HeldResponse:
        """Process the next matching request at once, then hold its answer until the returned
        gate is released (see `HeldResponse`). For putting a hub event before a REST answer
        deterministically. The client may give up first (its own timeout)."""
        gate = HeldResponse(then)
        self._add(HttpFault("hold_response", path, 1, gate=gate))
        return gate

    def drop_requests(self, *, path: str | None = None, count: int | None = 1) -> None:
        """Close the TCP connection as soon as a matching request arrives, before processing:
        the request never reached the broker, and the client sees a disconnect."""
        self._add(HttpFault("drop_request", path, count))

    def refuse_connections(self, seconds: float | None = None) -> None:
        """Stop listening, so new TCP connections are refused (ECONNREFUSED), and close idle
        keep-alive connections; open hub WebSockets are left alone (use
        `drop_hub_connections` too for a full outage). Listening resumes after `seconds`,
        or on `accept_connections()`/`clear()`. Returns once the listener is closed."""
        self._require_controller().refuse_connections(seconds)

    def accept_connections(self) -> None:
        self._require_controller().accept_connections()

    def take_http_fault(self, path: str) -> HttpFault | None:
        """For the server: the fault (if any) for one request to `path`, consuming one use."""
        normalized = normalize_path(path)
        with self._lock:
            for fault in self._http:
                if not fault.matches(normalized):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._http.remove(fault)
                return fault
        return None

    # ------------------------------------------------------------- broker

    def reject_orders(
        self,
        count: int = 1,
        *,
        error_code: int = PlaceOrderErrorCode.ORDER_REJECTED,
        message: str = DEFAULT_REJECTION_MESSAGE,
        create_order: bool = True,
    ) -> None:
        """Reject the next `count` valid Order/place calls with `error_code` and `message`.
        With `create_order` the reject is what was seen live: an order in status 5 Rejected is
        created and published, and its id comes back with `success: false`."""
        self._broker.reject_next_orders(
            count, error_code=error_code, message=message, create_order=create_order
        )

    def suppress_oco(self) -> None:
        """Until `clear()`: a filled bracket leg leaves its sibling working (no OCO cancel or
        shrink), and a flat position leaves the bracket children working."""
        self._broker.set_oco_cancels(False)

    def void_trade(self, trade_id: int) -> dict[str, Any]:
        """Flag a trade `voided` and publish it again (GatewayUserTrade, action 1)."""
        return self._broker.void_trade(trade_id)

    # ---------------------------------------------------------------- hub

    def drop_hub_connections(
        self, *, username: str | None = None, hub: HubName | None = None
    ) -> int:
        """Cut every hub WebSocket (of `username`, or all; of `hub`, or both hubs) at the TCP
        level: no Close message, no close frame. Returns how many were cut."""
        return self._require_controller().drop_hub_connections(username, hub)

    def close_hub_connections(
        self,
        error: str | None = "Simulated server error.",
        *,
        allow_reconnect: bool = True,
        username: str | None = None,
        hub: HubName | None = None,
    ) -> int:
        """Send a SignalR Close message (`{"type":7,"error":...,"allowReconnect":...}`) and
        close the WebSocket normally. Returns how many connections were closed."""
        return self._require_controller().close_hub_connections(
            error, allow_reconnect, username, hub
        )

    def stall_hub(self, *, hub: HubName | None = None) -> None:
        """A silent stall: connections stay open but the server sends nothing at all (events are
        lost, pings and completions are not sent) until `resume_hub()`. Both hubs unless `hub`."""
        with self._lock:
            for faults in self._selected(hub):
                faults.stalled = True

    def resume_hub(self, *, hub: HubName | None = None) -> None:
        with self._lock:
            for faults in self._selected(hub):
                faults.stalled = False

    @property
    def hub_stalled(self) -> bool:
        """Whether any hub is stalled."""
        with self._lock:
            return any(faults.stalled for faults in self._hubs.values())

    def is_hub_stalled(self, hub: HubName) -> bool:
        with self._lock:
            return self._hubs[hub].stalled

    def drop_events(self, count: int | None = 1, *, hub: HubName = "user") -> None:
        """Lose the next `count` events of `hub` (None: all, until cleared); pings go on."""
        with self._lock:
            self._hubs[hub].drop = count

    def duplicate_events(self, count: int | None = 1, *, hub: HubName = "user") -> None:
        """Send each of the next `count` events of `hub` twice (None: all, until cleared)."""
        with self._lock:
            self._hubs[hub].duplicate = count

    def delay_events(self, seconds: float, count: int | None = 1, *, hub: HubName = "user") -> None:
        """Deliver the next `count` events of `hub` `seconds` late (None: all, until cleared).
        Later undelayed events overtake them, so this also reorders."""
        with self._lock:
            self._hubs[hub].delay_seconds = seconds
            self._hubs[hub].delay = count

    def reorder_events(self, count: int = 2, *, hub: HubName = "user") -> None:
        """Hold the next `count` events of `hub`, then deliver them in reverse order."""
        if count < 2:
            raise ValueError("reordering needs at least two events")
        with self._lock:
            self._hubs[hub].reorder_remaining = count

    def plan_event_delivery(self, hub: HubName = "user") -> EventDelivery:
        """For a hub: how to deliver its next event, consuming one use of each event fault."""
        with self._lock:
            faults = self._hubs[hub]
            if _consume(faults, "drop"):
                return EventDelivery(drop=True)
            copies = 2 if _consume(faults, "duplicate") else 1
            delay = faults.delay_seconds if _consume(faults, "delay") else 0.0
            hold = flush = False
            if faults.reorder_remaining > 0:
                faults.reorder_remaining -= 1
                hold = True
                flush = faults.reorder_remaining == 0
            return EventDelivery(
                copies=copies, delay=delay, hold_for_reorder=hold, flush_reorder=flush
            )

    # -------------------------------------------------------------- general

    def clear(self) -> None:
        """Remove every fault: HTTP faults, event faults, stall, pending rejects; listen again."""
        with self._lock:
            self._http.clear()
            self._hubs = {name: EventFaults() for name in HUB_NAMES}
        self._broker.clear_rejections()
        self._broker.set_oco_cancels(True)
        if self._controller is not None:
            self._controller.accept_connections()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "http": [fault.describe() for fault in self._http],
                # The user hub's event faults at the top level, as before the market hub came.
                **self._hubs["user"].describe(),
                "marketHub": self._hubs["market"].describe(),
                "pendingOrderRejections": self._broker.pending_rejections(),
                "ocoSuppressed": not self._broker.oco_cancels(),
            }

    def _add(self, fault: HttpFault) -> None:
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("count must be at least 1 (or None for unlimited)")
        with self._lock:
            self._http.append(fault)

    def _selected(self, hub: HubName | None) -> list[EventFaults]:
        return list(self._hubs.values()) if hub is None else [self._hubs[hub]]

    def _require_controller(self) -> ConnectionController:
        if self._controller is None:
            raise RuntimeError("the simulator is not running")
        return self._controller


def _consume(faults: EventFaults, attribute: Literal["drop", "duplicate", "delay"]) -> bool:
    """Use up one of a fault's remaining uses; whether the fault applies to this event."""
    remaining: int | None = getattr(faults, attribute)
    if remaining is None:
        return True
    if remaining > 0:
        setattr(faults, attribute, remaining - 1)
        return True
    return False
