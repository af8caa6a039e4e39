"""Pool metrics read back through each library's own test reader, on every backend and manager.

OpenTelemetry: an SDK ``MeterProvider`` with an ``InMemoryMetricReader``. Prometheus: a fresh
``CollectorRegistry`` and ``get_sample_value``. Both are read into one shape (``Reading``) so
that every scenario is written once and runs against both exporters.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client import CollectorRegistry

from pgconnector import PoolStats, PoolTimeoutError
from pgconnector.metrics import HISTOGRAM_BUCKETS, default_pool_name
from pgconnector.metrics.otel import POOL_NAME, STATE, Instrumentation, instrument
from pgconnector.metrics.prometheus import POOL_LABEL, STATE_LABEL, PoolCollector
from tests.conftest import MakeManager
from tests.facade import ManagerFacade

pytestmark = pytest.mark.integration

BORROWS = 5


@dataclass(frozen=True)
class Histo:
    count: int
    total: float


@dataclass(frozen=True)
class Reading:
    """One pool's metrics at one collection."""

    idle: float
    used: float
    max: float
    idle_max: float
    idle_min: float
    pending: float
    timeouts: float
    create: Histo
    wait: Histo
    use: Histo


class View(Protocol):
    def add(self, manager: Any, pool_name: str | None = None) -> str: ...

    def read(self, pool_name: str) -> Reading | None: ...

    def stop(self, pool_name: str) -> None: ...

    def close(self) -> None: ...


class OtelView:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.handles: dict[str, Instrumentation] = {}

    def add(self, manager: Any, pool_name: str | None = None) -> str:
        handle = instrument(manager, meter_provider=self.provider, pool_name=pool_name)
        self.handles[handle.pool_name] = handle
        return handle.pool_name

    def points(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def read(self, pool_name: str) -> Reading | None:
        points = self.points()

        def value(name: str, **attributes: str) -> float | None:
            wanted = {POOL_NAME: pool_name, **attributes}
            hits = [p.value for p in points.get(name, []) if dict(p.attributes) == wanted]
            assert len(hits) <= 1, (name, hits)
            return hits[0] if hits else None

        def histo(name: str) -> Histo:
            hits = [
                p for p in points.get(name, []) if dict(p.attributes) == {POOL_NAME: pool_name}
            ]
            if not hits:
                return Histo(0, 0.0)
            (point,) = hits
            assert isinstance(point, HistogramDataPoint)
            assert list(point.explicit_bounds) == list(HISTOGRAM_BUCKETS)
            assert sum(point.bucket_counts) == point.count
            if point.count:
                assert 0.0 <= point.min <= point.max
            return Histo(point.count, point.sum)

        idle = value("db.client.connection.count", **{STATE: "idle"})
        if idle is None:
            return None
        return Reading(
            idle=idle,
            used=_known(value("db.client.connection.count", **{STATE: "used"})),
            max=_known(value("db.client.connection.max")),
            idle_max=_known(value("db.client.connection.idle.max")),
            idle_min=_known(value("db.client.connection.idle.min")),
            pending=_known(value("db.client.connection.pending_requests")),
            timeouts=_known(value("db.client.connection.timeouts")),
            create=histo("db.client.connection.create_time"),
            wait=histo("db.client.connection.wait_time"),
            use=histo("db.client.connection.use_time"),
        )

    def stop(self, pool_name: str) -> None:
        self.handles.pop(pool_name).uninstrument()

    def close(self) -> None:
        for handle in self.handles.values():
            handle.uninstrument()
        self.provider.shutdown()


class PromView:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.collector: PoolCollector | None = None

    def add(self, manager: Any, pool_name: str | None = None) -> str:
        if self.collector is None:
            self.collector = PoolCollector(manager, pool_name=pool_name)
            self.registry.register(self.collector)
            return self.collector.pool_names[0]
        return self.collector.add(manager, pool_name=pool_name)

    def read(self, pool_name: str) -> Reading | None:
        def value(name: str, **labels: str) -> float | None:
            return self.registry.get_sample_value(name, {POOL_LABEL: pool_name, **labels})

        def histo(name: str) -> Histo:
            count = _known(value(f"{name}_seconds_count"))
            assert value(f"{name}_seconds_bucket", le="+Inf") == count
            return Histo(int(count), _known(value(f"{name}_seconds_sum")))

        idle = value("db_client_connection_count", **{STATE_LABEL: "idle"})
        if idle is None:
            return None
        return Reading(
            idle=idle,
            used=_known(value("db_client_connection_count", **{STATE_LABEL: "used"})),
            max=_known(value("db_client_connection_max")),
            idle_max=_known(value("db_client_connection_idle_max")),
            idle_min=_known(value("db_client_connection_idle_min")),
            pending=_known(value("db_client_connection_pending_requests")),
            timeouts=_known(value("db_client_connection_timeouts_total")),
            create=histo("db_client_connection_create_time"),
            wait=histo("db_client_connection_wait_time"),
            use=histo("db_client_connection_use_time"),
        )

    def stop(self, pool_name: str) -> None:
        assert self.collector is not None
        self.collector.close()
        self.registry.unregister(self.collector)
        self.collector = None

    def close(self) -> None:
        if self.collector is not None:
            self.collector.close()


def _known(value: float | None) -> float:
    assert value is not None
    return value


@pytest.fixture(params=["otel", "prometheus"])
def view(request: pytest.FixtureRequest) -> Iterator[View]:
    made: View = OtelView() if request.param == "otel" else PromView()
    yield made
    made.close()


def read(view: View, name: str) -> Reading:
    reading = view.read(name)
    assert reading is not None, f"nothing reported for pool {name!r}"
    return reading


def assert_gauges_match(reading: Reading, stats: PoolStats) -> None:
    assert (reading.idle, reading.used, reading.pending) == (stats.idle, stats.in_use,
                                                             stats.waiting)
    assert (reading.max, reading.idle_max, reading.idle_min) == (stats.max_size, stats.max_size,
                                                                 stats.min_size)
    assert reading.timeouts == stats.timeouts


async def borrow(m: ManagerFacade, times: int) -> None:
    for k in range(times):
        async with m.connection() as c:
            assert await c.fetchval("SELECT $1::int", k) == k


async def wait_for_waiting(m: ManagerFacade, count: int) -> None:
    """Until the pool's own gauge shows ``count`` queued borrowers (or fail after 10 s)."""
    deadline = time.monotonic() + 10.0
    while m.get_pool_stats().waiting < count:
        assert time.monotonic() < deadline, f"expected {count} waiting: {m.get_pool_stats()}"
        await asyncio.sleep(0.005)


class Waiter:
    """One borrower blocked on a full pool: a thread for the sync manager, a task for the
    async one. ``finish()`` returns what it borrowed, released."""

    def __init__(self, m: ManagerFacade) -> None:
        self.m = m
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[Any] | None = None
        self.result: list[Any] = []
        if m.mode == "sync":
            self.thread = threading.Thread(target=self._borrow_sync)
            self.thread.start()
        else:
            self.task = asyncio.ensure_future(m.manager.get_client(timeout=30.0))

    def _borrow_sync(self) -> None:
        try:
            self.result.append(self.m.manager.get_client(timeout=30.0))
        except BaseException as exc:
            self.result.append(exc)

    async def finish(self) -> None:
        if self.thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.thread.join, 30.0)
            assert not self.thread.is_alive()
            (client,) = self.result
            assert not isinstance(client, BaseException), client
            client.release()
        else:
            assert self.task is not None
            client = await asyncio.wait_for(self.task, 30.0)
            await client.release()


@pytest.fixture
def metered(make_manager: MakeManager, view: View) -> Any:
    """``metered(**config)`` → (facade, pool name): a manager instrumented before connect."""

    def factory(pool_name: str | None = None, **config: Any) -> tuple[ManagerFacade, str]:
        m = make_manager(**config)
        return m, view.add(m.manager, pool_name)

    return factory


async def test_borrows_are_timed_and_gauges_match(metered: Any, view: View) -> None:
    m, name = metered(min_size=1, max_size=3)
    before = read(view, name)  # reported before connect: configured sizes, nothing open
    assert (before.idle, before.used, before.max, before.idle_min) == (0, 0, 3, 1)
    assert (before.wait.count, before.use.count, before.create.count) == (0, 0, 0)
    await m.connect()
    await borrow(m, BORROWS)
    stats = m.get_pool_stats()
    reading = read(view, name)
    assert reading.wait.count == BORROWS
    assert reading.use.count == BORROWS
    assert reading.create.count == stats.connections_opened >= 1
    assert reading.use.total >= 0.0 and reading.wait.total >= 0.0
    assert reading.create.total > 0.0
    assert_gauges_match(reading, stats)

    held = await m.get_client()
    try:
        stats = m.get_pool_stats()
        reading = read(view, name)
        assert reading.used == stats.in_use == 1
        assert_gauges_match(reading, stats)
        # the borrow is timed when granted; its use when it comes back
        assert (reading.wait.count, reading.use.count) == (BORROWS + 1, BORROWS)
    finally:
        await held.release()
    assert read(view, name).use.count == BORROWS + 1


async def test_pending_requests_and_timeouts(metered: Any, view: View) -> None:
    m, name = metered(min_size=0, max_size=1, acquire_timeout=30.0)
    await m.connect()
    held = await m.get_client()
    start = read(view, name)
    assert (start.pending, start.timeouts) == (0, 0)

    with pytest.raises(PoolTimeoutError):
        await m.get_client(timeout=0.2)
    after_timeout = read(view, name)
    assert after_timeout.timeouts == start.timeouts + 1
    assert after_timeout.wait.count == start.wait.count  # a timeout is not a granted wait
    assert after_timeout.pending == 0

    waiter = Waiter(m)
    try:
        await wait_for_waiting(m, 1)
        blocked = read(view, name)
        assert blocked.pending == m.get_pool_stats().waiting == 1
        assert blocked.used == 1
    finally:
        await held.release()
        await waiter.finish()
    done = read(view, name)
    assert done.pending == 0
    assert done.timeouts == start.timeouts + 1
    assert done.wait.count == start.wait.count + 1
    assert done.use.count == start.use.count + 2


async def test_follows_the_manager_across_reconnect(metered: Any, view: View) -> None:
    m, name = metered(min_size=1, max_size=2)
    await m.connect()
    await borrow(m, 2)
    await m.disconnect()
    closed = read(view, name)
    assert (closed.idle, closed.used, closed.pending) == (0, 0, 0)
    assert (closed.wait.count, closed.use.count) == (2, 2)
    await m.connect()
    await borrow(m, 3)
    stats = m.get_pool_stats()
    reading = read(view, name)
    assert (reading.wait.count, reading.use.count) == (5, 5)
    assert reading.create.count == stats.connections_opened >= 2
    assert_gauges_match(reading, stats)


async def test_two_managers_two_pool_names(make_manager: MakeManager, view: View) -> None:
    first, second = make_manager(min_size=1, max_size=2), make_manager(min_size=0, max_size=4)
    name1, name2 = view.add(first.manager), view.add(second.manager)
    params = first.config.connect_params()
    base = f"{params.host}:{params.port}/{params.database}"
    assert name1 != name2
    assert name1 == default_pool_name(first.manager)
    assert name2 == default_pool_name(second.manager)
    for name in (name1, name2):
        assert name == base or name.startswith(base + "#")
        assert params.password is None or params.password not in name
    await first.connect()
    await second.connect()
    await borrow(first, 2)
    await borrow(second, 3)
    one, two = read(view, name1), read(view, name2)
    assert (one.wait.count, two.wait.count) == (2, 3)
    assert (one.max, two.max, one.idle_min, two.idle_min) == (2, 4, 1, 0)
    assert_gauges_match(one, first.get_pool_stats())
    assert_gauges_match(two, second.get_pool_stats())
    # a name already reported is refused, rather than mixing two pools in one series
    with pytest.raises(ValueError, match="already"):
        view.add(second.manager, name1)


async def test_uninstrument_stops_reporting(metered: Any, view: View) -> None:
    m, name = metered(pool_name="to-stop", min_size=1, max_size=2)
    await m.connect()
    await borrow(m, 2)
    assert read(view, name).wait.count == 2
    view.stop(name)
    assert m.manager._monitor.sinks == ()  # the borrow path reads no clock any more
    await borrow(m, 3)
    after = view.read(name)
    if after is not None:
        # OpenTelemetry cannot drop an instrument: its cumulative histograms keep their last
        # point, but nothing is added and the observable gauges report nothing for the pool
        pytest.fail(f"observable metrics still reported after uninstrument: {after}")
    if isinstance(view, OtelView):
        points = view.points()
        waits = [p for p in points.get("db.client.connection.wait_time", [])
                 if dict(p.attributes) == {POOL_NAME: name}]
        assert [p.count for p in waits] in ([], [2])
    # and the same manager can be instrumented again under that name
    assert view.add(m.manager, name) == name
    await borrow(m, 1)
    assert read(view, name).use.count >= 1


async def test_many_borrowers_counted_exactly(metered: Any, view: View) -> None:
    """Concurrent borrowers (threads for the sync manager, tasks for the async one) on a small
    pool: every granted wait and every use is recorded once."""
    m, name = metered(min_size=1, max_size=3, acquire_timeout=30.0)
    await m.connect()
    workers, each = 8, 25
    if m.mode == "sync":
        manager = m.manager
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(each):
                    with manager.connection() as c:
                        c.fetchval("SELECT 1")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            await asyncio.get_running_loop().run_in_executor(None, t.join, 60.0)
        assert errors == []
    else:
        amanager = m.manager

        async def awork() -> None:
            for _ in range(each):
                async with amanager.connection() as c:
                    await c.fetchval("SELECT 1")

        await asyncio.wait_for(asyncio.gather(*(awork() for _ in range(workers))), 60.0)
    stats = m.get_pool_stats()
    reading = read(view, name)
    assert reading.wait.count == reading.use.count == workers * each == stats.acquires
    assert reading.create.count == stats.connections_opened
    assert_gauges_match(reading, stats)


async def test_prometheus_refuses_a_second_collector_on_one_registry(
    make_manager: MakeManager,
) -> None:
    registry = CollectorRegistry()
    first = PoolCollector(make_manager().manager, pool_name="a")
    registry.register(first)
    second = PoolCollector(make_manager().manager, pool_name="b")
    try:
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            registry.register(second)
    finally:
        first.close()
        second.close()
