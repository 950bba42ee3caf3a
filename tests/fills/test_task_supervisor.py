"""TaskSupervisor: a failing listener task is logged, counted and restarted with backoff."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import REGISTRY

from common.supervision import RESTART_DELAY_MAX, restart_delay
from fills.listener import listener_supervisor


def restarts(task: str) -> float:
    return REGISTRY.get_sample_value("listener_task_restarts_total", {"task": task}) or 0.0


def test_restart_delays_grow_with_jitter_up_to_the_cap() -> None:
    delays = {failures: [restart_delay(failures) for _ in range(200)] for failures in (1, 2, 30)}
    # should start within half a second, double, and never pass the cap
    assert all(0.25 <= d <= 0.5 for d in delays[1])
    assert all(0.5 <= d <= 1.0 for d in delays[2])
    assert all(RESTART_DELAY_MAX / 2 <= d <= RESTART_DELAY_MAX for d in delays[30])
    # should spread restarts out (jitter), not restart every listener at the same instant
    assert len(set(delays[30])) > 1


def test_a_failing_task_is_logged_counted_and_restarted_until_it_works(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="common.supervision")
    before = restarts("flaky")
    cleanups: list[str] = []

    async def scenario() -> tuple[list[str], list[str]]:
        async def cleanup(task: str, error: BaseException) -> None:
            cleanups.append(f"{task}: {error}")

        supervisor = listener_supervisor("test", on_failure=cleanup)
        attempts = 0
        working = asyncio.Event()
        failing_while_down: list[str] = []

        async def flaky() -> None:
            nonlocal attempts
            attempts += 1
            if attempts <= 2:
                failing_while_down.extend(supervisor.failing)
                raise ConnectionError(f"attempt {attempts}")
            supervisor.succeeded("flaky")
            working.set()
            await asyncio.Event().wait()  # a healthy task runs until cancelled

        supervisor.start("flaky", flaky)
        await asyncio.wait_for(working.wait(), timeout=5)
        failing_after = supervisor.failing
        await supervisor.stop()
        return failing_while_down, failing_after

    failing_while_down, failing_after = asyncio.run(scenario())
    # should have restarted it twice, counting each failure and running the clean-up
    assert restarts("flaky") == before + 2
    assert cleanups == ["flaky: attempt 1", "flaky: attempt 2"]
    # should report it failing until it works again
    assert failing_while_down == ["flaky"]
    assert failing_after == []
    # should log each failure with its traceback
    logged = [r for r in caplog.records if "task flaky failed" in r.getMessage()]
    assert len(logged) == 2 and all(r.exc_info for r in logged)


def test_a_task_that_returns_is_restarted_too() -> None:
    before = restarts("returns")

    async def scenario() -> int:
        runs = 0
        second = asyncio.Event()

        async def returns() -> None:
            nonlocal runs
            runs += 1
            if runs == 2:
                second.set()
                await asyncio.Event().wait()

        supervisor = listener_supervisor("test")
        supervisor.start("returns", returns)
        await asyncio.wait_for(second.wait(), timeout=5)
        await supervisor.stop()
        return runs

    # should never lose a task silently, even one that ends without an error
    assert asyncio.run(scenario()) == 2
    assert restarts("returns") == before + 1
