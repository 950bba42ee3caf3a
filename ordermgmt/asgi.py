"""ASGI entry point: HTTP through Django, websockets through Channels (added with the desk)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ordermgmt.settings")
# Django must be set up before anything that imports models (the websocket routing) is imported.
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.EMBEDDED or settings.DEBUG:
    # One-process runs (make run) serve the admin's and the docs' static files themselves;
    # a production deployment puts them behind the web server (collectstatic).
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

application = django_asgi_app
