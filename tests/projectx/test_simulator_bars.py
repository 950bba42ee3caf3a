"""`POST /api/History/retrieveBars` on the simulator [4.3]: every unit, counts, ordering, OHLC
consistency, the partial bar, limits and error codes; bars come from the generated history and
the live tape."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from projectx.enums import AggregateBarUnit, RetrieveBarErrorCode
from projectx.simulator import DEMO_CONTRACT_ID, GatewaySimulator
from projectx.simulator.testing import api_client, running_simulator
from projectx.simulator.wire import format_timestamp, parse_json, parse_timestamp

pytestmark = pytest.mark.timeout(60)

MNQ = DEMO_CONTRACT_ID
TICK = Decimal("0.25")
U = AggregateBarUnit


@pytest.fixture(scope="module")
def month_of_history() -> Iterator[tuple[GatewaySimulator, httpx.Client]]:
    with (
        running_simulator(seed=5, history_days=62) as simulator,
        api_client(simulator, simulator.issue_token("demo")) as client,
    ):
        yield simulator, client


def bars_request(client: httpx.Client, **overrides: Any) -> httpx.Response:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "contractId": MNQ,
        "live": False,
        "startTime": format_timestamp(now - timedelta(days=3)),
        "endTime": format_timestamp(now + timedelta(minutes=1)),
        "unit": U.MINUTE,
        "unitNumber": 1,
        "limit": 20_000,
        "includePartialBar": False,
        **overrides,
    }
    return client.post("History/retrieveBars", json=body)


def bars(client: httpx.Client, **overrides: Any) -> list[dict[str, Any]]:
    response = bars_request(client, **overrides)
    assert response.status_code == 200, response.text
    body = parse_json(response.content)
    assert body["success"] is True, body
    return list(body["bars"])


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@pytest.mark.parametrize(
    ("unit", "unit_number", "days"),
    [
        (U.SECOND, 1, 0.02),
        (U.SECOND, 30, 0.05),
        (U.MINUTE, 1, 1),
        (U.MINUTE, 15, 2),
        (U.HOUR, 1, 3),
        (U.HOUR, 4, 10),
        (U.DAY, 1, 40),
        (U.WEEK, 1, 60),
        (U.MONTH, 1, 62),
        (U.TICK, 1, 0.01),
        (U.TICK, 100, 1),
    ],
)
def test_every_unit_gives_consistent_bars_newest_first(
    month_of_history: tuple[GatewaySimulator, httpx.Client],
    unit: AggregateBarUnit,
    unit_number: int,
    days: float,
) -> None:
    _, client = month_of_history
    now = datetime.now(UTC)
    found = bars(
        client,
        unit=unit,
        unitNumber=unit_number,
        startTime=format_timestamp(now - timedelta(days=days)),
        includePartialBar=True,
    )
    assert found, "no bars"
    times = [parse_timestamp(bar["t"]) for bar in found]
    # Should: newest first, one bar per bucket.
    assert times == sorted(times, reverse=True) and len(set(times)) == len(times)
    for bar, moment in zip(found, times, strict=True):
        assert set(bar) == {"t", "o", "h", "l", "c", "v"}
        # Should: high and low bound open and close; prices are on the tick; volume counts.
        assert bar["l"] <= min(bar["o"], bar["c"]) <= max(bar["o"], bar["c"]) <= bar["h"]
        assert all(bar[k] % TICK == 0 for k in "ohlc") and bar["v"] > 0
        # Should: time bars start on their unit's boundary.
        if unit in (U.SECOND, U.MINUTE, U.HOUR, U.DAY):
            width = {U.SECOND: 1, U.MINUTE: 60, U.HOUR: 3600, U.DAY: 86400}[unit] * unit_number
            assert moment.timestamp() % width == 0
        elif unit == U.WEEK:
            assert moment.weekday() == 0 and moment.time() == datetime.min.time()
        elif unit == U.MONTH:
            assert moment.day == 1 and moment.time() == datetime.min.time()


def test_counts_over_the_generated_history(
    month_of_history: tuple[GatewaySimulator, httpx.Client],
) -> None:
    _, client = month_of_history
    end = minute_floor(datetime.now(UTC)) - timedelta(hours=2)
    window = {
        "startTime": format_timestamp(end - timedelta(hours=3)),
        "endTime": format_timestamp(end),
    }
    # Should: history has a bar every minute, four prints a minute.
    assert len(bars(client, **window, unit=U.MINUTE)) == 180
    assert len(bars(client, **window, unit=U.MINUTE, unitNumber=5)) == 36
    assert len(bars(client, **window, unit=U.SECOND)) == 180 * 4
    assert len(bars(client, **window, unit=U.TICK, unitNumber=2)) == 180 * 2
    # Should: `limit` keeps the newest bars.
    newest = bars(client, **window, unit=U.MINUTE, limit=10)
    assert newest == bars(client, **window, unit=U.MINUTE)[:10]


def test_an_hour_bar_is_its_sixty_minute_bars(
    month_of_history: tuple[GatewaySimulator, httpx.Client],
) -> None:
    _, client = month_of_history
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    window = {
        "startTime": format_timestamp(hour),
        "endTime": format_timestamp(hour + timedelta(hours=1)),
    }
    (hour_bar,) = bars(client, **window, unit=U.HOUR)
    minutes = bars(client, **window, unit=U.MINUTE)[::-1]
    assert len(minutes) == 60
    # Should: aggregating by hour agrees with aggregating by minute.
    assert hour_bar["o"] == minutes[0]["o"] and hour_bar["c"] == minutes[-1]["c"]
    assert hour_bar["h"] == max(m["h"] for m in minutes)
    assert hour_bar["l"] == min(m["l"] for m in minutes)
    assert hour_bar["v"] == sum(m["v"] for m in minutes)


def test_the_forming_bar_comes_only_with_include_partial_bar(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    # The print and both reads must fall in one minute, or "the current minute" names two bars
    # (it failed once in CI: the reads at 00:08:59.99, the check at 00:09:00.02). Near a minute's
    # end the test starts in the next one; the clock is the simulator's wall clock, not injectable.
    start = datetime.now(UTC)
    if start.second >= 58:
        time.sleep(60.05 - start.second - start.microsecond / 1e6)
    minute = minute_floor(datetime.now(UTC))
    simulator.set_price(MNQ, "21003.75")
    window = {"startTime": format_timestamp(minute - timedelta(minutes=10))}
    with_partial = bars(simulator_api, **window, includePartialBar=True)
    without = bars(simulator_api, **window)
    assert minute_floor(datetime.now(UTC)) == minute, "the reads took over two seconds"
    # Should: the bar of the current minute is the newest, and holds the live print...
    assert parse_timestamp(with_partial[0]["t"]) == minute
    assert with_partial[0]["c"] == Decimal("21003.75")
    # ...and it is left out unless asked for.
    assert without == with_partial[1:]
    # Should: the live tape continues where history ends.
    assert with_partial[1]["c"] == Decimal("21000")


def test_history_is_the_same_for_the_same_seed() -> None:
    def history_closes(seed: int) -> list[Any]:
        with (
            running_simulator(seed=seed, history_days=1) as simulator,
            api_client(simulator, simulator.issue_token("demo")) as client,
        ):
            end = minute_floor(datetime.now(UTC)) - timedelta(minutes=5)
            found = bars(
                client,
                startTime=format_timestamp(end - timedelta(hours=2)),
                endTime=format_timestamp(end),
                unit=U.HOUR,
            )
            return [(bar["o"], bar["h"], bar["l"], bar["c"], bar["v"]) for bar in found]

    # Should: generated history depends on the seed (and the first price) only.
    assert history_closes(9)[1:] == history_closes(9)[1:]
    assert history_closes(9) != history_closes(10)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"contractId": "CON.F.US.NOPE.Z26"}, RetrieveBarErrorCode.CONTRACT_NOT_FOUND),
        ({"unit": 0}, RetrieveBarErrorCode.UNIT_INVALID),
        ({"unit": 8}, RetrieveBarErrorCode.UNIT_INVALID),
        ({"unitNumber": 0}, RetrieveBarErrorCode.UNIT_NUMBER_INVALID),
        ({"limit": 0}, RetrieveBarErrorCode.LIMIT_INVALID),
        ({"limit": 20_001}, RetrieveBarErrorCode.LIMIT_INVALID),
    ],
)
def test_invalid_requests_get_their_error_codes(
    simulator_api: httpx.Client, overrides: dict[str, Any], code: int
) -> None:
    body = parse_json(bars_request(simulator_api, **overrides).content)
    # Should: HTTP 200 with the endpoint's own errorCode and no bars.
    assert body["success"] is False and body["errorCode"] == code and body["bars"] is None
    assert body["errorMessage"]


def test_a_body_missing_a_required_field_is_400(simulator_api: httpx.Client) -> None:
    response = simulator_api.post("History/retrieveBars", json={"contractId": MNQ})
    # Should: model binding refuses it before the endpoint runs.
    assert response.status_code == 400
    assert "includePartialBar" in response.json()["errors"]
