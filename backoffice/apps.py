from __future__ import annotations

from django.apps import AppConfig


class BackofficeConfig(AppConfig):
    """The Django admin for every domain model: review, and a few audited actions."""

    name = "backoffice"
    verbose_name = "Back office"
