"""Seed-parity helpers: ``perform_health_check`` and ``fetch_pool_stats``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import overload

from ._pool import ManagedPool
from ._pool import check_pool as _check_sync
from ._pool_async import AsyncManagedPool
from ._pool_async import check_pool as _check_async
from ._stats import ConnectionStatus, PoolStats

__all__ = ["perform_health_check", "fetch_pool_stats"]


@overload
def perform_health_check(
    pool: AsyncManagedPool,
    update_status: Callable[[bool], object] | None = None,
    timeout: float | None = None,
) -> Awaitable[ConnectionStatus]: ...
@overload
def perform_health_check(
    pool: ManagedPool | None,
    update_status: Callable[[bool], object] | None = None,
    timeout: float | None = None,
) -> ConnectionStatus: ...
def perform_health_check(
    pool: ManagedPool | AsyncManagedPool | None,
    update_status: Callable[[bool], object] | None = None,
    timeout: float | None = None,
) -> ConnectionStatus | Awaitable[ConnectionStatus]:
    """Run ``SELECT 1`` through ``pool`` (from ``manager.get_pool()``) and report, calling
    ``update_status(ok)`` with the outcome. Never raises.

    For an async manager's pool it returns an awaitable; ``None`` reports "not connected".
    ``manager.health_check()`` is the same thing with the manager's bookkeeping.
    """
    if isinstance(pool, AsyncManagedPool):
        return _check_async(pool, update_status, timeout)
    return _check_sync(pool, update_status, timeout)


def fetch_pool_stats(pool: ManagedPool | AsyncManagedPool | None) -> PoolStats:
    """The pool's :class:`PoolStats`; all zeros for ``None`` (not connected)."""
    if pool is None:
        return PoolStats()
    return pool.stats()
