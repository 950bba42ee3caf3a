from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from accounts.selectors import accounts_visible_to
from fills.models import Fill
from orders.models import Order, OrderTransition


def orders_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Order]:
    return Order.objects.filter(account__in=accounts_visible_to(user)).select_related("account")


def order_list(
    *,
    user: AbstractBaseUser | AnonymousUser,
    status: list[str] | None = None,
    account: int | None = None,
    contract_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Order]:
    orders = orders_visible_to(user)
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
    return orders


def order_transitions(*, order: Order) -> QuerySet[OrderTransition]:
    return order.transitions.order_by("version")


def order_fills(*, order: Order) -> QuerySet[Fill]:
    return Fill.objects.filter(order=order).order_by("broker_ts", "broker_trade_id")
