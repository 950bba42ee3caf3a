from __future__ import annotations

from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: health and metrics endpoints, and the scheduled commands (archival, stuck
    orders, unknown-order verification, idempotency cleanup)."""

    name = "ops"
