"""The soak: a mixed workload on a small pool while the server restarts under it.

For ``PGCONNECTOR_SOAK_SECONDS`` (default 25) per target, eight workers — threads for the sync
manager, tasks for the async one — share a pool of two to four connections and run a random
mix (seeded ``random.Random`` per worker) of: borrow + SELECT; a transaction that inserts a row
and commits; one that inserts a row and raises (rolled back); a SQL error outside a
transaction; a borrow with a tiny timeout; a borrow held for a while; and, for the async
manager, a borrow cancelled while acquiring or mid-query. Meanwhile the server restarts every
``INTERVAL`` s, alternating fast and immediate shutdowns. Connection errors are expected, but
only during a restart and the ``GRACE`` s after it; any other surprise fails the test.

Then: every commit the caller was told succeeded is in the table (read with psql, not through
the library), no row of a transaction that never reached COMMIT is; the pool's counters match
the workers' own (borrows, pool timeouts), nothing is in use or waiting; the pool is healthy and
refilled to ``min_size``; and the ``faults`` teardown finds nothing lost or leaked.

Test servers run with ``synchronous_commit = off`` for speed, under which PostgreSQL itself may
forget the last commits it acknowledged if it stops without a clean shutdown (``immediate``):
that is the server's documented trade-off, not the pool's, so the soak's server has it ``on``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from pgconnector import ConnectionError, PoolTimeoutError
from pgconnector.errors import DivisionByZero
from tests.backends.helpers import wait_until
from tests.faults.conftest import FaultKit

SECONDS = float(os.environ.get("PGCONNECTOR_SOAK_SECONDS", "25"))
WORKERS = 8
SEED = 20240611
INTERVAL = 6.0  # seconds between restarts
# After a restart, how long connection errors may still surface: a dead connection idle for
# less than ping_after_idle (1 s) is handed out unpinged, and fails within an operation.
GRACE = 2.0
TABLE = "soak_rows"
INSERT = f"INSERT INTO {TABLE} (id) VALUES ($1)"
WEIGHTS = dict(select=30, commit=20, rollback=10, sql_error=10, timeout=10, hold=10, cancel=10)

pytestmark = pytest.mark.integration


class Rollback(Exception):
    """Raised inside a transaction to have it rolled back."""


@dataclass
class Tally:
    """What the workers saw, counted under one lock (the sync workers are threads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: Counter[str] = field(default_factory=Counter)
    borrows: int = 0  # clients handed to a worker: must equal stats.acquires
    last_borrow: float = 0.0
    committed: set[int] = field(default_factory=set)  # COMMIT returned
    in_doubt: set[int] = field(default_factory=set)  # connection lost during COMMIT
    never: set[int] = field(default_factory=set)  # never reached COMMIT: must not be there
    connection_errors: list[float] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def borrowed(self) -> None:
        with self.lock:
            self.borrows += 1
            self.last_borrow = time.monotonic()

    def new_id(self) -> int:
        with self.lock:
            return next(self.ids)

    def add(self, where: set[int], rid: int) -> None:
        with self.lock:
            where.add(rid)


# -- the operations: each returns its outcome, or raises what the worker will classify ---------


async def op_select(
    m: Any, t: Tally, rng: random.Random, timeout: float | None = None, hold: float = 0.0
) -> str:
    async with m.connection(timeout) as c:
        t.borrowed()
        assert await c.fetchval("SELECT 1") == 1
        if hold:
            await asyncio.sleep(hold)  # the workload: keep the connection from the others
    return "hold" if hold else "select"


async def op_commit(m: Any, t: Tally, rng: random.Random) -> str:
    rid, state = t.new_id(), "never"
    try:
        async with m.connection() as c:
            t.borrowed()
            async with c.transaction():
                await c.execute(INSERT, rid)
                state = "in_doubt"  # from here on, a lost connection may hide a commit
            state = "committed"
    finally:
        t.add(getattr(t, state), rid)
    return "commit"


async def op_rollback(m: Any, t: Tally, rng: random.Random) -> str:
    rid = t.new_id()
    t.add(t.never, rid)
    try:
        async with m.connection() as c:
            t.borrowed()
            async with c.transaction():
                await c.execute(INSERT, rid)
                raise Rollback
    except Rollback:
        return "rollback"


async def op_sql_error(m: Any, t: Tally, rng: random.Random) -> str:
    async with m.connection() as c:
        t.borrowed()
        try:
            await c.fetchval("SELECT 1/0")
        except DivisionByZero:
            return "sql_error"
    raise AssertionError("SELECT 1/0 did not fail")


async def op_cancel(m: Any, t: Tally, rng: random.Random) -> str:
    """Borrow and run a long query in a task, and cancel it while it acquires or queries."""
    got = asyncio.Event()

    async def borrow() -> None:
        async with m.connection() as c:
            t.borrowed()
            got.set()
            await c.fetchval("SELECT pg_sleep(0.5)")

    task = asyncio.create_task(borrow())
    if rng.random() < 0.5:
        await asyncio.sleep(0)  # let it start: it is now acquiring (or already querying)
    else:
        waiter = asyncio.create_task(got.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    return "select"  # it finished before the cancel landed


OPS: dict[str, Any] = {
    "select": op_select, "commit": op_commit, "rollback": op_rollback,
    "sql_error": op_sql_error, "cancel": op_cancel,
    "timeout": lambda m, t, rng: op_select(m, t, rng, timeout=rng.uniform(0.001, 0.02)),
    "hold": lambda m, t, rng: op_select(m, t, rng, hold=rng.uniform(0.05, 0.3)),
}


async def worker(m: Any, t: Tally, index: int, deadline: float) -> None:
    rng = random.Random(SEED * 100 + index)
    kinds = [k for k in WEIGHTS if m.mode == "async" or k != "cancel"]
    weights = [WEIGHTS[k] for k in kinds]
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        try:
            outcome = await OPS[kind](m, t, rng)
        except PoolTimeoutError:
            outcome = "timeout"
        except ConnectionError:
            outcome = "connection_error"
            with t.lock:
                t.connection_errors.append(time.monotonic())
        except Exception as exc:
            outcome = "unexpected"
            with t.lock:
                t.unexpected.append(f"{kind}: {exc!r}")
        with t.lock:
            t.outcomes[outcome] += 1


def thread_worker(m: Any, t: Tally, index: int, deadline: float) -> None:
    """A sync worker: the same operations, on its own thread; the facade calls the sync
    manager directly (blocking this thread), so the event loop here only runs this code."""
    try:
        asyncio.run(worker(m, t, index, deadline))
    except BaseException as exc:  # pragma: no cover - reported by the test
        with t.lock:
            t.unexpected.append(f"worker {index} died: {exc!r}")


async def inject(server: Any, started: float, deadline: float) -> list[tuple[str, float, float]]:
    """Restart the server every INTERVAL s (fast, immediate, fast, …) while a restart still
    leaves GRACE s to recover before the deadline; returns (mode, down, up) per restart."""
    restarts: list[tuple[str, float, float]] = []
    k = 1
    while (at := started + k * INTERVAL) + GRACE < deadline:
        await asyncio.sleep(max(0.0, at - time.monotonic()))  # the schedule, not a sync
        mode = ("fast", "immediate")[(k - 1) % 2]
        down = time.monotonic()
        await asyncio.to_thread(server.restart, mode)
        restarts.append((mode, down, time.monotonic()))
        k += 1
    return restarts


@pytest.mark.soak
@pytest.mark.slow
@pytest.mark.fault("Soak", "Mixed workload with restarts")
@pytest.mark.timeout(SECONDS + 120)
async def test_soak_mixed_workload_with_restarts(faults: FaultKit) -> None:
    assert SECONDS >= INTERVAL + GRACE, f"PGCONNECTOR_SOAK_SECONDS must be >= {INTERVAL + GRACE}"
    # Durable commits: see the module docstring.
    own_server = faults.start_server(settings={"synchronous_commit": "on"})
    m = faults.manager(
        own_server, min_size=2, max_size=4, acquire_timeout=1.0, connect_timeout=1.0
    )
    await m.connect()
    async with m.connection() as c:
        assert await c.fetchval("SHOW synchronous_commit") == "on"
        await c.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY)")
    base = m.get_pool_stats()
    t = Tally()
    started = time.monotonic()
    deadline = started + SECONDS
    if m.mode == "sync":
        threads = [
            threading.Thread(target=thread_worker, args=(m, t, i, deadline), daemon=True)
            for i in range(WORKERS)
        ]
        for thread in threads:
            thread.start()
        restarts = await inject(own_server, started, deadline)
        for thread in threads:
            await asyncio.to_thread(thread.join, deadline + 30 - time.monotonic())
        assert not [th for th in threads if th.is_alive()], "a worker did not stop by itself"
    else:
        tasks = [asyncio.create_task(worker(m, t, i, deadline)) for i in range(WORKERS)]
        restarts = await inject(own_server, started, deadline)
        await asyncio.wait_for(asyncio.gather(*tasks), deadline + 30 - time.monotonic())
    seconds = time.monotonic() - started
    stats = m.get_pool_stats()

    assert not t.unexpected, f"{len(t.unexpected)} unexpected: {t.unexpected[:10]}"
    assert restarts, "no restart happened"
    late = [
        round(e - started, 2) for e in t.connection_errors
        if not any(down <= e <= up + GRACE for _, down, up in restarts)
    ]
    assert not late, f"connection errors outside restarts (+{GRACE:g} s) at {late} s"
    assert t.last_borrow > restarts[-1][2], "no successful borrow after the last restart"
    # (1) nothing committed is lost, nothing rolled back is kept
    out = own_server.admin_execute(f"SELECT id FROM {TABLE}")
    rows = {int(line) for line in out.split()}
    assert t.committed, "no commit succeeded"
    assert not (lost := t.committed - rows), f"{len(lost)} acknowledged commits lost: {lost}"
    assert not (kept := rows & t.never), f"rows of rolled-back transactions kept: {kept}"
    assert not (odd := rows - t.committed - t.in_doubt), f"rows nobody committed: {odd}"
    # (2) the pool's books agree with the workers'. Exactly, cancels included: the pool counts
    # an acquire and returns the client with no await in between, and so does a worker.
    assert (stats.in_use, stats.waiting) == (0, 0), stats
    assert stats.acquires - base.acquires == t.borrows, (stats, t.borrows)
    assert stats.timeouts - base.timeouts == t.outcomes["timeout"], (stats, t.outcomes)
    # (3) healthy again, and refilled to min_size with live sessions
    health = await m.health_check()
    assert health.connected, health.error
    await wait_until(
        lambda: m.get_pool_stats().total >= 2 and faults.server_sessions(own_server) >= 2,
        timeout=20.0,
    )
    operations = sum(t.outcomes.values())
    faults.record(
        seconds=round(seconds, 1), operations=operations, commits=len(t.committed),
        commits_in_doubt=len(t.in_doubt), in_doubt_kept=len(rows & t.in_doubt),
        restarts=len(restarts), connection_errors=t.outcomes["connection_error"],
        timeouts=t.outcomes["timeout"], cancels=t.outcomes["cancelled"],
        ops_per_s=round(operations / seconds, 1),
    )
    # (4) the faults fixture then disconnects and checks that nothing was lost or leaked.
