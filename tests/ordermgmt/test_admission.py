"""The gate in front of placements (common/admission.py): a fixed number of requests run at
once, the others wait in one line per account served in turn, a full line is refused at once,
and a request that steps aside gives its slot to the next and comes back first."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import pytest
from django.urls import reverse

from common import admission
from ordermgmt.handlers import PLACEMENT_PATH

# Bound for a step that would otherwise hang: far above what it takes.
STEP_TIMEOUT = 10.0


class WatchedGate(admission.Gate):
    """Tells the test when a thread that stepped aside asks for its slot back."""

    def __init__(self, *, slots: int, line_limit: int) -> None:
        super().__init__(slots=slots, line_limit=line_limit)
        self.coming_back = asyncio.Event()

    async def back(self, ticket: admission.Ticket) -> None:
        self.coming_back.set()  # the test runs once this has queued (it waits below)
        await super().back(ticket)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), STEP_TIMEOUT))


async def settled() -> None:
    """Let every task that can move on do so (each grant is one callback away)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_only_the_slots_run_and_the_next_enters_when_one_leaves() -> None:
    async def scenario() -> None:
        gate = admission.Gate(slots=2, line_limit=10)
        first = await gate.enter("a")
        await gate.enter("b")
        third = asyncio.create_task(gate.enter("c"))
        await settled()
        # should keep the third waiting while both slots are taken
        assert not third.done()
        gate.leave(first)
        await settled()
        assert third.done()
        assert gate.waiting() == 0

    run(scenario)


def test_lines_are_served_in_turn_so_a_flood_waits_behind_its_own_line() -> None:
    async def scenario() -> None:
        gate = admission.Gate(slots=1, line_limit=10)
        holder = await gate.enter("flood")
        order: list[str] = []

        async def enter(key: str, name: str) -> None:
            ticket = await gate.enter(key)
            order.append(name)
            await asyncio.sleep(0)
            gate.leave(ticket)

        tasks = [asyncio.create_task(enter("flood", f"flood-{n}")) for n in range(4)]
        await settled()
        tasks.append(asyncio.create_task(enter("quiet", "quiet-0")))
        await settled()
        gate.leave(holder)
        await asyncio.gather(*tasks)
        # should admit the quiet account's request after one of the flood's, not after all
        assert order == ["flood-0", "quiet-0", "flood-1", "flood-2", "flood-3"]

    run(scenario)


def test_a_full_line_is_refused_at_once_and_other_lines_still_wait() -> None:
    async def scenario() -> None:
        gate = admission.Gate(slots=1, line_limit=2)
        holder = await gate.enter("a")
        waiting = [asyncio.create_task(gate.enter("a")) for _ in range(2)]
        await settled()
        # should refuse the third in the account's line without waiting
        with pytest.raises(admission.AdmissionRefused) as refused:
            await gate.enter("a")
        assert refused.value.waiting == 2
        other = asyncio.create_task(gate.enter("b"))
        await settled()
        assert not other.done()
        gate.leave(holder)
        for admitted in asyncio.as_completed([*waiting, other]):
            gate.leave(await admitted)
        assert gate.waiting() == 0

    run(scenario)


def test_a_waiter_whose_client_left_gives_up_its_place() -> None:
    async def scenario() -> None:
        gate = admission.Gate(slots=1, line_limit=10)
        holder = await gate.enter("a")
        gone = asyncio.create_task(gate.enter("a"))
        after = asyncio.create_task(gate.enter("b"))
        await settled()
        gone.cancel()
        await settled()
        gate.leave(holder)
        await settled()
        # should pass the slot to the next in line, never to the cancelled request
        assert gone.cancelled()
        assert after.done()
        assert gate.waiting() == 0

    run(scenario)


def test_a_request_that_steps_aside_lets_the_next_in_and_comes_back_first() -> None:
    async def scenario() -> None:
        gate = WatchedGate(slots=1, line_limit=10)
        hung = await gate.enter("a")
        queued = [asyncio.create_task(gate.enter("b")) for _ in range(2)]
        await settled()
        answer = threading.Event()
        back = threading.Event()

        def request_thread() -> None:
            # As a placement's thread around a broker call that does not answer.
            with admission.admitted(hung), admission.stepped_aside():
                answer.wait(STEP_TIMEOUT)
            back.set()

        thread = asyncio.create_task(asyncio.to_thread(request_thread))
        next_in = await queued[0]
        # should admit the next while the hung one waits aside
        assert not queued[1].done()
        answer.set()
        await gate.coming_back.wait()  # its thread asks for its slot back
        # should not let the one aside run until a slot is free, then ahead of the line
        assert not back.is_set()
        gate.leave(next_in)
        await thread
        assert back.is_set()
        assert hung.holding
        assert not queued[1].done()
        gate.leave(hung)
        gate.leave(await queued[1])
        assert gate.waiting() == 0

    run(scenario)


def test_the_gate_stands_in_front_of_the_placement_route() -> None:
    # should name the route bots place orders on (a renamed route would bypass the gate)
    assert reverse("api:order-list") == PLACEMENT_PATH
