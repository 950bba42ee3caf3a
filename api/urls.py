from __future__ import annotations

from django.urls import path

from api.views.accounts import (
    AccountFlattenApi,
    AccountHaltApi,
    AccountListApi,
    AccountResumeApi,
    PositionListApi,
)
from api.views.orders import (
    OrderCancelApi,
    OrderDetailApi,
    OrderFillsApi,
    OrderListCreateApi,
    OrderTransitionsApi,
    PositionCloseApi,
)

app_name = "api"

urlpatterns = [
    path("accounts/", AccountListApi.as_view(), name="account-list"),
    path("accounts/<int:account_id>/halt", AccountHaltApi.as_view(), name="account-halt"),
    path("accounts/<int:account_id>/resume", AccountResumeApi.as_view(), name="account-resume"),
    path("accounts/<int:account_id>/flatten", AccountFlattenApi.as_view(), name="account-flatten"),
    path("orders/", OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<uuid:order_id>/", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<uuid:order_id>/cancel/", OrderCancelApi.as_view(), name="order-cancel"),
    path(
        "orders/<uuid:order_id>/transitions/",
        OrderTransitionsApi.as_view(),
        name="order-transitions",
    ),
    path("orders/<uuid:order_id>/fills/", OrderFillsApi.as_view(), name="order-fills"),
    path("positions/", PositionListApi.as_view(), name="position-list"),
    path("positions/close", PositionCloseApi.as_view(), name="position-close"),
]
