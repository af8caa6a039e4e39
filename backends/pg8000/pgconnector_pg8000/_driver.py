"""pg8000 as a :class:`pgconnector._generic_pool.RawDriver` (imported only when a pool is made).

:class:`Pg8000Driver` is built once per pool from the :class:`~pgconnector.PoolConfig`: it
refuses DSN keywords it cannot honour (``ConfigError`` at create time), and prepares what every
connect reuses — above all the ``ssl.SSLContext``, which pg8000 would otherwise build (and load
the system's CA store into) on every connect, the bulk of its slow connects.

It opens the socket itself (TCP or the Unix socket ``<dir>/.s.PGSQL.<port>``), negotiates TLS
as libpq's ``sslmode`` says (``prefer`` falls back to plaintext on the same socket when the
server answers "no TLS"; ``allow`` tries plaintext first), and hands pg8000 the ready socket.
Every step is bounded by what remains of ``connect_timeout``.

:class:`Pg8000Connection` (the object ``Client.raw`` returns) is a ``pg8000.native.Connection``
with four changes, all in pg8000's message handling:

* statements with arguments go out as Parse/Bind/Describe/Execute/Sync in **one** round trip
  (pg8000's ``execute_unnamed`` takes three), with PostgreSQL's own ``$1`` placeholders sent as
  they are, and parameter types chosen as psycopg chooses them;
* the CommandComplete tag is kept, so that ``execute`` returns ``"INSERT 0 1"`` exactly;
* a decoding error in the middle of a result no longer desynchronizes the connection: the
  remaining messages are read up to ReadyForQuery before the error is raised;
* a FATAL error (a terminated backend) is raised at once instead of waiting for a
  ReadyForQuery that never comes.

pg8000's native connection runs every statement in autocommit mode unless ``BEGIN`` is sent,
which is the contract. Unlike pg8000, ``COMMIT`` in a failed transaction returns the status
``"ROLLBACK"`` instead of raising, as with psycopg and asyncpg.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
import ssl
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from time import monotonic
from typing import Any

import pg8000.native  # type: ignore[import-untyped]
from pg8000.converters import _array_in as array_in  # type: ignore[import-untyped]
from pg8000.converters import make_param, timestamptz_in
from pg8000.core import Context  # type: ignore[import-untyped]
from pg8000.exceptions import (  # type: ignore[import-untyped]
    DatabaseError,
    InterfaceError,
)

from pgconnector import (
    ConfigError,
    ConnectParams,
    PgConnectorError,
    PoolConfig,
)
from pgconnector._copy import CHUNK_SIZE
from pgconnector._generic_pool import (
    ACTIVE,
    IDLE,
    IN_ERROR,
    IN_TRANSACTION,
    UNKNOWN,
)
from pgconnector._hosts import STATE_QUERY, connect_plan, describe_target
from pgconnector._multihost import connect_first
from pgconnector._protocols import QueryResult
from pgconnector._redact import redact
from pgconnector._translate import fields_from_protocol, server_error

__all__ = ["Pg8000Driver", "Pg8000Connection", "Pg8000Raw", "check_options", "param_oid"]

# -- protocol constants (PostgreSQL frontend/backend protocol 3.0) --------------------------

_HEADER = struct.Struct("!ci")
_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_CANCEL_REQUEST_CODE = 80877102

_READY_FOR_QUERY = b"Z"
_ERROR_RESPONSE = b"E"
_DATA_ROW = b"D"
_COPY_IN_RESPONSE = b"G"
_COPY_DATA = b"d"


def _message(code: bytes, payload: bytes = b"") -> bytes:
    return code + _I32.pack(len(payload) + 4) + payload


_DESCRIBE_PORTAL = _message(b"D", b"P\x00")
_EXECUTE = _message(b"E", b"\x00" + _I32.pack(0))
_SYNC = _message(b"S")
#: executemany's batches: at most this many rows per Sync, and a batch is sent once it
#: reaches this many bytes. A write that small completes into the sockets' buffers even if
#: the server has stopped reading because it is blocked writing its replies (large rows from
#: RETURNING) to us, who read them only after the write: no deadlock whatever the replies.
BATCH_ROWS = 1000
BATCH_BYTES = 64 * 1024
_COPY_FAIL = _message(b"f", b"COPY FROM STDIN runs through copy_in() in pgconnector\x00")
_COPY_DONE = _message(b"c")
_COPY_CANCELLED = _message(b"f", b"COPY cancelled by the client\x00")

# -- DSN keywords ---------------------------------------------------------------------------

#: libpq keywords this backend honours.
_HONOURED = frozenset({
    "hostaddr",
    "client_encoding",
    "options",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
})
#: Keywords that change nothing here: obsolete (sslcompression), or about GSSAPI, which pg8000
#: does not speak.
_NO_EFFECT = frozenset({"sslcompression", "krbsrvname", "gsslib", "gssdelegation"})
#: Keywords accepted only with the value(s) that describe what pg8000 does anyway.
_ONLY = {
    "gssencmode": ("disable", "prefer"),
    "channel_binding": ("prefer",),
    "sslnegotiation": ("postgres",),
    "sslcertmode": ("allow", "disable"),
}
_TLS_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def check_options(options: Mapping[str, str]) -> None:
    """Refuse DSN keywords that would change behaviour if honoured and that pg8000 cannot
    honour, instead of silently ignoring them."""
    for key, value in options.items():
        if key in _HONOURED or key in _NO_EFFECT:
            continue
        allowed = _ONLY.get(key)
        if allowed is not None:
            if value in allowed:
                continue
            raise ConfigError(
                f"dsn: {key}={value!r} is not supported by the pg8000 backend: use "
                f"{' or '.join(allowed)}, remove it, or use the psycopg backend",
                field="dsn",
            )
        raise ConfigError(
            f"dsn: the libpq keyword {key!r} is not supported by the pg8000 backend: remove "
            "it or use the psycopg backend (which passes every libpq keyword to libpq)",
            field="dsn",
        )


# -- parameter types ------------------------------------------------------------------------

_INT2, _INT4, _INT8, _NUMERIC = 21, 23, 20, 1700
_OIDS: dict[type, int] = {
    bool: 16,
    float: 701,
    Decimal: _NUMERIC,
    bytes: 17,
    bytearray: 17,
    memoryview: 17,
    dt.date: 1082,
    dt.timedelta: 1186,
    uuid.UUID: 2950,
}
_ARRAY_OIDS = {16: 1000, _INT2: 1005, _INT4: 1007, _INT8: 1016, 701: 1022, _NUMERIC: 1231,
               2950: 2951}


def param_oid(value: Any) -> int:
    """The parameter type sent for a Python value, as psycopg chooses it: ints by size
    (int2/int4/int8, numeric beyond), float8, numeric, bool, bytea, date, time(tz),
    timestamp(tz), interval, uuid, and arrays of these; 0 ("unknown": the server infers it from
    the statement) for str, None, dicts (JSON text), and anything else pg8000 can format."""
    kind = type(value)
    if kind is int:
        if -(2**15) <= value < 2**15:
            return _INT2
        if -(2**31) <= value < 2**31:
            return _INT4
        if -(2**63) <= value < 2**63:
            return _INT8
        return _NUMERIC
    if kind is dt.datetime:
        return 1184 if value.utcoffset() is not None else 1114
    if kind is dt.time:
        return 1266 if value.utcoffset() is not None else 1083
    if kind is list:
        return _array_oid(value)
    return _OIDS.get(kind, 0)


def column_oid(values: Iterable[Any]) -> int:
    """One parameter type for a column of values (executemany Parses once): as
    :func:`param_oid` chooses for them all, ints widened to the largest; 0 (the server
    infers it) when they disagree. NULLs take the other values' type."""
    element = 0
    for value in values:
        if value is None:
            continue
        oid = param_oid(value)
        if oid in _INTS and element in _INTS:
            oid = max(oid, element, key=_INTS.index)
        elif element and oid != element:
            return 0
        element = oid
    return element


def _array_oid(values: list[Any]) -> int:
    for value in values:
        if isinstance(value, list):
            return 0  # multi-dimensional: let the server infer it
    return _ARRAY_OIDS.get(column_oid(values), 0)


_INTS = (_INT2, _INT4, _INT8, _NUMERIC)
_TIMESTAMPTZ, _TIMESTAMPTZ_ARRAY = 1184, 1185
_INET, _INET_ARRAY, _CIDR, _CIDR_ARRAY = 869, 1041, 650, 651


def _inet_in(text: str) -> Any:
    """An address when the mask is full-length (PostgreSQL then prints none), else the
    interface, host bits kept."""
    if "/" not in text:
        return ipaddress.ip_address(text)
    interface = ipaddress.ip_interface(text)
    if interface.network.prefixlen == interface.max_prefixlen:
        return interface.ip
    return interface


def _timestamptz_in(text: str) -> Any:
    value = timestamptz_in(text)
    if isinstance(value, dt.datetime) and value.tzinfo is not dt.timezone.utc:
        value = value.astimezone(dt.timezone.utc)
    return value  # a datetime, or "infinity" / "-infinity" as pg8000 returns them


# -- the connection -------------------------------------------------------------------------


class Pg8000Connection(pg8000.native.Connection):  # type: ignore[misc]
    """A ``pg8000.native.Connection`` that pgconnector's pool drives (see the module
    docstring for what differs). ``run()`` and the rest of pg8000's API work as usual."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: True between statements (after ReadyForQuery): an error raised then left the
        #: connection in step with the server.
        self.pgc_ready = True
        self.pgc_in_extended = False
        self.pgc_discard_rows = False
        #: Set by a cancel: a running copy_in stops reading its source.
        self.pgc_stop = False
        super().__init__(*args, **kwargs)
        self.py_types[memoryview] = lambda view: "\\x" + bytes(view).hex()
        # timestamptz in UTC whatever the session's TimeZone, as on every backend.
        self.pg_types[_TIMESTAMPTZ] = _timestamptz_in
        self.pg_types[_TIMESTAMPTZ_ARRAY] = array_in(_timestamptz_in)
        # inet/cidr as psycopg and asyncpg decode them (pg8000 makes every inet with a mask a
        # network, dropping its host bits, and leaves cidr as text).
        self.pg_types[_INET] = _inet_in
        self.pg_types[_INET_ARRAY] = array_in(_inet_in)
        self.pg_types[_CIDR] = ipaddress.ip_network
        self.pg_types[_CIDR_ARRAY] = array_in(ipaddress.ip_network)

    # pg8000 message handlers ----------------------------------------------------------------

    def handle_COMMAND_COMPLETE(self, data: bytes, context: Any) -> None:
        tag = data[:-1]
        context.tag = tag.decode("ascii", "replace")
        try:
            count = int(tag.rsplit(b" ", 1)[-1])
        except ValueError:
            return
        context.row_count = count if context.row_count == -1 else context.row_count + count

    def handle_ROW_DESCRIPTION(self, data: bytes, context: Any) -> None:
        if context.columns is not None and not hasattr(context, "pgc_first"):
            # A script with several result sets: keep the first (as psycopg's fetch does).
            context.pgc_first = (context.columns, context.rows)
            context.rows = []
        super().handle_ROW_DESCRIPTION(data, context)

    def handle_READY_FOR_QUERY(self, data: bytes, context: Any) -> None:
        self._transaction_status = data
        self.pgc_ready = True

    def handle_messages(self, context: Any) -> None:
        for _ in self.pgc_messages(context, copy_out=False):
            pass

    def pgc_messages(self, context: Any, *, copy_out: bool) -> Iterator[bytes]:
        """Read and handle messages up to ReadyForQuery. With ``copy_out``, the data of a COPY
        TO STDOUT is yielded in chunks of about ``CHUNK_SIZE`` bytes (whole rows) instead of
        going to pg8000's stream."""
        sock = self._sock
        failure: Exception | None = None
        code = None
        pending = bytearray()
        while code != _READY_FOR_QUERY:
            header = _read_exact(sock, 5)
            code, length = _HEADER.unpack(header)
            data = _read_exact(sock, length - 4)
            if failure is not None and code != _READY_FOR_QUERY:
                continue  # draining up to ReadyForQuery after a client-side error
            if code == _DATA_ROW and self.pgc_discard_rows:
                continue  # executemany: rows a statement returns are not kept
            if copy_out and code == _COPY_DATA:
                pending += data
                if len(pending) >= CHUNK_SIZE:
                    yield bytes(pending)
                    pending.clear()
                continue
            if pending and context.error is None:
                yield bytes(pending)  # CopyDone (or an error) follows the last row
                pending.clear()
            try:
                self.message_types[code](data, context)
            except Exception as exc:
                if isinstance(exc, InterfaceError) and str(exc) == "network error":
                    raise
                failure = exc
                if code == _COPY_IN_RESPONSE:
                    # The server waits for data: refuse the COPY so that it answers.
                    _write_all(sock, _COPY_FAIL + (_SYNC if self.pgc_in_extended else b""))
                continue
            if code == _ERROR_RESPONSE and is_fatal(context.error):
                # The server ends the session: no ReadyForQuery will follow.
                raise context.error
        if failure is not None:
            raise failure
        if context.error is not None:
            raise context.error

    def handle_COPY_OUT_RESPONSE(self, data: bytes, context: Any) -> None:
        if not getattr(context, "pgc_copy_out", False):
            super().handle_COPY_OUT_RESPONSE(data, context)

    def handle_COPY_IN_RESPONSE(self, data: bytes, context: Any) -> None:
        chunks = getattr(context, "pgc_chunks", None)
        if chunks is None:
            super().handle_COPY_IN_RESPONSE(data, context)  # pg8000's own run(stream=...)
            return
        # A failure of the source raises out of here: handle_messages then sends CopyFail,
        # the server rolls the COPY back, and the source's error reaches the caller.
        sock = self._sock
        for chunk in chunks:
            if self.pgc_stop:
                # Cancelled (Pg8000Raw.cancel): stop reading the source, and end the COPY
                # with an error, as the server would on its own cancel.
                _write_all(sock, _COPY_CANCELLED)
                return
            if chunk:
                try:
                    sock.write(_HEADER.pack(_COPY_DATA, len(chunk) + 4))
                    sock.write(chunk)
                except (OSError, AttributeError, ValueError) as exc:
                    raise InterfaceError("network error") from exc
        _write_all(sock, _COPY_DONE)

    # statements ------------------------------------------------------------------------------

    def pgc_simple(self, sql: str) -> Any:
        """One statement (or a script) without arguments: the simple query protocol."""
        context = Context(sql)
        self.pgc_ready = False
        self.pgc_in_extended = False
        _write_all(self._sock, _message(b"Q", sql.encode(self._client_encoding) + b"\x00"))
        self.handle_messages(context)
        return context

    def pgc_extended(self, sql: str, oids: Sequence[int], params: Sequence[str | None]) -> Any:
        """One statement with arguments, in one round trip."""
        context = Context(sql)
        self.pgc_ready = False
        self.pgc_in_extended = True
        _write_all(
            self._sock,
            b"".join((self._pgc_parse(sql, oids), self._pgc_bind(params), _DESCRIBE_PORTAL,
                      _EXECUTE, _SYNC)),
        )
        self.handle_messages(context)
        return context

    def pgc_executemany(
        self, sql: str, oids: Sequence[int], rows: Iterable[Sequence[str | None]]
    ) -> Any:
        """One statement, Parsed once, then Bind/Execute for each row of (formatted)
        arguments, pipelined: a batch of rows (at most :data:`BATCH_ROWS` and
        :data:`BATCH_BYTES`, or one bigger row) goes out in one write ending with one Sync,
        and its replies are read before the next batch is sent (see :data:`BATCH_BYTES`).
        The first failing row's error is raised after its batch's ReadyForQuery (the server
        skips the rest of the batch); the later batches are never sent. Atomic only inside a
        transaction, which the core opens."""
        context = Context(sql)
        self.pgc_in_extended = True
        self.pgc_discard_rows = True
        try:
            pending = bytearray(self._pgc_parse(sql, oids))
            count = 0
            for params in rows:
                message = self._pgc_bind(params) + _EXECUTE
                # Only a batch of one row may be bigger than BATCH_BYTES: the server reads
                # that row whole before it replies to it.
                if count and (count >= BATCH_ROWS or len(pending) + len(message) > BATCH_BYTES):
                    self._pgc_send_batch(pending, context)
                    pending = bytearray()
                    count = 0
                pending += message
                count += 1
            if count:
                self._pgc_send_batch(pending, context)
        finally:
            self.pgc_discard_rows = False
        return context

    def _pgc_send_batch(self, pending: bytearray, context: Any) -> None:
        pending += _SYNC
        self.pgc_ready = False
        _write_all(self._sock, pending)  # one write, one flush: one round trip per batch
        self.handle_messages(context)

    def _pgc_parse(self, sql: str, oids: Sequence[int]) -> bytes:
        parse = bytearray(b"\x00")  # the unnamed statement
        parse += sql.encode(self._client_encoding) + b"\x00"
        parse += _U16.pack(len(oids))
        for oid in oids:
            parse += _I32.pack(oid)
        return _message(b"P", bytes(parse))

    def _pgc_bind(self, params: Sequence[str | None]) -> bytes:
        encoding = self._client_encoding
        bind = bytearray(b"\x00\x00")  # unnamed portal, unnamed statement
        bind += _I16.pack(0)  # every parameter in text format
        bind += _U16.pack(len(params))
        for param in params:
            if param is None:
                bind += _I32.pack(-1)
            else:
                value = param.encode(encoding)
                bind += _I32.pack(len(value))
                bind += value
        bind += _I16.pack(0)  # every result column in text format
        return _message(b"B", bytes(bind))


    def pgc_copy_in(self, sql: str, chunks: Iterable[bytes]) -> Any:
        """A ``COPY … FROM STDIN`` sending ``chunks``: the simple query protocol."""
        context = Context(sql)
        context.pgc_chunks = chunks
        self.pgc_ready = False
        self.pgc_in_extended = False
        self.pgc_stop = False
        _write_all(self._sock, _message(b"Q", sql.encode(self._client_encoding) + b"\x00"))
        self.handle_messages(context)
        return context

    def pgc_copy_out(self, sql: str) -> Iterator[bytes]:
        """A ``COPY … TO STDOUT``, its data yielded in chunks as it arrives."""
        context = Context(sql)
        context.pgc_copy_out = True
        self.pgc_ready = False
        self.pgc_in_extended = False
        _write_all(self._sock, _message(b"Q", sql.encode(self._client_encoding) + b"\x00"))
        yield from self.pgc_messages(context, copy_out=True)


def _read_exact(sock: Any, size: int) -> bytes:
    try:
        data = sock.read(size)
        if len(data) == size:
            return bytes(data)
        buffer = bytearray(data)
        while len(buffer) < size:
            block = sock.read(size - len(buffer))
            if not block:
                raise InterfaceError("network error")
            buffer += block
        return bytes(buffer)
    except (OSError, AttributeError, ValueError) as exc:  # closed file, dead socket
        raise InterfaceError("network error") from exc


def _write_all(sock: Any, data: bytes | bytearray) -> None:
    try:
        sock.write(data)
        sock.flush()
    except (OSError, AttributeError, ValueError) as exc:
        raise InterfaceError("network error") from exc


def error_fields(error: BaseException | None) -> Mapping[str, str]:
    """The fields of a server error (``{"S": "ERROR", "C": "22012", "M": …}``), else {}."""
    if isinstance(error, DatabaseError) and error.args and isinstance(error.args[0], dict):
        return error.args[0]
    return {}


def is_fatal(error: BaseException | None) -> bool:
    """True for a server error that ends the session (FATAL/PANIC, admin or crash shutdown,
    the connection-exception class 08)."""
    fields = error_fields(error)
    if not fields:
        return False
    severity = fields.get("V") or fields.get("S")
    code = fields.get("C", "")
    return severity in ("FATAL", "PANIC") or code.startswith(("57P", "08"))


def describe_error(error: BaseException, *, severity: bool = True) -> str:
    """One readable line for a pg8000 error (pg8000's own str() is a dict's repr).
    ``severity=False`` leaves out the ``FATAL:`` of a refused connect, as the other backends'
    messages do."""
    fields = error_fields(error)
    if fields:
        level = fields.get("V") or fields.get("S") or "ERROR"
        text = f"{level}: {fields.get('M', '')}" if severity else fields.get("M", "")
        if fields.get("D"):
            text += f" ({fields['D']})"
        return f"{text} (SQLSTATE {fields.get('C', '?')})"
    text = str(error) or type(error).__name__
    cause = error.__cause__
    if cause is not None:
        said = os_reason(cause) if isinstance(cause, OSError) else str(cause)
        if said and said not in text:
            text = f"{text}: {cause}"
    return text


class Pg8000Raw:
    """The :class:`~pgconnector._generic_pool.RawConnection` over one
    :class:`Pg8000Connection`."""

    __slots__ = ("_broken", "_busy", "_close_requested", "_conn", "_driver", "_endpoint",
                 "_lock", "_socket")

    def __init__(
        self,
        conn: Pg8000Connection,
        sock: socket.socket,
        driver: Pg8000Driver,
        endpoint: _Endpoint,
    ) -> None:
        self._conn = conn
        self._socket = sock
        self._driver = driver
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._busy = False
        self._close_requested = False
        self._broken: BaseException | None = None

    @property
    def raw(self) -> Pg8000Connection:
        return self._conn

    def server_parameter(self, name: str) -> str | None:
        value = self._conn.parameter_statuses.get(name)
        return value if isinstance(value, str) else None

    def execute(self, sql: str, args: Sequence[Any]) -> str:
        context = self._run(sql, args)
        return getattr(context, "tag", None) or ""

    def fetch(self, sql: str, args: Sequence[Any]) -> QueryResult:
        context = self._run(sql, args)
        columns, rows = getattr(context, "pgc_first", None) or (context.columns, context.rows)
        if columns is None:
            return [], []
        return [column["name"] for column in columns], rows or []

    def executemany(
        self, sql: str, rows: Sequence[tuple[Any, ...]], timeout: float | None = None
    ) -> None:
        if self._broken is not None:
            raise self._driver.broken(self._broken)
        conn = self._conn
        # Every row formatted before anything is sent, as for execute. The statement is
        # Parsed once, so each column gets one parameter type: the one psycopg would choose
        # for its values (ints widened to the largest), or "unknown" (the server infers it)
        # where the rows disagree.
        py_types = conn.py_types
        params = [[make_param(py_types, value) for value in row] for row in rows]
        oids = [column_oid(column) for column in zip(*rows, strict=True)] if rows[0] else []
        self._guarded(conn.pgc_executemany, sql, oids, params)

    def _run(self, sql: str, args: Sequence[Any]) -> Any:
        if self._broken is not None:
            raise self._driver.broken(self._broken)
        conn = self._conn
        if args:
            # Formatting happens before anything is sent: a value pg8000 cannot format is the
            # caller's error, and the connection stays usable.
            py_types = conn.py_types
            oids = [param_oid(value) for value in args]
            params = [make_param(py_types, value) for value in args]
            return self._guarded(conn.pgc_extended, sql, oids, params)
        return self._guarded(conn.pgc_simple, sql)

    def _guarded(self, send: Callable[..., Any], *args: Any) -> Any:
        """Run one exchange of ``conn`` (``send(*args)``): alone on the connection, its
        failure translated (the server's error by SQLSTATE; a broken connection marked)."""
        conn = self._conn
        self._begin()
        try:
            return send(*args)
        except Exception as exc:
            error = self._error(exc)
            if error is exc:
                raise
            raise error from exc
        except BaseException as exc:
            # Interrupted mid-statement (KeyboardInterrupt): the protocol state is unknown.
            if not conn.pgc_ready:
                self._broken = exc
            raise
        finally:
            self._end()

    def _begin(self) -> None:
        with self._lock:
            if self._busy:
                # The pool never sends two statements at once on a connection; a second
                # sender here would read the other's replies. Refused before anything is sent,
                # so the statement that runs is left alone.
                raise InterfaceError("another statement is running on this connection")
            self._busy = True

    def _end(self) -> None:
        with self._lock:
            self._busy = False
            close = self._close_requested
        if close:
            self._hard_close()

    def _error(self, exc: Exception) -> Exception:
        """What to raise for ``exc``, a statement's failure: the server's error when the
        connection is in step with the server (raised after ReadyForQuery), ``exc`` itself
        when it is not the server's (a value pg8000 could not decode, a copy_in source's own
        error), else a ConnectionError (the connection is then broken)."""
        conn = self._conn
        if (conn.pgc_ready and conn._usock is not None and not is_fatal(exc)
                and not self._close_requested):
            fields = error_fields(exc)
            if not fields:
                return exc
            return server_error(exc, fields_from_protocol(fields))
        self._broken = exc
        return self._driver.broken(exc)

    def copy_in(self, sql: str, chunks: Iterable[bytes]) -> int:
        if self._broken is not None:
            raise self._driver.broken(self._broken)
        context = self._guarded(self._conn.pgc_copy_in, sql, chunks)
        return max(int(context.row_count), 0)

    def copy_out(self, sql: str) -> Iterator[bytes]:
        """A generator: closed early, it cancels the COPY on the server and reads the rest
        (dropped), so that the connection stays in step and usable."""
        if self._broken is not None:
            raise self._driver.broken(self._broken)
        conn = self._conn
        self._begin()
        chunks = conn.pgc_copy_out(sql)
        try:
            for chunk in chunks:
                try:
                    yield chunk
                except GeneratorExit:
                    self.cancel()
                    try:
                        for _ in chunks:
                            pass
                    except DatabaseError as exc:
                        if is_fatal(exc) or not conn.pgc_ready:
                            raise
                        # The cancel's own error (57014), when it hit the COPY: expected.
                    raise
        except Exception as exc:
            error = self._error(exc)
            if error is exc:
                raise
            raise error from exc
        except BaseException as exc:
            if not conn.pgc_ready:
                self._broken = exc
            raise
        finally:
            self._end()

    def transaction_status(self) -> str:
        if self._broken is not None or self._conn._usock is None:
            return UNKNOWN
        if self._busy or not self._conn.pgc_ready:
            return ACTIVE
        status = self._conn._transaction_status
        if status is None or status == b"I":
            return IDLE
        if status == b"T":
            return IN_TRANSACTION
        if status == b"E":
            return IN_ERROR
        return UNKNOWN

    def is_broken(self) -> bool:
        return self._broken is not None

    def ping(self, timeout: float) -> None:
        sock = self._socket
        sock.settimeout(timeout)
        try:
            self._run("", ())
        finally:
            if self._broken is None:
                sock.settimeout(None)

    def cancel(self) -> None:
        """Send a CancelRequest for this connection's backend (pg8000 has no cancel of its
        own): the backend pid and secret key pg8000 kept from BackendKeyData, over a new
        connection to the same server; returns once the server has acted on it."""
        self._conn.pgc_stop = True
        key = self._conn._backend_key_data
        if not key:
            return
        # Best effort: otherwise the statement simply runs to its end.
        with contextlib.suppress(Exception):
            self._driver.send_cancel(key, self._endpoint)

    def close(self) -> None:
        with self._lock:
            if self._busy:
                # Another thread is inside a statement: shut the socket down under it (it then
                # fails at once), and let that thread release the file when it leaves.
                self._close_requested = True
                busy = True
            else:
                busy = False
        if busy:
            self.cancel()
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            return
        conn = self._conn
        if conn._usock is None:
            return
        if self._broken is None:
            try:
                # Say goodbye (Terminate), but never wait long for a dead peer.
                self._socket.settimeout(1.0)
                conn.close()
                return
            except Exception:
                pass
        self._hard_close()

    def _hard_close(self) -> None:
        conn = self._conn
        for closable in (conn._sock, conn._usock):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        conn._sock = None
        conn._usock = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.transaction_status()}>"


# -- the driver -----------------------------------------------------------------------------


class Pg8000Driver:
    """Opens pg8000 connections for one pool (see the module docstring)."""

    def __init__(self, config: PoolConfig) -> None:
        params = config.connect_params()
        options = dict(params.options)
        check_options(options)
        self._params = params
        self._target = describe_target(params)
        self._secrets = tuple(s for s in {params.password, config.password,
                                          options.get("sslpassword")} if s)
        self._hostaddr = options.get("hostaddr")
        self._want = params.target_session_attrs
        self._keepalive = _socket_options(options)
        settings: dict[str, str] = {}
        if "client_encoding" in options:
            settings["client_encoding"] = options["client_encoding"]
        if "options" in options:
            settings["options"] = options["options"]
        settings.update(params.server_settings)
        self._startup = settings
        self._application_name = params.application_name or options.get(
            "fallback_application_name"
        )
        if params.ssl_context is not None:
            self._sslmode = "require"
            self._context: ssl.SSLContext | None = params.ssl_context
        else:
            self._sslmode = params.sslmode or "prefer"  # libpq's default
            self._context = build_ssl_context(self._sslmode, options, params)
        self._sni = options.get("sslsni", "1") != "0"
        self._endpoints = {
            (host, port): self._endpoint(host, port) for host, port in params.endpoints
        }

    def _endpoint(self, host: str, port: int) -> _Endpoint:
        unix_path = None
        if host.startswith("/"):
            unix_path = os.path.join(host, f".s.PGSQL.{port}")
        # The name sent as SNI (libpq: unless sslsni=0, and never for an address) and checked
        # against the certificate for verify-full.
        server_hostname: str | None = None
        verify_name = self._context is not None and self._context.check_hostname
        if unix_path is None and (verify_name or (self._sni and not _is_ip(host))):
            server_hostname = host
        return _Endpoint(host, port, unix_path, self._hostaddr or host, server_hostname)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The context every TLS connect of this pool uses (built once)."""
        return self._context

    @property
    def target(self) -> str:
        return self._target

    # RawDriver -------------------------------------------------------------------------------

    def describe(self, error: BaseException) -> str:
        return describe_error(error, severity=False)

    def connect(self, timeout: float) -> Pg8000Raw:
        """Open one connection: to the first server of a multi-host DSN that accepts it and
        matches ``target_session_attrs`` (libpq's rules, see :mod:`pgconnector._hosts`), each
        tried within ``timeout``."""
        return connect_first(
            connect_plan(self._params),
            lambda attempt: self._connect_to(self._endpoints[attempt.host, attempt.port], timeout),
            _read_state,
            _discard,
            describe_error,
            self._want,
        )

    def _connect_to(self, endpoint: _Endpoint, timeout: float) -> Pg8000Raw:
        deadline = monotonic() + timeout
        mode = self._sslmode
        if endpoint.unix_path is not None or mode == "disable" or self._context is None:
            # libpq never negotiates TLS over a Unix socket either.
            return self._attempt(endpoint, "off", deadline, timeout)
        # The second attempt is made outside the ``except`` block, so that its error (the one
        # the user sees) does not carry the first one as its context: a wrong password would
        # otherwise print the same server error twice, "during handling of" itself.
        if mode == "allow":
            try:
                return self._attempt(endpoint, "off", deadline, timeout)
            except _Unreachable:
                raise
            except (DatabaseError, InterfaceError):
                pass  # the server refused us (or hung up) in plaintext: try TLS, as libpq does
            return self._attempt(endpoint, "required", deadline, timeout)
        if mode == "prefer":
            try:
                return self._attempt(endpoint, "optional", deadline, timeout)
            except (ssl.SSLError, DatabaseError):
                # The TLS handshake failed, or the server refused us over TLS: try plaintext,
                # as libpq does for sslmode=prefer.
                pass
            return self._attempt(endpoint, "off", deadline, timeout)
        return self._attempt(endpoint, "required", deadline, timeout)

    # internals --------------------------------------------------------------------------------

    def broken(self, error: BaseException) -> PgConnectorError:
        """The :class:`ConnectionError` for a connection that ``error`` broke (of its SQLSTATE's
        class when the server said why, e.g. ``AdminShutdown``)."""
        return server_error(
            error,
            fields_from_protocol(error_fields(error)),
            broken=True,
            description=f"connection to PostgreSQL at {self._target} is broken: "
            f"{redact(describe_error(error), self._secrets)}",
        )

    def _attempt(
        self, endpoint: _Endpoint, tls: str, deadline: float, timeout: float
    ) -> Pg8000Raw:
        sock = self._open_socket(endpoint, deadline, timeout)
        try:
            if tls != "off":
                sock = self._negotiate_tls(
                    sock, endpoint.server_hostname, tls == "required", deadline, timeout
                )
            sock.settimeout(_remaining(deadline, timeout))
            params = self._params
            try:
                conn = Pg8000Connection(
                    user=params.user,
                    password=params.password,
                    database=params.database,
                    application_name=self._application_name,
                    startup_params=self._startup or None,
                    sock=sock,
                    ssl_context=False,
                )
            except InterfaceError as exc:
                if isinstance(exc.__cause__, TimeoutError):
                    raise InterfaceError(f"timeout expired after {timeout:g} s") from exc
                raise
            sock.settimeout(None)
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
        return Pg8000Raw(conn, sock, self, endpoint)

    def _open_socket(self, endpoint: _Endpoint, deadline: float, timeout: float) -> socket.socket:
        port = endpoint.port
        if endpoint.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(_remaining(deadline, timeout))
                sock.connect(endpoint.unix_path)
            except OSError as exc:
                sock.close()
                raise _Unreachable(
                    f"could not connect to the Unix socket {endpoint.unix_path}: {exc}"
                ) from exc
            return sock
        address = endpoint.address
        # The message that carries this names the server already (or, for a multi-host DSN,
        # the attempt): only a hostaddr that differs from it is worth saying.
        via = f" (hostaddr {address})" if address != endpoint.host else ""
        try:
            sock = socket.create_connection((address, port), _remaining(deadline, timeout))
        except TimeoutError as exc:
            raise _Unreachable(f"timeout expired after {timeout:g} s{via}") from exc
        except OSError as exc:
            raise _Unreachable(f"{os_reason(exc)}{via}") from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for level, name, value in self._keepalive:
                sock.setsockopt(level, name, value)
        except OSError:
            pass
        return sock

    def _negotiate_tls(
        self,
        sock: socket.socket,
        server_hostname: str | None,
        required: bool,
        deadline: float,
        timeout: float,
    ) -> socket.socket:
        context = self._context
        assert context is not None
        try:
            sock.settimeout(_remaining(deadline, timeout))
            sock.sendall(_SSL_REQUEST)
            answer = sock.recv(1)
        except TimeoutError as exc:
            raise InterfaceError(f"timeout expired after {timeout:g} s") from exc
        except OSError as exc:
            raise InterfaceError("network error") from exc
        if answer == b"S":
            return context.wrap_socket(sock, server_hostname=server_hostname)
        if answer == b"N":
            if required:
                raise InterfaceError("the server does not support SSL, but SSL was required")
            return sock  # sslmode=prefer: go on in plaintext on the same socket
        raise InterfaceError(f"unexpected answer {answer!r} to the SSL request")

    def send_cancel(self, key: bytes, endpoint: _Endpoint) -> None:
        """A CancelRequest for the backend identified by ``key`` (its pid and secret), over a
        new plaintext connection; returns once the server has handled it (closed it)."""
        budget = min(self._params.connect_timeout, 5.0)
        deadline = monotonic() + budget
        sock = self._open_socket(endpoint, deadline, budget)
        try:
            sock.settimeout(_remaining(deadline, budget))
            sock.sendall(struct.pack("!ii", 16, _CANCEL_REQUEST_CODE) + key)
            sock.recv(1)
        finally:
            sock.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._target} sslmode={self._sslmode}>"


@dataclass(frozen=True)
class _Endpoint:
    """One server of the (possibly multi-host) DSN, as the socket code needs it."""

    host: str
    port: int
    unix_path: str | None  # the socket file, for a host that is a directory
    address: str  # what to connect to: hostaddr if given, else the host
    server_hostname: str | None  # SNI and the name verify-full checks; None for neither


def _read_state(raw: Pg8000Raw) -> tuple[bool, bool]:
    row = raw.fetch(STATE_QUERY, ())[1][0]
    return bool(row[0]), bool(row[1])


def _discard(raw: Pg8000Raw) -> None:
    raw.close()


def os_reason(exc: OSError) -> str:
    """``Connection refused`` rather than ``[Errno 111] Connection refused``."""
    return exc.strerror or str(exc) or type(exc).__name__


class _Unreachable(InterfaceError):  # type: ignore[misc]
    """No socket could be opened (nothing to retry with another sslmode). A pg8000
    ``InterfaceError``, as pg8000 itself raises for a failed connect."""


def _remaining(deadline: float, timeout: float) -> float:
    remaining = deadline - monotonic()
    if remaining <= 0:
        raise InterfaceError(f"timeout expired after {timeout:g} s")
    return remaining


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _socket_options(options: Mapping[str, str]) -> list[tuple[int, int, int]]:
    """``setsockopt`` arguments for libpq's keepalive and user-timeout keywords."""
    def number(key: str) -> int:
        try:
            return int(options[key])
        except ValueError:
            raise ConfigError(f"dsn: {key} must be an integer", field="dsn") from None

    result: list[tuple[int, int, int]] = []
    if options.get("keepalives", "1") != "0":
        result.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        for key, name in (("keepalives_idle", "TCP_KEEPIDLE"),
                          ("keepalives_interval", "TCP_KEEPINTVL"),
                          ("keepalives_count", "TCP_KEEPCNT")):
            if key in options and hasattr(socket, name):
                result.append((socket.IPPROTO_TCP, getattr(socket, name), number(key)))
    if "tcp_user_timeout" in options and hasattr(socket, "TCP_USER_TIMEOUT"):
        result.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, number("tcp_user_timeout")))
    return result


def _default_file(name: str) -> str | None:
    """libpq's default ``~/.postgresql/NAME``, if it exists."""
    try:
        path = Path.home() / ".postgresql" / name
    except RuntimeError:  # no home directory
        return None
    return str(path) if path.is_file() else None


def build_ssl_context(
    sslmode: str, options: Mapping[str, str], params: ConnectParams
) -> ssl.SSLContext | None:
    """The one ``ssl.SSLContext`` of a pool, as libpq would configure its TLS for ``sslmode``
    and the ``ssl*`` keywords; None for ``disable``.

    As in libpq, the server certificate is verified against ``sslrootcert`` (or
    ``~/.postgresql/root.crt``) whenever one is available, and must be for ``verify-ca`` and
    ``verify-full``; ``verify-full`` also checks the host name; ``sslrootcert=system`` means
    the system's CA store. A client certificate is ``sslcert``/``sslkey`` (or the default
    ``postgresql.crt``/``.key``).
    """
    if sslmode == "disable":
        return None
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        root = options.get("sslrootcert") or _default_file("root.crt")
        if sslmode in ("verify-ca", "verify-full") and root is None:
            raise ConfigError(
                f"ssl: sslmode={sslmode} needs a root certificate to verify the server: set "
                "sslrootcert=/path/to/ca.pem (or sslrootcert=system) in the DSN, or create "
                "~/.postgresql/root.crt",
                field="ssl",
            )
        if root is not None:
            if root == "system":
                context.load_default_certs()
            else:
                context.load_verify_locations(cafile=root)
            context.check_hostname = sslmode == "verify-full"
            context.verify_mode = ssl.CERT_REQUIRED
        else:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if options.get("sslcrl"):
            context.load_verify_locations(cafile=options["sslcrl"])
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        if options.get("sslcrldir"):
            context.load_verify_locations(capath=options["sslcrldir"])
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        if options.get("sslcertmode", "allow") != "disable":
            cert = options.get("sslcert") or _default_file("postgresql.crt")
            key = options.get("sslkey") or (
                _default_file("postgresql.key") if cert is not None else None
            )
            if cert is not None:
                context.load_cert_chain(cert, key, password=options.get("sslpassword"))
        context.minimum_version = _tls_version(options, "ssl_min_protocol_version", "TLSv1.2")
        maximum = options.get("ssl_max_protocol_version")
        if maximum:
            context.maximum_version = _tls_version(options, "ssl_max_protocol_version", maximum)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"ssl: cannot set up TLS for sslmode={sslmode}: {exc}", field="ssl"
        ) from exc
    return context


def _tls_version(options: Mapping[str, str], key: str, default: str) -> ssl.TLSVersion:
    name = options.get(key) or default
    try:
        return _TLS_VERSIONS[name]
    except KeyError:
        raise ConfigError(
            f"dsn: {key}={name!r} is not a TLS version: use one of {', '.join(_TLS_VERSIONS)}",
            field="dsn",
        ) from None
