"""Views for the ASGI handler's tests (tests/ordermgmt/test_asgi_handler.py): one that holds its
thread until told (also on the placement route, which waits at the gate), one that lets it go,
one that names its thread, one that streams."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, path
from django.views.decorators.csrf import csrf_exempt

from common import after_response

held_started = threading.Event()
release_held = threading.Event()
second_placement_started = threading.Event()
# What happened, in order, across the test and the views' threads.
events: list[str] = []


def hold(request: HttpRequest) -> HttpResponse:
    held_started.set()
    released = release_held.wait(timeout=30)
    return HttpResponse("released" if released else "never released")


@csrf_exempt
def hold_placement(request: HttpRequest) -> HttpResponse:
    """On the placement route: the first one holds its thread until told."""
    if held_started.is_set():
        second_placement_started.set()
        return HttpResponse("second")
    return hold(request)


def release(request: HttpRequest) -> HttpResponse:
    release_held.set()
    return HttpResponse("released")


def thread_name(request: HttpRequest) -> HttpResponse:
    return HttpResponse(threading.current_thread().name)


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def parts() -> Iterator[bytes]:
        for n in range(5):
            yield f"part {n};".encode()

    return StreamingHttpResponse(parts())


def deferring(request: HttpRequest) -> HttpResponse:
    after_response.defer(lambda: events.append("deferred work"))
    return HttpResponse("answer")


urlpatterns: list[URLPattern] = [
    path("api/v1/orders/", hold_placement),
    path("deferring", deferring),
    path("hold", hold),
    path("release", release),
    path("thread", thread_name),
    path("stream", stream),
]
