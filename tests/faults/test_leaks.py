"""Leak detection (HikariCP's leakDetectionThreshold): a connection held too long is logged
once with the borrower's stack and counted in stats.leaks, on every backend."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.faults.conftest import FaultKit

pytestmark = pytest.mark.integration

GROUP = "Leak detection"


async def _wait_for_leaks(m: object, count: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while m.get_pool_stats().leaks < count:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the leak was never reported"
        await asyncio.sleep(0.02)


async def borrow_and_hold_too_long(m: object) -> object:
    """A function with a name to find in the reported stack."""
    return await m.get_client()  # type: ignore[attr-defined]


@pytest.mark.fault(GROUP, "A connection held past leak_detection_threshold")
async def test_held_connection_is_reported_once_with_the_borrowers_stack(
    faults: FaultKit, caplog: pytest.LogCaptureFixture
) -> None:
    """Held past the threshold (0.2 s), a connection is reported once, as a warning carrying
    the borrower's stack, and counted in stats.leaks (a counter that survives disconnect); it
    stays usable and is released normally."""
    caplog.set_level(logging.WARNING, logger="pgconnector")
    m = faults.manager(min_size=1, max_size=2, leak_detection_threshold=0.2)
    await m.connect()

    # a quick borrow is no leak
    async with m.connection() as c:
        await c.fetchval("SELECT 1")

    held = await borrow_and_hold_too_long(m)
    await _wait_for_leaks(m, 1, limit=10.0)
    assert await held.fetchval("SELECT 1") == 1  # still usable: a slow borrower, not an error
    # held for twice the threshold more (time passing is what is tested here): still once
    await asyncio.sleep(0.4)
    assert m.get_pool_stats().leaks == 1
    await held.release()

    warnings = [r for r in caplog.records if "leak detection" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "borrow_and_hold_too_long" in message
    assert "leak_detection_threshold=0.2" in message
    assert f"connection {held.connection_id}" in message

    async with m.connection() as c:
        await c.fetchval("SELECT 1")
    stats = m.get_pool_stats()
    assert stats.leaks == 1
    assert stats.in_use == 0
    await m.disconnect()
    assert m.get_pool_stats().leaks == 1  # a counter: it survives the disconnect


async def test_no_leak_detection_by_default(faults: FaultKit) -> None:
    m = faults.manager(min_size=1)
    assert m.config.leak_detection_threshold is None
    await m.connect()
    held = await m.get_client()
    await held.release()
    assert m.get_pool_stats().leaks == 0
