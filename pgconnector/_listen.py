# WARNING: generated from _listen_async.py by tools/unasync.py; do not edit by hand.
"""NotificationStream: LISTEN on a dedicated connection that reconnects by itself (sync).

``_listen.py`` is generated from ``_listen.py`` by ``tools/unasync.py``. Blocks that
differ are fenced by ``# ASYNC`` / ``# END``; inside them, ``# SYNC: code`` lines become the
sync version.

The backend gives one primitive, a listener connection (:class:`~pgconnector._protocols.
Listener`: ``listen``, ``wait``, ``close``); everything else is here, once for every
backend: the checks and quoting of channel names, the buffer, the reconnect loop with the
generic pool's backoff, ``reconnects`` and ``on_reconnect``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ._config import PoolConfig
from ._events import LoggerLike
from ._hosts import open_budget
from ._listen_base import Notification, reconnect_delay
from ._protocols import Listener
from ._redact import redact
from .errors import ConfigError, ConnectionError, PgConnectorError

__all__ = ["NotificationStream"]


class NotificationStream:
    """What ``manager.listen(*channels)`` gives: ``with manager.listen("jobs") as
    stream:``, then ``for n in stream:`` or ``stream.get(timeout)``.

    The stream owns one server connection, opened with the pool's parameters on entering the
    block but outside the pool (not in ``max_size``, not in the pool's stats), and closed on
    leaving it. If that connection is lost, the next :meth:`get` opens another (at once, then
    with the pool's backoff while the server stays unreachable), LISTENs again, adds one to
    :attr:`reconnects` and calls ``on_reconnect(stream)`` (awaited if it returns an
    awaitable): notifications sent meanwhile are lost, so that is where to catch up.
    Notifications already received are delivered first. One consumer at a time.
    """

    def __init__(
        self,
        plugin: Any,
        config: PoolConfig,
        channels: tuple[str, ...],
        on_reconnect: Callable[[NotificationStream], Any] | None,
        secrets: tuple[str, ...],
        logger: LoggerLike,
    ) -> None:
        self._plugin = plugin
        self._config = config
        self._channels = channels
        self._on_reconnect = on_reconnect
        self._secrets = secrets
        self._logger = logger
        self._budget = open_budget(config.connect_params())
        self._listener: Listener | None = None
        self._pending: deque[Notification] = deque()
        self._entered = False
        self._closed = False
        #: Consecutive failed reconnects (for the backoff).
        self._failures = 0
        #: How many times the connection was lost and opened again.
        self.reconnects = 0

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels listened on, as given (each quoted as an identifier: case kept)."""
        return self._channels

    @property
    def closed(self) -> bool:
        return self._closed

    def _open(self) -> Listener:
        opener = getattr(self._plugin, "open_listener", None)
        assert opener is not None  # checked by the manager
        try:
            listener: Listener = opener(self._config, self._budget)
        except PgConnectorError:
            raise
        except Exception as exc:
            raise ConnectionError(
                f"could not open a LISTEN connection: {redact(str(exc), self._secrets)}", exc
            ) from exc
        try:
            listener.listen(self._channels)
        except BaseException:
            listener.close()
            raise
        return listener

    def __enter__(self) -> NotificationStream:
        if self._entered:
            raise ConfigError("this stream was already used; call manager.listen() again")
        self._entered = True
        self._listener = self._open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (what leaving the block does). Idempotent."""
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def __iter__(self) -> NotificationStream:
        return self
    def __next__(self) -> Notification:
        return self.get()

    def get(self, timeout: float | None = None) -> Notification:
        """The next notification, waiting up to ``timeout`` seconds (None: as long as it
        takes; 0: only one already received). Raises the builtin ``TimeoutError`` when none
        came in time; reconnects meanwhile if the connection is lost."""
        if timeout is not None and timeout < 0:
            raise ConfigError(f"timeout must be 0 or more, not {timeout!r}", field="timeout")
        if self._pending:
            return self._pending.popleft()
        if not self._entered:
            raise ConfigError(
                "enter the stream first: with manager.listen(...) as stream"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise ConnectionError("this notification stream is closed")
            listener = self._listener
            if listener is None:
                self._reconnect(deadline, timeout)
                continue
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                received = listener.wait(remaining)
            except ConnectionError as exc:
                self._lost(listener, exc)
                listener.close()
                continue
            if received:
                self._pending.extend(received)
                return self._pending.popleft()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no notification on {', '.join(self._channels)} within {timeout:g} s"
                )

    def _lost(self, listener: Listener, exc: ConnectionError) -> None:
        if self._listener is listener:
            self._listener = None
        self._logger.warning(
            "LISTEN connection lost (%s); reconnecting: %s",
            ", ".join(self._channels),
            redact(str(exc), self._secrets),
        )

    def _reconnect(self, deadline: float | None, timeout: float | None) -> None:
        """One attempt to open the connection again, after the backoff that the failures so
        far call for; TimeoutError if ``deadline`` comes first."""
        delay = reconnect_delay(self._failures)
        if delay:
            if deadline is not None and time.monotonic() + delay >= deadline:
                time.sleep(max(deadline - time.monotonic(), 0.0))
                raise TimeoutError(
                    f"no notification on {', '.join(self._channels)} within {timeout:g} s "
                    "(reconnecting)"
                )
            time.sleep(delay)
        try:
            listener = self._open()
        except ConnectionError as exc:
            self._failures += 1
            self._logger.warning(
                "LISTEN reconnect failed (attempt %d): %s",
                self._failures,
                redact(str(exc), self._secrets),
            )
            return
        if self._closed:  # closed meanwhile (from another task)
            listener.close()
            return
        self._failures = 0
        self._listener = listener
        self.reconnects += 1
        self._logger.info("LISTEN connection re-established (%s)", ", ".join(self._channels))
        callback = self._on_reconnect
        if callback is not None:
            callback(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._entered else "not entered"
        return (
            f"<{type(self).__name__} {', '.join(self._channels)} {state} "
            f"reconnects={self.reconnects}>"
        )
