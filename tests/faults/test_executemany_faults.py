"""Data API faults: an executemany whose connection dies in the middle of its rows.

The call must raise ``ConnectionError`` (never hang, never report success), leave nothing of
its rows applied (its transaction never committed), and the pool must replace the connection:
the next borrow works, and the kit's audit finds nothing lost or leaked.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

import pgconnector
from tests.faults.conftest import FaultKit

pytestmark = pytest.mark.integration

GROUP = "Data API"


def _terminate_when_sleeping(server: object, pid: int, done: list[str]) -> None:
    """Terminate session ``pid`` once it sleeps in the long row (pg_stat_activity, read with
    psql: not through the library under test). Polls a condition, with a deadline."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        killed = server.admin_execute(  # type: ignore[attr-defined]
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE pid = {pid} AND wait_event = 'PgSleep'"
        )
        if int(killed) == 1:
            done.append("terminated")
            return
        time.sleep(0.02)
    done.append("never saw the row sleeping")


@pytest.mark.fault(GROUP, "executemany: its session terminated mid-call")
async def test_executemany_session_terminated_mid_call(faults: FaultKit) -> None:
    """2,000 rows, the 1,501st of which sleeps; the session is terminated while it does: the
    call raises ConnectionError (AdminShutdown where the driver passes the server's message
    on: not libpq in pipeline mode), none of its rows is applied (the earlier
    ones were already executed, but not committed), and the next borrow gets a working
    connection; nothing lost or leaked."""
    server = faults.pg_server.server
    if server is None:
        pytest.skip("needs the embedded server to terminate a session")
    m = faults.manager(min_size=1, max_size=2)
    await m.connect()
    table = f"emf_{uuid.uuid4().hex[:12]}"
    rows = [(i, 60.0 if i == 1500 else 0.0) for i in range(2000)]
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    try:
        done: list[str] = []
        async with m.connection() as c:
            pid = int(await c.fetchval("SELECT pg_backend_pid()"))
            killer = threading.Thread(
                target=_terminate_when_sleeping, args=(server, pid, done), daemon=True
            )
            killer.start()
            started = time.monotonic()
            with pytest.raises(pgconnector.ConnectionError) as info:
                await c.executemany(
                    f"INSERT INTO {table} SELECT $1::int FROM pg_sleep($2)", rows
                )
            took = time.monotonic() - started
            killer.join(timeout=35.0)
        assert done == ["terminated"]
        if faults.backend != "psycopg":
            assert isinstance(info.value, pgconnector.errors.AdminShutdown)
        # else libpq in pipeline mode reports only "server closed the connection
        # unexpectedly": the server's FATAL message is lost, and with it the SQLSTATE.
        async with m.connection() as c:
            assert await c.fetchval(f"SELECT count(*) FROM {table}") == 0
            assert await c.fetchval("SELECT pg_backend_pid()") != pid
        stats = m.get_pool_stats()
        assert (stats.in_use, stats.waiting) == (0, 0)
        faults.record(raised_after_s=round(took, 3))
    finally:
        async with m.connection() as c:
            await c.execute(f"DROP TABLE {table}")
