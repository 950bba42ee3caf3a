"""Reads of fills."""

from __future__ import annotations

from django.db.models import QuerySet

from fills.models import ArchivedFill, Fill
from orders.selectors import AnyOrder, is_archived


def order_fills(*, order: AnyOrder) -> QuerySet[Fill] | QuerySet[ArchivedFill]:
    """An order's fills in the broker's time order, from the archive for an archived order."""
    model = ArchivedFill if is_archived(order) else Fill
    return model.objects.filter(order_id=order.pk).order_by("broker_ts", "broker_trade_id")
