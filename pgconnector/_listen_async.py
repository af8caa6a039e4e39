"""AsyncNotificationStream: LISTEN on a dedicated connection that reconnects by itself (async).

``_listen.py`` is generated from ``_listen_async.py`` by ``tools/unasync.py``. Blocks that
differ are fenced by ``# ASYNC`` / ``# END``; inside them, ``# SYNC: code`` lines become the
sync version.

The backend gives one primitive, a listener connection (:class:`~pgconnector._protocols.
AsyncListener`: ``listen``, ``wait``, ``close``); everything else is here, once for every
backend: the checks and quoting of channel names, the buffer, the reconnect loop with the
generic pool's backoff, ``reconnects`` and ``on_reconnect``.
"""

from __future__ import annotations

# ASYNC
import asyncio
import inspect

# END
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from ._config import PoolConfig
from ._events import LoggerLike
from ._hosts import open_budget
from ._listen_base import Notification, reconnect_delay
from ._protocols import AsyncListener
from ._redact import redact
from .errors import ConfigError, ConnectionError, PgConnectorError

__all__ = ["AsyncNotificationStream"]


class AsyncNotificationStream:
    """What ``manager.listen(*channels)`` gives: ``async with manager.listen("jobs") as
    stream:``, then ``async for n in stream:`` or ``await stream.get(timeout)``.

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
        on_reconnect: Callable[[AsyncNotificationStream], Any] | None,
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
        self._listener: AsyncListener | None = None
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

    async def _open(self) -> AsyncListener:
        # ASYNC
        opener = getattr(self._plugin, "open_async_listener", None)
        # SYNC: opener = getattr(self._plugin, "open_listener", None)
        # END
        assert opener is not None  # checked by the manager
        try:
            listener: AsyncListener = await opener(self._config, self._budget)
        except PgConnectorError:
            raise
        except Exception as exc:
            raise ConnectionError(
                f"could not open a LISTEN connection: {redact(str(exc), self._secrets)}", exc
            ) from exc
        try:
            await listener.listen(self._channels)
        except BaseException:
            await listener.close()
            raise
        return listener

    async def __aenter__(self) -> AsyncNotificationStream:
        if self._entered:
            raise ConfigError("this stream was already used; call manager.listen() again")
        self._entered = True
        self._listener = await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (what leaving the block does). Idempotent."""
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()

    # ASYNC
    def __aiter__(self) -> AsyncNotificationStream:
        return self

    async def __anext__(self) -> Notification:
        return await self.get()

    # SYNC: def __iter__(self) -> NotificationStream:
    # SYNC:     return self
    # SYNC:
    # SYNC: def __next__(self) -> Notification:
    # SYNC:     return self.get()
    # END

    async def get(self, timeout: float | None = None) -> Notification:
        """The next notification, waiting up to ``timeout`` seconds (None: as long as it
        takes; 0: only one already received). Raises the builtin ``TimeoutError`` when none
        came in time; reconnects meanwhile if the connection is lost."""
        if timeout is not None and timeout < 0:
            raise ConfigError(f"timeout must be 0 or more, not {timeout!r}", field="timeout")
        if self._pending:
            return self._pending.popleft()
        if not self._entered:
            raise ConfigError(
                "enter the stream first: async with manager.listen(...) as stream"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise ConnectionError("this notification stream is closed")
            listener = self._listener
            if listener is None:
                await self._reconnect(deadline, timeout)
                continue
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                received = await listener.wait(remaining)
            except ConnectionError as exc:
                self._lost(listener, exc)
                await listener.close()
                continue
            if received:
                self._pending.extend(received)
                return self._pending.popleft()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no notification on {', '.join(self._channels)} within {timeout:g} s"
                )

    def _lost(self, listener: AsyncListener, exc: ConnectionError) -> None:
        if self._listener is listener:
            self._listener = None
        self._logger.warning(
            "LISTEN connection lost (%s); reconnecting: %s",
            ", ".join(self._channels),
            redact(str(exc), self._secrets),
        )

    async def _reconnect(self, deadline: float | None, timeout: float | None) -> None:
        """One attempt to open the connection again, after the backoff that the failures so
        far call for; TimeoutError if ``deadline`` comes first."""
        delay = reconnect_delay(self._failures)
        if delay:
            if deadline is not None and time.monotonic() + delay >= deadline:
                # ASYNC
                await asyncio.sleep(max(deadline - time.monotonic(), 0.0))
                # SYNC: time.sleep(max(deadline - time.monotonic(), 0.0))
                # END
                raise TimeoutError(
                    f"no notification on {', '.join(self._channels)} within {timeout:g} s "
                    "(reconnecting)"
                )
            # ASYNC
            await asyncio.sleep(delay)
            # SYNC: time.sleep(delay)
            # END
        try:
            listener = await self._open()
        except ConnectionError as exc:
            self._failures += 1
            self._logger.warning(
                "LISTEN reconnect failed (attempt %d): %s",
                self._failures,
                redact(str(exc), self._secrets),
            )
            return
        if self._closed:  # closed meanwhile (from another task)
            await listener.close()
            return
        self._failures = 0
        self._listener = listener
        self.reconnects += 1
        self._logger.info("LISTEN connection re-established (%s)", ", ".join(self._channels))
        callback = self._on_reconnect
        if callback is not None:
            # ASYNC
            result = callback(self)
            if inspect.isawaitable(result):
                await result
            # SYNC: callback(self)
            # END

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._entered else "not entered"
        return (
            f"<{type(self).__name__} {', '.join(self._channels)} {state} "
            f"reconnects={self.reconnects}>"
        )
