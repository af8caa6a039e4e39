# WARNING: generated from _pool_async.py by tools/unasync.py; do not edit by hand.
"""ConnectionManager and the managed pool it hands out (sync).

``_pool.py`` is generated from ``_pool.py`` by ``tools/unasync.py``. Blocks that
differ are fenced by ``# ASYNC`` / ``# END``; inside them, ``# SYNC: code`` lines become the
sync version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import Any

from ._acompat import Event, Lock, wait_event
from ._client import Client
from ._config import PoolConfig
from ._events import EventName, Listener, LoggerLike
from ._hosts import accepts, describe_state, open_budget, state_from_parameters
from ._leaks import LeakDetector
from ._listen import NotificationStream
from ._listen_base import check_channels
from ._protocols import DriverConnection, PoolBackend
from ._redact import redact
from ._registry import resolve_backend
from ._stats import ConnectionStatus, PoolGauges, PoolMonitor, PoolStats, utcnow
from .errors import (
    ConfigError,
    ConnectionError,
    PgConnectorError,
    PoolTimeoutError,
    UnsupportedBackendError,
)

# isort: split
__all__ = ["Borrow", "ConnectionManager", "ManagedPool", "check_pool"]

NOT_CONNECTED = "Not connected to database. Call connect() first."
CLOSED_WHILE_WAITING = (
    "disconnect() closed the pool while this borrow waited for a connection; connect() again"
)
# The target_session_attrs that a connected server can stop meeting.
_CHECKED_ATTRS = frozenset({"read-write", "read-only", "primary", "standby"})


class ManagedPool:
    """The pool that :meth:`ConnectionManager.get_pool` returns.

    It wraps the backend's pool (``.backend``; the driver's own pool is ``.native``) with the
    core's bookkeeping, so that borrowing through it is counted in the stats and fires events
    exactly as borrowing through the manager does.

    Its gauges are its own (a :class:`~pgconnector._stats.PoolGauges`, one per ``connect()``):
    a borrow still running when the pool closes is counted out where it was counted in.
    """

    def __init__(
        self,
        backend: PoolBackend,
        gauges: PoolGauges,
        config: PoolConfig,
        backend_name: str,
        secrets: tuple[str, ...],
        logger: LoggerLike,
    ) -> None:
        self.backend = backend
        self.backend_name = backend_name
        self._gauges = gauges
        self._monitor = monitor = gauges.monitor
        self._config = config
        self._secrets = secrets
        self._outstanding: set[Client] = set()
        # Guards _outstanding, _closing and each client's _released: a client is given back
        # exactly once, by its borrower or by close(), whichever comes first (in the sync
        # manager they are different threads), and close() never misses a borrow granted
        # while it takes stock. Never held across I/O or while listeners run.
        self._lock = threading.Lock()
        self._logger = logger
        # Kept only for the requirements a server can stop meeting while connected (a primary
        # fenced read-only, a standby promoted): connections are then retired, not reused.
        want = config.connect_params().target_session_attrs
        self._want = want if want in _CHECKED_ATTRS else None
        self._closing = False
        self._drained = Event()
        threshold = config.leak_detection_threshold
        self._leaks = (
            None if threshold is None else LeakDetector(threshold, backend_name, monitor, logger)
        )

    @property
    def native(self) -> Any:
        """The driver's own pool object."""
        return self.backend.native

    def stats(self) -> PoolStats:
        return self._monitor.snapshot(self._gauges)

    def acquire(self, timeout: float | None = None) -> Client:
        """Borrow a client, waiting up to ``timeout`` (default: ``acquire_timeout``)."""
        wait = self._config.acquire_timeout if timeout is None else timeout
        monitor = self._monitor
        gauges = self._gauges
        # The clock is read only while a metrics sink listens: one attribute test otherwise.
        started = time.perf_counter() if monitor.sinks else 0.0
        gauges.wait_started()
        try:
            conn = self.backend.acquire(wait)
            if self._want is not None:
                conn = self._matching(conn, wait)
        except PoolTimeoutError as exc:
            gauges.wait_timed_out()
            stats = self.stats()
            raise PoolTimeoutError(
                f"no connection became free within {wait:g} s (backend {self.backend_name}, "
                f"max_size={stats.max_size}, in use={stats.in_use}, "
                f"waiting={stats.waiting + 1}); raise max_size or acquire_timeout, or release "
                "connections sooner",
                exc.cause,
            ) from exc
        except PgConnectorError:
            gauges.wait_failed()
            raise
        except BaseException as exc:
            gauges.wait_failed()
            if isinstance(exc, Exception):
                raise ConnectionError(
                    f"could not acquire a connection: {redact(str(exc), self._secrets)}", exc
                ) from exc
            raise
        client = Client(conn, self)
        with self._lock:
            closing = self._closing
            if not closing:
                # Counted before close() can see it, so close() never counts it out first.
                gauges.acquired()
                self._outstanding.add(client)
        if closing:
            # Granted after close() took stock of the borrowed connections: it is not this
            # borrower's to use, and goes straight back to be closed.
            gauges.wait_failed()
            self.backend.release(conn, discard=True)
            raise ConnectionError(CLOSED_WHILE_WAITING)
        monitor.emit("acquire", conn.connection_id)
        if started:
            client._granted = granted = time.perf_counter()
            monitor.waited(granted - started)
        if self._leaks is not None:
            self._leaks.borrowed(client, conn.connection_id)
        return client

    def release(self, client: Client) -> None:
        """Give a client back (what ``client.release()`` calls). Idempotent."""
        if client._released:
            return
        if client._pool is not self:
            raise ConfigError(
                "this Client belongs to another pool; release it with client.release()",
                field="client",
            )
        with self._lock:
            if client._released:
                return  # close() took it away meanwhile
            client._released = True
            self._outstanding.discard(client)
            drained = self._closing and not self._outstanding
        conn = client._conn
        if self._leaks is not None:
            self._leaks.returned(client)
        self._gauges.released()
        self._monitor.emit("release", conn.connection_id)
        if client._granted:
            self._monitor.used(time.perf_counter() - client._granted)
        if drained:
            self._drained.set()
        discard = client._broken
        if self._want is not None and not discard and self._mismatch(conn) is not None:
            discard = True
        # Safe against cancellation: that is the backend's part of the contract.
        self.backend.release(conn, discard=discard)

    def _mismatch(self, conn: DriverConnection) -> tuple[bool, bool] | None:
        """The server's state, when the server reported it and it no longer matches
        ``target_session_attrs`` (PostgreSQL 14+ reports a promotion or a reload that turns
        ``default_transaction_read_only`` on as soon as the session next talks to it)."""
        assert self._want is not None
        state = state_from_parameters(conn.server_parameter)
        if state is None or accepts(self._want, *state):
            return None
        return state

    def _matching(self, conn: DriverConnection, wait: float) -> DriverConnection:
        """Retire connections whose server no longer matches, borrowing others instead."""
        deadline = time.monotonic() + wait
        while (state := self._mismatch(conn)) is not None:
            self._logger.warning(
                "Retiring connection %d: its server is now %s, not %s as "
                "target_session_attrs requires",
                conn.connection_id,
                describe_state(*state),
                self._want,
            )
            self.backend.release(conn, discard=True)
            conn = self.backend.acquire(max(deadline - time.monotonic(), 0.0))
        return conn

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for checked-out clients, discard the rest, close the pool.

        A borrower whose client is taken away gets a :class:`~pgconnector.ConnectionError`
        from the statement it is running (the backend cancels it on the server before closing
        the connection) or from its next one; so does one still waiting for a connection."""
        with self._lock:
            self._closing = True
            busy = bool(self._outstanding)
        if busy:
            wait_event(self._drained, timeout)
        if self._leaks is not None:
            self._leaks.stop()
        with self._lock:
            # Still checked out after the grace period: take the connections away from their
            # borrowers (whose later release() is then a no-op) and close them.
            revoked = list(self._outstanding)
            self._outstanding.clear()
            for client in revoked:
                client._released = client._revoked = True
        for client in revoked:
            conn = client._conn
            self._gauges.released()
            self._monitor.emit("release", conn.connection_id)
            try:
                self.backend.release(conn, discard=True)
            except Exception as exc:
                self._monitor.connection_failed(exc, conn.connection_id)
        self.backend.close(timeout)


def check_pool(
    pool: ManagedPool | None,
    update_status: Callable[[bool], object] | None = None,
    timeout: float | None = None,
) -> ConnectionStatus:
    """Run ``SELECT 1`` through ``pool`` and report; never raises.

    ``update_status(ok)`` is called with the outcome (the manager uses it to keep
    ``is_initialized()`` honest). ``timeout`` bounds waiting for a connection and, in async
    code, the whole check.
    """
    if pool is None:
        if update_status is not None:
            update_status(False)
        return ConnectionStatus(
            connected=False,
            pool_stats=PoolStats(),
            last_checked=utcnow(),
            error=NOT_CONNECTED,
        )
    limit = pool._config.connect_timeout if timeout is None else timeout
    started = time.perf_counter()
    try:
        _select_one(pool, limit)
    except Exception as exc:
        if update_status is not None:
            update_status(False)
        message = str(exc) or type(exc).__name__
        return ConnectionStatus(
            connected=False,
            pool_stats=pool.stats(),
            last_checked=utcnow(),
            error=redact(message, pool._secrets),
        )
    latency_ms = (time.perf_counter() - started) * 1000.0
    if update_status is not None:
        update_status(True)
    return ConnectionStatus(
        connected=True,
        pool_stats=pool.stats(),
        last_checked=utcnow(),
        latency_ms=latency_ms,
    )


def _select_one(pool: ManagedPool, timeout: float) -> None:
    client = pool.acquire(timeout)
    state = None
    try:
        value = client.fetchval("SELECT 1")
        if pool._want is not None:
            state = pool._mismatch(client._conn)
    finally:
        client.release()  # retires the connection if its server no longer matches
    if value != 1:
        raise ConnectionError(f"health check query returned {value!r} instead of 1")
    if state is not None:
        raise ConnectionError(
            f"the server is now {describe_state(*state)}, not {pool._want} as "
            "target_session_attrs requires; the connection was retired, and the next borrow "
            "connects to a server that matches"
        )


class ConnectionManager:
    """Owns one PostgreSQL pool for a threaded or plain-Python application.

    Build it once (no I/O happens until :meth:`connect`), connect at start-up, borrow with
    ``with manager.connection() as client:``, check readiness with
    :meth:`health_check`, and :meth:`disconnect` at shutdown. ``with manager:`` does
    the connecting and disconnecting for you.
    """

    def __init__(
        self,
        config: PoolConfig | str,
        *,
        backend: str | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        if isinstance(config, str):
            config = PoolConfig.from_dsn(config)
        elif not isinstance(config, PoolConfig):
            raise ConfigError(
                f"config must be a PoolConfig or a DSN string, not {type(config).__name__}",
                field="config",
            )
        plugin = resolve_backend(config, backend, "sync")
        if config.backend != plugin.name:
            config = replace(config, backend=plugin.name)
        params = config.connect_params()
        self._config = config
        self._plugin = plugin
        self._secrets = tuple(s for s in {config.password, params.password} if s)
        self._logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("pgconnector")
        )
        self._monitor = PoolMonitor(
            plugin.name, config.min_size, config.max_size, self._logger, self._secrets
        )
        self._pool: ManagedPool | None = None
        self._lock = Lock()
        self._initialized = False

    @property
    def config(self) -> PoolConfig:
        return self._config

    @property
    def backend_name(self) -> str:
        return self._plugin.name

    def _set_initialized(self, ok: bool) -> None:
        self._initialized = ok

    def connect(self) -> ManagedPool:
        """Create the pool and verify one real connection; idempotent and safe to call
        concurrently (every caller gets the same pool).

        Raises :class:`~pgconnector.ConnectionError` (driver error as ``.cause``) if the server
        cannot be reached; a later call tries again.
        """
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._pool is not None:
                return self._pool
            # A generation of gauges of its own: whatever of this pool outlives disconnect()
            # is counted out there, never in the next pool's numbers.
            gauges = self._monitor.generation()
            backend_pool = self._plugin.create_pool(self._config, gauges)
            try:
                backend_pool.open(open_budget(self._config.connect_params()))
            except Exception as exc:
                error = exc
                if not isinstance(exc, ConnectionError):
                    error = ConnectionError(
                        f"could not connect to {self._config.safe_dsn()}: "
                        f"{redact(str(exc), self._secrets)}",
                        exc,
                    )
                self._logger.error(
                    "Failed to connect to PostgreSQL (%s backend): %s",
                    self._plugin.name,
                    redact(str(error), self._secrets),
                )
                if error is exc:
                    raise
                raise error from exc
            self._pool = ManagedPool(
                backend_pool,
                gauges,
                self._config,
                self._plugin.name,
                self._secrets,
                self._logger,
            )
            self._initialized = True
            self._logger.info(
                "PostgreSQL connection pool established (%s backend, %s)",
                self._plugin.name,
                self._config.safe_dsn(),
            )
            return self._pool

    def disconnect(self, timeout: float = 10.0) -> None:
        """Close the pool: wait up to ``timeout`` s for checked-out connections, then close them
        anyway. A no-op when not connected; a later :meth:`connect` builds a fresh pool."""
        with self._lock:
            pool = self._pool
            if pool is None:
                return
            self._pool = None
            self._initialized = False
            try:
                pool.close(timeout)
            except PgConnectorError:
                raise
            except Exception as exc:
                raise ConnectionError(
                    f"error while closing the pool: {redact(str(exc), self._secrets)}", exc
                ) from exc
            self._logger.info("PostgreSQL connection pool closed (%s backend)", self._plugin.name)

    def health_check(self, timeout: float | None = None) -> ConnectionStatus:
        """Run ``SELECT 1`` through the pool within ``timeout`` (default: ``connect_timeout``)
        and report. Never raises; updates :meth:`is_initialized`."""
        pool = self._pool
        if pool is None:
            return ConnectionStatus(
                connected=False,
                pool_stats=self._monitor.snapshot(),
                last_checked=utcnow(),
                error=NOT_CONNECTED,
            )
        return check_pool(pool, self._set_initialized, timeout)

    def get_pool(self) -> ManagedPool:
        """The managed pool; raises :class:`~pgconnector.ConnectionError` before connect()."""
        pool = self._pool
        if pool is None:
            raise ConnectionError(NOT_CONNECTED)
        return pool

    def get_client(self, timeout: float | None = None) -> Client:
        """Borrow a client; you must ``client.release()`` it. Prefer :meth:`connection`.

        Raises :class:`~pgconnector.PoolTimeoutError` when none is free within ``timeout``
        (default: ``acquire_timeout``) — a sign that the pool is too small or that
        connections are held too long.
        """
        pool = self._pool
        if pool is None:
            raise ConnectionError(NOT_CONNECTED)
        return pool.acquire(timeout)

    def connection(self, timeout: float | None = None) -> Borrow:
        """``with manager.connection() as client:`` borrows and always releases."""
        return Borrow(self, timeout)

    def listen(
        self,
        *channels: str,
        on_reconnect: Callable[[NotificationStream], Any] | None = None,
    ) -> NotificationStream:
        """``with manager.listen("jobs") as stream:`` LISTENs on a dedicated connection
        (opened with the pool's parameters, outside ``max_size`` and the pool's stats) until
        the block ends; ``for n in stream`` yields each
        :class:`~pgconnector.Notification`. If the connection is lost, the stream reconnects
        by itself, counts it in ``stream.reconnects`` and calls ``on_reconnect(stream)``.

        Channel names are identifiers, quoted as such (case kept). Raises
        :class:`~pgconnector.ConfigError` for no channel or an empty name, and
        :class:`~pgconnector.ConnectionError` before connect(), both before any I/O. The
        stream does not depend on the pool once open: disconnect() leaves it alone.
        """
        names = check_channels(channels)
        if self._pool is None:
            raise ConnectionError(NOT_CONNECTED)
        opener = "open_listener"
        if not callable(getattr(self._plugin, opener, None)):
            raise UnsupportedBackendError(
                f"the {self._plugin.name} backend does not support listen() ({opener}() is "
                "missing)"
            )
        return NotificationStream(
            self._plugin, self._config, names, on_reconnect, self._secrets, self._logger
        )

    def get_pool_stats(self) -> PoolStats:
        """Current pool numbers; cheap, never does I/O. Zeros (but the counters) when not
        connected."""
        pool = self._pool
        return self._monitor.snapshot() if pool is None else pool.stats()

    def is_initialized(self) -> bool:
        """True after a verified connect, until disconnect() or a failed health check."""
        return self._initialized and self._pool is not None

    def add_listener(self, event: EventName | str, callback: Listener) -> None:
        """Call ``callback(PoolEvent)`` on every ``event``: connect, acquire, release, remove,
        error. Listeners run synchronously in the pool's code path: keep them quick."""
        self._monitor.add_listener(event, callback)

    def remove_listener(self, event: EventName | str, callback: Listener) -> None:
        self._monitor.remove_listener(event, callback)

    def __enter__(self) -> ConnectionManager:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        state = "connected" if self._pool is not None else "not connected"
        return (
            f"<{type(self).__name__} backend={self._plugin.name} "
            f"{self._config.safe_dsn()} {state}>"
        )


class Borrow:
    """What :meth:`ConnectionManager.connection` returns: borrows on enter, releases on
    exit. A plain class rather than ``@contextmanager``, which costs a generator and its
    machinery on every borrow (the path every query of an application takes)."""

    __slots__ = ("_client", "_manager", "_timeout")

    def __init__(self, manager: ConnectionManager, timeout: float | None) -> None:
        self._manager = manager
        self._timeout = timeout
        self._client: Client | None = None

    def __enter__(self) -> Client:
        self._client = client = self._manager.get_client(self._timeout)
        return client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client = self._client
        if client is not None:
            self._client = None
            client.release()
