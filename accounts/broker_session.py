"""One broker session (token) for every process of the system.

A login serves REST and both hubs, and the broker's rate limit counts per user: N processes
each logging in and refreshing on their own would multiply both. The token lives in the
`BrokerSession` row. A process that needs a new one (none yet, too old, or refused with 401)
first adopts a newer token another process stored; otherwise it claims a short lease on the
row with a conditional UPDATE, and only the lease holder logs in or refreshes. The others wait
for the new token, and refresh themselves only if the lease holder never delivers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q
from django.db.utils import load_backend
from django.utils import timezone

from accounts.models import BrokerSession
from projectx.client import ProjectXClient, SessionToken
from projectx.config import GatewayConfig

LEASE_SECONDS = 30.0
WAIT_FOR_OTHERS_SECONDS = 15.0

_T = TypeVar("_T")


def session_load(username: str) -> SessionToken | None:
    row = BrokerSession.objects.filter(username=username).exclude(token="").first()
    if row is None or row.issued_at is None:
        return None
    return SessionToken(value=row.token, issued_at=row.issued_at)


def session_save(username: str, token: SessionToken) -> None:
    BrokerSession.objects.update_or_create(
        username=username,
        defaults={"token": token.value, "issued_at": token.issued_at, "refreshing_until": None},
    )


def session_claim_refresh(
    username: str, lease_seconds: float = LEASE_SECONDS, *, seen: str | None = None
) -> bool:
    """True when this process now holds the refresh lease (nobody else does).

    `seen` is the token the caller read before deciding to refresh (None: there was none).
    The claim holds only while that is still the stored token: a process that refreshed in
    between has stored a new one and ended its lease, and logging in again would only replace
    a good token (the caller reads again and adopts it)."""
    now = timezone.now()
    BrokerSession.objects.get_or_create(username=username)
    claimed = (
        BrokerSession.objects.filter(username=username, token=seen or "")
        .filter(Q(refreshing_until__isnull=True) | Q(refreshing_until__lt=now))
        .update(refreshing_until=now + timedelta(seconds=lease_seconds))
    )
    return claimed == 1


def _claim(username: str, seen: str | None) -> bool:
    return session_claim_refresh(username, seen=seen)


def session_release(username: str) -> None:
    BrokerSession.objects.filter(username=username).update(refreshing_until=None)


def _in_own_connection(fn: Callable[..., _T], *args: Any) -> _T:
    """Run `fn` (in a helper thread of the client's event loop) on a connection of its own.

    Called rarely (when a token is missing, old or refused). Never from the requests' pool:
    every pooled connection may be held by a request waiting for this very client (a turn
    holder waiting for its placement to be sent, which waits for the token), so a pooled read
    here would wait for the pool's timeout and fail them all. One connection opened for the
    call and closed after it costs a few milliseconds, a few times a day.
    """
    own = _unpooled_connection()
    if own is None:  # no pool (SQLite): this thread's connection, given back at once
        try:
            return fn(*args)
        finally:
            connection.close()
    pooled = connections[DEFAULT_DB_ALIAS]
    connections[DEFAULT_DB_ALIAS] = own  # this thread only: connections are thread-local
    try:
        return fn(*args)
    finally:
        connections[DEFAULT_DB_ALIAS] = pooled
        own.close()


def _unpooled_connection() -> BaseDatabaseWrapper | None:
    """A connection like the default one but outside its pool; None when there is no pool."""
    settings_dict = connections[DEFAULT_DB_ALIAS].settings_dict
    options = settings_dict.get("OPTIONS") or {}
    if not options.get("pool"):
        return None
    unpooled = {
        **settings_dict,
        "OPTIONS": {name: value for name, value in options.items() if name != "pool"},
    }
    backend = load_backend(settings_dict["ENGINE"])
    wrapper: BaseDatabaseWrapper = backend.DatabaseWrapper(unpooled, DEFAULT_DB_ALIAS)
    return wrapper


class SharedSessionClient(ProjectXClient):
    """A ProjectX client whose token is shared through the database (see the module doc)."""

    def __init__(self, config: GatewayConfig, **options: Any) -> None:
        super().__init__(config, on_session_token=self._stored, **options)

    async def _db(self, fn: Callable[..., _T], *args: Any) -> _T:
        # Not asgiref's sync_to_async: its thread-sensitive executor may be the very thread of a
        # sync view that is blocked waiting for this client (a deadlock under ASGI). A plain
        # worker thread, which closes its connection after each call, is enough here.
        return await asyncio.to_thread(_in_own_connection, fn, *args)

    async def _stored(self, token: SessionToken) -> None:
        await self._db(session_save, self.config.username, token)

    def _usable(self, token: SessionToken | None, rejected_token: str | None) -> bool:
        if token is None or token.value == rejected_token:
            return False
        age = self._clock() - token.issued_at
        return age < timedelta(seconds=self.config.token_refresh_after)

    async def get_token(self, *, rejected_token: str | None = None) -> str:
        if self._usable(self._session_token, rejected_token):
            return self._session_token.value  # type: ignore[union-attr]
        username = self.config.username
        deadline = time.monotonic() + WAIT_FOR_OTHERS_SECONDS
        while True:
            stored = await self._db(session_load, username)
            if self._usable(stored, rejected_token):
                self._session_token = stored
                return stored.value  # type: ignore[union-attr]
            seen = None if stored is None else stored.value
            if await self._db(_claim, username, seen):
                try:
                    if stored is not None and stored.value != rejected_token:
                        self._session_token = stored  # old but maybe still refreshable
                    return await super().get_token(rejected_token=rejected_token)
                finally:
                    await self._db(session_release, username)
            if time.monotonic() >= deadline:
                # The lease holder never delivered: refresh ourselves rather than fail.
                return await super().get_token(rejected_token=rejected_token)
            await asyncio.sleep(0.1)
