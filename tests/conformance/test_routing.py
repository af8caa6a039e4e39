"""ReadWriteRouter / AsyncReadWriteRouter against real servers, on every backend and mode.

Two independent embedded servers stand for the primary and the replica: the routing logic
only needs to tell them apart, which each test does on the server side with
``inet_server_port()``. The last test routes over a real streaming replica (the
``replication`` fixture of tests/topology.py).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import pgconnector
from pgconnector import (
    AsyncClient,
    AsyncReadWriteRouter,
    Client,
    ConnectionError,
    PoolConfig,
    PoolTimeoutError,
    ReadWriteRouter,
    RouterStats,
    RouterStatus,
)
from tests.backends.helpers import wait_until
from tests.conftest import Target, _embedded_or_skip
from tests.facade import ClientFacade
from tests.topology import Replication

pytestmark = pytest.mark.integration

REPLICA_MESSAGE = "Read replica"


class RouterFacade:
    """One awaitable face for both routers (as tests/facade.py does for the managers)."""

    def __init__(self, router: ReadWriteRouter | AsyncReadWriteRouter) -> None:
        self.router = router
        self.mode = "async" if isinstance(router, AsyncReadWriteRouter) else "sync"

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.router, name)(*args, **kwargs)
        if self.mode == "async":
            result = await result
        return result

    async def connect(self) -> None:
        await self._call("connect")

    async def disconnect(self, timeout: float = 10.0) -> None:
        await self._call("disconnect", timeout)

    async def health_check(self, timeout: float | None = None) -> RouterStatus:
        return await self._call("health_check", timeout)  # type: ignore[no-any-return]

    async def get_client(
        self, *, readonly: bool = False, timeout: float | None = None
    ) -> ClientFacade:
        return ClientFacade(await self._call("get_client", readonly=readonly, timeout=timeout))

    @asynccontextmanager
    async def connection(
        self, *, readonly: bool = False, timeout: float | None = None
    ) -> AsyncIterator[ClientFacade]:
        # Through the router's own context manager, not get_client + release.
        borrow = self.router.connection(readonly=readonly, timeout=timeout)
        if isinstance(self.router, AsyncReadWriteRouter):
            async with borrow as client:  # type: ignore[union-attr]
                yield ClientFacade(client)
        else:
            with borrow as client:  # type: ignore[union-attr]
                yield ClientFacade(client)

    async def read_port(self, timeout: float | None = None) -> int:
        """The port of the server that served one read borrow."""
        async with self.connection(readonly=True, timeout=timeout) as c:
            return int(await c.fetchval("SELECT inet_server_port()"))

    async def write_port(self) -> int:
        async with self.connection() as c:
            return int(await c.fetchval("SELECT inet_server_port()"))

    def get_pool_stats(self) -> RouterStats:
        return self.router.get_pool_stats()


@dataclass
class Pair:
    primary: Any  # EmbeddedServer
    replica: Any


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """Two servers for the tests that neither stop nor break them."""
    primary = _embedded_or_skip(password="primary-" + secrets.token_urlsafe(12))
    replica = _embedded_or_skip(password="replica-" + secrets.token_urlsafe(12))
    with primary, replica:
        yield Pair(primary, replica)


MakeRouter = Callable[..., RouterFacade]


@pytest.fixture
def app_name() -> str:
    """An application name of the test's own, to count its sessions on the servers."""
    return "routing-" + secrets.token_hex(4)


@pytest.fixture
async def make_router(target: Target, app_name: str) -> AsyncIterator[MakeRouter]:
    """``make_router(primary, replica, *, replica_retry_interval=5.0, primary_config={},
    replica_config={}, **common)`` → a facade over the target's router; disconnected at
    teardown. An unsupported target asserts that the router refuses it, then skips."""
    cls = ReadWriteRouter if target.mode == "sync" else AsyncReadWriteRouter
    if not target.supported:
        with pytest.raises(pgconnector.UnsupportedBackendError, match=target.backend):
            cls(
                "postgresql://nobody@127.0.0.1:1/x",
                "postgresql://nobody@127.0.0.1:2/x",
                backend=target.backend,
            )
        pytest.skip(f"{target.backend} has no {target.mode} manager (router refusal asserted)")
    made: list[RouterFacade] = []

    def factory(
        primary: Any,
        replica: Any,
        *,
        replica_retry_interval: float = 5.0,
        primary_config: dict[str, Any] | None = None,
        replica_config: dict[str, Any] | None = None,
        **common: Any,
    ) -> RouterFacade:
        common.setdefault("connect_timeout", 2.0)
        common.setdefault("application_name", app_name)
        router = cls(
            PoolConfig.from_dsn(primary.dsn(), **{**common, **(primary_config or {})}),
            PoolConfig.from_dsn(replica.dsn(), **{**common, **(replica_config or {})}),
            backend=target.backend,
            replica_retry_interval=replica_retry_interval,
        )
        facade = RouterFacade(router)
        made.append(facade)
        return facade

    yield factory
    for facade in made:
        await facade.disconnect(timeout=2.0)


@pytest.fixture
def router_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="pgconnector")
    return caplog


def replica_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records
        if r.levelno == level and r.getMessage().startswith(REPLICA_MESSAGE)
    ]


async def wait_for_read_port(router: RouterFacade, port: int, timeout: float = 20.0) -> int:
    """Borrow for reading until the replica at ``port`` serves one; returns the reads taken.

    Bounded by ``timeout``; the pause between reads only keeps the loop from spinning."""
    deadline = time.monotonic() + timeout
    reads = 0
    while True:
        reads += 1
        if await router.read_port() == port:
            return reads
        assert time.monotonic() < deadline, f"reads never came back to the replica on {port}"
        await asyncio.sleep(0.05)


def no_sessions(server: Any, application_name: str) -> Callable[[], bool]:
    return lambda: server.pg_stat_activity_count(application_name) == 0


def count_calls(manager: Any, *names: str) -> list[str]:
    """Record every call of ``manager``'s methods ``names`` (sync or async alike)."""
    calls: list[str] = []
    for name in names:
        original = getattr(manager, name)

        def spy(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        setattr(manager, name, spy)
    return calls


async def test_reads_go_to_the_replica_and_writes_to_the_primary(
    pair: Pair, make_router: MakeRouter
) -> None:
    r = make_router(pair.primary, pair.replica)
    before = r.get_pool_stats()
    assert (before.replica_reads, before.fallback_reads, before.replica_serving) == (0, 0, False)
    assert before.primary.total == before.replica.total == 0
    await r.connect()
    await r.connect()  # idempotent
    assert isinstance(r.router.primary, (pgconnector.ConnectionManager,
                                         pgconnector.AsyncConnectionManager))
    assert r.router.replica.config.connect_params().port == pair.replica.port

    assert await r.write_port() == pair.primary.port
    assert await r.read_port() == pair.replica.port
    assert await r.read_port() == pair.replica.port

    # get_client hands out the managers' own clients, which go back to their own pool.
    reader = await r.get_client(readonly=True)
    writer = await r.get_client()
    assert isinstance(reader.client, (Client, AsyncClient))
    assert await reader.fetchval("SELECT inet_server_port()") == pair.replica.port
    assert await writer.fetchval("SELECT inet_server_port()") == pair.primary.port
    held = r.get_pool_stats()
    assert (held.primary.in_use, held.replica.in_use) == (1, 1)
    await reader.release()
    await writer.release()

    stats = r.get_pool_stats()
    assert (stats.primary.in_use, stats.replica.in_use) == (0, 0)
    assert stats.replica_reads == 3
    assert stats.fallback_reads == 0
    assert stats.replica_serving is True
    assert stats.primary.acquires == 2
    assert stats.replica.acquires == 3


async def test_health_check_reports_each_server(pair: Pair, make_router: MakeRouter) -> None:
    r = make_router(pair.primary, pair.replica)
    down = await r.health_check()
    assert down.connected is False
    assert (down.primary.connected, down.replica.connected) == (False, False)
    with pytest.raises(ConnectionError, match="Call connect"):
        await r.get_client(readonly=True)
    await r.connect()
    up = await r.health_check(timeout=5.0)
    assert up.connected is True
    assert (up.primary.connected, up.replica.connected) == (True, True), up
    assert up.primary.latency_ms is not None and up.replica.latency_ms is not None


async def test_replica_outage_falls_back_then_recovers(
    own_server: Any, pair: Pair, make_router: MakeRouter, router_log: pytest.LogCaptureFixture
) -> None:
    replica = own_server
    # ping_after_idle=0: a connection left dead by the stop is found at borrow, not at query.
    r = make_router(pair.primary, replica, replica_retry_interval=1.0,
                    replica_config={"ping_after_idle": 0.0})
    await r.connect()
    assert await r.read_port() == replica.port

    replica.stop()
    assert await r.read_port() == pair.primary.port
    assert len(replica_records(router_log, logging.WARNING)) == 1
    attempts = count_calls(r.router.replica, "connect", "get_client")
    # Within the retry interval, reads go straight to the primary: the replica is not tried.
    for _ in range(3):
        assert await r.read_port() == pair.primary.port
    assert attempts == []
    stats = r.get_pool_stats()
    assert (stats.replica_reads, stats.fallback_reads, stats.replica_serving) == (1, 4, False)
    status = await r.health_check(timeout=3.0)
    assert status.connected is True
    assert status.replica.connected is False and status.replica.error

    replica.start()
    reads = await wait_for_read_port(r, replica.port)
    stats = r.get_pool_stats()
    assert stats.replica_serving is True
    assert stats.replica_reads == 2
    assert stats.fallback_reads == 4 + reads - 1
    assert await r.read_port() == replica.port
    assert len(replica_records(router_log, logging.WARNING)) == 1
    assert len(replica_records(router_log, logging.INFO)) == 1
    assert replica.password not in router_log.text
    assert pair.primary.password not in router_log.text


async def test_replica_down_at_connect(
    own_server: Any, pair: Pair, make_router: MakeRouter, router_log: pytest.LogCaptureFixture
) -> None:
    replica = own_server
    replica.stop()
    r = make_router(pair.primary, replica, replica_retry_interval=0.5)
    attempts = count_calls(r.router.replica, "connect", "get_client")
    if r.mode == "async":
        await asyncio.gather(*(r.connect() for _ in range(10)))
    else:
        router = r.router
        threads = [threading.Thread(target=router.connect) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    # Ten callers, one attempt at the replica and one warning.
    assert attempts == ["connect"]
    assert len(replica_records(router_log, logging.WARNING)) == 1
    assert r.router.primary.get_pool_stats().connections_opened >= 1
    assert await r.read_port() == pair.primary.port
    assert await r.write_port() == pair.primary.port
    stats = r.get_pool_stats()
    assert (stats.replica_reads, stats.fallback_reads, stats.replica_serving) == (0, 1, False)
    status = await r.health_check(timeout=3.0)
    assert status.connected is True
    assert status.replica.connected is False
    assert status.replica.error and "Call connect" not in status.replica.error

    replica.start()
    await wait_for_read_port(r, replica.port)
    assert r.get_pool_stats().replica_serving is True
    assert len(replica_records(router_log, logging.INFO)) == 1
    assert replica.password not in router_log.text


async def test_primary_down_at_connect_raises(
    own_server: Any, pair: Pair, make_router: MakeRouter
) -> None:
    primary = own_server
    primary.stop()
    r = make_router(primary, pair.replica)
    with pytest.raises(ConnectionError) as info:
        await r.connect()
    assert info.value.cause is not None
    assert primary.password not in str(info.value)
    # Not connected: reads do not quietly go to the replica either.
    with pytest.raises(ConnectionError, match="Call connect"):
        await r.read_port()
    primary.start()
    await r.connect()
    assert await r.write_port() == primary.port
    assert await r.read_port() == pair.replica.port


async def test_busy_replica_raises_pool_timeout_without_falling_back(
    pair: Pair, make_router: MakeRouter
) -> None:
    r = make_router(pair.primary, pair.replica, replica_config={"min_size": 0, "max_size": 1})
    await r.connect()
    held = await r.get_client(readonly=True)
    with pytest.raises(PoolTimeoutError):
        await r.get_client(readonly=True, timeout=0.2)
    stats = r.get_pool_stats()
    assert stats.fallback_reads == 0
    assert stats.replica_serving is True
    assert stats.replica.timeouts == 1
    assert stats.primary.acquires == 0
    await held.release()
    assert await r.read_port() == pair.replica.port


async def test_disconnect_leaves_no_sessions(
    pair: Pair, make_router: MakeRouter, app_name: str
) -> None:
    r = make_router(pair.primary, pair.replica, min_size=1, max_size=3)
    await r.disconnect()  # never connected: a no-op
    await r.connect()
    readers = [await r.get_client(readonly=True) for _ in range(2)]
    writers = [await r.get_client() for _ in range(2)]
    for c in [*readers, *writers]:
        assert await c.fetchval("SELECT 1") == 1
        await c.release()
    assert pair.primary.pg_stat_activity_count(app_name) >= 2
    assert pair.replica.pg_stat_activity_count(app_name) >= 2
    await r.disconnect()
    await r.disconnect()
    # The server ends a session a moment after its client hangs up.
    await wait_until(no_sessions(pair.primary, app_name))
    await wait_until(no_sessions(pair.replica, app_name))
    stats = r.get_pool_stats()
    assert stats.primary.total == stats.replica.total == 0
    assert stats.primary.connections_closed == stats.primary.connections_opened
    assert stats.replica.connections_closed == stats.replica.connections_opened
    assert stats.replica_reads == 2  # counters survive a disconnect
    await r.connect()  # and a disconnected router connects again
    assert await r.read_port() == pair.replica.port


async def test_router_as_context_manager(pair: Pair, target: Target, app_name: str) -> None:
    if not target.supported:
        pytest.skip(f"{target.backend} has no {target.mode} manager")
    common = {"application_name": app_name, "connect_timeout": 2.0}
    primary = PoolConfig.from_dsn(pair.primary.dsn(), **common)
    replica = PoolConfig.from_dsn(pair.replica.dsn(), **common)
    if target.mode == "async":
        ar = AsyncReadWriteRouter(primary, replica, backend=target.backend)
        async with ar, ar.connection(readonly=True) as c:
            assert await c.fetchval("SELECT inet_server_port()") == pair.replica.port
        stats = ar.get_pool_stats()
    else:
        sr = ReadWriteRouter(primary, replica, backend=target.backend)
        with sr, sr.connection() as sc:
            assert sc.fetchval("SELECT inet_server_port()") == pair.primary.port
        stats = sr.get_pool_stats()
    assert stats.primary.total == stats.replica.total == 0
    await wait_until(no_sessions(pair.primary, app_name))
    await wait_until(no_sessions(pair.replica, app_name))


async def test_routes_over_a_real_streaming_replica(
    make_router: MakeRouter, replication: Replication
) -> None:
    r = make_router(replication.primary, replication.standby)
    await r.connect()
    async with r.connection() as w:
        assert await w.fetchval("SELECT pg_is_in_recovery()") is False
        await w.execute("CREATE TABLE routed (id int PRIMARY KEY, note text)")
        await w.execute("INSERT INTO routed VALUES ($1, $2)", 1, "written on the primary")
    # Replication lag is the caller's business: what a read may see is what was replayed.
    replication.wait_replayed()
    async with r.connection(readonly=True) as c:
        assert await c.fetchval("SELECT pg_is_in_recovery()") is True
        assert await c.fetchval("SELECT note FROM routed WHERE id = $1", 1) == (
            "written on the primary"
        )
        with pytest.raises(Exception, match="read-only"):
            await c.execute("INSERT INTO routed VALUES (2, 'refused by the standby')")
    stats = r.get_pool_stats()
    assert (stats.replica_reads, stats.fallback_reads) == (1, 0)
