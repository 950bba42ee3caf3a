"""The desk's websocket: session-authenticated, scoped to the accounts the user may see."""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from desk.broadcasts import account_group
from desk.health_push import health_follow, health_unfollow
from desk.selectors import desk_accounts, desk_snapshot

# Close codes in the 4000 range are ours: the page shows why and does not retry a refusal.
CLOSE_NOT_AUTHENTICATED = 4401
FORWARDED = frozenset({"order.updated", "position.updated", "marks.updated"})


class DeskConsumer(AsyncJsonWebsocketConsumer):
    groups: list[str]

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            return
        self.account_ids = await self._account_ids()
        self.joined = [account_group(a) for a in self.account_ids]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello", "accounts": self.account_ids})
        health_follow(self)  # the health strip, every few seconds (desk/health_push.py)

    async def disconnect(self, code: int) -> None:
        health_unfollow(self)
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("type") == "snapshot":
            await self.send_json({"type": "snapshot", **await self._snapshot()})

    async def dispatch(self, message: dict[str, Any]) -> None:
        # The group messages only forward a frame built elsewhere and touch no database, so
        # they skip the connection housekeeping Channels does before every message: a thread
        # hop per message per socket, which at 200 desks was a sixth of the web process's time
        # during a burst of fills (py-spy on bench/desk_latency.py).
        if message.get("type") in FORWARDED:
            await getattr(self, get_handler_name(message))(message)
            return
        await super().dispatch(message)

    # --- Group messages (type "order.updated" is handled by order_updated) ---------------
    # Each carries the page's frame already serialised (`text`, desk/broadcasts.py); a message
    # without it (from a process of an older release, over Redis) is framed here.

    async def _forward(self, event: dict[str, Any], kind: str, *fields: str) -> None:
        text = event.get("text")
        if isinstance(text, str):
            await self.send(text_data=text)
        else:
            await self.send_json({"type": kind, **{f: event[f] for f in fields if f in event}})

    async def order_updated(self, event: dict[str, Any]) -> None:
        await self._forward(event, "order", "row")

    async def position_updated(self, event: dict[str, Any]) -> None:
        await self._forward(event, "position", "row", "account")

    async def marks_updated(self, event: dict[str, Any]) -> None:
        await self._forward(event, "marks", "rows", "prices")

    @database_sync_to_async
    def _account_ids(self) -> list[int]:
        return [a.broker_account_id for a in desk_accounts(self.scope["user"])]

    @database_sync_to_async
    def _snapshot(self) -> dict[str, Any]:
        return desk_snapshot(self.scope["user"])
