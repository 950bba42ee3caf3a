"""Cancel all: the desk's button that cancels every working order of one account.

It is `orders.amend.order_cancel` once per order, with the version of the row the person saw
when they confirmed (the same check as each row's Cancel and the API's If-Match): an order that
changed since is refused with its current row, never cancelled on a picture that is out of date,
and a working order the page did not show is left alone and reported, so the person sees it and
decides. Each order's outcome is reported on its own; one refusal does not stop the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from accounts.models import Account
from desk.selectors import WORKING_STATES
from orders.amend import order_cancel
from orders.exceptions import describe_error
from orders.models import Order, TransitionTrigger


@dataclass
class CancelAllOutcome:
    cancelled: list[Order] = field(default_factory=list)  # cancelled or cancel sent (202)
    refused: list[tuple[Order, dict[str, Any]]] = field(default_factory=list)
    not_shown: list[Order] = field(default_factory=list)

    def as_dict(self, *, row: Callable[[Order], dict[str, Any]]) -> dict[str, Any]:
        return {
            "cancelled": [row(order) for order in self.cancelled],
            "refused": [{"row": row(order), **body} for order, body in self.refused],
            "not_shown": [row(order) for order in self.not_shown],
        }


def account_cancel_all(
    *, account: Account, versions: dict[str, int], actor: str
) -> CancelAllOutcome:
    outcome = CancelAllOutcome()
    working = Order.objects.filter(account=account, status__in=WORKING_STATES).select_related(
        "account"
    )
    for order in working.order_by("created_at"):
        expected = versions.get(str(order.pk))
        if expected is None:
            outcome.not_shown.append(order)
            continue
        try:
            done = order_cancel(
                order_id=order.pk,
                expected_version=expected,
                actor=actor,
                trigger=TransitionTrigger.ADMIN,
            )
        except Exception as exc:
            described = describe_error(exc)
            if described is None:
                raise
            outcome.refused.append((described.current or order, described.body()))
            continue
        outcome.cancelled.append(done)
    return outcome
