"""The in-process channel layer `manage.py serve` runs on (no Redis): Channels' in-memory layer
with a fan-out that costs one pass over the group, not one over every channel per socket.

Why: at 200 open desks one broadcast cost the event loop about 20 ms in the stock layer
(bench/desk_latency.py, py-spy): `group_send` made a task per socket and deep-copied the
message for each, and every socket's next `receive` ran `_clean_expired`, a walk over every
channel and every group member, so one broadcast walked 200 x 400 entries. The next broadcast
of the same fill (and the next fill) waited behind it.

Here a group send puts the message straight into each member's queue (no task, no await: one
callback on the loop), and the expiry walk runs at most once a `CLEAN_SECONDS`. Messages expire
after `expiry` (60 s) and memberships after a day, so cleaning a second late changes nothing a
user can see. Every other behaviour (capacity, ChannelFull dropping, the copy per receiver) is
the stock layer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from copy import deepcopy
from typing import Any

from channels.layers import InMemoryChannelLayer

CLEAN_SECONDS = 1.0


class DeskChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cleaned_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < CLEAN_SECONDS:
            return
        self._cleaned_at = now
        super()._clean_expired()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self.group_send_now(group, message)

    def group_send_now(self, group: str, message: dict[str, Any]) -> None:
        """`group_send` without awaiting: callable from a plain callback on the layer's loop
        (desk/broadcasts.py hands a commit's messages over with `call_soon_threadsafe`)."""
        self._clean_expired()
        expires = time.time() + self.expiry
        for channel in list(self.groups.get(group, ())):
            queue = self.channels.setdefault(
                channel, asyncio.Queue(maxsize=self.get_capacity(channel))
            )
            # As the stock group_send: a full channel (a socket not reading) misses it.
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait((expires, deepcopy(message)))
