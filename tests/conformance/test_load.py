"""Many borrowers on a small pool: fairness, bounded waits and exact books on every backend."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from pgconnector import PoolEvent
from tests.conftest import MakeManager

pytestmark = pytest.mark.integration

POOL_SIZE = 4
HAMMER_SECONDS = 2.0
ACQUIRE_TIMEOUT = 10.0


class SizeWatch:
    """Follows the number of open server connections through connect/remove events."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = 0
        self.peak = 0

    def on_connect(self, event: PoolEvent) -> None:
        with self.lock:
            self.open += 1
            self.peak = max(self.peak, self.open)

    def on_remove(self, event: PoolEvent) -> None:
        with self.lock:
            self.open -= 1


async def _wait_for_waiting(m: Any, count: int, deadline: float) -> None:
    """Until `count` borrowers are queued (the pool's own gauge says so), or fail."""
    while m.get_pool_stats().waiting < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} waiting, stats: {m.get_pool_stats()}")
        await asyncio.sleep(0.005)


@pytest.mark.slow
async def test_hammer_small_pool(make_manager: MakeManager) -> None:
    m = make_manager(min_size=1, max_size=POOL_SIZE, acquire_timeout=ACQUIRE_TIMEOUT)
    watch = SizeWatch()
    m.add_listener("connect", watch.on_connect)
    m.add_listener("remove", watch.on_remove)
    await m.connect()
    errors: list[BaseException] = []
    waits: list[float] = []
    done = 0
    stop_at = time.monotonic() + HAMMER_SECONDS

    if m.mode == "sync":
        manager = m.manager
        lock = threading.Lock()

        def worker(k: int) -> None:
            nonlocal done
            local_waits = []
            count = 0
            try:
                while time.monotonic() < stop_at:
                    started = time.monotonic()
                    with manager.connection() as c:
                        local_waits.append(time.monotonic() - started)
                        assert c.fetchval("SELECT $1::int", k) == k
                    count += 1
            except BaseException as exc:
                with lock:
                    errors.append(exc)
            with lock:
                waits.extend(local_waits)
                done += count

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HAMMER_SECONDS + ACQUIRE_TIMEOUT + 30)
        assert not any(t.is_alive() for t in threads)
    else:
        amanager = m.manager

        async def aworker(k: int) -> None:
            nonlocal done
            try:
                while time.monotonic() < stop_at:
                    started = time.monotonic()
                    async with amanager.connection() as c:
                        waits.append(time.monotonic() - started)
                        assert await c.fetchval("SELECT $1::int", k) == k
                    done += 1
            except BaseException as exc:
                errors.append(exc)

        await asyncio.wait_for(
            asyncio.gather(*(aworker(k) for k in range(200))),
            HAMMER_SECONDS + ACQUIRE_TIMEOUT + 30,
        )

    assert errors == []
    assert done > 0
    assert max(waits) < ACQUIRE_TIMEOUT
    stats = m.get_pool_stats()
    assert stats.in_use == 0
    assert stats.waiting == 0
    assert stats.timeouts == 0
    assert stats.total <= POOL_SIZE
    assert watch.peak <= POOL_SIZE
    assert stats.acquires == done
    assert stats.total == stats.connections_opened - stats.connections_closed
    await m.disconnect()
    stats = m.get_pool_stats()
    assert stats.connections_opened == stats.connections_closed
    assert watch.open == 0
