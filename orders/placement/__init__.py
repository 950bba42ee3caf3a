"""Placing an order: `order_place` (services.py) stores it, takes the account's turn
(queue.py), sends it (submission.py), and answers from the outcome; a retry is answered from the
key's earlier outcome (replay.py); an order that never reached the broker frees its key
(release.py)."""

from orders.placement.release import order_release_unsent
from orders.placement.results import PlacementResult
from orders.placement.services import order_place

__all__ = ["PlacementResult", "order_place", "order_release_unsent"]
