"""What only the pg8000 backend (and the pool it runs on, pgconnector's own) has to get right:
mapping the config onto pg8000, TLS negotiation, the pool's fairness, timing, maintenance and
shutdown against a real server, and keeping the event loop free in async code.

The cross-backend behaviour is in ``tests/conformance``; the pool's pure logic, with a fake
driver, in ``tests/unit/test_generic_pool.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import ssl
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import pgconnector
import pgconnector.errors
from pgconnector import ConfigError, ConnectionError, PoolConfig, PoolTimeoutError
from tests.backends import helpers
from tests.conftest import ServerInfo
from tests.tls import check_certificate_verification, dsn_through

pg8000 = pytest.importorskip("pg8000")

from pg8000.exceptions import DatabaseError, InterfaceError  # noqa: E402

from pgconnector_pg8000 import backend  # noqa: E402
from pgconnector_pg8000._driver import (  # noqa: E402
    Pg8000Connection,
    Pg8000Driver,
    check_options,
    column_oid,
    param_oid,
)

# -- no server ------------------------------------------------------------------------------
# (that importing the backend imports no driver: tests/backends/test_common.py)


def test_backend_attributes() -> None:
    helpers.check_backend_attributes(
        backend, "pg8000", supports_sync=True, supports_async=True, pure_python=True
    )
    backend.check_driver()


def test_executemany_column_types() -> None:
    """executemany Parses once: one type per column, ints widened to the largest, NULLs
    taking the others' type, "unknown" (0: the server infers it) where the rows disagree."""
    assert column_oid([1, 70000, None, 2**40]) == 20
    assert column_oid([1, Decimal("1.5")]) == 1700
    assert column_oid([None, 1.5, None]) == 701
    assert column_oid([None, None]) == 0
    assert column_oid([1, "one"]) == 0
    assert column_oid([[1, 2], [3, None]]) == 1005
    assert column_oid([[1], ["a"]]) == 0


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
        backend.create_pool(config, helpers.FakeHooks())
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
        backend.create_async_pool(config, helpers.FakeHooks())
    assert info.value.field == "ssl"


def test_ssl_context_is_used_as_is_and_tls_is_required() -> None:
    context = ssl.create_default_context()
    driver = Pg8000Driver(PoolConfig(host="127.0.0.1", ssl=context))
    assert driver.ssl_context is context
    assert driver._sslmode == "require"


def test_unix_socket_path() -> None:
    driver = Pg8000Driver(PoolConfig(host="/run/pg", port=5433))
    assert driver._endpoints["/run/pg", 5433].unix_path == "/run/pg/.s.PGSQL.5433"


def test_every_host_of_a_multi_host_dsn_gets_its_own_endpoint() -> None:
    driver = Pg8000Driver(PoolConfig(dsn="host=/run/pg,db.example,10.0.0.1 port=5433,1,2"))
    endpoints = list(driver._endpoints.values())
    assert [(e.host, e.port) for e in endpoints] == [
        ("/run/pg", 5433),
        ("db.example", 1),
        ("10.0.0.1", 2),
    ]
    assert [e.unix_path for e in endpoints] == ["/run/pg/.s.PGSQL.5433", None, None]
    # SNI for a name, never for an address (libpq's sslsni rule), per server.
    assert [e.server_hostname for e in endpoints] == [None, "db.example", None]


# -- real server ----------------------------------------------------------------------------


# make(dsn=None, **config_overrides): a pg8000 manager, sync and then async (mode)
mode, make = helpers.sync_and_async_make("pg8000")


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


pytestmark_integration = pytest.mark.integration


@pytest.mark.integration
async def test_open_fails_fast_with_the_driver_error(make: Any) -> None:
    _, _, error = await helpers.open_on_a_closed_port(make, min_size=2)
    assert "Connection refused" in str(error)
    assert isinstance(error.cause, InterfaceError)


@pytest.mark.integration
async def test_wrong_password_is_reported_redacted(make: Any, pg_server: ServerInfo) -> None:
    error = await helpers.connect_with_a_wrong_password(make, pg_server)
    assert ": password authentication failed" in str(error)  # no "FATAL:", as elsewhere
    assert "SQLSTATE 28P01" in str(error)
    assert isinstance(error.cause, DatabaseError)


@pytest.mark.integration
async def test_settings_application_name_and_unix_socket(make: Any, pg_server: ServerInfo) -> None:
    if pg_server.server is None:
        pytest.skip("needs the embedded server's Unix socket")
    dsn = pg_server.server.dsn(socket=True)
    async with helpers.connection_with_settings(make, "pgc pg8000", dsn) as c:
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
        with pytest.raises(pgconnector.errors.DivisionByZero, match="division by zero"):
            await c.fetchval("SELECT 1/0")
        with pytest.raises(pgconnector.errors.InFailedSqlTransaction) as aborted:
            await c.fetchval("SELECT 1")
        assert isinstance(aborted.value.cause, DatabaseError)  # pg8000's own, chained
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
    async def check(c: Any) -> None:
        assert await c.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
        locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1"
        assert await c.fetchval(locks, await c.fetchval("SELECT pg_backend_pid()")) == 0

    await helpers.check_session_reset(make, also_check=check)


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
async def test_idle_shrink_max_lifetime_and_max_uses(make: Any) -> None:
    _, events = await helpers.shrink_when_idle(make)
    assert helpers.removal_reasons(events) == ["idle", "idle"]
    assert helpers.removal_reasons(await helpers.outlive_max_lifetime(make)) == ["max_lifetime"]

    m3 = make(min_size=1, max_size=1, max_lifetime=0.3)
    events3 = helpers.record_events(m3)
    await m3.connect()
    # idle: the housekeeper retires it
    await helpers.wait_until(lambda: "max_lifetime" in helpers.removal_reasons(events3))
    await helpers.wait_until(lambda: m3.get_pool_stats().total == 1)

    assert helpers.removal_reasons(await helpers.use_up_max_uses(make)) == ["max_uses", "max_uses"]


@pytest.mark.integration
async def test_broken_connection_surfaces_and_is_not_reused(make: Any) -> None:
    m, events, victim, error = await helpers.use_a_terminated_connection(make)
    assert isinstance(error.cause, DatabaseError)
    assert "57P01" in str(error)
    async with m.connection() as c:
        assert c.connection_id != victim
        with pytest.raises(pgconnector.errors.DivisionByZero, match="division by zero"):
            await c.fetchval("SELECT 1/0")
        await c.execute("SET statement_timeout = '10ms'")
        with pytest.raises(pgconnector.QueryCanceled) as canceled:
            await c.execute("SELECT pg_sleep(1)")
        assert canceled.value.sqlstate == "57014"
        await c.execute("RESET statement_timeout")
    assert "broken" in helpers.removal_reasons(events)
    assert [e.connection_id for e in helpers.error_events(events)] == [victim]
    await m.disconnect()
    stats = m.get_pool_stats()
    removed = helpers.removal_reasons(events)
    assert stats.connections_opened == stats.connections_closed == len(removed)


@pytest.mark.integration
async def test_close_waits_for_borrowers_then_forces(make: Any, mode: str) -> None:
    m = make(min_size=2, max_size=3)
    events = helpers.record_events(m)
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
    helpers.check_closes_reported(m, events)


@pytest.mark.integration
async def test_async_cancelled_borrows_leak_nothing(pg_server: ServerInfo) -> None:
    await helpers.check_cancelled_borrows_leak_nothing(pg_server, "pg8000", settle=0, timeout=5)


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
    await helpers.wait_until(lambda: m.get_pool_stats().total == 3)
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
    outage = helpers.through_an_outage(own_server, "pg8000", mode, first_within=3.0)
    async with outage as (m, error):
        assert isinstance(error.cause, InterfaceError)
        async with m.connection() as c:  # the server is back: the next borrow succeeds
            assert await c.fetchval("SELECT 1") == 1
        await helpers.wait_until(lambda: m.get_pool_stats().total >= 2, timeout=30.0)


@pytest.mark.integration
async def test_float_connect_timeout_is_enforced(make: Any, silent_server: int) -> None:
    m = make(f"postgresql://u@127.0.0.1:{silent_server}/db", min_size=1, connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    assert 0.45 <= time.monotonic() - started < 1.5
    assert isinstance(info.value.cause, (InterfaceError, TimeoutError))


# -- TLS, through a TLS-terminating proxy (tests/tls.py) ----------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("sslmode", ["require", "prefer", "allow"])
async def test_tls_modes(make: Any, pg_server: ServerInfo, tls_proxy: int,
                         sslmode: str) -> None:
    # (allow tries plaintext first: this proxy hangs up on it, and the retry uses TLS)
    m = make(dsn_through(pg_server, tls_proxy), min_size=1, ssl=sslmode)
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1
        assert isinstance(c.raw._usock, ssl.SSLSocket)


@pytest.mark.integration
async def test_tls_verify_full(make: Any, pg_server: ServerInfo, tls_proxy: int,
                               certificates: Path) -> None:
    await check_certificate_verification(
        make, pg_server, tls_proxy, certificates, refused_sslmode="verify-full",
        peer_certificate=lambda c: c.raw._usock.getpeercert(),
        context_in_use=lambda c: c.raw._usock.context,
    )
