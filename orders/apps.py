from __future__ import annotations

from typing import Any

from django.apps import AppConfig


def _count_transition(sender: Any, order: Any, transition: Any, **kwargs: Any) -> None:
    """Metrics for a committed change (the signal is sent after commit, never on rollback)."""
    from common import metrics

    if transition.from_state != transition.to_state:  # same state: a field write, not a move
        metrics.order_lifecycle_transitions_total.labels(
            transition.from_state, transition.to_state, transition.trigger
        ).inc()
    if transition.is_correction:
        metrics.order_corrections_total.labels(transition.from_state, transition.to_state).inc()


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orders.signals import order_changed

        # Apps are readied in INSTALLED_APPS order, so this counts before the desk's receiver
        # (a receiver that raises stops the ones after it).
        order_changed.connect(_count_transition, dispatch_uid="orders.metrics.transitions")
