"""One config means the same server, user, settings and password on every backend."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from pgconnector import ConnectionError, PoolConfig
from tests.conftest import MakeManager, ServerInfo, Target
from tests.facade import wrap_manager

pytestmark = pytest.mark.integration


async def test_application_name_and_server_settings_reach_the_server(
    make_manager: MakeManager, pg_server: ServerInfo
) -> None:
    name = f"pgc-visible-{secrets.token_hex(4)}"
    m = make_manager(
        min_size=1,
        application_name=name,
        server_settings={"statement_timeout": "4321", "lock_timeout": "1234",
                         "search_path": "pg_catalog, public"},
    )
    await m.connect()
    async with m.connection() as c:
        row = await c.fetchrow(
            "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        assert row is not None
        assert row["application_name"] == name
        assert await c.fetchval("SHOW statement_timeout") == "4321ms"
        assert await c.fetchval("SHOW lock_timeout") == "1234ms"
        assert await c.fetchval("SHOW search_path") == "pg_catalog, public"
        assert await c.fetchval("SHOW application_name") == name
    if pg_server.server is not None:
        assert pg_server.server.pg_stat_activity_count(application_name=name) >= 1


def _own_env(monkeypatch: pytest.MonkeyPatch, server: Any, **overrides: str) -> None:
    for var in ("DATABASE_URL", "PGCONNECTOR_BACKEND", "PGHOST", "PGPORT", "PGUSER",
                "PGPASSWORD", "PGDATABASE", "PGSSLMODE", "PGAPPNAME", "PGPASSFILE",
                "PGSERVICE", "PGOPTIONS"):
        monkeypatch.delenv(var, raising=False)
    values = {
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": server.user,
        "PGPASSWORD": server.password,
        "PGDATABASE": server.database,
    }
    values.update(overrides)
    for var, value in values.items():
        monkeypatch.setenv(var, value)


async def test_pg_environment_variables_mean_the_same_server(
    own_server: Any, supported_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_server.admin_execute("CREATE DATABASE envdb")
    _own_env(monkeypatch, own_server, PGDATABASE="envdb", PGAPPNAME="pgc-from-env")
    m = wrap_manager(PoolConfig.from_env(min_size=1), supported_target.backend,
                     supported_target.mode)
    try:
        await m.connect()
        async with m.connection() as c:
            row = await c.fetchrow(
                "SELECT current_user AS u, current_database() AS d, "
                "inet_server_port() AS p, current_setting('application_name') AS a"
            )
        assert row is not None
        assert dict(row) == {"u": own_server.user, "d": "envdb", "p": own_server.port,
                             "a": "pgc-from-env"}
    finally:
        await m.disconnect()


async def test_unix_socket_from_the_environment(
    own_server: Any, supported_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    _own_env(monkeypatch, own_server, PGHOST=str(own_server.socket_dir))
    m = wrap_manager(PoolConfig.from_env(min_size=1), supported_target.backend,
                     supported_target.mode)
    try:
        await m.connect()
        async with m.connection() as c:
            # inet_server_addr() is NULL over a Unix socket
            assert await c.fetchval("SELECT inet_server_addr()") is None
    finally:
        await m.disconnect()


async def test_explicit_fields_beat_the_dsn_and_the_environment(
    own_server: Any, supported_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    _own_env(monkeypatch, own_server, PGPASSWORD="not-the-password", PGDATABASE="nosuchdb")
    dsn = f"postgresql://{own_server.user}@127.0.0.1:{own_server.port}/alsonosuch"
    config = PoolConfig.from_dsn(dsn, password=own_server.password, database="postgres",
                                 min_size=1)
    m = wrap_manager(config, supported_target.backend, supported_target.mode)
    try:
        await m.connect()
        async with m.connection() as c:
            assert await c.fetchval("SELECT current_database()") == "postgres"
    finally:
        await m.disconnect()


async def test_password_file_is_honoured_on_every_backend(
    own_server: Any, supported_target: Target, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The core reads PGPASSFILE / ~/.pgpass with libpq's rules, so pg8000 honours it too
    and every backend gets the same password for the same config."""
    passfile = tmp_path / "pgpass"
    passfile.write_text(
        f"127.0.0.1:{own_server.port}:otherdb:*:wrong\n"
        f"127.0.0.1:{own_server.port}:*:{own_server.user}:{own_server.password}\n"
    )
    passfile.chmod(0o600)
    _own_env(monkeypatch, own_server, PGPASSFILE=str(passfile))
    monkeypatch.delenv("PGPASSWORD")
    m = wrap_manager(PoolConfig.from_env(min_size=1, connect_timeout=3.0),
                     supported_target.backend, supported_target.mode)
    try:
        await m.connect()
        async with m.connection() as c:
            assert await c.fetchval("SELECT current_user") == own_server.user
    finally:
        await m.disconnect()

    # PGPASSWORD wins over the file, as in libpq: a wrong one fails on every backend
    monkeypatch.setenv("PGPASSWORD", "not-" + own_server.password)
    wrong = wrap_manager(PoolConfig.from_env(min_size=1, connect_timeout=3.0),
                         supported_target.backend, supported_target.mode)
    with pytest.raises(ConnectionError, match="password"):
        await wrong.connect()
