"""What /readyz checks: the database, Redis (when configured) and the listener's freshness.

Readiness rules:

1. database: a `SELECT 1` answers.
2. redis: only when `REDIS_URL` is set (the cache and channel layer live there); a PING
   answers within a second.
3. listener: some `listen_gateway` heard from the broker (an event or a ping) within
   `partialFillTracking.listenerReadyWithinSeconds`. Without a listener nobody applies fills,
   cancels or rejections, so the desk would act on a picture that has stopped moving; that is
   unready. When no listener has ever run, it is unready too, for the same reason, and the
   check says to start one (`make run` starts one inside the app).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ListenerState:
    connected: bool  # a listener with a fresh heartbeat is connected and subscribed
    last_heard_at: datetime | None  # the newest event or ping any listener received
    newest_listener: str | None
    ever_ran: bool


def listener_state(*, now: datetime) -> ListenerState:
    from fills.models import ListenerHeartbeat

    fresh_after = now - timedelta(
        seconds=settings.ORDER_MANAGEMENT.partial_fill_tracking.listener_ready_within_seconds
    )
    heartbeats = list(ListenerHeartbeat.objects.all())
    heard = [
        (moment, beat.name)
        for beat in heartbeats
        for moment in (beat.last_message_at, beat.last_event_at)
        if moment is not None
    ]
    newest = max(heard, default=None)
    return ListenerState(
        connected=any(
            beat.connected and beat.subscribed and beat.updated_at >= fresh_after
            for beat in heartbeats
        ),
        last_heard_at=newest[0] if newest else None,
        newest_listener=newest[1] if newest else None,
        ever_ran=bool(heartbeats),
    )


def check_database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return Check("database", False, f"unavailable: {type(exc).__name__}: {exc}"[:300])
    return Check("database", True, "ok")


def check_redis() -> Check | None:
    if not settings.REDIS_URL:
        return None
    import redis

    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1
        )
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return Check("redis", False, f"unavailable: {type(exc).__name__}: {exc}"[:300])
    return Check("redis", True, "ok")


def check_listener(*, now: datetime) -> Check:
    limit = settings.ORDER_MANAGEMENT.partial_fill_tracking.listener_ready_within_seconds
    try:
        state = listener_state(now=now)
    except Exception as exc:
        return Check("listener", False, f"unknown: {type(exc).__name__}"[:300])
    if not state.ever_ran:
        return Check("listener", False, "no listener has ever reported: start listen_gateway")
    if state.last_heard_at is None:
        return Check("listener", False, "no listener has heard from the broker yet")
    silence = (now - state.last_heard_at).total_seconds()
    detail = f"{state.newest_listener} heard from the broker {silence:.0f} s ago"
    return Check(
        "listener", silence <= limit, detail + ("" if silence <= limit else f" (> {limit:g} s)")
    )


def readiness_checks() -> list[Check]:
    database = check_database()
    checks = [database]
    redis_check = check_redis()
    if redis_check is not None:
        checks.append(redis_check)
    if database.ok:
        checks.append(check_listener(now=timezone.now()))
    else:
        checks.append(Check("listener", False, "unknown: the database is unavailable"))
    return checks
