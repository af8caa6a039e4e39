"""Data API faults: a LISTEN stream whose connection is lost (server restart, session killed).

The stream must reconnect by itself, LISTEN again, count the reconnect, call ``on_reconnect``,
and receive what is sent afterwards; leaving the block leaves no session behind (the kit's
audit counts the test's sessions on the server).
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

import pytest

from tests.facade import StreamFacade
from tests.faults.conftest import FaultKit

pytestmark = pytest.mark.integration

GROUP = "Data API"


async def _until_reconnected(stream: StreamFacade, reconnects: int) -> float:
    """Drive the stream (its ``get`` notices the loss and reconnects) until it has reconnected
    ``reconnects`` times; returns how long that took. Nothing is sent meanwhile, so every
    ``get`` ends in TimeoutError."""
    started = time.monotonic()
    while stream.reconnects < reconnects:
        assert time.monotonic() - started < 30.0, "the stream did not reconnect"
        with suppress(TimeoutError):
            await stream.get(timeout=0.1)
    return time.monotonic() - started


@pytest.mark.fault(GROUP, "LISTEN stream across a server restart ({shutdown} shutdown)")
@pytest.mark.parametrize("shutdown", ["fast", "immediate"])
async def test_listen_stream_survives_a_restart(faults: FaultKit, shutdown: str) -> None:
    """The stream reconnects by itself, counts it, calls on_reconnect with the stream, and
    receives the notifications sent after the restart, in order."""
    server = faults.start_server()
    # ping_after_idle=0: the pool's own idle connection died in the restart too.
    m = faults.manager(server, min_size=1, max_size=2, ping_after_idle=0)
    await m.connect()
    calls: list[Any] = []
    async with m.listen("events", on_reconnect=calls.append) as stream:
        async with m.connection() as c:
            await c.notify("events", "before")
        assert (await stream.get(timeout=10)).payload == "before"
        server.restart(shutdown)
        took = await _until_reconnected(stream, 1)
        assert calls == [stream.stream]
        async with m.connection() as c:
            for i in range(3):
                await c.notify("events", f"after {i}")
        assert [n.payload for n in await stream.take(3)] == ["after 0", "after 1", "after 2"]
        assert stream.reconnects == 1
    faults.record(reconnected_s=round(took, 3))


@pytest.mark.fault(GROUP, "LISTEN stream whose session is killed (pg_terminate_backend)")
async def test_listen_stream_survives_its_session_killed(faults: FaultKit) -> None:
    """The stream's own session terminated on the server: it reconnects, calls on_reconnect
    (an ``async def`` on the async manager, awaited), and receives what is sent next."""
    server = faults.start_server()
    m = faults.manager(server, min_size=1, max_size=1)
    await m.connect()
    calls: list[int] = []
    if m.mode == "async":
        async def on_reconnect(s: Any) -> None:
            calls.append(s.reconnects)
    else:
        def on_reconnect(s: Any) -> None:  # type: ignore[misc]
            calls.append(s.reconnects)
    async with m.listen("Kill Me", on_reconnect=on_reconnect) as stream:
        async with m.connection() as c:
            killed = await c.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = $1 AND query LIKE 'LISTEN%'",
                faults.application_name,
            )
        assert killed == 1
        took = await _until_reconnected(stream, 1)
        assert calls == [1]
        async with m.connection() as c:
            await c.notify("Kill Me", "after")
        got = await stream.get(timeout=10)
        assert (got.channel, got.payload) == ("Kill Me", "after")
    faults.record(reconnected_s=round(took, 3))
