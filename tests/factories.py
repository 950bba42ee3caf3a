"""Small builders for test data; each test states what matters and takes defaults for the rest."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from accounts.models import Account
from orders.models import Order
from orders.services import order_create

_account_ids = itertools.count(90_001)


def make_account(**overrides: Any) -> Account:
    broker_id = overrides.pop("broker_account_id", next(_account_ids))
    defaults: dict[str, Any] = {
        "name": f"PRAC-{broker_id}",
        "balance": Decimal("50000.00"),
        "can_trade": True,
        "simulated": True,
    }
    defaults.update(overrides)
    return Account.objects.create(broker_account_id=broker_id, **defaults)


def make_order(account: Account | None = None, **overrides: Any) -> Order:
    account = account or make_account()
    fields: dict[str, Any] = {
        "contract_id": "CON.F.US.MNQ.Z26",
        "side": "buy",
        "type": "limit",
        "size": 2,
        "limit_price": Decimal("21000.25"),
    }
    fields.update(overrides)
    return order_create(account_id=account.pk, **fields)
