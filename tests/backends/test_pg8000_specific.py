"""What only the pg8000 backend (and the pool it runs on, pgconnector's own) has to get right:
mapping the config onto pg8000, TLS negotiation, the pool's fairness, timing, maintenance and
shutdown against a real server, and keeping the event loop free in async code.

The cross-backend behaviour is in ``tests/conformance``; the pool's pure logic, with a fake
driver, in ``tests/unit/test_generic_pool.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import pgconnector
from pgconnector import ConfigError, ConnectionError, PoolConfig, PoolEvent, PoolTimeoutError
from tests.conftest import ServerInfo
from tests.facade import ManagerFacade, wrap_manager

pg8000 = pytest.importorskip("pg8000")

from pg8000.exceptions import DatabaseError, InterfaceError  # noqa: E402

from pgconnector_pg8000 import backend  # noqa: E402
from pgconnector_pg8000._driver import (  # noqa: E402
    Pg8000Connection,
    Pg8000Driver,
    check_options,
    param_oid,
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
        "import sys, pgconnector, pgconnector_pg8000; pgconnector.available_backends(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pg8000', 'scramp')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_backend_attributes() -> None:
    assert isinstance(backend, pgconnector.Backend)
    assert (backend.name, backend.distribution) == ("pg8000", "pgconnector-pg8000")
    assert (backend.supports_sync, backend.supports_async, backend.pure_python) == (
        True,
        True,
        True,
    )
    backend.check_driver()


def test_parameter_types_follow_psycopg() -> None:
    cases = [
        (40, 21), (70000, 23), (9_000_000_000, 20), (10**20, 1700), (1.5, 701),
        (Decimal("1.25"), 1700), (True, 16), (b"\x01", 17), (bytearray(b"x"), 17),
        ("text", 0), (None, 0), ({"a": 1}, 0), (dt.date(2020, 1, 2), 1082),
        (dt.datetime(2020, 1, 2), 1114), (dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc), 1184),
        (dt.time(1, 2), 1083), (dt.timedelta(seconds=3), 1186), (uuid.uuid4(), 2950),
        ([1, 2], 1005), ([1, 2**40], 1016), ([1.5], 1022), ([True, None], 1000), (["a"], 0),
        ([[1]], 0), ([1, "a"], 0),
    ]
    assert [(value, param_oid(value)) for value, _ in cases] == cases


@pytest.mark.parametrize(
    ("dsn_tail", "fragment"),
    [
        ("?passfile=/x", "passfile"),
        ("?service=foo", "service"),
        ("?requirepeer=postgres", "requirepeer"),
        ("?channel_binding=require", "channel_binding"),
        ("?gssencmode=require", "gssencmode"),
        ("?sslnegotiation=direct", "sslnegotiation"),
        ("?replication=database", "replication"),
    ],
)
def test_options_that_would_be_ignored_are_refused(dsn_tail: str, fragment: str) -> None:
    config = PoolConfig.from_dsn("postgresql://u@127.0.0.1:1/db" + dsn_tail)
    with pytest.raises(ConfigError, match=fragment) as info:
        backend.create_pool(config, _Hooks())
    assert info.value.field == "dsn"


def test_options_that_are_honoured_or_harmless_are_accepted() -> None:
    check_options({
        "keepalives": "1", "keepalives_idle": "30", "tcp_user_timeout": "1000",
        "client_encoding": "UTF8", "sslcompression": "0", "gssencmode": "prefer",
        "channel_binding": "prefer", "fallback_application_name": "x", "hostaddr": "127.0.0.1",
    })


def test_verify_full_needs_a_root_certificate(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = PoolConfig(host="db.example", ssl="verify-full")
    with pytest.raises(ConfigError, match="sslrootcert") as info:
        backend.create_async_pool(config, _Hooks())
    assert info.value.field == "ssl"


def test_ssl_context_is_used_as_is_and_tls_is_required() -> None:
    context = ssl.create_default_context()
    driver = Pg8000Driver(PoolConfig(host="127.0.0.1", ssl=context))
    assert driver.ssl_context is context
    assert driver._sslmode == "require"


def test_unix_socket_path() -> None:
    driver = Pg8000Driver(PoolConfig(host="/run/pg", port=5433))
    assert driver._unix_path == "/run/pg/.s.PGSQL.5433"


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
        facade = wrap_manager(config, "pg8000", mode)
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
        await asyncio.sleep(0.02)


def _admin_query(dsn: str, sql: str, *args: Any) -> Any:
    """One value from a separate plain pg8000 connection."""
    params = PoolConfig.from_dsn(dsn).connect_params()
    conn = pg8000.native.Connection(params.user, host=params.host, port=params.port,
                                    password=params.password, database=params.database)
    try:
        statement = sql
        values = {f"p{i}": a for i, a in enumerate(args)}
        for i in range(len(args)):
            statement = statement.replace(f"${i + 1}", f":p{i}")
        rows = conn.run(statement, **values)
        return rows[0][0] if rows else None
    finally:
        conn.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


pytestmark_integration = pytest.mark.integration


@pytest.mark.integration
async def test_open_fails_fast_with_the_driver_error(make: Any) -> None:
    port = _closed_port()
    m = make(f"postgresql://app:hunter2pw@127.0.0.1:{port}/appdb", min_size=2)
    events = _events(m)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert f"could not connect to PostgreSQL at 127.0.0.1:{port}" in message
    assert "database 'appdb', user 'app'" in message
    assert "Connection refused" in message
    assert "hunter2pw" not in message
    assert isinstance(info.value.cause, InterfaceError)
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
    assert "FATAL: password authentication failed" in str(info.value)
    assert "SQLSTATE 28P01" in str(info.value)
    assert isinstance(info.value.cause, DatabaseError)


@pytest.mark.integration
async def test_settings_application_name_and_unix_socket(make: Any, pg_server: ServerInfo) -> None:
    if pg_server.server is None:
        pytest.skip("needs the embedded server's Unix socket")
    dsn = pg_server.server.dsn(socket=True)
    m = make(dsn, min_size=0, application_name="pgc pg8000",
             server_settings={"search_path": "pg_catalog, public", "work_mem": "5MB"})
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SHOW application_name") == "pgc pg8000"
        assert await c.fetchval("SHOW search_path") == "pg_catalog, public"
        assert await c.fetchval("SHOW work_mem") == "5MB"
        assert await c.fetchval("SELECT inet_server_addr()") is None  # a Unix socket
        assert isinstance(c.raw, Pg8000Connection)
        assert c.raw.run("SELECT :x::int + 1", x=1) == [[2]]  # pg8000's own API works


@pytest.mark.integration
async def test_statements_status_and_failed_transaction(make: Any) -> None:
    m = make(min_size=1, max_size=1)
    await m.connect()
    async with m.connection() as c:
        assert await c.execute("SELECT 1; SELECT 2") == "SELECT 1"
        assert [tuple(r) for r in await c.fetch("SELECT 1 AS a; SELECT 2 AS b")] == [(1,)]
        assert await c.execute("BEGIN") == "BEGIN"
        with pytest.raises(DatabaseError, match="division by zero"):
            await c.fetchval("SELECT 1/0")
        with pytest.raises(DatabaseError, match="current transaction is aborted"):
            await c.fetchval("SELECT 1")
        assert await c.execute("COMMIT") == "ROLLBACK"  # as with psycopg and asyncpg
        assert await c.fetchval("SELECT $1::text", "after") == "after"
        # a value that cannot be decoded does not desynchronize the connection
        c.raw.register_in_adapter(23, lambda text: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            await c.fetchval("SELECT 7::int4 UNION ALL SELECT 8::int4")
        c.raw.register_in_adapter(23, int)
        assert await c.fetchval("SELECT 9::int4") == 9
        # COPY without a stream is refused, and the connection stays usable
        with pytest.raises(InterfaceError):
            await c.execute("COPY (SELECT 1) TO STDOUT")
        assert await c.fetchval("SELECT 10") == 10


@pytest.mark.integration
async def test_clean_release_costs_no_round_trip(make: Any, pg_server: ServerInfo) -> None:
    m = make(min_size=1, max_size=1, ping_after_idle=None)
    await m.connect()
    async with m.connection() as client:
        pid = await client.fetchval("SELECT pg_backend_pid()")
        await client.fetchval("SELECT 'marker-clean'")
    sql = "SELECT query FROM pg_stat_activity WHERE pid = $1"
    assert _admin_query(pg_server.dsn, sql, pid) == "SELECT 'marker-clean'"
    async with m.connection() as client:
        await client.execute("BEGIN")
        await client.execute("SELECT 'marker-in-tx'")
    assert _admin_query(pg_server.dsn, sql, pid) == "ROLLBACK"


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
            if in_transaction:
                await c.execute("BEGIN")
                await c.execute("SELECT 1")
        async with m.connection() as c:
            assert await c.fetchval("SHOW work_mem") != "7MB"
            assert await c.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            assert await c.fetchval("SELECT to_regclass('pg_temp.pgc_tmp')") is None
            assert await c.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
            locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
            assert await c.fetchval(locks, await c.fetchval("SELECT pg_backend_pid()")) == 0


@pytest.mark.integration
async def test_waiters_are_served_in_fifo_order(make: Any, mode: str) -> None:
    m = make(min_size=1, max_size=1, acquire_timeout=20.0)
    await m.connect()
    held = await m.get_client()
    order: list[int] = []
    count = 6
    if mode == "sync":
        manager = m.manager

        def borrower(number: int) -> None:
            with manager.connection() as c:
                order.append(number)
                c.fetchval("SELECT 1")

        threads = []
        for number in range(count):
            thread = threading.Thread(target=borrower, args=(number,))
            thread.start()
            threads.append(thread)
            await _wait_for(lambda n=number: m.get_pool_stats().waiting == n + 1)
        await held.release()
        for thread in threads:
            await asyncio.to_thread(thread.join, 10)
    else:
        async def task(number: int) -> None:
            async with m.connection() as c:
                order.append(number)
                await c.fetchval("SELECT 1")

        tasks = []
        for number in range(count):
            tasks.append(asyncio.create_task(task(number)))
            await _wait_for(lambda n=number: m.get_pool_stats().waiting == n + 1)
        await held.release()
        await asyncio.gather(*tasks)
    assert order == list(range(count))


@pytest.mark.integration
async def test_acquire_timeout_is_precise(make: Any) -> None:
    m = make(min_size=1, max_size=1, acquire_timeout=0.3)
    await m.connect()
    async with m.connection():
        for wanted in (0.3, 0.05):
            started = time.monotonic()
            with pytest.raises(PoolTimeoutError):
                await m.get_client(timeout=wanted)
            elapsed = time.monotonic() - started
            assert wanted <= elapsed < wanted + 0.15
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError):
            await m.get_client(timeout=0)
        assert time.monotonic() - started < 0.05
    async with m.connection(timeout=0) as c:  # zero means "do not wait", not "fail"
        assert await c.fetchval("SELECT 1") == 1


@pytest.mark.integration
async def test_refill_to_min_size_after_every_connection_is_terminated(
    make: Any, pg_server: ServerInfo
) -> None:
    m = make(min_size=3, max_size=4, application_name="pgc-refill", ping_after_idle=0)
    events = _events(m)
    await m.connect()
    await _wait_for(lambda: m.get_pool_stats().total == 3)
    first_ids = {e.connection_id for e in events if e.name == "connect"}
    killed = _admin_query(
        pg_server.dsn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1",
        "pgc-refill",
    )
    assert killed == 3
    # the pool notices on hand-out (ping) and replaces them, back to min_size
    for _ in range(3):
        async with m.connection() as c:
            assert c.connection_id not in first_ids
            assert await c.fetchval("SELECT 1") == 1
    await _wait_for(lambda: m.get_pool_stats().total >= 3)
    assert _removes(events).count("check failed") == 3


@pytest.mark.integration
async def test_idle_shrink_max_lifetime_and_max_uses(make: Any) -> None:
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
    m3 = make(min_size=1, max_size=1, max_lifetime=0.3)
    events3 = _events(m3)
    await m3.connect()
    await _wait_for(lambda: "max_lifetime" in _removes(events3))  # idle: the housekeeper
    await _wait_for(lambda: m3.get_pool_stats().total == 1)

    m4 = make(min_size=1, max_size=1, max_uses=2)
    events4 = _events(m4)
    await m4.connect()
    ids = []
    for _ in range(5):
        async with m4.connection() as c:
            ids.append(c.connection_id)
    assert ids[0] == ids[1] != ids[2] == ids[3] != ids[4]
    assert _removes(events4) == ["max_uses", "max_uses"]


@pytest.mark.integration
async def test_broken_connection_surfaces_and_is_not_reused(make: Any) -> None:
    m = make(min_size=1, max_size=2)
    events = _events(m)
    await m.connect()
    async with m.connection() as c:
        victim = c.connection_id
        pid = await c.fetchval("SELECT pg_backend_pid()")
        async with m.connection() as admin:
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(ConnectionError) as info:
            await c.fetchval("SELECT 1")
        assert isinstance(info.value.cause, DatabaseError)
        assert "57P01" in str(info.value)
    async with m.connection() as c:
        assert c.connection_id != victim
        with pytest.raises(DatabaseError, match="division by zero"):
            await c.fetchval("SELECT 1/0")
        await c.execute("SET statement_timeout = '10ms'")
        with pytest.raises(DatabaseError, match="57014"):
            await c.execute("SELECT pg_sleep(1)")
        await c.execute("RESET statement_timeout")
    assert "broken" in _removes(events)
    errors = [e for e in events if e.name == "error"]
    assert [e.connection_id for e in errors] == [victim]
    await m.disconnect()
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed == len(_removes(events))


@pytest.mark.integration
async def test_close_waits_for_borrowers_then_forces(make: Any, mode: str) -> None:
    m = make(min_size=2, max_size=3)
    events = _events(m)
    await m.connect()
    held = await m.get_client()
    busy = await m.get_client()
    started = time.monotonic()
    if mode == "sync":
        # a borrower thread in the middle of a long statement when the grace period ends
        failure: list[BaseException] = []

        def sleeper() -> None:
            try:
                busy.client.fetchval("SELECT pg_sleep(30)")  # type: ignore[union-attr]
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=sleeper)
        thread.start()
        await asyncio.sleep(0.1)
        await m.disconnect(timeout=0.5)
        await asyncio.to_thread(thread.join, 10)
        assert failure and isinstance(failure[0], (ConnectionError,
                                                   pgconnector.ClientReleasedError))
    else:
        task = asyncio.create_task(busy.fetchval("SELECT pg_sleep(30)"))
        await asyncio.sleep(0.1)
        await m.disconnect(timeout=0.5)
        with pytest.raises(ConnectionError):  # the statement was interrupted by the close
            await asyncio.wait_for(task, 10)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 5.0
    assert held.released and busy.released
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed
    connects = {e.connection_id for e in events if e.name == "connect"}
    assert connects == {e.connection_id for e in events if e.name == "remove"}


@pytest.mark.integration
async def test_async_cancelled_borrows_leak_nothing(pg_server: ServerInfo) -> None:
    config = PoolConfig.from_dsn(pg_server.dsn, min_size=0, max_size=2)
    m = pgconnector.AsyncConnectionManager(config, backend="pg8000")
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
        clients = [await m.get_client(timeout=5) for _ in range(2)]
        assert m.get_pool_stats().in_use == 2
        for client in clients:
            await client.release()
        assert m.get_pool_stats().in_use == 0
    finally:
        await m.disconnect()
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed


@pytest.mark.integration
async def test_cancelled_async_statement_is_cancelled_on_the_server(pg_server: ServerInfo) -> None:
    config = PoolConfig.from_dsn(pg_server.dsn, min_size=1, max_size=1)
    m = pgconnector.AsyncConnectionManager(config, backend="pg8000")
    await m.connect()
    try:
        async def sleeper() -> None:
            async with m.connection() as c:
                await c.fetchval("SELECT pg_sleep(30)")

        task = asyncio.create_task(sleeper())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.monotonic()
        async with m.connection(timeout=10) as c:  # the same connection, cancelled and reused
            assert await c.fetchval("SELECT 1") == 1
        assert time.monotonic() - started < 5.0
        assert m.get_pool_stats().connections_opened == 1
    finally:
        await m.disconnect()


@pytest.mark.integration
async def test_async_borrowing_never_blocks_the_loop(pg_server: ServerInfo) -> None:
    config = PoolConfig.from_dsn(pg_server.dsn, min_size=1, max_size=1)
    m = pgconnector.AsyncConnectionManager(config, backend="pg8000")
    await m.connect()
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    async def borrower() -> None:
        async with m.connection(timeout=30) as c:
            await c.fetchval("SELECT pg_sleep(0.01)")

    tick_task = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(borrower() for _ in range(50)))
    finally:
        stop.set()
        await tick_task
        await m.disconnect()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 50  # 50 borrows of >= 10 ms each: the ticker kept running
    assert max(gaps) < 0.25


@pytest.mark.integration
@pytest.mark.parametrize("allow_exit", [False, True])
def test_interpreter_exits_with_a_pool_never_closed(pg_server: ServerInfo,
                                                     allow_exit: bool) -> None:
    code = (
        "import asyncio, sys, pgconnector\n"
        "dsn = sys.argv[1]\n"
        f"cfg = pgconnector.PoolConfig.from_dsn(dsn, min_size=2, allow_exit_on_idle={allow_exit})\n"
        "m = pgconnector.ConnectionManager(cfg, backend='pg8000')\n"
        "m.connect()\n"
        "c = m.get_client()\n"  # never released either
        "print(c.fetchval('SELECT 41 + 1'))\n"
        "async def main():\n"
        "    am = pgconnector.AsyncConnectionManager(cfg, backend='pg8000')\n"
        "    await am.connect()\n"
        "    async with am.connection() as ac:\n"
        "        print(await ac.fetchval('SELECT 43'))\n"
        "asyncio.run(main())\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code, pg_server.dsn], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "43"]
    assert time.monotonic() - started < 10


@pytest.mark.integration
async def test_ssl_context_is_built_once_per_pool(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgconnector_pg8000 import _driver

    built: list[Any] = []
    defaults: list[Any] = []
    build = _driver.build_ssl_context
    create_default = ssl.create_default_context

    def counting_build(*args: Any) -> Any:
        built.append(args)
        return build(*args)

    def counting_default(*args: Any, **kwargs: Any) -> Any:
        defaults.append(args)  # what pg8000 would do on every connect
        return create_default(*args, **kwargs)

    monkeypatch.setattr(_driver, "build_ssl_context", counting_build)
    monkeypatch.setattr(ssl, "create_default_context", counting_default)
    # sslmode=prefer against a server without TLS: asked, refused, plaintext on the same socket
    m = make(min_size=3, max_size=3, ssl="prefer")
    await m.connect()
    await _wait_for(lambda: m.get_pool_stats().total == 3)
    async with m.connection() as c:
        assert await c.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is False
    assert len(built) == 1
    assert defaults == []
    m2 = make(min_size=1, ssl="require")
    with pytest.raises(ConnectionError, match="SSL was required"):
        await m2.connect()


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
    m = wrap_manager(config, "pg8000", mode)
    await m.connect()
    try:
        own_server.stop()
        started = time.monotonic()
        with pytest.raises(ConnectionError) as info:
            await m.get_client()
        assert time.monotonic() - started < 3.0
        assert not isinstance(info.value, PoolTimeoutError)
        assert isinstance(info.value.cause, InterfaceError)
        assert "could not connect to PostgreSQL" in str(info.value)
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await m.get_client()
        assert time.monotonic() - started < 3.0
        own_server.start()
        async with m.connection() as c:  # the server is back: the next borrow succeeds
            assert await c.fetchval("SELECT 1") == 1
        await _wait_for(lambda: m.get_pool_stats().total >= 2, timeout=30.0)
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
async def test_float_connect_timeout_is_enforced(make: Any, silent_server: int) -> None:
    m = make(f"postgresql://u@127.0.0.1:{silent_server}/db", min_size=1, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    assert 0.45 <= time.monotonic() - started < 1.5
    assert isinstance(info.value.cause, (InterfaceError, TimeoutError))


# -- TLS, through a TLS-terminating proxy ---------------------------------------------------
# The embedded server is built without OpenSSL, so TLS is tested against a small proxy that
# answers PostgreSQL's SSLRequest, terminates TLS with a certificate made for the test, and
# forwards the plaintext protocol to the real server.


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    out = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=out, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=pgconnector test CA", "-keyout", "ca.key", "-out", "ca.pem")
    (out / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
            "server.key", "-out", "server.csr")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=another CA", "-keyout", "other.key", "-out", "other.pem")
    return out


@pytest.fixture
def tls_proxy(certificates: Path, pg_server: ServerInfo) -> Iterator[int]:
    upstream_port = PoolConfig.from_dsn(pg_server.dsn).connect_params().port
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates / "server.pem", certificates / "server.key")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def serve(client: socket.socket) -> None:
        try:
            request = client.recv(8)
            if request != struct.pack("!ii", 8, 80877103):
                client.close()
                return
            client.sendall(b"S")
            secure = context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", upstream_port))
        except (OSError, ssl.SSLError):
            client.close()
            return
        sockets.extend([secure, upstream])
        threading.Thread(target=pump, args=(secure, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, secure), daemon=True).start()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue
            client.settimeout(None)
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    listener.close()
    for sock in sockets:
        sock.close()


def _through(pg_server: ServerInfo, port: int, host: str = "127.0.0.1") -> str:
    params = PoolConfig.from_dsn(pg_server.dsn).connect_params()
    return f"postgresql://{params.user}:{params.password}@{host}:{port}/{params.database}"


@pytest.mark.integration
@pytest.mark.parametrize("sslmode", ["require", "prefer", "allow"])
async def test_tls_modes(make: Any, pg_server: ServerInfo, tls_proxy: int,
                         sslmode: str) -> None:
    # (allow tries plaintext first: this proxy hangs up on it, and the retry uses TLS)
    m = make(_through(pg_server, tls_proxy), min_size=1, ssl=sslmode)
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1
        assert isinstance(c.raw._usock, ssl.SSLSocket)


@pytest.mark.integration
async def test_tls_verify_full(make: Any, pg_server: ServerInfo, tls_proxy: int,
                               certificates: Path) -> None:
    ca = certificates / "ca.pem"
    good = make(_through(pg_server, tls_proxy, "localhost") + f"?sslrootcert={ca}",
                min_size=1, ssl="verify-full")
    await good.connect()
    async with good.connection() as c:
        assert c.raw._usock.getpeercert()["subject"] == ((("commonName", "localhost"),),)
    other = certificates / "other.pem"
    bad = make(_through(pg_server, tls_proxy, "localhost") + f"?sslrootcert={other}",
               min_size=1, ssl="verify-full")
    with pytest.raises(ConnectionError) as info:
        await bad.connect()
    assert isinstance(info.value.cause, ssl.SSLCertVerificationError)
    context = ssl.create_default_context(cafile=str(ca))
    given = make(_through(pg_server, tls_proxy, "localhost"), min_size=1, ssl=context)
    await given.connect()
    async with given.connection() as c:
        assert c.raw._usock.context is context
