"""Per-call statement timeouts (``timeout=`` on the Client's methods): the core's half.

A backend runs a statement under a timeout with the primitive its driver allows (see
CONTRIBUTING's backend contract): its ``execute``/``fetch`` take ``timeout`` (seconds or None),
and when it expires the statement is cancelled *on the server* and
:class:`~pgconnector.errors.StatementTimeoutError` is raised. Every backend keeps the same
three rules:

* the cancel request is over (the server has acted on it) before the call returns or raises,
  so that it can never hit a later statement: a backend idle between commands ignores a
  cancel, and nothing else is sent on the connection until then;
* the connection stays usable (the same server session): a cancelled statement is an
  ordinary statement error;
* the wait is bounded even when the server answers neither the statement nor the cancel
  request (a stalled server or network): ``grace`` seconds after the timeout (the backend's
  ``connect_timeout`` budget) the connection is shut down under the call, which then raises
  :class:`~pgconnector.ConnectionError` and the pool replaces the connection.

For drivers without a timeout of their own (psycopg, pg8000), :func:`call_with_timeout` and
:func:`acall_with_timeout` implement those rules around a blocking / awaitable call, given the
backend's ``cancel`` (send a CancelRequest, return once the server has handled it) and
``hang_up`` (shut the socket down so that the call fails at once). No timer, thread or task
exists unless a timeout is given; none is started before the statement is.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import os
import threading
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any, TypeVar

from .errors import (
    ConfigError,
    ConnectionError,
    DatabaseError,
    QueryCanceled,
    StatementTimeoutError,
)

__all__ = [
    "acall_with_timeout",
    "call_with_timeout",
    "check_timeout",
    "stuck_error",
    "timed_out",
]

T = TypeVar("T")

#: While the statement still runs after a cancel request, another is sent after these pauses
#: (doubling): the first may have reached the server before the statement did (a backend still
#: reading a command ignores a cancel). Harmless: nothing else is sent on the connection.
CANCEL_RETRY_FIRST = 0.05
CANCEL_RETRY_MAX = 1.0

_RUNNING, _CANCELLED, _HUNG_UP = 0, 1, 2


def check_timeout(timeout: Any) -> float | None:
    """The ``timeout=`` of a call, checked before anything is sent: None (no limit), or a
    positive number of seconds. ``inf`` means no limit too."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigError(
            f"timeout: must be a number of seconds or None, not {type(timeout).__name__}",
            field="timeout",
        )
    if not timeout > 0:  # NaN too
        raise ConfigError(
            f"timeout: must be more than 0 seconds, got {timeout!r}; "
            "leave it None for no limit",
            field="timeout",
        )
    return None if math.isinf(timeout) else float(timeout)


def timed_out(error: BaseException | None, timeout: float) -> StatementTimeoutError:
    """The error for a statement its call's timeout cancelled. ``error`` is what the cancelled
    statement raised (a translated ``QueryCanceled``, or the driver's own timeout error); the
    driver's exception becomes the cause."""
    cause = error.cause if isinstance(error, DatabaseError) and error.cause else error
    fields: dict[str, Any] = {}
    if isinstance(error, DatabaseError):
        fields = {"detail": error.detail, "hint": error.hint, "severity": error.severity}
    return StatementTimeoutError(
        f"statement timed out after {timeout:g} s and was cancelled on the server",
        cause,
        sqlstate=StatementTimeoutError.sqlstate,
        **fields,
    )


def stuck_error(error: BaseException | None, timeout: float, grace: float) -> ConnectionError:
    """The error for a statement that its timeout could not stop: the server answered neither
    the statement nor the cancel request within ``grace`` seconds, and the connection was shut
    down under it."""
    return ConnectionError(
        f"statement timed out after {timeout:g} s, and the server did not end it within "
        f"{grace:g} s of the cancel request: the connection was closed",
        error,
    )


def _outcome(state: int, error: BaseException, timeout: float, grace: float) -> BaseException:
    """What the call raises, given how the timer left it and what the statement raised."""
    if state == _HUNG_UP and isinstance(error, ConnectionError):
        return stuck_error(error, timeout, grace)
    if state != _RUNNING and isinstance(error, QueryCanceled):
        return timed_out(error, timeout)
    return error  # its own error (or a server-side statement_timeout: QueryCanceled)


class _Timers:
    """One daemon thread keeping the deadlines of every timed sync call (a heap), so that a
    call with a timeout costs a heap push and pop rather than a thread of its own. An expired
    deadline's callback (the cancel, which waits for the server) runs in a new thread: only
    then is one started. Cancelled entries are dropped lazily, and compacted when they are
    most of the heap."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[list[Any]] = []
        self._cancelled = 0
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, callback: Callable[[], None]) -> list[Any]:
        entry: list[Any] = [monotonic() + delay, next(self._seq), callback]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pgconnector-statement-timeouts", daemon=True
                )
                self._thread.start()
            elif self._heap[0] is entry:
                self._cond.notify()  # sooner than what the thread waits for
        return entry

    def cancel(self, entry: list[Any]) -> None:
        with self._cond:
            if entry[2] is None:
                return  # expired (its callback runs, and checks that the call is over)
            entry[2] = None
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2] is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        with self._cond:
            while True:
                heap = self._heap
                while heap and heap[0][2] is None:
                    heapq.heappop(heap)
                    self._cancelled -= 1
                if not heap:
                    self._cond.wait()
                    continue
                delay = heap[0][0] - monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                entry = heapq.heappop(heap)
                callback, entry[2] = entry[2], None
                threading.Thread(
                    target=callback, name="pgconnector-statement-cancel", daemon=True
                ).start()

    def after_fork(self) -> None:
        """In a forked child the thread is gone, and the condition may be held: start over."""
        self.__init__()  # type: ignore[misc]


_timers = _Timers()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_timers.after_fork)


def call_with_timeout(
    call: Callable[[], T],
    timeout: float,
    *,
    cancel: Callable[[], object],
    hang_up: Callable[[], object],
    grace: float,
) -> T:
    """Run the blocking ``call`` (one statement, errors already translated), cancelling it on
    the server if it runs longer than ``timeout`` seconds.

    When the timeout expires (one shared timer thread keeps the deadlines), a thread of its
    own sends the cancel requests (``cancel()``, repeated while the statement still runs) and,
    ``grace`` seconds after the timeout, ``hang_up()``. It does so holding a lock
    that the caller takes once ``call`` is over: so the call never returns or raises while a
    cancel request is on its way."""
    done = threading.Event()
    lock = threading.Lock()
    state = [_RUNNING]

    def expire() -> None:
        with lock:
            if done.is_set():
                return  # the statement ended first: nothing to cancel
            state[0] = _CANCELLED
            deadline = monotonic() + grace
            pause = CANCEL_RETRY_FIRST
            while True:
                with contextlib.suppress(Exception):  # best effort: the deadline bounds it
                    cancel()
                remaining = deadline - monotonic()
                if remaining <= 0 or done.wait(min(pause, remaining)):
                    break
                pause = min(pause * 2, CANCEL_RETRY_MAX)
            if not done.is_set():
                state[0] = _HUNG_UP
                with contextlib.suppress(Exception):
                    hang_up()

    timer = _timers.schedule(timeout, expire)
    try:
        result = call()
    except BaseException as exc:
        _disarm(done, timer, lock)
        error = _outcome(state[0], exc, timeout, grace)
        if error is exc:
            raise
        raise error from error.__cause__
    _disarm(done, timer, lock)
    # Ended before (or just as) the cancel request reached it: that request found the backend
    # idle and was ignored, and it is over, so the result stands.
    return result


def _disarm(done: threading.Event, timer: list[Any], lock: threading.Lock) -> None:
    done.set()
    _timers.cancel(timer)
    with lock:  # a cancel request under way: wait until the server has handled it
        pass


async def acall_with_timeout(
    call: Callable[[], Awaitable[T]],
    timeout: float,
    *,
    cancel: Callable[[], Awaitable[object]],
    hang_up: Callable[[], object],
    grace: float,
) -> T:
    """The async twin of :func:`call_with_timeout`: ``call()`` is awaited in the caller's own
    task; a ``call_later`` timer starts the canceller task only if the timeout expires, and the
    call waits for that task (even if cancelled meanwhile) before returning or raising."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    state = [_RUNNING]
    cancellers: list[asyncio.Task[None]] = []

    async def expire() -> None:
        state[0] = _CANCELLED
        deadline = loop.time() + grace
        pause = CANCEL_RETRY_FIRST
        while True:
            remaining = deadline - loop.time()
            with contextlib.suppress(Exception):  # best effort: the deadline bounds it
                await asyncio.wait_for(cancel(), max(remaining, 0.001))
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(done.wait(), min(pause, remaining))
                return
            except asyncio.TimeoutError:
                pause = min(pause * 2, CANCEL_RETRY_MAX)
        if not done.is_set():
            state[0] = _HUNG_UP
            with contextlib.suppress(Exception):
                hang_up()

    def fire() -> None:
        if not done.is_set():
            cancellers.append(loop.create_task(expire()))

    handle = loop.call_later(timeout, fire)
    try:
        result = await call()
    except BaseException as exc:
        await _adisarm(done, handle, cancellers)
        error = _outcome(state[0], exc, timeout, grace)
        if error is exc:
            raise
        raise error from error.__cause__
    await _adisarm(done, handle, cancellers)
    return result


async def _adisarm(
    done: asyncio.Event, handle: asyncio.TimerHandle, cancellers: list[asyncio.Task[None]]
) -> None:
    done.set()
    handle.cancel()
    for task in cancellers:
        # The canceller is bounded by ``grace``; it is waited for even when the caller is
        # cancelled meanwhile, so that no cancel request outlives the call.
        if task.done():
            continue
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait({task})
            raise
