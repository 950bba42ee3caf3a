"""Long-running asyncio tasks that are restarted, never lost: `TaskSupervisor`.

Used by the user-hub listener (fills/listener.py, which counts restarts in its metric) and the
market-data feed (marketdata/feed.py). A task loops until cancelled; when it raises (or,
against its contract, returns) the failure is logged with its traceback, `on_failure` runs (to
reset a database connection), and the task starts again after a jittered exponential backoff
(0.5 s doubling, capped at 10 s). A task calls `succeeded(name)` after each unit of work that
went well: that resets its backoff and ends its "failing" state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

RESTART_DELAY_INITIAL = 0.5
RESTART_DELAY_MAX = 10.0


def restart_delay(failures: int) -> float:
    """Seconds before the next attempt after `failures` failures in a row, with jitter."""
    backoff = min(RESTART_DELAY_MAX, RESTART_DELAY_INITIAL * 2.0 ** max(0, failures - 1))
    return backoff * random.uniform(0.5, 1.0)


class TaskSupervisor:
    """Keeps a set of named long-running tasks running until `stop()`.

    `owner` names the supervisor in its logs and its tasks' names; `on_restart(task)` is told of
    every failure (a metric), `on_failure(task, error)` runs after it (to reset connections).
    """

    def __init__(
        self,
        owner: str,
        *,
        on_failure: Callable[[str, BaseException], Awaitable[None]] | None = None,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.owner = owner
        self._on_failure = on_failure
        self._on_restart = on_restart
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failures: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()

    def start(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        self._tasks[name] = asyncio.create_task(
            self._keep_running(name, work), name=f"{self.owner.replace(' ', '-')}-{name}"
        )

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)

    @property
    def failing(self) -> list[str]:
        """Tasks that failed and have not completed a unit of work since."""
        return sorted(self._failures)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _keep_running(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await work()
                raise RuntimeError(f"task {name} returned; it should run until cancelled")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failures[name] += 1
                self.restarts[name] += 1
                delay = restart_delay(self._failures[name])
                if self._on_restart is not None:
                    self._on_restart(name)
                logger.exception(
                    "%s: task %s failed (%d in a row); restarting in %.1f s",
                    self.owner,
                    name,
                    self._failures[name],
                    delay,
                )
                if self._on_failure is not None:
                    try:
                        await self._on_failure(name, exc)
                    except Exception:
                        logger.warning(
                            "%s: clean-up after %s failed", self.owner, name, exc_info=True
                        )
            await asyncio.sleep(delay)
