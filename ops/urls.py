from __future__ import annotations

from django.urls import URLPattern, path

from ops.views import healthz, metrics_view, readyz

urlpatterns: list[URLPattern] = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
