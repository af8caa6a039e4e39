"""AsyncClient: the uniform handle on one pooled connection (async).

``_client.py`` is generated from ``_client_async.py`` by ``tools/unasync.py``.
"""

from __future__ import annotations

# ASYNC
import asyncio

# END
import contextlib
import itertools
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._acompat import ALock
from ._batch import argument_rows
from ._copy import (
    check_columns,
    check_copy,
    check_identifier,
    checked_records,
    copy_records_sql,
    encode_records,
    source_chunks,
)
from ._cursor_async import AsyncCursor
from ._listen_base import check_channel, quote_ident
from ._protocols import AsyncDriverConnection, QueryResult
from ._row import Row, make_rows
from ._timeout import check_timeout
from .errors import ActiveSqlTransaction, ClientReleasedError, ConfigError, ConnectionError

if TYPE_CHECKING:
    from ._pool_async import AsyncManagedPool

__all__ = ["AsyncClient", "AsyncTransaction", "AsyncCopyOut"]

REVOKED = (
    "disconnect() closed the pool while this client was borrowed, and closed its connection"
)

#: How a cursor ends: (name, the transaction levels it was declared in, whether it opened its
#: own transaction, whether to send CLOSE).
CursorEnd = tuple[str, tuple[int, ...], bool, bool]

#: Ids of transaction levels (a transaction, a savepoint), unique in the process.
_level_ids = itertools.count(1)


class AsyncClient:
    """One borrowed connection. Placeholders are PostgreSQL's own ``$1, $2, …``.

    Outside :meth:`transaction`, every statement commits on its own. Give it back with
    :meth:`release` (or use ``manager.connection()``, which does that for you); a client
    returned inside a transaction is rolled back before anyone else gets the connection.
    """

    __slots__ = (
        "__weakref__", "_broken", "_conn", "_copy_out", "_cursor_seq", "_cursor_tx",
        "_dead_levels", "_granted", "_guard", "_levels", "_orphans", "_pool", "_released",
        "_revoked", "_settler", "_tx_depth",
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
        # Cursors. The guard serializes every use of the connection once a cursor exists (a
        # cursor dropped unfinished is closed by whoever holds it next, never concurrently
        # with a statement); None until then, so that plain statements pay nothing.
        self._guard: ALock | None = None
        self._orphans: list[CursorEnd] = []  # cursors dropped unfinished, to end
        self._settler: Any = None  # async: the task ending them
        self._cursor_seq = 0
        self._cursor_tx = 0  # open cursors in the transaction that cursors opened themselves
        self._levels: list[int] = []  # ids of the open transaction levels, outermost first
        self._dead_levels: set[int] = set()  # savepoints rolled back in the open transaction
        #: The copy_out() being read, if any: the connection is inside its COPY until it ends.
        self._copy_out: AsyncCopyOut | None = None

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
        if self._guard is not None:
            async with self._guard:
                await self._settle()
                return await self._execute(self._live(), sql, args, timeout)
        return await self._execute(conn, sql, args, timeout)

    async def _execute(
        self,
        conn: AsyncDriverConnection,
        sql: str,
        args: Sequence[Any],
        timeout: float | None = None,
    ) -> str:
        if self._copy_out is not None:
            await self._copy_out.aclose()  # a copy_out left unfinished: end it first
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
        if self._guard is not None:
            async with self._guard:
                await self._settle()
                return await self._fetch_on(self._live(), sql, args, timeout)
        return await self._fetch_on(conn, sql, args, timeout)

    async def _fetch_on(
        self, conn: AsyncDriverConnection, sql: str, args: Sequence[Any], timeout: float | None
    ) -> QueryResult:
        if self._copy_out is not None:
            await self._copy_out.aclose()  # a copy_out left unfinished: end it first
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
        (or in the one a cursor opened) under a savepoint, so that when a row fails nothing of
        this call is applied, and that row's :class:`~pgconnector.DatabaseError` (e.g.
        ``UniqueViolation``) is raised; an enclosing transaction goes on. Arguments are the
        types :meth:`execute` takes.

        ``rows`` is any iterable (a generator too) of sequences; it is read in full before
        anything is sent, so that a row whose length differs from the first row's (or that is
        not a sequence) raises :class:`~pgconnector.ConfigError` naming its index and nothing
        runs. No rows: nothing is sent. ``timeout`` (seconds) covers all the rows: when it
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
        if self._guard is not None:
            async with self._guard:
                await self._settle()  # may end the transaction an abandoned cursor opened
        if self._cursor_tx and not self._tx_depth:
            # Inside the transaction a cursor opened, which transaction() refuses to nest in:
            # a savepoint of the call's own.
            await self.execute("SAVEPOINT pgconnector_executemany")
            try:
                await self._executemany(sql, batch, timeout)
            except BaseException:
                if not (self._broken or self._released):
                    with contextlib.suppress(ConnectionError):
                        await self.execute("ROLLBACK TO SAVEPOINT pgconnector_executemany")
                        await self.execute("RELEASE SAVEPOINT pgconnector_executemany")
                raise
            await self.execute("RELEASE SAVEPOINT pgconnector_executemany")
            return None
        async with self.transaction():
            await self._executemany(sql, batch, timeout)
        return None

    async def _executemany(
        self, sql: str, rows: list[tuple[Any, ...]], timeout: float | None
    ) -> None:
        conn = self._live()
        if self._guard is not None:
            async with self._guard:
                await self._settle()
                return await self._executemany_on(self._live(), sql, rows, timeout)
        return await self._executemany_on(conn, sql, rows, timeout)

    async def _executemany_on(
        self,
        conn: AsyncDriverConnection,
        sql: str,
        rows: list[tuple[Any, ...]],
        timeout: float | None,
    ) -> None:
        if self._copy_out is not None:
            await self._copy_out.aclose()  # a copy_out left unfinished: end it first
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
        if self._released:
            return
        if self._copy_out is not None:
            try:
                await self._copy_out.aclose()
            except Exception:
                self._broken = True  # the pool discards the connection
        if self._guard is None:
            await self._pool.release(self)
            return
        try:
            await self._end_cursors()
        finally:
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

    # -- COPY ------------------------------------------------------------------------------

    async def copy_records_to_table(
        self,
        table: str,
        records: Iterable[Sequence[Any]],
        *,
        columns: Sequence[str] | None = None,
        schema: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Bulk-load ``records`` (rows of values, None for NULL) into ``table`` with COPY;
        return the number of rows copied. ``table``, ``schema`` and ``columns`` are
        identifiers, quoted as such (case and spaces kept). All or nothing: a failing row, or
        one whose length differs from the first (``ConfigError`` naming it), leaves nothing
        of the call applied."""
        check_identifier(table, "table")
        if schema is not None:
            check_identifier(schema, "schema")
        names = check_columns(columns)
        timeout = check_timeout(timeout)
        rows = checked_records(records, len(names) if names else None)
        count: int = await self._guarded(_copy_records, table, schema, names, rows, timeout)
        return count

    async def copy_in(
        self,
        sql: str,
        source: Any,
        *,
        timeout: float | None = None,
    ) -> int:
        """Run ``COPY … FROM STDIN`` with the data of ``source``: ``bytes``, ``str``, a binary
        file object, or an iterable (on the async client, also an async iterable) of
        ``bytes`` chunks. Return the number of rows copied. Any other statement raises
        ``ConfigError`` and runs nothing."""
        check_copy(sql, "in")
        timeout = check_timeout(timeout)
        # ASYNC
        chunks = source_chunks(source, allow_async=True)
        # SYNC: chunks = source_chunks(source, allow_async=False)
        # END
        count: int = await self._guarded(_copy_in, sql, chunks, timeout)
        return count

    def copy_out(self, sql: str, *, timeout: float | None = None) -> AsyncCopyOut:
        """Run ``COPY … TO STDOUT`` and iterate over its data as ``bytes`` chunks (one or more
        rows each, never a row split). Any other statement raises ``ConfigError`` and runs
        nothing. The COPY starts with the first chunk asked for; leaving the iteration early
        (``break``, ``close()``, a ``with`` block's end) cancels it on the server and leaves
        the connection usable, and so does the client's next statement or its release; inside
        a transaction that cancel aborts the transaction, as any error does. ``timeout``
        covers the whole COPY, from the first chunk to the last."""
        check_copy(sql, "out")
        timeout = check_timeout(timeout)
        self._live()
        return AsyncCopyOut(self, sql, timeout)

    async def _guarded(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, a driver call, under the cursors' guard once one exists (as
        :meth:`execute`), with the client's failure bookkeeping."""
        conn = self._live()
        if self._guard is not None:
            async with self._guard:
                await self._settle()
                return await self._call_on(self._live(), fn, *args)
        return await self._call_on(conn, fn, *args)

    async def _call_on(self, conn: AsyncDriverConnection, fn: Any, *args: Any) -> Any:
        if self._copy_out is not None:
            await self._copy_out.aclose()
        try:
            return await fn(conn, *args)
        except ConnectionError:
            self._broken = True
            raise
        except Exception as exc:
            if not self._revoked:
                raise
            raise self._lost(exc) from exc

    # -- cursors -------------------------------------------------------------------------

    def cursor(
        self, sql: str, *args: Any, prefetch: int = 100, timeout: float | None = None
    ) -> AsyncCursor:
        """Stream the rows of a query from a server-side cursor, ``prefetch`` rows per round
        trip: ``async for row in client.cursor(sql, *args)``, or
        ``async with client.cursor(...) as rows: async for row in rows``.

        Outside :meth:`transaction` the cursor opens a transaction for its duration (statements
        run meanwhile join it) and commits it when it ends. It ends when the rows run out,
        when its ``async with`` block is left, on :meth:`AsyncCursor.aclose`, when it is
        garbage-collected unfinished (on the event loop's next turn), and at :meth:`release`.
        ``timeout`` bounds each fetch of ``prefetch`` rows.
        """
        if type(prefetch) is not int or prefetch < 1:
            raise ConfigError(
                f"prefetch: must be an int of 1 or more, not {prefetch!r}", field="prefetch"
            )
        timeout = check_timeout(timeout)
        self._live()
        return AsyncCursor(self, sql, args, prefetch, timeout)

    def _cursor_guard(self) -> ALock:
        if self._guard is None:
            self._guard = ALock()
        return self._guard

    def _next_cursor_name(self) -> str:
        # Unique on the connection for this borrow; cursors die with their transaction, and
        # release() ends every transaction, so the next borrower may reuse the names (which
        # keeps drivers' statement caches small).
        self._cursor_seq += 1
        return f"pgc_cursor_{self._cursor_seq}"

    async def _begin_implicit(self, conn: AsyncDriverConnection) -> None:
        """Join, or open, the transaction that cursors opened outside transaction()."""
        if self._cursor_tx == 0:
            await self._execute(conn, "BEGIN", ())
            self._levels.append(next(_level_ids))
        self._cursor_tx += 1

    def _alive(self, levels: tuple[int, ...]) -> bool:
        """Whether a cursor declared inside ``levels`` can still exist on the server: its
        transaction is still the open one and none of its savepoints was rolled back."""
        current = self._levels
        return (
            bool(levels) and bool(current) and current[0] == levels[0]
            and self._dead_levels.isdisjoint(levels)
        )

    async def _end_cursor(self, end: CursorEnd) -> None:
        """End one cursor (the guard held): CLOSE it, or COMMIT the transaction it opened when
        it is the last cursor in it."""
        name, levels, owned, close = end
        if self._released or self._broken:
            return
        conn = self._conn
        if owned and self._cursor_tx > 0 and self._alive(levels):
            self._cursor_tx -= 1
            if self._cursor_tx == 0:
                self._levels.clear()
                self._dead_levels.clear()
                # COMMIT ends an aborted transaction too (as a rollback) and closes the cursor.
                await self._execute(conn, "COMMIT", ())
                return
        if close and self._alive(levels):
            await self._execute(conn, f"CLOSE {quote_ident(name)}", ())

    async def _end_cursor_quietly(self, end: CursorEnd, *, take_guard: bool = False) -> None:
        """End a cursor after an error, which is the one to raise."""
        try:
            if take_guard:
                async with self._cursor_guard():
                    await self._end_cursor(end)
            else:
                await self._end_cursor(end)
        except Exception:  # the first error wins; a dead connection is marked broken
            pass

    def _orphan(self, end: CursorEnd) -> None:
        """A cursor was dropped unfinished: end it as soon as nothing else uses the
        connection (the next statement or release() ends it first otherwise)."""
        if self._released:
            return
        self._orphans.append(end)
        # ASYNC
        if self._settler is None:
            self._settler = asyncio.get_running_loop().create_task(self._settle_soon())
        # SYNC: guard = self._cursor_guard()
        # SYNC: if guard.acquire(blocking=False):  # else a statement runs: it settles next
        # SYNC:     try:
        # SYNC:         self._settle()
        # SYNC:     except Exception:  # the next statement reports the connection
        # SYNC:         pass
        # SYNC:     finally:
        # SYNC:         guard.release()
        # END

    # ASYNC
    async def _settle_soon(self) -> None:
        try:
            async with self._cursor_guard():
                await self._settle()
        except Exception:  # the next statement reports the connection's state
            pass
        finally:
            self._settler = None
    # END

    async def _settle(self) -> None:
        """End the cursors dropped unfinished (the guard held)."""
        orphans = self._orphans
        while orphans:
            end = orphans.pop(0)
            try:
                await self._end_cursor(end)
            except ConnectionError:
                orphans.clear()
                raise
            except Exception:  # e.g. an aborted transaction: the caller's
                pass  # next statement reports it

    async def _end_cursors(self) -> None:
        """At release: a transaction opened by cursors is committed (as their ends would
        have); every other cursor dies with the rollback that release does."""
        guard = self._cursor_guard()
        async with guard:
            self._orphans.clear()
            if self._cursor_tx and not self._broken:
                self._cursor_tx = 0
                self._levels.clear()
                # A ConnectionError marks the client broken: the pool discards the connection.
                with contextlib.suppress(ConnectionError):
                    await self._execute(self._conn, "COMMIT", ())

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
            if client._guard is not None:
                async with client._guard:
                    await client._settle()
                if client._cursor_tx:
                    raise ActiveSqlTransaction(
                        "a cursor opened outside transaction() holds this client's "
                        "transaction until it ends; open the transaction first and the "
                        "cursor inside it",
                        sqlstate="25001",
                    )
            await client.execute("BEGIN")
        else:
            await client.execute(f"SAVEPOINT pgconnector_{depth}")
        self._depth = depth
        client._tx_depth = depth + 1
        client._levels.append(next(_level_ids))
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
        level = client._levels.pop() if client._levels else 0
        if depth == 0:
            client._levels.clear()  # the transaction ends, with every cursor in it
            client._dead_levels.clear()
        elif exc_type is not None:
            client._dead_levels.add(level)  # rolled back: the cursors declared inside die
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


async def _copy_records(
    conn: AsyncDriverConnection,
    table: str,
    schema: str | None,
    columns: Sequence[str] | None,
    rows: Iterable[Sequence[Any]],
    timeout: float | None,
) -> int:
    own = getattr(conn, "copy_records", None)
    if own is not None:
        # The driver's own record COPY (it sends the values as arguments would be sent).
        count: int = await own(table, schema, columns, rows, timeout)
        return count
    sql = copy_records_sql(table, schema, columns)
    return await conn.copy_in(sql, encode_records(rows), timeout)


async def _copy_in(
    conn: AsyncDriverConnection, sql: str, chunks: Any, timeout: float | None
) -> int:
    return await conn.copy_in(sql, chunks, timeout)


class AsyncCopyOut:
    """What :meth:`AsyncClient.copy_out` returns: an async iterator of ``bytes`` chunks, and an
    async context manager that ends the COPY on leaving. ``aclose()`` ends it early: the COPY
    is cancelled on the server, the rest of its data dropped, and the connection stays
    usable."""

    __slots__ = ("_chunks", "_client", "_done", "_sql", "_timeout")

    def __init__(self, client: AsyncClient, sql: str, timeout: float | None) -> None:
        self._client = client
        self._sql = sql
        self._timeout = timeout
        self._chunks: Any = None
        self._done = False

    def __aiter__(self) -> AsyncCopyOut:
        return self

    async def __anext__(self) -> bytes:
        client = self._client
        if self._done:
            client._live()  # released meanwhile (which ended the COPY): say so
            raise StopAsyncIteration
        if client._guard is not None:
            # One step at a time under the cursors' guard, never held between chunks: the
            # client's next statement (which ends this COPY) must not wait for the reader.
            async with client._guard:
                await client._settle()
                return await self._step()
        return await self._step()

    async def _step(self) -> bytes:
        client = self._client
        chunks = self._chunks
        if chunks is None:
            conn = client._live()
            if client._copy_out is not None:
                await client._copy_out.aclose()
            chunks = self._chunks = conn.copy_out(self._sql, self._timeout)
            client._copy_out = self
        try:
            chunk: bytes = await chunks.__anext__()
            return chunk
        except StopAsyncIteration:
            self._end()
            raise
        except ConnectionError:
            self._end()
            client._broken = True
            raise
        except Exception as exc:
            self._end()
            if not client._revoked:
                raise
            raise client._lost(exc) from exc
        except BaseException:
            # Interrupted (a cancelled task): the driver's iterator ended the COPY as it
            # unwound, or left the connection for the release to deal with.
            self._end()
            raise

    def _end(self) -> None:
        self._done = True
        self._chunks = None
        if self._client._copy_out is self:
            self._client._copy_out = None

    async def aclose(self) -> None:
        """End the COPY now if it still runs (cancelled on the server, the connection kept
        usable). Idempotent. Raises :class:`~pgconnector.ConnectionError` if the connection
        broke meanwhile."""
        chunks = self._chunks
        self._end()
        if chunks is None:
            return
        try:
            await chunks.aclose()
        except ConnectionError:
            self._client._broken = True
            raise

    async def __aenter__(self) -> AsyncCopyOut:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
