"""The asyncpg backend pool over ``asyncpg.Pool``.

Design
------
asyncpg's pool keeps the connections: a LIFO queue of holders, cancellation-safe acquire and
(shielded) release, the inactivity timer (``idle_timeout``), and, since asyncpg 0.32, a
background task that restores ``min_size`` whenever a connection closes, retrying with
backoff while the server is unreachable. Three small objects adapt it to the core's contract:

:class:`TrackedConnection`
    The pool's ``connection_class``. It reports its own closing, exactly once, whichever path
    closes it: it overrides ``Connection._cleanup``, which asyncpg runs on every close —
    ``close()``, ``terminate()`` and a connection lost under it (the server ended the session,
    the socket died). That covers asyncpg's own closes (inactivity timer, pool close or
    terminate) and ours (discard, ``max_uses``, ``max_lifetime``, failed reset or ping). The
    reason is the one we set before closing it, or what the connection's state says.

:class:`AsyncpgConnection`
    The ``AsyncDriverConnection`` handed to the core: one per server connection, made when
    the connection opens, so a checkout costs an attribute read. It runs statements on the
    asyncpg connection directly (not through the pool's proxy, which re-dispatches every
    call), and turns errors that leave the connection unusable into
    :class:`pgconnector.ConnectionError`; SQL errors are the
    ``pgconnector.errors`` class of their SQLSTATE.

:class:`AsyncpgPool`
    The ``AsyncPoolBackend``. It maps the config onto ``asyncpg.create_pool`` and adds:

    * a ``connect=`` callable that reports every opened connection (``hooks.connection_opened``)
      and every failed attempt (``hooks.connection_failed``, translated into
      ``ConnectionError`` with the driver error as cause), installs the json/jsonb and uuid
      codecs (decoding as the other backends do) and libpq's TCP keepalives;
    * a release that costs no round trip for a clean connection: asyncpg's default reset query
      (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) is replaced by a
      no-op ``reset=`` callback, and ``release`` rolls back an open transaction (one
      ``ROLLBACK``), or resets the session when asked, before giving the connection back;
    * ``max_uses`` (checkouts, not asyncpg's ``max_queries``, which counts statements and is
      disabled), ``max_lifetime`` with jitter, checked at release;
    * ``ping_after_idle`` at acquire;
    * failing fast with the last connect error while the server is unreachable;
    * a slot held until pgconnector's release: asyncpg gives a holder back to its queue as
      soon as the holder's connection closes (``Connection._cleanup`` calls the holder's
      ``_release_on_close``), even while the connection is borrowed. A borrowed client whose
      session the server ended would then no longer count against ``max_size``, and asyncpg
      would lend its slot to another borrower. :class:`TrackedConnection` defers that step
      while the connection is lent, and :meth:`AsyncpgPool.release` takes it.

Floor maintenance is asyncpg's: since 0.32 ``min_size`` is a floor that the pool restores in
the background after any close (earlier versions only opened ``min_size`` connections at start
and closed idle ones below it), which is why this backend requires asyncpg 0.32. ``open()``
lets asyncpg open ``min_size`` connections (asyncpg 0.32 refuses an ``init_size`` below
``min_size``): the first one alone, then the rest concurrently, all within ``open()``'s
timeout; with ``min_size=0`` it opens and returns one.

``allow_exit_on_idle`` needs nothing here: asyncpg's timers and its maintenance task never keep
an event loop (or the interpreter) alive.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Any, TypeVar, cast

import asyncpg
import asyncpg.exceptions as pgexc
from asyncpg.pool import PoolConnectionProxy

from pgconnector import ConnectionError, PgConnectorError, PoolConfig, PoolHooks, PoolTimeoutError
from pgconnector._copy import AsyncChunks, rows_copied, split_chunks
from pgconnector._hosts import STATE_QUERY, Attempt, connect_plan, describe_target, open_budget
from pgconnector._multihost_async import aconnect_first
from pgconnector._pgbouncer import add_hint as add_pgbouncer_hint
from pgconnector._protocols import AsyncDriverConnection, QueryResult
from pgconnector._timeout import stuck_error, timed_out
from pgconnector._translate import ServerFields, server_error

from ._params import connect_args, driver_message, jittered_lifetime

if TYPE_CHECKING:
    _BaseConnection = asyncpg.Connection[asyncpg.Record]
    _Proxy = PoolConnectionProxy[asyncpg.Record]
    _Pool = asyncpg.Pool[asyncpg.Record]
else:  # asyncpg's classes are not generic at run time; only its stubs are
    _BaseConnection = asyncpg.Connection

__all__ = ["AsyncpgPool", "AsyncpgConnection", "TrackedConnection"]

T = TypeVar("T")

#: asyncpg raises a timeout at once for ``timeout <= 0``, even with an idle connection in the
#: pool; a zero acquire timeout means "do not wait", so it becomes this.
MIN_WAIT = 0.01

#: asyncpg's ``max_queries`` counts statements, not checkouts, and defaults to 50000; our
#: ``max_uses`` is done at release, so asyncpg's limit is set out of reach.
NEVER_QUERIES = sys.maxsize

#: The cheapest statement that makes a round trip through asyncpg (an empty query makes
#: asyncpg 0.32 fail while decoding the server's EmptyQueryResponse).
PING = "SELECT 1"

#: Session reset of a connection that is idle (not in a transaction): one statement.
SESSION_RESET_IDLE = "DISCARD ALL"

#: Session reset of a connection in an open or aborted transaction, in the same round trip as
#: the rollback. ``DISCARD ALL`` refuses to run in the implicit transaction block that a
#: multi-statement query forms, so this is its documented equivalent, statement by statement
#: (the same text as the psycopg backend's).
SESSION_RESET_IN_TRANSACTION = (
    "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; "
    "UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; "
    "DISCARD SEQUENCES"
)

# Errors after which the session is gone even if the socket has not closed yet. A statement
# timeout (QueryCanceledError) is an OperatorInterventionError too, but leaves the
# connection usable, hence the explicit list (and the FATAL/PANIC severity test below).
_CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    pgexc.PostgresConnectionError,
    pgexc.AdminShutdownError,
    pgexc.CrashShutdownError,
    pgexc.CannotConnectNowError,
)


def _is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, _CONNECTION_FAILURES):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        return True  # ConnectionResetError, BrokenPipeError, …
    return getattr(exc, "severity", None) in ("FATAL", "PANIC")


def _server_fields(exc: BaseException) -> ServerFields:
    """What the server said about ``exc`` (asyncpg keeps each field as an attribute).

    When the server ended the session, asyncpg raises its own ConnectionDoesNotExistError
    ("connection was closed in the middle of operation") with the server's FATAL error
    (``AdminShutdownError``, …) chained: that one says why."""
    if not isinstance(exc, asyncpg.PostgresError):
        return ServerFields()
    chained = exc.__cause__ or exc.__context__
    if (
        isinstance(exc, pgexc.ConnectionDoesNotExistError)
        and isinstance(chained, asyncpg.PostgresError)
        and getattr(chained, "sqlstate", None)
    ):
        exc = chained
    return ServerFields(
        sqlstate=getattr(exc, "sqlstate", None),
        message=getattr(exc, "message", None),
        detail=getattr(exc, "detail", None),
        hint=getattr(exc, "hint", None),
        severity=getattr(exc, "severity_en", None) or getattr(exc, "severity", None),
        schema_name=getattr(exc, "schema_name", None),
        table_name=getattr(exc, "table_name", None),
        column_name=getattr(exc, "column_name", None),
        constraint_name=getattr(exc, "constraint_name", None),
    )


def _encode_json(value: object) -> str:
    """json/jsonb arguments: JSON text as is, or a dict (dumped), as on every backend."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return json.dumps(value)
    raise TypeError(
        f"expected JSON text or a dict, got {type(value).__name__}: pass json.dumps(value), "
        "which works on every pgconnector backend"
    )


def _encode_jsonb(value: object) -> bytes:
    """jsonb in binary format: a version byte (1), then the JSON text. Binary, so that
    asyncpg's binary ``copy_records_to_table`` can send json/jsonb columns too."""
    return b"\x01" + _encode_json(value).encode("utf-8")


def _decode_jsonb(data: bytes) -> Any:
    if data[:1] != b"\x01":
        raise ValueError(f"unsupported jsonb binary format version {data[:1]!r}")
    return json.loads(data[1:])


def _encode_json_binary(value: object) -> bytes:
    return _encode_json(value).encode("utf-8")


def _encode_uuid(value: object) -> bytes:
    """uuid arguments: a ``uuid.UUID``, its text form, or its 16 bytes (what asyncpg's own
    codec accepts)."""
    if isinstance(value, uuid.UUID):
        return value.bytes
    if isinstance(value, str):
        return uuid.UUID(value).bytes
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == 16:
        return bytes(value)
    raise TypeError(f"expected uuid.UUID or str, got {type(value).__name__}")


def _decode_uuid(data: bytes) -> uuid.UUID:
    # asyncpg's own decoder returns its faster UUID subclass; the other backends (and
    # type(value) is uuid.UUID checks) expect the standard class.
    return uuid.UUID(bytes=data)


async def _async_chunks(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _read_state(con: TrackedConnection) -> tuple[bool, bool]:
    row = await con.fetchrow(STATE_QUERY)
    assert row is not None
    return bool(row[0]), bool(row[1])


def _terminate(con: TrackedConnection) -> None:
    con.terminate()


async def _no_reset(con: Any) -> None:
    """asyncpg's ``reset=`` callback. The release reset is done by :meth:`AsyncpgPool.release`
    (nothing for a clean connection); asyncpg's default would send a reset query every time."""


class TrackedConnection(_BaseConnection):
    """An asyncpg connection that tells its pool when it closes, whatever closes it."""

    __slots__ = ("_pgc_adapter", "_pgc_graceful")

    #: asyncpg's own slot: a weak reference to the pool holder that lent this connection.
    _pool_holder: Callable[[], Any] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Set once the connection was reported open (by :meth:`AsyncpgPool._connect`).
        self._pgc_adapter: AsyncpgConnection | None = None
        #: ``close()`` was called (asyncpg closes gracefully; we always terminate).
        self._pgc_graceful = False
        super().__init__(*args, **kwargs)

    async def close(self, *, timeout: float | None = None) -> None:
        self._pgc_graceful = True
        await super().close(timeout=timeout)

    def _cleanup(self) -> None:
        # asyncpg runs this on every close: close(), terminate(), and from the protocol when
        # the connection is lost. It may run more than once; the adapter reports only once.
        adapter = self._pgc_adapter
        reason = None
        if adapter is not None and not adapter.closed:
            reason = adapter._pool._close_reason(adapter, self)
        if adapter is not None and adapter.lent:
            # Borrowed: asyncpg would put the holder back in its queue now, lending the slot
            # again while pgconnector's client still holds it. Keep the holder out of
            # asyncpg's reach, and the slot counted in ``total``, until AsyncpgPool.release
            # gives it back (as the other backends do with a broken borrowed connection).
            holder = self._pool_holder
            if holder is not None:
                adapter.held_holder = holder
                self._pool_holder = None
            if reason is not None:
                if adapter.pending_close is None:
                    adapter.pending_close = reason
                reason = None
        try:
            super()._cleanup()  # type: ignore[misc]
        finally:
            if adapter is not None and reason is not None:
                adapter._pool._connection_closed(adapter, reason)


class AsyncpgConnection:
    """One server connection as the core sees it: its ``AsyncDriverConnection``.

    Made once per server connection; it also carries the pool's bookkeeping for it.
    """

    __slots__ = (
        "_con",
        "_id",
        "_pool",
        "broken",
        "checked_out",
        "close_reason",
        "closed",
        "expires_at",
        "held_holder",
        "idle_since",
        "lent",
        "pending_close",
        "proxy",
        "running",
        "stopped",
        "uses",
    )

    def __init__(
        self, con: TrackedConnection, pool: AsyncpgPool, connection_id: int, expires_at: float
    ) -> None:
        self._con = con
        self._pool = pool
        self._id = connection_id
        #: When ``max_lifetime`` (jittered) retires it, on the ``monotonic()`` clock.
        self.expires_at = expires_at
        #: When it last went idle (opened or released), for ``ping_after_idle``.
        self.idle_since = monotonic()
        #: Checkouts so far, for ``max_uses``.
        self.uses = 0
        self.checked_out = False
        #: From acquire until release hands the connection back to asyncpg: while set, a close
        #: leaves asyncpg's holder in use (see ``TrackedConnection._cleanup``).
        self.lent = False
        #: asyncpg's holder (a weak reference, as asyncpg keeps it) of a connection that
        #: closed while lent, for release to give back.
        self.held_holder: Callable[[], Any] | None = None
        #: Why it closed while lent: reported when release gives the slot back.
        self.pending_close: str | None = None
        #: The pool's proxy for the current checkout: what ``raw`` returns.
        self.proxy: _Proxy | None = None
        #: Set once an error showed the connection unusable.
        self.broken = False
        #: Why we are closing it, when we are the ones doing it.
        self.close_reason: str | None = None
        #: Reported closed.
        self.closed = False
        #: A statement of the core's runs on it (in its borrower's task).
        self.running = False
        #: Set when the running statement ends, while the pool waits for that to close it.
        self.stopped: asyncio.Future[None] | None = None

    @property
    def connection_id(self) -> int:
        return self._id

    @property
    def raw(self) -> Any:
        """asyncpg's pool proxy for this checkout: what ``asyncpg.Pool.acquire()`` returns. It
        refuses use after release."""
        return self.proxy if self.proxy is not None else self._con

    async def execute(
        self, sql: str, args: Sequence[Any], timeout: float | None = None
    ) -> str:
        if timeout is not None:
            con = self._con
            return await self.run_within(lambda t: con.execute(sql, *args, timeout=t), timeout)
        self.running = True
        try:
            # Without arguments asyncpg uses the simple query protocol, so a script of several
            # statements works and the status of the last one is returned, as with psycopg.
            return await self._con.execute(sql, *args)
        except Exception as exc:
            error = self._pool._translate(self, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._ended()

    async def fetch(
        self, sql: str, args: Sequence[Any], timeout: float | None = None
    ) -> QueryResult:
        if timeout is not None:
            con = self._con
            records = await self.run_within(lambda t: con.fetch(sql, *args, timeout=t), timeout)
        else:
            self.running = True
            try:
                records = await self._con.fetch(sql, *args)
            except Exception as exc:
                error = self._pool._translate(self, exc)
                if error is exc:
                    raise
                raise error from exc
            finally:
                self._ended()
        if not records:
            return (), ()
        # Records index by position, have a length and iterate over their values: all that
        # Row needs, and it builds its tuple from each record once (in C).
        return tuple(records[0].keys()), cast(Sequence[Sequence[Any]], records)

    async def executemany(
        self, sql: str, rows: Sequence[tuple[Any, ...]], timeout: float | None = None
    ) -> None:
        if timeout is not None:
            con = self._con
            await self.run_within(lambda t: con.executemany(sql, rows, timeout=t), timeout)
            return
        self.running = True
        try:
            # asyncpg's own executemany: the rows' Bind/Execute messages pipelined, one Sync.
            await self._con.executemany(sql, rows)
        except Exception as exc:
            error = self._pool._translate(self, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._ended()

    # COPY: asyncpg's own, inside the same translation as every statement.

    async def copy_in(self, sql: str, chunks: AsyncChunks, timeout: float | None = None) -> int:
        source, iterable = split_chunks(chunks)
        # asyncpg reads an async iterable (a failure of it makes asyncpg send CopyFail: the
        # COPY is rolled back, the connection stays usable, the error reaches the caller).
        reader = source if source is not None else _async_chunks(iterable)
        if timeout is not None:
            # asyncpg's own timeout covers the whole COPY, the source's waits included.
            con = self._con
            status = await self.run_within(
                lambda t: con._copy_in(sql, reader, t),  # type: ignore[attr-defined]
                timeout,
            )
            return rows_copied(status)
        self.running = True
        try:
            status = await self._con._copy_in(sql, reader, timeout)  # type: ignore[attr-defined]
        except Exception as exc:
            error = self._pool._translate(self, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._ended()
        return rows_copied(status)

    async def copy_records(
        self,
        table: str,
        schema: str | None,
        columns: Sequence[str] | None,
        records: Iterable[Sequence[Any]],
        timeout: float | None = None,
    ) -> int:
        # asyncpg's binary record COPY, with the connection's codecs (the same values as
        # arguments); asyncpg quotes the identifiers.
        con = self._con

        def load(t: float | None) -> Awaitable[str]:
            return con.copy_records_to_table(
                table,
                records=records,
                columns=list(columns) if columns else None,
                schema_name=schema,
                timeout=t,
            )

        if timeout is not None:
            return rows_copied(await self.run_within(load, timeout))
        self.running = True
        try:
            status = await load(None)
        except Exception as exc:
            error = self._pool._translate(self, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            self._ended()
        return rows_copied(status)

    async def copy_out(self, sql: str, timeout: float | None = None) -> AsyncIterator[bytes]:
        """asyncpg pushes the data into a callback; a task runs the COPY and hands each batch
        over through a small queue (so memory stays bounded: asyncpg stops reading while the
        callback waits).

        Closed early, the COPY is cancelled on the server (a CancelRequest) while the callback
        drops what still arrives, and the task is awaited to its end: the connection is then
        usable. (Cancelling the task instead would leave asyncpg's protocol in its COPY state
        while it believes the cancel done, and the next statement would fail.)"""
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=2)
        dropping = False

        async def sink(data: bytes) -> None:
            if not dropping:
                await queue.put(bytes(data))

        self.running = True
        copy = asyncio.ensure_future(
            self._con._copy_out(sql, sink, timeout)  # type: ignore[attr-defined]
        )
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                try:
                    await asyncio.wait((getter, copy), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not getter.done():
                        getter.cancel()
                if getter.done() and not getter.cancelled():
                    # Not "running" while the reader holds the chunk: a disconnect() then
                    # closes the connection at once instead of waiting for the COPY's end.
                    self._ended()
                    yield getter.result()
                    self.running = True
                    continue
                self._ended()
                while not queue.empty():
                    yield queue.get_nowait()
                copy.result()  # raises the COPY's error
                return
        except asyncio.TimeoutError as exc:
            if timeout is None:
                raise
            # asyncpg's own timeout (the whole COPY): wait until its cancel is over.
            raise await self._cancel_over(exc, timeout) from exc
        except Exception as exc:
            error = self._pool._translate(self, exc)
            if error is exc:
                raise
            raise error from exc
        finally:
            try:
                if not copy.done():
                    dropping = True
                    while not queue.empty():  # unblocks a callback waiting to put
                        queue.get_nowait()
                    sent = asyncio.get_running_loop().create_future()
                    self._con._cancel_current_command(sent)  # type: ignore[attr-defined]
                    # Both over before anything else is sent: no late cancel can hit the
                    # next statement.
                    await asyncio.wait((copy, sent))
            except BaseException:
                copy.cancel()  # interrupted itself: the connection's state is unknown now
                self._con.terminate()
                raise
            finally:
                if copy.done() and not copy.cancelled():
                    copy.exception()  # retrieved: its outcome is not wanted any more
                self._ended()
    async def run_within(self, call: Callable[[float], Awaitable[T]], timeout: float) -> T:
        """The backend's statement-timeout primitive: ``call(timeout)`` passes the timeout to
        the asyncpg method it calls (asyncpg's own ``timeout=``). When it expires asyncpg sends
        the server a cancel request and raises ``TimeoutError`` at once; here the call waits
        for that cancel to be over (sent, and the statement's end read), within
        ``connect_timeout``, before raising ``StatementTimeoutError``. Past that asyncpg
        terminates the connection and this raises ``ConnectionError``."""
        self.running = True
        try:
            try:
                return await call(timeout)
            except asyncio.TimeoutError as exc:
                raise await self._cancel_over(exc, timeout) from exc
            except Exception as exc:
                error = self._pool._translate(self, exc)
                if error is exc:
                    raise
                raise error from exc
        finally:
            self._ended()

    async def _cancel_over(self, exc: BaseException, timeout: float) -> PgConnectorError:
        """After asyncpg's own timeout: wait until its cancel request and the cancelled
        statement are over; the error to raise."""
        protocol = getattr(self._con, "_protocol", None)
        grace = self._pool._connect_budget
        if protocol is not None:
            # asyncpg's own wait, the one its next statement would do: on timeout it
            # terminates the connection (the statement may still run).
            with suppress(Exception):
                await protocol._wait_for_cancellation(grace)
        if self._con.is_closed():
            error = stuck_error(exc, timeout, grace)
            if not self.broken:
                self.broken = True
                self._pool._hooks.connection_failed(error, self._id)
            return error
        return timed_out(exc, timeout)

    def _ended(self) -> None:
        self.running = False
        stopped = self.stopped
        if stopped is not None and not stopped.done():
            stopped.set_result(None)

    def server_parameter(self, name: str) -> str | None:
        if self._con.is_closed():
            return None  # a terminated connection has dropped what the server told it
        value = getattr(self._con.get_settings(), name, None)
        return value if isinstance(value, str) else None

    def __repr__(self) -> str:
        state = "closed" if self._con.is_closed() else "open"
        return f"<{type(self).__name__} id={self._id} {state}>"


class AsyncpgPool:
    """The ``AsyncPoolBackend`` of the asyncpg backend, over ``asyncpg.Pool``."""

    def __init__(self, config: PoolConfig, hooks: PoolHooks) -> None:
        params = config.connect_params()
        args = connect_args(config, params)  # ConfigError for a keyword asyncpg cannot honour
        self._params = params
        self._config = config
        self._hooks = hooks
        self._secrets = (params.password, config.password, *args.secrets)
        self._target = describe_target(params)
        self._socket_options = args.socket_options
        self._connect_budget = params.connect_timeout
        #: One whole connect: every server of a multi-host DSN gets connect_timeout.
        self._open_budget = open_budget(params)
        self._session_reset = config.reset_on_release == "session"
        self._max_uses = config.max_uses
        self._max_lifetime = config.max_lifetime
        self._ping_after_idle = config.ping_after_idle

        #: Connections reported open and not yet reported closed, by id.
        self._live: dict[int, AsyncpgConnection] = {}
        self._closing = False
        #: The latest connect attempt failed (and none succeeded since).
        self._down = False
        self._last_error: BaseException | None = None

        pool: _Pool = asyncpg.create_pool(
            args.dsn,
            min_size=config.min_size,
            max_size=config.max_size,
            max_queries=NEVER_QUERIES,
            # Closes idle connections above min_size; 0 disables it, as idle_timeout=0 means.
            max_inactive_connection_lifetime=config.idle_timeout,
            connect=self._connect,
            reset=_no_reset,
            connection_class=TrackedConnection,
            **args.kwargs,
        )
        self._pool = pool

    @property
    def native(self) -> _Pool:
        return self._pool

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self, timeout: float) -> None:
        """Create asyncpg's pool and have one real connection opened within ``timeout``; fail
        with the first failed connect attempt, leaving nothing running."""
        try:
            await asyncio.wait_for(self._start(), timeout)
        except BaseException as exc:
            self._shutdown()
            if isinstance(exc, ConnectionError) or not isinstance(exc, Exception):
                raise
            if isinstance(exc, asyncio.TimeoutError):
                cause = self._last_error or exc
                detail = f" ({driver_message(cause, self._secrets)})" if self._last_error else ""
                raise ConnectionError(
                    f"could not connect to PostgreSQL at {self._target}: no connection could "
                    f"be opened within {timeout:g} s{detail}",
                    cause,
                ) from cause
            raise ConnectionError(
                f"could not connect to PostgreSQL at {self._target}: "
                f"{driver_message(exc, self._secrets)}",
                exc,
            ) from exc

    async def _start(self) -> None:
        pool = self._pool
        # asyncpg would open all min_size connections before the pool is usable (the first
        # alone, then the others at once), which on a busy server takes several connection
        # times. open() needs one: initialize with one, and asyncpg's min-size maintenance
        # (asyncpg >= 0.32) opens the others in the background. ``_initsize`` is asyncpg's
        # own attribute for ``init_size``, which it will not let be below ``min_size``.
        if self._config.min_size > 1 and isinstance(getattr(pool, "_initsize", None), int):
            pool._initsize = 1  # type: ignore[attr-defined]
        await pool
        if self._config.min_size == 0:
            proxy = await pool.acquire()
            await pool.release(proxy)

    async def close(self, timeout: float) -> None:
        self._closing = True
        try:
            # Waits for connections lent through the native pool, then closes each one
            # gracefully; on timeout (or any error) asyncpg terminates them all.
            await asyncio.wait_for(self._pool.close(), timeout)
        except asyncio.TimeoutError:
            pass
        except Exception as exc:
            self._hooks.connection_failed(exc)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        """Terminate everything now; report whatever asyncpg did not close as closed."""
        self._closing = True
        with suppress(Exception):  # an uninitialized pool refuses, with nothing to close
            self._pool.terminate()
        for adapter in list(self._live.values()):
            adapter._con.terminate()
            self._connection_closed(adapter, "pool closed")

    # -- borrowing -------------------------------------------------------------------------

    async def acquire(self, timeout: float) -> AsyncpgConnection:
        deadline = monotonic() + timeout
        limit = self._ping_after_idle
        while True:
            proxy = await self._get(deadline, timeout)
            # Nothing below awaits before returning, except the ping, which gives the
            # connection back (by terminating it) on any failure or cancellation.
            con = cast(TrackedConnection, proxy._con)  # type: ignore[attr-defined]
            adapter = con._pgc_adapter
            if adapter is None:  # cannot happen: every connection is opened by _connect
                con.terminate()
                raise ConnectionError(f"the asyncpg pool handed out a foreign connection {con!r}")
            idle_for = monotonic() - adapter.idle_since
            if limit is not None and idle_for >= limit and not await self._ping(adapter):
                continue
            adapter.uses += 1
            adapter.checked_out = True
            adapter.lent = True
            adapter.proxy = proxy
            return adapter

    async def _get(self, deadline: float, timeout: float) -> _Proxy:
        """``Pool.acquire()``, failing fast while the server is unreachable.

        asyncpg connects a free holder inside ``acquire()``, so a borrower usually learns of an
        outage from its own failed attempt (a ``ConnectionError`` from :meth:`_connect`). One
        that has to queue meanwhile waits at most ``connect_timeout`` at a time while the
        latest attempt has failed, and then fails with that attempt's error instead of
        waiting out ``acquire_timeout``.
        """
        pool = self._pool
        # A free holder means no waiting: then acquire without a timeout, which would cost
        # two timers (asyncpg also applies it to the release) for nothing. A free holder that
        # must reconnect first is bounded by the connect timeout. (``_queue`` is asyncpg's
        # queue of free holders; without it, always pass the timeout.)
        free = getattr(pool, "_queue", None)
        while True:
            wait: float | None
            if free is not None and not free.empty() and not self._down:
                wait = None
            else:
                remaining = deadline - monotonic()
                wait = max(min(remaining, self._open_budget) if self._down else remaining,
                           MIN_WAIT)
            try:
                return await pool.acquire(timeout=wait)
            except asyncio.TimeoutError as exc:
                if self._down:
                    raise self._unreachable_error() from self._last_error
                if monotonic() < deadline:
                    continue  # the wait was cut short by an outage that has ended
                raise PoolTimeoutError(
                    f"no connection available within {timeout:g} s from the asyncpg pool "
                    f"(max_size={self._config.max_size})",
                    exc,
                ) from exc
            except ConnectionError:
                raise  # a failed connect attempt, translated by _connect
            except asyncpg.InterfaceError as exc:
                raise ConnectionError(
                    f"the asyncpg pool is closed: {driver_message(exc, self._secrets)}", exc
                ) from exc

    async def _ping(self, adapter: AsyncpgConnection) -> bool:
        """One round trip on a connection idle for ``ping_after_idle``; False (and the
        connection closed, which returns its slot to asyncpg) when it fails."""
        con = adapter._con
        # Set before the round trip: a connection lost during it is reported with this reason.
        adapter.close_reason = "check failed"
        try:
            # A dead peer may never answer: bound the wait by what a connect may take.
            await con.execute(PING, timeout=self._connect_budget)
        except Exception:
            con.terminate()
            return False
        except BaseException:
            con.terminate()  # cancelled mid-statement: the connection's state is unknown
            raise
        adapter.close_reason = None
        return True

    def _unreachable_error(self) -> ConnectionError:
        error = self._last_error
        detail = driver_message(error, self._secrets) if error is not None else "unknown error"
        return ConnectionError(
            f"could not connect to PostgreSQL at {self._target}: {detail}", error
        )

    async def release(self, conn: AsyncDriverConnection, *, discard: bool = False) -> None:
        if not isinstance(conn, AsyncpgConnection) or conn._pool is not self:
            raise ValueError(f"{conn!r} does not belong to this pool")
        con = conn._con
        proxy = conn.proxy
        conn.checked_out = False
        conn.proxy = None
        try:
            reason = await self._reset(conn, discard)
        except BaseException:
            # Cancelled during the reset (only possible when not shielded, e.g. while the
            # pool closes): the connection's state is unknown.
            conn.close_reason = conn.close_reason or "discarded"
            con.terminate()
            self._return_slot(conn)
            raise
        if reason is None and con.is_closed():
            # Lost after the reset's check: its holder is ours to give back, not asyncpg's.
            reason = "broken"
        if reason is not None or proxy is None:  # (a checked-out connection has its proxy)
            conn.close_reason = reason or "discarded"
            if conn.running:
                await self._stop_statement(conn)
            # Synchronous, no round trip: asyncpg's holder goes back to the queue, and its
            # maintenance replaces the connection if the pool fell below min_size.
            con.terminate()
            self._return_slot(conn)
            return
        # From here asyncpg owns the slot again: a close now releases its holder at once.
        conn.lent = False
        # asyncpg's release does no I/O for a clean connection (our reset callback is a
        # no-op); should it fail, asyncpg terminates the connection, reported with this.
        conn.close_reason = "reset failed"
        try:
            await self._pool.release(proxy)
        except Exception as exc:
            self._hooks.connection_failed(exc, conn.connection_id)
            con.terminate()
            return
        conn.close_reason = None

    def _return_slot(self, conn: AsyncpgConnection) -> None:
        """Give asyncpg back the slot of a connection that is closed (it was, or has just been,
        terminated), and report the close: what asyncpg and ``TrackedConnection._cleanup`` do
        at once on a close, unless the connection was lent."""
        conn.lent = False
        reason, conn.pending_close = conn.pending_close, None
        if reason is not None:
            self._connection_closed(conn, reason)
        ref, conn.held_holder = conn.held_holder, None
        holder = ref() if ref is not None else None
        if holder is not None and holder._con is conn._con:
            holder._release_on_close()

    async def _stop_statement(self, conn: AsyncpgConnection) -> None:
        """Cancel the statement a borrower still runs on a connection about to be closed
        (disconnect() takes connections away from their borrowers), and wait, within
        ``connect_timeout``, for the borrower to get its error. ``terminate()`` alone only
        closes the socket: the server would go on running the statement, and the session
        would outlive disconnect() until the statement ended."""
        loop = asyncio.get_running_loop()
        stopped = conn.stopped = loop.create_future()
        sent = loop.create_future()
        try:
            # asyncpg's own CancelRequest, the one it sends when a query's task is cancelled.
            # Its end is waited for too: terminate() would cancel it half-way, and asyncpg
            # would then leave an exception in a future nobody reads.
            conn._con._cancel_current_command(sent)  # type: ignore[attr-defined]
            await asyncio.wait((stopped, sent), timeout=self._connect_budget)
        except Exception:
            pass  # terminate() then fails the statement on our side at least
        finally:
            conn.stopped = None

    async def _reset(self, conn: AsyncpgConnection, discard: bool) -> str | None:
        """Bring a returned connection back to a clean state; return why it must be closed
        instead, or None. A clean connection costs no round trip unless ``session`` resets
        are asked for."""
        con = conn._con
        if conn.broken or con.is_closed():
            return "broken"
        if discard:
            return "discarded"
        in_transaction = con.is_in_transaction()
        if self._session_reset:
            sql: str | None = SESSION_RESET_IN_TRANSACTION if in_transaction else SESSION_RESET_IDLE
        else:
            sql = "ROLLBACK" if in_transaction else None
        if sql is not None:
            try:
                await con.execute(sql)
            except Exception as exc:
                self._hooks.connection_failed(exc, conn.connection_id)
                return "reset failed"
            if con.is_in_transaction():
                self._hooks.connection_failed(
                    pgexc.InterfaceError(
                        "connection still in a transaction after the reset on release"
                    ),
                    conn.connection_id,
                )
                return "reset failed"
            # A transaction started through .raw.transaction() and left open is rolled back
            # now; without this asyncpg would roll it back again and log an error about it.
            if getattr(con, "_top_xact", None) is not None:
                con._top_xact = None  # type: ignore[attr-defined]
            if self._session_reset:
                # DISCARD ALL / DEALLOCATE ALL dropped asyncpg's prepared statements on the
                # server: forget them here too, or the next query would use a missing one.
                con._drop_local_statement_cache()  # type: ignore[attr-defined]
        if self._max_uses and conn.uses >= self._max_uses:
            return "max_uses"
        now = monotonic()
        if now >= conn.expires_at:
            return "max_lifetime"
        conn.idle_since = now
        return None

    # -- called by asyncpg and the connections ---------------------------------------------

    async def _connect(self, *args: Any, **kwargs: Any) -> TrackedConnection:
        """asyncpg's ``connect=`` callable: opens and prepares one connection, and reports it."""
        con: TrackedConnection | None = None
        started = perf_counter()

        async def open_one(attempt: Attempt) -> TrackedConnection:
            options = {**kwargs, "host": attempt.host, "port": attempt.port}
            return cast(TrackedConnection, await asyncpg.connect(*args, **options))

        try:
            # A multi-host DSN is tried here, one server at a time, rather than by asyncpg,
            # whose rules differ from libpq's (see pgconnector._hosts).
            con = await aconnect_first(
                connect_plan(self._params),
                open_one,
                _read_state,
                _terminate,
                lambda exc: driver_message(exc, self._secrets),
                self._params.target_session_attrs,
            )
            await self._prepare(con)
        except BaseException as exc:
            if con is not None:
                con.terminate()  # never reported open, so not reported closed either
            if not isinstance(exc, Exception):
                raise
            error = self._connect_failed(exc)
            raise error from exc
        if not self._closing:
            # While closing, asyncpg closes a connection that arrives late; it is then
            # reported neither open nor closed.
            self._down = False
            # Measured up to here: the codecs _prepare() sets are part of making it usable.
            connection_id = self._hooks.connection_opened(perf_counter() - started)
            adapter = AsyncpgConnection(
                con, self, connection_id, monotonic() + jittered_lifetime(self._max_lifetime)
            )
            con._pgc_adapter = adapter
            self._live[connection_id] = adapter
        return con

    async def _prepare(self, con: TrackedConnection) -> None:
        # All pg_catalog built-ins: asyncpg resolves them without a round trip.
        # json/jsonb in binary format (json's is its text): asyncpg's binary record COPY
        # (copy_records_to_table) has no text-format codec path.
        await con.set_type_codec(
            "json",
            schema="pg_catalog",
            encoder=_encode_json_binary,
            decoder=json.loads,
            format="binary",
        )
        await con.set_type_codec(
            "jsonb",
            schema="pg_catalog",
            encoder=_encode_jsonb,
            decoder=_decode_jsonb,
            format="binary",
        )
        await con.set_type_codec(
            "uuid",
            schema="pg_catalog",
            encoder=_encode_uuid,
            decoder=_decode_uuid,
            format="binary",
        )
        transport = getattr(con, "_transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            self._socket_options.apply(sock)

    def _connect_failed(self, exc: Exception) -> ConnectionError:
        if not self._closing:
            self._down = True
            self._last_error = exc
            self._hooks.connection_failed(exc)
        return ConnectionError(
            f"could not connect to PostgreSQL at {self._target}: "
            f"{driver_message(exc, self._secrets)}",
            exc,
        )

    def _close_reason(self, adapter: AsyncpgConnection, con: TrackedConnection) -> str:
        if self._closing or self._pool.is_closing():
            return "pool closed"
        graceful = con._pgc_graceful
        if adapter.close_reason is not None and not graceful:
            return adapter.close_reason
        # terminate() aborts before cleaning up; close() marks itself; a connection lost
        # under asyncpg (server ended the session, dead socket) did neither.
        lost = not graceful and not getattr(con, "_aborted", True)
        if adapter.checked_out:
            return "broken" if lost else "discarded"  # or closed through .raw while borrowed
        if lost:
            return "broken"
        if graceful:
            return "expired"  # asyncpg closed it: Pool.expire_connections() on the native pool
        return "idle"  # asyncpg's inactivity timer (max_inactive_connection_lifetime)

    def _connection_closed(self, adapter: AsyncpgConnection, reason: str) -> None:
        if adapter.closed:
            return
        adapter.closed = True
        self._live.pop(adapter.connection_id, None)
        self._hooks.connection_closed(adapter.connection_id, reason)

    def _translate(self, adapter: AsyncpgConnection, exc: Exception) -> Exception:
        """What to raise for ``exc``, a statement's failure: a :class:`ConnectionError` when it
        left the connection unusable, the ``pgconnector.errors`` class of its SQLSTATE for an
        error the server reported, else ``exc`` itself (asyncpg's own complaint about the
        arguments, raised before anything was sent)."""
        sqlstate = getattr(exc, "sqlstate", None)
        if not (adapter._con.is_closed() or _is_connection_failure(exc)):
            # asyncpg raises some of its own complaints (an argument it cannot encode) under a
            # server class, e.g. DataError, but without the fields of a server message.
            if not isinstance(exc, asyncpg.PostgresError) or sqlstate is None or (
                getattr(exc, "message", None) is None
            ):
                return exc
            error = server_error(exc, _server_fields(exc))
            if not self._config.pgbouncer:
                add_pgbouncer_hint(error, sqlstate)
            return error
        if not adapter.broken:
            adapter.broken = True
            self._hooks.connection_failed(exc, adapter.connection_id)
        return server_error(
            exc,
            _server_fields(exc),
            broken=True,
            description=f"connection to PostgreSQL at {self._target} is broken: "
            f"{driver_message(exc, self._secrets)}",
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._target}>"
