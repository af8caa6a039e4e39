"""Leak detection: a connection held longer than ``leak_detection_threshold`` is reported once.

HikariCP's ``leakDetectionThreshold``, for Python pools. When the threshold is set, every borrow
records where it came from (the borrower's stack, captured at ``get_client()``), and one watcher
thread per pool wakes when the oldest outstanding borrow reaches the threshold. A borrow still
held then is logged once at warning level, with that stack, and counted in ``stats.leaks``
(so it can be alerted on). Releasing later is fine: it is a slow borrower, not an error.

Cost: nothing when the threshold is None (the default). When it is set, each borrow pays for
capturing its stack (as in HikariCP) and a dict insert; the watcher thread sleeps until the
next deadline. Outstanding borrows number at most ``max_size``, so finding the next deadline
is a scan of a handful of entries. It works the same for threads and asyncio tasks (the
watcher only reads which borrows are still out), and is a daemon: it never keeps the
interpreter alive.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._events import LoggerLike
    from ._stats import PoolMonitor

__all__ = ["LeakDetector"]


class _Borrow:
    __slots__ = ("connection_id", "deadline", "stack", "started")

    def __init__(self, connection_id: int, started: float, deadline: float, stack: str) -> None:
        self.connection_id = connection_id
        self.started = started
        self.deadline = deadline
        self.stack = stack


class LeakDetector:
    """Watches one pool's borrows; ``borrowed(key, id)`` at acquire, ``returned(key)`` at
    release, ``stop()`` when the pool closes."""

    def __init__(self, threshold: float, backend: str, monitor: PoolMonitor,
                 logger: LoggerLike) -> None:
        self.threshold = threshold
        self._backend = backend
        self._monitor = monitor
        self._logger = logger
        self._cond = threading.Condition(threading.Lock())
        self._borrows: dict[object, _Borrow] = {}
        self._thread: threading.Thread | None = None
        self._stopped = False

    def borrowed(self, key: object, connection_id: int) -> None:
        # Without this frame: the stack ends in the pool's acquire, called by the borrower.
        stack = "".join(traceback.format_stack(limit=32)[:-1])
        now = time.monotonic()
        borrow = _Borrow(connection_id, now, now + self.threshold, stack)
        with self._cond:
            if self._stopped:
                return
            was_empty = not self._borrows
            self._borrows[key] = borrow
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name=f"pgconnector-leaks-{self._backend}", daemon=True
                )
                self._thread.start()
            elif was_empty:
                # Every later borrow has a later deadline, so only an idle watcher (sleeping
                # without a deadline) needs waking.
                self._cond.notify()

    def returned(self, key: object) -> None:
        with self._cond:
            self._borrows.pop(key, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._borrows.clear()
            self._cond.notify()

    def _watch(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [(k, b) for k, b in self._borrows.items() if b.deadline <= now]
                for key, _ in due:
                    del self._borrows[key]  # reported once, then forgotten
                if not due:
                    pending = [b.deadline for b in self._borrows.values()]
                    self._cond.wait(min(pending) - now if pending else None)
                    continue
            for _, borrow in due:
                self._report(borrow)

    def _report(self, borrow: _Borrow) -> None:
        self._monitor.leaked()
        held = time.monotonic() - borrow.started
        self._logger.warning(
            "Connection leak detection triggered: connection %s (%s backend) has been held "
            "for %.1f s, more than leak_detection_threshold=%g s; it was borrowed at:\n%s",
            borrow.connection_id,
            self._backend,
            held,
            self.threshold,
            borrow.stack,
        )
