"""orderManagement.risk: validated like every other key, with the trading day it defines."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ordermgmt.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "order_management.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_file_has_no_limit_and_the_documented_trading_day() -> None:
    risk = load_config(DEFAULT_CONFIG_PATH).risk
    # should ship with every limit off, reduce-only on the loss limit, 17:00 Chicago
    assert (risk.max_order_size, risk.max_position_size, risk.daily_loss_limit) == (None,) * 3
    assert risk.on_daily_loss_limit == "reduce_only"
    start, zone = risk.trading_day_start()
    assert (start, str(zone)) == (time(17, 0), "America/Chicago")


def test_a_loss_limit_reads_as_an_exact_decimal(tmp_path: Path) -> None:
    # should keep the amount as written, not as a float
    assert load_config(
        write(tmp_path, "orderManagement:\n  risk:\n    dailyLossLimit: 1000.10\n")
    ).risk.daily_loss_limit == Decimal("1000.10")


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("maxOrderSize: 0", "orderManagement.risk.maxOrderSize: Input should be greater than"),
        ("maxPositionSize: '5'", "orderManagement.risk.maxPositionSize: Input should be a valid"),
        ("dailyLossLimit: -10", "orderManagement.risk.dailyLossLimit: Input should be greater"),
        ("onDailyLossLimit: flatten", "orderManagement.risk.onDailyLossLimit: Input should be"),
        ("tradingDayStartsAt: '5pm Chicago'", "tradingDayStartsAt must read"),
        ("tradingDayStartsAt: '17:00 Mars/Olympus'", "unknown time zone 'Mars/Olympus'"),
        ("maxOrdersPerMinit: 10", "orderManagement.risk.maxOrdersPerMinit: unknown key"),
    ],
)
def test_a_bad_risk_key_stops_start_up_naming_it(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"orderManagement:\n  risk:\n    {yaml_text}\n"))
    # should name the key and the reason
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("at", "day"),
    [
        (datetime(2026, 12, 1, 22, 59, tzinfo=UTC), date(2026, 11, 30)),  # 16:59 CST
        (datetime(2026, 12, 1, 23, 0, tzinfo=UTC), date(2026, 12, 1)),  # 17:00 CST
        (datetime(2026, 7, 1, 22, 0, tzinfo=UTC), date(2026, 7, 1)),  # 17:00 CDT (summer)
        (datetime(2026, 7, 1, 21, 59, tzinfo=UTC), date(2026, 6, 30)),
    ],
)
def test_the_trading_day_begins_at_17_00_chicago(at: datetime, day: date) -> None:
    from accounts.selectors import trading_day

    # should put a trade in the day that began at the last 17:00 in Chicago (DST included)
    assert trading_day(at) == day


@given(
    ats=st.lists(
        st.datetimes(
            min_value=datetime(2026, 3, 6), max_value=datetime(2026, 3, 10), timezones=st.just(UTC)
        ),
        max_size=40,
    ),
    sort=st.booleans(),
)
def test_the_trading_days_of_many_trades_are_each_trades_own(
    ats: list[datetime], sort: bool
) -> None:
    from accounts.selectors import trading_day, trading_days

    # should agree with the day of each trade alone, across day boundaries and the start of
    # daylight saving time in Chicago (2026-03-08), in time order or not
    ats = sorted(ats) if sort else ats
    assert trading_days(ats) == [trading_day(at) for at in ats]
