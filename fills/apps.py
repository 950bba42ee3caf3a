from __future__ import annotations

import logging
import uuid
from typing import Any

from django.apps import AppConfig
from django.db import connection

from common.statements import execute_prepared

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
    from fills.services import fills_attach_orphans

    try:
        # Almost every order learns its broker id with no fill ahead of it: one indexed look
        # in autocommit instead of a locking transaction whose row lock costs a durable commit
        # after every placement answer. A fill the listener commits after this look finds the
        # order's broker id itself, as it would after the attaching transaction too; the
        # sweep catches the rest.
        if not _orphan_fill_exists(account_id=order.account_id, broker_id=order.broker_order_id):
            return
        fills_attach_orphans(order_id=order.pk)
    except Exception:
        logger.warning("attaching earlier fills to order %s failed", order.pk, exc_info=True)


def _orphan_fill_exists(*, account_id: int, broker_id: int) -> bool:
    from fills.models import Fill

    # Written out: it runs after every placement answer, and building the queryset cost
    # several times the statement's own CPU (py-spy). The index fill_account_broker_order
    # answers it.
    table = connection.ops.quote_name(Fill._meta.db_table)
    with connection.cursor() as cursor:
        execute_prepared(
            cursor,
            f"SELECT 1 FROM {table} WHERE account_id = %s AND broker_order_id = %s"
            " AND order_id IS NULL LIMIT 1",
            [account_id, broker_id],
        )
        return cursor.fetchone() is not None


class FillsConfig(AppConfig):
    name = "fills"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orders.signals import order_changed, order_fills_missing

        order_fills_missing.connect(_fetch_missing_fills, dispatch_uid="fills.backfill")
        order_changed.connect(_attach_orphans_on_broker_id, dispatch_uid="fills.orphans")
