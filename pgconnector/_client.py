# WARNING: generated from _client_async.py by tools/unasync.py; do not edit by hand.
"""Client: the uniform handle on one pooled connection (sync).

``_client.py`` is generated from ``_client.py`` by ``tools/unasync.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._copy import (
    check_columns,
    check_copy,
    check_identifier,
    checked_records,
    copy_records_sql,
    encode_records,
    source_chunks,
)
from ._listen_base import check_channel
from ._protocols import DriverConnection, QueryResult
from ._row import Row, make_rows
from ._timeout import check_timeout
from .errors import ClientReleasedError, ConfigError, ConnectionError

if TYPE_CHECKING:
    from ._pool import ManagedPool

__all__ = ["Client", "Transaction", "CopyOut"]

REVOKED = (
    "disconnect() closed the pool while this client was borrowed, and closed its connection"
)


class Client:
    """One borrowed connection. Placeholders are PostgreSQL's own ``$1, $2, …``.

    Outside :meth:`transaction`, every statement commits on its own. Give it back with
    :meth:`release` (or use ``manager.connection()``, which does that for you); a client
    returned inside a transaction is rolled back before anyone else gets the connection.
    """

    __slots__ = (
        "__weakref__", "_broken", "_conn", "_copy_out", "_granted", "_pool", "_released",
        "_revoked", "_tx_depth",
    )

    def __init__(self, conn: DriverConnection, pool: ManagedPool) -> None:
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
        #: The copy_out() being read, if any: the connection is inside its COPY until it ends.
        self._copy_out: CopyOut | None = None

    def _live(self) -> DriverConnection:
        if self._released:
            if self._revoked:
                raise ConnectionError(REVOKED)
            raise ClientReleasedError(
                "this Client was released back to the pool and can no longer be used; "
                "borrow a new one with get_client() or connection()"
            )
        return self._conn

    def execute(self, sql: str, *args: Any, timeout: float | None = None) -> str:
        """Run a statement; return its command status, e.g. ``"INSERT 0 1"``.

        ``timeout``: seconds; when they run out the statement is cancelled on the server and
        :class:`~pgconnector.errors.StatementTimeoutError` is raised (the client stays usable;
        inside :meth:`transaction` the transaction is aborted, as by any error)."""
        conn = self._live()
        if timeout is not None:
            timeout = check_timeout(timeout)
        if self._copy_out is not None:
            self._copy_out.close()
        try:
            return conn.execute(sql, args, timeout)
        except ConnectionError:
            self._broken = True
            raise
        except Exception as exc:
            if not self._revoked:
                raise
            raise self._lost(exc) from exc

    def _fetch(self, sql: str, args: Sequence[Any], timeout: float | None) -> QueryResult:
        conn = self._live()
        if timeout is not None:
            timeout = check_timeout(timeout)
        if self._copy_out is not None:
            self._copy_out.close()
        try:
            return conn.fetch(sql, args, timeout)
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

    def fetch(self, sql: str, *args: Any, timeout: float | None = None) -> list[Row]:
        """Run a query; return every row. ``timeout`` as for :meth:`execute`."""
        return make_rows(*self._fetch(sql, args, timeout))

    def fetchrow(
        self, sql: str, *args: Any, timeout: float | None = None
    ) -> Row | None:
        """Run a query; return its first row, or None when there is none. ``timeout`` as for
        :meth:`execute`."""
        columns, rows = self._fetch(sql, args, timeout)
        return make_rows(columns, rows[:1])[0] if rows else None

    def fetchval(
        self, sql: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        """Run a query; return one value of its first row (None when there is no row).
        ``timeout`` as for :meth:`execute`."""
        columns, rows = self._fetch(sql, args, timeout)
        if not rows:
            return None
        if type(column) is not int:  # a name, as a Row would take it
            return make_rows(columns, rows[:1])[0][column]
        if not -len(columns) <= column < len(columns):
            raise IndexError(f"column {column} out of range: the query returned {len(columns)}")
        return rows[0][column]

    def notify(self, channel: str, payload: str = "") -> None:
        """Send a notification on ``channel`` (``SELECT pg_notify($1, $2)``): delivered to
        the listeners when the transaction commits (at once outside :meth:`transaction`),
        never if it rolls back."""
        check_channel(channel)
        if not isinstance(payload, str):
            raise ConfigError(
                f"payload: must be a str, not {type(payload).__name__}", field="payload"
            )
        self.execute("SELECT pg_notify($1, $2)", channel, payload)

    # -- COPY ------------------------------------------------------------------------------

    def copy_records_to_table(
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
        conn = self._live()
        if self._copy_out is not None:
            self._copy_out.close()
        own = getattr(conn, "copy_records", None)
        if own is not None:
            # The driver's own record COPY (it encodes the values as every backend does).
            count: int = self._guarded(own, table, schema, names, rows, timeout)
            return count
        sql = copy_records_sql(table, schema, names)
        count = self._guarded(conn.copy_in, sql, encode_records(rows), timeout)
        return count

    def copy_in(
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
        chunks = source_chunks(source, allow_async=False)
        conn = self._live()
        if self._copy_out is not None:
            self._copy_out.close()
        count: int = self._guarded(conn.copy_in, sql, chunks, timeout)
        return count

    def copy_out(self, sql: str, *, timeout: float | None = None) -> CopyOut:
        """Run ``COPY … TO STDOUT`` and iterate over its data as ``bytes`` chunks (one or more
        rows each, never a row split). Any other statement raises ``ConfigError`` and runs
        nothing. The COPY starts with the first chunk asked for; leaving the iteration early
        (``break``, ``close()``, a ``with`` block's end) cancels it on the server and leaves
        the connection usable, and so does the client's next statement or its release."""
        check_copy(sql, "out")
        timeout = check_timeout(timeout)
        self._live()
        return CopyOut(self, sql, timeout)

    def _guarded(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, a driver call, with the client's failure bookkeeping (as in
        :meth:`execute`)."""
        try:
            return fn(*args)
        except ConnectionError:
            self._broken = True
            raise
        except Exception as exc:
            if not self._revoked:
                raise
            raise self._lost(exc) from exc

    def transaction(self) -> Transaction:
        """A transaction block: ``BEGIN`` on enter, ``COMMIT`` on success, ``ROLLBACK`` when the
        block raises. Nested blocks become savepoints."""
        self._live()
        return Transaction(self)

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

    def release(self) -> None:
        """Give the connection back to the pool. Calling it again does nothing."""
        if not self._released:
            if self._copy_out is not None:
                try:
                    self._copy_out.close()
                except Exception:
                    self._broken = True  # the pool discards the connection
            self._pool.release(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else f"connection {self._conn.connection_id}"
        return f"<{type(self).__name__} {state}>"


class Transaction:
    """The context manager returned by :meth:`Client.transaction`; yields the client."""

    __slots__ = ("_client", "_depth")

    def __init__(self, client: Client) -> None:
        self._client = client
        self._depth = -1

    def __enter__(self) -> Client:
        client = self._client
        depth = client._tx_depth
        if depth == 0:
            client.execute("BEGIN")
        else:
            client.execute(f"SAVEPOINT pgconnector_{depth}")
        self._depth = depth
        client._tx_depth = depth + 1
        return client

    def __exit__(
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
                client.execute("COMMIT")
            else:
                client.execute(f"RELEASE SAVEPOINT pgconnector_{depth}")
            return
        if client._broken or client._released:
            return  # nothing to roll back on a dead connection; the original error wins
        try:
            if depth == 0:
                client.execute("ROLLBACK")
            else:
                client.execute(f"ROLLBACK TO SAVEPOINT pgconnector_{depth}")
                client.execute(f"RELEASE SAVEPOINT pgconnector_{depth}")
        except ConnectionError:
            pass  # the connection died too; release() will discard it, the original error wins


class CopyOut:
    """What :meth:`Client.copy_out` returns: an async iterator of ``bytes`` chunks, and an
    async context manager that ends the COPY on leaving. ``close()`` ends it early: the COPY
    is cancelled on the server, the rest of its data dropped, and the connection stays
    usable."""

    __slots__ = ("_chunks", "_client", "_done", "_sql", "_timeout")

    def __init__(self, client: Client, sql: str, timeout: float | None) -> None:
        self._client = client
        self._sql = sql
        self._timeout = timeout
        self._chunks: Any = None
        self._done = False

    def __iter__(self) -> CopyOut:
        return self

    def __next__(self) -> bytes:
        client = self._client
        if self._done:
            client._live()  # released meanwhile (which ended the COPY): say so
            raise StopIteration
        chunks = self._chunks
        if chunks is None:
            conn = client._live()
            if client._copy_out is not None:
                client._copy_out.close()
            chunks = self._chunks = conn.copy_out(self._sql, self._timeout)
            client._copy_out = self
        try:
            chunk: bytes = chunks.__next__()
            return chunk
        except StopIteration:
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

    def close(self) -> None:
        """End the COPY now if it still runs (cancelled on the server, the connection kept
        usable). Idempotent. Raises :class:`~pgconnector.ConnectionError` if the connection
        broke meanwhile."""
        chunks = self._chunks
        self._end()
        if chunks is None:
            return
        try:
            chunks.close()
        except ConnectionError:
            self._client._broken = True
            raise

    def __enter__(self) -> CopyOut:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
