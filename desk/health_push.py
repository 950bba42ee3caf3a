"""The health strip, pushed: one loop per process works out the strip (and the account header)
every `PUSH_SECONDS` and sends each of this process's desk sockets its own.

Why one loop and not a poll per page: with 200 desks open, a poll every 3 s per page was 67
health requests a second, each a handful of queries, and they took the web process's event loop
away from the fills (bench/desk_latency.py: fill -> websocket p99 6.5 s, a third of the updates
late). Here the work is one computation per distinct set of accounts per interval, whatever the
number of desks: 200 desks of one person cost what one does.

Process-local on purpose: with Redis several web workers run, and each pushes to its own
sockets only, so no desk gets the strip twice, and none waits for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.utils import timezone

from accounts.models import Account
from desk.selectors import desk_health_for, listener_heartbeats

logger = logging.getLogger(__name__)

PUSH_SECONDS = 2.0


class Receiver(Protocol):
    account_ids: list[int]

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None: ...


class _Pusher:
    def __init__(self) -> None:
        self.receivers: set[Receiver] = set()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while self.receivers:
            await asyncio.sleep(PUSH_SECONDS)
            receivers = list(self.receivers)
            wanted = {tuple(sorted(r.account_ids)) for r in receivers}
            try:
                frames = await database_sync_to_async(_frames)(wanted)
            except Exception:  # the next round tries again; the page shows the age of the strip
                logger.warning("desk health push failed", exc_info=True)
                continue
            for receiver in receivers:
                text = frames.get(tuple(sorted(receiver.account_ids)))
                if text is not None and receiver in self.receivers:
                    with contextlib.suppress(Exception):  # a socket closing meanwhile
                        await receiver.send(text_data=text)


# One pusher per event loop: tests run many loops in one process; a server runs one.
_pushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pusher] = (
    weakref.WeakKeyDictionary()
)


def health_follow(receiver: Receiver) -> None:
    loop = asyncio.get_running_loop()
    pusher = _pushers.setdefault(loop, _Pusher())
    pusher.receivers.add(receiver)
    if pusher.task is None or pusher.task.done():
        pusher.task = loop.create_task(pusher.run(), name="desk-health-push")


def health_unfollow(receiver: Receiver) -> None:
    with contextlib.suppress(RuntimeError):
        pusher = _pushers.get(asyncio.get_running_loop())
        if pusher is not None:
            pusher.receivers.discard(receiver)


def _frames(account_sets: set[tuple[int, ...]]) -> dict[tuple[int, ...], str]:
    """The strip of each set of accounts, serialised once per set."""
    now = timezone.now()
    heartbeats = listener_heartbeats()
    wanted = {account_id for ids in account_sets for account_id in ids}
    accounts = {
        a.broker_account_id: a
        for a in Account.objects.filter(broker_account_id__in=wanted, active=True)
    }
    frames: dict[tuple[int, ...], str] = {}
    for ids in account_sets:
        body: dict[str, Any] = desk_health_for(
            [accounts[i] for i in ids if i in accounts], now=now, heartbeats=heartbeats
        )
        frames[ids] = json.dumps(body, separators=(",", ":"))
    return frames
