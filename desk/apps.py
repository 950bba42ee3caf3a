from __future__ import annotations

from django.apps import AppConfig


class DeskConfig(AppConfig):
    """The live desk: a page, its snapshot and actions, and a websocket fed by the domain's
    signals (`order_changed`, `position_changed`, `prices_changed`), which it subscribes to here."""

    name = "desk"

    def ready(self) -> None:
        from accounts.signals import position_changed
        from desk.broadcasts import on_order_changed, on_position_changed, on_prices_changed
        from marketdata.signals import prices_changed
        from orders.signals import order_changed

        order_changed.connect(on_order_changed, dispatch_uid="desk.broadcast")
        position_changed.connect(on_position_changed, dispatch_uid="desk.broadcast.position")
        prices_changed.connect(on_prices_changed, dispatch_uid="desk.broadcast.prices")
