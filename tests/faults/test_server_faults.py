"""Server faults: restarts, a server that is down, sessions killed under the pool.

The pool must recover by itself (same manager), refill to ``min_size`` with live sessions
(counted on the server), never hand a dead connection out twice, and while the server is down
fail its waiters fast with the last connect error.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pgconnector import ConnectionError, PoolTimeoutError
from tests.backends.helpers import record_events, removal_reasons, wait_until
from tests.faults.conftest import FaultKit, borrow_ids, borrow_many

pytestmark = pytest.mark.integration

GROUP = "Server faults"


async def _refilled(faults: FaultKit, m: Any, server: Any, minimum: int) -> float:
    """Wait until the pool holds ``minimum`` connections and the server sees as many live
    sessions of ours; returns how long that took."""
    return await wait_until(
        lambda: m.get_pool_stats().total >= minimum
        and faults.server_sessions(server) >= minimum,
        timeout=20.0,
    )


@pytest.mark.fault(GROUP, "Server restart ({shutdown} shutdown), ping_after_idle=0")
@pytest.mark.parametrize("shutdown", ["fast", "immediate"])
async def test_restart_no_dead_connection_is_handed_out(
    faults: FaultKit, shutdown: str
) -> None:
    """Four borrowers right after the restart all succeed on new connections; the pool is
    back to min_size live sessions on the server."""
    own_server = faults.start_server()
    m = faults.manager(own_server, min_size=2, max_size=4, ping_after_idle=0)
    events = record_events(m)
    await m.connect()
    before = await borrow_ids(m, 2)
    own_server.restart(shutdown)
    up = time.monotonic()
    # Every borrower from now on gets a working connection: the dead idle ones are pinged,
    # dropped and replaced before anyone sees them.
    seen = await borrow_many(m, 4)
    assert [b.error for b in seen] == [None] * 4
    assert all(b.value == 1 for b in seen)
    recovered = max(b.ended for b in seen) - up
    assert not {b.connection_id for b in seen} & before
    refill = await _refilled(faults, m, own_server, 2)
    assert (await m.health_check()).connected
    assert not [e for e in events if e.name == "error" and e.connection_id in before]
    faults.record(recovered_s=round(recovered, 3), refilled_s=round(refill, 3))


@pytest.mark.fault(GROUP, "Server restart, default ping_after_idle, idle past it")
async def test_restart_default_ping_after_idle(faults: FaultKit) -> None:
    """With the default ping_after_idle (1 s), idle connections older than that are pinged and
    replaced: no borrower sees one dead; refilled to min_size."""
    own_server = faults.start_server()
    m = faults.manager(own_server, min_size=2, max_size=4)
    ping_after = m.config.ping_after_idle
    assert ping_after is not None
    await m.connect()
    before = await borrow_ids(m, 2)
    own_server.restart("fast")
    # The idle connections must be idle for longer than ping_after_idle: that time must pass.
    await asyncio.sleep(ping_after + 0.1)
    seen = await borrow_many(m, 4)
    assert [b.error for b in seen] == [None] * 4
    assert not {b.connection_id for b in seen} & before
    refill = await _refilled(faults, m, own_server, 2)
    faults.record(refilled_s=round(refill, 3))


@pytest.mark.fault(GROUP, "Server down at start-up, then up")
async def test_down_at_start_then_up(faults: FaultKit) -> None:
    """connect() fails within connect_timeout with the driver error as cause; health check says
    down; once the server is up, the same manager connects and is healthy."""
    own_server = faults.start_server()
    own_server.stop()
    m = faults.manager(own_server, min_size=1, connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        await m.connect()
    failed_in = time.monotonic() - started
    assert failed_in < 3.0  # one connect_timeout, not more
    assert info.value.cause is not None
    assert "could not connect to PostgreSQL" in str(info.value)
    status = await m.health_check()
    assert status.connected is False
    assert status.error
    own_server.start()
    up = time.monotonic()
    await m.connect()
    status = await m.health_check()
    assert status.connected is True, status.error
    assert m.is_initialized()
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1
    faults.record(failed_in_s=round(failed_in, 3), recovered_s=round(time.monotonic() - up, 3))


@pytest.mark.fault(GROUP, "Every session killed (pg_terminate_backend), ping_after_idle=0")
async def test_every_session_killed_next_borrowers_get_working_ones(
    faults: FaultKit, pg_server: Any
) -> None:
    """All three pooled sessions terminated on the server: the next three borrowers get new,
    working connections; refilled to min_size."""
    if pg_server.server is None:
        pytest.skip("needs the embedded server to terminate sessions")
    m = faults.manager(min_size=3, max_size=3, ping_after_idle=0)
    events = record_events(m)
    await m.connect()
    before = await borrow_ids(m, 3)
    assert pg_server.server.terminate_backends(faults.application_name) == 3
    seen = await borrow_many(m, 3)
    assert [b.error for b in seen] == [None] * 3
    assert not {b.connection_id for b in seen} & before
    refill = await _refilled(faults, m, pg_server.server, 3)
    assert sorted(removal_reasons(events)).count(None) == 0  # every close has its reason
    faults.record(refilled_s=round(refill, 3))


@pytest.mark.fault(GROUP, "Every session killed, no ping: a broken connection is handed out once")
async def test_broken_connection_is_never_handed_out_twice(
    faults: FaultKit, pg_server: Any
) -> None:
    """Without pinging, each killed connection fails at most one statement (ConnectionError)
    and is never handed out again; then every borrow works and the pool refills."""
    if pg_server.server is None:
        pytest.skip("needs the embedded server to terminate sessions")
    m = faults.manager(min_size=3, max_size=3, ping_after_idle=None)
    await m.connect()
    before = await borrow_ids(m, 3)
    assert pg_server.server.terminate_backends(faults.application_name) == 3
    broken: list[int] = []
    good = 0
    for _ in range(12):
        async with m.connection() as c:
            assert c.connection_id not in broken, "a broken connection was handed out again"
            try:
                value = await c.fetchval("SELECT 1")
            except ConnectionError as exc:
                error: ConnectionError | None = exc
            else:
                error = None
            if error is None:
                assert value == 1
                good += 1
            else:
                assert error.cause is not None
                assert c.connection_id in before
                broken.append(c.connection_id)
    assert len(broken) <= 3
    assert good == 12 - len(broken)
    refill = await _refilled(faults, m, pg_server.server, 3)
    faults.record(broken_handed_out=len(broken), refilled_s=round(refill, 3))


@pytest.mark.fault(GROUP, "Borrowed sessions killed: still counted against max_size until released")
async def test_killed_borrowed_sessions_still_count_against_max_size(
    faults: FaultKit, pg_server: Any
) -> None:
    """Both connections of a pool of two are borrowed when the server ends their sessions:
    while the broken clients are held, no third borrow is granted (it times out), in_use stays
    at max_size and total never exceeds it; once they are released, two borrowers are served
    again, on new connections."""
    if pg_server.server is None:
        pytest.skip("needs the embedded server to terminate sessions")
    m = faults.manager(min_size=1, max_size=2, ping_after_idle=None)
    await m.connect()
    held = [await m.get_client() for _ in range(2)]
    for c in held:
        assert await c.fetchval("SELECT 1") == 1
    assert pg_server.server.terminate_backends(faults.application_name) == 2
    await wait_until(lambda: faults.server_sessions() == 0)
    for c in held:  # the driver has seen each connection fail
        with pytest.raises(ConnectionError):
            await c.fetchval("SELECT 1")
    with pytest.raises(PoolTimeoutError):
        await m.get_client(timeout=1.0)
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting, stats.max_size) == (2, 0, 2)
    assert stats.total <= stats.max_size
    assert stats.connections_opened - stats.connections_closed == stats.total
    for c in held:
        await c.release()
    after = await borrow_ids(m, 2)
    assert not after & {c.connection_id for c in held}
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting) == (0, 0)
    assert stats.total <= stats.max_size
    assert stats.connections_opened - stats.connections_closed == stats.total


@pytest.mark.fault(GROUP, "Session killed: every later statement on the client, ConnectionError")
async def test_statements_after_a_connection_error_raise_connection_error(
    faults: FaultKit, pg_server: Any
) -> None:
    """A borrowed session is terminated: the statement that finds out raises ConnectionError,
    and so does every later statement on the same client (execute, fetch, fetchrow, fetchval,
    a transaction's BEGIN), never a driver exception; after its release the pool serves a
    working connection."""
    if pg_server.server is None:
        pytest.skip("needs the embedded server to terminate sessions")
    m = faults.manager(min_size=1, max_size=2, ping_after_idle=None)
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1
        assert pg_server.server.terminate_backends(faults.application_name) == 1
        await wait_until(lambda: faults.server_sessions() == 0)
        with pytest.raises(ConnectionError):
            await c.fetchval("SELECT 1")
        later = [
            lambda: c.execute("SELECT 1"),
            lambda: c.execute("SELECT $1::int", 1),
            lambda: c.fetch("SELECT 1"),
            lambda: c.fetchrow("SELECT $1::int", 1),
            lambda: c.fetchval("SELECT 1"),
            lambda: c.fetchval("SELECT 1"),
        ]
        for statement in later:
            with pytest.raises(ConnectionError):  # pgconnector's, not the driver's
                await statement()
        with pytest.raises(ConnectionError):
            async with c.transaction():
                pass
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting) == (0, 0)


@pytest.mark.fault(GROUP, "Server down: waiters fail fast, first borrow after it is back")
async def test_outage_waiters_fail_fast_then_recover(faults: FaultKit) -> None:
    """Six waiters during an outage fail with the last connect error within seconds (acquire
    timeout 20 s); the first borrow after the restart succeeds at once; refilled."""
    own_server = faults.start_server()
    m = faults.manager(
        own_server,
        min_size=2,
        max_size=3,
        connect_timeout=1.0,
        acquire_timeout=20.0,
        ping_after_idle=0,
    )
    await m.connect()
    own_server.stop()
    seen = await borrow_many(m, 6)
    errors = [b.error for b in seen]
    assert all(isinstance(e, ConnectionError) for e in errors), errors
    assert not any(isinstance(e, PoolTimeoutError) for e in errors), errors
    assert all(e.cause is not None for e in errors if isinstance(e, ConnectionError))
    assert all("could not connect to PostgreSQL" in str(e) for e in errors)
    slowest = max(b.seconds for b in seen)
    assert slowest < 5.0  # a few connect timeouts at most, never acquire_timeout (20 s)
    status = await m.health_check(timeout=3.0)
    assert status.connected is False
    own_server.start()
    up = time.monotonic()
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1
    first = time.monotonic() - up
    assert first < 2.0  # no back-off sleep left over from the outage
    assert (await m.health_check()).connected
    refill = await _refilled(faults, m, own_server, 2)
    faults.record(
        slowest_failure_s=round(slowest, 3), first_borrow_s=round(first, 3),
        refilled_s=round(refill, 3),
    )
