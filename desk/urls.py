from __future__ import annotations

from django.urls import path

from desk import views

app_name = "desk"

urlpatterns = [
    path("", views.desk, name="desk"),
    path("snapshot/", views.snapshot, name="snapshot"),
    path("orders/<uuid:order_id>/", views.order_detail, name="order-detail"),
    path("orders/<uuid:order_id>/cancel/", views.order_cancel_view, name="order-cancel"),
    path("positions/close/", views.position_close_view, name="position-close"),
    path("ticket/", views.ticket_place_view, name="ticket-place"),
    path(
        "accounts/<int:account_id>/cancel-all/",
        views.account_cancel_all_view,
        name="account-cancel-all",
    ),
    path("health/", views.health_view, name="health"),
    path("chart/", views.chart_view, name="chart"),
    path(
        "accounts/<int:account_id>/flatten/",
        views.account_flatten_view,
        name="account-flatten",
    ),
]
