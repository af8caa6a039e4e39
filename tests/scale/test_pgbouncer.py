"""``pgbouncer=True`` against a real PgBouncer (``tests/pgbouncer.py``), on every backend and
manager, in session and transaction pooling, with fewer server connections (PgBouncer's
``default_pool_size``) than pgconnector connections, so that server sessions really are shared.

Also what goes wrong without the switch, so that the documentation's claim is tested: in
transaction pooling, psycopg (past its prepare threshold) and asyncpg (its statement cache)
prepare named statements on a server session that another client then shares.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from pgconnector import ConfigError, PoolConfig
from pgconnector._pgbouncer import HINT, add_hint
from tests.conftest import ServerInfo, Target
from tests.facade import ClientFacade, ManagerFacade, wrap_manager
from tests.pgbouncer import PgBouncer, PgBouncerFactory

POOL_MODES = ["session", "transaction"]
WORKERS = 6
QUERIES_PER_WORKER = 50

ManagerThrough = Callable[..., ManagerFacade]


# -- config: what pgbouncer=True refuses (no server) ------------------------------------------


def test_pgbouncer_refuses_session_reset() -> None:
    with pytest.raises(ConfigError) as info:
        PoolConfig(pgbouncer=True, reset_on_release="session")
    assert info.value.field == "reset_on_release"
    assert "reset_on_release='transaction'" in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "fields"),
    [
        ("postgresql://u@h/db", {"server_settings": {"statement_timeout": "5s"}}),
        ("postgresql://u@h/db?options=-c%20statement_timeout%3D5s", {}),
        ("postgresql://u@h/db?options=--search_path%3Dx", {}),
    ],
)
def test_pgbouncer_refuses_startup_settings(dsn: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        PoolConfig.from_dsn(dsn, pgbouncer=True, **fields)
    assert info.value.field == "server_settings"
    assert "ALTER ROLE" in str(info.value)


def test_pgbouncer_accepts_application_name_and_the_defaults() -> None:
    cfg = PoolConfig.from_dsn(
        "postgresql://u@h/db?application_name=app", pgbouncer=True, application_name="app"
    )
    assert (cfg.pgbouncer, cfg.reset_on_release) == (True, "transaction")
    # Without the switch nothing changes.
    PoolConfig(reset_on_release="session", server_settings={"statement_timeout": "5s"})


def test_symptom_hint_is_added_once_and_only_for_the_symptom() -> None:
    error = RuntimeError("prepared statement does not exist")
    add_hint(error, "26000")
    add_hint(error, "26000")
    assert getattr(error, "__notes__", None) == [HINT]
    other = RuntimeError("division by zero")
    add_hint(other, "22012")
    assert getattr(other, "__notes__", None) is None


def test_asyncpg_turns_its_statement_cache_off() -> None:
    pytest.importorskip("asyncpg")
    from pgconnector_asyncpg._params import connect_args

    for flag, expected in ((True, 0), (False, None)):
        cfg = PoolConfig.from_dsn("postgresql://u:p@127.0.0.1/db", pgbouncer=flag)
        kwargs = connect_args(cfg, cfg.connect_params()).kwargs
        assert kwargs.get("statement_cache_size") == expected


# -- against a real PgBouncer ------------------------------------------------------------------


@pytest.fixture
async def through(supported_target: Target) -> AsyncIterator[ManagerThrough]:
    """``through(bouncer, **config)``: a manager for the target, connected to PgBouncer."""
    made: list[ManagerFacade] = []

    def factory(bouncer: PgBouncer, **overrides: Any) -> ManagerFacade:
        overrides.setdefault("connect_timeout", 10.0)
        overrides.setdefault("pgbouncer", True)
        config = PoolConfig.from_dsn(bouncer.dsn(), **overrides)
        facade = wrap_manager(config, supported_target.backend, supported_target.mode)
        made.append(facade)
        return facade

    yield factory
    for facade in made:
        await facade.disconnect(timeout=5.0)


def _table() -> str:
    return "pgb_" + secrets.token_hex(6)


def _psql(pg_server: ServerInfo) -> Any:
    if pg_server.server is None:
        pytest.skip("counting server sessions needs the embedded server (not an external DSN)")
    return pg_server.server.bin_dir / "psql"


pytestmark = pytest.mark.integration


@pytest.mark.parametrize("pool_mode", POOL_MODES)
async def test_queries_and_transactions(
    pool_mode: Any, pgbouncer_factory: PgBouncerFactory, through: ManagerThrough
) -> None:
    bouncer = pgbouncer_factory(pool_mode, default_pool_size=2)
    m = through(bouncer, min_size=0, max_size=2)
    await m.connect()
    table = _table()
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
        try:
            await _check_queries(c, table)
        finally:
            await c.execute(f"DROP TABLE {table}")


async def _check_queries(c: ClientFacade, table: str) -> None:
    # Parameterized statements, repeated past psycopg's prepare threshold (5).
    for i in range(12):
        row = await c.fetchrow("SELECT $1::int AS n, $2::text AS s, $3::int + 1 AS m", i, "x", i)
        assert row is not None
        assert (row["n"], row["s"], row["m"]) == (i, "x", i + 1)
    assert await c.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "one") == "INSERT 0 1"
    # Commit.
    async with c.transaction():
        await c.execute(f"INSERT INTO {table} VALUES ($1, $2)", 2, "two")
        # Nested: a savepoint, rolled back on error, the outer transaction goes on.
        with pytest.raises(Exception, match="duplicate key"):
            async with c.transaction():
                await c.execute(f"INSERT INTO {table} VALUES ($1, $2)", 3, "three")
                await c.execute(f"INSERT INTO {table} VALUES ($1, $2)", 1, "dup")
        async with c.transaction():
            await c.execute(f"INSERT INTO {table} VALUES ($1, $2)", 4, "four")
    # Rollback.
    with pytest.raises(RuntimeError, match="undo"):
        async with c.transaction():
            await c.execute(f"INSERT INTO {table} VALUES ($1, $2)", 5, "five")
            raise RuntimeError("undo")
    rows = await c.fetch(f"SELECT id, note FROM {table} WHERE id > $1 ORDER BY id", 0)
    assert [tuple(r) for r in rows] == [(1, "one"), (2, "two"), (4, "four")]
    assert await c.fetchval(f"SELECT count(*) FROM {table}") == 3


@pytest.mark.parametrize("pool_mode", POOL_MODES)
async def test_more_clients_than_server_connections(
    pool_mode: Any,
    pgbouncer_factory: PgBouncerFactory,
    through: ManagerThrough,
    pg_server: ServerInfo,
) -> None:
    """6 workers, each running 50 parameterized queries, over PgBouncer's 2 server
    connections; every result is checked.

    In transaction pooling each worker holds its own pgconnector connection throughout: 6
    PgBouncer clients share the 2 server sessions statement by statement. In session pooling
    a PgBouncer client keeps its server session for as long as it is connected, so a pool
    larger than PgBouncer's would leave the extra connections waiting in PgBouncer until one
    closes: there max_size is PgBouncer's pool size, and the workers borrow per query.
    """
    psql = _psql(pg_server)
    bouncer = pgbouncer_factory(pool_mode, default_pool_size=2)
    hold = pool_mode == "transaction"
    m = through(bouncer, min_size=0, max_size=WORKERS if hold else 2, acquire_timeout=60.0)
    await m.connect()
    sql = "SELECT $1::int AS w, $2::int * 2 AS d, $3::text AS t"

    borrowed: list[int] = []
    all_borrowed = asyncio.Event()
    barrier = threading.Barrier(WORKERS, timeout=60)

    def expected(n: int) -> list[tuple[int, int, str]]:
        return [(n, 2 * i, f"w{n}-{i}") for i in range(QUERIES_PER_WORKER)]

    async def worker_async(n: int) -> list[tuple[int, int, str]]:
        got = []
        held = await m.get_client() if hold else None
        if held is not None:
            # Every worker holds its client before any starts querying: without this, a
            # quick worker could finish and release before the last one borrows, and the
            # pool would rightly reuse that connection.
            borrowed.append(n)
            if len(borrowed) == WORKERS:
                all_borrowed.set()
            await asyncio.wait_for(all_borrowed.wait(), 60)
        try:
            for i in range(QUERIES_PER_WORKER):
                if held is not None:
                    row = await held.fetchrow(sql, n, i, f"w{n}-{i}")
                else:
                    async with m.connection() as c:
                        row = await c.fetchrow(sql, n, i, f"w{n}-{i}")
                assert row is not None
                got.append((row["w"], row["d"], row["t"]))
        finally:
            if held is not None:
                await held.release()
        return got

    def worker_sync(n: int) -> list[tuple[int, int, str]]:
        manager = m.manager
        got = []
        held = manager.get_client() if hold else None
        if held is not None:
            barrier.wait()  # as in worker_async: every client held before any query runs
        try:
            for i in range(QUERIES_PER_WORKER):
                if held is not None:
                    row = held.fetchrow(sql, n, i, f"w{n}-{i}")
                else:
                    with manager.connection() as c:
                        row = c.fetchrow(sql, n, i, f"w{n}-{i}")
                assert row is not None
                got.append((row["w"], row["d"], row["t"]))
        finally:
            if held is not None:
                held.release()
        return got

    if m.mode == "async":
        results = await asyncio.gather(*(worker_async(n) for n in range(WORKERS)))
    else:
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(worker_sync, range(WORKERS)))
    assert list(results) == [expected(n) for n in range(WORKERS)]
    stats = m.get_pool_stats()
    assert stats.acquires >= (WORKERS if hold else WORKERS * QUERIES_PER_WORKER)
    assert stats.connections_opened == (WORKERS if hold else 2)
    servers = [s for s in bouncer.show("SERVERS", psql) if s["database"] == bouncer.database]
    assert 1 <= len(servers) <= 2  # the server connections really were shared


@pytest.mark.parametrize("pool_mode", POOL_MODES)
async def test_health_stats_and_disconnect_leave_no_session_behind(
    pool_mode: Any,
    pgbouncer_factory: PgBouncerFactory,
    through: ManagerThrough,
    pg_server: ServerInfo,
) -> None:
    psql = _psql(pg_server)
    bouncer = pgbouncer_factory(pool_mode, default_pool_size=2)
    m = through(bouncer, min_size=2, max_size=3)
    await m.connect()
    status = await m.health_check(timeout=10.0)
    assert (status.connected, status.error) == (True, None)
    assert status.pool_stats.total >= 1
    if pool_mode == "transaction":
        # A client given back inside a transaction: rolled back through PgBouncer, which then
        # frees the server session for the others.
        c = await m.get_client()
        await c.execute("BEGIN")
        await c.execute("SELECT $1::int", 1)
        await c.release()
        async with m.connection() as c2:
            assert await c2.fetchval("SELECT $1::int + 1", 41) == 42
    await m.disconnect(timeout=5.0)
    stats = m.get_pool_stats()
    assert (stats.total, stats.in_use) == (0, 0)
    assert stats.connections_opened == stats.connections_closed

    # PgBouncer has no client of ours left, and no server session busy or in a transaction.
    pools = [p for p in bouncer.show("POOLS", psql) if p["database"] == bouncer.database]
    assert [(p["cl_active"], p["cl_waiting"], p["sv_active"]) for p in pools] in (
        [], [("0", "0", "0")]
    )
    pids = [s["remote_pid"] for s in bouncer.show("SERVERS", psql)
            if s["database"] == bouncer.database]
    assert len(pids) <= 2
    if pids:
        states = pg_server.admin(
            f"SELECT state FROM pg_stat_activity WHERE pid IN ({', '.join(pids)})"
        ).split()
        assert set(states) <= {"idle"}
    # Stopping PgBouncer closes its server sessions: none is left on the server.
    bouncer.stop()
    if pids:
        assert _sessions_left(pg_server, pids) == 0


def _sessions_left(pg_server: ServerInfo, pids: list[str], timeout: float = 10.0) -> int:
    """How many of the server processes ``pids`` are still there, waiting up to ``timeout``
    for them to go: a backend exits on its own once it sees its client socket closed, and
    tells nobody (polling the server is the only way to know)."""
    query = f"SELECT count(*) FROM pg_stat_activity WHERE pid IN ({', '.join(pids)})"
    deadline = time.monotonic() + timeout
    left = int(pg_server.admin(query))
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = int(pg_server.admin(query))
    return left


# -- without the switch ------------------------------------------------------------------------


async def _prepare_on_one_server_run_on_another(m: ManagerFacade) -> list[BaseException]:
    """Three pgconnector connections over PgBouncer's two server sessions X and Y, steered
    with open transactions (PgBouncer keeps a server session with its client while a
    transaction is open): ``a`` runs a parameterized query past every driver's prepare
    threshold while ``b`` holds X, so it runs on Y; then ``d`` holds Y and ``b`` lets X go, so
    ``a``'s next statements run on X. Returns the server errors ``a`` met."""
    a, b, d = await m.get_client(), await m.get_client(), await m.get_client()
    errors: list[BaseException] = []

    async def run(start: int, count: int) -> None:
        for i in range(start, start + count):
            try:
                assert await a.fetchval("SELECT $1::int * 3", i) == 3 * i
            except Exception as exc:
                if not hasattr(exc, "sqlstate"):
                    raise
                errors.append(exc)

    try:
        await b.execute("BEGIN")
        await run(0, 8)  # on Y
        await d.execute("BEGIN")  # d takes Y, the only free one
        await b.execute("COMMIT")  # X is free
        await run(8, 2)  # on X
        await d.execute("COMMIT")
    finally:
        for client in (a, b, d):
            await client.release()
    return errors


async def test_transaction_pooling_without_the_switch(
    supported_target: Target, pgbouncer_factory: PgBouncerFactory, through: ManagerThrough
) -> None:
    """psycopg (past prepare_threshold) and asyncpg (statement cache) use named prepared
    statements, which are missing on the next server session PgBouncer lends, and the error
    says to set pgbouncer=True; pg8000 never prepares named statements and is unaffected.
    With pgbouncer=True, no backend fails."""
    bouncer = pgbouncer_factory("transaction", default_pool_size=2)
    unsafe = through(bouncer, pgbouncer=False, min_size=0, max_size=3)
    await unsafe.connect()
    errors = await _prepare_on_one_server_run_on_another(unsafe)
    if supported_target.backend == "pg8000":
        assert errors == []
    else:
        assert errors, "expected prepared-statement errors behind transaction pooling"
        for error in errors:
            assert getattr(error, "sqlstate", None) in ("26000", "42P05")
            assert HINT in getattr(error, "__notes__", [])
    await unsafe.disconnect(timeout=5.0)

    safe = through(bouncer, min_size=0, max_size=3)
    await safe.connect()
    assert await _prepare_on_one_server_run_on_another(safe) == []


@pytest.mark.parametrize("pool_mode", POOL_MODES)
async def test_cursor_through_pgbouncer(
    pool_mode: Any, pgbouncer_factory: PgBouncerFactory, through: ManagerThrough
) -> None:
    """client.cursor() runs in a transaction of its own (or the caller's), so a transaction
    pooler keeps one server connection for it; its DECLARE binds $n like any statement, past
    psycopg's prepare threshold too."""
    bouncer = pgbouncer_factory(pool_mode, default_pool_size=2)
    m = through(bouncer, min_size=0, max_size=2)
    await m.connect()
    sql = "SELECT g AS n, $2::text || g AS s FROM generate_series(1, $1) AS g"
    async with m.connection() as c:
        for attempt in range(7):
            got = [(r["n"], r["s"]) async for r in c.cursor(sql, 250, "r", prefetch=40)]
            assert got == [(i, f"r{i}") for i in range(1, 251)], attempt
            async for r in c.cursor(sql, 250, "r", prefetch=40):
                if r["n"] == 50:
                    break
            async with c.transaction():
                assert [r["n"] async for r in c.cursor(sql, 3, "t")] == [1, 2, 3]
        assert await c.fetchval("SELECT count(*) FROM pg_cursors WHERE name <> ''") == 0
