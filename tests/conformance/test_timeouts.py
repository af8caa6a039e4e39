"""``timeout=`` per call on execute, fetch, fetchrow and fetchval, on every backend x manager:
the statement is cancelled on the server, ``StatementTimeoutError`` is raised, and the client
stays usable on the same server session; no cancel request outlives its call."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

import pgconnector
from pgconnector import ConfigError, StatementTimeoutError, errors
from tests.backends.helpers import error_events, record_events, removal_reasons
from tests.conftest import MakeManager

pytestmark = pytest.mark.integration

METHODS = ["execute", "fetch", "fetchrow", "fetchval"]
SLOW = "SELECT pg_sleep(5)"
#: Generous: the call must end long before the statement would (5 s), not fast.
BOUND = 3.0


@pytest.fixture
async def m(make_manager: MakeManager) -> Any:
    # Two connections: the test's client, and an observer looking at its session.
    manager = make_manager(min_size=1, max_size=2)
    await manager.connect()
    yield manager
    await manager.disconnect()


async def _session(m: Any, pid: int) -> tuple[str, str]:
    """The state and last statement of the server session ``pid``, seen from another one."""
    async with m.connection() as observer:
        row = await observer.fetchrow(
            "SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid
        )
    assert row is not None, f"session {pid} is gone"
    return row["state"], row["query"]


@pytest.mark.parametrize("method", METHODS)
async def test_timeout_cancels_the_statement_on_the_server(m: Any, method: str) -> None:
    events = record_events(m)
    async with m.connection() as c:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        started = time.monotonic()
        with pytest.raises(StatementTimeoutError) as info:
            await getattr(c, method)(SLOW, timeout=0.2)
        elapsed = time.monotonic() - started
        assert elapsed < BOUND
        e = info.value
        assert isinstance(e, errors.QueryCanceled)
        assert isinstance(e, TimeoutError)
        assert isinstance(e, pgconnector.DatabaseError)
        assert not isinstance(e, pgconnector.ConnectionError)
        assert e.sqlstate == "57014"
        assert str(e) == "statement timed out after 0.2 s and was cancelled on the server"
        assert e.cause is not None and e.__cause__ is e.cause
        assert not isinstance(e.cause, pgconnector.PgConnectorError)  # the driver's own
        # Nothing runs on the server any more: the session is idle, its pg_sleep ended.
        state, query = await _session(m, pid)
        assert state == "idle", (state, query)
        # The same client, on the same server session, goes on.
        assert await c.fetchval("SELECT pg_backend_pid()") == pid
        assert await c.fetchval("SELECT 1", timeout=5) == 1
    stats = m.get_pool_stats()
    assert (stats.connections_closed, removal_reasons(events), error_events(events)) == (
        0, [], []
    )


@pytest.mark.parametrize("method", METHODS)
async def test_timeout_inside_a_transaction_aborts_it(m: Any, method: str) -> None:
    table = f"t_{uuid.uuid4().hex[:12]}"

    class Leave(Exception):
        pass

    async with m.connection() as c:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        await c.execute(f"CREATE TABLE {table} (id int)")
        try:
            with pytest.raises(Leave):
                async with c.transaction():
                    await c.execute(f"INSERT INTO {table} VALUES (1)")
                    with pytest.raises(StatementTimeoutError):
                        await getattr(c, method)(SLOW, timeout=0.2)
                    # As after any error: the transaction is aborted until it rolls back.
                    with pytest.raises(errors.InFailedSqlTransaction):
                        await c.fetchval("SELECT 1")
                    raise Leave
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            assert await c.fetchval("SELECT pg_backend_pid()") == pid
            # A transaction after it commits as usual.
            async with c.transaction():
                await c.execute(f"INSERT INTO {table} VALUES (2)")
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 1
        finally:
            await c.execute(f"DROP TABLE {table}")


@pytest.mark.parametrize("method", METHODS)
async def test_a_fast_statement_with_a_timeout_returns_its_result(m: Any, method: str) -> None:
    expected = {"execute": "SELECT 1", "fetch": [(1,)], "fetchrow": (1,), "fetchval": 1}
    async with m.connection() as c:
        result = await getattr(c, method)("SELECT $1::int", 1, timeout=10)
        if method in ("fetch", "fetchrow"):
            result = [tuple(r) for r in result] if method == "fetch" else tuple(result)
        assert result == expected[method]


async def test_no_late_cancel_hits_a_later_statement(m: Any) -> None:
    """Timeouts around the statements' own duration, so that some expire as the statement
    ends: the cancel request of each call is over before the call returns, so the untimed
    statements after them are never cancelled."""
    timeouts = [0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01]
    outcomes = {"ok": 0, "timed out": 0}
    async with m.connection() as c:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        for i in range(200):
            try:
                await c.fetchval("SELECT pg_sleep(0.001)", timeout=timeouts[i % len(timeouts)])
                outcomes["ok"] += 1
            except StatementTimeoutError:
                outcomes["timed out"] += 1
            # Untimed, right after: a late cancel would make it raise QueryCanceled.
            assert await c.fetchval("SELECT pg_sleep(0.002)::text") == ""
        assert await c.fetchval("SELECT pg_sleep(0.3)::text") == ""
        assert await c.fetchval("SELECT pg_backend_pid()") == pid
    assert sum(outcomes.values()) == 200


@pytest.mark.parametrize("timeout", [0, -1, 0.0, float("nan"), "1", True])
async def test_a_bad_timeout_is_refused_before_anything_is_sent(m: Any, timeout: Any) -> None:
    async with m.connection() as c:
        pid = await c.fetchval("SELECT pg_backend_pid()")
        await c.execute("SELECT 'the last statement sent'")
        for method in METHODS:
            with pytest.raises(ConfigError) as info:
                await getattr(c, method)("SELECT 'never sent'", timeout=timeout)
            assert info.value.field == "timeout"
            assert str(info.value).startswith("timeout: ")
        assert await _session(m, pid) == ("idle", "SELECT 'the last statement sent'")


async def test_server_side_statement_timeout_stays_query_canceled(m: Any) -> None:
    async with m.connection() as c:
        await c.execute("SET statement_timeout = '100ms'")
        try:
            for method in METHODS:
                for timeout in (None, 30):
                    with pytest.raises(errors.QueryCanceled) as info:
                        await getattr(c, method)(SLOW, timeout=timeout)
                    assert type(info.value) is errors.QueryCanceled
                    assert not isinstance(info.value, StatementTimeoutError)
        finally:
            await c.execute("RESET statement_timeout")
        assert await c.fetchval("SELECT 1") == 1
