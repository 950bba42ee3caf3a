"""Django's ASGI handler, with the middleware chain and the view in one synchronous call.

With every middleware synchronous (ordermgmt/middleware.py) Django still builds its ASGI chain
around the asynchronous `_get_response_async`: the request went to its thread for the
middlewares, back to the event loop to resolve the URL, to the thread again for the view, and
back twice more on the way out; four thread hops a request where two do (a third of the event
loop's work for an idempotent replay, py-spy). Here the chain is built as under WSGI (the
synchronous `_get_response` at its core) and the loop calls it once, in the request's thread.
Nothing else changes: the same middlewares, the same thread per request, the same signals.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SynchronousChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        chain: Any = self._middleware_chain  # type: ignore[has-type]  # set by the line above
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)
