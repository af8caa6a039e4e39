"""AsyncClient: the uniform handle on one pooled connection (async).

``_client.py`` is generated from ``_client_async.py`` by ``tools/unasync.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._batch import argument_rows
from ._listen_base import check_channel
from ._protocols import AsyncDriverConnection, QueryResult
from ._row import Row, make_rows
from ._timeout import check_timeout
from .errors import ClientReleasedError, ConfigError, ConnectionError

if TYPE_CHECKING:
    from ._pool_async import AsyncManagedPool

__all__ = ["AsyncClient", "AsyncTransaction"]

REVOKED = (
    "disconnect() closed the pool while this client was borrowed, and closed its connection"
)


class AsyncClient:
    """One borrowed connection. Placeholders are PostgreSQL's own ``$1, $2, …``.

    Outside :meth:`transaction`, every statement commits on its own. Give it back with
    :meth:`release` (or use ``manager.connection()``, which does that for you); a client
    returned inside a transaction is rolled back before anyone else gets the connection.
    """

    __slots__ = (
        "__weakref__", "_broken", "_conn", "_granted", "_pool", "_released", "_revoked",
        "_tx_depth",
    )

    def __init__(self, conn: AsyncDriverConnection, pool: AsyncManagedPool) -> None:
        self._conn = conn
        self._pool = pool
        self._released = False
        #: Taken away by disconnect() (and so released), not given back by its borrower.
        self._revoked = False
        self._broken = False
        self._tx_depth = 0
        # perf_counter() when the borrow was granted, only while metrics listen (else 0.0):
        # the release then reports how long the connection was used.
        self._granted = 0.0

    def _live(self) -> AsyncDriverConnection:
        if self._released:
            if self._revoked:
                raise ConnectionError(REVOKED)
            raise ClientReleasedError(
                "this Client was released back to the pool and can no longer be used; "
                "borrow a new one with get_client() or connection()"
            )
        return self._conn

    async def execute(self, sql: str, *args: Any, timeout: float | None = None) -> str:
        """Run a statement; return its command status, e.g. ``"INSERT 0 1"``.

        ``timeout``: seconds; when they run out the statement is cancelled on the server and
        :class:`~pgconnector.errors.StatementTimeoutError` is raised (the client stays usable;
        inside :meth:`transaction` the transaction is aborted, as by any error)."""
        conn = self._live()
        if timeout is not None:
            timeout = check_timeout(timeout)
        try:
            return await conn.execute(sql, args, timeout)
        except ConnectionError:
            self._broken = True
            raise
        except Exception as exc:
            if not self._revoked:
                raise
            raise self._lost(exc) from exc

    async def _fetch(self, sql: str, args: Sequence[Any], timeout: float | None) -> QueryResult:
        conn = self._live()
        if timeout is not None:
            timeout = check_timeout(timeout)
        try:
            return await conn.fetch(sql, args, timeout)
        except ConnectionError:
            self._broken = True
            raise
        except Exception as exc:
            if not self._revoked:
                raise
            raise self._lost(exc) from exc

    def _lost(self, exc: Exception) -> ConnectionError:
        """disconnect() took the client away while its statement ran: the backend cancelled
        the statement or closed the connection under it, and whatever the driver made of that
        (a cancelled query, a closed connection), the borrower lost its connection."""
        self._broken = True
        return ConnectionError(REVOKED, exc)

    async def fetch(self, sql: str, *args: Any, timeout: float | None = None) -> list[Row]:
        """Run a query; return every row. ``timeout`` as for :meth:`execute`."""
        return make_rows(*await self._fetch(sql, args, timeout))

    async def fetchrow(
        self, sql: str, *args: Any, timeout: float | None = None
    ) -> Row | None:
        """Run a query; return its first row, or None when there is none. ``timeout`` as for
        :meth:`execute`."""
        columns, rows = await self._fetch(sql, args, timeout)
        return make_rows(columns, rows[:1])[0] if rows else None

    async def fetchval(
        self, sql: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        """Run a query; return one value of its first row (None when there is no row).
        ``timeout`` as for :meth:`execute`."""
        columns, rows = await self._fetch(sql, args, timeout)
        if not rows:
            return None
        if type(column) is not int:  # a name, as a Row would take it
            return make_rows(columns, rows[:1])[0][column]
        if not -len(columns) <= column < len(columns):
            raise IndexError(f"column {column} out of range: the query returned {len(columns)}")
        return rows[0][column]

    async def notify(self, channel: str, payload: str = "") -> None:
        """Send a notification on ``channel`` (``SELECT pg_notify($1, $2)``): delivered to
        the listeners when the transaction commits (at once outside :meth:`transaction`),
        never if it rolls back."""
        check_channel(channel)
        if not isinstance(payload, str):
            raise ConfigError(
                f"payload: must be a str, not {type(payload).__name__}", field="payload"
            )
        await self.execute("SELECT pg_notify($1, $2)", channel, payload)

    async def executemany(
        self, sql: str, rows: Iterable[Sequence[Any]], *, timeout: float | None = None
    ) -> None:
        """Run one statement (``$1, $2, …`` placeholders) once per row of arguments in
        ``rows``, pipelined: the rows travel in batches, without a round trip each.

        Atomic: outside :meth:`transaction` it runs in a transaction of its own, inside one
        under a savepoint, so that when a row fails nothing of this call is applied, and that
        row's :class:`~pgconnector.DatabaseError` (e.g. ``UniqueViolation``) is raised; an
        enclosing transaction goes on. Arguments are the types :meth:`execute` takes.

        ``rows`` is any iterable (a generator too) of sequences; it is read in full before
        anything is sent, so that a row whose length differs from the first row's (or that is
        not a sequence) raises :class:`~pgconnector.ConfigError` naming its index and nothing
        runs. No rows: nothing is sent. ``timeout`` (seconds) covers the whole call: when it
        expires the statement is cancelled on the server and ``StatementTimeoutError`` is
        raised, nothing of the call applied. Returns None; rows a statement returns are
        discarded.
        """
        self._live()
        if timeout is not None:
            timeout = check_timeout(timeout)
        batch = argument_rows(rows)
        if not batch:
            return None
        async with self.transaction():
            await self._executemany(sql, batch, timeout)
        return None

    async def _executemany(
        self, sql: str, rows: list[tuple[Any, ...]], timeout: float | None
    ) -> None:
        conn = self._live()
        try:
            await conn.executemany(sql, rows, timeout)
        except ConnectionError:
            self._broken = True
            raise
        except Exception as exc:
            if not self._revoked:
                raise
            raise self._lost(exc) from exc

    def transaction(self) -> AsyncTransaction:
        """A transaction block: ``BEGIN`` on enter, ``COMMIT`` on success, ``ROLLBACK`` when the
        block raises. Nested blocks become savepoints."""
        self._live()
        return AsyncTransaction(self)

    @property
    def raw(self) -> Any:
        """The driver's own connection, for everything the Client does not cover.

        Leave it as you found it (no open transaction of your own is needed: release rolls
        back), and do not close it: release the Client instead.
        """
        return self._live().raw

    @property
    def connection_id(self) -> int:
        """The pool's id for the server connection, as in pool events."""
        return self._conn.connection_id

    @property
    def released(self) -> bool:
        return self._released

    async def release(self) -> None:
        """Give the connection back to the pool. Calling it again does nothing."""
        if not self._released:
            await self._pool.release(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else f"connection {self._conn.connection_id}"
        return f"<{type(self).__name__} {state}>"


class AsyncTransaction:
    """The context manager returned by :meth:`AsyncClient.transaction`; yields the client."""

    __slots__ = ("_client", "_depth")

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._depth = -1

    async def __aenter__(self) -> AsyncClient:
        client = self._client
        depth = client._tx_depth
        if depth == 0:
            await client.execute("BEGIN")
        else:
            await client.execute(f"SAVEPOINT pgconnector_{depth}")
        self._depth = depth
        client._tx_depth = depth + 1
        return client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client = self._client
        depth = self._depth
        client._tx_depth = depth
        if exc_type is None:
            if depth == 0:
                await client.execute("COMMIT")
            else:
                await client.execute(f"RELEASE SAVEPOINT pgconnector_{depth}")
            return
        if client._broken or client._released:
            return  # nothing to roll back on a dead connection; the original error wins
        try:
            if depth == 0:
                await client.execute("ROLLBACK")
            else:
                await client.execute(f"ROLLBACK TO SAVEPOINT pgconnector_{depth}")
                await client.execute(f"RELEASE SAVEPOINT pgconnector_{depth}")
        except ConnectionError:
            pass  # the connection died too; release() will discard it, the original error wins
