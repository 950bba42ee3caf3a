"""Unrealized P&L in the API: exact Decimal from the contract's tick size and tick value, long
and short, null without a price; the account's figure is the sum of its positions'."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.models import Contract, Position
from marketdata.pnl import unrealized_pnl
from marketdata.services import prices_record
from tests.factories import make_account

pytestmark = pytest.mark.django_db

MNQ = "CON.F.US.MNQ.Z26"
MES = "CON.F.US.MES.Z26"


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def book():
    """One account long 3 MNQ at an average between ticks and short 2 MES, seen by a bot."""
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    Contract.objects.create(
        contract_id=MNQ, name="MNQZ6", tick_size=Decimal("0.25"), tick_value=Decimal("0.50")
    )
    Contract.objects.create(
        contract_id=MES, name="MESZ6", tick_size=Decimal("0.25"), tick_value=Decimal("1.25")
    )
    account = make_account(broker_account_id=1001)
    Position.objects.create(
        account=account, contract_id=MNQ, type="long", size=3, average_price=Decimal("21000.125")
    )
    Position.objects.create(
        account=account, contract_id=MES, type="short", size=2, average_price=Decimal("6010.00")
    )
    user = User.objects.create_user("bot")
    account.members.add(user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def positions(client: APIClient) -> dict[str, dict]:
    response = client.get("/api/v1/positions/")
    assert response.status_code == 200, response.content
    return {row["contract_id"]: row for row in response.json()}


def test_it_computes_long_and_short_pnl_exactly_from_tick_size_and_value() -> None:
    # should be +10.5 ticks of 0.50 on 3 contracts, long
    assert unrealized_pnl(
        position_type="long",
        size=3,
        average_price=Decimal("21000.125"),
        last_price=Decimal("21002.75"),
        tick_size=Decimal("0.25"),
        tick_value=Decimal("0.50"),
    ) == Decimal("15.75")
    # should be a loss for a short when the price rises: -3 ticks of 0.50 on 2 contracts
    assert unrealized_pnl(
        position_type="short",
        size=2,
        average_price=Decimal("21000.00"),
        last_price=Decimal("21000.75"),
        tick_size=Decimal("0.25"),
        tick_value=Decimal("0.50"),
    ) == Decimal("-3.00")
    # should say nothing without a price
    assert (
        unrealized_pnl(
            position_type="long",
            size=1,
            average_price=Decimal("1"),
            last_price=None,
            tick_size=Decimal("0.25"),
            tick_value=Decimal("0.50"),
        )
        is None
    )


def test_positions_show_null_until_a_price_is_known(book: APIClient) -> None:
    rows = positions(book)
    # should list the new fields, null without a price
    assert rows[MNQ]["last_price"] is None and rows[MNQ]["unrealized_pnl"] is None
    [account] = book.get("/api/v1/accounts/").json()
    # should not add up a partial sum for the account
    assert account["unrealized_pnl"] is None


def test_positions_and_account_carry_last_price_and_exact_pnl(book: APIClient) -> None:
    prices_record(prices={MNQ: Decimal("21002.75"), MES: Decimal("6012.50")}, at=datetime.now(UTC))
    rows = positions(book)
    # should show the cached last price and the long's gain: 10.5 ticks x 0.50 x 3
    assert rows[MNQ]["last_price"] == "21002.75"
    assert rows[MNQ]["unrealized_pnl"] == "15.75"
    # should show the short's loss: the price rose 10 ticks; 10 x 1.25 x 2
    assert rows[MES]["last_price"] == "6012.5"
    assert rows[MES]["unrealized_pnl"] == "-25"
    [account] = book.get("/api/v1/accounts/").json()
    # should be the exact sum of its positions
    assert Decimal(account["unrealized_pnl"]) == Decimal("15.75") - Decimal("25")
    assert account["unrealized_pnl"] == "-9.25"


def test_a_flat_account_has_zero_unrealized_pnl(book: APIClient) -> None:
    Position.objects.update(type="flat", size=0)
    [account] = book.get("/api/v1/accounts/").json()
    # should be zero, not unknown: there is nothing to price
    assert account["unrealized_pnl"] == "0"
    # should list no position
    assert positions(book) == {}
