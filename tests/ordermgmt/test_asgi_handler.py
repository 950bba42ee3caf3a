"""The ASGI handler (ordermgmt/handlers.py) serves each request on a thread of its own while it
runs, keeps those threads from one request to the next, and still sends `request_finished`
(which gives the database connection back) once per request, after a streamed body is sent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core import signals
from django.test import override_settings

from common import after_response
from ordermgmt.handlers import PLACEMENT_PATH, SynchronousChainASGIHandler
from tests.ordermgmt import asgi_urls

# Bounds for a test that would otherwise hang: each is far above what the step takes.
STEP_TIMEOUT = 10.0
# How long a placement admitted past a slot still in use would take to reach its view: at most
# milliseconds; what does not happen within this does not happen.
SLOT_KEPT_SECONDS = 1.0


def _scope(path: str, method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _get(
    app: SynchronousChainASGIHandler,
    path: str,
    leave: asyncio.Event | None = None,
    method: str = "GET",
) -> tuple[int | None, bytes]:
    """GET (or `method`) `path`; the client goes away when `leave` is set (else once the answer
    is in)."""
    answered = asyncio.Event()
    status: list[int] = []
    body = bytearray()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await (leave or answered).wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not message.get("more_body"):
                asgi_urls.events.append("answer sent")
                answered.set()

    await app(_scope(path, method), receive, send)
    return (status[0] if status else None), bytes(body)


@pytest.fixture
def app() -> Iterator[SynchronousChainASGIHandler]:
    asgi_urls.held_started.clear()
    asgi_urls.release_held.clear()
    asgi_urls.second_placement_started.clear()
    asgi_urls.events.clear()
    with override_settings(ROOT_URLCONF="tests.ordermgmt.asgi_urls"):
        yield SynchronousChainASGIHandler()
    asgi_urls.release_held.set()  # a view still held ends


@pytest.fixture
def finished() -> Iterator[list[str]]:
    """Names of the threads `request_finished` was sent on, one entry per sending."""
    seen: list[str] = []

    def record(**_: Any) -> None:
        seen.append(threading.current_thread().name)

    signals.request_finished.connect(record)
    yield seen
    signals.request_finished.disconnect(record)


def test_two_requests_run_side_by_side(app: SynchronousChainASGIHandler) -> None:
    async def both() -> tuple[tuple[int | None, bytes], tuple[int | None, bytes]]:
        held = asyncio.create_task(_get(app, "/hold"))
        await asyncio.to_thread(asgi_urls.held_started.wait, STEP_TIMEOUT)
        # should answer the second request while the first still runs, and so free the first
        releasing = await asyncio.wait_for(_get(app, "/release"), STEP_TIMEOUT)
        return releasing, await asyncio.wait_for(held, STEP_TIMEOUT)

    releasing, held = asyncio.run(both())
    assert releasing == (200, b"released")
    assert held == (200, b"released")


def test_a_request_whose_client_left_does_not_hold_up_the_next(
    app: SynchronousChainASGIHandler, finished: list[str]
) -> None:
    async def scenario() -> tuple[int | None, bytes]:
        leave = asyncio.Event()
        abandoned = asyncio.create_task(_get(app, "/hold", leave=leave))
        await asyncio.to_thread(asgi_urls.held_started.wait, STEP_TIMEOUT)
        leave.set()  # the client goes away; its view still runs, holding its thread
        # should be served on another thread at once, not queued behind the abandoned view
        served = await asyncio.wait_for(_get(app, "/thread"), STEP_TIMEOUT)
        asgi_urls.release_held.set()
        await asyncio.wait_for(abandoned, STEP_TIMEOUT)
        return served

    status, _ = asyncio.run(scenario())
    assert status == 200
    # the abandoned request was finished too (its connection given back), and the next one
    assert len(finished) == 2


def test_a_placement_whose_client_left_keeps_its_slot_until_its_view_ends(
    app: SynchronousChainASGIHandler, tune: Callable[..., None]
) -> None:
    tune("concurrency_control", placement_slots_per_process=1)

    async def scenario() -> tuple[bool, tuple[int | None, bytes]]:
        leave = asyncio.Event()
        abandoned = asyncio.create_task(_get(app, PLACEMENT_PATH, leave=leave, method="POST"))
        await asyncio.to_thread(asgi_urls.held_started.wait, STEP_TIMEOUT)
        leave.set()  # the client goes away; its view still runs, on the only slot
        second = asyncio.create_task(_get(app, PLACEMENT_PATH, method="POST"))
        # A bound, not a synchronisation: given the slot, the second view starts at once.
        admitted = await asyncio.to_thread(
            asgi_urls.second_placement_started.wait, SLOT_KEPT_SECONDS
        )
        asgi_urls.release_held.set()
        await asyncio.wait_for(abandoned, STEP_TIMEOUT)
        return admitted, await asyncio.wait_for(second, STEP_TIMEOUT)

    admitted_while_held, answer = asyncio.run(scenario())
    # should keep the next placement at the gate while the abandoned one still runs (its CPU is
    # still spent), then admit it
    assert not admitted_while_held
    assert answer == (200, b"second")


def test_requests_one_after_another_keep_their_thread(
    app: SynchronousChainASGIHandler, finished: list[str]
) -> None:
    async def in_turn() -> list[tuple[int | None, bytes]]:
        return [await _get(app, "/thread") for _ in range(20)]

    answers = asyncio.run(in_turn())
    assert {status for status, _ in answers} == {200}
    # should serve them all on one kept thread, not start a thread per request
    assert len({name for _, name in answers}) == 1
    # should send request_finished once per request, on the request's own thread
    assert finished == [answers[0][1].decode()] * 20


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
def test_a_streamed_body_is_sent_whole_and_finished_after(
    app: SynchronousChainASGIHandler, finished: list[str]
) -> None:
    status, body = asyncio.run(_get(app, "/stream"))
    assert (status, body) == (200, b"part 0;part 1;part 2;part 3;part 4;")
    assert len(finished) == 1


def test_work_left_for_after_the_answer_runs_once_it_is_sent_and_before_the_request_ends(
    app: SynchronousChainASGIHandler, finished: list[str]
) -> None:
    status, body = asyncio.run(_get(app, "/deferring"))

    assert (status, body) == (200, b"answer")
    # should not keep the client waiting for it, and should not drop it
    assert asgi_urls.events == ["answer sent", "deferred work"]
    assert len(finished) == 1


def test_work_deferred_outside_a_request_runs_at_once() -> None:
    done: list[str] = []
    after_response.defer(lambda: done.append("work"))
    assert done == ["work"]
