"""Statements abandoned by their caller (``asyncio.wait_for``, ``task.cancel()``) while they
run: they must be cancelled on the server and be over before anything else is sent on the
connection — the caller's next statement, the ``ROLLBACK`` of a transaction block, the release
— so that a connection never carries two statements at once, the cancelled task ends at once,
and the pool's books stay right.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest

from tests.backends.helpers import wait_until
from tests.faults.conftest import FaultKit

pytestmark = pytest.mark.integration

GROUP = "Pool faults"

#: A query whose result is large (50,000 rows, about 5 MB), after a short pause.
BIG = (
    "SELECT g, repeat('x', 100) AS filler "
    "FROM (SELECT pg_sleep({pause})) s, generate_series(1, 50000) g"
)
#: The next statement on the same client: a result of its own, to tell it from the first's.
NEXT = "SELECT $1::bigint AS v, g FROM generate_series(1, 2000) g"


def _skip_sync(faults: FaultKit) -> None:
    if faults.mode == "sync":
        pytest.skip("threads cannot be cancelled; a sync statement always runs to its end")


def _active(faults: FaultKit, like: str = "%") -> int:
    """Statements of this test running on the server (as pg_stat_activity says, asked with
    psql, not through the library under test)."""
    server = faults.pg_server.server
    if server is None:
        pytest.skip("needs the embedded server to watch its sessions")
    return int(
        server.admin_execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            f"AND application_name = '{faults.application_name}' AND query LIKE '{like}'"
        )
    )


def _pool_idle(m: Any) -> tuple[int, int]:
    """(size, idle) as the backend's own pool sees them, not the core's counters."""
    backend = m.get_pool().backend
    core = getattr(backend, "core", None)
    if core is not None:  # pgconnector's generic pool (pg8000)
        return core.state.size, core.state.idle_count
    native = backend.native
    if hasattr(native, "get_idle_size"):  # asyncpg.Pool
        return native.get_size(), native.get_idle_size()
    stats = native.get_stats()  # psycopg_pool
    return stats["pool_size"], stats["pool_available"]


def _books_agree(m: Any) -> bool:
    stats = m.get_pool_stats()
    size, idle = _pool_idle(m)
    return (stats.in_use, stats.waiting, stats.total, stats.idle) == (0, 0, size, idle)


@pytest.mark.fault(GROUP, "Statement abandoned by wait_for, then the next one on the same client")
async def test_statement_abandoned_by_wait_for_then_next_statement(faults: FaultKit) -> None:
    """A query returning 50,000 rows abandoned by asyncio.wait_for — while the server still
    computes it, and then at whatever point short timeouts land, streaming included — each
    time followed by another statement on the same client: that one returns its own, right
    result (never the abandoned one's rows, never hangs, never hit by a late cancel), no
    statement of the test is left running on the server, and the pool's books agree with
    the backend's own pool."""
    _skip_sync(faults)
    m = faults.manager(min_size=1, max_size=1, acquire_timeout=5.0)
    await m.connect()
    slowest = 0.0
    async with m.connection() as c:
        # Abandoned for certain while it runs on the server (seen there): cancelled there.
        first = asyncio.ensure_future(asyncio.wait_for(c.fetch(BIG.format(pause=30)), 60))
        await wait_until(lambda: _active(faults, "%pg_sleep(30)%") == 1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # Then wherever these timeouts land: before the statement is sent, in the pause, in
        # the middle of the rows (or after the end, on a fast machine: nothing abandoned).
        rounds = [0.0, 0.001, 0.005, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2]
        abandoned = 1
        for number, timeout in enumerate([None, *rounds]):
            if timeout is not None:
                try:
                    await asyncio.wait_for(c.fetch(BIG.format(pause=0.05)), timeout)
                except asyncio.TimeoutError:
                    abandoned += 1
            value = 1000 + number
            started = time.monotonic()
            rows = await asyncio.wait_for(c.fetch(NEXT, value), 30)
            slowest = max(slowest, time.monotonic() - started)
            assert len(rows) == 2000 and all(row[0] == value for row in rows), rows[:2]
    await wait_until(lambda: _active(faults) == 0)
    await wait_until(lambda: _books_agree(m))
    async with m.connection(timeout=5.0) as c:
        assert await c.fetchval("SELECT 1") == 1
    assert abandoned >= 2  # a timeout of 0 always abandons it
    faults.record(abandoned=abandoned, slowest_next_statement_s=round(slowest, 3))


@pytest.mark.fault(GROUP, "Task cancelled mid-statement inside transaction()")
async def test_task_cancelled_mid_statement_in_transaction(faults: FaultKit) -> None:
    """A task cancelled while a long query (30 s of pg_sleep, then 50,000 rows) runs inside
    ``async with client.transaction()``, after an INSERT: the task ends with CancelledError
    at once (the statement is cancelled on the server; the block's ROLLBACK waits for it
    instead of running beside it), nothing is committed, no statement of the test is left
    running, the next borrow works, and the pool's books agree with the backend's own pool."""
    _skip_sync(faults)
    m = faults.manager(min_size=1, max_size=1, acquire_timeout=5.0)
    await m.connect()
    table = f"pgc_abandoned_{secrets.token_hex(4)}"
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {table} (id int)")
    slowest = 0.0
    try:
        for attempt in range(3):
            started = asyncio.Event()

            async def work(attempt: int = attempt, started: asyncio.Event = started) -> None:
                async with m.connection() as c, c.transaction():
                    await c.execute(f"INSERT INTO {table} VALUES ($1)", attempt)
                    started.set()
                    await c.fetch(BIG.format(pause=30))

            task = asyncio.create_task(work())
            await started.wait()
            await wait_until(lambda: _active(faults, "%pg_sleep(30)%") == 1)
            task.cancel()
            begun = time.monotonic()
            # Far less than the 30 s the statement would run if it were not cancelled there.
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)
            ended = time.monotonic() - begun
            await wait_until(lambda: _active(faults) == 0)
            async with m.connection(timeout=5.0) as c:
                assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            await wait_until(lambda: _books_agree(m))
            slowest = max(slowest, ended)
    finally:
        async with m.connection(timeout=5.0) as c:
            await c.execute(f"DROP TABLE {table}")
    faults.record(slowest_task_end_s=round(slowest, 3))
