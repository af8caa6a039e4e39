"""OpenTelemetry metrics for a pgconnector pool (``pip install "pgconnector[otel]"``).

``instrument(manager)`` publishes what the semantic conventions for database client
connection pools define, every data point with the attribute
``db.client.connection.pool.name``:

- ``db.client.connection.count`` (ObservableUpDownCounter, ``{connection}``): open connections
  by ``db.client.connection.state``, ``idle`` or ``used`` (``PoolStats.idle`` / ``in_use``).
- ``db.client.connection.idle.max`` (ObservableUpDownCounter, ``{connection}``): ``max_size``,
  since every open connection may sit idle.
- ``db.client.connection.idle.min`` (ObservableUpDownCounter, ``{connection}``): ``min_size``.
- ``db.client.connection.max`` (ObservableUpDownCounter, ``{connection}``): ``max_size``.
- ``db.client.connection.pending_requests`` (ObservableUpDownCounter, ``{request}``): borrowers
  waiting now (``PoolStats.waiting``).
- ``db.client.connection.timeouts`` (ObservableCounter, ``{timeout}``): borrows that gave up
  after ``acquire_timeout`` since the manager was built (``PoolStats.timeouts``).
- ``db.client.connection.create_time`` (Histogram, ``s``): opening one server connection, as
  the backend measured it.
- ``db.client.connection.wait_time`` (Histogram, ``s``): a successful borrow, requested to
  granted.
- ``db.client.connection.use_time`` (Histogram, ``s``): a borrow, granted to released.

The histograms advise the bucket boundaries in
:data:`pgconnector.metrics.HISTOGRAM_BUCKETS` (seconds; OpenTelemetry's defaults are made for
milliseconds). Borrows that were in progress when instrumentation started are not timed.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

try:
    from opentelemetry import metrics as _otel
    from opentelemetry.metrics import CallbackOptions, Histogram, Meter, MeterProvider, Observation
except ImportError as exc:  # pragma: no cover - exercised by the install checks
    raise ImportError(
        "pgconnector.metrics.otel needs the OpenTelemetry API: "
        'pip install "pgconnector[otel]"'
    ) from exc

from .. import __version__
from .._stats import PoolStats
from ._common import HISTOGRAM_BUCKETS, AnyManager, PoolSource, source_for

__all__ = ["POOL_NAME", "STATE", "Instrumentation", "instrument"]

#: The attribute naming the pool on every data point.
POOL_NAME = "db.client.connection.pool.name"
#: The attribute of ``db.client.connection.count``: ``idle`` or ``used``.
STATE = "db.client.connection.state"

_SCOPE = "pgconnector"


def instrument(
    manager: AnyManager,
    *,
    meter_provider: MeterProvider | None = None,
    pool_name: str | None = None,
) -> Instrumentation:
    """Publish ``manager``'s pool metrics through ``meter_provider`` (default: the global one).

    Works for a :class:`~pgconnector.ConnectionManager` and an
    :class:`~pgconnector.AsyncConnectionManager`, connected or not, and keeps reporting
    across ``disconnect()`` / ``connect()``. ``pool_name`` defaults to
    :func:`pgconnector.metrics.default_pool_name` (``host:port/database``). Several managers
    may be instrumented on one provider, each under its own name; a name already reported on
    that provider raises ``ValueError``.

    Returns an :class:`Instrumentation`: ``.uninstrument()`` (or leaving ``with``) stops
    the reporting.
    """
    source = source_for(manager, pool_name)
    provider = meter_provider if meter_provider is not None else _otel.get_meter_provider()
    state = _state_for(provider)
    sink = _HistogramSink(state, {POOL_NAME: source.name})
    state.add(source)
    source.monitor.add_sink(sink)
    return Instrumentation(state, source, sink)


class Instrumentation:
    """What :func:`instrument` returns; undo it with :meth:`uninstrument` or ``with``."""

    def __init__(self, state: _MeterState, source: PoolSource, sink: _HistogramSink) -> None:
        self._state = state
        self._source = source
        self._sink = sink
        self._active = True

    @property
    def pool_name(self) -> str:
        """The ``db.client.connection.pool.name`` this manager reports under."""
        return self._source.name

    @property
    def active(self) -> bool:
        return self._active

    def uninstrument(self) -> None:
        """Stop reporting this pool (idempotent). OpenTelemetry cannot remove instruments: the
        shared ones stay registered, but report no data point for this pool from now on."""
        if not self._active:
            return
        self._active = False
        self._source.monitor.remove_sink(self._sink)
        self._state.remove(self._source)

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstrument()

    def __repr__(self) -> str:
        state = "active" if self._active else "uninstrumented"
        return f"<Instrumentation pool_name={self._source.name!r} {state}>"


class _HistogramSink:
    """The monitor's :class:`~pgconnector._stats.TimingSink`: records into the shared
    histograms with this pool's attributes (OpenTelemetry's instruments are thread-safe)."""

    __slots__ = ("_attributes", "_create", "_use", "_wait")

    def __init__(self, state: _MeterState, attributes: dict[str, str]) -> None:
        self._attributes = attributes
        self._create = state.create_time
        self._wait = state.wait_time
        self._use = state.use_time

    def wait_time(self, seconds: float) -> None:
        self._wait.record(seconds, self._attributes)

    def use_time(self, seconds: float) -> None:
        self._use.record(seconds, self._attributes)

    def create_time(self, seconds: float) -> None:
        self._create.record(seconds, self._attributes)


class _MeterState:
    """The instruments of one meter provider, and the pools they currently report.

    Created once per provider and shared by every pool on it: the API cannot remove an
    instrument, and registering a name again returns the first instrument with the first
    callbacks. So the callbacks read whichever pools are instrumented at collection time.
    """

    def __init__(self, meter: Meter) -> None:
        self._lock = threading.Lock()
        self._sources: dict[str, PoolSource] = {}
        counter = meter.create_observable_up_down_counter
        counter(
            "db.client.connection.count",
            [self._observer(_count)],
            "{connection}",
            "The number of connections that are currently in state described by the state "
            "attribute",
        )
        counter(
            "db.client.connection.idle.max",
            [self._observer(lambda s: [(s.max_size, {})])],
            "{connection}",
            "The maximum number of idle open connections allowed",
        )
        counter(
            "db.client.connection.idle.min",
            [self._observer(lambda s: [(s.min_size, {})])],
            "{connection}",
            "The minimum number of idle open connections allowed",
        )
        counter(
            "db.client.connection.max",
            [self._observer(lambda s: [(s.max_size, {})])],
            "{connection}",
            "The maximum number of open connections allowed",
        )
        counter(
            "db.client.connection.pending_requests",
            [self._observer(lambda s: [(s.waiting, {})])],
            "{request}",
            "The number of current pending requests for an open connection",
        )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            [self._observer(lambda s: [(s.timeouts, {})])],
            "{timeout}",
            "The number of connection timeouts that have occurred trying to obtain a "
            "connection from the pool",
        )
        self.create_time = _histogram(
            meter, "db.client.connection.create_time", "The time it took to create a new connection"
        )
        self.wait_time = _histogram(
            meter,
            "db.client.connection.wait_time",
            "The time it took to obtain an open connection from the pool",
        )
        self.use_time = _histogram(
            meter,
            "db.client.connection.use_time",
            "The time between borrowing a connection and returning it to the pool",
        )

    def add(self, source: PoolSource) -> None:
        with self._lock:
            if source.name in self._sources:
                raise ValueError(
                    f"pool name {source.name!r} is already reported on this meter provider: "
                    "uninstrument it first, or pass another pool_name="
                )
            self._sources[source.name] = source

    def remove(self, source: PoolSource) -> None:
        with self._lock:
            if self._sources.get(source.name) is source:
                del self._sources[source.name]

    def _observer(
        self, values: Callable[[PoolStats], Iterable[tuple[int, dict[str, str]]]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                sources = list(self._sources.values())
            observations = []
            for source in sources:
                stats = source.stats()
                if stats is None:  # the manager is gone
                    continue
                for value, extra in values(stats):
                    observations.append(Observation(value, {POOL_NAME: source.name, **extra}))
            return observations

        return observe


def _count(stats: PoolStats) -> list[tuple[int, dict[str, str]]]:
    return [(stats.idle, {STATE: "idle"}), (stats.in_use, {STATE: "used"})]


def _histogram(meter: Meter, name: str, description: str) -> Histogram:
    try:
        return meter.create_histogram(
            name, "s", description, explicit_bucket_boundaries_advisory=HISTOGRAM_BUCKETS
        )
    except TypeError:  # opentelemetry-api older than 1.23: no advice, default buckets
        return meter.create_histogram(name, "s", description)


_states_lock = threading.Lock()
# Keyed weakly by provider: a provider that is dropped takes its instruments with it.
_states: weakref.WeakKeyDictionary[Any, _MeterState] = weakref.WeakKeyDictionary()
_strong_states: dict[int, tuple[Any, _MeterState]] = {}


def _state_for(provider: MeterProvider) -> _MeterState:
    with _states_lock:
        try:
            state = _states.get(provider)
        except TypeError:  # a provider that cannot be weakly referenced: keep it for good
            entry = _strong_states.get(id(provider))
            if entry is None:
                state = _MeterState(provider.get_meter(_SCOPE, __version__))
                _strong_states[id(provider)] = (provider, state)
                return state
            return entry[1]
        if state is None:
            state = _MeterState(provider.get_meter(_SCOPE, __version__))
            _states[provider] = state
        return state
