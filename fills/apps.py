from __future__ import annotations

from django.apps import AppConfig


class FillsConfig(AppConfig):
    name = "fills"
    default_auto_field = "django.db.models.BigAutoField"
