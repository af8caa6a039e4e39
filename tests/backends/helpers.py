"""What the backend-specific tests (``test_<backend>_specific.py``) share.

Each of those files checks its own driver's errors, objects and quirks; the steps and checks
that read the same for every backend live here, so that the three files cannot drift apart.
Nothing here imports a driver: a backend's file is skipped when its driver is missing, while
the others still run. The ``silent_server`` fixture is registered for the suite by
``pytest_plugins`` in ``tests/conftest.py`` (which also has pytest rewrite the asserts below,
so that a failing check shows its values).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import pytest

import pgconnector
from pgconnector import ConnectionError, PoolConfig, PoolEvent, PoolTimeoutError
from tests.conftest import ServerInfo
from tests.facade import ManagerFacade, wrap_manager

ClientCheck = Callable[[Any], Awaitable[None]]


class FakeHooks:
    """The hooks ``create_pool`` is given, for tests that expect it to refuse the config
    before a connection is ever opened."""

    def connection_opened(self, seconds: float | None = None) -> int:
        return 1

    def connection_closed(self, connection_id: int, reason: str) -> None:
        pass

    def connection_failed(self, error: BaseException, connection_id: int | None = None) -> None:
        pass


def check_backend_attributes(
    backend: Any, name: str, *, supports_sync: bool, supports_async: bool, pure_python: bool
) -> None:
    """The backend object is a ``pgconnector.Backend`` named after its distribution, and says
    what it supports."""
    assert isinstance(backend, pgconnector.Backend)
    assert (backend.name, backend.distribution) == (name, f"pgconnector-{name}")
    assert (backend.supports_sync, backend.supports_async, backend.pure_python) == (
        supports_sync,
        supports_async,
        pure_python,
    )


def explicit_config(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> PoolConfig:
    """For the tests that map a config onto a driver's connect arguments: a config that gives
    every connection field (host db.example, port 6543, user app, password s3cret, database
    appdb, a connect timeout of 2.5 s, application_name "my app"), plus ``fields``, while
    PGHOST names another host, which must not win."""
    monkeypatch.setenv("PGHOST", "env-host")
    return PoolConfig(
        host="db.example",
        port=6543,
        user="app",
        password="s3cret",
        database="appdb",
        connect_timeout=2.5,
        application_name="my app",
        **fields,
    )


# -- managers and their events ---------------------------------------------------------------


class _Manager(Protocol):
    async def disconnect(self, timeout: float = ...) -> None: ...


M = TypeVar("M", bound=_Manager)


@asynccontextmanager
async def manager_factory(
    pg_server: ServerInfo, build: Callable[[PoolConfig], M]
) -> AsyncIterator[Callable[..., M]]:
    """For a backend file's ``make`` fixture: ``make(dsn=None, **config_overrides)`` builds a
    manager (with ``build``) on the test server, or on ``dsn``, with a connect timeout of 5 s
    unless told otherwise. Every manager made is disconnected at the end."""
    made: list[M] = []

    def factory(dsn: str | None = None, **overrides: Any) -> M:
        overrides.setdefault("connect_timeout", 5.0)
        manager = build(PoolConfig.from_dsn(dsn or pg_server.dsn, **overrides))
        made.append(manager)
        return manager

    yield factory
    for manager in made:
        await manager.disconnect(timeout=2.0)


def sync_and_async_make(backend: str) -> tuple[Any, Any]:
    """The ``mode`` and ``make`` fixtures of a backend with both managers, for its test module
    to bind (``mode, make = sync_and_async_make(...)``): a test that asks for ``make`` runs
    once with the sync manager and once with the async one, behind the one async face of
    ``tests/facade.py``; ``mode`` says which."""

    @pytest.fixture(params=["sync", "async"])
    def mode(request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    async def make(
        mode: str, pg_server: ServerInfo
    ) -> AsyncIterator[Callable[..., ManagerFacade]]:
        async with manager_factory(
            pg_server, lambda config: wrap_manager(config, backend, mode)
        ) as factory:
            yield factory

    return mode, make


def record_events(m: Any) -> list[PoolEvent]:
    """The manager's connect, remove and error events from now on, in order."""
    events: list[PoolEvent] = []
    for name in ("connect", "remove", "error"):
        m.add_listener(name, events.append)
    return events


def removal_reasons(events: list[PoolEvent]) -> list[str | None]:
    return [e.reason for e in events if e.name == "remove"]


def error_events(events: list[PoolEvent]) -> list[PoolEvent]:
    return [e for e in events if e.name == "error"]


def check_accounts(m: Any, events: list[PoolEvent]) -> None:
    """After disconnect: every connection opened was reported closed, each exactly once."""
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed
    connects = [e.connection_id for e in events if e.name == "connect"]
    removes = [e.connection_id for e in events if e.name == "remove"]
    assert sorted(connects) == sorted(removes)
    assert len(set(removes)) == len(removes)


def check_closes_reported(m: Any, events: list[PoolEvent]) -> None:
    """After disconnect: as many connections closed as opened, and each one opened reported
    removed (``check_accounts`` also checks that none is reported twice)."""
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed
    connects = {e.connection_id for e in events if e.name == "connect"}
    assert connects == {e.connection_id for e in events if e.name == "remove"}


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> float:
    """Poll ``predicate`` until it holds; returns the seconds that took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


# -- servers that are not there, or say nothing ----------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nobody listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


# -- steps and checks every backend's tests take alike ---------------------------------------
# Each returns what the caller needs to check its own driver's part (error classes, messages).


async def open_on_a_closed_port(
    make: Any, **overrides: Any
) -> tuple[Any, list[PoolEvent], ConnectionError]:
    """Open a manager on a port nobody listens on, with a password in the DSN: it fails at the
    first attempt (not after connect_timeout), saying where and as whom, but not the password.
    The failure is reported as an error event, and nothing stays open. Returns the manager,
    its events and the error."""
    port = closed_port()
    m = make(f"postgresql://app:hunter2pw@127.0.0.1:{port}/appdb", **overrides)
    events = record_events(m)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    assert time.monotonic() - started < 2.0  # the first failed attempt, not the timeout
    message = str(info.value)
    assert f"could not connect to PostgreSQL at 127.0.0.1:{port}" in message
    assert "database 'appdb', user 'app'" in message
    assert "hunter2pw" not in message
    assert error_events(events)
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed
    return m, events, info.value


@asynccontextmanager
async def connection_with_settings(
    make: Any, application_name: str, dsn: str | None = None
) -> AsyncIterator[Any]:
    """A connection of a manager made with ``application_name`` and two server settings, all
    of which the server shows; the caller checks its driver's side while it is borrowed."""
    m = make(
        dsn,
        min_size=0,
        application_name=application_name,
        server_settings={"search_path": "pg_catalog, public", "work_mem": "5MB"},
    )
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SHOW application_name") == application_name
        assert await c.fetchval("SHOW search_path") == "pg_catalog, public"
        assert await c.fetchval("SHOW work_mem") == "5MB"
        yield c


async def connect_with_a_wrong_password(make: Any, pg_server: ServerInfo) -> ConnectionError:
    """The error of a connect with a wrong password, which the message does not repeat."""
    if pg_server.password is None:
        pytest.skip("needs a password-protected server")
    dsn = pg_server.dsn.replace(pg_server.password, "wrong-Pa55word")
    m = make(dsn, min_size=1)
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    assert "wrong-Pa55word" not in str(info.value)
    return info.value


async def check_session_reset(
    make: Any, *, also_leave: ClientCheck | None = None, also_check: ClientCheck
) -> None:
    """With reset_on_release="session", what a borrower leaves on its connection (a setting, a
    LISTEN, a temporary table, an advisory lock, a prepared statement, and whatever
    ``also_leave`` adds), outside and then inside a transaction, is gone for the next borrower.
    Prepared statements and locks ``also_check`` counts: drivers prepare statements of their
    own, and find a connection's server process in their own ways."""
    m = make(min_size=1, max_size=1, reset_on_release="session")
    await m.connect()
    for in_transaction in (False, True):
        async with m.connection() as c:
            await c.execute("SET work_mem = '7MB'")
            await c.execute("LISTEN pgc_channel")
            await c.execute("CREATE TEMP TABLE pgc_tmp (x int)")
            await c.fetchval("SELECT pg_advisory_lock(4242)")
            await c.execute("PREPARE pgc_stmt AS SELECT 1")
            if also_leave is not None:
                await also_leave(c)
            if in_transaction:
                await c.execute("BEGIN")
                await c.execute("SELECT 1")
        async with m.connection() as c:
            assert await c.fetchval("SHOW work_mem") != "7MB"
            assert await c.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            assert await c.fetchval("SELECT to_regclass('pg_temp.pgc_tmp')") is None
            await also_check(c)


async def advisory_locks_held(c: Any) -> Any:
    """How many advisory locks the connection's own session holds."""
    return await c.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    )


async def shrink_when_idle(make: Any) -> tuple[Any, list[PoolEvent]]:
    """A pool of min_size 1 and idle_timeout 0.2 s grows to three connections, which are then
    released; returns the manager and its events once it is down to one connection."""
    m = make(min_size=1, max_size=3, idle_timeout=0.2)
    events = record_events(m)
    await m.connect()
    clients = [await m.get_client() for _ in range(3)]
    for client in clients:
        await client.release()
    await wait_until(lambda: m.get_pool_stats().total == 1)
    return m, events


async def outlive_max_lifetime(make: Any, hold: float = 0.4) -> list[PoolEvent]:
    """A connection borrowed for ``hold`` seconds, past its max_lifetime of 0.3 s, is not
    handed out again. Returns the events."""
    m = make(min_size=1, max_size=1, max_lifetime=0.3)
    events = record_events(m)
    await m.connect()
    async with m.connection() as c:
        first = c.connection_id
        await asyncio.sleep(hold)
    async with m.connection() as c:
        assert c.connection_id != first
    return events


async def use_up_max_uses(make: Any) -> list[PoolEvent]:
    """Five borrows with max_uses=2 get connections a, a, b, b, c. Returns the events."""
    m = make(min_size=1, max_size=1, max_uses=2)
    events = record_events(m)
    await m.connect()
    ids = []
    for _ in range(5):
        async with m.connection() as c:
            ids.append(c.connection_id)
    assert ids[0] == ids[1] != ids[2] == ids[3] != ids[4]
    return events


async def use_a_terminated_connection(
    make: Any,
) -> tuple[Any, list[PoolEvent], int, ConnectionError]:
    """On a manager of one to two connections: borrow one, have its server process terminated
    (from the other) and use it: the statement fails with a connection error. Returns the
    manager, its events, the id of the broken connection and the error."""
    m = make(min_size=1, max_size=2)
    events = record_events(m)
    await m.connect()
    async with m.connection() as c:
        victim = c.connection_id
        pid = await c.fetchval("SELECT pg_backend_pid()")
        async with m.connection() as admin:
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(ConnectionError) as info:
            await c.fetchval("SELECT 1")
    return m, events, victim, info.value


async def cancel_half_the_borrows(m: Any) -> None:
    """Ten rounds of eight short borrows, half of them cancelled mid-way."""

    async def borrow() -> None:
        async with m.connection() as c:
            await c.fetchval("SELECT pg_sleep(0.01)")

    for _ in range(10):
        tasks = [asyncio.create_task(borrow()) for _ in range(8)]
        await asyncio.sleep(0.005)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def check_cancelled_borrows_leak_nothing(
    pg_server: ServerInfo,
    backend: str,
    *,
    settle: float,
    timeout: float,
    also_check: ClientCheck | None = None,
) -> tuple[pgconnector.AsyncConnectionManager, list[PoolEvent]]:
    """An async manager of max_size 2 whose borrows are cancelled half of the time (see
    ``cancel_half_the_borrows``) leaks no connection: after ``settle`` seconds for the pool to
    catch up, both can be borrowed within ``timeout`` (and checked with ``also_check``) and
    given back; after disconnect as many were closed as opened. Returns the manager and its
    events."""
    config = PoolConfig.from_dsn(pg_server.dsn, min_size=0, max_size=2)
    m = pgconnector.AsyncConnectionManager(config, backend=backend)
    events = record_events(m)
    await m.connect()
    try:
        await cancel_half_the_borrows(m)
        if settle:
            await asyncio.sleep(settle)
        clients = [await m.get_client(timeout=timeout) for _ in range(2)]
        assert m.get_pool_stats().in_use == 2
        for client in clients:
            if also_check is not None:
                await also_check(client)
            await client.release()
        assert m.get_pool_stats().in_use == 0
    finally:
        await m.disconnect()
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed
    return m, events


async def check_acquire_timeout(make: Any) -> None:
    """A borrower waits acquire_timeout for the only connection, then gets a pool timeout; a
    timeout of zero means "do not wait", not "fail"."""
    m = make(min_size=1, max_size=1, acquire_timeout=0.2)
    await m.connect()
    async with m.connection():
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError):
            await m.get_client()
        assert 0.15 < time.monotonic() - started < 2.0
    async with m.connection(timeout=0) as c:
        assert await c.fetchval("SELECT 1") == 1


def outage_config(own_server: Any) -> PoolConfig:
    """For the outage tests: short connects, a long acquire timeout, and a ping on every
    hand-out, so that a borrower must learn of the outage from the failed connects."""
    return PoolConfig.from_dsn(
        own_server.dsn(),
        min_size=2,
        max_size=3,
        connect_timeout=1.0,
        acquire_timeout=20.0,
        ping_after_idle=0,
    )


async def borrow_during_outage(m: Any, within: float) -> ConnectionError:
    """A borrow while the server is down fails within ``within`` seconds (about
    connect_timeout, not acquire_timeout) with a connection error, not a pool timeout."""
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.get_client()
    assert time.monotonic() - started < within
    assert not isinstance(info.value, PoolTimeoutError)
    assert "could not connect to PostgreSQL" in str(info.value)
    return info.value


@asynccontextmanager
async def through_an_outage(
    own_server: Any, backend: str, mode: str, *, first_within: float
) -> AsyncIterator[tuple[ManagerFacade, ConnectionError]]:
    """A connected manager (``outage_config``) whose server is stopped: the idle connections
    fail their ping and their replacements cannot connect, so the first borrow fails within
    ``first_within`` seconds and the next within 3 s, not after acquire_timeout. Then the
    server is started again and the body, given the manager and the first error, checks the
    recovery. At the end, after disconnect, as many connections were closed as opened."""
    m = wrap_manager(outage_config(own_server), backend, mode)
    await m.connect()
    try:
        own_server.stop()
        error = await borrow_during_outage(m, within=first_within)
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await m.get_client()
        assert time.monotonic() - started < 3.0  # fails fast, not after acquire_timeout
        own_server.start()
        yield m, error
    finally:
        await m.disconnect()
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed
