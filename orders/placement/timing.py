"""Where a placement's time went, step by step, for the request that is placing it.

The API sends the steps back as a `Server-Timing` header (durations in milliseconds), so a bot
or `bench/place_orders.py` can see what to cut without a profiler. Steps (each may be absent):

- `auth`: authentication and throttling of the request;
- `validation`: the input, the account, the prices on the contract's tick, the cached replay;
- `storing`: the acceptance transaction (order, idempotency record, its place in the queue);
- `turn`: waiting for the account's turn, and sending the orders accepted before this one;
- `broker`: this order's broker call, until its answer (or until the turn was handed on);
- `settling`: applying the broker's answer to the order;
- `response`: storing the answer on the idempotency record (same transaction as settling).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_steps: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "placement_steps", default=None
)


@contextlib.contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Collect the steps of the placement made inside the block (seconds, by step)."""
    steps: dict[str, float] = {}
    token = _steps.set(steps)
    try:
        yield steps
    finally:
        _steps.reset(token)


def add(name: str, seconds: float) -> None:
    steps = _steps.get()
    if steps is not None:
        steps[name] = steps.get(name, 0.0) + seconds


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        add(name, time.perf_counter() - started)


def server_timing(steps: dict[str, float]) -> str:
    """The `Server-Timing` header value: `storing;dur=1.20, broker;dur=0.80, ...`."""
    return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in steps.items())
