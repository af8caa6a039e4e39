"""What only the psycopg backend has to get right: mapping the config onto libpq and
psycopg_pool, and the paths by which psycopg_pool opens, checks and closes connections.

The cross-backend behaviour is in ``tests/conformance``; these tests look under the hood
(``client.raw``, ``pool.native``, the server's ``pg_stat_activity``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

import pytest

import pgconnector
import pgconnector.errors
from pgconnector import ConfigError, ConnectionError, PoolConfig
from tests.backends import helpers
from tests.conftest import ServerInfo

psycopg = pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")

from pgconnector_psycopg import backend  # noqa: E402
from pgconnector_psycopg._common import (  # noqa: E402
    connect_kwargs,
    escape_option,
    libpq_connect_timeout,
)

# -- no server ------------------------------------------------------------------------------
# (that importing the backend imports no driver: tests/backends/test_common.py)


def test_backend_attributes() -> None:
    helpers.check_backend_attributes(
        backend, "psycopg", supports_sync=True, supports_async=True, pure_python=False
    )


def test_connect_kwargs_are_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    config = helpers.explicit_config(
        monkeypatch,
        ssl="require",
        server_settings={"search_path": "a b,c\\d", "statement_timeout": "5s"},
        dsn="postgresql://x@y/z?sslrootcert=/ca.pem&options=-c%20work_mem%3D8MB%20-O",
    )
    kwargs = connect_kwargs(config, config.connect_params())
    assert kwargs["host"] == "db.example"
    assert kwargs["port"] == "6543"
    assert kwargs["user"] == "app"
    assert kwargs["password"] == "s3cret"
    assert kwargs["dbname"] == "appdb"
    assert kwargs["sslmode"] == "require"
    assert kwargs["connect_timeout"] == 3
    assert kwargs["application_name"] == "my app"
    assert kwargs["sslrootcert"] == "/ca.pem"
    assert kwargs["target_session_attrs"] == "any"
    assert kwargs["load_balance_hosts"] == "disable"
    options = kwargs["options"]
    assert options.startswith("-c work_mem=8MB -O")
    assert "-c search_path=a\\ b,c\\\\d" in options
    assert "-c statement_timeout=5s" in options


def test_multi_host_lists_go_to_libpq_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGHOST", "PGPORT", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS"):
        monkeypatch.delenv(name, raising=False)
    config = PoolConfig(
        dsn="postgresql://u@a:1,b,c:3/db?target_session_attrs=standby&load_balance_hosts=random"
    )
    kwargs = connect_kwargs(config, config.connect_params())
    assert (kwargs["host"], kwargs["port"]) == ("a,b,c", "1,5432,3")
    assert kwargs["target_session_attrs"] == "standby"
    assert kwargs["load_balance_hosts"] == "random"


def test_connect_timeout_granularity() -> None:
    assert [libpq_connect_timeout(s) for s in (0.1, 1.0, 2.0, 2.01, 7.5)] == [2, 2, 2, 3, 8]


def test_escape_option() -> None:
    assert escape_option("a b\tc\\d") == "a\\ b\\\tc\\\\d"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_ssl_context_is_refused_at_create_pool(mode: str) -> None:
    config = PoolConfig(host="127.0.0.1", ssl=ssl.create_default_context())
    create = backend.create_pool if mode == "sync" else backend.create_async_pool
    with pytest.raises(ConfigError) as info:
        create(config, helpers.FakeHooks())
    assert info.value.field == "ssl"
    assert "sslrootcert" in str(info.value)


# -- real server ----------------------------------------------------------------------------


# make(dsn=None, **config_overrides): a psycopg manager, sync and then async (mode)
mode, make = helpers.sync_and_async_make("psycopg")


def _last_query(dsn: str, pid: int) -> str:
    """The last statement the server received on the connection of backend ``pid``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        assert row is not None
        return str(row[0])


@pytest.mark.integration
@pytest.mark.parametrize("min_size", [0, 2])
async def test_open_fails_fast_with_the_driver_error(make: Any, min_size: int) -> None:
    _, _, error = await helpers.open_on_a_closed_port(make, min_size=min_size, connect_timeout=5.0)
    assert isinstance(error.cause, psycopg.OperationalError)
    assert error.__cause__ is error.cause


@pytest.mark.integration
async def test_wrong_password_is_reported_redacted(make: Any, pg_server: ServerInfo) -> None:
    error = await helpers.connect_with_a_wrong_password(make, pg_server)
    assert "password authentication failed" in str(error)
    assert isinstance(error.cause, psycopg.OperationalError)


@pytest.mark.integration
async def test_server_settings_and_application_name_reach_the_server(make: Any) -> None:
    async with helpers.connection_with_settings(make, "pgc psycopg") as c:
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
    async def prepare_server_side(c: Any) -> None:
        c.raw.prepare_threshold = 0  # psycopg prepares from now on...
        await c.fetchval("SELECT $1::int", 1)  # ...this one server-side

    async def check(c: Any) -> None:
        assert await c.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
        assert await helpers.advisory_locks_held(c) == 0
        # psycopg's own cache of prepared statements is not stale
        assert await c.fetchval("SELECT $1::int", 2) == 2
        assert c.raw.info.transaction_status.name == "IDLE"

    await helpers.check_session_reset(make, also_leave=prepare_server_side, also_check=check)


@pytest.mark.integration
async def test_max_uses_retires_quietly(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
        events = await helpers.use_up_max_uses(make)
    assert helpers.removal_reasons(events) == ["max_uses", "max_uses"]
    assert not [r for r in caplog.records if r.name == "psycopg.pool"]


@pytest.mark.integration
async def test_dead_idle_connection_is_replaced_silently(make: Any) -> None:
    m = make(min_size=2, max_size=2, ping_after_idle=0)
    events = helpers.record_events(m)
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
    assert helpers.removal_reasons(events) == ["check failed"]
    assert not helpers.error_events(events)


@pytest.mark.integration
async def test_broken_connection_surfaces_and_is_not_reused(make: Any) -> None:
    m, events, victim, error = await helpers.use_a_terminated_connection(make)
    assert isinstance(error.cause, psycopg.OperationalError)
    # a statement error on a healthy connection is the class of its SQLSTATE, psycopg's own
    # exception chained
    async with m.connection() as c:
        assert c.connection_id != victim
        with pytest.raises(pgconnector.errors.DivisionByZero) as sql_error:
            await c.fetchval("SELECT 1/0")
        assert isinstance(sql_error.value.cause, psycopg.errors.DivisionByZero)
        await c.execute("SET statement_timeout = '10ms'")
        with pytest.raises(pgconnector.QueryCanceled) as sql_error:
            await c.execute("SELECT pg_sleep(1)")
        assert isinstance(sql_error.value.cause, psycopg.errors.QueryCanceled)
        await c.execute("RESET statement_timeout")
    assert "broken" in helpers.removal_reasons(events)
    await m.disconnect()
    stats = m.get_pool_stats()
    removed = helpers.removal_reasons(events)
    assert stats.connections_opened == stats.connections_closed == len(removed)


@pytest.mark.integration
async def test_idle_shrink_and_max_lifetime_reasons(make: Any) -> None:
    _, events = await helpers.shrink_when_idle(make)
    assert helpers.removal_reasons(events) == ["idle", "idle"]
    assert helpers.removal_reasons(await helpers.outlive_max_lifetime(make)) == ["max_lifetime"]


@pytest.mark.integration
async def test_acquire_timeout(make: Any) -> None:
    await helpers.check_acquire_timeout(make)


@pytest.mark.integration
async def test_disconnect_with_a_borrowed_connection_reports_every_close(make: Any) -> None:
    m = make(min_size=2, max_size=4)
    events = helpers.record_events(m)
    await m.connect()
    await m.get_client()  # never released
    async with m.connection():
        pass
    await m.disconnect(timeout=0.1)
    helpers.check_closes_reported(m, events)


@pytest.mark.integration
async def test_async_cancelled_borrows_leak_nothing(pg_server: ServerInfo) -> None:
    await helpers.check_cancelled_borrows_leak_nothing(pg_server, "psycopg", settle=0.1, timeout=2)


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
    outage = helpers.through_an_outage(own_server, "psycopg", mode, first_within=5.0)
    async with outage as (m, error):
        assert isinstance(error.cause, psycopg.OperationalError)
        await helpers.wait_until(lambda: m.get_pool_stats().total >= 2, timeout=30.0)
        async with m.connection() as c:
            assert await c.fetchval("SELECT 1") == 1


@pytest.mark.integration
async def test_release_during_copy_discards(make: Any, mode: str) -> None:
    m = make(min_size=1, max_size=1)
    events = helpers.record_events(m)
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
    assert helpers.removal_reasons(events) == ["discarded"]
