"""The pg8000 listener connection for ``manager.listen()`` (sync; the async face is the core's
:class:`~pgconnector._listen_base.AsyncThreadListener`, which runs it in a thread).

The connection is opened by the pool's own :class:`~pgconnector_pg8000._driver.Pg8000Driver`
(the same hosts, TLS, ``application_name``, ``server_settings`` and multi-host rules), outside
the pool. pg8000 only reads the socket while a statement runs, and its buffered reader may hold
bytes that ``select()`` cannot see; so once connected, this listener reads the socket itself
into a buffer of its own, waiting with ``select()`` (and, over TLS, the SSL object's
``pending()`` bytes), and hands every complete message to pg8000's own handlers
(``message_types``): parameter statuses, notices, errors and ReadyForQuery are processed as
pg8000 processes them. Only the NotificationResponse handler is replaced, to keep every
notification (pg8000's own ``notifications`` deque holds the last 100) and to decode it in the
connection's encoding (pg8000 decodes it as ASCII). A second socket pair lets another thread
interrupt the ``select()``: that is what makes a cancelled async ``wait`` return at once.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
from collections.abc import Sequence
from time import monotonic
from typing import Any

from pg8000.core import Context  # type: ignore[import-untyped]

from pgconnector import ConnectionError, PgConnectorError, PoolConfig
from pgconnector._listen_base import Notification, listen_sql
from pgconnector._redact import redact

from ._driver import Pg8000Driver, Pg8000Raw, describe_error

__all__ = ["Pg8000Listener"]

_HEADER = struct.Struct("!ci")
_PID = struct.Struct("!i")
_NOTIFICATION = b"A"
_READY_FOR_QUERY = b"Z"
_READ_SIZE = 65536


class Pg8000Listener:
    """A :class:`~pgconnector._protocols.Listener` (with ``interrupt()``) over one pg8000
    connection."""

    def __init__(self, raw: Pg8000Raw, driver: Pg8000Driver, budget: float) -> None:
        self._raw = raw
        self._conn = raw.raw
        self._sock: socket.socket = raw._socket
        self._driver = driver
        self._budget = budget
        self._buffer = bytearray()
        self._received: list[Notification] = []
        self._ready = True
        self._error: ConnectionError | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conn.message_types[_NOTIFICATION] = self._on_notification

    @classmethod
    def open(cls, config: PoolConfig, timeout: float) -> Pg8000Listener:
        driver = Pg8000Driver(config)
        try:
            raw = driver.connect(timeout)
        except PgConnectorError:
            raise
        except Exception as exc:
            raise ConnectionError(
                f"could not connect to PostgreSQL at {driver.target}: "
                f"{redact(describe_error(exc), driver._secrets)}",
                exc,
            ) from exc
        return cls(raw, driver, timeout)

    # pg8000's handler for NotificationResponse, replaced --------------------------------------

    def _on_notification(self, data: bytes, context: Any) -> None:
        pid = _PID.unpack_from(data)[0]
        encoding = self._conn._client_encoding
        channel, payload = data[4:].split(b"\x00")[:2]
        self._received.append(
            Notification(channel.decode(encoding, "replace"), payload.decode(encoding, "replace"),
                         pid)
        )

    # the Listener protocol -----------------------------------------------------------------

    def listen(self, channels: Sequence[str]) -> None:
        sql = listen_sql(channels).encode(self._conn._client_encoding) + b"\x00"
        self._ready = False
        try:
            self._sock.sendall(b"Q" + _PID.pack(len(sql) + 4) + sql)
        except OSError as exc:
            raise self._broken(exc) from exc
        deadline = monotonic() + self._budget
        while not self._ready:
            if not self._fill(max(deadline - monotonic(), 0.0)):
                raise self._broken(None, f"no answer to LISTEN within {self._budget:g} s")

    def wait(self, timeout: float | None) -> list[Notification]:
        if self._error is not None:
            raise self._error
        deadline = None if timeout is None else monotonic() + timeout
        try:
            while not self._received:
                remaining = None if deadline is None else max(deadline - monotonic(), 0.0)
                if not self._fill(remaining):
                    break
        except ConnectionError as exc:
            if not self._received:
                raise
            # What arrived before the connection broke is delivered first; the error next.
            self._error = exc
        received, self._received = self._received, []
        return received

    def interrupt(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\x00")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._raw.close()
        for end in (self._wake_r, self._wake_w):
            end.close()

    # reading ---------------------------------------------------------------------------------

    def _fill(self, timeout: float | None) -> bool:
        """Read what the server sent, waiting up to ``timeout`` for it, and process every
        complete message. False when nothing came in time, or :meth:`interrupt` was called."""
        sock = self._sock
        if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            try:
                ready, _, _ = select.select([sock, self._wake_r], [], [], timeout)
            except (OSError, ValueError) as exc:  # closed under us
                raise self._broken(exc) from exc
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(64):
                        pass
                return False
            if not ready:
                return False
        try:
            data = sock.recv(_READ_SIZE)
        except OSError as exc:
            raise self._broken(exc) from exc
        if not data:
            raise self._broken(None, "the server closed the connection")
        self._buffer += data
        self._process()
        return True

    def _process(self) -> None:
        buffer = self._buffer
        handlers = self._conn.message_types
        start = 0
        try:
            while len(buffer) - start >= 5:
                code, length = _HEADER.unpack_from(buffer, start)
                end = start + 1 + length
                if len(buffer) < end:
                    break
                data = bytes(buffer[start + 5:end])
                start = end
                context = Context(None)
                handler = handlers.get(code)
                if handler is not None:
                    handler(data, context)
                if context.error is not None:
                    # Outside a statement the server only sends an error to end the session
                    # (terminated, shutting down).
                    raise self._broken(context.error)
                if code == _READY_FOR_QUERY:
                    self._ready = True
        finally:
            del buffer[:start]

    def _broken(self, error: BaseException | None, detail: str | None = None) -> ConnectionError:
        if detail is None:
            detail = describe_error(error) if error is not None else "connection lost"
        return ConnectionError(
            f"LISTEN connection to PostgreSQL at {self._driver.target} is broken: "
            f"{redact(detail, self._driver._secrets)}",
            error,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._driver.target}>"
