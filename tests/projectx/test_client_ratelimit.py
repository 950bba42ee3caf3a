"""The client-side sliding-window limiter and its wait / fail-fast policies."""

from __future__ import annotations

import pytest

from projectx.errors import RateLimitExceeded
from projectx.ratelimit import (
    BARS_ENDPOINT,
    RateLimit,
    SlidingWindowRateLimiter,
    acquire_slot,
    limiter_for_user,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(5)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_it_grants_the_documented_limits_per_bucket() -> None:
    clock = FakeMonotonic()
    limiter = SlidingWindowRateLimiter(clock=clock)

    general = [await limiter.try_acquire("Order/place") for _ in range(201)]
    bars = [await limiter.try_acquire(BARS_ENDPOINT) for _ in range(51)]

    # should grant 200 general and 50 bars requests, then refuse with a wait
    assert general[:200] == [0.0] * 200
    assert general[200] == pytest.approx(60.0)
    assert bars[:50] == [0.0] * 50
    assert bars[50] == pytest.approx(30.0)
    assert limiter.in_window("Order/search") == 200


async def test_the_window_slides() -> None:
    clock = FakeMonotonic()
    limiter = SlidingWindowRateLimiter(general=RateLimit(2, 10.0), clock=clock)
    await limiter.try_acquire("Order/search")
    clock.now += 6
    await limiter.try_acquire("Order/search")

    # should free the first slot 10 s after it was taken, not at a fixed boundary
    assert await limiter.try_acquire("Order/search") == pytest.approx(4.0)
    clock.now += 4
    assert await limiter.try_acquire("Order/search") == 0.0
    assert await limiter.try_acquire("Order/search") == pytest.approx(6.0)


async def test_reads_wait_for_a_slot_within_the_bound() -> None:
    clock = FakeMonotonic()
    limiter = SlidingWindowRateLimiter(general=RateLimit(1, 5.0), clock=clock)
    await limiter.try_acquire("Order/search")

    await acquire_slot(limiter, "Order/search", max_wait=10.0, sleep=clock.sleep)

    # should have waited exactly until the slot freed
    assert clock.slept == [pytest.approx(5.0)]


async def test_waiting_past_the_bound_fails_instead() -> None:
    clock = FakeMonotonic()
    limiter = SlidingWindowRateLimiter(general=RateLimit(1, 60.0), clock=clock)
    await limiter.try_acquire("Order/search")

    # should refuse rather than wait a minute
    with pytest.raises(RateLimitExceeded) as caught:
        await acquire_slot(limiter, "Order/search", max_wait=10.0, sleep=clock.sleep)
    assert caught.value.retry_after == pytest.approx(60.0)
    assert clock.slept == []


async def test_mutations_fail_fast() -> None:
    clock = FakeMonotonic()
    limiter = SlidingWindowRateLimiter(general=RateLimit(1, 60.0), clock=clock)
    await limiter.try_acquire("Order/place")

    # should not wait at all with max_wait 0
    with pytest.raises(RateLimitExceeded):
        await acquire_slot(limiter, "Order/place", max_wait=0.0, sleep=clock.sleep)
    assert clock.slept == []


def test_clients_of_one_user_share_one_limiter() -> None:
    # should hand every client of a user the same limiter, and other users their own
    assert limiter_for_user("shared-user") is limiter_for_user("shared-user")
    assert limiter_for_user("shared-user") is not limiter_for_user("someone-else")
