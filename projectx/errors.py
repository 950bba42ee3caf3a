"""Errors from the ProjectX Gateway client, split by the one thing a trading caller must know.

After a failed place, modify, cancel or close, the question is: *could the broker have acted on
it?* The base class of every error answers that, so callers branch on two classes only:

``DefinitiveError`` - the outcome is known and the broker did **not** carry out the request.
    ``BrokerRejected``       the broker answered ``success: false``. Carries the per-endpoint
                             ``error_code`` number and its ``error_name``; a rejected place may
                             still carry the ``order_id`` the broker assigned (never a success).
    ``AuthenticationError``  login/validate refused, or a 401 that persisted after one re-login.
    ``RateLimited``          the broker answered HTTP 429 (``retry_after`` seconds, when given).
    ``RequestRejected``      any other HTTP 4xx: the broker refused the request as such.
    ``RequestNotSent``       the request provably never left this process (the TCP/TLS connect
                             was refused or timed out, no pooled connection came free). The broker
                             cannot have seen it: retrying is safe.
        ``RateLimitExceeded`` our own limiter refused to send it (the broker's documented limit
                             would have been exceeded); ``retry_after`` says when a slot frees.

``AmbiguousError`` - the request was, or may have been, sent and no trustworthy answer came back.
    The broker may or may not have acted. Never re-send a mutation blindly: reconcile first
    (Order/search over a window around the send time matched by ``customTag``, Order/searchOpen,
    Position/searchOpen, Trade/search).
    ``GatewayTimeout``       no response in time after the request was written (read/write timeout).
    ``ConnectionLost``       the connection broke after the request was (partly) written.
    ``GatewayUnavailable``   HTTP 5xx: something between us and the order engine failed, perhaps
                             after the engine acted.
    ``MalformedResponse``    a response arrived but could not be understood (not JSON, no
                             envelope, a 2xx without the promised payload, a 3xx).

Where the client cannot tell, it chooses ambiguous: a wrong "definitive" can double an order,
a wrong "ambiguous" only costs a reconciliation.
"""

from __future__ import annotations

from enum import IntEnum


class GatewayError(Exception):
    """Base of every error raised by the ProjectX client. ``endpoint`` is e.g. ``Order/place``."""

    def __init__(self, endpoint: str, message: str) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.message = message


class DefinitiveError(GatewayError):
    """The broker did not carry out the request; the outcome is known."""


class AmbiguousError(GatewayError):
    """The request may have reached the broker and been carried out: reconcile before retrying."""


UNRECOGNISED_ERROR_NAME = "UNRECOGNISED"


def error_code_name(error_codes: type[IntEnum] | None, error_code: int | None) -> str:
    """The enum member name of ``error_code`` in the endpoint's own error-code enum."""
    if error_codes is None or error_code is None:
        return UNRECOGNISED_ERROR_NAME
    try:
        return error_codes(error_code).name
    except ValueError:
        return UNRECOGNISED_ERROR_NAME


class BrokerRejected(DefinitiveError):
    """The broker answered ``success: false``.

    ``error_code`` is the number from the wire and ``error_name`` its name in *this endpoint's*
    enum (``ORDER_NOT_FOUND`` is 2 on Order/modify but ``ORDER_REJECTED`` is 2 on Order/place).
    ``order_id`` is set when a rejected Order/place still returned one: the order exists at the
    broker in a rejected state, it is not working.
    """

    def __init__(
        self,
        endpoint: str,
        error_code: int | None,
        error_name: str,
        message: str | None,
        order_id: int | None = None,
    ) -> None:
        super().__init__(endpoint, f"rejected with {error_name} ({error_code}): {message or ''}")
        self.error_code = error_code
        self.error_name = error_name
        self.broker_message = message
        self.order_id = order_id


class AuthenticationError(DefinitiveError):
    """Login or validate was refused, or a request stayed unauthorised after one re-login."""

    def __init__(
        self,
        endpoint: str,
        message: str,
        *,
        error_code: int | None = None,
        error_name: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(endpoint, message)
        self.error_code = error_code
        self.error_name = error_name
        self.status_code = status_code


class RateLimited(DefinitiveError):
    """The broker answered HTTP 429; ``retry_after`` is its Retry-After in seconds, if sent."""

    def __init__(self, endpoint: str, retry_after: float | None) -> None:
        super().__init__(endpoint, f"rate limited by the broker (retry after {retry_after} s)")
        self.retry_after = retry_after


class RequestRejected(DefinitiveError):
    """An HTTP 4xx other than 401 and 429 (e.g. a 400 ProblemDetails on a malformed body)."""

    def __init__(self, endpoint: str, status_code: int, body: str) -> None:
        super().__init__(endpoint, f"HTTP {status_code}: {body[:500]}")
        self.status_code = status_code
        self.body = body


class RequestNotSent(DefinitiveError):
    """The request never left this process, so the broker cannot have acted on it."""


class RateLimitExceeded(RequestNotSent):
    """Our client-side limiter refused to send: the broker's documented limit would be exceeded."""

    def __init__(self, endpoint: str, retry_after: float) -> None:
        super().__init__(
            endpoint, f"client-side rate limit reached; a slot frees in {retry_after:.2f} s"
        )
        self.retry_after = retry_after


class GatewayTimeout(AmbiguousError):
    """No response arrived in time after the request was written."""


class ConnectionLost(AmbiguousError):
    """The connection broke after the request was (perhaps partly) written."""


class GatewayUnavailable(AmbiguousError):
    """The broker answered HTTP 5xx."""

    def __init__(self, endpoint: str, status_code: int, body: str) -> None:
        super().__init__(endpoint, f"HTTP {status_code}: {body[:500]}")
        self.status_code = status_code
        self.body = body


class MalformedResponse(AmbiguousError):
    """A response arrived but could not be understood."""
