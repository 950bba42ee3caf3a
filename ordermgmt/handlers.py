"""Django's ASGI handler: a request's synchronous work in one call on its thread, and that thread
kept from one request to the next.

With every middleware synchronous (ordermgmt/middleware.py) Django still builds its ASGI chain
around the asynchronous `_get_response_async`: the request went to its thread for the
middlewares, back to the event loop to resolve the URL, to the thread again for the view, and
back twice more on the way out; four thread hops a request where two do (a third of the event
loop's work for an idempotent replay, py-spy). Here the chain is built as under WSGI (the
synchronous `_get_response` at its core) and the loop calls it once, in the request's thread.

Django's `handle` also went to that thread for `request_started` before the chain, and again for
the response's `close()` (`request_finished`, which gives the database connection back) after
it: 0.3 ms of a worker's CPU each, on this machine. Here both run in the same call as the chain,
the close as soon as the response is built: one hop a request, from three. A response that
streams (a file), or whose request left work for after its answer (`common.after_response`), is
closed once it has been sent, in a second hop the client does not wait for. `handle` follows
Django 5.2's otherwise.

Django gives every request a thread of its own (`ThreadSensitiveContext`): asgiref makes a new
single-thread executor for it, and at the end starts one more thread to shut that one down. Two
threads started and joined per request; here a request borrows an idle single-thread executor
instead (`_Executors`) and hands it back. Still one thread per request while it runs, so what
Django keeps per thread (the database connection, back in the pool at the request's end) is
never shared by two requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

import msgspec
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, ASGIRequest, get_script_prefix
from django.http import FileResponse, HttpRequest, HttpResponseBase, JsonResponse
from django.urls import set_script_prefix

from api.errors import retry_after_header
from common import admission, after_response, metrics
from orders.exceptions import PlacementQueueFull, describe_error

# Idle request threads kept per process: enough for the requests a worker runs at once under
# the benches' heaviest load (the spread bench's 100 clients over 2 workers); beyond it a
# request still gets a thread of its own, which ends with it.
IDLE_REQUEST_THREADS_KEPT = 64


# The placement route (api/urls.py), the one whose requests wait for admission
# (`common.admission`): a placement is the request that costs a worker the most CPU, and the
# one bots send in bursts.
PLACEMENT_METHOD, PLACEMENT_PATH = "POST", "/api/v1/orders/"
# The part of a placement's body read for its account (its line at the gate); a body longer
# than this waits in the line of unreadable bodies, and Django answers it as usual.
_LINE_KEY_BODY_BYTES = 16_384

_numbers = itertools.count()


class _RequestThread(ThreadPoolExecutor):
    """One thread, for one request at a time; knows whether it is still running anything (a
    request whose client went away is cancelled on the loop, but its view runs to the end)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix=f"request-{next(_numbers)}")
        self._running = 0
        self._count_lock = threading.Lock()
        self._on_idle: list[Callable[[_RequestThread], None]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._count_lock:
            self._running += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[Any]) -> None:
        on_idle: list[Callable[[_RequestThread], None]] = []
        with self._count_lock:
            self._running -= 1
            if self._running == 0:
                on_idle, self._on_idle = self._on_idle, []
        for callback in on_idle:
            callback(self)

    def when_idle(self, callback: Callable[[_RequestThread], None]) -> None:
        """`callback(self)` now if nothing runs, else once the last call ends."""
        with self._count_lock:
            if self._running:
                self._on_idle.append(callback)
                return
        callback(self)


class _Executors:
    """Idle request threads of this process, lent to one request at a time."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._idle: list[_RequestThread] = []
        self._lock = threading.Lock()

    def borrow(self) -> _RequestThread:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _RequestThread()

    def give_back(self, executor: _RequestThread) -> None:
        executor.when_idle(self._keep_or_end)

    def _keep_or_end(self, executor: _RequestThread) -> None:
        with self._lock:
            if len(self._idle) < self._keep:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)


# The thread lent to the request being handled (`__call__`), for what must wait until nothing
# of the request runs on it any more.
_request_thread: contextvars.ContextVar[_RequestThread] = contextvars.ContextVar("request_thread")


class SynchronousChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._executors = _Executors(IDLE_REQUEST_THREADS_KEPT)
        self._respond_in_thread = sync_to_async(self._respond, thread_sensitive=True)
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, admission.Gate] = (
            weakref.WeakKeyDictionary()
        )

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)  # the synchronous chain, as under WSGI

    def _respond(self, request: ASGIRequest) -> HttpResponseBase:
        """In the request's thread: `request_started`, the chain and the view, and `close()`
        (so `request_finished`) unless the response streams or the request left work for
        after its answer (then `handle` closes it once it is sent)."""
        signals.request_started.send(sender=self.__class__, scope=request.scope)
        response = self.get_response(request)
        response._handler_class = self.__class__  # type: ignore[attr-defined]
        if isinstance(response, FileResponse):
            response.block_size = self.chunk_size
        if not response.streaming and not after_response.pending():
            response.close()
            request._finished_in_thread = True  # type: ignore[attr-defined]
        return response

    def _finish_unless_finished(self, request: HttpRequest) -> None:
        """For a request cancelled on the loop (its client left): queued on its thread behind
        the view, which may still be running and then closes its response itself."""
        if not getattr(request, "_finished_in_thread", False):
            signals.request_finished.send(sender=self.__class__)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._executors.borrow()
        token = _request_thread.set(executor)
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            _request_thread.reset(token)
            self._executors.give_back(executor)

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None  # Django's create_request gives one or the other
            body_file.close()
            await signals.request_started.asend(sender=self.__class__, scope=scope)
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        gate = self._placement_gate(request)

        async def process_request() -> HttpResponseBase:
            if gate is None:
                response = await self._respond_in_thread(request)
            else:
                response = await self._respond_admitted(gate, scope, body_file, request)
            with contextlib.suppress(asyncio.CancelledError):  # the client left meanwhile
                await self.send_response(response, send)
            return response

        # As Django's: the disconnect listener first, so that it cannot keep the request from
        # being cancelled.
        disconnected = asyncio.create_task(self.listen_for_disconnect(receive))
        responding = asyncio.create_task(process_request())
        await asyncio.wait([disconnected, responding], return_when=asyncio.FIRST_COMPLETED)
        for task in (disconnected, responding):
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = responding.result()
        except asyncio.CancelledError:
            await sync_to_async(self._finish_unless_finished, thread_sensitive=True)(request)
        else:
            if not getattr(request, "_finished_in_thread", False):
                # A streamed body, or work left for after the answer (common.after_response).
                await sync_to_async(response.close)()
        body_file.close()

    def _placement_gate(self, request: HttpRequest) -> admission.Gate | None:
        """The gate a placement waits at (one per event loop), None for any other request or
        with admission off (`placementSlotsPerProcess: 0`)."""
        if request.method != PLACEMENT_METHOD or request.path_info != PLACEMENT_PATH:
            return None
        control = settings.ORDER_MANAGEMENT.concurrency_control
        slots = control.placement_slots_per_process
        if not slots:
            return None
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None or gate.slots != slots:  # a test changed the settings
            gate = self._gates[loop] = admission.Gate(
                slots=slots, line_limit=control.max_queue_depth_per_account
            )
        return gate

    async def _respond_admitted(
        self, gate: admission.Gate, scope: Any, body_file: IO[bytes], request: ASGIRequest
    ) -> HttpResponseBase:
        """The response to a placement, once the gate admits it; 429 at once when its line is
        full (nothing stored, nothing sent: the request never reached Django)."""
        arrived = time.perf_counter()
        try:
            ticket = await gate.enter(_line_key(scope, body_file))
        except admission.AdmissionRefused as refused:
            request._finished_in_thread = True  # type: ignore[attr-defined]  # never started
            return _queue_full(refused.waiting)
        waited = time.perf_counter() - arrived
        try:
            with admission.admitted(ticket):
                response = await self._respond_in_thread(request)
        except asyncio.CancelledError:
            # The client went away; the view runs on in its thread, and spends the CPU the
            # slot stands for: the slot is given back once it ends, not now.
            loop = asyncio.get_running_loop()

            def leave_once_idle(_: _RequestThread) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed: the gate with it
                    loop.call_soon_threadsafe(gate.leave, ticket)

            thread = _request_thread.get(None)
            if thread is None:  # `handle` called without `__call__`: no thread to wait for
                gate.leave(ticket)
            else:
                thread.when_idle(leave_once_idle)
            raise
        except BaseException:
            gate.leave(ticket)
            raise
        gate.leave(ticket)
        steps = response.get("Server-Timing")
        if steps is not None:
            response["Server-Timing"] = f"admission;dur={waited * 1000:.2f}, {steps}"
        return response


def _line_key(scope: Any, body_file: IO[bytes]) -> Hashable:
    """A placement's line at the gate: its caller (the Authorization header, unchecked here)
    and the account its body names. Keyed by caller too, so that requests without a valid
    token cannot crowd an account's own bot out of its line."""
    authorization = next(
        (value for name, value in scope["headers"] if name == b"authorization"), b""
    )
    body = body_file.read(_LINE_KEY_BODY_BYTES)
    body_file.seek(0)
    try:
        fields = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return authorization, None
    account = fields.get("account") if isinstance(fields, dict) else None
    return authorization, account if isinstance(account, int | str) else None


def _queue_full(waiting: int) -> JsonResponse:
    metrics.placement_queue_rejections_total.inc()
    described = describe_error(PlacementQueueFull(waiting=waiting))
    assert described is not None  # a domain error: always described
    response = JsonResponse(described.body(), status=described.http_status)
    response["Retry-After"] = retry_after_header(described.retry_after or 1)
    return response
