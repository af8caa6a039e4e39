"""What only the asyncpg backend has to get right: mapping the config onto asyncpg, the release
without asyncpg's reset query, and the paths by which asyncpg's pool opens and closes
connections (each reported exactly once).

The cross-backend behaviour is in ``tests/conformance``; these tests look under the hood
(``client.raw``, ``pool.native``, the server's ``pg_stat_activity``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import re
import signal
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import pgconnector
import pgconnector.errors
from pgconnector import (
    AsyncConnectionManager,
    ConfigError,
    ConnectionError,
    PoolConfig,
    UnsupportedBackendError,
)
from tests.backends import helpers
from tests.conftest import ServerInfo, _embedded_or_skip
from tests.tls import check_certificate_verification, dsn_through

asyncpg = pytest.importorskip("asyncpg")

from pgconnector_asyncpg import backend  # noqa: E402
from pgconnector_asyncpg._params import (  # noqa: E402
    KEYWORD_HANDLING,
    SocketOptions,
    connect_args,
    jittered_lifetime,
)

# -- no server ------------------------------------------------------------------------------
# (that importing the backend imports no driver: tests/backends/test_common.py)


def test_backend_attributes() -> None:
    helpers.check_backend_attributes(
        backend, "asyncpg", supports_sync=False, supports_async=True, pure_python=False
    )
    backend.check_driver()
    info = pgconnector.available_backends()["asyncpg"]
    assert (info.supports_sync, info.supports_async) == (False, True)


def test_sync_is_refused() -> None:
    with pytest.raises(UnsupportedBackendError, match="async-only"):
        backend.create_pool(PoolConfig(host="127.0.0.1"), helpers.FakeHooks())
    with pytest.raises(UnsupportedBackendError, match="asyncpg"):
        pgconnector.ConnectionManager("postgresql://u@127.0.0.1:1/db", backend="asyncpg")


def test_connect_args_are_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTARGETSESSIONATTRS", "standby")
    config = helpers.explicit_config(
        monkeypatch,
        ssl="verify-full",
        server_settings={"search_path": "a b", "application_name": "loses"},
        dsn=(
            "postgresql://x@y/z?sslrootcert=/ca.pem&sslpassword=keypw&passfile=/pgpass"
            "&options=-O%20-c%20work_mem%3D8MB&krbsrvname=pg&keepalives_idle=7"
            "&client_encoding=UTF8&gssencmode=prefer&sslnegotiation=postgres"
        ),
    )
    args = connect_args(config, config.connect_params())
    kwargs = args.kwargs
    assert kwargs["host"] == "db.example"
    assert kwargs["port"] == 6543
    assert kwargs["user"] == "app"
    assert kwargs["password"] == "s3cret"
    assert kwargs["database"] == "appdb"
    assert kwargs["ssl"] == "verify-full"
    assert kwargs["timeout"] == 2.5  # float seconds, no rounding
    assert kwargs["target_session_attrs"] == "any"
    assert kwargs["passfile"] == "/pgpass"
    assert kwargs["krbsrvname"] == "pg"
    assert kwargs["direct_tls"] is False
    assert kwargs["server_settings"] == {
        "search_path": "a b",
        "application_name": "my app",
        "options": "-O -c work_mem=8MB",
    }
    # certificate settings travel in a DSN: asyncpg takes them nowhere else
    assert args.dsn == "postgresql://?sslrootcert=%2Fca.pem&sslpassword=keypw"
    assert args.secrets == ("keypw",)
    assert args.socket_options == SocketOptions(keepalives=True, idle=7)
    assert "keypw" not in repr(args)


def test_connect_args_defaults() -> None:
    config = PoolConfig(host="h", user="u", database="d")
    args = connect_args(config, config.connect_params())
    assert args.dsn is None
    # libpq's default mode, given explicitly, so that asyncpg never reads PGSSLMODE
    assert args.kwargs["ssl"] == "prefer"
    assert "password" not in args.kwargs  # asyncpg then reads the password file, as libpq
    assert "server_settings" not in args.kwargs
    assert args.socket_options == SocketOptions()

    context = ssl.create_default_context()
    config = PoolConfig(host="h", user="u", database="d", ssl=context)
    assert connect_args(config, config.connect_params()).kwargs["ssl"] is context

    config = PoolConfig.from_dsn("postgresql://u@h/d?fallback_application_name=fb&keepalives=0")
    args = connect_args(config, config.connect_params())
    assert args.kwargs["server_settings"] == {"application_name": "fb"}
    assert args.socket_options.keepalives is False


@pytest.mark.parametrize(
    "query",
    [
        "hostaddr=10.0.0.1",
        "service=mydb",
        "require_auth=scram-sha-256",
        "requirepeer=postgres",
        "replication=true",
        "sslcrldir=/crl",
        "channel_binding=require",
        "gssencmode=require",
        "sslcertmode=require",
        "sslsni=0",
        "client_encoding=LATIN1",
        "gsslib=other",
        "sslnegotiation=maybe",
        "keepalives_idle=-1",
        "foo=bar",
    ],
)
def test_keywords_asyncpg_cannot_honour_are_refused(query: str) -> None:
    config = PoolConfig.from_dsn(f"postgresql://u@h/d?{query}")
    with pytest.raises(ConfigError) as info:
        backend.create_async_pool(config, helpers.FakeHooks())
    assert info.value.field == "dsn"
    assert query.split("=")[0] in str(info.value)


def test_ssl_files_with_a_context_are_refused() -> None:
    config = PoolConfig.from_dsn(
        "postgresql://u@h/d?sslrootcert=/ca.pem", ssl=ssl.create_default_context()
    )
    with pytest.raises(ConfigError, match="SSLContext"):
        backend.create_async_pool(config, helpers.FakeHooks())


def test_every_mapped_keyword_is_documented() -> None:
    readme = (Path(__file__).parents[2] / "backends/asyncpg/README.md").read_text()
    for keyword in KEYWORD_HANDLING:
        assert f"`{keyword}`" in readme, keyword


def test_jittered_lifetime() -> None:
    rng = random.Random(1)
    values = [jittered_lifetime(100.0, rng) for _ in range(200)]
    assert all(90.0 <= v <= 100.0 for v in values)
    assert max(values) - min(values) > 5.0
    assert jittered_lifetime(0.0) == math.inf


# -- real server ----------------------------------------------------------------------------


@pytest.fixture
async def make(pg_server: ServerInfo) -> AsyncIterator[Callable[..., AsyncConnectionManager]]:
    """``make(dsn=None, **config_overrides)``: an asyncpg manager (there is no sync one)."""
    async with helpers.manager_factory(
        pg_server, lambda config: AsyncConnectionManager(config, backend="asyncpg")
    ) as factory:
        yield factory


async def _last_query(dsn: str, pid: int) -> str:
    """The last statement the server received on the connection of backend ``pid``."""
    con = await asyncpg.connect(dsn)
    try:
        return str(await con.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid))
    finally:
        await con.close()


async def _terminate(dsn: str, pids: list[int]) -> None:
    con = await asyncpg.connect(dsn)
    try:
        for pid in pids:
            assert await con.fetchval("SELECT pg_terminate_backend($1)", pid) is True
    finally:
        await con.close()


@pytest.mark.integration
async def test_native_pool_and_raw_connection(make: Any) -> None:
    m = make(min_size=1, max_size=2)
    pool = await m.connect()
    assert isinstance(pool.native, asyncpg.Pool)
    async with m.connection() as c:
        assert isinstance(c.raw, asyncpg.pool.PoolConnectionProxy)
        assert await c.raw.fetchval("SELECT 41 + 1") == 42
        assert not c.raw.is_in_transaction()  # autocommit outside transactions


@pytest.mark.integration
async def test_clean_release_costs_no_round_trip(make: Any, pg_server: ServerInfo) -> None:
    m = make(min_size=1, max_size=1, ping_after_idle=None)
    await m.connect()
    async with m.connection() as client:
        pid = client.raw.get_server_pid()
        await client.fetchval("SELECT 'marker-clean'")
    assert await _last_query(pg_server.dsn, pid) == "SELECT 'marker-clean'"
    async with m.connection() as client:
        assert client.raw.get_server_pid() == pid
        await client.execute("SELECT 'marker-script'; SELECT 'marker-script-2'")
    assert await _last_query(pg_server.dsn, pid) == (
        "SELECT 'marker-script'; SELECT 'marker-script-2'"
    )
    async with m.connection() as client:
        await client.execute("BEGIN")
        await client.execute("SELECT 'marker-in-tx'")
    assert await _last_query(pg_server.dsn, pid) == "ROLLBACK"
    async with m.connection() as client:
        assert client.raw.get_server_pid() == pid
        assert not client.raw.is_in_transaction()


@pytest.mark.integration
async def test_clean_release_sends_nothing_at_all() -> None:
    """Counted in the server's statement log: N borrow/query/release cycles send N statements
    (asyncpg's own pool would send N more, its reset query)."""
    server = _embedded_or_skip(log_statements=True)
    with server:
        config = PoolConfig.from_dsn(server.dsn(), min_size=1, max_size=1, ping_after_idle=None)
        async with AsyncConnectionManager(config, backend="asyncpg") as m:
            for i in range(5):
                async with m.connection() as c:
                    assert await c.fetchval(f"SELECT 'cycle-{i}'") == f"cycle-{i}"
            async with m.connection() as c:
                await c.execute("BEGIN")
                await c.execute("SELECT 'in-tx'")
        log = server.log_file.read_text()
    # "statement: SQL" (simple protocol) or "execute <prepared name>: SQL" (extended)
    found = (
        re.search(r"LOG:  (?:statement|execute [^:]*): (.*)", line) for line in log.splitlines()
    )
    statements = [m.group(1).strip() for m in found if m is not None]
    expected = [f"SELECT 'cycle-{i}'" for i in range(5)]
    assert statements == [*expected, "BEGIN", "SELECT 'in-tx'", "ROLLBACK"]
    assert not [s for s in statements if "pg_advisory_unlock_all" in s or "RESET ALL" in s]


@pytest.mark.integration
async def test_session_reset(make: Any) -> None:
    async def prepare(c: Any) -> None:
        await c.fetchval("SELECT $1::int", 1)  # asyncpg prepares (and caches) this one

    async def check(c: Any) -> None:
        # ours only: asyncpg has prepared the statements of the check on its own
        assert (
            await c.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE name = 'pgc_stmt'")
            == 0
        )
        assert await helpers.advisory_locks_held(c) == 0
        # asyncpg's cache of prepared statements was dropped along with them
        assert await c.fetchval("SELECT $1::int", 2) == 2
        assert not c.raw.is_in_transaction()

    await helpers.check_session_reset(make, also_leave=prepare, also_check=check)


@pytest.mark.integration
async def test_raw_transaction_left_open_is_rolled_back_quietly(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    m = make(min_size=1, max_size=1)
    await m.connect()
    async with m.connection() as c:
        await c.execute("CREATE TEMP TABLE IF NOT EXISTS pgc_raw_tx (x int)")
        tx = c.raw.transaction()
        await tx.start()
        await c.execute("INSERT INTO pgc_raw_tx VALUES (1)")
    with caplog.at_level(logging.DEBUG):
        async with m.connection() as c:
            assert await c.fetchval("SELECT count(*) FROM pgc_raw_tx") == 0
            assert not c.raw.is_in_transaction()
    assert "active transaction" not in caplog.text


@pytest.mark.integration
async def test_max_uses_and_max_lifetime_retire(make: Any) -> None:
    events = await helpers.use_up_max_uses(make)
    assert helpers.removal_reasons(events) == ["max_uses", "max_uses"]
    events2 = await helpers.outlive_max_lifetime(make, hold=0.35)
    assert helpers.removal_reasons(events2) == ["max_lifetime"]
    assert not helpers.error_events(events) and not helpers.error_events(events2)


@pytest.mark.integration
async def test_idle_connections_above_min_size_close(make: Any) -> None:
    m, events = await helpers.shrink_when_idle(make)
    await asyncio.sleep(0.4)  # the last one is the floor: it stays
    assert m.get_pool_stats().total == 1
    assert helpers.removal_reasons(events) == ["idle", "idle"]


@pytest.mark.integration
async def test_refills_to_min_size_after_every_connection_is_terminated(
    make: Any, pg_server: ServerInfo
) -> None:
    m = make(min_size=3, max_size=5, application_name="pgc-refill")
    events = helpers.record_events(m)
    await m.connect()
    await helpers.wait_until(lambda: m.get_pool_stats().total == 3)
    for _round in range(2):
        opened = m.get_pool_stats().connections_opened
        clients = [await m.get_client() for _ in range(3)]
        pids = [c.raw.get_server_pid() for c in clients]
        for client in clients:
            await client.release()
        await _terminate(pg_server.dsn, pids)
        await helpers.wait_until(lambda n=opened: m.get_pool_stats().connections_opened >= n + 3)
        await helpers.wait_until(lambda: m.get_pool_stats().total == 3)
        async with m.connection() as c:
            assert c.raw.get_server_pid() not in pids
            assert await c.fetchval("SELECT 1") == 1
    assert helpers.removal_reasons(events) == ["broken"] * 6
    assert not helpers.error_events(events)  # idle connections that died: nobody was using them
    await m.disconnect()
    helpers.check_accounts(m, events)


@pytest.mark.integration
async def test_broken_connection_surfaces_and_is_not_reused(
    make: Any, pg_server: ServerInfo
) -> None:
    m = make(min_size=1, max_size=2)
    events = helpers.record_events(m)
    await m.connect()
    async with m.connection() as c:
        victim = c.connection_id
        sleeper = asyncio.create_task(c.fetchval("SELECT pg_sleep(10)"))
        await asyncio.sleep(0.2)
        await _terminate(pg_server.dsn, [c.raw.get_server_pid()])
        with pytest.raises(ConnectionError) as info:
            await sleeper
        assert isinstance(info.value.cause, asyncpg.PostgresConnectionError)
        assert "is broken" in str(info.value)
        with pytest.raises(ConnectionError) as info:
            await c.fetchval("SELECT 1")
        assert isinstance(info.value.cause, asyncpg.InterfaceError)
    # a statement error on a healthy connection is the class of its SQLSTATE, asyncpg's own
    # exception chained
    async with m.connection() as c:
        assert c.connection_id != victim
        with pytest.raises(pgconnector.errors.DivisionByZero) as sql_error:
            await c.fetchval("SELECT 1/0")
        assert isinstance(sql_error.value.cause, asyncpg.DivisionByZeroError)
        with pytest.raises(pgconnector.errors.SyntaxError) as sql_error:
            await c.execute("SELEKT 1")
        assert isinstance(sql_error.value.cause, asyncpg.PostgresSyntaxError)
        await c.execute("SET statement_timeout = '10ms'")
        with pytest.raises(pgconnector.QueryCanceled) as sql_error:
            await c.execute("SELECT pg_sleep(1)")
        assert isinstance(sql_error.value.cause, asyncpg.QueryCanceledError)
        await c.execute("RESET statement_timeout")
        with pytest.raises(asyncpg.DataError):  # JSON text or a dict, as on every backend
            await c.fetchval("SELECT $1::jsonb", [1, 2])
        assert await c.fetchval("SELECT 1") == 1
    assert helpers.removal_reasons(events) == ["broken"]
    assert [e.connection_id for e in helpers.error_events(events)] == [victim]  # reported once
    await m.disconnect()
    helpers.check_accounts(m, events)


@pytest.mark.integration
async def test_arguments_and_codecs(make: Any) -> None:
    m = make(min_size=1)
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT $1::jsonb", '{"a": [1, 2]}') == {"a": [1, 2]}
        assert await c.fetchval("SELECT $1::json", json.dumps([None, "x"])) == [None, "x"]
        assert await c.fetchval("SELECT $1::jsonb[]", ['{"b": 1}', "2"]) == [{"b": 1}, 2]
        assert await c.fetchval("SELECT $1::jsonb", None) is None
        value = uuid.uuid4()
        for arg in (value, str(value)):
            back = await c.fetchval("SELECT $1::uuid", arg)
            assert back == value
            assert type(back) is uuid.UUID
        values = await c.fetchval("SELECT ARRAY[$1::uuid, NULL]", value)
        assert values == [value, None]
        assert type(values[0]) is uuid.UUID
        row = await c.fetchrow("SELECT 1 AS a, 'x' AS b, 2 AS a")
        assert row is not None
        assert tuple(row) == (1, "x", 2)
        assert row["a"] == 1
        assert row.keys() == {"a": 0, "b": 1}.keys()


@pytest.mark.integration
async def test_close_reports_every_connection(make: Any) -> None:
    m = make(min_size=2, max_size=4)
    events = helpers.record_events(m)
    pool = await m.connect()
    await m.get_client()  # never released
    native = await pool.native.acquire()  # lent through the native pool, never returned
    async with m.connection():
        pass
    started = time.monotonic()
    await m.disconnect(timeout=0.3)
    assert time.monotonic() - started < 2.0
    with pytest.raises(asyncpg.InterfaceError, match="released"):
        await native.fetchval("SELECT 1")  # terminated, and taken back by asyncpg
    helpers.check_accounts(m, events)
    assert set(helpers.removal_reasons(events)) <= {"discarded", "pool closed"}


@pytest.mark.integration
async def test_open_fails_fast_with_the_driver_error(make: Any) -> None:
    m, events, error = await helpers.open_on_a_closed_port(make, min_size=2)
    assert isinstance(error.cause, OSError)
    assert error.__cause__ is error.cause
    assert len(helpers.error_events(events)) == 1
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed == 0


@pytest.mark.integration
async def test_wrong_password_is_reported_redacted(make: Any, pg_server: ServerInfo) -> None:
    error = await helpers.connect_with_a_wrong_password(make, pg_server)
    assert "password authentication failed" in str(error)
    assert isinstance(error.cause, asyncpg.InvalidPasswordError)


@pytest.mark.integration
async def test_float_connect_timeout_is_enforced(make: Any, silent_server: int) -> None:
    m = make(f"postgresql://u@127.0.0.1:{silent_server}/db?sslmode=disable", connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    assert time.monotonic() - started < 1.5
    assert isinstance(info.value.cause, asyncio.TimeoutError)  # builtin TimeoutError on 3.11+


@pytest.mark.integration
async def test_acquire_timeout(make: Any) -> None:
    await helpers.check_acquire_timeout(make)


@pytest.mark.integration
async def test_ping_after_idle(make: Any, pg_server: ServerInfo) -> None:
    m = make(min_size=1, max_size=1, ping_after_idle=0)
    await m.connect()
    async with m.connection() as c:
        pid = c.raw.get_server_pid()
        await c.fetchval("SELECT 'marker-ping'")
    async with m.connection():
        assert await _last_query(pg_server.dsn, pid) == "SELECT 1"
    m2 = make(min_size=1, max_size=1, ping_after_idle=None)
    await m2.connect()
    async with m2.connection() as c:
        pid = c.raw.get_server_pid()
        await c.fetchval("SELECT 'marker-no-ping'")
    async with m2.connection():
        assert await _last_query(pg_server.dsn, pid) == "SELECT 'marker-no-ping'"


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
async def test_unresponsive_idle_connection_is_replaced_silently(own_server: Any) -> None:
    """A peer that never answers (here: a stopped server process) fails its ping within
    connect_timeout; the borrower gets another connection without noticing."""
    config = PoolConfig.from_dsn(
        own_server.dsn(), min_size=2, max_size=2, ping_after_idle=0, connect_timeout=0.5
    )
    m = AsyncConnectionManager(config, backend="asyncpg")
    events = helpers.record_events(m)
    await m.connect()
    try:
        await helpers.wait_until(lambda: m.get_pool_stats().total == 2)
        a = await m.get_client()
        b = await m.get_client()
        frozen_pid, frozen_id = a.raw.get_server_pid(), a.connection_id
        await b.release()
        await a.release()  # the most recently released: LIFO hands it out first
        os.kill(frozen_pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            async with m.connection() as c:
                assert c.connection_id != frozen_id
                assert await c.fetchval("SELECT 1") == 1
            assert time.monotonic() - started < 2.0
        finally:
            os.kill(frozen_pid, signal.SIGCONT)
        assert helpers.removal_reasons(events) == ["check failed"]
        assert not helpers.error_events(events)
    finally:
        await m.disconnect()
    helpers.check_accounts(m, events)


@pytest.mark.integration
async def test_cancelled_borrows_leak_nothing(pg_server: ServerInfo) -> None:
    async def still_works(client: Any) -> None:
        assert await client.fetchval("SELECT 1") == 1

    m, events = await helpers.check_cancelled_borrows_leak_nothing(
        pg_server, "asyncpg", settle=0.1, timeout=2, also_check=still_works
    )
    helpers.check_accounts(m, events)


@pytest.mark.integration
async def test_server_settings_application_name_and_keepalives(make: Any) -> None:
    async with helpers.connection_with_settings(make, "pgc asyncpg") as c:
        sock = c.raw._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1


@pytest.mark.integration
async def test_dsn_keywords_reach_asyncpg(make: Any, pg_server: ServerInfo) -> None:
    dsn = (
        pg_server.dsn
        + ("&" if "?" in pg_server.dsn else "?")
        + "options=-c%20statement_timeout%3D1234&keepalives_idle=17&sslmode=disable"
    )
    m = make(dsn, min_size=1)
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SHOW statement_timeout") == "1234ms"
        sock = c.raw._transport.get_extra_info("socket")
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 17
        assert c.raw._transport.get_extra_info("sslcontext") is None


@pytest.mark.integration
async def test_environment_cannot_override_what_the_core_resolved(
    make: Any, pg_server: ServerInfo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Variables the core resolves itself (or ignores): asyncpg would read them, if we let it.
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "missing"))
    monkeypatch.setenv("PGSSLMODE", "verify-full")  # overridden by the explicit ssl below
    m = make(min_size=1, ssl="disable")
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1


@pytest.mark.integration
async def test_password_file_is_read_when_no_password_is_given(
    make: Any, pg_server: ServerInfo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if pg_server.password is None or pg_server.server is None:
        pytest.skip("needs the embedded, password-protected server")
    server = pg_server.server
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{server.port}:*:{server.user}:{server.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    m = make(server.dsn(password=False), min_size=1)
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1


@pytest.mark.integration
async def test_unix_socket(make: Any, pg_server: ServerInfo) -> None:
    if pg_server.server is None:
        pytest.skip("needs the embedded server")
    m = make(pg_server.server.dsn(socket=True), min_size=1)
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT inet_client_addr()") is None  # not over TCP
        assert await c.fetchval("SELECT 1") == 1


@pytest.mark.integration
@pytest.mark.slow
async def test_outage_fails_fast_then_recovers(own_server: Any) -> None:
    m = AsyncConnectionManager(helpers.outage_config(own_server), backend="asyncpg")
    events = helpers.record_events(m)
    await m.connect()
    try:
        held = await m.get_client()
        own_server.stop()
        error = await helpers.borrow_during_outage(m, within=3.0)
        assert isinstance(error.cause, OSError)
        # many borrowers at once, more than max_size: each fails within about connect_timeout
        started = time.monotonic()
        results = await asyncio.gather(*(m.get_client() for _ in range(6)), return_exceptions=True)
        assert time.monotonic() - started < 3.0
        assert all(isinstance(r, ConnectionError) for r in results)
        await held.release()
        own_server.start()
        async with m.connection() as c:  # a borrower reconnects at once
            assert await c.fetchval("SELECT 1") == 1
        await helpers.wait_until(lambda: m.get_pool_stats().total >= 2, timeout=70.0)
    finally:
        await m.disconnect()
    helpers.check_accounts(m, events)


# -- TLS, through a TLS-terminating proxy (tests/tls.py) ----------------------------------


def _tls_object(client: Any) -> Any:
    return client.raw._transport.get_extra_info("ssl_object")


@pytest.mark.integration
@pytest.mark.parametrize("sslmode", ["require", "prefer", "allow"])
async def test_tls_modes(make: Any, pg_server: ServerInfo, tls_proxy: int, sslmode: str) -> None:
    # (allow tries plaintext first: this proxy hangs up on it, and the retry uses TLS)
    m = make(dsn_through(pg_server, tls_proxy), min_size=1, ssl=sslmode)
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1
        assert _tls_object(c) is not None


@pytest.mark.integration
async def test_tls_verification(
    make: Any, pg_server: ServerInfo, tls_proxy: int, certificates: Path
) -> None:
    # sslrootcert reaches asyncpg through the DSN query string it is given
    context = await check_certificate_verification(
        make, pg_server, tls_proxy, certificates, refused_sslmode="verify-ca",
        peer_certificate=lambda c: _tls_object(c).getpeercert(),
        context_in_use=lambda c: c.raw._transport.get_extra_info("sslcontext"),
    )
    # a context means TLS is required: no fallback to the plaintext server
    plain = make(pg_server.dsn, min_size=1, ssl=context)
    with pytest.raises(ConnectionError):
        await plain.connect()
