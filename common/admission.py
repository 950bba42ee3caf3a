"""Admission: how many requests of one kind a web process runs at once, and who goes next.

Past its capacity a web process does not saturate, it collapses (docs/decisions/0013): every
request in flight is a thread, and each one admitted beyond the CPUs makes all of them slower.
Offered 180 placements/s where it carried 150, a worker's CPU per placement went from 6.5 to
11-13 ms and it answered 100-110/s. A `Gate` lets a fixed number of requests run (`slots`);
the others wait on the event loop, where waiting costs nothing, in one line per key (an
account and its caller), served in turn: a bot flooding its account lengthens its own line,
and every other account's next request is admitted after at most one of its own. A line
longer than `line_limit` is refused at once (`AdmissionRefused`), so a backlog cannot grow
without bound.

A request whose thread waits on something slow that needs no CPU (a broker call that has not
answered past the turn's bound) steps aside (`stepped_aside`, from its thread): its slot goes
to the next in line, and it comes back before doing anything else, ahead of every line. It
must hold nothing another admitted request could wait for (an account's turn, a row lock, an
open transaction) while it is aside, or a full gate could wait for it: so the placement steps
aside only after its turn is given back, and only outside a transaction.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
from collections.abc import Hashable, Iterator

from django.db import transaction

from common import metrics


class AdmissionRefused(Exception):
    """The request's line is full: answer at once, nothing was done."""

    def __init__(self, waiting: int) -> None:
        super().__init__(f"{waiting} requests are waiting in this line")
        self.waiting = waiting


class Ticket:
    """One admitted request. Its slot is held (`holding`) from admission to `Gate.leave`,
    except while its thread has stepped aside."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate
        self.holding = True
        self.left = False
        self.away = False  # the thread's side: it has stepped aside and not come back yet

    # From the request's thread. A loop that is closed or closing (the process shuts down)
    # refuses, or cancels the wait: the request finishes its work without a slot.

    def step_aside(self) -> None:
        """Give the slot to the next in line."""
        with contextlib.suppress(RuntimeError):
            self._gate.loop.call_soon_threadsafe(self._gate.aside, self)

    def come_back(self) -> None:
        """Wait until a slot is given back (ahead of every line)."""
        with contextlib.suppress(RuntimeError, concurrent.futures.CancelledError):
            asyncio.run_coroutine_threadsafe(self._gate.back(self), self._gate.loop).result()


class Gate:
    """Slots and lines of one event loop. Every method but the ticket's thread-side ones runs
    on that loop."""

    def __init__(self, *, slots: int, line_limit: int) -> None:
        if slots < 1:
            raise ValueError("a gate needs at least one slot")
        self.loop = asyncio.get_running_loop()
        self.slots = slots
        self.line_limit = line_limit
        self._free = slots
        # Lines by key, served in turn: the first line's first waiter, then that line goes to
        # the end (or away, when empty).
        self._lines: collections.OrderedDict[Hashable, collections.deque[asyncio.Future[None]]] = (
            collections.OrderedDict()
        )
        # Requests coming back from aside: served before any line, they have work in flight.
        self._returning: collections.deque[asyncio.Future[None]] = collections.deque()

    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values()) + len(self._returning)

    async def enter(self, key: Hashable) -> Ticket:
        if self._free > 0 and not self._lines and not self._returning:
            self._free -= 1
            return Ticket(self)
        line = self._lines.get(key)
        if line is not None and len(line) >= self.line_limit:
            raise AdmissionRefused(len(line))
        if line is None:
            line = self._lines[key] = collections.deque()
        admitted = self.loop.create_future()
        line.append(admitted)
        metrics.placement_admission_waits_total.inc()
        try:
            await admitted
        except asyncio.CancelledError:
            self._withdraw(key, admitted)
            raise
        return Ticket(self)

    def leave(self, ticket: Ticket) -> None:
        """At the request's end (answered, failed or cancelled)."""
        ticket.left = True
        if ticket.holding:
            ticket.holding = False
            self._release()

    def aside(self, ticket: Ticket) -> None:
        if ticket.holding and not ticket.left:
            ticket.holding = False
            self._release()

    async def back(self, ticket: Ticket) -> None:
        if ticket.holding or ticket.left:
            return
        if self._free > 0 and not self._returning:
            self._free -= 1
        else:
            returned = self.loop.create_future()
            self._returning.append(returned)
            try:
                await returned
            except asyncio.CancelledError:
                if returned.done() and not returned.cancelled():
                    self._release()  # given a slot as it was cancelled: pass it on
                elif returned in self._returning:
                    self._returning.remove(returned)
                raise
        ticket.holding = True
        if ticket.left:  # the request ended meanwhile (its client went away)
            self.leave(ticket)

    def _withdraw(self, key: Hashable, admitted: asyncio.Future[None]) -> None:
        if admitted.done() and not admitted.cancelled():
            self._release()  # admitted as it was cancelled: pass the slot on
            return
        line = self._lines.get(key)
        if line is not None and admitted in line:
            line.remove(admitted)
            if not line:
                del self._lines[key]

    def _release(self) -> None:
        self._free += 1
        while self._free > 0:
            admitted = self._next_waiter()
            if admitted is None:
                return
            self._free -= 1
            admitted.set_result(None)

    def _next_waiter(self) -> asyncio.Future[None] | None:
        while self._returning:
            returned = self._returning.popleft()
            if not returned.done():
                return returned
        while self._lines:
            key, line = next(iter(self._lines.items()))
            admitted = line.popleft()
            if line:
                self._lines.move_to_end(key)
            else:
                del self._lines[key]
            if not admitted.done():
                return admitted
        return None


_ticket: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar(
    "admission_ticket", default=None
)


@contextlib.contextmanager
def admitted(ticket: Ticket) -> Iterator[None]:
    """The request's ticket, for its thread (context variables travel with `sync_to_async`)."""
    token = _ticket.set(ticket)
    try:
        yield
    finally:
        _ticket.reset(token)


@contextlib.contextmanager
def stepped_aside() -> Iterator[None]:
    """Around a slow wait that needs no CPU, in a request's thread: the slot goes to the next
    in line meanwhile, and so does the thread's pooled database connection. Nothing to do
    outside an admitted request. Never with a transaction open (it could hold a lock another
    admitted request waits for)."""
    ticket = _ticket.get()
    if ticket is None or ticket.away:
        yield
        return
    database = transaction.get_connection()
    if database.in_atomic_block:
        raise RuntimeError("a request must not step aside inside a transaction")
    database.close()  # back to the pool while we wait
    ticket.away = True
    ticket.step_aside()
    try:
        yield
    finally:
        ticket.come_back()
        ticket.away = False
