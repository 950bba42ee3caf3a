"""ASGI entry point: HTTP through Django, websockets through Channels (added with the desk)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ordermgmt.settings")
# Django must be set up before anything that imports models (the websocket routing) is imported.
django_asgi_app = get_asgi_application()

application = django_asgi_app
