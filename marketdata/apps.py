from __future__ import annotations

from django.apps import AppConfig


class MarketdataConfig(AppConfig):
    """Last prices per contract (in the cache, never the database) from the broker's market
    hub, for the contracts we hold or work orders in; unrealized P&L from them."""

    name = "marketdata"

    def ready(self) -> None:
        from accounts.signals import position_changed
        from marketdata.feed import on_interest_changed
        from orders.signals import order_changed

        # A position or an order that changed may change which contracts we need quotes for:
        # wake the market-data task of this process, if one runs (others poll).
        order_changed.connect(on_interest_changed, dispatch_uid="marketdata.order_changed")
        position_changed.connect(on_interest_changed, dispatch_uid="marketdata.position_changed")
