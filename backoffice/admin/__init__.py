"""The admin, one module per domain app. Django's autodiscovery imports this package."""

from backoffice.admin import accounts, fills, orders

__all__ = ["accounts", "fills", "orders"]
