from __future__ import annotations

import uuid
from datetime import datetime

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from accounts.selectors import accounts_visible_to
from orders.models import (
    ArchivedOrder,
    ArchivedOrderTransition,
    Order,
    OrderIncludingArchived,
    OrderTransition,
)

# Any order a reader may hold: hot, archived, or a row of the view over both.
AnyOrder = Order | ArchivedOrder | OrderIncludingArchived


def orders_visible_to(user: User | AnonymousUser) -> QuerySet[Order]:
    return Order.objects.filter(account__in=accounts_visible_to(user)).select_related("account")


def orders_including_archived_visible_to(
    user: User | AnonymousUser,
) -> QuerySet[OrderIncludingArchived]:
    """Hot and archived orders in one queryset (the database view over both tables)."""
    return OrderIncludingArchived.objects.filter(
        account__in=accounts_visible_to(user)
    ).select_related("account")


def order_list(
    *,
    user: User | AnonymousUser,
    status: list[str] | None = None,
    account: int | None = None,
    contract_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    overfilled: bool | None = None,
    include_archived: bool = False,
    parent: uuid.UUID | None = None,
) -> QuerySet[Order] | QuerySet[OrderIncludingArchived]:
    orders: QuerySet[Order] | QuerySet[OrderIncludingArchived] = (
        orders_including_archived_visible_to(user) if include_archived else orders_visible_to(user)
    )
    if status:
        orders = orders.filter(status__in=status)
    if account is not None:
        orders = orders.filter(account__broker_account_id=account)
    if contract_id:
        orders = orders.filter(contract_id=contract_id)
    if created_after is not None:
        orders = orders.filter(created_at__gte=created_after)
    if created_before is not None:
        orders = orders.filter(created_at__lt=created_before)
    if overfilled is not None:
        orders = orders.filter(overfilled=overfilled)
    if parent is not None:
        orders = orders.filter(bracket_parent_id=parent)
    return orders


def is_archived(order: AnyOrder) -> bool:
    return isinstance(order, ArchivedOrder) or bool(getattr(order, "archived", False))


def order_transitions(
    *, order: AnyOrder
) -> QuerySet[OrderTransition] | QuerySet[ArchivedOrderTransition]:
    if is_archived(order):
        return ArchivedOrderTransition.objects.filter(order_id=order.pk).order_by("version")
    return OrderTransition.objects.filter(order_id=order.pk).order_by("version")
