"""connect / disconnect / health check / stats: the manager's lifecycle on every backend."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

import pgconnector
from pgconnector import ConnectionError, PoolConfig, PoolEvent
from tests.conftest import MakeManager, ServerInfo, Target

pytestmark = pytest.mark.integration


async def test_get_pool_before_connect_raises(make_manager: MakeManager) -> None:
    m = make_manager()
    with pytest.raises(ConnectionError) as info:
        m.get_pool()
    assert str(info.value) == "Not connected to database. Call connect() first."
    with pytest.raises(ConnectionError, match="Call connect"):
        await m.get_client()


async def test_stats_before_connect(make_manager: MakeManager) -> None:
    m = make_manager(min_size=2, max_size=7)
    stats = m.get_pool_stats()
    assert (stats.total, stats.idle, stats.waiting, stats.in_use) == (0, 0, 0, 0)
    assert (stats.min_size, stats.max_size) == (2, 7)
    assert m.is_initialized() is False
    status = await m.health_check()
    assert status.connected is False
    assert status.error == "Not connected to database. Call connect() first."


async def test_connect_is_idempotent(make_manager: MakeManager) -> None:
    m = make_manager(min_size=1)
    first = await m.connect()
    second = await m.connect()
    assert first is second
    assert m.is_initialized() is True
    assert m.get_pool() is first
    assert m.get_pool_stats().connections_opened >= 1


async def test_twenty_concurrent_connect_callers_share_one_pool(
    make_manager: MakeManager,
) -> None:
    m = make_manager(min_size=1, max_size=3)
    results: list[Any] = []
    if m.mode == "sync":
        manager = m.manager
        barrier = threading.Barrier(20)
        lock = threading.Lock()

        def caller() -> None:
            barrier.wait()
            pool = manager.connect()
            with lock:
                results.append(pool)

        threads = [threading.Thread(target=caller) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    else:
        results = list(await asyncio.gather(*(m.connect() for _ in range(20))))
    assert len(results) == 20
    assert all(r is results[0] for r in results)
    # One pool means one round of opening: never more connections than the pool may hold.
    assert m.get_pool_stats().connections_opened <= 3


async def test_failed_connect_is_retryable(own_server: Any, target: Target, make_manager:
                                           MakeManager) -> None:
    dsn = own_server.dsn()
    own_server.stop()
    m = make_manager(dsn, connect_timeout=2.0, min_size=1)
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    assert info.value.cause is not None
    assert info.value.__cause__ is info.value.cause
    assert not isinstance(info.value.cause, pgconnector.PgConnectorError)
    assert m.is_initialized() is False
    with pytest.raises(ConnectionError):
        m.get_pool()
    own_server.start()
    pool = await m.connect()
    assert pool is m.get_pool()
    assert m.is_initialized() is True
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1


async def test_health_check_follows_the_server(own_server: Any, make_manager: MakeManager) -> None:
    m = make_manager(own_server.dsn(), min_size=1, connect_timeout=2.0)
    await m.connect()
    ok = await m.health_check()
    assert ok.connected is True
    assert ok.error is None
    assert ok.latency_ms is not None and ok.latency_ms >= 0
    assert ok.last_checked.tzinfo is not None
    assert ok.pool_stats.total >= 1

    own_server.stop()
    down = await m.health_check(timeout=3.0)
    assert down.connected is False
    assert down.error
    assert m.is_initialized() is False

    own_server.start()
    up = await m.health_check(timeout=5.0)
    assert up.connected is True, up.error
    assert m.is_initialized() is True


async def test_disconnect_resets_and_reconnects(make_manager: MakeManager) -> None:
    m = make_manager(min_size=2)
    await m.disconnect()  # never connected: a no-op
    first = await m.connect()
    assert m.get_pool_stats().total >= 1
    await m.disconnect()
    stats = m.get_pool_stats()
    assert (stats.total, stats.idle, stats.in_use, stats.waiting) == (0, 0, 0, 0)
    assert stats.connections_closed == stats.connections_opened
    assert m.is_initialized() is False
    second = await m.connect()
    assert second is not first
    async with m.connection() as c:
        assert await c.fetchval("SELECT 2") == 2


async def test_disconnect_returns_as_soon_as_borrowers_release(make_manager: MakeManager) -> None:
    m = make_manager(min_size=1, max_size=2)
    await m.connect()
    held = await m.get_client()
    if m.mode == "sync":
        timer = threading.Timer(0.2, held.client.release)  # type: ignore[arg-type]
        timer.start()
        await m.disconnect(timeout=30.0)
        timer.join()
    else:
        async def release_soon() -> None:
            await asyncio.sleep(0.2)  # the borrower's work
            await held.release()

        task = asyncio.create_task(release_soon())
        await m.disconnect(timeout=30.0)
        await task
    assert held.released
    assert m.get_pool_stats().connections_closed == m.get_pool_stats().connections_opened


async def test_pool_timeout_counts_waiting_and_timeouts(make_manager: MakeManager) -> None:
    m = make_manager(min_size=0, max_size=1, acquire_timeout=0.6)
    await m.connect()
    held = await m.get_client()
    seen_waiting: list[int] = []

    def watch(stop: threading.Event) -> None:
        while not stop.is_set():
            seen_waiting.append(m.get_pool_stats().waiting)
            stop.wait(0.01)

    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    started = time.monotonic()
    try:
        with pytest.raises(pgconnector.PoolTimeoutError) as info:
            await m.get_client()
    finally:
        stop.set()
        watcher.join()
    elapsed = time.monotonic() - started
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, ConnectionError)
    assert "max_size=1" in str(info.value)
    assert 0.55 <= elapsed < 5.0
    assert max(seen_waiting) == 1
    stats = m.get_pool_stats()
    assert stats.timeouts == 1
    assert stats.waiting == 0
    assert stats.in_use == 1
    # a per-call timeout overrides acquire_timeout
    started = time.monotonic()
    with pytest.raises(pgconnector.PoolTimeoutError):
        await m.get_client(timeout=0.1)
    assert time.monotonic() - started < 0.55
    assert m.get_pool_stats().timeouts == 2
    await held.release()
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1


async def test_five_events_fire(own_server: Any, make_manager: MakeManager) -> None:
    m = make_manager(own_server.dsn(), min_size=1, max_size=2, connect_timeout=2.0)
    events: list[PoolEvent] = []
    for name in pgconnector.EVENT_NAMES:
        m.add_listener(name, events.append)

    own_server.stop()
    with pytest.raises(ConnectionError):
        await m.connect()
    errors = [e for e in events if e.name == "error"]
    assert errors, "a failed connect fires an error event"
    assert errors[0].error is not None
    assert errors[0].connection_id is None
    own_server.start()

    await m.connect()
    async with m.connection() as c:
        await c.fetchval("SELECT 1")
        acquired_id = c.connection_id
    await m.disconnect()
    names = {e.name for e in events}
    assert names == {"connect", "acquire", "release", "remove", "error"}
    for e in events:
        assert e.backend == m.backend_name
        assert e.timestamp.tzinfo is not None
    acquire = next(e for e in events if e.name == "acquire")
    release = next(e for e in events if e.name == "release")
    assert acquire.connection_id == release.connection_id == acquired_id
    connects = [e for e in events if e.name == "connect"]
    removes = [e for e in events if e.name == "remove"]
    assert {e.connection_id for e in connects} == {e.connection_id for e in removes}
    assert all(e.reason for e in removes)


async def test_context_manager_connects_and_disconnects(
    supported_target: Target, pg_server: ServerInfo
) -> None:
    config = pgconnector.PoolConfig.from_dsn(pg_server.dsn, min_size=1)
    if supported_target.mode == "sync":
        with pgconnector.ConnectionManager(config, backend=supported_target.backend) as m:
            assert m.is_initialized()
            with m.connection() as c:
                assert c.fetchval("SELECT 3") == 3
        assert not m.is_initialized()
        assert m.get_pool_stats().total == 0
    else:
        async with pgconnector.AsyncConnectionManager(
            config, backend=supported_target.backend
        ) as am:
            assert am.is_initialized()
            async with am.connection() as ac:
                assert await ac.fetchval("SELECT 3") == 3
        assert not am.is_initialized()
        assert am.get_pool_stats().total == 0


async def test_stats_add_up(make_manager: MakeManager) -> None:
    m = make_manager(min_size=1, max_size=3)
    await m.connect()
    a = await m.get_client()
    b = await m.get_client()
    stats = m.get_pool_stats()
    assert stats.in_use == 2
    assert stats.total >= 2
    assert stats.idle == stats.total - stats.in_use
    assert stats.acquires == 2
    await a.release()
    await b.release()
    await b.release()  # idempotent
    stats = m.get_pool_stats()
    assert stats.in_use == 0
    assert stats.acquires == 2
    assert stats.idle == stats.total
    assert pgconnector.fetch_pool_stats(m.get_pool()) == stats
    assert pgconnector.fetch_pool_stats(None) == pgconnector.PoolStats()


async def test_wrong_password_is_one_error_logged_once(
    pg_server: ServerInfo, make_manager: MakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    """What a newcomer with a typo in the password reads: one ConnectionError naming the
    server, database, user and the server's reason, caused directly by the driver's exception
    (no wrapper tracebacks in between), and one log line without a traceback."""
    params = PoolConfig.from_dsn(pg_server.dsn).connect_params()
    assert params.password
    wrong = pg_server.dsn.replace(f":{params.password}@", ":Wr0ng-password@")
    m = make_manager(wrong, min_size=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectionError) as info:
        await m.connect()
    message = str(info.value)
    assert message.startswith(
        f"could not connect to PostgreSQL at {params.host}:{params.port} "
        f"(database {params.database!r}, user {params.user!r}): "
        f'password authentication failed for user "{params.user}"'
    ), message
    assert message.count("password authentication failed") == 1
    if m.backend_name != "psycopg":  # libpq reports no SQLSTATE for a failed connect
        assert message.endswith("(SQLSTATE 28P01)"), message
    driver_error = info.value.__cause__
    assert driver_error is not None and driver_error is info.value.cause
    assert not isinstance(driver_error, pgconnector.PgConnectorError)
    assert driver_error.__cause__ is None
    assert driver_error.__context__ is None or driver_error.__suppress_context__
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.levelname, r.getMessage()) for r in loud] == [
        ("pgconnector", "ERROR", f"Failed to connect to PostgreSQL ({m.backend_name} backend): "
         + message)
    ]
    assert loud[0].exc_info is None
