"""Connection settings of one ProjectX Gateway user."""

from __future__ import annotations

from dataclasses import dataclass, field

from projectx.ratelimit import BARS_RATE_LIMIT, GENERAL_RATE_LIMIT, RateLimit

TOPSTEPX_API_URL = "https://api.topstepx.com"
TOPSTEPX_USER_HUB_URL = "https://rtc.topstepx.com/hubs/user"
TOPSTEPX_MARKET_HUB_URL = "https://rtc.topstepx.com/hubs/market"


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway is, who we are, and how long we wait.

    ``api_url`` is the REST host root (paths are ``/api/<Controller>/<action>`` under it).
    Timeouts are seconds. Tokens live 24 h; we refresh them once they are older than
    ``token_refresh_after``.
    """

    api_url: str
    user_hub_url: str
    username: str
    api_key: str = field(repr=False)
    connect_timeout: float = 5.0
    # Read timeout of one REST request; when it expires on a mutation the outcome is ambiguous,
    # so it is generous rather than snappy.
    request_timeout: float = 15.0
    token_refresh_after: float = 23 * 3600.0
    # Reads only: attempts in all (1 = no retry), and the backoff between them.
    read_max_attempts: int = 3
    retry_backoff_initial: float = 0.25
    retry_backoff_max: float = 4.0
    # The longest a read waits for a local rate-limit slot, or for a broker Retry-After.
    rate_limit_max_wait: float = 15.0
    general_rate_limit: RateLimit = GENERAL_RATE_LIMIT
    bars_rate_limit: RateLimit = BARS_RATE_LIMIT
    # The market hub (quotes, trades, depth); None until a consumer of market data needs it.
    market_hub_url: str | None = None
