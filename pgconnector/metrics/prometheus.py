"""A Prometheus collector for pgconnector pools (``pip install "pgconnector[prometheus]"``).

``PoolCollector(manager)`` exposes the data of :mod:`pgconnector.metrics.otel` under the
names OpenTelemetry's Prometheus exporter gives those metrics (dots become underscores, a
counter gains ``_total``, a histogram in seconds ``_seconds``; attribute names become label
names), so one dashboard reads either route:

- ``db_client_connection_count{db_client_connection_pool_name, db_client_connection_state}``
  (gauge; state ``idle`` or ``used``)
- ``db_client_connection_idle_max``, ``db_client_connection_idle_min``,
  ``db_client_connection_max``, ``db_client_connection_pending_requests``
  (gauges, label ``db_client_connection_pool_name``)
- ``db_client_connection_timeouts_total`` (counter)
- ``db_client_connection_create_time_seconds``, ``db_client_connection_wait_time_seconds``,
  ``db_client_connection_use_time_seconds`` (histograms, buckets
  :data:`pgconnector.metrics.HISTOGRAM_BUCKETS`)

Use one collector per registry and :meth:`PoolCollector.add` further managers to it: the
exposition format wants each metric family once, so a second ``PoolCollector`` registered on
the same registry is refused by ``prometheus_client`` (``Duplicated timeseries``).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator

try:
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.utils import floatToGoString
except ImportError as exc:  # the extra is optional: say which one to install
    raise ImportError(
        "pgconnector.metrics.prometheus needs prometheus_client: "
        'pip install "pgconnector[prometheus]"'
    ) from exc

from ._common import HISTOGRAM_BUCKETS, AnyManager, PoolSource, source_for

__all__ = ["POOL_LABEL", "STATE_LABEL", "PoolCollector"]

#: The label naming the pool on every sample (``db.client.connection.pool.name`` in OTel).
POOL_LABEL = "db_client_connection_pool_name"
#: The label of ``db_client_connection_count``: ``idle`` or ``used``.
STATE_LABEL = "db_client_connection_state"

# prometheus_client's own spelling of bucket bounds, so that "le" labels match its histograms
_go_float: Callable[[float], str] = floatToGoString
_LE = [_go_float(bound) for bound in HISTOGRAM_BUCKETS] + ["+Inf"]


class _Histogram:
    """Bucket counts, sum and count of one pool's samples; thread-safe."""

    __slots__ = ("_counts", "_lock", "_sum")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * (len(HISTOGRAM_BUCKETS) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a sample equal to a bound belongs to that bucket (le means <=)
        index = bisect_left(HISTOGRAM_BUCKETS, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        """Cumulative ``(le, count)`` pairs ending with ``+Inf``, and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative: list[tuple[str, float]] = []
        running = 0
        for le, count in zip(_LE, counts, strict=True):
            running += count
            cumulative.append((le, running))
        return cumulative, total


class _Pool:
    """One manager in the collector: where its stats come from and its histograms. It is the
    monitor's :class:`~pgconnector._stats.TimingSink` as well."""

    __slots__ = ("create", "source", "use", "wait")

    def __init__(self, source: PoolSource) -> None:
        self.source = source
        self.create = _Histogram()
        self.wait = _Histogram()
        self.use = _Histogram()

    def wait_time(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def use_time(self, seconds: float) -> None:
        self.use.observe(seconds)

    def create_time(self, seconds: float) -> None:
        self.create.observe(seconds)


class PoolCollector:
    """A ``prometheus_client`` collector of pool metrics:
    ``registry.register(PoolCollector(manager))``.

    ``pool_name`` (the ``db_client_connection_pool_name`` label) defaults to
    :func:`pgconnector.metrics.default_pool_name` (``host:port/database``). The collector
    follows the manager across ``disconnect()`` / ``connect()``. Histograms count from the
    moment the manager is added. ``registry.unregister(collector)`` stops the scraping;
    :meth:`close` also stops the timing (call both when you are done with it).
    """

    def __init__(self, manager: AnyManager, *, pool_name: str | None = None) -> None:
        self._lock = threading.Lock()
        self._pools: dict[str, _Pool] = {}
        self.add(manager, pool_name=pool_name)

    @property
    def pool_names(self) -> list[str]:
        with self._lock:
            return list(self._pools)

    def add(self, manager: AnyManager, *, pool_name: str | None = None) -> str:
        """Report another manager too; returns its pool name (``ValueError`` if taken)."""
        pool = _Pool(source_for(manager, pool_name))
        with self._lock:
            if pool.source.name in self._pools:
                raise ValueError(
                    f"pool name {pool.source.name!r} is already in this collector: pass "
                    "another pool_name="
                )
            self._pools[pool.source.name] = pool
        pool.source.monitor.add_sink(pool)
        return pool.source.name

    def remove(self, manager: AnyManager) -> None:
        """Stop reporting ``manager`` (a no-op if it is not reported here)."""
        with self._lock:
            gone = [p for p in self._pools.values() if p.source.is_for(manager)]
            for pool in gone:
                del self._pools[pool.source.name]
        for pool in gone:
            pool.source.monitor.remove_sink(pool)

    def close(self) -> None:
        """Stop reporting every manager and detach from their pools (idempotent)."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.source.monitor.remove_sink(pool)

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples: lets a registry refuse a clash at
        ``register()`` rather than serve an exposition with a family twice."""
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        (count, idle_max, idle_min, maximum, pending, timeouts, create, wait, use) = _families()
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            stats = pool.source.stats()
            if stats is None:  # the manager is gone
                continue
            name = pool.source.name
            count.add_metric([name, "idle"], stats.idle)
            count.add_metric([name, "used"], stats.in_use)
            idle_max.add_metric([name], stats.max_size)
            idle_min.add_metric([name], stats.min_size)
            maximum.add_metric([name], stats.max_size)
            pending.add_metric([name], stats.waiting)
            timeouts.add_metric([name], stats.timeouts)
            for family, histogram in ((create, pool.create), (wait, pool.wait), (use, pool.use)):
                buckets, total = histogram.buckets()
                family.add_metric([name], buckets, total)
        yield from (count, idle_max, idle_min, maximum, pending, timeouts, create, wait, use)


def _families() -> tuple[
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    CounterMetricFamily,
    HistogramMetricFamily,
    HistogramMetricFamily,
    HistogramMetricFamily,
]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[POOL_LABEL])

    def histogram(name: str, doc: str) -> HistogramMetricFamily:
        return HistogramMetricFamily(name, doc, labels=[POOL_LABEL], unit="seconds")

    return (
        GaugeMetricFamily(
            "db_client_connection_count",
            "The number of connections that are currently in state described by the state "
            "label",
            labels=[POOL_LABEL, STATE_LABEL],
        ),
        gauge("db_client_connection_idle_max", "The maximum number of idle open connections "
              "allowed"),
        gauge("db_client_connection_idle_min", "The minimum number of idle open connections "
              "allowed"),
        gauge("db_client_connection_max", "The maximum number of open connections allowed"),
        gauge("db_client_connection_pending_requests", "The number of current pending "
              "requests for an open connection"),
        CounterMetricFamily(
            "db_client_connection_timeouts",
            "The number of connection timeouts that have occurred trying to obtain a "
            "connection from the pool",
            labels=[POOL_LABEL],
        ),
        histogram("db_client_connection_create_time", "The time it took to create a new "
                  "connection"),
        histogram("db_client_connection_wait_time", "The time it took to obtain an open "
                  "connection from the pool"),
        histogram("db_client_connection_use_time", "The time between borrowing a connection "
                  "and returning it to the pool"),
    )
