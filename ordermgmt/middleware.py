"""WhiteNoise without breaking the asynchronous middleware chain.

WhiteNoise's middleware is synchronous only. Under ASGI one synchronous middleware in the
chain makes Django run the chain above it in a thread and hop back onto the event loop for the
chain below it, then into a thread again for the view: two extra thread hops on every request,
about a millisecond each on a loaded machine, for a dictionary lookup that finds nothing on
every API call. This wrapper is async-capable: it looks the path up in WhiteNoise's table of
static files and only serves (in a thread) when there is a file.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware  # type: ignore[import-untyped]


class StaticFilesMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.whitenoise = WhiteNoiseMiddleware(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return self.whitenoise(request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        whitenoise = self.whitenoise
        if whitenoise.autorefresh:  # DEBUG: files are looked up on disk, in a thread
            static_file = await sync_to_async(whitenoise.find_file)(request.path_info)
        else:
            static_file = whitenoise.files.get(request.path_info)
        if static_file is not None:
            response: HttpResponseBase = await sync_to_async(whitenoise.serve)(static_file, request)
            return response
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        return await get_response(request)
