"""Async REST client of the ProjectX Gateway (aiohttp).

Every call returns typed models or raises one of ``projectx.errors``; the base class of the error
says whether the broker can have acted (``AmbiguousError``) or not (``DefinitiveError``). Read
that module's docstring before writing a caller that places, modifies, cancels or closes.

Retry policy:
  * Reads (searches, get_*, login, validate) retry on 429, 5xx, timeouts, broken connections and
    not-sent errors, up to ``config.read_max_attempts`` in all, with jittered exponential backoff;
    a 429's Retry-After is honoured when it is within ``config.rate_limit_max_wait``.
  * Mutations (place, modify, cancel, close, partial close) are sent at most once per call. The
    one exception is a 401: it is a definitive "not executed", so after one fresh login the same
    request is sent again, once.
  * Rate limiting is client-side too (``projectx.ratelimit``): reads wait for a slot, mutations
    that would exceed the limit raise ``RateLimitExceeded`` without being sent.

Tokens: the first call logs in with the API key. Once the token is older than
``config.token_refresh_after`` (default 23 h of its 24 h life) it is refreshed with Auth/validate
before use; a 401 triggers one fresh login (validate on an expired token is unconfirmed).
``on_session_token`` lets the caller persist each new token so other processes can share it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from enum import IntEnum, StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
from pydantic import ValidationError
from yarl import URL

from projectx.config import GatewayConfig
from projectx.enums import (
    AggregateBarUnit,
    CancelOrderErrorCode,
    ClosePositionErrorCode,
    LoginErrorCode,
    ModifyOrderErrorCode,
    OrderSide,
    OrderType,
    PartialClosePositionErrorCode,
    PlaceOrderErrorCode,
    RetrieveBarErrorCode,
    SearchAccountErrorCode,
    SearchContractByIdErrorCode,
    SearchOrderByIdErrorCode,
    SearchOrderErrorCode,
    SearchPositionErrorCode,
    SearchTradeErrorCode,
    ValidateErrorCode,
)
from projectx.errors import (
    AuthenticationError,
    BrokerRejected,
    ConnectionLost,
    GatewayError,
    GatewayTimeout,
    GatewayUnavailable,
    MalformedResponse,
    RateLimited,
    RateLimitExceeded,
    RequestNotSent,
    RequestRejected,
    error_code_name,
)
from projectx.models import (
    Account,
    Bar,
    Bracket,
    Contract,
    Order,
    Position,
    Trade,
    WireModel,
    dumps,
    loads,
)
from projectx.ratelimit import RateLimiter, acquire_slot, limiter_for_user

logger = logging.getLogger(__name__)

# Set by a caller (in the task that makes the call) to hear when a mutating request's last
# byte has been written to the socket: from then on the broker may act on it, whatever becomes
# of the answer. The account's placement turn is handed on from that moment
# (orders/placement/queue.py).
on_request_written: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "projectx_on_request_written", default=None
)


def _written_trace() -> aiohttp.TraceConfig:
    """Calls a request's `on_request_written` hook (its `trace_request_ctx`) once its body is
    written. aiohttp signals a body chunk just before it writes it to the transport, in the same
    step, so the hook is called on the loop's next turn: after the write."""

    async def chunk_sent(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestChunkSentParams
    ) -> None:
        hook = context.trace_request_ctx
        if hook is not None:
            context.trace_request_ctx = None  # once per request, whatever its chunks
            asyncio.get_running_loop().call_soon(hook)

    trace = aiohttp.TraceConfig()
    trace.on_request_chunk_sent.append(chunk_sent)
    return trace


@dataclass(frozen=True)
class _Answer:
    """An HTTP response, read whole."""

    status: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's)
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


TOKEN_LIFETIME = timedelta(hours=24)


class Endpoint(StrEnum):
    """REST paths below ``<api_url>/api/``."""

    LOGIN_KEY = "Auth/loginKey"
    VALIDATE = "Auth/validate"
    SEARCH_ACCOUNTS = "Account/search"
    GET_CONTRACT = "Contract/searchById"
    RETRIEVE_BARS = "History/retrieveBars"
    PLACE_ORDER = "Order/place"
    MODIFY_ORDER = "Order/modify"
    CANCEL_ORDER = "Order/cancel"
    SEARCH_ORDERS = "Order/search"
    SEARCH_OPEN_ORDERS = "Order/searchOpen"
    GET_ORDER = "Order/searchById"
    SEARCH_OPEN_POSITIONS = "Position/searchOpen"
    CLOSE_POSITION = "Position/closeContract"
    PARTIAL_CLOSE_POSITION = "Position/partialCloseContract"
    SEARCH_TRADES = "Trade/search"


# Each endpoint's own error-code enum: the same number means different things on different ones.
ERROR_CODES: dict[Endpoint, type[IntEnum]] = {
    Endpoint.LOGIN_KEY: LoginErrorCode,
    Endpoint.VALIDATE: ValidateErrorCode,
    Endpoint.SEARCH_ACCOUNTS: SearchAccountErrorCode,
    Endpoint.GET_CONTRACT: SearchContractByIdErrorCode,
    Endpoint.RETRIEVE_BARS: RetrieveBarErrorCode,
    Endpoint.PLACE_ORDER: PlaceOrderErrorCode,
    Endpoint.MODIFY_ORDER: ModifyOrderErrorCode,
    Endpoint.CANCEL_ORDER: CancelOrderErrorCode,
    Endpoint.SEARCH_ORDERS: SearchOrderErrorCode,
    Endpoint.SEARCH_OPEN_ORDERS: SearchOrderErrorCode,
    Endpoint.GET_ORDER: SearchOrderByIdErrorCode,
    Endpoint.SEARCH_OPEN_POSITIONS: SearchPositionErrorCode,
    Endpoint.CLOSE_POSITION: ClosePositionErrorCode,
    Endpoint.PARTIAL_CLOSE_POSITION: PartialClosePositionErrorCode,
    Endpoint.SEARCH_TRADES: SearchTradeErrorCode,
}

MUTATING_ENDPOINTS = frozenset(
    {
        Endpoint.PLACE_ORDER,
        Endpoint.MODIFY_ORDER,
        Endpoint.CANCEL_ORDER,
        Endpoint.CLOSE_POSITION,
        Endpoint.PARTIAL_CLOSE_POSITION,
    }
)
AUTH_ENDPOINTS = frozenset({Endpoint.LOGIN_KEY, Endpoint.VALIDATE})

# What a read may retry after. RateLimitExceeded (our own limiter) is excluded below: the read
# already waited as long as it is allowed to.
_RETRYABLE_FOR_READS = (
    RateLimited,
    RequestNotSent,
    GatewayTimeout,
    ConnectionLost,
    GatewayUnavailable,
)

ModelT = TypeVar("ModelT", bound=WireModel)
Envelope = dict[str, Any]


@dataclass(frozen=True)
class SessionToken:
    value: str = field(repr=False)
    issued_at: datetime


class _Unauthorised(AuthenticationError):
    """HTTP 401 on one send; the session layer turns it into one re-login before it escapes."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _retry_after_seconds(header: str | None, now: datetime) -> float | None:
    if not header:
        return None
    header = header.strip()
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class ProjectXClient:
    """One user's REST session with the gateway. Use as ``async with ProjectXClient(...)``.

    ``rate_limiter`` defaults to the process-wide limiter of ``config.username``. ``clock`` and
    ``sleep`` are injectable so token age and backoff can be tested without waiting.

    HTTP is aiohttp's: about a third of httpx's CPU per call (0.26 against 0.82 ms for an
    Order/place on loopback; docs/decisions/0012). The session is made on first use, on the
    loop of the caller (aiohttp binds it there); every call of one client uses one loop.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        rate_limiter: RateLimiter | None = None,
        session_token: SessionToken | None = None,
        on_session_token: Callable[[SessionToken], Awaitable[None] | None] | None = None,
        clock: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config
        self._limiter = rate_limiter or limiter_for_user(
            config.username, config.general_rate_limit, config.bars_rate_limit
        )
        self._session_token = session_token
        self._on_session_token = on_session_token
        self._clock = clock
        self._sleep = sleep
        self._auth_lock = asyncio.Lock()
        self._base_url = config.api_url.rstrip("/") + "/api/"
        self._urls: dict[Endpoint, URL] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            config = self._config
            self._session = aiohttp.ClientSession(
                # As httpx's were: a connection idle for 5 s is not used again (a server may
                # have closed it; a mutation sent on it would end ambiguous).
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=5.0),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    # A free connection, and connecting: before a byte of the request is sent.
                    connect=config.connect_timeout,
                    sock_connect=config.connect_timeout,
                    # Between bytes of the answer, once the request is written.
                    sock_read=config.request_timeout,
                ),
                headers={"Accept": "application/json"},
                trace_configs=[_written_trace()],
            )
        return self._session

    def _url(self, endpoint: Endpoint) -> URL:
        url = self._urls.get(endpoint)
        if url is None:
            url = self._urls[endpoint] = URL(self._base_url + str(endpoint))
        return url

    @property
    def config(self) -> GatewayConfig:
        return self._config

    @property
    def session_token(self) -> SessionToken | None:
        return self._session_token

    # -- Auth -----------------------------------------------------------------------------------

    async def login_key(self) -> str:
        """Log in with the API key; the new token becomes the session token and is returned."""
        async with self._auth_lock:
            return (await self._login_locked()).value

    async def validate(self) -> str:
        """Refresh the session token with Auth/validate (logging in first if there is none)."""
        async with self._auth_lock:
            if self._session_token is None:
                return (await self._login_locked()).value
            return (await self._validate_locked(self._session_token)).value

    async def get_token(self, *, rejected_token: str | None = None) -> str:
        """A usable token: logs in when there is none and refreshes it once it is old.

        ``rejected_token`` is a token the broker just answered 401 to: if it is still the
        session token, log in afresh (unless another caller already replaced it). This is also
        the user hub's token provider, so each hub (re)connect gets a current token.
        """
        async with self._auth_lock:
            token = self._session_token
            if token is None or token.value == rejected_token:
                return (await self._login_locked()).value
            age = self._clock() - token.issued_at
            if age < timedelta(seconds=self._config.token_refresh_after):
                return token.value
            if age >= TOKEN_LIFETIME:  # expired: validate would only answer 401
                return (await self._login_locked()).value
            try:
                return (await self._validate_locked(token)).value
            except AuthenticationError:
                logger.info("Auth/validate refused the old token; logging in again")
                return (await self._login_locked()).value
            except GatewayError:
                # The old token still has time left: serving it beats failing the caller's
                # request over a refresh that can be tried again on the next call.
                logger.warning("token refresh failed; using the current token", exc_info=True)
                return token.value

    async def _login_locked(self) -> SessionToken:
        body = {"userName": self._config.username, "apiKey": self._config.api_key}
        envelope = await self._with_retry_policy(
            Endpoint.LOGIN_KEY, lambda: self._send(Endpoint.LOGIN_KEY, body, bearer=None)
        )
        return await self._store_token(Endpoint.LOGIN_KEY, envelope, "token")

    async def _validate_locked(self, token: SessionToken) -> SessionToken:
        envelope = await self._with_retry_policy(
            Endpoint.VALIDATE, lambda: self._send(Endpoint.VALIDATE, None, bearer=token.value)
        )
        return await self._store_token(Endpoint.VALIDATE, envelope, "newToken")

    async def _store_token(
        self, endpoint: Endpoint, envelope: Envelope, token_field: str
    ) -> SessionToken:
        value = envelope.get(token_field)
        if not isinstance(value, str) or not value:
            raise MalformedResponse(endpoint, f"success without a {token_field}")
        token = SessionToken(value=value, issued_at=self._clock())
        self._session_token = token
        if self._on_session_token is not None:
            result = self._on_session_token(token)
            if inspect.isawaitable(result):
                await result
        return token

    # -- Accounts, contracts, bars ---------------------------------------------------------------

    async def search_accounts(self, *, only_active: bool = True) -> list[Account]:
        envelope = await self._call(Endpoint.SEARCH_ACCOUNTS, {"onlyActiveAccounts": only_active})
        return _parse_list(Endpoint.SEARCH_ACCOUNTS, envelope, "accounts", Account)

    async def get_contract(self, contract_id: str) -> Contract:
        envelope = await self._call(Endpoint.GET_CONTRACT, {"contractId": contract_id})
        return _parse_one(Endpoint.GET_CONTRACT, envelope, "contract", Contract)

    async def retrieve_bars(
        self,
        *,
        contract_id: str,
        start: datetime,
        end: datetime,
        unit: AggregateBarUnit,
        unit_number: int,
        limit: int,
        live: bool = False,
        include_partial_bar: bool = False,
    ) -> list[Bar]:
        body = {
            "contractId": contract_id,
            "live": live,
            "startTime": start,
            "endTime": end,
            "unit": unit,
            "unitNumber": unit_number,
            "limit": limit,
            "includePartialBar": include_partial_bar,
        }
        envelope = await self._call(Endpoint.RETRIEVE_BARS, body)
        return _parse_list(Endpoint.RETRIEVE_BARS, envelope, "bars", Bar)

    # -- Orders ----------------------------------------------------------------------------------

    async def place_order(
        self,
        *,
        account_id: int,
        contract_id: str,
        type: OrderType,
        side: OrderSide,
        size: int,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail_price: Decimal | None = None,
        custom_tag: str | None = None,
        stop_loss_bracket: Bracket | None = None,
        take_profit_bracket: Bracket | None = None,
    ) -> int:
        """Place an order and return the broker's order id.

        Prices are ``Decimal`` absolute price levels (``trail_price`` too, see reference 4.4).
        Sent once: on ``AmbiguousError`` reconcile by ``custom_tag`` before placing again.
        A ``BrokerRejected`` may carry the id of the rejected order in ``order_id``.
        """
        body: dict[str, Any] = {
            "accountId": account_id,
            "contractId": contract_id,
            "type": type,
            "side": side,
            "size": size,
        }
        _put_optional(body, "limitPrice", limit_price)
        _put_optional(body, "stopPrice", stop_price)
        _put_optional(body, "trailPrice", trail_price)
        _put_optional(body, "customTag", custom_tag)
        if stop_loss_bracket is not None:
            body["stopLossBracket"] = stop_loss_bracket.to_wire()
        if take_profit_bracket is not None:
            body["takeProfitBracket"] = take_profit_bracket.to_wire()
        envelope = await self._call(Endpoint.PLACE_ORDER, body)
        order_id = envelope.get("orderId")
        if not isinstance(order_id, int) or isinstance(order_id, bool):
            # The broker said success but we cannot name the order: it may well be working.
            raise MalformedResponse(Endpoint.PLACE_ORDER, "success without an orderId")
        return order_id

    async def modify_order(
        self,
        *,
        account_id: int,
        order_id: int,
        size: int | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail_price: Decimal | None = None,
    ) -> None:
        """Modify a working order. Fields left as None are not sent (meaning: unchanged)."""
        body: dict[str, Any] = {"accountId": account_id, "orderId": order_id}
        _put_optional(body, "size", size)
        _put_optional(body, "limitPrice", limit_price)
        _put_optional(body, "stopPrice", stop_price)
        _put_optional(body, "trailPrice", trail_price)
        await self._call(Endpoint.MODIFY_ORDER, body)

    async def cancel_order(self, *, account_id: int, order_id: int) -> None:
        await self._call(Endpoint.CANCEL_ORDER, {"accountId": account_id, "orderId": order_id})

    async def search_orders(
        self, *, account_id: int, start: datetime, end: datetime | None = None
    ) -> list[Order]:
        body: dict[str, Any] = {"accountId": account_id, "startTimestamp": start}
        _put_optional(body, "endTimestamp", end)
        envelope = await self._call(Endpoint.SEARCH_ORDERS, body)
        return _parse_list(Endpoint.SEARCH_ORDERS, envelope, "orders", Order)

    async def search_open_orders(self, *, account_id: int) -> list[Order]:
        """Working orders with status Open only: Suspended bracket children are not included."""
        envelope = await self._call(Endpoint.SEARCH_OPEN_ORDERS, {"accountId": account_id})
        return _parse_list(Endpoint.SEARCH_OPEN_ORDERS, envelope, "orders", Order)

    async def get_order(self, *, account_id: int, order_id: int) -> Order:
        envelope = await self._call(
            Endpoint.GET_ORDER, {"accountId": account_id, "orderId": order_id}
        )
        return _parse_one(Endpoint.GET_ORDER, envelope, "order", Order)

    # -- Positions and trades --------------------------------------------------------------------

    async def search_open_positions(self, *, account_id: int) -> list[Position]:
        envelope = await self._call(Endpoint.SEARCH_OPEN_POSITIONS, {"accountId": account_id})
        return _parse_list(Endpoint.SEARCH_OPEN_POSITIONS, envelope, "positions", Position)

    async def close_position(self, *, account_id: int, contract_id: str) -> None:
        """Flatten the position at market. The broker returns no order id."""
        await self._call(
            Endpoint.CLOSE_POSITION, {"accountId": account_id, "contractId": contract_id}
        )

    async def partial_close_position(self, *, account_id: int, contract_id: str, size: int) -> None:
        """Close ``size`` contracts of the position at market (wire field ``size``)."""
        body = {"accountId": account_id, "contractId": contract_id, "size": size}
        await self._call(Endpoint.PARTIAL_CLOSE_POSITION, body)

    async def search_trades(
        self, *, account_id: int, start: datetime, end: datetime | None = None
    ) -> list[Trade]:
        body: dict[str, Any] = {"accountId": account_id, "startTimestamp": start}
        _put_optional(body, "endTimestamp", end)
        envelope = await self._call(Endpoint.SEARCH_TRADES, body)
        return _parse_list(Endpoint.SEARCH_TRADES, envelope, "trades", Trade)

    # -- Plumbing --------------------------------------------------------------------------------

    async def _call(self, endpoint: Endpoint, body: Mapping[str, Any] | None) -> Envelope:
        """Send a session-authenticated request with its retry policy; return a success envelope."""
        return await self._with_retry_policy(
            endpoint, lambda: self._send_with_session(endpoint, body)
        )

    async def _with_retry_policy(
        self, endpoint: Endpoint, send_once: Callable[[], Awaitable[Envelope]]
    ) -> Envelope:
        attempts = 1 if endpoint in MUTATING_ENDPOINTS else max(1, self._config.read_max_attempts)
        attempt = 1
        while True:
            try:
                envelope = await send_once()
            except _RETRYABLE_FOR_READS as exc:
                delay = self._retry_delay(attempt, exc)
                if attempt >= attempts or isinstance(exc, RateLimitExceeded) or delay is None:
                    raise
                logger.warning(
                    "%s failed (%s); retry %d of %d in %.2f s",
                    endpoint,
                    type(exc).__name__,
                    attempt,
                    attempts - 1,
                    delay,
                )
                await self._sleep(delay)
                attempt += 1
                continue
            return _raise_for_rejection(endpoint, envelope)

    def _retry_delay(self, attempt: int, exc: GatewayError) -> float | None:
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            # The broker said when; past our bound we give up rather than stall the caller.
            if exc.retry_after > self._config.rate_limit_max_wait:
                return None
            return exc.retry_after
        backoff = self._config.retry_backoff_initial * 2.0 ** (attempt - 1)
        return min(self._config.retry_backoff_max, backoff) * random.uniform(0.5, 1.0)

    async def _send_with_session(
        self, endpoint: Endpoint, body: Mapping[str, Any] | None
    ) -> Envelope:
        token = await self.get_token()
        try:
            return await self._send(endpoint, body, bearer=token)
        except _Unauthorised:
            logger.info("%s answered 401; logging in again and re-sending once", endpoint)
        # A 401 is the broker refusing to look at the request, so sending it again (even a
        # mutation) cannot double anything.
        token = await self.get_token(rejected_token=token)
        try:
            return await self._send(endpoint, body, bearer=token)
        except _Unauthorised:
            raise AuthenticationError(
                endpoint, "still unauthorised after a fresh login", status_code=401
            ) from None

    async def _send(
        self, endpoint: Endpoint, body: Mapping[str, Any] | None, *, bearer: str | None
    ) -> Envelope:
        """One HTTP request, classified: returns the parsed envelope or raises a GatewayError."""
        wait_for_slot = endpoint not in MUTATING_ENDPOINTS
        await acquire_slot(
            self._limiter,
            endpoint,
            max_wait=self._config.rate_limit_max_wait if wait_for_slot else 0.0,
            sleep=self._sleep,
        )
        headers = {"Content-Type": "application/json"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        content = dumps(body if body is not None else {})
        # Only a mutation's own request counts (not a login made on the way to it).
        written = on_request_written.get() if endpoint in MUTATING_ENDPOINTS else None
        try:
            # POST only: aiohttp never sends a POST again by itself (its one retry on a
            # connection the server closed is for idempotent methods).
            async with self._http().post(
                self._url(endpoint), data=content, headers=headers, trace_request_ctx=written
            ) as raw:
                response = _Answer(raw.status, raw.headers, await raw.read())
        except (
            aiohttp.ClientConnectorError,  # refused, unresolved, TLS: while connecting
            aiohttp.ConnectionTimeoutError,  # no free connection, or no connection, in time
            aiohttp.InvalidURL,
            aiohttp.NonHttpUrlClientError,
        ) as exc:
            # Raised before a byte of the request was written: the broker never saw it.
            raise RequestNotSent(endpoint, f"not sent: {exc!r}") from exc
        except TimeoutError as exc:  # no answer in time, after sending began
            raise GatewayTimeout(endpoint, f"no response in time: {exc!r}") from exc
        except aiohttp.ClientError as exc:  # disconnected, reset, a broken or cut-off answer
            raise ConnectionLost(endpoint, f"connection lost: {exc!r}") from exc
        return self._classify_response(endpoint, response, authenticated=bearer is not None)

    def _classify_response(
        self, endpoint: Endpoint, response: _Answer, *, authenticated: bool
    ) -> Envelope:
        status = response.status
        if status == 401:
            error_type = _Unauthorised if authenticated else AuthenticationError
            raise error_type(endpoint, "HTTP 401 unauthorised", status_code=401)
        if status == 429:
            retry_after = _retry_after_seconds(response.headers.get("Retry-After"), self._clock())
            raise RateLimited(endpoint, retry_after)
        if 400 <= status < 500:
            raise RequestRejected(endpoint, status, response.text)
        if status >= 500:
            raise GatewayUnavailable(endpoint, status, response.text)
        if not 200 <= status < 300:
            raise MalformedResponse(endpoint, f"unexpected HTTP {status}")
        try:
            envelope = loads(response.content)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise MalformedResponse(endpoint, f"body is not JSON: {response.text[:200]!r}") from exc
        if not isinstance(envelope, dict) or not isinstance(envelope.get("success"), bool):
            raise MalformedResponse(endpoint, f"no success envelope: {response.text[:200]!r}")
        return envelope


def _raise_for_rejection(endpoint: Endpoint, envelope: Envelope) -> Envelope:
    if envelope["success"]:
        return envelope
    raw_code = envelope.get("errorCode")
    error_code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    error_name = error_code_name(ERROR_CODES.get(endpoint), error_code)
    message = envelope.get("errorMessage")
    message = message if isinstance(message, str) else None
    if endpoint in AUTH_ENDPOINTS:
        raise AuthenticationError(
            endpoint, message or error_name, error_code=error_code, error_name=error_name
        )
    order_id = envelope.get("orderId") if endpoint == Endpoint.PLACE_ORDER else None
    raise BrokerRejected(
        endpoint,
        error_code,
        error_name,
        message,
        order_id=order_id if isinstance(order_id, int) else None,
    )


def _put_optional(body: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        body[key] = value


def _parse_list(
    endpoint: Endpoint, envelope: Envelope, field: str, model: type[ModelT]
) -> list[ModelT]:
    items = envelope.get(field)
    if not isinstance(items, list):
        raise MalformedResponse(endpoint, f"success without a {field} list")
    try:
        return [model.model_validate(item) for item in items]
    except ValidationError as exc:
        raise MalformedResponse(endpoint, f"unreadable {field}: {exc}") from exc


def _parse_one(endpoint: Endpoint, envelope: Envelope, field: str, model: type[ModelT]) -> ModelT:
    item = envelope.get(field)
    if not isinstance(item, dict):
        raise MalformedResponse(endpoint, f"success without a {field}")
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        raise MalformedResponse(endpoint, f"unreadable {field}: {exc}") from exc
