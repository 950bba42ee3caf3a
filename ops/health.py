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
4. listener, applying: hearing the broker is not enough. Every listener that heard it within
   that limit must also have applied events, or had nothing to apply, within it (the
   heartbeat's `applied_at`). A listener whose applier is failing (say, the database came back
   but its batch did not) or stuck makes the check fail with a detail saying it is not
   applying events, and which of its tasks are failing.
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
class NotApplying:
    """A listener that heard the broker recently but has not applied what it heard."""

    name: str
    applied_at: datetime | None  # when it last applied events or had nothing to apply
    failing_tasks: tuple[str, ...]


@dataclass(frozen=True)
class ListenerState:
    connected: bool  # a listener with a fresh heartbeat is connected and subscribed
    last_heard_at: datetime | None  # the newest event or ping any listener received
    newest_listener: str | None
    ever_ran: bool
    # Listeners that heard the broker within the limit without applying events within it.
    not_applying: tuple[NotApplying, ...] = ()


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
    following = [
        beat
        for beat in heartbeats
        if any(
            moment is not None and moment >= fresh_after
            for moment in (beat.last_message_at, beat.last_event_at)
        )
    ]
    return ListenerState(
        connected=any(
            beat.connected and beat.subscribed and beat.updated_at >= fresh_after
            for beat in heartbeats
        ),
        last_heard_at=newest[0] if newest else None,
        newest_listener=newest[1] if newest else None,
        ever_ran=bool(heartbeats),
        not_applying=tuple(
            NotApplying(beat.name, beat.applied_at, tuple(beat.failing_tasks or ()))
            for beat in following
            if beat.applied_at is None or beat.applied_at < fresh_after
        ),
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
    if silence > limit:
        return Check("listener", False, f"{detail} (> {limit:g} s)")
    if state.not_applying:
        return Check(
            "listener", False, "; ".join(_not_applying(x, now) for x in state.not_applying)
        )
    return Check("listener", True, f"{detail} and is applying events")


def _not_applying(listener: NotApplying, now: datetime) -> str:
    limit = settings.ORDER_MANAGEMENT.partial_fill_tracking.listener_ready_within_seconds
    if listener.applied_at is None:
        since = "has not applied any yet"
    else:
        since = f"last applied {(now - listener.applied_at).total_seconds():.0f} s ago"
    failing = f", failing tasks: {', '.join(listener.failing_tasks)}"
    return (
        f"{listener.name} hears the broker but is not applying events ({since}, > {limit:g} s"
        + (failing if listener.failing_tasks else "")
        + ")"
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
