"""What only the psycopg backend has to get right: mapping the config onto libpq and
psycopg_pool, and the paths by which psycopg_pool opens, checks and closes connections.

The cross-backend behaviour is in ``tests/conformance``; these tests look under the hood
(``client.raw``, ``pool.native``, the server's ``pg_stat_activity``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import pgconnector
from pgconnector import ConfigError, ConnectionError, PoolConfig, PoolEvent, PoolTimeoutError
from tests.conftest import ServerInfo
from tests.facade import ManagerFacade, wrap_manager

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")

from pgconnector_psycopg import backend  # noqa: E402
from pgconnector_psycopg._common import (  # noqa: E402
    connect_kwargs,
    escape_option,
    libpq_connect_timeout,
)


class _Hooks:
    def connection_opened(self) -> int:
        return 1

    def connection_closed(self, connection_id: int, reason: str) -> None:
        pass

    def connection_failed(self, error: BaseException, connection_id: int | None = None) -> None:
        pass


# -- no server ------------------------------------------------------------------------------


def test_importing_the_backend_imports_no_driver() -> None:
    code = (
        "import sys, pgconnector, pgconnector_psycopg; pgconnector.available_backends(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_backend_attributes() -> None:
    assert isinstance(backend, pgconnector.Backend)
    assert (backend.name, backend.distribution) == ("psycopg", "pgconnector-psycopg")
    assert (backend.supports_sync, backend.supports_async, backend.pure_python) == (
        True,
        True,
        False,
    )


def test_connect_kwargs_are_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "env-host")
    config = PoolConfig(
        host="db.example",
        port=6543,
        user="app",
        password="s3cret",
        database="appdb",
        ssl="require",
        connect_timeout=2.5,
        application_name="my app",
        server_settings={"search_path": "a b,c\\d", "statement_timeout": "5s"},
        dsn="postgresql://x@y/z?sslrootcert=/ca.pem&options=-c%20work_mem%3D8MB%20-O",
    )
    kwargs = connect_kwargs(config, config.connect_params())
    assert kwargs["host"] == "db.example"
    assert kwargs["port"] == 6543
    assert kwargs["user"] == "app"
    assert kwargs["password"] == "s3cret"
    assert kwargs["dbname"] == "appdb"
    assert kwargs["sslmode"] == "require"
    assert kwargs["connect_timeout"] == 3
    assert kwargs["application_name"] == "my app"
    assert kwargs["sslrootcert"] == "/ca.pem"
    assert kwargs["target_session_attrs"] == "any"
    options = kwargs["options"]
    assert options.startswith("-c work_mem=8MB -O")
    assert "-c search_path=a\\ b,c\\\\d" in options
    assert "-c statement_timeout=5s" in options


def test_connect_timeout_granularity() -> None:
    assert [libpq_connect_timeout(s) for s in (0.1, 1.0, 2.0, 2.01, 7.5)] == [2, 2, 2, 3, 8]


def test_escape_option() -> None:
    assert escape_option("a b\tc\\d") == "a\\ b\\\tc\\\\d"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_ssl_context_is_refused_at_create_pool(mode: str) -> None:
    config = PoolConfig(host="127.0.0.1", ssl=ssl.create_default_context())
    create = backend.create_pool if mode == "sync" else backend.create_async_pool
    with pytest.raises(ConfigError) as info:
        create(config, _Hooks())
    assert info.value.field == "ssl"
    assert "sslrootcert" in str(info.value)


# -- real server ----------------------------------------------------------------------------


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make(mode: str, pg_server: ServerInfo) -> AsyncIterator[Any]:
    made: list[ManagerFacade] = []

    def factory(dsn: str | None = None, **overrides: Any) -> ManagerFacade:
        overrides.setdefault("connect_timeout", 5.0)
        config = PoolConfig.from_dsn(dsn or pg_server.dsn, **overrides)
        facade = wrap_manager(config, "psycopg", mode)
        made.append(facade)
        return facade

    yield factory
    for facade in made:
        await facade.disconnect(timeout=2.0)


def _events(m: ManagerFacade) -> list[PoolEvent]:
    events: list[PoolEvent] = []
    for name in ("connect", "remove", "error"):
        m.add_listener(name, events.append)
    return events


def _removes(events: list[PoolEvent]) -> list[str | None]:
    return [e.reason for e in events if e.name == "remove"]


async def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def _last_query(dsn: str, pid: int) -> str:
    """The last statement the server received on the connection of backend ``pid``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        assert row is not None
        return str(row[0])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
@pytest.mark.parametrize("min_size", [0, 2])
async def test_open_fails_fast_with_the_driver_error(make: Any, min_size: int) -> None:
    port = _closed_port()
    m = make(
        f"postgresql://app:hunter2pw@127.0.0.1:{port}/appdb",
        min_size=min_size,
        connect_timeout=5.0,
    )
    events = _events(m)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    assert time.monotonic() - started < 2.0  # the first failed attempt, not the timeout
    message = str(info.value)
    assert f"could not connect to PostgreSQL at 127.0.0.1:{port}" in message
    assert "database 'appdb', user 'app'" in message
    assert "hunter2pw" not in message
    assert isinstance(info.value.cause, psycopg.OperationalError)
    assert info.value.__cause__ is info.value.cause
    assert any(e.name == "error" for e in events)
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed


@pytest.mark.integration
async def test_wrong_password_is_reported_redacted(make: Any, pg_server: ServerInfo) -> None:
    if pg_server.password is None:
        pytest.skip("needs a password-protected server")
    dsn = pg_server.dsn.replace(pg_server.password, "wrong-Pa55word")
    m = make(dsn, min_size=1)
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    assert "wrong-Pa55word" not in str(info.value)
    assert "password authentication failed" in str(info.value)
    assert isinstance(info.value.cause, psycopg.OperationalError)


@pytest.mark.integration
async def test_server_settings_and_application_name_reach_the_server(make: Any) -> None:
    m = make(
        min_size=0,
        application_name="pgc psycopg",
        server_settings={"search_path": "pg_catalog, public", "work_mem": "5MB"},
    )
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SHOW application_name") == "pgc psycopg"
        assert await c.fetchval("SHOW search_path") == "pg_catalog, public"
        assert await c.fetchval("SHOW work_mem") == "5MB"
        assert c.raw.autocommit is True
        assert isinstance(c.raw.cursor(), psycopg.RawCursor | psycopg.AsyncRawCursor)


@pytest.mark.integration
async def test_clean_release_costs_no_round_trip(make: Any, pg_server: ServerInfo) -> None:
    m = make(min_size=1, max_size=1, ping_after_idle=None)
    await m.connect()
    async with m.connection() as client:
        pid = client.raw.info.backend_pid
        await client.fetchval("SELECT 'marker-clean'")
    assert _last_query(pg_server.dsn, pid) == "SELECT 'marker-clean'"
    async with m.connection() as client:
        await client.execute("BEGIN")
        await client.execute("SELECT 'marker-in-tx'")
    assert _last_query(pg_server.dsn, pid) == "ROLLBACK"
    async with m.connection() as client:
        assert client.raw.info.backend_pid == pid
        assert client.raw.info.transaction_status.name == "IDLE"


@pytest.mark.integration
async def test_session_reset(make: Any) -> None:
    m = make(min_size=1, max_size=1, reset_on_release="session")
    await m.connect()
    for in_transaction in (False, True):
        async with m.connection() as c:
            await c.execute("SET work_mem = '7MB'")
            await c.execute("LISTEN pgc_channel")
            await c.execute("CREATE TEMP TABLE pgc_tmp (x int)")
            await c.fetchval("SELECT pg_advisory_lock(4242)")
            await c.execute("PREPARE pgc_stmt AS SELECT 1")
            c.raw.prepare_threshold = 0  # psycopg prepares from now on...
            await c.fetchval("SELECT $1::int", 1)  # ...this one server-side
            if in_transaction:
                await c.execute("BEGIN")
                await c.execute("SELECT 1")
        async with m.connection() as c:
            assert await c.fetchval("SHOW work_mem") != "7MB"
            assert await c.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            assert await c.fetchval("SELECT to_regclass('pg_temp.pgc_tmp')") is None
            assert await c.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
            assert (
                await c.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid()"
                )
                == 0
            )
            # psycopg's own cache of prepared statements is not stale
            assert await c.fetchval("SELECT $1::int", 2) == 2
            assert c.raw.info.transaction_status.name == "IDLE"


@pytest.mark.integration
async def test_max_uses_retires_quietly(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    m = make(min_size=1, max_size=1, max_uses=2)
    events = _events(m)
    await m.connect()
    ids = []
    with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
        for _ in range(5):
            async with m.connection() as c:
                ids.append(c.connection_id)
    assert ids[0] == ids[1] != ids[2] == ids[3] != ids[4]
    assert _removes(events) == ["max_uses", "max_uses"]
    assert not [r for r in caplog.records if r.name == "psycopg.pool"]


@pytest.mark.integration
async def test_dead_idle_connection_is_replaced_silently(make: Any) -> None:
    m = make(min_size=2, max_size=2, ping_after_idle=0)
    events = _events(m)
    await m.connect()
    victim = await m.get_client()
    killer = await m.get_client()
    await killer.fetchval("SELECT pg_terminate_backend($1)", victim.raw.info.backend_pid)
    await killer.release()
    await victim.release()  # looks clean to the client side: goes back without a round trip
    await asyncio.sleep(0.2)
    for _ in range(4):
        async with m.connection() as c:
            assert c.connection_id != victim.connection_id
            assert await c.fetchval("SELECT 1") == 1
    assert _removes(events) == ["check failed"]
    assert not [e for e in events if e.name == "error"]


@pytest.mark.integration
async def test_broken_connection_surfaces_and_is_not_reused(make: Any) -> None:
    m = make(min_size=1, max_size=2)
    events = _events(m)
    await m.connect()
    async with m.connection() as c:
        victim = c.connection_id
        async with m.connection() as admin:
            await admin.fetchval("SELECT pg_terminate_backend($1)", c.raw.info.backend_pid)
        with pytest.raises(ConnectionError) as info:
            await c.fetchval("SELECT 1")
        assert isinstance(info.value.cause, psycopg.OperationalError)
    # a statement error on a healthy connection is psycopg's own
    async with m.connection() as c:
        assert c.connection_id != victim
        with pytest.raises(psycopg.errors.DivisionByZero):
            await c.fetchval("SELECT 1/0")
        await c.execute("SET statement_timeout = '10ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            await c.execute("SELECT pg_sleep(1)")
        await c.execute("RESET statement_timeout")
    assert "broken" in _removes(events)
    await m.disconnect()
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed == len(_removes(events))


@pytest.mark.integration
async def test_idle_shrink_and_max_lifetime_reasons(make: Any) -> None:
    m = make(min_size=1, max_size=3, idle_timeout=0.2)
    events = _events(m)
    await m.connect()
    clients = [await m.get_client() for _ in range(3)]
    for client in clients:
        await client.release()
    await _wait_for(lambda: m.get_pool_stats().total == 1)
    assert _removes(events) == ["idle", "idle"]

    m2 = make(min_size=1, max_size=1, max_lifetime=0.3)
    events2 = _events(m2)
    await m2.connect()
    async with m2.connection() as c:
        first = c.connection_id
        await asyncio.sleep(0.4)
    async with m2.connection() as c:
        assert c.connection_id != first
    assert _removes(events2) == ["max_lifetime"]


@pytest.mark.integration
async def test_acquire_timeout(make: Any) -> None:
    m = make(min_size=1, max_size=1, acquire_timeout=0.2)
    await m.connect()
    async with m.connection():
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError):
            await m.get_client()
        assert 0.15 < time.monotonic() - started < 2.0
    async with m.connection(timeout=0) as c:  # zero means "do not wait", not "fail"
        assert await c.fetchval("SELECT 1") == 1


@pytest.mark.integration
async def test_disconnect_with_a_borrowed_connection_reports_every_close(make: Any) -> None:
    m = make(min_size=2, max_size=4)
    events = _events(m)
    await m.connect()
    await m.get_client()  # never released
    async with m.connection():
        pass
    await m.disconnect(timeout=0.1)
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed
    connects = {e.connection_id for e in events if e.name == "connect"}
    assert connects == {e.connection_id for e in events if e.name == "remove"}


@pytest.mark.integration
async def test_async_cancelled_borrows_leak_nothing(pg_server: ServerInfo) -> None:
    config = PoolConfig.from_dsn(pg_server.dsn, min_size=0, max_size=2)
    m = pgconnector.AsyncConnectionManager(config, backend="psycopg")
    await m.connect()
    try:

        async def borrow() -> None:
            async with m.connection() as c:
                await c.fetchval("SELECT pg_sleep(0.01)")

        for _ in range(10):
            tasks = [asyncio.create_task(borrow()) for _ in range(8)]
            await asyncio.sleep(0.005)
            for task in tasks[::2]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.1)
        clients = [await m.get_client(timeout=2) for _ in range(2)]
        assert m.get_pool_stats().in_use == 2
        for client in clients:
            await client.release()
        assert m.get_pool_stats().in_use == 0
    finally:
        await m.disconnect()
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.integration
async def test_float_connect_timeout_is_enforced_in_async(
    make: Any, mode: str, silent_server: int
) -> None:
    m = make(f"postgresql://u@127.0.0.1:{silent_server}/db", min_size=1, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    elapsed = time.monotonic() - started
    if mode == "async":
        assert elapsed < 1.5
    else:
        assert elapsed < 4.0  # libpq's whole-second floor of 2 s
    assert isinstance(info.value.cause, psycopg.OperationalError)


@pytest.mark.integration
@pytest.mark.slow
async def test_outage_fails_fast_then_recovers(mode: str, own_server: Any) -> None:
    config = PoolConfig.from_dsn(
        own_server.dsn(),
        min_size=2,
        max_size=3,
        connect_timeout=1.0,
        acquire_timeout=20.0,
        ping_after_idle=0,
    )
    m = wrap_manager(config, "psycopg", mode)
    await m.connect()
    try:
        own_server.stop()
        # The idle connections fail their ping; their replacements cannot connect. The
        # borrower learns it within about connect_timeout, not acquire_timeout.
        started = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            await m.get_client()
        assert time.monotonic() - started < 5.0
        assert not isinstance(info.value, PoolTimeoutError)
        assert isinstance(info.value.cause, psycopg.OperationalError)
        assert "could not connect to PostgreSQL" in str(info.value)
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await m.get_client()
        assert time.monotonic() - started < 3.0  # fails fast, not after acquire_timeout
        own_server.start()
        await _wait_for(lambda: m.get_pool_stats().total >= 2, timeout=30.0)
        async with m.connection() as c:
            assert await c.fetchval("SELECT 1") == 1
    finally:
        await m.disconnect()
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed


@pytest.mark.integration
async def test_release_during_copy_discards(make: Any, mode: str) -> None:
    m = make(min_size=1, max_size=1)
    events = _events(m)
    await m.connect()
    async with m.connection() as c:
        victim = c.connection_id
        copy = c.raw.cursor().copy("COPY (SELECT generate_series(1, 100000)) TO STDOUT")
        if mode == "async":
            await copy.__aenter__()
        else:
            copy.__enter__()
        assert c.raw.info.transaction_status.name == "ACTIVE"
    async with m.connection() as c:
        assert c.connection_id != victim
        assert await c.fetchval("SELECT 1") == 1
    assert _removes(events) == ["discarded"]
