"""A progress bar for management commands, drawn only when a person is watching.

On a terminal it redraws one line in place; in cron or a systemd journal (stdout is not a TTY)
it draws nothing, and the command prints its plain counts at the end instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

BAR_WIDTH = 30


class CommandOutput(Protocol):
    """What a management command's `self.stdout` (Django's OutputWrapper) offers."""

    def write(
        self,
        msg: str = "",
        style_func: Callable[[str], str] | None = None,
        ending: str | None = None,
    ) -> None: ...

    def isatty(self) -> bool: ...

    def flush(self) -> None: ...


class ProgressBar:
    def __init__(self, stream: CommandOutput, *, label: str, total: int) -> None:
        self.stream = stream
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.started = time.monotonic()
        self.enabled = stream.isatty()

    def advance_to(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        # The total is an estimate taken at the start; rows may come and go meanwhile.
        total = max(self.total, done, 1)
        filled = int(BAR_WIDTH * done / total)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        line = (
            f"\r{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{done:,}/{total:,} ({100 * done / total:5.1f}%) {done / elapsed:,.0f}/s"
        )
        self.stream.write(line, ending="")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.done:
            self.stream.write("")
