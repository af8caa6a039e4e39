"""Pool faults: exhaustion, disconnect under load, misuse of clients, raising listeners and
cancellation. Whatever happens, no slot is lost, the books stay exact and ``disconnect()``
returns within its timeout.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import pgconnector
from pgconnector import ClientReleasedError, ConfigError, PoolEvent, PoolTimeoutError
from tests.backends.helpers import wait_until
from tests.faults.conftest import FaultKit, borrow_many

pytestmark = pytest.mark.integration

GROUP = "Pool faults"


async def _wait_for_waiting(m: Any, count: int, timeout: float = 20.0) -> None:
    """Until ``count`` borrowers are queued (the pool's own gauge says so), or fail."""
    deadline = time.monotonic() + timeout
    while m.get_pool_stats().waiting < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} waiting, stats: {m.get_pool_stats()}")
        await asyncio.sleep(0.005)


@pytest.mark.fault(GROUP, "Exhaustion: 20 waiters on a full pool time out")
async def test_exhaustion_many_waiters_time_out_precisely(faults: FaultKit) -> None:
    """With both connections held, 20 borrowers each get PoolTimeoutError after
    acquire_timeout (0.5 s), not before; the counters say 20 timeouts, nobody left waiting,
    and the held connections still work."""
    m = faults.manager(min_size=0, max_size=2, acquire_timeout=0.5)
    await m.connect()
    held = [await m.get_client() for _ in range(2)]
    seen = await borrow_many(m, 20)
    assert all(isinstance(b.error, PoolTimeoutError) for b in seen), [b.error for b in seen]
    waits = sorted(b.seconds for b in seen)
    assert waits[0] >= 0.49, waits  # never before the timeout
    assert waits[-1] < 3.0, waits  # and not long after it
    stats = m.get_pool_stats()
    assert (stats.timeouts, stats.waiting, stats.in_use, stats.acquires) == (20, 0, 2, 2)
    for c in held:
        assert await c.fetchval("SELECT 1") == 1
        await c.release()
    assert m.get_pool_stats().in_use == 0
    faults.record(earliest_timeout_s=round(waits[0], 3), latest_timeout_s=round(waits[-1], 3))


@pytest.mark.fault(GROUP, "Exhaustion: waiters served in arrival order (FIFO)")
async def test_waiters_are_served_in_arrival_order(faults: FaultKit) -> None:
    """Eight borrowers queued one after the other on a pool of one connection are served in
    the order they arrived."""
    # One connection: each hand-off follows the previous borrower's release, so the order in
    # which borrowers record themselves is the order in which the pool served them.
    m = faults.manager(min_size=0, max_size=1, acquire_timeout=20.0)
    await m.connect()
    held = await m.get_client()
    n = 8
    served: list[int] = []
    if m.mode == "sync":
        manager = m.manager

        def borrower(i: int) -> None:
            with manager.connection() as c:
                served.append(i)
                c.fetchval("SELECT 1")

        threads = []
        for i in range(n):
            t = threading.Thread(target=borrower, args=(i,))
            t.start()
            threads.append(t)
            await _wait_for_waiting(m, i + 1)
        await held.release()
        for t in threads:
            t.join(20)
    else:
        amanager = m.manager

        async def aborrower(i: int) -> None:
            async with amanager.connection() as c:
                served.append(i)
                await c.fetchval("SELECT 1")

        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(aborrower(i)))
            await _wait_for_waiting(m, i + 1)
        await held.release()
        await asyncio.gather(*tasks)
    assert served == list(range(n))
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting, stats.timeouts, stats.acquires) == (0, 0, 0, n + 1)


@pytest.mark.fault(GROUP, "disconnect() while connections are checked out")
async def test_disconnect_waits_then_forces_checked_out_connections(faults: FaultKit) -> None:
    """disconnect(timeout=0.5) with a connection borrowed (and inside a transaction) waits its
    grace period, then closes it anyway; the borrower's client is released, and its use raises
    ConnectionError."""
    m = faults.manager(min_size=1, max_size=2)
    await m.connect()
    held = await m.get_client()
    await held.execute("BEGIN")
    started = time.monotonic()
    await m.disconnect(timeout=0.5)
    waited = time.monotonic() - started
    assert 0.45 <= waited < 5.0  # the borrower got its grace period, and no more
    assert held.released is True
    await held.release()  # a no-op now, not an error
    # Taken away by disconnect(), not released by its borrower: the connection is lost.
    with pytest.raises(pgconnector.ConnectionError, match="disconnect"):
        await held.fetchval("SELECT 1")
    stats = m.get_pool_stats()
    assert stats.in_use == 0
    assert stats.connections_closed == stats.connections_opened
    faults.record(disconnect_s=round(waited, 3))


@pytest.mark.fault(GROUP, "Release twice; use after release; release to the wrong manager")
async def test_client_misuse(faults: FaultKit) -> None:
    """A second release() is a no-op counted once; a released client refuses every use with
    ClientReleasedError; giving a client to another manager's pool is refused with ConfigError
    and leaves the client usable and still counted by its own pool."""
    m = faults.manager(min_size=1, max_size=2)
    other = faults.manager(min_size=0, max_size=1)
    await m.connect()
    await other.connect()
    c = await m.get_client()
    with pytest.raises(ConfigError, match="another pool"):
        wrong = other.get_pool().release(c.client)
        if m.mode == "async":
            await wrong
    assert not c.released
    assert m.get_pool_stats().in_use == 1
    assert other.get_pool_stats().in_use == 0
    assert await c.fetchval("SELECT 1") == 1
    await c.release()
    await c.release()
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.acquires) == (0, 1)
    for call in (c.execute("SELECT 1"), c.fetch("SELECT 1"), c.fetchval("SELECT 1")):
        with pytest.raises(ClientReleasedError, match="released"):
            await call
    with pytest.raises(ClientReleasedError):
        _ = c.raw
    async with m.connection() as again:
        assert await again.fetchval("SELECT 2") == 2


async def _close_raw(c: Any) -> None:
    """Close a client's driver connection behind the pool's back, as user code with
    ``.raw`` might."""
    raw = c.raw
    closing = raw.terminate() if hasattr(raw, "terminate") else raw.close()
    if asyncio.iscoroutine(closing):
        await closing


@pytest.mark.fault(GROUP, "Driver connection closed through .raw while borrowed")
async def test_raw_connection_closed_while_borrowed(faults: FaultKit) -> None:
    """A borrower closes its driver connection itself (``client.raw``), on a pool with
    target_session_attrs (so a release reads the server's last reported state): the next
    statement raises ConnectionError, not a driver exception; the release gives the slot back
    without raising; the next borrower gets a working connection."""
    m = faults.manager(min_size=1, max_size=1, target_session_attrs="read-write")
    await m.connect()
    c = await m.get_client()
    assert await c.fetchval("SELECT 1") == 1
    await _close_raw(c)
    with pytest.raises(pgconnector.ConnectionError):
        await c.fetchval("SELECT 1")
    await c.release()
    async with m.connection(timeout=5.0) as c:
        assert await c.fetchval("SELECT 1") == 1
    # Closed without the statement: the release alone must cope.
    c = await m.get_client()
    await _close_raw(c)
    await c.release()
    async with m.connection(timeout=5.0) as c:
        assert await c.fetchval("SELECT 1") == 1
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting) == (0, 0)
    assert stats.connections_opened - stats.connections_closed == stats.total


@pytest.mark.fault(GROUP, "A listener that raises")
async def test_listener_that_raises_never_breaks_the_pool(
    faults: FaultKit, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener raising on every event is logged and reported as an error event; borrowing,
    releasing and disconnecting carry on as if it were not there."""
    m = faults.manager(min_size=1)
    errors: list[PoolEvent] = []

    def bad(event: PoolEvent) -> None:
        raise RuntimeError("listener bug")

    for name in ("connect", "acquire", "release", "remove"):
        m.add_listener(name, bad)
    m.add_listener("error", errors.append)
    await m.connect()
    for _ in range(3):
        async with m.connection() as c:
            assert await c.fetchval("SELECT 1") == 1
    assert errors and all(isinstance(e.error, RuntimeError) for e in errors)
    assert "listener bug" in caplog.text
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.acquires) == (0, 3)


def _sleepers(faults: FaultKit) -> int:
    """This test's sessions running the long statement, as the server sees them."""
    server = faults.pg_server.server
    if server is None:
        pytest.skip("needs the embedded server to watch its sessions")
    return int(
        server.admin_execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            f"AND application_name = '{faults.application_name}' "
            "AND query = 'SELECT pg_sleep(30)'"
        )
    )


class Interrupted(BaseException):
    """Stands for KeyboardInterrupt or SystemExit escaping a borrower's block."""


@pytest.mark.fault(GROUP, "Cancelled (or interrupted) while holding a connection mid-query")
async def test_cancelled_while_holding(faults: FaultKit) -> None:
    """A borrower stopped in the middle of a long statement inside a transaction (the task
    cancelled; in a thread, a BaseException escaping the block) gives its slot back: the
    statement does not go on running on the server, nothing is committed, and the next
    borrower gets a working connection at once."""
    m = faults.manager(min_size=1, max_size=1, acquire_timeout=5.0)
    await m.connect()
    async with m.connection() as c:
        await c.execute("CREATE TEMP TABLE IF NOT EXISTS pgc_probe (x int)")
    if m.mode == "async":
        started = asyncio.Event()

        async def borrower() -> None:
            async with m.connection() as c:
                await c.execute("BEGIN")
                started.set()
                await c.fetchval("SELECT pg_sleep(30)")

        task = asyncio.create_task(borrower())
        await started.wait()
        await wait_until(lambda: _sleepers(faults) == 1)  # the statement runs on the server
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(Interrupted):
            async with m.connection() as c:
                await c.execute("BEGIN")
                await c.execute("INSERT INTO pg_temp.pgc_probe VALUES (1)")
                raise Interrupted
    begun = time.monotonic()
    async with m.connection(timeout=5.0) as c:
        assert await c.fetchval("SELECT 1") == 1
        assert await c.fetchval("SELECT txid_current_if_assigned()") is None
    # Cancelled on the server too, not left running for 30 s (the audit would catch it).
    await wait_until(lambda: _sleepers(faults) == 0)
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting) == (0, 0)
    faults.record(next_borrow_s=round(time.monotonic() - begun, 3))


@pytest.mark.fault(GROUP, "Cancelled twice mid-query inside transaction()")
async def test_cancelled_twice_inside_transaction(faults: FaultKit) -> None:
    """A task cancelled twice while a long statement runs inside transaction() (say
    wait_for's timeout, then its parent's cancel), the second cancel landing while the first
    is being handled (the driver cancelling the statement on the server): the task ends with
    CancelledError, never a driver exception; its slot is free, and the next borrower gets a
    working connection. Tried with the second cancel 0 to 5 event-loop turns after the first.
    (A driver whose cancel request was interrupted drops the connection instead; the server
    then ends the statement when it notices, here within client_connection_check_interval.)"""
    if faults.mode == "sync":
        pytest.skip("threads cannot be cancelled")
    # A dropped connection's statement would otherwise run its 30 s on the server.
    checked = {"client_connection_check_interval": "100ms"}
    m = faults.manager(min_size=1, max_size=2, acquire_timeout=5.0, server_settings=checked)
    await m.connect()

    async def borrower(started: asyncio.Event) -> None:
        async with m.connection() as c, c.transaction():
            started.set()
            await c.fetchval("SELECT pg_sleep(30)")

    for gap in range(6):
        started = asyncio.Event()
        task = asyncio.create_task(borrower(started))
        await started.wait()
        await wait_until(lambda: _sleepers(faults) == 1)  # the statement runs on the server
        task.cancel()
        for _ in range(gap):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 20.0)
        stats = m.get_pool_stats()
        assert (stats.in_use, stats.waiting) == (0, 0), f"gap {gap}: {stats}"
        await wait_until(lambda: _sleepers(faults) == 0)
        async with m.connection(timeout=5.0) as c:
            assert await c.fetchval("SELECT 1") == 1
            assert await c.fetchval("SELECT txid_current_if_assigned()") is None


@pytest.mark.fault(GROUP, "Cancelled while waiting for a connection")
async def test_cancelled_while_waiting(faults: FaultKit) -> None:
    """Five tasks queued for the only connection are cancelled: nobody is left waiting, the
    connection goes to the next borrower when released, and disconnect() is prompt."""
    if faults.mode == "sync":
        pytest.skip("threads cannot be cancelled; a sync wait ends by its timeout (exhaustion)")
    m = faults.manager(min_size=0, max_size=1, acquire_timeout=30.0)
    await m.connect()
    held = await m.get_client()
    tasks = [asyncio.create_task(m.get_client()) for _ in range(5)]
    await _wait_for_waiting(m, 5)
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert m.get_pool_stats().waiting == 0
    await held.release()
    async with m.connection(timeout=2.0) as c:
        assert await c.fetchval("SELECT 1") == 1
    started = time.monotonic()
    await m.disconnect(timeout=10.0)
    assert time.monotonic() - started < 2.0
    stats = m.get_pool_stats()
    assert (stats.timeouts, stats.acquires) == (0, 2)


@pytest.mark.fault(GROUP, "Cancelled while releasing a connection")
async def test_cancelled_while_releasing(faults: FaultKit) -> None:
    """A task cancelled in the middle of giving back a connection that is inside a
    transaction (so the release has a ROLLBACK to send): the release still completes, the
    transaction is rolled back, and the slot is free for the next borrower."""
    if faults.mode == "sync":
        pytest.skip("threads cannot be cancelled; a sync release always runs to its end")
    m = faults.manager(min_size=1, max_size=1, acquire_timeout=5.0)
    await m.connect()
    manager = m.manager
    assert isinstance(manager, pgconnector.AsyncConnectionManager)

    async def borrower() -> None:
        c = await manager.get_client()
        await c.execute("BEGIN")
        await c.execute("SET LOCAL application_name = 'inside'")
        # Cancelled from the release event, fired inside release() before the ROLLBACK.
        this = asyncio.current_task()
        assert this is not None
        manager.add_listener("release", lambda event: this.cancel())
        await c.release()

    task = asyncio.create_task(borrower())
    with pytest.raises(asyncio.CancelledError):
        await task
    async with m.connection(timeout=3.0) as c:
        assert await c.fetchval("SELECT txid_current_if_assigned()") is None
        assert await c.fetchval("SHOW application_name") == faults.application_name
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting) == (0, 0)
    started = time.monotonic()
    await m.disconnect(timeout=10.0)
    assert time.monotonic() - started < 2.0


@pytest.mark.fault(GROUP, "Borrows cancelled at random moments, many times")
async def test_cancelled_at_random_moments_leak_nothing(faults: FaultKit) -> None:
    """Ten rounds of eight short borrows on a pool of two, half of them cancelled part-way
    (waiting, holding or releasing, wherever the cancel lands): afterwards both connections
    can be borrowed at once and work, and disconnect() is prompt."""
    if faults.mode == "sync":
        pytest.skip("threads cannot be cancelled")
    from tests.backends.helpers import cancel_half_the_borrows

    m = faults.manager(min_size=0, max_size=2, acquire_timeout=5.0)
    await m.connect()
    await cancel_half_the_borrows(m.manager)
    clients = [await m.get_client(timeout=5.0) for _ in range(2)]
    for c in clients:
        assert await c.fetchval("SELECT 1") == 1
        await c.release()
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting) == (0, 0)
    started = time.monotonic()
    await m.disconnect(timeout=10.0)
    assert time.monotonic() - started < 2.0


@pytest.mark.fault(GROUP, "disconnect() and connect() again, ten times, while borrowers run")
async def test_reconnect_while_borrowing_keeps_the_books(faults: FaultKit) -> None:
    """Six borrowers (threads or tasks) keep borrowing while the manager is disconnected (with
    no grace, or a short one) and connected again, ten times. No gauge is ever seen below
    zero; every borrower ends, each borrow with its statement's result, ConnectionError or
    PoolTimeoutError; afterwards nothing is in use or waiting, ``total`` equals opened minus
    closed, every closed pool's own gauges are back at zero, and a borrow works."""
    m = faults.manager(min_size=1, max_size=2, acquire_timeout=0.5)
    await m.connect()
    allowed = (pgconnector.ConnectionError, PoolTimeoutError)
    stop = threading.Event()
    lock = threading.Lock()
    outcomes: dict[str, int] = {}
    unexpected: list[BaseException] = []
    lowest = {"total": 0, "idle": 0, "in_use": 0, "waiting": 0}

    def note(outcome: BaseException | None) -> None:
        stats = m.get_pool_stats()
        with lock:
            for name in lowest:
                lowest[name] = min(lowest[name], getattr(stats, name))
            key = "ok" if outcome is None else type(outcome).__name__
            outcomes[key] = outcomes.get(key, 0) + 1
            if outcome is not None and not isinstance(outcome, allowed):
                unexpected.append(outcome)

    def successes() -> int:
        with lock:
            return outcomes.get("ok", 0)

    def served_beyond(count: int) -> Callable[[], bool]:
        return lambda: successes() >= count

    sql = "SELECT pg_sleep(0.01)"
    if m.mode == "sync":
        manager = m.manager
        assert isinstance(manager, pgconnector.ConnectionManager)

        def borrower() -> None:
            while not stop.is_set():
                try:
                    with manager.connection(timeout=0.5) as c:
                        c.fetchval(sql)
                    note(None)
                except Exception as exc:
                    note(exc)
                    stop.wait(0.005)  # not connected yet: no need to spin

        threads = [threading.Thread(target=borrower, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
    else:
        amanager = m.manager
        assert isinstance(amanager, pgconnector.AsyncConnectionManager)

        async def aborrower() -> None:
            while not stop.is_set():
                try:
                    async with amanager.connection(timeout=0.5) as c:
                        await c.fetchval(sql)
                    note(None)
                except Exception as exc:
                    note(exc)
                    await asyncio.sleep(0.005)  # not connected yet: let the loop run

        tasks = [asyncio.create_task(aborrower()) for _ in range(6)]
    pools = []
    try:
        for cycle in range(10):
            pools.append(m.get_pool())
            # Borrowers at work on this pool before it is taken away from them.
            await wait_until(served_beyond(successes() + 2), timeout=30.0)
            await m.disconnect(timeout=0.05 if cycle % 2 else 0.0)
            await m.connect()
    finally:
        stop.set()
        if m.mode == "sync":
            for t in threads:
                t.join(30.0)
            hanging = sum(t.is_alive() for t in threads)
        else:
            _, pending = await asyncio.wait(tasks, timeout=30.0)
            hanging = len(pending)
            for task in pending:
                task.cancel()
    assert hanging == 0, f"{hanging} borrower(s) still running 30 s after being told to stop"
    assert not unexpected, unexpected
    assert min(lowest.values()) == 0, lowest
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting) == (0, 0), stats
    assert stats.total == stats.connections_opened - stats.connections_closed, stats
    for pool in pools:
        old = pool.stats()
        assert (old.total, old.idle, old.in_use, old.waiting) == (0, 0, 0, 0), old
    async with m.connection(timeout=5.0) as c:
        assert await c.fetchval("SELECT 1") == 1
    faults.record(cycles=len(pools), **{f"borrows_{k}": v for k, v in sorted(outcomes.items())})


@pytest.mark.fault(GROUP, "disconnect() while a borrower runs a long statement")
async def test_disconnect_cancels_a_running_statement(faults: FaultKit) -> None:
    """disconnect(timeout=0.1) while a borrower is in the middle of a 30 s statement: the
    borrower gets ConnectionError at once, and the statement is cancelled on the server, whose
    session ends with the disconnect instead of running on for 30 s."""
    m = faults.manager(min_size=1, max_size=2)
    await m.connect()
    outcome: list[BaseException | None] = []
    statement = "SELECT pg_sleep(30)"
    if m.mode == "sync":
        manager = m.manager
        assert isinstance(manager, pgconnector.ConnectionManager)

        def borrower() -> None:
            try:
                with manager.connection() as c:
                    c.fetchval(statement)
                outcome.append(None)
            except Exception as exc:
                outcome.append(exc)

        thread = threading.Thread(target=borrower, daemon=True)
        thread.start()
    else:
        amanager = m.manager
        assert isinstance(amanager, pgconnector.AsyncConnectionManager)

        async def aborrower() -> None:
            try:
                async with amanager.connection() as c:
                    await c.fetchval(statement)
                outcome.append(None)
            except Exception as exc:
                outcome.append(exc)

        task = asyncio.create_task(aborrower())
    await wait_until(lambda: _sleepers(faults) == 1)  # the statement runs on the server
    started = time.monotonic()
    await m.disconnect(timeout=0.1)
    took = time.monotonic() - started
    # The borrower's answer, well before its statement could have ended by itself.
    if m.mode == "sync":
        thread.join(10.0)
        assert not thread.is_alive(), "the borrower still waits 10 s after disconnect()"
    else:
        done, _ = await asyncio.wait([task], timeout=10.0)
        assert done, "the borrower still waits 10 s after disconnect()"
    assert len(outcome) == 1 and isinstance(outcome[0], pgconnector.ConnectionError), outcome
    # The server ends a session a moment after its client hangs up (the audit waits the same
    # way); a statement left running would keep it for 30 s.
    gone = await wait_until(lambda: faults.server_sessions() == 0, timeout=10.0)
    stats = m.get_pool_stats()
    assert (stats.in_use, stats.waiting, stats.total) == (0, 0, 0), stats
    assert stats.connections_opened == stats.connections_closed, stats
    faults.record(disconnect_s=round(took, 3), session_gone_s=round(gone, 3))
