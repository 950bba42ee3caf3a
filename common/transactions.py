"""Atomic blocks for writes that are one statement, inside a batch that is applied whole.

The listener applies a batch of broker events in one transaction, and when any statement of it
fails it rolls the whole batch back and applies it again one event at a time, each event in a
savepoint of its own. Inside the first, set-wise attempt a savepoint per write only costs two
round trips (SAVEPOINT, RELEASE) and protects nothing: a single statement is atomic by itself,
and a failure is handled by the fallback, not by the savepoint.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from django.db import transaction

_applied_whole: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "applied_whole", default=False
)


@contextlib.contextmanager
def applied_whole() -> Iterator[None]:
    """Within the block (inside the caller's transaction), a failure of any write fails the
    whole transaction, and the caller applies its work again another way."""
    token = _applied_whole.set(True)
    try:
        yield
    finally:
        _applied_whole.reset(token)


def atomic_statement() -> Any:
    """The atomic block around a write of one statement: a savepoint when nested, so that a
    caller going on after a failure can; nothing inside `applied_whole`."""
    if _applied_whole.get():
        return contextlib.nullcontext()
    return transaction.atomic()
