"""What the OpenTelemetry and Prometheus integrations share: pool names, buckets, sources."""

from __future__ import annotations

import threading
import weakref
from typing import TypeAlias

from .._pool import ConnectionManager
from .._pool_async import AsyncConnectionManager
from .._stats import PoolMonitor, PoolStats

__all__ = ["HISTOGRAM_BUCKETS", "AnyManager", "PoolSource", "default_pool_name", "source_for"]

AnyManager: TypeAlias = ConnectionManager | AsyncConnectionManager

#: Upper bounds (seconds) of the wait, use and create time histograms. OpenTelemetry's
#: default buckets (0, 5, 10, 25, … 10000) suit milliseconds and would put every pool wait
#: in the first one; a borrow from a warm pool takes microseconds, a connect milliseconds,
#: a starved wait or a long transaction seconds.
HISTOGRAM_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)

# One default name per manager (keyed by its monitor, which lives as long as the manager), so
# that the OpenTelemetry and Prometheus views of one manager agree, and two managers never
# share one.
_names_lock = threading.Lock()
_default_names: weakref.WeakKeyDictionary[PoolMonitor, str] = weakref.WeakKeyDictionary()


def _check_manager(manager: object) -> AnyManager:
    if not isinstance(manager, (ConnectionManager, AsyncConnectionManager)):
        raise TypeError(
            "expected a pgconnector ConnectionManager or AsyncConnectionManager, not "
            f"{type(manager).__name__}"
        )
    return manager


def default_pool_name(manager: AnyManager) -> str:
    """The pool name a manager reports under when none is given.

    As the OpenTelemetry conventions suggest for a pool without a name of its own:
    ``server.address:server.port/db.namespace`` of the configured target, e.g.
    ``db.example.com:5432/app`` (every host of a multi-host DSN, comma-separated). A second
    live manager with the same target gets ``#2`` appended, a third ``#3``, in the order they
    are first instrumented — pass ``pool_name=`` where the name must not depend on that order.
    Never contains the user name or password.
    """
    monitor = _check_manager(manager)._monitor
    with _names_lock:
        name = _default_names.get(monitor)
        if name is None:
            params = manager.config.connect_params()
            hosts = ",".join(f"{host}:{port}" for host, port in params.endpoints)
            base = name = f"{hosts}/{params.database}"
            taken = set(_default_names.values())
            suffix = 2
            while name in taken:
                name = f"{base}#{suffix}"
                suffix += 1
            _default_names[monitor] = name
    return name


class PoolSource:
    """One instrumented manager, as an exporter reads it.

    Holds the manager weakly: instrumentation does not keep a dropped manager alive, and a
    collected one simply stops reporting.
    """

    __slots__ = ("_manager", "monitor", "name")

    def __init__(self, manager: AnyManager, name: str) -> None:
        self._manager = weakref.ref(manager)
        self.monitor: PoolMonitor = manager._monitor
        self.name = name

    def stats(self) -> PoolStats | None:
        """The manager's current stats (no I/O), or None once it was garbage-collected."""
        manager = self._manager()
        return None if manager is None else manager.get_pool_stats()

    def is_for(self, manager: AnyManager) -> bool:
        return self._manager() is manager


def source_for(manager: object, pool_name: str | None) -> PoolSource:
    checked = _check_manager(manager)
    if pool_name is None:
        pool_name = default_pool_name(checked)
    elif not isinstance(pool_name, str) or not pool_name:
        raise ValueError("pool_name must be a non-empty string")
    return PoolSource(checked, pool_name)
