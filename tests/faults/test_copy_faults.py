"""Data API faults: a COPY whose connection is lost while it runs (server restart).

The caller gets a ConnectionError; the COPY's transaction never committed, so nothing of it
is visible after the restart; the broken connection's slot goes back to the pool, which
recovers by itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pgconnector import ConnectionError
from tests.faults.conftest import FaultKit

pytestmark = pytest.mark.integration

GROUP = "Data API"

ROWS = 200_000


@pytest.mark.fault(GROUP, "COPY interrupted by a server restart ({call})")
@pytest.mark.parametrize("call", ["copy_records_to_table", "copy_in", "copy_out"])
async def test_copy_interrupted_by_a_restart(faults: FaultKit, call: str) -> None:
    """The server restarts (fast shutdown) in the middle of the COPY, driven from the COPY's
    own data (the source restarts it after its first rows; copy_out after its first chunk):
    ConnectionError, no row of it visible afterwards, the slot back in the pool, and the next
    borrow works."""
    server = faults.start_server()
    m = faults.manager(server, min_size=1, max_size=1, ping_after_idle=0)
    await m.connect()
    async with m.connection() as c:
        await c.execute("CREATE TABLE loaded (a int, b text)")
        await c.execute("CREATE TABLE source AS SELECT i AS a, 'x' AS b "
                        "FROM generate_series(1, 1000000) AS i")

    restarted: list[bool] = []

    def restart_once() -> None:
        if not restarted:
            restarted.append(True)
            server.restart("fast")

    def records() -> Iterator[tuple[int, str]]:
        for i in range(ROWS):
            if i == ROWS // 4:
                restart_once()
            yield (i, "row")

    def chunks() -> Iterator[bytes]:
        for i in range(0, ROWS, 1000):
            if i == ROWS // 4:
                restart_once()
            yield b"".join(b"%d\trow\n" % j for j in range(i, i + 1000))

    c = await m.get_client()
    with pytest.raises(ConnectionError):
        if call == "copy_records_to_table":
            await c.copy_records_to_table("loaded", records())
        elif call == "copy_in":
            await c.copy_in("COPY loaded FROM STDIN", chunks())
        else:
            got: Any = []
            async for chunk in c.copy_out("COPY source TO STDOUT"):
                got.append(chunk)
                restart_once()
    assert restarted
    await c.release()
    stats = m.get_pool_stats()
    assert stats.in_use == 0
    async with m.connection(timeout=10.0) as again:
        assert await again.fetchval("SELECT count(*) FROM loaded") == 0
        assert await again.fetchval("SELECT count(*) FROM source") == 1_000_000
    assert m.get_pool_stats().in_use == 0
