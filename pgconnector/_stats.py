"""Pool statistics and the monitor that counts them and dispatches events (no I/O).

The counting lives here, in the core, so that ``PoolStats`` means the same thing on every
backend whatever its driver exposes. The monitor is shared by the sync and the async manager
and may be called from any thread, so every mutation happens under one lock.

The gauges (``total``, ``in_use``, ``waiting``) are counted per pool generation — one
``connect()`` to its ``disconnect()`` — in a :class:`PoolGauges` of their own, while the
counters are the manager's. A borrow or a connection that outlives ``disconnect()`` settles in
the generation it started in, so every increment meets its decrement in the same object: the
next generation's numbers cannot be dragged below zero, and a closed generation's return to
zero once its last borrower is gone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

from ._events import EVENT_NAMES, EventName, Listener, PoolEvent
from ._redact import redact
from .errors import ConfigError

if TYPE_CHECKING:
    from ._events import LoggerLike

__all__ = ["PoolStats", "ConnectionStatus", "PoolGauges", "PoolMonitor", "TimingSink"]


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of one pool.

    ``total``, ``idle``, ``waiting`` and ``in_use`` describe the pool now (all 0 before
    ``connect()`` and after ``disconnect()``); ``acquires``, ``timeouts``,
    ``connections_opened``, ``connections_closed`` and ``leaks`` count since the manager was
    built and survive a disconnect.
    """

    total: int = 0
    idle: int = 0
    waiting: int = 0
    in_use: int = 0
    min_size: int = 0
    max_size: int = 0
    acquires: int = 0
    timeouts: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    leaks: int = 0


@dataclass(frozen=True)
class ConnectionStatus:
    """The result of a health check. ``error`` is the (redacted) reason when not connected."""

    connected: bool
    pool_stats: PoolStats
    last_checked: datetime
    latency_ms: float | None = None
    error: str | None = None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class TimingSink(Protocol):
    """Receives the durations that only the pool's code path can measure, in seconds.

    Attached with :meth:`PoolMonitor.add_sink` (the metrics integrations do that). Called from
    whichever thread or task borrowed, released or opened the connection: implementations
    must be thread-safe, quick, and must not block.
    """

    def wait_time(self, seconds: float) -> None:
        """A borrow was granted after waiting this long (requested → granted)."""
        ...

    def use_time(self, seconds: float) -> None:
        """A connection went back to the pool after being held this long."""
        ...

    def create_time(self, seconds: float) -> None:
        """Opening one server connection took this long (as the backend measured it)."""
        ...


class PoolMonitor:
    """Counts what happens in one manager's pool and fires its events.

    The counters and the events are the manager's, across reconnects; the gauges of each pool
    generation are in the :class:`PoolGauges` that :meth:`generation` makes for it.
    """

    def __init__(
        self,
        backend: str,
        min_size: int,
        max_size: int,
        logger: LoggerLike,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.backend = backend
        self.min_size = min_size
        self.max_size = max_size
        self._logger = logger
        self._secrets = secrets
        #: Guards every count, the generations' gauges included.
        self._lock = threading.Lock()
        self._listeners: dict[EventName, list[Listener]] = {name: [] for name in EVENT_NAMES}
        self._next_id = 0
        # counters (cumulative)
        self._acquires = 0
        self._timeouts = 0
        self._opened = 0
        self._closed = 0
        self._leaks = 0
        #: Who wants wait/use/create times. Empty, the usual case, means no clock is read on
        #: the borrow path: the managed pool checks this one attribute. Replaced (copy on
        #: write, under the lock) rather than mutated, so readers never need the lock.
        self.sinks: tuple[TimingSink, ...] = ()

    def generation(self) -> PoolGauges:
        """The gauges of a new pool generation (one ``connect()``), all zero."""
        return PoolGauges(self)

    # -- timing sinks ----------------------------------------------------------------------

    def add_sink(self, sink: TimingSink) -> None:
        with self._lock:
            self.sinks = (*self.sinks, sink)

    def remove_sink(self, sink: TimingSink) -> None:
        with self._lock:
            self.sinks = tuple(s for s in self.sinks if s is not sink)

    def waited(self, seconds: float) -> None:
        for sink in self.sinks:
            try:
                sink.wait_time(seconds)
            except Exception as exc:
                self._sink_failed(exc)

    def used(self, seconds: float) -> None:
        for sink in self.sinks:
            try:
                sink.use_time(seconds)
            except Exception as exc:
                self._sink_failed(exc)

    def created(self, seconds: float) -> None:
        for sink in self.sinks:
            try:
                sink.create_time(seconds)
            except Exception as exc:
                self._sink_failed(exc)

    def _sink_failed(self, exc: Exception) -> None:
        # Metrics must never break a borrow or a release.
        self._logger.error(
            "pgconnector: a metrics sink raised %s", redact(repr(exc), self._secrets)
        )

    # -- listeners -------------------------------------------------------------------------

    def add_listener(self, event: str, callback: Listener) -> None:
        if event not in self._listeners:
            raise ConfigError(
                f"unknown pool event {event!r}: use one of {', '.join(EVENT_NAMES)}",
                field="event",
            )
        if not callable(callback):
            raise ConfigError("a pool event listener must be callable", field="callback")
        with self._lock:
            # Copy-on-write so that emit() can iterate without holding the lock.
            self._listeners[event] = [*self._listeners[event], callback]

    def remove_listener(self, event: str, callback: Listener) -> None:
        with self._lock:
            current = self._listeners.get(event)  # type: ignore[call-overload]
            if current and callback in current:
                # == rather than "is": bound methods are new objects at every attribute access
                remaining = list(current)
                remaining.remove(callback)
                self._listeners[event] = remaining  # type: ignore[index]

    def emit(
        self,
        name: EventName,
        connection_id: int | None,
        *,
        reason: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        listeners = self._listeners[name]
        if not listeners:
            return
        event = PoolEvent(name, self.backend, connection_id, utcnow(), reason, error)
        for callback in listeners:
            try:
                callback(event)
            except Exception as exc:
                # A listener must never break the pool: log it, and report it once as an
                # error event (but not from an error listener, which would loop).
                self._logger.error(
                    "pgconnector: listener for %r event raised %s",
                    name,
                    redact(repr(exc), self._secrets),
                )
                if name != "error":
                    self.emit("error", connection_id, error=exc)

    def connection_failed(self, error: BaseException, connection_id: int | None = None) -> None:
        self.emit("error", connection_id, error=error)

    def leaked(self) -> None:
        with self._lock:
            self._leaks += 1

    def snapshot(self, gauges: PoolGauges | None = None) -> PoolStats:
        """The counters, with ``gauges``' numbers (zeros without: not connected)."""
        with self._lock:
            if gauges is None:
                total = in_use = waiting = 0
            else:
                total, in_use, waiting = gauges.total, gauges.in_use, gauges.waiting
            return PoolStats(
                total=total,
                # Not a clamp over drift: a borrowed connection that broke is reported closed
                # before its borrower releases it, so for that moment in_use exceeds total.
                idle=max(0, total - in_use),
                waiting=waiting,
                in_use=in_use,
                min_size=self.min_size,
                max_size=self.max_size,
                acquires=self._acquires,
                timeouts=self._timeouts,
                connections_opened=self._opened,
                connections_closed=self._closed,
                leaks=self._leaks,
            )


class PoolGauges:
    """What one pool generation has open (``total``), lent (``in_use``) and has borrowers
    waiting for (``waiting``); implements :class:`~pgconnector._protocols.PoolHooks` for that
    generation's backend pool, and counts the manager's counters on its monitor.

    Every borrow that increments ``waiting`` or ``in_use`` here decrements it here, whenever
    it ends, and every connection the backend reports open here is reported closed here: the
    numbers are exact for the generation's whole life, and back at zero once it is closed and
    its last borrower is gone. Read them with :meth:`PoolMonitor.snapshot`.
    """

    __slots__ = ("in_use", "monitor", "total", "waiting")

    def __init__(self, monitor: PoolMonitor) -> None:
        self.monitor = monitor
        self.total = 0
        self.in_use = 0
        self.waiting = 0

    # -- PoolHooks -------------------------------------------------------------------------

    def connection_opened(self, seconds: float | None = None) -> int:
        monitor = self.monitor
        with monitor._lock:
            monitor._next_id += 1
            connection_id = monitor._next_id
            monitor._opened += 1
            self.total += 1
        if seconds is not None and monitor.sinks:
            monitor.created(seconds)
        monitor.emit("connect", connection_id)
        return connection_id

    def connection_closed(self, connection_id: int, reason: str) -> None:
        monitor = self.monitor
        with monitor._lock:
            self.total -= 1
            monitor._closed += 1
        monitor.emit("remove", connection_id, reason=reason)

    def connection_failed(self, error: BaseException, connection_id: int | None = None) -> None:
        self.monitor.emit("error", connection_id, error=error)

    # -- the managed pool's side -----------------------------------------------------------

    def wait_started(self) -> None:
        with self.monitor._lock:
            self.waiting += 1

    def wait_timed_out(self) -> None:
        monitor = self.monitor
        with monitor._lock:
            self.waiting -= 1
            monitor._timeouts += 1

    def wait_failed(self) -> None:
        with self.monitor._lock:
            self.waiting -= 1

    # The pool fires the acquire and release events itself, outside its own lock.

    def acquired(self) -> None:
        monitor = self.monitor
        with monitor._lock:
            self.waiting -= 1
            self.in_use += 1
            monitor._acquires += 1

    def released(self) -> None:
        with self.monitor._lock:
            self.in_use -= 1
