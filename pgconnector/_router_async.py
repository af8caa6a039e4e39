"""AsyncReadWriteRouter: writes to a primary, reads to a read replica (async).

The sync twin is generated from the async source by ``tools/unasync.py``. Blocks that differ
are fenced by ``# ASYNC`` / ``# END``; inside them, ``# SYNC: code`` lines become the sync
version. The routing decisions live in ``_router_base.py``, shared by both twins.
"""

from __future__ import annotations

# ASYNC
import asyncio

# END
import logging
import math
from dataclasses import replace
from types import TracebackType

from ._acompat import ALock
from ._client_async import AsyncClient
from ._config import PoolConfig
from ._events import LoggerLike
from ._pool_async import NOT_CONNECTED, AsyncConnectionManager
from ._redact import redact
from ._router_base import ReadTarget, ReplicaRouting, RouterStats, RouterStatus
from .errors import ConfigError, ConnectionError, PoolTimeoutError

__all__ = ["AsyncReadWriteRouter", "AsyncRouterBorrow"]


class AsyncReadWriteRouter:
    """Writes to a primary, reads to a read replica, for an asyncio application.

    Two :class:`AsyncConnectionManager` s underneath (``.primary`` and ``.replica``), built
    with the same ``backend`` and ``logger``; the clients it hands out are theirs, and are
    released to the pool they came from. Borrow with
    ``async with router.connection(readonly=True) as client:`` for a read and
    ``async with router.connection() as client:`` for anything else.

    A read goes to the replica while it is up. When a borrow from the replica fails with a
    :class:`~pgconnector.ConnectionError` (including the fail-fast error a pool raises while
    its server is unreachable), reads fall back to the primary, with one warning logged; the
    replica is not touched again until ``replica_retry_interval`` seconds have passed, when
    one read tries it (so a replica that hangs costs one ``connect_timeout`` per interval, not
    one per read). When it answers, reads go back to it, with one info line logged. A
    :class:`~pgconnector.PoolTimeoutError` from the replica is raised, not fallen back from:
    a busy replica is not a down one, and moving its load to the primary would hide it.

    When **not** to use it — the router routes each borrow, it knows nothing of your data:

    * **Read-your-writes.** A replica replays the primary's changes with a delay (replication
      lag; the router does not measure it). A read that must see a write just made — the
      page shown after a form is saved — must be borrowed with ``readonly=False``.
    * **Transactions that read and write.** Run the whole transaction on one primary client
      (``readonly=False``); the router never moves a borrowed connection between servers.
    * **Session state** (``SET``, temporary tables, ``LISTEN``, advisory locks) lives on the
      server the client came from.
    * **``readonly=True`` is a routing hint, not a guard.** During a fallback the client is a
      primary connection and would accept a write that the replica refuses.
    * **A primary that cannot take the read load.** Falling back moves every read to the
      primary; if it cannot carry them, let reads fail instead (borrow from ``.replica``).
    * **Several replicas, or primary failover** are the DSNs' job, not the router's: give
      ``primary`` every node with ``target_session_attrs=read-write`` and ``replica`` the
      replicas with ``target_session_attrs=standby`` (or ``prefer-standby``, which falls back
      inside the pool) and ``load_balance_hosts=random``; each pool then follows a failover
      by itself.

    The router chooses a server when a client is borrowed, never later: a query that fails on
    a borrowed replica client raises as it would on any client, and the next read borrow falls
    back. The replica is whatever server ``replica`` points at; the router does not check that
    it is a standby, nor how far behind it is.

    :param primary: the primary's config or DSN (writes, and reads during a fallback).
    :param replica: the replica's config or DSN.
    :param backend: the backend for both managers (as :class:`AsyncConnectionManager`'s).
    :param logger: for both managers and the router's own warning and info lines.
    :param replica_retry_interval: seconds between tries of a replica that is down; 0 tries it
        on every read (each one then pays for the attempt).

    Construction does no I/O.
    """

    def __init__(
        self,
        primary: PoolConfig | str,
        replica: PoolConfig | str,
        *,
        backend: str | None = None,
        logger: LoggerLike | None = None,
        replica_retry_interval: float = 5.0,
    ) -> None:
        if (
            isinstance(replica_retry_interval, bool)
            or not isinstance(replica_retry_interval, (int, float))
            or not math.isfinite(replica_retry_interval)
            or replica_retry_interval < 0
        ):
            raise ConfigError(
                "replica_retry_interval must be a finite number of seconds >= 0, not "
                f"{replica_retry_interval!r}",
                field="replica_retry_interval",
            )
        self._logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("pgconnector")
        )
        self._primary = AsyncConnectionManager(primary, backend=backend, logger=self._logger)
        self._replica = AsyncConnectionManager(replica, backend=backend, logger=self._logger)
        self._routing = ReplicaRouting(
            float(replica_retry_interval), self._logger, self._replica.config.safe_dsn()
        )
        self._lock = ALock()
        self._connected = False

    @property
    def primary(self) -> AsyncConnectionManager:
        """The manager that serves writes (and reads while the replica is down)."""
        return self._primary

    @property
    def replica(self) -> AsyncConnectionManager:
        """The manager that serves reads while its server is up."""
        return self._replica

    @property
    def replica_retry_interval(self) -> float:
        return self._routing.retry_interval

    def _replica_error(self, exc: BaseException) -> str:
        # The managers' messages are redacted already; this is a second belt.
        return redact(str(exc) or type(exc).__name__, self._replica._secrets)

    async def connect(self) -> None:
        """Connect the primary, then try the replica; idempotent and safe to call concurrently.

        Raises :class:`~pgconnector.ConnectionError` if the primary cannot be reached (a later
        call tries again). A replica that cannot be reached is logged as a warning and reads go
        to the primary until it answers; it costs this call up to its ``connect_timeout``.
        """
        if self._connected:
            return
        async with self._lock:
            if self._connected:
                return
            await self._primary.connect()
            try:
                await self._replica.connect()
            except ConnectionError as exc:
                self._routing.replica_failed(self._replica_error(exc), at_connect=True)
            else:
                self._routing.connected()
            self._connected = True

    async def disconnect(self, timeout: float = 10.0) -> None:
        """Close both pools, each waiting up to ``timeout`` s for its checked-out connections.
        A no-op when not connected; the counters of :meth:`get_pool_stats` are kept."""
        async with self._lock:
            # First, so that a read probing the replica from now on does not reconnect it.
            self._connected = False
            self._routing.reset()
            try:
                await self._replica.disconnect(timeout)
            finally:
                await self._primary.disconnect(timeout)

    async def get_client(
        self, *, readonly: bool = False, timeout: float | None = None
    ) -> AsyncClient:
        """Borrow a client; you must ``await client.release()`` it. Prefer :meth:`connection`.

        ``readonly=False`` borrows from the primary. ``readonly=True`` borrows from the
        replica, or from the primary while the replica is down. ``timeout`` (default: the
        pool's ``acquire_timeout``) applies to each pool tried. Raises
        :class:`~pgconnector.PoolTimeoutError` when the pool chosen has no free connection in
        time (the replica's included: that is not a fallback), and
        :class:`~pgconnector.ConnectionError` when not connected or the primary is down.
        """
        if not readonly:
            return await self._primary.get_client(timeout)
        if not self._connected:
            raise ConnectionError(NOT_CONNECTED)
        target = self._routing.choose()
        if target is not ReadTarget.PRIMARY:
            try:
                client = await self._borrow_from_replica(target, timeout)
            except PoolTimeoutError:
                raise
            except ConnectionError as exc:
                self._routing.replica_failed(self._replica_error(exc))
            else:
                self._routing.replica_served(target)
                return client
        client = await self._primary.get_client(timeout)
        self._routing.fallback_served()
        return client

    async def _borrow_from_replica(
        self, target: ReadTarget, timeout: float | None
    ) -> AsyncClient:
        if target is ReadTarget.PROBE:
            # The replica may never have connected (it was down at connect()); when it did,
            # this returns at once.
            await self._replica.connect()
            if not self._connected:
                # disconnect() ran while this probe was connecting: leave no pool behind it.
                await self._replica.disconnect()
                raise ConnectionError(NOT_CONNECTED)
        return await self._replica.get_client(timeout)

    def connection(
        self, *, readonly: bool = False, timeout: float | None = None
    ) -> AsyncRouterBorrow:
        """``async with router.connection(readonly=True) as client:`` borrows (as
        :meth:`get_client` does) and always releases."""
        return AsyncRouterBorrow(self, readonly, timeout)

    def get_pool_stats(self) -> RouterStats:
        """Both pools' numbers and the routing counters; cheap, never does I/O."""
        return self._routing.stats(self._primary.get_pool_stats(), self._replica.get_pool_stats())

    async def health_check(self, timeout: float | None = None) -> RouterStatus:
        """Check both servers (``SELECT 1`` through each pool, within ``timeout``) and report.

        Never raises, and changes no routing: reads go back to a replica only when a read finds
        it serving. ``connected`` is True when writes can be served.
        """
        # ASYNC
        primary, replica = await asyncio.gather(
            self._primary.health_check(timeout), self._replica.health_check(timeout)
        )
        # SYNC: primary = self._primary.health_check(timeout)
        # SYNC: replica = self._replica.health_check(timeout)
        # END
        error = self._routing.last_error
        if self._connected and replica.error == NOT_CONNECTED and error is not None:
            # A replica that was down at connect() has no pool to check; say why it has none.
            replica = replace(replica, error=error)
        return RouterStatus(connected=primary.connected, primary=primary, replica=replica)

    async def __aenter__(self) -> AsyncReadWriteRouter:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    def __repr__(self) -> str:
        if not self._connected:
            state = "not connected"
        elif self._routing.serving:
            state = "reads on replica"
        else:
            state = "reads on primary"
        return (
            f"<{type(self).__name__} primary={self._primary.config.safe_dsn()} "
            f"replica={self._replica.config.safe_dsn()} {state}>"
        )


class AsyncRouterBorrow:
    """What :meth:`AsyncReadWriteRouter.connection` returns: borrows on enter, releases on
    exit (a plain class, like the manager's, to keep the per-borrow cost down)."""

    __slots__ = ("_client", "_readonly", "_router", "_timeout")

    def __init__(
        self, router: AsyncReadWriteRouter, readonly: bool, timeout: float | None
    ) -> None:
        self._router = router
        self._readonly = readonly
        self._timeout = timeout
        self._client: AsyncClient | None = None

    async def __aenter__(self) -> AsyncClient:
        self._client = client = await self._router.get_client(
            readonly=self._readonly, timeout=self._timeout
        )
        return client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client = self._client
        if client is not None:
            self._client = None
            await client.release()
