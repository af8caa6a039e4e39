"""Transactions and data: a connection comes back clean, and the pool never commits a write on
a caller's behalf.

What a release resets (``reset_on_release``):

* ``"transaction"`` (the default): an open or aborted transaction is rolled back; nothing else
  is touched — session settings, temporary tables, ``LISTEN``, advisory locks and prepared
  statements stay with the connection, as they would on a connection of one's own.
* ``"session"``: the same rollback, then ``DISCARD ALL`` in the same round trip, which also
  resets settings, drops temporary tables, unlistens, releases advisory locks and deallocates
  prepared statements.

A prepared (two-phase) transaction no longer belongs to the session once prepared: the pool
neither commits nor rolls it back; that is the transaction manager's decision.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pgconnector import ConnectionError
from tests.backends.helpers import advisory_locks_held, check_session_reset
from tests.faults.conftest import FaultKit

pytestmark = pytest.mark.integration

GROUP = "Transactions and data"


@pytest.fixture
async def table(faults: FaultKit) -> AsyncIterator[str]:
    """A fresh table on the shared server, dropped afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    m = faults.manager(min_size=0, max_size=1)
    await m.connect()
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    yield name
    async with m.connection() as c:
        await c.execute(f"DROP TABLE {name}")


async def _rows(m: Any, table: str) -> int:
    async with m.connection() as c:
        return int(await c.fetchval(f"SELECT count(*) FROM {table}"))


@pytest.mark.fault(GROUP, "Released inside an open transaction")
async def test_released_inside_open_transaction(faults: FaultKit, table: str) -> None:
    """The write is rolled back (never committed), the transaction-local setting is gone, and
    the next borrower of the same server connection is outside any transaction."""
    m = faults.manager(min_size=1, max_size=1)
    await m.connect()
    c = await m.get_client()
    first = c.connection_id
    await c.execute("BEGIN")
    await c.execute(f"INSERT INTO {table} VALUES (1)")
    await c.execute("SET LOCAL statement_timeout = '1234ms'")
    await c.release()
    async with m.connection() as again:
        assert again.connection_id == first  # the same server connection, cleaned
        assert await again.fetchval("SELECT txid_current_if_assigned()") is None
        assert await again.fetchval("SHOW statement_timeout") != "1234ms"
    assert await _rows(m, table) == 0


@pytest.mark.fault(GROUP, "Released inside an aborted transaction")
async def test_released_inside_aborted_transaction(faults: FaultKit, table: str) -> None:
    """After an error inside a transaction, the release rolls it back: the next borrower can
    run statements, and the write before the error was never committed."""
    m = faults.manager(min_size=1, max_size=1)
    await m.connect()
    c = await m.get_client()
    await c.execute("BEGIN")
    await c.execute(f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(Exception, match="division by zero"):
        await c.fetchval("SELECT 1/0")
    await c.release()
    async with m.connection() as again:
        assert await again.fetchval("SELECT 1") == 1
    assert await _rows(m, table) == 0


@pytest.mark.fault(GROUP, "Released after PREPARE TRANSACTION (two-phase)")
async def test_released_after_prepare_transaction(faults: FaultKit) -> None:
    """The pool neither commits nor rolls back a prepared transaction: its write stays
    invisible and the transaction stays prepared; the connection itself is clean."""
    server = faults.start_server(settings={"max_prepared_transactions": "4"})
    m = faults.manager(server, min_size=1, max_size=1)
    await m.connect()
    gid = f"pgc-{secrets.token_hex(4)}"
    async with m.connection() as c:
        await c.execute("CREATE TABLE IF NOT EXISTS t2pc (id int)")
        await c.execute("BEGIN")
        await c.execute("INSERT INTO t2pc VALUES (1)")
        await c.execute(f"PREPARE TRANSACTION '{gid}'")
    async with m.connection() as c:
        assert await c.fetchval("SELECT txid_current_if_assigned()") is None
        assert await c.fetchval("SELECT count(*) FROM t2pc") == 0
        prepared = await c.fetchval("SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", gid)
        assert prepared == 1
        await c.execute(f"ROLLBACK PREPARED '{gid}'")
        assert await c.fetchval("SELECT count(*) FROM t2pc") == 0


@pytest.mark.fault(GROUP, "Session state left behind, reset_on_release=\"transaction\"")
async def test_session_state_kept_by_default(faults: FaultKit) -> None:
    """By default only the transaction is reset: a setting, a temporary table, a LISTEN and an
    advisory lock made outside a transaction stay with the connection (documented), so the
    next borrower of that connection sees them."""
    m = faults.manager(min_size=1, max_size=1)
    await m.connect()
    async with m.connection() as c:
        await c.execute("SET work_mem = '7MB'")
        await c.execute("CREATE TEMP TABLE pgc_tmp (x int)")
        await c.execute("LISTEN pgc_channel")
        await c.fetchval("SELECT pg_advisory_lock(4242)")
    async with m.connection() as c:
        assert await c.fetchval("SHOW work_mem") == "7MB"
        assert await c.fetchval("SELECT to_regclass('pg_temp.pgc_tmp')") is not None
        assert await c.fetchval("SELECT count(*) FROM pg_listening_channels()") == 1
        assert await advisory_locks_held(c) == 1
        await c.fetchval("SELECT pg_advisory_unlock(4242)")


@pytest.mark.fault(GROUP, "Session state left behind, reset_on_release=\"session\"")
async def test_session_state_reset(faults: FaultKit) -> None:
    """With reset_on_release="session", a setting, a LISTEN, a temporary table, an advisory
    lock and a prepared statement left behind (outside and inside a transaction) are all gone
    for the next borrower."""

    async def check(c: Any) -> None:
        assert await advisory_locks_held(c) == 0
        assert await c.fetchval(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = 'pgc_stmt'"
        ) == 0

    await check_session_reset(faults.manager, also_check=check)


@pytest.mark.fault(GROUP, "Connection lost inside a transaction")
async def test_connection_lost_inside_transaction(
    faults: FaultKit, table: str, pg_server: Any
) -> None:
    """A session terminated after an INSERT inside a transaction: the caller gets a
    ConnectionError, the write is not committed, and the next borrower gets a working
    connection."""
    if pg_server.server is None:
        pytest.skip("needs the embedded server to terminate sessions")
    m = faults.manager(min_size=1, max_size=1)
    await m.connect()
    async with m.connection() as c:
        await c.execute("BEGIN")
        await c.execute(f"INSERT INTO {table} VALUES (1)")
        pid = await c.fetchval("SELECT pg_backend_pid()")
        pg_server.server.admin_execute(f"SELECT pg_terminate_backend({int(pid)}, 5000)")
        with pytest.raises(ConnectionError):
            await c.execute("COMMIT")
    assert await _rows(m, table) == 0


@pytest.mark.fault(GROUP, "disconnect() forces a connection inside a transaction")
async def test_forced_close_commits_nothing(faults: FaultKit, table: str) -> None:
    """A borrower still inside a transaction when disconnect() runs out of patience: its
    write is not committed."""
    m = faults.manager(min_size=1, max_size=1)
    await m.connect()
    held = await m.get_client()
    await held.execute("BEGIN")
    await held.execute(f"INSERT INTO {table} VALUES (1)")
    await m.disconnect(timeout=0.2)
    assert held.released
    await m.connect()
    assert await _rows(m, table) == 0
