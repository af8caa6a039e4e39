"""AsyncCursor: a query's rows streamed from a server-side cursor (async).

``_cursor.py`` is generated from ``_cursor_async.py`` by ``tools/unasync.py``.

Written once on top of the backend protocol: ``DECLARE … NO SCROLL CURSOR FOR <sql>`` (its
``$n`` arguments bound by the ordinary execute path), ``FETCH FORWARD <prefetch>`` through
the ordinary fetch path, ``CLOSE``. The client serializes every use of the connection (see
``AsyncClient._guard``), so a cursor closed by its finalizer never overlaps a statement.
"""

from __future__ import annotations

# ASYNC
import asyncio

# END
import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._listen_base import quote_ident
from ._row import Row, make_rows
from .errors import ConnectionError, InvalidCursorName

if TYPE_CHECKING:
    from ._client_async import AsyncClient, CursorEnd

__all__ = ["AsyncCursor"]

_NEW, _OPEN, _DONE = 0, 1, 2


class AsyncCursor:
    """The rows of one query, ``prefetch`` at a time, from a server-side cursor.

    Returned by :meth:`AsyncClient.cursor`. Iterate it (``async for row in cursor``), or enter
    it first (``async with client.cursor(...) as rows:``) so that leaving the block closes it.
    """

    __slots__ = (
        "__weakref__", "_args", "_buffer", "_client", "_columns", "_exhausted", "_fetch_sql",
        "_loop", "_name", "_owned", "_pos", "_prefetch", "_snapshot", "_sql", "_state",
        "_timeout",
    )

    def __init__(
        self,
        client: AsyncClient,
        sql: str,
        args: Sequence[Any],
        prefetch: int,
        timeout: float | None,
    ) -> None:
        self._client = client
        self._sql = sql
        self._args = args
        self._prefetch = prefetch
        self._timeout = timeout
        self._state = _NEW
        self._name = ""
        self._fetch_sql = ""
        self._owned = False
        self._snapshot: tuple[int, ...] = ()
        #: The rows fetched and not yet handed out: never more than ``prefetch``.
        self._buffer: list[Row] = []
        self._pos = 0
        self._columns: Sequence[str] = ()
        self._exhausted = False
        self._loop: Any = None

    @property
    def name(self) -> str:
        """The server-side cursor's name ("" until it is declared)."""
        return self._name

    @property
    def closed(self) -> bool:
        """True once the server-side cursor is closed (or was never declared and never will be)."""
        return self._state == _DONE

    async def _open(self) -> None:
        client = self._client
        # ASYNC
        self._loop = asyncio.get_running_loop()
        # END
        guard = client._cursor_guard()
        async with guard:
            await client._settle()
            conn = client._live()
            name = client._next_cursor_name()
            owned = client._tx_depth == 0
            if owned:
                await client._begin_implicit(conn)
            self._name = name
            self._owned = owned
            self._snapshot = tuple(client._levels)
            self._state = _OPEN
            try:
                await client._execute(
                    conn,
                    f"DECLARE {quote_ident(name)} NO SCROLL CURSOR FOR {self._sql}",
                    self._args,
                    self._timeout,
                )
            except Exception:
                self._state = _DONE
                # The transaction is aborted (or the connection gone): no CLOSE, but a
                # transaction of the cursor's own still has to end.
                await client._end_cursor_quietly(self._end(close=False))
                raise
            except BaseException:
                self._state = _DONE
                client._orphan(self._end(close=True))  # cancelled: see _refill
                raise
        self._fetch_sql = f"FETCH FORWARD {self._prefetch} FROM {quote_ident(name)}"

    def _end(self, *, close: bool) -> CursorEnd:
        return (self._name, self._snapshot, self._owned, close)

    async def __aenter__(self) -> AsyncCursor:
        if self._state == _NEW:
            await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ASYNC
    def __aiter__(self) -> AsyncCursor:
        return self

    async def __anext__(self) -> Row:
        pos = self._pos
        if pos < len(self._buffer) and not self._client._released:
            self._pos = pos + 1
            return self._buffer[pos]
        if not await self._refill():
            raise StopAsyncIteration
        self._pos = 1
        return self._buffer[0]
    # SYNC: def __iter__(self) -> Cursor:
    # SYNC:     return self
    # SYNC:
    # SYNC: def __next__(self) -> Row:
    # SYNC:     pos = self._pos
    # SYNC:     if pos < len(self._buffer) and not self._client._released:
    # SYNC:         self._pos = pos + 1
    # SYNC:         return self._buffer[pos]
    # SYNC:     if not self._refill():
    # SYNC:         raise StopIteration
    # SYNC:     self._pos = 1
    # SYNC:     return self._buffer[0]
    # END

    async def _refill(self) -> bool:
        """Fetch the next ``prefetch`` rows into the buffer; False at the end (and then the
        cursor is closed, and a transaction of its own committed)."""
        self._buffer = []  # the rows handed out are the caller's now; hold none of them
        self._pos = 0
        client = self._client
        if client._released:
            self._state = _DONE
            client._live()  # raises: the client was released (its cursors ended with it)
        if self._state == _NEW:
            await self._open()
        if self._state == _DONE:
            return False
        if self._exhausted:
            await self.aclose()
            return False
        if not client._alive(self._snapshot):
            self._state = _DONE
            raise self._gone(None)
        try:
            columns, rows = await client._fetch(self._fetch_sql, (), self._timeout)
        except InvalidCursorName as exc:
            # The transaction (or savepoint) that held it ended behind pgconnector's back,
            # e.g. execute("COMMIT"): say so, rather than "cursor does not exist".
            self._state = _DONE
            await client._end_cursor_quietly(self._end(close=False), take_guard=True)
            raise self._gone(exc) from exc
        except ConnectionError:
            self._state = _DONE  # nothing left to close; the client is marked broken
            raise
        except Exception:
            # An error in the query (or a timeout) aborted the transaction: no CLOSE, but a
            # transaction of the cursor's own ends now, before the caller's next statement.
            self._state = _DONE
            await client._end_cursor_quietly(self._end(close=False), take_guard=True)
            raise
        except BaseException:
            # Cancelled: whether the FETCH ran is unknown, so the end waits for the client's
            # next statement (or its release), and never delays the cancellation.
            self._state = _DONE
            client._orphan(self._end(close=True))
            raise
        if len(rows) < self._prefetch:
            self._exhausted = True
        if not rows:
            await self.aclose()
            return False
        if columns or not self._columns:
            self._columns = columns
        self._buffer = make_rows(self._columns, rows)
        return True

    def _gone(self, cause: BaseException | None) -> InvalidCursorName:
        return InvalidCursorName(
            f"cursor {self._name} no longer exists: the transaction or savepoint it was "
            "declared in has ended; consume a cursor inside the transaction() block that "
            "opened it",
            cause,
            sqlstate="34000",
        )

    async def aclose(self) -> None:
        """Close the server-side cursor now (and commit the transaction it opened, if it
        opened one). Idempotent; leaving an ``async with`` block calls it."""
        state, self._state = self._state, _DONE
        self._buffer = []
        self._pos = 0
        if state != _OPEN:
            return
        client = self._client
        if client._released:
            return  # release() ended the cursor's transaction; the connection is not ours
        async with client._cursor_guard():
            await client._settle()
            await client._end_cursor(self._end(close=True))

    def __del__(self) -> None:
        # Dropped unfinished (a bare ``for … break``): hand the end to the client, which runs
        # it when nothing else is using the connection.
        if self._state != _OPEN:
            return
        self._state = _DONE
        # A closed loop or a dead connection: release() cleans up; nothing to report here.
        with contextlib.suppress(Exception):
            # ASYNC
            loop = self._loop
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._client._orphan(self._end(close=True))
            else:  # collected in another thread: the client belongs to its loop
                loop.call_soon_threadsafe(self._client._orphan, self._end(close=True))
            # SYNC: self._client._orphan(self._end(close=True))
            # END

    def __repr__(self) -> str:
        state = ("new", "open", "closed")[self._state]
        return f"<{type(self).__name__} {self._name or '-'} {state} prefetch={self._prefetch}>"
