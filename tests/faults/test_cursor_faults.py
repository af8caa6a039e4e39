"""Data API faults: a streaming cursor whose connection dies mid-stream.

The iteration raises ``pgconnector.ConnectionError``; the client is marked broken, so its
release discards the connection (the slot is not leaked: the pool's stats say so, and the
kit's audit counts the test's sessions on the server), and the next borrow works.
"""

from __future__ import annotations

import pytest

import pgconnector
from tests.faults.conftest import FaultKit

pytestmark = pytest.mark.integration

GROUP = "Data API"


@pytest.mark.fault(GROUP, "cursor whose session is killed mid-stream ({entered})")
@pytest.mark.parametrize("entered", [False, True], ids=["iterated", "async-with"])
async def test_cursor_connection_dies_mid_stream(faults: FaultKit, entered: bool) -> None:
    """The session streaming a cursor is terminated after its first chunk: the next fetch
    raises ConnectionError (after the rows already fetched), the slot comes back on release,
    and the next borrow streams again."""
    m = faults.manager(min_size=1, max_size=1, ping_after_idle=0)
    await m.connect()
    killer = faults.manager(min_size=1, max_size=1)
    await killer.connect()
    sql = "SELECT g AS n FROM generate_series(1, $1) AS g"
    seen = 0
    with pytest.raises(pgconnector.ConnectionError):
        async with m.connection() as c:
            pid = await c.fetchval("SELECT pg_backend_pid()")
            cursor = c.cursor(sql, 100_000, prefetch=100)

            async def consume() -> None:
                nonlocal seen
                async for row in cursor:
                    seen += 1
                    assert row["n"] == seen
                    if seen == 1:
                        async with killer.connection() as k:
                            assert await k.fetchval("SELECT pg_terminate_backend($1)", pid)

            if entered:
                async with cursor:
                    await consume()
            else:
                await consume()
    assert seen == 100  # the first chunk, then the loss
    stats = m.get_pool_stats()
    assert stats.in_use == 0
    async with m.connection(timeout=5) as c:
        assert [r["n"] async for r in c.cursor(sql, 250, prefetch=100)] == list(range(1, 251))
    assert m.get_pool_stats().in_use == 0


@pytest.mark.fault("Bad input", "cursor: prefetch < 1, timeout <= 0")
async def test_cursor_bad_arguments(faults: FaultKit) -> None:
    """ConfigError naming the argument, raised by cursor() itself: nothing is sent, no
    transaction is opened, and the client goes on."""
    m = faults.manager(min_size=1, max_size=1)
    await m.connect()
    async with m.connection() as c:
        for kwargs, field in (({"prefetch": 0}, "prefetch"), ({"prefetch": -1}, "prefetch"),
                              ({"timeout": 0}, "timeout"), ({"timeout": -2.5}, "timeout")):
            with pytest.raises(pgconnector.ConfigError) as info:
                c.cursor("SELECT 1", **kwargs)
            assert info.value.field == field
        assert await c.fetchval("SELECT count(*) FROM pg_cursors WHERE name <> ''") == 0
        assert [r[0] async for r in c.cursor("SELECT 1")] == [1]


@pytest.mark.fault("Bad input", "cursor left unfinished when its client is released")
async def test_cursor_left_open_at_release(faults: FaultKit) -> None:
    """The cursor is closed and its transaction ended by the release; the next borrower gets
    the same connection with no cursor and no transaction; the abandoned cursor raises
    ClientReleasedError if it is used again."""
    m = faults.manager(min_size=1, max_size=1)
    await m.connect()
    c = await m.get_client()
    pid = await c.fetchval("SELECT pg_backend_pid()")
    cursor = c.cursor("SELECT g FROM generate_series(1, 1000) AS g", prefetch=10)
    assert (await cursor.__anext__())[0] == 1
    await c.release()
    with pytest.raises(pgconnector.ClientReleasedError):
        await cursor.__anext__()
    watcher = faults.manager(min_size=1, max_size=1)
    await watcher.connect()
    async with watcher.connection() as other:
        state = "SELECT state FROM pg_stat_activity WHERE pid = $1"
        assert await other.fetchval(state, pid) == "idle"  # not "idle in transaction"
    async with m.connection() as after:
        assert await after.fetchval("SELECT pg_backend_pid()") == pid
        assert await after.fetchval("SELECT count(*) FROM pg_cursors WHERE name <> ''") == 0
    assert m.get_pool_stats().in_use == 0
