"""The decisions of pgconnector's own pool, in one lock-protected class that does no I/O.

:class:`PoolState` is the single source of truth of a :mod:`pgconnector._generic_pool` pool:
which connections exist, which are idle, who waits for one and in what order, when the pool may
grow, when a connection expires, how long to back off after a failed connect, and whether the
pool is open. Every method takes the pool lock, changes the state, and returns a :class:`Plan`:
the connections to close and the number of connects to start, which the caller carries out
*after* releasing the lock. Nothing here blocks, sleeps or touches a socket, so the lock is only
ever held for a few microseconds, and the logic can be unit-tested with a fake clock.

Waiters and the hand-off
------------------------
A borrower that finds no idle connection joins a FIFO deque of waiters. A waiter is a
:class:`ThreadWaiter` (its own pre-acquired ``threading.Lock``, released once to wake it: the
cheapest one-shot event there is) or an :class:`AsyncWaiter` (an ``asyncio.Future``, resolved in
its loop's thread with ``call_soon_threadsafe``), so async borrowers wait on their event loop and
never in a thread. Both kinds sit in the same deque, which is what makes the order fair across
the sync and async worlds.

A connection that becomes available (released clean, newly opened) is given to the waiter at
the head of the deque *under the pool lock*: the waiter is removed from the deque and its
``entry`` set in the same critical section, and only then woken. So a connection is never
"announced" and then grabbed by someone else, and a wake-up can never be lost: the waiter's
outcome is recorded in the waiter itself before it is signalled, and a waiter always checks that
record (under the lock) after its wait ends, whatever ended it.

A waiter that gives up (timeout, task cancellation) calls :meth:`PoolState.withdraw` under the
same lock. If it was still queued, it leaves the queue and nothing else changed. If a
connection had been assigned to it in the meantime, it is told so: a timed-out waiter simply
keeps it (the hand-off happened before it gave up), a cancelled one gives it straight back
with :meth:`PoolState.give_back`, which passes it to the next waiter. Either way no slot leaks.

Idle connections form a stack (last in, first out): the most recently used connection is handed
out first, so a lightly loaded pool keeps reusing its warm connections while the others age at
the bottom of the stack, where ``idle_timeout`` retires them down to ``min_size``.

Growth and failure
------------------
The pool opens connections up to ``min_size`` in the background, and one per waiter not already
covered by a connect in flight, up to ``max_size``, at most :data:`MAX_PARALLEL_CONNECTS` at a
time. After a failed connect the pool is *down*: background refill retries after an exponential
backoff with jitter, while a borrower that arrives triggers one attempt at once (at most one in
flight while down) and waits for its outcome. Each failure fails the waiters that the connects
still in flight cannot serve, with the driver's error: so while the server is unreachable a
borrower fails after one connect attempt instead of waiting out its ``acquire_timeout``, and the
first success makes the pool *up* again.

Housekeeping
------------
One housekeeping thread per pool sleeps on :attr:`PoolState.cond` until the next deadline
(:attr:`PoolState.wake_at`: an idle connection above ``min_size`` reaching ``idle_timeout``, a
connection reaching its jittered ``max_lifetime``, the end of a backoff). A state change that
makes a deadline *earlier* than the one it sleeps towards sets :attr:`PoolState.poked` and
notifies it; changes that do not move the deadline earlier (the common case: a release) do not
wake it, so a busy pool pays no context switch per release.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_PARALLEL_CONNECTS",
    "Entry",
    "Limits",
    "Plan",
    "PoolState",
    "ThreadWaiter",
    "AsyncWaiter",
    "Waiter",
    "PoolClosedError",
]

#: At most this many connects run at once (growth and refill); one while the pool is down.
MAX_PARALLEL_CONNECTS = 3
#: Backoff after consecutive failed connects: BACKOFF_BASE * 2**(n-1), capped, with jitter.
BACKOFF_BASE = 0.25
BACKOFF_CAP = 5.0
BACKOFF_JITTER = 0.2  # +-20 %
#: ``max_lifetime`` is shortened by up to this fraction, at random, per connection, so that
#: connections opened together do not all expire (and reconnect) together.
LIFETIME_JITTER = 0.1

# Phases of a pool.
NEW, OPEN, CLOSED = "new", "open", "closed"

# Waiter outcomes.
WAITING, ASSIGNED, FAILED, GONE = 0, 1, 2, 3


class PoolClosedError(Exception):
    """Raised by :class:`PoolState` to a borrower of a pool that is not open."""


@dataclass(frozen=True)
class Limits:
    """The pool's configuration, as the state machine needs it. Durations in seconds; 0 means
    "never" for ``idle_timeout`` and ``max_lifetime``, and "no limit" for ``max_uses``."""

    min_size: int
    max_size: int
    idle_timeout: float
    max_lifetime: float
    max_uses: int
    ping_after_idle: float | None


class Entry:
    """One server connection, for its whole life in the pool.

    ``conn`` is the driver-side object (a ``RawConnection``); ``face`` caches the adapter the
    pool hands to the core (one per connection, made once). Fields are only changed under the
    pool lock, except ``face`` and ``job`` which belong to the borrower.
    """

    __slots__ = (
        "closed",
        "conn",
        "connection_id",
        "created",
        "expires",
        "face",
        "failure_reported",
        "idle_since",
        "in_use",
        "job",
        "uses",
    )

    def __init__(self, conn: Any, connection_id: int, created: float, expires: float) -> None:
        self.conn = conn
        self.connection_id = connection_id
        self.created = created
        self.expires = expires
        self.idle_since = created
        self.uses = 0
        self.in_use = False
        self.closed = False
        self.failure_reported = False
        self.face: Any = None
        self.job: Any = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "in use" if self.in_use else "idle"
        return f"<Entry id={self.connection_id} {state} uses={self.uses}>"


class ThreadWaiter:
    """A borrower waiting in a thread: a lock created held, released once to wake it."""

    __slots__ = ("_signal", "entry", "error", "state")

    def __init__(self) -> None:
        self._signal = threading.Lock()
        self._signal.acquire()
        self.state = WAITING
        self.entry: Entry | None = None
        self.error: BaseException | None = None

    def wake(self) -> bool:
        """Called once, under the pool lock, after ``state`` was set. Never blocks."""
        self._signal.release()
        return True

    def wait(self, timeout: float) -> bool:
        """Block until woken or ``timeout`` passes; True if woken. The outcome is in the
        waiter's fields, read under the pool lock (see :meth:`PoolState.withdraw`)."""
        return self._signal.acquire(timeout=max(timeout, 0.0))


class AsyncWaiter:
    """A borrower waiting in an asyncio task: a future of its loop, resolved in that loop."""

    __slots__ = ("_loop", "_thread", "entry", "error", "future", "state")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self.future: asyncio.Future[None] = loop.create_future()
        self.state = WAITING
        self.entry: Entry | None = None
        self.error: BaseException | None = None

    def wake(self) -> bool:
        """Called once, under the pool lock. False if the loop is gone (the waiter is dead)."""
        if threading.get_ident() == self._thread:
            self._resolve()  # already in the loop's thread: no self-pipe round trip needed
            return True
        try:
            self._loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:  # the loop was closed: nobody will ever look at this waiter
            return False
        return True

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


Waiter = ThreadWaiter | AsyncWaiter


@dataclass
class Plan:
    """What the caller of a :class:`PoolState` method must do once the lock is released."""

    close: list[tuple[Entry, str]] = field(default_factory=list)
    connects: int = 0

    def __bool__(self) -> bool:
        return bool(self.close) or self.connects > 0


class PoolState:
    """Every decision of the pool, under one lock. See the module docstring."""

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self._rand = rand
        self.lock = threading.Lock()
        #: The housekeeper waits on this (with the pool lock).
        self.cond = threading.Condition(self.lock)
        self.phase = NEW
        self._idle: deque[Entry] = deque()
        #: Every connection counted in ``size`` that has been placed (idle or in use).
        self._live: set[Entry] = set()
        self._waiters: deque[Waiter] = deque()
        #: Connections counted in the pool: idle + in use (+ accepted but not yet placed).
        self.size = 0
        #: Connect attempts in flight.
        self.opening = 0
        self.failures = 0
        #: Filling to min_size (after open() has its first connection; see fill()).
        self._filling = False
        self.last_error: BaseException | None = None
        self._retry_at = 0.0
        #: When the housekeeper will wake next; a state change that needs it earlier pokes it.
        self.wake_at = math.inf
        self.poked = False

    # -- introspection (for tests and repr; take the lock for a consistent view) -----------

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def waiting_count(self) -> int:
        return len(self._waiters)

    @property
    def is_open(self) -> bool:
        return self.phase == OPEN

    @property
    def down(self) -> bool:
        return self.failures > 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Plan:
        """NEW -> OPEN; open one connection (``fill`` then opens the rest of ``min_size``)."""
        with self.lock:
            if self.phase != NEW:
                raise PoolClosedError("the pool was already opened")
            self.phase = OPEN
            return Plan(connects=self._start_connects())

    def fill(self) -> Plan:
        """After open() has its first connection: fill the pool to ``min_size``."""
        with self.lock:
            self._filling = True
            return Plan(connects=self._start_connects())

    def close(self) -> Plan:
        """-> CLOSED: fail every waiter, close every idle connection. Connections in use are
        closed when they come back; connects in flight close what they open."""
        with self.lock:
            self.phase = CLOSED
            error = PoolClosedError("the pool is closed")
            while self._waiters:
                self._fail(self._waiters.popleft(), error)
            plan = Plan()
            while self._idle:
                plan.close.append((self._claim(self._idle.popleft()), "pool closed"))
            self._poke()
            return plan

    # -- borrowing -------------------------------------------------------------------------

    def acquire(self, make_waiter: Callable[[], Waiter] | None, *, front: bool = False
                ) -> tuple[Entry | None, Waiter | None, Plan]:
        """Take an idle connection, or queue a waiter made by ``make_waiter`` (at the head of
        the queue when ``front``: a borrower retrying after a failed check keeps its turn).

        Returns ``(entry, None, plan)`` or ``(None, waiter, plan)``; with ``make_waiter``
        None, ``(None, None, plan)`` when nothing is idle. Raises :class:`PoolClosedError`.
        """
        with self.lock:
            if self.phase != OPEN:
                raise PoolClosedError("the pool is closed")
            plan = Plan()
            now = self.clock()
            idle = self._idle
            while idle:
                entry = idle.pop()
                if 0 < entry.expires <= now:
                    plan.close.append((self._claim(entry), "max_lifetime"))
                    continue
                entry.in_use = True
                entry.uses += 1
                if plan.close:
                    plan.connects = self._start_connects()
                return entry, None, plan
            waiter = None
            if make_waiter is not None:
                waiter = make_waiter()
                if front:
                    self._waiters.appendleft(waiter)
                else:
                    self._waiters.append(waiter)
            plan.connects = self._start_connects()
            return None, waiter, plan

    def withdraw(self, waiter: Waiter) -> Entry | BaseException | None:
        """The waiter stops waiting (its wait ended: woken, timed out or cancelled).

        Returns the connection assigned to it (now the caller's), or the error it was failed
        with (a :class:`PoolClosedError` or the driver's connect error: the caller raises its
        own exception from it), or None after taking it out of the queue.
        """
        with self.lock:
            state = waiter.state
            waiter.state = GONE
            if state == ASSIGNED:
                return waiter.entry
            if state == FAILED:
                return waiter.error
            if state == WAITING:
                self._waiters.remove(waiter)  # a waiting waiter is always queued
            return None

    def needs_ping(self, entry: Entry) -> bool:
        """True when the connection was idle long enough to be checked before hand-out."""
        limit = self.limits.ping_after_idle
        return limit is not None and self.clock() - entry.idle_since >= limit

    # -- returning -------------------------------------------------------------------------

    def retire_reason(self, entry: Entry, discard: bool = False) -> str | None:
        """Why a returned connection must be closed rather than reset and kept (no I/O: read
        before the reset so that a connection about to be retired costs no round trip)."""
        if entry.conn.is_broken():
            return "broken"
        if discard:
            return "discarded"
        if self.phase != OPEN:
            return "pool closed"
        limits = self.limits
        if limits.max_uses and entry.uses >= limits.max_uses:
            return "max_uses"
        if 0 < entry.expires <= self.clock():
            return "max_lifetime"
        return None

    def put_back(self, entry: Entry, reason: str | None) -> Plan:
        """A borrowed connection comes back: close it for ``reason``, or make it available
        (to the first waiter, else the idle stack)."""
        with self.lock:
            entry.in_use = False
            plan = Plan()
            if entry.closed:
                return plan
            if reason is None and self.phase != OPEN:
                reason = "pool closed"
            if reason is not None:
                plan.close.append((self._claim(entry), reason))
                plan.connects = self._start_connects()
                return plan
            entry.idle_since = self.clock()
            self._make_available(entry)
            return plan

    def give_back(self, entry: Entry) -> Plan:
        """A connection assigned to a waiter that was cancelled goes back unused."""
        with self.lock:
            entry.in_use = False
            entry.uses -= 1
            if entry.closed:
                return Plan()
            if self.phase != OPEN:
                return Plan(close=[(self._claim(entry), "pool closed")])
            self._make_available(entry)
            return Plan()

    def discard(self, entry: Entry, reason: str) -> Plan:
        """Close a connection that is not idle (a failed check, a close forced by the owner).
        Returns an empty plan when it was already claimed by another path."""
        with self.lock:
            entry.in_use = False
            if entry.closed:
                return Plan()
            plan = Plan(close=[(self._claim(entry), reason)])
            plan.connects = self._start_connects()
            return plan

    def claim_failure_report(self, entry: Entry) -> bool:
        """True once per connection: for reporting that it broke in use."""
        with self.lock:
            if entry.failure_reported or entry.closed:
                return False
            entry.failure_reported = True
            return True

    # -- connects --------------------------------------------------------------------------

    def connect_accepted(self) -> bool:
        """A connect succeeded; False if the pool closed meanwhile (the caller then closes the
        connection without ever reporting it). On True the connection counts in ``size``;
        the caller reports it opened and then calls :meth:`connect_placed`."""
        with self.lock:
            self.opening -= 1
            if self.phase != OPEN:
                return False
            self.size += 1
            self.failures = 0
            self.last_error = None
            return True

    def new_entry(self, conn: Any, connection_id: int) -> Entry:
        """An :class:`Entry` with its jittered expiry (``max_lifetime`` 0 means never)."""
        now = self.clock()
        lifetime = self.limits.max_lifetime
        expires = 0.0
        if lifetime > 0:
            expires = now + lifetime * (1.0 - LIFETIME_JITTER * self._rand())
        return Entry(conn, connection_id, now, expires)

    def connect_placed(self, entry: Entry) -> Plan:
        """Put a freshly opened (and reported) connection to use."""
        with self.lock:
            plan = Plan()
            if self.phase != OPEN:
                entry.closed = True
                self.size -= 1
                plan.close.append((entry, "pool closed"))
                return plan
            self._live.add(entry)
            if entry.expires > 0:
                self._note_deadline(entry.expires)
            self._make_available(entry)
            plan.connects = self._start_connects()
            return plan

    def connect_failed(self, error: BaseException) -> tuple[Plan, list[Waiter]]:
        """A connect failed: back off, and fail the waiters that the connects still in flight
        cannot serve (newest first, so that the oldest keep their chance). Returns the plan
        and the failed waiters (already woken; for the caller's information)."""
        with self.lock:
            self.opening -= 1
            if self.phase != OPEN:
                return Plan(), []
            self.failures += 1
            self.last_error = error
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(self.failures - 1, 30))
            delay *= 1.0 + BACKOFF_JITTER * (2.0 * self._rand() - 1.0)
            self._retry_at = self.clock() + delay
            failed: list[Waiter] = []
            while len(self._waiters) > self.opening:
                waiter = self._waiters.pop()
                self._fail(waiter, error)
                failed.append(waiter)
            self._note_deadline(self._retry_at)
            return Plan(), failed

    # -- housekeeping ----------------------------------------------------------------------

    def housekeep(self) -> Plan:
        """Retire expired and surplus idle connections, start due connects, and set
        :attr:`wake_at` to the next deadline. Called by the housekeeping thread."""
        with self.lock:
            self.poked = False
            plan = Plan()
            if self.phase != OPEN:
                self.wake_at = math.inf
                return plan
            now = self.clock()
            limits = self.limits
            idle = self._idle
            if any(0 < e.expires <= now for e in idle):
                kept: deque[Entry] = deque()
                for entry in idle:
                    if 0 < entry.expires <= now:
                        plan.close.append((self._claim(entry), "max_lifetime"))
                    else:
                        kept.append(entry)
                self._idle = idle = kept
            if limits.idle_timeout > 0:
                # The bottom of the stack has been idle longest.
                while (
                    idle
                    and self.size > limits.min_size
                    and now - idle[0].idle_since >= limits.idle_timeout
                ):
                    plan.close.append((self._claim(idle.popleft()), "idle"))
            plan.connects = self._start_connects()
            self.wake_at = self._next_deadline(now)
            return plan

    def _next_deadline(self, now: float) -> float:
        limits = self.limits
        deadline = math.inf
        # Every live connection's expiry, in use or not: then a release never brings the
        # deadline forward (one that comes due while in use is retired at its release).
        for entry in self._live:
            if entry.expires > now:
                deadline = min(deadline, entry.expires)
        if limits.idle_timeout > 0 and self._idle and self.size > limits.min_size:
            deadline = min(deadline, self._idle[0].idle_since + limits.idle_timeout)
        if self.failures and self.opening == 0 and self.size < limits.min_size:
            deadline = min(deadline, self._retry_at)
        return deadline

    # -- internals (lock held) -------------------------------------------------------------

    def _claim(self, entry: Entry) -> Entry:
        """Mark a connection as being closed: it leaves the pool's count, exactly once."""
        assert not entry.closed
        entry.closed = True
        self.size -= 1
        self._live.discard(entry)
        return entry

    def _fail(self, waiter: Waiter, error: BaseException) -> None:
        waiter.state = FAILED
        waiter.error = error
        waiter.wake()

    def _make_available(self, entry: Entry) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            waiter.state = ASSIGNED
            waiter.entry = entry
            entry.in_use = True
            entry.uses += 1
            if waiter.wake():
                return
            # The waiter's event loop is gone: it will never take the connection.
            waiter.state = GONE
            waiter.entry = None
            entry.in_use = False
            entry.uses -= 1
        entry.in_use = False
        idle = self._idle
        idle.append(entry)
        # Lifetimes are already in the schedule (it covers every live connection); only an
        # idle stack that was empty gives the housekeeper a new, possibly earlier, deadline.
        limits = self.limits
        if len(idle) == 1 and limits.idle_timeout > 0 and self.size > limits.min_size:
            self._note_deadline(entry.idle_since + limits.idle_timeout)

    def _note_deadline(self, deadline: float) -> None:
        if deadline < self.wake_at:
            self._poke()

    def _poke(self) -> None:
        self.poked = True
        self.wake_at = -math.inf  # until the housekeeper recomputes it
        self.cond.notify()

    def _start_connects(self) -> int:
        """How many connects to start now (and count them as in flight)."""
        if self.phase != OPEN:
            return 0
        limits = self.limits
        total = self.size + self.opening
        room = limits.max_size - total
        if room <= 0:
            return 0
        # Until fill(), one connection is the floor: open() waits for one, and on a busy
        # server more connects at once would only make that one arrive later.
        below_min = (limits.min_size if self._filling else min(limits.min_size, 1)) - total
        demand = len(self._waiters) - self.opening
        if self.failures:
            # Down: at most one attempt at a time. A borrower is a reason to try at once;
            # refilling to min_size waits for the end of the backoff.
            if self.opening or not (demand > 0 or (below_min > 0 and
                                                    self.clock() >= self._retry_at)):
                return 0
            count = 1
        else:
            count = min(max(below_min, demand, 0), room, MAX_PARALLEL_CONNECTS - self.opening)
            if count <= 0:
                return 0
        self.opening += count
        return count

    def __repr__(self) -> str:
        return (
            f"<PoolState {self.phase} size={self.size} idle={len(self._idle)} "
            f"opening={self.opening} waiting={len(self._waiters)} failures={self.failures}>"
        )
