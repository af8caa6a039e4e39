"""Randomized faults: borrowers, cancellations, session kills, restarts and reconnects, seeded.

Eight workers — threads for the sync manager, tasks for the async one — share a pool of three
and run a random mix of operations: a borrow with a random (sometimes tiny) acquire timeout, a
transaction that commits a row, one that rolls back, a SQL error, a borrow held for a while,
and, for the async manager, a statement abandoned by ``asyncio.wait_for`` (then the same client
used again) and a borrow cancelled at a random point (while waiting, mid-statement, inside the
transaction, during COMMIT or the release). Meanwhile an injector picks, at random intervals,
one of: kill one of the pool's sessions (``pg_terminate_backend``), kill all of them, restart the
server (fast or immediate), or ``disconnect()`` the manager with a short grace and ``connect()``
it again.

Every run has a seed: ``PGCONNECTOR_FAULT_SEED`` chooses it, otherwise a new one is drawn and
printed, and every failure message starts with it, so a failing run can be replayed (the
operations are chosen from the seed; the timing of the threads and the server is not).

Checked: no exception outside the contract reached a worker (``pgconnector.ConnectionError`` —
``PoolTimeoutError`` included —, ``ClientReleasedError`` for a client taken away by
``disconnect()``, ``DivisionByZero`` for the SQL-error operation, ``CancelledError`` for a cancelled
task); no worker or cancelled task hangs; sampled during the run, no gauge is negative and
``in_use`` never exceeds ``max_size``; at the end ``in_use`` and ``waiting`` are 0,
``connections_opened - connections_closed == total <= max_size``, ``max_size`` borrows at once
are served and work, every acknowledged commit is in the table (read with psql), no row of a
transaction that never reached COMMIT is; and the ``faults`` teardown finds nothing lost or
leaked on the server after ``disconnect()``.

The short run (``PGCONNECTOR_RANDOM_SECONDS``, default 5 s per target) is part of every test
run; the long one (``PGCONNECTOR_SOAK_SECONDS``, default 25 s per target) runs with the soak.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from pgconnector import ClientReleasedError, ConnectionError
from pgconnector.errors import DivisionByZero
from tests.backends.helpers import wait_until
from tests.faults.conftest import FaultKit

SHORT_SECONDS = float(os.environ.get("PGCONNECTOR_RANDOM_SECONDS", "5"))
LONG_SECONDS = float(os.environ.get("PGCONNECTOR_SOAK_SECONDS", "25"))
SEED = int(os.environ.get("PGCONNECTOR_FAULT_SEED") or secrets.randbelow(2**31))
WORKERS = 8
MAX_SIZE = 3
TABLE = "random_rows"
INSERT = f"INSERT INTO {TABLE} (id) VALUES ($1)"
WEIGHTS = dict(
    select=25, commit=20, rollback=8, sql_error=8, hold=8, abandon=12, cancel=15
)
ASYNC_ONLY = {"abandon", "cancel"}
# After a cancel, how long the cancelled task may take to end (it waits for nothing but the
# pool's own clean-up): beyond that it is reported as hanging.
CANCEL_GRACE = 15.0

pytestmark = pytest.mark.integration


class Rollback(Exception):
    """Raised inside a transaction to have it rolled back."""


@dataclass
class Tally:
    """What the workers and the injector saw, under one lock (sync workers are threads)."""

    seed: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    outcomes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    committed: set[int] = field(default_factory=set)  # COMMIT returned
    in_doubt: set[int] = field(default_factory=set)  # COMMIT sent, its answer lost
    never: set[int] = field(default_factory=set)  # never reached COMMIT: must not be there
    unexpected: list[str] = field(default_factory=list)
    gauges: list[str] = field(default_factory=list)  # impossible gauge readings
    next_id: int = 0

    def new_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    def add(self, where: set[int], rid: int) -> None:
        with self.lock:
            where.add(rid)

    def surprise(self, what: str) -> None:
        with self.lock:
            self.unexpected.append(what)

    def fail(self, message: str) -> str:
        return f"seed {self.seed} (replay with PGCONNECTOR_FAULT_SEED={self.seed}): {message}"


def sample(m: Any, t: Tally, where: str) -> None:
    s = m.get_pool_stats()
    if min(s.total, s.idle, s.waiting, s.in_use) < 0 or s.in_use > s.max_size:
        with t.lock:
            t.gauges.append(f"{where}: {s}")


# -- the workers' operations: each returns its outcome, or raises for the worker to classify --


async def op_select(m: Any, t: Tally, rng: random.Random) -> str:
    timeout = rng.choice([None, None, rng.uniform(0.001, 0.05)])
    async with m.connection(timeout) as c:
        k = rng.randrange(1_000_000)
        assert await c.fetchval("SELECT $1::int", k) == k
    return "select"


async def op_hold(m: Any, t: Tally, rng: random.Random) -> str:
    async with m.connection() as c:
        assert await c.fetchval("SELECT 1") == 1
        await asyncio.sleep(rng.uniform(0.01, 0.2))  # the workload: keep it from the others
    return "hold"


async def op_commit(m: Any, t: Tally, rng: random.Random) -> str:
    rid, state = t.new_id(), "never"
    try:
        async with m.connection() as c, c.transaction():
            await c.execute(INSERT, rid)
            if rng.random() < 0.3:
                await c.fetchval("SELECT pg_sleep($1::float8)", rng.uniform(0, 0.02))
            state = "in_doubt"  # from here on, a lost connection may hide a commit
        state = "committed"
    finally:
        t.add(getattr(t, state), rid)
    return "commit"


async def op_rollback(m: Any, t: Tally, rng: random.Random) -> str:
    rid = t.new_id()
    t.add(t.never, rid)
    try:
        async with m.connection() as c, c.transaction():
            await c.execute(INSERT, rid)
            raise Rollback
    except Rollback:
        return "rollback"


async def op_sql_error(m: Any, t: Tally, rng: random.Random) -> str:
    async with m.connection() as c:
        with pytest.raises(DivisionByZero):
            await c.fetchval("SELECT 1/0")
        # The client stays usable after a SQL error.
        assert await c.fetchval("SELECT 2") == 2
    return "sql_error"


async def op_abandon(m: Any, t: Tally, rng: random.Random) -> str:
    """A statement abandoned by wait_for (a short one or a large result), then the same
    client used again: it answers right, or fails as a lost connection."""
    async with m.connection() as c:
        sql = rng.choice([
            "SELECT pg_sleep($1::float8)",
            "SELECT g, repeat('x', 100) FROM generate_series(1, (20000 * $1::float8 + 1)::int)"
            " g",
        ])
        try:
            await asyncio.wait_for(c.fetch(sql, rng.uniform(0.0, 0.05)), rng.uniform(0.0, 0.03))
            outcome = "abandon_finished"
        except TimeoutError:
            outcome = "abandoned"
        k = rng.randrange(1_000_000)
        got = await c.fetchval("SELECT $1::int", k)
        assert got == k, f"after an abandoned statement the client answered {got!r}, not {k}"
    return outcome


async def op_cancel(m: Any, t: Tally, rng: random.Random) -> str:
    """A task that borrows and commits a row, cancelled after a random number of loop turns
    or a random short time: while waiting, mid-statement, in COMMIT or in the release."""
    task = asyncio.create_task(op_commit(m, t, rng))
    if rng.random() < 0.5:
        for _ in range(rng.randrange(8)):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(rng.uniform(0, 0.02))  # a random moment, not a synchronisation
    task.cancel()
    if rng.random() < 0.2:
        await asyncio.sleep(0)
        task.cancel()  # cancelled twice, as a wait_for inside a cancelled parent does
    done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
    if not done:
        raise AssertionError(f"a cancelled task was still running {CANCEL_GRACE:g} s later")
    try:
        task.result()
    except asyncio.CancelledError:
        return "cancelled"
    return "commit"  # it finished (or failed as classified by the worker) before the cancel


OPS: dict[str, Any] = {
    "select": op_select, "hold": op_hold, "commit": op_commit, "rollback": op_rollback,
    "sql_error": op_sql_error, "abandon": op_abandon, "cancel": op_cancel,
}


async def worker(m: Any, t: Tally, rng: random.Random, deadline: float) -> None:
    kinds = [k for k in WEIGHTS if m.mode == "async" or k not in ASYNC_ONLY]
    weights = [WEIGHTS[k] for k in kinds]
    while time.monotonic() < deadline:
        kind = rng.choices(kinds, weights)[0]
        try:
            outcome = await OPS[kind](m, t, rng)
        except ConnectionError as exc:  # PoolTimeoutError included
            outcome = type(exc).__name__
        except ClientReleasedError:
            outcome = "taken_by_disconnect"
        except Exception as exc:
            outcome = "unexpected"
            t.surprise(f"{kind}: {type(exc).__module__}.{type(exc).__qualname__}: {exc!r}")
        with t.lock:
            t.outcomes[outcome] += 1
        sample(m, t, f"after {kind}")


def thread_worker(m: Any, t: Tally, rng: random.Random, deadline: float) -> None:
    try:
        asyncio.run(worker(m, t, rng, deadline))
    except BaseException as exc:  # pragma: no cover - reported by the test
        t.surprise(f"worker thread died: {exc!r}")


# -- the injector ------------------------------------------------------------------------------


async def inject(
    m: Any, server: Any, faults: FaultKit, t: Tally, rng: random.Random, deadline: float
) -> None:
    """Until the deadline, at random intervals, one random fault; the manager is left
    connected and the server running."""
    app = faults.application_name
    kill = (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = '{app}' AND pid <> pg_backend_pid()"
    )
    while time.monotonic() < deadline - 0.5:
        await asyncio.sleep(rng.uniform(0.1, 0.6))
        fault = rng.choices(["kill_one", "kill_all", "restart", "reconnect"], [5, 2, 1, 2])[0]
        if fault == "kill_one":
            await asyncio.to_thread(server.admin_execute, kill + " ORDER BY random() LIMIT 1")
        elif fault == "kill_all":
            await asyncio.to_thread(server.admin_execute, kill)
        elif fault == "restart":
            await asyncio.to_thread(server.restart, rng.choice(["fast", "immediate"]))
        else:
            await m.disconnect(timeout=rng.uniform(0.0, 0.2))
            sample(m, t, "right after disconnect()")
            await connect_again(m)
        t.faults[fault] += 1
        sample(m, t, f"after {fault}")


async def connect_again(m: Any) -> None:
    """connect(), retried while the server is still coming back (a bounded wait)."""
    end = time.monotonic() + 20.0
    while True:
        try:
            await m.connect()
            return
        except ConnectionError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.1)  # the server's start-up, polled


async def serve_at_once(m: Any, n: int) -> int:
    """Borrow ``n`` connections at once and run a statement on each; how many failed as a lost
    connection (every client is released whatever happens)."""
    clients = [await m.get_client() for _ in range(n)]
    failed = 0
    try:
        for c in clients:
            try:
                assert await c.fetchval("SELECT 1") == 1
            except ConnectionError:
                failed += 1
    finally:
        for c in clients:
            await c.release()
    return failed


# -- the test ----------------------------------------------------------------------------------


async def run_randomized(faults: FaultKit, seconds: float) -> None:
    seed = SEED
    print(f"randomized faults: seed {seed} ({faults.target}, {seconds:g} s)")
    t = Tally(seed)
    # Durable commits, so that an immediate restart cannot lose an acknowledged one.
    server = faults.start_server(settings={"synchronous_commit": "on"})
    m = faults.manager(
        server, min_size=1, max_size=MAX_SIZE, acquire_timeout=1.0, connect_timeout=1.0
    )
    await m.connect()
    async with m.connection() as c:
        await c.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY)")
    master = random.Random(seed)
    rngs = [random.Random(master.getrandbits(64)) for _ in range(WORKERS + 1)]
    started = time.monotonic()
    deadline = started + seconds
    if m.mode == "sync":
        threads = [
            threading.Thread(target=thread_worker, args=(m, t, rngs[i], deadline), daemon=True)
            for i in range(WORKERS)
        ]
        for thread in threads:
            thread.start()
        await inject(m, server, faults, t, rngs[-1], deadline)
        for thread in threads:
            await asyncio.to_thread(thread.join, max(0.0, deadline + 60 - time.monotonic()))
        stuck = [th.name for th in threads if th.is_alive()]
    else:
        tasks = [asyncio.create_task(worker(m, t, rngs[i], deadline)) for i in range(WORKERS)]
        await inject(m, server, faults, t, rngs[-1], deadline)
        budget = max(0.0, deadline + 60 - time.monotonic())
        done, pending = await asyncio.wait(tasks, timeout=budget)
        stuck = [task.get_name() for task in pending]
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                t.surprise(f"worker task died: {task.exception()!r}")
    elapsed = time.monotonic() - started
    assert not stuck, t.fail(f"workers still running 60 s after the end: {stuck}")
    assert not t.unexpected, t.fail(f"{len(t.unexpected)} unexpected: {t.unexpected[:8]}")
    assert not t.gauges, t.fail(f"impossible gauges: {t.gauges[:5]}")

    # The books, once the pool has settled (a refill may be under way).
    def settled() -> bool:
        s = m.get_pool_stats()
        return (s.in_use, s.waiting) == (0, 0) and (
            s.connections_opened - s.connections_closed == s.total <= s.max_size
        )

    try:
        await wait_until(settled, timeout=15.0)
    except AssertionError as exc:
        books = m.get_pool_stats()
        raise AssertionError(t.fail(f"the pool's books never settled: {books}")) from exc
    # Still serving: max_size borrows at once, each working. A session killed just before the
    # end may still sit idle in the pool, and with the default ping_after_idle (1 s) may be
    # handed out once and fail (DESIGN.md, precise point 11): then the next round must work.
    await serve_at_once(m, MAX_SIZE)
    failed = await serve_at_once(m, MAX_SIZE)
    assert not failed, t.fail(f"{failed} of {MAX_SIZE} borrows at once failed after a round")
    # Nothing acknowledged is lost, nothing rolled back or cancelled before COMMIT is kept.
    out = server.admin_execute(f"SELECT id FROM {TABLE}")
    rows = {int(line) for line in out.split()}
    assert not (lost := t.committed - rows), t.fail(f"acknowledged commits lost: {lost}")
    assert not (kept := rows & t.never), t.fail(f"rows never committed were kept: {kept}")
    assert not (odd := rows - t.committed - t.in_doubt), t.fail(f"rows nobody wrote: {odd}")
    operations = sum(t.outcomes.values())
    assert t.committed, t.fail(f"no commit succeeded: {dict(t.outcomes)}")
    faults.record(
        seconds=round(elapsed, 1), operations=operations, commits=len(t.committed),
        kills=t.faults["kill_one"] + t.faults["kill_all"], restarts=t.faults["restart"],
        reconnects=t.faults["reconnect"], cancels=t.outcomes["cancelled"],
        abandoned=t.outcomes["abandoned"], seed=seed,
    )
    # The faults fixture then disconnects and checks that nothing was lost or leaked.


@pytest.mark.fault("Randomized faults", "Randomized faults, short run (seeded)")
@pytest.mark.timeout(SHORT_SECONDS + 180)
async def test_randomized_faults(faults: FaultKit) -> None:
    """Eight borrowers doing random work (commits, rollbacks, SQL errors, tiny acquire
    timeouts, statements abandoned by wait_for, tasks cancelled at random points) while
    sessions are killed, the server restarts and the manager reconnects, at random: no
    exception outside the contract, no hang, no negative gauge, books balanced, every
    acknowledged commit kept; the seed is recorded."""
    await run_randomized(faults, SHORT_SECONDS)


@pytest.mark.soak
@pytest.mark.slow
@pytest.mark.fault("Randomized faults", "Randomized faults, long run (seeded)")
@pytest.mark.timeout(LONG_SECONDS + 180)
async def test_randomized_faults_long(faults: FaultKit) -> None:
    """The same randomized run for PGCONNECTOR_SOAK_SECONDS (default 25 s) per target."""
    await run_randomized(faults, LONG_SECONDS)
