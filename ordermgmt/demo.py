"""A small demo bot for `make demo`: it trades through the public API like any bot, and moves
the simulator's prices so that a newcomer sees orders fill, partly and fully, within a minute.
Only ever runs against the bundled simulator."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from decimal import Decimal
from typing import Any

import httpx

from projectx.simulator import GatewaySimulator

logger = logging.getLogger(__name__)

CONTRACT = "CON.F.US.MNQ.Z26"
TICK = Decimal("0.25")


class DemoBot:
    def __init__(
        self,
        *,
        api_url: str,
        token: str,
        account: int,
        simulator: GatewaySimulator,
        seed: int | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.account = account
        self.simulator = simulator
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="demo-bot", daemon=True)

    def start(self) -> DemoBot:
        self.thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(
            base_url=self.api_url, timeout=30, headers={"Authorization": f"Token {self.token}"}
        ) as http:
            while not self.stop.wait(self.random.uniform(1.5, 3.5)):
                try:
                    self._step(http)
                except Exception:  # a demo hiccup must never take the server down
                    logger.warning("demo bot step failed", exc_info=True)

    def _price(self) -> Decimal:
        return self.simulator.price(CONTRACT) or Decimal("21000")

    def _step(self, http: httpx.Client) -> None:
        price = self._price()
        # A random walk of a few ticks: resting limit orders get crossed and fill.
        self.simulator.set_price(CONTRACT, price + TICK * self.random.randint(-6, 6))
        roll = self.random.random()
        if roll < 0.55:
            size = self.random.randint(2, 5)
            # Fill in several trades, so the desk shows partial fills.
            self.simulator.queue_fill_plan(self._split(size), account_id=self.account)
            offset = TICK * self.random.randint(1, 4)
            side = self.random.choice(["buy", "sell"])
            limit = price - offset if side == "buy" else price + offset
            self._place(
                http, {"side": side, "type": "limit", "size": size, "limit_price": str(limit)}
            )
        elif roll < 0.7:
            self._place(
                http, {"side": self.random.choice(["buy", "sell"]), "type": "market", "size": 1}
            )
        elif roll < 0.85:
            self._act_on_working(http, "modify")
        else:
            self._act_on_working(http, "cancel")

    def _split(self, size: int) -> list[int]:
        parts = []
        while size:
            part = self.random.randint(1, size)
            parts.append(part)
            size -= part
        return parts

    def _place(self, http: httpx.Client, fields: dict[str, Any]) -> None:
        http.post(
            "/api/v1/orders/",
            headers={"Idempotency-Key": f"demo-{uuid.uuid4()}"},
            json={"account": self.account, "contract_id": CONTRACT, **fields},
        )

    def _act_on_working(self, http: httpx.Client, action: str) -> None:
        working = http.get("/api/v1/orders/", params={"status": "open"}).json().get("results", [])
        if not working:
            return
        order = self.random.choice(working)
        version = {"If-Match": f'"{order["version"]}"'}
        if action == "cancel":
            http.post(f"/api/v1/orders/{order['id']}/cancel/", headers=version)
        elif order["limit_price"] is not None:
            nudged = Decimal(order["limit_price"]) + TICK * self.random.choice([-1, 1])
            http.patch(
                f"/api/v1/orders/{order['id']}/", headers=version, json={"limit_price": str(nudged)}
            )
