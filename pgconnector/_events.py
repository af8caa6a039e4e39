"""Pool events: what happened to which connection, delivered to listeners."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from ._pool import ConnectionManager
    from ._pool_async import AsyncConnectionManager

__all__ = [
    "EVENT_NAMES",
    "EventName",
    "PoolEvent",
    "Listener",
    "LoggerLike",
    "setup_pool_listeners",
]

EventName = Literal["connect", "acquire", "release", "remove", "error"]
EVENT_NAMES: tuple[EventName, ...] = ("connect", "acquire", "release", "remove", "error")


@dataclass(frozen=True)
class PoolEvent:
    """One thing that happened in a pool, passed to every listener of its ``name``.

    ``reason`` is set for ``remove`` (why the server connection was closed); ``error`` is set
    for ``error``. ``connection_id`` is None when no connection is involved (a failed connect).
    """

    name: EventName
    backend: str
    connection_id: int | None
    timestamp: datetime
    reason: str | None = None
    error: BaseException | None = None


Listener = Callable[[PoolEvent], object]


class LoggerLike(Protocol):
    """Anything with the four usual logging methods: ``logging.Logger``, structlog loggers."""

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...
    def info(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...
    def warning(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...
    def error(self, msg: str, *args: Any, **kwargs: Any) -> Any: ...


_MESSAGES: dict[EventName, str] = {
    "connect": "New client connected to pool",
    "acquire": "Client acquired from pool",
    "release": "Client released back to pool",
    "remove": "Client removed from pool",
    "error": "PostgreSQL pool error",
}


def _fields(event: PoolEvent) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "pool_event": event.name,
        "backend": event.backend,
        "connection_id": event.connection_id,
    }
    if event.reason is not None:
        fields["reason"] = event.reason
    if event.error is not None:
        # The error text is already redacted by whoever raised it through pgconnector; driver
        # errors carry no password (drivers never echo it back).
        fields["error"] = f"{type(event.error).__name__}: {event.error}"
    return fields


def setup_pool_listeners(
    manager: ConnectionManager | AsyncConnectionManager,
    logger: LoggerLike | None = None,
) -> None:
    """Log every pool event the way the original connector did.

    ``error`` events are logged at error level as "PostgreSQL pool error"; the others at debug
    level ("New client connected to pool", "Client acquired from pool", "Client released back
    to pool", "Client removed from pool"). Structured fields (``backend``, ``connection_id``,
    ``reason``, ``error``) go in ``extra``. The default logger is
    ``logging.getLogger("pgconnector")``.
    """
    log: LoggerLike = logger if logger is not None else logging.getLogger("pgconnector")

    def on_error(event: PoolEvent) -> None:
        log.error(_MESSAGES["error"], extra=_fields(event))

    def make_debug(name: EventName) -> Listener:
        message = _MESSAGES[name]

        def on_event(event: PoolEvent) -> None:
            log.debug(message, extra=_fields(event))

        return on_event

    manager.add_listener("error", on_error)
    for name in ("connect", "acquire", "release", "remove"):
        manager.add_listener(name, make_debug(name))
