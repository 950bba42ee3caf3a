"""Work a request leaves for after its answer has gone out: the idempotency cache's copy of a
placement's answer (orders/placement/services.py), a Redis round trip that the bot waiting for
the answer does not need to wait for (a retry that comes before it is answered from the
database, as after a cache outage).

Deferred work runs when the request finishes (`request_finished`). The ASGI handler
(ordermgmt/handlers.py) sends that once the response is written when there is deferred work,
and before writing it otherwise (one hop to the request's thread fewer). Django's test client
and WSGI send it once the response is produced. Outside a request, `defer` runs the work at
once. Work that fails is logged: the answer it would have helped has already gone out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from django.core import signals

logger = logging.getLogger(__name__)

_local = threading.local()


def defer(work: Callable[[], None]) -> None:
    """Run `work` once this thread's request has finished; at once outside a request."""
    pending: list[Callable[[], None]] | None = getattr(_local, "pending", None)
    if pending is None:
        work()
        return
    pending.append(work)


def pending() -> bool:
    """Whether this thread's request has deferred work."""
    return bool(getattr(_local, "pending", None))


def _started(**_: Any) -> None:
    _local.pending = []


def _finished(**_: Any) -> None:
    pending: list[Callable[[], None]] | None = getattr(_local, "pending", None)
    _local.pending = None
    for work in pending or ():
        try:
            work()
        except Exception:
            logger.warning("work deferred after a response failed", exc_info=True)


signals.request_started.connect(_started, dispatch_uid="common.after_response.started")
signals.request_finished.connect(_finished, dispatch_uid="common.after_response.finished")
