from __future__ import annotations

import logging
import uuid
from typing import Any

from django.apps import AppConfig

logger = logging.getLogger(__name__)


def _fetch_missing_fills(sender: Any, order_id: uuid.UUID | str, **kwargs: Any) -> None:
    from fills.services import defer_backfill, fills_backfill

    if defer_backfill.get():
        return
    try:
        fills_backfill(order_id=order_id)
    except Exception:  # the sweep retries; a failed backfill must not fail the caller
        logger.warning("backfill of order %s failed; the sweep will retry", order_id, exc_info=True)


def _attach_orphans_on_broker_id(
    sender: Any, order: Any, transition: Any, transitions: Any = None, **kwargs: Any
) -> None:
    if not any(
        "broker_order_id" in (record.changed_fields or {}) for record in transitions or [transition]
    ):
        return
    if order.broker_order_id is None:
        return
    from fills.models import Fill
    from fills.services import fills_attach_orphans

    try:
        # Almost every order learns its broker id with no fill ahead of it: one indexed
        # EXISTS in autocommit (fill_account_broker_order) instead of a locking transaction
        # whose row lock costs a durable commit after every placement answer. A fill the
        # listener commits after this look finds the order's broker id itself, as it would
        # after the attaching transaction too; the sweep catches the rest.
        if not Fill.objects.filter(
            account_id=order.account_id, broker_order_id=order.broker_order_id, order__isnull=True
        ).exists():
            return
        fills_attach_orphans(order_id=order.pk)
    except Exception:
        logger.warning("attaching earlier fills to order %s failed", order.pk, exc_info=True)


class FillsConfig(AppConfig):
    name = "fills"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orders.signals import order_changed, order_fills_missing

        order_fills_missing.connect(_fetch_missing_fills, dispatch_uid="fills.backfill")
        order_changed.connect(_attach_orphans_on_broker_id, dispatch_uid="fills.orphans")
