"""ASGI entry point: HTTP through Django, websockets (/ws/desk/) through Channels."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ordermgmt.settings")
# Django must be set up before anything that imports models (the websocket routing) is imported.
django.setup(set_prefix=False)

from ordermgmt.handlers import SynchronousChainASGIHandler  # noqa: E402

django_asgi_app = SynchronousChainASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from desk.auth import TokenAuthMiddleware  # noqa: E402
from desk.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)

from common.runtime import settle_garbage_collector  # noqa: E402

settle_garbage_collector()  # each worker imports this module once, when it starts
