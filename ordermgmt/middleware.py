"""The middleware chain, synchronous from end to end.

Under ASGI, Django runs a synchronous view in a thread. An async-capable middleware in the chain
(all of Django's own are, through `MiddlewareMixin`) runs on the event loop and sends each of
its `process_request` and `process_response` into that thread and back: with the eight below,
about a dozen thread hops on every request, each a wake-up of the thread and of the loop, and
under load each costs a GIL hand-over among dozens of request threads. Declared synchronous
only, the whole chain and the view run in one call in the request's thread (with the handler
of ordermgmt/handlers.py, which builds the chain around Django's synchronous core): one hop
there and one back. (No view of the system is asynchronous; the desk's WebSockets do not pass here.)

WhiteNoise's middleware is synchronous already; it serves the static files (admin, API docs,
the desk) from the app itself, so one process serves the whole system.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.contrib.messages.middleware import MessageMiddleware as _Message
from django.contrib.sessions.middleware import SessionMiddleware as _Session
from django.middleware.clickjacking import XFrameOptionsMiddleware as _XFrameOptions
from django.middleware.common import CommonMiddleware as _Common
from django.middleware.csrf import CsrfViewMiddleware as _CsrfView
from django.middleware.security import SecurityMiddleware as _Security
from whitenoise.middleware import WhiteNoiseMiddleware  # type: ignore[import-untyped]


def _synchronous(middleware: type[Any]) -> type[Any]:
    return type(
        middleware.__name__,
        (middleware,),
        {
            "async_capable": False,
            "sync_capable": True,
            "__module__": __name__,
            "__doc__": f"{middleware.__module__}.{middleware.__name__}, synchronous only.",
        },
    )


SecurityMiddleware = _synchronous(_Security)
StaticFilesMiddleware = _synchronous(WhiteNoiseMiddleware)
SessionMiddleware = _synchronous(_Session)
CommonMiddleware = _synchronous(_Common)
CsrfViewMiddleware = _synchronous(_CsrfView)
AuthenticationMiddleware = _synchronous(_Authentication)
MessageMiddleware = _synchronous(_Message)
XFrameOptionsMiddleware = _synchronous(_XFrameOptions)
