"""What the read/write routers share: their result types and the routing state (no I/O).

``AsyncReadWriteRouter`` (``_router_async.py``) and its generated twin ``ReadWriteRouter``
(``_router.py``) only wait; every decision about where a read goes — is the replica serving,
is it time to try it again, which borrower tries it, what to count and what to log — is made
here, once, under one lock that is never held while waiting.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from ._stats import ConnectionStatus, PoolStats

if TYPE_CHECKING:
    from ._events import LoggerLike

__all__ = ["ReadTarget", "ReplicaRouting", "RouterStats", "RouterStatus"]


@dataclass(frozen=True)
class RouterStats:
    """A snapshot of a read/write router (``router.get_pool_stats()``).

    ``primary`` and ``replica`` are the two managers' own :class:`PoolStats`.
    ``replica_reads`` counts read borrows served by the replica, ``fallback_reads`` read
    borrows served by the primary because the replica was down; both are cumulative since
    the router was built. ``replica_serving`` is False while reads fall back to the primary.
    """

    primary: PoolStats
    replica: PoolStats
    replica_reads: int = 0
    fallback_reads: int = 0
    replica_serving: bool = False


@dataclass(frozen=True)
class RouterStatus:
    """The result of ``router.health_check()``: one :class:`ConnectionStatus` per server.

    ``connected`` is the primary's: True when writes can be served. A replica that is down
    makes reads slower to no one (they fall back to the primary), so it does not make the
    router unhealthy; alert on ``replica.connected`` separately if you care.
    """

    connected: bool
    primary: ConnectionStatus
    replica: ConnectionStatus


class ReadTarget(Enum):
    """Where one read borrow should go."""

    REPLICA = "replica"
    #: the replica is marked down and this borrower was chosen to find out if it is back
    PROBE = "probe"
    PRIMARY = "primary"


class ReplicaRouting:
    """Whether reads go to the replica, and the counters. Thread-safe; never waits.

    A replica is either *serving* or *down*. While down, reads go straight to the primary
    without touching the replica, so a replica that hangs on connect costs nothing per read;
    every ``retry_interval`` seconds exactly one read borrower (a *probe*) tries it again.
    Only a probe brings the replica back: a borrow that started before the replica was marked
    down and happened to succeed proves little, and letting it flip the state would log a
    recovery that is not one.
    """

    def __init__(self, retry_interval: float, logger: LoggerLike, replica_name: str) -> None:
        self.retry_interval = retry_interval
        self._logger = logger
        self._replica_name = replica_name
        self._lock = threading.Lock()
        self._serving = False
        self._retry_at = 0.0
        self._replica_reads = 0
        self._fallback_reads = 0
        self.last_error: str | None = None

    @property
    def serving(self) -> bool:
        return self._serving

    @property
    def replica_reads(self) -> int:
        return self._replica_reads

    @property
    def fallback_reads(self) -> int:
        return self._fallback_reads

    def reset(self) -> None:
        """Forget the replica's state (at disconnect); the counters are kept."""
        with self._lock:
            self._serving = False
            self._retry_at = 0.0
            self.last_error = None

    def connected(self) -> None:
        """The replica connected when the router did."""
        with self._lock:
            self._serving = True
            self.last_error = None

    def choose(self) -> ReadTarget:
        """Where the next read borrow goes; at most one borrower per interval gets PROBE."""
        with self._lock:
            if self._serving:
                return ReadTarget.REPLICA
            now = time.monotonic()
            if now < self._retry_at:
                return ReadTarget.PRIMARY
            # Claimed: the next borrowers keep falling back while this one finds out.
            self._retry_at = now + self.retry_interval
            return ReadTarget.PROBE

    def replica_served(self, target: ReadTarget) -> None:
        """A read borrow from the replica succeeded."""
        with self._lock:
            self._replica_reads += 1
            recovered = target is ReadTarget.PROBE and not self._serving
            if recovered:
                self._serving = True
                self.last_error = None
        if recovered:
            self._logger.info(
                "Read replica %s is serving again; reads go back to it", self._replica_name
            )

    def replica_failed(self, error: str, *, at_connect: bool = False) -> None:
        """The replica could not be connected when the router was (``at_connect``), or a read
        borrow from it failed with a connection error (not a timeout)."""
        with self._lock:
            went_down = self._serving or at_connect
            self._serving = False
            self._retry_at = time.monotonic() + self.retry_interval
            self.last_error = error
        # Once per outage, however many borrowers were failing at the same moment.
        if went_down:
            self._logger.warning(
                "Read replica %s is unavailable; reads fall back to the primary, and the "
                "replica is tried again every %g s: %s",
                self._replica_name,
                self.retry_interval,
                error,
            )

    def fallback_served(self) -> None:
        """A read borrow was served by the primary in place of the replica."""
        with self._lock:
            self._fallback_reads += 1

    def stats(self, primary: PoolStats, replica: PoolStats) -> RouterStats:
        with self._lock:
            return RouterStats(
                primary=primary,
                replica=replica,
                replica_reads=self._replica_reads,
                fallback_reads=self._fallback_reads,
                replica_serving=self._serving,
            )
