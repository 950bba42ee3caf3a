from __future__ import annotations

from typing import Any

from django.apps import AppConfig


def _count_transition(
    sender: Any, order: Any, transition: Any, transitions: Any = None, **kwargs: Any
) -> None:
    """Metrics for committed changes (the signal is sent after commit, never on rollback);
    `transitions` holds every audit row of the order the commit wrote (a batch writes several)."""
    from common import metrics

    for record in transitions or [transition]:
        if record.from_state != record.to_state:  # same state: a field write, not a move
            metrics.order_lifecycle_transitions_total.labels(
                record.from_state, record.to_state, record.trigger
            ).inc()
        if record.is_correction:
            metrics.order_corrections_total.labels(record.from_state, record.to_state).inc()


class OrdersConfig(AppConfig):
    name = "orders"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orders.signals import order_changed

        # Apps are readied in INSTALLED_APPS order, so this counts before the desk's receiver
        # (a receiver that raises stops the ones after it).
        order_changed.connect(_count_transition, dispatch_uid="orders.metrics.transitions")
