"""What the market-data task tells the layers above, without importing them.

`prices_changed(prices={contract_id: Decimal})` is sent at most once per publish interval (a
few times a second), with the newest price of every contract that moved since the last one.
Sent from the market-data task's own thread, after the prices are in the cache.
"""

from __future__ import annotations

from django.dispatch import Signal

prices_changed = Signal()
