from __future__ import annotations

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orders.desk.broadcasts import on_order_changed
        from orders.signals import order_changed

        order_changed.connect(on_order_changed, dispatch_uid="orders.desk.broadcast")
