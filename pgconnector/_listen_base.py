"""LISTEN / NOTIFY: what the sync and async streams share, without I/O.

:class:`Notification` (what a stream yields), the checks and quoting of channel names, the
reconnect schedule, and :class:`AsyncThreadListener`, which gives a blocking driver's listener
(:class:`~pgconnector._protocols.Listener` with an ``interrupt()``) the async face, the way
the generic pool gives a blocking driver its async pool.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ._generic_state import BACKOFF_BASE, BACKOFF_CAP, BACKOFF_JITTER
from .errors import ConfigError

__all__ = [
    "Notification",
    "AsyncThreadListener",
    "InterruptibleListener",
    "check_channel",
    "check_channels",
    "listen_sql",
    "quote_ident",
    "reconnect_delay",
]

T = TypeVar("T")

#: PostgreSQL's NAMEDATALEN - 1: a longer channel name is truncated by LISTEN (with a notice)
#: but refused by pg_notify(), so the two would never meet.
MAX_CHANNEL_BYTES = 63


@dataclass(frozen=True)
class Notification:
    """One notification received by a :class:`~pgconnector.NotificationStream`."""

    #: The channel it was sent on, as the sender spelled it (case kept).
    channel: str
    #: The payload (``""`` when none was given).
    payload: str
    #: The process id of the server session that sent it (``pg_backend_pid()`` there).
    pid: int


def check_channel(channel: object, field: str = "channel") -> str:
    """``channel`` if it is a usable channel name, else :class:`ConfigError` naming ``field``."""
    if not isinstance(channel, str):
        raise ConfigError(
            f"{field}: a channel name must be a str, not {type(channel).__name__}", field=field
        )
    if not channel:
        raise ConfigError(f"{field}: a channel name cannot be empty", field=field)
    if "\x00" in channel:
        raise ConfigError(f"{field}: a channel name cannot contain NUL", field=field)
    if len(channel.encode("utf-8")) > MAX_CHANNEL_BYTES:
        raise ConfigError(
            f"{field}: the channel name {channel[:20]!r}... is longer than PostgreSQL's "
            f"{MAX_CHANNEL_BYTES} bytes for an identifier",
            field=field,
        )
    return channel


def check_channels(channels: Sequence[object]) -> tuple[str, ...]:
    """The channels of ``listen(*channels)``, checked, without duplicates, in order."""
    if not channels:
        raise ConfigError(
            "channels: listen() needs at least one channel name, e.g. listen(\"jobs\")",
            field="channels",
        )
    names = [check_channel(channel, "channels") for channel in channels]
    return tuple(dict.fromkeys(names))


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier: double-quoted, so its case and spaces are kept."""
    return '"' + name.replace('"', '""') + '"'


def listen_sql(channels: Sequence[str]) -> str:
    """One simple-protocol script that LISTENs on every channel."""
    return "; ".join(f"LISTEN {quote_ident(channel)}" for channel in channels)


def reconnect_delay(failures: int, rand: Callable[[], float] = random.random) -> float:
    """The pause after ``failures`` consecutive failed reconnects: the generic pool's backoff
    (``BACKOFF_BASE * 2**(n-1)``, capped at ``BACKOFF_CAP``, +-``BACKOFF_JITTER``). The first
    reconnect after a loss is immediate (``failures == 0``)."""
    if failures <= 0:
        return 0.0
    delay = min(BACKOFF_CAP, BACKOFF_BASE * float(2 ** min(failures - 1, 30)))
    return delay * (1.0 + BACKOFF_JITTER * (2.0 * rand() - 1.0))


class InterruptibleListener(Protocol):
    """A blocking driver's :class:`~pgconnector._protocols.Listener` whose ``wait`` another
    thread can cut short."""

    def listen(self, channels: Sequence[str]) -> None: ...

    def wait(self, timeout: float | None) -> list[Notification]: ...

    def interrupt(self) -> None:
        """Make a ``wait`` running in another thread return at once (with what it has), or the
        next one if none runs. Thread-safe; never raises."""
        ...

    def close(self) -> None: ...


async def _in_thread(function: Callable[[], T]) -> T:
    """Run a blocking call in a daemon thread of its own (never the loop's default executor,
    whose threads ``asyncio.run`` joins at exit) and await its result."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def run() -> None:
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
            loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=run, name="pgconnector-listen", daemon=True).start()
    return await future


class AsyncThreadListener:
    """The async face of a blocking listener: every call runs in a thread, and a cancelled
    ``wait`` interrupts the thread and waits for it (briefly: it returns at once), so the
    connection is never used by two threads, and keeps what it had read for the next call."""

    def __init__(self, listener: InterruptibleListener) -> None:
        self._listener = listener
        self._carried: list[Notification] = []

    @classmethod
    async def open(cls, opener: Callable[[], InterruptibleListener]) -> AsyncThreadListener:
        task = asyncio.ensure_future(_in_thread(opener))
        try:
            return cls(await asyncio.shield(task))
        except asyncio.CancelledError:
            # The connect finishes in its thread regardless: close what it opens.
            task.add_done_callback(_close_result)
            raise

    async def listen(self, channels: Sequence[str]) -> None:
        await self._run(lambda: self._listener.listen(channels))

    async def wait(self, timeout: float | None) -> list[Notification]:
        if self._carried:
            carried, self._carried = self._carried, []
            return carried
        return await self._run(lambda: self._listener.wait(timeout), keep=True)

    async def _run(self, call: Callable[[], T], keep: bool = False) -> T:
        task = asyncio.ensure_future(_in_thread(call))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._listener.interrupt()
            # The thread returns at once now; what it read is kept for the next wait.
            try:
                result = await asyncio.shield(task)
            except BaseException:
                raise asyncio.CancelledError() from None
            if keep and isinstance(result, list):
                self._carried.extend(result)
            raise

    async def close(self) -> None:
        self._listener.interrupt()
        await _in_thread(self._listener.close)


def _close_result(task: asyncio.Future[InterruptibleListener]) -> None:
    if not task.cancelled() and task.exception() is None:
        threading.Thread(target=task.result().close, daemon=True).start()
