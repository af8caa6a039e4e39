"""The generic pool's logic, without a server: the state machine with a fake clock, and the two
faces over an in-memory fake driver (hand-off order, timeout and cancel races, thread storms,
exact open/close reporting). Only pure pool logic is tested here; everything that talks to
PostgreSQL is in tests/backends/test_pg8000_specific.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from pgconnector import ConnectionError, PoolConfig, PoolTimeoutError
from pgconnector._generic_pool import (
    IDLE,
    IN_TRANSACTION,
    UNKNOWN,
    AsyncGenericPool,
    GenericPool,
)
from pgconnector._generic_state import (
    ASSIGNED,
    FAILED,
    MAX_PARALLEL_CONNECTS,
    Entry,
    Limits,
    PoolClosedError,
    PoolState,
    ThreadWaiter,
)
from pgconnector._protocols import QueryResult

# -- the state machine, single-threaded, fake clock -----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Conn:
    """The little a state machine asks of a connection."""

    def __init__(self) -> None:
        self.broken = False

    def is_broken(self) -> bool:
        return self.broken


def make_state(**overrides: Any) -> tuple[PoolState, Clock]:
    values: dict[str, Any] = dict(min_size=0, max_size=2, idle_timeout=0.0, max_lifetime=0.0,
                                  max_uses=0, ping_after_idle=None)
    values.update(overrides)
    clock = Clock()
    state = PoolState(Limits(**values), clock=clock, rand=lambda: 0.5)
    return state, clock


def open_connection(state: PoolState, connection_id: int) -> Entry:
    """What the core does when a connect it started succeeds."""
    assert state.connect_accepted()
    entry = state.new_entry(Conn(), connection_id)
    state.connect_placed(entry)
    return entry


def test_start_opens_one_then_fill_opens_min_size_in_parallel_up_to_the_limit() -> None:
    state, _ = make_state(min_size=5, max_size=10)
    # one first (what open() waits for), alone so that nothing slows it down
    assert state.start().connects == 1
    open_connection(state, 1)
    assert state.opening == 0
    # then the rest, within the parallel limit; each placement starts what is still missing
    assert state.fill().connects == MAX_PARALLEL_CONNECTS
    for number in range(MAX_PARALLEL_CONNECTS):
        open_connection(state, number + 2)
    assert state.size == 1 + MAX_PARALLEL_CONNECTS
    assert state.opening == 5 - 1 - MAX_PARALLEL_CONNECTS


def test_waiters_are_served_in_fifo_order_and_idle_is_lifo() -> None:
    state, _ = make_state(max_size=2)
    state.start()
    entry, waiter, plan = state.acquire(ThreadWaiter)
    assert entry is None and waiter is not None
    assert plan.connects == 1  # a waiter, room to grow: one connect
    first = open_connection(state, 1)
    assert waiter.state == ASSIGNED and state.withdraw(waiter) is first
    # the pool is now at max_size=2 with one connect... no: one open, in use; grow once more
    _, second_waiter, plan = state.acquire(ThreadWaiter)
    assert second_waiter is not None and plan.connects == 1
    second = open_connection(state, 2)
    assert state.withdraw(second_waiter) is second
    waiters = [state.acquire(ThreadWaiter)[1] for _ in range(3)]
    assert state.waiting_count == 3
    state.put_back(second, None)
    state.put_back(first, None)
    assert [w.state for w in waiters if w is not None] == [ASSIGNED, ASSIGNED, 0]
    assert state.withdraw(waiters[0]) is second  # type: ignore[arg-type]
    assert state.withdraw(waiters[1]) is first  # type: ignore[arg-type]
    assert state.withdraw(waiters[2]) is None  # type: ignore[arg-type]  # timed out: dequeued
    assert state.waiting_count == 0
    state.put_back(first, None)
    state.put_back(second, None)
    # LIFO: the most recently returned connection is handed out first
    assert state.acquire(None)[0] is second


def test_a_timed_out_waiter_keeps_a_connection_assigned_meanwhile() -> None:
    state, _ = make_state(max_size=1)
    state.start()
    waiter = state.acquire(ThreadWaiter)[1]
    assert waiter is not None
    entry = open_connection(state, 1)
    # the waiter's wait timed out just as the connection was assigned: it takes it
    assert state.withdraw(waiter) is entry
    assert entry.in_use and entry.uses == 1


def test_a_cancelled_waiter_hands_its_connection_to_the_next() -> None:
    state, _ = make_state(max_size=1)
    state.start()
    first = state.acquire(ThreadWaiter)[1]
    second = state.acquire(ThreadWaiter)[1]
    assert first is not None and second is not None
    entry = open_connection(state, 1)
    assert state.withdraw(first) is entry
    state.give_back(entry)  # cancelled: not used
    assert second.state == ASSIGNED
    assert state.withdraw(second) is entry
    assert entry.uses == 1


def test_failures_fail_the_waiters_in_flight_connects_cannot_serve() -> None:
    state, clock = make_state(max_size=4)
    state.start()
    waiters = [state.acquire(ThreadWaiter)[1] for _ in range(3)]
    assert state.opening == 3
    error = OSError("refused")
    state.connect_failed(error)
    # two connects still in flight: the two oldest waiters keep waiting
    assert [w.state for w in waiters if w is not None] == [0, 0, FAILED]
    assert state.withdraw(waiters[2]) is error  # type: ignore[arg-type]
    assert state.down and state.last_error is error
    state.connect_failed(error)
    state.connect_failed(error)
    assert all(w is not None and w.state == FAILED for w in waiters[:2])
    # down: a new borrower triggers exactly one attempt, and no background refill
    assert state.acquire(ThreadWaiter)[2].connects == 1
    assert state.acquire(ThreadWaiter)[2].connects == 0
    assert state.opening == 1
    open_connection(state, 1)
    assert not state.down
    assert clock.now == 1000.0


def test_backoff_grows_and_refill_waits_for_it() -> None:
    state, clock = make_state(min_size=1, max_size=1)
    assert state.start().connects == 1
    delays = []
    for _ in range(6):
        state.connect_failed(OSError("down"))
        assert state.housekeep().connects == 0  # not yet
        delays.append(state.wake_at - clock.now)
        clock.now = state.wake_at
        assert state.housekeep().connects == 1  # the retry, at the deadline
    assert delays == sorted(delays)
    assert delays[0] == pytest.approx(0.25)
    assert delays[-1] == pytest.approx(5.0)  # capped


def test_idle_timeout_shrinks_to_min_size_oldest_first() -> None:
    state, clock = make_state(min_size=1, max_size=3, idle_timeout=10.0)
    state.start()
    entries = []
    for number in (1, 2, 3):
        waiter = state.acquire(ThreadWaiter)[1]
        open_connection(state, number)
        entry = state.withdraw(waiter)  # type: ignore[arg-type]
        assert isinstance(entry, Entry)
        entries.append(entry)
    for entry in entries:
        state.put_back(entry, None)
        clock.now += 1
    plan = state.housekeep()
    assert plan.close == []
    assert state.wake_at == pytest.approx(1000.0 + 10.0)  # the first one returned
    clock.now = 1000.0 + 10.5
    plan = state.housekeep()
    assert [(e.connection_id, reason) for e, reason in plan.close] == [(1, "idle")]
    clock.now = 1000.0 + 100
    plan = state.housekeep()
    assert [(e.connection_id, reason) for e, reason in plan.close] == [(2, "idle")]
    assert state.size == 1  # min_size kept


def test_max_lifetime_has_jitter_and_retires_idle_and_returning_connections() -> None:
    state, clock = make_state(max_size=2, max_lifetime=100.0)
    state.start()
    waiter = state.acquire(ThreadWaiter)[1]
    entry = open_connection(state, 1)
    assert entry.expires == pytest.approx(1000.0 + 100.0 * 0.95)  # rand() = 0.5: -5 %
    assert state.withdraw(waiter) is entry  # type: ignore[arg-type]
    clock.now += 96
    assert state.retire_reason(entry) == "max_lifetime"
    plan = state.put_back(entry, "max_lifetime")
    assert [(e.connection_id, r) for e, r in plan.close] == [(1, "max_lifetime")]
    waiter = state.acquire(ThreadWaiter)[1]
    second = open_connection(state, 2)
    state.withdraw(waiter)  # type: ignore[arg-type]
    state.put_back(second, None)
    clock.now += 96
    plan = state.housekeep()
    assert [(e.connection_id, r) for e, r in plan.close] == [(2, "max_lifetime")]


def test_max_uses_and_discard_and_broken() -> None:
    state, _ = make_state(max_size=1, max_uses=2)
    state.start()
    waiter = state.acquire(ThreadWaiter)[1]
    entry = open_connection(state, 1)
    state.withdraw(waiter)  # type: ignore[arg-type]
    assert state.retire_reason(entry) is None
    state.put_back(entry, None)
    assert state.acquire(None)[0] is entry
    assert state.retire_reason(entry) == "max_uses"
    assert state.retire_reason(entry, discard=True) == "discarded"
    entry.conn.broken = True
    assert state.retire_reason(entry, discard=True) == "broken"


def test_a_release_does_not_wake_the_housekeeper_unless_a_deadline_moves_earlier() -> None:
    state, _ = make_state(min_size=1, max_size=2, max_lifetime=3600.0, idle_timeout=30.0)
    state.start()
    waiter = state.acquire(ThreadWaiter)[1]
    entry = open_connection(state, 1)
    state.withdraw(waiter)  # type: ignore[arg-type]
    state.housekeep()
    assert not state.poked
    for _ in range(100):  # a busy single connection: no poke per release
        state.put_back(entry, None)
        assert state.acquire(None)[0] is entry
    assert not state.poked


def test_close_fails_waiters_and_claims_idle_connections() -> None:
    state, _ = make_state(max_size=2)
    state.start()
    waiters = [state.acquire(ThreadWaiter)[1] for _ in range(2)]
    in_use = open_connection(state, 1)
    idle = open_connection(state, 2)
    assert state.withdraw(waiters[0]) is in_use  # type: ignore[arg-type]
    assert state.withdraw(waiters[1]) is idle  # type: ignore[arg-type]
    state.put_back(idle, None)
    assert state.acquire(None)[0] is idle
    queued = state.acquire(ThreadWaiter)[1]
    assert queued is not None
    state.put_back(idle, None)  # goes to the queued waiter...
    state.put_back(state.withdraw(queued), None)  # type: ignore[arg-type]  # ...and back
    late = state.acquire(ThreadWaiter)
    assert late[0] is idle
    state.put_back(idle, None)
    blocked = state.acquire(ThreadWaiter)  # takes idle again; a second borrower must wait
    waiting = state.acquire(ThreadWaiter)[1]
    assert blocked[0] is idle and waiting is not None
    state.put_back(idle, None)
    assert state.withdraw(waiting) is idle  # type: ignore[arg-type]
    state.put_back(idle, None)
    last = state.acquire(None)[0]
    assert last is idle
    state.put_back(idle, None)
    # now: one idle, one in use; queue a waiter behind nothing (pool full, none idle)
    assert state.acquire(None)[0] is idle
    stuck = state.acquire(ThreadWaiter)[1]
    assert stuck is not None and state.waiting_count == 1
    state.put_back(idle, "discarded")  # closed: the stuck waiter stays (a connect starts)
    plan = state.close()
    assert isinstance(state.withdraw(stuck), PoolClosedError)
    assert plan.close == []
    assert state.put_back(in_use, None).close == [(in_use, "pool closed")]
    assert state.size == 0
    with pytest.raises(PoolClosedError):
        state.acquire(ThreadWaiter)


# -- the faces over a fake driver -------------------------------------------------------------


class FakeRaw:
    def __init__(self, driver: FakeDriver) -> None:
        self.driver = driver
        self.status = IDLE
        self.broken = False
        self.dead = False
        self.closed = False
        self.executed: list[str] = []
        # "BLOCK" runs until cancelled (unless the driver is deaf to cancels) or closed.
        self.entered = threading.Event()
        self.unblock = threading.Event()
        self.cancels = 0
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    @property
    def raw(self) -> FakeRaw:
        return self

    def execute(self, sql: str, args: Sequence[Any]) -> str:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            return self._execute(sql)
        finally:
            with self.lock:
                self.running -= 1

    def _execute(self, sql: str) -> str:
        if self.broken or self.dead:
            self.broken = True
            raise ConnectionError("connection is broken", OSError("gone"))
        if self.driver.op_delay:
            time.sleep(self.driver.op_delay)
        self.executed.append(sql)
        if sql == "BLOCK":
            self.entered.set()
            self.unblock.wait(30)
            self.unblock.clear()
            if self.closed:
                self.broken = True
                raise ConnectionError("connection closed under the statement", OSError("x"))
            raise RuntimeError("canceling statement due to user request")
        if sql == "BEGIN":
            self.status = IN_TRANSACTION
        elif sql in ("ROLLBACK", "COMMIT"):
            self.status = IDLE
        return sql.split()[0] if sql else ""

    def fetch(self, sql: str, args: Sequence[Any]) -> QueryResult:
        self.execute(sql, args)
        return ["x"], [[1]]

    def transaction_status(self) -> str:
        return UNKNOWN if self.broken else self.status

    def is_broken(self) -> bool:
        return self.broken

    def ping(self, timeout: float) -> None:
        if self.dead:
            self.broken = True
            raise OSError("dead")

    def cancel(self) -> None:
        with self.lock:
            self.cancels += 1
            if self.running and not self.driver.deaf:
                self.unblock.set()

    def close(self) -> None:
        self.closed = True
        self.unblock.set()


class FakeDriver:
    def __init__(self) -> None:
        self.fail: BaseException | None = None
        self.delay = 0.0
        self.op_delay = 0.0
        self.deaf = False  # cancel() does not stop a running statement
        self.opened: list[FakeRaw] = []
        self.lock = threading.Lock()

    def connect(self, timeout: float) -> FakeRaw:
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        raw = FakeRaw(self)
        with self.lock:
            self.opened.append(raw)
        return raw

    def describe(self, error: BaseException) -> str:
        return str(error)


class Hooks:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next_id = 0
        self.opened: list[int] = []
        self.closed: list[tuple[int, str]] = []
        self.failed: list[tuple[BaseException, int | None]] = []
        self.create_times: list[float | None] = []

    def connection_opened(self, seconds: float | None = None) -> int:
        with self.lock:
            self.next_id += 1
            self.opened.append(self.next_id)
            self.create_times.append(seconds)
            return self.next_id

    def connection_closed(self, connection_id: int, reason: str) -> None:
        with self.lock:
            self.closed.append((connection_id, reason))

    def connection_failed(self, error: BaseException, connection_id: int | None = None) -> None:
        with self.lock:
            self.failed.append((error, connection_id))

    def assert_exact(self) -> None:
        closed = Counter(connection_id for connection_id, _ in self.closed)
        assert all(count == 1 for count in closed.values()), closed
        assert set(closed) <= set(self.opened)
        # every opened connection reports how long opening it took (the create_time metric)
        assert all(isinstance(t, float) and t >= 0.0 for t in self.create_times)


def config(**overrides: Any) -> PoolConfig:
    values: dict[str, Any] = dict(host="127.0.0.1", port=1, user="u", password="pw",
                                  database="d", min_size=0, max_size=2, connect_timeout=1.0)
    values.update(overrides)
    return PoolConfig(**values)


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def driver() -> FakeDriver:
    return FakeDriver()


@pytest.fixture
def hooks() -> Hooks:
    return Hooks()


def test_sync_face_open_borrow_release_close(driver: FakeDriver, hooks: Hooks) -> None:
    pool = GenericPool(config(min_size=1), hooks, driver)
    pool.open(2.0)
    conn = pool.acquire(1.0)
    assert conn.execute("BEGIN", ()) == "BEGIN"
    pool.release(conn)  # in a transaction: one ROLLBACK
    raw = driver.opened[0]
    assert raw.executed == ["BEGIN", "ROLLBACK"]
    conn = pool.acquire(1.0)
    conn.execute("SELECT 1", ())
    pool.release(conn)  # clean: nothing sent
    assert raw.executed == ["BEGIN", "ROLLBACK", "SELECT"] or raw.executed[-1] == "SELECT 1"
    pool.close(2.0)
    assert raw.closed
    assert hooks.closed == [(1, "pool closed")]
    hooks.assert_exact()
    with pytest.raises(ConnectionError, match="pool closed"):
        pool.acquire(1.0)


def test_thread_storm_loses_no_wake_up(driver: FakeDriver, hooks: Hooks) -> None:
    pool = GenericPool(config(min_size=0, max_size=3, acquire_timeout=10.0), hooks, driver)
    pool.open(2.0)
    done = Counter[str]()
    lock = threading.Lock()
    barrier = threading.Barrier(24)

    def worker() -> None:
        barrier.wait()
        for _ in range(150):
            conn = pool.acquire(10.0)
            conn.fetch("SELECT 1", ())
            pool.release(conn)
            with lock:
                done["ok"] += 1

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert done["ok"] == 24 * 150
    core = pool.core
    assert core.state.waiting_count == 0
    assert core.state.size == core.state.idle_count <= 3
    pool.close(2.0)
    assert len(hooks.opened) == len(hooks.closed) == len(driver.opened)
    hooks.assert_exact()


def test_timeouts_racing_releases_never_leak(driver: FakeDriver, hooks: Hooks) -> None:
    pool = GenericPool(config(max_size=1), hooks, driver)
    pool.open(2.0)
    stop = threading.Event()
    outcomes = Counter[str]()
    lock = threading.Lock()

    def holder() -> None:
        while not stop.is_set():
            try:
                conn = pool.acquire(0.01)
            except PoolTimeoutError:
                continue
            time.sleep(0.0005)
            pool.release(conn)

    def impatient() -> None:
        while not stop.is_set():
            try:
                conn = pool.acquire(0.0005)
            except PoolTimeoutError:
                with lock:
                    outcomes["timeout"] += 1
                continue
            with lock:
                outcomes["got"] += 1
            pool.release(conn)

    threads = [threading.Thread(target=holder) for _ in range(2)]
    threads += [threading.Thread(target=impatient) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert outcomes["timeout"] > 0 and outcomes["got"] > 0
    state = pool.core.state
    assert state.waiting_count == 0
    assert state.size == state.idle_count == 1  # the one connection is back, unused
    pool.close(1.0)
    hooks.assert_exact()


async def test_async_cancelled_waiters_never_leak(driver: FakeDriver, hooks: Hooks) -> None:
    pool = AsyncGenericPool(config(max_size=2), hooks, driver)
    await pool.open(2.0)

    async def borrow() -> None:
        conn = await pool.acquire(5.0)
        try:
            await conn.fetch("SELECT 1", ())
            await asyncio.sleep(0.001)
        finally:
            await pool.release(conn)

    for _ in range(20):
        tasks = [asyncio.create_task(borrow()) for _ in range(10)]
        await asyncio.sleep(0.001)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    state = pool.core.state
    await asyncio.sleep(0.05)  # cancelled statements finish in their worker threads
    assert state.waiting_count == 0
    assert state.idle_count == state.size == 2
    first, second = await pool.acquire(0.1), await pool.acquire(0.1)
    await pool.release(first)
    await pool.release(second)
    await pool.close(2.0)
    assert len(hooks.opened) == len(hooks.closed)
    hooks.assert_exact()


async def test_async_and_thread_waiters_share_one_fifo_queue(
    driver: FakeDriver, hooks: Hooks
) -> None:
    pool = AsyncGenericPool(config(max_size=1), hooks, driver)
    await pool.open(2.0)
    held = await pool.acquire(1.0)
    order: list[str] = []
    sync_face = GenericPool.__new__(GenericPool)
    sync_face._core = pool.core  # the same core, its sync face

    def thread_borrower(name: str) -> None:
        entry = sync_face._take(5.0)
        order.append(name)
        pool.core.release_blocking(entry, False)

    async def task_borrower(name: str) -> None:
        conn = await pool.acquire(5.0)
        order.append(name)
        await pool.release(conn)

    tasks: list[asyncio.Task[None]] = []
    threads: list[threading.Thread] = []
    for number in range(6):
        if number % 2:
            thread = threading.Thread(target=thread_borrower, args=(f"t{number}",))
            thread.start()
            threads.append(thread)
        else:
            tasks.append(asyncio.create_task(task_borrower(f"a{number}")))
        while pool.core.state.waiting_count < number + 1:  # noqa: ASYNC110 - polling a count
            await asyncio.sleep(0.001)
    await pool.release(held)
    await asyncio.gather(*tasks)
    for thread in threads:
        await asyncio.to_thread(thread.join, 5)
    assert order == ["a0", "t1", "a2", "t3", "a4", "t5"]
    await pool.close(1.0)


def test_fail_fast_while_down_then_recover(driver: FakeDriver, hooks: Hooks) -> None:
    pool = GenericPool(config(min_size=1, max_size=2, acquire_timeout=30.0), hooks, driver)
    pool.open(2.0)
    conn = pool.acquire(1.0)
    conn.raw.dead = True
    driver.fail = OSError("connection refused")
    with pytest.raises(ConnectionError):
        conn.execute("SELECT 1", ())
    pool.release(conn)  # broken: closed, and a replacement attempt fails
    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        pool.acquire(30.0)
    assert time.monotonic() - started < 1.0
    assert not isinstance(info.value, PoolTimeoutError)
    assert info.value.cause is driver.fail
    assert "connection refused" in str(info.value)
    driver.fail = None
    started = time.monotonic()
    conn = pool.acquire(30.0)  # the server is back: the first borrow succeeds at once
    assert time.monotonic() - started < 1.0
    pool.release(conn)
    pool.close(1.0)
    assert ("broken" in {reason for _, reason in hooks.closed})
    assert [e for e, cid in hooks.failed if cid is None]  # the failed connects were reported
    hooks.assert_exact()


def test_dead_idle_connection_is_checked_and_replaced(driver: FakeDriver, hooks: Hooks) -> None:
    pool = GenericPool(config(min_size=1, max_size=1, ping_after_idle=0.0), hooks, driver)
    pool.open(2.0)
    first = pool.acquire(1.0)
    first_id = first.connection_id
    pool.release(first)
    driver.opened[0].dead = True
    conn = pool.acquire(2.0)
    assert conn.connection_id != first_id
    pool.release(conn)
    assert hooks.closed == [(first_id, "check failed")]
    pool.close(1.0)
    hooks.assert_exact()


def test_reset_failure_and_max_uses_reasons(driver: FakeDriver, hooks: Hooks) -> None:
    pool = GenericPool(config(min_size=0, max_size=1, max_uses=2), hooks, driver)
    pool.open(2.0)  # the check borrow is not a use
    for _ in range(2):
        conn = pool.acquire(1.0)
        pool.release(conn)
    conn = pool.acquire(1.0)
    conn.execute("BEGIN", ())
    conn.raw.dead = True  # the ROLLBACK on release fails
    pool.release(conn)
    pool.close(1.0)
    assert [reason for _, reason in hooks.closed] == ["max_uses", "reset failed"]
    assert [cid for _, cid in hooks.failed] == [2]
    hooks.assert_exact()


def test_housekeeper_shrinks_idle_connections_without_polling(
    driver: FakeDriver, hooks: Hooks
) -> None:
    pool = GenericPool(config(min_size=1, max_size=3, idle_timeout=0.2), hooks, driver)
    pool.open(2.0)
    conns = [pool.acquire(1.0) for _ in range(3)]
    for conn in conns:
        pool.release(conn)
    wait_until(lambda: pool.core.state.size == 1)
    assert sorted(reason for _, reason in hooks.closed) == ["idle", "idle"]
    pool.close(1.0)


def test_close_while_connecting_reports_exactly(driver: FakeDriver, hooks: Hooks) -> None:
    driver.delay = 0.05
    pool = GenericPool(config(min_size=3, max_size=3), hooks, driver)
    pool.open(2.0)
    pool.close(2.0)  # the other connects are still in flight: close waits for them
    assert len(hooks.opened) == len(hooks.closed)
    hooks.assert_exact()


def test_threads_are_daemons(driver: FakeDriver, hooks: Hooks) -> None:
    pool = GenericPool(config(min_size=1, max_size=1), hooks, driver)
    pool.open(2.0)
    name = pool.core.name
    ours = [t for t in threading.enumerate() if t.name.startswith(name)]
    assert ours and all(t.daemon for t in ours)
    pool.close(1.0)
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith(name)])


# -- statements abandoned by a cancelled async caller ------------------------------------------


async def _abandon_blocking_statement(conn: Any, raw: FakeRaw) -> None:
    """Start "BLOCK" on ``conn`` and cancel its caller once it runs in the worker."""
    task = asyncio.create_task(conn.execute("BLOCK", ()))
    await asyncio.to_thread(raw.entered.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_async_abandoned_statement_is_cancelled_before_the_next_is_sent(
    driver: FakeDriver, hooks: Hooks
) -> None:
    pool = AsyncGenericPool(config(max_size=1), hooks, driver)
    await pool.open(2.0)
    conn = await pool.acquire(1.0)
    raw = driver.opened[0]
    await _abandon_blocking_statement(conn, raw)
    # The next statement waits for the abandoned one, which the pool cancels on the server.
    assert await conn.execute("SELECT 2", ()) == "SELECT"
    assert raw.executed[-2:] == ["BLOCK", "SELECT 2"]
    assert raw.cancels >= 1
    assert raw.most_at_once == 1
    await pool.release(conn)
    state = pool.core.state
    assert state.idle_count == state.size == 1
    await pool.close(1.0)
    assert hooks.closed == [(1, "pool closed")] and hooks.failed == []
    hooks.assert_exact()


async def test_async_release_waits_for_an_abandoned_statement(
    driver: FakeDriver, hooks: Hooks
) -> None:
    pool = AsyncGenericPool(config(max_size=1), hooks, driver)
    await pool.open(2.0)
    conn = await pool.acquire(1.0)
    raw = driver.opened[0]
    await conn.execute("BEGIN", ())
    await _abandon_blocking_statement(conn, raw)
    await pool.release(conn)
    # Back in the pool once release() returns, never while the statement still ran, and
    # rolled back after it.
    state = pool.core.state
    assert state.idle_count == state.size == 1
    assert raw.executed[-2:] == ["BLOCK", "ROLLBACK"]
    assert raw.most_at_once == 1
    await pool.close(1.0)
    hooks.assert_exact()


async def test_async_statement_deaf_to_cancel_breaks_the_connection_in_bounded_time(
    driver: FakeDriver, hooks: Hooks
) -> None:
    driver.deaf = True
    pool = AsyncGenericPool(config(max_size=1, connect_timeout=0.2), hooks, driver)
    await pool.open(2.0)
    conn = await pool.acquire(1.0)
    raw = driver.opened[0]
    await _abandon_blocking_statement(conn, raw)
    # Still running settle_timeout after the cancel: closed under the statement rather than
    # carrying a second one beside it; the borrower still holds its (broken) slot.
    with pytest.raises(ConnectionError, match="abandoned by a cancelled caller"):
        await conn.execute("SELECT 2", ())
    assert "SELECT 2" not in raw.executed
    assert raw.most_at_once == 1 and raw.cancels >= 1
    state = pool.core.state
    assert state.size == 1 and state.idle_count == 0
    await pool.release(conn, discard=True)
    assert [cid for cid, _ in hooks.closed] == [1]
    assert [cid for _, cid in hooks.failed] == [1]  # reported once
    await pool.close(1.0)
    hooks.assert_exact()


async def test_async_release_of_a_statement_deaf_to_cancel_closes_it(
    driver: FakeDriver, hooks: Hooks
) -> None:
    driver.deaf = True
    pool = AsyncGenericPool(config(max_size=1, connect_timeout=0.2), hooks, driver)
    await pool.open(2.0)
    conn = await pool.acquire(1.0)
    raw = driver.opened[0]
    await _abandon_blocking_statement(conn, raw)
    await pool.release(conn)
    assert hooks.closed == [(1, "broken")] and raw.closed
    state = pool.core.state
    assert state.idle_count == 0 and state.size in (0, 1)  # a replacement may be opening
    await pool.close(1.0)
    hooks.assert_exact()


async def test_async_statements_of_two_tasks_on_one_client_queue_without_cancelling(
    driver: FakeDriver, hooks: Hooks
) -> None:
    pool = AsyncGenericPool(config(max_size=1), hooks, driver)
    await pool.open(2.0)
    conn = await pool.acquire(1.0)
    raw = driver.opened[0]
    first = asyncio.create_task(conn.execute("BLOCK", ()))
    await asyncio.to_thread(raw.entered.wait, 5)
    second = asyncio.create_task(conn.execute("SELECT 2", ()))
    await asyncio.sleep(0)  # the second task is now waiting for the first statement
    assert not second.done() and raw.executed[-1] == "BLOCK"
    raw.unblock.set()  # the first statement ends by itself
    with pytest.raises(RuntimeError):
        await first
    assert await second == "SELECT"
    assert raw.cancels == 0 and raw.most_at_once == 1
    await pool.release(conn)
    await pool.close(1.0)
    hooks.assert_exact()
