"""The contracts between the core and a backend.

A backend is a distribution that registers one object (a :class:`Backend`) in the entry-point
group ``pgconnector.backends``. The core asks that object for a *pool* for the manager's mode
(:class:`PoolBackend` for the sync manager, :class:`AsyncPoolBackend` for the async one), and the
pool hands out *driver connections* (:class:`DriverConnection` / :class:`AsyncDriverConnection`).

Everything users see (the managers, :class:`~pgconnector.Client`, :class:`~pgconnector.Row`,
stats, events, health checks, errors) is written once in the core on top of these few methods,
which is what makes it behave the same on every backend. A backend therefore only has to:

* open server connections with the resolved :class:`~pgconnector.ConnectParams`, in autocommit
  mode, and tell the core about each one through :class:`PoolHooks`;
* keep them in a pool sized and maintained as the :class:`~pgconnector.PoolConfig` says;
* run one statement with ``$1``-style arguments and decode the result;
* translate connection-level driver failures into :class:`pgconnector.ConnectionError`
  (and acquire timeouts into :class:`pgconnector.PoolTimeoutError`), chaining the driver error.

Counting (acquires, waiting, in use, timeouts) and event dispatch live in the core, so a
backend never counts anything itself.

For ``manager.listen()`` (LISTEN / NOTIFY) a backend also opens *listener connections*
(:class:`ListenerBackend`: :class:`Listener` / :class:`AsyncListener`): one dedicated server
connection that LISTENs and waits. The stream around it (validation, quoting, reconnecting,
``on_reconnect``) is the core's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ._config import PoolConfig
from ._listen_base import Notification

__all__ = [
    "Backend",
    "PoolHooks",
    "PoolBackend",
    "AsyncPoolBackend",
    "DriverConnection",
    "AsyncDriverConnection",
    "QueryResult",
    "Listener",
    "AsyncListener",
    "ListenerBackend",
]

#: What ``fetch`` returns: the column names, and the rows as sequences of decoded values.
QueryResult = tuple[Sequence[str], Sequence[Sequence[Any]]]


@runtime_checkable
class PoolHooks(Protocol):
    """Given by the core to a backend pool, which calls it as server connections come and go.

    The calls may come from any thread; they are cheap and never raise.
    """

    def connection_opened(self, seconds: float | None = None) -> int:
        """A new server connection is open and ready; returns the id to tag it with.

        ``seconds`` is how long opening it took (``time.perf_counter()`` around the driver's
        connect and whatever the backend does before the connection is usable), for the
        ``db.client.connection.create_time`` metric; None when the backend cannot tell."""
        ...

    def connection_closed(self, connection_id: int, reason: str) -> None:
        """A server connection was closed, with a short reason (``"idle"``, ``"broken"``,
        ``"max_lifetime"``, ``"max_uses"``, ``"pool closed"``, ``"reset failed"``, …)."""
        ...

    def connection_failed(self, error: BaseException, connection_id: int | None = None) -> None:
        """Opening a connection failed (``connection_id`` None), or one broke in use or failed
        its reset. Fires an ``error`` event; the backend still raises or discards as usual."""
        ...


@runtime_checkable
class DriverConnection(Protocol):
    """One pooled server connection, as the sync core uses it.

    Statements run in autocommit mode; ``BEGIN``/``COMMIT``/``SAVEPOINT`` are sent as plain
    statements by :class:`~pgconnector.Client`. Connection-level failures raise
    :class:`pgconnector.ConnectionError`; errors the server reports for a statement raise the
    ``pgconnector.errors`` class of their SQLSTATE (see ``pgconnector._translate``), with the
    driver's exception chained.

    Statement timeouts: every method that runs SQL takes ``timeout`` (seconds or None; the
    core has refused values <= 0). When it expires the backend cancels the statement *on
    the server* (a CancelRequest, or the driver's own cancel that sends one) and raises
    :class:`pgconnector.errors.StatementTimeoutError` (``pgconnector._timeout.timed_out``:
    driver error chained); the connection stays usable. The cancel request must be over (the
    server closed the cancel connection) before the method returns or raises, so that it can
    never hit the next statement. If the server ends the statement neither on the cancel
    nor within the backend's ``connect_timeout`` budget after it, the backend shuts the
    connection down and raises :class:`pgconnector.ConnectionError`
    (``pgconnector._timeout.stuck_error``). With ``timeout=None`` nothing of this may cost
    anything (no timer, thread or task). Each backend has one primitive for it, which its
    other statement-running methods (executemany, cursors, COPY) reuse: psycopg
    ``PsycopgConnection.run_within`` (``call_with_timeout`` / ``acall_with_timeout`` of
    ``pgconnector._timeout`` with ``cancel_safe``), asyncpg ``AsyncpgConnection.run_within``
    (asyncpg's own ``timeout=``, then its cancellation awaited), the generic pool (pg8000)
    ``PooledConnection.run_within`` / ``AsyncPooledConnection._run(..., timeout=)``
    (``RawConnection.cancel`` and the pool's settle machinery).
    """

    @property
    def connection_id(self) -> int:
        """The id returned by :meth:`PoolHooks.connection_opened` for this connection."""
        ...

    @property
    def raw(self) -> Any:
        """The driver's own connection object."""
        ...

    def execute(self, sql: str, args: Sequence[Any], timeout: float | None = None) -> str:
        """Run one statement; return the command status (``"INSERT 0 1"``).

        ``timeout`` (seconds, already checked by the core: None or > 0): see "Statement
        timeouts" in the class docstring."""
        ...

    def fetch(
        self, sql: str, args: Sequence[Any], timeout: float | None = None
    ) -> QueryResult:
        """Run one query; return its column names and decoded rows. ``timeout`` as for
        :meth:`execute`."""
        ...

    def server_parameter(self, name: str) -> str | None:
        """The value the server last reported for a run-time parameter (``ParameterStatus``:
        ``in_hot_standby``, ``default_transaction_read_only``, ``server_version``, …), or
        None if it never did. No I/O: the driver keeps what it was told."""
        ...

    def executemany(
        self, sql: str, rows: Sequence[tuple[Any, ...]], timeout: float | None = None
    ) -> None:
        """Run one statement once per row of arguments, pipelined (the rows in batches, not a
        round trip each), stopping at the first failing row and raising its error. The core
        has checked the rows (all of one length, at least one) and opened a transaction or
        savepoint around the call, which makes it atomic. ``timeout`` (seconds, None: none)
        covers the whole call: cancel on the server, then raise ``StatementTimeoutError``."""
        ...

    def copy_in(self, sql: str, chunks: Iterable[bytes], timeout: float | None = None) -> int:
        """Run ``sql``, a ``COPY … FROM STDIN`` (checked by the core), sending ``chunks`` as
        its data; return the number of rows copied. If iterating ``chunks`` raises, abort the
        COPY (CopyFail: nothing of it is applied), keep the connection usable, and let that
        exception through."""
        ...

    def copy_out(self, sql: str, timeout: float | None = None) -> Iterator[bytes]:
        """Run ``sql``, a ``COPY … TO STDOUT`` (checked by the core), as a generator of its
        data in chunks of whole rows (about ``pgconnector._copy.CHUNK_SIZE`` bytes; never the
        whole result at once). Closed early (``close()``), it cancels the COPY on the server
        and reads what is left, so that the connection stays usable; a connection it cannot
        bring back raises :class:`pgconnector.ConnectionError`.

        Optional, for ``copy_records_to_table``: ``copy_records(table, schema, columns,
        records, timeout=None) -> int``, the driver's own record COPY, when it encodes every
        value as the core's text encoder (``pgconnector._copy.encode_records``) would; without
        it the core encodes the records and calls :meth:`copy_in`."""
        ...


@runtime_checkable
class AsyncDriverConnection(Protocol):
    """The async twin of :class:`DriverConnection`.

    A caller may be cancelled (``task.cancel()``, ``asyncio.wait_for``) while ``execute`` or
    ``fetch`` waits. The statement must then not go on beside the next one: the connection
    never carries two statements at once. Either cancel it on the server and make the next
    ``execute``/``fetch`` and the pool's ``release`` wait until it is over (bounded; past
    that, close the connection and raise :class:`pgconnector.ConnectionError`), or close the
    connection. The cancelled call itself raises ``CancelledError`` at once. (The generic pool
    does the former for every blocking driver, through ``RawConnection.cancel``.)
    """

    @property
    def connection_id(self) -> int: ...

    @property
    def raw(self) -> Any: ...

    async def execute(
        self, sql: str, args: Sequence[Any], timeout: float | None = None
    ) -> str: ...

    async def fetch(
        self, sql: str, args: Sequence[Any], timeout: float | None = None
    ) -> QueryResult: ...

    def server_parameter(self, name: str) -> str | None: ...

    async def executemany(
        self, sql: str, rows: Sequence[tuple[Any, ...]], timeout: float | None = None
    ) -> None: ...

    async def copy_in(
        self, sql: str, chunks: Iterable[bytes] | Any, timeout: float | None = None
    ) -> int:
        """As :meth:`DriverConnection.copy_in`; ``chunks`` may also be an async iterable."""
        ...

    def copy_out(self, sql: str, timeout: float | None = None) -> AsyncIterator[bytes]:
        """As :meth:`DriverConnection.copy_out`: an async generator (``aclose()`` ends it)."""
        ...


@runtime_checkable
class PoolBackend(Protocol):
    """A sync pool of :class:`DriverConnection`, built by :meth:`Backend.create_pool`.

    Construction does no I/O. The core serializes ``open`` and ``close``.
    """

    @property
    def native(self) -> Any:
        """The driver's own pool object (for example a ``psycopg_pool.ConnectionPool``),
        or the backend's pool itself when the driver has none."""
        ...

    def open(self, timeout: float) -> None:
        """Start the pool and return once one real connection was opened and returned to it.

        Raise :class:`pgconnector.ConnectionError` (driver error chained) if that fails within
        ``timeout`` seconds, leaving nothing running.
        """
        ...

    def acquire(self, timeout: float) -> DriverConnection:
        """Borrow a connection, waiting up to ``timeout`` seconds.

        Raise :class:`pgconnector.PoolTimeoutError` when none is free in time, and
        :class:`pgconnector.ConnectionError` when one cannot be opened.
        """
        ...

    def release(self, conn: DriverConnection, *, discard: bool = False) -> None:
        """Return a connection. Roll back an open or aborted transaction (and, with
        ``reset_on_release="session"``, reset session state) before anyone else gets it; a
        clean connection costs no round trip. Close it instead when ``discard`` is true or it
        is broken, or fails its reset. Never raises for a broken connection."""
        ...

    def close(self, timeout: float) -> None:
        """Close every connection and stop background work. The core has already waited for
        (or given up on) checked-out connections, and released each of them with
        ``discard=True`` first."""
        ...


@runtime_checkable
class AsyncPoolBackend(Protocol):
    """The async twin of :class:`PoolBackend`; the same contract, awaited.

    ``release`` must also be safe against cancellation: a caller cancelled while it waits
    (say, for a ``ROLLBACK``) must neither lose the connection nor leave it in the pool
    half-reset; finish the release in the background (``_acompat.finish_even_if_cancelled``)
    or close the connection. The core awaits it directly, because only the backend knows
    whether a release waits at all: a clean one should not, and then costs no task.
    """

    @property
    def native(self) -> Any: ...

    async def open(self, timeout: float) -> None: ...

    async def acquire(self, timeout: float) -> AsyncDriverConnection: ...

    async def release(self, conn: AsyncDriverConnection, *, discard: bool = False) -> None: ...

    async def close(self, timeout: float) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """The object a backend distribution registers under the ``pgconnector.backends`` entry-point
    group, for example ``psycopg = "pgconnector_psycopg:backend"``.

    Importing the module that defines it must not import the driver: the core reads the
    attributes below for ``available_backends()`` without loading any driver.

    For ``manager.listen()`` it may also have the methods of :class:`ListenerBackend`.
    """

    #: The name users put in ``PoolConfig(backend=...)`` and ``postgresql+NAME://``.
    name: str
    #: The distribution that provides it (``pgconnector-psycopg``), for error messages.
    distribution: str
    supports_sync: bool
    supports_async: bool
    #: True when neither the backend nor its driver need compiled extension modules.
    pure_python: bool

    def check_driver(self) -> None:
        """Import the driver; raise ``ImportError`` if it is missing (the core turns that into
        :class:`~pgconnector.BackendNotFoundError` naming the extra to install)."""
        ...

    def create_pool(self, config: PoolConfig, hooks: PoolHooks) -> PoolBackend:
        """A sync pool for ``config`` (only called when ``supports_sync``). No I/O."""
        ...

    def create_async_pool(self, config: PoolConfig, hooks: PoolHooks) -> AsyncPoolBackend:
        """An async pool for ``config`` (only called when ``supports_async``). No I/O."""
        ...


@runtime_checkable
class Listener(Protocol):
    """One dedicated server connection for LISTEN, as the sync core uses it.

    Opened by :meth:`ListenerBackend.open_listener` with the pool's parameters (the same
    resolved :class:`~pgconnector.ConnectParams`: hosts, TLS, ``application_name``,
    ``server_settings``, multi-host rules) but outside the pool: it is never reported through
    :class:`PoolHooks`. Connection-level failures raise :class:`pgconnector.ConnectionError`
    (driver error chained, password redacted); the core then closes it and opens another.
    """

    def listen(self, channels: Sequence[str]) -> None:
        """``LISTEN`` on each channel. The names are checked by the core but not quoted: quote
        them as identifiers (``pgconnector._listen_base.listen_sql`` builds the statement),
        or let a driver that quotes them itself do it."""
        ...

    def wait(self, timeout: float | None) -> list[Notification]:
        """Wait up to ``timeout`` seconds (None: without limit; 0: do not wait) for
        notifications; return every one received so far, in order, as soon as there is at
        least one, or ``[]`` when the time is up. A notification received while another call
        ran (``listen``) is returned by the next ``wait``."""
        ...

    def close(self) -> None:
        """Close the connection. Never raises; idempotent."""
        ...


@runtime_checkable
class AsyncListener(Protocol):
    """The async twin of :class:`Listener`. A ``wait`` whose caller is cancelled raises
    ``CancelledError`` at once and loses nothing: what it had received is returned by the next
    ``wait``. (``pgconnector._listen_base.AsyncThreadListener`` gives a blocking driver's
    listener this face.)"""

    async def listen(self, channels: Sequence[str]) -> None: ...

    async def wait(self, timeout: float | None) -> list[Notification]: ...

    async def close(self) -> None: ...


class ListenerBackend(Protocol):
    """What a :class:`Backend` adds for ``manager.listen()``: optional (a backend without it
    makes ``listen()`` raise :class:`~pgconnector.UnsupportedBackendError`), one method per
    mode it supports."""

    def open_listener(self, config: PoolConfig, timeout: float) -> Listener:
        """Open one listener connection within ``timeout`` seconds, or raise
        :class:`pgconnector.ConnectionError` (driver error chained)."""
        ...

    async def open_async_listener(self, config: PoolConfig, timeout: float) -> AsyncListener:
        """The async twin of :meth:`open_listener`; cancellation leaves nothing open."""
        ...
