"""The named errors of the order domain, and what each means to a caller (`describe_error`):
the API, the desk and the admin answer from that one mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import OperationalError
from psycopg_pool import PoolTimeout

if TYPE_CHECKING:
    from orders.models import Order


class OrderError(Exception):
    """Base of every order-domain error."""

    code = "order_error"


class IllegalTransition(OrderError):
    """The lifecycle does not allow this move from the order's current state."""

    code = "illegal_transition"

    def __init__(self, *, order_id: object, from_state: str, to_state: str) -> None:
        super().__init__(f"order {order_id} cannot move from {from_state} to {to_state}")
        self.order_id = order_id
        self.from_state = from_state
        self.to_state = to_state


class VersionConflict(OrderError):
    """The order changed since the caller read it; `current` is the order as it is now."""

    code = "version_conflict"

    def __init__(self, *, current: Order, expected_version: int) -> None:
        super().__init__(
            f"order {current.pk} is at version {current.version}, not {expected_version}"
        )
        self.current = current
        self.expected_version = expected_version


class InvalidOrder(OrderError):
    """The order cannot be sent as asked; `fields` names each bad field and why."""

    code = "invalid_order"

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__(
            "the order is not valid: "
            + "; ".join(f"{name}: {' '.join(messages)}" for name, messages in fields.items())
        )
        self.fields = fields


class IdempotencyKeyReused(OrderError):
    """The key was used before with a different order: nothing was changed or sent."""

    code = "idempotency_key_reused"

    def __init__(self, key: str) -> None:
        super().__init__(
            "this Idempotency-Key was already used with a different order; use a new key"
        )
        self.key = key


class RequestInProgress(OrderError):
    """The first request with this key is still being processed: retry shortly."""

    code = "request_in_progress"

    def __init__(self, key: str, order_id: object | None) -> None:
        super().__init__("a request with this Idempotency-Key is still being processed")
        self.key = key
        self.order_id = order_id


class BrokerUnavailable(OrderError):
    """The broker could not be asked something we need before acting (e.g. a contract)."""

    code = "broker_unavailable"


class PlacementQueueFull(OrderError):
    """The account already has the configured number of orders waiting to be sent."""

    code = "placement_queue_full"
    retry_after = 1

    def __init__(self, *, waiting: int) -> None:
        super().__init__(
            f"{waiting} orders are already waiting to be sent on this account; retry shortly"
        )
        self.waiting = waiting


class PlacementDeferred(OrderError):
    """The order did not reach the broker, or the broker refused it for a reason that passes
    (its rate limit). Nothing is working at the broker and the Idempotency-Key is free again:
    retry with the same key after `retry_after` seconds and the order is placed exactly once.
    Never stored as the key's outcome, so never replayed."""

    def __init__(
        self, code: str, message: str, *, http_status: int, retry_after: float | None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after


class PositionClosing(OrderError):
    """A close of this account's position in the contract is in progress."""

    code = "position_closing"

    def __init__(self, *, contract_id: str) -> None:
        super().__init__(
            f"a close of the position in {contract_id} is in progress; new orders on it are "
            "refused until it ends"
        )
        self.contract_id = contract_id


class NotCancellable(OrderError):
    """The order has ended (filled, rejected, expired or failed): there is nothing to cancel.
    `current` is the order as it stands."""

    code = "not_cancellable"

    def __init__(self, *, current: Order) -> None:
        super().__init__(f"order {current.pk} is {current.status}: there is nothing to cancel")
        self.current = current


class NoBrokerOrderId(OrderError):
    """The order has no broker order id, so the broker cannot be asked about it or told to
    cancel it. Only orders the broker accepted reach those calls: this is a bug, said clearly,
    rather than a request for order None."""

    code = "no_broker_order_id"

    def __init__(self, *, order_id: object, status: str) -> None:
        super().__init__(f"order {order_id} ({status}) has no broker order id")
        self.order_id = order_id
        self.status = status


class IfMatchRequired(OrderError):
    """A change was asked for without saying which version of the order it applies to."""

    code = "if_match_required"

    def __init__(self) -> None:
        super().__init__('send If-Match: "<version>" with the version of the order you read')


class CloseFailed(OrderError):
    """A position close could not be completed; the position may still be open."""

    code = "close_failed"
    retry_after = 5


class CloseInProgress(OrderError):
    """A close of the position is in flight in another request and did not end in time."""

    code = "close_in_progress"

    def __init__(self, *, contract_id: str, retry_after: int) -> None:
        super().__init__(
            f"a close of the position in {contract_id} is still in progress; retry to get its "
            "result (a close whose process died is taken over once its lease expires)"
        )
        self.contract_id = contract_id
        self.retry_after = retry_after


class RiskRefusal(OrderError):
    """A pre-trade risk check refused the order: nothing was sent to the broker.

    `final`: a definitive answer, stored as a rejected order and replayed for its key. The
    others pass with time (a rate, a halt), so nothing is stored and the key stays free.
    `fields` says which limit (the YAML key), its value and what the order asked for.
    """

    code = "risk_limit"
    http_status = 422
    final = True

    def __init__(self, message: str, *, limit: str, value: Any, requested: Any) -> None:
        super().__init__(message)
        self.limit = limit
        self.fields = {"limit": limit, "value": _plain(value), "requested": _plain(requested)}


def _plain(value: Any) -> Any:
    # Money as a decimal string (JSON numbers cannot carry it exactly), counts as numbers.
    return value if value is None or isinstance(value, (int, str)) else str(value)


class RiskLimitExceeded(RiskRefusal):
    """422: the order breaks a limit (size, position, working orders, reduce-only)."""


class RiskRateLimited(RiskRefusal):
    """429: the account placed `maxOrdersPerMinute` orders within the last minute."""

    http_status = 429
    final = False

    def __init__(self, message: str, *, value: Any, requested: Any, retry_after: float) -> None:
        super().__init__(message, limit="maxOrdersPerMinute", value=value, requested=requested)
        self.retry_after = retry_after


class AccountHalted(RiskRefusal):
    """409: the account is halted (by hand, the daily loss limit, or the kill switch)."""

    code = "account_halted"
    http_status = 409
    final = False

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, limit="tradingState", value="halted", requested=None)
        self.fields = {"limit": "tradingState", "value": "halted", "reason": reason}


class FlattenFailed(OrderError):
    """The kill switch could not be started or joined (an unexpected error, logged)."""

    code = "flatten_failed"
    retry_after = 5


class BracketsNotEnabled(OrderError):
    """The broker refused an order with brackets: the account is in "Position Brackets" mode,
    not "Auto OCO Brackets" [reference 4.4]. The message is the broker's. A definitive answer:
    the placement is stored rejected and its key replays it."""

    code = "brackets_not_enabled"


# --- What each error means to a caller: the one mapping ----------------------------------------
# The bot API (api/errors.py), the desk (desk/views.py) and the admin (backoffice/) all answer
# from this table, so one error never means 409 in one place and 503 in another.


@dataclass(frozen=True)
class ErrorDescription:
    code: str
    http_status: int
    message: str
    fields: dict[str, Any] | None = None
    retry_after: float | None = None
    # The order as it stands, for errors that carry it (a version conflict, not cancellable).
    current: Order | None = None

    def body(self) -> dict[str, Any]:
        """The one error shape: `{"error": {"code", "message", "fields"?}}`."""
        return error_body(self.code, self.message, self.fields)


def error_body(code: str, message: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


_HTTP_STATUS: list[tuple[type[Exception], int]] = [
    # PlacementDeferred carries its own status (429 or 503); this is its fallback.
    (PlacementDeferred, 503),
    (PlacementQueueFull, 429),
    # RiskRefusal carries its own status (422, 429 or 409).
    (RiskRefusal, 422),
    (FlattenFailed, 503),
    (PositionClosing, 409),
    (CloseInProgress, 409),
    (CloseFailed, 503),
    (IfMatchRequired, 428),
    (InvalidOrder, 400),
    (IdempotencyKeyReused, 422),
    (BracketsNotEnabled, 422),
    (RequestInProgress, 409),
    (VersionConflict, 412),
    (IllegalTransition, 409),
    (BrokerUnavailable, 503),
    (OrderError, 409),
]


def describe_error(exc: Exception) -> ErrorDescription | None:
    """The code, HTTP status and message of a domain error (or a broker error that reached a
    caller); None for anything else, which is a bug to log, never a message to show."""
    from orders.idempotency import InvalidIdempotencyKey
    from projectx.errors import GatewayError, RateLimited

    if isinstance(exc, InvalidIdempotencyKey):
        return ErrorDescription(
            "invalid_request", 400, str(exc), fields={"Idempotency-Key": [str(exc)]}
        )
    for error_type, http_status in _HTTP_STATUS:
        if isinstance(exc, error_type):
            return ErrorDescription(
                code=getattr(exc, "code", OrderError.code),
                http_status=getattr(exc, "http_status", None) or http_status,
                message=str(exc),
                fields=getattr(exc, "fields", None),
                retry_after=getattr(exc, "retry_after", None),
                current=getattr(exc, "current", None),
            )
    if isinstance(exc, RateLimited):
        return ErrorDescription("broker_rate_limited", 429, str(exc), retry_after=exc.retry_after)
    if isinstance(exc, GatewayError):
        return ErrorDescription(BrokerUnavailable.code, 503, str(exc), retry_after=1.0)
    if isinstance(exc, OperationalError) and isinstance(exc.__cause__, PoolTimeout):
        # Every pooled connection stayed busy past the pool's timeout: the request did not
        # get to run. Not a bug to answer 500 for: retried with the same key, it replays or
        # places once (an order it stored is swept: unsent, its key is freed).
        return ErrorDescription(
            "database_busy",
            503,
            "the database had no free connection for this request; retry it with the same key",
            retry_after=1.0,
        )
    return None
